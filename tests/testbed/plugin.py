"""pytest plugin with the session fixtures `testbed` and `netns_hosts`.

Load it from a conftest with `pytest_plugins = ["tests.testbed.plugin"]`.

- `testbed`: a started Testbed (loopback sshd + test accounts). Skips only when not
  root; any other setup problem is an error.
- `netns_hosts`: NetnsHosts with 3 namespace hosts (10.77.0.1-3, mitogen-h1..3),
  each with its own sshd on port 22, sharing the testbed's accounts and keys.
- `dockerd`, `podman`, `lxc`: container runtimes with private state (tests/testbed/containers.py).

Teardown runs on normal exit, on failure, on Ctrl-C (pytest tears fixtures down on
KeyboardInterrupt) and on SIGTERM (turned into KeyboardInterrupt while the testbed
is up); an atexit hook in Testbed is the last resort.
"""

import os
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from .containers import Dockerd, Lxc, Podman
from .core import Testbed
from .netns import NetnsHosts

NETNS_HOST_COUNT = 3


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    """A started Testbed shared by the whole session."""
    if os.geteuid() != 0:
        pytest.skip(f"the testbed needs root (running as uid {os.geteuid()})")
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    bed = Testbed()
    try:
        bed.start()
        yield bed
    finally:
        try:
            bed.stop()
        finally:
            if previous is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def netns_hosts(testbed: Testbed) -> Iterator[NetnsHosts]:
    """Namespace hosts sharing the session testbed's accounts and keys."""
    hosts = testbed.start_netns(NETNS_HOST_COUNT)
    try:
        yield hosts
    finally:
        testbed.stop_netns()


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root (running as uid {os.geteuid()})")


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    """A private dockerd with the cached test images; fails (never skips)
    when docker.io is not installed."""
    _need_root("a private dockerd")
    daemon = Dockerd()
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    """Podman with private storage and the cached test image."""
    _need_root("podman with private storage")
    runtime = Podman()
    try:
        runtime.start()
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture(scope="session")
def lxc() -> Iterator[Lxc]:
    """LXC containers in a private lxcpath."""
    _need_root("LXC")
    runtime = Lxc()
    try:
        runtime.start()
        yield runtime
    finally:
        runtime.stop()
