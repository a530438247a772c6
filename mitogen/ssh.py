"""Connection method `ssh`: a context on another host, started by the
OpenSSH client.

Without a password ssh runs in BatchMode with no terminal, so it can never
stop to ask anything. With a password it gets a pty as its controlling
terminal (ssh reads passwords from /dev/tty) while the bootstrap and every
message still flow over a socketpair. Host keys are checked as
`check_host_keys` says: 'enforce' (the key must already be known),
'accept' (new hosts are added, changed keys refused) or 'ignore'.
"""

import math
import shlex

import mitogen.core
import mitogen.parent

HOST_KEY_POLICIES = ("enforce", "accept", "ignore")


class PasswordError(mitogen.parent.PasswordError):
    """The SSH server refused the password, or asked for one and none was
    given."""


class AuthError(mitogen.parent.AuthenticationError):
    """The SSH server refused every authentication method tried (no
    password was involved)."""


class HostKeyError(mitogen.core.StreamError):
    """The host key is unknown (under check_host_keys='enforce') or does
    not match the one on record."""


class ConnectError(mitogen.parent.EofError):
    """The SSH server could not be reached: connection refused, no route,
    unknown host name."""


#: (kind, pattern) of ssh client messages that end a connection attempt.
FAILURES = (
    (
        "hostkey_changed",
        r"remote host identification has changed|"
        r"host key for .* has changed",
    ),
    (
        "hostkey_unknown",
        r"host key is known for|"
        r"host key verification failed",
    ),
    ("auth", r"permission denied \(|permission denied, please try again"),
    ("timeout", r"timed out"),
    (
        "unreachable",
        r"connection refused|no route to host|"
        r"network is unreachable|could not resolve hostname|"
        r"name or service not known|"
        r"temporary failure in name resolution|"
        r"connection reset|connection closed by|"
        r"kex_exchange_identification",
    ),
) + mitogen.parent.BECOME_FAILURES

#: Questions ssh asks on its terminal that we never answer.
PROMPT_FAILURES = (("hostkey_unknown", r"continue connecting"),)

REASONS = dict(
    mitogen.parent.FAILURE_REASONS,
    hostkey_changed="the host key does not match the one on record "
    "(check_host_keys=%(check_host_keys)r)",
    hostkey_unknown="the host key is not known or could not be verified "
    "(check_host_keys=%(check_host_keys)r)",
    auth="the server refused authentication",
    timeout="the connection timed out",
    unreachable="the server could not be reached",
)


class Options(mitogen.parent.PromptingOptions):
    """Options of `router.ssh()`.

    :param str hostname: host to connect to.
    :param str username: remote account (default: ssh's choice).
    :param int port: remote port (default: ssh's choice).
    :param str identity_file: private key file (`-i`).
    :param bool identities_only: with an identity file or a password, offer
        only that key (IdentitiesOnly=yes), so agent keys cannot use up
        the server's MaxAuthTries.
    :param str check_host_keys: 'enforce', 'accept' or 'ignore'.
    :param str known_hosts_file: known_hosts file to use instead of ssh's.
    :param str ssh_path: the ssh client to run.
    :param list ssh_args: extra arguments, placed first so their `-o`
        options take precedence over ours.
    :param bool compression: enable compression.
    :param int keepalive_interval: ServerAliveInterval (0 disables).
    :param int keepalive_count: ServerAliveCountMax.
    :param int ssh_debug_level: 1 to 3 for `-v` to `-vvv`.
    :param python_path: remote interpreter (default 'python3').

    `password`, `password_prompt` and the common options (name,
    remote_name, connect_timeout, ...) are those of PromptingOptions and
    Options.
    """

    def __init__(
        self,
        max_message_size,
        hostname,
        username=None,
        port=None,
        identity_file=None,
        identities_only=True,
        check_host_keys="enforce",
        known_hosts_file=None,
        ssh_path="ssh",
        ssh_args=None,
        compression=True,
        keepalive_interval=15,
        keepalive_count=3,
        ssh_debug_level=None,
        **kwargs,
    ):
        super().__init__(max_message_size, **kwargs)
        if check_host_keys not in HOST_KEY_POLICIES:
            raise ValueError(
                "check_host_keys must be one of %r, not %r" % (HOST_KEY_POLICIES, check_host_keys)
            )
        self.hostname = hostname
        self.username = username
        self.port = port
        self.identity_file = identity_file
        self.identities_only = identities_only
        self.check_host_keys = check_host_keys
        self.known_hosts_file = known_hosts_file
        self.ssh_path = ssh_path
        self.ssh_args = list(ssh_args or ())
        self.compression = compression
        self.keepalive_interval = keepalive_interval
        self.keepalive_count = keepalive_count
        self.ssh_debug_level = ssh_debug_level
        if self.name is None:
            self.name = "ssh." + hostname + (":%s" % (port,) if port else "")

    def default_python_path(self):
        return "python3"


def _opt(name, value):
    return ["-o", "%s=%s" % (name, value)]


class Connection(mitogen.parent.PromptingConnection):
    """Run `ssh [options] -- host <quoted stage 0 command>`."""

    options_class = Options
    name_prefix = "ssh"
    # ssh reads passwords from /dev/tty, never from stdin: no need to wait
    # for stage 0 before sending the preamble.
    bootstrap_protocol_class = mitogen.parent.BootstrapProtocol
    sends_preamble = True
    failures = FAILURES
    prompt_failures = PROMPT_FAILURES
    reasons = REASONS
    error_classes = dict(
        mitogen.parent.PromptingConnection.error_classes,
        bad_password=PasswordError,
        need_password=PasswordError,
        auth=AuthError,
        hostkey_changed=HostKeyError,
        hostkey_unknown=HostKeyError,
        timeout=mitogen.core.TimeoutError,
        unreachable=ConnectError,
    )

    def describe(self):
        opts = self.options
        return "ssh to %s@%s%s" % (
            opts.username or mitogen.parent.current_user(),
            opts.hostname,
            " port %s" % (opts.port,) if opts.port else "",
        )

    def reason(self, kind):
        return self.reasons[kind] % {
            "python": self.get_python_argv()[0],
            "check_host_keys": self.options.check_host_keys,
        }

    def fail_with(self, kind):
        if kind == "auth" and self._prompts_answered:
            kind = "bad_password"
        super().fail_with(kind)

    def host_key_args(self):
        opts = self.options
        if opts.check_host_keys == "ignore":
            return (
                _opt("StrictHostKeyChecking", "no")
                + _opt("UserKnownHostsFile", "/dev/null")
                + _opt("GlobalKnownHostsFile", "/dev/null")
            )
        args = _opt(
            "StrictHostKeyChecking", "yes" if opts.check_host_keys == "enforce" else "accept-new"
        )
        if opts.known_hosts_file:
            args += _opt("UserKnownHostsFile", opts.known_hosts_file)
        return args

    def ssh_options(self):
        """Every ssh argument but the destination and the command."""
        opts = self.options
        args = list(opts.ssh_args)
        if opts.username:
            args += ["-l", opts.username]
        if opts.port:
            args += ["-p", str(opts.port)]
        if opts.identity_file:
            args += ["-i", str(opts.identity_file)]
        if opts.identities_only and (opts.identity_file or opts.password):
            args += _opt("IdentitiesOnly", "yes")
        if opts.ssh_debug_level:
            args.append("-" + "v" * min(3, int(opts.ssh_debug_level)))
        else:
            args += _opt("LogLevel", "ERROR")
        if opts.password is None:
            args += _opt("BatchMode", "yes")
        else:
            args += _opt("NumberOfPasswordPrompts", 1)  # it is typed once
        if opts.compression:
            args += _opt("Compression", "yes")
        if opts.keepalive_interval:
            args += _opt("ServerAliveInterval", opts.keepalive_interval) + _opt(
                "ServerAliveCountMax", opts.keepalive_count
            )
        args += _opt("ConnectTimeout", max(1, int(math.ceil(opts.connect_timeout))))
        return args + self.host_key_args()

    def ssh_argv(self, command):
        """The ssh argv running the word list `command` on the host."""
        return (
            [self.options.ssh_path]
            + self.ssh_options()
            + ["--", self.options.hostname]
            + [shlex.quote(word) for word in command]
        )

    def get_boot_command(self):
        return self.ssh_argv(super().get_boot_command())
