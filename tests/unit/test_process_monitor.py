"""mitogen.master.ProcessMonitor with real child processes: callbacks get
each registered child's raw exit status; other children are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

import mitogen.core
import mitogen.master
import mitogen.process_monitor


@pytest.fixture
def monitor() -> Iterator[mitogen.master.ProcessMonitor]:
    before = signal.getsignal(signal.SIGCHLD)
    pm = mitogen.master.ProcessMonitor()
    yield pm
    pm.close()
    assert signal.getsignal(signal.SIGCHLD) == before


def spawn(script: str) -> int:
    return os.posix_spawn("/bin/sh", ["sh", "-c", script], os.environ)


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `cond` (the callbacks run from a signal handler on this thread,
    between the sleeps)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_master_exports_it() -> None:
    assert mitogen.master.ProcessMonitor is mitogen.process_monitor.ProcessMonitor


def test_callbacks_get_each_childs_status(monitor: mitogen.master.ProcessMonitor) -> None:
    statuses: dict[str, int] = {}
    first = spawn("sleep 0.2; exit 3")
    second = spawn("sleep 0.1; exit 0")
    monitor.add(first, lambda status: statuses.__setitem__("first", status))
    monitor.add(second, lambda status: statuses.__setitem__("second", status))
    wait_for(lambda: len(statuses) == 2)
    assert os.waitstatus_to_exitcode(statuses["first"]) == 3
    assert os.waitstatus_to_exitcode(statuses["second"]) == 0


def test_killed_child_reports_the_signal(monitor: mitogen.master.ProcessMonitor) -> None:
    statuses: list[int] = []
    pid = spawn("sleep 30")
    monitor.add(pid, statuses.append)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: bool(statuses))
    assert os.WIFSIGNALED(statuses[0]) and os.WTERMSIG(statuses[0]) == signal.SIGTERM


def test_child_already_exited_calls_back_at_once(monitor: mitogen.master.ProcessMonitor) -> None:
    pid = spawn("exit 7")
    deadline = time.monotonic() + 10
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    statuses: list[int] = []
    monitor.add(pid, statuses.append)
    assert [os.waitstatus_to_exitcode(s) for s in statuses] == [7]


def test_not_a_child_is_a_clear_error(monitor: mitogen.master.ProcessMonitor) -> None:
    with pytest.raises(mitogen.core.Error) as info:
        monitor.add(os.getppid(), lambda status: None)
    assert "pid %d" % os.getppid() in str(info.value)
    assert "not an unreaped child" in str(info.value)


def test_other_children_are_not_reaped(monitor: mitogen.master.ProcessMonitor) -> None:
    """subprocess still collects its own child while the monitor runs."""
    statuses: list[int] = []
    pid = spawn("sleep 0.1; exit 1")
    monitor.add(pid, statuses.append)
    proc = subprocess.run(["sh", "-c", "exit 5"], check=False, timeout=30)
    assert proc.returncode == 5
    wait_for(lambda: bool(statuses))
    assert os.waitstatus_to_exitcode(statuses[0]) == 1


def test_previous_handler_still_called_and_restored() -> None:
    calls: list[int] = []

    def previous(signum: int, frame: object) -> None:
        calls.append(signum)

    original = signal.signal(signal.SIGCHLD, previous)
    try:
        pm = mitogen.master.ProcessMonitor()
        statuses: list[int] = []
        pm.add(spawn("sleep 0.1"), statuses.append)
        wait_for(lambda: bool(statuses) and bool(calls))
        assert calls[0] == signal.SIGCHLD
        pm.close()
        assert signal.getsignal(signal.SIGCHLD) is previous
    finally:
        signal.signal(signal.SIGCHLD, original)
