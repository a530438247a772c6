"""Shared parts of the faults suite: the summary table, stray-process accounting and a
controller-side gate a playbook waits at while the test injects a fault.

`ROWS` collects one `Row` per (fault, strategy) a test observed; tests/faults/conftest.py
prints them at the end of the session. `Strays` snapshots the process table before a run
and lists what the run left behind that belongs to the testbed: processes of the test
accounts, target interpreters (the testbed Python), ansible-playbook and its workers, the
mux, and ssh clients to the testbed's sshd. `Gate` is a directory a playbook task writes
`ready-NAME` in and then waits for `go-NAME`; the test waits for the first, injects the
fault, writes the second.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.ansible.harness import Harness


@dataclass
class Row:
    """One line of the summary table."""

    fault: str
    strategy: str
    expected: str
    observed: str
    seconds: float
    #: None where not counted (stock's run, made alongside Mitogen's on the same accounts).
    strays: int | None

    @property
    def ok(self) -> bool:
        """Observed one of the expected answers ("|" separates them), nothing left."""
        return self.observed in self.expected.split("|") and not self.strays


#: Every row recorded this session, in order.
ROWS: list[Row] = []


def record(
    fault: str, strategy: str, expected: str, observed: str, seconds: float, strays: int | None
) -> Row:
    row = Row(fault, strategy, expected, observed, seconds, strays)
    ROWS.append(row)
    return row


def table(rows: Iterable[Row]) -> list[str]:
    """The rows as aligned text lines, with a header."""
    header = ("fault", "strategy", "expected", "observed", "seconds", "strays", "")
    lines = [header] + [
        (
            r.fault,
            r.strategy,
            r.expected,
            r.observed,
            "%.1f" % r.seconds,
            "-" if r.strays is None else str(r.strays),
            "ok" if r.ok else "DIFFERS",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (uid, command line) of every process (kernel threads have no command line)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            uid = os.stat("/proc/" + entry).st_uid
            with open("/proc/%s/cmdline" % entry, "rb") as fp:
                cmdline = fp.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if cmdline:
            found[int(entry)] = (uid, cmdline)
    return found


def state(pid: int) -> str:
    """The one-letter state of `pid` (R, S, T, Z...), or '' if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as fp:
            return fp.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def ppid(pid: int) -> int:
    try:
        with open("/proc/%d/stat" % pid) as fp:
            return int(fp.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


class Strays:
    """What a run leaves behind that belongs to this session's testbed and harness (other
    sessions may run Ansible on the same machine at the same time): processes of the test
    accounts; processes whose environment has this harness's MITOGEN_TEST_RESULTS
    (ansible-playbook, its workers, the mux, their ssh clients) or SUDO_USER set to a test
    account (become); and descendants of this testbed's sshds."""

    def __init__(self, harness: Harness, hosts: Iterable[str] = ("plain", "sudo_nopw")) -> None:
        accounts = [harness.account(h) for h in hosts]
        self.uids = {a.uid for a in accounts}
        self.markers = [
            b"MITOGEN_TEST_RESULTS=" + str(harness.workspace).encode(),
            *(b"SUDO_USER=%s\0" % a.name.encode() for a in accounts),
        ]
        self.testbed = harness.testbed
        self.baseline = processes()

    def _ours(self, pid: int, uid: int, parents: dict[int, int]) -> bool:
        if uid in self.uids:
            return True
        try:
            with open("/proc/%d/environ" % pid, "rb") as fp:
                environ = fp.read()
        except OSError:
            environ = b""
        if any(marker in environ for marker in self.markers):
            return True
        roots = {d.pid for d in (self.testbed.sshd, *self.testbed.extra_sshds)} - {None}
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid in roots:
                return True
        return False

    def now(self) -> dict[int, str]:
        found = processes()
        parents = {pid: ppid(pid) for pid in found}
        return {
            pid: cmd
            for pid, (uid, cmd) in found.items()
            if pid not in self.baseline and state(pid) != "Z" and self._ours(pid, uid, parents)
        }

    def wait(self, timeout: float = 10.0) -> dict[int, str]:
        """What is still there after up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.now()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def reap(self, left: dict[int, str]) -> None:
        """SIGKILL (after SIGCONT) the strays listed in `left`: processes this test's run
        started, found by `now()`, never anything that was there before it."""
        for pid in left:
            for sig in (signal.SIGKILL, signal.SIGCONT):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass


class Gate:
    """A world-writable controller directory: `task(name)` is a shell command a
    `delegate_to: localhost` task runs to say it is ready and wait for `release(name)`."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="faults-gate-"))
        os.chmod(self.path, 0o1777)

    def task(self, name: str, limit: float = 120) -> str:
        ready, go = self.path / ("ready-" + name), self.path / ("go-" + name)
        return (
            f"touch {ready}; n=0; while [ ! -e {go} ] && [ $n -lt {int(limit * 10)} ]; "
            "do sleep 0.1; n=$((n+1)); done"
        )

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.path / ("ready-" + name)).exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"the playbook never reached gate {name!r}")
            time.sleep(0.05)

    def release(self, name: str) -> None:
        (self.path / ("go-" + name)).touch()

    def file(self, name: str) -> Path:
        return self.path / name

    def wait_file(self, name: str, timeout: float = 60.0) -> str:
        """The content of gate file `name` once it is written (ends with a newline)."""
        path = self.path / name
        deadline = time.monotonic() + timeout
        while True:
            if path.exists():
                text = path.read_text()
                if text.endswith("\n"):
                    return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} was never written")
            time.sleep(0.05)

    def remove(self) -> None:
        for entry in self.path.iterdir():
            entry.unlink()
        self.path.rmdir()
