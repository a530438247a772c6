"""Tasks Mitogen cannot serve run as stock Ansible, with the same results, and the harness
tells them from the tasks Mitogen served."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ansible.harness import Harness, make_comparison

BECOME_PLUGINS = Path(__file__).parent / "plugins" / "become"

#: The tasks of become_fallback.yml that use a become method Mitogen does not run.
FALLBACK = {"a command through an unsupported become method", "a module through it"}


def test_unsupported_become_method_falls_back_to_stock(harness: Harness) -> None:
    comparison = harness.compare(
        "become_fallback.yml",
        fallback=FALLBACK,
        env={"ANSIBLE_BECOME_PLUGINS": str(BECOME_PLUGINS)},
    )
    comparison.assert_same()
    candidate = comparison.candidate
    assert candidate.rc == 0, candidate.describe()
    marked = candidate.result("plain", "a command through an unsupported become method")
    assert marked["stdout"] == "1", marked
    mitogen = candidate.result("plain", "a task without become still goes through Mitogen")
    assert mitogen["via"][0]["mitogen_calls"], mitogen

    # the same runs, judged without the declaration: the fallback is a failure
    undeclared = make_comparison(comparison.baseline, candidate)
    assert undeclared.differences == []
    assert len(undeclared.unserved) == 2, undeclared.unserved
    for problem, task in zip(sorted(undeclared.unserved), sorted(FALLBACK), strict=True):
        assert problem.startswith(
            f"plain ok {task!r}: expected Mitogen, but it fell back to "
            "stock (mitogen_ssh.is_mitogen_connection is False)"
        ), problem
    with pytest.raises(AssertionError, match="2 results were not served as expected"):
        undeclared.assert_same()

    # declaring a task Mitogen served as a fallback fails too
    served = "a task without become still goes through Mitogen"
    wrong = candidate.served_problems({*FALLBACK, served})
    assert len(wrong) == 1, wrong
    assert wrong[0].startswith(
        f"plain ok {served!r}: expected to fall back to stock (declared), but it made Mitogen calls"
    ), wrong
    assert candidate.served_problems({*FALLBACK, "no such task"}) == [
        "task 'no such task' is declared to fall back but has no result"
    ]
