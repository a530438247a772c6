"""Connection methods `lxc` (real LXC 5, lxc-attach), `chroot` (the
cached debootstrap tree) and `setns` (nsenter into a real docker, podman
and LXC container's init). All need root."""

import os

import pytest

import mitogen.chroot
import mitogen.lxc
import mitogen.parent
import mitogen.setns
from tests import conformance
from tests.testbed.containers import CONTAINER_USER, debian_rootfs
from tests.unit.test_transports import ssh_as


@pytest.fixture(scope="module")
def lxc_container(lxc):
    name = lxc.run_container()
    try:
        yield name
    finally:
        lxc.remove(name)


@pytest.fixture(scope="module")
def docker_container(dockerd):
    name = dockerd.run_container()
    try:
        yield name
    finally:
        dockerd.remove(name)


def in_container():
    """True inside the test image (the marker file exists only there)."""
    return os.path.exists("/etc/mitogen-user")


def test_lxc_conformance(router, lxc, lxc_container):
    context = router.lxc(container=lxc_container, lxc_args=lxc.cli_args)
    assert context.name == "lxc." + lxc_container
    assert context.call(in_container)
    conformance.check_transport(router, context)


def test_lxc_via_sudo_conformance(router, lxc, lxc_container):
    context = router.lxc(container=lxc_container, lxc_args=lxc.cli_args, via=router.sudo())
    assert context.call(in_container)
    conformance.check_transport(router, context)


@pytest.mark.needs_testbed
def test_lxc_via_ssh_conformance(router, testbed, lxc, lxc_container):
    hop = ssh_as(router, testbed, "root")
    context = router.lxc(container=lxc_container, lxc_args=lxc.cli_args, via=hop)
    assert context.call(in_container)
    conformance.check_transport(router, context)


def test_lxc_unknown_container(router, lxc):
    with pytest.raises(mitogen.lxc.LxcError) as info:
        router.lxc(container="mitogen-no-such-ct", lxc_args=lxc.cli_args)
    assert "lxc into container 'mitogen-no-such-ct'" in str(info.value)
    assert "Failed to get init pid" in str(info.value)


def test_lxc_missing_interpreter(router, lxc, lxc_container):
    with pytest.raises(mitogen.parent.InterpreterNotFoundError) as info:
        router.lxc(container=lxc_container, lxc_args=lxc.cli_args, python_path="python3.99")
    assert 'Failed to exec "python3.99"' in str(info.value)


def test_chroot_conformance(router):
    root = str(debian_rootfs())
    context = router.chroot(path=root)
    assert context.name == "chroot." + root
    assert context.call(in_container)
    assert context.call(os.getpid) != os.getpid()
    conformance.check_transport(router, context)


def test_chroot_as_user(router):
    context = router.chroot(path=str(debian_rootfs()), username=CONTAINER_USER)
    assert context.call(os.getuid) == 4321


def test_chroot_missing_tree(router, tmp_path):
    with pytest.raises(mitogen.chroot.ChrootError) as info:
        router.chroot(path=str(tmp_path / "absent"))
    assert "directory %r" % (str(tmp_path / "absent"),) in str(info.value)
    assert "No such file or directory" in str(info.value)


def test_chroot_needs_root(router):
    hop = router.sudo(username="nobody")
    with pytest.raises(mitogen.chroot.ChrootError, match="chroot needs root"):
        router.chroot(path=str(debian_rootfs()), via=hop)


def test_setns_docker_conformance(router, dockerd, docker_container):
    context = router.setns(container=docker_container, kind="docker", runtime_args=dockerd.cli_args)
    assert context.call(in_container)
    assert context.call(os.getpid) > 1  # in the container's PID namespace
    conformance.check_transport(router, context)


def test_setns_docker_as_user(router, dockerd, docker_container):
    context = router.setns(
        container=docker_container,
        kind="docker",
        runtime_args=dockerd.cli_args,
        username=CONTAINER_USER,
    )
    assert context.call(os.getuid) == 4321


def test_setns_lxc_conformance(router, lxc, lxc_container):
    context = router.setns(container=lxc_container, kind="lxc", runtime_args=lxc.cli_args)
    assert context.call(in_container)
    conformance.check_transport(router, context)


def test_setns_podman(router, podman):
    name = podman.run_container()
    try:
        context = router.setns(container=name, kind="podman", runtime_args=podman.cli_args)
        assert context.call(in_container)
        context.shutdown(wait=True)
    finally:
        podman.remove(name)


def test_setns_needs_root(router, dockerd, docker_container):
    hop = router.sudo(username="nobody")
    with pytest.raises(mitogen.setns.SetnsError, match="needs root"):
        router.setns(
            container=docker_container, kind="docker", runtime_args=dockerd.cli_args, via=hop
        )


def test_setns_unknown_container(router, dockerd):
    with pytest.raises(mitogen.setns.SetnsError) as info:
        router.setns(container="mitogen-no-such-ct", kind="docker", runtime_args=dockerd.cli_args)
    assert "docker container 'mitogen-no-such-ct'" in str(info.value)
    assert "No such object: mitogen-no-such-ct" in str(info.value)


def test_setns_bad_kind(router):
    with pytest.raises(mitogen.setns.SetnsError, match="kind must be one of"):
        router.setns(container="x", kind="rkt")


@pytest.mark.parametrize(
    "kind, output",
    [("lxd", '{"pid": %d, "status": "Running"}'), ("machinectl", "%d")],
)
def test_setns_pid_queries_of_lxd_and_machinectl(
    router, dockerd, docker_container, tmp_path, kind, output
):
    """LXD and machinectl cannot run here: a stand-in CLI answers the PID
    query (checking its argv) with a real docker container's init."""
    pid = int(
        dockerd.docker("inspect", "--format", "{{.State.Pid}}", docker_container).stdout.strip()
    )
    expected = {
        "lxd": "query /1.0/instances/%s/state" % (docker_container,),
        "machinectl": "show %s -p Leader --value" % (docker_container,),
    }[kind]
    cli = tmp_path / kind
    cli.write_text(
        '#!/bin/sh\n[ "$*" = "%s" ] || { echo "bad argv: $*" >&2; exit 2; }\necho \'%s\'\n'
        % (expected, output % (pid,))
    )
    cli.chmod(0o755)
    context = router.setns(container=docker_container, kind=kind, runtime_path=str(cli))
    assert context.call(in_container)
    context.shutdown(wait=True)
