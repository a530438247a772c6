"""Connection method `doas`: a context running as another user through
OpenBSD's doas(1) (opendoas on Linux).

doas reads passwords only from a terminal: with a password it gets a pty
as its controlling terminal while the bootstrap flows over a socketpair;
without one it runs with `-n` and fails at once if a password is needed.
"""

import socket

import mitogen.parent


class PasswordError(mitogen.parent.PasswordError):
    """doas refused the password, or asked for one and none was given."""


class Options(mitogen.parent.PromptingOptions):
    """Options of `router.doas()`.

    :param str username: account to become (default 'root').
    :param str doas_path: the doas program to run.
    :param python_path: interpreter to run (default: the one running the
        context that runs doas).

    `password`, `password_prompt` and the common options are those of
    PromptingOptions and Options.
    """

    def __init__(self, max_message_size, username='root', doas_path='doas',
                 **kwargs):
        super().__init__(max_message_size, **kwargs)
        self.username = username
        self.doas_path = doas_path
        if self.name is None:
            self.name = 'doas.' + username


class Connection(mitogen.parent.PromptingConnection):
    """Run `doas -u USER -- python -c <stage 0>`."""

    options_class = Options
    name_prefix = 'doas'
    error_classes = dict(
        mitogen.parent.PromptingConnection.error_classes,
        bad_password=PasswordError,
        need_password=PasswordError,
    )

    def describe(self):
        return 'doas from %s to %s on %s' % (
            mitogen.parent.current_user(), self.options.username,
            socket.gethostname())

    def get_boot_command(self):
        flags = ['-u', self.options.username]
        if self.options.password is None:
            flags.append('-n')
        return ([self.options.doas_path] + flags + ['--'] +
                super().get_boot_command())
