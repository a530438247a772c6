"""StrategyMixin: the one piece of Mitogen in the strategy plugins.

ansible-core makes a new strategy instance per play and per `serial` batch and calls its
`cleanup()` after each, so nothing here is per instance: `run()` checks the ansible-core
version, installs the loader hooks once per process (they are removed at interpreter exit)
and turns them on for the duration of the builtin strategy's own `run()`. Plays that use a
builtin strategy in the same run see ansible-core's loaders untouched.

`mux_settings()` reads the mux's settings (ansible.cfg's `[mitogen]` section, or their
MITOGEN_* environment variables) the way ansible-core reads its own, and they reach the
mux in its environment when the first play starts it. So does MITOGEN_LOG_LEVEL
(the user's, or `debug` at -vvvv: see logs.py); every line the mux writes reaches
Ansible's display.
"""

from __future__ import annotations

import atexit
import os.path
from collections.abc import Mapping
from typing import Any, ClassVar

from ansible import constants as C
from ansible.errors import AnsibleOptionsError
from ansible.plugins.loader import connection_loader
from ansible.utils.display import Display

import ansible_mitogen
import ansible_mitogen.connection
import ansible_mitogen.logs
import ansible_mitogen.ondemand
import ansible_mitogen.process
import ansible_mitogen.services
from ansible_mitogen import compat, loaders
from ansible_mitogen.mixins import ActionModuleMixin

#: Where mitogen_ssh, mitogen_local and the container connections live.
CONNECTION_PLUGINS = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "plugins", "connection"
)

#: ansible.cfg `[mitogen]` key -> (services.Limits field, description).
MUX_SETTINGS = {
    "max_interpreters_per_host": (
        "per_host",
        "Interpreters kept on one target machine (all its users and become users); beyond "
        "it the machine's least recently used idle interpreter is shut down.",
    ),
    "max_interpreters": (
        "total",
        "Interpreters kept in all, a safety cap for the mux's own resources.",
    ),
}

#: Where the definitions of MUX_SETTINGS are registered with ansible-core's config manager
#: (strategy plugins have no options of their own, so nothing else reads them there).
SETTINGS_PLUGIN = ("strategy", "mitogen")

display = Display()
_exit_hook_registered = False


class StrategyMixin:
    """Put in front of a builtin StrategyModule: `class StrategyModule(StrategyMixin, linear)`.

    `run()` starts the process-wide mux (once), then turns the loader hooks on:
    `connection_redirects` (connection name -> plugin to load instead, see
    `loaders.redirect_map`; by default ssh and local go to mitogen_ssh and mitogen_local,
    the container connections to theirs, see `loaders.container_redirect_map`)
    and `action_mixin` (mixed into the action plugins of tasks whose connection is ours).
    Importing the connection code here lets every forked worker inherit it.
    """

    connection_redirects: ClassVar[Mapping[str, str]] = loaders.mitogen_redirects()
    action_mixin: ClassVar[type | None] = ActionModuleMixin

    def run(self, iterator: Any, play_context: Any, *args: Any, **kwargs: Any) -> Any:
        compat.check_supported()
        # First, so that the mux starts (0.1-0.3 s) while the plugins below load.
        start_mux()
        connection_loader.add_directory(CONNECTION_PLUGINS)
        for name in set(self.connection_redirects.values()):
            # Loaded here once, so forked workers inherit the module and its
            # parsed DOCUMENTATION instead of redoing both for every task.
            connection_loader.get(name, class_only=True)
        install_hooks(self.connection_redirects, self.action_mixin)
        try:
            return super().run(iterator, play_context, *args, **kwargs)  # type: ignore[misc]
        finally:
            loaders.deactivate()


def start_mux() -> None:
    """Start the mux unless running, with its settings (mux_settings()) and log level
    (logs.requested_level()), its lines relayed to the display."""
    running = ansible_mitogen.process.MuxProcess.pid()
    settings = mux_settings()
    try:
        level = ansible_mitogen.logs.requested_level(os.environ, display.verbosity)
    except ValueError as e:
        raise AnsibleOptionsError(f"Mitogen setting {e}") from None
    if level is not None:
        settings[ansible_mitogen.logs.LEVEL_VARIABLE] = level
    owner = ansible_mitogen.ondemand.current_owner()
    socket_path = ansible_mitogen.ondemand.paths(owner)[1]
    ansible_mitogen.process.MuxProcess.start(socket_path, settings, log_sink=display_mux_line)
    pid = ansible_mitogen.process.MuxProcess.pid()
    if pid != running:
        display.vvv(
            f"ansible_mitogen: mux started (pid {pid}; `kill -USR2 {pid}` logs every thread's "
            "stack of it and of its target interpreters)"
        )


def display_mux_line(line: str) -> None:
    """Show a line of the mux's log (logs.py) as Ansible shows its -vvvv lines (also in
    log_path)."""
    display.display(line, color=C.COLOR_VERBOSE, stderr=C.VERBOSE_TO_STDERR)


def install_hooks(connection_redirects: Mapping[str, str], action_mixin: type | None) -> None:
    """Install (or reconfigure) the loader hooks; the first call arranges their removal at
    interpreter exit."""
    global _exit_hook_registered
    loaders.install(connection_redirects, action_mixin)
    if not _exit_hook_registered:
        atexit.register(loaders.uninstall)
        _exit_hook_registered = True
        display.vvv(
            f"ansible_mitogen from {os.path.dirname(ansible_mitogen.__file__)}: loader hooks "
            f"installed on ansible-core {compat.ANSIBLE_VERSION}"
        )


def mux_settings() -> dict[str, str]:
    """The mux's environment variables for the MUX_SETTINGS the user set (in ansible.cfg or
    the environment; the mux has the same defaults)."""
    plugin_type, plugin_name = SETTINGS_PLUGIN
    defaults = ansible_mitogen.services.Limits()
    if not C.config.has_configuration_definition(plugin_type, plugin_name):
        C.config.initialize_plugin_configuration_definitions(
            plugin_type,
            plugin_name,
            {
                key: {
                    "description": [description],
                    "type": "integer",
                    "default": getattr(defaults, field),
                    "ini": [{"section": "mitogen", "key": key}],
                    "env": [{"name": ansible_mitogen.services.LIMIT_VARIABLES[field]}],
                }
                for key, (field, description) in MUX_SETTINGS.items()
            },
        )
    settings: dict[str, str] = {}
    for key, (field, _) in MUX_SETTINGS.items():
        value, origin = C.config.get_config_value_and_origin(
            key, plugin_type=plugin_type, plugin_name=plugin_name
        )
        if origin == "default":
            continue
        if int(value) < 1:
            raise AnsibleOptionsError(
                f"Mitogen setting [mitogen] {key} must be at least 1, not {value} (from {origin})"
            )
        settings[ansible_mitogen.services.LIMIT_VARIABLES[field]] = str(int(value))
    return settings
