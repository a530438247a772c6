"""The connection plugin behind `mitogen_ssh` and `mitogen_local`.

A task's connection asks the mux's ContextService for the chain of contexts
its options describe (ssh, then the become method if the task uses one) and
runs every command and file transfer in the last context of that chain.
When the task uses become, *everything* runs as the become user (commands,
temporary directories, files), so Ansible's own `sudo ... sh -c` wrapping
and permission fix-ups are not needed (ActionModuleMixin skips them).
close() keeps the contexts: they belong to the mux and are reused by the
next task.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import shlex
import time
from collections.abc import Mapping
from typing import Any

from ansible import constants as C
from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.connection import ConnectionBase
from ansible.plugins.loader import connection_loader
from ansible.utils.display import Display

import ansible_mitogen.ansiballz
import ansible_mitogen.module_runner
import ansible_mitogen.process
import ansible_mitogen.target
import ansible_mitogen.via
import mitogen.core
import mitogen.parent
import mitogen.service
import mitogen.utils
from ansible_mitogen import compat

#: Files up to this size travel inside the call that writes them.
SMALL_FILE_LIMIT = 1048576

#: ssh options that would leave a background master process behind.
_CONTROL_OPTIONS = ("controlmaster", "controlpersist", "controlpath")

#: become methods we run as contexts; others make the task fail clearly.
BECOME_METHODS = ("sudo", "su", "doas")

SERVICE = "ansible_mitogen.services.ContextService"
#: Task or play variable that, when true, runs the task with stock Ansible.
DISABLE_VARIABLE = "mitogen_disable"
#: Seconds an interrupted call waits for the mux to start shutting its chain down.
ABANDON_SECONDS = 1.0

display = Display()


def filter_ssh_args(args: list[str]) -> list[str]:
    """Drop ControlMaster/ControlPersist/ControlPath options: our ssh
    process is itself persistent, and a persisting master would outlive
    ansible-playbook."""
    out: list[str] = []
    skip = False
    for index, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == "-o" and index + 1 < len(args):
            if args[index + 1].split("=")[0].strip().lower() in _CONTROL_OPTIONS:
                skip = True
                continue
        elif arg.startswith("-o") and arg[2:].split("=")[0].strip().lower() in _CONTROL_OPTIONS:
            continue
        out.append(arg)
    return out


def become_flags(flags: str | None) -> list[str]:
    """sudo flags from become_flags, minus -S and -n (also spelt --stdin and
    --non-interactive): we answer the password prompt ourselves on a pty."""
    dropped = ("-S", "-n", "--stdin", "--non-interactive")
    return [f for f in shlex.split(flags or "") if f not in dropped]


class InterpreterMissing(AnsibleError):
    """The task's context could not start for want of Python on the target;
    its connection serves the rest of the task as stock Ansible would (see
    Connection.is_mitogen_connection)."""


#: How stock Ansible words a failed hop (playbooks match on these messages),
#: by (method group, failure kind): the group is "become" (BECOME_METHODS),
#: "ssh" or "any" (every method), the kind a mitogen.core.StreamError.kind
#: (ContextService's `reason`) or None for the group's other failures.
#: Looked up as (any, kind), (group, kind), (group, None), (any, None).
#: The message is formatted with method, msg (ours), output (the program's),
#: interpreter and become_timeout_message.
FAILURE_WORDING: dict[tuple[str, str | None], tuple[type[AnsibleError], str]] = {
    ("any", "python"): (
        InterpreterMissing,
        "The module interpreter '%(interpreter)s' was not found.",
    ),
    ("become", "bad_password"): (AnsibleError, "Incorrect %(method)s password"),
    ("become", "need_password"): (AnsibleError, "Missing %(method)s password"),
    ("become", "timeout"): (AnsibleConnectionFailure, "%(become_timeout_message)s%(output)s"),
    ("become", None): (AnsibleError, "%(method)s: %(msg)s"),
    ("ssh", None): (AnsibleConnectionFailure, "Failed to connect to the host via ssh: %(detail)s"),
    ("any", None): (AnsibleConnectionFailure, "%(msg)s"),
}


def connect_error(
    result: dict[str, Any], python: str | list[str], become_timeout_message: str = ""
) -> AnsibleError:
    """The exception stock Ansible would raise for a failed hop, worded as
    FAILURE_WORDING says (the connection shows our detailed message at -vvv)."""
    method, kind = result["method_name"], result["reason"]
    group = "become" if method in BECOME_METHODS else "ssh" if method == "ssh" else "any"
    for key in ("any", kind), (group, kind), (group, None), ("any", None):
        if key in FAILURE_WORDING:
            klass, wording = FAILURE_WORDING[key]
            break
    return klass(
        wording
        % {
            "method": method,
            "msg": result["msg"],
            "output": result["output"],
            "detail": result["output"] or result["msg"],
            "interpreter": python if isinstance(python, str) else "/usr/bin/python3",
            "become_timeout_message": become_timeout_message,
        }
    )


def via_failure(host: str, chain: list[dict[str, Any]], result: dict[str, Any]) -> AnsibleError:
    """The target's error when a hop of via host `host` failed (`chain`: the hops up to
    the failed one): the target is unreachable, and the message says through what."""
    return AnsibleConnectionFailure(
        "cannot reach the host through its %s host %s: %s failed: %s"
        % (
            ansible_mitogen.via.VIA_VARIABLE,
            host,
            describe_stack(chain),
            result["output"] or result["msg"],
        )
    )


class Connection(ConnectionBase):
    """Run tasks in persistent Mitogen contexts held by the mux.

    A task whose become method is not one we run as a context (BECOME_METHODS),
    or whose context cannot start for want of Python on the target (so that
    `raw` and `script` can install it, as with stock), falls back to stock
    Ansible: `is_mitogen_connection` turns False, so the action runs
    unmodified and wraps commands itself, and every call is passed to a stock
    connection of the same type sharing our options.
    """

    has_pipelining = True
    #: The Mitogen connection method of the first hop, and the stock plugin
    #: used for fallback unless `stock_plugin` names another.
    method_name = "ssh"
    #: The stock plugin tasks fall back to, if not `method_name`.
    stock_plugin = ""
    #: How stock's plugin begins the message when its link breaks.
    lost_prefix = ""
    #: Whether the host's `mitogen_via` applies (via.py).
    follows_via = True

    def __init__(self, play_context: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(play_context, *args, **kwargs)
        self.context: mitogen.parent.Context | None = None
        #: The chain `context` was got for (see _connect()); meaningless without it.
        self._stack: list[dict[str, Any]] | None = None
        #: How many hops of `_stack` are those of the hosts it goes through (mitogen_via).
        self._via_hops = 0
        self._task_vars: Mapping[str, Any] = {}
        #: (the task variables it was derived from, python_path()).
        self._python_path: tuple[Mapping[str, Any], str | list[str]] | None = None
        #: (the task variables it was derived from, via_route()).
        self._via: tuple[Mapping[str, Any], ansible_mitogen.via.Route] | None = None
        self.cwd: str | None = None
        self._play_context_arg = play_context
        self._stock: ConnectionBase | None = None
        self._pending: tuple[list[dict[str, Any]], mitogen.core.Receiver] | None = None
        #: Set when this task's context could not start for want of Python.
        self._python_missing = False

    @property
    def is_mitogen_connection(self) -> bool:
        """False when this task needs stock Ansible (see fallback_reason())."""
        return self.fallback_reason() is None

    def fallback_reason(self) -> str | None:
        """Why this task runs through the stock plugin, or None: the target has no
        Python for its context, its become method is not one of ours, the task or play
        sets `mitogen_disable`, or an option is set that Mitogen cannot honour
        (unserved_reason())."""
        if self._python_missing:
            return "the target has no Python for a Mitogen context"
        become = self.become
        if become is not None and become.name.rpartition(".")[2] not in BECOME_METHODS:
            return "become method %s is not one Mitogen runs" % (become.name,)
        if boolean(self._task_vars.get(DISABLE_VARIABLE, False), strict=False):
            return "%s is set" % (DISABLE_VARIABLE,)
        return self.unserved_reason()

    def unserved_reason(self) -> str | None:
        """Why this connection's options cannot be served by Mitogen, or None."""
        return None

    def stock(self) -> ConnectionBase:
        """The stock connection that serves tasks we fall back for."""
        if self._stock is None:
            name = self.stock_plugin or self.method_name
            self._vvv(
                "MITOGEN NOT USED: stock %s serves this task (%s)" % (name, self.fallback_reason())
            )
            self._stock = connection_loader.get(name, self._play_context_arg, os.devnull)
            if self._stock is None:
                raise AnsibleError(
                    "the task must run through stock connection %s (%s), which is not "
                    "installed" % (name, self.fallback_reason())
                )
        # the options and become plugin in force now (they change per loop item)
        self._stock._options = self._options
        self._stock.set_become_plugin(self.become)
        self._stock._shell = self._shell
        if self.method_name == "local":
            self._stock.cwd = self.cwd  # type: ignore[attr-defined]
        return self._stock

    # -- Ansible API ---------------------------------------------------------

    @property
    def transport(self) -> str:
        return self.stock_plugin or self.method_name

    def update_vars(self, variables: dict[str, Any]) -> None:
        self.set_task_vars(variables)
        super().update_vars(variables)

    def _resolve_option_variables(self, variables: Mapping[str, Any], templar: Any) -> Any:
        """ansible-core's, also keeping `variables` as the task's: `meta: reset_connection`
        (StrategyBase._execute_meta) gives the connection the host's variables only
        through this call, never update_vars(), and reset() needs them to name the chain
        the host's tasks use (their interpreter, their mitogen_via). For a task,
        update_vars() follows with the task's variables."""
        self.set_task_vars(variables)
        return super()._resolve_option_variables(variables, templar)

    def set_task_vars(self, variables: Mapping[str, Any]) -> None:
        """Use `variables` as the task's (python_path(), via_route()), without the
        connection variables update_vars() adds to them: how via.py gives a via host's
        connection that host's variables."""
        self._task_vars = variables

    def is_pipelining_enabled(self, wrap_async: bool = False) -> bool:
        if not self.is_mitogen_connection:
            return bool(self.stock().is_pipelining_enabled(wrap_async))
        return not wrap_async

    def prepare(self) -> None:
        """Start getting the task's context from the mux without waiting,
        so that connecting overlaps with what the action does before its
        first remote call (such as building the module)."""
        if self._pending is None and self.is_mitogen_connection:
            stack = self.get_stack()
            if self.context is None or stack != self._stack:
                _, mux = ansible_mitogen.process.get_router()
                self._pending = stack, mux.call_service_async(SERVICE, "get", stack=stack)

    def _connect(self) -> Connection:
        """Hold the context of the chain that the options in force now describe.

        The chain is derived afresh on every call: TaskExecutor reuses one connection
        for all items of a loop and re-templates its options (become user, login user,
        interpreter, passwords...) per item, so a context held for an earlier item is
        released when the chain it was made for is no longer the one asked for."""
        if not self.is_mitogen_connection:
            self.stock()._connect()
            return self
        stack = self.get_stack()
        if self.context is not None:
            if stack == self._stack:
                return self
            self._release()
        _, mux = ansible_mitogen.process.get_router()
        began = time.monotonic()
        result = self._take_pending(stack)
        if result is None:
            result = mux.call_service(SERVICE, "get", stack=stack)
        if result["msg"] is not None:
            self._vvv("MITOGEN CONNECTION FAILED: %s: %s" % (describe_stack(stack), result["msg"]))
            hop = result.get("hop", len(stack) - 1)
            via_host = self.via_route().host_of(hop)
            if via_host is not None:
                raise via_failure(via_host, stack[: hop + 1], result)
            error = connect_error(result, self.python_path(), self.become_timeout_message())
            self._python_missing = isinstance(error, InterpreterMissing)
            raise error
        self.context = result["context"]
        self._stack = stack
        self._via_hops = len(self.via_route().hops)
        self._connected = True
        if display.verbosity >= 3:
            self._display_established(stack, began)
        return self

    def _vvv(self, msg: str) -> None:
        """A -vvv line for this connection's host, as stock's connection plugins print them."""
        display.vvv(msg, host=self._play_context.remote_addr)

    def _display_established(self, stack: list[dict[str, Any]], began: float) -> None:
        """`<host> ESTABLISH MITOGEN CONNECTION ...`: the chain, and whether its last context
        was started for this task or reused (one more call, made only at -vvv)."""
        waited = (time.monotonic() - began) * 1000
        started, pid = self._call(ansible_mitogen.target.first_use)
        self._vvv(
            "ESTABLISH MITOGEN CONNECTION FOR USER: %s VIA %s "
            "(context %s, pid %s, %s; waited %.1f ms)"
            % (
                stack[self._via_hops]["kwargs"].get("username")
                or self._play_context.remote_user
                or "(default)",
                describe_stack(stack),
                self.context.context_id if self.context is not None else "?",
                pid,
                "started" if started else "reused",
                waited,
            )
        )

    def _release(self) -> None:
        """Hand the held context back to the mux (which keeps it running)."""
        if self.context is not None:
            _, mux = ansible_mitogen.process.get_router()
            mux.call_service(SERVICE, "put", context=self.context)
            self.context = None

    def _take_pending(self, stack: list[dict[str, Any]] | None) -> dict[str, Any] | None:
        """The answer prepare() asked for, if it was for `stack`; a context
        it brought for another stack is handed back."""
        if self._pending is None:
            return None
        (pending_stack, receiver), self._pending = self._pending, None
        result: dict[str, Any] = receiver.get().unpickle()
        if pending_stack == stack:
            return result
        if result["msg"] is None:
            _, mux = ansible_mitogen.process.get_router()
            mux.call_service(SERVICE, "put", context=result["context"])
        return None

    def exec_command(
        self,
        cmd: str,
        in_data: bytes | None = None,
        sudoable: bool = True,
        executable: str | None = None,
        chdir: str | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run `cmd` with `executable -c` in the task's context (without an
        executable, as the transport of stock Ansible would run it: see
        default_shell()); returns (rc, stdout, stderr)."""
        if not self.is_mitogen_connection:
            return self.stock().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        self._connect()
        emulate_tty = not in_data and sudoable and self.uses_tty()
        become_dir = self.become_directory()
        if become_dir:
            cmd = "cd %s && %s" % (shlex.quote(become_dir), cmd)  # as stock's sudo does
        self._vvv("MITOGEN EXEC %s" % (cmd,))
        began = time.monotonic()
        rc, stdout, stderr = self._call(
            ansible_mitogen.target.exec_command,
            cmd,
            in_data,
            chdir or self.cwd,
            executable or self.default_shell(),
            emulate_tty,
        )
        self._vvv("MITOGEN EXEC done: rc %s in %.1f ms" % (rc, (time.monotonic() - began) * 1000))
        return rc, bytes(stdout), bytes(stderr)

    def call(self, func: Any, *args: Any) -> Any:
        """Call `func(*args)` in the task's context (a function of
        ansible_mitogen.target)."""
        self._connect()
        return self._call(func, *args)

    def run_module(
        self,
        payload: ansible_mitogen.ansiballz.Payload,
        environment: dict[str, str],
        chdir: str | None,
        interpreter: str,
    ) -> tuple[int, bytes, bytes]:
        """Run a new-style Python module in the task's context (see
        module_runner.py); its modlib is sent only if the context lacks it."""
        self._connect()
        digest = hashlib.sha256(payload.modlib).hexdigest()
        directory = chdir or self.become_directory() or self.cwd
        args = (payload.spec, digest, None, environment, directory, interpreter)
        module = payload.spec.get("module_fqn") or payload.spec.get("ansible_module") or "?"
        self._vvv("MITOGEN MODULE %s (interpreter %s)" % (module, interpreter))
        began = time.monotonic()
        result = self._call(ansible_mitogen.module_runner.run_module, *args)
        sent = "cached module_utils"
        if result is None:
            modlib = mitogen.core.Blob(payload.modlib)
            sent = "module_utils sent, %d bytes" % (len(payload.modlib),)
            result = self._call(
                ansible_mitogen.module_runner.run_module, *args[:2], modlib, *args[3:]
            )
        rc, stdout, stderr = result
        self._vvv(
            "MITOGEN MODULE %s done: rc %s in %.1f ms (%s)"
            % (module, rc, (time.monotonic() - began) * 1000, sent)
        )
        return rc, bytes(stdout), bytes(stderr)

    def put_file(self, in_path: str, out_path: str) -> None:
        if not self.is_mitogen_connection:
            return self.stock().put_file(in_path, out_path)
        self._connect()
        if not os.path.exists(in_path):
            raise AnsibleError("file or module does not exist: %s" % (in_path,))
        self._vvv("MITOGEN PUT %s TO %s (%d bytes)" % (in_path, out_path, os.path.getsize(in_path)))
        if os.path.getsize(in_path) <= SMALL_FILE_LIMIT:
            with open(in_path, "rb") as fp:
                data = mitogen.core.Blob(fp.read())
            self._call(ansible_mitogen.target.write_path, out_path, data)
            return
        _, mux = ansible_mitogen.process.get_router()
        mux.call_service("mitogen.service.FileService", "register", path=in_path)
        self._call(ansible_mitogen.target.transfer_file, in_path, out_path)

    def fetch_file(self, in_path: str, out_path: str) -> None:
        """Copy target file `in_path` to `out_path`: small files in one
        call, larger ones streamed by a FileService in the target."""
        if not self.is_mitogen_connection:
            return self.stock().fetch_file(in_path, out_path)
        self._connect()
        assert self.context is not None
        self._vvv("MITOGEN FETCH %s TO %s" % (in_path, out_path))
        data = self._call(ansible_mitogen.target.read_small_file, in_path, SMALL_FILE_LIMIT)
        if data is not None:
            with open(out_path, "wb") as fp:
                fp.write(data)
            return
        path = mitogen.utils.cast(in_path)
        self.context.call_service(mitogen.service.FileService, "register", path=path)
        with open(out_path, "wb") as fp:
            ok, _ = mitogen.service.FileService.get(self.context, path, fp)
        if not ok:
            raise AnsibleError("fetching %s from the target ended early" % (in_path,))

    def close(self) -> None:
        """Release the context to the mux (which keeps it running)."""
        if self._stock is not None:
            self._stock.close()
        try:
            self._take_pending(None)
        except mitogen.core.ChannelError:
            pass  # the mux is gone, and the context with it
        self._release()
        ansible_mitogen.process.disconnect()
        self._connected = False

    def reset(self) -> None:
        """meta: reset_connection: shut the whole chain down."""
        self._take_pending(None)
        _, mux = ansible_mitogen.process.get_router()
        mux.call_service(
            SERVICE, "reset", stack=self.get_stack(), depth=len(self.via_route().hops) + 1
        )
        self.context = None
        ansible_mitogen.process.disconnect()

    # -- Helpers -------------------------------------------------------------

    def _call(self, func: Any, *args: Any) -> Any:
        """Call `func` in the task's context; Ansible's tagged strings and
        containers are cast to plain types first."""
        assert self.context is not None
        try:
            return self.context.call(func, *mitogen.utils.cast(list(args)))
        except mitogen.core.ChannelError as e:
            chain = describe_stack(self._stack or [])
            self._vvv("MITOGEN LOST CONNECTION (%s): %s" % (chain, e))
            self.context = None
            reason = str(e)
            if not ansible_mitogen.process.mux_alive():
                reason = "the Mitogen mux has exited or was killed"
            raise AnsibleConnectionFailure(
                "%slost the connection (%s) while running the task: %s"
                % (self.lost_prefix, chain, reason)
            )
        except mitogen.core.CallError as e:
            raise AnsibleError(str(e))
        except BaseException:
            # Interrupted mid-call (the task's `timeout:`, Ctrl-C): the context may stay
            # busy with the call for ever, so the next task must not be given it.
            self._abandon()
            raise

    def _abandon(self) -> None:
        """Have the mux shut down the chain of the held context and forget it, waiting at
        most ABANDON_SECONDS for the mux to take the request (the shutdown goes on there)."""
        stack, self.context = self._stack, None
        if not stack:
            return
        try:
            _, mux = ansible_mitogen.process.get_router()
            mux.call_service_async(SERVICE, "reset", stack=stack, depth=self._via_hops + 1).get(
                timeout=ABANDON_SECONDS
            )
        except mitogen.core.Error:
            pass  # still shutting down (or the mux is gone): the chain is forgotten already

    def uses_tty(self) -> bool:
        """True if stock Ansible runs commands without input in a terminal."""
        return False

    def default_shell(self) -> str | None:
        """The shell that runs commands given without an executable (`raw`),
        or None for the login shell of the account the context runs as (what
        sshd runs a command with)."""
        return None

    def become_directory(self) -> str | None:
        """The sudo plugin's `sudo_chdir`: where become commands run."""
        become = self.become
        if become is None or become.name.rpartition(".")[2] != "sudo":
            return None
        try:
            return become.get_option("sudo_chdir") or None
        except KeyError:
            return None

    def become_timeout(self) -> float | None:
        """Seconds stock Ansible waits for the become method to succeed."""
        return None

    def become_timeout_message(self) -> str:
        """How stock Ansible begins the error when become times out."""
        return "Timeout (%ds) waiting for privilege escalation prompt: " % (
            self.become_timeout() or 0
        )

    def python_path(self) -> str | list[str]:
        """The target's Python: `ansible_python_interpreter` when it names
        one; for `auto` (or unset) the first of the interpreters Ansible's
        discovery would look for, so that modules run in the context's own
        interpreter. Worked out once per set of task variables (per loop
        item): templating it costs about 0.4 ms, and the chain is derived at
        every use."""
        if self._python_path is None or self._python_path[0] is not self._task_vars:
            self._python_path = self._task_vars, self._derive_python_path()
        return self._python_path[1]

    def _derive_python_path(self) -> str | list[str]:
        # the host the connection reaches: a delegated task's is the delegated host's
        # Python (as stock's action plugins pick it), not the play host's
        _, variables = ansible_mitogen.via.connection_host(self._task_vars)
        interpreter = variables.get("ansible_python_interpreter") or ""
        if "{" in interpreter:
            # as module_common templates it for the module's interpreter line
            interpreter = compat.template_config_value(
                interpreter, variables, C.config.get_config_default("INTERPRETER_PYTHON")
            )
        interpreter = str(interpreter or "")
        if interpreter and not interpreter.startswith("auto"):
            return interpreter
        candidates = C.config.get_config_value("INTERPRETER_PYTHON_FALLBACK", variables=variables)
        return find_python_command([str(c) for c in candidates])

    def first_hop(self) -> dict[str, Any]:
        """The hop that reaches the target account."""
        raise NotImplementedError()

    def become_hop(self) -> dict[str, Any] | None:
        become = self.become
        if become is None:
            return None
        name = become.name.rpartition(".")[2]
        kwargs: dict[str, Any] = {
            "username": become.get_option("become_user") or "root",
            "python_path": self.python_path(),
        }
        password = become.get_option("become_pass")
        if password:
            kwargs["password"] = mitogen.core.Secret(password)
        timeout = self.become_timeout()
        if timeout:
            kwargs["connect_timeout"] = timeout
        exe = become.get_option("become_exe")
        if exe:
            kwargs["%s_path" % name] = exe
        if name == "sudo":
            kwargs["sudo_args"] = become_flags(become.get_option("become_flags"))
        else:
            kwargs["%s_args" % name] = shlex.split(become.get_option("become_flags") or "")
        if name == "su":
            # only the prompts stock's su plugin would answer
            prompts = become.get_option("prompt_l10n") or become.SU_PROMPT_LOCALIZATIONS
            kwargs["password_prompt"] = r"(?:%s)\s*[:：]" % "|".join(re.escape(p) for p in prompts)
            kwargs["builtin_prompts"] = False
        return {"method": name, "kwargs": kwargs}

    def own_stack(self) -> list[dict[str, Any]]:
        """This host's own hops: the one reaching the target account, then become's."""
        stack = [self.first_hop()]
        become = self.become_hop()
        if become is not None:
            stack.append(become)
        return mitogen.utils.cast(stack)

    def via_route(self) -> ansible_mitogen.via.Route:
        """The hosts named by this host's `mitogen_via`, with their hops (via.py), none
        for a connection that does not follow it (`follows_via`); worked out once per set
        of task variables, like python_path()."""
        if not self.follows_via:
            return ansible_mitogen.via.Route()
        if self._via is None or self._via[0] is not self._task_vars:
            self._via = self._task_vars, ansible_mitogen.via.route(self._task_vars)
        return self._via[1]

    def get_stack(self) -> list[dict[str, Any]]:
        """The chain of hops for this task, as plain data: the hops of the hosts it is
        reached through (via_route()), then its own (own_stack())."""
        return self.via_route().hops + self.own_stack()


def describe_stack(stack: list[dict[str, Any]]) -> str:
    """A chain for messages, e.g. 'ssh deploy@web1:22 -> sudo root' (no secrets)."""
    hops = []
    for hop in stack:
        kwargs = hop["kwargs"]
        where = kwargs.get("username") or ""
        place = kwargs.get("hostname") or kwargs.get("container") or kwargs.get("pod")
        place = place or kwargs.get("path")
        if place:
            where = "%s@%s" % (where, place) if where else place
            if kwargs.get("port"):
                where += ":%s" % (kwargs["port"],)
        hops.append(("%s %s" % (hop["method"], where)).strip())
    return " -> ".join(hops) or "no connection"


def find_python_command(candidates: list[str]) -> list[str]:
    """argv that runs, with the arguments that follow, the first of
    `candidates` found on the target's PATH, else /usr/bin/python3 (what
    Ansible's interpreter discovery settles for)."""
    script = (
        'for p in %s; do c=$(command -v "$p") && exec "$c" "$@"; done; '
        'exec /usr/bin/python3 "$@"' % " ".join(shlex.quote(c) for c in candidates)
    )
    return ["/bin/sh", "-c", script, "python"]


class SshConnection(Connection):
    """The `mitogen_ssh` plugin: honours the ssh plugin's options."""

    method_name = "ssh"
    lost_prefix = "Failed to connect to the host via ssh: "

    def uses_tty(self) -> bool:
        return bool(self.get_option("use_tty"))

    def become_timeout(self) -> float | None:
        return 2 + int(self.get_option("timeout"))

    def first_hop(self) -> dict[str, Any]:
        ssh_args: list[str] = []
        for option in ("ssh_args", "ssh_common_args", "ssh_extra_args"):
            ssh_args += shlex.split(self.get_option(option) or "")
        kwargs: dict[str, Any] = {
            "hostname": self.get_option("host"),
            "port": self.get_option("port"),
            "username": self.get_option("remote_user"),
            "identity_file": self.get_option("private_key_file"),
            "identities_only": False,
            "ssh_path": self.get_option("ssh_executable") or "ssh",
            "ssh_args": filter_ssh_args(ssh_args),
            "compression": False,
            "check_host_keys": "enforce" if self.get_option("host_key_checking") else "ignore",
            "connect_timeout": self.get_option("timeout"),
            "python_path": self.python_path(),
        }
        password = self.get_option("password")
        if password:
            kwargs["password"] = mitogen.core.Secret(password)
        return {"method": "ssh", "kwargs": kwargs}


class LocalConnection(Connection):
    """The `mitogen_local` plugin: a local interpreter as the controller
    user; commands run in the playbook directory like stock `local`."""

    method_name = "local"
    #: A local connection runs on the controller, whatever host it is for
    #: (`connection: local` plays), so no via host stands in between.
    follows_via = False

    def __init__(self, play_context: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(play_context, *args, **kwargs)
        # The controller user, whatever remote_user says: stock local's
        # `_get_remote_user()` answer, so ~ and remote_tmp expand for it.
        try:
            self.default_user = getpass.getuser()
        except (KeyError, OSError):
            self.default_user = ""

    def _connect(self) -> Connection:
        self._play_context.remote_user = self.default_user  # as stock local does
        return super()._connect()

    def default_shell(self) -> str | None:
        return C.DEFAULT_EXECUTABLE.split()[0] if C.DEFAULT_EXECUTABLE else "/bin/sh"

    def become_timeout(self) -> float | None:
        return max(1, int(self.get_option("become_success_timeout") or 10))

    def become_timeout_message(self) -> str:
        return "Timed out waiting for become success or become password prompt.\n"

    def first_hop(self) -> dict[str, Any]:
        return {"method": "local", "kwargs": {"python_path": self.python_path()}}
