"""Tests of the test host infrastructure (tests/testbed): logins, sudo/su/doas, hosts.

Run as root: python -m pytest tests/test_testbed.py
"""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.testbed import (
    ROLES,
    Keys,
    NetnsHosts,
    PtyProcess,
    PythonInstall,
    Sshd,
    Testbed,
    TestbedError,
    discover,
)
from tests.testbed.proc import pid_alive, pids_of_uid, proc_exe

pytestmark = pytest.mark.needs_testbed

PYTHONS = discover()


def pty_ssh(sshd: Sshd, user: str, command: str) -> PtyProcess:
    """ssh -tt as `user` running `command`, driven through a local pty."""
    return PtyProcess(sshd.ssh_command(user, command, tty=True), timeout=20)


def ip_json(*args: str) -> list[dict[str, object]]:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout) if out.stdout.strip() else []


def user_exists(name: str) -> bool:
    return (
        subprocess.run(["getent", "passwd", name], check=False, capture_output=True).returncode == 0
    )


# --- loopback sshd and accounts ---


@pytest.mark.parametrize("role", [*ROLES, "root"])
def test_ssh_login_as_each_account(testbed: Testbed, role: str) -> None:
    name = "root" if role == "root" else testbed.accounts[role].name
    result = testbed.sshd.run(name, "id -un")
    assert result.stdout.strip() == name


@pytest.mark.parametrize("python", PYTHONS, ids=[py.short for py in PYTHONS])
def test_python_account_runs_its_pyenv_version(testbed: Testbed, python: PythonInstall) -> None:
    account = testbed.accounts.python(python.short)
    assert account.name == f"mitogen__py{python.tag}"
    major = python.version[0]
    result = testbed.sshd.run(account.name, f"python{major} --version 2>&1; python --version 2>&1")
    assert result.stdout.split("\n")[:2] == [f"Python {python.full}"] * 2


def test_sshd_pid_is_the_daemon_we_started(testbed: Testbed) -> None:
    pid = testbed.sshd.pid
    assert pid is not None and proc_exe(pid) == "/usr/sbin/sshd"
    assert int(testbed.sshd.pid_file.read_text()) == pid


def test_known_hosts_is_enforced(testbed: Testbed, tmp_path: Path) -> None:
    sshd = testbed.sshd
    hosts, keytype = sshd.known_hosts.read_text().split()[:2]
    assert hosts.split(",") == [f"[127.0.0.1]:{sshd.port}", f"[localhost]:{sshd.port}"]
    assert keytype == "ssh-ed25519"
    assert "StrictHostKeyChecking=yes" in sshd.ssh_args()
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = sshd.ssh_command(testbed.accounts.plain.name, "true")
    argv[argv.index(f"UserKnownHostsFile={sshd.known_hosts}")] = f"UserKnownHostsFile={empty}"
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=20)
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_sudo_nopasswd_works(testbed: Testbed) -> None:
    result = testbed.sshd.run(testbed.accounts.sudo_nopw.name, "sudo -n id -un")
    assert result.stdout.strip() == "root"
    assert "unable to resolve host" not in result.stderr


@pytest.mark.parametrize("role", ["plain", "sudo_pw"])
def test_sudo_without_password_refused(testbed: Testbed, role: str) -> None:
    result = testbed.sshd.run(testbed.accounts[role].name, "sudo -n true", check=False)
    assert result.returncode != 0
    assert "password is required" in result.stderr


def test_sudo_with_password_on_stdin(testbed: Testbed) -> None:
    account = testbed.accounts.sudo_pw
    result = testbed.sshd.run(account.name, "sudo -S -p '' id -un", input=account.password + "\n")
    assert result.stdout.strip() == "root"


def test_sudo_wrong_password_refused(testbed: Testbed) -> None:
    account = testbed.accounts.sudo_pw
    result = testbed.sshd.run(
        account.name, "sudo -S -p '' id -un", input="not-the-password\n", check=False
    )
    assert result.returncode != 0
    assert "incorrect password" in result.stderr
    assert "root" not in result.stdout


def test_su_needs_target_password(testbed: Testbed) -> None:
    plain, target = testbed.accounts.plain, testbed.accounts.su_target
    command = f"su {target.name} -c 'id -un'"
    with pty_ssh(testbed.sshd, plain.name, command) as proc:
        proc.expect("Password: ")
        proc.sendline("not-the-password", secret=True)
        proc.expect("Authentication failure")
        assert proc.wait() != 0
    with pty_ssh(testbed.sshd, plain.name, command) as proc:
        proc.expect("Password: ")
        proc.sendline(target.password, secret=True)
        assert proc.read_rest().split() == [target.name]
        assert proc.wait() == 0


@pytest.mark.parametrize("target", ["root", "plain"])
def test_doas_with_password_through_pty(testbed: Testbed, target: str) -> None:
    doas = testbed.accounts.doas
    name = "root" if target == "root" else testbed.accounts.plain.name
    with pty_ssh(testbed.sshd, doas.name, f"doas -u {name} id -un") as proc:
        proc.expect(rf"doas \({doas.name}@[^)]*\) password: ")
        proc.sendline(doas.password, secret=True)
        assert proc.read_rest().split() == [name]
        assert proc.wait() == 0


def test_doas_wrong_password_refused(testbed: Testbed) -> None:
    doas = testbed.accounts.doas
    with pty_ssh(testbed.sshd, doas.name, "doas id -un") as proc:
        proc.expect("password: ")
        proc.sendline("not-the-password", secret=True)
        assert "root" not in proc.read_rest()
        assert proc.wait() != 0


def test_doas_refused_for_other_accounts(testbed: Testbed) -> None:
    with pty_ssh(testbed.sshd, testbed.accounts.plain.name, "doas -n true") as proc:
        proc.read_rest()
        assert proc.wait() != 0


def test_passwords_stay_secret(testbed: Testbed) -> None:
    passwords = [account.password for account in testbed.accounts]
    assert len(set(passwords)) == len(passwords) and all(len(p) >= 20 for p in passwords)
    text = repr(list(testbed.accounts)) + testbed.sshd.log_path.read_text()
    assert not any(password in text for password in passwords)


# --- network-namespace hosts ---


def test_netns_hosts_answer_by_address_and_name(netns_hosts: NetnsHosts) -> None:
    assert [h.address for h in netns_hosts] == ["10.77.0.1", "10.77.0.2", "10.77.0.3"]
    for host in netns_hosts:
        assert host.run("root", "hostname").stdout.strip() == host.hostname
        argv = [
            "ssh",
            *host.ssh_args(),
            "-l",
            "mitogen__sudo_nopw",
            host.hostname,
            "sudo -n true",
        ]
        result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=20)
        assert result.returncode == 0, result.stderr
        assert "unable to resolve host" not in result.stderr


def test_netns_traffic_stays_on_our_links(netns_hosts: NetnsHosts) -> None:
    assert ip_json("route", "show", "type", "prohibit", "10.77.0.0/16")
    for address in [h.address for h in netns_hosts] + ["10.77.0.200"]:
        (route,) = ip_json("route", "get", address)
        assert route["dev"] == netns_hosts.root_veth
        assert route["prefsrc"] == netns_hosts.gateway
    outside = subprocess.run(
        ["ip", "route", "get", "10.77.99.1"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert outside.returncode != 0  # prohibited, never the default route
    for host in netns_hosts:
        routes = ip_json("-n", host.namespace, "route", "show")
        assert [r["dst"] for r in routes] == [netns_hosts.subnet]


def test_netns_link_down_makes_host_unreachable(netns_hosts: NetnsHosts) -> None:
    host = netns_hosts[-1]
    host.link_down()
    try:
        began = time.monotonic()
        result = host.run("root", "true", check=False, connect_timeout=2, timeout=15)
        elapsed = time.monotonic() - began
        assert result.returncode == 255
        assert elapsed < 6, f"ssh took {elapsed:.1f}s to fail"
        assert netns_hosts[0].run("root", "true").returncode == 0
    finally:
        host.link_up()
    assert host.run("root", "hostname").stdout.strip() == host.hostname


# --- teardown (on a separate instance) ---


def test_stop_removes_everything(testbed: Testbed) -> None:
    pythons = [PYTHONS[-1].short] if PYTHONS else []
    with Testbed(account_prefix="mitogen__t_", pythons=pythons, netns_hosts=2) as bed:
        assert bed.startup_seconds is not None and bed.startup_seconds < 15
        plain = bed.accounts.plain.name
        assert plain == "mitogen__t_plain"
        assert bed.sshd.port != testbed.sshd.port
        assert bed.sshd.run(plain, "id -un").stdout.strip() == plain
        assert bed.netns is not None
        for host in bed.netns:
            assert host.run(plain, "hostname").stdout.strip() == host.hostname

        # A second loopback "host" on 127.0.0.2 shares accounts and keys.
        second = bed.start_sshd("127.0.0.2")
        assert second.run(plain, "id -un").stdout.strip() == plain

        # A stopped sshd refuses connections; started again it serves the same port.
        port = bed.sshd.port
        bed.sshd.stop()
        down = bed.sshd.run(plain, "true", check=False)
        assert down.returncode == 255 and "Connection refused" in down.stderr
        bed.sshd.start()
        assert bed.sshd.port == port
        assert bed.sshd.run(plain, "id -un").stdout.strip() == plain

        # Leave a process running as a test account; stop() must end it too.
        bed.sshd.run(plain, "sleep 300 </dev/null >/dev/null 2>&1 &")
        uids = [account.uid for account in bed.accounts]
        assert pids_of_uid(bed.accounts.plain.uid)

        pids = bed.pids()
        names = bed.accounts.names
        namespaces = bed.netns.namespaces
        subnet, veth, tag = bed.netns.subnet, bed.netns.root_veth, bed.tag
        sudoers, directory = bed.accounts.sudoers_file, bed.directory
        assert len(pids) == 4 and all(pid_alive(pid) for pid in pids)

    assert not bed.started
    assert not any(pid_alive(pid) for pid in pids)
    assert not any(pids_of_uid(uid) for uid in uids)
    assert not any(user_exists(name) for name in names)
    assert not any(Path("/home", name).exists() for name in names)
    assert not sudoers.exists() and not directory.exists()
    assert tag not in Path("/etc/hosts").read_text()
    doas_conf = Path("/etc/doas.conf")
    assert not doas_conf.exists() or tag not in doas_conf.read_text()
    listed = {str(ns["name"]) for ns in ip_json("netns", "list")}
    assert not listed & set(namespaces)
    assert not [link for link in ip_json("link", "show") if link["ifname"] == veth]
    routes = ip_json("route", "show")
    assert not [r for r in routes if r.get("dst") == subnet]
    others = [r for r in routes if re.match(r"10\.77\.\d+\.0/24", str(r.get("dst")))]
    prohibit = [r for r in routes if r.get("dst") == "10.77.0.0/16"]
    assert bool(prohibit) == bool(others)  # kept only while another instance uses 10.77
    # The session testbed is untouched.
    assert testbed.sshd.run(testbed.accounts.plain.name, "id -un").returncode == 0


def test_testbed_refuses_to_run_unprivileged() -> None:
    if os.geteuid() == 0:
        pid = os.fork()
        if pid == 0:
            os.setuid(65534)
            try:
                Testbed().start()
            except TestbedError as exc:
                os._exit(0 if "needs root" in str(exc) else 1)
            os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    else:
        with pytest.raises(TestbedError, match="needs root"):
            Testbed().start()


def test_sshd_refuses_non_loopback_address(tmp_path: Path) -> None:
    keys = Keys(tmp_path / "private", tmp_path / "public")
    with pytest.raises(TestbedError, match="not a loopback address"):
        Sshd(keys, "outside", address="192.0.2.10")
    assert Sshd(keys, "second", address="127.0.0.2").address == "127.0.0.2"
