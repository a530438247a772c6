"""Services: activation, exposure and policies, invokers, FileService and
PushFileService."""

import hashlib
import os
import threading
import time

import pytest

import mitogen.core
import mitogen.service
from tests import remote_helpers, service_helpers

ECHO = "tests.service_helpers.EchoService"


@pytest.fixture
def pool(router):
    pool = mitogen.service.Pool(router, size=4)
    try:
        yield pool
    finally:
        pool.stop(join=True)


def reset_peak_rss_kib():
    """Reset this process's peak RSS to its current RSS; return that."""
    with open("/proc/self/clear_refs", "w") as fp:
        fp.write("5")
    return service_helpers.status_kib("VmRSS")


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def test_service_activated_in_child_on_first_call(router):
    context = router.local()
    assert context.call_service(ECHO, "echo", value=[1, "a"], timeout=30) == [1, "a"]
    assert context.call_service(ECHO, "typed", count=4, timeout=30) == 8


def test_many_first_calls_at_once_all_answered(router):
    context = router.local()
    recvs = [context.call_service_async(ECHO, "echo", value=i) for i in range(20)]
    assert sorted(r.get(timeout=30).unpickle() for r in recvs) == list(range(20))


def test_unexposed_method_refused(router):
    context = router.local()
    with pytest.raises(mitogen.core.CallError) as info:
        context.call_service(ECHO, "hidden", timeout=30)
    assert "not exposed" in str(info.value)
    with pytest.raises(mitogen.core.CallError) as info:
        context.call_service(ECHO, "__init__", timeout=30)
    assert "not exposed" in str(info.value)


def test_arg_spec_enforced(router):
    context = router.local()
    with pytest.raises(mitogen.core.CallError) as info:
        context.call_service(ECHO, "typed", count="4", timeout=30)
    assert "argument 'count' must be int" in str(info.value)
    with pytest.raises(mitogen.core.CallError) as info:
        context.call_service(ECHO, "typed", timeout=30)
    assert "missing arguments" in str(info.value)


def test_child_refused_method_not_exposed_to_it(router, pool):
    pool.add(service_helpers.EchoService(router))
    context = router.local()
    result = context.call(service_helpers.call_parent_service, ECHO, "echo", value=1)
    assert result.startswith("CallError: context") and "may not call" in result
    assert context.call(service_helpers.call_parent_service, ECHO, "echo_any", value=2) == "ok: 2"


def test_child_cannot_start_services_in_master(router, pool):
    context = router.local()
    result = context.call(service_helpers.call_parent_service, ECHO, "echo_any", value=1)
    assert "is not running" in result and "may not start it" in result


def test_deduplicating_invoker_runs_identical_calls_once(router, pool):
    service = service_helpers.CountingService(router)
    pool.add(service)
    me = router.myself()
    name = service.name()
    recvs = [me.call_service_async(name, "slow", key="same") for _ in range(4)]
    recvs.append(me.call_service_async(name, "slow", key="other"))
    results = [r.get(timeout=10).unpickle() for r in recvs]
    assert results == ["same"] * 4 + ["other"]
    assert service.runs == 2


def test_serialized_invoker_never_overlaps(router, pool):
    service = service_helpers.SerialService(router)
    pool.add(service)
    me = router.myself()
    recvs = [me.call_service_async(service.name(), "work") for _ in range(6)]
    assert max(r.get(timeout=10).unpickle() for r in recvs) == 1


@pytest.fixture
def file_service(router, pool):
    service = mitogen.service.FileService(router)
    pool.add(service)
    return service


SIZES = [
    0,
    1,
    mitogen.service.FileService.chunk_size,
    mitogen.service.FileService.chunk_size + 1,
    3 * 1048576 + 7,
]


@pytest.mark.parametrize("size", SIZES)
def test_file_service_sizes_local(router, file_service, tmp_path, size):
    path = tmp_path / ("f%d" % size)
    path.write_bytes(os.urandom(size))
    file_service.register(str(path))
    context = router.local()
    ok, got_size, digest, meta_size, _ = context.call(
        service_helpers.fetch_file, str(path), str(tmp_path / "out")
    )
    assert ok and got_size == size == meta_size
    assert digest == sha256_of(path)


@pytest.mark.needs_testbed
def test_file_service_over_ssh(router, file_service, tmp_path, testbed):
    path = tmp_path / "big"
    path.write_bytes(os.urandom(20 * 1048576))
    os.chmod(tmp_path, 0o755)
    file_service.register(str(path))
    context = router.ssh(
        hostname="127.0.0.1",
        port=testbed.sshd.port,
        username=testbed.accounts.plain.name,
        identity_file=str(testbed.keys.client_key),
        known_hosts_file=str(testbed.sshd.known_hosts),
    )
    dest = "/tmp/mitogen-file-service-%d" % os.getpid()
    ok, size, digest, _, _ = context.call(service_helpers.fetch_file, str(path), dest)
    assert ok and size == 20 * 1048576 and digest == sha256_of(path)


def test_file_service_memory_stays_flat(router, file_service, tmp_path):
    size = 256 * 1048576
    path = tmp_path / "huge"
    with open(path, "wb") as fp:
        fp.truncate(size)
    file_service.register(str(path))
    context = router.local()
    before = reset_peak_rss_kib()
    ok, got, _, _, child_peak_kib = context.call(
        service_helpers.fetch_file, str(path), str(tmp_path / "out")
    )
    growth_kib = service_helpers.peak_rss_kib() - before
    assert ok and got == size
    assert growth_kib < 64 * 1024, "master grew %d KiB" % growth_kib
    assert child_peak_kib < 96 * 1024, "child peaked at %d KiB" % child_peak_kib


def test_unregistered_paths_refused(router, file_service, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "ok.txt").write_text("fine")
    (shared / "escape").symlink_to("/etc/shadow")
    file_service.register_prefix(str(shared))
    context = router.local()
    assert context.call(service_helpers.fetch_refused, str(shared / "ok.txt")) == "fetched"
    for path in ("/etc/shadow", str(shared / "escape"), str(shared) + "/../shared/../x"):
        result = context.call(service_helpers.fetch_refused, path)
        assert "is not registered" in result, result


def test_client_killed_mid_transfer_leaves_nothing(router, file_service, tmp_path):
    path = tmp_path / "big"
    with open(path, "wb") as fp:
        fp.truncate(512 * 1048576)
    file_service.register(str(path))
    context = router.local()
    pid = context.call(remote_helpers.getpid)
    recv = context.call_async(service_helpers.fetch_file, str(path), str(tmp_path / "out"))
    time.sleep(0.3)
    os.kill(pid, 9)
    with pytest.raises(mitogen.core.ChannelError):
        recv.get(timeout=10).unpickle()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
        os.path.realpath("/proc/self/fd/" + fd) == str(path) for fd in os.listdir("/proc/self/fd")
    ):
        time.sleep(0.05)
    assert not any(
        os.path.realpath("/proc/self/fd/" + fd) == str(path) for fd in os.listdir("/proc/self/fd")
    )


def test_push_file_service_caches_at_each_hop(router, pool, tmp_path):
    service = mitogen.service.PushFileService(router)
    pool.add(service)
    path = tmp_path / "pushed.txt"
    path.write_bytes(b"pushed content")
    hop = router.local(name="hop")
    leaves = [router.local(via=hop, name="leaf%d" % i) for i in range(2)]
    for leaf in leaves:
        service.propagate_to(leaf, [str(path)])
        assert leaf.call(service_helpers.get_pushed, str(path)) == b"pushed content"
    assert hop.call(service_helpers.is_cached, str(path)) is True
    assert len([key for key in service._sent if key[0] == hop.context_id]) == 1


def test_pool_stop_joins_threads(router):
    pool = mitogen.service.Pool(router, size=3)
    threads = list(pool._threads)
    pool.stop(join=True)
    assert not any(t.is_alive() for t in threads)
    assert threading.current_thread() not in threads


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["local", "ssh"])
def test_file_service_one_gigabyte(router, file_service, tmp_path, testbed, transport):
    size = 1024 * 1048576
    path = tmp_path / "gigabyte"
    with open(path, "wb") as fp:
        fp.write(os.urandom(1048576))
        fp.truncate(size)
    os.chmod(tmp_path, 0o755)
    os.chmod(path, 0o644)
    file_service.register(str(path))
    if transport == "local":
        context = router.local()
    else:
        context = router.ssh(
            hostname="127.0.0.1",
            port=testbed.sshd.port,
            username=testbed.accounts.plain.name,
            identity_file=str(testbed.keys.client_key),
            known_hosts_file=str(testbed.sshd.known_hosts),
            compression=False,
        )
    before = reset_peak_rss_kib()
    dest = "/tmp/mitogen-gigabyte-%d" % os.getpid()
    ok, got, digest, _, child_peak_kib = context.call(service_helpers.fetch_file, str(path), dest)
    growth_kib = service_helpers.peak_rss_kib() - before
    assert ok and got == size and digest == sha256_of(path)
    assert growth_kib < 64 * 1024, "master grew %d KiB" % growth_kib
    assert child_peak_kib < 96 * 1024, "child peaked at %d KiB" % child_peak_kib
