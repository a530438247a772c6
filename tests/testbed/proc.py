"""Running commands and stopping processes by exact PID, with clear error messages.

Secrets are only ever passed to child processes on stdin, never on the command line,
and stdin is never included in an error message.
"""

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


class TestbedError(RuntimeError):
    """Something in the testbed could not be set up, used or torn down."""

    __test__ = False  # not a pytest test class, despite the name


class CommandError(TestbedError):
    """A command exited non-zero or timed out; carries argv, exit status and output."""

    def __init__(
        self,
        what: str,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str,
        stderr: str,
    ) -> None:
        self.what = what
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        status = "timed out" if returncode is None else f"exited {returncode}"
        parts = [f"{what}: command {status}: {shlex.join(self.argv)}"]
        if stderr.strip():
            parts.append(f"stderr:\n{stderr.rstrip()}")
        if stdout.strip():
            parts.append(f"stdout:\n{stdout.rstrip()}")
        super().__init__("\n".join(parts))


def run(
    argv: Sequence[str],
    *,
    what: str,
    input: str | None = None,
    timeout: float = 30.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run argv to completion, capturing text output.

    `what` says in plain words what the command is for; it starts any error message.
    `input` is fed on stdin (the only way secrets may reach a command).
    """
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(what, argv, None, _text(exc.stdout), _text(exc.stderr)) from None
    except FileNotFoundError as exc:
        raise TestbedError(
            f"{what}: {argv[0]} not found ({exc}); run scripts/setup-system.sh as root first"
        ) from None
    if check and proc.returncode != 0:
        raise CommandError(what, argv, proc.returncode, proc.stdout, proc.stderr)
    return proc


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data


def pid_alive(pid: int) -> bool:
    """True if a process (not a zombie) with this PID exists."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def proc_exe(pid: int) -> str | None:
    """The executable of a live process, or None if it is gone or unreadable."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def proc_cmdline(pid: int) -> list[str]:
    """The argv of a live process ([] if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def child_pids(pid: int) -> list[int]:
    """PIDs of the direct children of `pid`."""
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def terminate_pid(pid: int, *, timeout: float = 5.0) -> None:
    """Stop one process that is not our child: SIGTERM, then SIGKILL after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.02)
    raise TestbedError(f"process {pid} survived SIGKILL")


def terminate_child(proc: subprocess.Popen[bytes], *, timeout: float = 5.0) -> None:
    """Stop a child process we started: SIGTERM, SIGKILL after `timeout`, reap it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def pids_of_uid(uid: int) -> list[int]:
    """PIDs of live (non-zombie) processes whose real UID is `uid`."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = dict(
                line.split(":", 1) for line in (entry / "status").read_text().splitlines()
            )
        except (OSError, ValueError):
            continue
        if int(status["Uid"].split()[0]) == uid and not status["State"].strip().startswith("Z"):
            pids.append(int(entry.name))
    return pids
