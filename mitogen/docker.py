"""Connection method `docker`: a context inside a Docker container.

With `container=` it runs `docker exec -i` into a running container; with
`image=` a throwaway `docker run --rm -i` of an image, removed when the
context ends. `docker_args` are global flags for the docker CLI (e.g.
['-H', 'unix:///run/other.sock'], which survive a sudo hop where
DOCKER_HOST would not); `run_args` are extra flags for `docker run`.
"""

import mitogen.container


class DockerError(mitogen.container.ContainerError):
    """docker could not start the interpreter in the container."""


class Options(mitogen.container.Options):
    """Options of `router.docker()`.

    :param str container: a running container to exec into.
    :param str image: instead of `container`, an image to run a throwaway
        container from.
    :param str username: user inside the container (`--user`).
    :param str docker_path: the docker CLI to run.
    :param list docker_args: global docker flags, before the subcommand.
    :param list run_args: extra `docker run` flags (with `image`), e.g.
        ['--network', 'none'].
    :param python_path: interpreter inside the container (default python3).
    """

    def __init__(
        self,
        max_message_size,
        container=None,
        image=None,
        docker_path="docker",
        docker_args=None,
        run_args=None,
        **kwargs,
    ):
        if (container is None) == (image is None):
            raise DockerError("docker needs exactly one of container= and image=")
        super().__init__(max_message_size, container=container, **kwargs)
        self.image = image
        self.docker_path = docker_path
        self.docker_args = list(docker_args or ())
        self.run_args = list(run_args or ())


class Connection(mitogen.container.Connection):
    """Run `docker exec -i [-u USER] CONTAINER python -c <stage 0>` or
    `docker run --rm -i [-u USER] IMAGE python -c <stage 0>`."""

    options_class = Options
    name_prefix = "docker"
    error = DockerError

    def target(self):
        return self.options.container or self.options.image

    def target_phrase(self):
        if self.options.image:
            return "a new container of image %r" % (self.options.image,)
        return super().target_phrase()

    def get_boot_command(self):
        opts = self.options
        user = ["--user", opts.username] if opts.username else []
        argv = [opts.docker_path] + opts.docker_args
        if opts.image:
            argv += ["run", "--rm", "-i"] + user + opts.run_args + [opts.image]
        else:
            argv += ["exec", "-i"] + user + [opts.container]
        return argv + self.python_command()
