"""Faults on the link to a host, injected by the test while a task runs, with stock
(`linear`) and Mitogen (`mitogen_linear`) side by side: the ssh client killed, the
target interpreters SIGKILLed, the target interpreters SIGSTOPped (so they never answer:
the task's `timeout:` ends it), and the host's sshd stopped between tasks. Each ends with
Ansible's normal answer within seconds, other hosts are unaffected and the next task on
the host reconnects. tests/ansible/test_lost_link.py covers the exact messages of the
first two; this suite measures the time to the answer and what is left running."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.harness import TARGET_PYTHON, Harness, RunningPlaybook
from tests.faults import faultlib

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

STRATEGIES = ("linear", "mitogen_linear")
VICTIMS = ("plain", "sudo_nopw")
#: Seconds the injected task would run if nothing happened to it.
TASK_SECONDS = 40
#: In the command line of the injected task's shell and its `sleep`.
MARKER = "sleep %d.5" % TASK_SECONDS
#: The `timeout:` of the task whose interpreters are stopped.
TASK_TIMEOUT = 8

MID_TASK = """- hosts: plain,sudo_nopw,sudo_pw
  gather_facts: false
  become: "{{ inventory_hostname == 'sudo_nopw' }}"
  tasks:
    - name: the fault
      shell: "{{ 'echo $$ > ' ~ gate ~ '/pid-' ~ tag ~ '-' ~ inventory_hostname
                 ~ '; sleep %(seconds)d.5; echo survived'
                 if inventory_hostname != 'sudo_pw' else 'echo unaffected; sleep 1' }}"
      ignore_unreachable: true
      ignore_errors: true
      %(timeout)s
    - name: the next task
      command: echo reconnected
"""


def ancestors(pid: int) -> list[tuple[int, str]]:
    """(pid, comm) of `pid` and each of its ancestors, nearest first."""
    found = []
    while pid > 1:
        try:
            with open("/proc/%d/stat" % pid) as fp:
                head, tail = fp.read().rsplit(")", 1)
        except OSError:
            break
        found.append((pid, head.split("(", 1)[1]))
        pid = int(tail.split()[1])
    return found


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as fp:
                    ppid = int(fp.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def ssh_clients(running: RunningPlaybook, user: str) -> list[int]:
    """The run's ssh client processes for `user`: children of ansible-playbook (Mitogen's
    mux starts them) or stock's ControlPersist masters in the run's control directory."""
    mine = descendants(running.proc.pid)
    found = []
    for pid, (_uid, cmd) in faultlib.processes().items():
        if not cmd.startswith("ssh") or user not in cmd:
            continue
        if pid in mine or str(running.control_dir) in cmd:
            found.append(pid)
    return found


def victims(fault: str, shell_pid: int, running: RunningPlaybook, user: str) -> list[int]:
    """What to signal for `fault`, given the PID of the task's shell on the target."""
    if fault == "ssh":
        return ssh_clients(running, user)
    chain = ancestors(shell_pid)
    pythons = []
    for pid, comm in chain[1:]:
        if comm.startswith("sshd"):
            break
        if comm.startswith("python"):
            pythons.append(pid)
    return pythons


def result_of(running: RunningPlaybook, host: str, task: str) -> dict[str, Any] | None:
    if not running.results_path.exists():
        return None
    for line in running.results_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # being written
        if (
            record.get("type") == "result"
            and record["host"] == host
            and record["task"] == task
            and record["event"] in ("ok", "failed", "unreachable")
        ):
            return record
    return None


def answer(record: dict[str, Any] | None) -> str:
    if record is None:
        return "none"
    if record.get("unreachable"):
        return "UNREACHABLE"
    if record.get("failed"):
        return "FAILED"
    return "OK"


def watch(
    runs: dict[str, RunningPlaybook], since: dict[tuple[str, str], float], task: str, timeout: float
) -> dict[tuple[str, str], float]:
    """Seconds from `since[(strategy, host)]` until `task` has a result on that host in
    that strategy's run (up to `timeout` seconds of waiting, or until the run ends)."""
    seconds: dict[tuple[str, str], float] = {}
    deadline = time.monotonic() + timeout
    while len(seconds) < len(since) and time.monotonic() < deadline:
        for (strategy, host), began in since.items():
            if (strategy, host) in seconds:
                continue
            running = runs[strategy]
            if result_of(running, host, task) is not None or running.proc.poll() is not None:
                seconds[strategy, host] = time.monotonic() - began
        time.sleep(0.05)
    return {key: seconds.get(key, timeout) for key in since}


#: fault -> (signal, what each strategy should answer, "|" separating acceptable ones).
#: Stock's module dies with its interpreter (FAILED, rc 137), and with its ssh client
#: (FAILED, rc -9: "Module result deserialization failed"); Mitogen's context is the
#: interpreter at the end of that ssh client, so the host is unreachable for that task
#: (see test_lost_link.py).
MID_TASK_FAULTS = {
    "ssh": (signal.SIGKILL, {"linear": "FAILED", "mitogen_linear": "UNREACHABLE"}),
    "interpreter": (signal.SIGKILL, {"linear": "FAILED", "mitogen_linear": "UNREACHABLE"}),
    "stopped": (signal.SIGSTOP, {"linear": "FAILED", "mitogen_linear": "FAILED|UNREACHABLE"}),
}
FAULT_NAMES = {
    "ssh": "ssh client SIGKILLed mid-task",
    "interpreter": "target interpreters SIGKILLed mid-task",
    "stopped": "target interpreters SIGSTOPped (task timeout %ds)" % TASK_TIMEOUT,
}


@pytest.mark.parametrize("fault", list(MID_TASK_FAULTS))
def test_mid_task_fault(harness: Harness, gate: faultlib.Gate, playbook: Any, fault: str) -> None:
    sig, expected = MID_TASK_FAULTS[fault]
    timeout = "timeout: %d" % TASK_TIMEOUT if fault == "stopped" else ""
    path = playbook(MID_TASK % {"seconds": TASK_SECONDS, "timeout": timeout})
    strays = faultlib.Strays(harness, (*VICTIMS, "sudo_pw"))
    runs = {
        s: harness.start(path, s, extra_vars={"gate": str(gate.path), "tag": s}) for s in STRATEGIES
    }
    injected: dict[tuple[str, str], float] = {}
    signalled: list[int] = []
    try:
        for strategy, running in runs.items():
            for host in VICTIMS:
                shell = int(gate.wait_file(f"pid-{strategy}-{host}"))
                user = harness.account(host).name
                pids: list[int] = []
                deadline = time.monotonic() + 10
                while not pids and time.monotonic() < deadline:
                    pids = victims(fault, shell, running, user)
                    time.sleep(0.05)
                assert pids, f"{strategy} {host}: nothing to signal for {fault}"
                for pid in pids:
                    os.kill(pid, sig)
                signalled += pids
                injected[strategy, host] = time.monotonic()
        seconds = watch(runs, injected, "the fault", 60)
    finally:
        finished = {s: r.wait(120) for s, r in runs.items()}
        if fault == "stopped":
            for pid in signalled:  # stock leaves them stopped for ever; let them die
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    left = strays.wait(10)
    strays.reap(left)
    # SIGKILLed interpreters cannot clean up: the task's own shell and `sleep` run on to
    # their end, as they do with stock (whose module process is killed the same way).
    # (The stopped ones are SIGKILLed by the test once the run is over.)
    own = {p: c for p, c in left.items() if fault != "ssh" and MARKER in c}
    left = {p: c for p, c in left.items() if p not in own}
    problems = []
    for strategy, run in finished.items():
        stray_count = len(left) if strategy == "mitogen_linear" else None
        for host in VICTIMS:
            observed = answer(run.result(host, "the fault"))
            row = faultlib.record(
                f"{FAULT_NAMES[fault]} ({host})" + (" [task's sh+sleep run on]" if own else ""),
                strategy,
                expected[strategy],
                observed,
                seconds[strategy, host],
                stray_count,
            )
            if observed not in expected[strategy].split("|"):
                problems.append(f"{strategy} {host}: {observed}, expected {row.expected}")
            after = run.result(host, "the next task")
            if after.get("stdout") != "reconnected":
                problems.append(f"{strategy} {host}: the next task gave {after}")
        other = run.result("sudo_pw", "the fault")
        if other.get("stdout") != "unaffected":
            problems.append(f"{strategy} sudo_pw: {other}")
    assert not problems, "\n".join(problems) + "\n" + finished["mitogen_linear"].describe()
    assert not left, f"left running after the run: {left}"
    limit = TASK_TIMEOUT + 10 if fault == "stopped" else 15
    slow = {k: round(v, 1) for k, v in seconds.items() if v > limit}
    assert not slow, f"answers later than {limit}s after the fault: {slow}"


SSHD_STOPPED = """- hosts: plain,flaky
  gather_facts: false
  tasks:
    - name: before
      command: echo before
    - name: gate stop
      shell: "{{ gate_stop }}"
      when: inventory_hostname == 'plain'
    - name: while sshd is stopped
      command: echo during
      ignore_unreachable: true
    - name: gate start
      shell: "{{ gate_start }}"
      when: inventory_hostname == 'plain'
    - name: after sshd is back
      command: echo reconnected
"""


def flaky_inventory(harness: Harness, path: Path, address: str) -> Any:
    """An inventory with one host `flaky` served by a new sshd on `address`."""
    sshd = harness.testbed.start_sshd(address)
    python = next(str(p.executable) for p in harness.testbed.pythons if p.short == TARGET_PYTHON)
    path.write_text(
        json.dumps(
            {
                "all": {
                    "hosts": {
                        "flaky": {
                            "ansible_host": sshd.address,
                            "ansible_port": sshd.port,
                            "ansible_user": harness.account("plain").name,
                            "ansible_ssh_private_key_file": str(harness.testbed.keys.client_key),
                            "ansible_ssh_common_args": (
                                f"-o UserKnownHostsFile={sshd.known_hosts} "
                                "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
                            ),
                            "ansible_python_interpreter": python,
                        }
                    }
                }
            }
        )
    )
    return sshd


def test_sshd_stopped_between_tasks(
    harness: Harness, gate: faultlib.Gate, playbook: Any, tmp_path: Path
) -> None:
    path = playbook(SSHD_STOPPED)
    strays = faultlib.Strays(harness)
    daemons, runs = {}, {}
    try:
        for n, strategy in enumerate(STRATEGIES):
            inventory = tmp_path / f"flaky-{strategy}.json"
            daemons[strategy] = flaky_inventory(harness, inventory, f"127.0.0.{21 + n}")
            runs[strategy] = harness.start(
                path,
                strategy,
                args=["-i", str(harness.inventory_path), "-i", str(inventory)],
                extra_vars={
                    "gate_stop": gate.task(f"stop-{strategy}"),
                    "gate_start": gate.task(f"start-{strategy}"),
                },
            )
        released = {}
        for strategy in runs:
            gate.wait_ready(f"stop-{strategy}")
            daemons[strategy].stop()
            gate.release(f"stop-{strategy}")
            released[strategy, "flaky"] = time.monotonic()
        seconds = watch(runs, released, "while sshd is stopped", 60)
        for strategy in runs:
            gate.wait_ready(f"start-{strategy}")
            daemons[strategy].start()
            gate.release(f"start-{strategy}")
        finished = {s: r.wait(120) for s, r in runs.items()}
    finally:
        for daemon in daemons.values():
            daemon.stop()
    left = strays.wait(10)
    strays.reap(left)
    problems = []
    for strategy, run in finished.items():
        observed = answer(run.result("flaky", "while sshd is stopped"))
        faultlib.record(
            "sshd stopped between tasks",
            strategy,
            "UNREACHABLE",
            observed,
            seconds[strategy, "flaky"],
            len(left) if strategy == "mitogen_linear" else None,
        )
        if observed != "UNREACHABLE":
            problems.append(f"{strategy}: {observed}")
        for task, out in (("while sshd is stopped", "during"), ("after sshd is back", None)):
            if run.result("plain", task).get("stdout") != (out or "reconnected"):
                problems.append(f"{strategy}: plain affected in {task!r}")
        back = run.result("flaky", "after sshd is back")
        if back.get("stdout") != "reconnected":
            problems.append(f"{strategy}: flaky did not reconnect: {back}")
    assert not problems, "\n".join(problems) + "\n" + finished["mitogen_linear"].describe()
    assert not left, f"left running: {left}"
