"""Mitogen's connection plugins on their own, with ansible-core's builtin strategies
(standalone.py, ondemand.py): the same results as stock ssh, every result served by
Mitogen, one mux per run started on demand, and gone when ansible-playbook is killed;
`meta: reset_connection` and `delegate_to: localhost` in this mode. Containers and
`mitogen_via` in this mode: test_containers.py and test_via.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import mitogen.unix
from ansible_mitogen.collection import build
from tests.ansible import served
from tests.ansible.harness import (
    REPO,
    Harness,
    PlaybookRun,
    RunningPlaybook,
    compare_runs,
    make_comparison,
)
from tests.ansible.test_playbooks import (
    PLAYBOOKS,
    STOCK_RUNS,
    check_expected,
    prepared,
    run_options,
)

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

CONNECTION_PLUGINS = REPO / "ansible_mitogen" / "plugins" / "connection"
#: What ansible-core prints for a third-party strategy (and any other deprecation).
DEPRECATION = "DEPRECATION WARNING"
#: What standalone.py says at -vvv when it has started a run's mux.
MUX_STARTED = "MITOGEN MUX STARTED"


def standalone_env(runtime_dir: Path, connection: str = "mitogen_ssh") -> dict[str, str]:
    """Environment of a run whose connection is `connection` from the plugin path, its
    on-demand mux's directory under `runtime_dir` (the mux_runtime fixture's)."""
    return {
        "ANSIBLE_CONNECTION_PLUGINS": str(CONNECTION_PLUGINS),
        "ANSIBLE_TRANSPORT": connection,
        "XDG_RUNTIME_DIR": str(runtime_dir),
    }


def mux_dir(env: dict[str, str]) -> Path:
    return Path(env["XDG_RUNTIME_DIR"]) / f"ansible-mitogen-{os.geteuid()}"


#: Seconds an on-demand mux has to notice its ansible-playbook's exit and remove its files.
MUX_EXIT_SECONDS = 15


def assert_mux_gone(env: dict[str, str]) -> None:
    """The run's on-demand mux removed its socket and lock (it does so after
    ansible-playbook has exited, so not necessarily before the run's wait() returns)."""
    directory = mux_dir(env)
    assert directory.is_dir(), f"no mux ran: {directory} is missing"
    assert _wait_until(lambda: not list(directory.iterdir()), MUX_EXIT_SECONDS), (
        f"the mux left {sorted(p.name for p in directory.iterdir())} "
        f"{MUX_EXIT_SECONDS} s after ansible-playbook exited"
    )


def assert_same(
    baseline: PlaybookRun,
    candidate: PlaybookRun,
    fallback: Any = (),
    *,
    ignore: Sequence[str] = (),
    differences: Sequence[str] = (),
    stock_tasks: Sequence[str] = (),
) -> None:
    """No difference from stock (results but the `ignore`d keys, nor the `differences`
    the caller found elsewhere), every candidate result served by Mitogen but those of
    `stock_tasks` (tasks whose connection is stock's own plugin, such as `connection:
    local`: served by stock), no deprecation warning."""
    problems = [*differences, *compare_runs(baseline, candidate, ignore=ignore)]
    problems += served.check_stock(baseline.records)
    ours = [r for r in candidate.records if r.get("task") not in stock_tasks]
    problems += served.check_mitogen(ours, set(fallback))
    problems += served.check_stock([r for r in candidate.records if r.get("task") in stock_tasks])
    if DEPRECATION in candidate.stdout + candidate.stderr:
        problems.append("the standalone run printed a deprecation warning")
    assert not problems, "\n".join(problems[:40]) + "\n\n" + candidate.describe(20)


#: Tasks that run on the controller (`delegate_to: localhost`, `connection: local`): without
#: a Mitogen strategy they use the connection the inventory or play names, ansible-core's
#: own `local` (a user wanting them accelerated sets `ansible_connection: mitogen_local` on
#: localhost, docs/standalone.rst). Their results must still match stock's.
LOCAL_TASKS: dict[str, tuple[str, ...]] = {
    "collection_modules.yml": ("an archive on the controller", "the controller archive goes too"),
    "delegate.yml": (
        "delegate to localhost",
        "local_action",
        "run_once delegated",
        "connection local",
        "write a controller file through delegation",
    ),
    "home_paths.yml": (
        "local play copy through ~ with remote_user set",
        "local play home",
        "delegated home",
        "delegated script",
        "delegated template",
        "delegated copy of templated content in a loop, run once",
    ),
    "login_shell.yml": ("raw delegated to localhost runs /bin/sh",),
    "module_exit.yml": ("signals at the start of a module run through connection local",),
}
STANDALONE_CASES = [(p, "linear") for p in PLAYBOOKS] + [
    ("async.yml", "free"),
    ("become.yml", "free"),
]


@pytest.mark.parametrize("playbook, strategy", STANDALONE_CASES)
def test_standalone_matches_stock(
    harness: Harness, mux_runtime: Path, playbook: str, strategy: str
) -> None:
    """The comparison suite with Mitogen's connection plugin and a builtin strategy: the
    same results as stock (this session's stock `linear` run when test_playbooks.py made
    one), every result served by Mitogen, no deprecation warning, no mux left."""
    options = run_options(harness, playbook)
    env = options["env"] or {}
    kwargs: dict[str, Any] = {}
    if "become_password" in options:
        kwargs["become_password"] = options["become_password"]
    with prepared(harness, playbook):
        stock = STOCK_RUNS.get(playbook) if strategy == "linear" else None
        first = None
        if stock is None:
            first = harness.start(playbook, strategy, env=env, **kwargs)
            if not options["parallel"]:
                stock = first.wait()
        second = harness.start(
            playbook, strategy, env={**env, **standalone_env(mux_runtime)}, **kwargs
        )
        if stock is None:
            assert first is not None
            stock = first.wait()
        runs = (stock, second.wait())
    for run in runs:
        run.check_strategy()
    check_expected(runs[0], playbook)
    assert_same(*runs, fallback=options["fallback"], stock_tasks=LOCAL_TASKS.get(playbook, ()))
    assert_mux_gone(standalone_env(mux_runtime))


def test_one_mux_for_five_hosts(harness: Harness, mux_runtime: Path) -> None:
    """forks=5, 5 hosts: their first tasks start at once, and exactly one mux starts."""
    env = standalone_env(mux_runtime)
    run = harness.run(
        REPO / "tests/ansible/playbooks/standalone.yml", "linear", env=env, args=["-vvv"]
    )
    assert run.rc == 0, run.describe()
    hosts = {r["host"] for r in run.results}
    assert len(hosts) == 5, hosts
    assert run.stdout.count(MUX_STARTED) == 1, run.describe()
    assert not served.check_mitogen(run.records)
    assert_mux_gone(env)


def _mux_pid(directory: Path, deadline: float) -> int:
    """The pid of the mux listening in `directory`, once it listens (SO_PEERCRED)."""
    while time.monotonic() < deadline:
        for path in directory.glob("mux-*.sock") if directory.is_dir() else ():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                return int(mitogen.unix.get_peer_creds(sock)[0])
            except OSError:
                pass
            finally:
                sock.close()
        time.sleep(0.1)
    raise AssertionError(f"no mux listened in {directory}")


def run_describe(running: RunningPlaybook) -> str:
    return f"no target process yet; logs in {running.directory}"


def _wait_until(condition: Callable[[], Any], seconds: float) -> bool:
    """Whether `condition()` became true within `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return bool(condition())


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fp:
            return fp.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _account_processes(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid and _alive(int(entry)):
                    found.append(int(entry))
            except OSError:
                pass
    return found


def test_mux_exits_after_sigkill(harness: Harness, mux_runtime: Path) -> None:
    """SIGKILL ansible-playbook mid-task: the mux and the target's processes go."""
    env = standalone_env(mux_runtime)
    account = harness.account("plain")
    # an earlier run's sessions may still be ending
    assert _wait_until(lambda: not _account_processes(account.uid), 15)
    running: RunningPlaybook = harness.start(
        REPO / "tests/ansible/playbooks/standalone.yml",
        "linear",
        env=env,
        extra_vars={"standalone_sleep": 30},
    )
    try:
        pid = _mux_pid(mux_dir(env), time.monotonic() + 30)
        assert _wait_until(lambda: _account_processes(account.uid), 30), run_describe(running)
        os.kill(running.proc.pid, signal.SIGKILL)
    finally:
        run = running.wait()
    assert run.rc == -signal.SIGKILL
    _wait_until(lambda: not _alive(pid) and not _account_processes(account.uid), 15)
    assert not _alive(pid), "the mux outlived ansible-playbook"
    assert not _account_processes(account.uid), "target processes outlived ansible-playbook"
    assert_mux_gone(env)


def test_local_matches_stock_local(harness: Harness, mux_runtime: Path) -> None:
    """mitogen_local with the builtin linear strategy against stock local."""
    playbook = "command_shell.yml"
    first = harness.start(playbook, "linear", env={"ANSIBLE_TRANSPORT": "local"})
    second = harness.start(playbook, "linear", env=standalone_env(mux_runtime, "mitogen_local"))
    assert_same(first.wait(), second.wait())


def install_collection(harness: Harness, tmp_path: Path) -> Path:
    """The collection, built from this tree and installed under `tmp_path`: its
    collections directory."""
    tarball = build.build(tmp_path / "dist")
    collections = tmp_path / "collections"
    subprocess.run(
        [str(harness.bin_dir / "ansible-galaxy"), "collection", "install", "--offline"]
        + ["-p", str(collections), str(tarball)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return collections


def test_the_collection_connection_by_fqcn(
    harness: Harness, mux_runtime: Path, tmp_path: Path
) -> None:
    """`connection = mitogen_ng.mitogen.ssh` from the built collection (its vendored
    packages), with linear: every result served by Mitogen, one mux."""
    collections = install_collection(harness, tmp_path)
    env = {
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_TRANSPORT": "mitogen_ng.mitogen.ssh",
        "XDG_RUNTIME_DIR": str(mux_runtime),
    }
    run = harness.run(
        REPO / "tests/ansible/playbooks/standalone.yml", "linear", env=env, args=["-vvv"]
    )
    assert run.rc == 0, run.describe()
    assert run.stdout.count(MUX_STARTED) == 1, run.describe()
    loaded = {w["connection"] for w in _windows(run)}
    # the collection's meta/runtime.yml redirects the short name to the plugin's file
    assert loaded == {"ansible_collections.mitogen_ng.mitogen.plugins.connection.mitogen_ssh"}
    assert not served.check_mitogen(run.records)
    assert DEPRECATION not in run.stdout + run.stderr


def _windows(run: PlaybookRun) -> list[dict[str, Any]]:
    return [w for r in run.results for w in r.get("via") or []]


@pytest.mark.parametrize("strategy", ["linear", "mitogen_linear"])
def test_reset_connection_gives_a_new_context(
    harness: Harness, mux_runtime: Path, strategy: str
) -> None:
    """`meta: reset_connection` with builtin `linear` and mitogen_ssh (run by
    ansible-playbook itself, which finds the run's mux), and with the strategy: the tasks
    before it share one sshd session (the target's context), the task after it has a new
    one, as with stock ssh (whose ControlPersist master the reset stops)."""
    playbook = REPO / "tests/ansible/playbooks/reset_connection.yml"
    env = standalone_env(mux_runtime) if strategy == "linear" else {}
    stock = harness.start(playbook, "linear")
    ours = harness.start(playbook, strategy, env=env)
    runs = stock.wait(), ours.wait()
    for run in runs:
        run.check_strategy()
        assert run.result("plain", "compare the sessions")["stdout"].splitlines() == [
            "kept",
            "renewed",
        ], run.describe()
    if strategy == "linear":
        assert_same(*runs)
        assert_mux_gone(env)
    else:
        make_comparison(*runs).assert_same()


def test_delegate_to_localhost_uses_localhosts_connection(
    harness: Harness, mux_runtime: Path, tmp_path: Path
) -> None:
    """delegate.yml with builtin `linear`, mitogen_ssh for the hosts and `localhost`
    saying `ansible_connection: mitogen_local` (stock: `local`): tasks delegated to
    localhost are served by Mitogen; a `connection: local` keyword names stock local."""
    inventories = []
    for name, connection in (("stock", "local"), ("ours", "mitogen_local")):
        inventory = json.loads(harness.inventory_path.read_text())
        inventory["all"]["hosts"] = {
            "localhost": {
                "ansible_connection": connection,
                "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            }
        }
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(inventory))
        inventories.append(["-i", str(path)])
    env = standalone_env(mux_runtime)
    stock = harness.start("delegate.yml", "linear", args=inventories[0])
    ours = harness.start("delegate.yml", "linear", args=inventories[1], env=env)
    runs = stock.wait(), ours.wait()
    for run in runs:
        run.check_strategy()
    assert_same(*runs, ignore=("delta", "start", "end"), stock_tasks=("connection local",))
    assert_mux_gone(env)
