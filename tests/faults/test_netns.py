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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.harness import TARGET_PYTHON, Harness, RunningPlaybook
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
                 if inventory_hostname == 'netns' else 'sleep 1; echo unaffected' }}"
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
        finished = {s: r.wait(120) for s, r in runs.items()}
    finally:
        for host in hosts.values():
            host.link_up()
        for strategy in hosts:
            gate.release(f"replug-{strategy}")
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
        finished = {s: r.wait(120) for s, r in runs.items()}
    finally:
        for host in hosts.values():
            host.link_up()
        for strategy in hosts:
            gate.release(f"connect-{strategy}")
            gate.release(f"replug-{strategy}")
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
