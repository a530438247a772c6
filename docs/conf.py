"""Sphinx configuration for the mitogen_ng documentation (build: see index.rst)."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

import ansible_mitogen  # noqa: E402

project = "mitogen_ng"
author = "The mitogen_ng authors"
copyright = "the mitogen_ng authors"
release = version = ansible_mitogen.__version__

extensions = ["sphinx.ext.autodoc", "spec_api"]
# docs/spec/ holds the reference documents the API follows (read by the spec_api
# extension and tests/spec_index.py), not pages; superseded-names.md is rendered by the
# `superseded-names` directive.
exclude_patterns = ["_build", "spec", "superseded-names.md"]
root_doc = "index"
html_theme = "alabaster"
autodoc_member_order = "bysource"
autodoc_typehints = "none"
nitpicky = False
