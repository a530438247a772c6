"""`mitogen_via`: reaching a host through the contexts of other inventory hosts.

A host whose variables say `mitogen_via: bastion` is reached through bastion's own chain
of contexts: the hops bastion's tasks use (its connection type and that plugin's options,
its become settings, all read from bastion's host variables), then the host's own hops,
started from bastion's last context. `mitogen_via: a,b` (or a YAML list) spells the path
out: the first host is reached as its own tasks would be (through its own `mitogen_via`,
if it has one), every later one from the one before it, and the target from the last.

`route()` resolves a connection's task variables into a Route: the via hosts in order
with their hops, which Connection.get_stack() puts in front of its own. A via host must
be in the inventory, must use a connection Mitogen serves (one the strategy redirects, or
one of our plugins: without a Mitogen strategy, only ours) and a become method Mitogen
runs; a host may appear in a path once. Anything else is an AnsibleError naming the
hosts. Play and task variables and keywords (`become:`, `remote_user:`) belong to the
target's task: they never apply to a via host.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ansible import constants as C
from ansible import context
from ansible.errors import AnsibleError, AnsibleValueOmittedError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import become_loader, connection_loader

from ansible_mitogen import compat, loaders

#: The host variable naming the hosts a host is reached through.
VIA_VARIABLE = "mitogen_via"


class ViaError(AnsibleError):
    """A `mitogen_via` setting that cannot be followed (unknown host, loop, a via host
    Mitogen cannot run a chain through)."""


@runtime_checkable
class StackSource(Protocol):
    """What a connection plugin must offer to be a via host's connection (every
    ansible_mitogen.connection.Connection does), besides ansible-core's plugin API."""

    _load_name: str
    become: Any

    @property
    def is_mitogen_connection(self) -> bool: ...

    def set_options(self, task_keys: Any = None, var_options: Any = None) -> None: ...

    def set_become_plugin(self, plugin: Any) -> None: ...

    def set_task_vars(self, variables: Mapping[str, Any]) -> None: ...

    def own_stack(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ViaHost:
    """One via host's part of a route: its inventory name and its own hops."""

    host: str
    hops: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Route:
    """The via hosts a connection goes through, outermost first."""

    parts: tuple[ViaHost, ...] = ()

    @property
    def hops(self) -> list[dict[str, Any]]:
        """Every via host's hops, in order: the prefix of the target's stack."""
        return [hop for part in self.parts for hop in part.hops]

    @property
    def hosts(self) -> list[str]:
        return [part.host for part in self.parts]

    def host_of(self, index: int) -> str | None:
        """The via host whose hop is hop `index` of the full stack, None for the
        target's own hops."""
        for part in self.parts:
            if index < len(part.hops):
                return part.host
            index -= len(part.hops)
        return None


def connection_host(task_vars: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """The host a task's connection reaches, and its variables: the delegated host when
    the task uses `delegate_to:` (TaskExecutor puts its variables in
    `ansible_delegated_vars`), else the task's own host."""
    delegated = task_vars.get("ansible_delegated_vars") or {}
    if len(delegated) == 1:
        ((name, variables),) = delegated.items()
        return str(name), variables
    return str(task_vars.get("inventory_hostname", "?")), task_vars


def via_names(value: Any, host: str) -> list[str]:
    """The host names of a `mitogen_via` value: 'a,b', a list, or empty/None (none)."""
    if value is None:
        return []
    if isinstance(value, str):
        items: Sequence[Any] = value.split(",")
    elif isinstance(value, Sequence):
        items = value
    else:
        raise ViaError(
            "host %s: %s must be a host name, a comma-separated list of them or a list, "
            "not %r" % (host, VIA_VARIABLE, value)
        )
    names = [str(item).strip() for item in items]
    return [name for name in names if name]


def route(task_vars: Mapping[str, Any]) -> Route:
    """The via hosts (with their hops) of the connection whose task variables these are;
    an empty Route when it has no `mitogen_via`."""
    host, variables = connection_host(task_vars)
    value = variables.get(VIA_VARIABLE)
    if value is None:
        return Route()
    try:
        names = via_names(compat.template(value, variables), host)
    except AnsibleValueOmittedError:
        return Route()
    if not names:
        return Route()
    hostvars = task_vars.get("hostvars")
    if hostvars is None:
        raise ViaError("host %s: %s needs the inventory's hostvars" % (host, VIA_VARIABLE))
    path = _via_path(hostvars, names, [host])
    return Route(tuple(ViaHost(name, tuple(host_stack(name, hostvars[name]))) for name in path))


def _via_path(hostvars: Mapping[str, Any], names: list[str], trail: list[str]) -> list[str]:
    """The via hosts of `names` in the order they are reached: the first one's own via
    hosts, then each name. `trail` is the hosts being reached through them, innermost
    last (for loop messages)."""
    path: list[str] = []
    for index, name in enumerate(names):
        if name in trail or name in path:
            chain = trail + path + [name] if name in path else trail[trail.index(name) :] + [name]
            raise ViaError(
                "%s loop: %s (each is reached through the next)"
                % (VIA_VARIABLE, " -> ".join(chain))
            )
        if name not in hostvars:
            raise ViaError(
                "host %s: %s names %r, which is not in the inventory"
                % (trail[-1], VIA_VARIABLE, name)
            )
        if index == 0:
            own = via_names(_read_var(hostvars[name], VIA_VARIABLE, name), name)
            path += _via_path(hostvars, own, trail + [name])
        path.append(name)
    return path


def _read_var(variables: Mapping[str, Any], name: str, host: str) -> Any:
    """Variable `name` of via host `host` (templated on access by hostvars), None if
    unset or omitted."""
    try:
        return variables.get(name)
    except AnsibleValueOmittedError:
        return None
    except AnsibleError as e:
        raise ViaError("%s host %s: cannot read %s: %s" % (VIA_VARIABLE, host, name, e)) from e


def _option_vars(
    plugin_type: str, plugin_name: str, variables: Mapping[str, Any], host: str
) -> dict[str, Any]:
    """The variables of via host `host` that set options of a plugin, as
    TaskExecutor gathers them for a task's own connection and become plugins."""
    options: dict[str, Any] = {}
    for name in C.config.get_plugin_vars(plugin_type, plugin_name):
        if name in variables:
            value = _read_var(variables, name, host)
            if value is not None:
                options[name] = value
    return options


def _become_plugin(host: str, variables: Mapping[str, Any]) -> Any:
    """The become plugin for via host `host`'s variables, None without `ansible_become`."""
    become = _read_var(variables, "ansible_become", host)
    if become is None or not boolean(become, strict=False):
        return None
    method = str(_read_var(variables, "ansible_become_method", host) or C.DEFAULT_BECOME_METHOD)
    plugin = become_loader.get(method)
    if plugin is None:
        raise ViaError("%s host %s: no become plugin %r" % (VIA_VARIABLE, host, method))
    plugin.set_options(var_options=_option_vars("become", plugin._load_name, variables, host))
    return plugin


def host_stack(host: str, variables: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Via host `host`'s own hops (its connection, then its become method), built by the
    connection plugin its own tasks get, from its variables."""
    try:
        return _host_stack(host, variables)
    except ViaError:
        raise
    except AnsibleError as e:
        raise ViaError("%s host %s: %s" % (VIA_VARIABLE, host, e)) from e


def _host_stack(host: str, variables: Mapping[str, Any]) -> list[dict[str, Any]]:
    name = str(
        _read_var(variables, "ansible_connection", host)
        or context.CLIARGS.get("connection")
        or C.DEFAULT_TRANSPORT
    )
    plugin_name = loaders.redirect_for(name) or name
    connection: Any = connection_loader.get(plugin_name, PlayContext(), os.devnull)
    if connection is None:
        raise ViaError("%s host %s: no connection plugin %r" % (VIA_VARIABLE, host, name))
    if not isinstance(connection, StackSource):
        ours = loaders.mitogen_redirects().get(name)
        raise ViaError(
            "%s host %s uses connection %r, which Mitogen does not run%s, so no host can be "
            "reached through it%s"
            % (
                VIA_VARIABLE,
                host,
                name,
                " without a Mitogen strategy" if ours else "",
                ": give it Mitogen's plugin, ansible_connection: %s" % ours if ours else "",
            )
        )
    connection.set_options(
        var_options=_option_vars("connection", connection._load_name, variables, host)
    )
    connection.set_become_plugin(_become_plugin(host, variables))
    connection.set_task_vars(variables)
    if not connection.is_mitogen_connection:
        raise ViaError(
            "%s host %s uses become method %r, which Mitogen does not run, so no host can be "
            "reached through it" % (VIA_VARIABLE, host, connection.become.name)
        )
    return connection.own_stack()
