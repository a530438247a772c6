"""Blocking I/O helpers for the synchronous phase of talking to a child,
before its descriptors are handed to the Broker: read until a marker,
iterate over what several descriptors produce, write a whole buffer, read
an exact number of bytes from a socket, and close inherited descriptors in
a new child.

Deadlines are absolute times on the mitogen.core.now() (monotonic) clock,
or None to wait forever. mitogen.parent re-exports every function here.
"""

import math
import os
import select

import mitogen.bootstrap
import mitogen.core

#: How much of the last output an error message quotes.
ERROR_CONTEXT_BYTES = 100


def _poll_ms(deadline):
    """poll() timeout in milliseconds until `deadline` (0 once passed)."""
    if deadline is None:
        return None
    return max(0, int(math.ceil((deadline - mitogen.core.now()) * 1000)))


def _expired(deadline):
    return deadline is not None and mitogen.core.now() >= deadline


def iter_read(fds, deadline=None):
    """Yield each chunk read from any of the descriptors `fds` until every
    one of them reaches end of file. The descriptors are left open.

    :raises mitogen.core.TimeoutError: `deadline` passed first.
    :raises mitogen.parent.EofError: every descriptor reached end of file.
    """
    poller = select.poll()
    remaining = set(fds)
    for fd in remaining:
        poller.register(fd, select.POLLIN)
    last = b""
    while remaining:
        events = poller.poll(_poll_ms(deadline))
        if not events and _expired(deadline):
            raise mitogen.core.TimeoutError(
                "timed out reading from fds %s; the last bytes read were %r",
                sorted(fds),
                last,
            )
        for fd, _ in events:
            data, disconnected = mitogen.core.io_op(os.read, fd, mitogen.core.CHUNK_SIZE)
            if data is None and not disconnected:
                continue
            if not data:
                poller.unregister(fd)
                remaining.discard(fd)
                continue
            last = (last + data)[-ERROR_CONTEXT_BYTES:]
            yield data
    raise mitogen.bootstrap.EofError(
        "end of file on fds %s; the last bytes read were %r", sorted(fds), last
    )


def discard_until(fd, s, deadline=None):
    """Read from `fd`, throwing the bytes away, until `s` has been read
    (e.g. to skip login banners before a marker the child prints).

    :returns: the bytes read after `s` (usually b'').
    :raises mitogen.core.TimeoutError: `deadline` passed first.
    :raises mitogen.parent.EofError: `fd` reached end of file first.
    """
    buf = b""
    for chunk in iter_read([fd], deadline):
        buf += chunk
        index = buf.find(s)
        if index >= 0:
            return buf[index + len(s) :]
        buf = buf[len(buf) - len(s) + 1 :] if len(s) > 1 else b""


def write_all(fd, s, deadline=None):
    """Write all of the bytes `s` to `fd`, waiting for it to become
    writable as often as needed. A blocking `fd` is written PIPE_BUF bytes
    at a time so the deadline is honoured.

    :raises mitogen.core.TimeoutError: `deadline` passed first.
    :raises mitogen.parent.EofError: the reading end went away.
    """
    view = memoryview(s)
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    step = select.PIPE_BUF if os.get_blocking(fd) else len(view)
    written = 0
    while written < len(view):
        if not poller.poll(_poll_ms(deadline)):
            if _expired(deadline):
                raise mitogen.core.TimeoutError(
                    "timed out writing to fd %d after %d of %d bytes", fd, written, len(view)
                )
            continue
        n, disconnected = mitogen.core.io_op(os.write, fd, view[written : written + step])
        if disconnected:
            raise mitogen.bootstrap.EofError(
                "the reader of fd %d went away after %d of %d bytes", fd, written, len(view)
            )
        written += n or 0


def recv_exact(sock, n):
    """Read exactly `n` bytes from the blocking socket `sock`.

    :raises EOFError: the peer closed the connection first."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError()
        buf += chunk
    return buf


def _open_fds():
    """Every open descriptor, or None where the system cannot list them."""
    for path in "/proc/self/fd", "/dev/fd":
        try:
            return [int(name) for name in os.listdir(path)]
        except (OSError, ValueError):
            continue
    return None


def close_nonstandard_fds(keep=()):
    """Close every descriptor except 0, 1, 2 and those in `keep`: for a new
    child (after fork(), before exec()) so it inherits nothing by accident."""
    keep = set(keep) | {0, 1, 2}
    fds = _open_fds()
    if fds is not None:
        for fd in fds:
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass  # the descriptor listdir() used, already closed
        return
    try:
        top = os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        top = 65536
    low = 3
    for fd in sorted(k for k in keep if k >= 3) + [top]:
        os.closerange(low, fd)
        low = fd + 1
