"""Services and helpers the service tests run inside contexts."""

import hashlib
import os
import threading
import time

import mitogen.core
import mitogen.service
from mitogen.service import AllowAny, AllowParents, arg_spec, expose


class EchoService(mitogen.service.Service):
    """A service with one method per access rule."""

    @expose(AllowParents())
    def echo(self, value):
        return value

    @expose(AllowAny())
    def echo_any(self, value):
        return value

    def hidden(self):
        return "should never be callable"

    @expose(AllowParents())
    @arg_spec({"count": int})
    def typed(self, count):
        return count * 2


class CountingService(mitogen.service.Service):
    """Counts concurrent and total executions."""

    invoker_class = mitogen.service.DeduplicatingInvoker

    def __init__(self, router):
        super().__init__(router)
        self.lock = threading.Lock()
        self.runs = 0

    @expose(AllowAny())
    def slow(self, key):
        with self.lock:
            self.runs += 1
        time.sleep(0.3)
        return key


class SerialService(mitogen.service.Service):
    invoker_class = mitogen.service.SerializedInvoker

    def __init__(self, router):
        super().__init__(router)
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    @expose(AllowAny())
    def work(self):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        return self.peak


@mitogen.core.takes_router
def call_parent_service(service_name, method_name, router, **kwargs):
    """From a child, call a service in the master; report the outcome."""
    master = router.context_by_id(0)
    try:
        return "ok: %r" % (master.call_service(service_name, method_name, timeout=10, **kwargs),)
    except mitogen.core.CallError as e:
        return "CallError: %s" % (e,)


@mitogen.core.takes_router
def fetch_file(path, dest, router):
    """Fetch `path` from the master's FileService into `dest`; return
    (ok, size, sha256, metadata size, peak RSS in KiB)."""
    master = router.context_by_id(0)
    with open(dest, "wb") as fp:
        ok, metadata = mitogen.service.FileService.get(master, path, fp, timeout=60)
    digest = hashlib.sha256()
    with open(dest, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            digest.update(block)
    size = os.path.getsize(dest)
    os.unlink(dest)
    return ok, size, digest.hexdigest(), metadata["size"], peak_rss_kib()


def status_kib(field):
    """A size field (e.g. 'VmRSS') of /proc/self/status, in KiB."""
    with open("/proc/self/status") as fp:
        for line in fp:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s in /proc/self/status" % (field,))


def peak_rss_kib():
    """This process's own peak RSS. Not ru_maxrss: Linux carries that
    across execve, so a child spawned by a large parent would report the
    parent's size."""
    return status_kib("VmHWM")


@mitogen.core.takes_router
def fetch_refused(path, router):
    master = router.context_by_id(0)
    try:
        with open(os.devnull, "wb") as fp:
            mitogen.service.FileService.get(master, path, fp, timeout=30)
    except mitogen.core.CallError as e:
        return str(e)
    return "fetched"


def get_pushed(path):
    pool = mitogen.service.get_or_create_pool()
    return pool.get_service(mitogen.service.PushFileService).get(path, timeout=30)


def is_cached(path):
    pool = mitogen.service.get_or_create_pool()
    return path in pool.get_service(mitogen.service.PushFileService)._cache


def identity_for_bench():
    """Warm the context up (imports) before timing."""
    import hashlib  # noqa: F401

    return True
