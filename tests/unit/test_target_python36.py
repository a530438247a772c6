"""Target-side code stays Python 3.6 compatible: every module a new context may
receive compiles, and the ones with no controller dependency import, under the
oldest target Python the testbed has (3.6)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.testbed import discover

REPO = Path(__file__).resolve().parents[2]
TARGET_FILES = sorted(
    [str(p.relative_to(REPO)) for p in (REPO / "mitogen").glob("*.py")]
    + [
        "ansible_mitogen/target.py",
        "ansible_mitogen/module_runner.py",
        "ansible_mitogen/fresh_child.py",
    ]
)
IMPORTED = [
    # the bootstrap bundle in load order, each before the modules importing it
    "mitogen.wire",
    "mitogen.channels",
    "mitogen.streams",
    "mitogen.broker",
    "mitogen.router",
    "mitogen.importer",
    "mitogen.child",
    "mitogen.core",
    "mitogen.parent",
    "mitogen.spawn",
    "mitogen.bootstrap",
    "mitogen.prompting",
    "mitogen.calls",
    "mitogen.routing",
    "mitogen.pollers",
    "mitogen.blocking_io",
    "mitogen.master",
    "mitogen.service",
    "mitogen.ssh",
    "mitogen.sudo",
    "mitogen.fork",
    "ansible_mitogen.target",
]


def python36() -> str:
    for install in discover():
        if install.version[:2] == (3, 6):
            return str(install.executable)
    pytest.fail("no Python 3.6 under pyenv: scripts/setup.sh installs it")


def test_target_code_compiles_under_python36() -> None:
    script = (
        "import sys\n"
        "for path in sys.argv[1:]:\n"
        "    compile(open(path, 'rb').read(), path, 'exec')\n"
        "print(len(sys.argv) - 1)\n"
    )
    out = subprocess.run(
        [python36(), "-c", script, *TARGET_FILES],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(len(TARGET_FILES))


def test_target_modules_import_under_python36() -> None:
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    out = subprocess.run(
        [python36(), "-c", script, *IMPORTED],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
