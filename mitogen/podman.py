"""Connection method `podman`: a context inside a running Podman
container, through `podman exec -i`. `podman_args` are global podman
flags (storage, runtime, cgroup manager), placed before `exec`."""

import mitogen.container


class PodmanError(mitogen.container.ContainerError):
    """podman could not start the interpreter in the container."""


class Options(mitogen.container.Options):
    """Options of `router.podman()`.

    :param str container: a running container to exec into.
    :param str username: user inside the container (`--user`).
    :param str podman_path: the podman program to run.
    :param list podman_args: global podman flags, before `exec`.
    """

    def __init__(self, max_message_size, podman_path="podman", podman_args=None, **kwargs):
        super().__init__(max_message_size, **kwargs)
        self.podman_path = podman_path
        self.podman_args = list(podman_args or ())


class Connection(mitogen.container.Connection):
    """Run `podman [ARGS] exec -i [--user USER] CONTAINER python -c <stage 0>`."""

    options_class = Options
    name_prefix = "podman"
    error = PodmanError

    def get_boot_command(self):
        opts = self.options
        user = ["--user", opts.username] if opts.username else []
        return (
            [opts.podman_path]
            + opts.podman_args
            + ["exec", "-i"]
            + user
            + [opts.container]
            + self.python_command()
        )
