"""Creating and removing the test accounts, their sudo/doas rules and random passwords.

Every account name starts with `mitogen__` so it can never collide with a real user.
Roles (default names):

- mitogen__plain       no sudo
- mitogen__sudo_nopw   sudo to ALL without a password
- mitogen__sudo_pw     sudo to ALL, asking for its own password every time
- mitogen__su_target   target of `su` (any account has a password; this one is for that)
- mitogen__doas        doas to root and to mitogen__plain, asking for its own password
- mitogen__pyXY        one per pyenv Python: `python`, `pythonX` and `pythonX.Y` on
                       its PATH (set in ~/.ssh/environment) run that version

Hardened sudo configurations, one account each (per-user `Defaults:USER` lines, so one
sudoers file serves all tests). Each may sudo to ALL asking for a password (every time),
and to mitogen__plain without one (`HARDENED_NOPW_TARGET`):

- mitogen__sudo_iolog          `log_output` (I/O logging into the testbed's directory)
- mitogen__sudo_usepty         `use_pty`
- mitogen__sudo_tty            `requiretty`
- mitogen__sudo_targetpw       `targetpw` (asks the target's password, e.g. su_target's)
- mitogen__sudo_lecture        `lecture=always`
- mitogen__sudo_prompt         `passprompt=` a prompt without the word "password" (sudo -p
                               still beats it, even with passprompt_override: sudo 1.9.13)

Passwords are random per instance, set through chpasswd on stdin, and only reachable as
`Account.password` (excluded from repr).
"""

import grp
import os
import pwd
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from . import etcfiles
from .proc import TestbedError, pid_alive, pids_of_uid, run, terminate_pid
from .pyenv import PythonInstall

#: Hardened sudo role -> its `Defaults:USER` settings (see the module docstring).
HARDENED_SUDO = {
    "sudo_iolog": "log_output",
    "sudo_usepty": "use_pty",
    "sudo_tty": "requiretty",
    "sudo_targetpw": "targetpw",
    "sudo_lecture": "lecture=always",
    "sudo_prompt": 'passprompt="{prompt}"',
}
#: The custom prompt of sudo_prompt (sudo expands %p to the user whose password it wants).
CUSTOM_PASSPROMPT = "Secret phrase for %p> "
#: Role the hardened accounts may become without a password.
HARDENED_NOPW_TARGET = "plain"
ROLES = ("plain", "sudo_nopw", "sudo_pw", "su_target", "doas", *HARDENED_SUDO)
DEFAULT_PREFIX = "mitogen__"
SUDOERS_DIR = Path("/etc/sudoers.d")
DOAS_CONF = Path("/etc/doas.conf")
HOSTS = Path("/etc/hosts")
_NAME = re.compile(r"^mitogen__[a-z0-9_]*$")
_OWNER = re.compile(r"^# owner pid=(\d+)$", re.MULTILINE)


@dataclass(frozen=True)
class Account:
    """One created account. `python` is set for the per-Python accounts only."""

    name: str
    role: str
    uid: int
    gid: int
    home: Path
    password: str = field(repr=False)
    python: PythonInstall | None = None


@dataclass(frozen=True)
class _Spec:
    name: str
    role: str
    python: PythonInstall | None


class Accounts:
    """The set of test accounts of one testbed instance.

    `prefix` must start with 'mitogen__'; a second concurrent instance needs its own
    prefix (e.g. 'mitogen__x_'). `tag` names this instance's blocks in /etc/doas.conf
    and /etc/hosts. `iolog_dir` (created here, removed with the accounts) receives the
    I/O logs sudo writes for the `log_output` account.
    """

    def __init__(
        self,
        *,
        tag: str,
        prefix: str = DEFAULT_PREFIX,
        pythons: Sequence[PythonInstall] = (),
        authorized_key: str = "",
        iolog_dir: Path,
    ) -> None:
        if not _NAME.match(prefix):
            raise TestbedError(f"account prefix {prefix!r} must match {_NAME.pattern}")
        self.prefix = prefix
        self.tag = tag
        self.authorized_key = authorized_key
        self._specs = [_Spec(prefix + role, role, None) for role in ROLES]
        self._specs += [_Spec(f"{prefix}py{py.tag}", f"py{py.tag}", py) for py in pythons]
        for spec in self._specs:
            if len(spec.name) > 32:
                raise TestbedError(f"account name {spec.name!r} is longer than 32 characters")
        suffix = prefix.removeprefix(DEFAULT_PREFIX).strip("_")
        self.sudoers_file = SUDOERS_DIR / ("mitogen-testbed" + (f"-{suffix}" if suffix else ""))
        self.iolog_dir = iolog_dir
        self._accounts: dict[str, Account] = {}

    @property
    def names(self) -> list[str]:
        """All account names this instance manages (created or not)."""
        return [spec.name for spec in self._specs]

    def __iter__(self) -> Iterator[Account]:
        return iter(self._accounts.values())

    def __len__(self) -> int:
        return len(self._accounts)

    def __getitem__(self, key: str) -> Account:
        """Look up by role ('sudo_pw', 'py39') or by full name ('mitogen__sudo_pw')."""
        if key in self._accounts:
            return self._accounts[key]
        if self.prefix + key in self._accounts:
            return self._accounts[self.prefix + key]
        raise KeyError(f"no test account {key!r} (have: {', '.join(self._accounts)})")

    @property
    def plain(self) -> Account:
        return self["plain"]

    @property
    def sudo_nopw(self) -> Account:
        return self["sudo_nopw"]

    @property
    def sudo_pw(self) -> Account:
        return self["sudo_pw"]

    @property
    def su_target(self) -> Account:
        return self["su_target"]

    @property
    def doas(self) -> Account:
        return self["doas"]

    @property
    def pythons(self) -> dict[str, Account]:
        """Per-Python accounts keyed by short version, e.g. {'3.9': Account(...)}."""
        return {a.python.short: a for a in self._accounts.values() if a.python is not None}

    def python(self, version: str) -> Account:
        """The account whose python is `version` ('3.9')."""
        try:
            return self.pythons[version]
        except KeyError:
            raise KeyError(
                f"no test account for Python {version} (have: {', '.join(self.pythons)})"
            ) from None

    def create(self) -> None:
        """Create (or re-create, if left by a crashed run) all accounts and rules."""
        for spec in self._specs:
            if spec.python is not None:
                _check_traversable(spec.name, spec.python.executable)
        for spec in self._specs:
            _delete_user(spec.name)
            run(
                [
                    "useradd",
                    "--create-home",
                    "--home-dir",
                    f"/home/{spec.name}",
                    "--shell",
                    "/bin/bash",
                    "--user-group",
                    "--comment",
                    "mitogen testbed",
                    spec.name,
                ],
                what=f"creating test account {spec.name}",
            )
            info = pwd.getpwnam(spec.name)
            self._accounts[spec.name] = Account(
                name=spec.name,
                role=spec.role,
                uid=info.pw_uid,
                gid=info.pw_gid,
                home=Path(info.pw_dir),
                password=secrets.token_urlsafe(18),
                python=spec.python,
            )
        run(
            ["chpasswd"],
            what="setting test account passwords",
            input="".join(f"{a.name}:{a.password}\n" for a in self._accounts.values()),
        )
        for account in self._accounts.values():
            self._setup_home(account)
        self._install_sudoers()
        self._install_doas()
        self._install_hosts()

    def _setup_home(self, account: Account) -> None:
        ssh_dir = account.home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        made = [ssh_dir]
        if self.authorized_key:
            keys = ssh_dir / "authorized_keys"
            keys.write_text(self.authorized_key + "\n")
            made.append(keys)
        if account.python is not None:
            bin_dir = account.home / "bin"
            bin_dir.mkdir(exist_ok=True)
            major = account.python.version[0]
            for link in ("python", f"python{major}", f"python{account.python.short}"):
                (bin_dir / link).symlink_to(account.python.executable)
            env = ssh_dir / "environment"
            env.write_text(f"PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin\n")
            made += [bin_dir, env, *bin_dir.iterdir()]
        for path in made:
            os.chown(path, account.uid, account.gid, follow_symlinks=False)
            if not path.is_symlink():
                os.chmod(path, 0o700 if path.is_dir() else 0o600)

    def _install_sudoers(self) -> None:
        nopw, pw = self.sudo_nopw.name, self.sudo_pw.name
        lines = [
            "# Managed by the mitogen test suite (tests/testbed); removed on teardown",
            f"# owner pid={os.getpid()}",
            f"Defaults:{pw} timestamp_timeout=0",
            f"{nopw} ALL=(ALL:ALL) NOPASSWD: ALL",
            f"{pw} ALL=(ALL:ALL) ALL",
        ]
        target = self[HARDENED_NOPW_TARGET].name
        self.iolog_dir.mkdir(mode=0o700, exist_ok=True)
        for role, settings in HARDENED_SUDO.items():
            who = self[role].name
            lines += [
                f"Defaults:{who} timestamp_timeout=0, iolog_dir={self.iolog_dir}",
                f"Defaults:{who} " + settings.format(prompt=CUSTOM_PASSPROMPT),
                f"{who} ALL=(ALL:ALL) ALL",
                f"{who} ALL=({target}) NOPASSWD: ALL",
            ]
        text = "\n".join(lines) + "\n"
        # sudo's @includedir skips names with a dot, so the file is inert until renamed.
        tmp = self.sudoers_file.with_name(self.sudoers_file.name + ".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o440)
        try:
            run(["visudo", "-cf", str(tmp)], what=f"validating {self.sudoers_file}")
            os.replace(tmp, self.sudoers_file)
        finally:
            tmp.unlink(missing_ok=True)

    def _install_doas(self) -> None:
        who = self.doas.name
        rules = [f"permit {who} as root", f"permit {who} as {self.plain.name}"]
        etcfiles.add_block(DOAS_CONF, self.tag, rules)
        run(["doas", "-C", str(DOAS_CONF)], what=f"validating {DOAS_CONF}")

    def _install_hosts(self) -> None:
        # sudo resolves the local hostname and complains if it cannot.
        name = socket.gethostname()
        try:
            socket.getaddrinfo(name, None)
        except socket.gaierror:
            etcfiles.add_block(HOSTS, self.tag, [f"127.0.1.1 {name}"])

    def remove(self) -> None:
        """Remove accounts (with homes), the sudoers file and our doas/hosts blocks.

        Runs every step even if one fails, then raises one error listing all failures.
        """
        errors: list[str] = []
        steps: list[tuple[str, Callable[[], object]]] = [
            (
                "removing doas rules",
                partial(etcfiles.remove_block, DOAS_CONF, self.tag),
            ),
            (
                "removing /etc/hosts entries",
                partial(etcfiles.remove_block, HOSTS, self.tag),
            ),
            (
                "removing sudoers file",
                partial(self.sudoers_file.unlink, missing_ok=True),
            ),
            (
                "removing sudo I/O logs",
                partial(shutil.rmtree, self.iolog_dir, ignore_errors=True),
            ),
        ]
        steps += [(f"removing account {n}", partial(_delete_user, n)) for n in self.names]
        for what, step in steps:
            try:
                step()
            except (OSError, TestbedError) as exc:
                errors.append(f"{what}: {exc}")
        self._accounts.clear()
        if errors:
            raise TestbedError("account teardown failed:\n" + "\n".join(errors))


def reap_stale_sudoers() -> None:
    """Remove testbed sudoers files whose owning process is gone (crashed runs)."""
    for path in SUDOERS_DIR.glob("mitogen-testbed*"):
        match = _OWNER.search(path.read_text())
        if match and not pid_alive(int(match[1])):
            path.unlink()


def _delete_user(name: str) -> None:
    """Delete a test account with its group and home, first stopping its processes.

    Also clears a home directory or group left without the account by a crashed run.
    """
    if not name.startswith(DEFAULT_PREFIX):
        raise TestbedError(f"refusing to delete {name!r}: not a test account")
    try:
        uid: int | None = pwd.getpwnam(name).pw_uid
    except KeyError:
        uid = None
    if uid is not None:
        for pid in pids_of_uid(uid):
            terminate_pid(pid)
        run(
            ["userdel", "--remove", "--force", name],
            what=f"deleting test account {name}",
        )
    try:
        grp.getgrnam(name)
    except KeyError:
        pass
    else:
        run(["groupdel", name], what=f"deleting test group {name}")
    home = Path("/home") / name
    if home.exists():
        shutil.rmtree(home)


def _check_traversable(account: str, executable: Path) -> None:
    """Fail early if an unprivileged account could not run `executable`."""
    for parent in reversed(executable.parents):
        if not parent.stat().st_mode & 0o001:
            raise TestbedError(
                f"account {account} cannot reach {executable}: {parent} is mode "
                f"{parent.stat().st_mode & 0o777:o}; run scripts/setup-system.sh "
                f"(it does chmod 711 /root)"
            )
