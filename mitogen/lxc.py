"""Connection method `lxc`: a context inside a running LXC container,
through lxc-attach(1). `lxc_args` are extra lxc-attach flags (e.g.
['-P', LXCPATH] for containers outside the default path)."""

import mitogen.container


class LxcError(mitogen.container.ContainerError):
    """lxc-attach could not start the interpreter in the container."""


class Options(mitogen.container.Options):
    """Options of `router.lxc()`.

    :param str container: the running container.
    :param str lxc_attach_path: the lxc-attach program to run.
    :param list lxc_args: extra lxc-attach flags, before `-n`.
    """

    def __init__(self, max_message_size, lxc_attach_path="lxc-attach", lxc_args=None, **kwargs):
        super().__init__(max_message_size, **kwargs)
        self.lxc_attach_path = lxc_attach_path
        self.lxc_args = list(lxc_args or ())


class Connection(mitogen.container.Connection):
    """Run `lxc-attach [ARGS] -n CONTAINER -- python -c <stage 0>`."""

    options_class = Options
    name_prefix = "lxc"
    error = LxcError

    def runtime_name(self):
        return "lxc-attach"

    def get_boot_command(self):
        opts = self.options
        return (
            [opts.lxc_attach_path]
            + opts.lxc_args
            + ["-n", opts.container, "--"]
            + self.python_command()
        )
