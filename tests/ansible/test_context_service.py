"""ContextService's interpreter limits: InterpreterTable's eviction policy on its own,
the service keeping and shutting down real local contexts by it, the settings that set
the limits (ansible.cfg's [mitogen] section and MITOGEN_* variables), and the mux fitting
the total cap to its open-file limit."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import mitogen.core
import mitogen.parent
from ansible_mitogen.services import (
    CONTROLLER,
    ContextService,
    InterpreterTable,
    Limits,
    hop_target,
)
from tests.ansible.harness import REPO

A, B = "ssh:a:22", "ssh:b:22"


def table(per_host: int = 20, total: int = 4096) -> InterpreterTable:
    return InterpreterTable(Limits(per_host=per_host, total=total))


# -- InterpreterTable --------------------------------------------------------


def test_only_the_target_over_its_limit_loses_interpreters() -> None:
    t = table(per_host=2)
    for context_id in (11, 12, 13, 14, 15):  # idle for longer than A's
        t.add(context_id, B)
    for context_id in (1, 2, 3):
        t.add(context_id, A)
    assert t.victims(A) == [1]
    assert (t.count(A), t.count(B)) == (2, 5)
    assert 1 not in t and 11 in t


def test_the_least_recently_used_goes_first() -> None:
    t = table(per_host=2)
    for context_id in (1, 2, 3):
        t.add(context_id, A)
    t.acquire(1)
    t.release(1)
    assert t.victims(A) == [2]
    t.add(4, A)
    assert t.victims(A) == [3]


def test_in_use_interpreters_are_never_evicted() -> None:
    t = table(per_host=1)
    for context_id in (1, 2, 3):
        t.add(context_id, A)
        t.acquire(context_id)
    assert t.victims(A) == []
    assert t.count(A) == 3
    t.release(2)
    assert t.victims(A) == [2]
    t.release(1)
    t.release(3)
    assert t.victims(A) == [1]
    assert t.count(A) == 1 and 3 in t


def test_a_chain_in_use_keeps_the_contexts_it_runs_through() -> None:
    t = table(per_host=1)
    t.add(1, A)  # ssh
    t.add(2, A, parent=1)  # sudo root via 1
    t.add(3, A, parent=1)  # sudo postgres via 1
    t.acquire(2)
    assert t.victims(A) == [3]  # 1 has a child in use, 2 is in use
    t.release(2)
    t.acquire(1)
    assert t.victims(A) == [2]  # 1 is in use itself; its idle child goes
    t.release(1)
    assert t.count(A) == 1


def test_an_idle_parent_goes_after_its_children() -> None:
    t = table(per_host=1)
    t.add(1, A)
    t.add(2, A, parent=1)
    t.add(3, A)
    t.acquire(2)
    t.release(2)  # 2 and 1 used after 3
    t.acquire(3)
    assert t.victims(A) == [2, 1]


def test_using_a_chain_uses_the_contexts_it_runs_through() -> None:
    t = table(per_host=1)
    t.add(1, A)
    t.add(2, A, parent=1)
    t.add(3, A)
    t.acquire(2)
    t.release(2)  # 1 was used after 3, through 2
    t.remove(2)
    assert t.victims(A) == [3]


def test_many_become_users_of_one_host_keep_up_to_the_limit() -> None:
    t = table(per_host=4)
    t.add(1, A)
    for user in range(2, 7):  # five become users through the login context
        t.add(user, A, parent=1)
        t.acquire(user)
        t.release(user)
    assert t.victims(A) == [2, 3]
    assert t.count(A) == 4 and all(user in t for user in (4, 5, 6))


def test_via_children_of_a_removed_context_are_forgotten() -> None:
    t = table()
    t.add(1, A)
    t.add(2, A, parent=1)
    t.add(3, B, parent=2)  # a host reached through A
    t.add(4, A)
    assert sorted(t.remove(1)) == [1, 2, 3]
    assert (t.count(A), t.count(B), len(t)) == (1, 0, 1)
    assert t.remove(2) == []
    t.release(3)  # a worker putting back a context that is gone is harmless


def test_the_total_cap_takes_the_oldest_idle_interpreter_of_any_host() -> None:
    t = table(per_host=10, total=3)
    t.add(1, A)
    t.add(2, B)
    t.add(3, A)
    t.acquire(1)
    t.add(4, "ssh:c:22")
    assert t.victims("ssh:c:22") == [2]
    assert len(t) == 3 and 1 in t


def test_chains_are_found_by_key_and_the_roots_have_no_parent() -> None:
    t = table()
    t.add(1, A, key="a")
    t.add(2, A, parent=1, key="a sudo")
    t.add(3, B, key="b")
    assert [chain.context_id for chain in t.roots()] == [1, 3]
    assert t.by_key("a sudo").parent is t.by_key("a")  # type: ignore[union-attr]
    t.remove(1)
    assert (t.by_key("a"), t.by_key("a sudo")) == (None, None)
    assert t.by_key("b").context_id == 3  # type: ignore[union-attr]
    assert t.context_ids() == {3}


def test_targets_are_machines_and_become_stays_on_its_machine() -> None:
    ssh = {"method": "ssh", "kwargs": {"hostname": "web1", "port": 2222, "username": "u"}}
    other_user = {"method": "ssh", "kwargs": {"hostname": "web1", "port": 2222, "username": "v"}}
    sudo = {"method": "sudo", "kwargs": {"username": "root"}}
    assert hop_target(ssh, None) == hop_target(other_user, None) == "ssh:web1:2222"
    assert hop_target(sudo, "ssh:web1:2222") == "ssh:web1:2222"
    assert hop_target({"method": "local", "kwargs": {}}, None) == CONTROLLER
    assert hop_target(sudo, None) == CONTROLLER
    assert hop_target(ssh, CONTROLLER) == "ssh:web1:2222"


def test_limits_from_the_environment() -> None:
    assert Limits.from_environment({}) == Limits(per_host=20, total=4096)
    environ = {"MITOGEN_MAX_INTERPRETERS_PER_HOST": "3", "MITOGEN_MAX_INTERPRETERS": "50"}
    assert Limits.from_environment(environ) == Limits(per_host=3, total=50)
    with pytest.raises(ValueError, match="MITOGEN_MAX_INTERPRETERS_PER_HOST='many'"):
        Limits.from_environment({"MITOGEN_MAX_INTERPRETERS_PER_HOST": "many"})
    with pytest.raises(ValueError, match="MITOGEN_MAX_INTERPRETERS must be at least 1, not 0"):
        Limits.from_environment({"MITOGEN_MAX_INTERPRETERS": "0"})


# -- ContextService with real contexts -----------------------------------------


def local(name: str) -> dict[str, Any]:
    """A local hop; `name` only makes the stacks differ (all are the controller's)."""
    return {"method": "local", "kwargs": {"python_path": sys.executable, "remote_name": name}}


@pytest.fixture
def service(router: mitogen.parent.Router) -> Iterator[ContextService]:
    service = ContextService(router, Limits(per_host=2))
    try:
        yield service
    finally:
        contexts = [router.context_by_id(i) for i in service.context_ids()]
        latches = [context.shutdown() for context in contexts]
        for latch in latches:
            latch.get(timeout=10)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def get(service: ContextService, *stack: dict[str, Any]) -> mitogen.parent.Context:
    result = service.get(list(stack))
    assert result["msg"] is None, result
    return result["context"]


def test_the_service_keeps_chains_in_use_and_shuts_the_oldest_idle_one(
    service: ContextService,
) -> None:
    first = get(service, local("one"))
    second = get(service, local("two"))
    third = get(service, local("three"))  # three in use: the limit of 2 waits
    assert {first.context_id, second.context_id, third.context_id} <= service.context_ids()
    service.put(first)
    assert get(service, local("one")) == first  # idle again: reused
    for context in (second, third, first):
        service.put(context)
    fourth = get(service, local("four"))  # second and third went: first was used after them
    assert service.context_ids() == {first.context_id, fourth.context_id}
    wait_until(lambda: service.router.stream_by_id(third.context_id) is None)
    with pytest.raises(mitogen.core.ChannelError):
        second.call(os.getpid)
    again = get(service, local("two"))
    assert again.context_id not in (second.context_id, fourth.context_id)
    service.put(again)
    service.put(fourth)


def test_a_chain_busy_with_a_task_is_not_shared_but_its_prefix_is(
    service: ContextService,
) -> None:
    """Two workers asking for one chain at once (delegate_to: localhost from two hosts)
    get a context each, both started through the one shared login context; the extra one
    is kept, and reused once idle."""
    first = get(service, local("login"), local("become"))
    second = get(service, local("login"), local("become"))
    assert first != second
    assert first.call(os.getppid) == second.call(os.getppid)
    login = get(service, local("login"))  # not busy with a task: shared as a prefix was
    assert login.call(os.getpid) == first.call(os.getppid)
    assert service.context_ids() == {login.context_id, first.context_id, second.context_id}
    service.put(first)
    assert get(service, local("login"), local("become")) == first
    for context in (first, second, login):
        service.put(context)
    assert service.reset([local("login"), local("become")], depth=2) is True
    assert service.context_ids() == {login.context_id}


def test_a_reset_forgets_the_via_children_and_rebuilds_them(service: ContextService) -> None:
    parent = get(service, local("login"))
    child = get(service, local("login"), local("become"))
    assert service.context_ids() == {parent.context_id, child.context_id}
    assert child.call(os.getppid) == parent.call(os.getpid)
    service.put(child)
    service.put(parent)
    assert service.reset([local("login")]) is True
    assert service.context_ids() == set()
    rebuilt = get(service, local("login"), local("become"))
    assert rebuilt.context_id != child.context_id
    assert rebuilt.call(os.getpid) != 0
    service.put(rebuilt)


def test_shutdown_stops_the_roots_and_their_children_go_with_them(
    service: ContextService,
) -> None:
    parent = get(service, local("login"))
    child = get(service, local("login"), local("become"))
    other = get(service, local("other"))
    for context in (child, parent, other):
        service.put(context)
    service.on_shutdown()
    wait_until(lambda: service.context_ids() == set())
    router = service.router
    wait_until(lambda: all(router.stream_by_id(c.context_id) is None for c in (parent, child)))
    with pytest.raises(mitogen.core.ChannelError):
        other.call(os.getpid)


# -- Settings ------------------------------------------------------------------

READ_SETTINGS = (
    "import sys; sys.path.insert(0, {repo!r}); "
    "from ansible_mitogen.strategy import mux_settings; print(mux_settings())"
)


def read_settings(tmp_path: Path, config: str, **environ: str) -> subprocess.CompletedProcess:
    (tmp_path / "ansible.cfg").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MITOGEN_"))}
    env.update(ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"), **environ)
    return subprocess.run(
        [sys.executable, "-c", READ_SETTINGS.format(repo=str(REPO))],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_settings_come_from_ansible_cfg_and_the_environment(tmp_path: Path) -> None:
    config = "[mitogen]\nmax_interpreters_per_host = 3\n"
    done = read_settings(tmp_path, config)
    assert done.stdout.strip() == "{'MITOGEN_MAX_INTERPRETERS_PER_HOST': '3'}", done.stderr
    done = read_settings(tmp_path, config, MITOGEN_MAX_INTERPRETERS_PER_HOST="5")
    assert done.stdout.strip() == "{'MITOGEN_MAX_INTERPRETERS_PER_HOST': '5'}", done.stderr
    done = read_settings(tmp_path, "[defaults]\n")
    assert done.stdout.strip() == "{}", done.stderr


def test_a_bad_setting_names_itself_and_where_it_came_from(tmp_path: Path) -> None:
    done = read_settings(tmp_path, "[mitogen]\nmax_interpreters = 0\n")
    assert done.returncode != 0
    assert "[mitogen] max_interpreters must be at least 1, not 0" in done.stderr
    assert str(tmp_path / "ansible.cfg") in done.stderr
    done = read_settings(tmp_path, "[mitogen]\nmax_interpreters_per_host = lots\n")
    assert "Config 'max_interpreters_per_host'" in done.stderr and "'lots'" in done.stderr


FIT_OPEN_FILES = (
    "import logging, resource, sys; sys.path.insert(0, {repo!r}); logging.basicConfig()\n"
    "from ansible_mitogen.mux import fit_open_files\n"
    "from ansible_mitogen.services import Limits\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
    "limits = fit_open_files(Limits(), asked={asked})\n"
    "print(limits.total, resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
)


@pytest.mark.parametrize(
    "soft, hard, asked, total, raised",
    [
        (1024, 20000, True, 4096, 4096 * 2 + 256),  # raised as far as the cap needs
        (300, 300, True, 22, 300),  # the hard limit allows (300 - 256) / 2 interpreters
        (300, 300, False, 22, 300),
    ],
)
def test_the_mux_fits_the_total_cap_to_its_open_file_limit(
    soft: int, hard: int, asked: bool, total: int, raised: int
) -> None:
    current_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if current_hard != resource.RLIM_INFINITY and current_hard < hard:
        pytest.skip(f"the hard open-file limit here is {current_hard}")
    script = FIT_OPEN_FILES.format(repo=str(REPO), soft=soft, hard=hard, asked=asked)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == [str(total), str(raised)], done.stderr
    warned = "enough for 22 interpreters, not 4096" in done.stderr
    assert warned == (asked and total < 4096), done.stderr
