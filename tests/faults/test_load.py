"""Load: 100 network-namespace hosts (tests/ansible/test_scale.py's fleet: 10.77.K.1-100
behind the prohibit route) x 6 tasks, 2 of them with become, forks 50, under
mitogen_linear: every task OK, no interpreter rebuilt between tasks, nothing left
running, and the time it took. benchmarks/ansible_bench.py --hosts 100 compares it with
stock (a benchmark, not a timed test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ansible.harness import Harness
from tests.ansible.test_scale import (  # noqa: F401 (fleet is a fixture)
    BECOME,
    FORKS,
    HOST_COUNT,
    PLAIN,
    TASKS,
    context_pids,
    fleet,
    write_inventory,
    write_playbook,
)
from tests.faults import faultlib
from tests.faults.test_link import answer
from tests.testbed import Testbed
from tests.testbed.netns import NetnsHosts

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]


@pytest.mark.slow
def test_100_hosts(harness: Harness, testbed: Testbed, fleet: NetnsHosts, tmp_path: Path) -> None:  # noqa: F811
    inventory = write_inventory(tmp_path / "inventory.ini", testbed, fleet)
    playbook = write_playbook(tmp_path / "fleet.yml", "fleet")
    strays = faultlib.Strays(harness, ("sudo_nopw",))
    run = harness.run(
        playbook, "mitogen_linear", args=["-i", str(inventory), "--forks", str(FORKS)], timeout=240
    )
    left = strays.wait(10)
    strays.reap(left)
    hosts = [f"f{h.index}" for h in fleet]
    answers = [answer(run.result(host, task)) for host in hosts for task in TASKS]
    ok = answers.count("OK")
    rebuilt = [
        host
        for host in hosts
        for tasks in (PLAIN, BECOME)
        if len(set(context_pids(run, host, tasks))) != 1
    ]
    faultlib.record(
        "load: %d hosts x %d tasks (%d with become), forks %d: %d/%d OK, %d rebuilt"
        % (HOST_COUNT, len(TASKS), len(BECOME), FORKS, ok, len(answers), len(rebuilt)),
        "mitogen_linear",
        "all OK, 0 rebuilt",
        "all OK, 0 rebuilt" if ok == len(answers) and not rebuilt else "FAILED or rebuilt",
        run.seconds,
        len(left),
    )
    assert run.rc == 0, run.describe()
    assert ok == len(answers) == HOST_COUNT * len(TASKS)
    assert not rebuilt, rebuilt[:10]
    assert not left, left
