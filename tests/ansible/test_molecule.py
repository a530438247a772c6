"""`molecule test` passes for both scenarios of examples/molecule under mitogen_linear
(create, converge, idempotence, verify, destroy), Mitogen serves the converge, and one
persistent interpreter on the target serves consecutive tasks.

Each scenario runs once (module-scoped fixture), with `-vvv` for ansible-playbook and a
side_effect playbook added through a base config (the scenario files stay as users copy
them): two tasks that each print the PID of the process their module ran under. Stock
Ansible starts a new interpreter per task; Mitogen forks each module from one persistent
interpreter, so both tasks name the same parent.

The docker scenario's instance uses `community.docker.docker`, which the Mitogen
strategies redirect to mitogen_docker: its converge is checked the same way.
"""

from __future__ import annotations

import grp
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.ansible import molecule_runner
from tests.ansible.harness import Harness
from tests.ansible.molecule_runner import APP_ROOT, APP_USER, MoleculeRun
from tests.ansible.test_standalone import assert_mux_gone
from tests.testbed.containers import Dockerd

pytestmark = [pytest.mark.needs_testbed, pytest.mark.slow, pytest.mark.timeout(900)]

BIN_DIR = Path(sys.executable).parent
#: scripts/setup-molecule.sh installs Molecule into the project venv only; the suite's
#: reruns under other ansible-core series (other venvs) have none.
if (
    not (BIN_DIR / "molecule").exists()
    and Path(sys.prefix).resolve() != (molecule_runner.REPO / ".venv").resolve()
):
    pytest.skip(
        f"Molecule is installed in .venv only (scripts/setup-molecule.sh), not {sys.prefix}",
        allow_module_level=True,
    )
#: Steps of `molecule test` that must succeed, per scenario (the default driver with
#: `managed: false` skips create and destroy).
REQUIRED_STEPS = {
    "default": ["converge", "idempotence", "side_effect", "verify", "cleanup"],
    "docker": ["create", "converge", "idempotence", "side_effect", "verify", "destroy"],
}
PROBE = """\
- name: Probe the interpreter
  hosts: all
  gather_facts: false
  tasks:
    - name: First task
      ansible.builtin.shell: cut -d' ' -f4 /proc/$PPID/stat
      register: first
      changed_when: false

    - name: Second task
      ansible.builtin.shell: cut -d' ' -f4 /proc/$PPID/stat
      register: second
      changed_when: false

    - name: Report
      ansible.builtin.debug:
        msg: "module parents: {{ first.stdout }} {{ second.stdout }}"
"""
_PARENTS = re.compile(r'"msg": "module parents: (\d+) (\d+)"')


#: The default scenario's switch to Mitogen without its strategy (its molecule.yml).
CONNECTION_ONLY = {"EXAMPLE_STRATEGY": "linear", "EXAMPLE_CONNECTION": "mitogen_ssh"}


def _molecule_test(scenario: str, target: dict[str, str], workdir: Path) -> MoleculeRun:
    (workdir / "probe.yml").write_text(PROBE)
    base = workdir / "base.yml"
    base.write_text(f"provisioner:\n  playbooks:\n    side_effect: {workdir / 'probe.yml'}\n")
    env = molecule_runner.scenario_env(BIN_DIR, workdir / "ephemeral", target)
    run = molecule_runner.run(
        BIN_DIR, ["--base-config", str(base), "test", "-s", scenario, "--", "-vvv"], env
    )
    (workdir / "molecule.log").write_text(run.output)
    return run


def _exists(database: Callable[[str], object], name: str) -> bool:
    try:
        database(name)
    except KeyError:
        return False
    return True


def _default_scenario(
    harness: Harness, workdir: Path, settings: dict[str, str]
) -> Iterator[MoleculeRun]:
    """`molecule test -s default` against a testbed account over the loopback sshd, with
    the scenario's `settings`. The role makes the user and group example-app and
    /opt/example-app on this machine: they must not exist before, and the scenario's
    cleanup must have removed them."""
    if _exists(pwd.getpwnam, APP_USER) or _exists(grp.getgrnam, APP_USER) or APP_ROOT.exists():
        pytest.fail(f"user or group {APP_USER} or {APP_ROOT} exists already: not ours")
    target = {**molecule_runner.ssh_target(harness.inventory_path), **settings}
    try:
        yield _molecule_test("default", target, workdir)
    finally:
        left = []
        if _exists(pwd.getpwnam, APP_USER):
            left.append(f"user {APP_USER}")
            subprocess.run(["userdel", APP_USER], check=False)
        if _exists(grp.getgrnam, APP_USER):
            left.append(f"group {APP_USER}")
            subprocess.run(["groupdel", APP_USER], check=False)
        if APP_ROOT.exists():
            left.append(str(APP_ROOT))
            shutil.rmtree(APP_ROOT)
        if left:
            pytest.fail(f"the default scenario's cleanup left {', '.join(left)}")


@pytest.fixture(scope="module")
def default_run(
    harness: Harness, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MoleculeRun]:
    yield from _default_scenario(harness, tmp_path_factory.mktemp("molecule-default"), {})


@pytest.fixture(scope="module")
def connection_only_run(
    harness: Harness, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MoleculeRun]:
    """The default scenario with the builtin linear strategy and mitogen_ssh, its mux
    directory under a short XDG_RUNTIME_DIR (a socket path holds 107 bytes)."""
    runtime = Path(tempfile.mkdtemp(prefix="am-rt-"))
    try:
        yield from _default_scenario(
            harness,
            tmp_path_factory.mktemp("molecule-connection-only"),
            {**CONNECTION_ONLY, "XDG_RUNTIME_DIR": str(runtime)},
        )
        assert_mux_gone({"XDG_RUNTIME_DIR": str(runtime)})
    finally:
        shutil.rmtree(runtime)


@pytest.fixture(scope="module")
def docker_run(dockerd: Dockerd, tmp_path_factory: pytest.TempPathFactory) -> MoleculeRun:
    """`molecule test -s docker` with the testbed's private dockerd and its image."""
    target = {"DOCKER_HOST": dockerd.socket}
    return _molecule_test("docker", target, tmp_path_factory.mktemp("molecule-docker"))


def _assert_passes(scenario: str, run: MoleculeRun) -> None:
    assert run.rc == 0, run.describe()
    outcomes = run.outcomes()
    for step in REQUIRED_STEPS[scenario]:
        assert (step, "Successful") in outcomes, f"{step}: {outcomes}\n{run.describe()}"
    # the converge ran under a Mitogen strategy (at -vvv it says it installed its
    # loader hooks), and idempotence found nothing to change
    converge = run.step("converge")
    assert "ansible_mitogen from" in converge and "loader hooks installed" in converge, converge
    assert "changed=0" in run.step("idempotence"), run.step("idempotence")[-3000:]


def test_default_scenario_passes(default_run: MoleculeRun) -> None:
    _assert_passes("default", default_run)


def test_docker_scenario_passes(docker_run: MoleculeRun) -> None:
    _assert_passes("docker", docker_run)


def _assert_served(run: MoleculeRun) -> None:
    converge = run.step("converge")
    established = [
        line
        for line in converge.splitlines()
        if "ESTABLISH MITOGEN CONNECTION" in line and " VIA local " not in line
    ]
    assert established, converge[-3000:]
    assert any("reused" in line for line in established), established


def _assert_one_interpreter(run: MoleculeRun) -> None:
    found = _PARENTS.search(run.step("side_effect"))
    assert found, run.step("side_effect")[-3000:]
    first, second = int(found[1]), int(found[2])
    # PID 0 would be a parent outside the target's PID namespace: nothing persistent
    assert first > 1 and first == second, (first, second)


def test_mitogen_serves_the_converge_over_ssh(default_run: MoleculeRun) -> None:
    _assert_served(default_run)


def test_mitogen_serves_the_converge_in_docker(docker_run: MoleculeRun) -> None:
    _assert_served(docker_run)


def test_one_interpreter_serves_consecutive_tasks_over_ssh(default_run: MoleculeRun) -> None:
    _assert_one_interpreter(default_run)


def test_one_interpreter_serves_consecutive_tasks_in_docker(docker_run: MoleculeRun) -> None:
    _assert_one_interpreter(docker_run)


def test_default_scenario_passes_without_the_strategy(connection_only_run: MoleculeRun) -> None:
    """The default scenario with `strategy: linear` and `ansible_connection: mitogen_ssh`:
    every step passes, its converge is served by Mitogen through a mux it started on
    demand, consecutive tasks share one interpreter, and nothing warns of a third-party
    strategy."""
    run = connection_only_run
    assert run.rc == 0, run.describe()
    outcomes = run.outcomes()
    for step in REQUIRED_STEPS["default"]:
        assert (step, "Successful") in outcomes, f"{step}: {outcomes}\n{run.describe()}"
    converge = run.step("converge")
    assert "MITOGEN MUX STARTED" in converge, converge[-3000:]
    assert "loader hooks installed" not in converge, "a Mitogen strategy ran"
    assert "DEPRECATION WARNING" not in run.output, run.output[-3000:]
    assert "changed=0" in run.step("idempotence"), run.step("idempotence")[-3000:]
    _assert_served(run)
    _assert_one_interpreter(run)
