"""The core's module layout: mitogen.core is a facade over the modules of
the bootstrap bundle, which load one after another in a fresh child.

- Each bundle module imports, at module level, only the standard library and
  the bundle modules before it (the stage 2 loader runs them in
  BOOTSTRAP_MODULES order, before any Importer exists).
- mitogen.core re-exports every public name those modules define, as the
  same object, so `mitogen.core.X` keeps working wherever X moved.
- No module of mitogen/ grows past MAX_LINES lines.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import mitogen.bootstrap
import mitogen.core

REPO = Path(__file__).resolve().parents[2]
BUNDLE = mitogen.bootstrap.BOOTSTRAP_MODULES
#: The bundle modules mitogen.core re-exports from.
CORE_PARTS = [name for name in BUNDLE if name not in ("mitogen", "mitogen.core")]
MAX_LINES = 900


def source_path(modname: str) -> Path:
    if modname == "mitogen":
        return REPO / "mitogen" / "__init__.py"
    return REPO / (modname.replace(".", "/") + ".py")


def module_level_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) for each import outside function bodies: what runs when
    the module is executed."""
    found = []
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        else:
            stack.extend(ast.iter_child_nodes(node))
    return sorted(found)


def bundle_order_problems(sources: dict[str, str]) -> list[str]:
    """What breaks loading `sources` ({module: source}, in load order) the way
    the stage 2 loader does."""
    problems = []
    loaded: list[str] = []
    for modname, source in sources.items():
        for line, imported in module_level_imports(ast.parse(source)):
            top = imported.partition(".")[0]
            if top == "mitogen":
                if imported not in loaded and imported != "mitogen":
                    problems.append(
                        "%s:%d imports %s, which is not loaded before it"
                        % (modname, line, imported)
                    )
            elif top not in sys.stdlib_module_names:
                problems.append(
                    "%s:%d imports %s, not standard library" % (modname, line, imported)
                )
        loaded.append(modname)
    return problems


def test_bundle_modules_import_only_stdlib_and_earlier_modules() -> None:
    sources = {name: source_path(name).read_text(encoding="utf-8") for name in BUNDLE}
    assert BUNDLE[0] == "mitogen" and BUNDLE[-1] == "mitogen.core"
    assert bundle_order_problems(sources) == []


def test_bundle_order_check_can_fail() -> None:
    sources = {
        "mitogen": "",
        "mitogen.wire": "import os\nimport mitogen.child\n\ndef f():\n    import mitogen.late\n",
        "mitogen.child": "import mitogen.wire\nimport yaml\n",
    }
    assert bundle_order_problems(sources) == [
        "mitogen.wire:2 imports mitogen.child, which is not loaded before it",
        "mitogen.child:2 imports yaml, not standard library",
    ]


def public_definitions(tree: ast.Module) -> list[str]:
    """Public names a module defines (not imports) at top level."""
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return [name for name in names if not name.startswith("_")]


@pytest.mark.parametrize("modname", CORE_PARTS)
def test_core_reexports_every_public_name(modname: str) -> None:
    module = importlib.import_module(modname)
    names = public_definitions(ast.parse(source_path(modname).read_text(encoding="utf-8")))
    assert names
    missing = [
        name for name in names if getattr(mitogen.core, name, None) is not module.__dict__[name]
    ]
    assert missing == [], "mitogen.core does not re-export these names of %s" % (modname,)


def test_mitogen_modules_stay_small() -> None:
    sizes = {
        str(path.relative_to(REPO)): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted((REPO / "mitogen").glob("*.py"))
    }
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}
