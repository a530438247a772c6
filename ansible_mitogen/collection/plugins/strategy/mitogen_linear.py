"""Strategy plugin `mitogen_ng.mitogen.mitogen_linear`:
ansible_mitogen's strategy plugin of that name, from the collection's vendored copy."""

from __future__ import annotations

from ansible_collections.mitogen_ng.mitogen.plugins.plugin_utils import vendored  # noqa: F401

from ansible_mitogen.plugins.strategy.mitogen_linear import DOCUMENTATION, StrategyModule  # noqa: F401
