"""Connection methods that cannot run on this machine (kubectl, lxd,
incus, buildah, jail, machinectl), against stub CLIs
(tests/data/stubs/container_stub.py) that check the argv they get has the
real CLI's shape and exec the interpreter named in it: the argv each method
builds, conformance through the stub, and its error for an unknown
container."""

import json
import os
import re
import sys

import pytest

import mitogen.buildah
import mitogen.incus
import mitogen.jail
import mitogen.kubectl
import mitogen.lxd
import mitogen.machinectl
from tests import conformance

STUBS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "stubs")


def stub(name):
    return os.path.join(STUBS, name)


#: method -> (keyword arguments, error class, expected argv before the interpreter)
METHODS = {
    "kubectl": (
        dict(
            pod="stub-pod", container="app", kubectl_args=["-n", "ns"], kubectl_path=stub("kubectl")
        ),
        mitogen.kubectl.KubectlError,
        [stub("kubectl"), "-n", "ns", "exec", "-i", "stub-pod", "-c", "app", "--"],
    ),
    "lxd": (
        dict(container="stub-ct", lxc_path=stub("lxc")),
        mitogen.lxd.LxdError,
        [stub("lxc"), "exec", "--mode=non-interactive", "stub-ct", "--"],
    ),
    "incus": (
        dict(container="stub-ct", incus_path=stub("incus")),
        mitogen.incus.IncusError,
        [stub("incus"), "exec", "--mode=non-interactive", "stub-ct", "--"],
    ),
    "buildah": (
        dict(container="stub-ct", username="app", buildah_path=stub("buildah")),
        mitogen.buildah.BuildahError,
        [stub("buildah"), "run", "--user", "app", "stub-ct", "--"],
    ),
    "jail": (
        dict(container="stub-ct", username="app", jexec_path=stub("jexec")),
        mitogen.jail.JailError,
        [stub("jexec"), "-U", "app", "stub-ct"],
    ),
    "machinectl": (
        dict(container="stub-ct", username="app", systemd_run_path=stub("systemd-run")),
        mitogen.machinectl.MachinectlError,
        [stub("systemd-run"), "--machine=stub-ct", "--pipe", "--quiet", "--wait", "--collect"]
        + ["--uid=app", "--"],
    ),
}


@pytest.fixture
def stub_log(tmp_path, monkeypatch):
    path = tmp_path / "argv.jsonl"
    monkeypatch.setenv("MITOGEN_STUB_LOG", str(path))
    return path


@pytest.mark.parametrize("method", sorted(METHODS))
def test_stub_conformance(router, method, stub_log):
    kwargs, _, prefix = METHODS[method]
    context = getattr(router, method)(python_path=sys.executable, **kwargs)
    assert context.name.startswith(method + ".")
    conformance.check_transport(router, context)
    (argv,) = [json.loads(line) for line in stub_log.read_text().splitlines()]
    assert argv[: len(prefix)] == prefix
    assert argv[len(prefix) :][:2] == [sys.executable, "-c"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_stub_unknown_container(router, method, stub_log):
    kwargs, error, _ = METHODS[method]
    key = "pod" if method == "kubectl" else "container"
    kwargs = dict(kwargs, **{key: "mitogen-absent"})
    with pytest.raises(error) as info:
        getattr(router, method)(python_path=sys.executable, connect_timeout=5, **kwargs)
    text = str(info.value)
    assert "'mitogen-absent'" in text
    assert text.startswith("Failed to set up %s into " % (method,))
    output = text.split("its last output was:\n")[1]
    assert re.search(r"not found|not known|No such machine", output), output


def test_kubectl_needs_a_pod(router):
    with pytest.raises(mitogen.kubectl.KubectlError, match="needs pod="):
        router.kubectl(container="x")
