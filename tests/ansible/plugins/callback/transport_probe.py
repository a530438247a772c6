"""Callback plugin `transport_probe`: which transport served each task execution.

It writes no record for callbacks. Loaded in the controller before any worker forks, it
wraps, once per process:

- `TaskExecutor.run` and `TaskExecutor._execute` (one `_execute` per task, or per loop
  item): at the end of every `_execute` the worker appends one JSON line to
  $MITOGEN_TEST_TRANSPORT saying which connection plugin and action class the task had
  and which transport calls were made meanwhile;
- the transport methods (`exec_command`, `put_file`, `fetch_file`) of ansible-core's own
  connection plugins, those loaded already and (through `ConnectionBase.__init_subclass__`)
  those loaded later, such as the copies the loader makes for FQCNs like
  `ansible.builtin.ssh`: each call is a stock transport call;
- Mitogen's `CallChain.call_async` and `call_no_reply` (as soon as `mitogen.parent` is
  imported): each function call sent to a Mitogen context is a Mitogen call. Only Mitogen
  sends these, so a task counted as served by Mitogen really had its work done in a
  Mitogen context: a stock connection claiming `is_mitogen_connection` cannot fake it.

Nothing in the task results changes: the lines go to their own file, and the harness
joins them with the `jsonl_results` records by host, task uuid and order (see harness.py).

Line fields: host, uuid, run (one per TaskExecutor.run), window (the `_execute` index in
that run), connection (plugin load name) and connection_class, mitogen_connection (the
plugin's `is_mitogen_connection`, None if it has none), ansible_mitogen_connection (the
class comes from ansible_mitogen.connection), action_class and mitogen_action (the action
has ansible_mitogen's mixin), stock_calls and mitogen_calls (what was called, with counts),
probe (Mitogen calls were being counted during the whole window: from its start, or
from the definition of the connection class that imported Mitogen during it).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ansible.executor.task_executor import TaskExecutor
from ansible.plugins.callback import CallbackBase
from ansible.plugins.connection import ConnectionBase, local, ssh  # noqa: F401 (wrapped)

DOCUMENTATION = """
    name: transport_probe
    type: aggregate
    short_description: Record the transport behind every task execution (ansible_mitogen tests)
    description:
        - Appends one JSON object per task execution (loop item) to the file named by
          $MITOGEN_TEST_TRANSPORT, from the worker; does nothing without it.
"""

PATH_VARIABLE = "MITOGEN_TEST_TRANSPORT"
STOCK_METHODS = ("exec_command", "put_file", "fetch_file")
#: Where ansible-core's own connection plugins live, as the loader imports them, and those
#: of the collections with the stock container connections.
STOCK_MODULES = (
    "ansible.plugins.connection.",
    "ansible_collections.ansible.builtin.plugins.",
    "ansible_collections.community.docker.plugins.connection.",
    "ansible_collections.containers.podman.plugins.connection.",
    "ansible_collections.community.general.plugins.connection.",
    "ansible_collections.kubernetes.core.plugins.connection.",
)
MITOGEN_METHODS = ("call_async", "call_no_reply")

#: Calls counted in this process so far: "stock:ssh.exec_command" or "mitogen:module.func".
_calls: Counter[str] = Counter()
_state: dict[str, Any] = {
    "run": None,
    "window": 0,
    "mitogen_wrapped": False,
    "window_probe": False,
}


def _counting(kind: str, method: Callable[..., Any], label: Callable[..., str]) -> Any:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        _calls[f"{kind}:{label(self, *args)}"] += 1
        return method(self, *args, **kwargs)

    wrapper.__transport_probe__ = True  # type: ignore[attr-defined]
    return wrapper


def _wrap_stock_class(cls: type) -> None:
    """Count the transport calls of `cls` if it is one of ansible-core's own connection
    plugins (imported by module name or, for FQCNs, through the collection loader)."""
    if not cls.__module__.startswith(STOCK_MODULES):
        return
    name = cls.__module__.rpartition(".")[2]
    for method in STOCK_METHODS:
        original = cls.__dict__.get(method)
        if original is not None and not getattr(original, "__transport_probe__", False):
            label = functools.partial(lambda n, m, *_: f"{n}.{m}", name, method)
            setattr(cls, method, _counting("stock", original, label))


def _wrap_stock() -> None:
    """Wrap the stock connection classes loaded so far, and every one loaded later."""
    pending = list(ConnectionBase.__subclasses__())
    while pending:
        cls = pending.pop()
        _wrap_stock_class(cls)
        pending += cls.__subclasses__()
    if "__init_subclass__" not in ConnectionBase.__dict__:

        def init_subclass(cls: type, **kwargs: Any) -> None:
            super(ConnectionBase, cls).__init_subclass__(**kwargs)
            _wrap_stock_class(cls)
            # A connection plugin importing Mitogen in this window (Mitogen's, loaded by
            # a worker without the strategy) is defined before it can call anything.
            if not _state["mitogen_wrapped"] and _wrap_mitogen():
                _state["window_probe"] = True

        ConnectionBase.__init_subclass__ = classmethod(init_subclass)  # type: ignore[assignment]


def _function_name(_chain: Any, fn: Any, *_args: Any) -> str:
    owner = getattr(fn, "__self__", None)
    module = owner.__module__ if isinstance(owner, type) else fn.__module__
    return f"{module}.{getattr(fn, '__qualname__', fn.__name__)}"


def _wrap_mitogen() -> bool:
    """Count Mitogen function calls once mitogen.parent is imported; True if counting."""
    if not _state["mitogen_wrapped"]:
        parent = sys.modules.get("mitogen.parent")
        if parent is None or not hasattr(parent, "CallChain"):
            return False
        for method in MITOGEN_METHODS:
            original = parent.CallChain.__dict__[method]
            setattr(parent.CallChain, method, _counting("mitogen", original, _function_name))
        _state["mitogen_wrapped"] = True
    return True


def _class_name(obj: Any) -> str | None:
    return None if obj is None else f"{type(obj).__module__}.{type(obj).__qualname__}"


def _from_module(obj: Any, module: str) -> bool:
    return obj is not None and any(c.__module__ == module for c in type(obj).__mro__)


def _host_name(executor: Any) -> str | None:
    try:
        return str(executor._host.get_name())
    except Exception:
        return None


def _task_uuid(executor: Any) -> str | None:
    try:
        return str(executor._task._uuid)
    except Exception:
        return None


def _describe(executor: Any, before: Counter[str], probe: bool) -> dict[str, Any]:
    connection = getattr(executor, "_connection", None)
    handler = getattr(executor, "_handler", None)
    try:
        mitogen_connection = getattr(connection, "is_mitogen_connection", None)
    except Exception as e:  # the property itself failed: say so in the record
        mitogen_connection = f"error: {e!r}"
    delta = _calls - before
    return {
        "host": executor._host.get_name(),
        "uuid": executor._task._uuid,
        "run": _state["run"],
        "window": _state["window"],
        "pid": os.getpid(),
        "connection": getattr(connection, "_load_name", None),
        "connection_class": _class_name(connection),
        "mitogen_connection": mitogen_connection,
        "ansible_mitogen_connection": _from_module(connection, "ansible_mitogen.connection"),
        "action_class": _class_name(handler),
        "mitogen_action": _from_module(handler, "ansible_mitogen.mixins"),
        "stock_calls": {k[6:]: n for k, n in sorted(delta.items()) if k.startswith("stock:")},
        "mitogen_calls": {k[8:]: n for k, n in sorted(delta.items()) if k.startswith("mitogen:")},
        "probe": probe and _state["mitogen_wrapped"],
    }


def _write(line: dict[str, Any]) -> None:
    path = os.environ.get(PATH_VARIABLE)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line, sort_keys=True, default=repr) + "\n").encode())
    finally:
        os.close(fd)


def _wrap_executor() -> None:
    run, execute = TaskExecutor.run, TaskExecutor._execute
    if getattr(execute, "__transport_probe__", False):
        return

    @functools.wraps(run)
    def probed_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        _state.update(run=f"{os.getpid()}-{time.monotonic_ns()}", window=0)
        return run(self, *args, **kwargs)

    @functools.wraps(execute)
    def probed_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        _state["window_probe"] = _wrap_mitogen()
        before = Counter(_calls)
        try:
            return execute(self, *args, **kwargs)
        finally:
            try:
                line = _describe(self, before, _state["window_probe"])
            except Exception as e:  # never break the task: the harness reports the line
                line = {"run": _state["run"], "window": _state["window"], "error": repr(e)}
                line.update(host=_host_name(self), uuid=_task_uuid(self))
            _write(line)
            _state["window"] += 1

    probed_execute.__transport_probe__ = True  # type: ignore[attr-defined]
    TaskExecutor.run = probed_run  # type: ignore[method-assign]
    TaskExecutor._execute = probed_execute  # type: ignore[method-assign]


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "transport_probe"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _wrap_stock()
        _wrap_executor()
        _wrap_mitogen()
