"""Every name the reference documents give exists with the documented
signature, unless docs/superseded-names.md says what replaced it.

Run with -s to see what was checked."""

from __future__ import annotations

import ast
import filecmp
import importlib
import inspect
import textwrap
from types import ModuleType

import pytest

from tests import spec_index
from tests.spec_index import Param, SpecName


def resolve(name: str) -> tuple[object, object | None]:
    """Import the longest module prefix of `name` and look up the rest;
    return (object, owner) where owner is the class or module holding it.
    Raises LookupError naming what is missing."""
    parts = name.split(".")
    module: ModuleType | None = None
    i = len(parts)
    while i:
        try:
            module = importlib.import_module(".".join(parts[:i]))
            break
        except ImportError:
            i -= 1
    if module is None:
        raise LookupError("no module %s" % (parts[0],))
    obj: object = module
    owner: object | None = None
    for j, part in enumerate(parts[i:], i):
        if not hasattr(obj, part):
            if isinstance(obj, type) and j == len(parts) - 1 and assigns_attribute(obj, part):
                return AttributeOf(obj, part), obj
            raise LookupError("%s has no %s" % (".".join(parts[:j]), part))
        owner, obj = obj, getattr(obj, part)
    return obj, owner


class AttributeOf:
    """Stands for an instance attribute that a class's methods assign."""

    def __init__(self, cls: type, name: str) -> None:
        self.cls = cls
        self.name = name


def assigns_attribute(cls: type, name: str) -> bool:
    """True if a method of `cls` or a base assigns `self.<name>`."""
    for klass in cls.__mro__:
        if klass is object:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and node.attr == name
            ):
                return True
    return False


def _default_value(text: str, obj: object) -> object:
    is_literal, value = spec_index.literal_or_name(text)
    if is_literal:
        return value
    module = inspect.getmodule(obj)
    if module is not None and hasattr(module, text):
        return getattr(module, text)
    raise LookupError("documented default %r is neither a literal nor a module name" % (text,))


def signature_problems(obj: object, params: tuple[Param, ...]) -> list[str]:
    """Differences between the documented parameters and `obj`'s."""
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        return ["no signature: %s" % (e,)]
    real = [p for p in sig.parameters.values() if p.name != "self"]
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in real)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in real)
    positional = [p for p in real if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    by_name = {p.name: p for p in real}
    problems = []
    for index, doc in enumerate(params):
        if doc.star == "*":
            if not var_pos:
                problems.append("takes no *%s" % doc.name)
            continue
        if doc.star == "**":
            if not var_kw:
                problems.append("takes no **%s" % doc.name)
            continue
        param = by_name.get(doc.name)
        if param is None:
            problems.append("has no parameter %r" % doc.name)
            continue
        if param in positional and positional.index(param) != index:
            problems.append(
                "%r is positional parameter %d, documented as %d"
                % (doc.name, positional.index(param), index)
            )
        if doc.default is not None:
            if param.default is param.empty:
                problems.append("%r has no default, documented %s" % (doc.name, doc.default))
                continue
            expected = _default_value(doc.default, obj)
            if param.default != expected:
                problems.append(
                    "%r defaults to %r, documented %s" % (doc.name, param.default, doc.default)
                )
    required = [
        p for p in real if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    documented = {d.name for d in params}
    for p in required:
        if p.name not in documented:
            problems.append("requires undocumented parameter %r" % p.name)
    return problems


def check(item: SpecName, superseded: dict[str, str]) -> tuple[str, str]:
    """Return (status, detail): status is found, superseded or missing."""
    try:
        obj, _ = resolve(item.name)
    except LookupError as e:
        if item.name in superseded:
            return "superseded", "replaced by " + superseded[item.name]
        return "missing", str(e)
    if item.name in superseded:
        return "missing", "exists, so it must not be in the superseded table"
    if isinstance(obj, AttributeOf):
        return "found", "instance attribute assigned by %s" % (obj.cls.__name__,)
    if item.kind == "class" and not isinstance(obj, type):
        return "missing", "is %r, not a class" % (obj,)
    if item.kind in ("function", "method") and not callable(obj):
        return "missing", "is %r, not callable" % (obj,)
    if item.kind == "module" and not isinstance(obj, ModuleType):
        return "missing", "is not a module"
    if item.params is not None:
        problems = signature_problems(obj, item.params)
        if problems:
            return "missing", "signature: " + "; ".join(problems)
        return "found", "signature (%s) matches" % ", ".join(p.star + p.name for p in item.params)
    return "found", ""


def test_spec_names_exist() -> None:
    items = spec_index.read_spec()
    superseded = spec_index.read_superseded()
    results = [(item, *check(item, superseded)) for item in items]
    print()
    for item, status, detail in results:
        print("%-10s %-9s %s  %s" % (status, item.kind, item.name, detail))
    counts = {
        s: sum(1 for _, status, _ in results if status == s)
        for s in ("found", "superseded", "missing")
    }
    print(
        "spec names checked: %d, found: %d, superseded: %d, missing: %d"
        % (len(results), counts["found"], counts["superseded"], counts["missing"])
    )
    unused = sorted(set(superseded) - {item.name for item in items})
    assert not unused, "superseded table names things the spec does not: %s" % unused
    missing = ["%s %s: %s" % (i.kind, i.name, d) for i, s, d in results if s == "missing"]
    assert not missing, "%d documented names missing:\n%s" % (len(missing), "\n".join(missing))


def test_spec_parser_sees_every_document() -> None:
    """Each document contributes names, and known names from each document
    (one per markup style) are parsed with their class and signature."""
    items = {i.name: i for i in spec_index.read_spec()}
    sources = {s for i in items.values() for s in i.sources}
    documents = {p.name for p in spec_index.spec_dir().iterdir()}
    # 001 is a diff of prose with no directives in it.
    assert documents - sources == {"001_c3cef140917b8e71.txt"}
    assert items["mitogen.core.Side.read"].params == (Param("n", default="CHUNK_SIZE"),)
    assert items["mitogen.master.Select.get"].params == (Param("timeout", default="None"),)
    assert items["mitogen.master.ProcessMonitor.add"].params == (Param("pid"), Param("callback"))
    assert items["mitogen.core.fire"].params == (
        Param("obj"),
        Param("name"),
        Param("args", "*"),
        Param("kwargs", "**"),
    )
    assert items["mitogen.core.Stream.pending_bytes"].kind == "method"
    assert items["mitogen.parent.TimerList"].kind == "class"
    assert len(items) > 100


def test_signature_check_can_fail() -> None:
    def f(a, b=2, *rest):  # noqa: ANN001, ANN202
        return a

    assert signature_problems(f, (Param("a"), Param("b", default="2"), Param("rest", "*"))) == []
    assert signature_problems(f, (Param("b"), Param("a"))) != []
    assert signature_problems(f, (Param("a"), Param("b", default="3"))) != []
    assert signature_problems(f, (Param("a"), Param("kw", "**"))) != []
    assert signature_problems(f, ()) == ["requires undocumented parameter 'a'"]


def test_in_repo_spec_matches_shared_spec() -> None:
    """docs/spec/ is a verbatim copy of ../shared/spec/ (where that exists:
    a clean clone has only the copy)."""
    shared = spec_index.SHARED_SPEC
    if not shared.is_dir():
        pytest.skip("%s does not exist here (clean clone); docs/spec/ is the reference" % shared)
    ours = spec_index.spec_dir()
    names = sorted(p.name for p in shared.iterdir())
    assert sorted(p.name for p in ours.iterdir()) == names
    match, mismatch, errors = filecmp.cmpfiles(shared, ours, names, shallow=False)
    assert not mismatch and not errors, "docs/spec differs from %s: %s" % (
        shared,
        mismatch + errors,
    )


def test_superseded_table_parses() -> None:
    table = spec_index.read_superseded()
    assert table, "docs/superseded-names.md has no rows"
    for old, new in table.items():
        assert old.startswith("mitogen."), old
        assert new.strip(), old
