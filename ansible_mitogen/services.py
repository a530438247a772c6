"""Services that run in the mux process on behalf of Ansible workers.

ContextService owns the connections to targets: a *stack* (a list of
`{'method': ..., 'kwargs': ...}` hops, e.g. ssh then sudo) names a chain of
contexts. The first request for a stack builds it hop by hop, reusing every
prefix already up; concurrent requests for the same hop wait for one
attempt. Contexts are reference-counted per worker request and the least
recently used idle chains are shut down beyond `max_interpreters`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
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


def failure(error: mitogen.core.StreamError, method_name: str) -> dict[str, Any]:
    """Describe a failed hop for the worker: the message, a `reason` the
    worker maps to stock Ansible's wording, and the program's last output."""
    text = str(error)
    reason = "other"
    if isinstance(error, mitogen.parent.PasswordError):
        need = mitogen.parent.FAILURE_REASONS["need_password"] in text
        reason = "need_password" if need else "bad_password"
    elif isinstance(error, mitogen.parent.InterpreterNotFoundError):
        reason = "python"
    elif isinstance(error, mitogen.core.TimeoutError):
        reason = "timeout"
    output = text.partition(mitogen.parent.OUTPUT_MARKER)[2]
    return {
        "context": None,
        "msg": text,
        "method_name": method_name,
        "reason": reason,
        "output": output.strip(),
    }


class ContextService(mitogen.service.Service):
    """Create, share, count and evict the contexts Ansible tasks run in."""

    #: Idle chains kept before the least recently used is shut down.
    max_interpreters = 20

    def __init__(self, router: mitogen.parent.Router) -> None:
        super().__init__(router)
        self._lock = threading.Lock()
        self._by_key: dict[str, mitogen.parent.Context] = {}
        self._key_by_id: dict[int, str] = {}
        self._init_results: dict[int, dict[str, Any]] = {}
        self._refs: dict[int, int] = {}
        self._lru: list[int] = []
        self._starting = mitogen.service.Deduplicator()
        self._children: dict[int, list[int]] = {}

    def _forget(self, context_id: int) -> None:
        with self._lock:
            key = self._key_by_id.pop(context_id, None)
            if key is not None:
                self._by_key.pop(key, None)
            self._init_results.pop(context_id, None)
            self._refs.pop(context_id, None)
            if context_id in self._lru:
                self._lru.remove(context_id)
            children = self._children.pop(context_id, [])
        for child_id in children:
            self._forget(child_id)

    def _connect_hop(
        self, key: str, hop: dict[str, Any], via: mitogen.parent.Context | None
    ) -> mitogen.parent.Context:
        """Return the context for `key`, starting it once even when many
        workers ask at the same time."""
        with self._lock:
            context = self._by_key.get(key)
        if context is not None:
            return context
        return self._starting.run(key, lambda: self._start_hop(key, hop, via))

    def _start_hop(
        self, key: str, hop: dict[str, Any], via: mitogen.parent.Context | None
    ) -> mitogen.parent.Context:
        with self._lock:
            context = self._by_key.get(key)
        if context is not None:
            return context
        kwargs = dict(hop["kwargs"])
        if via is not None:
            kwargs["via"] = via
        context = self.router.connect(hop["method"], **kwargs)
        init = context.call(ansible_mitogen.target.init_child)
        mitogen.core.listen(context, "disconnect", lambda: self._forget(context.context_id))
        with self._lock:
            self._by_key[key] = context
            self._key_by_id[context.context_id] = key
            self._init_results[context.context_id] = init
            if via is not None:
                self._children.setdefault(via.context_id, []).append(context.context_id)
        return context

    def _evict(self) -> None:
        with self._lock:
            idle = [cid for cid in self._lru if not self._refs.get(cid)]
            excess = len(self._lru) - self.max_interpreters
            victims = idle[: max(0, excess)]
        for context_id in victims:
            context = self.router.context_by_id(context_id)
            LOG.debug("%r: evicting idle %r", self, context)
            self._forget(context_id)
            context.shutdown()

    @expose(AllowParents())
    @arg_spec({"stack": list})
    def get(self, stack: list[dict[str, Any]]) -> dict[str, Any]:
        """Return `{'context', 'init_child_result', 'msg': None}` for the
        chain `stack`, or `{'msg': error, 'method_name': hop method}`."""
        via = None
        for depth in range(1, len(stack) + 1):
            hop = stack[depth - 1]
            try:
                via = self._connect_hop(stack_key(stack[:depth]), hop, via)
            except mitogen.core.StreamError as e:
                return failure(e, hop["method"])
        assert via is not None
        with self._lock:
            self._refs[via.context_id] = self._refs.get(via.context_id, 0) + 1
            if via.context_id in self._lru:
                self._lru.remove(via.context_id)
            self._lru.append(via.context_id)
            init = self._init_results[via.context_id]
        self._evict()
        return {"context": via, "init_child_result": init, "msg": None, "method_name": None}

    @expose(AllowParents())
    @arg_spec({"context": mitogen.core.Context})
    def put(self, context: mitogen.core.Context) -> None:
        """A worker is done with `context` (from get())."""
        with self._lock:
            if self._refs.get(context.context_id):
                self._refs[context.context_id] -= 1

    @expose(AllowParents())
    @arg_spec({"stack": list})
    def reset(self, stack: list[dict[str, Any]]) -> bool:
        """Shut down the chain for `stack` from its first hop, so the next
        get() starts afresh (meta: reset_connection). Returns True if
        something was running."""
        key = stack_key(stack[:1])
        with self._lock:
            context = self._by_key.get(key)
        if context is None:
            return False
        self._forget(context.context_id)
        context.shutdown(wait=True, timeout=10)
        return True

    def on_shutdown(self) -> None:
        with self._lock:
            roots = [self._by_key[k] for k in list(self._by_key) if len(json.loads(k)) == 1]
        for context in roots:
            context.shutdown()
