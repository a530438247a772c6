"""mitogen.unix: processes on this machine joining the master's tree over a
UNIX socket. Clients are real separate processes (CLIENT below); one runs
as another account of the testbed to check the uid check."""

import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid

import pytest

import mitogen.core
import mitogen.unix
from tests import remote_helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: A client process: `CLIENT PATH MODE [HANDLE]` ('@' stands for a leading
#: NUL in PATH, which argv cannot carry). It joins the listener,
#: prints one JSON line and exits. Modes:
#: - echo: send ('hello', sender) to HANDLE and report the reply and the
#:   value the listener then pushes through the sender;
#: - call: ask HANDLE for a context, call getpid() in it and report it;
#: - hang: report its IDs, then wait until the link breaks.
CLIENT = r"""
import json, sys
import mitogen, mitogen.core, mitogen.unix
from tests import remote_helpers

def main(path, mode, handle=None):
    if path.startswith('@'):
        path = '\0' + path[1:]
    try:
        router, parent = mitogen.unix.connect(path, timeout=10)
    except mitogen.core.Error as e:
        return {'error': '%s: %s' % (type(e).__name__, e)}
    out = {'ids': [mitogen.context_id, mitogen.parent_id, mitogen.parent_ids]}
    try:
        if mode == 'echo':
            recv = mitogen.core.Receiver(router)
            msg = mitogen.core.Message.pickled(('hello', recv.to_sender()),
                                               handle=int(handle))
            out['reply'] = parent.send_await(msg, deadline=10)
            out['pushed'] = recv.get(timeout=10).unpickle()
        elif mode == 'call':
            msg = mitogen.core.Message.pickled('context?', handle=int(handle))
            target = parent.send_await(msg, deadline=10)
            try:
                out['result'] = target.call(remote_helpers.getpid)
            except mitogen.core.Error as e:
                out['result'] = '%s: %s' % (type(e).__name__, e)
        elif mode == 'hang':
            print(json.dumps(out))
            sys.stdout.flush()
            router.broker.join(60)
    finally:
        router.broker.shutdown()
        router.broker.join()
    return out

print(json.dumps(main(*sys.argv[1:])))
"""


def start_client(path, mode, handle=None, user=None):
    args = [sys.executable, "-c", CLIENT, path.replace("\0", "@", 1), mode]
    if handle is not None:
        args.append(str(handle))
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen(args, stdout=subprocess.PIPE, env=env, cwd="/", user=user)


def client_result(proc, timeout=30):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return json.loads(out.decode().splitlines()[-1])


def abstract_name():
    return "\0mitogen-test-%s" % (uuid.uuid4().hex,)


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def listener(router):
    listener = mitogen.unix.listen(router)
    try:
        yield listener
    finally:
        listener.stop()


def serve_echo(router, recv):
    """Answer one echo client; return the request message."""
    msg = recv.get(timeout=20)
    tag, sender = msg.unpickle()
    assert tag == "hello"
    msg.reply(("welcome", msg.src_id, msg.auth_id))
    sender.send("pushed to %d" % (msg.src_id,))
    return msg


def test_default_socket_lives_in_private_dir_removed_on_stop(router):
    listener = mitogen.unix.listen(router)
    directory = os.path.dirname(listener.path)
    st = os.stat(directory)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.geteuid()
    assert stat.S_ISSOCK(os.lstat(listener.path).st_mode)
    listener.stop()
    assert not os.path.exists(listener.path)
    assert not os.path.exists(directory)
    listener.stop()


def test_messages_flow_both_ways(router, listener):
    recv = mitogen.core.Receiver(router)
    proc = start_client(listener.path, "echo", recv.handle)
    msg = serve_echo(router, recv)
    result = client_result(proc)
    context_id = msg.src_id
    assert context_id > 0
    assert msg.auth_id == context_id
    assert result["ids"] == [context_id, 0, [0]]
    assert result["reply"] == ["welcome", context_id, context_id]
    assert result["pushed"] == "pushed to %d" % (context_id,)
    recv.close()


def run_call_client(router, listener):
    """A client asks for a context; we start one and hand it over; the
    client calls getpid() in it. Return (client's result, real pid)."""
    recv = mitogen.core.Receiver(router)
    proc = start_client(listener.path, "call", recv.handle)
    msg = recv.get(timeout=20)
    assert msg.unpickle() == "context?"
    child = router.local()
    msg.reply(child)
    result = client_result(proc)
    recv.close()
    return result["result"], child.call(remote_helpers.getpid)


def test_client_has_no_authority_over_other_contexts(router, listener):
    result, _ = run_call_client(router, listener)
    assert result == "ChannelError: message refused by policy"


def test_granted_authority_lets_client_call_contexts_we_created(router):
    listener = mitogen.unix.listen(router, grant_authority=True)
    try:
        result, pid = run_call_client(router, listener)
    finally:
        listener.stop()
    assert result == pid


def test_abstract_namespace(router):
    name = abstract_name()
    listener = mitogen.unix.listen(router, path=name)
    try:
        assert listener.path == name
        recv = mitogen.core.Receiver(router)
        proc = start_client(name, "echo", recv.handle)
        msg = serve_echo(router, recv)
        assert client_result(proc)["pushed"] == "pushed to %d" % (msg.src_id,)
        recv.close()
    finally:
        listener.stop()
    assert not is_listening(name)


def is_listening(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        return False
    finally:
        sock.close()
    return True


@pytest.mark.needs_testbed
def test_other_uid_is_refused_and_logged(router, testbed, caplog):
    account = testbed.accounts["plain"]
    name = abstract_name()
    listener = mitogen.unix.listen(router, path=name)
    try:
        with caplog.at_level(logging.ERROR, logger="mitogen"):
            proc = start_client(name, "echo", 1000, user=account.name)
            result = client_result(proc)
        assert "closed the connection during the handshake" in result["error"]
        messages = [r.getMessage() for r in caplog.records]
        refusals = [m for m in messages if "refused connection" in m]
        assert len(refusals) == 1
        assert "uid %d is not allowed" % (account.uid,) in refusals[0]
    finally:
        listener.stop()


@pytest.mark.needs_testbed
def test_allowed_uid_is_admitted_but_never_granted_authority(router, testbed):
    account = testbed.accounts["plain"]
    name = abstract_name()
    listener = mitogen.unix.listen(
        router, path=name, allowed_uids=[account.uid], grant_authority=True
    )
    try:
        recv = mitogen.core.Receiver(router)
        proc = start_client(name, "call", recv.handle, user=account.name)
        msg = recv.get(timeout=20)
        assert msg.auth_id == msg.src_id
        msg.reply(router.local())
        assert client_result(proc)["result"] == "ChannelError: message refused by policy"
        recv.close()
    finally:
        listener.stop()


@pytest.mark.needs_testbed
def test_other_uid_cannot_reach_private_directory(router, testbed, listener):
    proc = start_client(listener.path, "echo", 1000, user=testbed.accounts["plain"].name)
    assert "Permission denied" in client_result(proc)["error"]


def test_twenty_concurrent_clients(router, listener):
    recv = mitogen.core.Receiver(router)
    procs = [start_client(listener.path, "echo", recv.handle) for _ in range(20)]
    ids = {serve_echo(router, recv).src_id for _ in procs}
    results = [client_result(proc) for proc in procs]
    assert len(ids) == 20
    assert {r["ids"][0] for r in results} == ids
    assert all(r["pushed"] == "pushed to %d" % (r["ids"][0],) for r in results)
    recv.close()


def assert_closed_by_listener(path, greeting):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        sock.settimeout(5)
        sock.sendall(greeting)
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:
            pass
    finally:
        sock.close()


def test_clients_leaving_midway_leave_no_descriptors(router, listener, monkeypatch, caplog):
    monkeypatch.setattr(mitogen.unix, "HANDSHAKE_TIMEOUT", 0.5)
    baseline = fd_count()

    partial = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    partial.connect(listener.path)
    partial.send(mitogen.unix.MAGIC[:2])
    partial.close()

    with caplog.at_level(logging.ERROR, logger="mitogen"):
        assert_closed_by_listener(listener.path, b"")
        assert_closed_by_listener(listener.path, b"GET / HTTP/1.0\r\n\r\n")
    messages = [r.getMessage() for r in caplog.records]
    assert any("no greeting within 0.5 seconds" in m for m in messages)
    assert any("bad greeting" in m for m in messages)

    proc = start_client(listener.path, "hang")
    context_id = json.loads(proc.stdout.readline())["ids"][0]
    assert router.stream_by_id(context_id) is not None
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    wait_for(lambda: router.stream_by_id(context_id) is None)
    wait_for(lambda: fd_count() == baseline)


def test_clients_stay_connected_after_stop_and_leave_at_shutdown(router):
    stopped = mitogen.unix.listen(router)
    running = mitogen.unix.listen(router)
    proc = start_client(stopped.path, "hang")
    context_id = json.loads(proc.stdout.readline())["ids"][0]
    stopped.stop()
    assert not os.path.exists(os.path.dirname(stopped.path))
    assert router.stream_by_id(context_id) is not None
    router.broker.shutdown()
    router.broker.join(10)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert json.loads(out)["ids"][0] == context_id
    assert not os.path.exists(os.path.dirname(running.path))


def test_stale_socket_is_replaced_and_live_one_refused(router, tmp_path):
    path = str(tmp_path / "sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    listener = mitogen.unix.listen(router, path=path)
    try:
        with pytest.raises(mitogen.core.Error, match="another listener is using it"):
            mitogen.unix.listen(router, path=path)
    finally:
        listener.stop()
    assert not os.path.exists(path)
    assert os.path.isdir(str(tmp_path))
    (tmp_path / "file").write_text("x")
    with pytest.raises(mitogen.core.Error, match="is not a socket"):
        mitogen.unix.listen(router, path=str(tmp_path / "file"))


def test_connect_to_missing_listener_fails_clearly(tmp_path):
    with pytest.raises(mitogen.unix.ConnectError, match="cannot connect to"):
        mitogen.unix.connect(str(tmp_path / "nothing"))
