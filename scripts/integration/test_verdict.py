"""Tests of verdict.py, the judge of scripts/ansible-integration.sh.

Stdlib only (unittest): ansible-integration.sh runs them with the image's Python 3.12
before it judges anything (`python3.12 -m unittest scripts/integration/test_verdict.py`).
Each test writes a small expected.toml and fake run directories with log excerpts in the
shapes ansible-test and ansible's log_path really produce, then checks the verdict.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import textwrap
import unittest
from contextlib import redirect_stdout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import verdict  # noqa: E402

STRATEGIES = ["linear", "mitogen_linear"]
LOG = "2026-12-01 09:14:02,708 p=%d u=root n=ansible INFO| %s"
EVIDENCE = "ansible_mitogen from /opt/mitogen/ansible_mitogen: loader hooks installed"


def ansible_log(*processes: tuple[int, list[str]]) -> str:
    """ansible.log lines: (pid, [messages]) per process."""
    return "".join(LOG % (pid, msg) + "\n" for pid, msgs in processes for msg in msgs)


PASSING = textwrap.dedent("""\
    TASK [ping] ********************************************************************
    ok: [testhost] => {"changed": false, "ping": "pong"}
    """)

# A task whose failure is ignored: the result is a multi-line JSON object.
IGNORED_DIFFERENCE = textwrap.dedent("""\
    TASK [expected difference plumb-1: stock prints EXEC lines] ********************
    [ERROR]: Task failed: Action failed: Assertion failed
    fatal: [testhost]: FAILED! => {
        "assertion": "'EXEC ssh' in out.stdout",
        "msg": "Assertion failed"
    }
    ...ignoring
    """)

PASSED_DIFFERENCE = textwrap.dedent("""\
    TASK [expected difference plumb-1: stock prints EXEC lines] ********************
    ok: [testhost] => {
        "changed": false,
        "msg": "All assertions passed"
    }
    """)

FAILED_TASK = textwrap.dedent("""\
    TASK [copy : Copy file] ********************************************************
    fatal: [testhost]: FAILED! => {"changed": false, "msg": "boom"}

    PLAY RECAP *********************************************************************
    NOTICE: To resume at this test target, use the option: --start-at copy
    FATAL: Command "./runme.sh -v" returned exit status 2.
    """)

FAILED_SHELL = textwrap.dedent("""\
    + ansible ssh -m raw -a whoami -vvvvv
    + grep 'debug3:'
    NOTICE: To resume at this test target, use the option: --start-at connection_ssh
    FATAL: Command "./runme.sh -v" returned exit status 1.
    """)


class VerdictTest(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.dir = self.tmp.name
        self.run_dir = os.path.join(self.dir, "run")
        with open(os.path.join(self.dir, "fix.patch"), "w") as f:
            f.write("--- a/t/x\n+++ b/t/x\n")
        self.write_expected("")

    def write_expected(self, text: str) -> None:
        self.expected = os.path.join(self.dir, "expected.toml")
        with open(self.expected, "w") as f:
            f.write(textwrap.dedent(text))

    def write_run(
        self, target: str, strategy: str, rc: int | None, test_log: str, log: str = ""
    ) -> None:
        tdir = os.path.join(self.run_dir, strategy, target)
        os.makedirs(tdir, exist_ok=True)
        if rc is not None:
            with open(os.path.join(tdir, "rc"), "w") as f:
                f.write("%d\n" % rc)
            with open(os.path.join(tdir, "seconds"), "w") as f:
                f.write("1.5\n")
        with open(os.path.join(tdir, "ansible-test.log"), "w") as f:
            f.write(test_log)
        if strategy == "mitogen_linear" and not log:
            log = ansible_log((26, [EVIDENCE, 'ok: [testhost] => {"ping": "pong"}']))
        with open(os.path.join(tdir, "ansible.log"), "w") as f:
            f.write(log)

    def judge(self, *targets: str) -> tuple[int, str]:
        out = io.StringIO()
        with redirect_stdout(out):
            status = verdict.report(
                self.expected,
                self.run_dir,
                os.path.join(self.dir, "results.md"),
                STRATEGIES,
                ["# header"],
                list(targets),
            )
        return status, out.getvalue()

    def assert_fails_with(self, text: str, *targets: str) -> str:
        status, out = self.judge(*(targets or ("t",)))
        self.assertEqual(status, 1, out)
        self.assertIn(text, out)
        return out

    # ------------------------------------------------------------ plain targets
    def test_both_pass(self) -> None:
        self.write_run("t", "linear", 0, PASSING)
        self.write_run("t", "mitogen_linear", 0, PASSING)
        status, out = self.judge("t")
        self.assertEqual(status, 0, out)
        self.assertIn("| t | pass 1.5 s | pass 1.5 s |  |", out)
        self.assertTrue(out.rstrip().endswith("integration: 2 passed, 0 failed"), out)

    def test_linear_failure_is_an_environment_problem(self) -> None:
        self.write_run("t", "linear", 2, FAILED_TASK)
        self.write_run("t", "mitogen_linear", 0, PASSING)
        out = self.assert_fails_with("linear: fails with linear (FAIL at TASK [copy : Copy file])")
        self.assertIn("integration: 1 passed, 1 failed", out)

    def test_unlisted_mitogen_failure(self) -> None:
        self.write_run("t", "linear", 0, PASSING)
        self.write_run("t", "mitogen_linear", 2, FAILED_TASK)
        self.assert_fails_with(
            "fails with mitogen_linear (FAIL at TASK [copy : Copy file]), not listed"
        )

    def test_timeout_and_missing_run(self) -> None:
        self.write_run("t", "linear", 124, PASSING)
        self.write_run("t", "mitogen_linear", None, "")
        out = self.assert_fails_with("TIMEOUT")
        self.assertIn("mitogen_linear: did not run", out)

    def test_ignored_failure_is_not_the_failure_point(self) -> None:
        log = IGNORED_DIFFERENCE.replace("expected difference plumb-1: ", "") + FAILED_SHELL
        self.write_run("t", "linear", 0, PASSING)
        self.write_run("t", "mitogen_linear", 1, log)
        self.assert_fails_with("(FAIL at + grep 'debug3:')")

    # ------------------------------------------------------------ evidence of Mitogen
    def test_process_without_evidence(self) -> None:
        self.write_run("t", "linear", 0, PASSING)
        self.write_run(
            "t",
            "mitogen_linear",
            0,
            PASSING,
            ansible_log(
                (26, [EVIDENCE, "ok: [testhost] => {}"]), (27, ["changed: [testhost] => {}"])
            ),
        )
        self.assert_fails_with("1 of 2 ansible processes reported task results without")

    def test_no_results_at_all(self) -> None:
        self.write_run("t", "linear", 0, PASSING)
        self.write_run("t", "mitogen_linear", 0, PASSING, ansible_log((26, [EVIDENCE])))
        self.assert_fails_with("nothing shows mitogen_linear ran")

    def test_ad_hoc_result_counts(self) -> None:
        self.write_run("t", "linear", 0, PASSING)
        self.write_run(
            "t",
            "mitogen_linear",
            0,
            PASSING,
            ansible_log(
                (26, [EVIDENCE, "ok: [testhost] => {}"]), (30, ["ssh-pipelining | SUCCESS => {"])
            ),
        )
        self.assert_fails_with("1 of 2 ansible processes")

    def test_stock_plumbing(self) -> None:
        log = ansible_log(
            (
                26,
                [
                    EVIDENCE,
                    "ok: [testhost] => {}",
                    "<127.0.0.1> ESTABLISH LOCAL CONNECTION FOR USER: root",
                    "<127.0.0.1> EXEC /bin/sh -c 'echo ~root'",
                    "<127.0.0.1> ESTABLISH MITOGEN CONNECTION FOR USER: root VIA local",
                    "<127.0.0.1> MITOGEN EXEC /bin/sh -c 'echo ~root'",
                ],
            )
        )
        self.write_run("t", "linear", 0, PASSING)
        self.write_run("t", "mitogen_linear", 0, PASSING, log)
        self.assert_fails_with("127.0.0.1: 2 lines")
        self.write_expected("""\
            [t]
            summary = "s"
            why = "w"
            stock_plumbing_hosts = ["127.0.0.1"]
            """)
        self.assertEqual(self.judge("t")[0], 0)

    # ------------------------------------------------------------ expected differences
    def expect_difference(self, reason: str = "plumbing: stock logs it") -> None:
        self.write_expected(
            """\
            [t]
            summary = "s"
            why = "w"
            patch = "fix.patch"
            [t.differences]
            plumb-1 = "%s"
            """
            % (reason,)
        )

    def test_difference_happens_with_mitogen_only(self) -> None:
        self.expect_difference()
        self.write_run("t", "linear", 0, PASSED_DIFFERENCE)
        self.write_run("t", "mitogen_linear", 0, IGNORED_DIFFERENCE)
        status, out = self.judge("t")
        self.assertEqual(status, 0, out)
        self.assertIn("| t | pass 1.5 s | pass 1.5 s | s |", out)

    def test_difference_no_longer_happens(self) -> None:
        self.expect_difference()
        self.write_run("t", "linear", 0, PASSED_DIFFERENCE)
        self.write_run("t", "mitogen_linear", 0, PASSED_DIFFERENCE)
        self.assert_fails_with("expected difference plumb-1 no longer happens")

    def test_difference_happens_with_linear_too(self) -> None:
        self.expect_difference()
        self.write_run("t", "linear", 0, IGNORED_DIFFERENCE)
        self.write_run("t", "mitogen_linear", 0, IGNORED_DIFFERENCE)
        self.assert_fails_with("plumb-1 happens with linear too")

    def test_difference_did_not_run(self) -> None:
        self.expect_difference()
        self.write_run("t", "linear", 0, PASSING)
        self.write_run("t", "mitogen_linear", 0, IGNORED_DIFFERENCE)
        self.assert_fails_with("linear: expected difference plumb-1 did not run")

    def test_unlisted_marked_difference(self) -> None:
        self.write_run("t", "linear", 0, PASSING)
        self.write_run("t", "mitogen_linear", 0, IGNORED_DIFFERENCE)
        self.assert_fails_with("marks differences not listed in expected.toml: plumb-1")

    def test_shell_marker_difference(self) -> None:
        self.expect_difference()
        self.write_run(
            "t",
            "linear",
            0,
            "+ echo 'expected difference plumb-1: did not happen'\n"
            "expected difference plumb-1: did not happen\n",
        )
        self.write_run(
            "t",
            "mitogen_linear",
            0,
            "+ echo 'expected difference plumb-1: happened'\n"
            "expected difference plumb-1: happened\n",
        )
        self.assertEqual(self.judge("t")[0], 0)
        self.write_run("t", "mitogen_linear", 0, "expected difference plumb-1: did not happen\n")
        self.assert_fails_with("plumb-1 no longer happens")

    def test_known_bug_is_listed(self) -> None:
        self.expect_difference("bug: closing stderr kills the bootstrap")
        self.write_run("t", "linear", 0, PASSED_DIFFERENCE)
        self.write_run("t", "mitogen_linear", 0, IGNORED_DIFFERENCE)
        status, out = self.judge("t")
        self.assertEqual(status, 0, out)
        self.assertIn("- t, plumb-1: closing stderr kills the bootstrap", out)

    # ------------------------------------------------------------ fails_at
    def expect_failure(self, point: str) -> None:
        self.write_expected(
            """\
            [t]
            summary = "s"
            why = "bug: copy breaks"
            fails_at = "%s"
            """
            % (point,)
        )

    def test_fails_at_the_recorded_point(self) -> None:
        self.expect_failure("TASK [copy : Copy file]")
        self.write_run("t", "linear", 0, PASSING)
        self.write_run("t", "mitogen_linear", 2, FAILED_TASK)
        status, out = self.judge("t")
        self.assertEqual(status, 0, out)
        self.assertIn("- t, fails at TASK [copy : Copy file]: copy breaks", out)

    def test_fails_at_another_point(self) -> None:
        self.expect_failure("TASK [copy : Other]")
        self.write_run("t", "linear", 0, PASSING)
        self.write_run("t", "mitogen_linear", 2, FAILED_TASK)
        self.assert_fails_with(
            "fails at TASK [copy : Copy file], expected.toml records TASK [copy : Other]"
        )

    def test_expected_failure_passes(self) -> None:
        self.expect_failure("TASK [copy : Copy file]")
        self.write_run("t", "linear", 0, PASSING)
        self.write_run("t", "mitogen_linear", 0, PASSING)
        self.assert_fails_with("expected to fail at TASK [copy : Copy file] but passed")

    def test_shell_failure_point(self) -> None:
        self.expect_failure("+ grep 'debug3:'")
        self.write_run("t", "linear", 0, PASSING)
        self.write_run("t", "mitogen_linear", 1, FAILED_SHELL)
        self.assertEqual(self.judge("t")[0], 0)

    # ------------------------------------------------------------ expected.toml itself
    def assert_invalid(self, text: str, message: str) -> None:
        self.write_expected(text)
        with self.assertRaises(verdict.ExpectedError) as caught:
            verdict.load_expected(self.expected)
        self.assertIn(message, str(caught.exception))

    def test_invalid_entries(self) -> None:
        self.assert_invalid('[t]\nsummary = "s"\n', "needs a non-empty 'why'")
        self.assert_invalid('[t]\nsummary = "s"\nwhy = "w"\n', "nothing to expect")
        self.assert_invalid(
            '[t]\nsummary = "s"\nwhy = "w"\nfails_at = "x"\n', "with fails_at, why must start with"
        )
        self.assert_invalid(
            '[t]\nsummary = "s"\nwhy = "w"\npatch = "nope.patch"\n', "no patch file"
        )
        self.assert_invalid(
            '[t]\nsummary = "s"\nwhy = "w"\npatch = "fix.patch"\n[t.differences]\nx = "because"\n',
            'must start with "plumbing: "',
        )
        self.assert_invalid('[t]\nsummary = "s"\nwhy = "w"\nbogus = 1\n', "unknown keys bogus")
        self.assert_invalid(
            '[t]\nsummary = "s"\nwhy = "w"\n[t.differences]\nx = "bug: y"\n',
            "differences need the patch",
        )


if __name__ == "__main__":
    unittest.main()
