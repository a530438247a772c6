"""Strategy plugin `mitogen_free`: ansible-core's `free` strategy run through Mitogen."""

from __future__ import annotations

try:
    from ansible_mitogen.strategy import StrategyMixin
except ImportError:  # used from a source tree: the ansible_mitogen package is 3 levels up
    import os.path
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
    from ansible_mitogen.strategy import StrategyMixin

from ansible.plugins.strategy.free import StrategyModule as FreeStrategyModule

DOCUMENTATION = """
    name: mitogen_free
    short_description: The free strategy, run through Mitogen
    description:
        - Behaves like the builtin C(free) strategy; tasks run through Mitogen's connections.
        - Needs the ansible_mitogen package (importable, or this file inside its source tree).
    author: mitogen-ng
"""


class StrategyModule(StrategyMixin, FreeStrategyModule):
    """`free` with StrategyMixin in front."""
