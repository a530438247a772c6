"""Secrets never leak: the ssh password, become passwords (right and wrong) and `no_log`
values of a Mitogen run at -vvvv appear in none of its output, its log file, any file the
run wrote, the command lines of any process on the machine (controller and target are
the same machine here) sampled throughout the run, or its error messages."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.harness import Harness
from tests.faults import faultlib

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

PLAY = """- hosts: plain,sudo_pw,wrong_become
  gather_facts: false
  tasks:
    - name: become with a password
      command: sleep 2
      become: "{{ inventory_hostname != 'plain' }}"
      ignore_errors: true
      ignore_unreachable: true
    - name: a no_log value in a module's arguments
      copy:
        content: "{{ hidden }}"
        dest: "{{ workdir }}/hidden"
        mode: "0600"
      become: "{{ inventory_hostname == 'sudo_pw' }}"
      no_log: true
      when: inventory_hostname != 'wrong_become'
    - name: a no_log task that fails with the value
      copy:
        content: "{{ hidden }}"
        dest: /nonexistent/directory/hidden
      no_log: true
      ignore_errors: true
      when: inventory_hostname != 'wrong_become'
    - name: a no_log value in a become task's environment
      shell: 'sleep 1; test -n "$HIDDEN"'
      environment:
        HIDDEN: "{{ hidden }}"
      become: "{{ inventory_hostname == 'sudo_pw' }}"
      no_log: true
      when: inventory_hostname != 'wrong_become'
"""


class PsSampler(threading.Thread):
    """Collects the command lines of every process on the machine every 20 ms."""

    def __init__(self) -> None:
        super().__init__(name="ps-sampler", daemon=True)
        self.seen: set[str] = set()
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.seen.update(cmd for _uid, cmd in faultlib.processes().values())
            self.samples += 1
            time.sleep(0.02)


def test_secrets_never_leak(harness: Harness, playbook: Any, tmp_path: Path) -> None:
    ssh_password = "sshpw-" + secrets.token_hex(8)
    wrong = "wrongpw-" + secrets.token_hex(8)
    hidden = "nolog-" + secrets.token_hex(8)
    become_password = harness.account("sudo_pw").password
    inventory = tmp_path / "secrets.yml"
    inventory.write_text(
        f"all:\n  vars:\n    hidden: {hidden}\n  hosts:\n"
        f"    plain:\n      ansible_password: {ssh_password}\n"
        f"    wrong_become:\n      ansible_user: {harness.account('sudo_pw').name}\n"
        f"      ansible_become_password: {wrong}\n"
    )
    log = tmp_path / "ansible.log"
    strays = faultlib.Strays(harness, ("plain", "sudo_pw"))
    sampler = PsSampler()
    sampler.start()
    try:
        run = harness.run(
            playbook(PLAY),
            "mitogen_linear",
            args=["-vvvv", "-i", str(harness.inventory_path), "-i", str(inventory)],
            env={"ANSIBLE_LOG_PATH": str(log), "MITOGEN_LOG_LEVEL": "DEBUG"},
        )
    finally:
        sampler.stop.set()
        sampler.join(5)
    left = strays.wait(5)
    strays.reap(left)
    # The run did what it was asked, so the secrets were really in use.
    assert run.result("sudo_pw", "become with a password")["rc"] == 0, run.describe()
    assert run.result("sudo_pw", "a no_log value in a module's arguments")["changed"]
    wrong_result = run.result("wrong_become", "become with a password")
    assert wrong_result["failed"] or wrong_result["unreachable"], wrong_result
    assert sampler.samples > 50, sampler.samples
    texts = {"stdout": run.stdout, "stderr": run.stderr, "log": log.read_text()}
    for path in run.directory.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_text(errors="replace")
    texts["ps"] = "\n".join(sorted(sampler.seen))
    found = [
        f"{what} in {where}"
        for what, secret in (
            ("ssh password", ssh_password),
            ("become password", become_password),
            ("wrong become password", wrong),
            ("no_log value", hidden),
        )
        for where, text in texts.items()
        if secret in text
    ]
    for where, text in texts.items():  # the lines, for the failure message
        found += [f"  {where}: {line[:300]}" for line in text.splitlines() if hidden in line]
    faultlib.record(
        "secrets in logs (-vvvv), files, ps, errors",
        "mitogen_linear",
        "none found",
        "none found" if not found else "; ".join(f for f in found if not f.startswith(" ")),
        run.seconds,
        len(left),
    )
    assert not found, found
    assert not left, left
