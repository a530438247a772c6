"""Callback plugin `jsonl_results`: every task result as one JSON line, for the test harness.

Record types ('type' key): 'play' (name, strategy), 'result' (one per host and task, and
one per loop item, with the fields compared between runs, and the task's uuid), 'stats'
(the recap per host, and whether the connection loader was hooked when the run ended).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import connection_loader

DOCUMENTATION = """
    name: jsonl_results
    type: aggregate
    short_description: Write per-task results as JSON lines (ansible_mitogen test harness)
    description:
        - Appends one JSON object per task result to a file.
    options:
      path:
        description: File to append the JSON lines to.
        required: true
        env:
          - name: MITOGEN_TEST_RESULTS
        ini:
          - section: callback_jsonl_results
            key: path
"""

#: Result keys copied into 'result' records when the result has them (changed, failed,
#: skipped and unreachable are always recorded, as ansible-core interprets them).
RESULT_KEYS = (
    "rc",
    "stdout",
    "stderr",
    "msg",
    "module_stdout",
    "module_stderr",
    "censored",
    "attempts",
    "diff",
    "skip_reason",
    "false_condition",
    "warnings",
)


def plain(value: Any) -> Any:
    """`value` as plain JSON-able data (tagged strings and containers become str/dict/list)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return repr(value)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "jsonl_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._play_index = -1

    def _write(self, record: dict[str, Any]) -> None:
        with open(self.get_option("path"), "a", encoding="utf-8") as fp:
            fp.write(json.dumps(record, sort_keys=True) + "\n")

    def _result(self, event: str, result: Any, **extra: Any) -> None:
        task = result.task
        data = result.result
        record: dict[str, Any] = {
            "type": "result",
            "event": event,
            "play": self._play_index,
            "host": result.host.get_name(),
            "task": result.task_name,
            # joins the record with the transport_probe lines (not compared between runs)
            "uuid": task._uuid,
            "action": task.action,
            "handler": type(task).__name__ == "Handler",
            "changed": result.is_changed(),
            # The callback called says it first: 2.19's is_failed()/is_skipped() are False
            # for results whose 'failed'/'skipped' key the strategy already consumed.
            "failed": event.endswith("failed") or result.is_failed(),
            "skipped": event.endswith("skipped") or result.is_skipped(),
            "unreachable": event == "unreachable" or result.is_unreachable(),
        }
        for key in RESULT_KEYS:
            if key in data:
                record[key] = plain(data[key])
        if "item" in event and "ansible_loop_var" in data:
            record["item"] = plain(data.get(data["ansible_loop_var"]))
        record.update(extra)
        self._write(record)

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._play_index += 1
        self._write(
            {
                "type": "play",
                "play": self._play_index,
                "name": play.get_name(),
                "strategy": str(play.strategy),
            }
        )

    def v2_runner_on_ok(self, result: Any) -> None:
        self._result("ok", result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._result("failed", result, ignored=ignore_errors)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._result("skipped", result)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._result("unreachable", result)

    def v2_runner_item_on_ok(self, result: Any) -> None:
        self._result("item_ok", result)

    def v2_runner_item_on_failed(self, result: Any) -> None:
        self._result("item_failed", result)

    def v2_runner_item_on_skipped(self, result: Any) -> None:
        self._result("item_skipped", result)

    def v2_runner_retry(self, result: Any) -> None:
        self._result("retry", result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        hosts = sorted(set(stats.processed) | set(stats.dark) | set(stats.failures))
        self._write(
            {
                "type": "stats",
                "hosts": {h: plain(stats.summarize(h)) for h in hosts},
                "hooked": "get_with_context" in vars(connection_loader),
            }
        )
