"""The kernel-backed pollers: PollPoller (poll(2)) and EpollPoller (Linux
epoll(7)), and PREFERRED_POLLER, the best one this platform has.

Owns: keeping a kernel interest set in step with mitogen.core.Poller's
reader and writer maps. KqueuePoller (BSD, macOS) is in
mitogen.kqueue_poller; mitogen.parent re-exports all of them.
"""

import errno
import select

import mitogen.core


class _KernelPoller(mitogen.core.Poller):
    """A Poller whose interest set also lives in the kernel: every change
    is pushed through _update(fd)."""

    def start_receive(self, fd, data=None):
        super().start_receive(fd, data)
        self._update(fd)

    def stop_receive(self, fd):
        super().stop_receive(fd)
        self._update(fd)

    def start_transmit(self, fd, data=None):
        super().start_transmit(fd, data)
        self._update(fd)

    def stop_transmit(self, fd):
        super().stop_transmit(fd)
        self._update(fd)

    def _update(self, fd):
        raise NotImplementedError()


class PollPoller(_KernelPoller):
    """Poller based on poll(2)."""

    _repr = "PollPoller()"

    def __init__(self):
        super().__init__()
        self._pollobj = select.poll()

    def _update(self, fd):
        mask = (fd in self._rfds and select.POLLIN) | (fd in self._wfds and select.POLLOUT)
        if mask:
            self._pollobj.register(fd, mask)
        else:
            try:
                self._pollobj.unregister(fd)
            except KeyError:
                pass

    def _poll(self, timeout):
        if timeout is not None:
            timeout *= 1000
        try:
            events = self._pollobj.poll(timeout)
        except InterruptedError:
            return
        for fd, event in events:
            if event & (select.POLLIN | select.POLLHUP | select.POLLERR) and fd in self._rfds:
                yield self._rfds[fd]
            if event & (select.POLLOUT | select.POLLERR) and fd in self._wfds:
                yield self._wfds[fd]


class EpollPoller(_KernelPoller):
    """Poller based on Linux epoll(7)."""

    _repr = "EpollPoller()"

    def __init__(self):
        super().__init__()
        self._epoll = select.epoll(32)
        self._registered = set()

    def close(self):
        self._epoll.close()

    def _update(self, fd):
        mask = (fd in self._rfds and select.EPOLLIN) | (fd in self._wfds and select.EPOLLOUT)
        try:
            if mask and fd in self._registered:
                self._epoll.modify(fd, mask)
            elif mask:
                self._epoll.register(fd, mask)
                self._registered.add(fd)
            elif fd in self._registered:
                self._registered.discard(fd)
                self._epoll.unregister(fd)
        except OSError as e:
            if e.errno not in (errno.EBADF, errno.ENOENT):
                raise

    def _poll(self, timeout):
        try:
            events = self._epoll.poll(-1 if timeout is None else timeout, 64)
        except InterruptedError:
            return
        for fd, event in events:
            if event & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and fd in self._rfds:
                yield self._rfds[fd]
            if event & (select.EPOLLOUT | select.EPOLLERR) and fd in self._wfds:
                yield self._wfds[fd]


PREFERRED_POLLER = EpollPoller if hasattr(select, "epoll") else PollPoller
