"""Shrink Python source for the bootstrap bundle without moving any line:
comments and docstrings go, indentation shrinks to one space per level, so
tracebacks from children still point at the right line numbers."""

import ast
import io
import tokenize


def _docstring_lines(tree):
    """Map docstring first line -> (last line, is the only statement)."""
    found = {}
    for node in ast.walk(tree):
        body = getattr(node, 'body', None)
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef)) or not body:
            continue
        first = body[0]
        if isinstance(first, ast.Expr) and isinstance(
                first.value, ast.Constant) and isinstance(
                first.value.value, str):
            found[first.lineno] = (first.end_lineno, len(body) == 1)
    return found


def minimize_source(source):
    """Return `source` minus comments and docstrings, reindented; the
    result has exactly the same number of lines."""
    lines = source.splitlines(True)
    in_string = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            line = lines[row - 1]
            lines[row - 1] = line[:col].rstrip() + '\n'
        elif tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
            in_string.update(range(tok.start[0] + 1, tok.end[0] + 1))
    for first, (last, alone) in _docstring_lines(ast.parse(source)).items():
        line = lines[first - 1]
        indent = line[:len(line) - len(line.lstrip())]
        lines[first - 1] = indent + ('pass\n' if alone else '\n')
        for row in range(first + 1, last + 1):
            lines[row - 1] = '\n'
            in_string.discard(row)
    out = []
    for row, line in enumerate(lines, 1):
        if row in in_string:
            out.append(line)
            continue
        stripped = line.lstrip(' ')
        depth = (len(line) - len(stripped)) // 4
        out.append(' ' * depth + stripped.rstrip() + '\n' if stripped.strip()
                   else '\n')
    return ''.join(out)
