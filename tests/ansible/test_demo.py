"""The README's first command: the demo playbook runs with both strategies and
prints both times and proves Mitogen served the mitogen_linear run (benchmarks/demo.py,
run on the session testbed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.demo import run_demo
from tests.testbed import Testbed


def test_demo_runs_both_strategies(
    testbed: Testbed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    times = run_demo(testbed, str(tmp_path))
    assert sorted(times) == ["linear", "mitogen_linear"]
    assert all(result.ok and result.wall > 0 for result in times.values()), times
    out = capsys.readouterr().out
    assert out.count(" s wall ") == 2, out
    assert "mitogen_linear took" in out, out
    assert "served by Mitogen: 34 of 34 tasks" in out, out
