"""The master side: what only the first process of a tree does.

Owns: the master Broker and Router, context ID allocation (IdAllocator),
finding module source for children (ModuleFinder and its FinderMethods),
answering their imports (ModuleResponder), and re-logging their log records
(LogForwarder).
"""

import dis
import importlib.machinery
import importlib.util
import logging
import os
import pkgutil
import re
import sys
import sysconfig
import threading
import zlib

import mitogen
import mitogen.core
import mitogen.importer
import mitogen.parent
import mitogen.process_monitor
import mitogen.select
from mitogen.core import LOG

# Names the public API document gives under mitogen.master.
Context = mitogen.parent.Context
Select = mitogen.select.Select
ProcessMonitor = mitogen.process_monitor.ProcessMonitor

#: Matches the conventional guard that keeps a script from running when
#: imported, or the @mitogen.main() decorator that does the same.
_MAIN_GUARD_RE = re.compile(r"""^(if\s+__name__\s*==\s*['"]__main__['"]|@mitogen\.main\()""", re.M)

_STDLIB_PATHS = tuple(
    os.path.realpath(p) + os.sep
    for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
)


def is_stdlib_name(modname):
    """True if `modname` belongs to the standard library."""
    top = modname.partition(".")[0]
    if top in sys.builtin_module_names:
        return True
    names = getattr(sys, "stdlib_module_names", None)
    if names is not None:
        return top in names
    module = sys.modules.get(top)
    path = os.path.realpath(getattr(module, "__file__", "") or "")
    return path.startswith(_STDLIB_PATHS) and "site-packages" not in path


def get_child_modules(path):
    """Return the names of the modules and packages directly inside the
    package directory (or directories) `path`."""
    paths = [path] if isinstance(path, str) else list(path)
    return sorted(name for _, name, _ in pkgutil.iter_modules(paths))


def _search_path(fullname, path):
    """Directories holding the submodules of package `fullname`."""
    search = getattr(sys.modules.get(fullname), "__path__", None)
    if search is None:
        try:
            spec = importlib.util.find_spec(fullname)
        except (ImportError, ValueError):
            spec = None
        search = spec and spec.submodule_search_locations
    if search is None and os.path.exists(path):
        search = [os.path.dirname(path)]
    return list(search or [])


class FinderMethod:
    """One strategy for finding a module's source: find() returns
    `(path, source_bytes, is_pkg)` or None."""

    def __repr__(self):
        return "%s()" % (type(self).__name__,)

    def find(self, fullname):
        raise NotImplementedError()


class DefectivePython3xMainMethod(FinderMethod):
    """Serve the running program (`__main__`) from its file, but only if it
    is guarded so that importing it elsewhere does not run it."""

    def find(self, fullname):
        if fullname != "__main__":
            return None
        path = getattr(sys.modules.get("__main__"), "__file__", None)
        if not path or not os.path.exists(path):
            return None
        with open(path, "rb") as fp:
            source = fp.read()
        if not _MAIN_GUARD_RE.search(source.decode("utf-8", "replace")):
            LOG.error(
                "refusing to serve %s as __main__: it has no "
                "\"if __name__ == '__main__':\" guard or "
                "@mitogen.main() decorator, so importing it in a child "
                "would run the whole program there",
                path,
            )
            return None
        return path, source, False


class PkgutilMethod(FinderMethod):
    """Ask the import system's loaders for the source."""

    def find(self, fullname):
        if fullname == "__main__":
            return None
        try:
            spec = importlib.util.find_spec(fullname)
        except (ImportError, ValueError, AttributeError):
            return None
        if spec is None:
            return None
        is_pkg = spec.submodule_search_locations is not None
        if spec.origin in (None, "namespace") and is_pkg:
            return ("<namespace %s>" % (fullname,), b"", True)
        loader = spec.loader
        if not isinstance(loader, importlib.machinery.SourceFileLoader):
            return None
        try:
            source = loader.get_data(spec.origin)
        except OSError:
            return None
        return spec.origin, source, is_pkg


class SysModulesMethod(FinderMethod):
    """Use an already-imported module's __file__."""

    def find(self, fullname):
        module = sys.modules.get(fullname)
        path = getattr(module, "__file__", None)
        if not isinstance(module, type(sys)) or not path or fullname == "__main__":
            return None
        if path.endswith(".pyc"):
            path = path[:-1]
        if not path.endswith(".py") or not os.path.exists(path):
            return None
        with open(path, "rb") as fp:
            return path, fp.read(), hasattr(module, "__path__")


class ParentEnumerationMethod(FinderMethod):
    """Search the parent package's __path__ directly; finds submodules the
    import system cannot see (e.g. packages that rewrite sys.modules)."""

    def find(self, fullname):
        parent_name, _, name = fullname.rpartition(".")
        parent = sys.modules.get(parent_name)
        path = getattr(parent, "__path__", None)
        if not parent_name or path is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, list(path))
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return None
        return (
            spec.origin,
            spec.loader.get_data(spec.origin),
            spec.submodule_search_locations is not None,
        )


_IMPORT_NAME = dis.opmap["IMPORT_NAME"]
_LOAD_CONST = dis.opmap["LOAD_CONST"]
_LOAD_SMALL_INT = dis.opmap.get("LOAD_SMALL_INT")  # Python 3.14
_CACHE = dis.opmap.get("CACHE")  # Python 3.11+ inline cache entries


def _opcodes(co):
    """Yield `(opcode, argument)` of `co`'s instructions: a lean
    dis.get_instructions(), which costs several times more."""
    code = co.co_code
    extended = 0
    for i in range(0, len(code), 2):
        op = code[i]
        arg = code[i + 1] | extended
        if op == dis.EXTENDED_ARG:
            extended = arg << 8
            continue
        extended = 0
        if op != _CACHE:
            yield op, arg


class ModuleFinder:
    """Find module source and the related modules worth sending with it;
    results are cached."""

    def __init__(self):
        self._found = {}
        self._related = {}
        self._imports = {}
        self.methods = [
            DefectivePython3xMainMethod(),
            PkgutilMethod(),
            SysModulesMethod(),
            ParentEnumerationMethod(),
        ]

    def __repr__(self):
        return "ModuleFinder()"

    def get_module_source(self, fullname):
        """Return `(path, source, is_pkg)`, or `(None, None, None)`."""
        if fullname not in self._found:
            result = (None, None, None)
            if fullname == "__main__" or not is_stdlib_name(fullname):
                for method in self.methods:
                    found = method.find(fullname)
                    if found:
                        result = found
                        break
            self._found[fullname] = result
        return self._found[fullname]

    def _scan_imports(self, code, package):
        """Yield names imported by `code`, relative ones resolved."""
        pending = [code]
        while pending:
            co = pending.pop()
            args = []
            for op, arg in _opcodes(co):
                if op == _IMPORT_NAME:
                    level = args[-2] if len(args) >= 2 else 0
                    fromlist = args[-1] if args else None
                    name = co.co_names[arg]
                    if isinstance(level, int) and level > 0:
                        base = package.rsplit(".", level - 1)[0]
                        name = base + ("." + name if name else "")
                    yield name
                    for sub in fromlist or ():
                        if isinstance(sub, str) and sub != "*":
                            yield name + "." + sub
                if op == _LOAD_CONST:
                    args.append(co.co_consts[arg])
                elif op == _LOAD_SMALL_INT:
                    args.append(arg)
                else:
                    args = []
            pending.extend(c for c in co.co_consts if isinstance(c, type(co)))

    def _direct_imports(self, name):
        """Names imported by module `name` (each source compiled once)."""
        if name not in self._imports:
            path, source, is_pkg = self.get_module_source(name)
            found = ()
            if source is not None:
                package = name if is_pkg else name.rpartition(".")[0]
                try:
                    code = compile(source, path, "exec", dont_inherit=True)
                    found = tuple(self._scan_imports(code, package))
                except SyntaxError:
                    pass
            self._imports[name] = found
        return self._imports[name]

    def find_related_imports(self, fullname):
        """Return sibling modules of the same top-level package imported by
        `fullname`, directly or through each other."""
        if fullname in self._related:
            return self._related[fullname]
        top = fullname.partition(".")[0]
        seen = set()
        stack = [fullname]
        while stack:
            name = stack.pop()
            for imported in self._direct_imports(name):
                if imported.partition(".")[0] != top or imported in seen or imported == fullname:
                    continue
                if self.get_module_source(imported)[1] is None:
                    continue
                seen.add(imported)
                parent = imported.rpartition(".")[0]
                while parent and parent not in seen and parent != fullname:
                    seen.add(parent)
                    parent = parent.rpartition(".")[0]
                stack.append(imported)
        self._related[fullname] = sorted(seen)
        return self._related[fullname]


class ModuleResponder:
    """Answer GET_MODULE: send the module and, ahead of it, related modules
    the requester has not had yet."""

    def __init__(self, router):
        self._router = router
        self._finder = ModuleFinder()
        self._cache = {}
        self._sent = {}
        self._lock = threading.Lock()
        #: Packages served (serve_only()); None serves every module found.
        self._served = None
        #: Counters, for tests and benchmarks.
        self.get_module_count = 0
        self.good_load_module_count = 0
        self.bad_load_module_count = 0
        router.add_handler(self._on_get_module, mitogen.core.GET_MODULE)

    def __repr__(self):
        return "ModuleResponder()"

    def _build_tuple(self, fullname):
        with self._lock:
            if fullname in self._cache:
                return self._cache[fullname]
        path, source, is_pkg = self._finder.get_module_source(fullname)
        if source is None:
            tup = (fullname, None, None, None, ())
        else:
            pkg_present = None
            if is_pkg:
                pkg_present = get_child_modules(_search_path(fullname, path))
            related = (
                []
                if fullname == "__main__"
                else [
                    name
                    for name in self._finder.find_related_imports(fullname)
                    if name not in mitogen.parent.BOOTSTRAP_MODULES
                ]
            )
            tup = (
                fullname,
                pkg_present,
                path,
                mitogen.core.Blob(zlib.compress(source, 6)),
                related,
            )
        with self._lock:
            self._cache[fullname] = tup
        return tup

    def serve_only(self, names):
        """Serve only the modules `names` (each with everything under it, and the
        packages holding it: "mitogen" serves mitogen.ssh, "pkg.mod" serves pkg) from now
        on; a request for any other module is answered "not found", as if this process
        did not have it, and logged at debug level. A child then imports what it has
        itself, or fails the import as it would on its own, rather than running this
        process's copy (a library of the controller that the target lacks, an optional
        import a module tries, or a module a hostile child asks for to read its source)."""
        self._served = tuple(names)

    @property
    def served(self):
        """The names given to serve_only() (None: every module is served). Children are
        told them, and never ask for another module."""
        return self._served

    def serves(self, fullname):
        """Would a request for module `fullname` be answered (see serve_only())?"""
        served = self._served
        return served is None or mitogen.importer.is_served(fullname, served)

    def prepare(self, names):
        """Build the replies for modules `names` and their related modules
        ahead of the first request (e.g. on a spare thread while the first
        connection starts)."""
        for name in names:
            for related in self._build_tuple(name)[4]:
                self._build_tuple(related)

    def _on_get_module(self, msg):
        if msg.is_dead:
            return
        self.get_module_count += 1
        fullname = msg.data.decode("utf-8", "replace")
        if not self.serves(fullname):
            LOG.debug(
                "%r: refused %r to context %d: not a served package", self, fullname, msg.src_id
            )
            tup, related = (fullname, None, None, None, ()), ()
        else:
            tup, related = self._reply(fullname)
        for sent in mitogen.parent.send_module(self._router, self._sent, msg.src_id, tup, related):
            if sent[3] is None:
                self.bad_load_module_count += 1
            else:
                self.good_load_module_count += 1

    def _reply(self, fullname):
        """The tuple answering a request for `fullname`, and those of the related
        modules sent ahead of it (only served ones)."""
        try:
            tup = self._build_tuple(fullname)
            related = [self._build_tuple(name) for name in tup[4] if self.serves(name)]
        except Exception:
            LOG.exception("%r: while serving %r", self, fullname)
            tup, related = (fullname, None, None, None, ()), ()
        return tup, related


class LogForwarder:
    """Re-log children's FORWARD_LOG records under `mitogen.ctx.<name>`."""

    def __init__(self, router):
        self._router = router
        self._loggers = {}
        router.add_handler(self._on_forward_log, mitogen.core.FORWARD_LOG)

    def __repr__(self):
        return "LogForwarder()"

    def _on_forward_log(self, msg):
        if msg.is_dead:
            return
        try:
            name, level, text = msg.data.decode("utf-8", "replace").split("\x00", 2)
            level = int(level)
        except ValueError:
            LOG.error("%r: malformed log record from context %d", self, msg.src_id)
            return
        context = self._router.context_by_id(msg.src_id)
        logger = self._loggers.get(msg.src_id)
        if logger is None:
            logger = logging.getLogger("mitogen.ctx.%s" % (context.name or msg.src_id,))
            self._loggers[msg.src_id] = logger
        if logger.isEnabledFor(level):
            record = logger.makeRecord(
                logger.name, level, "(remote)", 0, "%s: %s", (name, text), None
            )
            record.mitogen_name = name
            record.mitogen_context = context
            logger.handle(record)


class IdAllocator:
    """Allocate context IDs: one at a time for the master's own children,
    in blocks for children that start grandchildren (ALLOCATE_ID)."""

    BLOCK_SIZE = 1000

    def __init__(self, router):
        self.router = router
        self.next_id = 1
        self.lock = threading.Lock()
        router.add_handler(self.on_allocate_id, mitogen.core.ALLOCATE_ID)

    def __repr__(self):
        return "IdAllocator(%r)" % (self.router,)

    def allocate(self):
        """Return a new context ID."""
        with self.lock:
            context_id = self.next_id
            self.next_id += 1
            return context_id

    def allocate_block(self):
        with self.lock:
            start = self.next_id
            self.next_id += self.BLOCK_SIZE
            return start, self.next_id

    def on_allocate_id(self, msg):
        if msg.is_dead:
            return
        start, end = self.allocate_block()
        LOG.debug("%r: allocating [%d..%d) to context %d", self, start, end, msg.src_id)
        msg.reply((start, end))


class Broker(mitogen.core.Broker):
    """The master's Broker: uses the best poller for the platform."""

    poller_class = mitogen.parent.PREFERRED_POLLER


class Router(mitogen.parent.Router):
    """The master's Router: allocates IDs, serves modules, relays logs.

    :param broker: Broker to use; a new one is created if None.
    :param max_message_size: largest message to accept or send.
    """

    broker_class = Broker

    def __init__(self, broker=None, max_message_size=None):
        if broker is None:
            broker = self.broker_class()
        if max_message_size:
            self.max_message_size = max_message_size
        super().__init__(broker)
        self.id_allocator = IdAllocator(self)
        self.responder = ModuleResponder(self)
        self.log_forwarder = LogForwarder(self)
