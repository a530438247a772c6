"""Project-wide test fixtures: the leak check and shared routers."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.leakcheck import Snapshot  # noqa: E402

pytest_plugins = ["tests.testbed.plugin"]


@pytest.fixture(autouse=True)
def leak_check(request):
    """Fail a test that leaves file descriptors, threads or child processes
    behind (things created by wider-scoped fixtures are in the baseline)."""
    snap = Snapshot()
    yield
    problems = snap.wait_clean()
    if problems:
        pytest.fail("%s leaked %s" % (request.node.nodeid, "; ".join(problems)), pytrace=False)


@pytest.fixture
def router():
    """A master Router whose Broker is shut down after the test."""
    import mitogen.master

    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    try:
        yield router
    finally:
        broker.shutdown()
        broker.join(10)


WIRE_ROOT = os.path.join(ROOT, "tests", "data", "wire_root")
if WIRE_ROOT not in sys.path:
    sys.path.append(WIRE_ROOT)
