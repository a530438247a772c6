"""Import over the wire: the Importer, the sys.meta_path finder a child
uses to fetch from its parent the modules it lacks (always Mitogen itself
and __main__), caching every answer, negative ones too. Part of the
bootstrap bundle: standard library only, Python 3.6 compatible.
mitogen.core re-exports Importer.
"""

import importlib.machinery
import sys
import threading
import zlib

from mitogen.channels import Latch
from mitogen.wire import GET_MODULE, LOAD_MODULE, Message, has_parent_authority, listen, to_text


def is_served(fullname, names):
    """Is module `fullname` among `names`: one of them, under one ("mitogen" covers
    mitogen.ssh), or a package holding one ("pkg.mod" covers pkg)?"""
    return any(
        fullname == name or fullname.startswith(name + ".") or name.startswith(fullname + ".")
        for name in names
    )


class Importer:
    """A sys.meta_path finder that fetches modules the target lacks (and
    always Mitogen itself and __main__) from the parent, caching answers,
    including negative ones. With a `whitelist` (the names the parent serves,
    see is_served()), it never asks for another module: the answer would be
    "not found", one round trip later."""

    #: Top-level names always fetched from the parent.
    ALWAYS_REMOTE = ("mitogen", "__main__")

    def __init__(self, router, context, whitelist=(), blacklist=()):
        self._router = router
        self._context = context
        self.whitelist = tuple(whitelist)
        self.blacklist = tuple(blacklist)
        self._lock = threading.Lock()
        self._cache = {}
        self._callbacks = {}
        router.add_handler(self._on_load_module, LOAD_MODULE, policy=has_parent_authority)
        listen(router.broker, "shutdown", self._on_shutdown)

    def __repr__(self):
        return "Importer()"

    def _on_shutdown(self):
        with self._lock:
            pending, self._callbacks = self._callbacks, {}
        for callbacks in pending.values():
            for callback in callbacks:
                callback()

    def _on_load_module(self, msg):
        if msg.is_dead:
            return
        tup = msg.unpickle()
        fullname = tup[0]
        with self._lock:
            self._cache[fullname] = tup
            callbacks = self._callbacks.pop(fullname, [])
        for callback in callbacks:
            callback()

    def cached(self, fullname):
        """The LOAD_MODULE tuple received for `fullname`, or None."""
        return self._cache.get(fullname)

    def request_module(self, fullname, callback):
        """Call `callback()` once `fullname` is in the cache (or failed)."""
        with self._lock:
            if fullname in self._cache:
                present = True
            else:
                present = False
                callbacks = self._callbacks.setdefault(fullname, [])
                callbacks.append(callback)
                first = len(callbacks) == 1
        if present:
            return callback()
        if first:
            self._context.send(Message(data=fullname.encode("utf-8"), handle=GET_MODULE))

    def _fetch(self, fullname):
        latch = Latch()
        self.request_module(fullname, latch.put)
        latch.get()
        return self._cache.get(fullname)

    def _is_remote(self, fullname, path):
        top = fullname.partition(".")[0]
        if top in self.ALWAYS_REMOTE:
            return True
        if self.blacklist and fullname.startswith(self.blacklist):
            return False
        if self.whitelist and not is_served(fullname, self.whitelist):
            return False
        if fullname in sys.builtin_module_names:
            return False
        parent = sys.modules.get(fullname.rpartition(".")[0])
        if parent is not None and getattr(parent, "__loader__", None) is self:
            return True
        return not self._found_locally(fullname, path)

    def _found_locally(self, fullname, path):
        """Does another finder have `fullname`: the path finder, or one a
        package installed (six's for `six.moves`)?"""
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, Importer):
                continue
            find = getattr(finder, "find_spec", None)
            if find is not None and find(fullname, path) is not None:
                return True
        return False

    def find_spec(self, fullname, path, target=None):
        if not self._is_remote(fullname, path):
            return None
        parent_name = fullname.rpartition(".")[0]
        parent_tup = self._cache.get(parent_name)
        if (
            parent_tup
            and parent_tup[1] is not None
            and fullname.rpartition(".")[2] not in parent_tup[1]
        ):
            return None
        if self._router.broker.in_thread():
            raise ImportError("cannot import %s on the Broker thread" % (fullname,))
        tup = self._fetch(fullname)
        if tup is None or tup[3] is None:
            return None
        spec = importlib.machinery.ModuleSpec(
            fullname, self, origin="master:" + tup[2], is_package=tup[1] is not None
        )
        spec.has_location = False
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        fullname = module.__spec__.name
        _, pkg_present, path, source, _ = self._cache[fullname]
        module.__file__ = "master:" + path
        if pkg_present is not None:
            module.__path__ = []
        if fullname == "__main__":
            module.__name__ = "__mitogen_main__"
        code = compile(zlib.decompress(source), module.__file__, "exec", dont_inherit=True)
        exec(code, module.__dict__)

    def get_source(self, fullname):
        tup = self._cache.get(fullname)
        if tup and tup[3] is not None:
            return to_text(zlib.decompress(tup[3]))
        return None
