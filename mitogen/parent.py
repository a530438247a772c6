"""The parent side: everything a context needs to start and manage children.

Owns: the stage-0 command and the compressed bootstrap bundle, child process
creation and reaping, the Connection/Options base every connection method
extends, the bootstrap handshake, routing upkeep (RouteMonitor), context ID
blocks for non-master parents, module forwarding through intermediate
contexts, CallChain and the call methods of Context, and the better pollers.
This module is imported over the wire by children that start grandchildren.
"""

import base64
import errno
import fcntl
import importlib
import itertools
import logging
import marshal
import os
import pwd
import re
import select
import signal
import socket
import subprocess
import sys
import termios
import threading
import tty
import zlib

import mitogen
import mitogen.blocking_io
import mitogen.core
import mitogen.kqueue_poller
from mitogen.core import LOG, Message, StreamError, listen

# Names the reference documents give under mitogen.parent, defined elsewhere.
Timer = mitogen.core.Timer
TimerList = mitogen.core.TimerList
KqueuePoller = mitogen.kqueue_poller.KqueuePoller
discard_until = mitogen.blocking_io.discard_until
iter_read = mitogen.blocking_io.iter_read
write_all = mitogen.blocking_io.write_all
close_nonstandard_fds = mitogen.blocking_io.close_nonstandard_fds

#: Seconds a connection attempt may take by default.
DEFAULT_CONNECT_TIMEOUT = 30.0

#: Socket buffer size for links to local children: large buffers mean fewer
#: wakeups per megabyte moved.
SOCKET_BUFFER_SIZE = 4 * 1048576

#: Seconds to keep reading a child's diagnostic output after its stdio
#: closed, so the message explaining why is not lost.
DRAIN_TIMEOUT = 1.0

#: Introduces a failed child's last output in error messages (the output
#: alone is the error's `output` attribute).
OUTPUT_MARKER = "its last output was:\n"

#: Lines of a child's early output kept for error messages.
DIAG_LINES = 30

# Stage 0 waits with select() when a read would block: sudo's I/O logging
# (log_output) hands the child a non-blocking pipe as stdin.
STAGE0 = """import os,sys,zlib,select
def R(n):
 b=b""
 while len(b)<n:
  try:c=os.read(0,n-len(b))
  except BlockingIOError:select.select([0],[],[]);continue
  if not c:raise SystemExit("mitogen: EOF during bootstrap")
  b+=c
 return b
os.write(1,b"MITO000\\n")
b=R(int(R(10)))
d=zlib.decompress(b).split(b"\\0")
exec(d[0])
"""

# Stage 2: runs inside stage 0's globals (R, b, d), loads the bundled
# modules, reads the per-child config and starts ExternalContext.
LOADER = """import marshal
c=marshal.loads(R(int(R(10))))
for i in range(1,len(d),2):
 n=d[i].decode();m=type(sys)(n);m.__file__="master:"+n;m.__package__="mitogen"
 if n=="mitogen":m.__path__=[]
 else:setattr(sys.modules["mitogen"],n[8:],m)
 sys.modules[n]=m;exec(compile(d[i+1],m.__file__,"exec"),m.__dict__)
c["preamble"]=b
sys.modules["mitogen.core"].ExternalContext(c).main()
"""

#: Modules in the bootstrap bundle, in load order.
BOOTSTRAP_MODULES = ("mitogen", "mitogen.core")


def get_stage0_command():
    """Return the `-c` argument that bootstraps a child: printable ASCII
    only, so no shell quoting quirk can damage it."""
    packed = base64.b64encode(zlib.compress(STAGE0.encode(), 9)).decode()
    return 'import base64,zlib;exec(zlib.decompress(base64.b64decode("%s")))' % (packed,)


def _build_preamble():
    import mitogen.minify

    parts = [LOADER.encode()]
    for name in BOOTSTRAP_MODULES:
        module = sys.modules[name]
        path = module.__file__
        with open(path, "rb") as fp:
            source = mitogen.minify.minimize_source(fp.read().decode("utf-8"))
        data = source.encode("utf-8")
        if b"\0" in data:
            raise ValueError("%s contains a NUL byte" % (path,))
        parts += [name.encode(), data]
    return zlib.compress(b"\0".join(parts), 9)


def get_preamble():
    """Return the compressed bootstrap bundle, building it once."""
    if mitogen.core.preamble is None:
        mitogen.core.preamble = _build_preamble()
    return mitogen.core.preamble


def frame_blob(data):
    """Prefix `data` with its length as stage 0 and the loader read it."""
    return ("%010d" % (len(data),)).encode() + data


def get_log_level():
    return logging.getLogger().getEffectiveLevel()


# ---------------------------------------------------------------------------
# Pollers.


class _KernelPoller(mitogen.core.Poller):
    """A Poller whose interest set also lives in the kernel: every change
    is pushed through _update(fd)."""

    def start_receive(self, fd, data=None):
        super().start_receive(fd, data)
        self._update(fd)

    def stop_receive(self, fd):
        super().stop_receive(fd)
        self._update(fd)

    def start_transmit(self, fd, data=None):
        super().start_transmit(fd, data)
        self._update(fd)

    def stop_transmit(self, fd):
        super().stop_transmit(fd)
        self._update(fd)

    def _update(self, fd):
        raise NotImplementedError()


class PollPoller(_KernelPoller):
    """Poller based on poll(2)."""

    _repr = "PollPoller()"

    def __init__(self):
        super().__init__()
        self._pollobj = select.poll()

    def _update(self, fd):
        mask = (fd in self._rfds and select.POLLIN) | (fd in self._wfds and select.POLLOUT)
        if mask:
            self._pollobj.register(fd, mask)
        else:
            try:
                self._pollobj.unregister(fd)
            except KeyError:
                pass

    def _poll(self, timeout):
        if timeout is not None:
            timeout *= 1000
        try:
            events = self._pollobj.poll(timeout)
        except InterruptedError:
            return
        for fd, event in events:
            if event & (select.POLLIN | select.POLLHUP | select.POLLERR) and fd in self._rfds:
                yield self._rfds[fd]
            if event & (select.POLLOUT | select.POLLERR) and fd in self._wfds:
                yield self._wfds[fd]


class EpollPoller(_KernelPoller):
    """Poller based on Linux epoll(7)."""

    _repr = "EpollPoller()"

    def __init__(self):
        super().__init__()
        self._epoll = select.epoll(32)
        self._registered = set()

    def close(self):
        self._epoll.close()

    def _update(self, fd):
        mask = (fd in self._rfds and select.EPOLLIN) | (fd in self._wfds and select.EPOLLOUT)
        try:
            if mask and fd in self._registered:
                self._epoll.modify(fd, mask)
            elif mask:
                self._epoll.register(fd, mask)
                self._registered.add(fd)
            elif fd in self._registered:
                self._registered.discard(fd)
                self._epoll.unregister(fd)
        except OSError as e:
            if e.errno not in (errno.EBADF, errno.ENOENT):
                raise

    def _poll(self, timeout):
        try:
            events = self._epoll.poll(-1 if timeout is None else timeout, 64)
        except InterruptedError:
            return
        for fd, event in events:
            if event & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and fd in self._rfds:
                yield self._rfds[fd]
            if event & (select.EPOLLOUT | select.EPOLLERR) and fd in self._wfds:
                yield self._wfds[fd]


PREFERRED_POLLER = EpollPoller if hasattr(select, "epoll") else PollPoller


# ---------------------------------------------------------------------------
# Child processes.


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


# ---------------------------------------------------------------------------
# Protocols used while bootstrapping.


class LogProtocol(mitogen.core.DelimitedProtocol):
    """Log lines from a child's diagnostic (stderr) descriptor, keeping the
    last few for error messages."""

    def __init__(self, conn):
        self._conn = conn

    def on_line_received(self, line):
        text = mitogen.core.to_text(line).rstrip("\r")
        self._conn.diag_lines.append(text)
        del self._conn.diag_lines[:-DIAG_LINES]
        self._conn.diag_partial = ""
        LOG.debug("%s: %s", self._conn.name, text)

    def on_partial_line_received(self, line):
        self._conn.on_partial_diag(mitogen.core.to_text(line))


class BootstrapProtocol(mitogen.core.DelimitedProtocol):
    """Drive the child's stdio until it prints MITO001, then hand the stream
    to MitogenProtocol."""

    def __init__(self, conn, broker):
        self._conn = conn
        self._writer = mitogen.core.BufferedWriter(broker, self)

    def write(self, data):
        self._writer.write(data)

    def on_transmit(self, broker):
        self._writer.on_transmit(broker)

    def on_line_received(self, line):
        if line == b"MITO000":
            return True
        if line == b"MITO001":
            self._conn._on_bootstrap_done(self.stream)
            return False
        return LogProtocol.on_line_received(self, line)

    def on_partial_line_received(self, line):
        self._conn.on_partial_diag(mitogen.core.to_text(line))


class MitogenProtocol(mitogen.core.MitogenProtocol):
    """The parent's end of a link to a child: asks the child to shut down
    when the Broker does."""

    def on_shutdown(self, broker):
        """Ask the child to shut down; it disconnects when done, or the
        Broker forces the stream closed after its shutdown_timeout."""
        LOG.debug("%r: asking context %d to shut down", self, self.remote_id)
        self.send(Message(dst_id=self.remote_id, handle=mitogen.core.SHUTDOWN))


# ---------------------------------------------------------------------------
# Connections.


class Options:
    """Settings common to every connection method.

    :param str name: context name (defaults to `<method>.<detail>`).
    :param python_path: interpreter to run (a path or argv list).
    :param str remote_name: name shown for the context on the other side.
    :param bool debug: log at DEBUG to /tmp/mitogen.<pid>.log in the child.
    :param float connect_timeout: seconds allowed to bring the context up.
    """

    name = None

    def __init__(
        self,
        max_message_size,
        name=None,
        remote_name=None,
        python_path=None,
        debug=False,
        connect_timeout=None,
    ):
        self.name = name
        self.remote_name = remote_name
        self.python_path = python_path or self.default_python_path()
        self.debug = debug
        self.connect_timeout = float(connect_timeout or DEFAULT_CONNECT_TIMEOUT)
        self.max_message_size = max_message_size

    def default_python_path(self):
        return sys.executable


class EofError(StreamError):
    """The child exited or closed its output before finishing bootstrap."""


class Connection:
    """Start one child and bring it up to a connected Context.

    Subclasses override get_boot_command() (and start_child() for methods
    that do not exec an interpreter), plus on_partial_diag() to answer
    prompts."""

    options_class = Options
    stream_protocol_class = MitogenProtocol
    bootstrap_protocol_class = BootstrapProtocol
    diag_protocol_class = LogProtocol
    #: Prefix of generated context names.
    name_prefix = "local"
    #: True if the child process is the interpreter itself.
    child_is_immediate_subprocess = True
    #: True if the bootstrap bundle must be written to the child.
    sends_preamble = True

    proc = None
    timer = None
    _drain_timer = None
    #: The child's last unterminated line of diagnostic output (a prompt
    #: nobody answered, say), shown in error messages.
    diag_partial = ""
    #: True once the attempt has succeeded or failed.
    _settled = False

    def __init__(self, options, router):
        self.options = options
        self._router = router
        self.diag_lines = []
        self.name = options.name

    def __repr__(self):
        return "%s(%r)" % (type(self).__name__, self.name)

    def get_python_argv(self):
        path = self.options.python_path
        return list(path) if isinstance(path, (list, tuple)) else [path]

    def get_boot_command(self):
        return self.get_python_argv() + ["-c", get_stage0_command()]

    def get_econtext_config(self):
        return {
            "context_id": self.context.context_id,
            "parent_ids": [mitogen.context_id] + list(mitogen.parent_ids),
            "name": self.options.remote_name or self.name,
            "in_fd": 0,
            "out_fd": 1,
            "log_level": get_log_level(),
            "debug": self.options.debug,
            "max_message_size": self.options.max_message_size,
            "whitelist": [],
            "blacklist": [],
        }

    def get_preamble_payload(self):
        config = marshal.dumps(self.get_econtext_config(), 2)
        return frame_blob(get_preamble()) + frame_blob(config)

    def start_child(self):
        args = self.get_boot_command()
        LOG.debug("%r: starting %s", self, args[0])
        try:
            return create_child(args)
        except OSError as e:
            raise StreamError("could not start %s for %s: %s", args[0], self.name, e)

    def describe(self):
        """A phrase naming what we connect to, for error messages."""
        return "%s context %s" % (self.name_prefix, self.name)

    def connect(self, context):
        """Start the child and wait until it is connected or failed."""
        self.context = context
        self._latch = mitogen.core.Latch()
        self.proc = self.start_child()
        if self.name is None:
            self.name = "%s.%d" % (self.name_prefix, self.proc.pid)
        context.name = self.name
        self._router.broker.defer(self._async_connect)
        error = self._latch.get(timeout=self.options.connect_timeout + 10)
        if error is not None:
            raise error
        return context

    def _async_connect(self):
        self.timer = self._router.broker.timers.schedule(
            mitogen.core.now() + self.options.connect_timeout, self._on_timeout
        )
        stream = self.bootstrap_protocol_class.build_stream(self, self._router.broker)
        stream.name = self.name
        stream.accept(self.proc.stdout, self.proc.stdin)
        self.stdio_stream = stream
        listen(stream, "disconnect", self._on_stdio_disconnect)
        self._router.broker.start_receive(stream)
        if self.proc.stderr is not None:
            diag = self.diag_protocol_class.build_stream(self)
            diag.name = self.name + ".stderr"
            diag.accept(self.proc.stderr, None)
            diag.receive_side.keep_alive = False
            self._router.broker.start_receive(diag)
            self.diag_stream = diag
        else:
            self.diag_stream = None
        if self.sends_preamble:
            stream.protocol.write(self.get_preamble_payload())

    def on_partial_diag(self, text):
        """Called with an unterminated line of child output: prompts."""

    def _diag_output(self):
        lines = self.diag_lines[-10:]
        if self.diag_partial.strip():
            lines.append(self.diag_partial)
        return "\n".join(lines)

    def failure(self, klass, kind, reason):
        """Return the `klass` exception for failure `kind`, naming what we
        connect to, `reason` and the child's last output, which it also
        carries as `output`. Kinds: 'timeout' and 'eof' here; 'bad_password',
        'need_password', 'policy' and 'python' (PromptingConnection); 'auth',
        'hostkey_changed', 'hostkey_unknown' and 'unreachable' (ssh)."""
        output = self._diag_output()
        error = klass(
            "Failed to set up %s: %s; %s",
            self.describe(),
            reason,
            OUTPUT_MARKER + output if output else "the child printed nothing",
        )
        error.kind, error.output = kind, output
        return error

    def _on_timeout(self):
        reason = "timed out after %.1f seconds" % (self.options.connect_timeout,)
        self._fail(self.failure(mitogen.core.TimeoutError, "timeout", reason))

    def _on_stdio_disconnect(self):
        """Wait briefly for the diagnostic stream to close too, so the
        message saying why the child exited is read before failing."""
        if self._settled:
            return
        diag = self.diag_stream
        if diag is None or diag.protocol.disconnected:
            return self._on_output_drained()
        listen(diag, "disconnect", self._on_output_drained)
        self._drain_timer = self._router.broker.timers.schedule(
            mitogen.core.now() + DRAIN_TIMEOUT, self._on_output_drained
        )

    def _on_output_drained(self):
        if not self._settled:
            reason = "the child exited or closed its connection during bootstrap"
            self._fail(self.failure(EofError, "eof", reason))

    def _close_streams(self):
        broker = self._router.broker
        for stream in self.stdio_stream, self.diag_stream:
            if stream is not None:
                stream.on_disconnect(broker)

    def _fail(self, exc):
        """Abort the connection attempt; runs on the Broker thread."""
        if self._settled:
            return
        self._settled = True
        self.timer.cancel()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        mitogen.core.unlisten(self.stdio_stream, "disconnect", self._on_stdio_disconnect)
        self._close_streams()
        Reaper(self._router.broker, self.proc, kill=True).start()
        self._latch.put(exc)

    def _on_bootstrap_done(self, stream):
        self._settled = True
        self.timer.cancel()
        mitogen.core.unlisten(stream, "disconnect", self._on_stdio_disconnect)
        stream.set_protocol(self.stream_protocol_class(self._router, self.context.context_id))
        self._router.register(self.context, stream)
        listen(stream, "disconnect", self._on_stream_disconnect)
        LOG.debug("%r: connected to context %d", self, self.context.context_id)
        self._latch.put(None)

    def _on_stream_disconnect(self):
        if self.diag_stream is not None:
            self.diag_stream.on_disconnect(self._router.broker)
        Reaper(self._router.broker, self.proc, kill=not self.child_is_immediate_subprocess).start()


def get_connection_class(name):
    """Return the Connection class of connection method `name`."""
    try:
        module = importlib.import_module("mitogen." + name)
    except ImportError:
        raise mitogen.core.Error("unknown connection method %r", name)
    return module.Connection


# ---------------------------------------------------------------------------
# Connections whose child may ask for a password: ssh, sudo, su, doas.


class AuthenticationError(StreamError):
    """The target refused to let us in: credentials missing or wrong."""


class PasswordError(AuthenticationError):
    """A password was refused, or one was asked for and none was given."""


class PolicyError(StreamError):
    """sudo, su or doas refused by policy to run the command as the
    requested user."""


class InterpreterNotFoundError(EofError):
    """The Python interpreter to run does not exist on the target."""


#: Words that password prompts contain, in English and in the languages
#: sudo, su (PAM), doas and ssh are most often translated into.
PASSWORD_PROMPT_WORDS = (
    "password",
    "passwort",
    "kennwort",
    "mot de passe",
    "contraseña",
    "contrasenya",
    "senha",
    "palavra-passe",
    "wachtwoord",
    "lösenord",
    "passord",
    "adgangskode",
    "salasana",
    "parola",
    "hasło",
    "heslo",
    "jelszó",
    "geslo",
    "lozinka",
    "пароль",
    "κωδικός",
    "şifre",
    "sandi",
    "mật khẩu",
    "パスワード",
    "密码",
    "密碼",
    "암호",
    "비밀번호",
    "סיסמה",
    "كلمة المرور",
    "รหัสผ่าน",
)

#: An unterminated line that asks for a password: a prompt word, then a
#: colon at the end, perhaps followed by pwfeedback's asterisks.
PASSWORD_PROMPT_RE = re.compile(
    r"(?:%s)[^\n]*[:：]\s*\**\s*$" % "|".join(re.escape(word) for word in PASSWORD_PROMPT_WORDS),
    re.IGNORECASE,
)

#: (kind, pattern) of messages from sudo, su and doas (and sudo-rs) that
#: end a connection attempt, matched case-insensitively against complete
#: lines of diagnostic output.
BECOME_FAILURES = (
    (
        "bad_password",
        r"sorry, try again|incorrect password|"
        r"authentication fail|incorrect authentication",
    ),
    (
        "need_password",
        r"a password is required|a terminal is required|"
        r"authori[sz]ation required|no askpass program",
    ),
    (
        "policy",
        r"is not in the sudoers file|not allowed to execute|"
        r"may not run sudo|not allowed to run sudo|"
        r"operation not permitted",
    ),
)

#: Why a connection attempt failed, by kind of failure.
FAILURE_REASONS = {
    "bad_password": "the password was refused",
    "need_password": "a password is required and none was given",
    "policy": "refused by policy",
    "python": "the Python interpreter %(python)r was not found",
}


def current_user():
    """The name of the account this process runs as."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def compile_prompt(pattern):
    """Compile a user-supplied password prompt pattern (case-insensitive
    when given as a string)."""
    if pattern is None or not isinstance(pattern, str):
        return pattern
    return re.compile(pattern, re.IGNORECASE)


def is_password_prompt(text, custom=None, builtin=True):
    """True if the unterminated line `text` asks for a password, by the
    compiled pattern `custom` or (if `builtin`) the built-in patterns."""
    if custom is not None and custom.search(text):
        return True
    return builtin and PASSWORD_PROMPT_RE.search(text) is not None


def _compile_failures(failures):
    """Compile (kind, pattern) pairs, case-insensitively."""
    return [(kind, re.compile(pattern, re.IGNORECASE)) for kind, pattern in failures]


def recv_exact(sock, n):
    """Read exactly `n` bytes from the blocking socket `sock`.

    :raises EOFError: the peer closed the connection first."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError()
        buf += chunk
    return buf


def _write_fully(fd, data):
    """Write `data` to the non-blocking descriptor `fd`, ignoring a peer
    that has gone (its exit is reported through the streams)."""
    while data:
        written, disconnected = mitogen.core.io_op(os.write, fd, data)
        if disconnected:
            return
        data = data[written or 0 :]


class PromptingOptions(Options):
    """Options shared by methods that may be asked for a password.

    :param str password: answer to the first password prompt; kept as a
        mitogen.core.Secret and never placed in an argv.
    :param password_prompt: a regular expression (a string, matched
        case-insensitively, or a compiled pattern) recognising a prompt
        the built-in patterns do not.
    :param bool builtin_prompts: False to answer only prompts that
        `password_prompt` matches.
    """

    def __init__(
        self, max_message_size, password=None, password_prompt=None, builtin_prompts=True, **kwargs
    ):
        super().__init__(max_message_size, **kwargs)
        self.password = None if password is None else mitogen.core.Secret(password)
        self.password_prompt = compile_prompt(password_prompt)
        self.builtin_prompts = builtin_prompts


class DiagProtocol(LogProtocol):
    """Read a child's diagnostic output (a stderr pipe or a pty master):
    scrub the password from it, keep and log its lines, and show each
    line and each prompt to the Connection."""

    def on_line_received(self, line):
        conn = self._conn
        text = conn.scrub(mitogen.core.to_text(line).rstrip("\r"))
        conn.diag_lines.append(text)
        del conn.diag_lines[:-DIAG_LINES]
        LOG.debug("%s: %s", conn.name, text)
        conn.on_diag_line(text)

    def on_partial_line_received(self, line):
        self._conn.on_partial_diag(self._conn.scrub(mitogen.core.to_text(line)))

    def on_shutdown(self, broker):
        """Keep reading at Broker shutdown: the stream closes with the
        child, and closing a pty early would hang it up."""

    def on_disconnect(self, broker):
        trailer, self._trailer = self._trailer, b""
        if trailer:
            self.on_line_received(trailer)
        super().on_disconnect(broker)


class DeferredBootstrapProtocol(BootstrapProtocol):
    """Write the preamble only once stage 0 announces it is reading, so a
    program that reads a password from stdin cannot swallow it."""

    def on_line_received(self, line):
        if line == b"MITO000":
            self.write(self._conn.get_preamble_payload())
        return super().on_line_received(line)


class PromptingConnection(Connection):
    """A Connection whose child may ask for a password.

    It answers the first password prompt, fails at once on a second one or
    on a failure message (`failures`, complete lines; `prompt_failures`,
    unterminated ones), raising the class `error_classes` names for that
    kind of failure, and keeps the password out of logs and errors.

    `password_sink` says where the child reads the password: 'tty' (from
    /dev/tty: with a password the child gets a pty as its controlling
    terminal, see hybrid_tty_create_child()) or 'stdin' (from the socket:
    the preamble then waits for stage 0, see DeferredBootstrapProtocol).

    With `tty_echo`, that pty starts out echoing, and an unterminated line
    printed while the child has switched echo off is a password prompt
    too, whatever its wording (unless `builtin_prompts` is false).
    """

    options_class = PromptingOptions
    diag_protocol_class = DiagProtocol
    bootstrap_protocol_class = DeferredBootstrapProtocol
    sends_preamble = False
    child_is_immediate_subprocess = False
    password_sink = "tty"
    tty_echo = False
    failures = BECOME_FAILURES
    prompt_failures = ()
    error_classes = {
        "bad_password": PasswordError,
        "need_password": PasswordError,
        "policy": PolicyError,
        "python": InterpreterNotFoundError,
    }
    reasons = FAILURE_REASONS

    def __init__(self, options, router):
        super().__init__(options, router)
        self._prompts_answered = 0
        self._on_prompt_line = False
        self._line_failures = _compile_failures(
            self.failures + (("python", self._python_missing_pattern()),)
        )
        self._prompt_failures = _compile_failures(self.prompt_failures)

    def _python_missing_pattern(self):
        """Matches a shell's or sudo's complaint that the interpreter
        does not exist, e.g. "bash: line 1: python3.99: command not found"."""
        python = os.path.basename(self.get_python_argv()[0])
        return re.escape(python) + r"""['"]?:.*(?:not found|no such file)"""

    def uses_tty(self):
        """True if the child needs a pty to read the password from."""
        return self.password_sink == "tty" and self.options.password is not None

    def start_child(self):
        args = self.get_boot_command()
        tty = self.uses_tty()
        LOG.debug("%r: starting %s%s", self, args[0], " on a pty" if tty else "")
        try:
            if tty:
                return hybrid_tty_create_child(args, echo=self.tty_echo)
            return create_child(args)
        except OSError as e:
            raise StreamError("could not start %s for %s: %s", args[0], self.describe(), e)

    def scrub(self, text):
        """Return `text` with any occurrence of the password hidden."""
        password = self.options.password
        if password:
            text = text.replace(password, "[secret]")
        return text

    def error_class(self, kind):
        """The exception class raised for failure `kind`."""
        return self.error_classes[kind]

    def reason(self, kind):
        """Explain a failure of `kind` for an error message."""
        return self.reasons[kind] % {"python": self.get_python_argv()[0]}

    def fail_with(self, kind):
        """Abort the attempt with the exception for failure `kind`; the
        output so far (with an unterminated prompt) is shown."""
        self._fail(self.failure(self.error_class(kind), kind, self.reason(kind)))

    def is_prompt(self, text):
        """True if the unterminated line `text` asks for the password."""
        opts = self.options
        if is_password_prompt(text, opts.password_prompt, opts.builtin_prompts):
            return True
        if not (self.tty_echo and opts.builtin_prompts and self.uses_tty()):
            return False
        tty = self.diag_stream.receive_side
        return not tty.closed and not terminal_echoes(tty.fd)

    def on_partial_diag(self, text):
        self.diag_partial = text
        if self._settled or self._on_prompt_line:
            return
        for kind, regex in self._prompt_failures:
            if regex.search(text):
                return self.fail_with(kind)
        if not self.is_prompt(text):
            return
        self._on_prompt_line = True
        if self.options.password is None:
            return self.fail_with("need_password")
        if self._prompts_answered:
            return self.fail_with("bad_password")
        self._prompts_answered += 1
        LOG.debug("%r: answering password prompt", self)
        self.write_password((self.options.password + "\n").encode("utf-8"))

    def on_diag_line(self, text):
        """Called with each complete line of diagnostic output."""
        self._on_prompt_line = False
        self.diag_partial = ""
        if self._settled or text.lstrip().lower().startswith("debug"):
            return
        for kind, regex in self._line_failures:
            if regex.search(text):
                return self.fail_with(kind)

    def write_password(self, data):
        """Type `data` where the child reads its password."""
        if self.password_sink == "stdin":
            self.stdio_stream.protocol.write(data)
        else:
            _write_fully(self.diag_stream.receive_side.fd, data)


class BecomeOptions(PromptingOptions):
    """Options of methods that switch to another user on one machine
    (sudo, su, doas).

    :param str username: account to become (default 'root').
    """

    def __init__(self, max_message_size, username="root", **kwargs):
        super().__init__(max_message_size, **kwargs)
        self.username = username


class BecomeConnection(PromptingConnection):
    """A PromptingConnection that becomes `options.username`; a refused or
    missing password raises the method's own `password_error` class."""

    password_error = PasswordError

    def __init__(self, options, router):
        if options.name is None:
            options.name = "%s.%s" % (self.name_prefix, options.username)
        super().__init__(options, router)

    def error_class(self, kind):
        if kind in ("bad_password", "need_password"):
            return self.password_error
        return super().error_class(kind)

    def describe(self):
        return "%s from %s to %s on %s" % (
            self.name_prefix,
            current_user(),
            self.options.username,
            socket.gethostname(),
        )


# ---------------------------------------------------------------------------
# Calls.


class CallChain:
    """Send CALL_FUNCTION messages to a context.

    With `pipelined=True`, calls share a chain ID: once one fails, later
    calls in the chain fail with the same error without running, until
    reset(). This lets call_no_reply() be used for setup steps whose errors
    still surface at the next call()."""

    _counter = itertools.count()

    def __init__(self, context, pipelined=False):
        self.context = context
        self.chain_id = self.make_chain_id() if pipelined else None

    @classmethod
    def make_chain_id(cls):
        return "%s-%d-%x-%x" % (
            socket.gethostname(),
            os.getpid(),
            threading.get_ident(),
            next(cls._counter),
        )

    def reset(self):
        """Forget any failure recorded for this chain and start a new one."""
        if self.chain_id is None:
            return
        saved, self.chain_id = self.chain_id, None
        try:
            self.call_no_reply(mitogen.core.Dispatcher.forget_chain, saved)
        finally:
            self.chain_id = self.make_chain_id()

    def make_msg(self, fn, *args, **kwargs):
        owner = getattr(fn, "__self__", None)
        if isinstance(owner, type):
            modname, klass = owner.__module__, owner.__name__
        elif owner is not None and not isinstance(owner, type(sys)):
            raise TypeError(
                "cannot call instance method %r remotely: use a "
                "function, classmethod or staticmethod" % (fn,)
            )
        else:
            modname = fn.__module__
            qual = fn.__qualname__.split(".")
            if "<locals>" in qual or "<lambda>" in qual:
                raise TypeError(
                    "cannot call %r remotely: nested functions "
                    "and lambdas cannot be imported" % (fn,)
                )
            klass = ".".join(qual[:-1]) or None
        if modname == "__mitogen_main__":
            modname = "__main__"
        return Message.pickled(
            (self.chain_id, modname, klass, fn.__name__, args, mitogen.core.Kwargs(kwargs)),
            handle=mitogen.core.CALL_FUNCTION,
        )

    def call_no_reply(self, fn, *args, **kwargs):
        """Start `fn(*args, **kwargs)` remotely without waiting; a failure
        is logged remotely (or recorded in the chain)."""
        self.context.send(self.make_msg(fn, *args, **kwargs))

    def call_async(self, fn, *args, **kwargs):
        """Start `fn(*args, **kwargs)` remotely; return a Receiver whose
        get(timeout=...) yields the reply message."""
        return self.context.send_async(self.make_msg(fn, *args, **kwargs))

    def call(self, fn, *args, **kwargs):
        """Run `fn(*args, **kwargs)` remotely and return its result, raising
        CallError if it raised (ChannelError if the context went away).
        For a deadline use call_async(...).get(timeout=...).unpickle()."""
        return self.call_async(fn, *args, **kwargs).get().unpickle()


class Context(mitogen.core.Context):
    """A Context that can run functions and be shut down."""

    #: The Context this one was started through, if any.
    via = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.default_call_chain = CallChain(self)

    def __eq__(self, other):
        return (
            isinstance(other, mitogen.core.Context)
            and other.context_id == self.context_id
            and other.router == self.router
        )

    def __hash__(self):
        return hash((self.router, self.context_id))

    def call_async(self, fn, *args, **kwargs):
        return self.default_call_chain.call_async(fn, *args, **kwargs)

    def call(self, fn, *args, **kwargs):
        return self.default_call_chain.call(fn, *args, **kwargs)

    def call_no_reply(self, fn, *args, **kwargs):
        self.default_call_chain.call_no_reply(fn, *args, **kwargs)

    def shutdown(self, wait=False, timeout=None):
        """Ask the context to shut down.

        :returns: a Latch that receives None once the context disconnects;
            with `wait=True`, block (up to `timeout` seconds) for it instead.
        """
        latch = mitogen.core.Latch()
        listen(self, "disconnect", lambda: latch.put(None))
        if self.router.stream_by_id(self.context_id) is None:
            latch.put(None)
        self.send(Message(handle=mitogen.core.SHUTDOWN))
        if wait:
            latch.get(timeout=timeout)
            return None
        return latch


# ---------------------------------------------------------------------------
# Routing upkeep, IDs and module forwarding.


class RouteMonitor:
    """Keep routes to descendants up to date: announce new and lost
    children upward (ADD_ROUTE/DEL_ROUTE) and lost contexts downward, and
    accept announcements only for contexts a child may speak for."""

    def __init__(self, router):
        self.router = router
        self._routes_by_stream = {}
        router.add_handler(self._on_add_route, mitogen.core.ADD_ROUTE)
        router.add_handler(self._on_del_route, mitogen.core.DEL_ROUTE, overwrite=True)

    def _send(self, stream, handle, target_id, name=None):
        data = ("%d:%s" % (target_id, name or "")).encode("utf-8")
        stream.protocol.send(Message(dst_id=stream.protocol.remote_id, handle=handle, data=data))

    def _propagate_up(self, handle, target_id, name=None):
        if self.router.parent_stream is not None:
            self._send(self.router.parent_stream, handle, target_id, name)

    def _propagate_down(self, handle, target_id):
        for stream in list(self._routes_by_stream):
            self._send(stream, handle, target_id)

    def notice_stream(self, stream):
        """Start tracking a newly connected child stream; Broker thread."""
        target_id = stream.protocol.remote_id
        self._routes_by_stream[stream] = {target_id}
        listen(stream, "disconnect", lambda: self._on_stream_disconnect(stream))
        context = self.router.context_by_id(target_id)
        self._propagate_up(mitogen.core.ADD_ROUTE, target_id, context.name)

    def _on_stream_disconnect(self, stream):
        for target_id in sorted(self._routes_by_stream.pop(stream, ())):
            self._propagate_up(mitogen.core.DEL_ROUTE, target_id)
            self._propagate_down(mitogen.core.DEL_ROUTE, target_id)

    def _parse(self, msg):
        target_id, _, name = msg.data.decode("utf-8").partition(":")
        return int(target_id), name or None

    def _on_add_route(self, msg):
        if msg.is_dead:
            return
        stream = msg.stream
        if stream not in self._routes_by_stream or msg.src_id != stream.protocol.remote_id:
            LOG.error("%r: refused ADD_ROUTE %r: not from a direct child", self, msg)
            return
        target_id, name = self._parse(msg)
        current = self.router.known_route(target_id)
        if (
            target_id == mitogen.context_id
            or target_id in mitogen.parent_ids
            or (current is not None and current is not stream)
        ):
            LOG.error(
                "%r: refused ADD_ROUTE for %d from %r: that context is not behind it",
                self,
                target_id,
                stream,
            )
            return
        self.router.add_route(target_id, stream)
        self._routes_by_stream[stream].add(target_id)
        self.router.context_by_id(target_id, name=name)
        self._propagate_up(mitogen.core.ADD_ROUTE, target_id, name)

    def _on_del_route(self, msg):
        if msg.is_dead:
            return
        target_id, _ = self._parse(msg)
        stream = msg.stream
        if stream is not None and stream is self.router.parent_stream:
            if self.router.known_route(target_id) is None:
                self.router.context_gone(target_id)
                self._propagate_down(mitogen.core.DEL_ROUTE, target_id)
            return
        routes = self._routes_by_stream.get(stream)
        if routes is None or target_id not in routes or target_id == stream.protocol.remote_id:
            LOG.error("%r: refused DEL_ROUTE for %d from %r", self, target_id, stream)
            return
        routes.discard(target_id)
        self.router.del_route(target_id)
        self._propagate_up(mitogen.core.DEL_ROUTE, target_id)
        for other in list(self._routes_by_stream):
            if other is not stream:
                self._send(other, mitogen.core.DEL_ROUTE, target_id)


class ChildIdAllocator:
    """Allocate context IDs in a non-master context from blocks granted by
    the master."""

    def __init__(self, router):
        self.router = router
        self._lock = threading.Lock()
        self._it = iter(())

    def allocate(self):
        with self._lock:
            for context_id in self._it:
                return context_id
            master = self.router.context_by_id(0)
            start, end = master.send_await(Message(handle=mitogen.core.ALLOCATE_ID))
            self._it = iter(range(start + 1, end))
            return start


class ModuleForwarder:
    """Answer GET_MODULE from children of an intermediate context from its
    own Importer cache, fetching from upstream once per module."""

    def __init__(self, router, importer):
        self.router = router
        self.importer = importer
        self._sent = {}
        router.add_handler(self._on_get_module, mitogen.core.GET_MODULE)

    def __repr__(self):
        return "ModuleForwarder()"

    def _on_get_module(self, msg):
        if msg.is_dead:
            return
        fullname = msg.data.decode("utf-8")
        self.importer.request_module(fullname, lambda: self._on_cache(msg.src_id, fullname))

    def _on_cache(self, dst_id, fullname):
        tup = self.importer.cached(fullname) or (fullname, None, None, None, ())
        related = [self.importer.cached(name) for name in tup[4]]
        send_module(self.router, self._sent, dst_id, tup, related)


def send_module(router, sent, dst_id, tup, related=()):
    """Answer a GET_MODULE from `dst_id` on the Broker thread: LOAD_MODULE
    messages for each found module tuple of `related` (None entries are
    skipped), then for `tup` itself, leaving out modules whose names the set
    `sent[dst_id]` holds, which it then records. Returns the tuples sent.
    ModuleResponder (master) and ModuleForwarder (intermediate contexts)
    both answer through it."""
    names = sent.setdefault(dst_id, set())
    out = []
    for item in [r for r in related if r is not None and r[3] is not None] + [tup]:
        if item[0] not in names:
            names.add(item[0])
            out.append(item)
            router.route_now(Message.pickled(item, dst_id=dst_id, handle=mitogen.core.LOAD_MODULE))
    return out


class Router(mitogen.core.Router):
    """A Router that can start children."""

    context_class = Context
    id_allocator = None
    route_monitor = None

    def __init__(self, broker):
        super().__init__(broker)
        self.route_monitor = RouteMonitor(self)

    def upgrade(self, importer):
        """Turn a child's core Router into one able to start grandchildren."""
        self.id_allocator = ChildIdAllocator(self)
        self.responder = ModuleForwarder(self, importer)
        self.route_monitor = RouteMonitor(self)
        for context in list(self._context_by_id.values()):
            context.__class__ = Context
            context.default_call_chain = CallChain(context)

    def allocate_id(self):
        return self.id_allocator.allocate()

    def register(self, context, stream):
        """Attach a child's stream; call on the Broker thread so ADD_ROUTE
        leaves before anything the child sends is forwarded."""
        super().register(context, stream)
        self.route_monitor.notice_stream(stream)

    def _connect(self, klass, name=None, **kwargs):
        kwargs.setdefault("max_message_size", self.max_message_size)
        conn = klass(klass.options_class(name=name, **kwargs), self)
        context = self.context_class(self, self.allocate_id())
        return conn.connect(context)

    def connect(self, method_name, name=None, **kwargs):
        """Start a context using connection method `method_name` (a module
        in the mitogen package), optionally through `via=` another
        context."""
        via = kwargs.pop("via", None)
        if via is not None:
            return self.proxy_connect(via, method_name, name=name, **kwargs)
        return self._connect(get_connection_class(method_name), name=name, **kwargs)

    def proxy_connect(self, via_context, method_name, name=None, **kwargs):
        """Ask `via_context` to start the new context as its own child."""
        kwargs = _prepare_proxy_kwargs(method_name, kwargs)
        resp = via_context.call(
            _proxy_connect, name=name, method_name=method_name, kwargs=mitogen.core.Kwargs(kwargs)
        )
        if resp["error"] is not None:
            raise error_from_dict(resp["error"])
        context = self.context_by_id(resp["id"], name=resp["name"])
        context.via = via_context
        self.broker.defer(self._add_route_via, resp["id"], via_context)
        return context

    def _add_route_via(self, target_id, via_context):
        if target_id not in self._stream_by_id:
            stream = self.stream_by_id(via_context.context_id)
            if stream is not None:
                self.add_route(target_id, stream)

    def local(self, **kwargs):
        """Start a context in a new local interpreter."""
        return self.connect("local", **kwargs)

    def fork(self, **kwargs):
        """Start a context in a fork of this process."""
        return self.connect("fork", **kwargs)

    def ssh(self, hostname, **kwargs):
        """Start a context over SSH on `hostname`; see mitogen.ssh.Options
        for the keyword arguments."""
        return self.connect("ssh", hostname=hostname, **kwargs)

    def sudo(self, **kwargs):
        """Start a context as another user through sudo; see
        mitogen.sudo.Options."""
        return self.connect("sudo", **kwargs)

    def su(self, **kwargs):
        """Start a context as another user through su; see
        mitogen.su.Options."""
        return self.connect("su", **kwargs)

    def doas(self, **kwargs):
        """Start a context as another user through doas; see
        mitogen.doas.Options."""
        return self.connect("doas", **kwargs)

    def docker(self, **kwargs):
        """Start a context in a Docker container (docker exec) or a throwaway one (image=);
        see mitogen.docker.Options."""
        return self.connect("docker", **kwargs)

    def podman(self, **kwargs):
        """Start a context in a Podman container (podman exec); see mitogen.podman.Options."""
        return self.connect("podman", **kwargs)

    def buildah(self, **kwargs):
        """Start a context in a Buildah working container (buildah run);
        see mitogen.buildah.Options."""
        return self.connect("buildah", **kwargs)

    def lxc(self, **kwargs):
        """Start a context in an LXC container (lxc-attach); see mitogen.lxc.Options."""
        return self.connect("lxc", **kwargs)

    def lxd(self, **kwargs):
        """Start a context in an LXD instance (lxc exec); see mitogen.lxd.Options."""
        return self.connect("lxd", **kwargs)

    def incus(self, **kwargs):
        """Start a context in an Incus instance (incus exec); see mitogen.incus.Options."""
        return self.connect("incus", **kwargs)

    def kubectl(self, **kwargs):
        """Start a context in a Kubernetes pod (kubectl exec); see mitogen.kubectl.Options."""
        return self.connect("kubectl", **kwargs)

    def jail(self, **kwargs):
        """Start a context in a FreeBSD jail (jexec); see mitogen.jail.Options."""
        return self.connect("jail", **kwargs)

    def machinectl(self, **kwargs):
        """Start a context in a systemd-nspawn machine; see mitogen.machinectl.Options."""
        return self.connect("machinectl", **kwargs)

    def chroot(self, **kwargs):
        """Start a context inside a chroot directory (root only); see mitogen.chroot.Options."""
        return self.connect("chroot", **kwargs)

    def setns(self, **kwargs):
        """Start a context in the namespaces of a container's init process (root only);
        see mitogen.setns.Options."""
        return self.connect("setns", **kwargs)


def _prepare_proxy_kwargs(method_name, kwargs):
    """Load the method's module here, so errors it raises remotely can be
    rebuilt with their own class, and send any password as a Secret."""
    get_connection_class(method_name)
    if kwargs.get("password") is not None:
        kwargs = dict(kwargs, password=mitogen.core.Secret(kwargs["password"]))
    return kwargs


def error_to_dict(error):
    """The serialisable form of a StreamError, which crosses via= hops:
    {'type': qualified class name, 'msg', 'kind', 'output'}."""
    return {
        "type": mitogen.core.qualname(type(error)),
        "msg": str(error),
        "kind": error.kind,
        "output": error.output,
    }


def error_from_dict(data):
    """Rebuild the exception error_to_dict() described: the same class if it
    is a loaded StreamError subclass (else StreamError), message, kind and
    output."""
    modname, _, clsname = data["type"].rpartition(".")
    klass = getattr(sys.modules.get(modname), clsname, None)
    if not (isinstance(klass, type) and issubclass(klass, StreamError)):
        klass = StreamError
    error = klass(data["msg"])
    error.kind, error.output = data["kind"], data["output"]
    return error


def upgrade_router(econtext):
    """Make a child's Router able to start grandchildren (idempotent)."""
    if not isinstance(econtext.router, Router):
        econtext.router.__class__ = Router
        econtext.router.upgrade(econtext.importer)


@mitogen.core.takes_econtext
def _proxy_connect(name, method_name, kwargs, econtext):
    """Run in an intermediate context to start a grandchild for the
    master."""
    upgrade_router(econtext)
    try:
        context = econtext.router._connect(get_connection_class(method_name), name=name, **kwargs)
    except mitogen.core.StreamError as e:
        return {"id": None, "name": None, "error": error_to_dict(e)}
    return {"id": context.context_id, "name": context.name, "error": None}
