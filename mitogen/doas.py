"""Connection method `doas`: a context running as another user through
OpenBSD's doas(1) (opendoas on Linux).

doas reads passwords only from a terminal: with a password it gets a pty
as its controlling terminal while the bootstrap flows over a socketpair;
without one it runs with `-n` and fails at once if a password is needed.
"""

import mitogen.parent


class PasswordError(mitogen.parent.PasswordError):
    """doas refused the password, or asked for one and none was given."""


class Options(mitogen.parent.BecomeOptions):
    """Options of `router.doas()`.

    :param str doas_path: the doas program to run.
    :param list doas_args: arguments for doas, placed before `-u USER`.
    :param python_path: interpreter to run (default: the one running the
        context that runs doas).

    `password`, `password_prompt` and the common options are those of
    PromptingOptions and Options.
    """

    def __init__(self, max_message_size, doas_path="doas", doas_args=None, **kwargs):
        super().__init__(max_message_size, **kwargs)
        self.doas_path = doas_path
        self.doas_args = list(doas_args or ())


class Connection(mitogen.parent.BecomeConnection):
    """Run `doas [ARGS] -u USER -- python -c <stage 0>`."""

    options_class = Options
    name_prefix = "doas"
    password_error = PasswordError

    def get_boot_command(self):
        flags = self.options.doas_args + ["-u", self.options.username]
        if self.options.password is None and "-n" not in flags:
            flags.append("-n")
        return [self.options.doas_path] + flags + ["--"] + super().get_boot_command()
