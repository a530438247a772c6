"""A network-namespace host unplugged (its switch port taken down: the host stays up but
nothing reaches it) mid-task and mid-connect, stock (`linear`) and Mitogen
(`mitogen_linear`) side by side, each run with its own namespace host from the session's
`netns_hosts` (tests/testbed/netns.py: the prohibit route over 10.77.0.0/16 is in place
before any address exists; teardown removes only what it made).

The configured timeout: ssh's ConnectTimeout (`timeout`, TIMEOUT seconds) while
connecting, and ServerAliveInterval x ServerAliveCountMax (ALIVE x ALIVE_COUNT seconds)
once connected. Each run answers UNREACHABLE within it, the task on the loopback host
`plain` is unaffected, and once the link is back the next task on the namespace host
reconnects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.harness import TARGET_PYTHON, Harness, HarnessError, RunningPlaybook
from tests.faults import faultlib
from tests.faults.test_link import STRATEGIES, answer, descendants, watch
from tests.testbed.netns import NetnsHost, NetnsHosts

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

#: ssh's ConnectTimeout (Ansible's `timeout`).
TIMEOUT = 5
#: ServerAliveInterval and ServerAliveCountMax: a silent link is dead after 3 s.
ALIVE, ALIVE_COUNT = 1, 3
#: Seconds the unplugged task would run: its target side runs on to its end (as a real
#: host's would), so it is short enough for the stray count to wait for it.
TASK_SECONDS = 12
#: Seconds allowed beyond the configured timeout (Ansible's own worker start and polling).
SLACK = 5


def write_inventory(harness: Harness, path: Path, host: NetnsHost) -> Path:
    """An inventory with one host `netns`: the namespace host, as the `plain` account."""
    python = next(str(p.executable) for p in harness.testbed.pythons if p.short == TARGET_PYTHON)
    variables = {
        "ansible_host": host.address,
        "ansible_port": 22,
        "ansible_user": harness.account("plain").name,
        "ansible_ssh_private_key_file": str(harness.testbed.keys.client_key),
        "ansible_ssh_common_args": (
            f"-o UserKnownHostsFile={host.known_hosts} -o StrictHostKeyChecking=yes "
            f"-o IdentitiesOnly=yes -o ServerAliveInterval={ALIVE} "
            f"-o ServerAliveCountMax={ALIVE_COUNT}"
        ),
        "ansible_ssh_timeout": TIMEOUT,
        "ansible_python_interpreter": python,
    }
    path.write_text(json.dumps({"all": {"hosts": {"netns": variables}}}))
    return path


@pytest.fixture
def hosts(netns_hosts: NetnsHosts) -> Iterator[dict[str, NetnsHost]]:
    """One namespace host per strategy; plugged back in whatever the test did."""
    chosen = dict(zip(STRATEGIES, netns_hosts, strict=False))
    try:
        yield chosen
    finally:
        for host in chosen.values():
            host.link_up()


def end_runs(runs: dict[str, RunningPlaybook], finished: dict[str, Any]) -> None:
    """Kill the runs a failed test did not wait for (their logs stay for the report)."""
    for strategy, running in runs.items():
        if strategy not in finished:
            try:
                running.wait(0)
            except HarnessError:
                pass


def start_runs(
    harness: Harness,
    path: Path,
    hosts: dict[str, NetnsHost],
    tmp_path: Path,
    extra: dict[str, dict[str, str]],
) -> dict[str, RunningPlaybook]:
    runs = {}
    for strategy, host in hosts.items():
        inventory = write_inventory(harness, tmp_path / f"netns-{strategy}.json", host)
        runs[strategy] = harness.start(
            path,
            strategy,
            args=["-i", str(harness.inventory_path), "-i", str(inventory)],
            extra_vars=extra[strategy],
        )
    return runs


def check(
    fault: str,
    finished: dict[str, Any],
    seconds: dict[tuple[str, str], float],
    task: str,
    limit: float,
    left: dict[int, str],
) -> list[str]:
    """Record the rows and list what went wrong: the answer, `plain`, the reconnect."""
    problems = []
    for strategy, run in finished.items():
        observed = answer(run.result("netns", task))
        took = seconds[strategy, "netns"]
        faultlib.record(
            fault,
            strategy,
            "UNREACHABLE",
            observed,
            took,
            len(left) if strategy == "mitogen_linear" else None,
        )
        if observed != "UNREACHABLE":
            problems.append(f"{strategy}: {observed}: {run.result('netns', task)}")
        if took > limit:
            problems.append(f"{strategy}: answered after {took:.1f}s (limit {limit}s)")
        if run.result("plain", task).get("stdout") != "unaffected":
            problems.append(f"{strategy}: plain affected: {run.result('plain', task)}")
        back = run.result("netns", "the next task")
        if back.get("stdout") != "reconnected":
            problems.append(f"{strategy}: no reconnect after the link came back: {back}")
    return problems


MID_TASK = """- hosts: netns,plain
  gather_facts: false
  tasks:
    - name: warm
      command: echo warm
    - name: the unplugged task
      shell: "{{ 'echo $$ > ' ~ gate ~ '/pid-' ~ tag ~ '; sleep %(seconds)d.5; echo survived'
                 if inventory_hostname == 'netns' else 'echo unaffected; sleep 1' }}"
      ignore_unreachable: true
      ignore_errors: true
    - name: gate replug
      shell: "{{ gate_replug }}"
      when: inventory_hostname == 'plain'
    - name: the next task
      command: echo reconnected
"""


def test_unplugged_mid_task(
    harness: Harness,
    gate: faultlib.Gate,
    playbook: Any,
    hosts: dict[str, NetnsHost],
    tmp_path: Path,
) -> None:
    strays = faultlib.Strays(harness)
    extra = {
        s: {"gate": str(gate.path), "tag": s, "gate_replug": gate.task(f"replug-{s}")}
        for s in hosts
    }
    runs = start_runs(
        harness, playbook(MID_TASK % {"seconds": TASK_SECONDS}), hosts, tmp_path, extra
    )
    unplugged: dict[tuple[str, str], float] = {}
    finished: dict[str, Any] = {}
    try:
        for strategy, host in hosts.items():
            gate.wait_file(f"pid-{strategy}")
            host.link_down()
            unplugged[strategy, "netns"] = time.monotonic()
        seconds = watch(runs, unplugged, "the unplugged task", 60)
        for strategy, host in hosts.items():
            gate.wait_ready(f"replug-{strategy}")
            host.link_up()
            gate.release(f"replug-{strategy}")
        finished.update((s, r.wait(120)) for s, r in runs.items())
    finally:
        for host in hosts.values():
            host.link_up()
        for strategy in hosts:
            gate.release(f"replug-{strategy}")
        end_runs(runs, finished)
    # The target side of the lost session runs on until its task ends and its reply
    # finds no peer, as it does with stock.
    left = strays.wait(TASK_SECONDS + 10)
    strays.reap(left)
    problems = check(
        "netns host unplugged mid-task",
        finished,
        seconds,
        "the unplugged task",
        ALIVE * ALIVE_COUNT + SLACK,
        left,
    )
    assert not problems, "\n".join(problems) + "\n" + finished["mitogen_linear"].describe()
    assert not left, f"left running: {left}"


MID_CONNECT = """- hosts: netns,plain
  gather_facts: false
  tasks:
    - name: gate connect
      shell: "{{ gate_connect }}"
      when: inventory_hostname == 'plain'
    - name: the unplugged connect
      shell: "{{ 'echo connected' if inventory_hostname == 'netns' else 'echo unaffected' }}"
      ignore_unreachable: true
      ignore_errors: true
    - name: gate replug
      shell: "{{ gate_replug }}"
      when: inventory_hostname == 'plain'
    - name: the next task
      command: echo reconnected
"""


def ssh_client_to(running: RunningPlaybook, address: str) -> int | None:
    """An ssh client the run (ansible-playbook's workers or Mitogen's mux) started to
    `address`, if there is one yet."""
    processes = faultlib.processes()
    for pid in descendants(running.proc.pid):
        cmd = processes.get(pid, (0, ""))[1]
        if cmd.startswith("ssh ") and address in cmd.split():
            return pid
    return None


def test_unplugged_mid_connect(
    harness: Harness,
    gate: faultlib.Gate,
    playbook: Any,
    hosts: dict[str, NetnsHost],
    tmp_path: Path,
) -> None:
    """The link goes down as soon as the run's first ssh client to the host exists: while
    it connects, exchanges keys or bootstraps the interpreter."""
    strays = faultlib.Strays(harness)
    extra = {
        s: {"gate_connect": gate.task(f"connect-{s}"), "gate_replug": gate.task(f"replug-{s}")}
        for s in hosts
    }
    runs = start_runs(harness, playbook(MID_CONNECT), hosts, tmp_path, extra)
    unplugged: dict[tuple[str, str], float] = {}
    finished: dict[str, Any] = {}
    try:
        for strategy, host in hosts.items():
            gate.wait_ready(f"connect-{strategy}")
            gate.release(f"connect-{strategy}")
            deadline = time.monotonic() + 30
            while ssh_client_to(runs[strategy], host.address) is None:
                assert time.monotonic() < deadline, f"{strategy}: no ssh client to {host}"
            host.link_down()
            unplugged[strategy, "netns"] = time.monotonic()
        seconds = watch(runs, unplugged, "the unplugged connect", 60)
        for strategy, host in hosts.items():
            gate.wait_ready(f"replug-{strategy}")
            host.link_up()
            gate.release(f"replug-{strategy}")
        finished.update((s, r.wait(120)) for s, r in runs.items())
    finally:
        for host in hosts.values():
            host.link_up()
        for strategy in hosts:
            gate.release(f"connect-{strategy}")
            gate.release(f"replug-{strategy}")
        end_runs(runs, finished)
    left = strays.wait(10)
    strays.reap(left)
    problems = check(
        "netns host unplugged mid-connect",
        finished,
        seconds,
        "the unplugged connect",
        TIMEOUT + SLACK,
        left,
    )
    assert not problems, "\n".join(problems) + "\n" + finished["mitogen_linear"].describe()
    assert not left, f"left running: {left}"


REBOOT = """- hosts: netns,plain
  gather_facts: false
  tasks:
    - name: warm
      command: echo warm
    - name: reboot
      reboot:
        reboot_command: "/bin/touch {{ gate }}/ready-reboot-{{ tag }}"
        boot_time_command: "cat {{ gate }}/boot-id-{{ tag }}"
        connect_timeout: %(timeout)d
        reboot_timeout: 90
      when: inventory_hostname == 'netns'
    - name: after the reboot
      command: echo back
    - name: gate break
      shell: "{{ gate_break }}"
      when: inventory_hostname == 'plain'
    - name: wait for the connection
      wait_for_connection:
        connect_timeout: %(timeout)d
        timeout: 90
      when: inventory_hostname == 'netns'
    - name: after waiting
      command: echo back
"""


def go_down(host: NetnsHost, uid: int) -> list[int]:
    """What a reboot does to the sessions on `host`: it drops off the network and every
    process of `uid` in its namespace dies (the sessions' sshd children, the target
    interpreters and their modules: all started by this test's runs). Its sshd listener
    (started by the session's fixture) stays. Returns the PIDs killed."""
    host.link_down()
    found = subprocess.run(
        ["ip", "netns", "pids", host.namespace], capture_output=True, text=True, check=True
    )
    killed = []
    for pid in (int(p) for p in found.stdout.split()):
        try:
            if os.stat("/proc/%d" % pid).st_uid == uid:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return killed


def test_reboot_and_wait_for_connection(
    harness: Harness,
    gate: faultlib.Gate,
    playbook: Any,
    hosts: dict[str, NetnsHost],
    tmp_path: Path,
) -> None:
    """`reboot` (the real action plugin; its reboot and boot-id commands are the test's)
    while the test takes the host down and back, then `wait_for_connection` while the
    host is still down: both end OK with either strategy, and so does the next task."""
    uid = harness.account("plain").uid
    strays = faultlib.Strays(harness)
    extra = {
        s: {"gate": str(gate.path), "tag": s, "gate_break": gate.task(f"break-{s}")} for s in hosts
    }
    for strategy in hosts:
        gate.file(f"boot-id-{strategy}").write_text("first boot\n")
    path = playbook(REBOOT % {"timeout": TIMEOUT})
    runs = start_runs(harness, path, hosts, tmp_path, extra)
    killed: dict[str, list[int]] = {}
    finished: dict[str, Any] = {}
    try:
        for strategy, host in hosts.items():
            gate.wait_ready(f"reboot-{strategy}")
            killed[strategy] = go_down(host, uid)
            time.sleep(2)
            gate.file(f"boot-id-{strategy}").write_text("second boot\n")
            host.link_up()
        back: dict[tuple[str, str], float] = {}
        for strategy, host in hosts.items():
            gate.wait_ready(f"break-{strategy}")
            killed[strategy] += go_down(host, uid)
            gate.release(f"break-{strategy}")
        time.sleep(TIMEOUT)  # wait_for_connection's first attempts find nobody
        for strategy, host in hosts.items():
            host.link_up()
            back[strategy, "netns"] = time.monotonic()
        seconds = watch(runs, back, "wait for the connection", 90)
        finished.update((s, r.wait(180)) for s, r in runs.items())
    finally:
        for host in hosts.values():
            host.link_up()
        for strategy in hosts:
            gate.release(f"break-{strategy}")
        end_runs(runs, finished)
    left = strays.wait(10)
    strays.reap(left)
    problems = []
    for strategy, run in finished.items():
        rebooted = run.result("netns", "reboot")
        waited = run.result("netns", "wait for the connection")
        observed = "OK" if answer(rebooted) == answer(waited) == "OK" else "FAILED"
        faultlib.record(
            "reboot + wait_for_connection (netns host down, its sessions killed)",
            strategy,
            "OK",
            observed,
            seconds[strategy, "netns"],
            len(left) if strategy == "mitogen_linear" else None,
        )
        if not killed[strategy]:
            problems.append(f"{strategy}: no session of the host was there to kill")
        if answer(rebooted) != "OK":
            problems.append(f"{strategy}: reboot gave {rebooted}")
        if answer(waited) != "OK":
            problems.append(f"{strategy}: wait_for_connection gave {waited}")
        for task in ("after the reboot", "after waiting"):
            for name in ("netns", "plain"):
                if run.result(name, task).get("stdout") != "back":
                    problems.append(f"{strategy} {name}: {task}: {run.result(name, task)}")
    assert not problems, "\n".join(problems) + "\n" + finished["mitogen_linear"].describe()
    assert not left, f"left running: {left}"
