"""Connection method `chroot`: a context whose root directory is a
chroot tree on this machine (or the `via=` context's), started by
chroot(8). Needs root."""

import os

import mitogen.container


class ChrootError(mitogen.container.ContainerError):
    """chroot could not start the interpreter in the tree."""


class Options(mitogen.container.Options):
    """Options of `router.chroot()`.

    :param str path: the tree to change root to.
    :param str username: user to run as inside the tree (`--userspec`).
    :param str chroot_path: the chroot program to run.
    """

    def __init__(self, max_message_size, path=None, chroot_path="chroot", **kwargs):
        if not path:
            raise ChrootError("chroot needs path=")
        super().__init__(max_message_size, container=path, **kwargs)
        self.path = path
        self.chroot_path = chroot_path


class Connection(mitogen.container.Connection):
    """Run `chroot [--userspec=USER] PATH python -c <stage 0>`."""

    options_class = Options
    name_prefix = "chroot"
    error = ChrootError

    def target_phrase(self):
        return "directory %r" % (self.options.path,)

    def get_boot_command(self):
        opts = self.options
        if os.geteuid() != 0:
            raise ChrootError("Failed to set up %s: chroot needs root", self.describe())
        user = ["--userspec=" + opts.username] if opts.username else []
        return [opts.chroot_path] + user + [opts.path] + self.python_command()
