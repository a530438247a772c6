"""Connection method `podman` against real podman with private storage
(tests/testbed/containers.py): conformance directly, through a sudo hop
and an ssh hop, users, and real faults."""

import os
import time

import pytest

import mitogen.core
import mitogen.parent
import mitogen.podman
from tests import conformance, remote_helpers
from tests.testbed.containers import CONTAINER_USER
from tests.unit.test_transports import ssh_as


@pytest.fixture(scope="module")
def container(podman):
    name = podman.run_container()
    try:
        yield name
    finally:
        podman.remove(name)


def connect(router, podman, **kwargs):
    return router.podman(podman_args=podman.cli_args, **kwargs)


def test_podman_conformance(router, podman, container):
    context = connect(router, podman, container=container)
    assert context.name == "podman." + container
    assert context.call(os.path.exists, "/etc/mitogen-user")
    conformance.check_transport(router, context)


def test_podman_as_user(router, podman, container):
    context = connect(router, podman, container=container, username=CONTAINER_USER)
    assert context.call(os.getuid) == 4321


def test_podman_via_sudo_conformance(router, podman, container):
    context = connect(router, podman, container=container, via=router.sudo())
    assert context.call(os.path.exists, "/etc/mitogen-user")
    conformance.check_transport(router, context)


@pytest.mark.needs_testbed
def test_podman_via_ssh_sudo_conformance(router, testbed, podman, container):
    hop = router.sudo(via=ssh_as(router, testbed, "sudo_nopw"))
    context = connect(router, podman, container=container, via=hop)
    assert context.call(os.path.exists, "/etc/mitogen-user")
    conformance.check_transport(router, context)


def test_unknown_container(router, podman):
    with pytest.raises(mitogen.podman.PodmanError) as info:
        connect(router, podman, container="mitogen-no-such-ct", connect_timeout=5)
    assert "podman into container 'mitogen-no-such-ct'" in str(info.value)
    assert 'no container with name or ID "mitogen-no-such-ct" found' in str(info.value)


def test_missing_interpreter(router, podman, container):
    with pytest.raises(mitogen.parent.InterpreterNotFoundError) as info:
        connect(router, podman, container=container, python_path="python3.99")
    assert "container %r" % (container,) in str(info.value)
    assert "executable file not found" in str(info.value)


def test_container_stopped_mid_call(router, podman):
    name = podman.run_container()
    try:
        context = connect(router, podman, container=name)
        receiver = context.call_async(remote_helpers.sleep, 60)
        podman.podman("kill", name)
        stopped = time.monotonic()
        with pytest.raises(mitogen.core.ChannelError):
            receiver.get(timeout=5).unpickle()
        assert time.monotonic() - stopped < 1.0
        with pytest.raises(mitogen.core.ChannelError):
            context.call(os.getpid)
    finally:
        podman.remove(name)


def test_container_without_python(router, podman):
    """A container whose Python was removed (in its own overlay layer, the
    image keeps it): InterpreterNotFoundError naming the container."""
    name = podman.run_container()
    try:
        podman.podman("exec", name, "sh", "-c", "rm -f /usr/bin/python3*")
        started = time.monotonic()
        with pytest.raises(mitogen.parent.InterpreterNotFoundError) as info:
            connect(router, podman, container=name, connect_timeout=5)
        assert time.monotonic() - started < 5
        assert "podman into container %r" % (name,) in str(info.value)
        assert "'python3' was not found" in str(info.value)
    finally:
        podman.remove(name)
