"""Shrink Python source for the bootstrap bundle without moving any line:
comments and docstrings go, indentation shrinks to one space per block
level, so tracebacks from children still point at the right line numbers."""

import ast
import io
import tokenize

_STRING_START = {tokenize.STRING}
_STRING_END = {tokenize.STRING}
if hasattr(tokenize, "FSTRING_START"):
    _STRING_START.add(tokenize.FSTRING_START)
    _STRING_END.add(tokenize.FSTRING_END)


def _docstrings(tree, lines):
    """Map docstring first line -> (last line, is the only statement), for
    docstrings that start their own line."""
    found = {}
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            or not body
        ):
            continue
        first = body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
            and not lines[first.lineno - 1][: first.col_offset].strip()
        ):
            found[first.lineno] = (first.end_lineno, len(body) == 1)
    return found


def minimize_source(source):
    """Return `source` minus comments and docstrings, reindented; the
    result has exactly the same number of lines."""
    lines = source.splitlines(True)
    inside = set()  # rows entirely or partly inside a multi-line string
    opens = set()  # rows where a multi-line string starts
    depth_by_row = {}
    depth = 0
    string_start = None
    nesting = 0
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.INDENT:
            depth += 1
        elif tok.type == tokenize.DEDENT:
            depth -= 1
        else:
            depth_by_row.setdefault(tok.start[0], depth)
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            lines[row - 1] = lines[row - 1][:col].rstrip() + "\n"
        if tok.type in _STRING_START and tok.type != tokenize.STRING:
            if nesting == 0:
                string_start = tok.start[0]
            nesting += 1
            continue
        if tok.type in _STRING_END and tok.type != tokenize.STRING:
            nesting -= 1
            start = string_start
        elif tok.type == tokenize.STRING and nesting == 0:
            start = tok.start[0]
        else:
            continue
        if nesting == 0 and tok.end[0] > start:
            opens.add(start)
            inside.update(range(start + 1, tok.end[0] + 1))
    for first, (last, alone) in _docstrings(ast.parse(source), lines).items():
        line = lines[first - 1]
        indent = line[: len(line) - len(line.lstrip())]
        lines[first - 1] = indent + ("pass\n" if alone else "\n")
        opens.discard(first)
        for row in range(first + 1, last + 1):
            lines[row - 1] = "\n"
            inside.discard(row)
    out = []
    for row, line in enumerate(lines, 1):
        if row in inside:
            out.append(line)
            continue
        body = line.lstrip(" \t")
        if not body.strip():
            out.append("\n")
            continue
        body = body if row in opens else body.rstrip() + "\n"
        out.append(" " * depth_by_row.get(row, 0) + body)
    return "".join(out)
