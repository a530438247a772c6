"""ActionModuleMixin: put in front of every action plugin class whose task
runs over a Mitogen connection (see loaders.py).

With Mitogen the task's context already is the become user, so commands run
as they are: no `sudo ... sh -c` wrapping, no BECOME-SUCCESS marker, and no
setfacl/chmod dance to share files between the login and become users.

New-style Python modules: stock `_execute_module` builds the AnsiballZ
payload and pipes it to python; the mixin recognises that payload, reads
its arguments back (ansiballz.py) and has the target run the module in a
fork of its warm interpreter with a cached copy of the module_utils zip
(module_runner.py), so Ansible's own argument handling, async, environment
and result parsing stay untouched.
"""

from __future__ import annotations

from typing import Any

from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_mitogen import ansiballz, compat


class ActionModuleMixin:
    """Overrides of ActionBase for Mitogen connections."""

    _connection: Any
    _loader: Any
    _play_context: Any

    _mitogen_module: Any = None

    def _configure_module(self, *args: Any, **kwargs: Any) -> Any:
        """Remember the module just built, to recognise its payload."""
        result = ActionBase._configure_module(self, *args, **kwargs)  # type: ignore[arg-type]
        self._mitogen_module = result[0]
        return result

    def _pipelined_module(self, in_data: bytes | None) -> Any:
        """The built module if `in_data` is its new-style Python payload."""
        built = self._mitogen_module
        if built is None or in_data is None or in_data is not built.b_module_data:
            return None
        if built.module_style != 'new' or not (built.shebang or '').startswith('#!'):
            return None
        return built

    def _low_level_execute_command(self, cmd: str, sudoable: bool = True,
                                   in_data: bytes | None = None,
                                   executable: str | None = None,
                                   encoding_errors: str = 'surrogate_then_replace',
                                   chdir: str | None = None,
                                   **kwargs: Any) -> dict[str, Any]:
        if executable is None:
            executable = self._play_context.executable
        if self._connection.transport == 'local' and chdir is None:
            chdir = self._loader.get_basedir()
        built = self._pipelined_module(in_data)
        payload = None if built is None else ansiballz.parse(in_data)  # type: ignore[arg-type]
        if payload is not None:
            environment: dict[str, str] = {}
            if not compat.module_applies_environment(built):
                self._compute_environment_string(environment)  # type: ignore[attr-defined]
            interpreter = built.shebang[2:].strip().split()[0]
            rc, stdout, stderr = self._connection.run_module(
                payload, environment, chdir, interpreter)
        else:
            rc, stdout, stderr = self._connection.exec_command(
                cmd, in_data=in_data, sudoable=sudoable, executable=executable or None,
                chdir=chdir)
        process_result = kwargs.get('process_result')
        if process_result is not None:
            rc, stdout, stderr = process_result(rc, stdout, stderr)
        out = to_text(stdout, errors=encoding_errors)
        err = to_text(stderr, errors=encoding_errors)
        return {'rc': 0 if rc is None else rc, 'stdout': out,
                'stdout_lines': out.splitlines(), 'stderr': err,
                'stderr_lines': err.splitlines()}

    def _remote_expand_user(self, path: str, sudoable: bool = True,
                            pathsep: str | None = None) -> str:
        """Expand `~` for the user the task's context runs as: with become,
        that is the become user even where ansible-core would expand for
        the login user (it would then run the command as the login user;
        we run it as the become user, who must not create files in the
        login user's home)."""
        return ActionBase._remote_expand_user(self, path, sudoable=True,  # type: ignore[arg-type]
                                              pathsep=pathsep)

    def _fixup_perms2(self, remote_paths: list[str], remote_user: str | None = None,
                      execute: bool = True) -> list[str]:
        if execute:
            self._remote_chmod(remote_paths, mode='u+x')  # type: ignore[attr-defined]
        return remote_paths
