"""KqueuePoller: the Broker's Poller on BSD and macOS, built on kqueue(2).

mitogen.parent re-exports it. On systems without kqueue (Linux) creating
one raises mitogen.core.Error saying which pollers to use instead.
"""

import select
import sys

import mitogen.core


class KqueuePoller(mitogen.core.Poller):
    """Poller based on kqueue(2). Interest changes are queued and handed to
    the kernel with the next poll()."""

    _repr = "KqueuePoller()"
    #: Most events fetched per poll().
    max_events = 64

    def __init__(self):
        if not hasattr(select, "kqueue"):
            raise mitogen.core.Error(
                "KqueuePoller needs kqueue(2), which this platform (%s) lacks; "
                "use mitogen.parent.EpollPoller or mitogen.parent.PollPoller",
                sys.platform,
            )
        super().__init__()
        self._kqueue = select.kqueue()
        self._changes = []

    def close(self):
        self._kqueue.close()

    def _change(self, fd, kfilter, flags):
        self._changes.append(select.kevent(fd, filter=kfilter, flags=flags))

    def start_receive(self, fd, data=None):
        if fd not in self._rfds:
            self._change(fd, select.KQ_FILTER_READ, select.KQ_EV_ADD)
        super().start_receive(fd, data)

    def stop_receive(self, fd):
        if fd in self._rfds:
            self._change(fd, select.KQ_FILTER_READ, select.KQ_EV_DELETE)
        super().stop_receive(fd)

    def start_transmit(self, fd, data=None):
        if fd not in self._wfds:
            self._change(fd, select.KQ_FILTER_WRITE, select.KQ_EV_ADD)
        super().start_transmit(fd, data)

    def stop_transmit(self, fd):
        if fd in self._wfds:
            self._change(fd, select.KQ_FILTER_WRITE, select.KQ_EV_DELETE)
        super().stop_transmit(fd)

    def _poll(self, timeout):
        changes, self._changes = self._changes, []
        for event in self._kqueue.control(changes, self.max_events, timeout):
            fd = event.ident
            if event.flags & select.KQ_EV_ERROR:
                # A change for a descriptor closed before it was applied:
                # the kernel already forgot it.
                continue
            if event.filter == select.KQ_FILTER_READ and fd in self._rfds:
                yield self._rfds[fd]
            elif event.filter == select.KQ_FILTER_WRITE and fd in self._wfds:
                yield self._wfds[fd]
