"""Strategy plugin `mitogen_ng.mitogen.mitogen_host_pinned`:
ansible_mitogen's strategy plugin of that name, from the collection's vendored copy."""

from __future__ import annotations

from ansible_collections.mitogen_ng.mitogen.plugins.plugin_utils import vendored  # noqa: F401

from ansible_mitogen.plugins.strategy.mitogen_host_pinned import DOCUMENTATION, StrategyModule  # noqa: F401
