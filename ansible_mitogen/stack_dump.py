"""The mux's answer to SIGUSR2: every thread's stack of the mux and of each live
target context, logged (a hang is diagnosable without a debugger).

`install()` sets the signal handler; each signal starts a thread that logs, at
WARNING under `ansible_mitogen.stacks`, the mux's stacks, then asks every
context the mux keeps up for its own (mitogen.debug.StackService, answered on
a thread of the target's, so a target busy running a module answers too) and
logs each answer, or why there was none within TIMEOUT seconds. At normal
verbosity the lines go to ansible-playbook's stderr; with log forwarding on
(logs.py) through Ansible's display and `log_path`.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

import mitogen.core
import mitogen.debug

LOG = logging.getLogger("ansible_mitogen.stacks")

#: Seconds all contexts together have to answer.
TIMEOUT = 5.0

#: (context, its host or None) for every live target context.
Contexts = Callable[[], list[tuple[mitogen.core.Context, str | None]]]


def dump(contexts: Contexts) -> None:
    """Log the mux's stacks, then those of every context `contexts()` lists."""
    LOG.warning("stacks of the mux: %s", mitogen.debug.format_stacks())
    asked = [
        (context, host, context.call_service_async(mitogen.debug.StackService, "dump"))
        for context, host in contexts()
    ]
    deadline = mitogen.core.now() + TIMEOUT
    for context, host, receiver in asked:
        what = "context %d (%s on %s)" % (context.context_id, context.name, host or "?")
        try:
            answer = receiver.get(timeout=max(0.0, deadline - mitogen.core.now())).unpickle()
        except mitogen.core.Error as e:
            LOG.warning("stacks of %s: no answer: %s", what, e)
            continue
        LOG.warning("stacks of %s: %s", what, answer["text"])


def install(contexts: Contexts) -> None:
    """Dump stacks (on a new thread) whenever the process gets SIGUSR2."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=dump, args=(contexts,), name="stack-dump", daemon=True).start()

    signal.signal(signal.SIGUSR2, on_signal)
