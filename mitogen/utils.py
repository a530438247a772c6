"""Helpers for programs using Mitogen: logging setup, running code under a
Router that is always shut down, and casting values to plain types."""

import functools
import logging
import os
import sys

import mitogen.core
import mitogen.master

_PASSTHROUGH = (
    type(None),
    mitogen.core.Context,
    mitogen.core.CallError,
    mitogen.core.Blob,
    mitogen.core.Secret,
    mitogen.core.Sender,
)
#: Scalar types whose subclasses are converted to the plain type.
_SCALARS = (bool, int, float, str, bytes)


def log_to_file(path=None, io=False, level="INFO"):
    """Send log records to `path` (or stderr) at `level`; the
    MITOGEN_LOG_LEVEL environment variable overrides `level`. With `io`,
    also log raw I/O under `mitogen.io`."""
    level = getattr(logging, os.environ.get("MITOGEN_LOG_LEVEL", level).upper())
    fp = open(path, "w", 1) if path else sys.stderr
    handler = logging.StreamHandler(fp)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers.insert(0, handler)
    root.setLevel(level)
    logging.getLogger("mitogen.io").setLevel(logging.DEBUG if io else logging.WARNING)


def run_with_router(func, *args, **kwargs):
    """Call `func(router, *args, **kwargs)` with a new master Router, and
    shut its Broker down however func exits."""
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    try:
        return func(router, *args, **kwargs)
    finally:
        broker.shutdown()
        broker.join()


def with_router(func):
    """Decorate `func(router, ...)` so callers omit the router."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return run_with_router(func, *args, **kwargs)

    return wrapper


def cast(obj):
    """Return `obj` with every subclass of dict, list, tuple, str, bytes,
    int, float and bool replaced by the plain type, so it serialises; raise
    TypeError for anything else that is not plain data."""
    if isinstance(obj, dict):
        return {cast(k): cast(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [cast(v) for v in obj]
    if isinstance(obj, _PASSTHROUGH):
        return obj
    for kind in _SCALARS:
        if isinstance(obj, kind):
            return kind(obj)
    raise TypeError("cannot serialise %r: %r" % (type(obj), obj))
