"""Connection method `docker` against a real private dockerd (see
tests/testbed/containers.py): conformance directly, through a sudo hop and
through an ssh hop, users, throwaway containers, and real faults (unknown
container, missing interpreter, image without Python, container stopped
mid-call).

Needs root; the first run builds the Debian image (about a minute), later
runs start the daemon in well under a second.
"""

import os
import threading
import time

import pytest

import mitogen.core
import mitogen.docker
import mitogen.parent
from tests import conformance, remote_helpers
from tests.testbed.containers import CONTAINER_USER, IMAGE, NO_PYTHON_IMAGE
from tests.unit.test_transports import ssh_as


@pytest.fixture(scope="module")
def container(dockerd):
    name = dockerd.run_container()
    try:
        yield name
    finally:
        dockerd.remove(name)


@pytest.fixture
def only_our_containers(dockerd):
    """After the test, the daemon holds no container the fixtures did not make."""
    yield
    listed = dockerd.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert sorted(listed) == sorted(dockerd.containers)


def connect(router, dockerd, **kwargs):
    return router.docker(docker_args=dockerd.cli_args, **kwargs)


def in_container_hostname():
    with open("/etc/hostname") as fp:
        return fp.read().strip()


def test_docker_conformance(router, dockerd, container):
    context = connect(router, dockerd, container=container)
    assert context.name == "docker." + container
    assert context.call(os.getuid) == 0
    assert context.call(os.path.exists, "/etc/mitogen-user")
    conformance.check_transport(router, context)


def test_docker_as_user(router, dockerd, container):
    context = connect(router, dockerd, container=container, username=CONTAINER_USER)
    assert context.call(os.getuid) == 4321


def test_docker_via_sudo_conformance(router, dockerd, container):
    hop = router.sudo()
    context = connect(router, dockerd, container=container, via=hop)
    assert context.call(os.path.exists, "/etc/mitogen-user")
    conformance.check_transport(router, context)


@pytest.mark.needs_testbed
def test_docker_via_ssh_conformance(router, testbed, dockerd, container):
    hop = ssh_as(router, testbed, "root")
    context = connect(router, dockerd, container=container, via=hop)
    assert context.call(os.path.exists, "/etc/mitogen-user")
    conformance.check_transport(router, context)


def test_docker_image_is_a_throwaway_container(router, dockerd, only_our_containers):
    context = connect(router, dockerd, image=IMAGE, run_args=["--network", "none"])
    hostname = context.call(in_container_hostname)
    assert hostname in dockerd.docker("ps", "-q", "--no-trunc").stdout
    conformance.check_transport(router, context)
    deadline = time.monotonic() + 10
    while hostname in dockerd.docker("ps", "-aq", "--no-trunc").stdout:
        assert time.monotonic() < deadline, "the throwaway container outlived its context"
        time.sleep(0.05)


def test_unknown_container(router, dockerd):
    started = time.monotonic()
    with pytest.raises(mitogen.docker.DockerError) as info:
        connect(router, dockerd, container="mitogen-no-such-ct", connect_timeout=5)
    assert time.monotonic() - started < 5
    text = str(info.value)
    assert "docker into container 'mitogen-no-such-ct'" in text
    assert "No such container: mitogen-no-such-ct" in text  # docker's own words
    assert "(run by root)" in text


def test_unknown_container_via_sudo_keeps_its_class(router, dockerd):
    with pytest.raises(mitogen.docker.DockerError) as info:
        connect(router, dockerd, container="mitogen-no-such-ct", via=router.sudo())
    assert "No such container" in str(info.value)


def test_missing_interpreter_in_container(router, dockerd, container):
    with pytest.raises(mitogen.parent.InterpreterNotFoundError) as info:
        connect(router, dockerd, container=container, python_path="python3.99")
    text = str(info.value)
    assert "container %r" % (container,) in text
    assert "'python3.99' was not found" in text
    assert "executable file not found" in text


def test_image_without_python(router, dockerd, only_our_containers):
    started = time.monotonic()
    with pytest.raises(mitogen.parent.InterpreterNotFoundError) as info:
        connect(router, dockerd, image=NO_PYTHON_IMAGE, run_args=["--network", "none"])
    assert time.monotonic() - started < 10
    assert "image %r" % (NO_PYTHON_IMAGE,) in str(info.value)


def test_unknown_user(router, dockerd, container):
    with pytest.raises(mitogen.docker.DockerError) as info:
        connect(router, dockerd, container=container, username="mitogen-nobody-here")
    assert "user 'mitogen-nobody-here'" in str(info.value)
    assert "mitogen-nobody-here" in str(info.value).split("its last output was:")[1]


def test_missing_docker_program(router, dockerd):
    with pytest.raises(mitogen.docker.DockerError) as info:
        connect(router, dockerd, container="x", docker_path="/nonexistent/docker")
    assert "could not run /nonexistent/docker" in str(info.value)


def test_container_or_image_required(router):
    with pytest.raises(mitogen.docker.DockerError, match="exactly one"):
        router.docker()


def test_hung_runtime_times_out(router, dockerd, container, tmp_path):
    """A docker CLI that never answers: TimeoutError after connect_timeout."""
    stub = tmp_path / "docker"
    stub.write_text("#!/bin/sh\nexec sleep 60\n")
    stub.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(mitogen.core.TimeoutError):
        connect(router, dockerd, container=container, docker_path=str(stub), connect_timeout=1)
    assert time.monotonic() - started < 3


def test_container_stopped_mid_call(router, dockerd, only_our_containers):
    name = dockerd.run_container()
    context = connect(router, dockerd, container=name)
    receiver = context.call_async(remote_helpers.sleep, 60)
    gone = threading.Event()
    mitogen.core.listen(context, "disconnect", gone.set)
    dockerd.docker("kill", name)
    stopped = time.monotonic()
    with pytest.raises(mitogen.core.ChannelError):
        receiver.get(timeout=5).unpickle()
    assert time.monotonic() - stopped < 1.0
    assert gone.wait(1.0)
    with pytest.raises(mitogen.core.ChannelError):
        context.call(os.getpid)
    dockerd.remove(name)


def test_permission_denied(router, dockerd, container):
    """An account that may not use the daemon's socket gets DockerError
    quoting docker's complaint."""
    hop = router.sudo(username="nobody")
    with pytest.raises(mitogen.docker.DockerError) as info:
        connect(router, dockerd, container=container, via=hop, connect_timeout=5)
    text = str(info.value)
    assert "(run by nobody)" in text
    assert "permission denied" in text.split("its last output was:")[1]
