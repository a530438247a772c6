"""Fixtures for the Ansible tests: skip without ansible-core, and one Harness per session."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ansible", reason="ansible-core is not installed: run scripts/setup-ansible.sh")

from tests.ansible.harness import Harness  # noqa: E402
from tests.testbed import Testbed  # noqa: E402


@pytest.fixture(scope="session")
def harness(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """ansible-playbook runs against the session testbed (logs under pytest's tmp dir)."""
    yield Harness(testbed, tmp_path_factory.mktemp("ansible"))


@pytest.fixture
def mux_runtime() -> Iterator[Path]:
    """A short XDG_RUNTIME_DIR for the on-demand mux socket of runs without a Mitogen
    strategy (sun_path holds 107 bytes): test_standalone.py's standalone_env()."""
    path = Path(tempfile.mkdtemp(prefix="am-rt-"))
    yield path
    shutil.rmtree(path)
