"""Connection method `sudo`: a context running as another user through
sudo(8), on this machine or (with `via=`) on any context's machine.

sudo always gets a pty as its controlling terminal, where it asks for a
password and which `Defaults requiretty` insists on; the bootstrap and
messages still flow over a socketpair (or the pipes sudo puts in between
for `log_output`), so the link stays binary-clean. The pty starts out
echoing: sudo switches echo off before it prints its prompt, which makes
any prompt recognisable, such as a sudoers `passprompt` without the word
"password". Without a password sudo runs with `-n`, so it fails at once
rather than wait for one.
"""

import argparse

import mitogen.core
import mitogen.parent


class PasswordError(mitogen.parent.PasswordError):
    """sudo refused the password, or asked for one and none was given."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        raise mitogen.core.StreamError("bad sudo_args: %s", message)


def _make_parser():
    parser = _ArgumentParser(prog="sudo", add_help=False, allow_abbrev=False)
    parser.add_argument("-u", "--user", dest="username")
    parser.add_argument(
        "-E", "--preserve-env", dest="preserve_env", action="store_true", default=None
    )
    parser.add_argument("-H", "--set-home", dest="set_home", action="store_true", default=None)
    parser.add_argument("-i", "--login", dest="login", action="store_true", default=None)
    parser.add_argument("-r", "--role", dest="selinux_role")
    parser.add_argument("-t", "--type", dest="selinux_type")
    return parser


def parse_sudo_args(args):
    """Parse `args` like sudo's own flags.

    :returns: `(values, rest)`: a dict of the keyword arguments the flags
        set (username, preserve_env, set_home, login, selinux_role,
        selinux_type) and a list of the arguments not understood, passed
        to sudo as they are.
    """
    namespace, rest = _make_parser().parse_known_args(list(args))
    values = {k: v for k, v in vars(namespace).items() if v is not None}
    return values, rest


class Options(mitogen.parent.BecomeOptions):
    """Options of `router.sudo()`.

    :param str username: account to become (default 'root').
    :param str sudo_path: the sudo program to run.
    :param bool preserve_env: pass `-E`.
    :param bool set_home: pass `-H`.
    :param bool login: pass `-i` (run through the target's login shell).
    :param str selinux_type: pass `-t TYPE`.
    :param str selinux_role: pass `-r ROLE`.
    :param list sudo_args: sudo flags (as for sudo itself, e.g.
        ['-u', 'www', '-H']); the ones above override the keyword
        arguments, others are passed to sudo unchanged.
    :param python_path: interpreter to run (default: the one running the
        context that runs sudo).

    `password`, `password_prompt` and the common options are those of
    PromptingOptions and Options.
    """

    def __init__(
        self,
        max_message_size,
        username="root",
        sudo_path="sudo",
        preserve_env=False,
        set_home=False,
        login=False,
        selinux_type=None,
        selinux_role=None,
        sudo_args=None,
        **kwargs,
    ):
        values, extra_args = parse_sudo_args(sudo_args or ())
        super().__init__(max_message_size, username=values.get("username", username), **kwargs)
        self.extra_args = extra_args
        self.sudo_path = sudo_path
        self.preserve_env = values.get("preserve_env", preserve_env)
        self.set_home = values.get("set_home", set_home)
        self.login = values.get("login", login)
        self.selinux_type = values.get("selinux_type", selinux_type)
        self.selinux_role = values.get("selinux_role", selinux_role)


class Connection(mitogen.parent.BecomeConnection):
    """Run `sudo -u USER [flags] -- python -c <stage 0>`."""

    options_class = Options
    name_prefix = "sudo"
    password_error = PasswordError
    tty_echo = True

    def uses_tty(self):
        """Always: `Defaults requiretty` refuses sudo without a terminal,
        and a pty costs a few milliseconds per start, less than noticing
        the refusal and starting sudo again."""
        return True

    def sudo_flags(self):
        opts = self.options
        flags = ["-u", opts.username]
        if opts.preserve_env:
            flags.append("-E")
        if opts.set_home:
            flags.append("-H")
        if opts.login:
            flags.append("-i")
        if opts.selinux_type:
            flags += ["-t", opts.selinux_type]
        if opts.selinux_role:
            flags += ["-r", opts.selinux_role]
        if opts.password is None:
            flags.append("-n")
        return flags + opts.extra_args

    def get_boot_command(self):
        return [self.options.sudo_path] + self.sudo_flags() + ["--"] + super().get_boot_command()
