"""Connection method `setns`: a context in the namespaces (mount, UTS,
IPC, network, PID, cgroup) and root directory of a container's init
process, entered with nsenter(1) from a root context.

The container runtime is asked once for the init's PID (`kind` says
which: docker, podman, lxc, lxd or machinectl), unless `pid` names the
process outright (community.docker.nsenter's way: PID 1 is the host's
init); after that no runtime is in the path: the interpreter is
nsenter's child. `username` is looked up
in the container's own /etc/passwd.
"""

import json
import os
import subprocess

import mitogen.container

KINDS = ("docker", "podman", "lxc", "lxd", "machinectl")


class SetnsError(mitogen.container.ContainerError):
    """The container's init could not be found or entered."""


class Options(mitogen.container.Options):
    """Options of `router.setns()`.

    :param str container: the container's name.
    :param str kind: its runtime: 'docker', 'podman', 'lxc', 'lxd' or
        'machinectl'.
    :param str username: user inside the container.
    :param list runtime_args: global flags for the runtime's CLI when
        asking for the PID (e.g. docker's ['-H', SOCKET], lxc-info's
        ['-P', LXCPATH]).
    :param str runtime_path: that CLI (default: docker, podman, lxc-info,
        lxc or machinectl).
    :param str nsenter_path: the nsenter program to run.
    :param int pid: instead of `container` and `kind`, the process whose
        namespaces to enter.
    """

    def __init__(
        self,
        max_message_size,
        kind="docker",
        runtime_args=None,
        runtime_path=None,
        nsenter_path="nsenter",
        pid=None,
        **kwargs,
    ):
        if kind not in KINDS:
            raise SetnsError("setns kind must be one of %s, not %r", ", ".join(KINDS), kind)
        super().__init__(max_message_size, **kwargs)
        self.kind = kind
        self.runtime_args = list(runtime_args or ())
        self.runtime_path = runtime_path
        self.nsenter_path = nsenter_path
        self.pid = pid
        if pid is not None and self.container is None:
            self.container = "pid-%d" % (pid,)


#: argv (after the program and its global flags) printing the init's PID.
PID_QUERIES = {
    "docker": ("docker", ["inspect", "--format", "{{.State.Pid}}", "{ct}"]),
    "podman": ("podman", ["inspect", "--format", "{{.State.Pid}}", "{ct}"]),
    "lxc": ("lxc-info", ["-n", "{ct}", "-p", "-H"]),
    "lxd": ("lxc", ["query", "/1.0/instances/{ct}/state"]),
    "machinectl": ("machinectl", ["show", "{ct}", "-p", "Leader", "--value"]),
}


def _parse_pid(kind, text):
    if kind == "lxd":
        return int(json.loads(text).get("pid") or 0)
    return int(text.strip() or 0)


class Connection(mitogen.container.Connection):
    """Ask the runtime for the init's PID, then run `nsenter -t PID -m -u
    -i -n -p -C -r -w [-S UID -G GID] -- python -c <stage 0>`."""

    options_class = Options
    name_prefix = "setns"
    error = SetnsError

    def target_phrase(self):
        if self.options.pid is not None:
            return "the namespaces of process %d" % (self.options.pid,)
        return "%s container %r" % (self.options.kind, self.options.container)

    def runtime_name(self):
        return "nsenter"

    def init_pid(self):
        """The PID of the container's init, asked of its runtime (or `pid`)."""
        opts = self.options
        if opts.pid is not None:
            return int(opts.pid)
        program, args = PID_QUERIES[opts.kind]
        argv = [opts.runtime_path or program] + opts.runtime_args
        argv += [arg.replace("{ct}", opts.container) for arg in args]
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=opts.connect_timeout,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SetnsError("Failed to set up %s: %s failed: %s", self.describe(), argv[0], e)
        output = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
        try:
            pid = _parse_pid(opts.kind, proc.stdout.decode()) if proc.returncode == 0 else 0
        except ValueError:
            pid = 0
        if pid <= 0:
            raise SetnsError(
                "Failed to set up %s: %s found no running init for it; its output was:\n%s",
                self.describe(),
                argv[0],
                output,
            )
        return pid

    def user_ids(self, pid):
        """(uid, gid) of options.username in the container's /etc/passwd."""
        name = self.options.username
        path = "/proc/%d/root/etc/passwd" % (pid,)
        with open(path) as fp:
            for line in fp:
                fields = line.split(":")
                if len(fields) > 3 and fields[0] == name:
                    return fields[2], fields[3]
        raise SetnsError(
            "Failed to set up %s: no user %r in the container's /etc/passwd", self.describe(), name
        )

    def get_boot_command(self):
        if os.geteuid() != 0:
            raise SetnsError(
                "Failed to set up %s: entering a container's namespaces needs root", self.describe()
            )
        pid = self.init_pid()
        user = []
        if self.options.username:
            uid, gid = self.user_ids(pid)
            user = ["-S", uid, "-G", gid]
        return (
            [self.options.nsenter_path, "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-C"]
            + ["-r", "-w"]
            + user
            + ["--"]
            + self.python_command()
        )
