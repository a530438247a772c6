"""Prompting: connections whose child may ask for a password (ssh, sudo,
su, doas) and the errors they raise.

Owns: recognising password prompts (PASSWORD_PROMPT_WORDS,
is_password_prompt, a user's own pattern through compile_prompt), the
failure messages of sudo, su and doas (BECOME_FAILURES) and the kinds and
reasons of failure, answering the first prompt once on a pty or on stdin
while keeping the password out of logs (PromptingOptions, DiagProtocol,
DeferredBootstrapProtocol, PromptingConnection), the become methods' base
(BecomeOptions, BecomeConnection), and the exceptions AuthenticationError,
PasswordError, PolicyError and InterpreterNotFoundError.
mitogen.parent re-exports every public name.
"""

import os
import pwd
import re
import socket

import mitogen.core
from mitogen.bootstrap import (
    DIAG_LINES,
    BootstrapProtocol,
    Connection,
    EofError,
    LogProtocol,
    Options,
)
from mitogen.core import LOG, StreamError
from mitogen.spawn import create_child, hybrid_tty_create_child, terminal_echoes

# ---------------------------------------------------------------------------
# Connections whose child may ask for a password: ssh, sudo, su, doas.


class AuthenticationError(StreamError):
    """The target refused to let us in: credentials missing or wrong."""


class PasswordError(AuthenticationError):
    """A password was refused, or one was asked for and none was given."""


class PolicyError(StreamError):
    """sudo, su or doas refused by policy to run the command as the
    requested user."""


class InterpreterNotFoundError(EofError):
    """The Python interpreter to run does not exist on the target."""


#: Words that password prompts contain, in English and in the languages
#: sudo, su (PAM), doas and ssh are most often translated into.
PASSWORD_PROMPT_WORDS = (
    "password",
    "passwort",
    "kennwort",
    "mot de passe",
    "contraseña",
    "contrasenya",
    "senha",
    "palavra-passe",
    "wachtwoord",
    "lösenord",
    "passord",
    "adgangskode",
    "salasana",
    "parola",
    "hasło",
    "heslo",
    "jelszó",
    "geslo",
    "lozinka",
    "пароль",
    "κωδικός",
    "şifre",
    "sandi",
    "mật khẩu",
    "パスワード",
    "密码",
    "密碼",
    "암호",
    "비밀번호",
    "סיסמה",
    "كلمة المرور",
    "รหัสผ่าน",
)

#: An unterminated line that asks for a password: a prompt word, then a
#: colon at the end, perhaps followed by pwfeedback's asterisks.
PASSWORD_PROMPT_RE = re.compile(
    r"(?:%s)[^\n]*[:：]\s*\**\s*$" % "|".join(re.escape(word) for word in PASSWORD_PROMPT_WORDS),
    re.IGNORECASE,
)

#: (kind, pattern) of messages from sudo, su and doas (and sudo-rs) that
#: end a connection attempt, matched case-insensitively against complete
#: lines of diagnostic output.
BECOME_FAILURES = (
    (
        "bad_password",
        r"sorry, try again|incorrect password|"
        r"authentication fail|incorrect authentication",
    ),
    (
        "need_password",
        r"a password is required|a terminal is required|"
        r"authori[sz]ation required|no askpass program",
    ),
    (
        "policy",
        r"is not in the sudoers file|not allowed to execute|"
        r"may not run sudo|not allowed to run sudo|"
        r"operation not permitted",
    ),
)

#: Why a connection attempt failed, by kind of failure.
FAILURE_REASONS = {
    "bad_password": "the password was refused",
    "need_password": "a password is required and none was given",
    "policy": "refused by policy",
    "python": "the Python interpreter %(python)r was not found",
}


def current_user():
    """The name of the account this process runs as."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def compile_prompt(pattern):
    """Compile a user-supplied password prompt pattern (case-insensitive
    when given as a string)."""
    if pattern is None or not isinstance(pattern, str):
        return pattern
    return re.compile(pattern, re.IGNORECASE)


def is_password_prompt(text, custom=None, builtin=True):
    """True if the unterminated line `text` asks for a password, by the
    compiled pattern `custom` or (if `builtin`) the built-in patterns."""
    if custom is not None and custom.search(text):
        return True
    return builtin and PASSWORD_PROMPT_RE.search(text) is not None


def _compile_failures(failures):
    """Compile (kind, pattern) pairs, case-insensitively."""
    return [(kind, re.compile(pattern, re.IGNORECASE)) for kind, pattern in failures]


def _write_fully(fd, data):
    """Write `data` to the non-blocking descriptor `fd`, ignoring a peer
    that has gone (its exit is reported through the streams)."""
    while data:
        written, disconnected = mitogen.core.io_op(os.write, fd, data)
        if disconnected:
            return
        data = data[written or 0 :]


class PromptingOptions(Options):
    """Options shared by methods that may be asked for a password.

    :param str password: answer to the first password prompt; kept as a
        mitogen.core.Secret and never placed in an argv.
    :param password_prompt: a regular expression (a string, matched
        case-insensitively, or a compiled pattern) recognising a prompt
        the built-in patterns do not.
    :param bool builtin_prompts: False to answer only prompts that
        `password_prompt` matches.
    """

    def __init__(
        self, max_message_size, password=None, password_prompt=None, builtin_prompts=True, **kwargs
    ):
        super().__init__(max_message_size, **kwargs)
        self.password = None if password is None else mitogen.core.Secret(password)
        self.password_prompt = compile_prompt(password_prompt)
        self.builtin_prompts = builtin_prompts


class DiagProtocol(LogProtocol):
    """Read a child's diagnostic output (a stderr pipe or a pty master):
    scrub the password from it, keep and log its lines, and show each
    line and each prompt to the Connection."""

    def on_line_received(self, line):
        conn = self._conn
        text = conn.scrub(mitogen.core.to_text(line).rstrip("\r"))
        conn.diag_lines.append(text)
        del conn.diag_lines[:-DIAG_LINES]
        LOG.debug("%s: %s", conn.name, text)
        conn.on_diag_line(text)

    def on_partial_line_received(self, line):
        self._conn.on_partial_diag(self._conn.scrub(mitogen.core.to_text(line)))

    def on_shutdown(self, broker):
        """Keep reading at Broker shutdown: the stream closes with the
        child, and closing a pty early would hang it up."""

    def on_disconnect(self, broker):
        trailer, self._trailer = self._trailer, b""
        if trailer:
            self.on_line_received(trailer)
        super().on_disconnect(broker)


class DeferredBootstrapProtocol(BootstrapProtocol):
    """Write the preamble only once stage 0 announces it is reading, so a
    program that reads a password from stdin cannot swallow it."""

    def on_line_received(self, line):
        if line == b"MITO000":
            self.write(self._conn.get_preamble_payload())
        return super().on_line_received(line)


class PromptingConnection(Connection):
    """A Connection whose child may ask for a password.

    It answers the first password prompt, fails at once on a second one or
    on a failure message (`failures`, complete lines; `prompt_failures`,
    unterminated ones), raising the class `error_classes` names for that
    kind of failure, and keeps the password out of logs and errors.

    `password_sink` says where the child reads the password: 'tty' (from
    /dev/tty: with a password the child gets a pty as its controlling
    terminal, see hybrid_tty_create_child()) or 'stdin' (from the socket:
    the preamble then waits for stage 0, see DeferredBootstrapProtocol).

    With `tty_echo`, that pty starts out echoing, and an unterminated line
    printed while the child has switched echo off is a password prompt
    too, whatever its wording (unless `builtin_prompts` is false).
    """

    options_class = PromptingOptions
    diag_protocol_class = DiagProtocol
    bootstrap_protocol_class = DeferredBootstrapProtocol
    sends_preamble = False
    child_is_immediate_subprocess = False
    password_sink = "tty"
    tty_echo = False
    failures = BECOME_FAILURES
    prompt_failures = ()
    error_classes = {
        "bad_password": PasswordError,
        "need_password": PasswordError,
        "policy": PolicyError,
        "python": InterpreterNotFoundError,
    }
    reasons = FAILURE_REASONS

    def __init__(self, options, router):
        super().__init__(options, router)
        self._prompts_answered = 0
        self._on_prompt_line = False
        self._line_failures = _compile_failures(
            self.failures + (("python", self._python_missing_pattern()),)
        )
        self._prompt_failures = _compile_failures(self.prompt_failures)

    def _python_missing_pattern(self):
        """Matches a shell's or sudo's complaint that the interpreter
        does not exist, e.g. "bash: line 1: python3.99: command not found"."""
        python = os.path.basename(self.get_python_argv()[0])
        return re.escape(python) + r"""['"]?:.*(?:not found|no such file)"""

    def uses_tty(self):
        """True if the child needs a pty to read the password from."""
        return self.password_sink == "tty" and self.options.password is not None

    def start_child(self):
        args = self.get_boot_command()
        tty = self.uses_tty()
        LOG.debug("%r: starting %s%s", self, args[0], " on a pty" if tty else "")
        try:
            if tty:
                return hybrid_tty_create_child(args, echo=self.tty_echo)
            return create_child(args)
        except OSError as e:
            raise StreamError("could not start %s for %s: %s", args[0], self.describe(), e)

    def scrub(self, text):
        """Return `text` with any occurrence of the password hidden."""
        password = self.options.password
        if password:
            text = text.replace(password, "[secret]")
        return text

    def error_class(self, kind):
        """The exception class raised for failure `kind`."""
        return self.error_classes[kind]

    def reason(self, kind):
        """Explain a failure of `kind` for an error message."""
        return self.reasons[kind] % {"python": self.get_python_argv()[0]}

    def fail_with(self, kind):
        """Abort the attempt with the exception for failure `kind`; the
        output so far (with an unterminated prompt) is shown."""
        self._fail(self.failure(self.error_class(kind), kind, self.reason(kind)))

    def is_prompt(self, text):
        """True if the unterminated line `text` asks for the password."""
        opts = self.options
        if is_password_prompt(text, opts.password_prompt, opts.builtin_prompts):
            return True
        if not (self.tty_echo and opts.builtin_prompts and self.uses_tty()):
            return False
        tty = self.diag_stream.receive_side
        return not tty.closed and not terminal_echoes(tty.fd)

    def on_partial_diag(self, text):
        self.diag_partial = text
        if self._settled or self._on_prompt_line:
            return
        for kind, regex in self._prompt_failures:
            if regex.search(text):
                return self.fail_with(kind)
        if not self.is_prompt(text):
            return
        self._on_prompt_line = True
        if self.options.password is None:
            return self.fail_with("need_password")
        if self._prompts_answered:
            return self.fail_with("bad_password")
        self._prompts_answered += 1
        LOG.debug("%r: answering password prompt", self)
        self.write_password((self.options.password + "\n").encode("utf-8"))

    def on_diag_line(self, text):
        """Called with each complete line of diagnostic output."""
        self._on_prompt_line = False
        self.diag_partial = ""
        if self._settled or text.lstrip().lower().startswith("debug"):
            return
        for kind, regex in self._line_failures:
            if regex.search(text):
                return self.fail_with(kind)

    def write_password(self, data):
        """Type `data` where the child reads its password."""
        if self.password_sink == "stdin":
            self.stdio_stream.protocol.write(data)
        else:
            _write_fully(self.diag_stream.receive_side.fd, data)


class BecomeOptions(PromptingOptions):
    """Options of methods that switch to another user on one machine
    (sudo, su, doas).

    :param str username: account to become (default 'root').
    """

    def __init__(self, max_message_size, username="root", **kwargs):
        super().__init__(max_message_size, **kwargs)
        self.username = username


class BecomeConnection(PromptingConnection):
    """A PromptingConnection that becomes `options.username`; a refused or
    missing password raises the method's own `password_error` class."""

    password_error = PasswordError

    def __init__(self, options, router):
        if options.name is None:
            options.name = "%s.%s" % (self.name_prefix, options.username)
        super().__init__(options, router)

    def error_class(self, kind):
        if kind in ("bad_password", "need_password"):
            return self.password_error
        return super().error_class(kind)

    def describe(self):
        return "%s from %s to %s on %s" % (
            self.name_prefix,
            current_user(),
            self.options.username,
            socket.gethostname(),
        )
