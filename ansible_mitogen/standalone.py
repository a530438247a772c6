"""Connection plugins that accelerate on their own, with ansible-core's builtin strategies.

`mitogen_ssh` and `mitogen_local` (plugin path) and `mitogen_ng.mitogen.ssh` and
`mitogen_ng.mitogen.local` (the collection) are the classes of this module; the container
connections (`mitogen_docker`, `mitogen_podman`, ...) carry StandaloneMixin through
container_connections.ContainerConnection. The same classes serve both modes.

- With a Mitogen strategy (mitogen_linear...), it has started the mux and put the action
  mixin in place before the worker forked: nothing here changes anything.
- With a builtin strategy (`strategy = linear` or `free`, `connection = mitogen_ssh`),
  the connection does both itself, in the worker that runs the task:

  * the action mixin: ansible-core builds a task's connection before its action, passing
    the connection to `action_loader.get()`; the connection's constructor turns on
    loaders.py's action hook alone (no connection redirects), so the task's action gets
    ActionModuleMixin in front, exactly as with the strategy. One engine serves both
    modes: the pipelined AnsiballZ payload runs in the warm target (module_runner.py),
    become is the chain's last context (no `sudo ... sh -c` wrapping, no permission
    fix-ups), and `~` and the task's temporary directory are single calls.
  * the mux: found, or started on demand, for this ansible-playbook run (ondemand.py)
    before the first call that needs it.

No strategy plugin is involved, so ansible-core prints no third-party strategy
deprecation warning.
"""

from __future__ import annotations

import os
from typing import Any

from ansible.utils.display import Display

import ansible_mitogen.ondemand
import ansible_mitogen.process
from ansible_mitogen import compat, connection, loaders, strategy
from ansible_mitogen.mixins import ActionModuleMixin

display = Display()


def enable_action_mixin() -> None:
    """Put ActionModuleMixin in front of the actions of tasks on our connections, unless
    a Mitogen strategy has already configured the hooks."""
    if not loaders.active():
        compat.check_supported()
        loaders.install({}, ActionModuleMixin)


#: The process that found its on-demand mux (forked children look for theirs again).
_found_in: dict[str, int] = {}


def ensure_mux() -> None:
    """Point this process at its run's mux (ENV_PATH): the strategy's if a Mitogen
    strategy runs this play, else the run's on-demand mux, started now if needed."""
    if os.environ.get(ansible_mitogen.process.ENV_PATH) and (
        loaders.active() or _found_in.get("pid") == os.getpid()
    ):
        return
    path, started = ansible_mitogen.ondemand.find_or_start(strategy.mux_settings())
    if started is not None:
        display.vvv("MITOGEN MUX STARTED (pid %d, socket %s)" % (started, path))
    os.environ[ansible_mitogen.process.ENV_PATH] = path
    _found_in["pid"] = os.getpid()


class StandaloneMixin:
    """Put in front of connection.Connection subclasses (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if ansible_mitogen.ondemand.in_worker():
            enable_action_mixin()

    def prepare(self) -> None:
        if self.is_mitogen_connection:  # type: ignore[attr-defined]
            ensure_mux()
        super().prepare()  # type: ignore[misc]

    def _connect(self) -> Any:
        if self.is_mitogen_connection:  # type: ignore[attr-defined]
            ensure_mux()
        return super()._connect()  # type: ignore[misc]

    def reset(self) -> None:
        ensure_mux()
        super().reset()  # type: ignore[misc]


class SshConnection(StandaloneMixin, connection.SshConnection):
    """ssh through persistent Mitogen contexts, with or without a Mitogen strategy."""


class LocalConnection(StandaloneMixin, connection.LocalConnection):
    """A persistent local Mitogen context, with or without a Mitogen strategy."""
