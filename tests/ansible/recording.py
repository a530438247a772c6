"""Shared code of the recording test plugins (plugins/connection/recording_*.py and
plugins/strategy/recording_linear.py): stand-ins for Mitogen's connection plugins and
action mixin that log every use as JSON lines to $MITOGEN_TEST_RECORDING_LOG.

The plugins import this module, so ansible-playbook needs the repository root on
PYTHONPATH when they are used (the harness's `recording=True`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ansible_mitogen.loaders import redirect_map

LOG_VARIABLE = "MITOGEN_TEST_RECORDING_LOG"

#: What recording_linear redirects: ssh and local (every name) to the recording plugins.
REDIRECTS = redirect_map(ssh="recording_ssh", local="recording_local")


def record(plugin: Any, event: str, **extra: Any) -> None:
    """Append one JSON line about `event` to the recording log, if one is set."""
    path = os.environ.get(LOG_VARIABLE)
    if path:
        line = {"plugin": plugin._load_name, "event": event, "pid": os.getpid(), **extra}
        with open(path, "a", encoding="utf-8") as fp:
            fp.write(json.dumps(line, sort_keys=True) + "\n")


def read_log(path: str) -> list[dict[str, Any]]:
    """The records written so far (none if the log does not exist)."""
    try:
        with open(path, encoding="utf-8") as fp:
            return [json.loads(line) for line in fp]
    except FileNotFoundError:
        return []


class RecordingConnectionMixin:
    """Put in front of a real Connection class: logs init/exec_command/reset and says it
    is a Mitogen connection, so the action mixin hook applies to its tasks."""

    is_mitogen_connection = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        record(self, "init")

    def exec_command(self, *args: Any, **kwargs: Any) -> Any:
        record(self, "exec_command", aliases=list(getattr(self, "ansible_aliases", [])))
        return super().exec_command(*args, **kwargs)  # type: ignore[misc]

    def reset(self) -> None:
        record(self, "reset")
        super().reset()  # type: ignore[misc]


class RecordingActionMixin:
    """The action mixin recording_linear installs: logs which class ran which action."""

    def run(self, tmp: Any = None, task_vars: Any = None) -> Any:
        record(
            self,
            "action",
            action=self._task.action,  # type: ignore[attr-defined]
            cls=type(self).__name__,
            qualname=type(self).__qualname__,
            mro=[c.__qualname__ for c in type(self).__mro__[:3]],
        )
        return super().run(tmp, task_vars)  # type: ignore[misc]
