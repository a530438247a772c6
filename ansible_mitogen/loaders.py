"""Reversible hooks on ansible-core's plugin loader instances.

Two methods are wrapped, on the existing loader objects only (linear.py, free.py and
task_executor.py import the loaders by name, so module globals must stay as they are):

- `connection_loader.get_with_context`: when called for a task (from
  `TaskExecutor._get_connection`, or from `StrategyBase._execute_meta` through `get()` for
  `meta: reset_connection`; the series' compat.SeriesFacts.task_callers), a connection name
  found in the redirect map is loaded as the mapped plugin instead. Every other caller, and
  every `class_only=True` call, gets the original behaviour.
- `action_loader.get_with_context`: when an action plugin is built for a connection whose
  class says `is_mitogen_connection = True` and an action mixin is configured, the instance
  becomes an instance of a subclass with the mixin in front of the real action class.

`install()` wraps once and (re)configures; `deactivate()` makes the wrappers pass every call
through untouched; `uninstall()` puts back exactly what was there before.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

from ansible.errors import AnsibleError
from ansible.plugins import loader as plugin_loader
from ansible.utils.display import Display

from ansible_mitogen import compat

SSH_NAMES: tuple[str, ...] = ("ssh", "ansible.builtin.ssh", "ansible.legacy.ssh")
LOCAL_NAMES: tuple[str, ...] = ("local", "ansible.builtin.local", "ansible.legacy.local")
#: Our container connection plugins and every name (bare and FQCN) of the stock plugin
#: each replaces.
CONTAINER_NAMES: dict[str, tuple[str, ...]] = {
    "mitogen_docker": ("docker", "community.docker.docker"),
    "mitogen_docker_api": ("docker_api", "community.docker.docker_api"),
    "mitogen_nsenter": ("nsenter", "community.docker.nsenter"),
    "mitogen_podman": ("podman", "containers.podman.podman"),
    "mitogen_buildah": ("buildah", "containers.podman.buildah"),
    "mitogen_lxc": ("lxc", "community.general.lxc"),
    "mitogen_lxd": ("lxd", "community.general.lxd"),
    "mitogen_incus": ("incus", "community.general.incus"),
    "mitogen_jail": ("jail", "community.general.jail"),
    "mitogen_chroot": ("chroot", "community.general.chroot"),
    "mitogen_kubectl": ("kubectl", "kubernetes.core.kubectl"),
}

#: Loader attribute names and the method wrapped on each.
_HOOKED: tuple[tuple[str, str], ...] = (
    ("connection_loader", "get_with_context"),
    ("action_loader", "get_with_context"),
)

_MISSING = object()
display = Display()


class HookError(AnsibleError):
    """Bad hook configuration (unknown plugin, wrong type)."""


def redirect_map(ssh: str, local: str) -> dict[str, str]:
    """A connection redirect map sending ssh and local, under every name they answer to,
    to the connection plugins named `ssh` and `local`."""
    return {**dict.fromkeys(SSH_NAMES, ssh), **dict.fromkeys(LOCAL_NAMES, local)}


def container_redirect_map() -> dict[str, str]:
    """Every name of the stock container connections -> our plugin (CONTAINER_NAMES)."""
    return {name: ours for ours, names in CONTAINER_NAMES.items() for name in names}


def mitogen_redirects() -> dict[str, str]:
    """The redirects of the Mitogen strategies: every name of ssh, local and the stock
    container connections -> our plugin for it (mitogen_ssh, mitogen_local, ...)."""
    return {**redirect_map("mitogen_ssh", "mitogen_local"), **container_redirect_map()}


@dataclass
class _Config:
    connection_redirects: dict[str, str]
    action_mixin: type | None


@dataclass
class _Installed:
    """What install() replaced: (loader, method name) -> the instance attribute that was
    there before (or _MISSING), plus the wrappers put in its place."""

    saved: dict[tuple[str, str], object] = field(default_factory=dict)
    wrappers: dict[tuple[str, str], Callable[..., Any]] = field(default_factory=dict)


_installed: _Installed | None = None
_config: _Config | None = None
_mixed_classes: dict[tuple[type, type], type] = {}
_task_callers: frozenset[CodeType] = frozenset()
_passthrough_callers: frozenset[CodeType] = frozenset()


def redirect_for(name: str) -> str | None:
    """The connection plugin a task asking for connection `name` is given instead while the
    hooks are active, or None (it gets `name` itself, or the hooks are off)."""
    return _config.connection_redirects.get(name) if _config is not None else None


def installed() -> bool:
    """True while the wrappers are in place (active or not)."""
    return _installed is not None


def active() -> bool:
    """True while the wrappers are in place and configured."""
    return _installed is not None and _config is not None


def install(
    connection_redirects: Mapping[str, str] | None = None,
    action_mixin: type | None = None,
) -> None:
    """Wrap the loader methods (once per process) and set what the wrappers do.

    `connection_redirects` maps connection names (as a task asks for them) to the names
    of the connection plugins to load instead; every target must be loadable.
    `action_mixin`, if given, is put in front of the action class of every task whose
    connection has `is_mitogen_connection = True`. Calling again just replaces the
    configuration.
    """
    global _installed, _config
    config = _Config(_check_redirects(connection_redirects or {}), _check_mixin(action_mixin))
    if _installed is None:
        _remember_callers()
        _installed = _wrap_loaders()
    _config = config


def deactivate() -> None:
    """Leave the wrappers in place but make them pass every call through."""
    global _config
    _config = None


def uninstall() -> None:
    """Restore the loader attributes install() replaced; a no-op if not installed.

    If something else wrapped a loader method after us, our wrapper stays underneath it,
    passing every call through for good, rather than removing theirs.
    """
    global _installed, _config
    if _installed is None:
        return
    for (loader_name, method), previous in _installed.saved.items():
        loader = getattr(plugin_loader, loader_name)
        if loader.__dict__.get(method) is not _installed.wrappers[(loader_name, method)]:
            continue
        if previous is _MISSING:
            del loader.__dict__[method]
        else:
            setattr(loader, method, previous)
    _installed = None
    _config = None
    _mixed_classes.clear()


def _check_redirects(redirects: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(redirects, Mapping):
        raise HookError(f"connection redirects must be a mapping, not {type(redirects).__name__}")
    checked: dict[str, str] = {}
    for name, target in redirects.items():
        if not (isinstance(name, str) and isinstance(target, str) and name and target):
            raise HookError(f"connection redirect {name!r} -> {target!r}: use non-empty names")
        if not plugin_loader.connection_loader.has_plugin(target):
            raise HookError(
                f"connection plugin {target!r} (to be used instead of {name!r}) was not found "
                f"in {plugin_loader.connection_loader.print_paths()}"
            )
        checked[name] = target
    return checked


def _check_mixin(mixin: type | None) -> type | None:
    if mixin is not None and not isinstance(mixin, type):
        raise HookError(f"the action mixin must be a class, not {type(mixin).__name__}")
    return mixin


def _remember_callers() -> None:
    """Code objects identifying task contexts, and the loader frames between them and us
    (compat.SeriesFacts.task_callers and passthrough_callers)."""
    global _task_callers, _passthrough_callers
    facts = compat.facts()
    _task_callers = frozenset(map(compat.code_of, facts.task_callers))
    _passthrough_callers = frozenset(map(compat.code_of, facts.passthrough_callers))


def _wrap_loaders() -> _Installed:
    state = _Installed()
    makers = {
        "connection_loader": _connection_wrapper,
        "action_loader": _action_wrapper,
    }
    for loader_name, method in _HOOKED:
        loader = getattr(plugin_loader, loader_name)
        state.saved[(loader_name, method)] = loader.__dict__.get(method, _MISSING)
        wrapper = makers[loader_name](getattr(loader, method), state)
        state.wrappers[(loader_name, method)] = wrapper
        setattr(loader, method, wrapper)
    return state


def _in_task_context(frame: FrameType | None) -> bool:
    """Is `frame` (the wrapper's caller) a task asking for its connection?"""
    while frame is not None and frame.f_code in _passthrough_callers:
        frame = frame.f_back
    return frame is not None and frame.f_code in _task_callers


def _current_config(state: _Installed) -> _Config | None:
    """The configuration a wrapper installed as `state` acts on: None once uninstalled,
    even if install() has since been called again (a wrapper left under someone else's)."""
    return _config if _installed is state else None


def _connection_wrapper(original: Callable[..., Any], state: _Installed) -> Callable[..., Any]:
    def get_with_context(name: str, *args: Any, **kwargs: Any) -> Any:
        config = _current_config(state)
        if config is None or kwargs.get("class_only"):
            return original(name, *args, **kwargs)
        target = config.connection_redirects.get(name) if isinstance(name, str) else None
        if not _in_task_context(sys._getframe(1)):
            return original(name, *args, **kwargs)
        if target is None:
            if name not in config.connection_redirects.values():
                display.vvv(f"connection {name!r} is not accelerated by Mitogen: it runs stock")
            return original(name, *args, **kwargs)
        obj, context = original(target, *args, **kwargs)
        if obj is not None and name not in obj.ansible_aliases:
            # TaskExecutor reuses a connection across loop items only if matches_name()
            # finds the name the task asked for among the plugin's aliases.
            obj.ansible_aliases = [*obj.ansible_aliases, name]
        return compat.load_result(obj, context)

    get_with_context.__wrapped__ = original  # type: ignore[attr-defined]
    return get_with_context


def _action_wrapper(original: Callable[..., Any], state: _Installed) -> Callable[..., Any]:
    def get_with_context(name: str, *args: Any, **kwargs: Any) -> Any:
        result = original(name, *args, **kwargs)
        config = _current_config(state)
        if config is None or config.action_mixin is None or kwargs.get("class_only"):
            return result
        obj, context = result
        connection = kwargs.get("connection")
        if obj is None or getattr(connection, "is_mitogen_connection", False) is not True:
            return result
        mixed: Any = object.__new__(mixed_action_class(config.action_mixin, type(obj)))
        mixed.__dict__.update(obj.__dict__)
        return compat.load_result(mixed, context)

    get_with_context.__wrapped__ = original  # type: ignore[attr-defined]
    return get_with_context


def mixed_action_class(mixin: type, cls: type) -> type:
    """The subclass of action class `cls` with `mixin` in front (one per pair, cached).

    It keeps `cls.__name__`: ansible-core derives a plugin's type from its class name
    (AnsiblePlugin.plugin_type: 'ActionModule' -> 'action') to look up its options.
    Instances are made by copying the state of an instance the loader built normally
    (`__init__` and the loader's name attributes), so the mixin's `__init__` never runs.
    """
    if issubclass(cls, mixin):
        return cls
    mixed = _mixed_classes.get((mixin, cls))
    if mixed is None:
        mixed = type(
            cls.__name__,
            (mixin, cls),
            {
                "__module__": cls.__module__,
                "__qualname__": "Mitogen" + cls.__qualname__,
                "__doc__": cls.__doc__,
            },
        )
        _mixed_classes[(mixin, cls)] = mixed
    return mixed
