"""Sphinx extension: the `mitogen` API reference, generated from the reference documents.

The reference documents in docs/spec/ (copies of ../shared/spec/) name the public and
internal API; tests/spec_index.py reads them and tests/unit/test_spec_names.py checks that
every name exists. The ``spec-api`` directive turns the same list into autodoc directives,
one section per module, so the reference shows exactly those names with their docstrings:

- every name `tests.spec_index.read_spec()` returns, except the superseded ones
  (docs/superseded-names.md);
- for a class the documents give with ``:members:``, also its public documented members
  (with ``:inherited-members:``, those of its mitogen base classes too), as the documents'
  own autodoc directives would show them.

The ``superseded-names`` directive renders the table of docs/superseded-names.md. Nothing
is written to the source tree.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import sys
import types
from pathlib import Path

from docutils import nodes  # type: ignore[import-untyped]
from docutils.statemachine import StringList  # type: ignore[import-untyped]
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests import spec_index  # noqa: E402

#: An autoclass directive and the option lines after it (the blame-view copy puts
#: timestamp lines in between, the one-line copy puts everything on one line).
_AUTOCLASS_RE = re.compile(
    r"\.\.\s+(?:py:)?autoclass::[ \t]+(?P<name>[A-Za-z_][\w.]*)(?P<options>(?:\s*"
    r"(?:\d{4}-\d\d-\d\d [\d:]+ \+\d\d:?\d\d|:[\w-]+:))*)"
)
_CURRENTMODULE_RE = re.compile(
    r"\.\.\s+(?:py:)?(?:currentmodule|module|automodule)::[ \t]+([\w.]+)"
)

#: spec kind -> autodoc directive
_DIRECTIVES = {
    "module": "automodule",
    "class": "autoclass",
    "function": "autofunction",
    "data": "autodata",
    "method": "automethod",
    "attribute": "autoattribute",
}


def members_options(directory: Path) -> dict[str, set[str]]:
    """Class name -> the autodoc options (`members`, `inherited-members`) the reference
    documents give it."""
    options: dict[str, set[str]] = {}
    for path in sorted(directory.iterdir()):
        text = path.read_text(encoding="utf-8")
        events = [(m.start(), "module", m.group(1), "") for m in _CURRENTMODULE_RE.finditer(text)]
        events += [
            (m.start(), "class", m.group("name"), m.group("options"))
            for m in _AUTOCLASS_RE.finditer(text)
        ]
        module = None
        for _, kind, name, opts in sorted(events):
            if kind == "module":
                module = name
                continue
            full = name if name.startswith("mitogen.") or module is None else module + "." + name
            found = set(re.findall(r":([\w-]+):", opts)) & {"members", "inherited-members"}
            options.setdefault(full, set()).update(found)
    return options


def _documented(value: object) -> bool:
    if isinstance(value, (classmethod, staticmethod)):
        value = value.__func__
    if isinstance(value, (types.FunctionType, property)):
        return bool(value.__doc__)
    return False


def public_members(cls: type, inherited: bool) -> list[str]:
    """The public members of `cls` that have a docstring (autodoc's `:members:`), those
    of its mitogen base classes too if `inherited`."""
    found: list[str] = []
    classes = cls.__mro__ if inherited else (cls,)
    for klass in classes:
        if not klass.__module__.startswith("mitogen"):
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") and name not in found and _documented(value):
                found.append(name)
    return sorted(found)


def _resolve(name: str) -> object:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise LookupError(name)


@dataclasses.dataclass
class Reference:
    """What the API reference shows, module by module."""

    #: module -> its (kind, name, members) in order; members (short names) for classes only
    modules: dict[str, list[tuple[str, str, list[str] | None]]]

    def names(self) -> set[str]:
        """Every fully qualified name shown (modules, spec names, class members)."""
        shown: set[str] = set(self.modules)
        for entries in self.modules.values():
            for _, name, members in entries:
                shown.add(name)
                shown.update(name + "." + m for m in members or ())
        return shown


def build_reference(directory: Path | None = None) -> Reference:
    """The reference's contents: read_spec() minus the superseded names, grouped by the
    module that holds each name, with each class's members."""
    directory = directory or spec_index.spec_dir()
    superseded = spec_index.read_superseded()
    spec = [s for s in spec_index.read_spec(directory) if s.name not in superseded]
    classes = {s.name for s in spec if s.kind == "class"}
    options = members_options(directory)
    modules: dict[str, list[tuple[str, str, list[str] | None]]] = {}
    members: dict[str, list[str]] = {}
    for item in spec:
        owner = item.name.rpartition(".")[0]
        if item.kind in ("method", "attribute") and owner in classes:
            members.setdefault(owner, []).append(item.name.rpartition(".")[2])
    for item in spec:
        if item.kind == "module":
            modules.setdefault(item.name, [])
            continue
        owner = item.name.rpartition(".")[0]
        if item.kind in ("method", "attribute") and owner in classes:
            continue
        module = owner
        while module not in sys.modules and "." in module:
            try:
                importlib.import_module(module)
            except ImportError:
                module = module.rpartition(".")[0]
        shown: list[str] | None = None
        if item.kind == "class":
            listed = members.get(item.name, [])
            opts = options.get(item.name, set())
            extra: list[str] = []
            if "members" in opts:
                cls = _resolve(item.name)
                assert isinstance(cls, type), item.name
                extra = public_members(cls, "inherited-members" in opts)
            shown = listed + [m for m in extra if m not in listed]
        modules.setdefault(module, []).append((item.kind, item.name, shown))
    return Reference(dict(sorted(modules.items())))


def reference_lines(reference: Reference) -> list[str]:
    """reStructuredText for the reference: one section per module."""
    lines: list[str] = []
    for module, entries in reference.modules.items():
        lines += [module, "-" * len(module), ""]
        lines += [".. automodule:: %s" % module, ""]
        for kind, name, members in entries:
            lines += [".. %s:: %s" % (_DIRECTIVES[kind], name)]
            if members is not None:
                lines += [""]
                cls = _resolve(name)
                assert isinstance(cls, type), name
                for member in members:
                    lines += _member_lines(cls, member)
            lines += [""]
    return lines


def _member_lines(cls: type, member: str) -> list[str]:
    """The directive for one member of `cls`, nested in its autoclass."""
    comment = None if hasattr(cls, member) else _attribute_comment(cls, member)
    if comment is not None:
        return ["   .. py:attribute:: " + member, "", "      " + comment, ""]
    value = inspect.getattr_static(cls, member, None)
    method = callable(value) or isinstance(value, (classmethod, staticmethod))
    return ["   .. %s:: %s" % ("automethod" if method else "autoattribute", member), ""]


def _attribute_comment(cls: type, name: str) -> str | None:
    """The ``#:`` comment above an assignment to ``self.<name>`` in a method of `cls`
    (autodoc only reads those in ``__init__``), or None."""
    source = inspect.getsource(cls).splitlines()
    assign = re.compile(r"^\s*self\.%s\s*=" % re.escape(name))
    for index, line in enumerate(source[1:], 1):
        comment = source[index - 1].strip()
        if assign.match(line) and comment.startswith("#:"):
            return comment[2:].strip()
    return None


class SpecApiDirective(SphinxDirective):
    """``.. spec-api::``: the generated API reference."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        directory = spec_index.spec_dir()
        for path in sorted(directory.iterdir()):
            self.env.note_dependency(str(path))
        self.env.note_dependency(str(spec_index.SUPERSEDED_DOC))
        return _parse(self, reference_lines(build_reference(directory)))


def _markdown_inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"``\1``", text.strip())


def superseded_rows() -> list[tuple[str, str, str]]:
    """(old names, replaced by, how to port) from docs/superseded-names.md."""
    rows = []
    for line in spec_index.SUPERSEDED_DOC.read_text(encoding="utf-8").splitlines():
        m = spec_index.SUPERSEDED_ROW_RE.match(line)
        if m and "`" in m.group("old"):  # not the header nor the rule under it
            rows.append((m.group("old"), m.group("new"), m.group("port")))
    return rows


class SupersededDirective(SphinxDirective):
    """``.. superseded-names::``: the table of docs/superseded-names.md."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        self.env.note_dependency(str(spec_index.SUPERSEDED_DOC))
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 25 30 45", ""]
        lines += ["   * - Old name", "     - Replaced by", "     - How to port"]
        for row in superseded_rows():
            lines += ["   * - " + _markdown_inline(row[0])]
            lines += ["     - " + _markdown_inline(cell) for cell in row[1:]]
        return _parse(self, lines)


def _parse(directive: SphinxDirective, lines: list[str]) -> list[nodes.Node]:
    container = nodes.section()
    container.document = directive.state.document
    nested_parse_with_titles(
        directive.state, StringList(lines, source="<generated by spec_api.py>"), container
    )
    return container.children


def setup(app: Sphinx) -> dict[str, object]:
    app.setup_extension("sphinx.ext.autodoc")
    app.add_directive("spec-api", SpecApiDirective)
    app.add_directive("superseded-names", SupersededDirective)
    return {"version": "1", "parallel_read_safe": True}
