"""The Router and Context: this context's routing table (which stream
leads to which context), its handles and their handlers, the authority
checks on every message, and Context, the handle to a (possibly remote)
context that messages are sent through. mitogen.routing extends the Router
for parents. Part of the bootstrap bundle: standard library only, Python
3.6 compatible. mitogen.core re-exports every public name.
"""

import itertools
import threading

import mitogen
from mitogen.channels import Receiver
from mitogen.wire import (
    CALL_SERVICE,
    DEL_ROUTE,
    LOG,
    MAX_MESSAGE_SIZE,
    Error,
    Kwargs,
    Message,
    fire,
    has_parent_authority,
    listen,
    wire_name,
)


@wire_name(takes_router=True)
def _unpickle_context(router, context_id, name):
    if (
        not isinstance(context_id, int)
        or context_id < 0
        or not (name is None or (isinstance(name, str) and len(name) < 256))
    ):
        raise TypeError("cannot unpickle Context: bad input")
    return router.context_by_id(context_id, name=name)


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
        if in_stream is not None:
            self.note_forward(in_stream, out_stream, msg)
        out_stream.protocol.send(msg)

    def note_forward(self, in_stream, out_stream, msg):
        """Called for each message forwarded from `in_stream` to
        `out_stream`; a parent-side Router records who talks to whom."""

    def route(self, msg):
        """Send `msg` from any thread."""
        self.broker.defer(self.route_now, msg)
