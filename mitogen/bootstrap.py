"""Connection and bootstrap: bringing one child up to a connected Context.

Owns: the stage-0 command (STAGE0, get_stage0_command), the compressed
bootstrap bundle of BOOTSTRAP_MODULES (get_preamble) and the per-child
config framed after it, the protocols that drive a child's stdio and
diagnostic output during bootstrap (BootstrapProtocol, LogProtocol) and
the parent's end of the finished link (MitogenProtocol), and the
Options/Connection base every connection method extends, with its
timeout, end-of-file and failure reporting (Connection.failure).
Starting the process itself is mitogen.spawn's job; answering password
prompts is mitogen.prompting's. mitogen.parent re-exports every public name.
"""

import base64
import importlib
import logging
import marshal
import sys
import zlib

import mitogen
import mitogen.core
from mitogen.core import LOG, Message, StreamError, listen
from mitogen.spawn import Reaper, create_child

#: Seconds a connection attempt may take by default.
DEFAULT_CONNECT_TIMEOUT = 30.0

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

#: Modules in the bootstrap bundle, in load order: each imports only those
#: before it; mitogen.core, the facade, comes last.
BOOTSTRAP_MODULES = (
    "mitogen",
    "mitogen.wire",
    "mitogen.channels",
    "mitogen.streams",
    "mitogen.broker",
    "mitogen.router",
    "mitogen.importer",
    "mitogen.child",
    "mitogen.core",
)


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
    if mitogen.preamble is None:
        mitogen.preamble = _build_preamble()
    return mitogen.preamble


def frame_blob(data):
    """Prefix `data` with its length as stage 0 and the loader read it."""
    return ("%010d" % (len(data),)).encode() + data


def served_names(router):
    """The module names a new child may fetch from this context (the Importer's
    whitelist; empty: any): what the master's ModuleResponder serves, or in a child,
    what its ModuleForwarder's parent serves (requests for others are refused)."""
    responder = getattr(router, "responder", None)
    return (responder is not None and responder.served) or ()


def get_log_level():
    """The root logger's effective level, which children log at."""
    return logging.getLogger().getEffectiveLevel()


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
            "whitelist": list(served_names(self._router)),
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
