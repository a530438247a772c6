"""Connection method `buildah`: a context inside a Buildah working
container, through `buildah run`."""

import mitogen.container


class BuildahError(mitogen.container.ContainerError):
    """buildah could not start the interpreter in the container."""


class Options(mitogen.container.Options):
    """Options of `router.buildah()`.

    :param str container: the working container.
    :param str username: user inside the container (`--user`).
    :param str buildah_path: the buildah program to run.
    """

    def __init__(self, max_message_size, buildah_path="buildah", **kwargs):
        super().__init__(max_message_size, **kwargs)
        self.buildah_path = buildah_path


class Connection(mitogen.container.Connection):
    """Run `buildah run [--user USER] CONTAINER -- python -c <stage 0>`."""

    options_class = Options
    name_prefix = "buildah"
    error = BuildahError

    def get_boot_command(self):
        opts = self.options
        user = ["--user", opts.username] if opts.username else []
        return [opts.buildah_path, "run"] + user + [opts.container, "--"] + self.python_command()
