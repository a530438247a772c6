"""At -vvvv, or with MITOGEN_LOG_LEVEL=debug at any verbosity, the mux's and the targets'
own log lines reach Ansible's display and its log_path, each naming the host and the
context it came from; no password appears in either."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest

from tests.ansible.harness import Harness


@pytest.mark.parametrize(
    "args, env",
    [(["-vvvv"], {}), ([], {"MITOGEN_LOG_LEVEL": "debug"})],
    ids=["vvvv", "MITOGEN_LOG_LEVEL"],
)
def test_mux_and_target_log_lines_reach_the_display_and_log_path(
    harness: Harness, tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    ssh_password = "sshpw-" + secrets.token_hex(8)
    become_password = harness.account("sudo_pw").password
    inventory = tmp_path / "passwords.yml"
    inventory.write_text(f"all:\n  hosts:\n    plain:\n      ansible_password: {ssh_password}\n")
    log = tmp_path / "ansible.log"
    run = harness.run(
        "mux_log.yml",
        "mitogen_linear",
        args=[*args, "-i", str(harness.inventory_path), "-i", str(inventory)],
        env={**env, "ANSIBLE_LOG_PATH": str(log)},
    )
    assert run.rc == 0, run.describe()
    address, port = harness.testbed.sshd.address, harness.testbed.sshd.port
    plain, sudo = harness.account("plain"), harness.account("sudo_pw")
    out, logged = run.stdout + run.stderr, log.read_text()
    # log_path lines begin with the time, the pid, the user, the logger and the level
    messages = re.sub(r"^.*? n=ansible INFO\| ", "", logged, flags=re.M)
    ssh_context = rf"ssh\.{re.escape(address)}:{port} #\d+"
    expected = {
        # the target side: each chain's own lines, with the host and the context
        "login context ready": rf"^<{re.escape(address)}> MITOGEN LOG \[{ssh_context}\] DEBUG "
        rf"ansible_mitogen\.target: ready: pid \d+, uid {plain.uid}, Python ",
        "become context ready": rf"^<{re.escape(address)}> MITOGEN LOG \[sudo\.root #\d+\] DEBUG "
        r"ansible_mitogen\.target: ready: pid \d+, uid 0, Python ",
        "module run": rf"^<{re.escape(address)}> MITOGEN LOG \[sudo\.root #\d+\] DEBUG "
        r"ansible_mitogen\.module_runner: module ansible\.modules\.ping: rc 0$",
        "sudo started by the login context": rf"^<{re.escape(address)}> MITOGEN LOG "
        rf"\[{ssh_context}\] DEBUG mitogen: \S+: starting sudo",
        # the mux's own
        "mux": r"^<mux> MITOGEN LOG \[mux\] DEBUG mitogen: .* joined as context \d+$",
        "mux starting ssh": r"^<mux> MITOGEN LOG \[mux\] DEBUG mitogen: \S+: starting ssh",
    }
    for where, text in (("output", out), ("log_path", messages)):
        missing = [name for name, pattern in expected.items() if not re.search(pattern, text, re.M)]
        assert not missing, f"not in the {where}: {missing}\n" + "\n".join(
            line for line in text.splitlines() if "MITOGEN LOG" in line
        )
    assert sudo.name in out  # the run used the accounts whose passwords are set
    for secret in ssh_password, become_password:
        assert secret not in out
        assert secret not in logged
