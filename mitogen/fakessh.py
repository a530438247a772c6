"""Run rsync, scp or any program that uses ssh through a Mitogen context.

run(dest, router, args) starts `args` on this machine with a fake `ssh`
first on PATH (and as RSYNC_RSH, and as the `-S` program of scp and sftp,
which otherwise run /usr/bin/ssh). The fake ssh connects nowhere: it sends
its remote command and relays its stdin and stdout over a private UNIX
socket to run(), which starts the command in `dest` (through `/bin/sh -c`
in the home directory, as sshd would; `-s sftp` runs sftp-server) and moves
the bytes through Mitogen messages, with a flow-control window in each
direction so memory stays bounded. The command's exit status becomes the
fake ssh's (255 when fakessh itself fails, as with ssh). Every host name
leads to `dest`; users, ports and ssh options are ignored.

Wire format between the fake ssh and run(): frames of a kind byte and a
length ('>cI'), then the payload. From the fake ssh: A (b'C' or b'S' for a
subsystem, then the command), I (stdin bytes), E (stdin closed). To it: O
(stdout bytes), R (stderr bytes), X (exit status, '>i').
"""

import os
import pwd
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import mitogen.core
import mitogen.parent
from mitogen.core import LOG

#: Largest piece of a stream carried by one message.
CHUNK_SIZE = 131072

#: Bytes one direction may have in flight before the sender waits.
WINDOW_SIZE = 4 * 1048576

#: Seconds the fake ssh processes may outlive the program before their
#: connections are cut.
SESSION_GRACE = 5.0

#: Seconds a remote command has to exit after SIGTERM before SIGKILL.
KILL_DELAY = 5.0

#: Where sftp-server lives on common systems.
SFTP_SERVERS = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
    "/usr/libexec/sftp-server",
)

FRAME = struct.Struct(">cI")
STATUS = struct.Struct(">i")

#: The fake ssh: standard library only, so any local Python runs it.
SSH_SCRIPT = r'''
import os, select, socket, struct, sys, threading

SOCKET_PATH = %(socket_path)r
FRAME = struct.Struct('>cI')
ARG_OPTIONS = 'BbcDEeFIiJLlmOoPpQRSWw'


def fail(text):
    os.write(2, ('fakessh: %%s\n' %% (text,)).encode())
    os._exit(255)


def parse(argv):
    """Return (is_subsystem, command) from ssh's arguments."""
    subsystem = False
    i = 0
    while i < len(argv) and argv[i].startswith('-') and argv[i] != '-':
        if argv[i] == '--':
            i += 1
            break
        for j, c in enumerate(argv[i][1:], 2):
            if c in ARG_OPTIONS:
                if j == len(argv[i]):
                    i += 1
                break
            subsystem = subsystem or c == 's'
        i += 1
    if i >= len(argv):
        fail('no host name given')
    command = [os.fsencode(arg) for arg in argv[i + 1:]]
    if not command:
        fail('no remote command given: fakessh runs commands only, '
             'not interactive sessions')
    return subsystem, b' '.join(command)


def send(sock, kind, data=b''):
    sock.sendall(FRAME.pack(kind, len(data)) + data)


def recv_exact(sock, n):
    buf = b''
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            fail('lost the connection to mitogen.fakessh.run()')
        buf += chunk
    return buf


def retry(func, fd, *args):
    """Call func(fd, *args), waiting while fd (which the program may have
    made non-blocking) is not ready."""
    while True:
        try:
            return func(fd, *args)
        except BlockingIOError:
            if func is os.read:
                select.select([fd], [], [])
            else:
                select.select([], [fd], [])


def write_all(fd, data):
    while data:
        data = data[retry(os.write, fd, data):]


def pump_stdin(sock):
    try:
        while True:
            data = retry(os.read, 0, 65536)
            if not data:
                return send(sock, b'E')
            send(sock, b'I', data)
    except OSError:
        pass


def main():
    subsystem, command = parse(sys.argv[1:])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(SOCKET_PATH)
        send(sock, b'A', (b'S' if subsystem else b'C') + command)
    except OSError as e:
        fail('cannot reach mitogen.fakessh.run(): %%s' %% (e,))
    thread = threading.Thread(target=pump_stdin, args=(sock,))
    thread.daemon = True
    thread.start()
    while True:
        kind, size = FRAME.unpack(recv_exact(sock, FRAME.size))
        data = recv_exact(sock, size)
        try:
            if kind == b'O':
                write_all(1, data)
            elif kind == b'R':
                write_all(2, data)
            elif kind == b'X':
                os._exit(struct.unpack('>i', data)[0])
        except OSError as e:
            fail('cannot write output: %%s' %% (e,))


main()
'''


class _Window:
    """Credit for one direction of a stream: the sender takes credit for
    each piece it sends, the receiver's acknowledgements give it back."""

    def __init__(self, size=WINDOW_SIZE):
        self._cond = threading.Condition()
        self._free = size
        self.closed = False

    def acquire(self, n):
        """Wait until `n` more bytes may be in flight; False once closed."""
        with self._cond:
            while self._free < n and not self.closed:
                self._cond.wait()
            self._free -= n
            return not self.closed

    def release(self, n):
        with self._cond:
            self._free += n
            self._cond.notify_all()

    def close(self):
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def _from(context):
    """A handler policy accepting only messages from `context`."""
    return lambda msg, stream: msg.src_id == context.context_id


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data) :]


def _thread(target, name, *args):
    thread = threading.Thread(target=target, args=args, name=name)
    thread.daemon = True
    thread.start()
    return thread


# ---------------------------------------------------------------------------
# The side running the command, in `dest`.


def _command_argv(command, subsystem):
    if not subsystem:
        return ["/bin/sh", "-c", command]
    if command != b"sftp":
        raise mitogen.core.Error("fakessh supports only the sftp subsystem, not %r", command)
    for path in SFTP_SERVERS:
        if os.access(path, os.X_OK):
            return [path]
    raise mitogen.core.Error("no sftp-server found (looked for %s)", ", ".join(SFTP_SERVERS))


#: Commands running in this context, by the token run() gave each.
_commands = {}


class _Command:
    """Run one remote command: its output goes to the `out` Sender as
    ('o' or 'e', bytes) and finally ('x', status); its stdin comes from a
    Receiver; acknowledgements and 'kill' arrive on a control handle."""

    def __init__(self, router, token, proc, out, peer_ctl):
        self._router = router
        self._token = token
        self._proc = proc
        self._out = out
        self._peer_ctl = peer_ctl
        self._window = _Window()
        peer = out.context
        self._stdin = mitogen.core.Receiver(router, respondent=peer, policy=_from(peer))
        self._ctl_handle = router.add_handler(self._on_ctl, respondent=peer, policy=_from(peer))
        #: Senders for our stdin Receiver and control handle; made before
        #: the threads start, as a quick command may be done at once.
        self.senders = (
            self._stdin.to_sender(),
            mitogen.core.Sender(router.myself(), self._ctl_handle),
        )
        mitogen.core.listen(router.broker, "shutdown", self._kill)
        _commands[token] = self
        self._readers = [
            _thread(self._pump_output, "fakessh.stdout", proc.stdout, "o"),
            _thread(self._pump_output, "fakessh.stderr", proc.stderr, "e"),
        ]
        self._writer = _thread(self._pump_input, "fakessh.stdin")
        _thread(self._supervise, "fakessh.command")

    def _on_ctl(self, msg):
        if msg.is_dead:
            return self._kill()
        request = msg.unpickle()
        if request[0] == "ack":
            self._window.release(request[1])
        elif request[0] == "kill":
            self._kill()

    def _kill(self):
        """Stop the command: SIGTERM, then SIGKILL if it lingers. Runs on
        the Broker thread."""
        self._window.close()
        self._signal(signal.SIGTERM)
        self._router.broker.timers.schedule(
            mitogen.core.now() + KILL_DELAY, lambda: self._signal(signal.SIGKILL)
        )

    def _signal(self, signum):
        if self._proc.returncode is None:
            try:
                os.killpg(self._proc.pid, signum)
            except OSError:
                pass

    def _pump_output(self, fp, tag):
        with fp:
            while True:
                data = os.read(fp.fileno(), CHUNK_SIZE)
                if not data or not self._window.acquire(len(data)):
                    return
                self._out.send((tag, data))

    def _pump_input(self):
        fp = self._proc.stdin
        for msg in self._stdin:
            data = msg.unpickle()
            if not fp.closed:
                try:
                    _write_all(fp.fileno(), data)
                except OSError:
                    fp.close()
            self._peer_ctl.send(("ack", len(data)))
        fp.close()

    def _supervise(self):
        for thread in self._readers:
            thread.join()
        status = self._proc.wait()
        self._out.send(("x", status if status >= 0 else 255))
        self._stdin.close()
        self._writer.join()
        try:
            self._router.del_handler(self._ctl_handle)
        except KeyError:
            pass
        mitogen.core.unlisten(self._router.broker, "shutdown", self._kill)
        _commands.pop(self._token, None)


@mitogen.core.takes_router
def _start_command(token, command, subsystem, out, peer_ctl, router):
    """Start `command` (bytes) in this context as sshd would; return
    Senders for its stdin and our control handle."""
    argv = _command_argv(command, subsystem)
    home = pwd.getpwuid(os.getuid()).pw_dir
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        close_fds=True,
        start_new_session=True,
        cwd=home if os.path.isdir(home) else "/",
    )
    return _Command(router, token, proc, out, peer_ctl).senders


@mitogen.core.takes_router
def _cancel_command(token, router):
    """Kill the command started for `token`: its run() stopped waiting for
    the reply to _start_command(), which queued behind other calls."""
    command = _commands.get(token)
    if command is not None:
        router.broker.defer(command._kill)


# ---------------------------------------------------------------------------
# The side running the program, where run() was called.


def _send_frame(sock, kind, data=b""):
    sock.sendall(FRAME.pack(kind, len(data)) + data)


def _read_frame(sock):
    """Return (kind, data), or None once the fake ssh has gone."""
    try:
        kind, size = FRAME.unpack(mitogen.parent.recv_exact(sock, FRAME.size))
        return kind, mitogen.parent.recv_exact(sock, size)
    except (EOFError, OSError):
        return None


class _Session:
    """One fake ssh connection: start its command in `dest`, then relay
    its stdin there (reader thread) and the command's output back
    (writer thread)."""

    _ctl = None
    _call = None
    _finished = False

    def __init__(self, router, dest, sock):
        self._router = router
        self._dest = dest
        self._sock = sock
        self._window = _Window()
        self._thread = _thread(self._main, "fakessh.session")

    def join(self, timeout=None):
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def abort(self):
        """Cut the connection and stop waiting for `dest` to start the
        command: the fake ssh exits 255, the command is killed."""
        if self._call is not None and self._ctl is None:
            self._dest.call_no_reply(_cancel_command, self._token)
            self._call.close()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _on_ctl(self, msg):
        if msg.is_dead:
            return self._window.close()
        request = msg.unpickle()
        if request[0] == "ack":
            self._window.release(request[1])

    def _fail(self, text):
        try:
            _send_frame(self._sock, b"R", ("fakessh: %s\n" % (text,)).encode())
            _send_frame(self._sock, b"X", STATUS.pack(255))
        except OSError:
            pass

    def _main(self):
        router = self._router
        output = mitogen.core.Receiver(router, respondent=self._dest, policy=_from(self._dest))
        ctl_handle = router.add_handler(
            self._on_ctl, respondent=self._dest, policy=_from(self._dest)
        )
        try:
            self._serve(output, ctl_handle)
        finally:
            output.close()
            try:
                router.del_handler(ctl_handle)
            except KeyError:
                pass
            self._sock.close()

    def _serve(self, output, ctl_handle):
        frame = _read_frame(self._sock)
        if frame is None or frame[0] != b"A":
            return
        subsystem, command = frame[1][:1] == b"S", frame[1][1:]
        myself = self._router.myself()
        self._token = (mitogen.context_id, output.handle)
        self._call = self._dest.call_async(
            _start_command,
            self._token,
            command,
            subsystem,
            output.to_sender(),
            mitogen.core.Sender(myself, ctl_handle),
        )
        try:
            stdin, self._ctl = self._call.get().unpickle()
        except mitogen.core.Error as e:
            LOG.debug("%r: cannot start %r: %s", self, command, e)
            return self._fail(
                "cannot start %r in %r: %s" % (command.decode("utf-8", "replace"), self._dest, e)
            )
        writer = _thread(self._relay_output, "fakessh.output", output)
        self._relay_input(stdin)
        writer.join()

    def _relay_input(self, stdin):
        while True:
            frame = _read_frame(self._sock)
            if frame is None:
                break
            kind, data = frame
            if kind == b"I" and self._window.acquire(len(data)):
                stdin.send(data)
            elif kind == b"E":
                stdin.close()
        if not self._finished:
            self._ctl.send(("kill",))
            self.abort()

    def _relay_output(self, output):
        try:
            for msg in output:
                tag, data = msg.unpickle()
                if tag == "x":
                    self._finished = True
                    return _send_frame(self._sock, b"X", STATUS.pack(data))
                _send_frame(self._sock, b"O" if tag == "o" else b"R", data)
                self._ctl.send(("ack", len(data)))
            self._fail("lost contact with %r" % (self._dest,))
        except OSError:
            self._ctl.send(("kill",))
        finally:
            self._window.close()


def _with_ssh_program(args, ssh_path):
    """scp and sftp run /usr/bin/ssh unless given -S: give them ours."""
    args = list(args)
    if os.path.basename(args[0]) in ("scp", "sftp") and not any(
        arg.startswith("-S") for arg in args[1:]
    ):
        args[1:1] = ["-S", ssh_path]
    return args


def _write_script(directory, socket_path):
    if not sys.executable:
        raise mitogen.core.Error(
            "fakessh needs sys.executable to run its fake ssh, and it is empty here"
        )
    script = os.path.join(directory, "fakessh.py")
    with open(script, "w") as fp:
        fp.write(SSH_SCRIPT % {"socket_path": socket_path})
    ssh_path = os.path.join(directory, "ssh")
    with open(ssh_path, "w") as fp:
        fp.write(
            '#!/bin/sh\nexec %s -I %s "$@"\n' % (shlex.quote(sys.executable), shlex.quote(script))
        )
    os.chmod(ssh_path, 0o700)
    return ssh_path


def _kill_program(proc):
    for signum, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, signum)
        except OSError:
            pass
        try:
            return proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def _accept_sessions(router, dest, listener, proc, deadline):
    """Serve fake ssh connections until the program exits; kill it and
    raise TimeoutError once `deadline` passes."""
    wake_r, wake_w = mitogen.core.pipe()
    waiter = _thread(lambda: (proc.wait(), os.write(wake_w, b".")), "fakessh.wait")
    sessions = []
    try:
        while True:
            timeout = None
            if deadline is not None:
                timeout = max(0.0, deadline - time.time())
            ready, _, _ = select.select([listener, wake_r], [], [], timeout)
            if not ready:
                raise mitogen.core.TimeoutError(
                    "fakessh: %r did not finish before its deadline" % (proc.args[0],)
                )
            if wake_r in ready:
                return
            sock, _ = listener.accept()
            sessions.append(_Session(router, dest, sock))
    except BaseException:
        _kill_program(proc)
        for session in sessions:
            session.abort()
        raise
    finally:
        waiter.join()
        os.close(wake_r)
        os.close(wake_w)
        _end_sessions(sessions)


def _end_sessions(sessions):
    deadline = time.time() + SESSION_GRACE
    for session in sessions:
        if not session.join(max(0.0, deadline - time.time())):
            session.abort()
            session.join()


@mitogen.core.takes_econtext
def run(dest, router, args, deadline=None, econtext=None):
    """Run `args` on this machine so that its ssh commands run in `dest`.

    :param mitogen.core.Context dest: where the remote commands run.
    :param router: this context's Router; None when run() is itself
        called in a child context (`econtext` is then given).
    :param list args: program and arguments, e.g. ['rsync', '-a', 'src/',
        'anyhost:dst/'].
    :param float deadline: time.time() after which the program is killed
        and mitogen.core.TimeoutError raised.
    :returns: the program's exit status (negative: killed by that signal).
    """
    if econtext is not None:
        mitogen.parent.upgrade_router(econtext)
        router = econtext.router
    directory = tempfile.mkdtemp(prefix="mitogen_fakessh_")
    try:
        socket_path = os.path.join(directory, "sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with listener:
            listener.bind(socket_path)
            listener.listen(16)
            ssh_path = _write_script(directory, socket_path)
            env = dict(
                os.environ,
                RSYNC_RSH="ssh",
                PATH=os.pathsep.join([directory, os.environ.get("PATH", os.defpath)]),
            )
            proc = subprocess.Popen(
                _with_ssh_program(args, ssh_path), env=env, close_fds=True, start_new_session=True
            )
            _accept_sessions(router, dest, listener, proc, deadline)
            return proc.returncode
    finally:
        shutil.rmtree(directory, ignore_errors=True)
