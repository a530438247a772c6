"""A submodule nobody imports implicitly."""

ANSWER = 42
