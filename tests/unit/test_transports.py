"""Remote connection methods on the testbed's real hosts: ssh, sudo, su and
doas, `via=` chains through them, and every error they raise, provoked for
real (wrong passwords, unknown and changed host keys, a stopped sshd, a
closed port, an unplugged host, a missing interpreter, sudo policy).

Needs root and the testbed (tests/testbed); run as
`.venv/bin/pytest tests/unit/test_transports.py -q`.
"""

import logging
import os
import re
import socket
import sys
import time

import pytest

import mitogen.core
import mitogen.doas
import mitogen.parent
import mitogen.ssh
import mitogen.su
import mitogen.sudo
from tests import conformance, remote_helpers
from tests.testbed import Sshd, discover
from tests.testbed.proc import child_pids
from tests.testbed.sshd import free_port

pytestmark = pytest.mark.needs_testbed

PYTHONS = [py for py in discover() if py.version >= (3, 6)]
WRONG_PASSWORD = "not-the-password-5f2c9"


class PasswordSshd(Sshd):
    """A testbed sshd that takes passwords instead of keys."""

    def _config(self):
        text = super()._config()
        for old, new in (
            ("AuthenticationMethods publickey", "AuthenticationMethods password"),
            ("PasswordAuthentication no", "PasswordAuthentication yes"),
        ):
            assert old in text
            text = text.replace(old, new)
        return text


@pytest.fixture(scope="module")
def password_sshd(testbed):
    daemon = PasswordSshd(testbed.keys, "transport-pw")
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def ssh_kwargs(testbed, sshd=None, **kwargs):
    """router.ssh() arguments reaching `sshd` (default: the loopback one)
    with the testbed's client key, its host key enforced."""
    sshd = sshd or testbed.sshd
    base = dict(
        port=sshd.port,
        identity_file=str(testbed.keys.client_key),
        known_hosts_file=str(sshd.known_hosts),
        check_host_keys="enforce",
        ssh_args=[
            "-F",
            "/dev/null",
            "-o",
            "IdentityAgent=none",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ],
    )
    base.update(kwargs)
    return base


def ssh_as(router, testbed, role, sshd=None, **kwargs):
    account = "root" if role == "root" else testbed.accounts[role].name
    return router.ssh("127.0.0.1", username=account, **ssh_kwargs(testbed, sshd, **kwargs))


def netns_ssh(router, testbed, host, username, **kwargs):
    kwargs = ssh_kwargs(testbed, host.sshd, **kwargs)
    kwargs["port"] = None
    return router.ssh(host.address, username=username, **kwargs)


class Raised:
    """What connecting raised and how long it took."""

    def __init__(self, exc, seconds):
        self.text = str(exc)
        self.seconds = seconds


def connect_fails(expected, connect):
    """Run `connect`, which must raise `expected`."""
    started = time.monotonic()
    with pytest.raises(expected) as info:
        connect()
    return Raised(info.value, time.monotonic() - started)


def assert_secret_kept(caplog, raised, *passwords):
    """No password appears in the error or in anything logged."""
    for password in passwords:
        assert password not in raised.text
        assert password not in caplog.text


def assert_children_reaped(context, timeout=5.0):
    """`context` (on this machine) has no child process left, not even a
    zombie: a failed attempt cleaned up after itself."""
    pid = context.call(remote_helpers.getpid)
    deadline = time.monotonic() + timeout
    while child_pids(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child_pids(pid) == []


def cmdlines():
    """The command line of every process on this machine."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as fp:
                    found.append(fp.read().decode("utf-8", "replace"))
            except OSError:
                continue
    return found


@pytest.fixture
def debug_log(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


# --- conformance on every method and chain ---


def test_ssh_conformance(router, testbed):
    context = ssh_as(router, testbed, "plain")
    assert context.call(os.getuid) == testbed.accounts.plain.uid
    conformance.check_transport(router, context)


def test_sudo_from_master_conformance(router, testbed):
    plain = testbed.accounts.plain
    context = router.sudo(username=plain.name)
    assert context.call(os.getuid) == plain.uid
    conformance.check_transport(router, context)


def test_su_from_master_conformance(router, testbed):
    target = testbed.accounts.su_target
    context = router.su(username=target.name, password=target.password)
    assert context.call(os.getuid) == target.uid
    conformance.check_transport(router, context)


def test_su_args_come_before_the_user(router, testbed):
    target = testbed.accounts.su_target
    context = router.su(username=target.name, password=target.password, su_args=["--login"])
    assert context.call(os.getcwd) == str(target.home)
    with pytest.raises(mitogen.core.StreamError) as info:
        router.su(username=target.name, password=target.password, su_args=["--no-such-su-flag"])
    assert "no-such-su-flag" in str(info.value)


def test_only_the_given_prompt_is_answered(router, testbed):
    target = testbed.accounts.su_target
    hop = router.sudo(username=testbed.accounts.plain.name)  # su asks non-root for a password
    context = router.su(
        via=hop,
        username=target.name,
        password=target.password,
        password_prompt=r"^Password:",
        builtin_prompts=False,
    )
    assert context.call(os.getuid) == target.uid
    with pytest.raises(mitogen.core.TimeoutError):
        router.su(
            via=hop,
            username=target.name,
            password=target.password,
            connect_timeout=2,
            password_prompt="NOT_A_VALID_PROMPT",
            builtin_prompts=False,
        )


def test_ssh_doas_conformance(router, testbed, debug_log):
    doas = testbed.accounts.doas
    context = router.doas(via=ssh_as(router, testbed, "doas"), password=doas.password)
    assert context.call(os.getuid) == 0
    assert doas.password not in debug_log.text
    conformance.check_transport(router, context)


def test_ssh_sudo_nopasswd_conformance(router, testbed):
    context = router.sudo(via=ssh_as(router, testbed, "sudo_nopw"))
    assert context.call(os.getuid) == 0
    conformance.check_transport(router, context)


def test_ssh_sudo_password_conformance(router, testbed, debug_log):
    account = testbed.accounts.sudo_pw
    context = router.sudo(via=ssh_as(router, testbed, "sudo_pw"), password=account.password)
    assert context.call(os.getuid) == 0
    assert not any(account.password in line for line in cmdlines())
    assert account.password not in debug_log.text
    assert "answering password prompt" in debug_log.text
    conformance.check_transport(router, context)


def test_ssh_su_conformance(router, testbed, debug_log):
    target = testbed.accounts.su_target
    context = router.su(
        via=ssh_as(router, testbed, "plain"), username=target.name, password=target.password
    )
    assert context.call(os.getuid) == target.uid
    assert target.password not in debug_log.text
    conformance.check_transport(router, context)


def test_ssh_ssh_between_namespace_hosts_conformance(router, testbed, netns_hosts):
    first, second = netns_hosts[0], netns_hosts[1]
    hop = netns_ssh(router, testbed, first, "root")
    context = netns_ssh(router, testbed, second, testbed.accounts.plain.name, via=hop)
    assert context.call(socket.gethostname) == second.hostname
    assert hop.call(socket.gethostname) == first.hostname
    conformance.check_transport(router, context)


def test_ssh_ssh_sudo_chain(router, testbed, netns_hosts):
    first, second = netns_hosts[0], netns_hosts[1]
    hop1 = netns_ssh(router, testbed, first, "root")
    hop2 = netns_ssh(router, testbed, second, testbed.accounts.sudo_nopw.name, via=hop1)
    context = router.sudo(via=hop2)
    assert context.call(os.getuid) == 0
    assert context.call(socket.gethostname) == second.hostname
    ids = context.call(remote_helpers.context_ids)
    assert ids[2] == [hop2.context_id, hop1.context_id, 0]


def test_local_sudo_su_chain_with_password(router, testbed):
    plain, target = testbed.accounts.plain, testbed.accounts.su_target
    hop = router.sudo(username=plain.name, via=router.local())
    context = router.su(via=hop, username=target.name, password=target.password)
    assert context.call(os.getuid) == target.uid


def test_su_with_password_through_oldest_python(router, testbed):
    oldest, target = PYTHONS[0], testbed.accounts.su_target
    hop = router.ssh(
        "127.0.0.1", username=testbed.accounts.python(oldest.short).name, **ssh_kwargs(testbed)
    )
    context = router.su(
        via=hop, username=target.name, password=target.password, python_path=str(oldest.executable)
    )
    assert context.call(os.getuid) == target.uid
    assert context.call(remote_helpers.version_info) == tuple(oldest.version[:2])


@pytest.mark.parametrize("python", PYTHONS, ids=[py.short for py in PYTHONS])
def test_ssh_to_each_python(router, testbed, python):
    account = testbed.accounts.python(python.short)
    context = router.ssh("127.0.0.1", username=account.name, **ssh_kwargs(testbed))
    assert context.call(remote_helpers.version_info) == tuple(python.version[:2])
    path, value = context.call(remote_helpers.import_and_report, "mitogen_test_wirepkg", "VALUE")
    assert value == "wirepkg" and path.startswith("master:")


# --- options ---


def test_ssh_password_login(router, testbed, password_sshd, debug_log):
    plain = testbed.accounts.plain
    context = router.ssh(
        "127.0.0.1",
        username=plain.name,
        password=plain.password,
        **ssh_kwargs(testbed, password_sshd, identity_file=None),
    )
    assert context.call(os.getuid) == plain.uid
    assert plain.password not in debug_log.text
    assert not any(plain.password in line for line in cmdlines())


def test_ssh_accept_adds_unknown_host_key(router, testbed, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    context = ssh_as(
        router, testbed, "plain", check_host_keys="accept", known_hosts_file=str(known_hosts)
    )
    assert context.call(remote_helpers.identity, 1) == 1
    assert testbed.keys.host_public.split()[1] in known_hosts.read_text()


def test_ssh_ignore_skips_host_key_check(router, testbed, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    context = ssh_as(
        router, testbed, "plain", check_host_keys="ignore", known_hosts_file=str(known_hosts)
    )
    assert context.call(remote_helpers.identity, 1) == 1
    assert known_hosts.read_text() == ""


def ssh_argv(**kwargs):
    options = mitogen.ssh.Options(mitogen.core.MAX_MESSAGE_SIZE, hostname="web1", **kwargs)
    return mitogen.ssh.Connection(options, None).get_boot_command()


def option_values(argv, name):
    return [
        argv[i + 1].split("=", 1)[1]
        for i, word in enumerate(argv)
        if word == "-o" and argv[i + 1].startswith(name + "=")
    ]


def test_ssh_argv():
    argv = ssh_argv(
        username="alice",
        port=2222,
        connect_timeout=4.5,
        keepalive_interval=7,
        ssh_args=["-o", "BatchMode=no"],
    )
    assert argv[:3] == ["ssh", "-o", "BatchMode=no"]
    assert argv[argv.index("-l") + 1] == "alice" and argv[argv.index("-p") + 1] == "2222"
    assert option_values(argv, "BatchMode") == ["no", "yes"]
    assert option_values(argv, "ConnectTimeout") == ["5"]
    assert option_values(argv, "ServerAliveInterval") == ["7"]
    assert option_values(argv, "StrictHostKeyChecking") == ["yes"]
    assert option_values(argv, "Compression") == ["yes"]
    host = argv.index("web1")
    assert argv[host - 1] == "--" and argv[host + 1] == "python3"
    assert argv[host + 3].startswith("'import base64")

    argv = ssh_argv(
        password="secret-x",
        check_host_keys="ignore",
        compression=False,
        keepalive_interval=0,
        ssh_debug_level=2,
    )
    assert "secret-x" not in " ".join(argv)
    assert option_values(argv, "BatchMode") == []
    assert option_values(argv, "StrictHostKeyChecking") == ["no"]
    assert option_values(argv, "UserKnownHostsFile") == ["/dev/null"]
    assert option_values(argv, "ServerAliveInterval") == option_values(argv, "Compression") == []
    assert "-vv" in argv
    assert option_values(ssh_argv(check_host_keys="accept"), "StrictHostKeyChecking") == [
        "accept-new"
    ]
    with pytest.raises(ValueError):
        ssh_argv(check_host_keys="sometimes")


def test_ssh_debug_output_is_logged_not_misread(router, testbed, debug_log):
    context = ssh_as(router, testbed, "plain", ssh_debug_level=1)
    assert context.call(remote_helpers.identity, 1) == 1
    assert "debug1:" in debug_log.text


def test_sudo_login_runs_in_target_home(router, testbed):
    plain = testbed.accounts.plain
    context = router.sudo(username=plain.name, login=True)
    assert context.call(os.getcwd) == str(plain.home)


def test_sudo_args_override_keywords(router, testbed):
    plain = testbed.accounts.plain
    context = router.sudo(username="nobody", sudo_args=["--user", plain.name, "-H"])
    assert context.call(os.getuid) == plain.uid
    assert context.call(os.path.expanduser, "~") == str(plain.home)


def test_parse_sudo_args():
    values, rest = mitogen.sudo.parse_sudo_args(
        ["-u", "www", "-E", "--set-home", "-i", "-r", "role_r", "--type=type_t", "-C", "5"]
    )
    assert values == {
        "username": "www",
        "preserve_env": True,
        "set_home": True,
        "login": True,
        "selinux_role": "role_r",
        "selinux_type": "type_t",
    }
    assert rest == ["-C", "5"]
    with pytest.raises(mitogen.core.StreamError):
        mitogen.sudo.parse_sudo_args(["-u"])


def test_sudo_custom_prompt(router, testbed):
    account = testbed.accounts.sudo_pw
    context = router.sudo(
        via=ssh_as(router, testbed, "sudo_pw"),
        password=account.password,
        sudo_args=["-p", "Secret word for %p> "],
        password_prompt=r"secret word for \S+> $",
    )
    assert context.call(os.getuid) == 0


@pytest.mark.parametrize(
    "text",
    [
        "Password: ",
        "[sudo] password for alice: ",
        "[sudo: authenticate] Password: ",
        "[sudo] password for alice: ********",
        "doas (alice@web1) password: ",
        "alice@web1's password: ",
        "(alice@web1) Password: ",
        "[sudo] Passwort für alice: ",
        "Mot de passe : ",
        "Contraseña: ",
        "Пароль: ",
        "パスワード: ",
        "Senha: ",
        "Wachtwoord: ",
        "Lösenord: ",
        "密码：",
    ],
)
def test_password_prompts_recognised(text):
    assert mitogen.parent.is_password_prompt(text)


@pytest.mark.parametrize(
    "text",
    [
        "Sorry, try again.",
        "sudo: 1 incorrect password attempt",
        "Last login: yesterday",
        "Enter secret> ",
    ],
)
def test_non_prompts_ignored(text):
    assert not mitogen.parent.is_password_prompt(text)


def test_custom_prompt_recognised():
    custom = mitogen.parent.compile_prompt(r"enter secret>\s*$")
    assert mitogen.parent.is_password_prompt("Enter secret> ", custom)


def test_tty_create_child_is_raw_and_controlling(tmp_path):
    script = (
        "import os,sys\n"
        'os.write(1, b"tty=%d\\n" % os.isatty(0))\n'
        'fd = os.open("/dev/tty", os.O_RDWR); os.close(fd)\n'
        'data = b""\n'
        "while len(data) < 256:\n"
        "    data += os.read(0, 256 - len(data))\n"
        "os.write(1, data)\n"
    )
    proc = mitogen.parent.tty_create_child([sys.executable, "-c", script])
    try:
        payload = bytes(range(256))
        os.write(proc.stdin, payload)
        received = b""
        while len(received) < len(payload) + 6:
            chunk = os.read(proc.stdout, 4096)
            assert chunk
            received += chunk
        assert received == b"tty=1\n" + payload
        assert proc.proc.wait(timeout=10) == 0
    finally:
        os.close(proc.stdin)
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()


def test_terminal_echoes_sees_a_password_being_read():
    for echo in False, True:
        master_fd, slave_fd = mitogen.parent.openpty(echo)
        try:
            assert mitogen.parent.terminal_echoes(master_fd) is echo
        finally:
            os.close(master_fd)
            os.close(slave_fd)
    script = 'import getpass; getpass.getpass("Secret> ")'
    proc = mitogen.parent.hybrid_tty_create_child([sys.executable, "-c", script], echo=True)
    try:
        shown = b""
        while not shown.endswith(b"Secret> "):
            chunk = os.read(proc.stderr, 100)
            assert chunk
            shown += chunk
        assert not mitogen.parent.terminal_echoes(proc.stderr)
        os.write(proc.stderr, b"typed\n")
        assert proc.proc.wait(timeout=10) == 0
        assert mitogen.parent.terminal_echoes(proc.stderr)
    finally:
        os.close(proc.stdin)
        os.close(proc.stderr)
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()


# --- errors, provoked for real ---


def test_sudo_wrong_password(router, testbed, debug_log):
    account = testbed.accounts.sudo_pw
    via = ssh_as(router, testbed, "sudo_pw")
    raised = connect_fails(
        mitogen.sudo.PasswordError,
        lambda: router.sudo(via=via, password=WRONG_PASSWORD, connect_timeout=10),
    )
    assert raised.seconds < 10
    assert "password was refused" in raised.text
    assert "sudo from %s to root" % account.name in raised.text
    assert_secret_kept(debug_log, raised, WRONG_PASSWORD, account.password)
    assert_children_reaped(via)


def test_sudo_password_needed_not_given(router, testbed):
    via = ssh_as(router, testbed, "sudo_pw")
    raised = connect_fails(
        mitogen.sudo.PasswordError, lambda: router.sudo(via=via, connect_timeout=10)
    )
    assert raised.seconds < 10
    assert "a password is required" in raised.text
    assert "sudo from %s to root" % testbed.accounts.sudo_pw.name in raised.text


def test_sudo_refused_by_policy(router, testbed, debug_log):
    plain = testbed.accounts.plain
    via = ssh_as(router, testbed, "plain")
    raised = connect_fails(
        mitogen.parent.PolicyError,
        lambda: router.sudo(via=via, password=plain.password, connect_timeout=10),
    )
    assert "not in the sudoers file" in raised.text
    assert "sudo from %s to root" % plain.name in raised.text
    assert_secret_kept(debug_log, raised, plain.password)
    assert_children_reaped(via)


def test_su_wrong_password(router, testbed, debug_log):
    target = testbed.accounts.su_target
    via = ssh_as(router, testbed, "plain")
    raised = connect_fails(
        mitogen.su.PasswordError,
        lambda: router.su(
            via=via, username=target.name, password=WRONG_PASSWORD, connect_timeout=10
        ),
    )
    assert raised.seconds < 10
    assert "su from %s to %s" % (testbed.accounts.plain.name, target.name) in raised.text
    assert_secret_kept(debug_log, raised, WRONG_PASSWORD, target.password)
    assert_children_reaped(via)


def test_su_password_needed_not_given(router, testbed):
    target = testbed.accounts.su_target
    via = ssh_as(router, testbed, "plain")
    raised = connect_fails(
        mitogen.su.PasswordError,
        lambda: router.su(via=via, username=target.name, connect_timeout=10),
    )
    assert raised.seconds < 3
    assert "a password is required" in raised.text


def test_doas_wrong_password(router, testbed, debug_log):
    doas = testbed.accounts.doas
    via = ssh_as(router, testbed, "doas")
    raised = connect_fails(
        mitogen.doas.PasswordError,
        lambda: router.doas(via=via, password=WRONG_PASSWORD, connect_timeout=10),
    )
    assert raised.seconds < 10
    assert "doas from %s to root" % doas.name in raised.text
    assert_secret_kept(debug_log, raised, WRONG_PASSWORD, doas.password)
    assert_children_reaped(via)


def test_ssh_wrong_password(router, testbed, password_sshd, debug_log):
    plain = testbed.accounts.plain
    raised = connect_fails(
        mitogen.ssh.PasswordError,
        lambda: router.ssh(
            "127.0.0.1",
            username=plain.name,
            password=WRONG_PASSWORD,
            connect_timeout=10,
            **ssh_kwargs(testbed, password_sshd, identity_file=None),
        ),
    )
    assert raised.seconds < 10
    assert "ssh to %s@127.0.0.1" % plain.name in raised.text
    assert "please try again" not in raised.text  # ssh asked only once
    assert_secret_kept(debug_log, raised, WRONG_PASSWORD, plain.password)


def test_ssh_key_refused(router, testbed):
    raised = connect_fails(
        mitogen.ssh.AuthError,
        lambda: ssh_as(router, testbed, "plain", identity_file=str(testbed.keys.host_key)),
    )
    assert "refused authentication" in raised.text
    assert "ssh to %s@127.0.0.1" % testbed.accounts.plain.name in raised.text


def test_ssh_unknown_host_key_enforced(router, testbed, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    raised = connect_fails(
        mitogen.ssh.HostKeyError,
        lambda: ssh_as(router, testbed, "plain", known_hosts_file=str(known_hosts)),
    )
    assert "not known" in raised.text and "127.0.0.1" in raised.text
    assert known_hosts.read_text() == ""


@pytest.mark.parametrize("policy", ["enforce", "accept"])
def test_ssh_host_key_mismatch(router, testbed, tmp_path, policy):
    known_hosts = tmp_path / "known_hosts"
    wrong_key = " ".join(testbed.keys.client_public.split()[:2])
    known_hosts.write_text("[127.0.0.1]:%d %s\n" % (testbed.sshd.port, wrong_key))
    raised = connect_fails(
        mitogen.ssh.HostKeyError,
        lambda: ssh_as(
            router, testbed, "plain", known_hosts_file=str(known_hosts), check_host_keys=policy
        ),
    )
    assert "does not match" in raised.text and "127.0.0.1" in raised.text


def test_ssh_to_stopped_sshd(router, testbed):
    daemon = Sshd(testbed.keys, "transport-stop")
    daemon.start()
    try:
        assert ssh_as(router, testbed, "plain", sshd=daemon).call(os.getuid)
        daemon.stop()
        raised = connect_fails(
            mitogen.ssh.ConnectError,
            lambda: ssh_as(router, testbed, "plain", sshd=daemon, connect_timeout=10),
        )
        daemon.start()
        assert ssh_as(router, testbed, "plain", sshd=daemon).call(os.getuid)
    finally:
        daemon.stop()
    assert raised.seconds < 10
    assert "Connection refused" in raised.text
    assert "ssh to %s@127.0.0.1 port %d" % (testbed.accounts.plain.name, daemon.port) in raised.text


def test_ssh_to_closed_port(router, testbed):
    port = free_port("127.0.0.1")
    raised = connect_fails(
        mitogen.ssh.ConnectError, lambda: ssh_as(router, testbed, "plain", port=port)
    )
    assert "ssh to %s@127.0.0.1 port %d" % (testbed.accounts.plain.name, port) in raised.text


def test_ssh_to_unplugged_host_times_out(router, testbed, netns_hosts):
    host = netns_hosts[-1]
    host.link_down()
    try:
        raised = connect_fails(
            mitogen.core.TimeoutError,
            lambda: netns_ssh(router, testbed, host, "root", connect_timeout=2),
        )
    finally:
        host.link_up()
    assert raised.seconds < 2 + 1.5
    assert host.address in raised.text and "root" in raised.text


def test_ssh_missing_python(router, testbed):
    raised = connect_fails(
        mitogen.parent.InterpreterNotFoundError,
        lambda: ssh_as(router, testbed, "plain", python_path="python3.99"),
    )
    assert "'python3.99' was not found" in raised.text
    assert "ssh to %s@127.0.0.1" % testbed.accounts.plain.name in raised.text


def test_sudo_missing_python(router, testbed):
    raised = connect_fails(
        mitogen.parent.InterpreterNotFoundError,
        lambda: router.sudo(
            username=testbed.accounts.plain.name, python_path="/nonexistent/python3.99"
        ),
    )
    assert "/nonexistent/python3.99" in raised.text


def test_connect_by_name_rebuilds_method_error(router, testbed):
    via = ssh_as(router, testbed, "sudo_pw")
    raised = connect_fails(mitogen.sudo.PasswordError, lambda: router.connect("sudo", via=via))
    assert re.search(r"sudo from \S+ to root on ", raised.text)
