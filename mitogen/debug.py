"""Diagnosing hangs: every thread's stack of a context, on demand.

Owns `format_stacks()` (this process's threads, by name, threads with the same
stack shown once) and `StackService`, through which a parent asks any context
it started for that text. The service runs on a service pool thread, so a
context whose main thread is busy (running a module, stuck in a call) still
answers. Standard library and mitogen only; runs on Python 3.6+ targets.
"""

import os
import re
import sys
import threading
import traceback

import mitogen
import mitogen.service


def _thread_names():
    return dict((thread.ident, thread.name) for thread in threading.enumerate())


def _natural(name):
    """Sort key putting 'Pool.2' before 'Pool.10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def format_stacks():
    """Every thread's stack in this process as text: a header line per group
    of threads with the same stack (their names), then the stack, innermost
    call last."""
    names = _thread_names()
    groups = {}
    order = []
    for ident, frame in sys._current_frames().items():
        text = "".join(traceback.format_stack(frame))
        if text not in groups:
            groups[text] = []
            order.append(text)
        groups[text].append(names.get(ident, "thread %d" % (ident,)))
    lines = ["pid %d, %d threads" % (os.getpid(), sum(len(g) for g in groups.values()))]
    for text in order:
        threads = sorted(groups[text], key=_natural)
        lines.append("thread %s:" % (", ".join(threads),))
        lines.append(text.rstrip("\n"))
    return "\n".join(lines)


class StackService(mitogen.service.Service):
    """`dump()` returns `format_stacks()` of the context it runs in (for its
    parents only)."""

    @mitogen.service.expose(mitogen.service.AllowParents())
    def dump(self):
        return {"context_id": mitogen.context_id, "text": format_stacks()}
