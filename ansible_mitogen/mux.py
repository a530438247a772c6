"""The mux: one process per ansible-playbook run that owns every connection.

It is started by the strategy in the top-level controller process (see
process.py) as `python -m ansible_mitogen.mux`, prints the path of its UNIX
socket on stdout, and serves until its stdin reaches EOF, which happens
when ansible-playbook exits for any reason (even SIGKILL). It then shuts
every target context down, so nothing is left on the controller or the
targets.
"""

import os
import signal
import sys
import threading

import ansible_mitogen.services
import mitogen.master
import mitogen.service
import mitogen.unix

#: Threads serving worker requests (connections are made from them).
POOL_SIZE = 32

#: Modules every target imports from us: prepared while the first
#: connection starts.
TARGET_MODULES = ("ansible_mitogen.target", "ansible_mitogen.module_runner")


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    router.unidirectional = True
    pool = mitogen.service.Pool(
        router,
        size=POOL_SIZE,
        services=[
            ansible_mitogen.services.ContextService(router),
            mitogen.service.FileService(router),
            mitogen.service.PushFileService(router),
        ],
    )
    listener = mitogen.unix.listen(router, grant_authority=True)
    threading.Thread(
        target=router.responder.prepare, args=(TARGET_MODULES,), name="prepare-modules", daemon=True
    ).start()
    try:
        os.write(1, (listener.path + "\n").encode())
        while os.read(0, 4096):
            pass
    finally:
        pool.stop(join=True)
        listener.stop()
        broker.shutdown()
        broker.join()


if __name__ == "__main__":
    sys.exit(main())
