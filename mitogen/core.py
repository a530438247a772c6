"""The bootstrap core: everything a child context needs to talk to its parent.

This module is sent, minimised and compressed, to every new context, so it
must stay small and use only the standard library. It owns: the wire framing
and the deny-by-default serialiser, Latch/Receiver/Sender/Channel, the Poller
and Broker (the only code that touches file descriptors), the Router
(routing, handles, authority checks), the Dispatcher (CALL_FUNCTION), the
Importer (import over the wire), log forwarding, and ExternalContext (the
child's main program).
"""

import collections
import errno
import fcntl
import heapq
import importlib
import importlib.machinery
import io
import itertools
import logging
import os
import pickle
import select
import struct
import sys
import threading
import time
import traceback
import zlib

import mitogen

LOG = logging.getLogger("mitogen")

#: Default size of reads from file descriptors.
CHUNK_SIZE = 131072

#: Default largest message a Router accepts or sends.
MAX_MESSAGE_SIZE = 128 * 1048576

# Fixed handles. Dynamically allocated handles start at 1000.
GET_MODULE = 100
CALL_FUNCTION = 101
FORWARD_LOG = 102
ADD_ROUTE = 103
DEL_ROUTE = 104
ALLOCATE_ID = 105
SHUTDOWN = 106
LOAD_MODULE = 107
FORWARD_MODULE = 108
DETACHING = 109
CALL_SERVICE = 110
STUB_CALL_SERVICE = 111

#: reply_to value marking a message as dead: its sender or route has gone.
IS_DEAD = 999

# Frame header: magic, encoding, pad, dst_id, src_id, auth_id, handle,
# reply_to, length.
HEADER = struct.Struct(">HBxLLLLLL")
HEADER_LEN = HEADER.size
MAGIC = 0x4D47

#: Message body is opaque bytes.
ENC_RAW = 0
#: Message body is a restricted pickle.
ENC_PICKLE = 1
ENCODINGS = (ENC_RAW, ENC_PICKLE)

PICKLE_PROTOCOL = 4

#: The compressed bootstrap bundle this context was started from, kept to
#: start grandchildren (set by ExternalContext; built lazily in the master
#: by mitogen.parent.get_preamble()).
preamble = None


class Error(Exception):
    """Base for every exception raised by Mitogen."""

    def __init__(self, fmt=None, *args):
        if args:
            fmt %= args
        Exception.__init__(self, fmt)


class LatchError(Error):
    """Raised by Latch.get() when the latch is closed."""


class StreamError(Error):
    """Raised when a stream cannot be established or carries bad data.
    A failed connection attempt also sets `kind` (what failed, e.g.
    'bad_password'; see mitogen.parent.Connection) and `output` (the
    child's last lines of output, secrets hidden), through via= hops too."""

    kind = None  # type: str | None
    output = None  # type: str | None


class TimeoutError(StreamError):
    """Raised when a blocking operation does not finish in time."""

    kind = "timeout"


class ChannelError(Error):
    """Raised when a channel dies or has been closed."""

    remote_msg = "Channel closed by remote end."
    local_msg = "Channel closed by local end."


class CallError(Error):
    """A remote function raised: carries the remote type, message and
    traceback. `type_name`, `message` and `traceback_text` hold the parts."""

    def __init__(self, e, message=None, traceback_text=None):
        if isinstance(e, BaseException):
            type_name = qualname(type(e))
            message = str(e)
            tb = e.__traceback__
            traceback_text = "".join(traceback.format_tb(tb)) if tb else ""
        else:
            type_name = e
        self.type_name = type_name
        self.message = message or ""
        self.traceback_text = traceback_text or ""
        text = "%s: %s" % (type_name, self.message)
        if self.traceback_text:
            text += "\n" + self.traceback_text
        Error.__init__(self, text)

    def __reduce__(self):
        return _unpickle_call_error, (self.type_name, self.message, self.traceback_text)


def _unpickle_call_error(type_name, message, traceback_text):
    for part in type_name, message, traceback_text:
        if not isinstance(part, str) or len(part) > 100000:
            raise TypeError("cannot unpickle CallError: bad input")
    return CallError(type_name, message, traceback_text)


class Blob(bytes):
    """Bytes whose repr() hides the content (large or sensitive data)."""

    def __repr__(self):
        return "[blob: %d bytes]" % len(self)

    def __reduce__(self):
        return Blob, (bytes(self),)


class Secret(str):
    """A string whose repr() and str-formatting in logs hide it."""

    def __repr__(self):
        return "[secret]"

    def __reduce__(self):
        return Secret, (str(self),)


class Kwargs(dict):
    """A dict of keyword arguments for a remote call."""

    def __repr__(self):
        return "Kwargs(%s)" % dict.__repr__(self)

    def __reduce__(self):
        return Kwargs, (dict(self),)


def qualname(obj):
    """Return `module.Name` for a class or function."""
    return "%s.%s" % (obj.__module__, obj.__qualname__)


def to_text(o):
    """Decode bytes as UTF-8, or return str(o)."""
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    return str(o)


def has_parent_authority(msg, _stream=None):
    """Policy allowing only messages sent on the authority of this context or
    one of its ancestors."""
    return msg.auth_id == mitogen.context_id or msg.auth_id in mitogen.parent_ids


def takes_econtext(func):
    """Mark `func` to receive the ExternalContext as the `econtext` kwarg."""
    func.mitogen_takes_econtext = True
    return func


def takes_router(func):
    """Mark `func` to receive the Router as the `router` kwarg."""
    func.mitogen_takes_router = True
    return func


def set_nonblock(fd):
    """Set O_NONBLOCK on `fd`."""
    os.set_blocking(fd, False)


def set_block(fd):
    """Clear O_NONBLOCK on `fd`."""
    os.set_blocking(fd, True)


def set_cloexec(fd):
    """Set FD_CLOEXEC on `fd`."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFD)
    fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)


def pipe():
    """Return a close-on-exec (rfd, wfd) pipe pair."""
    rfd, wfd = os.pipe()
    set_cloexec(rfd)
    set_cloexec(wfd)
    return rfd, wfd


_DISCONNECT_ERRNOS = (errno.EPIPE, errno.ECONNRESET, errno.EIO, errno.EBADF, errno.ENOTCONN)


def io_op(func, *args):
    """Call `func(*args)`, mapping disconnection errors to a flag.

    :returns: `(result, disconnected)`; result is None when the call would
        have blocked or the peer has gone.
    """
    try:
        return func(*args), False
    except OSError as e:
        if e.errno in _DISCONNECT_ERRNOS:
            return None, True
        if e.errno in (errno.EAGAIN, errno.EINTR):
            return None, False
        raise


def listen(obj, name, func):
    """Arrange for `func()` to be called when signal `name` fires on `obj`."""
    obj.__dict__.setdefault("_signals", {}).setdefault(name, []).append(func)


def unlisten(obj, name, func):
    """Remove `func` from signal `name` on `obj`. Raises ValueError if it was
    not registered."""
    obj.__dict__.get("_signals", {}).get(name, []).remove(func)


def fire(obj, name, *args, **kwargs):
    """Call every function listening for signal `name` on `obj`."""
    for func in list(obj.__dict__.get("_signals", {}).get(name, ())):
        func(*args, **kwargs)


def now():
    return time.monotonic()


# ---------------------------------------------------------------------------
# Serialisation.


def _unpickle_context(router, context_id, name):
    if (
        not isinstance(context_id, int)
        or context_id < 0
        or not (name is None or (isinstance(name, str) and len(name) < 256))
    ):
        raise TypeError("cannot unpickle Context: bad input")
    return router.context_by_id(context_id, name=name)


def _unpickle_sender(router, context_id, dst_handle):
    if not (
        isinstance(context_id, int)
        and isinstance(dst_handle, int)
        and context_id >= 0
        and dst_handle > 0
    ):
        raise TypeError("cannot unpickle Sender: bad input")
    return Sender(router.context_by_id(context_id), dst_handle)


#: Mitogen types an incoming pickle may construct, with the one plain type
#: each accepts as its only argument.
_SAFE_TYPES = {"Blob": bytes, "Secret": str, "Kwargs": dict}


def _construct(name, args):
    if len(args) != 1 or type(args[0]) is not _SAFE_TYPES[name]:
        raise TypeError("cannot unpickle %s: bad input" % (name,))
    return globals()[name](args[0])


class _Unpickler(pickle.Unpickler):
    """Rebuild only plain data and Mitogen's own types."""

    def __init__(self, data, router):
        pickle.Unpickler.__init__(self, io.BytesIO(data), encoding="bytes")
        self.router = router

    def find_class(self, module, name):
        if module == __name__:
            if name in _SAFE_TYPES:
                return lambda *args: _construct(name, args)
            if name == "_unpickle_call_error":
                return _unpickle_call_error
            if name in ("_unpickle_context", "_unpickle_sender"):
                func = globals()[name]
                return lambda *args: func(self.router, *args)
        raise StreamError("refused to unpickle %s.%s: type not allowed", module, name)


class Message:
    """A routed message: header fields and a byte body."""

    dst_id = None
    handle = None
    reply_to = None
    data = b""
    encoding = ENC_RAW
    router = None
    receiver = None
    stream = None

    def __init__(self, **kwargs):
        self.src_id = mitogen.context_id
        self.auth_id = mitogen.context_id
        self.__dict__.update(kwargs)

    def __repr__(self):
        return "Message(%r, %r, %r, %r, %r, %r..%d)" % (
            self.dst_id,
            self.src_id,
            self.auth_id,
            self.handle,
            self.reply_to,
            self.data[:50],
            len(self.data),
        )

    @property
    def is_dead(self):
        """True if this message signals that its sender or route is gone."""
        return self.reply_to == IS_DEAD

    @classmethod
    def dead(cls, reason=None, **kwargs):
        """Return a dead message carrying an optional reason."""
        return cls(reply_to=IS_DEAD, data=(reason or "").encode("utf-8"), **kwargs)

    @classmethod
    def pickled(cls, obj, **kwargs):
        """Return a message whose body is `obj` serialised. An object that
        cannot be serialised becomes a CallError saying why."""
        try:
            data = pickle.dumps(obj, PICKLE_PROTOCOL)
        except Exception as e:
            data = pickle.dumps(CallError(e), PICKLE_PROTOCOL)
        return cls(data=data, encoding=ENC_PICKLE, **kwargs)

    def reply(self, obj, router=None, **kwargs):
        """Send `obj` (a Message or any serialisable value) back to this
        message's sender."""
        msg = obj if isinstance(obj, Message) else Message.pickled(obj)
        msg.dst_id = self.src_id
        msg.handle = self.reply_to
        msg.__dict__.update(kwargs)
        (router or self.router).route(msg)

    def _throw_dead(self):
        raise ChannelError(to_text(self.data) or ChannelError.remote_msg)

    def unpickle(self, throw=True, throw_dead=True):
        """Deserialise the body. Raise ChannelError for a dead message (if
        `throw_dead`) and CallError when the body is one (if `throw`)."""
        if self.is_dead and throw_dead:
            self._throw_dead()
        if self.encoding != ENC_PICKLE:
            raise StreamError("message body is not serialised data")
        try:
            obj = _Unpickler(self.data, self.router).load()
        except StreamError:
            raise
        except Exception as e:
            raise StreamError("cannot unpickle message: %s", e)
        if throw and isinstance(obj, CallError):
            raise obj
        return obj

    def pack_header(self):
        return HEADER.pack(
            MAGIC,
            self.encoding,
            self.dst_id,
            self.src_id,
            self.auth_id,
            self.handle,
            self.reply_to or 0,
            len(self.data),
        )


class Decoder:
    """Turn a byte stream into Messages; pure, no I/O. Raises StreamError on
    a corrupt or oversized frame, after which the decoder must be dropped.

    Chunks are only joined once a whole frame (or header) is present, so a
    large frame costs one join rather than a copy per chunk."""

    def __init__(self, max_message_size=MAX_MESSAGE_SIZE):
        self.max_message_size = max_message_size
        self._chunks = []
        self._size = 0
        self._need = HEADER_LEN

    def __len__(self):
        return self._size

    def pending(self):
        """Bytes still missing from the frame being received."""
        return self._need - self._size

    def _check(self, magic, enc, length):
        if magic != MAGIC:
            raise StreamError("corrupt frame: bad magic 0x%04x", magic)
        if enc not in ENCODINGS:
            raise StreamError("corrupt frame: unknown encoding %d", enc)
        if length > self.max_message_size:
            raise StreamError(
                "oversized frame: %d bytes exceeds the maximum of %d", length, self.max_message_size
            )

    def feed(self, data):
        if data:
            self._chunks.append(bytes(data))
            self._size += len(data)
        if self._size < self._need:
            return []
        buf = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        msgs = []
        pos = 0
        while True:
            if len(buf) - pos < HEADER_LEN:
                need = HEADER_LEN
                break
            (magic, enc, dst_id, src_id, auth_id, handle, reply_to, length) = HEADER.unpack_from(
                buf, pos
            )
            self._check(magic, enc, length)
            end = pos + HEADER_LEN + length
            if len(buf) < end:
                need = end - pos
                break
            msgs.append(
                Message(
                    dst_id=dst_id,
                    src_id=src_id,
                    auth_id=auth_id,
                    handle=handle,
                    reply_to=reply_to,
                    encoding=enc,
                    data=buf[pos + HEADER_LEN : end],
                )
            )
            pos = end
        rest = buf[pos:] if pos else buf
        self._chunks = [rest] if rest else []
        self._size = len(rest)
        self._need = need
        return msgs


# ---------------------------------------------------------------------------
# Synchronisation and channels.


class Latch:
    """A thread-safe queue whose get() blocks with a timeout; closing it
    wakes every waiter with LatchError."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._queue = collections.deque()
        self.closed = False
        #: Called with the latch after every put(); used by Select.
        self.notify = None

    def __repr__(self):
        return "Latch(size=%d, closed=%r)" % (len(self._queue), self.closed)

    def size(self):
        return len(self._queue)

    def empty(self):
        return not self._queue

    def close(self):
        """Wake every waiter with LatchError; later get() calls fail too."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def get(self, timeout=None, block=True):
        """Return the next item, waiting up to `timeout` seconds.

        :raises TimeoutError: nothing arrived in time (or `block` is False).
        :raises LatchError: the latch was closed.
        """
        with self._cond:
            if timeout is not None:
                deadline = now() + timeout
            while not self._queue:
                if self.closed:
                    raise LatchError()
                if not block:
                    raise TimeoutError()
                if timeout is None:
                    self._cond.wait()
                else:
                    remaining = deadline - now()
                    if remaining <= 0:
                        raise TimeoutError()
                    self._cond.wait(remaining)
            return self._queue.popleft()

    def put(self, obj=None):
        """Enqueue `obj` and wake one waiter."""
        with self._cond:
            if self.closed:
                raise LatchError()
            self._queue.append(obj)
            self._cond.notify()
        if self.notify:
            self.notify(self)


class Receiver:
    """Receive messages sent to a handle.

    :param respondent: if given, the receiver is woken with a dead message
        when that Context disconnects.
    """

    #: Called with the receiver after each message arrives; used by Select.
    notify = None

    def __init__(
        self, router, handle=None, persist=True, respondent=None, policy=None, overwrite=False
    ):
        self.router = router
        self._latch = Latch()
        self.handle = router.add_handler(
            fn=self.deliver,
            handle=handle,
            policy=policy,
            persist=persist,
            respondent=respondent,
            overwrite=overwrite,
        )

    def __repr__(self):
        return "Receiver(%r, %r)" % (self.router, self.handle)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def to_sender(self):
        """Return a Sender that delivers to this receiver."""
        return Sender(self.router.myself(), self.handle)

    def deliver(self, msg):
        """Queue `msg` as if it had arrived at the handle (the Router calls
        this for each one), then call `notify`."""
        msg.receiver = self
        try:
            self._latch.put(msg)
        except LatchError:
            return
        if self.notify:
            self.notify(self)

    def close(self):
        """Unregister the handle and wake waiters with ChannelError."""
        if self.handle is not None:
            try:
                self.router.del_handler(self.handle)
            except KeyError:
                pass
            self.handle = None
        try:
            self._latch.put(Message.dead(ChannelError.local_msg))
        except LatchError:
            pass

    def shutdown(self):
        """close(), and also wake every other thread blocked in get() (a
        pool of workers sharing the receiver) with LatchError."""
        self.close()
        self._latch.close()

    def size(self):
        return self._latch.size()

    def empty(self):
        return self._latch.empty()

    def get(self, timeout=None, block=True, throw_dead=True):
        """Return the next Message, waiting up to `timeout` seconds.

        :raises ChannelError: a dead message arrived and `throw_dead` is set.
        :raises TimeoutError: nothing arrived in time.
        """
        msg = self._latch.get(timeout=timeout, block=block)
        if msg.is_dead and throw_dead:
            msg._throw_dead()
        return msg

    def __iter__(self):
        """Yield messages until a dead message arrives."""
        while True:
            try:
                yield self.get()
            except ChannelError:
                return


class Sender:
    """Send values to a handle in a (possibly remote) Context."""

    def __init__(self, context, dst_handle):
        self.context = context
        self.dst_handle = dst_handle

    def __repr__(self):
        return "Sender(%r, %r)" % (self.context, self.dst_handle)

    def __reduce__(self):
        return _unpickle_sender, (self.context.context_id, self.dst_handle)

    def send(self, data):
        """Serialise `data` and send it."""
        self.context.send(Message.pickled(data, handle=self.dst_handle))

    def close(self):
        """Tell the remote receiver no more data will follow."""
        self.context.send(Message.dead(ChannelError.remote_msg, handle=self.dst_handle))


class Channel(Sender, Receiver):
    """A bidirectional pair of Sender and Receiver."""

    def __init__(self, router, context, dst_handle, handle=None):
        Sender.__init__(self, context, dst_handle)
        Receiver.__init__(self, router, handle)

    def __repr__(self):
        return "Channel(%r, %r)" % (Sender.__repr__(self), Receiver.__repr__(self))

    def close(self):
        Receiver.close(self)
        Sender.close(self)


class Context:
    """A handle to a (possibly remote) context, used to send it messages."""

    def __init__(self, router, context_id, name=None):
        self.router = router
        self.context_id = context_id
        self.name = name

    def __reduce__(self):
        return _unpickle_context, (self.context_id, self.name)

    def __repr__(self):
        return "Context(%s, %r)" % (self.context_id, self.name)

    def on_disconnect(self):
        fire(self, "disconnect")

    def send(self, msg):
        """Route `msg` to this context."""
        msg.dst_id = self.context_id
        self.router.route(msg)

    def send_async(self, msg, persist=False):
        """Send `msg` and return a Receiver for the replies."""
        receiver = Receiver(self.router, persist=persist, respondent=self)
        msg.reply_to = receiver.handle
        self.send(msg)
        return receiver

    def send_await(self, msg, deadline=None):
        """Send `msg` and return its unpickled reply."""
        return self.send_async(msg).get(timeout=deadline).unpickle()

    def call_service_async(self, service_name, method_name, **kwargs):
        """Start a call to `service_name.method_name` in this context."""
        if not isinstance(service_name, str):
            service_name = service_name.name()
        msg = Message.pickled((service_name, method_name, Kwargs(kwargs)), handle=CALL_SERVICE)
        return self.send_async(msg)

    def call_service(self, service_name, method_name, timeout=None, **kwargs):
        """Call `service_name.method_name` in this context and return the
        result."""
        recv = self.call_service_async(service_name, method_name, **kwargs)
        return recv.get(timeout=timeout).unpickle()


# ---------------------------------------------------------------------------
# Pollers, sides, streams and protocols.


class Poller:
    """Track interest in file descriptors and wait for readiness; the base
    implementation uses select(2)."""

    _repr = "Poller()"

    def __init__(self):
        self._rfds = {}
        self._wfds = {}

    def __repr__(self):
        return self._repr

    @property
    def readers(self):
        return list(self._rfds.items())

    @property
    def writers(self):
        return list(self._wfds.items())

    def close(self):
        """Release any kernel resources."""

    def start_receive(self, fd, data=None):
        self._rfds[fd] = fd if data is None else data

    def stop_receive(self, fd):
        self._rfds.pop(fd, None)

    def start_transmit(self, fd, data=None):
        self._wfds[fd] = fd if data is None else data

    def stop_transmit(self, fd):
        self._wfds.pop(fd, None)

    def _poll(self, timeout):
        rfds, wfds, _ = select.select(self._rfds, self._wfds, (), timeout)
        for fd in rfds:
            if fd in self._rfds:
                yield self._rfds[fd]
        for fd in wfds:
            if fd in self._wfds:
                yield self._wfds[fd]

    def poll(self, timeout=None):
        """Yield the data of each ready descriptor."""
        return self._poll(timeout)


class Side:
    """One direction of a Stream: a non-blocking file descriptor."""

    closed = False

    def __init__(self, stream, fd, keep_alive=True, blocking=False):
        self.stream = stream
        self.fd = fd
        self.keep_alive = keep_alive
        if not blocking:
            set_nonblock(fd)

    def __repr__(self):
        return "<Side of %r fd %s>" % (self.stream, self.fd)

    def fileno(self):
        if self.closed:
            raise StreamError("%r is closed", self)
        return self.fd

    def close(self):
        if not self.closed:
            self.closed = True
            os.close(self.fd)

    def read(self, n=CHUNK_SIZE):
        """Return bytes read, b'' on disconnection, or None if the read
        would block."""
        if self.closed:
            return b""
        s, disconnected = io_op(os.read, self.fd, n)
        return b"" if disconnected else s

    def write(self, s):
        """Return the number of bytes written, or None on disconnection."""
        if self.closed:
            return None
        written, disconnected = io_op(os.write, self.fd, s)
        if disconnected:
            return None
        return written or 0


class Stream:
    """A pair of Sides driven by the Broker and interpreted by a
    Protocol."""

    receive_side = None
    transmit_side = None
    protocol = None
    name = "default"

    def __repr__(self):
        return "<Stream %s #%04x>" % (self.name, id(self) & 0xFFFF)

    def set_protocol(self, protocol):
        self.protocol = protocol
        protocol.stream = self

    def accept(self, rfd, wfd):
        """Attach descriptors; a single bidirectional fd is duplicated so
        each Side owns its own."""
        if rfd is not None:
            self.receive_side = Side(self, rfd)
        if wfd is not None:
            if wfd == rfd:
                wfd = os.dup(wfd)
                set_cloexec(wfd)
            self.transmit_side = Side(self, wfd)

    def on_receive(self, broker):
        buf = self.receive_side.read(self.protocol.read_size)
        if buf is None:
            return
        if not buf:
            return self.on_disconnect(broker)
        self.protocol.on_receive(broker, buf)

    def on_transmit(self, broker):
        self.protocol.on_transmit(broker)

    def on_shutdown(self, broker):
        fire(self, "shutdown")
        self.protocol.on_shutdown(broker)

    def on_disconnect(self, broker):
        if self.protocol.disconnected:
            return
        self.protocol.disconnected = True
        self.protocol.on_disconnect(broker)
        fire(self, "disconnect")

    def pending_bytes(self):
        """Bytes queued for transmission; call on the Broker thread."""
        pending = getattr(self.protocol, "pending_bytes", None)
        return pending() if pending else 0


class IoLogger(Stream):
    """The Stream IoLoggerProtocol.build_stream() returns: it logs each
    line written to a descriptor (ExternalContext.stdout_log, stderr_log)."""


class Protocol:
    """Interpret a Stream's bytes. Subclasses override on_receive()."""

    stream_class = Stream
    stream = None
    read_size = CHUNK_SIZE
    disconnected = False

    @classmethod
    def build_stream(cls, *args, **kwargs):
        stream = cls.stream_class()
        stream.set_protocol(cls(*args, **kwargs))
        return stream

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, self.stream and self.stream.name)

    def on_receive(self, broker, data):
        """Called with each chunk read from the receive side."""

    def on_transmit(self, broker):
        """Called when the transmit side is writable."""

    def on_shutdown(self, broker):
        """Called at Broker shutdown; the default disconnects."""
        self.stream.on_disconnect(broker)

    def on_disconnect(self, broker):
        """Stop watching and close both sides."""
        stream = self.stream
        if stream.receive_side:
            broker.stop_receive(stream)
            stream.receive_side.close()
        if stream.transmit_side:
            broker._stop_transmit(stream)
            stream.transmit_side.close()


class BasicStream(Stream):
    """The older Stream, for subclasses that implement on_receive() and
    on_transmit() themselves: on_disconnect() closes both sides and stops
    watching them, on_shutdown() calls on_disconnect()."""

    def on_shutdown(self, broker):
        fire(self, "shutdown")
        self.on_disconnect(broker)

    def on_disconnect(self, broker):
        if self.protocol is None:
            self.set_protocol(Protocol())
        Stream.on_disconnect(self, broker)


class DelimitedProtocol(Protocol):
    """Split the byte stream into lines, calling on_line_received() for
    each. on_line_received() returns False after switching the stream to
    another protocol; the remaining bytes are then handed to it."""

    delimiter = b"\n"
    _trailer = b""

    def on_receive(self, broker, buf):
        buf = self._trailer + buf
        start = 0
        while True:
            end = buf.find(self.delimiter, start)
            if end < 0:
                break
            line = buf[start:end]
            start = end + len(self.delimiter)
            if self.on_line_received(line) is False:
                self._trailer = b""
                if start < len(buf):
                    self.stream.protocol.on_receive(broker, buf[start:])
                return
        self._trailer = buf[start:]
        if self._trailer:
            self.on_partial_line_received(self._trailer)

    def on_line_received(self, line):
        """Handle one line; return False after a protocol switch."""

    def on_partial_line_received(self, line):
        """Called with the bytes after the last delimiter so far."""


class IoLoggerProtocol(DelimitedProtocol):
    """Log each line written to a descriptor (a child's stdout/stderr)."""

    stream_class = IoLogger

    @classmethod
    def build_stream(cls, name, dest_fd):
        rfd, wfd = os.pipe()
        stream = super(IoLoggerProtocol, cls).build_stream(name)
        stream.name = name
        os.dup2(wfd, dest_fd)
        os.close(wfd)
        set_cloexec(rfd)
        stream.accept(rfd, None)
        stream.receive_side.keep_alive = False
        return stream

    def __init__(self, name):
        self._log = logging.getLogger(name)
        self._log.setLevel(logging.INFO)

    def on_line_received(self, line):
        self._log.info("%s", to_text(line).rstrip("\r"))

    def on_disconnect(self, broker):
        if self._trailer:
            self.on_line_received(self._trailer)
            self._trailer = b""
        DelimitedProtocol.on_disconnect(self, broker)


class BufferedWriter:
    """Write to a stream's transmit side, queueing what the descriptor will
    not take now and finishing it when the Broker says it is writable."""

    def __init__(self, broker, protocol):
        self._broker = broker
        self._protocol = protocol
        self._buf = collections.deque()
        self._len = 0

    def pending_bytes(self):
        return self._len

    def write(self, s):
        if not self._len:
            written = self._protocol.stream.transmit_side.write(s)
            if written is None:
                return self._protocol.stream.on_disconnect(self._broker)
            if written == len(s):
                return
            s = memoryview(s)[written:]
            self._broker._start_transmit(self._protocol.stream)
        self._buf.append(s)
        self._len += len(s)

    def on_transmit(self, broker):
        while self._buf:
            buf = self._buf[0]
            written = self._protocol.stream.transmit_side.write(buf)
            if written is None:
                return self._protocol.stream.on_disconnect(broker)
            self._len -= written
            if written < len(buf):
                self._buf[0] = memoryview(buf)[written:]
                return
            self._buf.popleft()
        broker._stop_transmit(self._protocol.stream)


class MitogenProtocol(Protocol):
    """Carry Messages between two Routers.

    :param remote_id: the context ID at the other end.
    :param auth_id: if set, every message arriving here is forced to carry
        this authority (used for untrusted listeners).
    """

    @property
    def read_size(self):
        """Small reads for small messages (a large buffer costs an mmap per
        read); up to 4 MB at a time while a large frame is arriving."""
        pending = self._decoder.pending()
        return min(max(pending, 65536), 4194304)

    def __init__(self, router, remote_id, auth_id=None):
        self._router = router
        self.remote_id = remote_id
        self.auth_id = auth_id
        #: True if the peer is one of our ancestors.
        self.is_privileged = remote_id in mitogen.parent_ids
        self._decoder = Decoder(router.max_message_size)
        self._writer = BufferedWriter(router.broker, self)

    def __repr__(self):
        return "MitogenProtocol(%s)" % (self.remote_id,)

    def pending_bytes(self):
        """Bytes queued for transmission; call on the Broker thread."""
        return self._writer.pending_bytes()

    def on_receive(self, broker, buf):
        try:
            msgs = self._decoder.feed(buf)
        except StreamError as e:
            LOG.error("%r: %s; disconnecting this stream", self, e)
            self.stream.on_disconnect(broker)
            return
        for msg in msgs:
            msg.stream = self.stream
            self._router.route_now(msg, self.stream)

    _close_when_drained = False

    def on_transmit(self, broker):
        self._writer.on_transmit(broker)
        if not self._writer.pending_bytes():
            if self._close_when_drained:
                return self.stream.on_disconnect(broker)
            fire(self.stream, "drain")

    def send(self, msg):
        """Write `msg` to the peer; call on the Broker thread."""
        if self.disconnected:
            return
        self._writer.write(msg.pack_header())
        if msg.data:
            self._writer.write(msg.data)

    def on_shutdown(self, broker):
        """Disconnect once everything queued has been written."""
        self._close_when_drained = True
        if not self._writer.pending_bytes():
            self.stream.on_disconnect(broker)


class Waker(Protocol):
    """Wake the Broker thread from other threads through a pipe, and run
    deferred functions on it."""

    read_size = 128

    @classmethod
    def build_stream(cls, broker):
        stream = super(Waker, cls).build_stream(broker)
        stream.name = "waker"
        stream.accept(*pipe())
        stream.receive_side.keep_alive = False
        return stream

    def __init__(self, broker):
        self._broker = broker
        self._lock = threading.Lock()
        self._deferred = []
        self._pending = False

    def defer(self, func, *args, **kwargs):
        """Arrange for `func(*args, **kwargs)` to run on the Broker."""
        with self._lock:
            if self.stream.transmit_side.closed:
                raise Error("cannot defer %r: the Broker has exited", func)
            self._deferred.append((func, args, kwargs))
            wake = not self._pending
            self._pending = True
        if wake:
            self.stream.transmit_side.write(b" ")

    def on_receive(self, broker, buf):
        with self._lock:
            items = self._deferred
            self._deferred = []
            self._pending = False
        for func, args, kwargs in items:
            try:
                func(*args, **kwargs)
            except Exception:
                LOG.exception("%r: deferred %r crashed", self, func)

    def on_disconnect(self, broker):
        with self._lock:
            Protocol.on_disconnect(self, broker)


# ---------------------------------------------------------------------------
# Timers and the Broker.


class Timer:
    """A function scheduled to run on the Broker at a monotonic time."""

    def __init__(self, when, func):
        self.when = when
        self.func = func
        self.active = True

    def cancel(self):
        """Stop the timer from firing."""
        self.active = False


class TimerList:
    """A heap of Timers; every method must run on the Broker thread."""

    def __init__(self):
        self._heap = []
        self._seq = itertools.count()

    def __len__(self):
        return len(self._heap)

    def get_timeout(self):
        """Seconds until the next timer fires, or None."""
        while self._heap and not self._heap[0][2].active:
            heapq.heappop(self._heap)
        if self._heap:
            return max(0.0, self._heap[0][0] - now())
        return None

    def schedule(self, when, func):
        """Run `func()` at monotonic time `when`; return the Timer."""
        timer = Timer(when, func)
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        return timer

    def expire(self):
        """Fire every due timer."""
        t = now()
        while self._heap and self._heap[0][0] <= t:
            timer = heapq.heappop(self._heap)[2]
            if timer.active:
                timer.active = False
                timer.func()


class Broker:
    """Own the I/O thread: poll descriptors, run deferred calls and timers,
    and shut down in order."""

    poller_class = Poller
    #: Seconds to wait for streams to disconnect gracefully at shutdown.
    shutdown_timeout = 3.0

    def __init__(self, poller_class=None):
        self._alive = True
        self.poller = (poller_class or self.poller_class)()
        self.timers = TimerList()
        self._waker = Waker.build_stream(self)
        self.defer = self._waker.protocol.defer
        self.poller.start_receive(
            self._waker.receive_side.fd, (self._waker.receive_side, self._waker.on_receive)
        )
        self._thread = threading.Thread(target=self._broker_main, name="mitogen.broker")
        self._thread.daemon = True
        self._thread.start()

    def __repr__(self):
        return "Broker(%04x)" % (id(self) & 0xFFFF,)

    def _on_thread(self):
        return threading.current_thread() is self._thread

    def defer_sync(self, func, timeout=None):
        """Run `func()` on the Broker and return its result."""
        if self._on_thread():
            return func()
        latch = Latch()

        def wrapper():
            try:
                latch.put((True, func()))
            except Exception as e:
                latch.put((False, e))

        self.defer(wrapper)
        ok, value = latch.get(timeout=timeout)
        if not ok:
            raise value
        return value

    def _run_here(self, func, *args):
        if self._on_thread():
            func(*args)
        else:
            self.defer(func, *args)

    def start_receive(self, stream):
        """Watch `stream` for readability."""
        side = stream.receive_side
        self._run_here(self.poller.start_receive, side.fd, (side, stream.on_receive))

    def stop_receive(self, stream):
        self._run_here(self.poller.stop_receive, stream.receive_side.fd)

    def _start_transmit(self, stream):
        side = stream.transmit_side
        self.poller.start_transmit(side.fd, (side, stream.on_transmit))

    def _stop_transmit(self, stream):
        self.poller.stop_transmit(stream.transmit_side.fd)

    def keep_alive(self):
        """True while a stream still wants the Broker to run."""
        return any(data[0].keep_alive for _, data in self.poller.readers if isinstance(data, tuple))

    def _call(self, stream, func):
        try:
            func(self)
        except Exception:
            LOG.exception("%r crashed", stream)
            stream.on_disconnect(self)

    def _loop_once(self, timeout=None):
        timer_timeout = self.timers.get_timeout()
        if timeout is None or (timer_timeout is not None and timer_timeout < timeout):
            timeout = timer_timeout
        for side, func in self.poller.poll(timeout):
            self._call(side.stream, func)
        if self.timers:
            self.timers.expire()

    def _broker_exit(self):
        for _, (side, _) in self.poller.readers + self.poller.writers:
            self._call(side.stream, side.stream.on_disconnect)
        self._waker.on_disconnect(self)
        self.poller.close()
        fire(self, "exit")

    def _broker_shutdown(self):
        for _, (side, _) in self.poller.readers:
            self._call(side.stream, side.stream.on_shutdown)
        deadline = now() + self.shutdown_timeout
        while self.keep_alive() and now() < deadline:
            self._loop_once(max(0.0, deadline - now()))
        if self.keep_alive():
            LOG.error(
                "%r: streams still open %.1f seconds after shutdown began; forcing them closed: %r",
                self,
                self.shutdown_timeout,
                [data[0] for _, data in self.poller.readers],
            )

    def _broker_main(self):
        try:
            while self._alive:
                self._loop_once()
            fire(self, "before_shutdown")
            fire(self, "shutdown")
            self._broker_shutdown()
        except Exception:
            LOG.exception("%r: broker crashed", self)
        finally:
            self._broker_exit()

    def _set_dead(self):
        self._alive = False

    def shutdown(self):
        """Ask the Broker to shut down; returns at once (see join())."""
        try:
            self.defer(self._set_dead)
        except Error:
            pass

    def join(self, timeout=None):
        """Wait for the Broker thread to exit."""
        self._thread.join(timeout)


# ---------------------------------------------------------------------------
# The Router.


class Router:
    """Route messages between handlers in this context and streams to
    other contexts, enforcing the authority rules."""

    context_class = Context
    max_message_size = MAX_MESSAGE_SIZE
    #: If True, children may not send messages to each other.
    unidirectional = False
    #: Stream to this context's parent; None in the master.
    parent_stream = None

    def __init__(self, broker):
        self.broker = broker
        listen(broker, "exit", self._on_broker_exit)
        self._lock = threading.Lock()
        self._stream_by_id = {}
        self._context_by_id = {}
        self._handle_map = {}
        self._handles_by_respondent = {}
        self._last_handle = itertools.count(1000)
        self.add_handler(self._on_del_route, DEL_ROUTE, policy=has_parent_authority)

    def __repr__(self):
        return "Router(%r)" % (self.broker,)

    def myself(self):
        """Return a Context referring to this context."""
        return self.context_by_id(mitogen.context_id)

    def context_by_id(self, context_id, via_id=None, create=True, name=None):
        """Return the Context for `context_id`, creating it if needed."""
        context = self._context_by_id.get(context_id)
        if context is None and create:
            context = self.context_class(self, context_id, name=name)
            self._context_by_id.setdefault(context_id, context)
            context = self._context_by_id[context_id]
        elif context is not None and name and not context.name:
            context.name = name
        return context

    def stream_by_id(self, dst_id):
        """Return the stream that leads to `dst_id`, or None."""
        return self._stream_by_id.get(dst_id, self.parent_stream)

    def known_route(self, target_id):
        """Return the stream recorded for `target_id`, or None: unlike
        stream_by_id(), no fallback to the parent stream."""
        return self._stream_by_id.get(target_id)

    def register(self, context, stream):
        """Attach a connected stream for `context` and start reading it."""
        self._context_by_id[context.context_id] = context
        self.add_route(context.context_id, stream)
        listen(stream, "disconnect", lambda: self._on_stream_disconnect(stream))
        self.broker.start_receive(stream)

    def register_parent(self, context, stream):
        """Attach `stream`, the link to this context's parent `context`, as
        parent_stream; unlike register(), no subclass announces it as a
        new child."""
        self.parent_stream = stream
        Router.register(self, context, stream)

    def add_route(self, target_id, stream):
        self._stream_by_id[target_id] = stream

    def del_route(self, target_id):
        """Forget the route to `target_id` and announce its disconnect."""
        if self._stream_by_id.pop(target_id, None) is not None:
            self.context_gone(target_id)

    def _on_stream_disconnect(self, stream):
        gone = [i for i, s in list(self._stream_by_id.items()) if s is stream]
        for target_id in gone:
            self._stream_by_id.pop(target_id, None)
        for target_id in gone:
            self.context_gone(target_id)

    def context_gone(self, target_id):
        """Announce that `target_id` is unreachable: its Context fires
        "disconnect" and handlers it is the respondent of get a dead
        message. Routes are left as they are."""
        context = self._context_by_id.get(target_id)
        if context is not None:
            context.on_disconnect()
        with self._lock:
            handles = self._handles_by_respondent.pop(target_id, ())
        for handle in handles:
            self._kill_handle(handle, "the respondent context %d has disconnected" % (target_id,))

    def _on_del_route(self, msg):
        if msg.is_dead:
            return
        target_id = int(msg.data.partition(b":")[0])
        if self._stream_by_id.get(target_id, self.parent_stream) is self.parent_stream:
            self._stream_by_id.pop(target_id, None)
            self.context_gone(target_id)

    def _on_broker_exit(self):
        with self._lock:
            handles = list(self._handle_map)
        for handle in handles:
            self._kill_handle(handle, "the Broker has exited")

    def _kill_handle(self, handle, reason):
        with self._lock:
            entry = self._handle_map.pop(handle, None)
        if entry is not None:
            fn = entry[1]
            try:
                fn(Message.dead(reason, handle=handle))
            except Exception:
                LOG.exception("%r: handler %r crashed on disconnect", self, fn)

    def add_handler(
        self, fn, handle=None, persist=True, policy=None, respondent=None, overwrite=False
    ):
        """Call `fn(msg)` on the Broker thread for messages to `handle`.

        :param policy: `policy(msg, stream) -> bool`; refused messages are
            logged and answered with a dead message.
        :param respondent: Context whose disconnect delivers a dead message
            to `fn` and removes the handler.
        :returns: the handle.
        """
        handle = handle or next(self._last_handle)
        with self._lock:
            if handle in self._handle_map and not overwrite:
                raise Error("handle %d is already registered", handle)
            self._handle_map[handle] = persist, fn, policy, respondent
            if respondent is not None:
                self._handles_by_respondent.setdefault(respondent.context_id, set()).add(handle)
        return handle

    def del_handler(self, handle):
        """Remove the handler for `handle`. Raises KeyError if absent."""
        with self._lock:
            _, _, _, respondent = self._handle_map.pop(handle)
            if respondent is not None:
                self._handles_by_respondent.get(respondent.context_id, set()).discard(handle)

    def _invoke(self, msg, stream):
        with self._lock:
            entry = self._handle_map.get(msg.handle)
            if entry is not None and not entry[0]:
                self._handle_map.pop(msg.handle)
        if entry is None:
            if not msg.is_dead:
                LOG.debug("%r: no handler for %r", self, msg)
                self._refuse(
                    msg, "no handler for handle %d in context %d" % (msg.handle, mitogen.context_id)
                )
            return
        persist, fn, policy, respondent = entry
        if respondent is not None and not persist:
            with self._lock:
                self._handles_by_respondent.get(respondent.context_id, set()).discard(msg.handle)
        if policy and not policy(msg, stream):
            LOG.error("%r: policy refused message: %r", self, msg)
            if not persist:
                self.add_handler(fn, msg.handle, persist, policy, respondent)
            self._refuse(msg, "message refused by policy")
            return
        msg.router = self
        try:
            fn(msg)
        except Exception:
            LOG.exception("%r: handler %r crashed on %r", self, fn, msg)

    def _refuse(self, msg, reason):
        if msg.reply_to and not msg.is_dead:
            self.route_now(Message.dead(reason, dst_id=msg.src_id, handle=msg.reply_to))

    def _is_from(self, context_id, in_stream):
        """True if `context_id` is reachable through `in_stream`."""
        return self.stream_by_id(context_id) is in_stream

    def route_now(self, msg, in_stream=None):
        """Deliver or forward `msg` at once; call on the Broker thread (from
        any other thread, use route()). `in_stream` is the stream it arrived
        on, None if it starts here."""
        if len(msg.data) > self.max_message_size:
            LOG.error("%r: dropping oversized message %r", self, msg)
            return self._refuse(msg, "message too large (max %d bytes)" % (self.max_message_size,))
        if in_stream is not None:
            protocol = in_stream.protocol
            if not self._is_from(msg.src_id, in_stream):
                LOG.error(
                    "%r: dropping %r from %r: its src_id is not reachable through that stream",
                    self,
                    msg,
                    in_stream,
                )
                return
            if protocol.auth_id is not None:
                msg.auth_id = protocol.auth_id
            elif in_stream is not self.parent_stream and not self._is_from(msg.auth_id, in_stream):
                LOG.error(
                    "%r: dropping %r from %r: it claims authority "
                    "of context %s, which it does not have",
                    self,
                    msg,
                    in_stream,
                    msg.auth_id,
                )
                return
        if msg.dst_id == mitogen.context_id:
            return self._invoke(msg, in_stream)
        out_stream = self.stream_by_id(msg.dst_id)
        if out_stream is None or out_stream is in_stream:
            if not msg.is_dead:
                LOG.debug("%r: no route for %r", self, msg)
            return self._refuse(
                msg, "no route to context %d from %d" % (msg.dst_id, mitogen.context_id)
            )
        if (
            self.unidirectional
            and in_stream is not None
            and not in_stream.protocol.is_privileged
            and not out_stream.protocol.is_privileged
        ):
            LOG.error("%r: refused %r: unidirectional routing", self, msg)
            return self._refuse(msg, "routing between children is disabled")
        out_stream.protocol.send(msg)

    def route(self, msg):
        """Send `msg` from any thread."""
        self.broker.defer(self.route_now, msg)


# ---------------------------------------------------------------------------
# Import over the wire.


class Importer:
    """A sys.meta_path finder that fetches modules the target lacks (and
    always Mitogen itself and __main__) from the parent, caching answers,
    including negative ones."""

    #: Top-level names always fetched from the parent.
    ALWAYS_REMOTE = ("mitogen", "__main__")

    def __init__(self, router, context, whitelist=(), blacklist=()):
        self._router = router
        self._context = context
        self.whitelist = tuple(whitelist)
        self.blacklist = tuple(blacklist)
        self._lock = threading.Lock()
        self._cache = {}
        self._callbacks = {}
        router.add_handler(self._on_load_module, LOAD_MODULE, policy=has_parent_authority)
        listen(router.broker, "shutdown", self._on_shutdown)

    def __repr__(self):
        return "Importer()"

    def _on_shutdown(self):
        with self._lock:
            pending, self._callbacks = self._callbacks, {}
        for callbacks in pending.values():
            for callback in callbacks:
                callback()

    def _on_load_module(self, msg):
        if msg.is_dead:
            return
        tup = msg.unpickle()
        fullname = tup[0]
        with self._lock:
            self._cache[fullname] = tup
            callbacks = self._callbacks.pop(fullname, [])
        for callback in callbacks:
            callback()

    def cached(self, fullname):
        """The LOAD_MODULE tuple received for `fullname`, or None."""
        return self._cache.get(fullname)

    def request_module(self, fullname, callback):
        """Call `callback()` once `fullname` is in the cache (or failed)."""
        with self._lock:
            if fullname in self._cache:
                present = True
            else:
                present = False
                callbacks = self._callbacks.setdefault(fullname, [])
                callbacks.append(callback)
                first = len(callbacks) == 1
        if present:
            return callback()
        if first:
            self._context.send(Message(data=fullname.encode("utf-8"), handle=GET_MODULE))

    def _fetch(self, fullname):
        latch = Latch()
        self.request_module(fullname, latch.put)
        latch.get()
        return self._cache.get(fullname)

    def _is_remote(self, fullname, path):
        top = fullname.partition(".")[0]
        if top in self.ALWAYS_REMOTE:
            return True
        if self.blacklist and fullname.startswith(self.blacklist):
            return False
        if self.whitelist and not fullname.startswith(self.whitelist):
            return False
        if fullname in sys.builtin_module_names:
            return False
        parent = sys.modules.get(fullname.rpartition(".")[0])
        if parent is not None and getattr(parent, "__loader__", None) is self:
            return True
        return not self._found_locally(fullname, path)

    def _found_locally(self, fullname, path):
        """Does another finder have `fullname`: the path finder, or one a
        package installed (six's for `six.moves`)?"""
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, Importer):
                continue
            find = getattr(finder, "find_spec", None)
            if find is not None and find(fullname, path) is not None:
                return True
        return False

    def find_spec(self, fullname, path, target=None):
        if not self._is_remote(fullname, path):
            return None
        parent_name = fullname.rpartition(".")[0]
        parent_tup = self._cache.get(parent_name)
        if (
            parent_tup
            and parent_tup[1] is not None
            and fullname.rpartition(".")[2] not in parent_tup[1]
        ):
            return None
        if threading.current_thread() is self._router.broker._thread:
            raise ImportError("cannot import %s on the Broker thread" % (fullname,))
        tup = self._fetch(fullname)
        if tup is None or tup[3] is None:
            return None
        spec = importlib.machinery.ModuleSpec(
            fullname, self, origin="master:" + tup[2], is_package=tup[1] is not None
        )
        spec.has_location = False
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        fullname = module.__spec__.name
        _, pkg_present, path, source, _ = self._cache[fullname]
        module.__file__ = "master:" + path
        if pkg_present is not None:
            module.__path__ = []
        if fullname == "__main__":
            module.__name__ = "__mitogen_main__"
        code = compile(zlib.decompress(source), module.__file__, "exec", dont_inherit=True)
        exec(code, module.__dict__)

    def get_source(self, fullname):
        tup = self._cache.get(fullname)
        if tup and tup[3] is not None:
            return to_text(zlib.decompress(tup[3]))
        return None


# ---------------------------------------------------------------------------
# Logging.


class LogHandler(logging.Handler):
    """Forward log records to the master as FORWARD_LOG messages."""

    def __init__(self, context):
        logging.Handler.__init__(self)
        self.context = context
        self._local = threading.local()

    def emit(self, rec):
        if getattr(self._local, "in_emit", False):
            return
        self._local.in_emit = True
        try:
            text = self.format(rec)
            data = "%s\x00%d\x00%s" % (rec.name, rec.levelno, text)
            self.context.send(Message(data=data.encode("utf-8"), handle=FORWARD_LOG))
        except Error:
            pass
        finally:
            self._local.in_emit = False


class PidfulStreamHandler(logging.StreamHandler):
    """A StreamHandler writing to /tmp/mitogen.<pid>.log, reopening after
    fork so each process has its own file."""

    def __init__(self, dir_path="/tmp"):
        self.dir_path = dir_path
        self.open_pid = None
        logging.StreamHandler.__init__(self, self._open())

    def _open(self):
        self.open_pid = os.getpid()
        path = os.path.join(self.dir_path, "mitogen.%d.log" % (self.open_pid,))
        return open(path, "a", 1)

    def emit(self, record):
        if self.open_pid != os.getpid():
            self.stream = self._open()
        logging.StreamHandler.emit(self, record)


# ---------------------------------------------------------------------------
# The child's main program.


class Dispatcher:
    """Run CALL_FUNCTION requests on the main thread, one at a time, and
    remember failures per call chain."""

    _error_by_chain_id = {}

    def __init__(self, econtext):
        self.econtext = econtext
        self.recv = Receiver(econtext.router, handle=CALL_FUNCTION, policy=has_parent_authority)
        listen(econtext.broker, "shutdown", self.recv.close)

    @classmethod
    @takes_econtext
    def forget_chain(cls, chain_id, econtext):
        """Drop the remembered failure of `chain_id`."""
        cls._error_by_chain_id.pop(chain_id, None)

    @classmethod
    def forget_all_chains(cls):
        """Drop every remembered failure (a forked child starts afresh)."""
        cls._error_by_chain_id.clear()

    def _parse_request(self, msg):
        chain_id, modname, klass, func, args, kwargs = msg.unpickle(throw=False)
        obj = importlib.import_module(modname)
        if klass:
            obj = getattr(obj, klass)
        fn = getattr(obj, func)
        if getattr(fn, "mitogen_takes_econtext", False):
            kwargs["econtext"] = self.econtext
        if getattr(fn, "mitogen_takes_router", False):
            kwargs["router"] = self.econtext.router
        return chain_id, fn, args, kwargs

    def _dispatch_one(self, msg):
        try:
            chain_id, fn, args, kwargs = self._parse_request(msg)
        except Exception as e:
            return None, CallError(e)
        if chain_id in self._error_by_chain_id:
            return chain_id, self._error_by_chain_id[chain_id]
        try:
            return chain_id, fn(*args, **kwargs)
        except Exception as e:
            error = CallError(e)
            if chain_id is not None:
                self._error_by_chain_id[chain_id] = error
            return chain_id, error

    def run(self):
        for msg in self.recv:
            chain_id, ret = self._dispatch_one(msg)
            if msg.reply_to:
                msg.reply(ret)
            elif isinstance(ret, CallError) and chain_id is None:
                LOG.error("call_no_reply() failed: %s", ret)


class ExternalContext:
    """The main program of every child context.

    `config` keys: context_id, parent_ids, name, in_fd, out_fd, log_level,
    debug, max_message_size, whitelist, blacklist, fork (True when started
    by fork()), preamble (the compressed bootstrap bundle, kept to start
    grandchildren).
    """

    def __init__(self, config):
        self.config = config

    def _setup_globals(self):
        global preamble
        preamble = self.config.get("preamble", preamble)
        mitogen.is_master = False
        mitogen.context_id = self.config["context_id"]
        mitogen.parent_ids = list(self.config["parent_ids"])
        mitogen.parent_id = mitogen.parent_ids[0]

    def _setup_router(self):
        #: The child's Broker: the thread that does all its I/O.
        self.broker = Broker()
        self.router = Router(self.broker)
        self.router.max_message_size = self.config["max_message_size"]
        self.master = self.router.context_by_id(0, name="master")
        self.parent = self.router.context_by_id(mitogen.parent_id, name="parent")
        self.router.add_handler(self._on_shutdown_msg, SHUTDOWN, policy=has_parent_authority)
        self.router.add_handler(self._on_call_service, CALL_SERVICE, policy=has_parent_authority)
        listen(self.broker, "exit", self._on_broker_exit)

    def _connect_parent(self):
        """Announce readiness, then attach the link: nothing may be written
        to it before MITO001, and every handler must exist before the
        parent's first message can be read. The link descriptors are moved
        off stdio first, which _setup_stdio() then replaces."""
        in_fd, out_fd = self.config["in_fd"], self.config["out_fd"]
        stream = MitogenProtocol.build_stream(self.router, mitogen.parent_id)
        stream.name = "parent"
        stream.accept(os.dup(in_fd), os.dup(out_fd))
        for fd in {in_fd, out_fd}:
            if fd > 2:
                os.close(fd)
        for side in stream.receive_side, stream.transmit_side:
            set_cloexec(side.fd)
        os.write(stream.transmit_side.fd, b"MITO001\n")
        listen(stream, "disconnect", self._on_parent_disconnect)
        self.router.register_parent(self.parent, stream)

    def _on_parent_disconnect(self):
        self.broker.shutdown()

    def _on_broker_exit(self):
        """Exit even if the main thread is stuck in user code."""
        timer = threading.Timer(self.broker.shutdown_timeout, os._exit, (1,))
        timer.daemon = True
        timer.start()

    _service_backlog = None

    def _on_call_service(self, msg):
        """Service calls before a Pool exists: queue them and start one on a
        thread (importing is not allowed on the Broker thread)."""
        if msg.is_dead:
            return
        if self._service_backlog is None:
            self._service_backlog = []
            thread = threading.Thread(
                target=self._start_service_pool, name="mitogen.service-activation"
            )
            thread.daemon = True
            thread.start()
        self._service_backlog.append(msg)

    def _take_service_backlog(self):
        backlog, self._service_backlog = self._service_backlog, []
        return backlog

    def _start_service_pool(self):
        import mitogen.service

        pool = mitogen.service.get_or_create_pool(router=self.router)
        for msg in self.broker.defer_sync(self._take_service_backlog):
            pool.deliver(msg)

    def _on_shutdown_msg(self, msg):
        if not msg.is_dead:
            self.broker.shutdown()

    def _setup_logging(self):
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        self.log_handler = LogHandler(self.master)
        root.addHandler(self.log_handler)
        root.setLevel(self.config["log_level"])
        if self.config["debug"]:
            handler = PidfulStreamHandler()
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            root.addHandler(handler)
            root.setLevel(logging.DEBUG)

    def _setup_importer(self):
        #: The Importer that fetches modules from the parent (first on sys.meta_path).
        self.importer = Importer(
            self.router, self.parent, self.config["whitelist"], self.config["blacklist"]
        )
        sys.meta_path = [f for f in sys.meta_path if not isinstance(f, Importer)]
        sys.meta_path.insert(0, self.importer)

    def _setup_stdio(self):
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdin = open(0, "r", closefd=False)
        #: The stream that turns what is written to fd 1 into log records.
        self.stdout_log = IoLoggerProtocol.build_stream("stdout", 1)
        #: The stream that turns what is written to fd 2 into log records.
        self.stderr_log = IoLoggerProtocol.build_stream("stderr", 2)
        for stream in self.stdout_log, self.stderr_log:
            self.broker.start_receive(stream)
        sys.stdout = open(1, "w", 1, closefd=False)
        sys.stderr = open(2, "w", 1, closefd=False)

    def main(self):
        self._setup_globals()
        self._setup_router()
        self._setup_importer()
        self.dispatcher = Dispatcher(self)
        self._connect_parent()
        self._setup_logging()
        if not self.config.get("fork"):
            sys.modules.pop("__main__", None)
        self._setup_stdio()
        on_start = self.config.get("on_start")
        if on_start:
            on_start(self)
        try:
            self.dispatcher.run()
        except Exception:
            LOG.exception("%r: dispatcher crashed", self)
        finally:
            self.broker.shutdown()
            self.broker.join(self.broker.shutdown_timeout + 5)
            logging.shutdown()
            os._exit(0)
