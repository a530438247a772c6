"""Run ansible-playbook against the testbed and compare runs made with different strategies.

`Harness` writes an ansible.cfg and an inventory for the testbed's sshd and accounts,
runs `ansible-playbook` as a subprocess (strategy chosen by ANSIBLE_STRATEGY), and reads
back the per-task results written by the `jsonl_results` callback plus a snapshot of the
files the playbook left on the target (and fetched to the controller). `compare_runs()`
lists every difference between two runs; `Harness.compare()` runs a playbook with two
strategies (by default at the same time, each in its own directories) and compares them,
and checks (served.py) that every result of a Mitogen strategy was served by Mitogen
(tasks expected to fall back to stock are declared by the caller) and every result of a
builtin strategy by stock.

Playbook variables set by the harness: `workdir` (per host, owned by the host's account,
empty at the start), `workdir_base` (its parent), `fetch_dir` (a controller directory).
Inventory: group `testbed` with hosts `plain`, `sudo_nopw`, `sudo_pw` (become password
set), group `hardened` with one host per hardened sudo account (named by role, e.g.
`sudo_tty`; become password set: the target's for `sudo_targetpw`, which becomes
mitogen__su_target) and `sudo_askpass` (sudo_pw's account, no become password: runs pass
`become_password`, typed at `--ask-become-pass`), group `unreachable` with host `dead`
(a closed port).
Collections: `collections_path` has the `ansible-collections` and `container-collections`
directories of the venv whose ansible-playbook runs, those scripts/setup-ansible.sh made
(community.general and ansible.posix, for collection_modules.yml; community.docker,
containers.podman and kubernetes.core, for the stock container connections).
"""

from __future__ import annotations

import difflib
import grp
import hashlib
import json
import os
import pwd
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.ansible import served
from tests.testbed import Testbed
from tests.testbed.accounts import HARDENED_SUDO
from tests.testbed.sshd import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PLAYBOOKS = HERE / "playbooks"
PLUGINS = HERE / "plugins"
STRATEGY_DIRS = (REPO / "ansible_mitogen" / "plugins" / "strategy", PLUGINS / "strategy")

#: Hosts of the `testbed` group: inventory name -> testbed account role.
HOST_ROLES = {"plain": "plain", "sudo_nopw": "sudo_nopw", "sudo_pw": "sudo_pw"}
#: Hosts of the `hardened` group: inventory name -> testbed account role.
HARDENED_HOST_ROLES = {**{role: role for role in HARDENED_SUDO}, "sudo_askpass": "sudo_pw"}
#: What ansible-playbook asks on its terminal for `--ask-become-pass`.
BECOME_PASS_PROMPT = re.compile(rb"BECOME password: $")
#: Python every test host runs modules with.
TARGET_PYTHON = "3.12"
#: Where scripts/setup-ansible.sh puts collections, in the venv of the ansible-core used.
COLLECTIONS_DIRS = ("ansible-collections", "container-collections")
#: Files larger than this are compared by digest instead of content.
INLINE_CONTENT = 64 * 1024
#: Remote temporary directory names carry a time stamp and PIDs.
_ANSIBLE_TMP = re.compile(r"ansible-tmp-[0-9.]+-[0-9]+-[0-9]+")
_ANSIBALLZ = re.compile(r"AnsiballZ_[A-Za-z0-9_]+\.py")
#: Controller temporary directories (e.g. in template diff headers).
_LOCAL_TMP = re.compile(r"ansible-local-[^/]+/tmp[^/]+")
#: What the ssh client prints when a `-tt` session (stock `raw`) ends.
_SSH_CLOSED = re.compile(r"Shared connection to \S+ closed\.\r?\n?")


class HarnessError(AssertionError):
    """ansible-playbook could not be run or gave unusable output."""


@dataclass
class PlaybookRun:
    """One finished ansible-playbook run; `records` are the callback's JSON lines and
    `files` the snapshot (path -> description), both already normalised."""

    playbook: Path
    strategy: str
    rc: int
    seconds: float
    directory: Path
    records: list[dict[str, Any]]
    files: dict[str, dict[str, Any]]

    def served_problems(self, fallback: Iterable[str] = ()) -> list[str]:
        """Results not served as this run's strategy should serve them: through Mitogen
        for Mitogen's strategies (stock for the tasks named in `fallback`), through stock
        for the builtin ones; nothing is checked for other strategies."""
        if self.strategy in served.MITOGEN_STRATEGIES:
            return served.check_mitogen(self.records, set(fallback))
        if self.strategy in BUILTIN_STRATEGIES:
            return served.check_stock(self.records)
        return []

    @property
    def recorded(self) -> list[dict[str, Any]]:
        """What the recording test plugins logged (runs made with `recording=True`)."""
        return read_records(self.directory / "recording.jsonl")

    @property
    def stdout(self) -> str:
        return (self.directory / "stdout").read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return (self.directory / "stderr").read_text(errors="replace")

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == kind]

    @property
    def results(self) -> list[dict[str, Any]]:
        return self.of_type("result")

    def results_by_host(self) -> dict[str, list[dict[str, Any]]]:
        """Each host's results in the order it produced them (hosts interleave freely)."""
        by_host: dict[str, list[dict[str, Any]]] = {}
        for record in self.results:
            by_host.setdefault(record["host"], []).append(record)
        return by_host

    def result(self, host: str, task: str) -> dict[str, Any]:
        """The one final result of `task` on `host` (not an item, not a retry)."""
        found = [
            r
            for r in self.results
            if r["host"] == host and r["task"] == task and r["event"] in FINAL_EVENTS
        ]
        if len(found) != 1:
            raise HarnessError(
                f"{len(found)} results for task {task!r} on {host}\n{self.describe()}"
            )
        return found[0]

    @property
    def stats(self) -> dict[str, Any]:
        found = self.of_type("stats")
        if len(found) != 1:
            raise HarnessError(f"no play recap recorded\n{self.describe()}")
        return found[0]

    @property
    def hooked(self) -> bool:
        """Were ansible_mitogen's loader hooks installed when the run ended?"""
        return bool(self.stats["hooked"])

    def describe(self, tail: int = 40) -> str:
        """Exit status and the end of ansible-playbook's output, for failure messages."""
        out = "\n".join(self.stdout.splitlines()[-tail:])
        err = "\n".join(self.stderr.splitlines()[-tail:])
        return (
            f"ansible-playbook {self.playbook.name} with strategy {self.strategy}: "
            f"exit {self.rc} after {self.seconds:.1f}s (logs in {self.directory})\n"
            f"--- stdout (end)\n{out}\n--- stderr (end)\n{err}"
        )

    def check_strategy(self) -> None:
        """Fail unless every play ran with the requested strategy, and the loader hooks
        were installed exactly when that strategy is one of ours."""
        plays = self.of_type("play")
        if not plays:
            raise HarnessError(f"no play started\n{self.describe()}")
        wrong = sorted({p["strategy"] for p in plays} - {self.strategy})
        if wrong:
            raise HarnessError(f"plays ran with strategy {wrong}, not {self.strategy}")
        if self.hooked != (self.strategy not in BUILTIN_STRATEGIES):
            raise HarnessError(
                f"strategy {self.strategy}: loader hooks installed={self.hooked}\n{self.describe()}"
            )


BUILTIN_STRATEGIES = frozenset({"linear", "free", "host_pinned", "debug"})
#: Result events that end a task on a host (not loop items, not `until` retries).
FINAL_EVENTS = frozenset({"ok", "failed", "skipped", "unreachable"})


@dataclass
class Comparison:
    baseline: PlaybookRun
    candidate: PlaybookRun
    differences: list[str] = field(default_factory=list)
    #: Results not served by what their run's strategy should use (PlaybookRun.served_problems).
    unserved: list[str] = field(default_factory=list)

    def assert_same(self) -> None:
        parts = []
        if self.differences:
            parts.append(
                f"{self.candidate.strategy} differs from {self.baseline.strategy} in "
                f"{len(self.differences)} ways:\n  " + "\n  ".join(self.differences[:40])
            )
        if self.unserved:
            parts.append(
                f"{len(self.unserved)} results were not served as expected (stock for "
                f"{self.baseline.strategy}, Mitogen for {self.candidate.strategy} unless "
                "declared to fall back):\n  " + "\n  ".join(self.unserved[:40])
            )
        if parts:
            raise AssertionError(
                f"{self.candidate.playbook.name}: "
                + "\n\n".join(parts)
                + f"\n\nbaseline: {self.baseline.describe(10)}"
                + f"\n\ncandidate: {self.candidate.describe(10)}"
            )


class Harness:
    """ansible-playbook runs against one started Testbed; `workspace` holds every run's
    config, logs, results and fetched files."""

    def __init__(self, testbed: Testbed, workspace: Path, bin_dir: Path | None = None) -> None:
        self.testbed = testbed
        self.workspace = workspace
        self.bin_dir = bin_dir or Path(sys.executable).parent
        self.ansible_playbook = self.bin_dir / "ansible-playbook"
        if not os.access(self.ansible_playbook, os.X_OK):
            raise HarnessError(f"{self.ansible_playbook} not found: run scripts/setup-ansible.sh")
        self._runs = 0
        #: Collections from the `ansible` package (collections_path: those that exist).
        self.collections_dir, self.container_collections_dir = (
            self.bin_dir.parent / name for name in COLLECTIONS_DIRS
        )
        self.collections_dirs = [
            d for d in (self.collections_dir, self.container_collections_dir) if d.is_dir()
        ]
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.inventory_path = self.workspace / "inventory.yml"
        self.inventory_path.write_text(json.dumps(self._inventory(), indent=2))
        self.config_path = self.workspace / "ansible.cfg"
        self.config_path.write_text(self._config())

    def account(self, host: str) -> Any:
        return self.testbed.accounts[{**HOST_ROLES, **HARDENED_HOST_ROLES}[host]]

    def _python(self) -> str:
        for python in self.testbed.pythons:
            if python.short == TARGET_PYTHON:
                return str(python.executable)
        raise HarnessError(f"the testbed has no Python {TARGET_PYTHON} for the targets")

    def _inventory(self) -> dict[str, Any]:
        sshd = self.testbed.sshd
        common = {
            "ansible_host": sshd.address,
            "ansible_port": sshd.port,
            "ansible_ssh_private_key_file": str(self.testbed.keys.client_key),
            "ansible_ssh_common_args": (
                f"-o UserKnownHostsFile={sshd.known_hosts} "
                "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
            ),
            "ansible_python_interpreter": self._python(),
        }
        hosts: dict[str, dict[str, Any]] = {}
        for host in HOST_ROLES:
            hosts[host] = {"ansible_user": self.account(host).name}
        hosts["sudo_pw"]["ansible_become_password"] = self.account("sudo_pw").password
        hosts["sudo_pw"]["sudo_pw_password"] = self.account("sudo_pw").password
        hardened: dict[str, dict[str, Any]] = {}
        for host in HARDENED_HOST_ROLES:
            hardened[host] = {"ansible_user": self.account(host).name}
            if host in HARDENED_SUDO:
                target = "su_target" if host == "sudo_targetpw" else host
                hardened[host]["ansible_become_password"] = self.testbed.accounts[target].password
        return {
            "all": {
                "children": {
                    "testbed": {
                        "hosts": hosts,
                        "vars": {
                            **common,
                            "workdir": "{{ workdir_base }}/{{ inventory_hostname }}",
                        },
                    },
                    "hardened": {
                        "hosts": hardened,
                        "vars": {
                            **common,
                            "workdir": "{{ workdir_base }}/{{ inventory_hostname }}",
                        },
                    },
                    "unreachable": {
                        "hosts": {
                            "dead": {
                                "ansible_user": self.account("plain").name,
                                "ansible_port": free_port(sshd.address),
                            }
                        },
                        "vars": {k: v for k, v in common.items() if k != "ansible_port"},
                    },
                }
            }
        }

    def _config(self) -> str:
        return "\n".join(
            [
                "[defaults]",
                f"inventory = {self.inventory_path}",
                "strategy_plugins = " + ":".join(str(d) for d in STRATEGY_DIRS),
                f"callback_plugins = {PLUGINS / 'callback'}",
                "callbacks_enabled = jsonl_results, transport_probe",
                "retry_files_enabled = False",
                "host_key_checking = True",
                "nocolor = True",
                "forks = 5",
                "timeout = 10",
                *(
                    ["collections_path = " + ":".join(map(str, self.collections_dirs))]
                    if self.collections_dirs
                    else []
                ),
                "",
            ]
        )

    def run(
        self,
        playbook: str | Path,
        strategy: str = "linear",
        *,
        extra_vars: Mapping[str, Any] | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        recording: bool = False,
        command: Sequence[str] = (),
        become_password: str | None = None,
        timeout: float = 240.0,
    ) -> PlaybookRun:
        """Run one playbook (a name under playbooks/ or a path) to completion.

        `recording=True` makes the recording test plugins usable (repository on
        PYTHONPATH, plugins/connection on the connection plugin path) and sends their log
        to `PlaybookRun.recorded`. `command` replaces `ansible-playbook` (the arguments
        follow it). `become_password` runs it with `--ask-become-pass` on a terminal,
        where it is typed at the prompt.
        """
        return self.start(
            playbook,
            strategy,
            extra_vars=extra_vars,
            args=args,
            env=env,
            recording=recording,
            command=command,
            become_password=become_password,
        ).wait(timeout)

    def start(
        self,
        playbook: str | Path,
        strategy: str = "linear",
        *,
        extra_vars: Mapping[str, Any] | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        recording: bool = False,
        command: Sequence[str] = (),
        become_password: str | None = None,
    ) -> RunningPlaybook:
        """Start one playbook run; `.wait()` on the result finishes it."""
        path = Path(playbook) if os.sep in str(playbook) else PLAYBOOKS / playbook
        if not path.is_file():
            raise HarnessError(f"no playbook {path}")
        self._runs += 1
        directory = self.workspace / f"{self._runs:03d}-{path.stem}-{strategy}"
        directory.mkdir()
        return RunningPlaybook(
            self,
            path,
            strategy,
            directory,
            extra_vars=dict(extra_vars or {}),
            args=list(args),
            env=dict(env or {}),
            recording=recording,
            command=list(command) or [str(self.ansible_playbook)],
            become_password=become_password,
        )

    def compare(
        self,
        playbook: str | Path,
        baseline: str = "linear",
        candidate: str = "mitogen_linear",
        *,
        parallel: bool = True,
        ignore: Iterable[str] = (),
        fallback: Iterable[str] = (),
        timeout: float = 240.0,
        **kwargs: Any,
    ) -> Comparison:
        """Run `playbook` with both strategies and compare (raises only if a run could not
        be made; differences are in the result). `fallback` names the tasks the candidate
        is expected to hand to stock Ansible; every other result must be Mitogen's."""
        if parallel:
            first = self.start(playbook, baseline, **kwargs)
            second = self.start(playbook, candidate, **kwargs)
            runs = (first.wait(timeout), second.wait(timeout))
        else:
            runs = (
                self.run(playbook, baseline, timeout=timeout, **kwargs),
                self.run(playbook, candidate, timeout=timeout, **kwargs),
            )
        for run in runs:
            run.check_strategy()
        return make_comparison(*runs, ignore=ignore, fallback=fallback)


class RunningPlaybook:
    """An ansible-playbook process started by Harness.start()."""

    def __init__(
        self,
        harness: Harness,
        playbook: Path,
        strategy: str,
        directory: Path,
        *,
        extra_vars: dict[str, Any],
        args: list[str],
        env: dict[str, str],
        recording: bool,
        command: list[str],
        become_password: str | None = None,
    ) -> None:
        self.harness = harness
        self.playbook = playbook
        self.strategy = strategy
        self.directory = directory
        self.results_path = directory / "results.jsonl"
        self.transport_path = directory / served.TRANSPORT_FILE
        self.recording_log = directory / "recording.jsonl"
        self.fetch_dir = directory / "fetched"
        self.fetch_dir.mkdir()
        # Short paths: ssh control sockets must fit in sun_path (108 bytes).
        self.control_dir = Path(tempfile.mkdtemp(prefix="am-cp-"))
        self.workdir_base = Path(tempfile.mkdtemp(prefix="mitogen-ansible-"))
        os.chmod(self.workdir_base, 0o755)
        for host in [*HOST_ROLES, *HARDENED_HOST_ROLES]:
            account = harness.account(host)
            workdir = self.workdir_base / host
            workdir.mkdir(mode=0o755)
            os.chown(workdir, account.uid, account.gid)
        self.placeholders = {
            str(self.workdir_base): "<WORKDIR>",
            str(self.fetch_dir): "<FETCH>",
            str(directory): "<RUN>",
            str(self.control_dir): "<CONTROL>",
        }
        variables = {
            "workdir_base": str(self.workdir_base),
            "fetch_dir": str(self.fetch_dir),
            "pythons": {p.short: str(p.executable) for p in harness.testbed.pythons},
            **extra_vars,
        }
        argv = [
            *command,
            "--extra-vars",
            json.dumps(variables),
            *args,
            str(playbook),
        ]
        #: pty master of the run's terminal, if it has one (kept open until it ends).
        self.terminal: int | None = None
        stdin = subprocess.DEVNULL
        if become_password is not None:
            # setsid(1) makes the pty on stdin the controlling terminal getpass() reads.
            argv = ["setsid", "--ctty", "--wait", *argv[:-1], "--ask-become-pass", argv[-1]]
            self.terminal, stdin = os.openpty()
        self.began = time.monotonic()
        with open(directory / "stdout", "wb") as out, open(directory / "stderr", "wb") as err:
            try:
                self.proc = subprocess.Popen(
                    argv,
                    cwd=directory,
                    env=self._environment(env, recording),
                    stdin=stdin,
                    stdout=out,
                    stderr=err,
                    start_new_session=self.terminal is None,
                )
            except BaseException:
                if self.terminal is not None:
                    os.close(self.terminal)
                raise
            finally:
                if self.terminal is not None:
                    os.close(stdin)
        if become_password is not None:
            self._type_become_password(become_password)

    def _type_become_password(self, password: str, timeout: float = 60.0) -> None:
        """Wait for `--ask-become-pass`'s prompt on the run's terminal and answer it."""
        assert self.terminal is not None
        seen = b""
        deadline = time.monotonic() + timeout
        while not BECOME_PASS_PROMPT.search(seen):
            remaining = max(0.0, deadline - time.monotonic())
            chunk = b""
            if select.select([self.terminal], [], [], remaining)[0]:
                try:
                    chunk = os.read(self.terminal, 4096)
                except OSError:  # EIO: ansible-playbook exited
                    pass
            if not chunk:
                if self.proc.poll() is None:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                raise HarnessError(
                    f"no become password prompt; the terminal showed {seen!r}\n"
                    + self.wait().describe()
                )
            seen += chunk
        os.write(self.terminal, password.encode() + b"\n")

    def _environment(self, extra: Mapping[str, str], recording: bool) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ANSIBLE_", "MITOGEN_TEST_")) and k != "PYTHONPATH"
        }
        env.update(
            ANSIBLE_CONFIG=str(self.harness.config_path),
            ANSIBLE_STRATEGY=self.strategy,
            ANSIBLE_LOCAL_TEMP=str(self.directory / "local_tmp"),
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.control_dir),
            MITOGEN_TEST_RESULTS=str(self.results_path),
            MITOGEN_TEST_TRANSPORT=str(self.transport_path),
        )
        if recording:
            env.update(
                PYTHONPATH=str(REPO),
                ANSIBLE_CONNECTION_PLUGINS=str(PLUGINS / "connection"),
                MITOGEN_TEST_RECORDING_LOG=str(self.recording_log),
            )
        env.update(extra)
        return env

    def wait(self, timeout: float = 240.0) -> PlaybookRun:
        """Wait for the run (killing it after `timeout` seconds), snapshot the files it
        left, clean up and return the result."""
        try:
            try:
                rc = self.proc.wait(timeout=max(0.0, self.began + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise HarnessError(
                    f"ansible-playbook {self.playbook.name} ({self.strategy}) did not finish in "
                    f"{timeout:.0f}s; logs in {self.directory}"
                ) from None
            seconds = time.monotonic() - self.began
            files = {
                **snapshot(self.workdir_base, "target", self.placeholders),
                **snapshot(self.fetch_dir, "fetched", self.placeholders),
            }
            records = normalise(read_records(self.results_path), self.placeholders)
            served.join(records, read_records(self.transport_path))
        finally:
            if self.terminal is not None:
                os.close(self.terminal)
                self.terminal = None
            self._close_control_masters()
            shutil.rmtree(self.control_dir, ignore_errors=True)
            shutil.rmtree(self.workdir_base, ignore_errors=True)
        return PlaybookRun(
            self.playbook, self.strategy, rc, seconds, self.directory, records, files
        )

    def _close_control_masters(self) -> None:
        """Stop the ssh ControlPersist masters the run left behind."""
        if not self.control_dir.is_dir():
            return
        for socket_path in self.control_dir.iterdir():
            subprocess.run(
                ["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "placeholder"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
                check=False,
            )


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fp:
        return [json.loads(line) for line in fp if line.strip()]


def normalise(value: Any, placeholders: Mapping[str, str]) -> Any:
    """`value` with run-specific paths replaced by placeholders, recursively."""
    if isinstance(value, str):
        for text, placeholder in placeholders.items():
            value = value.replace(text, placeholder)
        value = _ANSIBLE_TMP.sub("ansible-tmp-<X>", value)
        value = _LOCAL_TMP.sub("ansible-local-<X>/tmp<X>", value)
        value = _SSH_CLOSED.sub("", value)
        return _ANSIBALLZ.sub("AnsiballZ_<X>.py", value)
    if isinstance(value, dict):
        return {k: normalise(v, placeholders) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v, placeholders) for v in value]
    return value


def _name(getter: Any, ident: int) -> str:
    try:
        return str(getter(ident)[0])
    except KeyError:
        return str(ident)


def snapshot(root: Path, label: str, placeholders: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Every file, directory and symlink under `root`: type, mode, owner, group and
    content (text with run-specific paths replaced, or a digest if large or binary)."""
    found: dict[str, dict[str, Any]] = {}
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            info = path.lstat()
            entry: dict[str, Any] = {
                "mode": oct(stat.S_IMODE(info.st_mode)),
                "owner": _name(pwd.getpwuid, info.st_uid),
                "group": _name(grp.getgrgid, info.st_gid),
            }
            if stat.S_ISLNK(info.st_mode):
                entry.update(type="link", target=normalise(os.readlink(path), placeholders))
            elif stat.S_ISDIR(info.st_mode):
                entry["type"] = "dir"
            elif stat.S_ISREG(info.st_mode):
                entry.update(type="file", **_content(path, info.st_size, placeholders))
            else:
                entry["type"] = "other"
            found[f"{label}:{normalise(str(path.relative_to(root)), placeholders)}"] = entry
    return found


def _content(path: Path, size: int, placeholders: Mapping[str, str]) -> dict[str, Any]:
    data = path.read_bytes()
    if size <= INLINE_CONTENT:
        try:
            return {"content": normalise(data.decode("utf-8"), placeholders)}
        except UnicodeDecodeError:
            pass
    return {"size": size, "sha256": hashlib.sha256(data).hexdigest()}


def compare_runs(
    baseline: PlaybookRun, candidate: PlaybookRun, *, ignore: Iterable[str] = ()
) -> list[str]:
    """Every difference between two runs: exit status, play recap, per-host task results
    (in order, all recorded fields except those in `ignore`) and files left behind."""
    ignored = set(ignore)
    a, b = baseline.strategy, candidate.strategy
    if a == b:
        a, b = f"{a}(1)", f"{b}(2)"
    diffs: list[str] = []
    if baseline.rc != candidate.rc:
        diffs.append(f"exit status: {a} {baseline.rc}, {b} {candidate.rc}")
    recap_a, recap_b = _recap(baseline), _recap(candidate)
    for host in sorted(set(recap_a) | set(recap_b)):
        if recap_a.get(host) != recap_b.get(host):
            diffs.append(f"recap {host}: {a} {recap_a.get(host)}, {b} {recap_b.get(host)}")
    results_a, results_b = baseline.results_by_host(), candidate.results_by_host()
    for host in sorted(set(results_a) | set(results_b)):
        diffs += _compare_results(
            host, results_a.get(host, []), results_b.get(host, []), a, b, ignored
        )
    for path in sorted(set(baseline.files) | set(candidate.files)):
        fa, fb = baseline.files.get(path), candidate.files.get(path)
        if fa is None or fb is None:
            diffs.append(f"file {path}: only after {a if fb is None else b}")
            continue
        for key in sorted(set(fa) | set(fb)):
            if fa.get(key) != fb.get(key):
                diffs.append(
                    f"file {path}: {key}: {a} {_short(fa.get(key))}, {b} {_short(fb.get(key))}"
                )
    return diffs


def make_comparison(
    baseline: PlaybookRun,
    candidate: PlaybookRun,
    *,
    ignore: Iterable[str] = (),
    fallback: Iterable[str] = (),
) -> Comparison:
    """The comparison of two finished runs: their differences (compare_runs) and the
    results each strategy did not serve as it should (`fallback`: the candidate's tasks
    expected to fall back to stock)."""
    unserved = baseline.served_problems() + candidate.served_problems(fallback)
    return Comparison(
        baseline,
        candidate,
        differences=compare_runs(baseline, candidate, ignore=ignore),
        unserved=unserved,
    )


def _recap(run: PlaybookRun) -> dict[str, Any]:
    found = run.of_type("stats")
    return found[0]["hosts"] if found else {}


def _compare_results(
    host: str,
    first: list[dict[str, Any]],
    second: list[dict[str, Any]],
    a: str,
    b: str,
    ignored: set[str],
) -> list[str]:
    """Align the two result sequences by (task, item) so one extra or missing result is
    reported as such, then compare the fields of aligned results."""
    keys_a, keys_b = [_result_key(r) for r in first], [_result_key(r) for r in second]
    diffs: list[str] = []
    matcher = difflib.SequenceMatcher(a=keys_a, b=keys_b, autojunk=False)
    for _tag, i1, i2, j1, j2 in matcher.get_opcodes():
        pairs = list(zip(range(i1, i2), range(j1, j2), strict=False))
        for i, j in pairs:
            label = f"{host} result #{i} ({first[i]['task']!r})"
            ra, rb = first[i], second[j]
            for key in sorted((set(ra) | set(rb)) - ignored - served.JOIN_KEYS):
                if ra.get(key) != rb.get(key):
                    diffs.append(
                        f"{label}: {key}: {a} {_short(ra.get(key))}, {b} {_short(rb.get(key))}"
                    )
        for i in range(i1 + len(pairs), i2):
            diffs.append(f"{host} result #{i} ({_describe(first[i])}): only in {a}")
        for j in range(j1 + len(pairs), j2):
            diffs.append(f"{host} result #{j} ({_describe(second[j])}): only in {b}")
    return diffs


def _result_key(record: dict[str, Any]) -> str:
    return json.dumps([record["task"], record["event"].startswith("item"), record.get("item")])


def _describe(record: dict[str, Any]) -> str:
    item = f" item {record['item']!r}" if "item" in record else ""
    return f"{record['event']} {record['task']!r}{item}"


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
