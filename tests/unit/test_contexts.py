"""Local and fork contexts: conformance, calls, chains, routing and IDs."""

import glob
import os
import subprocess
import sys
import time
import zlib

import pytest

import mitogen.core
import mitogen.parent
from tests import conformance, remote_helpers


def pyenv_pythons():
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = {}
    for path in glob.glob(os.path.join(root, "versions", "3.*", "bin", "python3.*")):
        name = os.path.basename(path)
        if name.count(".") == 1 and name[len("python3.") :].isdigit():
            found[name] = path
    return [found[k] for k in sorted(found, key=lambda n: int(n.split(".")[1]))]


def test_local_conformance(router):
    conformance.check_transport(router, router.local())


def test_fork_conformance(router):
    conformance.check_transport(router, router.fork(), expect_wire_import=False)


def test_local_via_local_conformance(router):
    parent = router.local(name="hop1")
    conformance.check_transport(router, router.local(via=parent, name="hop2"))


def test_fork_via_local_conformance(router):
    parent = router.local()
    conformance.check_transport(router, router.fork(via=parent))


@pytest.mark.parametrize("python", pyenv_pythons(), ids=os.path.basename)
def test_local_on_every_python(router, python):
    context = router.local(python_path=python)
    major_minor = tuple(int(x) for x in os.path.basename(python)[len("python") :].split("."))
    assert context.call(remote_helpers.version_info) == major_minor
    path, value = context.call(remote_helpers.import_and_report, "mitogen_test_wirepkg", "VALUE")
    assert value == "wirepkg" and path.startswith("master:")


@pytest.mark.parametrize("python", pyenv_pythons()[:1] + [sys.executable], ids=os.path.basename)
def test_stage0_waits_when_stdin_would_block(python):
    """sudo's log_output hands the child a non-blocking pipe as stdin: stage 0
    must wait for the bootstrap rather than fail with BlockingIOError."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    loader = zlib.compress(b'import os;os.write(1,b"loaded\\n")')
    with subprocess.Popen(
        [python, "-c", mitogen.parent.get_stage0_command()],
        stdin=read_fd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        os.close(read_fd)
        with open(write_fd, "wb", buffering=0) as stdin:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"MITO000\n"
            time.sleep(0.2)  # stage 0 is reading the empty pipe by now
            try:
                stdin.write(mitogen.parent.frame_blob(loader))
            except BrokenPipeError:
                pass  # stage 0 died: its stderr, compared below, says why
        out, err = proc.communicate(timeout=10)
    assert (proc.returncode, out, err) == (0, b"loaded\n", b"")


def test_every_supported_python_is_installed():
    versions = {os.path.basename(p) for p in pyenv_pythons()}
    assert {"python3.%d" % n for n in range(6, 14)} <= versions


def test_upgrade_promotes_router_and_known_contexts(router):
    """A child's core Router becomes a parent Router through the one
    initialiser a parent Router uses, and Contexts it made before (its
    parent's, an unpickled argument's) gain the call methods."""
    report = router.local().call(remote_helpers.promote_router)
    assert report == {
        "early_before": "mitogen.router.Context",  # mitogen.core.Context's home
        "router": "mitogen.routing.Router",
        "id_allocator": "mitogen.routing.ChildIdAllocator",
        "responder": "mitogen.routing.ModuleForwarder",
        "route_monitor": "mitogen.routing.RouteMonitor",
        "early": "mitogen.calls.Context",
        "early_chain_is_own": True,
        "parent": "mitogen.calls.Context",
    }


def test_a_lost_context_is_announced_only_to_those_that_spoke_with_it(router):
    """The master tells a child that context C is gone when the child exchanged
    messages with C through it, and only then: a mux of 100 hosts must not wake
    every host each time a worker that spoke to one of them leaves."""
    talker, bystander, leaver = router.local(), router.local(), router.local()
    for child in (talker, bystander):
        assert child.call(remote_helpers.watch_disconnect, leaver.context_id)
    # The talker refuses a sibling's call, but the two have exchanged messages.
    answer = leaver.call(remote_helpers.call_function_in, talker.context_id)
    assert answer == "ChannelError: message refused by policy"
    leaver.shutdown(wait=True)
    deadline = time.monotonic() + 10
    while talker.call(remote_helpers.disconnected) != [leaver.context_id]:
        assert time.monotonic() < deadline, "the talker never heard that its peer left"
        time.sleep(0.05)
    assert bystander.call(remote_helpers.disconnected) == []


def test_context_ids_and_names(router):
    a = router.local(name="alpha")
    b = router.local(via=a, name="beta")
    assert a.name == "alpha" and b.name == "beta"
    assert a.call(remote_helpers.context_ids) == (a.context_id, 0, [0])
    b_id, b_parent, b_parents = b.call(remote_helpers.context_ids)
    assert (b_id, b_parent, b_parents) == (b.context_id, a.context_id, [a.context_id, 0])
    assert b.context_id >= 1000 or b.context_id > a.context_id


def test_myself(router):
    assert router.myself().context_id == 0


def test_call_async_and_timeout(router):
    context = router.fork()
    recv = context.call_async(remote_helpers.sleep, 0.3)
    with pytest.raises(mitogen.core.TimeoutError):
        recv.get(timeout=0.05)
    assert recv.get(timeout=10).unpickle() == 0.3


def test_call_no_reply_is_ordered(router):
    context = router.fork()
    context.call_no_reply(remote_helpers.append_state, "a")
    context.call_no_reply(remote_helpers.append_state, "b")
    assert context.call(remote_helpers.append_state, "c") == ["a", "b", "c"]


def test_pipelined_call_chain(router):
    context = router.fork()
    chain = mitogen.parent.CallChain(context, pipelined=True)
    chain.call_no_reply(remote_helpers.fail_in_chain)
    with pytest.raises(mitogen.core.CallError) as info:
        chain.call(remote_helpers.identity, 1)
    assert "chain step failed" in str(info.value)
    chain.reset()
    assert chain.call(remote_helpers.identity, 2) == 2


def test_instance_methods_and_lambdas_refused(router):
    context = router.fork()
    with pytest.raises(TypeError):
        context.call(lambda: 1)
    with pytest.raises(TypeError):
        context.call(remote_helpers.Unlisted().__init__)  # type: ignore[misc]


def test_fork_on_fork_and_on_start(router):
    context = router.fork(on_fork=remote_helpers._chain_state.clear)
    assert context.call(remote_helpers.append_state, "x") == ["x"]


def test_local_missing_python_is_clear_error(router):
    with pytest.raises(mitogen.core.StreamError) as info:
        router.local(python_path="/nonexistent/python3")
    assert "/nonexistent/python3" in str(info.value)


def test_local_python_that_exits_names_output(router, tmp_path):
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "no python here" >&2\nexit 3\n')
    fake.chmod(0o755)
    with pytest.raises(mitogen.parent.EofError) as info:
        router.local(python_path=str(fake))
    assert "no python here" in str(info.value)


def test_connect_timeout(router, tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    with pytest.raises(mitogen.core.TimeoutError) as info:
        router.local(python_path=str(fake), connect_timeout=0.5)
    assert "timed out after 0.5 seconds" in str(info.value)


def test_router_connect_by_name(router):
    context = router.connect("local", name="by-name")
    assert context.call(remote_helpers.identity, "x") == "x"
    with pytest.raises(mitogen.core.Error):
        router.connect("no_such_method")


def test_main_guard_required(tmp_path):
    """A script without a __main__ guard must not be served to children."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import sys\n"
        "sys.path.insert(0, %r)\n"
        "import mitogen.utils, mitogen.core\n"
        "def work():\n"
        "    return 1\n"
        "def main(router):\n"
        "    c = router.local()\n"
        "    try:\n"
        "        c.call(work)\n"
        "    except mitogen.core.CallError as e:\n"
        '        print("REFUSED" if "__main__" in str(e) else "OTHER", flush=True)\n'
        "    else:\n"
        '        print("RAN", flush=True)\n'
        "mitogen.utils.run_with_router(main)\n" % (mitogen.parent.__file__.rsplit("/", 2)[0],)
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert "REFUSED" in out.stdout, out.stdout + out.stderr
    assert "refusing to serve" in out.stderr


def test_main_decorator_program(tmp_path):
    script = tmp_path / "guarded.py"
    script.write_text(
        "import sys, os\n"
        "sys.path.insert(0, %r)\n"
        "import mitogen\n"
        "def work():\n"
        "    return os.getpid()\n"
        "@mitogen.main()\n"
        "def main(router):\n"
        "    c = router.local()\n"
        '    print("PID-DIFFERS" if c.call(work) != os.getpid() else "SAME", flush=True)\n'
        % (mitogen.parent.__file__.rsplit("/", 2)[0],)
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "PID-DIFFERS", out.stdout + out.stderr


def test_sender_streams_into_receiver(router):
    context = router.fork()
    recv = mitogen.core.Receiver(router)
    call = context.call_async(remote_helpers.stream_values, recv.to_sender(), 5)
    assert [msg.unpickle() for msg in recv] == [0, 1, 2, 3, 4]
    assert call.get(timeout=10).unpickle() == 5


def test_channel_both_ways(router):
    context = router.local()
    announce = mitogen.core.Receiver(router)
    call = context.call_async(remote_helpers.echo_channel, announce.to_sender())
    remote = announce.get(timeout=10).unpickle()
    channel = mitogen.core.Channel(router, remote.context, remote.dst_handle)
    channel.send(channel.to_sender())
    for value in (1, 2, 3):
        channel.send(value)
    doubled = [channel.get(timeout=10).unpickle() for _ in range(3)]
    mitogen.core.Sender.close(channel)
    assert doubled == [2, 4, 6]
    assert call.get(timeout=10).unpickle() == 6
    with pytest.raises(mitogen.core.ChannelError):
        channel.get(timeout=10)
    channel.close()


@pytest.mark.parametrize("poller", ["Poller", "PollPoller", "EpollPoller"])
def test_every_poller_carries_calls(poller):
    import mitogen.master

    module = mitogen.core if poller == "Poller" else mitogen.parent
    broker = mitogen.master.Broker(poller_class=getattr(module, poller))
    router = mitogen.master.Router(broker)
    try:
        assert type(broker.poller).__name__ == poller
        context = router.local()
        assert context.call(remote_helpers.identity, b"z" * 300000) == b"z" * 300000
    finally:
        broker.shutdown()
        broker.join(10)
