"""Strategy plugin `recording_linear`: mitogen_linear with the loader hooks pointed at the
recording test plugins (tests/ansible/recording.py). Needs the repository on PYTHONPATH."""

from __future__ import annotations

from ansible.plugins.strategy.linear import StrategyModule as LinearStrategyModule

from ansible_mitogen.strategy import StrategyMixin
from tests.ansible.recording import REDIRECTS, RecordingActionMixin


class StrategyModule(StrategyMixin, LinearStrategyModule):
    """linear, with connections and actions recorded."""

    connection_redirects = REDIRECTS
    action_mixin = RecordingActionMixin
