"""Let processes on this machine join a Router over a UNIX socket.

The listening side (e.g. the Ansible mux) calls `listen(router)`; another
process (e.g. an Ansible worker) calls `connect(listener.path)` and becomes a
*child* of the listener's context: it gets a fresh context ID, its parent is
the listener, and every message it sends to any other context is routed
through the listener. So the client can:

- send messages to the listener and get replies, including service calls
  (`context.call_service(...)`);
- talk to any context the listener can reach, e.g. contexts a service
  created at its request, whose IDs it learnt from the replies;
- receive messages from the listener at handles it registered.

The client does not serve CALL_FUNCTION (its main thread is its own) and
does not start contexts of its own: it asks the listener to. When the link
to the listener breaks, the client's Broker shuts down, as a child's does
when its parent goes, so every pending call fails with ChannelError.

Authority: a client can never claim another context's authority. By
default every message from it carries its own ID as authority, so it may
only call services exposed to any caller (AllowAny). With
`grant_authority=True`, messages from clients running as our own uid
carry the listener's authority instead: they may call functions in every
context the listener may call, and services exposed to its parents
(AllowParents). That grants nothing new, since such a peer can already
read our keys and debug our process; the Ansible mux needs it so workers
can call functions in the targets.

Safety: the socket lives in a fresh directory of mode 0700 (made race-free
by tempfile.mkdtemp()) unless a path is given; a path starting with a NUL
byte is a Linux abstract-namespace name, which file permissions do not
protect. In every case peers are checked with SO_PEERCRED, and a peer whose
uid is not ours (nor in `allowed_uids`) is refused and logged. The Broker
thread never blocks: the handshake is non-blocking and bounded in time.
"""

import errno
import os
import socket
import stat
import struct
import tempfile

import mitogen
import mitogen.core
import mitogen.parent
from mitogen.core import LOG

#: Seconds a client may take to send its greeting.
HANDSHAKE_TIMEOUT = 10.0

#: Default seconds connect() waits for the listener.
CONNECT_TIMEOUT = 30.0

MAGIC = b"MUX1"

#: Client to listener: magic, client pid.
HELLO = struct.Struct(">4sL")

#: Listener to client: magic, new context ID, listener's context ID,
#: maximum message size, number of further parent IDs (each '>L').
REPLY = struct.Struct(">4sLLLL")
PARENT_ID = struct.Struct(">L")

#: struct ucred: pid, uid, gid.
UCRED = struct.Struct("3i")


class ConnectError(mitogen.core.StreamError):
    """connect() could not join the listener's tree."""


def get_peer_creds(sock):
    """Return `(pid, uid, gid)` of the process at the other end of the
    connected UNIX socket `sock`."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size)
    return UCRED.unpack(data)


def is_path_dead(path):
    """True if nothing accepts connections on the socket at `path`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as e:
        return e.errno in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        sock.close()
    return False


class _ListenerStream(mitogen.core.Stream):
    """A Stream whose readable descriptor is a listening socket."""

    def on_receive(self, broker):
        self.protocol.on_accept_client(broker)


class Listener(mitogen.core.Protocol):
    """Accept clients on a listening UNIX socket, registered with the
    Broker; see the module docstring.

    :param path: socket path, a name starting with '\\0' for the abstract
        namespace, or None for a socket in a new private directory.
    :param allowed_uids: further uids allowed to connect besides ours.
    :param grant_authority: let clients of our uid act with our authority.
    """

    stream_class = _ListenerStream

    @classmethod
    def build_stream(cls, router, path=None, backlog=100, allowed_uids=(), grant_authority=False):
        """Create and bind the socket; return the Stream, not yet watched
        by the Broker (listen() does both)."""
        stream = super(Listener, cls).build_stream(
            router, path, backlog, allowed_uids, grant_authority
        )
        stream.name = "unix_listener"
        stream.accept(os.dup(stream.protocol._sock.fileno()), None)
        stream.receive_side.keep_alive = False
        return stream

    def __init__(self, router, path=None, backlog=100, allowed_uids=(), grant_authority=False):
        if not hasattr(socket, "SO_PEERCRED"):
            raise mitogen.core.Error(
                "mitogen.unix needs SO_PEERCRED to check peers, which this platform lacks"
            )
        if not mitogen.is_master:
            raise mitogen.core.Error(
                "mitogen.unix.listen() works only in the "
                "master (context IDs are allocated "
                "there without blocking)"
            )
        self._router = router
        self._uids = {os.geteuid()} | set(allowed_uids)
        self._grant_authority = grant_authority
        self._dir = None
        self._identity = None
        if path is None:
            self._dir = tempfile.mkdtemp(prefix="mitogen_unix_")
            path = os.path.join(self._dir, "sock")
        self.path = path
        try:
            self._sock = self._bind(path, backlog)
        except Exception:
            self._remove_dir()
            raise

    def __repr__(self):
        return "unix.Listener(%r)" % (self.path,)

    def _is_abstract(self):
        return self.path.startswith("\0")

    def _bind(self, path, backlog):
        if not self._is_abstract() and os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise mitogen.core.Error("cannot listen on %r: it exists and is not a socket", path)
            if not is_path_dead(path):
                raise mitogen.core.Error("cannot listen on %r: another listener is using it", path)
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise mitogen.core.Error("cannot listen on %r: %s", path, e)
        if not self._is_abstract():
            st = os.lstat(path)
            self._identity = st.st_dev, st.st_ino
        return sock

    def stop(self):
        """Stop accepting clients and remove the socket (and the directory
        made for it); connected clients stay connected. Any thread."""
        broker = self._router.broker
        try:
            broker.defer_sync(
                lambda: self.stream.on_disconnect(broker), timeout=broker.shutdown_timeout + 5
            )
        except mitogen.core.Error:
            # The Broker has exited, and disconnected every stream on exit.
            pass

    def on_disconnect(self, broker):
        super().on_disconnect(broker)
        self._sock.close()
        self._remove_socket()
        self._remove_dir()
        LOG.debug("%r: stopped", self)

    def _remove_socket(self):
        if self._identity is None:
            return
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.path)
        except OSError as e:
            LOG.warning("%r: could not remove the socket: %s", self, e)
        self._identity = None

    def _remove_dir(self):
        if self._dir is not None:
            try:
                os.rmdir(self._dir)
            except OSError as e:
                LOG.warning("%r: could not remove %s: %s", self, self._dir, e)
            self._dir = None

    def on_accept_client(self, broker):
        try:
            sock, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            LOG.error("%r: accept() failed: %s", self, e)
            return
        try:
            pid, uid, gid = get_peer_creds(sock)
        except OSError as e:
            LOG.error("%r: refused a client whose credentials could not be read: %s", self, e)
            sock.close()
            return
        if uid not in self._uids:
            LOG.error(
                "%r: refused connection from pid %d: uid %d is not allowed (allowed: %s)",
                self,
                pid,
                uid,
                ", ".join(str(u) for u in sorted(self._uids)),
            )
            sock.close()
            return
        stream = _Handshake.build_stream(self, broker, uid)
        stream.name = "unix_client.pid%d" % (pid,)
        fd = sock.detach()
        stream.accept(fd, fd)
        broker.start_receive(stream)

    def on_hello(self, stream, pid, uid):
        """Answer a client's greeting and attach it as a child context;
        runs on the Broker thread."""
        router = self._router
        context_id = router.allocate_id()
        parent_ids = [mitogen.context_id] + list(mitogen.parent_ids)
        reply = REPLY.pack(
            MAGIC, context_id, mitogen.context_id, router.max_message_size, len(parent_ids) - 1
        )
        reply += b"".join(PARENT_ID.pack(i) for i in parent_ids[1:])
        if stream.transmit_side.write(reply) != len(reply):
            LOG.error("%r: client pid %d went away during the handshake", self, pid)
            return stream.on_disconnect(router.broker)
        if self._grant_authority and uid == os.geteuid():
            auth_id = mitogen.context_id
        else:
            auth_id = context_id
        name = "unix_client.%d" % (pid,)
        stream.name = name
        protocol = mitogen.core.MitogenProtocol(router, context_id, auth_id=auth_id)
        # A client acting with our authority may also reach our other
        # children when the router is unidirectional.
        protocol.is_privileged = auth_id == mitogen.context_id
        stream.set_protocol(protocol)
        context = router.context_by_id(context_id, name=name)
        router.register(context, stream)
        LOG.debug("%r: pid %d (uid %d) joined as context %d", self, pid, uid, context_id)


class _Handshake(mitogen.core.Protocol):
    """Read a client's greeting without blocking, then hand the stream to
    the Listener; drop clients that stay silent or send garbage."""

    def __init__(self, listener, broker, uid):
        self._listener = listener
        self._uid = uid
        self._buf = b""
        self._timer = broker.timers.schedule(
            mitogen.core.now() + HANDSHAKE_TIMEOUT, self._on_timeout
        )

    @property
    def read_size(self):
        return HELLO.size - len(self._buf)

    def _on_timeout(self):
        LOG.error("%r: no greeting within %.1f seconds; disconnecting", self, HANDSHAKE_TIMEOUT)
        self.stream.on_disconnect(self._listener._router.broker)

    def on_receive(self, broker, buf):
        self._buf += buf
        if len(self._buf) < HELLO.size:
            return
        self._timer.cancel()
        magic, pid = HELLO.unpack(self._buf)
        if magic != MAGIC:
            LOG.error("%r: bad greeting %r; disconnecting", self, self._buf)
            return self.stream.on_disconnect(broker)
        self._listener.on_hello(self.stream, pid, self._uid)

    def on_disconnect(self, broker):
        self._timer.cancel()
        super().on_disconnect(broker)


def listen(router, path=None, backlog=100, allowed_uids=(), grant_authority=False):
    """Listen for clients on a UNIX socket; return the Listener, whose
    `path` clients pass to connect(). See Listener for the arguments."""
    stream = Listener.build_stream(router, path, backlog, allowed_uids, grant_authority)
    router.broker.start_receive(stream)
    return stream.protocol


def _handshake(path, timeout):
    """Greet the listener; return `(fd, context_id, parent_ids,
    max_message_size)`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        try:
            sock.sendall(HELLO.pack(MAGIC, os.getpid()))
            magic, context_id, parent_id, max_size, count = REPLY.unpack(
                mitogen.parent.recv_exact(sock, REPLY.size)
            )
            if magic != MAGIC:
                raise ConnectError("%r is not a mitogen.unix listener", path)
            data = mitogen.parent.recv_exact(sock, count * PARENT_ID.size)
        except (EOFError, ConnectionError):
            raise ConnectError(
                "the listener at %r closed the connection "
                "during the handshake (a listener refuses "
                "peers whose uid it does not allow)",
                path,
            )
        parent_ids = [parent_id] + [
            PARENT_ID.unpack_from(data, i * PARENT_ID.size)[0] for i in range(count)
        ]
        return sock.detach(), context_id, parent_ids, max_size
    except socket.timeout:
        raise mitogen.core.TimeoutError(
            "timed out after %.1f seconds joining the listener at %r", timeout, path
        )
    except OSError as e:
        raise ConnectError("cannot connect to %r: %s", path, e)
    finally:
        sock.close()


def connect(path, broker=None, timeout=CONNECT_TIMEOUT):
    """Join the tree of the listener at `path` as its child; return
    `(router, context)`, where `context` is the listener's context.

    Sets this process's mitogen.context_id, parent_id and parent_ids, so
    call it in a process that has no other Router. A Broker is created if
    `broker` is None; either way it shuts down when the link breaks.

    :raises ConnectError: the listener is absent or refused us.
    :raises mitogen.core.TimeoutError: no answer within `timeout` seconds.
    """
    fd, context_id, parent_ids, max_size = _handshake(path, timeout)
    mitogen.is_master = False
    mitogen.context_id = context_id
    mitogen.parent_id = parent_ids[0]
    mitogen.parent_ids = parent_ids
    if broker is None:
        broker = mitogen.core.Broker(mitogen.parent.PREFERRED_POLLER)
    router = mitogen.parent.Router(broker)
    router.max_message_size = max_size
    context = router.context_by_id(parent_ids[0], name="unix_listener")

    def attach():
        stream = mitogen.core.MitogenProtocol.build_stream(router, parent_ids[0])
        stream.name = "unix_listener"
        stream.accept(fd, fd)
        mitogen.core.listen(stream, "disconnect", broker.shutdown)
        router.register_parent(context, stream)

    broker.defer_sync(attach)
    LOG.debug("joined the listener at %r as context %d", path, context_id)
    return router, context
