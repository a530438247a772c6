"""Message endpoints and the queue beneath them: Latch (a thread-safe
queue whose get() can time out), Receiver (the messages sent to one
handle), Sender (values sent to a handle in some context) and Channel
(both at once). Part of the bootstrap bundle: standard library only,
Python 3.6 compatible. mitogen.core re-exports every public name.
"""

import collections
import threading

import mitogen.wire
from mitogen.wire import ChannelError, LatchError, Message, TimeoutError, wire_name


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
                deadline = mitogen.wire.now() + timeout
            while not self._queue:
                if self.closed:
                    raise LatchError()
                if not block:
                    raise TimeoutError()
                if timeout is None:
                    self._cond.wait()
                else:
                    remaining = deadline - mitogen.wire.now()
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
            msg.raise_dead()
        return msg

    def __iter__(self):
        """Yield messages until a dead message arrives."""
        while True:
            try:
                yield self.get()
            except ChannelError:
                return


@wire_name(takes_router=True)
def _unpickle_sender(router, context_id, dst_handle):
    if not (
        isinstance(context_id, int)
        and isinstance(dst_handle, int)
        and context_id >= 0
        and dst_handle > 0
    ):
        raise TypeError("cannot unpickle Sender: bad input")
    return Sender(router.context_by_id(context_id), dst_handle)


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
