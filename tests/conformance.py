"""The transport conformance check every connection method must pass."""

import os
import time

import mitogen.core
from tests import remote_helpers

WIRE_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "wire_root")


def check_transport(router, context, expect_remote_pid=True, expect_wire_import=True):
    """Exercise a freshly connected `context`: calls, import over the wire,
    exceptions, a large payload and an orderly shutdown. Set
    `expect_wire_import` False for contexts sharing the master's sys.path
    (fork), which import the test package from disk instead."""
    assert context.call(remote_helpers.identity, {"k": [1, b"2", "3"]}) == {"k": [1, b"2", "3"]}
    if expect_remote_pid:
        assert context.call(remote_helpers.getpid) != os.getpid()

    path, value = context.call(
        remote_helpers.import_and_report, "mitogen_test_wirepkg.extra", "ANSWER"
    )
    assert value == 42
    assert path.startswith("master:") == expect_wire_import, path

    try:
        context.call(remote_helpers.raise_value_error, "boom")
    except mitogen.core.CallError as e:
        assert e.type_name == "builtins.ValueError"
        assert e.message == "boom"
        assert "raise_value_error" in e.traceback_text
    else:
        raise AssertionError("CallError not raised")

    blob = os.urandom(8 * 1048576)
    started = time.monotonic()
    assert context.call(remote_helpers.identity, blob) == blob
    assert time.monotonic() - started < 30

    context.shutdown(wait=True, timeout=10)
    try:
        context.call(remote_helpers.getpid)
    except mitogen.core.ChannelError:
        pass
    else:
        raise AssertionError("call after shutdown did not fail")
