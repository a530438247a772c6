"""The mux's log plumbing with real contexts (no testbed): which level a run asks for, how
a target's forwarded record is written (host, context, secrets masked), the relay that
brings the mux's stderr to the display, and each context's stacks on demand."""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading

import pytest

import mitogen.core
import mitogen.debug
import mitogen.parent
from ansible_mitogen import logs
from ansible_mitogen.services import ContextService
from tests import remote_helpers
from tests.testbed.sshd import free_port


def test_requested_level() -> None:
    assert logs.requested_level({}, verbosity=3) is None
    assert logs.requested_level({}, verbosity=4) == "debug"
    assert logs.requested_level({"MITOGEN_LOG_LEVEL": "INFO"}, verbosity=0) == "info"
    # the user's variable wins over -vvvv
    assert logs.requested_level({"MITOGEN_LOG_LEVEL": "error"}, verbosity=5) == "error"
    with pytest.raises(ValueError, match=r"MITOGEN_LOG_LEVEL='loud' is not a log level"):
        logs.requested_level({"MITOGEN_LOG_LEVEL": "loud"}, verbosity=0)


def test_forwarded_record_names_host_and_context_and_hides_secrets(
    router: mitogen.parent.Router,
) -> None:
    scrubber = logs.Scrubber()
    service = ContextService(router, on_secret=scrubber.add)
    # a hop that fails at once still hands its password to the scrubber
    dead = {
        "method": "ssh",
        "kwargs": {
            "hostname": "127.0.0.1",
            "port": free_port("127.0.0.1"),
            "password": mitogen.core.Secret("hunter2-secret"),
            "check_host_keys": "ignore",
            "connect_timeout": 5,
        },
    }
    assert service.get(stack=[dead])["msg"] is not None
    stream = io.StringIO()
    handler = logs.MuxLogHandler(stream, service.host_of, scrubber)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        got = service.get(stack=[{"method": "local", "kwargs": {"python_path": sys.executable}}])
        context = got["context"]
        context.call(remote_helpers.log_and_print, "the password is hunter2-secret\nsecond line")
        service.put(context)
        # the record travels back as a message: wait for it
        for _ in range(100):
            if "second line" in stream.getvalue():
                break
            threading.Event().wait(0.05)
    finally:
        root.removeHandler(handler)
        context.shutdown(wait=True, timeout=10)
    head = f"<localhost> MITOGEN LOG [{context.name} #{context.context_id}] WARNING "
    lines = [line for line in stream.getvalue().splitlines() if "remote.test" in line]
    assert lines == [head + "remote.test: logged the password is ********"], stream.getvalue()
    assert head + "second line" in stream.getvalue().splitlines()
    assert "hunter2" not in stream.getvalue()


def test_mux_records_are_marked_as_the_mux() -> None:
    stream = io.StringIO()
    handler = logs.MuxLogHandler(stream, lambda context_id: None, logs.Scrubber())
    record = logging.LogRecord(
        "ansible_mitogen.services", logging.INFO, "", 0, "%s up", ("x",), None
    )
    handler.handle(record)
    assert stream.getvalue() == "<mux> MITOGEN LOG [mux] INFO ansible_mitogen.services: x up\n"


def test_relay_hands_every_line_to_the_sink() -> None:
    read_fd, write_fd = os.pipe()
    lines: list[str] = []
    thread = logs.relay(read_fd, lines.append)
    try:
        os.write(write_fd, b"first\nsec")
        os.write(write_fd, b"ond\n\xff last")
    finally:
        os.close(write_fd)
        thread.join(10)
        os.close(read_fd)
    assert not thread.is_alive()
    assert lines == ["first", "second", "\ufffd last"]


def test_a_busy_context_still_dumps_its_stacks(router: mitogen.parent.Router) -> None:
    context = router.local()
    busy = context.call_async(remote_helpers.sleep, 3)
    try:
        answer = context.call_service(mitogen.debug.StackService, "dump", timeout=30)
        assert busy.empty(), "the dump waited for the main thread"
    finally:
        busy.get(timeout=30)
        context.shutdown(wait=True, timeout=10)
    assert answer["context_id"] == context.context_id
    text = answer["text"]
    assert re.search(r"^thread [^\n]*MainThread", text, re.M), text
    assert "remote_helpers.py" in text and "in sleep" in text, text
    assert "mitogen.broker" in text, text
