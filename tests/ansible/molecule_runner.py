"""Run Molecule on the example role (examples/molecule) against the testbed.

`scenario_env()` builds the environment the scenarios read: the venv's `bin` first on
PATH (Molecule runs `ansible-config` and `ansible-playbook` from PATH), the collections
scripts/setup-collections.sh extracted (community.docker, for the docker driver) in
ANSIBLE_COLLECTIONS_PATH, a private ephemeral directory, and per scenario its target:
the `EXAMPLE_SSH_*` variables of the `default` scenario (`ssh_target()`: a testbed
account with passwordless sudo) or DOCKER_HOST for the `docker` one (the testbed's
private dockerd, whose image the scenario uses). `run()` runs one Molecule command and
returns its output, cut into the steps Molecule announces. Used by
tests/ansible/test_molecule.py and benchmarks/molecule_bench.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The Molecule project: run every command from here.
EXAMPLE = REPO / "examples" / "molecule"
#: What the role creates on its host (the `default` scenario's cleanup removes them).
APP_USER = "example-app"
APP_ROOT = Path("/opt/example-app")
#: Where scripts/setup-collections.sh puts collections, in the venv.
COLLECTIONS_DIR = "ansible-collections"
#: Molecule's step lines: `INFO     [docker > converge] Executing` (NO_COLOR set) and, in
#: the summary, `docker > converge: Executed: Successful`.
_STEP = re.compile(r"^(?:[A-Z]+\s+\[)?(\S+) > (\w+)(?:\]|:) (Executing|Executed: .*)$", re.M)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class MoleculeError(AssertionError):
    """Molecule could not be run, or its output is not what was expected."""


@dataclass
class MoleculeRun:
    """One finished Molecule command."""

    argv: list[str]
    rc: int
    seconds: float
    output: str

    def step(self, name: str) -> str:
        """The output of the last run of step `name` (e.g. 'converge'), from its
        `Executing` line to its `Executed` line."""
        starts = [m for m in _STEP.finditer(self.output) if m[2] == name and m[3] == "Executing"]
        if not starts:
            raise MoleculeError(f"no step {name!r} ran\n{self.describe()}")
        begin = starts[-1].end()
        end = self.output.find(f" > {name}] Executed", begin)
        return self.output[begin : end if end >= 0 else len(self.output)]

    def outcomes(self) -> list[tuple[str, str]]:
        """(step, outcome) for every step, in order: outcome is Molecule's own
        `Executed: ...` text, e.g. 'Successful' or 'Missing playbook'."""
        return [
            (m[2], m[3].removeprefix("Executed: "))
            for m in _STEP.finditer(self.output)
            if m[3] != "Executing"
        ]

    def describe(self, tail: int = 60) -> str:
        lines = self.output.splitlines()[-tail:]
        return (
            f"{' '.join(self.argv)}: exit {self.rc} after {self.seconds:.1f}s\n--- output (end)\n"
            + "\n".join(lines)
        )


def ssh_target(inventory_path: Path, host: str = "sudo_nopw") -> dict[str, str]:
    """The `EXAMPLE_SSH_*` variables for one host of the harness's inventory (a testbed
    account with passwordless sudo by default)."""
    inventory = json.loads(inventory_path.read_text())
    group = inventory["all"]["children"]["testbed"]
    found = {**group["vars"], **group["hosts"][host]}
    return {
        "EXAMPLE_SSH_HOST": str(found["ansible_host"]),
        "EXAMPLE_SSH_PORT": str(found["ansible_port"]),
        "EXAMPLE_SSH_USER": str(found["ansible_user"]),
        "EXAMPLE_SSH_KEY": str(found["ansible_ssh_private_key_file"]),
        "EXAMPLE_SSH_ARGS": str(found["ansible_ssh_common_args"]),
        "EXAMPLE_PYTHON": str(found["ansible_python_interpreter"]),
    }


def scenario_env(
    bin_dir: Path, ephemeral: Path, target: Mapping[str, str], strategy: str | None = None
) -> dict[str, str]:
    """The environment for Molecule: this process's without ANSIBLE_* and MOLECULE_*
    settings, plus the venv, collections, ephemeral directory and `target` variables.
    `strategy` (e.g. 'linear') overrides the scenario's strategy for ansible-playbook."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    env.pop("PYTHONPATH", None)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        ANSIBLE_COLLECTIONS_PATH=str(bin_dir.parent / COLLECTIONS_DIR),
        MOLECULE_EPHEMERAL_DIRECTORY=str(ephemeral),
        # stock ssh's ControlPersist sockets, for close_control_masters()
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(ephemeral / "cp"),
        NO_COLOR="1",
        ANSIBLE_NOCOLOR="1",
        COLUMNS="400",
        **target,
    )
    if strategy is not None:
        env["ANSIBLE_STRATEGY"] = strategy
    return env


def run(
    bin_dir: Path,
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    timeout: float = 600.0,
) -> MoleculeRun:
    """Run `molecule ARGS...` from the example project and wait for it."""
    argv = [str(bin_dir / "molecule"), *args]
    if not os.access(argv[0], os.X_OK):
        raise MoleculeError(f"{argv[0]} not found: run scripts/setup-molecule.sh")
    began = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=EXAMPLE,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        raw, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: molecule and its children
        proc.communicate()
        raise MoleculeError(f"{' '.join(argv)} did not finish in {timeout:.0f}s") from None
    output = _ANSI.sub("", raw.decode(errors="replace"))
    return MoleculeRun(argv, proc.returncode, time.monotonic() - began, output)


def close_control_masters(directory: Path) -> None:
    """Stop the ssh ControlPersist masters stock Ansible left with their sockets in
    `directory` (scenario_env() puts them in the ephemeral directory)."""
    for path in directory.rglob("*"):
        if path.is_socket():
            subprocess.run(
                ["ssh", "-o", f"ControlPath={path}", "-O", "exit", "placeholder"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
                check=False,
            )
