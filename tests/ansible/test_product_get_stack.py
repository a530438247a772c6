"""mitogen_get_stack returns the chain of hops a task would use, with secrets masked and
without connecting; under a builtin strategy it fails and says why."""

from __future__ import annotations

import json

from ansible_mitogen import cli
from ansible_mitogen.get_stack import MASK
from tests.ansible.harness import Harness

ENV = {"ANSIBLE_ACTION_PLUGINS": str(cli.ACTION_PLUGINS)}


def test_get_stack_masks_secrets_and_does_not_connect(harness: Harness) -> None:
    run = harness.run("get_stack.yml", "mitogen_linear", env=ENV, args=["-vvv"])
    assert run.rc == 0, run.describe()
    account = harness.account("sudo_pw")
    address, port = harness.testbed.sshd.address, harness.testbed.sshd.port
    result = run.result("sudo_pw", "what it returned")["msg"]
    ssh, sudo = result["stack"]
    assert ssh["method"] == "ssh" and sudo["method"] == "sudo"
    assert (ssh["kwargs"]["hostname"], ssh["kwargs"]["port"]) == (address, port)
    assert ssh["kwargs"]["username"] == account.name
    assert sudo["kwargs"]["username"] == "root"
    assert sudo["kwargs"]["password"] == MASK
    assert result["chain"] == f"ssh {account.name}@{address}:{port} -> sudo root"
    # the unreachable host answers too: nothing connected
    inventory = json.loads(harness.inventory_path.read_text())
    dead_port = inventory["all"]["children"]["unreachable"]["hosts"]["dead"]["ansible_port"]
    dead = run.result("dead", "what it returned")["msg"]
    assert dead["stack"][0]["kwargs"]["port"] == dead_port
    assert "ESTABLISH MITOGEN CONNECTION" not in run.stdout
    assert account.password not in run.stdout + run.stderr
    assert account.password not in json.dumps(run.records)


def test_get_stack_under_a_builtin_strategy_says_why(harness: Harness) -> None:
    run = harness.run("get_stack.yml", "linear", env=ENV)
    result = run.result("dead", "the stack with become")
    assert result["failed"] is True
    assert "is not a Mitogen one" in result["msg"], result
