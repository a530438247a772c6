"""The child's main program: ExternalContext (a new context's setup and
main loop), the Dispatcher that runs CALL_FUNCTION requests and the
takes_econtext/takes_router markers it honours, and log forwarding to the
master (LogHandler, PidfulStreamHandler for debug logs). Part of the
bootstrap bundle: standard library only, Python 3.6 compatible.
mitogen.core re-exports every public name.
"""

import importlib
import logging
import os
import sys
import threading

import mitogen
from mitogen.broker import Broker
from mitogen.channels import Receiver
from mitogen.importer import Importer
from mitogen.router import Router
from mitogen.streams import IoLoggerProtocol, MitogenProtocol, set_cloexec
from mitogen.wire import (
    CALL_FUNCTION,
    CALL_SERVICE,
    FORWARD_LOG,
    LOG,
    SHUTDOWN,
    CallError,
    Error,
    Message,
    has_parent_authority,
    listen,
)


def takes_econtext(func):
    """Mark `func` to receive the ExternalContext as the `econtext` kwarg."""
    func.mitogen_takes_econtext = True
    return func


def takes_router(func):
    """Mark `func` to receive the Router as the `router` kwarg."""
    func.mitogen_takes_router = True
    return func


class LogHandler(logging.Handler):
    """Forward log records to the master as FORWARD_LOG messages."""

    def __init__(self, context):
        logging.Handler.__init__(self)
        self.context = context
        self._local = threading.local()

    def emit(self, rec):
        if getattr(self._local, "in_emit", False):
            return
        self._local.in_emit = True
        try:
            text = self.format(rec)
            data = "%s\x00%d\x00%s" % (rec.name, rec.levelno, text)
            self.context.send(Message(data=data.encode("utf-8"), handle=FORWARD_LOG))
        except Error:
            pass
        finally:
            self._local.in_emit = False


class PidfulStreamHandler(logging.StreamHandler):
    """A StreamHandler writing to /tmp/mitogen.<pid>.log, reopening after
    fork so each process has its own file."""

    def __init__(self, dir_path="/tmp"):
        self.dir_path = dir_path
        self.open_pid = None
        logging.StreamHandler.__init__(self, self._open())

    def _open(self):
        self.open_pid = os.getpid()
        path = os.path.join(self.dir_path, "mitogen.%d.log" % (self.open_pid,))
        return open(path, "a", 1)

    def emit(self, record):
        if self.open_pid != os.getpid():
            self.stream = self._open()
        logging.StreamHandler.emit(self, record)


class Dispatcher:
    """Run CALL_FUNCTION requests on the main thread, one at a time, and
    remember failures per call chain."""

    _error_by_chain_id = {}

    def __init__(self, econtext):
        self.econtext = econtext
        self.recv = Receiver(econtext.router, handle=CALL_FUNCTION, policy=has_parent_authority)
        listen(econtext.broker, "shutdown", self.recv.close)

    @classmethod
    @takes_econtext
    def forget_chain(cls, chain_id, econtext):
        """Drop the remembered failure of `chain_id`."""
        cls._error_by_chain_id.pop(chain_id, None)

    @classmethod
    def forget_all_chains(cls):
        """Drop every remembered failure (a forked child starts afresh)."""
        cls._error_by_chain_id.clear()

    def _parse_request(self, msg):
        chain_id, modname, klass, func, args, kwargs = msg.unpickle(throw=False)
        obj = importlib.import_module(modname)
        if klass:
            obj = getattr(obj, klass)
        fn = getattr(obj, func)
        if getattr(fn, "mitogen_takes_econtext", False):
            kwargs["econtext"] = self.econtext
        if getattr(fn, "mitogen_takes_router", False):
            kwargs["router"] = self.econtext.router
        return chain_id, fn, args, kwargs

    def _dispatch_one(self, msg):
        try:
            chain_id, fn, args, kwargs = self._parse_request(msg)
        except Exception as e:
            return None, CallError(e)
        if chain_id in self._error_by_chain_id:
            return chain_id, self._error_by_chain_id[chain_id]
        try:
            return chain_id, fn(*args, **kwargs)
        except Exception as e:
            error = CallError(e)
            if chain_id is not None:
                self._error_by_chain_id[chain_id] = error
            return chain_id, error

    def run(self):
        for msg in self.recv:
            chain_id, ret = self._dispatch_one(msg)
            if msg.reply_to:
                msg.reply(ret)
            elif isinstance(ret, CallError) and chain_id is None:
                LOG.error("call_no_reply() failed: %s", ret)


class ExternalContext:
    """The main program of every child context.

    `config` keys: context_id, parent_ids, name, in_fd, out_fd, log_level,
    debug, max_message_size, whitelist, blacklist, fork (True when started
    by fork()), preamble (the compressed bootstrap bundle, kept to start
    grandchildren).
    """

    def __init__(self, config):
        self.config = config

    def _setup_globals(self):
        mitogen.preamble = self.config.get("preamble", mitogen.preamble)
        mitogen.is_master = False
        mitogen.context_id = self.config["context_id"]
        mitogen.parent_ids = list(self.config["parent_ids"])
        mitogen.parent_id = mitogen.parent_ids[0]

    def _setup_router(self):
        #: The child's Broker: the thread that does all its I/O.
        self.broker = Broker()
        self.router = Router(self.broker)
        self.router.max_message_size = self.config["max_message_size"]
        self.master = self.router.context_by_id(0, name="master")
        self.parent = self.router.context_by_id(mitogen.parent_id, name="parent")
        self.router.add_handler(self._on_shutdown_msg, SHUTDOWN, policy=has_parent_authority)
        self.router.add_handler(self._on_call_service, CALL_SERVICE, policy=has_parent_authority)
        listen(self.broker, "exit", self._on_broker_exit)

    def _connect_parent(self):
        """Announce readiness, then attach the link: nothing may be written
        to it before MITO001, and every handler must exist before the
        parent's first message can be read. The link descriptors are moved
        off stdio first, which _setup_stdio() then replaces."""
        in_fd, out_fd = self.config["in_fd"], self.config["out_fd"]
        stream = MitogenProtocol.build_stream(self.router, mitogen.parent_id)
        stream.name = "parent"
        stream.accept(os.dup(in_fd), os.dup(out_fd))
        for fd in {in_fd, out_fd}:
            if fd > 2:
                os.close(fd)
        for side in stream.receive_side, stream.transmit_side:
            set_cloexec(side.fd)
        os.write(stream.transmit_side.fd, b"MITO001\n")
        listen(stream, "disconnect", self._on_parent_disconnect)
        self.router.register_parent(self.parent, stream)

    def _on_parent_disconnect(self):
        self.broker.shutdown()

    def _on_broker_exit(self):
        """Exit even if the main thread is stuck in user code."""
        timer = threading.Timer(self.broker.shutdown_timeout, os._exit, (1,))
        timer.daemon = True
        timer.start()

    _service_backlog = None

    def _on_call_service(self, msg):
        """Service calls before a Pool exists: queue them and start one on a
        thread (importing is not allowed on the Broker thread)."""
        if msg.is_dead:
            return
        if self._service_backlog is None:
            self._service_backlog = []
            thread = threading.Thread(
                target=self._start_service_pool, name="mitogen.service-activation"
            )
            thread.daemon = True
            thread.start()
        self._service_backlog.append(msg)

    def _take_service_backlog(self):
        backlog, self._service_backlog = self._service_backlog, []
        return backlog

    def _start_service_pool(self):
        import mitogen.service

        pool = mitogen.service.get_or_create_pool(router=self.router)
        for msg in self.broker.defer_sync(self._take_service_backlog):
            pool.deliver(msg)

    def _on_shutdown_msg(self, msg):
        if not msg.is_dead:
            self.broker.shutdown()

    def _setup_logging(self):
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        self.log_handler = LogHandler(self.master)
        root.addHandler(self.log_handler)
        root.setLevel(self.config["log_level"])
        if self.config["debug"]:
            handler = PidfulStreamHandler()
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            root.addHandler(handler)
            root.setLevel(logging.DEBUG)

    def _setup_importer(self):
        #: The Importer that fetches modules from the parent (first on sys.meta_path).
        self.importer = Importer(
            self.router, self.parent, self.config["whitelist"], self.config["blacklist"]
        )
        sys.meta_path = [f for f in sys.meta_path if not isinstance(f, Importer)]
        sys.meta_path.insert(0, self.importer)

    def _setup_stdio(self):
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdin = open(0, "r", closefd=False)
        #: The stream that turns what is written to fd 1 into log records.
        self.stdout_log = IoLoggerProtocol.build_stream("stdout", 1)
        #: The stream that turns what is written to fd 2 into log records.
        self.stderr_log = IoLoggerProtocol.build_stream("stderr", 2)
        for stream in self.stdout_log, self.stderr_log:
            self.broker.start_receive(stream)
        sys.stdout = open(1, "w", 1, closefd=False)
        sys.stderr = open(2, "w", 1, closefd=False)

    def main(self):
        self._setup_globals()
        self._setup_router()
        self._setup_importer()
        self.dispatcher = Dispatcher(self)
        self._connect_parent()
        self._setup_logging()
        if not self.config.get("fork"):
            sys.modules.pop("__main__", None)
        self._setup_stdio()
        on_start = self.config.get("on_start")
        if on_start:
            on_start(self)
        try:
            self.dispatcher.run()
        except Exception:
            LOG.exception("%r: dispatcher crashed", self)
        finally:
            self.broker.shutdown()
            self.broker.join(self.broker.shutdown_timeout + 5)
            logging.shutdown()
            os._exit(0)
