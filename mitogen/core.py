"""The bootstrap core: everything a child context needs to talk to its parent.

This module is the facade: it re-exports under one name every public name
of the core, from the modules that own them, one job each:

- mitogen.wire: the message header and fixed handles, Message and Decoder,
  the deny-by-default serialiser and the types it may rebuild, Mitogen's
  exceptions, the clock (now) and signals (listen/unlisten/fire).
- mitogen.channels: Latch, Receiver, Sender and Channel.
- mitogen.streams: Side, Stream, the protocols (Protocol, DelimitedProtocol,
  MitogenProtocol, IoLoggerProtocol), BufferedWriter and descriptor helpers.
- mitogen.broker: the select(2) Poller, Waker, Timer/TimerList and Broker.
- mitogen.router: the Router (routes, handles, authority checks) and Context.
- mitogen.importer: the Importer (import over the wire).
- mitogen.child: ExternalContext (the child's main program), the Dispatcher
  (CALL_FUNCTION) and log forwarding.

All of them, and this module, are the bootstrap bundle sent, minimised and
compressed, to every new context (mitogen.bootstrap.BOOTSTRAP_MODULES): they
stay small, standard library only and Python 3.6 compatible. Objects that
travel in pickles keep the names they have always had on the wire,
mitogen.core.<name> (see mitogen.wire.wire_name); this module binds each.
Names here are bindings, not homes: to replace the core's clock, patch
mitogen.wire.now, which the core modules read when called.
"""

from mitogen.broker import Broker, Poller, Timer, TimerList, Waker
from mitogen.channels import Channel, Latch, Receiver, Sender
from mitogen.child import (
    Dispatcher,
    ExternalContext,
    LogHandler,
    PidfulStreamHandler,
    takes_econtext,
    takes_router,
)
from mitogen.importer import Importer, is_served
from mitogen.router import Context, Router
from mitogen.streams import (
    CHUNK_SIZE,
    BasicStream,
    BufferedWriter,
    DelimitedProtocol,
    IoLogger,
    IoLoggerProtocol,
    MitogenProtocol,
    Protocol,
    Side,
    Stream,
    io_op,
    pipe,
    set_block,
    set_cloexec,
    set_nonblock,
)
from mitogen.wire import (
    ADD_ROUTE,
    ALLOCATE_ID,
    CALL_FUNCTION,
    CALL_SERVICE,
    DEL_ROUTE,
    DETACHING,
    ENC_PICKLE,
    ENC_RAW,
    ENCODINGS,
    FORWARD_LOG,
    FORWARD_MODULE,
    GET_MODULE,
    HEADER,
    HEADER_LEN,
    IS_DEAD,
    LOAD_MODULE,
    LOG,
    MAGIC,
    MAX_MESSAGE_SIZE,
    PICKLE_PROTOCOL,
    SHUTDOWN,
    STUB_CALL_SERVICE,
    WIRE_MODULE,
    WIRE_NAMES,
    Blob,
    CallError,
    ChannelError,
    Decoder,
    Error,
    Kwargs,
    LatchError,
    Message,
    Secret,
    StreamError,
    TimeoutError,
    fire,
    has_parent_authority,
    listen,
    now,
    qualname,
    to_text,
    unlisten,
    wire_name,
)

# The reducers of CallError, Context and Sender: pickles name them
# mitogen.core._unpickle_*, so they must be found here.
_unpickle_call_error = WIRE_NAMES["_unpickle_call_error"][0]
_unpickle_context = WIRE_NAMES["_unpickle_context"][0]
_unpickle_sender = WIRE_NAMES["_unpickle_sender"][0]
