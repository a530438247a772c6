"""A private sshd (key-only auth) on a loopback or namespace address, plus ssh arguments.

The daemon runs in the foreground (`sshd -D`) as our direct child, so its PID is exactly
the PID we started; `stop()` signals only that PID and the per-connection sshd processes
it forked, and `start()` can bring the same daemon back on the same port.
"""

import ipaddress
import os
import re
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .keys import Keys
from .proc import (
    TestbedError,
    child_pids,
    pid_alive,
    proc_cmdline,
    proc_exe,
    run,
    terminate_child,
    terminate_pid,
)

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")


def free_port(address: str) -> int:
    """A TCP port that is free on `address` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


class Sshd:
    """One sshd instance; `name` makes its files unique within the key directory."""

    def __init__(
        self,
        keys: Keys,
        name: str,
        *,
        address: str = "127.0.0.1",
        port: int | None = None,
        netns: str | None = None,
        hostname: str | None = None,
        aliases: Sequence[str] = (),
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise TestbedError(f"sshd name {name!r}: use letters, digits, '-' and '_' only")
        if netns is None and not ipaddress.ip_address(address).is_loopback:
            raise TestbedError(
                f"sshd {name}: {address} is not a loopback address; outside a test "
                "namespace the testbed only listens on 127.0.0.0/8 or ::1"
            )
        self.keys = keys
        self.name = name
        self.address = address
        self.netns = netns
        self.hostname = hostname
        self.aliases = list(aliases)
        self._port = port
        self._fixed_port = port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        base = f"sshd-{name}"
        self.config_path = keys.private_dir / f"{base}.conf"
        self.log_path = keys.private_dir / f"{base}.log"
        self.stderr_path = keys.private_dir / f"{base}.stderr"
        self.pid_file = keys.private_dir / f"{base}.pid"
        self.known_hosts = keys.private_dir / f"known_hosts-{name}"

    def __repr__(self) -> str:
        where = f" netns={self.netns}" if self.netns else ""
        return f"<Sshd {self.name} {self.address}:{self._port} pid={self.pid}{where}>"

    @property
    def port(self) -> int:
        if self._port is None:
            raise TestbedError(f"sshd {self.name}: port not chosen yet (call start() first)")
        return self._port

    @property
    def pid(self) -> int | None:
        """PID of the listening daemon while it runs."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _config(self) -> str:
        return "\n".join(
            [
                f"ListenAddress {self.address}:{self.port}",
                f"HostKey {self.keys.host_key}",
                f"PidFile {self.pid_file}",
                f"AuthorizedKeysFile {self.keys.authorized_keys}",
                "AuthenticationMethods publickey",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "AllowUsers root mitogen__*",
                "UsePAM yes",
                "PermitUserEnvironment yes",
                "StrictModes yes",
                "MaxStartups 200:30:400",
                "MaxSessions 100",
                "UseDNS no",
                "PrintMotd no",
                "PrintLastLog no",
                "X11Forwarding no",
                "AllowTcpForwarding yes",
                "LogLevel VERBOSE",
                "Subsystem sftp /usr/lib/openssh/sftp-server",
                "",
            ]
        )

    def _argv(self) -> list[str]:
        sshd = [SSHD, "-D", "-f", str(self.config_path), "-E", str(self.log_path)]
        if self.netns is None:
            return sshd
        argv = ["ip", "netns", "exec", self.netns]
        if self.hostname:
            # A private UTS namespace so `hostname` on this host says who it is.
            argv += [
                "unshare",
                "--uts",
                "--",
                "/bin/sh",
                "-c",
                'hostname "$0" && exec "$@"',
            ]
            argv += [self.hostname]
        return argv + sshd

    def start(self, timeout: float = 10.0) -> None:
        """Start the daemon and wait until it answers with an SSH banner."""
        if self.running:
            return
        if not os.access(SSHD, os.X_OK):
            raise TestbedError(f"{SSHD} not found: run scripts/setup-system.sh as root first")
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if self._port is None or (not self._fixed_port and attempt > 0):
                self._port = free_port(self.address)
            try:
                self._start_once(timeout)
                break
            except TestbedError as exc:
                if attempt + 1 == attempts or "Address already in use" not in str(exc):
                    raise
        self._fixed_port = True  # a restart must come back on the same port
        self.keys.write_known_hosts(self.known_hosts, [self.address, *self.aliases], self.port)

    def _start_once(self, timeout: float) -> None:
        self.config_path.write_text(self._config())
        os.chmod(self.config_path, 0o600)
        run(
            [SSHD, "-t", "-f", str(self.config_path)],
            what=f"checking sshd {self.name} config",
        )
        self.log_path.unlink(missing_ok=True)
        self.pid_file.unlink(missing_ok=True)
        with open(self.stderr_path, "wb") as stderr:
            self._proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                self._proc = None
                raise TestbedError(f"sshd {self.name} exited during startup\n{self.diagnostics()}")
            if self._answers() and proc_exe(self._proc.pid) == SSHD:
                return
            if time.monotonic() > deadline:
                terminate_child(self._proc)
                self._proc = None
                raise TestbedError(
                    f"sshd {self.name} did not answer on {self.address}:{self.port} "
                    f"within {timeout}s\n{self.diagnostics()}"
                )
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.address, self.port), timeout=1) as sock:
                return sock.recv(8).startswith(b"SSH-2.0")
        except OSError:
            return False

    def diagnostics(self) -> str:
        """The tail of the daemon's stderr and log, for error messages."""
        parts = []
        for path in (self.stderr_path, self.log_path):
            if path.exists():
                text = "\n".join(path.read_text(errors="replace").splitlines()[-20:])
                if text:
                    parts.append(f"--- {path} ---\n{text}")
        return "\n".join(parts) or "(sshd wrote no output)"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the daemon and the per-connection sshds it forked, by exact PID."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            for child in child_pids(proc.pid):
                if proc_exe(child) == SSHD:
                    terminate_pid(child, timeout=timeout)
        terminate_child(proc, timeout=timeout)
        self.pid_file.unlink(missing_ok=True)

    def ssh_args(
        self,
        *,
        strict: bool = True,
        batch: bool = True,
        connect_timeout: int = 10,
    ) -> list[str]:
        """ssh client options for this server, without the destination or command.

        With `strict` (the default), host keys are checked against `known_hosts`, which
        trusts this server's key, so mitogen's check_host_keys='enforce' works too.
        """
        opts = {
            "IdentitiesOnly": "yes",
            "IdentityAgent": "none",
            "PasswordAuthentication": "no",
            "UserKnownHostsFile": str(self.known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "yes" if strict else "no",
            "UpdateHostKeys": "no",
            "BatchMode": "yes" if batch else "no",
            "ConnectTimeout": str(int(connect_timeout)),
            "LogLevel": "ERROR",
        }
        args = ["-F", "/dev/null", "-i", str(self.keys.client_key)]
        for key, value in opts.items():
            args += ["-o", f"{key}={value}"]
        return args + ["-p", str(self.port)]

    def ssh_command(
        self,
        user: str,
        command: str | None = None,
        *,
        tty: bool = False,
        strict: bool = True,
        batch: bool = True,
        connect_timeout: int = 10,
    ) -> list[str]:
        """Full argv: ssh [options] [-tt] -l USER ADDRESS [-- COMMAND]."""
        options = self.ssh_args(strict=strict, batch=batch, connect_timeout=connect_timeout)
        argv = ["ssh", *options]
        if tty:
            argv.append("-tt")
        argv += ["-l", user, self.address]
        if command is not None:
            argv += ["--", command]
        return argv

    def run(
        self,
        user: str,
        command: str,
        *,
        input: str | None = None,
        timeout: float = 30.0,
        check: bool = True,
        connect_timeout: int = 10,
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` (a shell string) as `user` over ssh; CommandError on failure."""
        argv = self.ssh_command(user, command, connect_timeout=connect_timeout)
        return run(
            argv,
            what=f"ssh as {user} to {self.name} ({self.address}:{self.port})",
            input=input,
            timeout=timeout,
            check=check,
        )


def reap_stale(private_dir: Path) -> None:
    """Stop sshd daemons left by a crashed run whose files are in `private_dir`.

    A PID is only signalled if its pid file is there and its command line names that
    run's own config file, so nothing else can be hit.
    """
    for pid_file in private_dir.glob("sshd-*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        # sshd rewrites its title to one string ("sshd: /usr/sbin/sshd -D -f CONF ...").
        config = f" -f {pid_file.with_suffix('.conf')} "
        if (
            pid_alive(pid)
            and proc_exe(pid) == SSHD
            and config in f" {' '.join(proc_cmdline(pid))} "
        ):
            terminate_pid(pid)
