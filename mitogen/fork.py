"""Connection method `fork`: a child made by fork() of this process.

The child keeps every module this process has imported, so it starts in a
few milliseconds; it is reset to a clean state (descriptors, logging,
threads, signal handlers) before it serves calls.
"""

import logging
import os
import random
import signal
import sys
import traceback
import warnings

import mitogen.core
import mitogen.parent


class Options(mitogen.parent.Options):
    """Options of `router.fork()`.

    :param on_fork: called in the child right after fork().
    :param on_start: called in the child with its ExternalContext before it
        serves calls.
    """

    def __init__(
        self,
        max_message_size,
        name=None,
        remote_name=None,
        debug=False,
        connect_timeout=None,
        on_fork=None,
        on_start=None,
    ):
        super().__init__(
            max_message_size,
            name=name,
            remote_name=remote_name,
            debug=debug,
            connect_timeout=connect_timeout,
        )
        self.on_fork = on_fork
        self.on_start = on_start


class Process(mitogen.parent.Process):
    """A child made by fork(): its stdin and stdout are the one socket the
    parent talks to it on, and it is not a new program, so it is reaped
    like any other child (see mitogen.parent.Reaper)."""


def reset_logging_framework():
    """Drop every handler inherited from the parent."""
    for logger in [logging.getLogger()] + [
        obj for obj in logging.Logger.manager.loggerDict.values() if isinstance(obj, logging.Logger)
    ]:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)


class Connection(mitogen.parent.Connection):
    """Fork, then run ExternalContext in the child on one end of a
    socketpair."""

    options_class = Options
    name_prefix = "fork"
    sends_preamble = False

    def start_child(self):
        parent_sock, child_sock = mitogen.parent.create_socketpair(
            mitogen.parent.SOCKET_BUFFER_SIZE
        )
        config = self.get_econtext_config()
        mitogen.parent.get_preamble()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*multi-threaded.*", DeprecationWarning)
            pid = os.fork()
        if pid:
            child_sock.close()
            fd = parent_sock.detach()
            return Process(pid, stdin=fd, stdout=fd)
        try:
            parent_sock.close()
            self._child_main(child_sock.detach(), config)
        except BaseException:
            os.write(2, traceback.format_exc().encode("utf-8", "replace"))
        os._exit(1)

    def _child_main(self, fd, config):
        os.closerange(3, fd)
        os.closerange(fd + 1, 65536)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        random.seed()
        reset_logging_framework()
        mitogen.core.Dispatcher.forget_all_chains()
        sys.meta_path = [f for f in sys.meta_path if not isinstance(f, mitogen.core.Importer)]
        if self.options.on_fork:
            self.options.on_fork()
        config.update(in_fd=fd, out_fd=fd, fork=True, on_start=self.options.on_start)
        mitogen.core.ExternalContext(config).main()
