"""Streams and protocols: the non-blocking descriptor pair a Broker drives
(Side, Stream) and what interprets its bytes (Protocol, DelimitedProtocol,
MitogenProtocol for Messages, IoLoggerProtocol for a child's output), the
write queue they share (BufferedWriter) and the descriptor helpers (pipe,
set_cloexec, io_op, ...). Part of the bootstrap bundle: standard library
only, Python 3.6 compatible. mitogen.core re-exports every public name.
"""

import collections
import errno
import fcntl
import logging
import os

import mitogen
from mitogen.wire import LOG, Decoder, StreamError, fire, to_text

#: Default size of reads from file descriptors.
CHUNK_SIZE = 131072


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
            broker.stop_transmit(stream)
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
            self._broker.start_transmit(self._protocol.stream)
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
        broker.stop_transmit(self._protocol.stream)


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
