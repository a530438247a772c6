"""Every kind of connection failure reaches the master as data: the error
raised for a connection made through a `via=` context carries `kind` (what
failed) and `output` (the failed program's last output, secrets hidden), not
just a message. One test per kind, each provoked for real on the testbed,
each crossing at least one via= hop (master -> local or sudo context ->
the failing method).

Needs root and the testbed (tests/testbed).
"""

import pytest

import mitogen.core
import mitogen.doas
import mitogen.parent
import mitogen.ssh
import mitogen.su
import mitogen.sudo
from tests.unit.test_transports import WRONG_PASSWORD, ssh_kwargs

pytestmark = pytest.mark.needs_testbed


def as_user(router, testbed, role):
    """A context running as the testbed account `role`, which the master
    (root) reaches with sudo and no password: the hop the failing
    connection is made through."""
    return router.sudo(username=testbed.accounts[role].name, via=router.local())


def fails(expected, kind, connect):
    """`connect()` raises `expected` with `kind`; return the error."""
    with pytest.raises(expected) as info:
        connect()
    error = info.value
    assert error.kind == kind, (error.kind, str(error))
    assert error.output is not None
    assert error.output in str(error)
    return error


def test_sudo_bad_password(router, testbed):
    hop = as_user(router, testbed, "sudo_pw")
    error = fails(
        mitogen.sudo.PasswordError,
        "bad_password",
        lambda: router.sudo(via=hop, password=WRONG_PASSWORD, connect_timeout=10),
    )
    assert "password" in error.output.lower()
    assert WRONG_PASSWORD not in error.output


def test_sudo_need_password(router, testbed):
    hop = as_user(router, testbed, "sudo_pw")
    error = fails(
        mitogen.sudo.PasswordError,
        "need_password",
        lambda: router.sudo(via=hop, connect_timeout=10),
    )
    assert "password" in error.output.lower()


def test_sudo_policy(router, testbed):
    plain = testbed.accounts.plain
    hop = as_user(router, testbed, "plain")
    error = fails(
        mitogen.parent.PolicyError,
        "policy",
        lambda: router.sudo(via=hop, password=plain.password, connect_timeout=10),
    )
    assert "not in the sudoers file" in error.output
    assert plain.password not in error.output


def test_sudo_python(router, testbed):
    error = fails(
        mitogen.parent.InterpreterNotFoundError,
        "python",
        lambda: router.sudo(
            via=router.local(),
            username=testbed.accounts.plain.name,
            python_path="/nonexistent/python3.99",
        ),
    )
    assert "/nonexistent/python3.99" in error.output


def test_su_bad_password(router, testbed):
    hop = as_user(router, testbed, "plain")
    error = fails(
        mitogen.su.PasswordError,
        "bad_password",
        lambda: router.su(
            via=hop,
            username=testbed.accounts.su_target.name,
            password=WRONG_PASSWORD,
            connect_timeout=10,
        ),
    )
    assert WRONG_PASSWORD not in error.output


def test_su_need_password(router, testbed):
    hop = as_user(router, testbed, "plain")
    fails(
        mitogen.su.PasswordError,
        "need_password",
        lambda: router.su(via=hop, username=testbed.accounts.su_target.name, connect_timeout=10),
    )


def test_doas_bad_password(router, testbed):
    hop = as_user(router, testbed, "doas")
    error = fails(
        mitogen.doas.PasswordError,
        "bad_password",
        lambda: router.doas(via=hop, password=WRONG_PASSWORD, connect_timeout=10),
    )
    assert WRONG_PASSWORD not in error.output


def test_local_eof(router):
    error = fails(
        mitogen.parent.EofError,
        "eof",
        lambda: router.local(via=router.local(), python_path=["/bin/sh", "-c", "echo gone >&2"]),
    )
    assert error.output == "gone"


def ssh_via_local(router, testbed, **kwargs):
    kwargs = ssh_kwargs(testbed, **kwargs)
    return router.ssh(
        "127.0.0.1", username=testbed.accounts.plain.name, via=router.local(), **kwargs
    )


def test_ssh_hostkey_unknown(router, testbed, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    error = fails(
        mitogen.ssh.HostKeyError,
        "hostkey_unknown",
        lambda: ssh_via_local(router, testbed, known_hosts_file=str(known_hosts)),
    )
    assert "127.0.0.1" in error.output


def test_ssh_hostkey_changed(router, testbed, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    wrong_key = " ".join(testbed.keys.client_public.split()[:2])
    known_hosts.write_text("[127.0.0.1]:%d %s\n" % (testbed.sshd.port, wrong_key))
    error = fails(
        mitogen.ssh.HostKeyError,
        "hostkey_changed",
        lambda: ssh_via_local(router, testbed, known_hosts_file=str(known_hosts)),
    )
    assert "IDENTIFICATION HAS CHANGED" in error.output


def test_ssh_auth(router, testbed):
    error = fails(
        mitogen.ssh.AuthError,
        "auth",
        lambda: ssh_via_local(router, testbed, identity_file=str(testbed.keys.host_key)),
    )
    assert "Permission denied" in error.output


def test_ssh_unreachable(router, testbed):
    from tests.testbed.sshd import free_port

    error = fails(
        mitogen.ssh.ConnectError,
        "unreachable",
        lambda: ssh_via_local(router, testbed, port=free_port("127.0.0.1")),
    )
    assert "Connection refused" in error.output


def test_ssh_python(router, testbed):
    error = fails(
        mitogen.parent.InterpreterNotFoundError,
        "python",
        lambda: ssh_via_local(router, testbed, python_path="python3.99"),
    )
    assert "python3.99" in error.output


def test_timeout(router):
    error = fails(
        mitogen.core.TimeoutError,
        "timeout",
        lambda: router.local(
            via=router.local(),
            python_path=["/bin/sh", "-c", "echo waiting >&2; exec sleep 30"],
            connect_timeout=1,
        ),
    )
    assert error.output == "waiting"
