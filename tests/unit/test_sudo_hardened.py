"""router.sudo against hardened sudoers: log_output, use_pty, requiretty, targetpw,
lecture=always and a custom passprompt, each set for one testbed account
(tests/testbed/accounts.py, HARDENED_SUDO).

Every configuration is reached from a context running as its account on this machine
(local->sudo: root's sudo starts it) and over ssh (ssh->sudo), without a password (to
mitogen__plain, which the accounts may become freely) and with one (to root, or to
mitogen__su_target for targetpw, which asks for the target's password).

Needs root and the testbed; run as `.venv/bin/pytest tests/unit/test_sudo_hardened.py -q`.
"""

import logging
import os

import pytest

import mitogen.core
import mitogen.sudo
from tests import conformance
from tests.testbed.accounts import CUSTOM_PASSPROMPT, HARDENED_SUDO
from tests.unit.test_transports import WRONG_PASSWORD, cmdlines, connect_fails, ssh_as

pytestmark = pytest.mark.needs_testbed

ROLES = sorted(HARDENED_SUDO)
VIAS = ("ssh", "local")

#: What the debug log shows when a role's setting is in force (password runs);
#: '%p' is the user whose password sudo asks for.
EVIDENCE = {
    "sudo_lecture": "We trust you have received the usual lecture",
    "sudo_targetpw": "password for mitogen__su_target:",
    "sudo_prompt": CUSTOM_PASSPROMPT.rstrip(),
}


@pytest.fixture
def debug_log(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


def hop_as(router, testbed, role, via):
    """A context running as the role's account: over ssh, or started on this
    machine by root's sudo."""
    if via == "ssh":
        return ssh_as(router, testbed, role)
    return router.sudo(username=testbed.accounts[role].name)


def password_target(testbed, role):
    """(user, uid, password) the role's account becomes with a password."""
    if role == "sudo_targetpw":
        target = testbed.accounts.su_target
        return target.name, target.uid, target.password
    return "root", 0, testbed.accounts[role].password


def iolog_count(testbed):
    """How many sessions sudo has logged for the log_output account."""
    seq = testbed.accounts.iolog_dir / "seq"
    return int(seq.read_text(), 36) if seq.exists() else 0


def process_names(pid, count):
    """The program names of `pid` and its first `count - 1` ancestors."""
    names = []
    for _ in range(count):
        with open("/proc/%d/stat" % pid) as fp:
            stat = fp.read()
        names.append(stat[stat.index("(") + 1 : stat.rindex(")")])
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return names


def check_in_force(testbed, role, context, iolog_before, log_text=""):
    """Fail unless the role's sudoers setting visibly applied to `context`."""
    if role == "sudo_iolog":
        assert iolog_count(testbed) > iolog_before
    if role == "sudo_usepty":
        # use_pty: sudo runs the command under a monitor process of its own
        pid = context.call(os.getpid)
        assert process_names(pid, 3)[1:] == ["sudo", "sudo"]
    if role in EVIDENCE and log_text:
        assert EVIDENCE[role].replace("%p", testbed.accounts[role].name) in log_text


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("role", ROLES)
def test_sudo_without_password(router, testbed, role, via):
    plain = testbed.accounts.plain
    hop = hop_as(router, testbed, role, via)
    before = iolog_count(testbed)
    context = router.sudo(via=hop, username=plain.name, connect_timeout=10)
    assert context.call(os.getuid) == plain.uid
    check_in_force(testbed, role, context, before)
    conformance.check_transport(router, context)


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("role", ROLES)
def test_sudo_with_password(router, testbed, debug_log, role, via):
    user, uid, password = password_target(testbed, role)
    hop = hop_as(router, testbed, role, via)
    before = iolog_count(testbed)
    context = router.sudo(via=hop, username=user, password=password, connect_timeout=10)
    assert context.call(os.getuid) == uid
    check_in_force(testbed, role, context, before, debug_log.text)
    assert "answering password prompt" in debug_log.text
    # never echoed back (the scrubbed form would show), never in logs or argv
    assert password not in debug_log.text and "[secret]" not in debug_log.text
    assert not any(password in line for line in cmdlines())
    conformance.check_transport(router, context)


def test_requiretty_is_in_force(testbed):
    account = testbed.accounts["sudo_tty"]
    command = "sudo -n -u %s true" % testbed.accounts.plain.name
    result = testbed.sshd.run(account.name, command, check=False)
    assert result.returncode != 0
    assert "you must have a tty to run sudo" in result.stderr


@pytest.mark.parametrize("role", ["sudo_prompt", "sudo_lecture"])
def test_sudo_wrong_password(router, testbed, debug_log, role):
    via = ssh_as(router, testbed, role)
    raised = connect_fails(
        mitogen.sudo.PasswordError,
        lambda: router.sudo(via=via, password=WRONG_PASSWORD, connect_timeout=15),
    )
    assert "the password was refused" in raised.text
    assert raised.seconds < 10
    assert WRONG_PASSWORD not in raised.text and WRONG_PASSWORD not in debug_log.text


@pytest.mark.parametrize("role", ["sudo_prompt", "sudo_tty"])
def test_sudo_password_needed_not_given(router, testbed, role):
    via = ssh_as(router, testbed, role)
    raised = connect_fails(
        mitogen.sudo.PasswordError, lambda: router.sudo(via=via, connect_timeout=10)
    )
    assert "a password is required and none was given" in raised.text
    assert raised.seconds < 5


def test_prompt_left_unanswered_is_shown_on_timeout(router, testbed):
    account = testbed.accounts["sudo_prompt"]
    via = ssh_as(router, testbed, "sudo_prompt")
    raised = connect_fails(
        mitogen.core.TimeoutError,
        lambda: router.sudo(
            via=via,
            password=account.password,
            connect_timeout=2,
            password_prompt="NOT_A_VALID_PROMPT",
            builtin_prompts=False,
        ),
    )
    assert raised.text.endswith(CUSTOM_PASSPROMPT.replace("%p", account.name))


def test_log_output_starts_every_time(router, testbed):
    # Whether stage 0 meets sudo's non-blocking pipe empty is a race: it lost about
    # a third of the starts before stage 0 learnt to wait.
    account, plain = testbed.accounts["sudo_iolog"], testbed.accounts.plain
    via = ssh_as(router, testbed, "sudo_iolog")
    for password in [None, account.password] * 5:
        context = router.sudo(
            via=via,
            username=plain.name if password is None else "root",
            password=password,
            connect_timeout=10,
        )
        assert context.call(os.getuid) == (plain.uid if password is None else 0)
        context.shutdown(wait=True, timeout=10)
