"""Hostile targets under a real Mitogen run: a target interpreter that bootstraps
normally and then writes crafted bytes upward as if its context had sent them
(tests/faults/hostile_python.py): bytes that are no frame, a header announcing a 2 GiB
message, forged messages (CALL_FUNCTION to the mux with its own and with claimed
authority, a spoofed src_id, ADD_ROUTE for the mux's ID) and a flood of small messages.
The mux disconnects the first two and the task answers UNREACHABLE naming the host, it
drops and logs the forged ones (none of their calls runs), it absorbs the flood with its
memory flat, and it keeps serving `plain` throughout. tests/unit/test_faults.py checks
the same refusals between bare Mitogen contexts."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.harness import REPO, TARGET_PYTHON, Harness, RunningPlaybook
from tests.faults import faultlib
from tests.faults.test_controller import mux_of
from tests.faults.test_link import answer

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

MODES = ("garbage", "oversized", "forged", "flood")
RELAY = Path(__file__).with_name("hostile_python.py")
#: The mux's resident memory stays below this (MB) through the whole run, flood included.
RSS_CAP_MB = 120
#: What the mux logs for each forged message.
REFUSALS = ("claims authority", "is not reachable through that stream", "refused ADD_ROUTE")

PLAY = """- hosts: garbage,oversized,forged,flood,plain
  gather_facts: false
  tasks:
    - name: first task
      command: echo first
      ignore_unreachable: true
      ignore_errors: true
    - name: second task
      command: echo second
      ignore_unreachable: true
      ignore_errors: true
"""


@pytest.fixture
def wrappers() -> Iterator[Path]:
    """A directory the test accounts can read, for the interpreter wrappers and the
    marker file a forged call would create."""
    path = Path(tempfile.mkdtemp(prefix="faults-hostile-"))
    os.chmod(path, 0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def write_inventory(harness: Harness, directory: Path) -> Path:
    python = next(str(p.executable) for p in harness.testbed.pythons if p.short == TARGET_PYTHON)
    sshd = harness.testbed.sshd
    hosts = {}
    for mode in MODES:
        wrapper = directory / f"python-{mode}"
        wrapper.write_text(
            f'#!/bin/sh\nexec {python} {RELAY} {mode} {REPO} {directory}/pwned {python} "$@"\n'
        )
        wrapper.chmod(0o755)
        hosts[mode] = {"ansible_python_interpreter": str(wrapper)}
    path = directory / "inventory.json"
    common = {
        "ansible_host": sshd.address,
        "ansible_port": sshd.port,
        "ansible_user": harness.account("plain").name,
        "ansible_ssh_private_key_file": str(harness.testbed.keys.client_key),
        "ansible_ssh_common_args": (
            f"-o UserKnownHostsFile={sshd.known_hosts} "
            "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
        ),
    }
    path.write_text(json.dumps({"all": {"hosts": hosts, "vars": common}}))
    return path


def rss_mb(pid: int) -> float:
    try:
        with open("/proc/%d/status" % pid) as fp:
            for line in fp:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class MuxMemory(threading.Thread):
    """Samples the run's mux's resident memory until the run ends."""

    def __init__(self, running: RunningPlaybook) -> None:
        super().__init__(daemon=True)
        self.running = running
        self.samples: list[float] = []

    def run(self) -> None:
        pid = None
        while self.running.proc.poll() is None:
            if pid is None:
                try:
                    pid = mux_of(self.running)
                except AssertionError:
                    pid = None
            if pid is not None:
                value = rss_mb(pid)
                if value:
                    self.samples.append(value)
            time.sleep(0.05)


def test_hostile_targets(harness: Harness, playbook: Any, wrappers: Path) -> None:
    inventory = write_inventory(harness, wrappers)
    strays = faultlib.Strays(harness)
    began = time.monotonic()
    running = harness.start(
        playbook(PLAY),
        "mitogen_linear",
        args=["-i", str(harness.inventory_path), "-i", str(inventory)],
    )
    memory = MuxMemory(running)
    memory.start()
    run = running.wait(180)
    memory.join(10)
    seconds = time.monotonic() - began
    left = strays.wait(10)
    strays.reap(left)
    user = harness.account("plain").name
    where = f"{user}@{harness.testbed.sshd.address}"
    problems = []
    observed = {mode: answer(run.result(mode, "first task")) for mode in MODES}
    for mode in ("garbage", "oversized"):
        result = run.result(mode, "first task")
        named = where in result.get("msg", "")
        faultlib.record(
            f"hostile target: {mode} after the bootstrap",
            "mitogen_linear",
            "UNREACHABLE, host named",
            observed[mode] + (", host named" if named else ", host not named"),
            seconds,
            len(left),
        )
        if observed[mode] != "UNREACHABLE" or not named:
            problems.append(f"{mode}: {result}")
    forged_ran = (wrappers / "pwned").exists()
    logged = [
        r for r in REFUSALS if any(r in line for line in (run.stdout + run.stderr).splitlines())
    ]
    faultlib.record(
        "hostile target: forged CALL_FUNCTION/src_id/auth_id/ADD_ROUTE",
        "mitogen_linear",
        "refused, logged, task OK",
        ("RAN" if forged_ran else "refused")
        + (", logged" if len(logged) == len(REFUSALS) else ", not logged")
        + ", task "
        + observed["forged"],
        seconds,
        len(left),
    )
    if forged_ran:
        problems.append("a forged CALL_FUNCTION ran on the controller")
    if len(logged) != len(REFUSALS):
        problems.append(f"only {logged} of {REFUSALS} logged:\n" + run.stderr[-3000:])
    peak = max(memory.samples, default=0.0)
    faultlib.record(
        f"hostile target: flood of 100000 small messages (mux peak RSS {peak:.0f} MB)",
        "mitogen_linear",
        f"task OK, RSS < {RSS_CAP_MB} MB",
        f"task {observed['flood']}, RSS "
        + (f"< {RSS_CAP_MB} MB" if peak < RSS_CAP_MB else f"{peak:.0f} MB"),
        seconds,
        len(left),
    )
    if not memory.samples:
        problems.append("the mux's memory was never sampled")
    if peak >= RSS_CAP_MB:
        problems.append(f"the mux reached {peak:.0f} MB")
    for mode in ("forged", "flood"):
        for task in ("first task", "second task"):
            if answer(run.result(mode, task)) != "OK":
                problems.append(f"{mode} {task}: {run.result(mode, task)}")
    for task, out in (("first task", "first"), ("second task", "second")):
        if run.result("plain", task).get("stdout") != out:
            problems.append(f"plain {task}: {run.result('plain', task)}")
    assert not problems, "\n".join(problems) + "\n" + run.describe()
    assert not left, left
    assert seconds < 60, f"the run took {seconds:.0f}s"
