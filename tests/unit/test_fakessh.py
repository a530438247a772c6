"""mitogen.fakessh: real rsync and scp moving real files "over ssh" through a
local context and through an ssh context of the testbed (as another
account, so where the files land and who owns them shows the path taken).
Needs rsync (scripts/setup-system.sh installs it)."""

import hashlib
import os
import shutil
import signal
import tempfile
import threading
import time

import pytest

import mitogen.core
import mitogen.fakessh
from tests import remote_helpers
from tests.testbed.proc import child_pids

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")

BIG = 5 * 1048576


@pytest.fixture
def src(tmp_path):
    """A small tree: text, an empty file, nested directories, a 5 MB file."""
    root = tmp_path / "src"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "empty").write_bytes(b"")
    (root / "sub" / "b.bin").write_bytes(os.urandom(1000))
    (root / "sub" / "deeper" / "c.txt").write_text("gamma\n" * 100)
    (root / "big.bin").write_bytes(os.urandom(BIG))
    return root


def digests(root):
    """{relative path: sha256} of every file under `root`."""
    found = {}
    for dirpath, _, filenames in os.walk(str(root)):
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fp:
                found[os.path.relpath(path, str(root))] = hashlib.sha256(fp.read()).hexdigest()
    return found


def owners(root):
    return {
        os.stat(os.path.join(dirpath, name)).st_uid
        for dirpath, _, filenames in os.walk(str(root))
        for name in filenames
    }


@pytest.fixture
def ssh_plain(router, testbed):
    """An ssh context as the testbed's unprivileged account, and a fresh
    directory it owns."""
    account = testbed.accounts["plain"]
    context = router.ssh(
        "127.0.0.1",
        username=account.name,
        port=testbed.sshd.port,
        identity_file=str(testbed.keys.client_key),
        known_hosts_file=str(testbed.sshd.known_hosts),
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
    directory = tempfile.mkdtemp(prefix="fakessh-test-", dir="/tmp")
    os.chown(directory, account.uid, account.gid)
    try:
        yield context, account, directory
    finally:
        shutil.rmtree(directory)


def run(dest, router, args, **kwargs):
    started = time.monotonic()
    status = mitogen.fakessh.run(dest, router, [str(arg) for arg in args], **kwargs)
    return status, time.monotonic() - started


def test_rsync_tree_into_local_context(router, src, tmp_path):
    dest = router.local()
    status, _ = run(dest, router, ["rsync", "-a", "%s/" % src, "anyhost:%s/" % (tmp_path / "dst")])
    assert status == 0
    assert digests(tmp_path / "dst") == digests(src)


def test_rsync_tree_out_of_local_context(router, src, tmp_path):
    dest = router.local()
    status, _ = run(dest, router, ["rsync", "-a", "anyhost:%s/" % src, "%s/" % (tmp_path / "dst")])
    assert status == 0
    assert digests(tmp_path / "dst") == digests(src)


def test_run_inside_a_child_context(router, src, tmp_path):
    """run() called in a context, for a context behind it."""
    parent = router.local()
    dest = router.local(via=parent)
    status = parent.call(
        mitogen.fakessh.run,
        dest,
        None,
        ["rsync", "-a", "%s/" % src, "anyhost:%s/" % (tmp_path / "dst")],
    )
    assert status == 0
    assert digests(tmp_path / "dst") == digests(src)


@pytest.mark.needs_testbed
def test_rsync_tree_into_ssh_context(router, ssh_plain, src):
    context, account, directory = ssh_plain
    status, _ = run(context, router, ["rsync", "-a", "%s/" % src, "anyhost:%s/dst/" % directory])
    assert status == 0
    dst = os.path.join(directory, "dst")
    assert digests(dst) == digests(src)
    assert owners(dst) == {account.uid}


@pytest.mark.needs_testbed
@pytest.mark.parametrize("mode", [["-O"], []], ids=["legacy", "sftp"])
def test_scp_file_into_ssh_context(router, ssh_plain, src, mode):
    context, account, directory = ssh_plain
    target = os.path.join(directory, "copy.bin")
    status, _ = run(context, router, ["scp", "-q"] + mode + [src / "big.bin", "anyhost:" + target])
    assert status == 0
    assert digests(directory) == {"copy.bin": digests(src)["big.bin"]}
    assert os.stat(target).st_uid == account.uid


@pytest.mark.needs_testbed
def test_failing_rsync_reports_its_status(router, ssh_plain, src):
    context, _, _ = ssh_plain
    status, _ = run(context, router, ["rsync", "-a", "%s/" % src, "anyhost:/root/forbidden/"])
    assert status not in (0, 255)


def test_exit_status_and_output_of_remote_command(router, capfd):
    dest = router.local()
    pid = dest.call(remote_helpers.getpid)
    status, _ = run(
        dest,
        router,
        [
            "ssh",
            "-p",
            "22",
            "-o",
            "BatchMode=yes",
            "user@anyhost",
            "echo $PPID; echo oops >&2; exit 7",
        ],
    )
    assert status == 7
    out, err = capfd.readouterr()
    assert out == "%d\n" % (pid,)
    assert err == "oops\n"


def test_interactive_session_is_refused(router, capfd):
    dest = router.local()
    status, _ = run(dest, router, ["ssh", "anyhost"])
    assert status == 255
    assert "no remote command given" in capfd.readouterr().err


def test_deadline_kills_program_and_remote_command(router):
    dest = router.local()
    pid = dest.call(remote_helpers.getpid)
    started = time.monotonic()
    with pytest.raises(mitogen.core.TimeoutError):
        mitogen.fakessh.run(dest, router, ["ssh", "anyhost", "sleep 60"], deadline=time.time() + 1)
    assert time.monotonic() - started < 5
    assert_no_children(pid)


def assert_no_children(pid):
    """Process `pid` (a context) soon has no child process left."""
    deadline = time.monotonic() + 5
    while child_pids(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child_pids(pid) == []


def test_deadline_holds_while_context_is_busy(router):
    """The context cannot even start the command before the deadline; it
    is killed as soon as it starts."""
    dest = router.local()
    pid = dest.call(remote_helpers.getpid)
    dest.call(remote_helpers.import_and_report, "mitogen.fakessh")
    busy = dest.call_async(remote_helpers.sleep, 3)
    started = time.monotonic()
    with pytest.raises(mitogen.core.TimeoutError):
        mitogen.fakessh.run(dest, router, ["ssh", "anyhost", "sleep 60"], deadline=time.time() + 1)
    assert time.monotonic() - started < 2.5
    assert busy.get(timeout=10).unpickle() == 3
    assert_no_children(pid)


def test_context_lost_midway_fails_the_command(router, capfd):
    dest = router.local()
    pid = dest.call(remote_helpers.getpid)
    dest.call(remote_helpers.import_and_report, "mitogen.fakessh")
    timer = threading.Timer(0.5, os.kill, (pid, signal.SIGKILL))
    timer.start()
    try:
        status, seconds = run(dest, router, ["ssh", "anyhost", "sleep 60"])
    finally:
        timer.join()
    assert status == 255
    assert seconds < 5
    assert "lost contact with" in capfd.readouterr().err


def test_window_bounds_memory_of_a_slow_reader(router, capfd):
    """64 MB pushed at a command that reads nothing for a second: without
    flow control all of it would pile up in the context."""
    dest = router.local()
    pid = dest.call(remote_helpers.getpid)
    dest.call(remote_helpers.import_and_report, "mitogen.fakessh")
    before = peak_rss(pid)
    status, _ = run(
        dest, router, ["sh", "-c", 'head -c 67108864 /dev/zero | ssh anyhost "sleep 1; wc -c"']
    )
    assert status == 0
    assert capfd.readouterr().out.strip() == "67108864"
    assert peak_rss(pid) - before < 24 * 1048576


def peak_rss(pid):
    with open("/proc/%d/status" % (pid,)) as fp:
        for line in fp:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM for pid %d" % (pid,))


def test_temporary_directory_is_removed(router):
    dest = router.local()
    pattern = set(os.listdir(tempfile.gettempdir()))
    status, _ = run(dest, router, ["ssh", "anyhost", "true"])
    assert status == 0
    left = {
        name
        for name in set(os.listdir(tempfile.gettempdir())) - pattern
        if name.startswith("mitogen_fakessh_")
    }
    assert left == set()
