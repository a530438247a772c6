"""Pure helpers of the Mitogen connection plugin and its services."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ansible.errors import AnsibleConnectionFailure, AnsibleError

import mitogen.core
from ansible_mitogen import compat
from ansible_mitogen.connection import (
    InterpreterMissing,
    become_flags,
    connect_error,
    filter_ssh_args,
)
from ansible_mitogen.services import failure, stack_key


def test_filter_ssh_args_drops_control_master_options() -> None:
    args = [
        "-C",
        "-o",
        "ControlMaster=auto",
        "-o",
        "ControlPersist=60s",
        "-oControlPath=/x/%h",
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "controlpath = y",
    ]
    assert filter_ssh_args(args) == ["-C", "-o", "ServerAliveInterval=5"]


def test_become_flags_drop_stdin_and_noninteractive() -> None:
    assert become_flags("-H -S -n -E") == ["-H", "-E"]
    assert become_flags("--set-home --stdin --non-interactive") == ["--set-home"]
    assert become_flags(None) == []


def hop(password: str | None) -> list[dict[str, object]]:
    return [{"method": "sudo", "kwargs": {"username": "root", "password": password}}]


def test_stack_key_separates_passwords_without_showing_them() -> None:
    right, wrong = stack_key(hop("s3cret")), stack_key(hop("wrong"))
    assert right != wrong
    assert stack_key(hop("s3cret")) == right
    assert "s3cret" not in right and "wrong" not in wrong
    assert stack_key(hop(None)) != right


@pytest.mark.parametrize(
    "reason, text",
    [
        ("bad_password", "Incorrect sudo password"),
        ("need_password", "Missing sudo password"),
    ],
)
def test_become_failures_use_stock_wording(reason: str, text: str) -> None:
    error = connect_error(
        {"method_name": "sudo", "reason": reason, "msg": "detail", "output": ""}, "/usr/bin/python3"
    )
    assert type(error) is AnsibleError and str(error) == text


def test_ssh_failure_is_unreachable_with_ssh_output() -> None:
    error = connect_error(
        {
            "method_name": "ssh",
            "reason": "other",
            "msg": "long detail",
            "output": "ssh: connect to host h port 1: Connection refused",
        },
        "/usr/bin/python3",
    )
    assert isinstance(error, AnsibleConnectionFailure)
    assert str(error) == (
        "Failed to connect to the host via ssh: ssh: connect to host h port 1: Connection refused"
    )


def test_module_environment_branch() -> None:
    assert compat.module_applies_environment(SimpleNamespace(has_environment=True))
    assert not compat.module_applies_environment(SimpleNamespace(has_environment=False))
    assert not compat.module_applies_environment(SimpleNamespace())


@pytest.mark.parametrize(
    "method, kind, expected, text",
    [
        ("sudo", "bad_password", AnsibleError, "Incorrect sudo password"),
        ("su", "need_password", AnsibleError, "Missing su password"),
        ("doas", "policy", AnsibleError, "doas: detail"),
        ("sudo", "timeout", AnsibleConnectionFailure, "Timeout (12s) waiting for privilege: out"),
        ("sudo", "python", InterpreterMissing, "The module interpreter '/py' was not found."),
        (
            "ssh",
            "unreachable",
            AnsibleConnectionFailure,
            "Failed to connect to the host via ssh: out",
        ),
        ("ssh", None, AnsibleConnectionFailure, "Failed to connect to the host via ssh: out"),
        ("local", "eof", AnsibleConnectionFailure, "detail"),
    ],
)
def test_error_kind_reaches_stock_wording(
    method: str, kind: str | None, expected: type[AnsibleError], text: str
) -> None:
    """The kind a connection error carries (not its message) picks the
    wording: failure() passes it on as the reason, connect_error() words it."""
    error = mitogen.core.StreamError("detail")
    error.kind, error.output = kind, " out\n"
    result = failure(error, method, 0)
    assert result["reason"] == (kind or "other") and result["output"] == "out"
    raised = connect_error(result, "/py", "Timeout (12s) waiting for privilege: ")
    assert type(raised) is expected and str(raised) == text
