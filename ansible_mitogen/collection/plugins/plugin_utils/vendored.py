"""Puts the mitogen and ansible_mitogen packages vendored in this collection on sys.path.

They live in the collection's vendor/ directory rather than under plugins/module_utils:
mitogen imports itself by its own top-level name (`import mitogen.core`) and sends its
source to targets under that name, which a collection namespace would break. An
ansible_mitogen that is already imported (e.g. pip-installed) is left in charge.
"""

from __future__ import annotations

import os.path
import sys

VENDOR_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "vendor"))

if "ansible_mitogen" not in sys.modules and VENDOR_DIR not in sys.path:
    sys.path.insert(0, VENDOR_DIR)
