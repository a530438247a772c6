"""Driving an interactive command (su, doas, ssh -tt) through a pty, with timeouts.

Everything read is kept as a transcript for error messages; strings registered as
secrets are replaced by '***' in it, in case a password is ever echoed back.
"""

import errno
import os
import re
import select
import subprocess
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from .proc import TestbedError, terminate_child


class PtyTimeout(TestbedError):
    """Expected output did not arrive in time."""


class PtyProcess:
    """A child process whose stdin, stdout, stderr and controlling TTY are one pty."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.timeout = timeout
        self._secrets: list[str] = []
        self._buffer = ""
        self._transcript = ""
        self._eof = False
        master, slave = os.openpty()
        try:
            # setsid(1) starts a session and makes the pty on stdin its controlling
            # terminal. It execs in place, as our child is no process group leader
            # (--wait covers the fork it would otherwise make), so the PID is exact.
            self._proc = subprocess.Popen(
                ["setsid", "--ctty", "--wait", *self.argv],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.fd = master

    @property
    def pid(self) -> int:
        return self._proc.pid

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def transcript(self) -> str:
        """Everything read so far, secrets masked."""
        text = self._transcript
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _read(self, deadline: float) -> bool:
        """Read what is available before `deadline`; False on timeout or EOF."""
        if self._eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([self.fd], [], [], remaining)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 4096)
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: the child side is closed
                raise
            data = b""
        if not data:
            self._eof = True
            return False
        text = data.decode(errors="replace")
        self._buffer += text
        self._transcript += text
        return True

    def expect(self, pattern: str | re.Pattern[str], timeout: float | None = None) -> re.Match[str]:
        """Wait until `pattern` (a regex) appears; consumes output up to the match end."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            match = regex.search(self._buffer)
            if match:
                self._buffer = self._buffer[match.end() :]
                return match
            if not self._read(deadline):
                why = "end of output" if self._eof else "timeout"
                raise PtyTimeout(
                    f"{why} waiting for {regex.pattern!r} from {self.argv}; "
                    f"output so far:\n{self.transcript}"
                )

    def sendline(self, text: str, *, secret: bool = False) -> None:
        """Type `text` and Enter. Mark passwords `secret` to keep them out of output."""
        if secret:
            self._secrets.append(text)
        os.write(self.fd, (text + "\r").encode())

    def read_rest(self, timeout: float | None = None) -> str:
        """All output until the child closes the pty (masked); PtyTimeout if it doesn't."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while self._read(deadline):
            pass
        if not self._eof:
            raise PtyTimeout(f"{self.argv} still running; output so far:\n{self.transcript}")
        rest, self._buffer = self._buffer, ""
        for secret in self._secrets:
            rest = rest.replace(secret, "***")
        return rest

    def wait(self, timeout: float | None = None) -> int:
        """Exit status of the child (waits up to `timeout`)."""
        return self._proc.wait(self.timeout if timeout is None else timeout)

    def close(self) -> None:
        """Stop the child if still running (exact PID) and close the pty."""
        terminate_child(self._proc)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
