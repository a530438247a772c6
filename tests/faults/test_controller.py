"""Faults on the controller side of a Mitogen run: the mux SIGKILLed mid-run (running and
later tasks fail naming the mux, within seconds, and ansible-playbook exits),
ansible-playbook SIGKILLed while a task runs (the mux, its ssh clients, the target
interpreters and the module's children are gone within 5 s), and Ctrl-C (SIGINT to the
run's process group, as a terminal sends it) while connecting, while a module runs and
during a file transfer. tests/ansible/test_cleanup.py has the plain Ctrl-C case; this
suite adds the other stages and the figures."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.harness import Harness, RunningPlaybook
from tests.faults import faultlib
from tests.faults.test_link import answer, descendants, flaky_inventory

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

STRATEGY = "mitogen_linear"
#: Seconds within which everything must be gone after ansible-playbook is killed or
#: interrupted.
GONE_SECONDS = 5.0

LONG_TASK = """- hosts: plain,sudo_nopw
  gather_facts: false
  become: "{{ inventory_hostname == 'sudo_nopw' }}"
  tasks:
    - name: warm
      command: echo warm
    - name: the long task
      shell: "echo $$ > {{ gate }}/pid-{{ inventory_hostname }}; sleep 30"
      ignore_unreachable: true
      ignore_errors: true
    - name: the later task
      command: echo later
      ignore_unreachable: true
      ignore_errors: true
"""


def mux_of(running: RunningPlaybook) -> int:
    for pid in descendants(running.proc.pid):
        if "ansible_mitogen.mux" in faultlib.processes().get(pid, (0, ""))[1]:
            return pid
    raise AssertionError("no mux under ansible-playbook %d" % running.proc.pid)


def start_long(harness: Harness, gate: faultlib.Gate, playbook: Any) -> RunningPlaybook:
    running = harness.start(playbook(LONG_TASK), STRATEGY, extra_vars={"gate": str(gate.path)})
    for host in ("plain", "sudo_nopw"):
        gate.wait_file(f"pid-{host}")
    return running


def test_mux_killed_mid_run(harness: Harness, gate: faultlib.Gate, playbook: Any) -> None:
    strays = faultlib.Strays(harness)
    running = start_long(harness, gate, playbook)
    os.kill(mux_of(running), signal.SIGKILL)
    killed = time.monotonic()
    run = running.wait(60)
    seconds = time.monotonic() - killed
    left = strays.wait(5)
    strays.reap(left)
    observed = {
        (host, task): answer(run.result(host, task))
        for host in ("plain", "sudo_nopw")
        for task in ("the long task", "the later task")
    }
    messages = {key: run.result(*key)["msg"] for key in observed}
    named = all("mux" in m for m in messages.values())
    faultlib.record(
        "mux SIGKILLed mid-run (running + later tasks)",
        STRATEGY,
        "failed, naming the mux",
        "failed, naming the mux"
        if named and set(observed.values()) <= {"FAILED", "UNREACHABLE"}
        else str(observed),
        seconds,
        len(left),
    )
    assert set(observed.values()) <= {"FAILED", "UNREACHABLE"}, (observed, run.describe())
    assert named, [m for m in messages.values() if "mux" not in m]
    assert seconds < 15, f"ansible-playbook took {seconds:.1f}s to exit after the mux died"
    assert not left, f"left running: {left}"


def test_ansible_playbook_sigkilled(harness: Harness, gate: faultlib.Gate, playbook: Any) -> None:
    strays = faultlib.Strays(harness)
    running = start_long(harness, gate, playbook)
    before = strays.now()
    assert any("sleep 30" in cmd for cmd in before.values()), before
    running.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    left = strays.wait(GONE_SECONDS)
    seconds = time.monotonic() - killed
    strays.reap(left)
    running.wait(30)
    faultlib.record(
        "ansible-playbook SIGKILLed during `sleep 30`",
        STRATEGY,
        "nothing left",
        "nothing left" if not left else "%d left" % len(left),
        seconds,
        len(left),
    )
    assert not left, f"still running 5 s after ansible-playbook died: {left}"


TRANSFER = """- hosts: plain
  gather_facts: false
  tasks:
    - name: the transfer
      copy:
        src: "{{ big }}"
        dest: "{{ workdir }}/big"
"""

CONNECT = """- hosts: flaky
  gather_facts: false
  tasks:
    - name: the connection
      command: echo never
"""


def sigint(running: RunningPlaybook) -> float:
    """Ctrl-C as a terminal sends it: SIGINT to the run's process group (the harness
    started ansible-playbook in a session of its own); returns when it was sent."""
    os.killpg(running.proc.pid, signal.SIGINT)
    return time.monotonic()


@pytest.mark.parametrize("stage", ["connecting", "module", "transfer"])
def test_ctrl_c(
    harness: Harness, gate: faultlib.Gate, playbook: Any, tmp_path: Path, stage: str
) -> None:
    strays = faultlib.Strays(harness)
    daemon = None
    try:
        if stage == "module":
            running = start_long(harness, gate, playbook)
        elif stage == "transfer":
            big = tmp_path / "big"
            with open(big, "wb") as fp:
                block = os.urandom(1 << 20)
                for _ in range(256):
                    fp.write(block)
            remote_tmp = harness.account("plain").home / ".ansible" / "tmp"
            before = set(remote_tmp.rglob("*")) if remote_tmp.is_dir() else set()
            running = harness.start(playbook(TRANSFER), STRATEGY, extra_vars={"big": str(big)})
            workdir = running.workdir_base / "plain"
            deadline = time.monotonic() + 60
            # The transfer has begun once a (temporary) file appears in the destination
            # directory or in the account's remote_tmp.
            while not any(workdir.iterdir()) and not (
                remote_tmp.is_dir() and set(remote_tmp.rglob("*")) - before
            ):
                assert running.proc.poll() is None, running.wait().describe()
                assert time.monotonic() < deadline, "the transfer never started"
                time.sleep(0.005)
        else:
            inventory = tmp_path / "flaky.json"
            daemon = flaky_inventory(harness, inventory, "127.0.0.31")
            assert daemon.pid is not None
            os.kill(daemon.pid, signal.SIGSTOP)  # accepts, never sends its banner
            running = harness.start(playbook(CONNECT), STRATEGY, args=["-i", str(inventory)])
            deadline = time.monotonic() + 30
            while not any(
                cmd.startswith("ssh") and str(daemon.port) in cmd
                for pid, (_u, cmd) in faultlib.processes().items()
                if pid in descendants(running.proc.pid)
            ):
                assert time.monotonic() < deadline, "no ssh client was started"
                time.sleep(0.05)
        sent = sigint(running)
        run = running.wait(60)
        seconds = time.monotonic() - sent
        left = strays.wait(5)
    finally:
        if daemon is not None:
            if daemon.pid is not None:
                os.kill(daemon.pid, signal.SIGCONT)
            daemon.stop()
    strays.reap(left)
    partial = [path for path in run.files if path.startswith("target:plain/")]
    faultlib.record(
        f"Ctrl-C {stage}",
        STRATEGY,
        "exits, nothing left",
        "exits, nothing left" if not left and run.rc != 0 else f"rc {run.rc}, {len(left)} left",
        seconds,
        len(left),
    )
    assert run.rc != 0, run.describe()
    assert seconds < GONE_SECONDS, f"ansible-playbook took {seconds:.1f}s to exit after Ctrl-C"
    assert not left, f"left running: {left}"
    assert not partial, f"files left in the destination directory: {partial}"
