"""The connection plugins behind `mitogen_docker`, `mitogen_podman` and the other
container and namespace connections.

Each class maps the options of one stock connection plugin (community.docker.docker,
containers.podman.podman, community.general.lxc, kubernetes.core.kubectl, ...) onto the
keyword arguments of the Mitogen connection method that reaches the same place
(mitogen/docker.py, mitogen/podman.py, ...): `first_hop()` returns that hop, and the
become hop (sudo, su, doas inside the container) follows it as over ssh.

Options Mitogen's methods have no equivalent for (docker's `privileged`, `extra_env` and
`working_dir`, kubectl's `kubectl_token` ...) are listed in each class's `UNMAPPED`, with
their defaults: a task that sets one to anything else runs through the stock plugin, as
if `mitogen_disable` were set, and -vvv names the option. The stock plugin tasks fall
back to is `stock_plugin` (its FQCN: bare names like `incus` have no ansible-core
redirect).

Every class here carries standalone.StandaloneMixin (through ContainerConnection), so
`ansible_connection: mitogen_docker` (or the collection's `mitogen_ng.mitogen.mitogen_docker`)
accelerates with the builtin strategies too, exactly as mitogen_ssh does.
"""

from __future__ import annotations

import shlex
from typing import Any, ClassVar

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_mitogen.connection import Connection
from ansible_mitogen.standalone import StandaloneMixin


class ContainerConnection(StandaloneMixin, Connection):
    """What the container connections share: no tty, commands run with the `executable`
    shell (stock's container plugins run `/bin/sh -c CMD`), unmapped options fall back;
    with or without a Mitogen strategy (StandaloneMixin)."""

    #: Option name -> the default under which Mitogen can serve the task.
    UNMAPPED: ClassVar[dict[str, Any]] = {}

    def default_shell(self) -> str | None:
        try:
            executable = self.get_option("executable")
        except KeyError:
            executable = None
        return str(executable or (C.DEFAULT_EXECUTABLE or "/bin/sh").split()[0])

    def unserved_reason(self) -> str | None:
        for option, default in self.UNMAPPED.items():
            try:
                value = self.get_option(option)
            except KeyError:
                continue
            if value not in (default, None) and not (default is None and value in ("", {}, [])):
                return "option %s is set, which Mitogen's %s method cannot honour" % (
                    option,
                    self.method_name,
                )
        return None

    def container(self) -> str:
        """The container the task runs in (stock's `remote_addr`)."""
        return str(self.get_option("remote_addr"))

    def user(self) -> str | None:
        """The user inside the container, None for the runtime's default."""
        return self.get_option("remote_user") or None

    def method_kwargs(self) -> dict[str, Any]:
        """The Mitogen method's own keyword arguments (beyond container, user, Python)."""
        return {}

    def first_hop(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "container": self.container(),
            "username": self.user(),
            "python_path": self.python_path(),
            **self.method_kwargs(),
        }
        return {"method": self.method_name, "kwargs": kwargs}


def _split(value: Any) -> list[str]:
    return shlex.split(str(value or ""))


class DockerConnection(ContainerConnection):
    """`mitogen_docker`: community.docker.docker's options (docker_extra_args are the
    docker CLI's global flags, as stock passes them)."""

    method_name = "docker"
    stock_plugin = "community.docker.docker"
    UNMAPPED = {"privileged": False, "extra_env": None, "working_dir": None}

    def method_kwargs(self) -> dict[str, Any]:
        return {"docker_args": _split(self.get_option("docker_extra_args"))}


class DockerApiConnection(DockerConnection):
    """`mitogen_docker_api`: community.docker.docker_api's options; `docker_host` becomes
    the docker CLI's `-H`, TLS and API settings are not mapped (they fall back)."""

    stock_plugin = "community.docker.docker_api"
    UNMAPPED = {
        **DockerConnection.UNMAPPED,
        "tls": False,
        "validate_certs": False,
        "ca_path": None,
        "client_cert": None,
        "client_key": None,
        "tls_hostname": None,
        "use_ssh_client": False,
        "api_version": "auto",
    }

    def method_kwargs(self) -> dict[str, Any]:
        host = self.get_option("docker_host")
        return {"docker_args": ["-H", str(host)] if host else []}


class ArgvCommandsMixin:
    """Stock podman and buildah run a command given without an executable (`raw`) as the
    words shlex.split() makes of it, without a shell: so do we, quoting each word for
    the shell that runs it."""

    def exec_command(
        self,
        cmd: str,
        in_data: bytes | None = None,
        sudoable: bool = True,
        executable: str | None = None,
        chdir: str | None = None,
    ) -> tuple[int, bytes, bytes]:
        if executable is None and self.is_mitogen_connection:  # type: ignore[attr-defined]
            try:
                cmd = shlex.join(shlex.split(cmd))
            except ValueError as e:
                raise AnsibleError("cannot split the command %r into words: %s" % (cmd, e))
        return super().exec_command(  # type: ignore[misc,no-any-return]
            cmd, in_data=in_data, sudoable=sudoable, executable=executable, chdir=chdir
        )


class PodmanConnection(ArgvCommandsMixin, ContainerConnection):
    """`mitogen_podman`: containers.podman.podman's options."""

    method_name = "podman"
    stock_plugin = "containers.podman.podman"
    UNMAPPED = {"extra_env_vars": None, "working_directory": None}

    def method_kwargs(self) -> dict[str, Any]:
        return {
            "podman_path": str(self.get_option("podman_executable") or "podman"),
            "podman_args": _split(self.get_option("podman_extra_args")),
        }


class BuildahConnection(ArgvCommandsMixin, ContainerConnection):
    """`mitogen_buildah`: containers.podman.buildah's options."""

    method_name = "buildah"
    stock_plugin = "containers.podman.buildah"
    UNMAPPED = {
        "buildah_extra_args": None,
        "extra_env_vars": None,
        "working_directory": None,
        "auto_commit": False,
    }

    def method_kwargs(self) -> dict[str, Any]:
        return {"buildah_path": str(self.get_option("buildah_executable") or "buildah")}


class LxcConnection(ContainerConnection):
    """`mitogen_lxc`: community.general.lxc's options (lxc-attach in the default
    lxcpath, as stock's liblxc uses)."""

    method_name = "lxc"
    stock_plugin = "community.general.lxc"

    def user(self) -> str | None:
        return None  # stock lxc attaches as root


class LxdConnection(ContainerConnection):
    """`mitogen_lxd`: community.general.lxd's options; `remote` prefixes the instance
    (`REMOTE:NAME`, as `lxc exec` spells it), a `project` is not mapped."""

    method_name = "lxd"
    stock_plugin = "community.general.lxd"
    UNMAPPED = {"project": None}

    def container(self) -> str:
        remote = self.get_option("remote") or "local"
        name = super().container()
        return name if remote == "local" else "%s:%s" % (remote, name)

    def user(self) -> str | None:
        user = self.get_option("remote_user")
        return None if user in (None, "", "root") else str(user)


class IncusConnection(LxdConnection):
    """`mitogen_incus`: community.general.incus's options (remote as for lxd)."""

    method_name = "incus"
    stock_plugin = "community.general.incus"
    UNMAPPED = {"project": "default"}


class JailConnection(ContainerConnection):
    """`mitogen_jail`: community.general.jail's options."""

    method_name = "jail"
    stock_plugin = "community.general.jail"


class ChrootConnection(ContainerConnection):
    """`mitogen_chroot`: community.general.chroot's options (`remote_addr` is the
    directory, `chroot_exe` the program)."""

    method_name = "chroot"
    stock_plugin = "community.general.chroot"

    def first_hop(self) -> dict[str, Any]:
        kwargs = {
            "path": self.container(),
            "chroot_path": str(self.get_option("chroot_exe") or "chroot"),
            "python_path": self.python_path(),
        }
        return {"method": "chroot", "kwargs": kwargs}


class NsenterConnection(ContainerConnection):
    """`mitogen_nsenter`: community.docker.nsenter's options (the namespaces of process
    `nsenter_pid`, entered as root)."""

    method_name = "setns"
    stock_plugin = "community.docker.nsenter"

    def first_hop(self) -> dict[str, Any]:
        kwargs = {
            "pid": int(self.get_option("nsenter_pid")),
            "python_path": self.python_path(),
        }
        return {"method": "setns", "kwargs": kwargs}


#: kubectl option -> the kubectl global flag it becomes.
KUBECTL_FLAGS = {
    "kubectl_namespace": "--namespace",
    "kubectl_context": "--context",
    "kubectl_kubeconfig": "--kubeconfig",
    "kubectl_host": "--server",
    "kubectl_username": "--username",
    "client_cert": "--client-certificate",
    "client_key": "--client-key",
    "ca_cert": "--certificate-authority",
}


class KubectlConnection(ContainerConnection):
    """`mitogen_kubectl`: kubernetes.core.kubectl's options. Passwords and tokens are not
    put on a command line (where `ps` would show them): tasks using them run stock."""

    method_name = "kubectl"
    stock_plugin = "kubernetes.core.kubectl"
    UNMAPPED = {"kubectl_password": None, "kubectl_token": None, "kubectl_local_env_vars": None}

    def unserved_reason(self) -> str | None:
        if isinstance(self.get_option("kubectl_kubeconfig"), dict):
            return "option kubectl_kubeconfig is a mapping (stock writes it to a file)"
        return super().unserved_reason()

    def first_hop(self) -> dict[str, Any]:
        args: list[str] = []
        for option, flag in KUBECTL_FLAGS.items():
            value = self.get_option(option)
            if value:
                args += [flag, str(value)]
        validate = self.get_option("validate_certs")
        if validate not in (None, ""):
            skip = not boolean(validate, strict=False)
            args.append("--insecure-skip-tls-verify=%s" % (str(skip).lower(),))
        args += _split(self.get_option("kubectl_extra_args"))
        kwargs = {
            "pod": str(self.get_option("kubectl_pod") or self._play_context.remote_addr),
            "container": self.get_option("kubectl_container") or None,
            "kubectl_args": args,
            "python_path": self.python_path(),
        }
        return {"method": "kubectl", "kwargs": kwargs}
