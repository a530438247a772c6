"""ActionModuleMixin: put in front of every action plugin class whose task
runs over a Mitogen connection (see loaders.py).

With Mitogen the task's context already is the become user, so commands run
as they are: no `sudo ... sh -c` wrapping, no BECOME-SUCCESS marker, and no
setfacl/chmod dance to share files between the login and become users.
Home directory expansion and the task's temporary directory are single
calls into the target instead of shell commands.

New-style Python modules: stock `_execute_module` builds the AnsiballZ
payload and pipes it to python; the mixin recognises that payload, reads
its arguments back (ansiballz.py) and has the target run the module in a
fork of its warm interpreter with a cached copy of the module_utils zip
(module_runner.py), so Ansible's own argument handling, async, environment
and result parsing stay untouched. A module whose interpreter line is not
one absolute path runs through stock's command (module_interpreter()).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_mitogen import ansiballz, compat, target
from ansible_mitogen.connection import InterpreterMissing

_Method = TypeVar("_Method", bound=Callable[..., Any])


def serves(connection: Any) -> bool:
    """True if `connection` runs this task through Mitogen: an action may swap
    in a stock connection of its own (synchronize's local one)."""
    return getattr(connection, "is_mitogen_connection", False) is True


def mitogen_only(method: _Method) -> _Method:
    """Run the action class's own `method` (stock's) instead whenever the
    task's connection serves it as stock Ansible."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if serves(self._connection):
            return method(self, *args, **kwargs)
        return getattr(super(ActionModuleMixin, self), name)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def module_interpreter(shebang: str | None) -> str | None:
    """The interpreter of interpreter line `shebang` if the line is one
    absolute path, else None. Stock Ansible runs the line as one quoted word
    (the shell plugin's build_module_command()): a line with arguments, such
    as '#!/usr/bin/env python3' or '#!/usr/bin/python3 -E', fails there with
    "not found", and a bare name is looked up in PATH. Modules with such
    lines run through stock's own command."""
    if not shebang or not shebang.startswith("#!"):
        return None
    line = shebang[2:].strip()
    return line if line.startswith("/") and len(line.split()) == 1 else None


class ActionModuleMixin:
    """Overrides of ActionBase for Mitogen connections. The private ActionBase
    methods replaced here are compat.SeriesFacts.action_overrides, checked
    against each series' ActionBase by tests/ansible/test_series.py."""

    _connection: Any
    _loader: Any
    _play_context: Any

    _cleanup_remote_tmp: bool
    _mitogen_module: Any = None

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The action's own run(); run again as stock Ansible would run it
        when the task's context cannot start for want of Python (so that
        `raw` and `script` can install one). That is found at the first
        remote call, so nothing ran on the target before."""
        try:
            return super().run(*args, **kwargs)  # type: ignore[misc]
        except InterpreterMissing:
            if serves(self._connection):
                raise
            return super().run(*args, **kwargs)  # type: ignore[misc]

    def _configure_module(self, *args: Any, **kwargs: Any) -> Any:
        """Remember the module just built, to recognise its payload; the
        task's context is fetched meanwhile."""
        if serves(self._connection):
            self._connection.prepare()
        result = ActionBase._configure_module(self, *args, **kwargs)  # type: ignore[arg-type]
        self._mitogen_module = result[0]
        return result

    def _pipelined_module(self, in_data: bytes | None) -> tuple[Any, str] | None:
        """The built module and its interpreter if `in_data` is its new-style
        Python payload and its interpreter line one path (module_interpreter())."""
        built = self._mitogen_module
        if built is None or in_data is None or in_data is not built.b_module_data:
            return None
        interpreter = module_interpreter(built.shebang)
        if built.module_style != "new" or interpreter is None:
            return None
        return built, interpreter

    @mitogen_only
    def _low_level_execute_command(
        self,
        cmd: str,
        sudoable: bool = True,
        in_data: bytes | None = None,
        executable: str | None = None,
        encoding_errors: str = "surrogate_then_replace",
        chdir: str | None = None,
        process_result: Callable[[Any, bytes, bytes], tuple[Any, bytes, bytes]] | None = None,
    ) -> dict[str, Any]:
        """Stock's, but a pipelined new-style module runs in the target (module_runner.py).
        `process_result` is 2.21's; earlier series never pass it."""
        if executable is None:
            executable = self._play_context.executable
        if not executable and sudoable and self._connection.become:
            # stock's become command runs the shell plugin's executable
            executable = self._connection._shell.executable
        if self._connection.transport == "local" and chdir is None:
            chdir = self._loader.get_basedir()
        pipelined = self._pipelined_module(in_data)
        payload = None if pipelined is None else ansiballz.parse(in_data)  # type: ignore[arg-type]
        if pipelined is not None and payload is not None:
            built, interpreter = pipelined
            environment: dict[str, Any] = {}
            if not compat.module_applies_environment(built):
                self._compute_environment_string(environment)  # type: ignore[attr-defined]
            # as the shell's env_prefix() spells them
            environment = {str(k): str(v) for k, v in environment.items()}
            # Without become, stock's task directory is in the remote_tmp the
            # module sees; with it, in the login user's (module_runner.py).
            payload = dataclasses.replace(
                payload, spec=dict(payload.spec, ensure_remote_tmp=not self._connection.become)
            )
            rc, stdout, stderr = self._connection.run_module(
                payload, environment, chdir, interpreter
            )
        else:
            rc, stdout, stderr = self._connection.exec_command(
                cmd, in_data=in_data, sudoable=sudoable, executable=executable or None, chdir=chdir
            )
        if process_result is not None:
            rc, stdout, stderr = process_result(rc, stdout, stderr)
        out = to_text(stdout, errors=encoding_errors)
        err = to_text(stderr, errors=encoding_errors)
        return {
            "rc": 0 if rc is None else rc,
            "stdout": out,
            "stdout_lines": out.splitlines(),
            "stderr": err,
            "stderr_lines": err.splitlines(),
        }

    @mitogen_only
    def _remote_expand_user(
        self, path: str, sudoable: bool = True, pathsep: str | None = None
    ) -> str:
        """Expand `~` for the user the task's context runs as: with become,
        that is the become user even where ansible-core would expand for
        the login user (it would then run the command as the login user;
        we run it as the become user, who must not create files in the
        login user's home). One call instead of a shell."""
        if not path.startswith("~"):
            return path
        head, _, rest = path.partition("/")
        if head == "~":
            become_user = self.get_become_option("become_user")  # type: ignore[attr-defined]
            if self._connection.become and become_user:
                head = "~%s" % become_user
            else:
                head = "~%s" % (self._get_remote_user() or "")  # type: ignore[attr-defined]
        expanded = self._connection.call(target.expand_user, head)
        if rest:
            expanded = self._connection._shell.join_path(expanded, rest)
        if ".." in os.path.dirname(expanded).split("/"):
            raise AnsibleError(
                "'%s' returned an invalid relative home directory path "
                "containing '..'" % self._get_remote_addr({})  # type: ignore[attr-defined]
            )
        return expanded

    @mitogen_only
    def _make_tmp_path(self, remote_user: str | None = None) -> str:
        """Create the task's remote temporary directory with one call."""
        tmpdir = self._remote_expand_user(
            self.get_shell_option("remote_tmp", default="~/.ansible/tmp")  # type: ignore[attr-defined]
        )
        if self._is_become_unprivileged():  # type: ignore[attr-defined]
            # as stock does: the become user may have no usable home
            system_tmpdirs = self.get_shell_option(  # type: ignore[attr-defined]
                "system_tmpdirs", default=["/var/tmp", "/tmp"]
            )
            if tmpdir.rstrip("/") not in system_tmpdirs:
                tmpdir = system_tmpdirs[0]
        basefile = self._connection._shell._generate_temp_dir_name()
        try:
            path = self._connection.call(target.make_tmp_dir, tmpdir, basefile)
        except AnsibleError as e:
            raise AnsibleConnectionFailure(
                "Failed to create temporary directory %s/%s: %s" % (tmpdir, basefile, e)
            )
        self._cleanup_remote_tmp = True
        self._connection._shell.tmpdir = path
        return path

    @mitogen_only
    def _remove_tmp_path(self, tmp_path: str | None, force: bool = False) -> None:
        """Remove the task's remote temporary directory with one call."""
        if tmp_path is None and self._connection._shell.tmpdir:
            tmp_path = self._connection._shell.tmpdir
        if force or self._should_remove_tmp_path(tmp_path):  # type: ignore[attr-defined]
            self._connection.call(target.remove_tree, tmp_path)
            self._connection._shell.tmpdir = None

    @mitogen_only
    def _fixup_perms2(
        self, remote_paths: list[str], remote_user: str | None = None, execute: bool = True
    ) -> list[str]:
        if execute:
            self._remote_chmod(remote_paths, mode="u+x")  # type: ignore[attr-defined]
        return remote_paths
