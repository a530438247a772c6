"""Faults: dead children, corrupt frames, forbidden types, forged authority,
stuck children at shutdown."""

import logging
import os
import signal
import time

import pytest

import mitogen.core
import mitogen.master
from tests import remote_helpers


def test_child_killed_mid_call_raises_within_a_second(router):
    context = router.local()
    pid = context.call(remote_helpers.getpid)
    recv = context.call_async(remote_helpers.sleep, 60)
    time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(mitogen.core.ChannelError):
        recv.get(timeout=5).unpickle()
    assert time.monotonic() - started < 1.0


def test_grandchild_killed_mid_call_wakes_caller(router):
    parent = router.local()
    child = router.local(via=parent)
    pid = child.call(remote_helpers.getpid)
    recv = child.call_async(remote_helpers.sleep, 60)
    time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(mitogen.core.ChannelError):
        recv.get(timeout=5).unpickle()
    assert time.monotonic() - started < 1.0
    assert parent.call(remote_helpers.identity, "still fine") == "still fine"


def test_call_to_dead_context_fails_fast(router):
    context = router.fork()
    context.shutdown(wait=True, timeout=10)
    with pytest.raises(mitogen.core.ChannelError):
        context.call_async(remote_helpers.getpid).get(timeout=5)


def test_corrupt_frame_disconnects_only_that_stream(router, caplog):
    bad = router.local()
    good = router.local()
    with caplog.at_level(logging.ERROR, logger="mitogen"):
        recv = bad.call_async(remote_helpers.write_raw_to_parent, b"\x00" * 64)
        with pytest.raises(mitogen.core.ChannelError):
            recv.get(timeout=5).unpickle()
    assert any(
        "bad magic" in r.getMessage() and "disconnecting" in r.getMessage() for r in caplog.records
    )
    assert good.call(remote_helpers.identity, 1) == 1


def test_oversized_frame_disconnects_only_that_stream(router, caplog):
    bad = router.local()
    good = router.fork()
    with caplog.at_level(logging.ERROR, logger="mitogen"):
        recv = bad.call_async(remote_helpers.write_oversized_header)
        with pytest.raises(mitogen.core.ChannelError):
            recv.get(timeout=5).unpickle()
    assert any("oversized frame" in r.getMessage() for r in caplog.records)
    assert good.call(remote_helpers.identity, 2) == 2


def test_oversized_message_refused_before_sending():
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker, max_message_size=4096)
    try:
        context = router.fork()
        with pytest.raises(mitogen.core.ChannelError) as info:
            context.call(remote_helpers.identity, b"x" * 10000)
        assert "too large" in str(info.value)
        assert context.call(remote_helpers.identity, b"y" * 100) == b"y" * 100
    finally:
        broker.shutdown()
        broker.join(10)


def test_forbidden_type_in_reply_is_refused(router):
    context = router.fork()
    with pytest.raises(mitogen.core.StreamError) as info:
        context.call(remote_helpers.return_unlisted)
    assert "refused to unpickle tests.remote_helpers.Unlisted" in str(info.value)


def test_forbidden_type_in_arguments_is_refused(router):
    context = router.fork()
    with pytest.raises(mitogen.core.CallError) as info:
        context.call(remote_helpers.accept_anything, remote_helpers.Unlisted())
    assert "refused to unpickle" in str(info.value)


def test_child_cannot_make_parent_run_code(router, caplog):
    parent = router.local(name="victim")
    child = router.local(via=parent, name="attacker")
    with caplog.at_level(logging.ERROR):
        result = child.call(remote_helpers.call_function_in, parent.context_id)
        assert result.startswith("ChannelError: message refused by policy"), result
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
            "policy refused" in r.getMessage() for r in caplog.records
        ):
            time.sleep(0.05)
    assert any(
        r.name == "mitogen.ctx.victim" and "policy refused" in r.getMessage()
        for r in caplog.records
    )


def test_child_cannot_make_master_run_code(router):
    child = router.local()
    result = child.call(remote_helpers.call_function_in, 0)
    assert result.startswith("ChannelError"), result


def test_forged_authority_is_dropped(router, caplog):
    parent = router.local(name="p")
    child = router.local(via=parent)
    with caplog.at_level(logging.ERROR):
        result = child.call(remote_helpers.call_function_in, parent.context_id, auth_id=0)
        assert result == "timeout"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
            "claims authority" in r.getMessage() for r in caplog.records
        ):
            time.sleep(0.05)
    assert any("claims authority" in r.getMessage() for r in caplog.records)


def test_siblings_cannot_call_each_other_when_unidirectional(router):
    router.unidirectional = True
    a = router.local()
    b = router.local()
    result = a.call(remote_helpers.call_function_in, b.context_id)
    assert "routing between children is disabled" in result


def test_child_cannot_steal_routes(router, caplog):
    a = router.local()
    b = router.fork()
    with caplog.at_level(logging.ERROR, logger="mitogen"):
        a.call(remote_helpers.send_add_route, b.context_id)
        a.call(remote_helpers.send_add_route, 0)
        deadline = time.monotonic() + 5
        while (
            time.monotonic() < deadline
            and sum("refused ADD_ROUTE" in r.getMessage() for r in caplog.records) < 2
        ):
            time.sleep(0.05)
    assert sum("refused ADD_ROUTE" in r.getMessage() for r in caplog.records) == 2
    assert router.stream_by_id(b.context_id).protocol.remote_id == b.context_id
    assert b.call(remote_helpers.identity, "b") == "b"


def test_shutdown_finishes_with_stuck_child():
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    context = router.local()
    pid = context.call(remote_helpers.getpid)
    context.call_async(remote_helpers.sleep, 120)
    time.sleep(0.1)
    started = time.monotonic()
    broker.shutdown()
    broker.join(20)
    assert not broker._thread.is_alive()
    assert time.monotonic() - started < 10
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_receiver_woken_at_broker_exit():
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    recv = mitogen.core.Receiver(router)
    broker.shutdown()
    broker.join(10)
    with pytest.raises(mitogen.core.ChannelError):
        recv.get(timeout=5)
