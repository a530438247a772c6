"""The one place that knows which ansible-core is running and how its APIs differ.

Every ansible-core version branch in ansible_mitogen lives here; other modules call the
helpers below instead of testing versions themselves. What we depend on in each supported
release series is one `SeriesFacts` row of `TABLE`, and `facts()` is the row of the running
series: the AnsiballZ wrapper call that ansiballz.py reads back, the ansible-core functions
whose connection loads loaders.py recognises as tasks, and the private ActionBase methods
mixins.py overrides. Controller-side only; the target-side launcher (module_runner.py) cannot
import this, so tests/ansible/test_series.py ties it to the series instead.

Supporting a new ansible-core series: add its row to `TABLE` (copy the last one with
`dataclasses.replace()` and change what differs) and its (major, minor) to
`SUPPORTED_SERIES`; install it (scripts/setup-ansible.sh) and add its venv to
tests/ansible/test_series.py's `SERIES_VENVS`. That test then says what broke: the AnsiballZ
payload's shape and `_loader.run_module()`'s arguments against the row and against
module_runner.LAUNCHER, and (run it with the new venv's Python, as scripts/test.sh does) the
ActionBase methods mixins.py overrides and the callers loaders.py recognises. A difference
that needs code, not data, gets a helper below that reads a new field.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Mapping
from types import CodeType
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


@dataclasses.dataclass(frozen=True)
class SeriesFacts:
    """What ansible_mitogen relies on in one ansible-core release series."""

    #: (major, minor), e.g. (2, 21).
    series: tuple[int, int]
    #: The text that begins the call ending a new-style Python module's AnsiballZ payload;
    #: one `name=<repr>,` line per argument follows it, then a line `)`.
    ansiballz_call: bytes
    #: The names of that call's arguments (module_common's `_ansiballz_main()`).
    ansiballz_arguments: frozenset[str]
    #: Functions ('module:Qualified.name') whose connection_loader calls are a task asking
    #: for its connection: TaskExecutor's, and meta: reset_connection's.
    task_callers: tuple[str, ...]
    #: Loader functions between such a caller and connection_loader.get_with_context().
    passthrough_callers: tuple[str, ...]
    #: The private ActionBase methods ActionModuleMixin replaces (mixins.py).
    action_overrides: frozenset[str]


_2_19 = SeriesFacts(
    series=(2, 19),
    ansiballz_call=b'\nif __name__ == "__main__":\n    _ansiballz_main(\n',
    ansiballz_arguments=frozenset(
        (
            "zip_data",
            "ansible_module",
            "module_fqn",
            "params",
            "profile",
            "date_time",
            "extensions",
            "rlimit_nofile",
        )
    ),
    task_callers=(
        "ansible.executor.task_executor:TaskExecutor._get_connection",
        "ansible.plugins.strategy:StrategyBase._execute_meta",
    ),
    passthrough_callers=("ansible.plugins.loader:PluginLoader.get",),
    action_overrides=frozenset(
        (
            "_configure_module",
            "_low_level_execute_command",
            "_remote_expand_user",
            "_make_tmp_path",
            "_remove_tmp_path",
            "_fixup_perms2",
        )
    ),
)

#: The facts of every supported series. 2.21 added `process_result` to
#: `_low_level_execute_command()` (the mixin passes it on) and `has_environment`
#: to built modules (module_applies_environment()); nothing in this table changed.
TABLE: dict[tuple[int, int], SeriesFacts] = {
    facts.series: facts
    for facts in (
        _2_19,
        dataclasses.replace(_2_19, series=(2, 20)),
        dataclasses.replace(_2_19, series=(2, 21)),
    )
}


class UnsupportedAnsibleVersion(AnsibleError):
    """The running ansible-core is not one ansible_mitogen supports."""


def series(version: str | None = None) -> tuple[int, int] | None:
    """(major, minor) of `version` (default: the running ansible-core); None if unparsable."""
    match = _SERIES.match(ANSIBLE_VERSION if version is None else version)
    return (int(match[1]), int(match[2])) if match else None


def supported_names() -> str:
    """'2.19, 2.20, 2.21'"""
    return ", ".join("%d.%d" % s for s in SUPPORTED_SERIES)


def _unsupported() -> UnsupportedAnsibleVersion:
    return UnsupportedAnsibleVersion(
        f"Mitogen for Ansible does not support ansible-core {ANSIBLE_VERSION} "
        f"(running from {ansible.release.__file__.rsplit('/', 1)[0]}); "
        f"supported ansible-core releases: {supported_names()}. "
        "Install a supported ansible-core, or select a builtin strategy such as 'linear'."
    )


def check_supported() -> None:
    """Raise UnsupportedAnsibleVersion unless the running ansible-core is supported."""
    if series() not in SUPPORTED_SERIES:
        raise _unsupported()


def facts() -> SeriesFacts:
    """The facts of the running series; UnsupportedAnsibleVersion if it has none."""
    current = series()
    found = TABLE.get(current) if current is not None else None
    if found is None:
        raise _unsupported()
    return found


def code_of(name: str) -> CodeType:
    """The code object of ansible-core function `name` ('module:Qualified.name', as in
    SeriesFacts); UnsupportedAnsibleVersion names it if the running ansible-core has none."""
    module_name, _, qualname = name.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj.__code__
    except (ImportError, AttributeError) as e:
        raise UnsupportedAnsibleVersion(
            f"ansible-core {ANSIBLE_VERSION} has no function {name} ({e}); "
            f"Mitogen for Ansible supports ansible-core {supported_names()}"
        ) from None


def load_result(obj: Any, context: PluginLoadContext) -> tuple[Any, PluginLoadContext]:
    """What PluginLoader.get_with_context() returns: a (object, plugin_load_context) pair that
    callers unpack (TaskExecutor._get_connection) or read by attribute (PluginLoader.get)."""
    return get_with_context_result(obj, context)


def module_applies_environment(built_module: object) -> bool:
    """True if an AnsiballZ module applies the task's `environment:` itself
    (2.21's `_BuiltModule.has_environment`); in 2.19 and 2.20 the action
    always passes it on the module's command line instead."""
    return bool(getattr(built_module, "has_environment", False))


def template_config_value(value: Any, variables: Mapping[str, Any], value_for_omit: Any) -> Any:
    """`value` templated with `variables` as module_common templates an interpreter
    setting: a template that resolves to `omit` gives `value_for_omit` (2.19+ engine;
    the public Templar has no omit option)."""
    return TemplateEngine(variables=variables).template(
        value, options=TemplateOptions(value_for_omit=value_for_omit)
    )


def template(value: Any, variables: Mapping[str, Any]) -> Any:
    """`value` templated with `variables` as a task's own variables are (2.19+ engine)."""
    return TemplateEngine(variables=variables).template(value)
