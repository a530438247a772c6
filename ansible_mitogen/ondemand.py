"""The mux of a run that uses no Mitogen strategy: found, or started on demand, by workers.

Without the strategy nothing runs in ansible-playbook itself to start the mux, so the
first process of the run that needs it (a forked worker, or ansible-playbook for `meta:
reset_connection`) starts it, and every later one finds it. A run is keyed by its
*owner*: the ansible-playbook (or `ansible`) process, named by pid and kernel start time
so that a reused pid is another owner. Per owner, in a private directory (mode 0700,
owned by us, checked before use):

- `mux-KEY.lock`: flock()ed while a process looks for the mux or starts it, so forked
  workers racing for the first task start exactly one;
- `mux-KEY.sock`: the mux's socket (mitogen.unix also checks each peer's uid).

The mux is started in a session of its own (a worker's group may be killed, and Ctrl-C
must reach ansible-playbook first) with OWNER_VARIABLE and process.SOCKET_VARIABLE set; it
listens on the socket and watches its owner (wait_for_exit(): a pidfd, or polling), so it
exits when ansible-playbook exits however that happens (end of run, Ctrl-C, SIGKILL),
removing both files. Two runs never share a mux: their owners differ. A Mitogen
strategy's mux (strategy.py) listens on the same `mux-KEY.sock` of its ansible-playbook,
so a run has one mux whichever started it.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import select
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import ansible_mitogen.process
import mitogen.core

#: Environment of an on-demand mux: its owner ("PID:START"); its socket path is in
#: process.SOCKET_VARIABLE.
OWNER_VARIABLE = "MITOGEN_ANSIBLE_MUX_OWNER"
#: Seconds between checks of the owner where pidfds are not available.
POLL_SECONDS = 0.5
#: The size of sockaddr_un.sun_path on Linux.
SUN_PATH_MAX = 108

#: The mux processes this process started.
_STARTED: list[subprocess.Popen[bytes]] = []


class OnDemandError(ansible_mitogen.process.MuxError):
    """The on-demand mux could not be found or started."""


@dataclass(frozen=True)
class Owner:
    """The ansible-playbook process a mux serves."""

    pid: int
    started: int

    @property
    def key(self) -> str:
        return "%d-%d" % (self.pid, self.started)

    def encode(self) -> str:
        return "%d:%d" % (self.pid, self.started)

    @classmethod
    def decode(cls, text: str) -> Owner:
        pid, _, started = text.partition(":")
        return cls(int(pid), int(started))

    def alive(self) -> bool:
        return start_time(self.pid) == self.started


def start_time(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (None if there is none)."""
    try:
        with open("/proc/%d/stat" % (pid,), "rb") as fp:
            fields = fp.read().rpartition(b")")[2].split()
    except OSError:
        return None
    # after the command name: state is field 3 of stat(5), starttime field 22
    return int(fields[19])


def current_owner() -> Owner:
    """The owner of this process's run: the parent of a forked worker (multiprocessing
    records it at fork, so it stays right if the parent dies), else this process."""
    parent = multiprocessing.parent_process()
    pid = parent.pid if parent is not None and parent.pid else os.getpid()
    started = start_time(pid)
    if started is None:
        raise OnDemandError("ansible-playbook (pid %d) has exited: not starting the mux" % pid)
    return Owner(pid, started)


def in_worker() -> bool:
    """True in a process forked by ansible-playbook to run a task."""
    return multiprocessing.parent_process() is not None


def private_dir() -> str:
    """This user's directory for mux sockets and locks: made 0700 if missing, refused if it
    is not a directory of ours that only we can use."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = os.path.join(base, "ansible-mitogen-%d" % (os.geteuid(),))
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise OnDemandError("cannot make the Mitogen mux directory %s: %s" % (path, e))
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise OnDemandError(
            "refusing the Mitogen mux directory %s: it must be a directory owned by uid %d "
            "with mode 0700" % (path, os.geteuid())
        )
    return path


def paths(owner: Owner) -> tuple[str, str]:
    """(lock path, socket path) of `owner`'s mux."""
    directory = private_dir()
    sock = os.path.join(directory, "mux-%s.sock" % owner.key)
    if len(os.fsencode(sock)) >= SUN_PATH_MAX:
        raise OnDemandError(
            "the Mitogen mux socket path %s is too long for a UNIX socket: set "
            "XDG_RUNTIME_DIR or TMPDIR to a shorter directory" % (sock,)
        )
    return os.path.join(directory, "mux-%s.lock" % owner.key), sock


def remove_lock(owner: Owner) -> None:
    """Remove the lock file of `owner`'s mux (by the mux, once the owner has exited)."""
    with contextlib.suppress(OSError):
        os.unlink(paths(owner)[0])


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def find_or_start(settings: Mapping[str, str]) -> tuple[str, int | None]:
    """The socket path of this run's mux, and its pid if this process started it (the
    first process of the run to need it). `settings` are the mux's environment variables
    (see mux.py)."""
    owner = current_owner()
    lock, sock = paths(owner)
    with _locked(lock):
        if os.path.exists(sock):
            return sock, None
        if not owner.alive():
            raise OnDemandError("ansible-playbook (pid %d) has exited" % owner.pid)
        return sock, _spawn(owner, sock, settings)


def _spawn(owner: Owner, sock: str, settings: Mapping[str, str]) -> int:
    argv, env = ansible_mitogen.process.mux_command(settings)
    env[OWNER_VARIABLE] = owner.encode()
    env[ansible_mitogen.process.SOCKET_VARIABLE] = sock
    env.pop(ansible_mitogen.process.ENV_PATH, None)
    # What the mux says on stderr (unlinked at once): shown if it fails to start.
    errors = tempfile.TemporaryFile(dir=os.path.dirname(sock))
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=env,
        close_fds=True,
        start_new_session=True,
        stderr=errors,
    )
    assert proc.stdout is not None
    try:
        line = read_line(proc.stdout.fileno(), ansible_mitogen.process.START_TIMEOUT)
    finally:
        proc.stdout.close()
    if line != sock:
        proc.kill()
        proc.wait()
        errors.seek(0)
        said = errors.read()[-2000:].decode(errors="replace").strip()
        errors.close()
        raise OnDemandError(
            "the Mitogen mux process failed to start (exit status %s)%s"
            % (proc.poll(), ": " + said.splitlines()[-1] if said else "")
        )
    errors.close()
    # The mux outlives this worker (whose exit hands it to init): kept referenced so
    # that no Popen finaliser waits for it or warns about it.
    _STARTED.append(proc)
    return proc.pid


def read_line(fd: int, timeout: float) -> str:
    """Read one line from `fd` within `timeout` seconds ('' on EOF)."""
    data = b""
    deadline = mitogen.core.now() + timeout
    while not data.endswith(b"\n"):
        remaining = deadline - mitogen.core.now()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return ""
        chunk = os.read(fd, 4096)
        if not chunk:
            return ""
        data += chunk
    return data.decode().strip()


def wait_for_exit(owner: Owner) -> None:
    """Return once `owner` has exited (at once if it already has)."""
    try:
        fd = os.pidfd_open(owner.pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        try:
            if owner.alive():
                select.select([fd], [], [])
        finally:
            os.close(fd)
        return
    while owner.alive():
        time.sleep(POLL_SECONDS)
