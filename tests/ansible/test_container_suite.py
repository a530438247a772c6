"""The shared playbook suite (test_playbooks.py's playbooks) against container targets:
each playbook that can run in a container, stock community.docker.docker /
containers.podman.podman against Mitogen's, with the same results and the same files left
in the containers, every Mitogen result served by Mitogen.

Every inventory host a playbook names is a fresh container of its own (per run), in the
group `testbed` as on the ssh testbed; `become` there is `su` (root needs no password; the
image has no sudo). `command_shell.yml` and `files.yml` run in test_containers.py.
Excluded, and why:

- become.yml, hardened_sudo.yml: sudo with the testbed's accounts, passwords and sudoers.
- delegate.yml: delegation between the testbed's ssh accounts (test_container_chains.py
  delegates from an ssh host to a container).
- home_paths.yml: ssh's remote_user and the accounts' homes, synchronize over ssh.
- login_shell.yml: the ssh login shell of the testbed accounts (docker exec has none).
- no_python.yml: puts a Python under the ssh account's workdir from the testbed's.
- remote_tmp.yml: its remote_tmp holds $USER, which docker and podman exec do not set
  (stock and Mitogen both make `rtmp-/`, and the playbook looks for `rtmp-root`).
- collection_modules.yml: packages the image lacks (acl, sudo, openssh-server) and root
  changes to the controller's own accounts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.harness import Harness, PlaybookRun, make_comparison
from tests.ansible.test_containers import (
    CONTAINER_PYTHON,
    WORKDIR,
    Runtime,
    docker,  # noqa: F401 (fixture)
    podman_runtime,  # noqa: F401 (fixture)
    targets,
)
from tests.ansible.test_playbooks import PLAYBOOKS as SUITE

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

#: The variables every container host gets, besides its runtime's.
CONTAINER_VARS = {
    "ansible_python_interpreter": CONTAINER_PYTHON,
    "ansible_become_method": "su",
    "ansible_user": "root",
    "workdir": WORKDIR,
}


@dataclass(frozen=True)
class Case:
    """How a playbook of the suite runs in containers: its hosts (one container each),
    whether the harness's unreachable ssh host `dead` is in the inventory, the stock
    run's expected exit status and checks on stock results ((host, task) -> fields)."""

    hosts: tuple[str, ...] = ("plain",)
    dead: bool = False
    rc: int = 0
    checks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "check_diff.yml": Case(checks={("plain", "checked stat result"): {"msg": 16}}),
    "no_log.yml": Case(checks={("plain", "a registered hidden result is usable"): {"msg": 7}}),
    "failures.yml": Case(
        dead=True,
        rc=4,
        checks={
            ("dead", "ping, unreachable on one host"): {"unreachable": True},
            ("plain", "fatal failure"): {"rc": 5, "stdout": "before dying", "failed": True},
        },
    ),
    "loops.yml": Case(checks={("plain", "loop results"): {"msg": ["r1", "r2"]}}),
    "handlers.yml": Case(checks={("plain", "after the flush"): {"stdout": "run\nheard"}}),
    "environment.yml": Case(checks={("plain", "block environment"): {"stdout": "from-block"}}),
    "async.yml": Case(
        ("sudo_nopw",),
        checks={
            ("sudo_nopw", "the job's output"): {"msg": "forgotten"},
            ("sudo_nopw", "async with become"): {"stdout": "root"},
        },
    ),
    "module_exit.yml": Case(
        ("plain", "sudo_nopw"),
        checks={("sudo_nopw", "work left for the interpreter's exit, with become"): {}},
    ),
    "serial.yml": Case(
        ("plain", "sudo_nopw", "sudo_pw"),
        checks={("plain", "third play"): {"stdout": "plain"}},
    ),
}
#: Run by default (the rest are marked slow): about 10 s each.
DEFAULT = {("docker", "check_diff.yml"), ("podman", "no_log.yml"), ("docker", "failures.yml")}
#: Run in test_containers.py.
ELSEWHERE = {"command_shell.yml", "files.yml"}
EXCLUDED = {
    "become.yml",
    "hardened_sudo.yml",
    "delegate.yml",
    "home_paths.yml",
    "login_shell.yml",
    "no_python.yml",
    "remote_tmp.yml",
    "collection_modules.yml",
}
CONNECTIONS = {"docker": "community.docker.docker", "podman": "containers.podman.podman"}


def write_inventory(
    harness: Harness, path: Path, runtime: Runtime, case: Case, containers: dict[str, str]
) -> Path:
    """The case's hosts in group `testbed`, each reaching its container (host ->
    container name), plus the harness's `dead` if the case wants it."""
    groups: dict[str, Any] = {
        "testbed": {
            "hosts": {
                host: {
                    "ansible_connection": CONNECTIONS[runtime.kind],
                    "ansible_host": name,
                    **CONTAINER_VARS,
                    **runtime.variables,
                }
                for host, name in containers.items()
            }
        }
    }
    if case.dead:
        harness_groups = json.loads(harness.inventory_path.read_text())["all"]["children"]
        groups["unreachable"] = harness_groups["unreachable"]
    path.write_text(json.dumps({"all": {"children": groups}}, indent=2))
    return path


def check_stock(run: PlaybookRun, case: Case) -> None:
    """The stock run did what the playbook tests (not two identical non-results)."""
    assert run.rc == case.rc, run.describe()
    for (host, task), fields in case.checks.items():
        result = run.result(host, task)
        assert not result.get("failed") or "failed" in fields, result
        assert {k: result.get(k) for k in fields} == fields, result


def params() -> list[Any]:
    return [
        pytest.param(
            kind,
            playbook,
            id=f"{kind}-{playbook}",
            marks=() if (kind, playbook) in DEFAULT else pytest.mark.slow,
        )
        for playbook in sorted(CASES)
        for kind in CONNECTIONS
    ]


@pytest.mark.parametrize("kind, playbook", params())
def test_suite_playbook_in_containers(
    harness: Harness,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    kind: str,
    playbook: str,
) -> None:
    runtime: Runtime = request.getfixturevalue("docker" if kind == "docker" else "podman_runtime")
    case = CASES[playbook]
    with targets(runtime, 2 * len(case.hosts)) as names:
        per_run = {
            strategy: dict(zip(case.hosts, names[i::2], strict=True))
            for i, strategy in enumerate(("linear", "mitogen_linear"))
        }
        started = [
            harness.start(
                playbook,
                strategy,
                args=[
                    "-i",
                    str(write_inventory(harness, tmp_path / f"{strategy}.json", runtime, case, c)),
                ],
            )
            for strategy, c in per_run.items()
        ]
        runs = [running.wait(240) for running in started]
        for run in runs:
            run.check_strategy()
        comparison = make_comparison(*runs, ignore=("delta", "start", "end"))
        stock_files, mitogen_files = (
            {host: runtime.snapshot(name) for host, name in per_run[strategy].items()}
            for strategy in ("linear", "mitogen_linear")
        )
    check_stock(comparison.baseline, case)
    for host in case.hosts:
        a, b = stock_files[host], mitogen_files[host]
        for path in sorted(set(a) | set(b)):
            if a.get(path) != b.get(path):
                comparison.differences.append(
                    f"{host}: container file {path}: linear {a.get(path)}, "
                    f"mitogen_linear {b.get(path)}"
                )
    comparison.assert_same()


def test_every_suite_playbook_is_run_or_excluded() -> None:
    assert set(CASES) | ELSEWHERE | EXCLUDED == set(SUITE)
    assert not set(CASES) & (ELSEWHERE | EXCLUDED)
