"""Fixtures of the faults suite, and the summary table printed at the end of the session
(one row per fault and strategy: expected answer, observed answer, seconds to the answer,
stray processes left)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ansible", reason="ansible-core is not installed: run scripts/setup-ansible.sh")

from tests.ansible.harness import Harness  # noqa: E402
from tests.faults import faultlib  # noqa: E402
from tests.testbed import Testbed  # noqa: E402


@pytest.fixture(scope="session")
def harness(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """ansible-playbook runs against the session testbed (logs under pytest's tmp dir)."""
    yield Harness(testbed, tmp_path_factory.mktemp("faults"))


@pytest.fixture
def gate() -> Iterator[faultlib.Gate]:
    made = faultlib.Gate()
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture
def playbook(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a playbook (text) to the test's tmp dir and return its path."""

    def write(text: str, name: str = "play.yml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    if not faultlib.ROWS:
        return
    terminalreporter.section("faults summary")
    for line in faultlib.table(faultlib.ROWS):
        terminalreporter.write_line(line)
