"""Connection method `machinectl`: a context inside a systemd-nspawn
machine registered with systemd-machined.

`machinectl shell` always puts the command on a pty, which would mangle
the binary link, so the interpreter is started the way machinectl shell
does it underneath, with `systemd-run --machine=NAME --pipe`: stdin and
stdout stay the socket."""

import mitogen.container


class MachinectlError(mitogen.container.ContainerError):
    """systemd-run could not start the interpreter in the machine."""


class Options(mitogen.container.Options):
    """Options of `router.machinectl()`.

    :param str container: the machine's name.
    :param str username: user inside the machine (`--uid`).
    :param str systemd_run_path: the systemd-run program to run.
    """

    def __init__(self, max_message_size, systemd_run_path="systemd-run", **kwargs):
        super().__init__(max_message_size, **kwargs)
        self.systemd_run_path = systemd_run_path


class Connection(mitogen.container.Connection):
    """Run `systemd-run --machine=NAME --pipe --quiet --wait --collect
    [--uid=USER] -- python -c <stage 0>`."""

    options_class = Options
    name_prefix = "machinectl"
    error = MachinectlError

    def target_phrase(self):
        return "machine %r" % (self.options.container,)

    def runtime_name(self):
        return "systemd-run"

    def get_boot_command(self):
        opts = self.options
        user = ["--uid=" + opts.username] if opts.username else []
        return (
            [opts.systemd_run_path, "--machine=" + opts.container]
            + ["--pipe", "--quiet", "--wait", "--collect"]
            + user
            + ["--"]
            + self.python_command()
        )
