"""Read the project's reference documents (docs/spec/, copies of
../shared/spec/) and list every API name they document.

The documents are Sphinx reStructuredText, some of them mangled (one is a
single line, one a diff, one a blame view with timestamps between lines), so
directives are found by pattern over the whole text instead of by line and
indentation. A ``method``/``attribute`` directive belongs to the class named
by the most recent ``class``/``autoclass`` directive; unqualified names are
relative to the most recent ``currentmodule``/``module``/``automodule``.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IN_REPO_SPEC = REPO / "docs" / "spec"
SHARED_SPEC = REPO.parent / "shared" / "spec"
SUPERSEDED_DOC = REPO / "docs" / "superseded-names.md"

DIRECTIVE_RE = re.compile(
    r"\.\.\s+(?:py:)?(?P<kind>auto(?:class|function|method|attribute|data|exception|module)"
    r"|class|function|method|attribute|data|exception|currentmodule|module)::"
    r"[ \t]+(?P<name>[A-Za-z_][\w.]*)"
)
MODULE_KINDS = {"currentmodule", "module", "automodule"}
CLASS_KINDS = {"class", "autoclass", "exception", "autoexception"}
MEMBER_KINDS = {"method", "automethod", "attribute", "autoattribute"}


@dataclasses.dataclass(frozen=True)
class Param:
    """One documented parameter: `*args` has star "*", `**kw` has "**"."""

    name: str
    star: str = ""
    default: str | None = None


@dataclasses.dataclass
class SpecName:
    """One documented name and where it was seen."""

    kind: str  # module, class, function, method, attribute, data
    name: str  # fully qualified, e.g. mitogen.core.Side.read
    params: tuple[Param, ...] | None  # None: no signature given
    sources: list[str]


def _balanced(text: str, start: int) -> str | None:
    """Return the parenthesised text starting at text[start] == '('."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        elif text[i] == "\n" and text[i + 1 : i + 2] == "\n":
            break
    return None


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_params(text: str) -> tuple[Param, ...]:
    """Parse `a, b=1, \\*args, \\*\\*kw` (reST escapes allowed); `self`
    is dropped."""
    params = []
    for part in _split_top(text.replace("\\*", "*")):
        name, _, default = part.partition("=")
        name = name.strip()
        star = name[: len(name) - len(name.lstrip("*"))]
        name = name.lstrip("*")
        if name == "self":
            continue
        params.append(Param(name, star, default.strip() or None))
    return tuple(params)


def _kind(directive: str) -> str:
    base = directive[4:] if directive.startswith("auto") else directive
    return {"exception": "class", "currentmodule": "module"}.get(base, base)


def parse_document(text: str, source: str) -> list[SpecName]:
    """Return the names documented in one document, in order."""
    names: list[SpecName] = []
    module: str | None = None
    cls: str | None = None
    for m in DIRECTIVE_RE.finditer(text):
        directive, name = m.group("kind"), m.group("name").rstrip(".")
        if directive in MODULE_KINDS:
            module, cls = name, None
            if directive == "currentmodule":
                continue
            names.append(SpecName("module", name, None, [source]))
            continue
        rest = text[m.end() :]
        stripped = rest.lstrip(" \t")
        params = None
        if stripped.startswith("("):
            inner = _balanced(rest, len(rest) - len(stripped))
            if inner is not None:
                params = parse_params(inner)
        kind = _kind(directive)
        if directive in MEMBER_KINDS:
            if name.startswith("mitogen."):
                full = name
            elif cls is None:
                raise ValueError("%s: %s %r outside any class" % (source, directive, name))
            else:
                full = cls + "." + name
        else:
            if name.startswith("mitogen.") or name == "mitogen" or module is None:
                full = name
            else:
                full = module + "." + name
            cls = full if directive in CLASS_KINDS else None
        names.append(SpecName(kind, full, params, [source]))
    return names


def spec_dir() -> Path:
    """The in-repo copy of the reference documents; it must exist."""
    if not IN_REPO_SPEC.is_dir() or not any(IN_REPO_SPEC.iterdir()):
        raise FileNotFoundError(
            "reference documents not found at %s (copies of %s)" % (IN_REPO_SPEC, SHARED_SPEC)
        )
    return IN_REPO_SPEC


def read_spec(directory: Path | None = None) -> list[SpecName]:
    """Every documented name across the documents, merged by name (the
    first signature given wins), sorted."""
    merged: dict[str, SpecName] = {}
    for path in sorted((directory or spec_dir()).iterdir()):
        for item in parse_document(path.read_text(encoding="utf-8"), path.name):
            seen = merged.get(item.name)
            if seen is None:
                merged[item.name] = item
            else:
                if path.name not in seen.sources:
                    seen.sources.append(path.name)
                if seen.params is None:
                    seen.params = item.params
    return sorted(merged.values(), key=lambda s: s.name)


SUPERSEDED_ROW_RE = re.compile(
    r"^\|\s*(?P<old>[^|]+?)\s*\|\s*(?P<new>[^|]+?)\s*\|(?P<port>[^|]+)\|\s*$"
)


def read_superseded(path: Path = SUPERSEDED_DOC) -> dict[str, str]:
    """Map each superseded name to its replacement, from the Markdown
    table in docs/superseded-names.md. A cell may name several old names,
    each in backticks; `{a,b}` expands to both."""
    table: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = SUPERSEDED_ROW_RE.match(line)
        if not m or set(m.group("old")) <= set("-: "):
            continue
        for old in re.findall(r"`([^`]+)`", m.group("old")):
            brace = re.match(r"^(.*)\{([^}]*)\}(.*)$", old)
            alternatives = brace.group(2).split(",") if brace else [""]
            for alt in alternatives:
                name = brace.group(1) + alt.strip() + brace.group(3) if brace else old
                table[name] = m.group("new")
    return table


def literal_or_name(text: str) -> tuple[bool, object]:
    """(True, value) if `text` is a Python literal, else (False, text)."""
    try:
        return True, ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return False, text
