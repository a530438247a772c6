"""Reading back the arguments stock Ansible bakes into an AnsiballZ payload.

ansible-core 2.19 to 2.21 end a new-style Python module's payload with a
call `_ansiballz_main(` followed by one `name=<repr>,` line per argument.
`parse()` returns those arguments with the zip decoded, so the module can
run on the target without shipping the whole payload every time (see
module_runner.py). Controller-side only.
"""

from __future__ import annotations

import ast
import base64
import binascii
from dataclasses import dataclass
from typing import Any

_CALL = b'\nif __name__ == "__main__":\n    _ansiballz_main(\n'

#: Arguments the target needs; `date_time` (the zip's time stamp) is not.
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
    _, found, call = payload.rpartition(_CALL)
    if not found:
        return None
    args: dict[str, Any] = {}
    zip_data = None
    for line in call.decode("utf-8", "replace").splitlines():
        if line == ")":
            break
        name, equals, value = line.partition("=")
        if not equals or not value.endswith(","):
            return None
        if name == "zip_data":
            if not (value.startswith("'") and value.endswith("',")):
                return None
            zip_data = value[1:-2]
        elif name in SPEC_KEYS:
            try:
                args[name] = ast.literal_eval(value[:-1])
            except (ValueError, SyntaxError):
                return None
    if zip_data is None or args.keys() != SPEC_KEYS:
        return None
    try:
        modlib = base64.b64decode(zip_data, validate=True)
    except binascii.Error:
        return None
    return Payload(args, modlib)
