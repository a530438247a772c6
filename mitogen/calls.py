"""Calls: running functions in another context.

Owns: CallChain, which builds CALL_FUNCTION messages (with an optional
pipelined chain ID whose first failure fails the calls after it), and
Context, mitogen.core.Context with call(), call_async(), call_no_reply()
and shutdown(). mitogen.parent re-exports both.
"""

import itertools
import os
import socket
import sys
import threading

import mitogen.core
from mitogen.core import Message, listen


class CallChain:
    """Send CALL_FUNCTION messages to a context.

    With `pipelined=True`, calls share a chain ID: once one fails, later
    calls in the chain fail with the same error without running, until
    reset(). This lets call_no_reply() be used for setup steps whose errors
    still surface at the next call()."""

    _counter = itertools.count()

    def __init__(self, context, pipelined=False):
        self.context = context
        self.chain_id = self.make_chain_id() if pipelined else None

    @classmethod
    def make_chain_id(cls):
        return "%s-%d-%x-%x" % (
            socket.gethostname(),
            os.getpid(),
            threading.get_ident(),
            next(cls._counter),
        )

    def reset(self):
        """Forget any failure recorded for this chain and start a new one."""
        if self.chain_id is None:
            return
        saved, self.chain_id = self.chain_id, None
        try:
            self.call_no_reply(mitogen.core.Dispatcher.forget_chain, saved)
        finally:
            self.chain_id = self.make_chain_id()

    def make_msg(self, fn, *args, **kwargs):
        owner = getattr(fn, "__self__", None)
        if isinstance(owner, type):
            modname, klass = owner.__module__, owner.__name__
        elif owner is not None and not isinstance(owner, type(sys)):
            raise TypeError(
                "cannot call instance method %r remotely: use a "
                "function, classmethod or staticmethod" % (fn,)
            )
        else:
            modname = fn.__module__
            qual = fn.__qualname__.split(".")
            if "<locals>" in qual or "<lambda>" in qual:
                raise TypeError(
                    "cannot call %r remotely: nested functions "
                    "and lambdas cannot be imported" % (fn,)
                )
            klass = ".".join(qual[:-1]) or None
        if modname == "__mitogen_main__":
            modname = "__main__"
        return Message.pickled(
            (self.chain_id, modname, klass, fn.__name__, args, mitogen.core.Kwargs(kwargs)),
            handle=mitogen.core.CALL_FUNCTION,
        )

    def call_no_reply(self, fn, *args, **kwargs):
        """Start `fn(*args, **kwargs)` remotely without waiting; a failure
        is logged remotely (or recorded in the chain)."""
        self.context.send(self.make_msg(fn, *args, **kwargs))

    def call_async(self, fn, *args, **kwargs):
        """Start `fn(*args, **kwargs)` remotely; return a Receiver whose
        get(timeout=...) yields the reply message."""
        return self.context.send_async(self.make_msg(fn, *args, **kwargs))

    def call(self, fn, *args, **kwargs):
        """Run `fn(*args, **kwargs)` remotely and return its result, raising
        CallError if it raised (ChannelError if the context went away).
        For a deadline use call_async(...).get(timeout=...).unpickle()."""
        return self.call_async(fn, *args, **kwargs).get().unpickle()


class Context(mitogen.core.Context):
    """A Context that can run functions and be shut down."""

    #: The Context this one was started through, if any.
    via = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.init_calls()

    def init_calls(self):
        """Set up what the call methods need: the default CallChain. Used by
        __init__() and for a mitogen.core.Context promoted in place when a
        child becomes a parent (mitogen.routing.Router.init_parent_side)."""
        self.default_call_chain = CallChain(self)

    def __eq__(self, other):
        return (
            isinstance(other, mitogen.core.Context)
            and other.context_id == self.context_id
            and other.router == self.router
        )

    def __hash__(self):
        return hash((self.router, self.context_id))

    def call_async(self, fn, *args, **kwargs):
        return self.default_call_chain.call_async(fn, *args, **kwargs)

    def call(self, fn, *args, **kwargs):
        return self.default_call_chain.call(fn, *args, **kwargs)

    def call_no_reply(self, fn, *args, **kwargs):
        self.default_call_chain.call_no_reply(fn, *args, **kwargs)

    def shutdown(self, wait=False, timeout=None):
        """Ask the context to shut down.

        :returns: a Latch that receives None once the context disconnects;
            with `wait=True`, block (up to `timeout` seconds) for it instead.
        """
        latch = mitogen.core.Latch()
        listen(self, "disconnect", lambda: latch.put(None))
        if self.router.stream_by_id(self.context_id) is None:
            latch.put(None)
        self.send(Message(handle=mitogen.core.SHUTDOWN))
        if wait:
            latch.get(timeout=timeout)
            return None
        return latch
