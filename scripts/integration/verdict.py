"""Judge a run of scripts/ansible-integration.sh against expected.toml.

The shell script owns the containers; this module owns the rules. It reads
expected.toml (the one list of expected differences between `linear` and
`mitogen_linear`, target by target, each classed "plumbing:" or "bug:") and the
per-run directories the script wrote
(<run>/<strategy>/<target>/{rc,seconds,ansible-test.log,ansible.log}), decides each
target's verdict, writes the results table and exits non-zero when CI must fail.

Commands (run with the Python 3.12 the script copies into the image, stdlib only):

  verdict.py check EXPECTED TARGET...
      Validate EXPECTED; print one line "TARGET<TAB>PATCH" per patch to apply to
      the runs of a selected TARGET.
  verdict.py report EXPECTED RUN_DIR REPORT --strategies="S..." [--header=LINE...] TARGET...
      Judge the run, write the markdown table to REPORT, print it, then a closing
      line "integration: N passed, N failed" (one count per run). Exit 0 when
      everything is as expected, 1 when a rule below is broken, 2 when EXPECTED is bad.

Rules, per target. Both strategies run the target with the entry's patches applied
(without an entry: as shipped).
- `linear` must pass: the target works in this environment; and none of the entry's
  differences may happen with it, which proves that every check a patch moved out still
  holds with stock Ansible (and that a check a patch added is right).
- `mitogen_linear`
  - must show in its ansible.log that our strategy ran in every ansible process that
    reported a task result ("ansible_mitogen from", logged once per process by
    StrategyMixin), and no stock connection plumbing ("<host> ESTABLISH ... CONNECTION",
    "<host> EXEC ...", "<host> PUT ...") but for the entry's `stock_plumbing_hosts`;
  - each of the entry's `differences` must still happen: a patch turns each such check
    into a task named "expected difference <id>: ..." that is allowed to fail
    (`ignore_errors`), or a shell check that prints "expected difference <id>:
    happened"; a difference that no longer happens, or did not run, is an error, so the
    list stays honest (a fixed bug fails the run until its entry goes);
  - with `fails_at`, the run must fail, and its first unignored failure must be at that
    point ("TASK [name]" or, for a shell step of runme.sh, "+ command"); without it,
    the run must pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Sequence

#: Keys an expected.toml entry may have.
ENTRY_KEYS = frozenset(
    {"summary", "why", "patch", "differences", "fails_at", "stock_plumbing_hosts"}
)
#: Lines of stock connection plugins at -vvv ("<host> EXEC ..."); Mitogen's own lines
#: ("<host> ESTABLISH MITOGEN CONNECTION", "<host> MITOGEN EXEC ...") are not these.
STOCK_PLUMBING = re.compile(
    r"^<([^>]+)> (ESTABLISH (?!MITOGEN )[A-Z]+ CONNECTION|EXEC |PUT |FETCH )"
)
#: ansible's log_path line: date time p=PID u=USER n=LOGGER LEVEL| message
LOG_LINE = re.compile(r"^\S+ \S+ p=(\d+) u=\S+ n=\S+ \w+\| ?(.*)$")
#: A task result as the default callback (and ad-hoc `ansible`) print it.
TASK_RESULT = re.compile(
    r"^(ok|changed|fatal|failed|skipping): \[|^\S+ \| (SUCCESS|CHANGED|FAILED|UNREACHABLE)"
)
BANNER = re.compile(r"^((?:TASK|RUNNING HANDLER) \[.*\]) \**$")
FATAL = re.compile(r"^fatal: \[[^\]]*\]: (FAILED|UNREACHABLE)!")
SHELL_TRACE = re.compile(r"^\++ ")
MITOGEN_EVIDENCE = "ansible_mitogen from"
#: How each expected difference or failure is classed.
REASON = re.compile(r"^(plumbing|bug): \S")


class ExpectedError(Exception):
    """expected.toml is malformed or refers to something that does not exist."""


@dataclasses.dataclass(frozen=True)
class Expected:
    """One target's entry in expected.toml."""

    target: str
    summary: str
    why: str
    patches: tuple[str, ...] = ()
    differences: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> reason
    fails_at: str | None = None
    stock_plumbing_hosts: tuple[str, ...] = ()


def load_expected(path: str) -> dict[str, Expected]:
    """Parse and validate expected.toml; patch paths are made absolute."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ExpectedError("%s: %s" % (path, e)) from e
    base = os.path.dirname(os.path.abspath(path))
    entries = {}
    for target, entry in data.items():
        where = "%s: [%s]" % (path, target)
        if not isinstance(entry, dict):
            raise ExpectedError("%s is not a table" % (where,))
        unknown = set(entry) - ENTRY_KEYS
        if unknown:
            raise ExpectedError("%s: unknown keys %s" % (where, ", ".join(sorted(unknown))))
        for key in ("summary", "why"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ExpectedError("%s needs a non-empty %r" % (where, key))
        patches = entry.get("patch", [])
        patches = [patches] if isinstance(patches, str) else patches
        if not isinstance(patches, list) or not all(isinstance(p, str) for p in patches):
            raise ExpectedError("%s: patch is a file name or a list of them" % (where,))
        differences = entry.get("differences", {})
        if not isinstance(differences, dict):
            raise ExpectedError(
                '%s: differences is a table: id = "plumbing: ..." or "bug: ..."' % (where,)
            )
        for ident, reason in differences.items():
            if not re.fullmatch(r"[a-z0-9_-]+", ident):
                raise ExpectedError("%s: difference id %r: use a-z 0-9 _ -" % (where, ident))
            if not isinstance(reason, str) or not REASON.match(reason):
                raise ExpectedError(
                    '%s: difference %s: its reason must start with "plumbing: "'
                    ' or "bug: "' % (where, ident)
                )
        fails_at = entry.get("fails_at")
        if fails_at is not None and not REASON.match(entry["why"].strip()):
            raise ExpectedError(
                '%s: with fails_at, why must start with "plumbing: " or "bug: "' % (where,)
            )
        hosts = entry.get("stock_plumbing_hosts", [])
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise ExpectedError("%s: stock_plumbing_hosts is a list of host names" % (where,))
        if differences and not patches:
            raise ExpectedError("%s: differences need the patch that marks them" % (where,))
        if not (patches or fails_at or hosts):
            raise ExpectedError(
                "%s: no patch, fails_at or stock_plumbing_hosts: nothing to expect" % (where,)
            )
        abs_patches = tuple(os.path.join(base, p) for p in patches)
        for patch in abs_patches:
            if not os.path.isfile(patch):
                raise ExpectedError("%s: no patch file %s" % (where, patch))
        entries[target] = Expected(
            target=target,
            summary=entry["summary"].strip(),
            why=entry["why"].strip(),
            patches=abs_patches,
            differences={k: v.strip() for k, v in differences.items()},
            fails_at=fails_at,
            stock_plumbing_hosts=tuple(hosts),
        )
    return entries


@dataclasses.dataclass
class LogFacts:
    """What ansible-test.log and ansible.log of one run say."""

    failure_point: str | None = None  # first unignored failure, or None
    #: id -> 'happened' / 'did not happen'
    differences: dict[str, str] = dataclasses.field(default_factory=dict)
    processes_with_results: int = 0
    processes_without_mitogen: int = 0
    stock_plumbing: dict[str, int] = dataclasses.field(default_factory=dict)  # host -> lines


def read_lines(path: str) -> list[str]:
    """The file's lines without line ends; [] when it does not exist."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def difference_id(banner: str) -> str | None:
    """The id in a banner "TASK [expected difference <id>: ...]" (roles prefix allowed)."""
    m = re.search(r"\bexpected difference ([a-z0-9_-]+):", banner)
    return m.group(1) if m else None


def is_ignored(lines: Sequence[str], i: int) -> bool:
    """Whether the callback printed "...ignoring" after the failure on line `i`: on the
    next line, or after the result when it is printed as a multi-line JSON object."""
    j = i + 1
    if lines[i].endswith("{"):
        while j < len(lines) and lines[j] != "}":
            j += 1
        j += 1
    return j < len(lines) and lines[j].strip() == "...ignoring"


def scan_test_log(lines: Sequence[str]) -> LogFacts:
    """Failure point and marked differences from ansible-test.log.

    A task fails when the callback prints "fatal: [host]: FAILED!/UNREACHABLE!" for it
    and does not follow that result with "...ignoring". A run that fails with no such task failed
    in a shell step of runme.sh: its failure point is the last `set -x` trace line.
    """
    facts = LogFacts()
    banner = None
    last_trace = None
    for i, line in enumerate(lines):
        m = BANNER.match(line)
        if m:
            banner = m.group(1)
            ident = difference_id(banner)
            if ident:
                facts.differences.setdefault(ident, "did not happen")
            continue
        m = re.match(r"^expected difference ([a-z0-9_-]+): (happened|did not happen)$", line)
        if m:
            facts.differences[m.group(1)] = m.group(2)
            continue
        if SHELL_TRACE.match(line):
            last_trace = "+ " + SHELL_TRACE.sub("", line)
            continue
        if FATAL.match(line):
            ignored = is_ignored(lines, i)
            ident = difference_id(banner or "")
            if ident and ignored:
                facts.differences[ident] = "happened"
            elif not ignored and facts.failure_point is None:
                facts.failure_point = banner or "fatal outside a task"
    if facts.failure_point is None:
        facts.failure_point = last_trace or "unknown"
    return facts


def scan_ansible_log(lines: Iterable[str], facts: LogFacts) -> None:
    """Per ansible process (p=PID): did it report task results, did our strategy run,
    and how many stock connection plumbing lines were logged."""
    results: set[str] = set()
    mitogen: set[str] = set()
    for line in lines:
        m = LOG_LINE.match(line)
        if not m:
            continue
        pid, msg = m.groups()
        if MITOGEN_EVIDENCE in msg:
            mitogen.add(pid)
        if TASK_RESULT.match(msg):
            results.add(pid)
        m = STOCK_PLUMBING.match(msg)
        if m:
            facts.stock_plumbing[m.group(1)] = facts.stock_plumbing.get(m.group(1), 0) + 1
    facts.processes_with_results = len(results)
    facts.processes_without_mitogen = len(results - mitogen)


def read_run(tdir: str) -> tuple[int | None, str, LogFacts]:
    """(exit status or None if the run did not finish, seconds, log facts) of one run."""
    rc_lines = read_lines(os.path.join(tdir, "rc"))
    rc = int(rc_lines[0]) if rc_lines and rc_lines[0].strip().lstrip("-").isdigit() else None
    seconds = (read_lines(os.path.join(tdir, "seconds")) or ["?"])[0]
    facts = scan_test_log(read_lines(os.path.join(tdir, "ansible-test.log")))
    scan_ansible_log(read_lines(os.path.join(tdir, "ansible.log")), facts)
    return rc, seconds, facts


def outcome(rc: int | None) -> str:
    """pass / FAIL / TIMEOUT / NOT RUN from the container's exit status."""
    if rc is None:
        return "NOT RUN"
    if rc == 0:
        return "pass"
    if rc in (124, 137):
        return "TIMEOUT"
    return "FAIL"


def judge_linear(rc: int | None, facts: LogFacts, expected: Expected | None) -> list[str]:
    """Problems with a linear run: it must pass, and none of the entry's differences may
    happen (the checks a patch moved out still hold with stock Ansible)."""
    if rc is None:
        return ["did not run"]
    problems = []
    if rc != 0:
        problems.append(
            "fails with linear (%s at %s): an environment problem, not a "
            "Mitogen one" % (outcome(rc), facts.failure_point)
        )
    for ident in expected.differences if expected else ():
        seen = facts.differences.get(ident)
        if seen is None:
            problems.append("expected difference %s did not run" % (ident,))
        elif seen == "happened":
            problems.append(
                "expected difference %s happens with linear too: it is no "
                "difference of Mitogen's" % (ident,)
            )
    return problems


def judge_mitogen(rc: int | None, facts: LogFacts, expected: Expected | None) -> list[str]:
    """Problems with a mitogen_linear run, by the rules in the module docstring."""
    problems = []
    if rc is None:
        return ["did not run"]
    if facts.processes_with_results == 0:
        problems.append(
            "no ansible process logged a task result to ansible.log: "
            "nothing shows mitogen_linear ran"
        )
    elif facts.processes_without_mitogen:
        problems.append(
            "%d of %d ansible processes reported task results without %r in "
            "ansible.log: mitogen_linear did not run there"
            % (facts.processes_without_mitogen, facts.processes_with_results, MITOGEN_EVIDENCE)
        )
    allowed = expected.stock_plumbing_hosts if expected else ()
    stock = {h: n for h, n in facts.stock_plumbing.items() if h not in allowed}
    if stock:
        problems.append(
            "stock connection plumbing (<host> ESTABLISH/EXEC/PUT lines) in "
            "ansible.log, so some tasks did not go through Mitogen: %s"
            % (", ".join("%s: %d lines" % hn for hn in sorted(stock.items())),)
        )
    for ident in expected.differences if expected else ():
        seen = facts.differences.get(ident)
        if seen is None:
            problems.append("expected difference %s did not run" % (ident,))
        elif seen != "happened":
            problems.append(
                "expected difference %s no longer happens: remove it from "
                "expected.toml and its patch" % (ident,)
            )
    unexpected = sorted(set(facts.differences) - set(expected.differences if expected else {}))
    if unexpected:
        problems.append(
            "the log marks differences not listed in expected.toml: %s" % (", ".join(unexpected),)
        )
    fails_at = expected.fails_at if expected else None
    if fails_at is None:
        if rc != 0:
            problems.append(
                "fails with mitogen_linear (%s at %s), not listed as expected"
                % (outcome(rc), facts.failure_point)
            )
    elif rc == 0:
        problems.append(
            "expected to fail at %s but passed: remove the entry from expected.toml" % (fails_at,)
        )
    elif facts.failure_point != fails_at:
        problems.append("fails at %s, expected.toml records %s" % (facts.failure_point, fails_at))
    return problems


def cell(rc: int | None, seconds: str, facts: LogFacts, problems: list[str]) -> str:
    """One table cell: outcome, time, and where it failed."""
    text = "%s %s s" % (outcome(rc), seconds)
    if rc not in (0, None):
        text += " (at %s)" % (facts.failure_point,)
    return text if not problems else text + " **unexpected**"


def report(
    expected_path: str,
    run_dir: str,
    report_path: str,
    strategies: Sequence[str],
    header: Sequence[str],
    targets: Sequence[str],
) -> int:
    """Judge every target, write and print the table; the exit status for CI."""
    expected = load_expected(expected_path)
    rows = []
    problems: dict[str, list[str]] = defaultdict(list)
    passed = failed = 0
    for target in targets:
        cells = []
        for strategy in strategies:
            rc, seconds, facts = read_run(os.path.join(run_dir, strategy, target))
            if strategy == "linear":
                found = judge_linear(rc, facts, expected.get(target))
            else:
                found = judge_mitogen(rc, facts, expected.get(target))
            problems[target] += ["%s: %s" % (strategy, p) for p in found]
            if found:
                failed += 1
            else:
                passed += 1
            cells.append(cell(rc, seconds, facts, found))
        summary = expected[target].summary if target in expected else ""
        rows.append("| %s | %s | %s |" % (target, " | ".join(cells), summary))
    out = (
        list(header)
        + [
            "",
            "| target | %s | expected difference (scripts/integration/expected.toml) |"
            % (" | ".join(strategies),),
            "| --- |%s --- |" % (" --- |" * len(strategies),),
        ]
        + rows
    )
    bugs = [
        "- %s, %s: %s" % (t, ident, reason[len("bug: ") :])
        for t in targets
        if t in expected
        for ident, reason in expected[t].differences.items()
        if reason.startswith("bug: ")
    ]
    bugs += [
        "- %s, fails at %s: %s" % (t, expected[t].fails_at, expected[t].why[len("bug: ") :])
        for t in targets
        if t in expected
        if expected[t].fails_at and expected[t].why.startswith("bug: ")
    ]
    if bugs:
        out += ["", "Known bugs of mitogen_linear (listed in expected.toml until fixed):"] + bugs
    bad = [(t, p) for t in targets for p in problems[t]]
    if bad:
        out += ["", "Not as expected:"] + ["- %s: %s" % (t, p) for t, p in bad]
    text = "\n".join(out) + "\n"
    with open(report_path, "w", encoding="utf-8") as f:
        f.write(text)
    sys.stdout.write(text)
    # A closing line CI's log reader counts: one per (target, strategy) run.
    print("\nintegration: %d passed, %d failed" % (passed, failed))
    return 1 if bad else 0


def check(expected_path: str, targets: Sequence[str]) -> int:
    """Validate expected.toml; print the patches of the selected targets."""
    expected = load_expected(expected_path)
    for target in targets:
        for patch in expected[target].patches if target in expected else ():
            print("%s\t%s" % (target, patch))
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="verdict.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check")
    p_check.add_argument("expected")
    p_check.add_argument("targets", nargs="*")
    p_report = sub.add_parser("report")
    p_report.add_argument("expected")
    p_report.add_argument("run_dir")
    p_report.add_argument("report")
    p_report.add_argument("--strategies", required=True)
    p_report.add_argument("--header", action="append", default=[])
    p_report.add_argument("targets", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return check(args.expected, args.targets)
        return report(
            args.expected,
            args.run_dir,
            args.report,
            args.strategies.split(),
            args.header,
            args.targets,
        )
    except ExpectedError as e:
        print("verdict.py: ERROR: %s" % (e,), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
