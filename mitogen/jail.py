"""Connection method `jail`: a context inside a FreeBSD jail, through
jexec(8)."""

import mitogen.container


class JailError(mitogen.container.ContainerError):
    """jexec could not start the interpreter in the jail."""


class Options(mitogen.container.Options):
    """Options of `router.jail()`.

    :param str container: the jail's name or ID.
    :param str username: user inside the jail (`-U`).
    :param str jexec_path: the jexec program to run.
    """

    def __init__(self, max_message_size, jexec_path="jexec", **kwargs):
        super().__init__(max_message_size, **kwargs)
        self.jexec_path = jexec_path


class Connection(mitogen.container.Connection):
    """Run `jexec [-U USER] JAIL python -c <stage 0>`."""

    options_class = Options
    name_prefix = "jail"
    error = JailError

    def target_phrase(self):
        return "jail %r" % (self.options.container,)

    def runtime_name(self):
        return "jexec"

    def get_boot_command(self):
        opts = self.options
        user = ["-U", opts.username] if opts.username else []
        return [opts.jexec_path] + user + [opts.container] + self.python_command()
