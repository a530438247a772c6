"""ProcessMonitor: call back when particular child processes exit, from a
SIGCHLD handler. mitogen.master re-exports it.

Only the processes registered with add() are reaped, so other code that
waits for its own children (subprocess, the Reaper) is unaffected.
"""

import os
import signal

import mitogen.core


class ProcessMonitor:
    """Install a SIGCHLD handler that calls `callback(status)` once a
    registered child has exited, `status` being its raw wait status (see
    os.waitstatus_to_exitcode()). Create it on the main thread (signal
    handlers can only be installed there); callbacks run on the main
    thread inside the signal handler (or in add() if the child had already
    exited), so keep them short and never take a
    lock the main thread may hold (Latch.put() included: record the status
    and act on it later). Any SIGCHLD handler installed before is still
    called; close() puts it back.
    """

    def __init__(self):
        self._callbacks = {}
        self._previous = signal.signal(signal.SIGCHLD, self._on_sigchld)

    def __repr__(self):
        return "ProcessMonitor(%s)" % (sorted(self._callbacks),)

    def add(self, pid, callback):
        """Call `callback(status)` when child `pid` exits (at once if it
        already has).

        :raises mitogen.core.Error: `pid` is not a child of this process,
            or was already reaped by someone else.
        """
        self._callbacks[pid] = callback
        try:
            self._check(pid)
        except ChildProcessError:
            self._callbacks.pop(pid, None)
            raise mitogen.core.Error("cannot monitor pid %d: it is not an unreaped child", pid)

    def _check(self, pid):
        """Reap `pid` if it has exited and run its callback. The signal
        handler and add() may race here: only the caller whose waitpid()
        returns the status pops and calls the callback."""
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped:
            callback = self._callbacks.pop(pid, None)
            if callback is not None:
                callback(status)

    def _on_sigchld(self, signum, frame):
        for pid in list(self._callbacks):
            try:
                self._check(pid)
            except ChildProcessError:
                # Reaped by the add() this signal interrupted, or by
                # someone else; add() reports the latter.
                pass
            except Exception:
                mitogen.core.LOG.exception("%r: callback for pid %d failed", self, pid)
        if callable(self._previous):
            self._previous(signum, frame)

    def close(self):
        """Stop monitoring and restore the SIGCHLD handler found at
        creation; pending callbacks are dropped."""
        self._callbacks.clear()
        previous = self._previous
        signal.signal(signal.SIGCHLD, signal.SIG_DFL if previous is None else previous)
