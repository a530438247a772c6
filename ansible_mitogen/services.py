"""Services that run in the mux process on behalf of Ansible workers.

ContextService owns the connections to targets: a *stack* (a list of
`{'method': ..., 'kwargs': ...}` hops, e.g. ssh then sudo) names a chain of
contexts. The first request for a stack builds it hop by hop, reusing every
prefix already up; concurrent requests for the same hop wait for one
attempt. Every context stays up for the rest of the run unless its target
machine has more than `Limits.per_host` interpreters, or the mux more than
`Limits.total`: InterpreterTable then picks the least recently used idle
ones of that machine to shut down. Contexts in use by a worker, and those
they were started through, are never shut down.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ansible_mitogen.target
import mitogen.core
import mitogen.parent
import mitogen.service
from mitogen.service import AllowParents, arg_spec, expose

LOG = logging.getLogger("ansible_mitogen.services")

#: Keyword arguments that appear in keys only as a salted digest.
SECRET_KEYS = ("password",)

#: Per-process salt for those digests.
_SALT = os.urandom(16)

#: Connection methods whose interpreter runs on the machine of the context
#: that starts it (become methods and local interpreters).
SAME_MACHINE_METHODS = frozenset({"local", "fork", "sudo", "su", "doas"})

#: The target of interpreters the mux starts on its own machine.
CONTROLLER = "controller"

#: Attempts at a hop whose new context disconnects before the worker that
#: asked for it could acquire it.
START_ATTEMPTS = 3


def _key_value(name: str, value: Any) -> Any:
    if name in SECRET_KEYS and value is not None:
        return hashlib.sha256(_SALT + str(value).encode("utf-8")).hexdigest()
    return value


def stack_key(stack: list[dict[str, Any]]) -> str:
    """A stable identity for a stack. A different password is a different
    chain (a wrong password must fail, as it does with stock Ansible), but
    secrets only appear as salted digests."""
    return json.dumps(
        [
            {
                "method": hop["method"],
                "kwargs": {k: _key_value(k, v) for k, v in sorted(hop["kwargs"].items())},
            }
            for hop in stack
        ],
        sort_keys=True,
        default=str,
    )


def hop_target(hop: dict[str, Any], via_target: str | None) -> str:
    """The machine `hop`'s interpreter runs on, as a label: that of the
    context it is started through (`via_target`; None for the mux itself,
    CONTROLLER) for become methods and local interpreters, else the method,
    host and port it reaches, e.g. 'ssh:web1:22'. Users and become users
    of one machine share its label."""
    if hop["method"] in SAME_MACHINE_METHODS:
        return via_target or CONTROLLER
    kwargs = hop["kwargs"]
    return "%s:%s:%s" % (hop["method"], kwargs.get("hostname"), kwargs.get("port"))


def failure(error: mitogen.core.StreamError, method_name: str, hop: int) -> dict[str, Any]:
    """Describe a failed hop (`hop`: its index in the stack) for the worker: the
    message, as `reason` the error's kind (mitogen.core.StreamError.kind, 'other'
    if it has none), which the worker maps to stock Ansible's wording (see
    ansible_mitogen.connection.FAILURE_WORDING), and the program's last output."""
    return {
        "context": None,
        "msg": str(error),
        "method_name": method_name,
        "hop": hop,
        "reason": error.kind or "other",
        "output": (error.output or "").strip(),
    }


#: Limits field -> the environment variable the mux reads it from (the
#: strategy sets them from ansible.cfg's [mitogen] section, see strategy.py).
LIMIT_VARIABLES = {
    "per_host": "MITOGEN_MAX_INTERPRETERS_PER_HOST",
    "total": "MITOGEN_MAX_INTERPRETERS",
}


@dataclass(frozen=True)
class Limits:
    """How many interpreters ContextService keeps up.

    `per_host`: on one target machine (all its users and become users);
    beyond it the machine's least recently used idle interpreter is shut
    down. `total`: in the whole run, a safety cap for the mux's own file
    descriptors and the controller's ssh processes, far above the fleets
    Ansible runs against; beyond it the least recently used idle one of any
    machine goes."""

    per_host: int = 20
    total: int = 4096

    def __post_init__(self) -> None:
        for name in LIMIT_VARIABLES:
            if getattr(self, name) < 1:
                raise ValueError(
                    "%s must be at least 1, not %r" % (LIMIT_VARIABLES[name], getattr(self, name))
                )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Limits:
        """The limits LIMIT_VARIABLES set in `environ`, defaults for the
        rest; ValueError names a variable that is not a positive number."""
        values: dict[str, int] = {}
        for name, variable in LIMIT_VARIABLES.items():
            text = environ.get(variable)
            if text:
                try:
                    values[name] = int(text)
                except ValueError:
                    raise ValueError("%s=%r is not a number" % (variable, text))
        return cls(**values)


@dataclass(eq=False)
class Chain:
    """One interpreter kept up: the last context of a chain of hops.

    `parent` is the chain it was started through (its `via`; None for a root,
    started by the mux itself), `children` those started through it, `users`
    the workers holding it, `tasks` how many of them run their task in it (the
    others are starting a chain through it). `key` (stack_key()) and `context`
    are what ContextService finds it by and hands out; bare bookkeeping may
    leave them out. Several chains may have one key (see ContextService)."""

    context_id: int
    target: str
    parent: Chain | None = None
    key: str | None = None
    context: mitogen.parent.Context | None = None
    users: int = 0
    tasks: int = 0
    children: list[Chain] = field(default_factory=list)


class InterpreterTable:
    """Which interpreters are up, on which machine, which are in use, and
    which to shut down when a limit is exceeded.

    One Chain record per interpreter, in one mapping by context ID kept in
    least recently used order (plus an index of the same records by key). A
    worker `acquire()`s the context it runs in and `release()`s it after the
    task, which makes it and every chain it runs through the most recently
    used; a chain with children is never picked (they would die with it), so
    neither are the chains an in-use one was started through. `victims()`
    picks, least recently used first, idle childless interpreters of the
    machine over `per_host`, then of any machine while the table is over
    `total`, and removes them. Pure bookkeeping: the owner serialises calls.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        #: Least recently used first.
        self._chains: OrderedDict[int, Chain] = OrderedDict()
        self._by_key: dict[str, list[Chain]] = {}
        self._per_target: Counter[str] = Counter()

    def __contains__(self, context_id: object) -> bool:
        return context_id in self._chains

    def __len__(self) -> int:
        return len(self._chains)

    def context_ids(self) -> set[int]:
        """IDs of the interpreters up."""
        return set(self._chains)

    def count(self, target: str) -> int:
        """Interpreters up on `target`."""
        return self._per_target[target]

    def by_key(self, key: str) -> Chain | None:
        """A chain added with `key` that is up, one no task runs in if there is one."""
        chains = self._by_key.get(key)
        if not chains:
            return None
        return self.idle_by_key(key) or chains[0]

    def idle_by_key(self, key: str) -> Chain | None:
        """A chain added with `key` that is up and no task runs in."""
        for chain in self._by_key.get(key, ()):
            if not chain.tasks:
                return chain
        return None

    def all_by_key(self, key: str) -> list[Chain]:
        """Every chain added with `key` that is up."""
        return list(self._by_key.get(key, ()))

    def roots(self) -> list[Chain]:
        """The chains the mux started itself (every other one dies with its root)."""
        return [chain for chain in self._chains.values() if chain.parent is None]

    def add(
        self,
        context_id: int,
        target: str,
        parent: int | None = None,
        key: str | None = None,
        context: mitogen.parent.Context | None = None,
    ) -> Chain:
        """Record a new idle interpreter on `target`, started through `parent`
        (a root if that is not up), as the most recently used."""
        via = self._chains.get(parent) if parent is not None else None
        chain = Chain(context_id, target, via, key, context)
        self._chains[context_id] = chain
        self._per_target[target] += 1
        if via is not None:
            via.children.append(chain)
        if key is not None:
            self._by_key.setdefault(key, []).append(chain)
        return chain

    def acquire(self, context_id: int, task: bool = False) -> None:
        """A worker starts using `context_id` (and so every context above it), to
        run its task in it if `task`."""
        chain = self._chains[context_id]
        chain.users += 1
        chain.tasks += task
        self._touch(chain)

    def release(self, context_id: int, task: bool = False) -> None:
        """A worker is done with `context_id`, acquired with the same `task`
        (ignored if it is gone)."""
        chain = self._chains.get(context_id)
        if chain is not None and chain.users:
            chain.users -= 1
            if task and chain.tasks:
                chain.tasks -= 1
            self._touch(chain)

    def _touch(self, chain: Chain | None) -> None:
        while chain is not None:
            self._chains.move_to_end(chain.context_id)
            chain = chain.parent

    def remove(self, context_id: int) -> list[int]:
        """Forget `context_id` and every context started through it (they
        are gone with it); returns the IDs forgotten."""
        chain = self._chains.get(context_id)
        if chain is None:
            return []
        if chain.parent is not None:
            chain.parent.children.remove(chain)
        return self._forget(chain)

    def _forget(self, chain: Chain) -> list[int]:
        del self._chains[chain.context_id]
        self._per_target[chain.target] -= 1
        if chain.key is not None and chain in self._by_key.get(chain.key, ()):
            self._by_key[chain.key].remove(chain)
            if not self._by_key[chain.key]:
                del self._by_key[chain.key]
        removed = [chain.context_id]
        for child in chain.children:
            removed += self._forget(child)
        return removed

    def victims(self, target: str) -> list[int]:
        """Remove and return the idle interpreters to shut down now that
        `target` may be over its limit (oldest first)."""
        chosen: list[int] = []
        while self._per_target[target] > self.limits.per_host:
            if not self._pick(chosen, target):
                break
        while len(self._chains) > self.limits.total:
            if not self._pick(chosen, None):
                break
        return chosen

    def _pick(self, chosen: list[int], target: str | None) -> bool:
        for chain in self._chains.values():
            if not chain.users and not chain.children and target in (None, chain.target):
                self.remove(chain.context_id)
                chosen.append(chain.context_id)
                return True
        return False


class ContextService(mitogen.service.Service):
    """Create, share, count and evict the contexts Ansible tasks run in.

    All it knows of them is one InterpreterTable under one lock. A worker's
    get() acquires every hop of its chain while building it (so none can be
    shut down under it) and keeps the last one until put(); the table's
    victims for the machines the chain touches are then shut down.

    The contexts a chain runs through are shared by every chain that starts
    with the same hops (two hosts behind one bastion use one bastion context).
    The last one is the worker's alone while its task runs: a context runs one
    call at a time, so a worker asking for a chain whose every context is busy
    with another worker's task (`delegate_to: localhost` from many hosts at
    once) gets a new one of its own, kept for later tasks like the rest."""

    def __init__(
        self,
        router: mitogen.parent.Router,
        limits: Limits | None = None,
        on_secret: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(router)
        self.limits = limits or Limits()
        self._lock = threading.Lock()
        self._table = InterpreterTable(self.limits)
        self._starting = mitogen.service.Deduplicator()
        #: Called with every secret (SECRET_KEYS) of the stacks asked for (log scrubbing).
        self._on_secret = on_secret
        #: Context ID -> host of the chain (see host_of()).
        self._hosts: dict[int, str] = {}

    def context_ids(self) -> set[int]:
        """IDs of the contexts kept up now (in use or idle)."""
        with self._lock:
            return self._table.context_ids()

    def host_of(self, context_id: int) -> str | None:
        """The host a context runs on, for log lines: the `hostname` of its
        chain's last hop that has one, `localhost` for local chains; None
        for a context that is not (yet) up. Safe on any thread: takes no lock."""
        return self._hosts.get(context_id)

    def _forget(self, context_id: int) -> None:
        with self._lock:
            self._table.remove(context_id)
        self._hosts.pop(context_id, None)

    def _acquire_hop(
        self,
        key: str,
        hop: dict[str, Any],
        target: str,
        via: mitogen.parent.Context | None,
        host: str,
        task: bool,
    ) -> mitogen.parent.Context:
        """Return a context for `key`, acquired for the caller (for its task if
        `task`: then one no other task runs in). The first is started once even
        when many workers ask at the same time; a task finding every one busy
        starts one more for itself."""
        for _ in range(START_ATTEMPTS):
            with self._lock:
                chain = self._table.idle_by_key(key) if task else self._table.by_key(key)
                if chain is not None and chain.context is not None:
                    self._table.acquire(chain.context_id, task)
                    return chain.context
                busy = task and self._table.by_key(key) is not None
            if busy:
                return self._start_hop(key, hop, target, via, host, task=True)
            self._starting.run(key, lambda: self._start_hop(key, hop, target, via, host))
        raise mitogen.core.StreamError(
            "%s to %s disconnected as soon as it started" % (hop["method"], target)
        )

    def _start_hop(
        self,
        key: str,
        hop: dict[str, Any],
        target: str,
        via: mitogen.parent.Context | None,
        host: str,
        task: bool = False,
    ) -> mitogen.parent.Context:
        """Start a context for `key`: with `task`, one more, acquired for the
        caller's task; else the first (unless one is up by now), left idle."""
        with self._lock:
            chain = self._table.by_key(key)
            if not task and chain is not None and chain.context is not None:
                return chain.context
        kwargs = dict(hop["kwargs"])
        if via is not None:
            kwargs["via"] = via
        context = self.router.connect(hop["method"], **kwargs)
        self._hosts[context.context_id] = host
        context.call(ansible_mitogen.target.init_child)
        with self._lock:
            parent = via.context_id if via is not None else None
            self._table.add(context.context_id, target, parent, key, context)
            if task:
                self._table.acquire(context.context_id, task=True)
            # A disconnect from now on waits for the lock; one before has removed the route.
            mitogen.core.listen(context, "disconnect", lambda: self._forget(context.context_id))
            if self.router.stream_by_id(context.context_id) is None:
                self._table.remove(context.context_id)
        return context

    def _release(self, contexts: list[mitogen.parent.Context]) -> None:
        """Release `contexts`; lock held."""
        for context in contexts:
            self._table.release(context.context_id)

    def _evict(self, targets: set[str]) -> None:
        """Shut down what the table picks now that `targets` grew; lock held
        while picking, so no worker gets a context being shut down."""
        with self._lock:
            victims = [v for target in sorted(targets) for v in self._table.victims(target)]
        for context_id in victims:
            LOG.debug(
                "%r: shutting down idle context %d (interpreter limits %r)",
                self,
                context_id,
                self.limits,
            )
            self.router.context_by_id(context_id).shutdown()

    @expose(AllowParents())
    @arg_spec({"stack": list})
    def get(self, stack: list[dict[str, Any]]) -> dict[str, Any]:
        """Return `{'context', 'msg': None}` for the chain `stack`, or
        `{'msg': error, 'method_name': hop method}`. The caller must put() the
        context back."""
        path: list[mitogen.parent.Context] = []
        targets: set[str] = set()
        target = None
        host = "localhost"
        for depth in range(1, len(stack) + 1):
            hop = stack[depth - 1]
            target = hop_target(hop, target)
            targets.add(target)
            host = str(hop["kwargs"].get("hostname") or host)
            if self._on_secret is not None:
                for name in SECRET_KEYS:
                    if hop["kwargs"].get(name):
                        self._on_secret(str(hop["kwargs"][name]))
            try:
                path.append(
                    self._acquire_hop(
                        stack_key(stack[:depth]),
                        hop,
                        target,
                        path[-1] if path else None,
                        host,
                        task=depth == len(stack),
                    )
                )
            except mitogen.core.StreamError as e:
                with self._lock:
                    self._release(path)
                return failure(e, hop["method"], depth - 1)
        context = path[-1]
        with self._lock:
            self._release(path[:-1])
            up = context.context_id in self._table
        self._evict(targets)
        if not up:
            self.put(context)
            return failure(
                mitogen.core.StreamError("the connection to %s closed as it started" % (target,)),
                stack[-1]["method"],
                len(stack) - 1,
            )
        return {"context": context, "msg": None, "method_name": None}

    @expose(AllowParents())
    @arg_spec({"context": mitogen.core.Context})
    def put(self, context: mitogen.core.Context) -> None:
        """A worker is done with `context` (from get())."""
        with self._lock:
            self._table.release(context.context_id, task=True)

    @expose(AllowParents())
    @arg_spec({"stack": list, "depth": int})
    def reset(self, stack: list[dict[str, Any]], depth: int = 1) -> bool:
        """Shut down the chain for `stack` from hop `depth` (1: the first; a host
        reached through others starts after their hops, which stay), so the next
        get() starts afresh (meta: reset_connection). Returns True if something
        was running."""
        with self._lock:
            chains = self._table.all_by_key(stack_key(stack[:depth]))
            contexts = [chain.context for chain in chains if chain.context is not None]
        for context in contexts:
            self._forget(context.context_id)
        for context in contexts:
            context.shutdown(wait=True, timeout=10)
        return bool(contexts)

    def on_shutdown(self) -> None:
        with self._lock:
            roots = [chain.context for chain in self._table.roots()]
        for context in roots:
            if context is not None:
                context.shutdown()
