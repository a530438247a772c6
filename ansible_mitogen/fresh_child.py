"""Making a fork of a target context start and end like a fresh interpreter.

module_runner.py runs each module in a fork of the warm context instead of
a new `python`. A fork inherits what a fresh interpreter would not have:
the context's file descriptors (the Mitogen link among them), its
sys.stdin/stdout/stderr objects (line buffered, and guarded by locks that
another thread may have held at the fork), logging handlers that send
records over the link, atexit handlers and weakref.finalize callbacks the
context registered, and any signal disposition or signal mask the context
changed. And a child that ends with os._exit() skips what an interpreter
does when it exits: waiting for non-daemon threads, running atexit
handlers (AnsibleModule removes its temporary directory in one), and
flushing sys.stdout and sys.stderr. (Files a module leaves open are not
flushed: runpy, which runs Ansible's modules, leaves their globals to be
discarded unfinalised at exit.)

`reset()` undoes the inheritance right after fork(); `finish()` ends the
child as Py_Finalize would. The signal dispositions and mask to restore are
those this interpreter had when this module was first imported, before any
module ran (modules only ever run in children).

Target-side: standard library and mitogen only, Python 3.6+ syntax. The
stdlib hooks used below (atexit._clear, threading._shutdown, ...) are the
ones the interpreter itself calls at exit.
"""

import atexit
import io
import logging
import os
import signal
import sys
import threading
import weakref

import mitogen.core


def _signal_numbers():
    valid = getattr(signal, "valid_signals", None)
    return sorted(valid()) if valid else range(1, signal.NSIG)


def _dispositions():
    """{signal: handler} for every signal whose handler Python knows."""
    found = {}
    for signum in _signal_numbers():
        try:
            handler = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        if handler is not None:
            found[signum] = handler
    return found


def _blocked():
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))


#: The interpreter's signal state before any module ran.
_START = {"handlers": _dispositions(), "blocked": _blocked()}

#: The exit status of an interpreter that could not flush sys.stdout.
FLUSH_FAILED_STATUS = 120


def _open_fds():
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return [int(name) for name in os.listdir(directory)]
        except OSError:
            continue
    return range(3, 65536)


def _use_descriptors(stdout_fd, stderr_fd, keep=()):
    """/dev/null, `stdout_fd` and `stderr_fd` as fds 0, 1 and 2, and no
    other descriptor open but those in `keep`."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    for fd in _open_fds():
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _stdio_stream(fd, original):
    """A sys.std* object for `fd` made as the interpreter makes them at
    start-up, with the encoding and error handler it chose then."""
    write = fd != 0
    write_through = bool(getattr(original, "write_through", False))
    buffering = 0 if write and write_through else -1
    buffer = io.open(fd, "wb" if write else "rb", buffering, closefd=False)
    raw = buffer if buffering == 0 else buffer.raw
    line_buffering = not write_through and (
        raw.isatty() or (fd == 2 and sys.version_info >= (3, 9))
    )
    stream = io.TextIOWrapper(
        buffer,
        encoding=getattr(original, "encoding", None),
        errors=getattr(original, "errors", None),
        newline="\n",
        line_buffering=line_buffering,
        write_through=write_through,
    )
    stream.mode = "w" if write else "r"
    return stream


#: The context's stdio objects, kept from finalisation in the child: their
#: locks may be held by threads that did not survive the fork.
_inherited_stdio = []


def _fresh_stdio():
    _inherited_stdio.extend(
        (sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__, sys.__stderr__)
    )
    sys.stdin = sys.__stdin__ = _stdio_stream(0, sys.__stdin__)
    sys.stdout = sys.__stdout__ = _stdio_stream(1, sys.__stdout__)
    sys.stderr = sys.__stderr__ = _stdio_stream(2, sys.__stderr__)


def _restore_signals():
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass  # not the main thread: there is none to undo
    for signum, handler in _START["handlers"].items():
        if signal.getsignal(signum) != handler:
            try:
                signal.signal(signum, handler)
            except (OSError, ValueError, RuntimeError):
                pass
    if _blocked() != _START["blocked"]:
        signal.pthread_sigmask(signal.SIG_SETMASK, _START["blocked"])


def _reset_logging():
    """No handler (the context's forward records over the link), and the
    root logger's default level."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)


def _forget_exit_handlers():
    """Drop the context's atexit handlers and weakref.finalize callbacks,
    keeping the hooks a fresh interpreter gets on the first use of logging
    and weakref.finalize, which the context has already made."""
    atexit._clear()
    atexit.register(logging.shutdown)
    if weakref.finalize._registered_with_atexit:
        for finalizer in list(weakref.finalize._registry):
            finalizer.atexit = False
        atexit.register(weakref.finalize._exitfunc)


def reset(stdout_fd, stderr_fd, keep=()):
    """Run first in a forked child: stdio on /dev/null, `stdout_fd` and
    `stderr_fd`, and as little as possible inherited from the context (its
    importer too: it imports over the link); fds in `keep` stay open."""
    _use_descriptors(stdout_fd, stderr_fd, keep)
    _fresh_stdio()
    _restore_signals()
    _reset_logging()
    _forget_exit_handlers()
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, mitogen.core.Importer)]


def exit_status(exc):
    """The status an interpreter exits with for uncaught exception `exc`,
    having reported it as the interpreter does."""
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code & 0xFF
        sys.stderr.write("%s\n" % (code,))
        return 1
    sys.excepthook(type(exc), exc, exc.__traceback__)
    return 1


def finish(status, interrupted=False):
    """End the child as an interpreter ends: wait for non-daemon threads,
    run atexit handlers, flush sys.stdout and sys.stderr (exit status 120 if
    that fails), then exit with `status`, or die of SIGINT after an
    uncaught KeyboardInterrupt (`interrupted`)."""
    try:
        try:
            threading._shutdown()
        except BaseException:
            sys.excepthook(*sys.exc_info())
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except Exception:
                status = FLUSH_FAILED_STATUS
        if interrupted:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        os._exit(status)
