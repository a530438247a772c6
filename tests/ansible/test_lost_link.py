"""A link lost in the middle of a task (ssh session killed, target interpreters killed,
the module process killed) ends that task as unreachable or failed, never hangs, and the
next task on the host reconnects; compared with stock over ssh and ssh -> sudo."""

from __future__ import annotations

import pytest

from tests.ansible.harness import Harness

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

#: Stock's module process dies with its interpreter, so stock reports a module failure
#: (rc 137) where the task's Mitogen context is gone: that host is unreachable instead.
INTERPRETERS = "target interpreters killed during a module"
#: Stock's message ends with ssh's (empty) output; ours goes on to say what was lost.
SSH_KILLED = "ssh session killed during a module"
#: The "Killed" a shell between sshd and stock's module may print.
MODULE_KILLED = "the module process killed"


def test_lost_link(harness: Harness) -> None:
    comparison = harness.compare("lost_link.yml")
    stock, ours = comparison.baseline, comparison.candidate
    for host, user in (("plain", "mitogen__plain"), ("sudo_nopw", "mitogen__sudo_nopw")):
        for run in (stock, ours):
            ssh_killed = run.result(host, SSH_KILLED)
            assert ssh_killed["unreachable"], ssh_killed
            assert ssh_killed["msg"].startswith(
                "Task failed: Failed to connect to the host via ssh: "
            ), ssh_killed
            assert run.result(host, "the next task after the ssh session died")["stdout"] == (
                "reconnected"
            )
            killed = run.result(host, MODULE_KILLED)
            assert (killed["failed"], killed["rc"]) == (True, 137), killed
            after = run.result(host, "the next task after the interpreters died")
            assert after["stdout"] == "reconnected again", after
        assert stock.result(host, INTERPRETERS)["rc"] == 137
        lost = ours.result(host, INTERPRETERS)
        assert lost["unreachable"] and not lost["failed"], lost
        assert lost["msg"].startswith(
            f"Task failed: Failed to connect to the host via ssh: lost the connection (ssh {user}@"
        ), lost
        if host == "sudo_nopw":
            assert " -> sudo root) while running the task" in lost["msg"], lost
    remaining = [
        d
        for d in comparison.differences
        if f"({INTERPRETERS!r})" not in d
        and not d.startswith("recap ")
        and not (f"({SSH_KILLED!r}): msg:" in d or f"({MODULE_KILLED!r}): module_stdout:" in d)
    ]
    assert not remaining, "\n".join(remaining)
    recap = {h: ours.stats["hosts"][h] for h in ("plain", "sudo_nopw")}
    assert all(r["unreachable"] == 0 and r["failures"] == 0 for r in recap.values()), recap
