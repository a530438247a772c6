"""Fixtures for the Ansible tests: skip without ansible-core, and one Harness per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("ansible", reason="ansible-core is not installed: run scripts/setup-ansible.sh")

from tests.ansible.harness import Harness  # noqa: E402
from tests.testbed import Testbed  # noqa: E402


@pytest.fixture(scope="session")
def harness(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """ansible-playbook runs against the session testbed (logs under pytest's tmp dir)."""
    yield Harness(testbed, tmp_path_factory.mktemp("ansible"))
