"""`kill -USR2 <mux pid>` logs every thread's stack of the mux and of each live target
context, the target's even while its main thread runs a module; at normal verbosity the
lines reach ansible-playbook's output, and the mux logs nothing else."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.ansible.harness import Harness, HarnessError

T = TypeVar("T")

#: Unique, so the test finds this run's module by its command line.
SLEEP = "7.25"


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def wait_for(predicate: Callable[[], T], what: str, timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise HarnessError(f"no {what} after {timeout:.0f} s")


def test_usr2_dumps_the_stacks_of_the_mux_and_of_every_target(harness: Harness) -> None:
    running = harness.start(
        "stacks.yml", "mitogen_linear", args=["-vvv"], extra_vars={"sleep_seconds": SLEEP}
    )
    try:
        marker = running.workdir_base / "sudo_pw" / "started"
        wait_for(marker.exists, "marker file")
        mux = wait_for(
            lambda: [
                pid
                for pid in children(running.proc.pid)
                if command_line(pid)[1:3] == ["-m", "ansible_mitogen.mux"]
            ],
            "mux",
        )
        wait_for(
            lambda: any(
                command_line(int(p))[-2:] == ["sleep", SLEEP]
                for p in os.listdir("/proc")
                if p.isdigit()
            ),
            "module run",
        )
        os.kill(mux[0], signal.SIGUSR2)
    finally:
        run = running.wait()
    assert run.rc == 0, run.describe()
    out = run.stdout + run.stderr
    dump = [line for line in out.splitlines() if line.startswith("<mux> MITOGEN LOG [mux] WARNING")]
    text = "\n".join(dump)
    address = re.escape(harness.testbed.sshd.address)
    # the -vvv line says which pid to signal
    assert f"ansible_mitogen: mux started (pid {mux[0]};" in out, run.describe()
    assert f"ansible_mitogen.stacks: stacks of the mux: pid {mux[0]}, " in text, run.describe()
    for thread in "MainThread", "mitogen.broker", "mitogen.Pool.0":
        assert re.search(rf"WARNING thread [^\n]*\b{re.escape(thread)}\b", text), text
    # both contexts of the chain answered; the become one is running the module
    assert re.search(rf"stacks of context \d+ \(ssh\.{address}:\d+ on {address}\): pid", text), text
    become = re.search(
        rf"stacks of context \d+ \(sudo\.root on {address}\): pid \d+.*?(?=stacks of|\Z)",
        text,
        re.S,
    )
    assert become, text
    assert re.search(r'module_runner\.py", line \d+, in run_module', become.group(0)), text
    # nothing but the dump at normal log level
    assert not [line for line in out.splitlines() if "MITOGEN LOG" in line and line not in dump]
