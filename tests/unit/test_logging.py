"""Log forwarding from children, stray output capture, and mitogen.utils."""

import logging
import time
from typing import Any

import pytest

import mitogen.core
import mitogen.utils
from tests import remote_helpers


def wait_for(caplog, predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(predicate(r) for r in caplog.records):
            return True
        time.sleep(0.02)
    return False


def test_child_records_and_stray_output_reach_master(router, caplog):
    with caplog.at_level(logging.INFO):
        context = router.local(name="logger-child")
        context.call(remote_helpers.log_and_print, "xyzzy")
        name = "mitogen.ctx.logger-child"
        assert wait_for(
            caplog,
            lambda r: (
                r.name == name
                and r.getMessage() == "remote.test: logged xyzzy"
                and r.levelno == logging.WARNING
            ),
        )
        assert wait_for(
            caplog, lambda r: r.name == name and r.getMessage() == "stdout: printed xyzzy"
        )
        assert wait_for(
            caplog, lambda r: r.name == name and r.getMessage() == "stderr: stderr xyzzy"
        )


def test_grandchild_logs_named_after_grandchild(router, caplog):
    with caplog.at_level(logging.INFO):
        hop = router.local(name="hop")
        leaf = router.local(via=hop, name="leaf")
        leaf.call(remote_helpers.log_and_print, "deep")
        assert wait_for(
            caplog, lambda r: r.name == "mitogen.ctx.leaf" and "logged deep" in r.getMessage()
        )


def test_run_with_router_shuts_down():
    routers = []

    def body(router, value):
        routers.append(router)
        return router.fork().call(remote_helpers.identity, value)

    assert mitogen.utils.run_with_router(body, 5) == 5
    assert not routers[0].broker._thread.is_alive()


def test_with_router_decorator():
    @mitogen.utils.with_router
    def body(router):
        return router.myself().context_id

    assert body() == 0


def test_cast():
    class S(str):
        pass

    class D(dict):
        pass

    class Tagged(int):
        pass

    out = mitogen.utils.cast(D(a=[S("x"), (1, 2)], b=b"y", c=Tagged(3), d=True))
    assert out == {"a": ["x", [1, 2]], "b": b"y", "c": 3, "d": True}
    assert type(out) is dict and type(out["a"][0]) is str
    assert type(out["c"]) is int and type(out["d"]) is bool
    with pytest.raises(TypeError):
        mitogen.utils.cast(object())


def test_signals():
    class Thing:
        pass

    thing = Thing()
    seen: list[Any] = []
    func = seen.append
    mitogen.core.listen(thing, "poke", func)
    mitogen.core.fire(thing, "poke", 1)
    mitogen.core.unlisten(thing, "poke", func)
    mitogen.core.fire(thing, "poke", 2)
    assert seen == [1]
    with pytest.raises(ValueError):
        mitogen.core.unlisten(thing, "poke", func)


def test_defer_sync_returns_and_raises(router):
    assert router.broker.defer_sync(lambda: 7) == 7
    with pytest.raises(ZeroDivisionError):
        router.broker.defer_sync(lambda: 1 / 0)
