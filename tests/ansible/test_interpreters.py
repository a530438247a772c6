"""Interpreters as with stock Ansible: interpreter lines with arguments, interpreters
named by ansible_<language>_interpreter for every module style and the script action
(interpreters.yml), and Python interpreter discovery with auto, auto_silent and
auto_legacy: the interpreter found, the warnings printed and the fact stored
(discovery.yml)."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_mitogen import compat
from tests.ansible.harness import Harness, PlaybookRun

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

#: Stock Ansible without pipelining runs modules through a terminal (both streams in
#: stdout, CRLF), Mitogen as pipelining does: failed module runs are compared by content.
STREAMS = ("module_stdout", "module_stderr")

#: Tasks that fail in stock Ansible because it runs the interpreter line as one word.
NOT_FOUND = {
    "new-style module, interpreter line with an argument": "-E",
    "new-style module through env": "/usr/bin/env python3",
    "new-style module, missing interpreter": "/usr/bin/python3.99",
    "ansible_python_interpreter with an argument": "-E",
    "ansible_python_interpreter through env": "/usr/bin/env python3",
    "want_json module, ansible_bash_interpreter with arguments": "/usr/bin/env VAR=x bash",
    "want_json module in Perl, ansible_perl_interpreter through env": "/usr/bin/env perl",
    "old-style module, ansible_sh_interpreter with arguments": "/usr/bin/env VAR=x sh",
}

#: What the tasks that work report (stock's results are checked against these).
WORKING = {
    "new-style module, interpreter by name": "/usr/bin/python3",
    "raw with an ansible_python_interpreter through env": None,
    "want_json module": "bash 5 VAR=unset",
    "want_json module, ansible_bash_interpreter": "bash 5 VAR=unset",
    "old-style module": "old-style word=hello VAR=unset",
    "binary module": "binary module, arguments in a file: yes",
    "binary module with an ansible_python_interpreter through env": (
        "binary module, arguments in a file: yes"
    ),
}


def streams(result: dict[str, Any]) -> str:
    return "%s%s" % (result.get("module_stdout", ""), result.get("module_stderr", ""))


#: Tasks whose ansible_python_interpreter is not one path: no context can start with it
#: (stock runs the value as one word, which is not found), so the task runs as stock.
FALLBACK = {
    "ansible_python_interpreter with an argument",
    "ansible_python_interpreter through env",
    "raw with an ansible_python_interpreter through env",
    "binary module with an ansible_python_interpreter through env",
}


def test_interpreter_lines_as_with_stock(harness: Harness) -> None:
    comparison = harness.compare("interpreters.yml", ignore=STREAMS, fallback=FALLBACK)
    for run in (comparison.baseline, comparison.candidate):
        for task, interpreter in NOT_FOUND.items():
            result = run.result("plain", task)
            assert result["failed"] and result["rc"] == 127, (run.strategy, result)
            assert result["msg"].startswith("The module interpreter '"), (run.strategy, result)
            assert result["msg"].endswith("%s' was not found." % (interpreter,)), result
            assert "%s: " % (interpreter,) in streams(result), (run.strategy, result)
    stock = comparison.baseline
    for task, msg in WORKING.items():
        result = stock.result("plain", task)
        assert not result["failed"], result
        if msg is not None:
            assert result["msg"] == msg, result
    perl = stock.result("plain", "want_json module in Perl, ansible_perl_interpreter")
    assert perl["msg"].startswith("perl 5."), perl
    for task in ("script whose interpreter line sets a variable",):
        assert stock.result("plain", task)["stdout"] == "VAR=x\r\n"
    assert (
        stock.result("plain", "script with an executable that sets a variable")["stdout"]
        == "VAR=y\r\n"
    )
    comparison.assert_same()


def discovered_warning(host: str, interpreter: str) -> str:
    return (
        f"Host {host!r} is using the discovered Python interpreter at {interpreter!r}, but "
        "future installation of another Python interpreter could cause a different "
        "interpreter to be discovered."
    )


def check_discovery(run: PlaybookRun, pythons: dict[str, str]) -> None:
    for host in ("plain", "sudo_nopw"):
        auto = run.result(host, "auto")
        found = run.result(host, "the discovered fact")["msg"]
        assert found.startswith("/"), found
        assert auto["warnings"] == [discovered_warning(host, found)], auto
        assert run.result(host, "the discovered fact in hostvars")["msg"] == found
        assert "warnings" not in run.result(host, "a command with the discovered interpreter")
        silent = run.result(host, "auto_silent, with become where there is sudo")
        assert not silent["failed"] and "warnings" not in silent, silent
        assert run.result(host, "the fact discovered silently")["msg"] == found
    legacy = run.result("plain", "auto_legacy")
    if (compat.series() or (0, 0)) >= (2, 21):
        # removed in 2.21: the value is taken as an interpreter path
        assert legacy["failed"], legacy
        assert legacy["msg"] == "The module interpreter 'auto_legacy' was not found.", legacy
    else:
        assert not legacy["failed"], legacy
    none_found = run.result("plain", "auto finding none of the candidates")
    assert none_found["warnings"] == [
        "No python interpreters found for host 'plain' (tried ['python2.99', "
        "'/nonexistent/python3'])."
    ], none_found
    assert run.result("plain", "the fallback fact")["msg"] == "/usr/bin/python3"
    listed = run.result("sudo_nopw", "auto with a candidate list, with become")
    assert listed["msg"] == "3.12 root", listed
    assert listed["warnings"] == [discovered_warning("sudo_nopw", pythons["3.12"])]
    assert run.result("sudo_nopw", "the fact from the candidate list")["msg"] is True
    assert run.result("plain", "the Python that gathered facts")["msg"] is True
    omitted = run.result("plain", "an interpreter templated to omit (the default, auto)")
    assert not omitted["failed"], omitted
    plain_found = run.result("plain", "the discovered fact")["msg"]
    assert omitted["warnings"] == [discovered_warning("plain", plain_found)], omitted
    templated = run.result("plain", "an interpreter templated from a variable")
    assert templated["msg"] == "3.12 mitogen__plain", templated


def test_interpreter_discovery_as_with_stock(harness: Harness) -> None:
    comparison = harness.compare("discovery.yml", ignore=STREAMS)
    pythons = {p.short: str(p.executable) for p in harness.testbed.pythons}
    check_discovery(comparison.baseline, pythons)
    comparison.assert_same()
