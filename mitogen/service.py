"""Services: long-lived objects in a context whose exposed methods other
contexts call with `Context.call_service()`.

Owns: the Service base, `@expose(policy)` (deny by default) with the
AllowParents/AllowAny policies, `@arg_spec`, invokers (plain, serialised,
deduplicating), the thread Pool that runs calls and activates services in
children on first use, FileService (chunked, flow-controlled file serving
of registered paths) and PushFileService (files pushed down a chain once,
cached at every hop).
"""

import grp
import importlib
import logging
import os
import pwd
import stat
import threading

import mitogen.core
import mitogen.select
from mitogen.core import CallError, Message

LOG = logging.getLogger("mitogen.service")

_pool = None
_pool_lock = threading.Lock()


def get_or_create_pool(size=None, router=None):
    """Return this process's service Pool, creating it on first use."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.closed:
            _pool = Pool(router, size=size or 2, overwrite=True)
        return _pool


# ---------------------------------------------------------------------------
# Policies and decorators.


class Policy:
    """Decides whether a message may call an exposed method."""

    def is_authorized(self, service, msg):
        raise NotImplementedError()


class AllowAny(Policy):
    """Any context may call."""

    def is_authorized(self, service, msg):
        return True


class AllowParents(Policy):
    """Only this context and its ancestors may call."""

    def is_authorized(self, service, msg):
        return mitogen.core.has_parent_authority(msg)


def expose(policy):
    """Make a Service method callable remotely under `policy`."""

    def wrapper(func):
        func.mitogen_service_policies = getattr(func, "mitogen_service_policies", ()) + (policy,)
        return func

    return wrapper


def arg_spec(spec):
    """Require keyword arguments named and typed as `spec` ({name: type})."""

    def wrapper(func):
        func.mitogen_service_arg_spec = spec
        return func

    return wrapper


def no_reply():
    """Mark a method whose result is not sent back (errors are logged)."""

    def wrapper(func):
        func.mitogen_service_no_reply = True
        return func

    return wrapper


# ---------------------------------------------------------------------------
# Invokers.


class Invoker:
    """Validate and run calls of one Service instance concurrently."""

    def __init__(self, service):
        self.service = service

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, self.service.name())

    def _method(self, method_name, msg):
        method = getattr(self.service, method_name, None)
        policies = getattr(method, "mitogen_service_policies", None)
        if method_name.startswith("_") or not policies:
            raise CallError(
                "method %r of service %r is not exposed" % (method_name, self.service.name())
            )
        if not any(p.is_authorized(self.service, msg) for p in policies):
            LOG.error(
                "%r: context %d may not call %s.%s",
                self,
                msg.src_id,
                self.service.name(),
                method_name,
            )
            raise CallError(
                "context %d may not call %s.%s" % (msg.src_id, self.service.name(), method_name)
            )
        return method

    def _check_args(self, method, kwargs):
        spec = getattr(method, "mitogen_service_arg_spec", None)
        if spec is None:
            return
        missing = sorted(set(spec) - set(kwargs))
        extra = sorted(set(kwargs) - set(spec))
        if missing or extra:
            raise CallError(
                "%s: missing arguments %s, unexpected %s" % (method.__name__, missing, extra)
            )
        for name, kind in spec.items():
            if not isinstance(kwargs[name], kind):
                raise CallError(
                    "%s: argument %r must be %s, not %s"
                    % (
                        method.__name__,
                        name,
                        getattr(kind, "__name__", kind),
                        type(kwargs[name]).__name__,
                    )
                )

    def _call(self, method, kwargs, msg):
        return method(**kwargs)

    def invoke(self, method_name, kwargs, msg):
        """Run the call; return its result or a CallError."""
        try:
            method = self._method(method_name, msg)
            self._check_args(method, kwargs)
            return method, self._call(method, kwargs, msg)
        except CallError as e:
            return None, e
        except Exception as e:
            LOG.exception("%r: %s failed", self, method_name)
            return None, CallError(e)


class SerializedInvoker(Invoker):
    """Run one call of the service at a time."""

    def __init__(self, service):
        super().__init__(service)
        self._lock = threading.Lock()

    def _call(self, method, kwargs, msg):
        with self._lock:
            return method(**kwargs)


class Deduplicator:
    """Run a function once per key at a time: callers arriving while it runs
    for their key wait for it and share its result (or exception)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running = {}

    def run(self, key, func):
        with self._lock:
            latch = self._running.get(key)
            owner = latch is None
            if owner:
                latch = self._running[key] = mitogen.core.Latch()
                latch.waiters = 0
            else:
                latch.waiters += 1
        if not owner:
            ok, value = latch.get()
            if ok:
                return value
            raise value
        try:
            result = (True, func())
        except Exception as e:
            result = (False, e)
        with self._lock:
            del self._running[key]
            for _ in range(latch.waiters):
                latch.put(result)
        if result[0]:
            return result[1]
        raise result[1]


class DeduplicatingInvoker(Invoker):
    """Run concurrent calls with identical arguments once; every caller gets
    the same result."""

    def __init__(self, service):
        super().__init__(service)
        self._dedup = Deduplicator()

    def _call(self, method, kwargs, msg):
        key = (method.__name__, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        return self._dedup.run(key, lambda: method(**kwargs))


class Service:
    """Base class of services. The `name()` of a service is its qualified
    class name; `invoker_class` picks how calls are run."""

    invoker_class = Invoker

    @classmethod
    def name(cls):
        return "%s.%s" % (cls.__module__, cls.__name__)

    def __init__(self, router):
        self.router = router

    def __repr__(self):
        return "%s()" % (type(self).__name__,)

    def on_shutdown(self):
        """Called when the Pool stops."""


# ---------------------------------------------------------------------------
# The Pool.


class Pool:
    """Threads that run service calls arriving on CALL_SERVICE.

    :param services: Service instances to serve now; others are activated
        on first call, but only for callers with parent authority.
    """

    def __init__(self, router, services=(), size=1, overwrite=False):
        self.router = router
        self.closed = False
        self._invokers = {}
        self._lock = threading.Lock()
        for service in services:
            self.add(service)
        self._receiver = mitogen.core.Receiver(
            router, mitogen.core.CALL_SERVICE, overwrite=overwrite
        )
        mitogen.core.listen(router.broker, "shutdown", self.stop)
        self._threads = []
        for index in range(size):
            thread = threading.Thread(target=self._worker_main, name="mitogen.Pool.%d" % index)
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    def __repr__(self):
        return "Pool(size=%d)" % (len(self._threads),)

    @property
    def size(self):
        return len(self._threads)

    def add(self, service):
        """Serve `service` (a Service instance)."""
        name = service.name()
        with self._lock:
            if name in self._invokers:
                raise mitogen.core.Error("service %s is already running", name)
            self._invokers[name] = service.invoker_class(service)

    def get_service(self, klass):
        """Return the running instance of Service class `klass`, starting it
        if needed (local callers are trusted)."""
        name = klass.name()
        with self._lock:
            invoker = self._invokers.get(name)
            if invoker is None:
                invoker = klass.invoker_class(klass(router=self.router))
                self._invokers[name] = invoker
        return invoker.service

    def deliver(self, msg):
        """Queue `msg` as if it had arrived on CALL_SERVICE."""
        self._receiver.deliver(msg)

    def stop(self, join=False):
        """Stop the workers; services get on_shutdown()."""
        if self.closed:
            return
        self.closed = True
        self._receiver.shutdown()
        for invoker in list(self._invokers.values()):
            try:
                invoker.service.on_shutdown()
            except Exception:
                LOG.exception("%r: %r.on_shutdown() failed", self, invoker.service)
        if join:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join(10)

    def _activate(self, name, msg):
        """Import and start service `name` for an ancestor's first call."""
        if not mitogen.core.has_parent_authority(msg):
            raise CallError(
                "service %r is not running and context %d may not start it" % (name, msg.src_id)
            )
        modname, _, clsname = name.rpartition(".")
        try:
            klass = getattr(importlib.import_module(modname), clsname)
        except (ImportError, AttributeError):
            raise CallError("service %r not found" % (name,))
        if not (isinstance(klass, type) and issubclass(klass, Service)):
            raise CallError("%r is not a Service" % (name,))
        service = klass(router=self.router)
        try:
            self.add(service)
        except mitogen.core.Error:
            pass
        LOG.debug("%r: activated %r", self, service)
        return self._invokers[name]

    def get_invoker(self, name, msg):
        with self._lock:
            invoker = self._invokers.get(name)
        return invoker or self._activate(name, msg)

    def _parse(self, msg):
        value = msg.unpickle(throw=False)
        if not (
            isinstance(value, tuple)
            and len(value) == 3
            and isinstance(value[0], str)
            and isinstance(value[1], str)
            and isinstance(value[2], dict)
        ):
            raise CallError("malformed service call")
        return value

    def _handle(self, msg):
        try:
            name, method_name, kwargs = self._parse(msg)
            invoker = self.get_invoker(name, msg)
        except CallError as e:
            return None, e
        except Exception as e:
            return None, CallError(e)
        return invoker.invoke(method_name, dict(kwargs), msg)

    def _worker_main(self):
        while not self.closed:
            try:
                msg = self._receiver.get()
            except (mitogen.core.ChannelError, mitogen.core.LatchError):
                return
            method, result = self._handle(msg)
            if getattr(method, "mitogen_service_no_reply", False):
                if isinstance(result, CallError):
                    LOG.error("%r: %s", self, result)
            elif msg.reply_to:
                msg.reply(result)


# ---------------------------------------------------------------------------
# File services.


class FileService(Service):
    """Serve files the owner registered (by exact path or directory prefix)
    to any context, in chunks, keeping at most `window` bytes queued on the
    first hop so memory stays flat whatever the file size.

    Client side: `FileService.get(context, path, out_fp)`.
    """

    invoker_class = SerializedInvoker
    #: Bytes per data message.
    chunk_size = 131072
    #: Bytes allowed to sit unsent in the first hop's buffer.
    window = 4 * 131072
    #: Bytes allowed in flight end to end before the client acknowledges.
    ack_window = 16 * 131072

    def __init__(self, router):
        super().__init__(router)
        self._paths = set()
        self._prefixes = set()

    @expose(AllowParents())
    @arg_spec({"path": str})
    def register(self, path):
        """Allow `path` (a file) to be fetched."""
        self._paths.add(os.path.realpath(path))

    @expose(AllowParents())
    @arg_spec({"path": str})
    def register_prefix(self, path):
        """Allow every file below directory `path` to be fetched."""
        self._prefixes.add(os.path.join(os.path.realpath(path), ""))

    def _is_registered(self, path):
        real = os.path.realpath(path)
        return real in self._paths or any(real.startswith(prefix) for prefix in self._prefixes)

    @staticmethod
    def _metadata(path, st):
        def name(lookup, ident):
            try:
                return lookup(ident)[0]
            except KeyError:
                return ident

        return {
            "size": st.st_size,
            "mode": st.st_mode,
            "owner": name(pwd.getpwuid, st.st_uid),
            "group": name(grp.getgrgid, st.st_gid),
            "mtime": st.st_mtime,
            "atime": st.st_atime,
        }

    @expose(AllowAny())
    @arg_spec({"path": str, "sender": mitogen.core.Sender})
    def fetch(self, path, sender):
        """Start streaming `path` to `sender`; return its metadata. Refused
        unless the path was registered."""
        if not self._is_registered(path):
            LOG.error("%r: refused fetch of unregistered path %r by %r", self, path, sender.context)
            raise CallError("path %r is not registered with FileService" % (path,))
        fp = open(path, "rb")
        st = os.fstat(fp.fileno())
        if not stat.S_ISREG(st.st_mode):
            fp.close()
            raise CallError("%r is not a regular file" % (path,))
        transfer = _Transfer(self, fp, sender)
        metadata = self._metadata(path, st)
        metadata["ack"] = mitogen.core.Sender(self.router.myself(), transfer.ack_handle)
        transfer.start()
        return metadata

    @classmethod
    def get(cls, context, path, out_fp, timeout=None):
        """Fetch `path` from the FileService in `context` into `out_fp`.

        :returns: `(ok, metadata)`; ok is False if the stream ended short.
        """
        recv = mitogen.core.Receiver(context.router, respondent=context)
        try:
            call = context.call_service_async(
                cls.name(), "fetch", path=path, sender=recv.to_sender()
            )
            metadata = call.get(timeout=timeout).unpickle()
            ack = metadata.pop("ack")
            received = acked = 0
            for msg in recv:
                data = msg.unpickle()
                out_fp.write(data)
                received += len(data)
                if received - acked >= cls.ack_window // 4:
                    ack.send(received)
                    acked = received
            return received == metadata["size"], metadata
        finally:
            recv.close()


class _Transfer:
    """One file streaming to one Sender; runs on the Broker thread. It keeps
    at most `window` bytes queued on the first hop and at most `ack_window`
    bytes unacknowledged by the client, so memory stays flat on every hop."""

    def __init__(self, service, fp, sender):
        self.router = service.router
        self.fp = fp
        self.sender = sender
        self.chunk_size = service.chunk_size
        self.window = service.window
        self.ack_window = service.ack_window
        self.sent = self.acked = 0
        self.stream = None
        self.ack_handle = self.router.add_handler(
            self._on_ack,
            respondent=sender.context,
            policy=lambda msg, _: msg.src_id == sender.context.context_id,
        )

    def start(self):
        self.router.broker.defer(self._begin)

    def _begin(self):
        self.stream = self.router.stream_by_id(self.sender.context.context_id)
        if self.stream is None:
            return self._finish(False)
        mitogen.core.listen(self.stream, "drain", self._pump)
        mitogen.core.listen(self.stream, "disconnect", self._abort)
        self._pump()

    def _on_ack(self, msg):
        if msg.is_dead:
            return self._finish(False)
        self.acked = max(self.acked, msg.unpickle())
        self._pump()

    def _abort(self):
        self._finish(False)

    def _finish(self, ok):
        if self.fp.closed:
            return
        self.fp.close()
        try:
            self.router.del_handler(self.ack_handle)
        except KeyError:
            pass
        if self.stream is not None:
            mitogen.core.unlisten(self.stream, "drain", self._pump)
            mitogen.core.unlisten(self.stream, "disconnect", self._abort)
        reason = (
            mitogen.core.ChannelError.remote_msg
            if ok
            else "FileService: transfer of %s aborted" % (self.fp.name,)
        )
        self.router.route_now(
            Message.dead(
                reason, dst_id=self.sender.context.context_id, handle=self.sender.dst_handle
            )
        )

    def _pump(self):
        if self.fp.closed or self.stream is None:
            return
        protocol = self.stream.protocol
        while protocol.pending_bytes() < self.window and self.sent - self.acked < self.ack_window:
            if protocol.disconnected:
                return self._finish(False)
            try:
                data = self.fp.read(self.chunk_size)
            except OSError as e:
                LOG.error("%r: reading %s failed: %s", self, self.fp.name, e)
                return self._finish(False)
            if not data:
                return self._finish(True)
            self.sent += len(data)
            self.router.route_now(
                Message.pickled(
                    mitogen.core.Blob(data),
                    dst_id=self.sender.context.context_id,
                    handle=self.sender.dst_handle,
                )
            )


class PushFileService(Service):
    """Files pushed from the master down a chain of contexts once, cached at
    every hop, so grandchildren fetch them from their parent.

    Master: `service.propagate_to(context, paths)`. Any hop:
    `service.get(path)` waits for and returns the cached bytes.
    """

    invoker_class = SerializedInvoker

    def __init__(self, router):
        super().__init__(router)
        self._cache = {}
        self._waiters = {}
        self._sent = set()
        self._lock = threading.Lock()

    def get(self, path, timeout=None):
        """Return the bytes pushed for `path`, waiting up to `timeout`."""
        with self._lock:
            data = self._cache.get(path)
            if data is None:
                latch = mitogen.core.Latch()
                self._waiters.setdefault(path, []).append(latch)
        if data is None:
            data = latch.get(timeout=timeout)
        return data

    def _store(self, path, data):
        with self._lock:
            self._cache[path] = data
            waiters = self._waiters.pop(path, [])
        for latch in waiters:
            latch.put(data)

    def _forward(self, path, hops):
        """Get `path` to hops[0] (once), asking it to pass it on along
        hops[1:]."""
        first, rest = hops[0], list(hops[1:])
        key = (first.context_id, path)
        with self._lock:
            already = key in self._sent
            self._sent.add(key)
        if not already:
            first.call_service(
                self.name(),
                "store_and_forward",
                path=path,
                data=mitogen.core.Blob(self._cache[path]),
                hops=rest,
            )
        elif rest:
            first.call_service(self.name(), "forward", path=path, hops=rest)

    @expose(AllowParents())
    @arg_spec({"path": str, "hops": list})
    def forward(self, path, hops):
        """Pass the cached `path` on along `hops`."""
        if path not in self._cache:
            raise CallError("%r was never pushed here" % (path,))
        self._forward(path, hops)

    @expose(AllowParents())
    @arg_spec({"path": str, "data": bytes, "hops": list})
    def store_and_forward(self, path, data, hops):
        """Cache `data` as `path` here and pass it down `hops`."""
        self._store(path, mitogen.core.Blob(data))
        if hops:
            self._forward(path, hops)

    def propagate_to(self, context, paths):
        """Push local files `paths` to `context` through every hop on its
        `via` chain, each hop caching them."""
        hops = []
        while context is not None:
            hops.insert(0, context)
            context = getattr(context, "via", None)
        for path in paths:
            if path not in self._cache:
                with open(path, "rb") as fp:
                    self._store(path, mitogen.core.Blob(fp.read()))
            self._forward(path, hops)
