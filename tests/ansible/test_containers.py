"""Playbooks against container targets: stock community.docker.docker and
containers.podman.podman (from the collections scripts/setup-ansible.sh extracts) against
our mitogen_docker and mitogen_podman, with the same results and the same files left in
the containers; every Mitogen result served by Mitogen (served.py). Also: become inside a
container chain, `mitogen_disable`, a container stopped between tasks, and our docker and
podman connections with the builtin `linear` strategy alone (connection-only mode). The rest of
the shared playbook suite runs in containers in test_container_suite.py, containers in
delegation and via chains in test_container_chains.py.

Each run gets its own fresh container (the private dockerd or podman storage of
tests/testbed/containers.py, the locally built Debian image), named `plain` in the run's
inventory, so the shared playbooks (hosts: plain, files under `workdir`) run unchanged.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.harness import Comparison, Harness, PlaybookRun, make_comparison
from tests.ansible.test_standalone import (
    assert_mux_gone,
    assert_same,
    install_collection,
    standalone_env,
)
from tests.testbed.containers import Dockerd, Podman

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

#: The container's own Python (Debian bookworm's).
CONTAINER_PYTHON = "/usr/bin/python3"
#: Where the playbooks' `workdir` is, inside the container.
WORKDIR = "/srv/work/plain"
CONTAINERS = Path(__file__).parent / "playbooks" / "containers"

#: Lists every entry under WORKDIR: path, type, mode, owner, group, sha256 of files.
SNAPSHOT_SCRIPT = (
    "cd %s && find . -mindepth 1 | sort | while read -r p; do "
    'printf "%%s %%s\\n" "$(stat -c "%%n %%F %%a %%U %%G" "$p")" '
    '"$( [ -f "$p" ] && sha256sum < "$p" | cut -c1-64 || echo -)"; done' % WORKDIR
)


@dataclass
class Runtime:
    """A container runtime the test can start targets with."""

    kind: str
    cli: list[str]
    #: The inventory variables that reach its containers, by connection name.
    variables: dict[str, Any]
    owner: Dockerd | Podman

    def start(self) -> str:
        name = self.owner.run_container()
        self.exec(name, f"mkdir -p {WORKDIR}")
        return name

    def exec(self, name: str, script: str) -> str:
        return self.run("exec", name, "sh", "-c", script).stdout

    def run(self, *args: str) -> Any:
        run = getattr(self.owner, self.kind)
        return run(*args, what=f"{self.kind} {args[0]}")

    def remove(self, name: str) -> None:
        self.owner.remove(name)

    def snapshot(self, name: str) -> dict[str, str]:
        lines = self.exec(name, SNAPSHOT_SCRIPT).splitlines()
        return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in lines}

    def stop_command(self, name: str) -> str:
        return shlex.join([*self.cli, "stop", "-t", "0", name])


@pytest.fixture
def docker(dockerd: Dockerd) -> Runtime:
    return Runtime(
        "docker",
        ["docker", *dockerd.cli_args],
        {"ansible_docker_extra_args": shlex.join(dockerd.cli_args)},
        dockerd,
    )


@pytest.fixture
def podman_runtime(podman: Podman) -> Runtime:
    return Runtime(
        "podman",
        ["podman", *podman.cli_args],
        {"ansible_podman_extra_args": shlex.join(podman.cli_args)},
        podman,
    )


def write_inventory(
    path: Path, connection: str, container: str, runtime: Runtime, extra: dict[str, Any]
) -> Path:
    host = {
        "ansible_connection": connection,
        "ansible_host": container,
        "ansible_python_interpreter": CONTAINER_PYTHON,
        "workdir": WORKDIR,
        **runtime.variables,
        **extra,
    }
    path.write_text(json.dumps({"all": {"hosts": {"plain": host}}}, indent=2))
    return path


@contextmanager
def targets(runtime: Runtime, count: int) -> Iterator[list[str]]:
    with ExitStack() as stack:
        names = []
        for _ in range(count):
            name = runtime.start()
            stack.callback(runtime.remove, name)
            names.append(name)
        yield names


@dataclass(frozen=True)
class Mode:
    """How one run of a comparison reaches its container: its strategy, its connection
    (None: the comparison's) and its extra environment."""

    strategy: str
    connection: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


#: The comparison of test_containers.py: stock's strategy, then Mitogen's.
STRATEGY_MODES = (Mode("linear"), Mode("mitogen_linear"))


def compare_in_containers(
    harness: Harness,
    tmp_path: Path,
    runtime: Runtime,
    connection: str,
    playbook: str | Path,
    *,
    fallback: set[str] | frozenset[str] = frozenset(),
    ignore: tuple[str, ...] = (),
    per_container_vars: bool = False,
    host_vars: Callable[[str], dict[str, Any]] = lambda name: {},
) -> tuple[Comparison, dict[str, str], dict[str, str]]:
    """Run `playbook` with linear and mitogen_linear, each against its own fresh
    container reached through `connection` (with `host_vars(container)` in its inventory);
    the comparison includes the files left under WORKDIR in each container."""
    runs, stock_files, mitogen_files = run_in_containers(
        harness,
        tmp_path,
        runtime,
        connection,
        playbook,
        STRATEGY_MODES,
        per_container_vars=per_container_vars,
        host_vars=host_vars,
    )
    for run in runs:
        run.check_strategy()
    comparison = make_comparison(*runs, fallback=fallback, ignore=ignore)
    comparison.differences += file_differences(stock_files, mitogen_files, runs)
    return comparison, stock_files, mitogen_files


def run_in_containers(
    harness: Harness,
    tmp_path: Path,
    runtime: Runtime,
    connection: str,
    playbook: str | Path,
    modes: tuple[Mode, Mode],
    *,
    per_container_vars: bool = False,
    host_vars: Callable[[str], dict[str, Any]] = lambda name: {},
) -> tuple[list[PlaybookRun], dict[str, str], dict[str, str]]:
    """Run `playbook` once per mode (at once), each against its own fresh container;
    the runs and the files each left under WORKDIR (none with `per_container_vars`: the
    playbook stops its container)."""
    with targets(runtime, 2) as names:
        started = []
        for index, (mode, name) in enumerate(zip(modes, names, strict=True)):
            inventory = write_inventory(
                tmp_path / f"{index}-{mode.strategy}.json",
                mode.connection or connection,
                name,
                runtime,
                host_vars(name),
            )
            extra = {"stop_command": runtime.stop_command(name)} if per_container_vars else {}
            started.append(
                harness.start(
                    playbook,
                    mode.strategy,
                    args=["-i", str(inventory)],
                    extra_vars=extra,
                    env=mode.env,
                )
            )
        runs = [running.wait(240) for running in started]
        if per_container_vars:
            return runs, {}, {}
        first, second = (runtime.snapshot(name) for name in names)
    return runs, first, second


def file_differences(
    first: dict[str, str], second: dict[str, str], runs: list[PlaybookRun]
) -> list[str]:
    """How the files two runs left in their containers differ."""
    a, b = (run.strategy for run in runs)
    if a == b:
        a, b = f"{a}(1)", f"{b}(2)"
    return [
        f"container file {path}: {a} {first.get(path)}, {b} {second.get(path)}"
        for path in sorted(set(first) | set(second))
        if first.get(path) != second.get(path)
    ]


def served_by_one_interpreter(run: PlaybookRun) -> None:
    """Mitogen served every command of the run's tasks (served.py checked each result);
    at least two tasks made Mitogen calls."""
    calls = [r for r in run.results if r.get("via") and r["via"][0]["mitogen_calls"]]
    assert len(calls) >= 2, run.describe()


@pytest.mark.parametrize("playbook", ["command_shell.yml", "files.yml"])
def test_docker_target_matches_stock(
    harness: Harness, tmp_path: Path, docker: Runtime, playbook: str
) -> None:
    comparison, stock_files, _ = compare_in_containers(
        harness, tmp_path, docker, "docker", playbook
    )
    comparison.assert_same()
    assert stock_files or playbook == "command_shell.yml", "no files to compare"
    served_by_one_interpreter(comparison.candidate)
    assert not any(
        "community.docker.docker" in str(w["connection_class"])
        for r in comparison.candidate.results
        for w in r.get("via") or []
    )


@pytest.mark.parametrize(
    "playbook", ["command_shell.yml", pytest.param("files.yml", marks=pytest.mark.slow)]
)
def test_podman_target_matches_stock(
    harness: Harness, tmp_path: Path, podman_runtime: Runtime, playbook: str
) -> None:
    comparison, stock_files, _ = compare_in_containers(
        harness, tmp_path, podman_runtime, "containers.podman.podman", playbook
    )
    comparison.assert_same()
    assert stock_files or playbook == "command_shell.yml", "no files to compare"
    served_by_one_interpreter(comparison.candidate)


@pytest.mark.slow
def test_nsenter_target_matches_stock(harness: Harness, tmp_path: Path, docker: Runtime) -> None:
    """community.docker.nsenter into a docker container's init, stock against ours."""

    def init_pid(name: str) -> dict[str, Any]:
        pid = docker.run("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
        return {"ansible_nsenter_pid": int(pid)}

    comparison, stock_files, _ = compare_in_containers(
        harness, tmp_path, docker, "community.docker.nsenter", "files.yml", host_vars=init_pid
    )
    comparison.assert_same()
    assert stock_files, "no files to compare"
    served_by_one_interpreter(comparison.candidate)


def test_become_inside_a_docker_container(
    harness: Harness, tmp_path: Path, docker: Runtime
) -> None:
    comparison, stock_files, _ = compare_in_containers(
        harness, tmp_path, docker, "community.docker.docker", CONTAINERS / "become.yml"
    )
    comparison.assert_same()
    candidate = comparison.candidate
    assert candidate.result("plain", "who runs with su")["stdout"] == "mitogen-app"
    assert candidate.result("plain", "who runs without become")["stdout"] == "root"
    assert candidate.result("plain", "its owner")["msg"] == "mitogen-app 0600"
    assert stock_files["./as-app.txt"].split()[3] == "mitogen-app"
    su = candidate.result("plain", "who runs with su")["via"][0]
    assert su["mitogen_calls"] and not su["stock_calls"], su


def test_mitogen_disable_runs_the_task_stock(
    harness: Harness, tmp_path: Path, docker: Runtime
) -> None:
    opted_out = {"opted out", "opted out by the play"}
    comparison, _, _ = compare_in_containers(
        harness, tmp_path, docker, "docker", CONTAINERS / "disable.yml", fallback=opted_out
    )
    comparison.assert_same()
    candidate = comparison.candidate
    for task in opted_out:
        via = candidate.result("plain", task)["via"][0]
        assert via["stock_calls"] and not via["mitogen_calls"], via
        assert via["mitogen_connection"] is False, via
    for task in ("served by Mitogen", "served by Mitogen again"):
        via = candidate.result("plain", task)["via"][0]
        assert via["mitogen_calls"] and not via["stock_calls"], via
    # judged without the declaration, the opted-out tasks are not Mitogen's
    assert len(make_comparison(comparison.baseline, candidate).unserved) == 2


@pytest.mark.parametrize("kind", ["docker", "podman"])
def test_container_stopped_between_tasks_is_unreachable(
    harness: Harness,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    kind: str,
) -> None:
    runtime: Runtime = request.getfixturevalue("docker" if kind == "docker" else "podman_runtime")
    connection = "docker" if kind == "docker" else "containers.podman.podman"
    # The wording differs: stock's plugins fail at their first command (docker's while
    # making the temporary directory), Mitogen when starting the interpreter, and the
    # stop command prints each run's own container name.
    comparison, _, _ = compare_in_containers(
        harness,
        tmp_path,
        runtime,
        connection,
        CONTAINERS / "stopped.yml",
        ignore=("msg", "stdout", "stdout_lines", "cmd"),
        per_container_vars=True,
    )
    for run in (comparison.baseline, comparison.candidate):
        after = run.result("plain", "after the stop")
        assert after["event"] == "unreachable", (after, run.describe())
        assert run.result("plain", "before the stop")["event"] == "ok"
    comparison.assert_same()
    message = comparison.candidate.result("plain", "after the stop")["msg"]
    assert f"{kind} says the container does not exist or is not running" in message, message


def compare_connection_only(
    harness: Harness,
    tmp_path: Path,
    mux_runtime: Path,
    runtime: Runtime,
    stock: str,
    ours: str,
    playbook: str,
    env: dict[str, str] | None = None,
) -> None:
    """Builtin `linear` with our container connection `ours` from the plugin path (or as
    `env` makes it found; no Mitogen strategy: standalone.py's mixin starts the mux and
    the action mixin) against `stock`'s plugin: the same results and files, every result
    served by Mitogen, no deprecation warning, and no mux left once the run is over."""
    env = {**standalone_env(mux_runtime, ours), **(env or {})}
    modes = (Mode("linear", stock), Mode("linear", ours, env))
    runs, stock_files, our_files = run_in_containers(
        harness, tmp_path, runtime, stock, playbook, modes
    )
    for run in runs:
        run.check_strategy()
    assert_same(*runs, differences=file_differences(stock_files, our_files, runs))
    assert stock_files or playbook == "command_shell.yml", "no files to compare"
    served_by_one_interpreter(runs[1])
    assert_mux_gone(env)


def test_connection_only_docker_matches_stock(
    harness: Harness, tmp_path: Path, mux_runtime: Path, docker: Runtime
) -> None:
    compare_connection_only(
        harness,
        tmp_path,
        mux_runtime,
        docker,
        "community.docker.docker",
        "mitogen_docker",
        "files.yml",
    )


def test_connection_only_docker_from_the_collection(
    harness: Harness, tmp_path: Path, mux_runtime: Path, docker: Runtime
) -> None:
    """`ansible_connection: mitogen_ng.mitogen.docker` from the built collection."""
    collections = install_collection(harness, tmp_path)
    path = ":".join(map(str, [collections, *harness.collections_dirs]))
    compare_connection_only(
        harness,
        tmp_path,
        mux_runtime,
        docker,
        "community.docker.docker",
        "mitogen_ng.mitogen.docker",
        "command_shell.yml",
        env={"ANSIBLE_COLLECTIONS_PATH": path},
    )


def test_connection_only_podman_matches_stock(
    harness: Harness, tmp_path: Path, mux_runtime: Path, podman_runtime: Runtime
) -> None:
    compare_connection_only(
        harness,
        tmp_path,
        mux_runtime,
        podman_runtime,
        "containers.podman.podman",
        "mitogen_podman",
        "command_shell.yml",
    )
