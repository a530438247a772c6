"""Starting the mux from the controller, and reaching it from workers.

`MuxProcess.start()` runs once per ansible-playbook process (strategies are
made per play and per serial batch; the mux outlives them). It spawns
`python -m ansible_mitogen.mux` rather than forking, because the controller
already runs threads, and does not wait for it: the caller names the socket
path (SOCKET_VARIABLE tells the mux), which travels to workers in the
environment, so the play goes on while the mux starts (0.1-0.3 s). The mux
writes a line on its stdout once it listens; `get_router()` in any process
forked from ansible-playbook waits for the pipe to become readable (that
line, or EOF if the mux died) before it connects, then gives the process
(worker, or the controller itself for meta: reset_connection) its own
connection to the mux, made on first use. With a `log_sink`, the mux's
stderr comes back on a pipe whose lines a thread hands to the sink (logs.py).
"""

from __future__ import annotations

import atexit
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping

import ansible_mitogen.logs
import mitogen.core
import mitogen.parent
import mitogen.unix

#: Environment variable holding the mux socket path.
ENV_PATH = "MITOGEN_ANSIBLE_MUX"
#: The mux's own environment variable: the socket path it listens on.
SOCKET_VARIABLE = "MITOGEN_ANSIBLE_MUX_SOCKET"

#: Seconds allowed for the mux to start, and to exit at the end.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class MuxError(mitogen.core.Error):
    """The mux could not be started or reached."""


class MuxProcess:
    """The process-wide mux child of ansible-playbook."""

    _proc: subprocess.Popen[bytes] | None = None
    _lock = threading.Lock()
    _fork_hook = False
    #: The read end of the mux's stderr and the thread relaying it, with a log_sink.
    _log_fd: int | None = None
    _log_thread: threading.Thread | None = None
    #: The read end of the mux's stdout, kept by every process forked from this one:
    #: readable once the mux listens (its line) or has exited (EOF).
    _ready_fd: int | None = None

    @classmethod
    def start(
        cls,
        socket_path: str,
        settings: Mapping[str, str] | None = None,
        log_sink: Callable[[str], None] | None = None,
    ) -> str:
        """Start the mux listening on `socket_path` unless running, without waiting for
        it; return its socket path. `settings` are environment variables for the mux
        alone (see mux.py), and `log_sink` is given each line the mux writes to its
        stderr (else its stderr is ours); all three are used only when it starts."""
        with cls._lock:
            if cls._proc is None or cls._proc.poll() is not None:
                cls._spawn(socket_path, settings or {}, log_sink)
            return os.environ[ENV_PATH]

    @classmethod
    def wait_ready(cls, timeout: float = START_TIMEOUT) -> None:
        """Return once the mux this process (or its parent) started listens or has exited
        (the connect that follows then fails); at once when none was started here."""
        fd = cls._ready_fd
        if fd is not None and not select.select([fd], [], [], timeout)[0]:
            raise MuxError("the Mitogen mux process did not listen within %d seconds" % timeout)

    @classmethod
    def pid(cls) -> int | None:
        """The running mux's process ID (None if this process started none)."""
        proc = cls._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @classmethod
    def _spawn(
        cls,
        socket_path: str,
        settings: Mapping[str, str],
        log_sink: Callable[[str], None] | None,
    ) -> None:
        argv, env = mux_command(settings)
        env[SOCKET_VARIABLE] = socket_path
        cls._stop_relay()  # a previous mux's, which has exited
        cls._close_ready()
        stderr = None
        if log_sink is not None:
            # a bare pipe, not a file object: workers fork while the relay thread reads it
            cls._log_fd, stderr = os.pipe()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                close_fds=True,
            )
        finally:
            if stderr is not None:
                os.close(stderr)
        if cls._log_fd is not None and log_sink is not None:
            cls._log_thread = ansible_mitogen.logs.relay(cls._log_fd, log_sink)
        assert proc.stdout is not None
        # a bare descriptor: the file object would close it when a forked worker drops
        # its copy of `proc`
        cls._ready_fd = os.dup(proc.stdout.fileno())
        proc.stdout.close()
        cls._proc = proc
        os.environ[ENV_PATH] = socket_path
        if not cls._fork_hook:
            os.register_at_fork(after_in_child=cls._forget_in_child)
            cls._fork_hook = True
        atexit.register(cls.stop)

    @classmethod
    def _forget_in_child(cls) -> None:
        """In a process forked from ansible-playbook (a worker): close the copy of the
        mux's stdin, so the mux sees EOF as soon as ansible-playbook itself dies (even
        by SIGKILL) rather than when the last worker ends its task."""
        proc, cls._proc = cls._proc, None
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
        log_fd, cls._log_fd, cls._log_thread = cls._log_fd, None, None
        if log_fd is not None:
            os.close(log_fd)

    @classmethod
    def _close_ready(cls) -> None:
        fd, cls._ready_fd = cls._ready_fd, None
        if fd is not None:
            os.close(fd)

    @classmethod
    def _stop_relay(cls) -> None:
        """After the mux exited: let the relay thread pass on its last lines, then
        close the pipe (left open if the thread is stuck in its sink)."""
        thread, cls._log_thread = cls._log_thread, None
        if thread is not None:
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                return
        log_fd, cls._log_fd = cls._log_fd, None
        if log_fd is not None:
            os.close(log_fd)

    @classmethod
    def stop(cls) -> None:
        """Close the mux's stdin so it shuts every context down and exits."""
        with cls._lock:
            proc, cls._proc = cls._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        cls._close_ready()
        cls._stop_relay()
        os.environ.pop(ENV_PATH, None)


def mux_command(settings: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """argv and environment that run the mux with `settings` (mux.py's variables), this
    package first on its path."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, **settings)
    env["PYTHONPATH"] = os.pathsep.join(
        [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    return [sys.executable, "-m", "ansible_mitogen.mux"], env


_connection: dict[str, object] = {}


def get_router() -> tuple[mitogen.parent.Router, mitogen.core.Context]:
    """This process's Router connected to the mux, and the mux's Context."""
    if _connection.get("pid") != os.getpid():
        path = os.environ.get(ENV_PATH)
        if not path:
            raise MuxError(
                "the Mitogen mux is not running: use a mitogen_* strategy "
                "(or the ansible_mitogen strategy plugins) to start it"
            )
        MuxProcess.wait_ready()
        try:
            router, mux = mitogen.unix.connect(path)
        except mitogen.unix.ConnectError as e:
            raise MuxError("the Mitogen mux has exited or was killed (%s)" % (e,))
        _connection.update(pid=os.getpid(), router=router, mux=mux, lost=False)
        mitogen.core.listen(mux, "disconnect", lambda: _connection.update(lost=True))
    return _connection["router"], _connection["mux"]  # type: ignore[return-value]


def mux_alive() -> bool:
    """Is the mux still there? False once this process's link to it broke (the kernel may
    still accept connections on the socket of a SIGKILLed mux for a moment), or when its
    socket no longer accepts connections (SIGKILL leaves the socket file behind). Used to
    say what was lost when a call fails."""
    if _connection.get("pid") == os.getpid() and _connection.get("lost"):
        return False
    path = os.environ.get(ENV_PATH)
    if not path:
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(path)
    except OSError:
        return False
    finally:
        sock.close()
    return True


def disconnect() -> None:
    """Drop this process's connection to the mux (if any)."""
    if _connection.get("pid") == os.getpid():
        router = _connection["router"]
        _connection.clear()
        router.broker.shutdown()  # type: ignore[attr-defined]
        router.broker.join(10)  # type: ignore[attr-defined]
