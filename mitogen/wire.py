"""The wire: what crosses a link between contexts, and the vocabulary every
core module shares.

Owns the message header and its fixed handles, Message and Decoder (the
framing), the deny-by-default serialiser and the types it may rebuild
(Blob, Secret, Kwargs, CallError and the reducers of Context and Sender,
which register themselves with wire_name()), Mitogen's exceptions, the
clock (now) and signals (listen/unlisten/fire). Part of the bootstrap
bundle: standard library only, Python 3.6 compatible. mitogen.core
re-exports every public name.
"""

import io
import logging
import pickle
import struct
import time
import traceback

import mitogen

LOG = logging.getLogger("mitogen")

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

#: The module every object a pickle carries is named under, whichever module
#: defines it (wire_name() sets its __module__; mitogen.core binds each name),
#: so the wire format does not depend on how the code is split into modules.
WIRE_MODULE = "mitogen.core"

#: {name: (object, takes_router, arg_type)} for everything an incoming pickle
#: may name, as wire_name() registered it.
WIRE_NAMES = {}


def wire_name(takes_router=False, arg_type=None):
    """Decorate a class or function that travels in pickles by name: it is
    pickled as WIRE_MODULE.<its name> and the unpickler may call it. A
    function checks its own arguments and, if `takes_router`, gets the
    receiving Router first; a class is built from exactly one argument of
    type `arg_type`."""

    def register(obj):
        obj.__module__ = WIRE_MODULE
        WIRE_NAMES[obj.__name__] = (obj, takes_router, arg_type)
        return obj

    return register


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


@wire_name()
def _unpickle_call_error(type_name, message, traceback_text):
    for part in type_name, message, traceback_text:
        if not isinstance(part, str) or len(part) > 100000:
            raise TypeError("cannot unpickle CallError: bad input")
    return CallError(type_name, message, traceback_text)


@wire_name(arg_type=bytes)
class Blob(bytes):
    """Bytes whose repr() hides the content (large or sensitive data)."""

    def __repr__(self):
        return "[blob: %d bytes]" % len(self)

    def __reduce__(self):
        return Blob, (bytes(self),)


@wire_name(arg_type=str)
class Secret(str):
    """A string whose repr() and str-formatting in logs hide it."""

    def __repr__(self):
        return "[secret]"

    def __reduce__(self):
        return Secret, (str(self),)


@wire_name(arg_type=dict)
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
    """The monotonic clock of the core modules, which read it as
    mitogen.wire.now when called: replace it there to control their time
    (mitogen.core.now is the same function, for callers)."""
    return time.monotonic()


# ---------------------------------------------------------------------------
# Serialisation.


def _construct(klass, arg_type, args):
    if len(args) != 1 or type(args[0]) is not arg_type:
        raise TypeError("cannot unpickle %s: bad input" % (klass.__name__,))
    return klass(args[0])


class _Unpickler(pickle.Unpickler):
    """Rebuild only plain data and Mitogen's own types."""

    def __init__(self, data, router):
        pickle.Unpickler.__init__(self, io.BytesIO(data), encoding="bytes")
        self.router = router

    def find_class(self, module, name):
        entry = WIRE_NAMES.get(name) if module == WIRE_MODULE else None
        if entry is None:
            raise StreamError("refused to unpickle %s.%s: type not allowed", module, name)
        obj, takes_router, arg_type = entry
        if arg_type is not None:
            return lambda *args: _construct(obj, arg_type, args)
        if takes_router:
            return lambda *args: obj(self.router, *args)
        return obj


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

    def raise_dead(self):
        """Raise the ChannelError a dead message stands for, with its reason."""
        raise ChannelError(to_text(self.data) or ChannelError.remote_msg)

    def unpickle(self, throw=True, throw_dead=True):
        """Deserialise the body. Raise ChannelError for a dead message (if
        `throw_dead`) and CallError when the body is one (if `throw`)."""
        if self.is_dead and throw_dead:
            self.raise_dead()
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
