"""No module of mitogen/ or ansible_mitogen/ reaches into another one's
private names: modules talk through public, documented seams.

The rule, checked by parsing (ast) every module of both packages:

- A *private name* is one that starts with a single underscore (`_x`, not
  `__x__`). It is *defined by* a module when that module assigns it at top
  level, defines a function or class of that name at top level, or defines
  it inside one of its classes (a method, a class-level assignment, or an
  assignment to `self._x` / `cls._x` in a method of the class).
- A module M *uses* a private name defined elsewhere, and fails the test,
  when it
  1. reads an attribute `pkg.mod._x` of one of the two packages' modules
     other than M itself (through any import alias), or imports it with
     `from pkg.mod import _x`;
  2. reads an attribute `obj._x` (or `getattr(obj, "_x")`) of an object
     that is not `self`, `cls` or `super()`, where `_x` is defined by some
     *other* module of the two packages and not by M itself. (A name M
     defines too is taken as M's own: that is a module using its own
     objects' internals, which is allowed.)
- `self._x`, `cls._x` and `super()._x` are always allowed: a subclass may use
  what it inherits. Names that neither package defines (ansible-core's
  `ActionBase._execute_module`, the standard library's `os._exit`) are not
  this test's business: those are contracts with other projects.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("mitogen", "ansible_mitogen")
SELFISH = ("self", "cls")


def _is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _modules():
    """{dotted module name: path} for every module of the two packages."""
    found = {}
    for package in PACKAGES:
        base = os.path.join(ROOT, package)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for filename in sorted(filenames):
                if not filename.endswith(".py"):
                    continue
                path = os.path.join(dirpath, filename)
                rel = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                found[".".join(rel)] = path
    return found


def _targets(node):
    """Names bound by an assignment-like statement's targets."""
    if isinstance(node, (ast.Assign,)):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    else:
        return
    stack = list(targets)
    while stack:
        target = stack.pop()
        if isinstance(target, ast.Name):
            yield target.id
        elif isinstance(target, (ast.Tuple, ast.List)):
            stack.extend(target.elts)


def _definitions(tree):
    """Private names the module defines at top level and in its classes."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        names.update(_targets(node))
    for cls in ast.walk(tree):
        if not isinstance(cls, ast.ClassDef):
            continue
        for node in cls.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            names.update(_targets(node))
        for node in ast.walk(cls):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in SELFISH
            ):
                names.add(node.attr)
    return {name for name in names if _is_private(name)}


def _module_aliases(tree, modules):
    """{local name: dotted module} for the package modules this one imports,
    plus the dotted names themselves (`mitogen.core` after `import
    mitogen.core`)."""
    aliases = {name: name for name in modules}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in modules:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                dotted = node.module + "." + alias.name
                if dotted in modules:
                    aliases[alias.asname or alias.name] = dotted
    return aliases


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _is_selfish(node):
    if isinstance(node, ast.Name):
        return node.id in SELFISH
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"
    )


def offenders(extra=None):
    """[(relative path, line, name, why)] for every cross-module private use.
    `extra` ({dotted name: source}) adds modules that exist only in memory."""
    modules = _modules()
    trees = {}
    for name, path in modules.items():
        with open(path, encoding="utf-8") as fp:
            trees[name] = ast.parse(fp.read(), path)
    for name, source in (extra or {}).items():
        modules[name] = os.path.join(ROOT, *name.split(".")) + ".py"
        trees[name] = ast.parse(source)
    defined = {name: _definitions(tree) for name, tree in trees.items()}
    found = []
    for name, tree in trees.items():
        rel = os.path.relpath(modules[name], ROOT)
        aliases = _module_aliases(tree, modules)

        def elsewhere(attr, name=name):
            return attr not in defined[name] and any(
                attr in names for other, names in defined.items() if other != name
            )

        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in modules:
                for alias in node.names:
                    if _is_private(alias.name) and node.module != name:
                        found.append(
                            (rel, node.lineno, "%s.%s" % (node.module, alias.name), "import")
                        )
                continue
            if isinstance(node, ast.Call) and (
                isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                attr, value = node.args[1].value, node.args[0]
            elif isinstance(node, ast.Attribute):
                attr, value = node.attr, node.value
            else:
                continue
            if not _is_private(attr) or _is_selfish(value):
                continue
            dotted = _dotted(value)
            target = aliases.get(dotted) if dotted else None
            if target is not None:
                if target != name:
                    found.append((rel, node.lineno, target + "." + attr, "module"))
            elif elsewhere(attr):
                owners = sorted(o for o, names in defined.items() if attr in names and o != name)
                found.append((rel, node.lineno, attr, "defined in " + ", ".join(owners)))
    return sorted(found)


def test_no_cross_module_private_names():
    found = offenders()
    assert not found, "modules reach into other modules' private names:\n" + "\n".join(
        "  %s:%d: %s (%s)" % item for item in found
    )


PROBE = """\
import mitogen.wire as c
import mitogen.wire
from mitogen.wire import _Unpickler
from mitogen import parent


class Mine:
    def __init__(self):
        self._own = 1

    def use(self, other, router):
        self._async_route = None
        other._own
        super()._stream_by_id
        c._Unpickler
        mitogen.wire._construct(None, None, None)
        parent._build_preamble()
        router._stream_by_id
        getattr(router, "_handle_map")
        router._not_defined_anywhere
"""


def test_checker_finds_each_kind_of_reach_in():
    """A module that exists only in memory reaches in every way the rule
    forbids (and uses its own and unknown private names, which it allows)."""
    found = [
        (line, what, why)
        for path, line, what, why in offenders({"mitogen._seam_probe": PROBE})
        if path == os.path.join("mitogen", "_seam_probe.py")
    ]
    assert found == [
        (3, "mitogen.wire._Unpickler", "import"),
        (15, "mitogen.wire._Unpickler", "module"),
        (16, "mitogen.wire._construct", "module"),
        (17, "mitogen.parent._build_preamble", "module"),
        (18, "_stream_by_id", "defined in mitogen.router"),
        (19, "_handle_map", "defined in mitogen.router"),
    ]
