"""Connection method `incus`: a context inside an Incus instance, through
`incus exec` in non-interactive mode (Incus is LXD's fork: same shape)."""

import mitogen.container
import mitogen.lxd


class IncusError(mitogen.container.ContainerError):
    """incus exec could not start the interpreter in the instance."""


class Options(mitogen.container.Options):
    """Options of `router.incus()`.

    :param str container: the instance.
    :param str incus_path: the incus client to run.
    """

    def __init__(self, max_message_size, incus_path="incus", **kwargs):
        super().__init__(max_message_size, **kwargs)
        self.incus_path = incus_path


class Connection(mitogen.lxd.Connection):
    """Run `incus exec --mode=non-interactive CONTAINER -- python -c <stage 0>`."""

    options_class = Options
    name_prefix = "incus"
    error = IncusError

    def client_path(self):
        return self.options.incus_path
