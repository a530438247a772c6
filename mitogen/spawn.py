"""Process spawning: child processes, their descriptors and ptys, and
reaping them.

Owns: socketpairs and ptys for a child's stdio (create_socketpair, openpty,
terminal_echoes), starting children (create_child, tty_create_child,
hybrid_tty_create_child), the Process objects that describe them, and
Reaper, which collects a child's exit status once its stream is gone.
Nothing here knows about bootstrapping or messages; mitogen.parent
re-exports every public name.
"""

import fcntl
import os
import signal
import socket
import subprocess
import termios
import threading
import tty

import mitogen.core
from mitogen.core import LOG, listen

#: Socket buffer size for links to local children: large buffers mean fewer
#: wakeups per megabyte moved.
SOCKET_BUFFER_SIZE = 4 * 1048576


def create_socketpair(size=None):
    """Return a connected pair of UNIX stream sockets, buffers enlarged to
    `size` bytes."""
    parent, child = socket.socketpair()
    for sock in parent, child:
        if size:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return parent, child


class Process:
    """A child process and the descriptors the parent talks to it with."""

    def __init__(self, pid, stdin, stdout, stderr=None):
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.returncode = None

    def __repr__(self):
        return "%s(pid=%d)" % (type(self).__name__, self.pid)

    def poll(self):
        """Return the wait status once the process has exited, else None."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.returncode = status
        return self.returncode

    def signal(self, signum):
        if self.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass


class PopenProcess(Process):
    """A Process created by subprocess.Popen."""

    def __init__(self, proc, stdin, stdout, stderr=None):
        super().__init__(proc.pid, stdin, stdout, stderr)
        self.proc = proc

    def poll(self):
        self.returncode = self.proc.poll()
        return self.returncode


def create_child(args, merge_stdio=False, stderr_pipe=True, env=None):
    """Start `args` with stdin and stdout on one end of a socketpair, in a
    new session so terminal signals reach only us.

    :returns: PopenProcess whose stdin/stdout are the parent's socket fd and
        whose stderr is a pipe to the child's stderr (or None).
    """
    parent_sock, child_sock = create_socketpair(SOCKET_BUFFER_SIZE)
    stderr_r = stderr_w = None
    if merge_stdio:
        stderr_w = child_sock.fileno()
    elif stderr_pipe:
        stderr_r, stderr_w = mitogen.core.pipe()
    try:
        proc = subprocess.Popen(
            args,
            stdin=child_sock,
            stdout=child_sock,
            stderr=stderr_w,
            close_fds=True,
            start_new_session=True,
            env=env,
        )
    except OSError:
        parent_sock.close()
        if stderr_r is not None:
            os.close(stderr_r)
        raise
    finally:
        child_sock.close()
        if stderr_r is not None:
            os.close(stderr_w)
    fd = parent_sock.detach()
    mitogen.core.set_cloexec(fd)
    return PopenProcess(proc, stdin=fd, stdout=fd, stderr=stderr_r)


def openpty(echo=False):
    """Return a close-on-exec `(master_fd, slave_fd)` pty pair.

    Its slave does not echo unless `echo` is true, so nothing typed into
    it (a password) comes back out of the master. A pty that echoes lets
    terminal_echoes() see a program switch echo off to read a password.
    """
    master_fd, slave_fd = os.openpty()
    for fd in master_fd, slave_fd:
        mitogen.core.set_cloexec(fd)
    if not echo:
        attrs = termios.tcgetattr(slave_fd)
        attrs[3] &= ~(termios.ECHO | termios.ECHONL)
        termios.tcsetattr(slave_fd, termios.TCSANOW, attrs)
    return master_fd, slave_fd


def terminal_echoes(fd):
    """True if the terminal of pty master `fd` echoes what is typed into
    it. Programs that read a password (sudo, ssh, su) switch echo off
    before they print the prompt and until the answer is read."""
    return bool(termios.tcgetattr(fd)[3] & termios.ECHO)


def _acquire_controlling_tty():
    """Run in the child after setsid(): make the pty on fd 2 its
    controlling terminal, so programs that open /dev/tty reach it."""
    fcntl.ioctl(2, termios.TIOCSCTTY, 0)


def _popen_with_tty(args, stdio, slave_fd, env=None):
    """Start `args` in a new session with `slave_fd` as stderr and
    controlling terminal, and `stdio` as stdin and stdout."""
    return subprocess.Popen(
        args,
        stdin=stdio,
        stdout=stdio,
        stderr=slave_fd,
        close_fds=True,
        start_new_session=True,
        preexec_fn=_acquire_controlling_tty,
        env=env,
    )


def tty_create_child(args, env=None):
    """Start `args` with stdin, stdout, stderr and controlling terminal all
    on a new pty in raw mode, for programs that insist on a terminal for
    everything.

    :returns: PopenProcess whose stdin/stdout are the pty master; stderr is
        None (it arrives on the same master).
    """
    master_fd, slave_fd = openpty()
    try:
        tty.setraw(slave_fd)
        proc = _popen_with_tty(args, slave_fd, slave_fd, env)
    except (OSError, termios.error):
        os.close(master_fd)
        raise
    finally:
        os.close(slave_fd)
    return PopenProcess(proc, stdin=master_fd, stdout=master_fd)


def hybrid_tty_create_child(args, env=None, echo=False):
    """Start `args` with stdin and stdout on a socketpair (the data path, as
    create_child() does) but stderr and the controlling terminal on a new
    pty (echoing if `echo`, see openpty()), so sudo, doas and ssh can ask
    for a password on /dev/tty, and sudo's `requiretty` policy finds a
    terminal, while the bootstrap and messages flow over the socket.

    :returns: PopenProcess whose stdin/stdout are the parent's socket and
        whose stderr is the pty master (read for prompts, written to answer
        them).
    """
    parent_sock, child_sock = create_socketpair(SOCKET_BUFFER_SIZE)
    try:
        master_fd, slave_fd = openpty(echo)
    except OSError:
        parent_sock.close()
        child_sock.close()
        raise
    try:
        proc = _popen_with_tty(args, child_sock, slave_fd, env)
    except OSError:
        parent_sock.close()
        os.close(master_fd)
        raise
    finally:
        child_sock.close()
        os.close(slave_fd)
    fd = parent_sock.detach()
    mitogen.core.set_cloexec(fd)
    return PopenProcess(proc, stdin=fd, stdout=fd, stderr=master_fd)


class Reaper:
    """Collect a child's exit status after its stream disconnects, sending
    SIGTERM and then SIGKILL if it lingers, and never leaving it behind at
    Broker exit."""

    #: Delays between polls, in seconds.
    DELAYS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0)
    #: Poll count after which SIGTERM is sent.
    TERM_AFTER = 9
    #: Poll count after which SIGKILL is sent.
    KILL_AFTER = 12

    def __init__(self, broker, proc, kill):
        self.broker = broker
        self.proc = proc
        self.kill = kill
        self._count = 0

    def start(self):
        """Begin reaping; call on the Broker thread."""
        listen(self.broker, "exit", self._on_broker_exit)
        if self.kill:
            self.proc.signal(signal.SIGTERM)
        self._reap()

    def _done(self):
        LOG.debug("%r: exited with status %r", self.proc, self.proc.returncode)
        mitogen.core.fire(self.proc, "exit")
        try:
            mitogen.core.unlisten(self.broker, "exit", self._on_broker_exit)
        except ValueError:
            pass

    def _reap(self):
        if self.proc.poll() is not None:
            return self._done()
        if self._count == self.TERM_AFTER:
            LOG.debug("%r: still alive; sending SIGTERM", self.proc)
            self.proc.signal(signal.SIGTERM)
        elif self._count == self.KILL_AFTER:
            LOG.warning("%r: still alive after SIGTERM; sending SIGKILL", self.proc)
            self.proc.signal(signal.SIGKILL)
        if self._count < len(self.DELAYS):
            delay = self.DELAYS[self._count]
            self._count += 1
            self.broker.timers.schedule(mitogen.core.now() + delay, self._reap)
        else:
            self._on_broker_exit()

    def _on_broker_exit(self):
        """Final, blocking reap: the Broker is going away."""
        for signum, wait in ((None, 0.5), (signal.SIGTERM, 1.0), (signal.SIGKILL, 5.0)):
            if signum is not None:
                self.proc.signal(signum)
            deadline = mitogen.core.now() + wait
            while self.proc.poll() is None and mitogen.core.now() < deadline:
                threading.Event().wait(0.01)
            if self.proc.returncode is not None:
                return self._done()
        LOG.error("%r: could not reap the process", self.proc)
