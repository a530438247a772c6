"""The harness tells results served by Mitogen from results served by stock Ansible: the
join of transport_probe lines with results, the checks on made-up records, and real runs
in which stock connections pass themselves off as Mitogen or are not redirected at all."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ansible import served
from tests.ansible.harness import Harness

MITOGEN = {
    "connection": "mitogen_ssh",
    "connection_class": "ansible.plugins.connection.mitogen_ssh.Connection",
    "mitogen_connection": True,
    "ansible_mitogen_connection": True,
    "action_class": "ansible.plugins.action.command.MitogenActionModule",
    "mitogen_action": True,
    "stock_calls": {},
    "mitogen_calls": {"ansible_mitogen.module_runner.run_module": 1},
    "probe": True,
}
STOCK = {
    **MITOGEN,
    "connection": "ssh",
    "connection_class": "ansible.plugins.connection.ssh.Connection",
    "mitogen_connection": None,
    "ansible_mitogen_connection": False,
    "action_class": "ansible.plugins.action.command.ActionModule",
    "mitogen_action": False,
    "stock_calls": {"ssh.exec_command": 1},
    "mitogen_calls": {},
}
FALLEN_BACK = {
    **STOCK,
    "connection": "mitogen_ssh",
    "connection_class": MITOGEN["connection_class"],
    "mitogen_connection": False,
    "ansible_mitogen_connection": True,
}
NO_CALLS = {
    **MITOGEN,
    "action_class": "ansible.plugins.action.debug.MitogenActionModule",
    "mitogen_calls": {},
}


def line(uuid: str, run: str, window: int, host: str = "h", **facts: Any) -> dict[str, Any]:
    return {"host": host, "uuid": uuid, "run": run, "window": window, **facts}


def result(uuid: str, event: str, task: str = "", host: str = "h", **extra: Any) -> dict:
    return {
        "type": "result",
        "host": host,
        "uuid": uuid,
        "event": event,
        "task": task or uuid,
        **extra,
    }


def windows(record: dict[str, Any]) -> Any:
    via = record.get("via", "absent")
    return via if via in (None, "absent") else [(w["run"], w["window"]) for w in via]


def test_join_matches_runs_items_and_hosts_in_order() -> None:
    lines = [
        line("loop", "r1", 0),
        line("loop", "r1", 1),
        line("plain", "r2", 0),
        line("plain", "r3", 0, host="other"),
        line("handler", "r4", 0),
        line("handler", "r5", 0),
    ]
    records = [
        {"type": "play"},
        result("loop", "retry"),
        result("loop", "item_ok", item=1),
        result("loop", "item_failed", item=2),
        result("loop", "failed"),
        result("plain", "ok", host="other"),
        result("plain", "ok"),
        result("handler", "ok"),
        result("meta", "ok"),
        result("handler", "ok"),
        result("handler", "ok"),
    ]
    served.join(records, lines)
    assert [windows(r) for r in records[1:]] == [
        "absent",  # retries are not matched
        [("r1", 0)],
        [("r1", 1)],
        [("r1", 0), ("r1", 1)],
        [("r3", 0)],
        [("r2", 0)],
        [("r4", 0)],
        "absent",  # no worker ran the meta task
        [("r5", 0)],
        None,  # a third handler run without a probe line
    ]


def test_check_mitogen_names_what_was_not_mitogen() -> None:
    records = [
        result(task, "ok", via=[{**facts, "run": task, "window": 0}])
        for task, facts in [
            ("served", MITOGEN),
            ("debug", NO_CALLS),
            ("stock", STOCK),
            ("fell back", FALLEN_BACK),
            ("partly stock", {**MITOGEN, "stock_calls": {"ssh.put_file": 1}}),
            ("no mixin", {**MITOGEN, "mitogen_action": False}),
            ("no probe", {**MITOGEN, "probe": False}),
            ("declared", FALLEN_BACK),
        ]
    ]
    records.append(result("unmatched", "ok", via=None))
    problems = served.check_mitogen(records, fallback={"declared"})
    reasons = [p.split(" [")[0] for p in problems]
    assert reasons == [
        "h ok 'stock': expected Mitogen, but its connection plugin 'ssh' is not Mitogen's "
        "(not redirected)",
        "h ok 'fell back': expected Mitogen, but it fell back to stock "
        "(mitogen_ssh.is_mitogen_connection is False)",
        "h ok 'partly stock': expected Mitogen, but it made stock transport calls",
        "h ok 'no mixin': expected Mitogen, but its action plugin has no ansible_mitogen "
        "ActionModuleMixin",
        "h ok 'no probe': expected Mitogen, but Mitogen calls were not being counted "
        "(mitogen.parent not imported)",
        "h ok 'unmatched': no transport_probe line matches this result",
    ]
    assert "stock calls {'ssh.exec_command': 1}" in problems[0]


def test_a_declared_fallback_must_fall_back() -> None:
    records = [
        result("served", "ok", via=[{**MITOGEN, "run": "a", "window": 0}]),
        result("skipped", "skipped", via=[{**NO_CALLS, "run": "b", "window": 0}]),
    ]
    problems = served.check_mitogen(records, fallback={"served", "skipped", "absent"})
    assert [p.split(" [")[0] for p in problems] == [
        "h ok 'served': expected to fall back to stock (declared), but it made Mitogen calls",
        "h skipped 'skipped': expected to fall back to stock (declared), but "
        "mitogen_ssh.is_mitogen_connection is True",
        "task 'absent' is declared to fall back but has no result",
    ]
    fallen = [
        result("items", "item_ok", via=[{**FALLEN_BACK, "run": "c", "window": 0}]),
        result(
            "items",
            "item_skipped",
            via=[{**FALLEN_BACK, "stock_calls": {}, "run": "c", "window": 1}],
        ),
        result("quiet", "ok", via=[{**FALLEN_BACK, "stock_calls": {}, "run": "d", "window": 0}]),
    ]
    assert served.check_mitogen(fallen, fallback={"items", "quiet"}) == [
        "task 'quiet' is declared to fall back but made no stock call"
    ]


def test_a_probe_that_failed_is_reported() -> None:
    broken = {"run": "a", "window": 0, "error": "AttributeError('_handler')"}
    records = [result("broken", "ok", via=[broken])]
    expected = "h ok 'broken': {}the probe could not describe it: AttributeError('_handler')"
    assert served.check_mitogen(records) == [expected.format("expected Mitogen, but ")]
    assert served.check_stock(records) == [expected.format("")]


def test_check_stock_names_what_touched_mitogen() -> None:
    records = [
        result("stock", "ok", via=[{**STOCK, "run": "a", "window": 0}]),
        result("mitogen", "ok", via=[{**MITOGEN, "run": "b", "window": 0}]),
    ]
    problems = served.check_stock(records)
    assert len(problems) == 1 and problems[0].startswith("h ok 'mitogen': expected stock"), problems


SSH_TASKS = [
    "ssh by default",
    "loop items share one connection",
    "ssh by FQCN",
    "ssh by legacy name",
    "after the reset",
]
LOCAL_TASKS = ["local", "local by FQCN", "delegated to localhost"]


@pytest.mark.needs_testbed
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "strategy, ssh, local, claim",
    [
        # stock connections that say is_mitogen_connection = True (recording.py)
        ("recording_linear", "recording_ssh", "recording_local", True),
        # no redirect at all: ansible-core's plugins behind a Mitogen strategy
        ("unredirected_linear", "ssh", "local", None),
    ],
)
def test_stock_behind_a_mitogen_strategy_is_caught(
    harness: Harness, strategy: str, ssh: str, local: str, claim: bool | None
) -> None:
    run = harness.run("recording.yml", strategy, recording=True)
    assert run.rc == 0, run.describe()
    run.check_strategy()
    problems = served.check_mitogen(run.records)
    expected = []
    for record in run.results:
        if record["task"] not in SSH_TASKS + LOCAL_TASKS:
            continue  # the meta task: no worker ran it
        if record["task"] == SSH_TASKS[1] and "item" not in record:
            continue  # the loop's final result: its executions are its items'
        plugin, transport = (ssh, "ssh") if record["task"] in SSH_TASKS else (local, "local")
        item = f" item {record['item']!r}" if "item" in record else ""
        expected.append(
            (
                f"plain {record['event']} {record['task']!r}{item}: expected Mitogen, but its "
                "connection plugin ",
                "is not Mitogen's (not redirected) [connection ",
                f"plugins.connection.{plugin}.Connection), is_mitogen_connection={claim}",
                f"stock calls {{'{transport}.",
            )
        )
    assert len(expected) == 10  # 7 over ssh (3 of them loop items), 3 local
    assert len(problems) == len(expected), problems
    for problem, (start, *parts) in zip(problems, expected, strict=True):
        assert problem.startswith(start), (problem, start)
        assert all(part in problem for part in parts), (problem, parts)
