"""Behaviour of the names the reference documents give that live outside
their own modules or keep older meanings: mitogen.master.Select/Context,
mitogen.parent.TimerList/Timer/KqueuePoller, mitogen.fork.Process,
Stream.pending_bytes(), BasicStream and IoLogger."""

from __future__ import annotations

import logging
import os
import select
import socket
import sys
import time

import pytest

import mitogen.core
import mitogen.fork
import mitogen.master
import mitogen.parent
import mitogen.select
from tests import remote_helpers

# --- mitogen.master.Select -------------------------------------------------


def _receivers(router: mitogen.master.Router, n: int) -> list[mitogen.core.Receiver]:
    return [mitogen.core.Receiver(router) for _ in range(n)]


def _send(router: mitogen.master.Router, recv: mitogen.core.Receiver, value: object) -> None:
    recv.to_sender().send(value)


def test_master_select_is_the_select(router: mitogen.master.Router) -> None:
    assert mitogen.master.Select is mitogen.select.Select
    recv = mitogen.core.Receiver(router)
    with mitogen.master.Select([recv]) as sel:
        assert isinstance(sel, mitogen.select.Select)


def test_select_get_times_out(router: mitogen.master.Router) -> None:
    (recv,) = _receivers(router, 1)
    with mitogen.master.Select([recv]) as sel:
        t0 = time.monotonic()
        with pytest.raises(mitogen.core.TimeoutError):
            sel.get(timeout=0.2)
        assert 0.2 <= time.monotonic() - t0 < 2
        _send(router, recv, "late")
        got, msg = sel.get(timeout=5)
        assert got is recv and msg.unpickle() == "late"
    recv.close()


def test_select_iterates_call_results_from_a_real_context(router: mitogen.master.Router) -> None:
    """The public API document's scatter/gather example."""
    context = router.local()
    recvs = [context.call_async(remote_helpers.identity, n) for n in range(5)]
    total = 0
    seen = []
    with mitogen.master.Select(recvs) as sel:
        for recv, msg in sel:
            seen.append(recv)
            total += msg.unpickle()
        assert not sel  # oneshot: every receiver removed, iteration ended
    assert total == 10
    assert sorted(map(id, seen)) == sorted(map(id, recvs))
    context.shutdown(wait=True, timeout=10)


def test_select_add_remove_bool_empty(router: mitogen.master.Router) -> None:
    a, b = _receivers(router, 2)
    sel = mitogen.master.Select(oneshot=False)
    assert not sel and sel.empty()
    sel.add(a)
    assert sel
    _send(router, a, 1)
    deadline = time.monotonic() + 5
    while sel.empty() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not sel.empty()
    assert sel.get(timeout=5)[1].unpickle() == 1
    assert sel  # oneshot=False keeps the receiver
    sel.add(b)
    sel.remove(a)
    _send(router, a, "ignored")
    _send(router, b, 2)
    got, msg = sel.get(timeout=5)
    assert got is b and msg.unpickle() == 2
    assert a.get(timeout=5).unpickle() == "ignored"  # still delivered to a itself
    with pytest.raises(mitogen.select.Error):
        sel.remove(a)
    sel.close()
    assert not sel
    assert a.notify is None and b.notify is None  # close() detaches the notifiers
    for recv in a, b:
        recv.close()


def test_nested_select_and_bool(router: mitogen.master.Router) -> None:
    a, b = _receivers(router, 2)
    subs = [mitogen.master.Select([a]), mitogen.master.Select([b])]
    with mitogen.master.Select(subs, oneshot=False) as sel:
        _send(router, b, "from b")
        _send(router, a, "from a")
        values = set()
        while subs and any(subs):
            values.add(sel.get(timeout=5)[1].unpickle())
        assert values == {"from a", "from b"}
    for recv in a, b:
        recv.close()


def test_master_context_is_the_callable_context(router: mitogen.master.Router) -> None:
    assert mitogen.master.Context is mitogen.parent.Context
    context = router.local()
    assert isinstance(context, mitogen.master.Context)
    assert context.call(remote_helpers.identity, "x") == "x"
    context.shutdown(wait=True, timeout=10)


# --- mitogen.parent.TimerList / Timer --------------------------------------


def test_timerlist_fires_in_time_order_and_skips_cancelled() -> None:
    timers = mitogen.parent.TimerList()
    fired: list[str] = []
    base = mitogen.core.now()
    timers.schedule(base - 1, lambda: fired.append("third"))
    timers.schedule(base - 3, lambda: fired.append("first"))
    cancelled = timers.schedule(base - 2, lambda: fired.append("cancelled"))
    timers.schedule(base - 2, lambda: fired.append("second"))  # same time: FIFO after cancelled
    later = timers.schedule(base + 60, lambda: fired.append("later"))
    assert isinstance(later, mitogen.parent.Timer)
    assert len(timers) == 5
    cancelled.cancel()
    assert not cancelled.active
    timers.expire()
    assert fired == ["first", "second", "third"]
    timeout = timers.get_timeout()
    assert timeout is not None and 59 < timeout <= 60
    later.cancel()
    assert timers.get_timeout() is None
    timers.expire()
    assert fired == ["first", "second", "third"]


def test_timerlist_on_a_live_broker() -> None:
    broker = mitogen.master.Broker()
    latch = mitogen.core.Latch()
    try:

        def schedule() -> None:
            t = mitogen.core.now()
            broker.timers.schedule(t + 0.06, lambda: latch.put("c"))
            broker.timers.schedule(t + 0.02, lambda: latch.put("a"))
            broker.timers.schedule(t + 0.04, lambda: latch.put("b"))
            broker.timers.schedule(t + 0.03, lambda: latch.put("never")).cancel()

        t0 = time.monotonic()
        broker.defer(schedule)
        assert [latch.get(timeout=5) for _ in range(3)] == ["a", "b", "c"]
        assert time.monotonic() - t0 >= 0.06
        with pytest.raises(mitogen.core.TimeoutError):
            latch.get(timeout=0.1)
        assert isinstance(broker.timers, mitogen.parent.TimerList)
    finally:
        broker.shutdown()
        broker.join(10)


# --- Stream.pending_bytes() -------------------------------------------------


def get_pending_bytes(broker: mitogen.core.Broker, stream: mitogen.core.Stream) -> int:
    """The wrapper the internal reference gives, verbatim in spirit."""
    latch = mitogen.core.Latch()
    broker.defer(lambda: latch.put(stream.pending_bytes()))
    return latch.get(timeout=10)


def test_pending_bytes_under_load(router: mitogen.master.Router) -> None:
    """Messages to a peer that does not read queue up in the stream; once
    the peer reads, the queue drains to zero and every byte arrives."""
    ours, theirs = socket.socketpair()
    for sock in ours, theirs:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    context = mitogen.parent.Context(router, router.allocate_id(), "sink")
    stream = mitogen.parent.MitogenProtocol.build_stream(router, context.context_id)
    stream.name = "sink"
    fd = ours.detach()
    stream.accept(fd, fd)
    router.broker.defer_sync(lambda: router.register(context, stream))
    assert get_pending_bytes(router.broker, stream) == 0
    count, size = 8, 1048576
    for _ in range(count):
        context.send(mitogen.core.Message(data=b"x" * size, handle=1000))
    total = count * (size + mitogen.core.HEADER_LEN)
    deadline = time.monotonic() + 10
    pending = 0
    while pending < total - 2 * size and time.monotonic() < deadline:
        time.sleep(0.01)
        pending = get_pending_bytes(router.broker, stream)
    # Nearly all of it waits in RAM: the socket holds only its buffers.
    assert total - 2 * size <= pending <= total
    theirs.settimeout(10)
    received = 0
    while received < total:
        received += len(theirs.recv(size))
    assert received == total
    assert get_pending_bytes(router.broker, stream) == 0
    latch = mitogen.core.Latch()
    mitogen.core.listen(stream, "disconnect", lambda: latch.put(None))
    theirs.close()
    latch.get(timeout=10)


def test_pending_bytes_is_zero_without_a_queue() -> None:
    stream = mitogen.core.IoLoggerProtocol.build_stream("test.pending", os.open(os.devnull, 0))
    try:
        assert stream.pending_bytes() == 0
    finally:
        stream.receive_side.close()


# --- BasicStream and IoLogger ------------------------------------------------


class OldStyleReader(mitogen.core.BasicStream):
    """A stream written against the older reference: no Protocol, its own
    on_receive(), and no call to the base __init__."""

    def __init__(self, fd: int) -> None:
        self.side = mitogen.core.Side(self, fd)
        self.receive_side = self.side  # type: ignore[assignment]
        self.chunks: list[bytes] = []

    def on_receive(self, broker: mitogen.core.Broker) -> None:
        buf = self.side.read()
        if not buf:
            return self.on_disconnect(broker)
        self.chunks.append(buf)


def test_basic_stream_subclass_reads_and_disconnects() -> None:
    broker = mitogen.core.Broker()
    rfd, wfd = mitogen.core.pipe()
    stream = OldStyleReader(rfd)
    latch = mitogen.core.Latch()
    mitogen.core.listen(stream, "disconnect", lambda: latch.put("disconnected"))
    try:
        broker.start_receive(stream)
        os.write(wfd, b"hello")
        os.close(wfd)
        assert latch.get(timeout=5) == "disconnected"
        assert b"".join(stream.chunks) == b"hello"
        assert stream.side.closed
        readers = broker.defer_sync(lambda: broker.poller.readers, timeout=5)
        assert all(data[0] is not stream.side for _, data in readers)
    finally:
        broker.shutdown()
        broker.join(10)


def test_basic_stream_on_shutdown_disconnects() -> None:
    """The documented base on_shutdown() calls on_disconnect(), which closes
    the sides: a stream still open at Broker shutdown is closed."""
    broker = mitogen.core.Broker()
    rfd, wfd = mitogen.core.pipe()
    stream = OldStyleReader(rfd)
    events: list[str] = []
    mitogen.core.listen(stream, "shutdown", lambda: events.append("shutdown"))
    mitogen.core.listen(stream, "disconnect", lambda: events.append("disconnect"))
    broker.start_receive(stream)
    broker.shutdown()
    broker.join(10)
    os.close(wfd)
    assert events == ["shutdown", "disconnect"]
    assert stream.side.closed


def test_iologger_logs_lines(caplog: pytest.LogCaptureFixture) -> None:
    broker = mitogen.core.Broker()
    dest = os.open(os.devnull, os.O_WRONLY)
    stream = mitogen.core.IoLoggerProtocol.build_stream("test.iologger", dest)
    assert isinstance(stream, mitogen.core.IoLogger)
    latch = mitogen.core.Latch()
    mitogen.core.listen(stream, "disconnect", lambda: latch.put(None))
    try:
        with caplog.at_level(logging.INFO, logger="test.iologger"):
            broker.start_receive(stream)
            os.write(dest, b"first line\nsecond")
            os.close(dest)
            latch.get(timeout=5)
        lines = [r.getMessage() for r in caplog.records if r.name == "test.iologger"]
        assert lines == ["first line", "second"]
    finally:
        broker.shutdown()
        broker.join(10)


def test_child_stdio_loggers_are_iologgers(router: mitogen.master.Router) -> None:
    context = router.local()
    # mitogen.core.IoLogger, defined in mitogen.streams
    assert context.call(remote_helpers.stdio_logger_types) == ["mitogen.streams.IoLogger"] * 2
    context.shutdown(wait=True, timeout=10)


# --- mitogen.fork.Process ------------------------------------------------------


def test_fork_connection_child_is_a_fork_process(router: mitogen.master.Router) -> None:
    conn = mitogen.fork.Connection(
        mitogen.fork.Options(max_message_size=router.max_message_size), router
    )
    context = router.context_class(router, router.allocate_id())
    conn.connect(context)
    assert isinstance(conn.proc, mitogen.fork.Process)
    assert isinstance(conn.proc, mitogen.parent.Process)
    assert context.call(os.getpid) == conn.proc.pid
    latch = mitogen.core.Latch()
    mitogen.core.listen(conn.proc, "exit", lambda: latch.put(None))
    context.shutdown(wait=True, timeout=10)
    latch.get(timeout=10)
    assert conn.proc.returncode == 0


# --- mitogen.parent.KqueuePoller ----------------------------------------------


@pytest.mark.skipif(hasattr(select, "kqueue"), reason="this platform has kqueue")
def test_kqueue_poller_says_why_it_cannot_run_here() -> None:
    with pytest.raises(mitogen.core.Error) as info:
        mitogen.parent.KqueuePoller()
    text = str(info.value)
    assert "kqueue" in text and sys.platform in text
    assert "EpollPoller" in text and "PollPoller" in text
    with pytest.raises(mitogen.core.Error):
        mitogen.master.Broker(poller_class=mitogen.parent.KqueuePoller)


def _drive_a_broker_with_kqueue() -> None:
    broker = mitogen.master.Broker(poller_class=mitogen.parent.KqueuePoller)
    assert isinstance(broker.poller, mitogen.parent.KqueuePoller)
    r = mitogen.master.Router(broker)
    try:
        context = r.local()
        big = b"k" * 20000000  # larger than the socket buffers: needs write interest
        recv = context.call_async(remote_helpers.identity, big)
        assert recv.get(timeout=20).unpickle() == big
        context.shutdown(wait=True, timeout=10)
    finally:
        broker.shutdown()
        broker.join(10)


@pytest.mark.skipif(not hasattr(select, "kqueue"), reason="needs kqueue (BSD, macOS)")
def test_kqueue_poller_drives_a_broker() -> None:
    _drive_a_broker_with_kqueue()


class FakeKevent:
    def __init__(self, ident: int, filter: int, flags: int = 0) -> None:  # noqa: A002
        self.ident = ident
        self.filter = filter
        self.flags = flags


class FakeKqueue:
    """The kqueue(2) behaviour KqueuePoller relies on, emulated with poll(2)
    where the platform has no kqueue: changes apply in order, deleting an
    unknown filter yields an EV_ERROR event, a closed descriptor's filters
    vanish."""

    READ, WRITE, ADD, DELETE, ERROR = -1, -2, 1, 2, 0x4000

    def __init__(self) -> None:
        self.filters: set[tuple[int, int]] = set()
        self.changes_seen = 0

    def close(self) -> None:
        self.filters.clear()

    @staticmethod
    def _is_open(fd: int) -> bool:
        try:
            os.fstat(fd)
            return True
        except OSError:
            return False

    def control(
        self, changes: list[FakeKevent], max_events: int, timeout: float | None
    ) -> list[FakeKevent]:
        self.filters = {key for key in self.filters if self._is_open(key[0])}
        errors = []
        for change in changes:
            self.changes_seen += 1
            key = (change.ident, change.filter)
            if change.flags & self.ADD and self._is_open(change.ident):
                self.filters.add(key)
            elif change.flags & self.DELETE and key in self.filters:
                self.filters.discard(key)
            else:
                errors.append(FakeKevent(change.ident, change.filter, self.ERROR))
        poller = select.poll()
        masks: dict[int, int] = {}
        for fd, kfilter in self.filters:
            masks[fd] = masks.get(fd, 0) | (
                select.POLLIN if kfilter == self.READ else select.POLLOUT
            )
        for fd, mask in masks.items():
            poller.register(fd, mask)
        ready = poller.poll(None if timeout is None or errors else timeout * 1000)
        events = list(errors)
        for fd, event in ready:
            if (fd, self.READ) in self.filters and event & (
                select.POLLIN | select.POLLHUP | select.POLLERR
            ):
                events.append(FakeKevent(fd, self.READ))
            if (fd, self.WRITE) in self.filters and event & (select.POLLOUT | select.POLLERR):
                events.append(FakeKevent(fd, self.WRITE))
        return events[:max_events]


@pytest.mark.skipif(hasattr(select, "kqueue"), reason="the real kqueue is tested instead")
def test_kqueue_poller_logic_over_emulated_kqueue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux has no kqueue: run the poller's bookkeeping against an
    emulation to show it drives a Broker through a real context's
    traffic."""
    queues: list[FakeKqueue] = []

    def make() -> FakeKqueue:
        queues.append(FakeKqueue())
        return queues[-1]

    monkeypatch.setattr(select, "kqueue", make, raising=False)
    monkeypatch.setattr(select, "kevent", FakeKevent, raising=False)
    for name, value in [
        ("KQ_FILTER_READ", FakeKqueue.READ),
        ("KQ_FILTER_WRITE", FakeKqueue.WRITE),
        ("KQ_EV_ADD", FakeKqueue.ADD),
        ("KQ_EV_DELETE", FakeKqueue.DELETE),
        ("KQ_EV_ERROR", FakeKqueue.ERROR),
    ]:
        monkeypatch.setattr(select, name, value, raising=False)
    _drive_a_broker_with_kqueue()
    assert len(queues) == 1 and queues[0].changes_seen > 4
