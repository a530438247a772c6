"""Interpreters stay up across the tasks of a play: over 100 hosts none is shut down and
rebuilt between tasks (issue 14), and on one host they go only beyond the per-host limit
the user sets.

Every task reports the PID of the interpreter it ran in: a module runs in a fork of its
context's interpreter, so the parent of the module process is the context, and a rebuilt
context has a new PID. The 100 hosts are network-namespace hosts (tests/testbed/netns.py)
sharing the testbed's accounts and keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.ansible.harness import Harness, PlaybookRun
from tests.testbed import Testbed
from tests.testbed.netns import NetnsHosts

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

HOST_COUNT = 100
FORKS = 50

#: The context's PID, seen from a shell the module started ($PPID is the module).
CONTEXT_PID = "sed -n 's/^PPid:[[:space:]]*//p' /proc/$PPID/status"

#: Tasks in play order: plain ones run as the login user, "become" ones as root.
TASKS = ("plain 1", "plain 2", "become 1", "plain 3", "become 2", "plain 4")
PLAIN = tuple(t for t in TASKS if t.startswith("plain"))
BECOME = tuple(t for t in TASKS if t.startswith("become"))


def write_playbook(path: Path, hosts: str) -> Path:
    tasks = "".join(
        f'    - name: {name}\n      shell: "{CONTEXT_PID}"\n      become: {name in BECOME}\n'
        for name in TASKS
    )
    path.write_text(f"- hosts: {hosts}\n  gather_facts: false\n  tasks:\n{tasks}")
    return path


def context_pids(run: PlaybookRun, host: str, tasks: Sequence[str]) -> list[str]:
    return [run.result(host, task)["stdout"] for task in tasks]


@pytest.fixture(scope="module")
def fleet(testbed: Testbed) -> Iterator[NetnsHosts]:
    """HOST_COUNT namespace hosts of their own (the session's `netns_hosts` has 3). The
    tag keeps the testbed's '<pid>x<n>' form, so a crashed run's leftovers are reaped, but
    with a leading zero in n that no Testbed instance ever uses."""
    pid, _, number = testbed.tag.partition("x")
    hosts = NetnsHosts(testbed.keys, tag=f"{pid}x0{number}", count=HOST_COUNT)
    hosts.start()
    try:
        yield hosts
    finally:
        hosts.stop()


def write_inventory(path: Path, testbed: Testbed, fleet: NetnsHosts) -> Path:
    known_hosts = path.with_name("known_hosts")
    known_hosts.write_text("".join(host.known_hosts.read_text() for host in fleet))
    lines = ["[fleet]"]
    lines += [f"f{host.index} ansible_host={host.address}" for host in fleet]
    lines += [
        "[fleet:vars]",
        f"ansible_user={testbed.accounts.sudo_nopw.name}",
        "ansible_port=22",
        f"ansible_ssh_private_key_file={testbed.keys.client_key}",
        f'ansible_ssh_common_args="-o UserKnownHostsFile={known_hosts} '
        '-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"',
        "ansible_python_interpreter=/usr/bin/python3",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_no_context_is_rebuilt_between_tasks_of_a_100_host_play(
    harness: Harness, testbed: Testbed, fleet: NetnsHosts, tmp_path: Path
) -> None:
    inventory = write_inventory(tmp_path / "inventory.ini", testbed, fleet)
    playbook = write_playbook(tmp_path / "fleet.yml", "fleet")
    run = harness.run(
        playbook, "mitogen_linear", args=["-i", str(inventory), "--forks", str(FORKS)]
    )
    run.check_strategy()
    assert run.rc == 0, run.describe()
    rebuilt = []
    contexts: set[str] = set()
    for host in (f"f{h.index}" for h in fleet):
        for tasks in (PLAIN, BECOME):
            pids = context_pids(run, host, tasks)
            if len(set(pids)) != 1:
                rebuilt.append(f"{host}: {dict(zip(tasks, pids, strict=True))}")
            contexts.update(pids)
    assert not rebuilt, f"{len(rebuilt)} chain(s) rebuilt mid-play, e.g.:\n" + "\n".join(
        rebuilt[:10]
    )
    # One interpreter per host and user, none shared: the PIDs really are the contexts'.
    assert len(contexts) == 2 * HOST_COUNT


@pytest.mark.parametrize("where", [None, "environment", "ansible.cfg"])
def test_the_per_host_limit_set_by_the_user_reaches_the_mux(
    harness: Harness, tmp_path: Path, where: str | None
) -> None:
    """With a limit of 1 the login context stays (root's was started through it) and
    root's idle context goes when the login user's is used again; by default both stay."""
    env: dict[str, str] = {}
    if where == "environment":
        env["MITOGEN_MAX_INTERPRETERS_PER_HOST"] = "1"
    elif where == "ansible.cfg":
        config = tmp_path / "ansible.cfg"
        config.write_text(
            harness.config_path.read_text() + "[mitogen]\nmax_interpreters_per_host = 1\n"
        )
        env["ANSIBLE_CONFIG"] = str(config)
    playbook = write_playbook(tmp_path / "one.yml", "sudo_nopw")
    run = harness.run(playbook, "mitogen_linear", env=env)
    assert run.rc == 0, run.describe()
    plain = context_pids(run, "sudo_nopw", PLAIN)
    become = context_pids(run, "sudo_nopw", BECOME)
    assert len(set(plain)) == 1, plain
    assert (len(set(become)) == 1) == (where is None), become
