"""The stock options of every container connection map to the hops Mitogen starts
(mitogen_get_stack under mitogen_linear: real option resolution, nothing connects), with
no container collection installed; options Mitogen cannot honour, and `mitogen_disable`,
make the task stock; a connection type Mitogen does not accelerate says so at -vvv."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ansible_mitogen import cli
from tests.ansible.harness import Harness, PlaybookRun

pytestmark = [pytest.mark.needs_testbed]

PLAYBOOK = Path(__file__).parent / "playbooks" / "containers" / "options.yml"
PY = "/usr/bin/python3"

#: host -> its inventory variables.
HOSTS: dict[str, dict[str, Any]] = {
    "docker_bare": {
        "ansible_connection": "docker",
        "ansible_host": "web",
        "ansible_user": "deploy",
        "ansible_docker_extra_args": "-H unix:///run/other.sock --log-level error",
    },
    "docker_api": {
        "ansible_connection": "community.docker.docker_api",
        "ansible_docker_docker_host": "unix:///run/api.sock",
    },
    "docker_privileged": {"ansible_connection": "docker", "ansible_docker_privileged": True},
    "docker_disabled": {"ansible_connection": "docker", "mitogen_disable": True},
    "podman_fqcn": {
        "ansible_connection": "containers.podman.podman",
        "ansible_podman_executable": "/opt/podman",
        "ansible_podman_extra_args": "--root '/var/lib/my storage'",
    },
    "buildah_bare": {"ansible_connection": "buildah", "ansible_user": "root"},
    "lxc_fqcn": {"ansible_connection": "community.general.lxc", "ansible_host": "ct1"},
    "lxd_remote": {"ansible_connection": "lxd", "ansible_lxd_remote": "far"},
    "incus_project": {"ansible_connection": "incus", "ansible_incus_project": "other"},
    "jail_bare": {"ansible_connection": "jail", "ansible_jail_user": "www"},
    "chroot_fqcn": {
        "ansible_connection": "community.general.chroot",
        "ansible_host": "/srv/tree",
        "ansible_chroot_exe": "/usr/sbin/chroot",
    },
    "nsenter_fqcn": {"ansible_connection": "community.docker.nsenter", "ansible_nsenter_pid": 7},
    "kubectl_bare": {
        "ansible_connection": "kubectl",
        "ansible_kubectl_pod": "web-0",
        "ansible_kubectl_container": "app",
        "ansible_kubectl_namespace": "prod",
        "ansible_kubectl_context": "ctx",
        "ansible_kubectl_kubeconfig": "/etc/kube.conf",
        "ansible_kubectl_extra_args": "--v=0",
        "ansible_kubectl_validate_certs": False,
    },
    "kubectl_token": {
        "ansible_connection": "kubernetes.core.kubectl",
        "ansible_kubectl_token": "t0k3n",
    },
}


@pytest.fixture(scope="module")
def run(harness: Harness, tmp_path_factory: pytest.TempPathFactory) -> PlaybookRun:
    tmp = tmp_path_factory.mktemp("container-options")
    inventory = tmp / "inventory.json"
    hosts = {name: {"ansible_python_interpreter": PY, **v} for name, v in HOSTS.items()}
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    nowhere = tmp / "no-collections"
    nowhere.mkdir()
    return harness.run(
        PLAYBOOK,
        "mitogen_linear",
        args=["-i", str(inventory), "-vvv"],
        env={
            "ANSIBLE_ACTION_PLUGINS": str(cli.ACTION_PLUGINS),
            "ANSIBLE_COLLECTIONS_PATH": str(nowhere),
        },
    )


def hops(run: PlaybookRun, host: str, key: str = "plain") -> list[dict[str, Any]]:
    result = run.result(host, "what they were")["msg"][key]
    assert "stack" in result, (host, result)
    return result["stack"]


def kwargs(run: PlaybookRun, host: str) -> dict[str, Any]:
    (hop,) = hops(run, host)
    return {"method": hop["method"], **hop["kwargs"]}


def test_docker_options(run: PlaybookRun) -> None:
    hop = kwargs(run, "docker_bare")
    assert hop["method"] == "docker"
    assert (hop["container"], hop["username"], hop["python_path"]) == ("web", "deploy", PY)
    assert hop["docker_args"] == ["-H", "unix:///run/other.sock", "--log-level", "error"]
    assert kwargs(run, "docker_api")["docker_args"] == ["-H", "unix:///run/api.sock"]


def test_other_runtimes_options(run: PlaybookRun) -> None:
    podman = kwargs(run, "podman_fqcn")
    assert podman["method"] == "podman" and podman["container"] == "podman_fqcn"
    assert podman["podman_path"] == "/opt/podman"
    assert podman["podman_args"] == ["--root", "/var/lib/my storage"]
    assert kwargs(run, "buildah_bare")["username"] == "root"
    assert kwargs(run, "buildah_bare")["buildah_path"] == "buildah"
    lxc = kwargs(run, "lxc_fqcn")
    assert (lxc["method"], lxc["container"]) == ("lxc", "ct1")
    assert kwargs(run, "lxd_remote")["container"] == "far:lxd_remote"
    jail = kwargs(run, "jail_bare")
    assert (jail["method"], jail["username"]) == ("jail", "www")
    chroot = kwargs(run, "chroot_fqcn")
    assert (chroot["path"], chroot["chroot_path"]) == ("/srv/tree", "/usr/sbin/chroot")
    nsenter = kwargs(run, "nsenter_fqcn")
    assert (nsenter["method"], nsenter["pid"]) == ("setns", 7)
    kubectl = kwargs(run, "kubectl_bare")
    assert (kubectl["pod"], kubectl["container"]) == ("web-0", "app")
    assert kubectl["kubectl_args"] == [
        "--namespace", "prod", "--context", "ctx", "--kubeconfig", "/etc/kube.conf",
        "--insecure-skip-tls-verify=true", "--v=0",
    ]  # fmt: skip


def test_become_follows_the_container_hop(run: PlaybookRun) -> None:
    for host in ("docker_bare", "podman_fqcn", "kubectl_bare", "chroot_fqcn"):
        first, su = hops(run, host, "su")
        assert su["method"] == "su" and su["kwargs"]["username"] == "app", (host, su)
    chain = run.result("docker_bare", "what they were")["msg"]["su"]["chain"]
    assert chain == "docker deploy@web -> su app"


@pytest.mark.parametrize(
    "host, reason",
    [
        ("docker_privileged", "option privileged is set"),
        ("docker_disabled", "mitogen_disable is set"),
        ("incus_project", "option project is set"),
        ("kubectl_token", "option kubectl_token is set"),
    ],
)
def test_what_mitogen_cannot_honour_runs_stock(run: PlaybookRun, host: str, reason: str) -> None:
    result = run.result(host, "what they were")["msg"]["plain"]
    assert result.get("failed") and reason in result["msg"], result
    assert "t0k3n" not in run.stdout


def test_unaccelerated_connection_says_so(run: PlaybookRun) -> None:
    assert run.stdout.count("connection 'winrm' is not accelerated by Mitogen: it runs stock") == 1
    failed = run.result("docker_bare", "a connection Mitogen does not accelerate")
    assert "is not a Mitogen one" in failed["msg"], failed
