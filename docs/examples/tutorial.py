"""The tutorial's runnable examples (docs/library/tutorial.rst includes them by their
markers); tests/product/test_docs.py runs this file and checks its output. Everything here
runs on this machine alone: local interpreters, forks, channels and a service
(greeter.py)."""

import os

from greeter import Greeter  # a module of its own: the child imports it by name

import mitogen.core
import mitogen.select
import mitogen.service
import mitogen.utils


# [call]
def add(a, b):
    return a + b


def where():
    return os.getpid(), mitogen.context_id, mitogen.parent_id


def main(router):
    child = router.local()  # a new python3 on this machine
    print("add:", child.call(add, 2, 3))
    pid, context_id, parent_id = child.call(where)
    print("child pid differs:", pid != os.getpid(), "context", context_id, "parent", parent_id)
    # [call]

    # [via]
    grandchild = router.fork(via=child)  # a fork of the child, routed through it
    pid, context_id, parent_id = grandchild.call(where)
    print("grandchild's parent is the child:", parent_id == child.context_id)
    # [via]

    # [async]
    receivers = [c.call_async(add, i, i) for i, c in enumerate((child, grandchild))]
    with mitogen.select.Select(receivers) as select:
        print("results:", sorted(msg.unpickle() for recv, msg in select))
    try:
        child.call(int, "not a number")
    except mitogen.core.CallError as e:
        print("CallError:", e.type_name)
    # [async]

    # [channels]
    recv = mitogen.core.Receiver(router)
    call = child.call_async(count_to, recv.to_sender(), 3)
    print("streamed:", [msg.unpickle() for msg in recv])  # ends when the sender closes
    print("count_to returned:", call.get(timeout=10).unpickle())
    # [channels]

    # [service]
    print("service:", child.call_service(Greeter.name(), "greet", name="world", timeout=10))
    # [service]


# [channels-remote]
def count_to(sender, n):
    for i in range(n):
        sender.send(i)
    sender.close()
    return n


# [channels-remote]


if __name__ == "__main__":
    mitogen.utils.run_with_router(main)
