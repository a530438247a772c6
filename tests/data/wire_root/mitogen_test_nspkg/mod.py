"""A module inside a namespace package (no __init__.py)."""

NAME = "nspkg.mod"
