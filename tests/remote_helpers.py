"""Functions the tests call inside child contexts."""

import importlib
import importlib.util
import logging
import os
import struct
import sys
import time

import mitogen
import mitogen.core


def identity(value):
    return value


def getpid() -> int:
    return os.getpid()


def version_info() -> tuple:
    return tuple(sys.version_info[:2])


def context_ids():
    return mitogen.context_id, mitogen.parent_id, list(mitogen.parent_ids)


def raise_value_error(text):
    raise ValueError(text)


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def import_and_report(modname, attr=None):
    """Import `modname`; return its __file__ and optionally one attribute."""
    module = importlib.import_module(modname)
    return getattr(module, "__file__", None), getattr(module, attr) if attr else None


def try_import(modname):
    try:
        importlib.import_module(modname)
    except ImportError as e:
        return "ImportError: %s" % (e,)
    return "imported"


def log_and_print(text):
    logging.getLogger("remote.test").warning("logged %s", text)
    print("printed %s" % (text,))
    sys.stdout.flush()
    os.write(2, ("stderr %s\n" % (text,)).encode())
    return True


@mitogen.core.takes_econtext
def stdio_logger_types(econtext):
    """The class of the streams logging this child's stdout and stderr."""
    return [
        type(s).__module__ + "." + type(s).__name__
        for s in (econtext.stdout_log, econtext.stderr_log)
    ]


@mitogen.core.takes_econtext
def write_raw_to_parent(data, econtext):
    """Write raw bytes straight onto the link to the parent."""
    os.write(econtext.router.parent_stream.transmit_side.fd, data)
    return True


@mitogen.core.takes_econtext
def write_oversized_header(econtext):
    header = mitogen.core.HEADER.pack(
        mitogen.core.MAGIC, 0, 0, mitogen.context_id, mitogen.context_id, 1000, 0, 0x7FFFFFFF
    )
    os.write(econtext.router.parent_stream.transmit_side.fd, header)
    return True


class Unlisted:
    """A type the serialiser must refuse."""


def return_unlisted():
    return Unlisted()


def accept_anything(value):
    return repr(value)


@mitogen.core.takes_router
def call_function_in(context_id, router, auth_id=None):
    """Send a CALL_FUNCTION to `context_id` and report what came back."""
    msg = mitogen.core.Message.pickled(
        (None, "os", None, "getpid", (), mitogen.core.Kwargs()), handle=mitogen.core.CALL_FUNCTION
    )
    if auth_id is not None:
        msg.auth_id = auth_id
    context = router.context_by_id(context_id)
    recv = context.send_async(msg)
    try:
        return "reply: %r" % (recv.get(timeout=3).unpickle(),)
    except mitogen.core.ChannelError as e:
        return "ChannelError: %s" % (e,)
    except mitogen.core.TimeoutError:
        return "timeout"


@mitogen.core.takes_router
def send_add_route(target_id, router):
    """Claim (falsely) that `target_id` lives behind this context."""
    msg = mitogen.core.Message(handle=mitogen.core.ADD_ROUTE, data=("%d:evil" % target_id).encode())
    router.context_by_id(mitogen.parent_id).send(msg)
    return True


_disconnected = []


@mitogen.core.takes_router
def watch_disconnect(context_id, router):
    """Record here when this context hears that `context_id` is gone."""
    context = router.context_by_id(context_id)
    mitogen.core.listen(context, "disconnect", lambda: _disconnected.append(context_id))
    return True


def disconnected():
    """The contexts this one has heard are gone, in order."""
    return list(_disconnected)


_chain_state = []


def append_state(value):
    _chain_state.append(value)
    return list(_chain_state)


def fail_in_chain():
    raise RuntimeError("chain step failed")


def pack_u32(n):
    return struct.pack(">L", n)


def stream_values(sender, count):
    """Send `count` values through `sender`, then close it."""
    for i in range(count):
        sender.send(i)
    sender.close()
    return count


@mitogen.core.takes_router
def echo_channel(announce, router):
    """Announce a Sender for our Receiver; the first value received is the
    caller's Sender, then echo each number doubled until the caller closes."""
    recv = mitogen.core.Receiver(router)
    announce.send(recv.to_sender())
    reply = recv.get(timeout=10).unpickle()
    total = 0
    for msg in recv:
        value = msg.unpickle()
        total += value
        reply.send(value * 2)
    reply.close()
    return total


class VirtualModules:
    """A meta path finder providing in-memory modules, the way six provides
    `six.moves`: `VirtualModules({'name': {'attr': value}})`."""

    def __init__(self, modules):
        self.modules = modules

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__dict__.update(self.modules[module.__name__])


def import_virtual(modname, attr):
    """Install a VirtualModules finder for `modname` (after the others, as six
    does), import it and return `attr` of it and where the module came from."""
    sys.meta_path.append(VirtualModules({modname: {attr: "local"}}))
    module = importlib.import_module(modname)
    return getattr(module, attr, None), type(module.__spec__.loader).__name__


_disturbances = []


def disturb_process_state(directory):
    """Change what a fork of this context inherits and a fresh interpreter would not
    have: signal dispositions and mask, an atexit handler and a weakref.finalize
    callback (a TemporaryDirectory kept open) that would write or remove files under
    `directory`, an open file with unflushed data. Returns the TemporaryDirectory's path."""
    import atexit
    import signal
    import tempfile

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])

    def write_marker():
        with open(os.path.join(directory, "context-atexit"), "w") as fp:
            fp.write("the context exited")

    atexit.register(write_marker)
    kept = tempfile.TemporaryDirectory(dir=directory)
    pending = open(os.path.join(directory, "context-pending"), "w")
    pending.write("written by the context only")
    _disturbances.extend((kept, pending))
    return kept.name


@mitogen.core.takes_econtext
def promote_router(econtext):
    """Make a Context before this child's Router becomes a parent Router,
    upgrade it, and report what each became: (router class, id allocator
    class, responder class, the early Context's class, whether its default
    call chain is its own, the parent Context's class)."""
    import mitogen.parent

    early = econtext.router.context_by_id(987654, name="early")
    before = type(early).__module__ + "." + type(early).__name__
    mitogen.parent.upgrade_router(econtext)
    router = econtext.router

    def name(obj):
        return type(obj).__module__ + "." + type(obj).__name__

    chain = getattr(early, "default_call_chain", None)
    return {
        "early_before": before,
        "router": name(router),
        "id_allocator": name(router.id_allocator),
        "responder": name(router.responder),
        "route_monitor": name(router.route_monitor),
        "early": name(early),
        "early_chain_is_own": chain is not None and chain.context is early,
        "parent": name(econtext.parent),
    }
