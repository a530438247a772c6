"""Routing and forwarding: the parent-side Router and what keeps a tree of
contexts connected.

Owns: the parent-side Router (connect() and one method per connection
method, via= hops through proxy_connect, and init_parent_side(), the one
initialiser of what starting children needs, used both by a Router made
as one and by a child's core Router promoted with upgrade_router()),
RouteMonitor (ADD_ROUTE/DEL_ROUTE upkeep), ChildIdAllocator (context IDs
in non-master parents), ModuleForwarder and send_module() (answering
GET_MODULE from a cache or the master's finder), and carrying connection
errors across via= hops (error_to_dict, error_from_dict).
mitogen.parent re-exports every public name.
"""

import sys
import threading

import mitogen
import mitogen.core
from mitogen.bootstrap import get_connection_class
from mitogen.calls import Context
from mitogen.core import LOG, Message, StreamError, listen


class RouteMonitor:
    """Keep routes to descendants up to date: announce new and lost
    children upward (ADD_ROUTE/DEL_ROUTE) and lost contexts downward, and
    accept announcements only for contexts a child may speak for."""

    def __init__(self, router):
        self.router = router
        self._routes_by_stream = {}
        #: Per child stream, the contexts it has exchanged messages with
        #: through us: the only ones whose loss it is told about (a worker
        #: leaving a mux of 100 hosts concerns the hosts it spoke to).
        self._peers_by_stream = {}
        router.add_handler(self._on_add_route, mitogen.core.ADD_ROUTE)
        router.add_handler(self._on_del_route, mitogen.core.DEL_ROUTE, overwrite=True)

    def _send(self, stream, handle, target_id, name=None):
        data = ("%d:%s" % (target_id, name or "")).encode("utf-8")
        stream.protocol.send(Message(dst_id=stream.protocol.remote_id, handle=handle, data=data))

    def _propagate_up(self, handle, target_id, name=None):
        if self.router.parent_stream is not None:
            self._send(self.router.parent_stream, handle, target_id, name)

    def _propagate_down(self, handle, target_id, skip=None):
        for stream, peers in list(self._peers_by_stream.items()):
            if target_id in peers and stream is not skip:
                peers.discard(target_id)
                self._send(stream, handle, target_id)

    def note_forward(self, in_stream, out_stream, msg):
        """Record that `msg` went between the contexts behind two streams."""
        peers = self._peers_by_stream.get(out_stream)
        if peers is not None:
            peers.add(msg.src_id)
        peers = self._peers_by_stream.get(in_stream)
        if peers is not None:
            peers.add(msg.dst_id)

    def notice_stream(self, stream):
        """Start tracking a newly connected child stream; Broker thread."""
        target_id = stream.protocol.remote_id
        self._routes_by_stream[stream] = {target_id}
        self._peers_by_stream[stream] = set()
        listen(stream, "disconnect", lambda: self._on_stream_disconnect(stream))
        context = self.router.context_by_id(target_id)
        self._propagate_up(mitogen.core.ADD_ROUTE, target_id, context.name)

    def _on_stream_disconnect(self, stream):
        self._peers_by_stream.pop(stream, None)
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
        self._propagate_down(mitogen.core.DEL_ROUTE, target_id, skip=stream)


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

    @property
    def served(self):
        """What the parent serves (ModuleResponder.served), None for everything."""
        return self.importer.whitelist or None

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
    #: Where allocate_id() gets new context IDs (IdAllocator in the master,
    #: ChildIdAllocator in a child that starts grandchildren); None in a
    #: Router that starts no children of its own (a mitogen.unix client).
    id_allocator = None
    #: What answers children's GET_MODULE (ModuleResponder in the master,
    #: ModuleForwarder in other contexts).
    responder = None
    route_monitor = None

    def __init__(self, broker):
        super().__init__(broker)
        self.init_parent_side()

    def init_parent_side(self, id_allocator=None, responder=None):
        """Set up what starting children needs: the ID allocator, the
        module responder, a RouteMonitor, and call methods on every Context
        known so far. The one initialiser of this state, used by both ways
        to a parent Router: a Router made as one (__init__(), when it knows
        no Context yet; the master's Router then installs its own allocator
        and responder) and a child's core Router promoted in place by
        upgrade_router(), whose Contexts (its parent's, an unpickled `via=`
        argument) are promoted in place too, since others hold them."""
        self.id_allocator = id_allocator
        self.responder = responder
        self.route_monitor = RouteMonitor(self)
        for context in list(self._context_by_id.values()):
            if not isinstance(context, self.context_class):
                context.__class__ = self.context_class
                context.init_calls()

    def allocate_id(self):
        return self.id_allocator.allocate()

    def register(self, context, stream):
        """Attach a child's stream; call on the Broker thread so ADD_ROUTE
        leaves before anything the child sends is forwarded."""
        super().register(context, stream)
        self.route_monitor.notice_stream(stream)

    def note_forward(self, in_stream, out_stream, msg):
        self.route_monitor.note_forward(in_stream, out_stream, msg)

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
    """Make a child's Router able to start grandchildren (idempotent): its
    mitogen.core.Router becomes this module's Router in place (the Broker,
    streams and handlers hold it) and gets its parent-side state from
    Router.init_parent_side(), as a Router made as one does."""
    router = econtext.router
    if not isinstance(router, Router):
        router.__class__ = Router
        router.init_parent_side(
            ChildIdAllocator(router), ModuleForwarder(router, econtext.importer)
        )


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
