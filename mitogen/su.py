"""Connection method `su`: a context running as another user through
su(1), on this machine or (with `via=`) on any context's machine.

su asks for the password through PAM, which reads it from stdin: the
password is written to the socket that becomes the child's stdin, and the
preamble is held back until stage 0 announces itself, so su never reads
it. No pty is needed.
"""

import shlex

import mitogen.parent


class PasswordError(mitogen.parent.PasswordError):
    """su refused the password, or asked for one and none was given."""


class Options(mitogen.parent.BecomeOptions):
    """Options of `router.su()`.

    :param str su_path: the su program to run.
    :param list su_args: arguments for su, placed before the user name.
    :param python_path: interpreter to run (default: the one running the
        context that runs su).

    `password`, `password_prompt` and the common options are those of
    PromptingOptions and Options.
    """

    def __init__(self, max_message_size, su_path="su", su_args=None, **kwargs):
        super().__init__(max_message_size, **kwargs)
        self.su_path = su_path
        self.su_args = list(su_args or ())


class Connection(mitogen.parent.BecomeConnection):
    """Run `su [ARGS] USER -c '<quoted python -c stage 0>'`."""

    options_class = Options
    name_prefix = "su"
    password_sink = "stdin"
    password_error = PasswordError

    def get_boot_command(self):
        command = " ".join(shlex.quote(word) for word in super().get_boot_command())
        return (
            [self.options.su_path] + self.options.su_args + [self.options.username, "-c", command]
        )
