"""Connection method `lxd`: a context inside an LXD instance, through
`lxc exec` in non-interactive mode (no pty: the link stays binary-clean)."""

import mitogen.container


class LxdError(mitogen.container.ContainerError):
    """lxc exec could not start the interpreter in the instance."""


class Options(mitogen.container.Options):
    """Options of `router.lxd()`.

    :param str container: the instance.
    :param str lxc_path: LXD's lxc client to run.
    """

    def __init__(self, max_message_size, lxc_path="lxc", **kwargs):
        super().__init__(max_message_size, **kwargs)
        self.lxc_path = lxc_path


class Connection(mitogen.container.Connection):
    """Run `lxc exec --mode=non-interactive CONTAINER -- python -c <stage 0>`."""

    options_class = Options
    name_prefix = "lxd"
    error = LxdError
    #: The client program's exec subcommand and flags.
    exec_args = ("exec", "--mode=non-interactive")

    def client_path(self):
        return self.options.lxc_path

    def runtime_name(self):
        return "%s exec" % (self.client_path(),)

    def get_boot_command(self):
        return (
            [self.client_path()]
            + list(self.exec_args)
            + [self.options.container, "--"]
            + self.python_command()
        )
