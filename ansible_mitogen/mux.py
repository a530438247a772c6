"""The mux: one process per ansible-playbook run that owns every connection.

It is started by the strategy in the top-level controller process (see
process.py) as `python -m ansible_mitogen.mux`, listens on the UNIX socket
process.SOCKET_VARIABLE names, then prints that path on stdout (workers wait
for it), and serves until its stdin reaches EOF, which happens when
ansible-playbook exits for any reason (even SIGKILL). It then shuts every
target context down, so nothing is left on the controller or the targets.
Started on demand by a worker instead (ondemand.py: runs without a Mitogen
strategy), it serves until the owner ondemand.OWNER_VARIABLE names has exited.

The interpreter limits (services.Limits) arrive in the environment variables
of services.LIMIT_VARIABLES, which the strategy sets from ansible.cfg or the
user's environment (see strategy.py). The mux raises its own open-file
limit as far as `Limits.total` connections need, and lowers `total` to what
the hard limit allows.

It writes its log records to its stderr as display lines, at the level of
MITOGEN_LOG_LEVEL (the user's, or the strategy's at -vvvv) with the targets'
too, else warnings only (logs.py). SIGUSR2 makes it log every thread's stack
of its own and of each target context (stack_dump.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import signal
import sys
import threading

import ansible_mitogen.logs
import ansible_mitogen.ondemand
import ansible_mitogen.process
import ansible_mitogen.services
import ansible_mitogen.stack_dump
import mitogen.bootstrap
import mitogen.master
import mitogen.service
import mitogen.unix

#: Threads serving worker requests (connections are made from them).
POOL_SIZE = 32

#: Modules every target imports from us: prepared while the first
#: connection starts.
TARGET_MODULES = ("ansible_mitogen.target", "ansible_mitogen.module_runner")

#: The only modules the mux serves to targets (ModuleResponder.serve_only): what they run
#: of ours. Anything else a target lacks (an optional import a module tries, a library or
#: controller code only the controller has) fails to import there as it does with stock.
SERVED_MODULES = (
    "mitogen",
    "ansible_mitogen.target",
    "ansible_mitogen.module_runner",
    "ansible_mitogen.fresh_child",
)

#: Descriptors the mux holds per connection it starts (the child's socket
#: and its stderr), and those kept for everything else (workers, files).
FDS_PER_CONNECTION = 2
SPARE_FDS = 256

LOG = logging.getLogger("ansible_mitogen.mux")


def fit_open_files(
    limits: ansible_mitogen.services.Limits, asked: bool
) -> ansible_mitogen.services.Limits:
    """Raise the soft RLIMIT_NOFILE to what `limits.total` connections need
    (at most the hard limit); return `limits` with `total` lowered to what
    the limit allows, with a warning if the user `asked` for that total."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.total * FDS_PER_CONNECTION + SPARE_FDS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return limits
    total = max(1, (soft - SPARE_FDS) // FDS_PER_CONNECTION)
    LOG.log(
        logging.WARNING if asked else logging.DEBUG,
        "ansible_mitogen: the mux may open %d files (RLIMIT_NOFILE), enough for %d "
        "interpreters, not %d",
        soft,
        total,
        limits.total,
    )
    return dataclasses.replace(limits, total=total)


def _outlive_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C reaches ansible-playbook's whole process group: the mux lives
    on until its stdin closes, then shuts every context down."""


def prepare(responder: mitogen.master.ModuleResponder) -> None:
    """What the first connections need, built while ansible-playbook loads the play rather
    than when they ask: the bootstrap bundle (minified core, ~0.1 s) every new context is
    sent, then the modules every target imports (TARGET_MODULES)."""
    mitogen.bootstrap.get_preamble()
    responder.prepare(TARGET_MODULES)


def main() -> None:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        # A handler rather than SIG_IGN, which the interpreters the mux
        # starts (connection local) would inherit: a fresh Python run by
        # stock Ansible has SIGINT raise KeyboardInterrupt.
        signal.signal(signal.SIGINT, _outlive_interrupt)
    try:
        limits = ansible_mitogen.services.Limits.from_environment(os.environ)
        ansible_mitogen.logs.requested_level(os.environ, verbosity=0)  # a bad level stops it here
    except ValueError as e:
        raise SystemExit("ansible_mitogen mux: %s" % (e,))
    total_variable = ansible_mitogen.services.LIMIT_VARIABLES["total"]
    limits = fit_open_files(limits, asked=bool(os.environ.get(total_variable)))
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    router.unidirectional = True
    scrubber = ansible_mitogen.logs.Scrubber()
    contexts = ansible_mitogen.services.ContextService(router, limits, on_secret=scrubber.add)
    ansible_mitogen.logs.start_mux_logging(os.environ, sys.stderr, contexts.host_of, scrubber)
    ansible_mitogen.stack_dump.install(
        lambda: [
            (router.context_by_id(context_id), contexts.host_of(context_id))
            for context_id in sorted(contexts.context_ids())
        ]
    )
    pool = mitogen.service.Pool(
        router,
        size=POOL_SIZE,
        services=[
            contexts,
            mitogen.service.FileService(router),
            mitogen.service.PushFileService(router),
        ],
    )
    # not for the contexts the mux starts (a local one would pass them on)
    owner_text = os.environ.pop(ansible_mitogen.ondemand.OWNER_VARIABLE, None)
    socket_path = os.environ.pop(ansible_mitogen.process.SOCKET_VARIABLE, None)
    owner = ansible_mitogen.ondemand.Owner.decode(owner_text) if owner_text else None
    listener = mitogen.unix.listen(router, path=socket_path, grant_authority=True)
    responder = router.responder
    assert isinstance(responder, mitogen.master.ModuleResponder)
    responder.serve_only(SERVED_MODULES)
    threading.Thread(target=prepare, args=(responder,), name="prepare", daemon=True).start()
    try:
        os.write(1, (listener.path + "\n").encode())
        if owner is not None:
            ansible_mitogen.ondemand.wait_for_exit(owner)
        else:
            while os.read(0, 4096):
                pass
    finally:
        # Not joining the pool's threads: one may be connecting (ssh waiting for a banner)
        # until its timeout; shutting the broker down ends that attempt now.
        pool.stop()
        listener.stop()
        if owner is not None:
            ansible_mitogen.ondemand.remove_lock(owner)
        broker.shutdown()
        broker.join()


if __name__ == "__main__":
    main()
    # Everything is shut down (contexts, listener, broker): skip the interpreter's
    # teardown (joining the pool's idle threads, freeing modules), which ansible-playbook
    # waits for at its exit (~16 ms of every run).
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)
