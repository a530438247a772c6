"""The Testbed: keys, loopback sshd, test accounts and namespace hosts as one unit.

Files live in /run/mitogen-testbed-<tag>/ (a root-owned path: sshd's StrictModes rejects
files below world-writable /tmp). `<tag>` is '<pid>x<n>', unique per instance, and every
name the testbed creates carries it, so leftovers of a crashed run (dead PID) are
recognised and removed by the next start.
"""

import atexit
import fcntl
import itertools
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from . import accounts, etcfiles, netns, sshd
from .accounts import DEFAULT_PREFIX, DOAS_CONF, Accounts
from .keys import Keys
from .netns import NetnsHosts
from .proc import TestbedError, pid_alive
from .pyenv import PythonInstall, discover
from .sshd import Sshd

RUN_DIR = Path("/run")
DIR_PREFIX = "mitogen-testbed-"
_DIR = re.compile(rf"^{DIR_PREFIX}(\d+)x\d+$")
_counter = itertools.count()


class Testbed:
    """Everything the tests need to log in somewhere as someone.

    - `pythons`: versions ('3.9', ...) that get a per-Python account; None means every
      pyenv version found.
    - `account_prefix`: must start with 'mitogen__'; concurrent instances need
      distinct ones.
    - `netns_hosts`: how many namespace hosts `start()` creates (more can be added later
      with `start_netns()`).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        pythons: Sequence[str] | None = None,
        account_prefix: str = DEFAULT_PREFIX,
        netns_hosts: int = 0,
    ) -> None:
        self.tag = f"{os.getpid()}x{next(_counter)}"
        self.directory = RUN_DIR / f"{DIR_PREFIX}{self.tag}"
        self.keys = Keys(self.directory / "private", self.directory / "public")
        self.pythons = _select_pythons(pythons)
        self.sshd = Sshd(self.keys, "loopback", aliases=["localhost"])
        self.accounts = Accounts(
            tag=self.tag,
            prefix=account_prefix,
            pythons=self.pythons,
            iolog_dir=self.directory / "sudo-io",
        )
        self.netns: NetnsHosts | None = None
        self.extra_sshds: list[Sshd] = []
        self._netns_count = netns_hosts
        self._started = False
        self.startup_seconds: float | None = None

    def __repr__(self) -> str:
        return f"<Testbed {self.tag} started={self._started} sshd={self.sshd!r}>"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Set everything up; on any failure, tear down what was made and re-raise."""
        if self._started:
            return
        if os.geteuid() != 0:
            raise TestbedError("the testbed needs root (it creates users, sshd and namespaces)")
        _acquire_machine_lock()
        began = time.monotonic()
        self._started = True
        atexit.register(self.stop)
        try:
            reap_stale()
            self.directory.mkdir(mode=0o711, parents=True)
            os.chmod(self.directory, 0o711)
            self.keys.generate()
            self.accounts.authorized_key = self.keys.client_public
            self.accounts.create()
            self.sshd.start()
            if self._netns_count:
                self.start_netns(self._netns_count)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def start_netns(self, count: int = 3) -> NetnsHosts:
        """Create `count` namespace hosts (once; later calls return the same hosts)."""
        if not self._started:
            raise TestbedError("start() the testbed before adding namespace hosts")
        if self.netns is None:
            hosts = NetnsHosts(self.keys, tag=self.tag, count=count)
            hosts.start()
            self.netns = hosts
        return self.netns

    def start_sshd(self, address: str) -> Sshd:
        """Start an extra sshd on another loopback address (e.g. '127.0.0.2', a second
        "host" sharing accounts and keys); stopped by `stop()`."""
        if not self._started:
            raise TestbedError("start() the testbed before adding an sshd")
        daemon = Sshd(self.keys, "lo-" + re.sub(r"[^0-9a-f]", "-", address), address=address)
        daemon.start()
        self.extra_sshds.append(daemon)
        return daemon

    def stop_netns(self) -> None:
        """Remove the namespace hosts (if any)."""
        hosts, self.netns = self.netns, None
        if hosts is not None:
            hosts.stop()

    def stop(self) -> None:
        """Tear down everything: runs every step, then raises one error for all failures."""
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.stop)
        errors: list[str] = []
        steps: list[tuple[str, Callable[[], object]]] = [
            ("namespace hosts", self.stop_netns),
            ("loopback sshd", self.sshd.stop),
            *((f"sshd on {d.address}", d.stop) for d in self.extra_sshds),
            ("accounts", self.accounts.remove),
            ("working directory", self._remove_directory),
        ]
        for what, step in steps:
            try:
                step()
            except (OSError, TestbedError) as exc:
                errors.append(f"{what}: {exc}")
        self.extra_sshds.clear()
        _release_machine_lock()
        if errors:
            raise TestbedError(f"testbed {self.tag} teardown failed:\n" + "\n".join(errors))

    def _remove_directory(self) -> None:
        if self.directory.exists():
            shutil.rmtree(self.directory)

    @property
    def started(self) -> bool:
        return self._started

    def pids(self) -> list[int]:
        """PIDs of every daemon this instance is running now."""
        daemons = [self.sshd, *self.extra_sshds, *(h.sshd for h in (self.netns or []))]
        return [d.pid for d in daemons if d.pid is not None]


#: Serialises testbeds across processes: they share account names, so a second
#: test session waits for the first instead of deleting its accounts.
LOCK_PATH = Path("/run/mitogen-testbed.lock")
LOCK_WAIT_SECONDS = 1800.0
_lock = {"fd": -1, "holders": 0}


def _acquire_machine_lock() -> None:
    """Take the machine-wide testbed lock (re-entrant within this process)."""
    if _lock["holders"]:
        _lock["holders"] += 1
        return
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise TestbedError(
                    f"another test session held {LOCK_PATH} for {LOCK_WAIT_SECONDS:.0f} s"
                )
            if not announced:
                print(
                    f"testbed: waiting for another test session to release {LOCK_PATH}",
                    file=sys.stderr,
                    flush=True,
                )
                announced = True
            time.sleep(0.5)
    _lock.update(fd=fd, holders=1)


def _release_machine_lock() -> None:
    _lock["holders"] -= 1
    if _lock["holders"] == 0:
        os.close(_lock["fd"])
        _lock["fd"] = -1


def _select_pythons(wanted: Sequence[str] | None) -> list[PythonInstall]:
    found = discover()
    if wanted is None:
        return found
    by_short = {py.short: py for py in found}
    missing = [v for v in wanted if v not in by_short]
    if missing:
        raise TestbedError(
            f"Python {', '.join(missing)} not found under pyenv "
            f"(found: {', '.join(by_short) or 'none'})"
        )
    return [by_short[v] for v in wanted]


def reap_stale() -> None:
    """Remove what crashed earlier runs (whose PID is gone) left behind.

    Daemons are stopped only through their own pid files whose command line names that
    run's config; namespaces, links and file blocks only by their tagged names.
    Stale accounts are re-created by Accounts.create().
    """
    for entry in RUN_DIR.glob(f"{DIR_PREFIX}*"):
        match = _DIR.match(entry.name)
        if match and not pid_alive(int(match[1])):
            sshd.reap_stale(entry / "private")
            shutil.rmtree(entry)
    netns.reap_stale()
    etcfiles.remove_stale_blocks(DOAS_CONF)
    accounts.reap_stale_sudoers()
