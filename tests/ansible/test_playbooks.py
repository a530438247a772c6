"""Every playbook under playbooks/ gives the same results with Mitogen's strategies as with
the builtin ones: per-task changed/failed/skipped/rc/stdout/stderr/msg, the recap, the exit
status and the files left on the target and fetched to the controller."""

from __future__ import annotations

import pwd
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.ansible.harness import HARDENED_HOST_ROLES, Harness, PlaybookRun
from tests.ansible.harness import PLAYBOOKS as PLAYBOOK_DIR
from tests.testbed.accounts import HARDENED_SUDO

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

PRESENT, ABSENT = object(), object()

#: hardened_sudo.yml's hosts that become root with a password.
HARDENED_ROOT_HOSTS = sorted(set(HARDENED_HOST_ROLES) - {"sudo_targetpw"})


def on_hosts(hosts: tuple[str, ...], checks: dict[str, dict[str, Any]]) -> dict:
    """The same checks on each host's results."""
    return {(host, task): fields for host in hosts for task, fields in checks.items()}


#: Checks on the stock results, so a playbook that stops testing what it says fails here
#: rather than comparing two identical non-results: (host, task) -> expected fields (a
#: value, PRESENT, ABSENT, or a predicate on the value).
EXPECTED: dict[str, dict[tuple[str, str], dict[str, Any] | None]] = {
    "command_shell.yml": {
        ("plain", "command with stdout"): {"rc": 0, "stdout": "hello world", "changed": True},
        ("plain", "command rc 3 is a failure"): {"rc": 3, "stdout": "out", "stderr": "err"},
        ("plain", "shell chdir"): {"stdout": "<WORKDIR>/plain"},
        ("plain", "command creates (skipped, file exists)"): {"changed": False},
        ("plain", "command stdin"): {"stdout": "line one\nline two"},
        ("plain", "large output size"): {"msg": "20000 108893"},
        ("plain", "raw with both streams and a failing status"): {
            "rc": 2,
            "stdout": "raw-out\r\nraw-err\r\n",
            "stderr": "",
        },
    },
    "files.yml": {
        ("plain", "copy content again (unchanged)"): {"changed": False},
        ("plain", "copy a directory tree again (unchanged)"): {"changed": False},
        ("plain", "template again (unchanged)"): {"changed": False},
        ("plain", "fetch again (unchanged)"): {"changed": False},
        ("plain", "slurp a missing file fails"): {"failed": True},
    },
    "loops.yml": {
        ("plain", "loop results"): {"msg": ["r1", "r2"]},
        ("plain", "until succeeds on the third attempt"): {"stdout": "3", "attempts": 3},
        ("plain", "one failing item among several"): {"failed": True},
    },
    "handlers.yml": {
        ("plain", "after the flush"): {"stdout": "run\nheard"},
    },
    "check_diff.yml": {
        ("plain", "command in check mode is skipped"): {"skipped": True},
        ("plain", "checked stat result"): {"msg": 16},
    },
    "no_log.yml": {
        ("plain", "hidden command"): {"censored": PRESENT, "stdout": ABSENT},
        ("plain", "hidden failure"): {"censored": PRESENT, "failed": True, "rc": ABSENT},
        ("plain", "a registered hidden result is usable"): {"msg": 7},
    },
    "environment.yml": {
        ("plain", "play environment"): {"stdout": "from-play play"},
        ("plain", "task environment overrides the play"): {"stdout": "from-play task from-task"},
        ("plain", "block environment"): {"stdout": "from-block"},
        ("plain", "a variable with spaces and quotes"): {
            "stdout": "a 'quoted' \"value\" with $dollar"
        },
        ("plain", "values that are not strings"): {"stdout": "True\n3"},
    },
    "become.yml": {
        ("sudo_nopw", "without become"): {"stdout": "mitogen__sudo_nopw"},
        ("sudo_nopw", "become root"): {"stdout": "root"},
        ("sudo_nopw", "become root with the FQCN method"): {"stdout": "0"},
        ("sudo_nopw", "root file owner"): {"msg": "root 0600"},
        ("sudo_nopw", "become another unprivileged account"): {"stdout": "mitogen__plain"},
        ("sudo_nopw", "read it back as that user"): {"stdout": "written by plain"},
        ("sudo_nopw", "sudo_chdir sets where become commands run"): {"stdout": "/tmp\r\n"},
        ("sudo_pw", "become root with a password"): {"stdout": "root"},
        ("sudo_pw", "wrong password fails"): {"failed": True},
    },
    "delegate.yml": {
        ("plain", "delegate to localhost"): {"stdout": "for plain"},
        ("sudo_nopw", "delegate to another inventory host"): {"stdout": "mitogen__sudo_pw"},
        ("plain", "remote again after delegation"): {"stdout": "mitogen__plain"},
    },
    "failures.yml": {
        ("dead", "ping, unreachable on one host"): {"unreachable": True},
        ("plain", "the reachable host goes on"): {"stdout": "still here"},
        ("plain", "fatal failure"): {"rc": 5, "stdout": "before dying", "failed": True},
    },
    "remote_tmp.yml": {
        ("sudo_nopw", "nothing left in the remote_tmp"): {"rc": 0, "stdout": ""},
        ("sudo_nopw", "remote_tmp is private"): {"msg": "0700"},
        ("sudo_nopw", "read it back through ~"): {"stdout": "at home"},
        ("sudo_nopw", "the become user's home"): {"msg": "/root"},
    },
    "async.yml": {
        ("sudo_nopw", "async polled to completion"): {"stdout": "polled"},
        ("sudo_nopw", "the job's output"): {"msg": "forgotten"},
        ("sudo_nopw", "async job that outlives its time limit"): {"failed": True},
        ("sudo_nopw", "async with become"): {"stdout": "root"},
    },
    "home_paths.yml": {
        ("plain", "delegated home"): {"stdout": "/root"},
        ("sudo_nopw", "delegated script"): {"rc": 0},
        ("plain", "read the home copy back"): {"stdout": "home of plain"},
        ("plain", "what was synchronized into the home"): {"stdout": "a.txt\nsub"},
        ("sudo_nopw", "where the become copy went"): {"rc": 0},
        ("localhost", "local play home"): {"stdout": "/root"},
    },
    "login_shell.yml": {
        ("sudo_nopw", "raw through the login shell"): {"stdout": "2"},
        ("sudo_nopw", "raw names its shell"): {"stdout": "5\r\n"},
        ("sudo_nopw", "raw with an executable"): {"stdout": "-en 2\r\n"},
        ("sudo_nopw", "shell module uses /bin/sh"): {"stdout": "-en 2"},
        ("sudo_nopw", "shell module with bash"): {"stdout": "2"},
        ("sudo_nopw", "raw delegated to localhost runs /bin/sh"): {"stdout": "-en 2\n"},
    },
    "no_python.yml": {
        ("plain", "a module without Python fails"): {"failed": True},
        ("plain", "raw without Python"): {"stdout": "no python here\r\nmitogen__plain\r\n"},
        ("sudo_nopw", "raw without Python"): {"stdout": "no python here\r\nroot\r\n"},
        ("sudo_nopw", "script without Python"): {"rc": 0},
        ("plain", "a module once Python exists"): {"failed": False},
        ("sudo_nopw", "a command once Python exists"): {"stdout": "root"},
    },
    "module_exit.yml": {
        ("plain", "nothing left in the remote tmp"): {"rc": 0, "stdout": ""},
        ("sudo_nopw", "nothing left in the remote tmp"): {"rc": 0, "stdout": ""},
        ("sudo_nopw", "nothing left in the remote tmp with become"): {"rc": 0, "stdout": ""},
        ("plain", "work left for the interpreter's exit"): {"changed": True},
        ("sudo_nopw", "work left for the interpreter's exit, with become"): {"changed": True},
        ("plain", "signal dispositions"): {
            "msg": lambda m: (
                m["SIGINT"] == "default_int_handler"
                and m["SIGPIPE"] == "SIG_IGN"
                and m["SIGTERM"] == "SIG_DFL"
            )
        },
        ("plain", "blocked signals"): {"msg": []},
        ("plain", "signal dispositions through connection local"): {
            "msg": lambda m: m["SIGINT"] == "default_int_handler"
        },
    },
    "serial.yml": {
        ("sudo_pw", "third play"): None,
        ("plain", "third play"): {"stdout": "plain"},
    },
    "hardened_sudo.yml": {
        **{(h, "become root with a password"): {"stdout": "root"} for h in HARDENED_ROOT_HOSTS},
        **{(h, "the copy is intact"): {"rc": 0} for h in HARDENED_ROOT_HOSTS},
        **{(h, "wrong password fails"): {"failed": True} for h in HARDENED_HOST_ROLES},
        **{
            (h, "become an account that needs no password"): {"stdout": "mitogen__plain"}
            for h in HARDENED_SUDO
        },
        ("sudo_targetpw", "become the target with its password"): {"stdout": "mitogen__su_target"},
        ("sudo_targetpw", "the target could see the workdir"): {"msg": "mitogen__sudo_targetpw"},
    },
    "collection_modules.yml": {
        # the tasks file, imported without become (plain) and with become root (sudo_nopw)
        **on_hosts(
            ("plain", "sudo_nopw"),
            {
                "ini_file adds an option": {"changed": True, "msg": "section and option added"},
                "ini_file again (unchanged)": {"changed": False},
                "ini_file removes the option": {"changed": True},
                "xml sets an attribute": {"changed": True},
                "fruit count": {"msg": 2},
                "fruit attributes": {
                    "msg": [
                        {"fruit": {"name": "apple"}},
                        {"fruit": {"name": "pear", "ripe": "yes"}},
                    ]
                },
                "acl grants nobody read access": {"changed": True},
                "the ACL entries": {
                    "msg": ["user::rw-", "user:nobody:r--", "group::---", "mask::r--", "other::---"]
                },
                "acl removes the entry": {"changed": True, "msg": "user:nobody is absent"},
                "authorized_key into a file of the workdir": {"changed": True},
                "authorized_key again (unchanged)": {"changed": False},
                "sysctl writes a file of the workdir only (kernel untouched)": {"changed": True},
                "sysctl would change the kernel value (check mode)": {"changed": True},
                "the kernel value is unchanged": {"failed": False},
                "what was archived": {"msg": ["a.txt", "b.txt"]},
                "unarchive it on the target": {"failed": True},
                "what was unpacked": {"msg": ["tree/a.txt", "tree/b.txt"]},
                "unarchive again (unchanged)": {"changed": False},
                "unarchive a controller file onto the target": {"changed": True},
                "root's shell and home": {"msg": ["/root", "/bin/bash"]},
                "getent of a missing key fails": {"failed": True},
                "some packages": {"msg": ["openssh-server", "sudo", "acl"]},
                "service facts were found": {"msg": True},
            },
        ),
        ("plain", "pam_limits on the system file needs root"): {
            "failed": True,
            "msg": "/etc/security/limits.conf is not writable. Use sudo",
        },
        ("plain", "user would be created (check mode, no root needed)"): {"changed": True},
        ("sudo_nopw", "pam_limits writes a limits file"): {"changed": True},
        ("sudo_nopw", "pam_limits again (unchanged)"): {"changed": False},
        ("sudo_nopw", "user creates a throwaway account"): {"changed": True},
        ("sudo_nopw", "user again (unchanged)"): {"changed": False},
        ("sudo_nopw", "the account's comment and shell"): {
            "msg": ["Mitogen test account", "/bin/sh"]
        },
        ("sudo_nopw", "user removes the account"): {"changed": True},
        ("sudo_nopw", "the account is gone"): {"failed": True},
    },
}

PLAYBOOKS = sorted(EXPECTED)

#: Tasks Mitogen hands to stock Ansible, per playbook; every other result must be served
#: by Mitogen (harness.py, served.py).
FALLBACK: dict[str, set[str]] = {
    # the target has no Python for a context until raw puts one in place
    "no_python.yml": {
        "a module without Python fails",
        "raw without Python",
        "script without Python",
        "raw puts a Python in place",
    },
}

#: Environment a playbook runs with (both strategies).
ENVIRONMENT: dict[str, dict[str, str]] = {
    # remote_user set fleet-wide, to a user that exists nowhere
    "home_paths.yml": {"ANSIBLE_REMOTE_USER": "mitogen__nobody"},
}

#: Playbooks writing outside their run's workdir (the account's home), so the two runs
#: of a comparison must not overlap.
SEQUENTIAL = {"remote_tmp.yml", "home_paths.yml", "collection_modules.yml"}
#: Playbooks run with --ask-become-pass: the host whose account's password is typed.
ASK_BECOME_PASS = {"hardened_sudo.yml": "sudo_askpass"}

#: The account collection_modules.yml creates and removes.
THROWAWAY = "mitogen__throwaway"
#: The collections collection_modules.yml uses (installed by scripts/setup-ansible.sh).
COLLECTIONS = ("community/general", "ansible/posix")


def remove_throwaway_account() -> None:
    """Remove the account collection_modules.yml makes, left by a run that did not end."""
    try:
        pwd.getpwnam(THROWAWAY)
    except KeyError:
        return
    subprocess.run(["userdel", THROWAWAY], check=True, capture_output=True, timeout=30)


@contextmanager
def prepared(harness: Harness, playbook: str) -> Iterator[None]:
    """What a playbook needs around its runs."""
    if playbook != "collection_modules.yml":
        yield
        return
    root = harness.collections_dir / "ansible_collections"
    missing = [c.replace("/", ".") for c in COLLECTIONS if not (root / c).is_dir()]
    if missing:
        pytest.fail(f"collections {missing} are not in {root}: run scripts/setup-ansible.sh")
    remove_throwaway_account()
    try:
        yield
    finally:
        remove_throwaway_account()


def check_expected(run: Any, playbook: str) -> None:
    for (host, task), fields in EXPECTED[playbook].items():
        if fields is None:
            assert not [r for r in run.results if r["host"] == host and r["task"] == task]
            continue
        result = run.result(host, task)
        for key, value in fields.items():
            where = f"{playbook} {host} {task!r}: {key}\n{result}"
            if value is PRESENT or value is ABSENT:
                assert (key in result) == (value is PRESENT), where
            elif callable(value):
                assert value(result.get(key)), where
            else:
                assert result.get(key) == value, where


def run_options(harness: Harness, playbook: str) -> dict[str, Any]:
    """Harness.compare() arguments a playbook needs."""
    options: dict[str, Any] = {
        "parallel": playbook not in SEQUENTIAL,
        "env": ENVIRONMENT.get(playbook),
        "fallback": FALLBACK.get(playbook, ()),
    }
    if playbook in ASK_BECOME_PASS:
        options["become_password"] = harness.account(ASK_BECOME_PASS[playbook]).password
    return options


#: Stock `linear` runs of this session, by playbook: the connection-only comparison
#: (test_standalone.py) compares against them rather than running stock again.
STOCK_RUNS: dict[str, PlaybookRun] = {}


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_mitogen_linear_matches_linear(harness: Harness, playbook: str) -> None:
    with prepared(harness, playbook):
        comparison = harness.compare(playbook, **run_options(harness, playbook))
    check_expected(comparison.baseline, playbook)
    STOCK_RUNS[playbook] = comparison.baseline
    comparison.assert_same()


def test_requiretty_with_pipelining_fails_only_stock(harness: Harness) -> None:
    """With pipelining, stock runs sudo without a tty, which `requiretty` refuses; Mitogen
    gives sudo a pty. The other hardened hosts still give the same results."""
    playbook = "hardened_sudo.yml"
    options = run_options(harness, playbook)
    options["env"] = {**(options["env"] or {}), "ANSIBLE_PIPELINING": "True"}
    comparison = harness.compare(playbook, **options)
    stock, ours = comparison.baseline, comparison.candidate
    [refused] = stock.results_by_host()["sudo_tty"]
    assert refused["task"] == "become root with a password" and refused["failed"]
    assert "sorry, you must have a tty to run sudo" in refused["module_stderr"]
    for (host, task), fields in EXPECTED[playbook].items():
        if host == "sudo_tty":
            assert fields is not None
            result = ours.result(host, task)
            assert {k: result.get(k) for k in fields} == fields, result
    others = [d for d in comparison.differences if "sudo_tty" not in d]
    assert others == [f"exit status: linear 2, mitogen_linear {ours.rc}"]
    assert ours.rc == 0


@pytest.mark.parametrize(
    "baseline, candidate, playbook",
    [
        ("free", "mitogen_free", "delegate.yml"),
        ("host_pinned", "mitogen_host_pinned", "serial.yml"),
        ("linear", "mitogen", "command_shell.yml"),
    ],
)
def test_other_strategies_match_their_builtin(
    harness: Harness, baseline: str, candidate: str, playbook: str
) -> None:
    comparison = harness.compare(playbook, baseline, candidate)
    check_expected(comparison.baseline, playbook)
    comparison.assert_same()


def test_every_playbook_is_tested() -> None:
    # used by test_strategy.py, test_fallback.py, test_bad_modules.py, test_per_item.py,
    # test_lost_link.py, test_interpreters.py, test_product_vvv.py, test_product_get_stack.py,
    # test_standalone.py, test_product_logs.py and test_product_stacks.py
    special = {
        "recording.yml",
        "divergent.yml",
        "collection.yml",
        "become_fallback.yml",
        "bad_modules.yml",
        "per_item.yml",
        "lost_link.yml",
        "interpreters.yml",
        "discovery.yml",
        "verbose.yml",
        "get_stack.yml",
        "standalone.yml",
        "reset_connection.yml",
        "mux_log.yml",
        "stacks.yml",
    }
    on_disk = {p.name for p in PLAYBOOK_DIR.glob("*.yml")} - special
    assert on_disk == set(PLAYBOOKS)
