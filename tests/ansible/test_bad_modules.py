"""Misbehaving modules and a missing interpreter fail their task as with stock Ansible,
with the module's own output in the result; the run never hangs."""

from __future__ import annotations

import pytest

from tests.ansible.harness import Harness

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

#: Where stock Ansible without pipelining runs modules through a terminal (CRLF, both
#: streams in stdout), Mitogen runs them as pipelining does; compared by content below.
STREAMS = ("module_stdout", "module_stderr", "exception")
#: A target without the task's Python is served by stock Ansible.
FALLBACK = {"missing Python interpreter"}


def test_bad_modules_fail_like_stock(harness: Harness) -> None:
    comparison = harness.compare("bad_modules.yml", ignore=STREAMS, fallback=FALLBACK)
    comparison.assert_same()
    for run in (comparison.baseline, comparison.candidate):
        junk = run.result("plain", "a module printing junk")
        assert junk["failed"] and "this is not json" in str(junk), junk
        crash = run.result("plain", "a module that crashes")
        assert crash["failed"] and "crashed on purpose" in str(crash)
        missing = run.result("plain", "missing Python interpreter")
        assert missing["rc"] == 127
        assert missing["msg"] == "The module interpreter '/usr/bin/python3.99' was not found."
        assert "python3.99" in missing["module_stdout"] + missing["module_stderr"]
        assert run.result("plain", "the play goes on")["stdout"] == "still running"
