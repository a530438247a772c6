"""The Broker: the one thread that touches file descriptors. Owns the
select(2) Poller (the kernel-backed ones are in mitogen.pollers), the Waker
that runs functions deferred from other threads, Timer/TimerList and the
Broker's loop and ordered shutdown. Part of the bootstrap bundle: standard
library only, Python 3.6 compatible. mitogen.core re-exports every public
name.
"""

import heapq
import itertools
import select
import threading

import mitogen.wire
from mitogen.channels import Latch
from mitogen.streams import Protocol, pipe
from mitogen.wire import LOG, Error, fire


class Poller:
    """Track interest in file descriptors and wait for readiness; the base
    implementation uses select(2)."""

    _repr = "Poller()"

    def __init__(self):
        self._rfds = {}
        self._wfds = {}

    def __repr__(self):
        return self._repr

    @property
    def readers(self):
        return list(self._rfds.items())

    @property
    def writers(self):
        return list(self._wfds.items())

    def close(self):
        """Release any kernel resources."""

    def start_receive(self, fd, data=None):
        self._rfds[fd] = fd if data is None else data

    def stop_receive(self, fd):
        self._rfds.pop(fd, None)

    def start_transmit(self, fd, data=None):
        self._wfds[fd] = fd if data is None else data

    def stop_transmit(self, fd):
        self._wfds.pop(fd, None)

    def _poll(self, timeout):
        rfds, wfds, _ = select.select(self._rfds, self._wfds, (), timeout)
        for fd in rfds:
            if fd in self._rfds:
                yield self._rfds[fd]
        for fd in wfds:
            if fd in self._wfds:
                yield self._wfds[fd]

    def poll(self, timeout=None):
        """Yield the data of each ready descriptor."""
        return self._poll(timeout)


class Waker(Protocol):
    """Wake the Broker thread from other threads through a pipe, and run
    deferred functions on it."""

    read_size = 128

    @classmethod
    def build_stream(cls, broker):
        stream = super(Waker, cls).build_stream(broker)
        stream.name = "waker"
        stream.accept(*pipe())
        stream.receive_side.keep_alive = False
        return stream

    def __init__(self, broker):
        self._broker = broker
        self._lock = threading.Lock()
        self._deferred = []
        self._pending = False

    def defer(self, func, *args, **kwargs):
        """Arrange for `func(*args, **kwargs)` to run on the Broker."""
        with self._lock:
            if self.stream.transmit_side.closed:
                raise Error("cannot defer %r: the Broker has exited", func)
            self._deferred.append((func, args, kwargs))
            wake = not self._pending
            self._pending = True
        if wake:
            self.stream.transmit_side.write(b" ")

    def on_receive(self, broker, buf):
        with self._lock:
            items = self._deferred
            self._deferred = []
            self._pending = False
        for func, args, kwargs in items:
            try:
                func(*args, **kwargs)
            except Exception:
                LOG.exception("%r: deferred %r crashed", self, func)

    def on_disconnect(self, broker):
        with self._lock:
            Protocol.on_disconnect(self, broker)


class Timer:
    """A function scheduled to run on the Broker at a monotonic time."""

    def __init__(self, when, func):
        self.when = when
        self.func = func
        self.active = True

    def cancel(self):
        """Stop the timer from firing."""
        self.active = False


class TimerList:
    """A heap of Timers; every method must run on the Broker thread."""

    def __init__(self):
        self._heap = []
        self._seq = itertools.count()

    def __len__(self):
        return len(self._heap)

    def get_timeout(self):
        """Seconds until the next timer fires, or None."""
        while self._heap and not self._heap[0][2].active:
            heapq.heappop(self._heap)
        if self._heap:
            return max(0.0, self._heap[0][0] - mitogen.wire.now())
        return None

    def schedule(self, when, func):
        """Run `func()` at monotonic time `when`; return the Timer."""
        timer = Timer(when, func)
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        return timer

    def expire(self):
        """Fire every due timer."""
        t = mitogen.wire.now()
        while self._heap and self._heap[0][0] <= t:
            timer = heapq.heappop(self._heap)[2]
            if timer.active:
                timer.active = False
                timer.func()


class Broker:
    """Own the I/O thread: poll descriptors, run deferred calls and timers,
    and shut down in order."""

    poller_class = Poller
    #: Seconds to wait for streams to disconnect gracefully at shutdown.
    shutdown_timeout = 3.0

    def __init__(self, poller_class=None):
        self._alive = True
        self.poller = (poller_class or self.poller_class)()
        self.timers = TimerList()
        self._waker = Waker.build_stream(self)
        self.defer = self._waker.protocol.defer
        self.poller.start_receive(
            self._waker.receive_side.fd, (self._waker.receive_side, self._waker.on_receive)
        )
        self._thread = threading.Thread(target=self._broker_main, name="mitogen.broker")
        self._thread.daemon = True
        self._thread.start()

    def __repr__(self):
        return "Broker(%04x)" % (id(self) & 0xFFFF,)

    def in_thread(self):
        """True when called on the Broker thread."""
        return threading.current_thread() is self._thread

    def defer_sync(self, func, timeout=None):
        """Run `func()` on the Broker and return its result."""
        if self.in_thread():
            return func()
        latch = Latch()

        def wrapper():
            try:
                latch.put((True, func()))
            except Exception as e:
                latch.put((False, e))

        self.defer(wrapper)
        ok, value = latch.get(timeout=timeout)
        if not ok:
            raise value
        return value

    def _run_here(self, func, *args):
        if self.in_thread():
            func(*args)
        else:
            self.defer(func, *args)

    def start_receive(self, stream):
        """Watch `stream` for readability."""
        side = stream.receive_side
        self._run_here(self.poller.start_receive, side.fd, (side, stream.on_receive))

    def stop_receive(self, stream):
        self._run_here(self.poller.stop_receive, stream.receive_side.fd)

    def start_transmit(self, stream):
        """Watch `stream` for writability; call on the Broker thread."""
        side = stream.transmit_side
        self.poller.start_transmit(side.fd, (side, stream.on_transmit))

    def stop_transmit(self, stream):
        """Stop watching `stream` for writability; call on the Broker thread."""
        self.poller.stop_transmit(stream.transmit_side.fd)

    def keep_alive(self):
        """True while a stream still wants the Broker to run."""
        return any(data[0].keep_alive for _, data in self.poller.readers if isinstance(data, tuple))

    def _call(self, stream, func):
        try:
            func(self)
        except Exception:
            LOG.exception("%r crashed", stream)
            stream.on_disconnect(self)

    def _loop_once(self, timeout=None):
        timer_timeout = self.timers.get_timeout()
        if timeout is None or (timer_timeout is not None and timer_timeout < timeout):
            timeout = timer_timeout
        for side, func in self.poller.poll(timeout):
            self._call(side.stream, func)
        if self.timers:
            self.timers.expire()

    def _broker_exit(self):
        for _, (side, _) in self.poller.readers + self.poller.writers:
            self._call(side.stream, side.stream.on_disconnect)
        self._waker.on_disconnect(self)
        self.poller.close()
        fire(self, "exit")

    def _broker_shutdown(self):
        for _, (side, _) in self.poller.readers:
            self._call(side.stream, side.stream.on_shutdown)
        deadline = mitogen.wire.now() + self.shutdown_timeout
        while self.keep_alive() and mitogen.wire.now() < deadline:
            self._loop_once(max(0.0, deadline - mitogen.wire.now()))
        if self.keep_alive():
            LOG.error(
                "%r: streams still open %.1f seconds after shutdown began; forcing them closed: %r",
                self,
                self.shutdown_timeout,
                [data[0] for _, data in self.poller.readers],
            )

    def _broker_main(self):
        try:
            while self._alive:
                self._loop_once()
            fire(self, "before_shutdown")
            fire(self, "shutdown")
            self._broker_shutdown()
        except Exception:
            LOG.exception("%r: broker crashed", self)
        finally:
            self._broker_exit()

    def _set_dead(self):
        self._alive = False

    def shutdown(self):
        """Ask the Broker to shut down; returns at once (see join())."""
        try:
            self.defer(self._set_dead)
        except Error:
            pass

    def join(self, timeout=None):
        """Wait for the Broker thread to exit."""
        self._thread.join(timeout)
