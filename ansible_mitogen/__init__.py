"""Mitogen for Ansible: strategy plugins that run tasks through persistent contexts.

`__version__` is the one version of the project: the package metadata reads it from here
(pyproject.toml), the collection's galaxy.yml is stamped with it at build time, and
`mitogen.__version__` carries the same numbers as a tuple (a test compares them all).
"""

__version__ = "0.1.0"
