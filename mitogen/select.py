"""Select: wait on many Receivers, Channels, Latches or nested Selects at
once, e.g. to gather the results of calls to many contexts."""

import mitogen.core


class Error(mitogen.core.Error):
    """Misuse of a Select."""


class Select:
    """Return the first value posted to any of `receivers`.

    If `oneshot` is True, each receiver is removed after it yields a result,
    so iteration ends once every receiver has answered. get() and iteration
    give `(receiver, msg)`, where `receiver` is the innermost Receiver (or
    Latch) that produced `msg`.
    """

    #: Called with this Select when it becomes ready; used when nested.
    notify = None

    def __init__(self, receivers=(), oneshot=True):
        self._receivers = []
        self._oneshot = oneshot
        self._latch = mitogen.core.Latch()
        for recv in receivers:
            self.add(recv)

    @classmethod
    def all(cls, receivers):
        """Return the unpickled result of every receiver, in arrival order;
        raise the first CallError met."""
        return [msg.unpickle() for _, msg in cls(receivers)]

    def __repr__(self):
        return "Select(%d receivers)" % (len(self._receivers),)

    def __bool__(self):
        """True if any receivers are registered."""
        return bool(self._receivers)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def __iter__(self):
        """Yield get() results until no receivers remain."""
        while self._receivers:
            yield self.get()

    def _put(self, recv):
        self._latch.put(recv)
        if self.notify:
            self.notify(self)

    def _contains(self, recv):
        return recv is self or any(
            r is recv or (isinstance(r, Select) and r._contains(recv)) for r in self._receivers
        )

    def add(self, recv):
        """Add a Receiver, Channel, Latch or Select."""
        if isinstance(recv, Select) and recv._contains(self):
            raise Error("adding this Select would create a loop")
        if recv.notify is not None:
            raise Error("%r already belongs to a Select" % (recv,))
        self._receivers.append(recv)
        recv.notify = self._put
        for _ in range(recv.size()):
            self._put(recv)

    def remove(self, recv):
        """Remove `recv`. A notification it already posted may still be
        returned by a later get()."""
        if recv not in self._receivers or recv.notify != self._put:
            raise Error("%r is not in this Select" % (recv,))
        self._receivers.remove(recv)
        recv.notify = None

    def close(self):
        """Remove every receiver, recursively for nested Selects."""
        for recv in list(self._receivers):
            self.remove(recv)
            if isinstance(recv, Select):
                recv.close()
        self._latch.close()

    def size(self):
        return self._latch.size()

    def empty(self):
        """True if nothing appears to be queued; advisory only."""
        return self._latch.empty()

    def get(self, timeout=None, block=True):
        """Return `(receiver, msg)` from the first ready receiver.

        :raises mitogen.core.TimeoutError: nothing arrived in time.
        :raises Error: the Select is empty.
        """
        if not self._receivers:
            raise Error("cannot get() from an empty Select")
        deadline = None if timeout is None else mitogen.core.now() + timeout
        while True:
            remaining = None
            if deadline is not None:
                remaining = max(0.0, deadline - mitogen.core.now())
            recv = self._latch.get(timeout=remaining, block=block)
            try:
                if isinstance(recv, Select):
                    result = recv.get(block=False)
                elif isinstance(recv, mitogen.core.Latch):
                    result = recv, recv.get(block=False)
                else:
                    result = recv, recv.get(block=False, throw_dead=False)
            except (mitogen.core.TimeoutError, Error):
                # A stale notification: the receiver was drained or a nested
                # Select emptied since it was posted.
                continue
            if self._oneshot and recv in self._receivers:
                self.remove(recv)
            return result
