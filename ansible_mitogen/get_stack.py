"""The `mitogen_get_stack` action: the chain of hops a task would use, without connecting.

For the task's host and variables it returns the hops the task's Mitogen connection would
ask the mux for (`[{"method": "ssh", "kwargs": {...}}, {"method": "sudo", ...}]`), with
every secret (passwords) replaced by MASK, and the chain as one line. It never connects:
the stack is derived from the connection's options alone, so it works for an unreachable
host too. A task whose connection Mitogen does not serve fails and says why.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase

import ansible_mitogen.connection
import mitogen.core

#: What a secret is shown as.
MASK = "********"


def masked(value: Any) -> Any:
    """`value` with every mitogen.core.Secret replaced by MASK."""
    if isinstance(value, mitogen.core.Secret):
        return MASK
    if isinstance(value, dict):
        return {key: masked(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [masked(item) for item in value]
    return value


class GetStackAction(ActionBase):
    """Base of the mitogen_get_stack plugin files (package and collection)."""

    TRANSFERS_FILES = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        connection = self._connection
        if not isinstance(connection, ansible_mitogen.connection.Connection):
            result.update(
                failed=True,
                msg="mitogen_get_stack: the task's connection %r is not a Mitogen one (the "
                "strategy is not a Mitogen strategy, or the connection type is not accelerated)"
                % (getattr(connection, "transport", None),),
            )
            return result
        if not connection.is_mitogen_connection:
            result.update(
                failed=True,
                msg="mitogen_get_stack: this task runs as stock Ansible (%s)"
                % (connection.fallback_reason(),),
            )
            return result
        stack = connection.get_stack()
        result.update(
            changed=False,
            stack=masked(stack),
            chain=ansible_mitogen.connection.describe_stack(stack),
        )
        return result
