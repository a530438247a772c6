"""Strategy plugin `unredirected_linear`: mitogen_linear with no connection redirect, so
every task quietly runs over ansible-core's own connections (the mux runs, the action hook
is installed). A run the harness must not take for one served by Mitogen. Needs the
repository on PYTHONPATH."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from ansible.plugins.strategy.linear import StrategyModule as LinearStrategyModule

from ansible_mitogen.strategy import StrategyMixin


class StrategyModule(StrategyMixin, LinearStrategyModule):
    """linear, with the loader hooks on but nothing redirected."""

    connection_redirects: ClassVar[Mapping[str, str]] = {}
