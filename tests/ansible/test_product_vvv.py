"""At -vvv a Mitogen run shows, per host and in stock's `<host> ...` style, the chain it
connected through (started or reused), each command, module and file transfer with its
timing, and the failure of an unreachable host; no password appears anywhere."""

from __future__ import annotations

import json
import re

from tests.ansible.harness import Harness


def test_vvv_lines_show_chain_runs_and_failures(harness: Harness) -> None:
    run = harness.run("verbose.yml", "mitogen_linear", args=["-vvv"])
    out = run.stdout + run.stderr
    account = harness.account("sudo_pw")
    address = harness.testbed.sshd.address
    port = harness.testbed.sshd.port
    chain = f"ssh {account.name}@{address}:{port} -> sudo root"

    established = [
        line
        for line in out.splitlines()
        if line.startswith(f"<{address}> ESTABLISH MITOGEN CONNECTION FOR USER: {account.name}")
        and f"VIA {chain} (" in line
    ]
    assert established, run.describe()
    # the first task's chain is started for it; the next task's reuses it
    assert "started" in established[0], established
    assert "reused" in established[1], established
    assert re.search(r"waited [0-9.]+ ms\)$", established[0]), established[0]

    assert re.search(
        rf"^<{address}> MITOGEN MODULE ansible\.modules\.ping done: rc 0 in [0-9.]+ ms", out, re.M
    ), out
    assert re.search(
        rf"^<{address}> MITOGEN MODULE ansible\.modules\.copy \(interpreter ", out, re.M
    )
    # copy's content travels as a file put before the module runs
    assert re.search(rf"^<{address}> MITOGEN PUT \S+ TO \S+ \(8 bytes\)$", out, re.M), out
    # the unreachable host's failure carries its <host> prefix and says which chain failed
    inventory = json.loads(harness.inventory_path.read_text())
    dead = inventory["all"]["children"]["unreachable"]["hosts"]["dead"]
    assert re.search(
        rf"^<{address}> MITOGEN CONNECTION FAILED: "
        rf"ssh \S+@{address}:{dead['ansible_port']} -> sudo root: Failed to set up ssh",
        out,
        re.M,
    ), out
    assert account.password not in out
