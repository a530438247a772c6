"""The parent side: everything a context needs to start and manage children.

This module is the facade: it re-exports under one name every public name
the reference documents put in mitogen.parent, from the modules that own
them, one job each:

- mitogen.spawn: child processes, their socketpairs and ptys, and reaping.
- mitogen.bootstrap: stage 0, the bootstrap bundle, the bootstrap protocols
  and the Options/Connection base every connection method extends.
- mitogen.prompting: connections whose child may ask for a password, and
  their errors.
- mitogen.calls: CallChain and the call methods of Context.
- mitogen.routing: the parent-side Router, RouteMonitor, context IDs in
  non-master parents, module forwarding, errors across via= hops.
- mitogen.pollers, mitogen.kqueue_poller: the kernel-backed pollers.
- mitogen.blocking_io: blocking I/O for the synchronous phase of a child.

Children that start grandchildren import these modules over the wire. The
master sends the modules a requested one imports (its related modules)
ahead of it in the same answer, so the split costs a via= hop no extra
module request (tests/unit/test_importer.py::test_via_hop_module_requests).
"""

import mitogen.core
from mitogen.blocking_io import (
    close_nonstandard_fds,
    discard_until,
    iter_read,
    recv_exact,
    write_all,
)
from mitogen.bootstrap import (
    BOOTSTRAP_MODULES,
    DEFAULT_CONNECT_TIMEOUT,
    DIAG_LINES,
    DRAIN_TIMEOUT,
    LOADER,
    OUTPUT_MARKER,
    STAGE0,
    BootstrapProtocol,
    Connection,
    EofError,
    LogProtocol,
    MitogenProtocol,
    Options,
    frame_blob,
    get_connection_class,
    get_log_level,
    get_preamble,
    get_stage0_command,
)
from mitogen.calls import CallChain, Context
from mitogen.kqueue_poller import KqueuePoller
from mitogen.pollers import PREFERRED_POLLER, EpollPoller, PollPoller
from mitogen.prompting import (
    BECOME_FAILURES,
    FAILURE_REASONS,
    PASSWORD_PROMPT_RE,
    PASSWORD_PROMPT_WORDS,
    AuthenticationError,
    BecomeConnection,
    BecomeOptions,
    DeferredBootstrapProtocol,
    DiagProtocol,
    InterpreterNotFoundError,
    PasswordError,
    PolicyError,
    PromptingConnection,
    PromptingOptions,
    compile_prompt,
    current_user,
    is_password_prompt,
)
from mitogen.routing import (
    ChildIdAllocator,
    ModuleForwarder,
    RouteMonitor,
    Router,
    error_from_dict,
    error_to_dict,
    send_module,
    upgrade_router,
)
from mitogen.spawn import (
    SOCKET_BUFFER_SIZE,
    PopenProcess,
    Process,
    Reaper,
    create_child,
    create_socketpair,
    hybrid_tty_create_child,
    openpty,
    terminal_echoes,
    tty_create_child,
)

# Names the reference documents give under mitogen.parent, defined in core.
Timer = mitogen.core.Timer
TimerList = mitogen.core.TimerList

__all__ = [
    "AuthenticationError",
    "BECOME_FAILURES",
    "BOOTSTRAP_MODULES",
    "BecomeConnection",
    "BecomeOptions",
    "BootstrapProtocol",
    "CallChain",
    "ChildIdAllocator",
    "Connection",
    "Context",
    "DEFAULT_CONNECT_TIMEOUT",
    "DIAG_LINES",
    "DRAIN_TIMEOUT",
    "DeferredBootstrapProtocol",
    "DiagProtocol",
    "EofError",
    "EpollPoller",
    "FAILURE_REASONS",
    "InterpreterNotFoundError",
    "KqueuePoller",
    "LOADER",
    "LogProtocol",
    "MitogenProtocol",
    "ModuleForwarder",
    "OUTPUT_MARKER",
    "Options",
    "PASSWORD_PROMPT_RE",
    "PASSWORD_PROMPT_WORDS",
    "PREFERRED_POLLER",
    "PasswordError",
    "PolicyError",
    "PollPoller",
    "PopenProcess",
    "Process",
    "PromptingConnection",
    "PromptingOptions",
    "Reaper",
    "RouteMonitor",
    "Router",
    "SOCKET_BUFFER_SIZE",
    "STAGE0",
    "Timer",
    "TimerList",
    "close_nonstandard_fds",
    "compile_prompt",
    "create_child",
    "create_socketpair",
    "current_user",
    "discard_until",
    "error_from_dict",
    "error_to_dict",
    "frame_blob",
    "get_connection_class",
    "get_log_level",
    "get_preamble",
    "get_stage0_command",
    "hybrid_tty_create_child",
    "is_password_prompt",
    "iter_read",
    "openpty",
    "recv_exact",
    "send_module",
    "terminal_echoes",
    "tty_create_child",
    "upgrade_router",
    "write_all",
]
