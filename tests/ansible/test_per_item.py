"""Connection and become variables templated on the loop item take effect per item, with
every strategy we ship: a reused connection must not keep the first item's chain (it
would run later items as the wrong user)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ansible.harness import Harness, PlaybookRun

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

PLAIN, SU, NOPW = "mitogen__plain", "mitogen__su_target", "mitogen__sudo_nopw"

#: (host, task) -> what each item gives with stock Ansible, in loop order.
ITEMS: dict[tuple[str, str], list[Any]] = {
    ("sudo_nopw", "become user from a variable per item"): [PLAIN, SU, "root", PLAIN],
    ("sudo_nopw", "become_user keyword per item"): ["root", PLAIN, "root"],
    ("sudo_nopw", "become on and off per item"): [NOPW, "root", NOPW],
    ("sudo_nopw", "a module as the become user per item"): [f"3.12 {PLAIN}", "3.12 root"],
    ("sudo_nopw", "login user per item"): [PLAIN, NOPW, PLAIN],
    ("sudo_nopw", "interpreter per item"): [f"3.11 {NOPW}", f"3.12 {NOPW}", f"3.11 {NOPW}"],
    ("sudo_pw", "become password per item"): [None, "root", None],
}


def item_values(run: PlaybookRun, host: str, task: str) -> list[Any]:
    """Each item's stdout (or msg), None for a failed item."""
    items = [
        r
        for r in run.results
        if r["host"] == host and r["task"] == task and r["event"].startswith("item")
    ]
    return [None if r["failed"] else r.get("stdout", r.get("msg")) for r in items]


def check_items(run: PlaybookRun) -> None:
    for (host, task), expected in ITEMS.items():
        assert item_values(run, host, task) == expected, f"{run.strategy}: {host} {task!r}"
    owners = run.result("sudo_nopw", "owners of the copies")["stdout"]
    assert owners.split() == [PLAIN, SU], run.strategy


@pytest.mark.parametrize(
    "baseline, candidate",
    [
        ("linear", "mitogen_linear"),
        ("free", "mitogen_free"),
        ("host_pinned", "mitogen_host_pinned"),
    ],
)
def test_per_item_variables(harness: Harness, baseline: str, candidate: str) -> None:
    comparison = harness.compare("per_item.yml", baseline, candidate)
    check_items(comparison.baseline)
    check_items(comparison.candidate)
    comparison.assert_same()
