"""Latch, Select (over Latches) and TimerList."""

import threading
import time
from typing import Any

import pytest

import mitogen.core
import mitogen.select
import mitogen.wire
from mitogen.core import Latch, LatchError, TimeoutError, TimerList
from mitogen.select import Select

# ---------------------------------------------------------------------------
# Latch.


def _run_thread(target):
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


def test_latch_fifo():
    latch = Latch()
    for i in range(5):
        latch.put(i)
    assert latch.size() == 5
    assert not latch.empty()
    assert [latch.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert latch.size() == 0
    assert latch.empty()


def test_latch_put_default_is_none():
    latch = Latch()
    latch.put()
    assert latch.get(block=False) is None


def test_latch_get_timeout():
    latch = Latch()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        latch.get(timeout=0.05)
    elapsed = time.monotonic() - t0
    assert 0.05 <= elapsed < 1.0
    assert issubclass(TimeoutError, mitogen.core.StreamError)


def test_latch_get_nonblocking_empty():
    latch = Latch()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        latch.get(block=False)
    assert time.monotonic() - t0 < 0.5


def test_latch_get_nonblocking_nonempty():
    latch = Latch()
    latch.put("x")
    assert latch.get(block=False) == "x"


def test_latch_get_wakes_on_put_from_thread():
    latch = Latch()
    t = threading.Timer(0.05, latch.put, args=("late",))
    t.start()
    try:
        assert latch.get(timeout=5) == "late"
    finally:
        t.join()


def test_latch_close_wakes_blocked_getter():
    latch = Latch()
    seen = []
    started = threading.Event()

    def getter():
        started.set()
        try:
            seen.append(("value", latch.get(timeout=10)))
        except BaseException as e:
            seen.append(("exc", type(e)))

    t = _run_thread(getter)
    started.wait(5)
    time.sleep(0.05)
    assert seen == []
    t0 = time.monotonic()
    latch.close()
    t.join(5)
    assert not t.is_alive()
    assert time.monotonic() - t0 < 2
    assert seen == [("exc", LatchError)]


def test_latch_put_after_close():
    latch = Latch()
    latch.close()
    with pytest.raises(LatchError):
        latch.put(1)
    assert latch.size() == 0


def test_latch_get_after_close_empty():
    latch = Latch()
    latch.close()
    with pytest.raises(LatchError):
        latch.get(block=False)
    with pytest.raises(LatchError):
        latch.get(timeout=0.01)


def test_latch_many_producers_consumers():
    latch = Latch()
    n_producers, n_consumers, per = 8, 6, 500
    results: list[list[Any]] = [[] for _ in range(n_consumers)]
    errors = []

    def producer(p):
        for i in range(per):
            latch.put((p, i))

    def consumer(c):
        try:
            while True:
                results[c].append(latch.get(timeout=10))
        except LatchError:
            pass
        except BaseException as e:
            errors.append(e)

    consumers = [_run_thread(lambda c=c: consumer(c)) for c in range(n_consumers)]
    producers = [_run_thread(lambda p=p: producer(p)) for p in range(n_producers)]
    for t in producers:
        t.join(10)
    latch.close()
    for t in consumers:
        t.join(10)
    assert not any(t.is_alive() for t in producers + consumers)
    assert errors == []
    got = [item for r in results for item in r]
    assert len(got) == n_producers * per
    assert sorted(got) == [(p, i) for p in range(n_producers) for i in range(per)]
    # Per-producer order is preserved within each consumer's stream.
    for r in results:
        for p in range(n_producers):
            seq = [i for (pp, i) in r if pp == p]
            assert seq == sorted(seq)


def test_latch_notify_called_after_put():
    latch = Latch()
    calls = []
    latch.notify = lambda lt: calls.append((lt, lt.size()))
    latch.put("a")
    assert calls == [(latch, 1)]


# ---------------------------------------------------------------------------
# Select over Latches.


def _latches(*values):
    out = []
    for v in values:
        latch = Latch()
        if v is not None:
            latch.put(v)
        out.append(latch)
    return out


def test_select_get_returns_receiver_and_value():
    a, b = _latches(None, None)
    sel = Select([a, b])
    b.put("bee")
    assert sel.get(timeout=5) == (b, "bee")
    a.put("ay")
    assert sel.get(timeout=5) == (a, "ay")


def test_select_oneshot_iteration():
    a, b, c = _latches(None, None, None)
    sel = Select([a, b, c])
    assert bool(sel)
    c.put(3)
    a.put(1)
    b.put(2)
    got = list(sel)
    assert got == [(c, 3), (a, 1), (b, 2)]
    assert not sel
    assert a.notify is None and b.notify is None and c.notify is None


def test_select_oneshot_iteration_from_threads():
    latches = _latches(None, None, None, None)
    sel = Select(latches)
    timers = [threading.Timer(0.01 * i, lt.put, args=(i,)) for i, lt in enumerate(latches)]
    for t in timers:
        t.start()
    try:
        got = list(sel)
    finally:
        for t in timers:
            t.join()
    assert sorted(got, key=lambda rv: rv[1]) == [(lt, i) for i, lt in enumerate(latches)]
    assert [r for r, _ in got].count(latches[0]) == 1
    assert not sel


def test_select_oneshot_false_keeps_receivers():
    a, b = _latches(None, None)
    sel = Select([a, b], oneshot=False)
    a.put(1)
    a.put(2)
    b.put(3)
    assert [sel.get(timeout=5) for _ in range(3)] == [(a, 1), (a, 2), (b, 3)]
    assert bool(sel)
    assert a.notify is not None and b.notify is not None
    a.put(4)
    assert sel.get(timeout=5) == (a, 4)
    with pytest.raises(TimeoutError):
        sel.get(timeout=0.01)


def test_select_items_put_before_add_are_seen():
    a, b = _latches("early-a", None)
    a.put("early-a2")
    sel = Select([a], oneshot=False)
    assert sel.size() == 2
    b.put("early-b")
    sel.add(b)
    got = [sel.get(timeout=5) for _ in range(3)]
    assert got == [(a, "early-a"), (a, "early-a2"), (b, "early-b")]


def test_select_nested():
    a, b, c = _latches(None, None, None)
    inner1 = Select([a, b])
    inner2 = Select([c])
    subselects = [inner1, inner2]
    outer = Select(subselects, oneshot=False)
    a.put("A")
    c.put("C")
    b.put("B")
    got = []
    while any(subselects):
        got.append(outer.get(timeout=5))
    # The innermost receiver is reported, not the sub-Select.
    assert got == [(a, "A"), (c, "C"), (b, "B")]
    assert not inner1 and not inner2
    assert bool(outer)


def test_select_nested_values_queued_before_nesting():
    a, b = _latches("A", "B")
    inner = Select([a, b])
    outer = Select([inner], oneshot=False)
    assert sorted(v for _, v in (outer.get(timeout=5), outer.get(timeout=5))) == ["A", "B"]


def test_select_nested_stale_notification_does_not_break_outer():
    # Latch `a` posts twice to oneshot `inner1`, which drops `a` after its
    # first result. Outer still holds `inner2`, whose latch has a value, so
    # outer.get() must return a value (the stale (a, 'a2') per the remove()
    # caveat, or (b, 'b1')) rather than raise "empty Select".
    a, b = _latches(None, None)
    inner1 = Select([a])
    inner2 = Select([b])
    outer = Select([inner1, inner2], oneshot=False)
    a.put("a1")
    a.put("a2")
    b.put("b1")
    assert outer.get(timeout=5) == (a, "a1")
    assert outer.get(timeout=5) in [(a, "a2"), (b, "b1")]


def test_select_add_self_raises():
    sel = Select()
    with pytest.raises(mitogen.select.Error):
        sel.add(sel)
    assert not sel
    assert sel.notify is None


def test_select_loop_raises():
    s1 = Select()
    s2 = Select()
    s3 = Select()
    s1.add(s2)
    s2.add(s3)
    with pytest.raises(mitogen.select.Error):
        s3.add(s1)
    with pytest.raises(mitogen.select.Error):
        s2.add(s1)
    assert not s3
    assert s1.notify is None


def test_select_latch_in_two_selects_raises():
    (a,) = _latches(None)
    s1 = Select([a])
    s2 = Select()
    with pytest.raises(mitogen.select.Error):
        s2.add(a)
    with pytest.raises(mitogen.select.Error):
        s1.add(a)
    assert not s2
    a.put(1)
    assert s1.get(timeout=5) == (a, 1)


def test_select_remove_absent_raises():
    a, b = _latches(None, None)
    sel = Select([a])
    with pytest.raises(mitogen.select.Error):
        sel.remove(b)
    sel.remove(a)
    assert a.notify is None
    assert not sel
    with pytest.raises(mitogen.select.Error):
        sel.remove(a)


def test_select_remove_receiver_in_other_select_raises():
    a, b = _latches(None, None)
    s1 = Select([a])
    s2 = Select([b])
    with pytest.raises(mitogen.select.Error):
        s2.remove(a)
    assert a.notify is not None
    assert bool(s1)


def test_select_get_empty_raises():
    sel = Select()
    with pytest.raises(mitogen.select.Error):
        sel.get()
    with pytest.raises(mitogen.select.Error):
        sel.get(timeout=0.01)


def test_select_get_timeout():
    (a,) = _latches(None)
    sel = Select([a])
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        sel.get(timeout=0.05)
    assert 0.05 <= time.monotonic() - t0 < 1.0
    assert bool(sel)


def test_select_get_nonblocking():
    (a,) = _latches(None)
    sel = Select([a])
    with pytest.raises(TimeoutError):
        sel.get(block=False)
    a.put(9)
    assert sel.get(block=False) == (a, 9)


def test_select_bool():
    sel = Select()
    assert not sel
    assert bool(sel) is False
    (a,) = _latches(None)
    sel.add(a)
    assert sel
    a.put(1)
    sel.get(timeout=5)
    assert not sel  # oneshot removed it


def test_select_close_detaches():
    a, b = _latches(None, "queued")
    inner = Select([b])
    sel = Select([a, inner])
    sel.close()
    assert a.notify is None
    assert b.notify is None
    assert inner.notify is None
    assert not sel
    assert not inner
    # The latches are usable on their own, and by a new Select.
    a.put(1)
    assert a.get(block=False) == 1
    sel2 = Select([b])
    assert sel2.get(timeout=5) == (b, "queued")


def test_select_context_manager_closes():
    (a,) = _latches(None)
    with Select([a]) as sel:
        assert a.notify is not None
        assert bool(sel)
    assert a.notify is None


def test_select_remove_after_notify_may_still_return():
    (a, b) = _latches("x", None)
    sel = Select([a, b])
    sel.remove(a)
    # Documented caveat: a notification posted before remove() may still be
    # returned by get(); it must then carry a's value, never a wrong one.
    try:
        got = sel.get(block=False)
    except TimeoutError:
        got = None
    assert got in (None, (a, "x"))


# ---------------------------------------------------------------------------
# TimerList.


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    """Replace the core's clock at its home: the core modules read it as
    mitogen.wire.now when called (mitogen.core.now is only a re-export)."""
    clk = Clock()
    monkeypatch.setattr(mitogen.wire, "now", clk)
    return clk


def test_timerlist_empty_timeout_is_none(clock):
    tl = TimerList()
    assert tl.get_timeout() is None
    assert len(tl) == 0
    tl.expire()
    assert tl.get_timeout() is None


def test_timerlist_fires_in_time_order(clock):
    tl = TimerList()
    fired = []
    tl.schedule(1030.0, lambda: fired.append("c"))
    tl.schedule(1010.0, lambda: fired.append("a"))
    tl.schedule(1020.0, lambda: fired.append("b"))
    assert len(tl) == 3
    assert tl.get_timeout() == pytest.approx(10.0)

    clock.t = 1009.999
    tl.expire()
    assert fired == []

    clock.t = 1010.0
    tl.expire()
    assert fired == ["a"]
    assert tl.get_timeout() == pytest.approx(10.0)

    clock.t = 1025.0
    tl.expire()
    assert fired == ["a", "b"]
    assert tl.get_timeout() == pytest.approx(5.0)

    clock.t = 2000.0
    tl.expire()
    assert fired == ["a", "b", "c"]
    assert tl.get_timeout() is None
    tl.expire()
    assert fired == ["a", "b", "c"]


def test_timerlist_expire_all_due_at_once_in_order(clock):
    tl = TimerList()
    fired = []
    for when in (1005.0, 1001.0, 1003.0, 1002.0, 1004.0):
        tl.schedule(when, lambda w=when: fired.append(w))
    clock.t = 1100.0
    tl.expire()
    assert fired == [1001.0, 1002.0, 1003.0, 1004.0, 1005.0]


def test_timerlist_same_time_fifo(clock):
    tl = TimerList()
    fired = []
    for name in "xyz":
        tl.schedule(1001.0, lambda n=name: fired.append(n))
    clock.t = 1001.0
    tl.expire()
    assert fired == ["x", "y", "z"]


def test_timerlist_overdue_timeout_is_zero(clock):
    tl = TimerList()
    tl.schedule(900.0, lambda: None)
    assert tl.get_timeout() == 0.0


def test_timerlist_cancelled_never_fire(clock):
    tl = TimerList()
    fired = []
    t1 = tl.schedule(1010.0, lambda: fired.append("cancelled-1"))
    tl.schedule(1020.0, lambda: fired.append("kept"))
    t3 = tl.schedule(1030.0, lambda: fired.append("cancelled-3"))
    t1.cancel()
    t3.cancel()
    assert not t1.active
    # get_timeout() skips the cancelled head timer.
    assert tl.get_timeout() == pytest.approx(20.0)
    clock.t = 5000.0
    tl.expire()
    assert fired == ["kept"]
    assert tl.get_timeout() is None


def test_timerlist_all_cancelled_timeout_none(clock):
    tl = TimerList()
    fired = []
    timers = [tl.schedule(1000.0 + i, lambda: fired.append(1)) for i in range(3)]
    for t in timers:
        t.cancel()
    assert tl.get_timeout() is None
    clock.t = 2000.0
    tl.expire()
    assert fired == []


def test_timerlist_fired_timer_inactive(clock):
    tl = TimerList()
    fired = []
    timer = tl.schedule(1001.0, lambda: fired.append(1))
    assert timer.active
    clock.t = 1001.0
    tl.expire()
    assert fired == [1]
    assert not timer.active
    timer.cancel()
    tl.expire()
    assert fired == [1]
