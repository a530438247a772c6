"""How the mux's and the targets' own log records reach Ansible's display.

The mux's stderr is a pipe to ansible-playbook, where `relay()` reads it on a
thread and hands each line to a sink (strategy.py's is Ansible's display, so
the lines reach `log_path` too). In the mux, `MuxLogHandler` writes every
record as display lines, `<host> MITOGEN LOG [context] LEVEL logger: message`
(`<mux>` and `[mux]` for the mux's own), with every secret it was given
(`Scrubber`) replaced by MASK.

By default only warnings and errors are logged (and SIGUSR2's stack dumps,
see stack_dump.py): nothing more is produced or sent. `MITOGEN_LOG_LEVEL`
(debug, info, warning, error or critical) or ansible-playbook's `-vvvv` (debug) set the
level when the first Mitogen play starts the mux (`requested_level()`, used by
strategy.py): the mux logs at it, and so do the targets it starts, which
forward their records to it (mitogen's FORWARD_LOG, re-logged in the mux by
mitogen.master.LogForwarder with the context they came from).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TextIO

import mitogen.core

#: The environment variable that turns forwarding on, at the level it names.
LEVEL_VARIABLE = "MITOGEN_LOG_LEVEL"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
#: ansible-playbook verbosity (-vvvv) from which the mux logs at DEBUG.
DEBUG_VERBOSITY = 4
#: What a secret is replaced by.
MASK = "********"
#: The host and context names of the mux's own records.
MUX = "mux"


def parse_level(text: str) -> int:
    """The logging level `text` names (a LEVELS key, any case); ValueError
    names the variable and the levels otherwise."""
    level = LEVELS.get(text.strip().lower())
    if level is None:
        raise ValueError(
            "%s=%r is not a log level (one of %s)" % (LEVEL_VARIABLE, text, ", ".join(LEVELS))
        )
    return level


def requested_level(environ: Mapping[str, str], verbosity: int) -> str | None:
    """The level the mux should forward logs at, as a LEVELS key: the user's
    LEVEL_VARIABLE if set, else 'debug' from -vvvv; None when off. ValueError
    for a bad LEVEL_VARIABLE."""
    text = environ.get(LEVEL_VARIABLE, "").strip()
    if text:
        return logging.getLevelName(parse_level(text)).lower()
    if verbosity >= DEBUG_VERBOSITY:
        return "debug"
    return None


class Scrubber:
    """The secrets to keep out of log lines (connection passwords the mux was
    given); add() and scrub() may run on any thread."""

    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        """Mask `secret` from now on (empty strings are ignored)."""
        secret = str(secret)
        with self._lock:
            if secret and secret not in self._secrets:
                # longest first, so a secret containing another is masked whole
                self._secrets = tuple(sorted(self._secrets + (secret,), key=len, reverse=True))

    def scrub(self, text: str) -> str:
        """`text` with every secret replaced by MASK."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


class MuxLogHandler(logging.Handler):
    """Write records to `stream` as display lines (see the module docstring),
    one per line of the message. `host_of(context_id)` names the host of a
    target context (None if unknown: its context name is shown instead)."""

    def __init__(
        self,
        stream: TextIO,
        host_of: Callable[[int], str | None],
        scrubber: Scrubber,
    ) -> None:
        super().__init__()
        self._stream = stream
        self._host_of = host_of
        self._scrubber = scrubber

    def format(self, record: logging.LogRecord) -> str:
        context = getattr(record, "mitogen_context", None)
        if isinstance(context, mitogen.core.Context):
            where = "%s #%d" % (context.name or "context", context.context_id)
            host = self._host_of(context.context_id) or context.name or where
            # a forwarded record's message begins with the target's logger name
            message = record.getMessage()
        else:
            host = where = MUX
            message = "%s: %s" % (record.name, record.getMessage())
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        head = "<%s> MITOGEN LOG [%s] %s " % (host, where, record.levelname)
        lines = self._scrubber.scrub(message).splitlines() or [""]
        return "\n".join(head + line for line in lines)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # Handler.handle() holds the handler's lock around emit()
            self._stream.write(self.format(record) + "\n")
            self._stream.flush()
        except Exception:
            self.handleError(record)


def start_mux_logging(
    environ: Mapping[str, str],
    stream: TextIO,
    host_of: Callable[[int], str | None],
    scrubber: Scrubber,
) -> None:
    """In the mux: log through a MuxLogHandler on `stream`, at LEVEL_VARIABLE's
    level if set (the targets started from now on log at it too), else at
    the default WARNING. ValueError for a bad level."""
    text = environ.get(LEVEL_VARIABLE, "").strip()
    root = logging.getLogger()
    root.addHandler(MuxLogHandler(stream, host_of, scrubber))
    if text:
        root.setLevel(parse_level(text))


def relay(fd: int, sink: Callable[[str], None]) -> threading.Thread:
    """Start a daemon thread that reads lines from `fd` until EOF and hands
    each (without its newline) to `sink`; a line the sink fails on is written
    to stderr instead (or dropped). The caller closes `fd` once the thread has
    ended."""

    def deliver(raw: bytes) -> None:
        try:
            sink(raw.decode("utf-8", "replace"))
        except Exception:
            try:
                os.write(2, raw + b"\n")
            except OSError:
                pass  # keep reading: a full pipe would stop the mux

    def run() -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                deliver(raw)
        if pending:
            deliver(pending)

    thread = threading.Thread(target=run, name="ansible_mitogen-mux-log", daemon=True)
    thread.start()
    return thread
