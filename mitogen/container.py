"""What every container and namespace connection method shares (docker,
podman, buildah, lxc, lxd, incus, kubectl, jail, machinectl, chroot,
setns).

Each of those methods starts an interpreter by running one program (the
runtime's CLI, chroot or nsenter) that execs Python inside the container,
with stdin and stdout on the socketpair and stderr on a pipe. Nothing asks
for a password, so the preamble goes out at once. The runtime's complaints
before the bootstrap finishes end the attempt at once with the method's
own error class (a subclass of ContainerError), or InterpreterNotFoundError
when it could not exec the interpreter; the message names the method, the
container, the user and the host, and quotes the runtime's output.
"""

import socket

import mitogen.core
import mitogen.parent


class ContainerError(mitogen.core.StreamError):
    """A container runtime refused to start the interpreter: the container
    does not exist or is not running, permission was denied, or the
    runtime itself failed or is missing."""


#: (kind, pattern) of runtime messages that end a connection attempt,
#: matched case-insensitively against complete lines of its stderr. The
#: runtime execs nothing but the interpreter, so a failed exec means the
#: interpreter is missing; the catch-all `runtime` comes last.
FAILURES = (
    (
        "python",
        r"executable file not found|failed to exec|failed to run command|"
        r"exec: .*no such file or directory|stat .*: no such file or directory",
    ),
    ("user", r"unable to find user|no such user|unknown user|user .* does not exist|invalid user"),
    (
        "container",
        r"no such container|no container with name or id|is not running|"
        r"container .*not found|not found: container|failed to get init pid|does not exist|"
        r"no such object|no such image|pull access denied|"
        r"image not known|no such jail|no such machine|cannot change root directory|"
        r"(?:pods?|instance|jail|machine) .*not found|container not known|"
        r"can only create exec sessions on running containers",
    ),
    ("denied", r"permission denied|operation not permitted|must be root|must be run as root"),
    ("runtime", r"\berror\b|cannot connect to"),
)

REASONS = {
    "python": "the Python interpreter %(python)r was not found",
    "container": "%(runtime)s says the container does not exist or is not running",
    "user": "%(runtime)s does not know that user in the container",
    "denied": "%(runtime)s was denied permission",
    "runtime": "%(runtime)s failed",
}


class BootstrapProtocol(mitogen.parent.BootstrapProtocol):
    """Some runtimes (docker exec) report a failed exec on stdout: show
    those lines to the Connection too."""

    def __init__(self, conn, broker):
        super().__init__(conn, broker)
        self.conn = conn

    def on_line_received(self, line):
        more = super().on_line_received(line)
        if line not in (b"MITO000", b"MITO001"):
            self.conn.on_diag_line(mitogen.core.to_text(line).rstrip("\r"))
        return more


class Options(mitogen.parent.Options):
    """Options every container method takes.

    :param str container: name or ID of the container.
    :param str username: account to run as inside the container (default:
        the runtime's default, usually root).
    :param python_path: interpreter inside the container (default
        'python3', found on the container's PATH).
    """

    #: Container methods never ask for a password.
    password = None
    password_prompt = None
    builtin_prompts = False

    def __init__(self, max_message_size, container=None, username=None, **kwargs):
        super().__init__(max_message_size, **kwargs)
        self.container = container
        self.username = username

    def default_python_path(self):
        return "python3"


class Connection(mitogen.parent.PromptingConnection):
    """Run the argv get_boot_command() returns; subclasses set
    `name_prefix`, `error` (their ContainerError subclass) and build the
    argv with runtime_argv()."""

    options_class = Options
    bootstrap_protocol_class = BootstrapProtocol
    sends_preamble = True
    failures = FAILURES
    reasons = REASONS
    #: The method's error class.
    error = ContainerError

    def __init__(self, options, router):
        self.options = options
        if options.name is None:
            options.name = "%s.%s" % (self.name_prefix, self.target())
        super().__init__(options, router)

    def target(self):
        """What the context runs in, for names and messages."""
        return self.options.container

    def target_phrase(self):
        """`container 'NAME'`, or what else the method enters."""
        return "container %r" % (self.target(),)

    def runtime_name(self):
        """The program that starts the interpreter, for messages."""
        return self.name_prefix

    def describe(self):
        return "%s into %s as %s on %s (run by %s)" % (
            self.name_prefix,
            self.target_phrase(),
            "user %r" % (self.options.username,) if self.options.username else "its default user",
            socket.gethostname(),
            mitogen.parent.current_user(),
        )

    def error_class(self, kind):
        if kind == "python":
            return mitogen.parent.InterpreterNotFoundError
        return self.error

    def reason(self, kind):
        return self.reasons[kind] % {
            "python": self.get_python_argv()[0],
            "runtime": self.runtime_name(),
        }

    def start_child(self):
        args = self.get_boot_command()
        mitogen.core.LOG.debug("%r: starting %s", self, args[0])
        try:
            return mitogen.parent.create_child(args)
        except OSError as e:
            raise self.error(
                "Failed to set up %s: could not run %s: %s", self.describe(), args[0], e
            )

    def python_command(self):
        """The interpreter's argv, as run inside the container."""
        return mitogen.parent.Connection.get_boot_command(self)

    def get_boot_command(self):
        """Each method's module builds its runtime's argv; this shared
        module is not a connection method itself."""
        raise ContainerError(
            "mitogen.container is not a connection method; use docker, podman, ..."
        )
