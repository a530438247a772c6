"""What served each task result: stock Ansible's transports or Mitogen.

The `transport_probe` callback has every worker write one line per task execution (one
per loop item) to the run's transport file. `join()` attaches those lines to the result
records of `jsonl_results` as `record["via"]`: the list of executions behind the record
(one for a loop item, all of the loop's for the loop's final result). Records of tasks
that no worker ran (meta tasks) get no `via`; records of `until` retries neither.

`check_mitogen()` lists every result a Mitogen strategy did not serve through Mitogen:
a stock transport call, a connection plugin that is not Mitogen's (a redirect that did not
happen), a Mitogen connection that fell back to stock, an action without the mixin.
Results of tasks declared to fall back must instead have run through stock and never
through Mitogen. `check_stock()` lists every result of a builtin strategy that touched
Mitogen. Tasks that never make a transport call (`debug`, `set_fact`, a skipped item)
pass as long as their connection plugin, if one was loaded, is the expected kind.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

#: The run directory's file the transport_probe callback writes.
TRANSPORT_FILE = "transport.jsonl"

#: Strategies whose results must be served by Mitogen.
MITOGEN_STRATEGIES = frozenset({"mitogen", "mitogen_linear", "mitogen_free", "mitogen_host_pinned"})

#: Record keys the harness adds or uses for joining: never compared between runs.
JOIN_KEYS = frozenset({"uuid", "via"})

_FINAL = frozenset({"ok", "failed", "skipped", "unreachable"})


def _runs_by_task(lines: Iterable[dict[str, Any]]) -> dict[tuple[str, str], list[list[dict]]]:
    """(host, uuid) -> the task's runs in the order they started, each the list of its
    executions in order."""
    runs: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for line in lines:
        runs.setdefault((line["host"], line["uuid"]), {}).setdefault(line["run"], []).append(line)
    return {
        key: [sorted(windows, key=lambda w: w["window"]) for windows in by_run.values()]
        for key, by_run in runs.items()
    }


def join(records: list[dict[str, Any]], lines: Iterable[dict[str, Any]]) -> None:
    """Attach to each result record the executions that produced it (see module doc).

    A task's runs on a host (a handler may run more than once) match its final results
    in order; within a run, loop items match executions in order. A record left without
    a match gets `via = None`, which the checks report.
    """
    runs = _runs_by_task(lines)
    position: dict[tuple[str, str], tuple[int, int]] = {}
    for record in records:
        key = (record.get("host"), record.get("uuid"))
        if record.get("type") != "result" or key not in runs or record["event"] == "retry":
            continue
        run_index, item_index = position.get(key, (0, 0))  # type: ignore[arg-type]
        task_runs = runs[key]  # type: ignore[index]
        windows = task_runs[run_index] if run_index < len(task_runs) else None
        if record["event"] in _FINAL:
            record["via"] = windows
            position[key] = (run_index + 1, 0)  # type: ignore[index]
        else:
            item = windows[item_index] if windows and item_index < len(windows) else None
            record["via"] = None if item is None else [item]
            position[key] = (run_index, item_index + 1)  # type: ignore[index]


def _label(record: dict[str, Any]) -> str:
    item = f" item {record['item']!r}" if "item" in record else ""
    return f"{record['host']} {record['event']} {record['task']!r}{item}"


def _summary(window: dict[str, Any]) -> str:
    """The execution's facts, for messages (nothing for a line the probe failed to write)."""
    if "error" in window:
        return ""
    return (
        f" [connection {window['connection']} ({window['connection_class']}), "
        f"is_mitogen_connection={window['mitogen_connection']}, "
        f"action {window['action_class']}, stock calls {window['stock_calls']}, "
        f"Mitogen calls {window['mitogen_calls']}]"
    )


#: Actions that do part of their work on the controller through a stock local connection
#: they make themselves (synchronize runs rsync there): those `local.*` calls are theirs.
OWN_LOCAL_CONNECTION = ("ansible.posix.plugins.action.synchronize.",)


def _only_own_local_calls(window: dict[str, Any]) -> bool:
    action = window.get("action_class") or ""
    return any(name in action for name in OWN_LOCAL_CONNECTION) and all(
        call.startswith("local.") for call in window["stock_calls"]
    )


def _not_mitogen(window: dict[str, Any]) -> str | None:
    """Why this execution was not served by Mitogen (None if it was, or made no call)."""
    if "error" in window:
        return f"the probe could not describe it: {window['error']}"
    if window["connection_class"] is not None and not window["ansible_mitogen_connection"]:
        return f"its connection plugin {window['connection']!r} is not Mitogen's (not redirected)"
    if window["connection_class"] is not None and window["mitogen_connection"] is not True:
        return (
            f"it fell back to stock ({window['connection']}.is_mitogen_connection is "
            f"{window['mitogen_connection']})"
        )
    if window["stock_calls"] and not _only_own_local_calls(window):
        return "it made stock transport calls"
    if window["mitogen_connection"] is True and window["action_class"]:
        if not window["mitogen_action"]:
            return "its action plugin has no ansible_mitogen ActionModuleMixin"
    if not window["probe"]:
        return "Mitogen calls were not being counted (mitogen.parent not imported)"
    return None


def _not_fallback(window: dict[str, Any]) -> str | None:
    """Why this execution was not a fallback to stock through Mitogen's connection."""
    if "error" in window:
        return f"the probe could not describe it: {window['error']}"
    if window["mitogen_calls"]:
        return "it made Mitogen calls"
    if window["connection_class"] is not None and not window["ansible_mitogen_connection"]:
        return f"its connection plugin {window['connection']!r} is not Mitogen's (not redirected)"
    if window["connection_class"] is not None and window["mitogen_connection"] is not False:
        return f"{window['connection']}.is_mitogen_connection is {window['mitogen_connection']}"
    return None


def _windows(records: list[dict[str, Any]]) -> Iterable[tuple[dict[str, Any], Any]]:
    """(record, execution) pairs, each execution once (with its loop item if it has one);
    (record, None) for a result left without a match."""
    seen: set[tuple[str, int]] = set()
    for record in records:
        if record.get("type") != "result" or "via" not in record:
            continue
        if record["via"] is None:
            yield record, None
            continue
        for window in record["via"]:
            if (window["run"], window["window"]) not in seen:
                seen.add((window["run"], window["window"]))
                yield record, window


def check_mitogen(records: list[dict[str, Any]], fallback: Collection[str] = ()) -> list[str]:
    """Every result not served by Mitogen (or, for the tasks named in `fallback`, not
    served by stock through Mitogen's connection), one message each."""
    problems: list[str] = []
    fell_back: set[str] = set()
    flagged: set[str] = set()
    for record, window in _windows(records):
        declared = record["task"] in fallback
        if window is None:
            problems.append(f"{_label(record)}: no transport_probe line matches this result")
            continue
        if declared:
            reason = _not_fallback(window)
            if reason is None and window["stock_calls"]:
                fell_back.add(record["task"])
            expected = "expected to fall back to stock (declared)"
        else:
            reason = _not_mitogen(window)
            expected = "expected Mitogen"
        if reason is not None:
            flagged.add(record["task"])
            problems.append(f"{_label(record)}: {expected}, but {reason}{_summary(window)}")
    tasks = {r["task"] for r in records if r.get("type") == "result"}
    for task in sorted(set(fallback) - fell_back):
        if task not in tasks:
            problems.append(f"task {task!r} is declared to fall back but has no result")
        elif task not in flagged:
            problems.append(f"task {task!r} is declared to fall back but made no stock call")
    return problems


def check_stock(records: list[dict[str, Any]]) -> list[str]:
    """Every result of a stock run that went near Mitogen."""
    problems: list[str] = []
    for record, window in _windows(records):
        if window is None:
            problems.append(f"{_label(record)}: no transport_probe line matches this result")
        elif "error" in window:
            problems.append(f"{_label(record)}: the probe could not describe it: {window['error']}")
        elif any(
            window[k] for k in ("mitogen_calls", "ansible_mitogen_connection", "mitogen_action")
        ):
            problems.append(f"{_label(record)}: expected stock, but{_summary(window)}")
    return problems
