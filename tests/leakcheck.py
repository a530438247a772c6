"""Snapshot and compare what a test may leak: file descriptors, threads and
child processes of the test process."""

import os
import threading
import time


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def child_pids() -> set[int]:
    """PIDs (including zombies) whose parent is this process."""
    me = os.getpid()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as fp:
                stat = fp.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == me:
            found.add(int(entry))
    return found


def live_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


class Snapshot:
    def __init__(self) -> None:
        self.fds = open_fds()
        self.threads = live_threads()
        self.children = child_pids()

    def leaks(self) -> list[str]:
        problems = []
        fds = open_fds() - self.fds
        if fds:
            desc = []
            for fd in sorted(fds):
                try:
                    desc.append("%d -> %s" % (fd, os.readlink("/proc/self/fd/%d" % fd)))
                except OSError:
                    continue
            if desc:
                problems.append("file descriptors: " + ", ".join(desc))
        threads = live_threads() - self.threads
        if threads:
            problems.append("threads: " + ", ".join(sorted(t.name for t in threads)))
        children = child_pids() - self.children
        if children:
            problems.append("child processes: %s" % sorted(children))
        return problems

    def wait_clean(self, timeout: float = 5.0) -> list[str]:
        """Give asynchronous teardown a moment, then report what is left."""
        deadline = time.monotonic() + timeout
        while True:
            problems = self.leaks()
            if not problems or time.monotonic() > deadline:
                return problems
            time.sleep(0.02)
