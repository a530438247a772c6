"""The one place that knows which ansible-core is running and how its APIs differ.

Every ansible-core version branch in ansible_mitogen lives here; other modules call the
helpers below instead of testing versions themselves. Controller-side only.
"""

from __future__ import annotations

import re
from typing import Any

import ansible.release
from ansible._internal._templating._engine import TemplateEngine, TemplateOptions
from ansible.errors import AnsibleError
from ansible.plugins.loader import PluginLoadContext, get_with_context_result

#: The ansible-core release series (major, minor) this version of ansible_mitogen supports.
SUPPORTED_SERIES: tuple[tuple[int, int], ...] = ((2, 19), (2, 20), (2, 21))

#: The running ansible-core version string, e.g. '2.21.5' (tests may replace it).
ANSIBLE_VERSION: str = ansible.release.__version__

_SERIES = re.compile(r"^(\d+)\.(\d+)(?:\.|$)")


class UnsupportedAnsibleVersion(AnsibleError):
    """The running ansible-core is not one ansible_mitogen supports."""


def series(version: str | None = None) -> tuple[int, int] | None:
    """(major, minor) of `version` (default: the running ansible-core); None if unparsable."""
    match = _SERIES.match(ANSIBLE_VERSION if version is None else version)
    return (int(match[1]), int(match[2])) if match else None


def supported_names() -> str:
    """'2.19, 2.20, 2.21'"""
    return ", ".join("%d.%d" % s for s in SUPPORTED_SERIES)


def check_supported() -> None:
    """Raise UnsupportedAnsibleVersion unless the running ansible-core is supported."""
    if series() in SUPPORTED_SERIES:
        return
    raise UnsupportedAnsibleVersion(
        f"Mitogen for Ansible does not support ansible-core {ANSIBLE_VERSION} "
        f"(running from {ansible.release.__file__.rsplit('/', 1)[0]}); "
        f"supported ansible-core releases: {supported_names()}. "
        "Install a supported ansible-core, or select a builtin strategy such as 'linear'."
    )


def load_result(obj: Any, context: PluginLoadContext) -> tuple[Any, PluginLoadContext]:
    """What PluginLoader.get_with_context() returns: a (object, plugin_load_context) pair that
    callers unpack (TaskExecutor._get_connection) or read by attribute (PluginLoader.get)."""
    return get_with_context_result(obj, context)


def module_applies_environment(built_module: object) -> bool:
    """True if an AnsiballZ module applies the task's `environment:` itself
    (2.21's `_BuiltModule.has_environment`); in 2.19 and 2.20 the action
    always passes it on the module's command line instead."""
    return bool(getattr(built_module, "has_environment", False))


def template_config_value(value: Any, variables: dict[str, Any], value_for_omit: Any) -> Any:
    """`value` templated with `variables` as module_common templates an interpreter
    setting: a template that resolves to `omit` gives `value_for_omit` (2.19+ engine;
    the public Templar has no omit option)."""
    return TemplateEngine(variables=variables).template(
        value, options=TemplateOptions(value_for_omit=value_for_omit)
    )
