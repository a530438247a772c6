"""Nothing outlives ansible-playbook: no mux on the controller, no context or
module process on the targets, whether the run ends normally or by Ctrl-C."""

from __future__ import annotations

import os
import pwd
import signal
import time
from pathlib import Path

from tests.ansible.harness import Harness

LONG_PLAY = """- hosts: plain
  gather_facts: false
  tasks:
    - command: echo warm
    - command: sleep 30
"""


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (uid, command line) of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            uid = os.stat("/proc/" + entry).st_uid
            with open("/proc/%s/cmdline" % entry, "rb") as fp:
                cmdline = fp.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        found[int(entry)] = (uid, cmdline)
    return found


def leftovers(baseline: dict[int, tuple[int, str]], uid: int) -> list[str]:
    return [
        "%d: %s" % (pid, cmd)
        for pid, (owner, cmd) in processes().items()
        if pid not in baseline and ("ansible_mitogen.mux" in cmd or owner == uid)
    ]


def wait_clean(baseline: dict[int, tuple[int, str]], uid: int, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(baseline, uid)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def test_nothing_left_after_normal_exit(harness: Harness) -> None:
    uid = pwd.getpwnam(harness.account("plain").name).pw_uid
    baseline = processes()
    run = harness.run("command_shell.yml", "mitogen_linear")
    assert run.rc == 0, run.describe()
    assert wait_clean(baseline, uid) == []


def test_nothing_left_after_ctrl_c(harness: Harness, tmp_path: Path) -> None:
    uid = pwd.getpwnam(harness.account("plain").name).pw_uid
    playbook = tmp_path / "long.yml"
    playbook.write_text(LONG_PLAY)
    baseline = processes()
    running = harness.start(playbook, "mitogen_linear")
    deadline = time.monotonic() + 60
    while not any(
        "sleep 30" in cmd and owner == uid
        for pid, (owner, cmd) in processes().items()
        if pid not in baseline
    ):
        assert time.monotonic() < deadline, "the long task never started"
        time.sleep(0.1)
    started = time.monotonic()
    # As a terminal's Ctrl-C does: SIGINT to the run's whole process group
    # (the harness started ansible-playbook in a session of its own).
    os.killpg(running.proc.pid, signal.SIGINT)
    run = running.wait(60)
    assert run.rc != 0
    assert wait_clean(baseline, uid) == []
    assert time.monotonic() - started < 15
