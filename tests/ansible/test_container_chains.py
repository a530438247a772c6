"""Containers in chains (issue 12): tasks of an ssh host's play delegated to a docker
container, and a docker container reached through an ssh host (`mitogen_via`), each with
stock Ansible's results and files, every Mitogen result served by Mitogen.

The inventory is the harness's (the testbed's ssh hosts) plus `box`, a fresh container of
the private dockerd per run (community.docker.docker), and `root_bastion`: the sudo_nopw
account becoming root, since the private dockerd's socket is root's. Stock Ansible ignores
`mitogen_via` and runs its docker client on the controller; Mitogen runs it in
root_bastion's sudo context.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.harness import PLAYBOOKS, Comparison, Harness, make_comparison
from tests.ansible.test_containers import (
    CONTAINER_PYTHON,
    WORKDIR,
    Runtime,
    docker,  # noqa: F401 (fixture)
    targets,
)

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

CONTAINERS = PLAYBOOKS / "containers"


def write_inventory(
    harness: Harness, path: Path, runtime: Runtime, container: str, box: dict[str, Any]
) -> Path:
    """The harness's inventory plus `root_bastion` and the container `box` (with `box`'s
    extra variables)."""
    inventory = json.loads(harness.inventory_path.read_text())
    groups = inventory["all"]["children"]
    common = groups["testbed"]["vars"]
    groups["bastions"] = {
        "hosts": {
            "root_bastion": {
                "ansible_user": harness.account("sudo_nopw").name,
                "ansible_become": True,
            }
        },
        "vars": {k: v for k, v in common.items() if k != "workdir"},
    }
    groups["containers"] = {
        "hosts": {
            "box": {
                "ansible_connection": "community.docker.docker",
                "ansible_host": container,
                "ansible_python_interpreter": CONTAINER_PYTHON,
                "workdir": WORKDIR,
                **runtime.variables,
                **box,
            }
        }
    }
    path.write_text(json.dumps(inventory, indent=2))
    return path


def compare_with_box(
    harness: Harness,
    tmp_path: Path,
    runtime: Runtime,
    playbook: Path,
    box: dict[str, Any],
    mitogen_args: tuple[str, ...] = (),
) -> Comparison:
    """`playbook` with linear and mitogen_linear (with `mitogen_args`), each run with its
    own fresh container as `box`; the comparison includes the files left in the
    containers."""
    with targets(runtime, 2) as names:
        started = []
        for strategy, name in zip(("linear", "mitogen_linear"), names, strict=True):
            inventory = write_inventory(harness, tmp_path / f"{strategy}.json", runtime, name, box)
            extra = mitogen_args if strategy == "mitogen_linear" else ()
            started.append(harness.start(playbook, strategy, args=["-i", str(inventory), *extra]))
        runs = [running.wait(240) for running in started]
        for run in runs:
            run.check_strategy()
        comparison = make_comparison(*runs, ignore=("delta", "start", "end"))
        stock_files, mitogen_files = (runtime.snapshot(name) for name in names)
    for path in sorted(set(stock_files) | set(mitogen_files)):
        if stock_files.get(path) != mitogen_files.get(path):
            comparison.differences.append(
                f"container file {path}: linear {stock_files.get(path)}, "
                f"mitogen_linear {mitogen_files.get(path)}"
            )
    assert stock_files, "nothing was left in the stock run's container"
    return comparison


def test_tasks_delegated_to_a_container(
    harness: Harness,
    tmp_path: Path,
    docker: Runtime,  # noqa: F811
) -> None:
    """A play on an ssh host with tasks delegated to a docker container."""
    comparison = compare_with_box(harness, tmp_path, docker, CONTAINERS / "delegate.yml", {})
    stock, ours = comparison.baseline, comparison.candidate
    assert stock.result("plain", "delegated to the container")["stdout"] == "root"
    assert stock.result("plain", "on the ssh host")["stdout"] == harness.account("plain").name
    assert stock.result("plain", "what the container holds")["msg"] == "11 0640"
    assert stock.result("plain", "what the ssh host holds")["msg"] in (False, "False")
    comparison.assert_same()
    via = ours.result("plain", "delegated to the container")["via"][0]
    assert via["mitogen_calls"] and "docker" in via["connection"], via


def test_a_container_reached_through_an_ssh_host(
    harness: Harness,
    tmp_path: Path,
    docker: Runtime,  # noqa: F811
) -> None:
    """ssh -> sudo -> docker with Mitogen (the container's `mitogen_via` is root_bastion),
    docker directly with stock; -vvv shows the whole chain."""
    comparison = compare_with_box(
        harness,
        tmp_path,
        docker,
        CONTAINERS / "via_docker.yml",
        {"mitogen_via": "root_bastion"},
        # -vvv for Mitogen only: stock's docker plugin then asks the default docker daemon
        # (not the private one) for the container's user, and warns in every result
        mitogen_args=("-vvv",),
    )
    stock, ours = comparison.baseline, comparison.candidate
    assert stock.result("box", "command in the container")["stdout"] == "root", stock.describe()
    comparison.assert_same()
    sshd = harness.testbed.sshd
    chain = re.escape(
        f"ssh {harness.account('sudo_nopw').name}@{sshd.address}:{sshd.port} -> sudo root -> "
        "docker mitogen-test-"
    )
    assert re.search(f"ESTABLISH MITOGEN CONNECTION FOR USER: \\S+ VIA {chain}", ours.stdout), (
        ours.describe()
    )


def test_the_docker_client_runs_in_the_ssh_hosts_context(
    harness: Harness,
    tmp_path: Path,
    docker: Runtime,  # noqa: F811
) -> None:
    """The docker client serving `box` is a child of the sudo context root_bastion's own
    tasks run in (Mitogen only: stock runs it on the controller)."""
    with targets(docker, 1) as (name,):
        inventory = write_inventory(
            harness, tmp_path / "inv.json", docker, name, {"mitogen_via": "root_bastion"}
        )
        run = harness.run(
            CONTAINERS / "via_docker_proof.yml", "mitogen_linear", args=["-i", str(inventory)]
        )
    assert run.rc == 0, run.describe()
    assert not run.served_problems(), run.served_problems()
    clients = run.result("root_bastion", "docker clients of the ssh host's context")["stdout"]
    [client] = clients.splitlines()
    assert re.match(rf"\S*docker .*\bexec -i {name} ", client), client
