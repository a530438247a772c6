"""The blocking helpers the internal reference gives under mitogen.parent:
discard_until, iter_read, write_all (timeouts, EOF, partial writes) and
close_nonstandard_fds (in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import mitogen.blocking_io
import mitogen.core
import mitogen.parent
from tests.spec_index import REPO


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    rfd, wfd = mitogen.core.pipe()
    fds = [rfd, wfd]
    yield rfd, wfd
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def soon(deadline: float = 5.0) -> float:
    return mitogen.core.now() + deadline


def writer_thread(
    fd: int, chunks: list[bytes], delay: float = 0.02, close: bool = True
) -> threading.Thread:
    def run() -> None:
        for chunk in chunks:
            time.sleep(delay)
            os.write(fd, chunk)
        if close:
            os.close(fd)

    thread = threading.Thread(target=run, name="test-writer")
    thread.start()
    return thread


def test_parent_exports_the_helpers() -> None:
    assert mitogen.parent.discard_until is mitogen.blocking_io.discard_until
    assert mitogen.parent.iter_read is mitogen.blocking_io.iter_read
    assert mitogen.parent.write_all is mitogen.blocking_io.write_all
    assert mitogen.parent.close_nonstandard_fds is mitogen.blocking_io.close_nonstandard_fds


def test_iter_read_yields_chunks_then_raises_eof(pipe: tuple[int, int]) -> None:
    rfd, wfd = pipe
    thread = writer_thread(wfd, [b"one", b"two"])
    got = b""
    with pytest.raises(mitogen.parent.EofError) as info:
        for chunk in mitogen.parent.iter_read([rfd], soon()):
            got += chunk
    thread.join()
    assert got == b"onetwo"
    assert "end of file" in str(info.value) and "onetwo" in str(info.value)


def test_iter_read_reads_several_fds_until_all_close() -> None:
    a_r, a_w = mitogen.core.pipe()
    b_r, b_w = mitogen.core.pipe()
    os.write(a_w, b"from a")
    os.close(a_w)
    thread = writer_thread(b_w, [b"from b"], delay=0.1)
    chunks = []
    with pytest.raises(mitogen.parent.EofError):
        for chunk in mitogen.parent.iter_read([a_r, b_r], soon()):
            chunks.append(chunk)
    thread.join()
    assert chunks == [b"from a", b"from b"]
    os.close(a_r)
    os.close(b_r)


def test_iter_read_times_out(pipe: tuple[int, int]) -> None:
    rfd, wfd = pipe
    os.write(wfd, b"partial")
    got = []
    t0 = time.monotonic()
    with pytest.raises(mitogen.core.TimeoutError) as info:
        for chunk in mitogen.parent.iter_read([rfd], mitogen.core.now() + 0.2):
            got.append(chunk)
    assert got == [b"partial"]
    assert 0.2 <= time.monotonic() - t0 < 2
    assert "timed out" in str(info.value) and "partial" in str(info.value)


def test_discard_until_skips_banners_and_returns_the_rest(pipe: tuple[int, int]) -> None:
    rfd, wfd = pipe
    thread = writer_thread(wfd, [b"Welcome!\nmotd ", b"text EC", b"0\nafter"], close=False)
    thread.join()
    assert mitogen.parent.discard_until(rfd, b"EC0\n", soon()) == b"after"


def test_discard_until_marker_split_across_reads(pipe: tuple[int, int]) -> None:
    rfd, wfd = pipe
    thread = writer_thread(wfd, [b"noise MAR", b"K", b"ER"], delay=0.05, close=False)
    assert mitogen.parent.discard_until(rfd, b"MARKER", soon()) == b""
    thread.join()


def test_discard_until_eof_before_marker(pipe: tuple[int, int]) -> None:
    rfd, wfd = pipe
    thread = writer_thread(wfd, [b"the child died"])
    with pytest.raises(mitogen.parent.EofError) as info:
        mitogen.parent.discard_until(rfd, b"MARKER", soon())
    thread.join()
    assert "the child died" in str(info.value)


def test_discard_until_times_out(pipe: tuple[int, int]) -> None:
    rfd, wfd = pipe
    os.write(wfd, b"no marker here")
    t0 = time.monotonic()
    with pytest.raises(mitogen.core.TimeoutError):
        mitogen.parent.discard_until(rfd, b"MARKER", mitogen.core.now() + 0.2)
    assert 0.2 <= time.monotonic() - t0 < 2


@pytest.mark.parametrize("blocking", [False, True])
def test_write_all_writes_more_than_the_pipe_holds(pipe: tuple[int, int], blocking: bool) -> None:
    rfd, wfd = pipe
    os.set_blocking(wfd, blocking)
    data = os.urandom(1048576 + 123)  # a pipe buffer is 64 KiB
    received = bytearray()

    def read() -> None:
        while len(received) < len(data):
            time.sleep(0.001)
            received.extend(os.read(rfd, 65536))

    thread = threading.Thread(target=read, name="test-reader")
    thread.start()
    mitogen.parent.write_all(wfd, data, soon())
    thread.join()
    assert bytes(received) == data


@pytest.mark.parametrize("blocking", [False, True])
def test_write_all_times_out_when_nobody_reads(pipe: tuple[int, int], blocking: bool) -> None:
    rfd, wfd = pipe
    os.set_blocking(wfd, blocking)
    t0 = time.monotonic()
    with pytest.raises(mitogen.core.TimeoutError) as info:
        mitogen.parent.write_all(wfd, b"y" * 1048576, mitogen.core.now() + 0.2)
    assert 0.2 <= time.monotonic() - t0 < 2
    assert "of 1048576 bytes" in str(info.value)


def test_write_all_reader_gone(pipe: tuple[int, int]) -> None:
    rfd, wfd = pipe
    os.close(rfd)
    with pytest.raises(mitogen.parent.EofError) as info:
        mitogen.parent.write_all(wfd, b"z" * 10, soon())
    assert "went away after 0 of 10 bytes" in str(info.value)


def test_write_all_without_deadline(pipe: tuple[int, int]) -> None:
    rfd, wfd = pipe
    mitogen.parent.write_all(wfd, b"short")
    assert os.read(rfd, 100) == b"short"


CLOSE_SCRIPT = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import mitogen.blocking_io
import mitogen.parent
if sys.argv[2] == "fallback":
    # the path for systems that cannot list their descriptors
    mitogen.blocking_io._open_fds = lambda: None
fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(6)]
high = os.dup2(fds[0], 200)
keep = [fds[2], fds[4], high]
mitogen.parent.close_nonstandard_fds(keep)
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
print(json.dumps({"keep": keep, "open": [fd for fd in range(256) if is_open(fd)]}))
"""


@pytest.mark.parametrize("mode", ["listing", "fallback"])
def test_close_nonstandard_fds_keeps_stdio_and_the_given_fds(mode: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CLOSE_SCRIPT, str(REPO), mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    report = json.loads(out.stdout)
    assert report["open"] == sorted([0, 1, 2] + report["keep"])
