"""Reading back the arguments stock Ansible bakes into an AnsiballZ payload.

ansible-core ends a new-style Python module's payload with a call to its
wrapper followed by one `name=<repr>,` line per argument (the call's text and
its argument names are series facts, compat.SeriesFacts). `parse()` returns
those arguments with the zip decoded, so the module can run on the target
without shipping the whole payload every time (see module_runner.py).
Controller-side only.
"""

from __future__ import annotations

import ast
import base64
import binascii
from dataclasses import dataclass
from typing import Any

from ansible_mitogen import compat

#: Arguments module_runner.LAUNCHER reads; `date_time` (the zip's time
#: stamp) and `zip_data` (the modlib, sent apart) are not among them.
SPEC_KEYS = frozenset(
    ("ansible_module", "module_fqn", "profile", "rlimit_nofile", "params", "extensions")
)


@dataclass(frozen=True)
class Payload:
    """A parsed AnsiballZ payload: the runner's arguments and the modlib zip."""

    spec: dict[str, Any]
    modlib: bytes


def parse(payload: bytes) -> Payload | None:
    """The arguments of `payload`, or None if it is not in the known form.

    Runs for every task: the zip (nearly all of the payload) is a base64
    string literal, taken between its quotes rather than through
    ast.literal_eval(), which costs milliseconds on it."""
    facts = compat.facts()
    _, found, call = payload.rpartition(facts.ansiballz_call)
    if not found:
        return None
    args: dict[str, Any] = {}
    names: set[str] = set()
    zip_data = None
    for line in call.decode("utf-8", "replace").splitlines():
        if line == ")":
            break
        name, equals, value = line.partition("=")
        if not equals or not value.endswith(","):
            return None
        names.add(name)
        if name == "zip_data":
            if not (value.startswith("'") and value.endswith("',")):
                return None
            zip_data = value[1:-2]
        elif name in SPEC_KEYS:
            try:
                args[name] = ast.literal_eval(value[:-1])
            except (ValueError, SyntaxError):
                return None
    if zip_data is None or names != facts.ansiballz_arguments or args.keys() != SPEC_KEYS:
        return None
    try:
        modlib = base64.b64decode(zip_data, validate=True)
    except binascii.Error:
        return None
    return Payload(args, modlib)
