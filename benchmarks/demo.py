"""The demo: one playbook against the project's loopback sshd, run with
stock Ansible (ssh, pipelining, ControlPersist) and with mitogen_linear;
prints both times, then proves from a -vvv run that Mitogen, not stock ssh,
served every task that reaches the host. Needs root (it starts the testbed)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.ansible_bench import (  # noqa: E402
    VENV_BIN,
    Hosts,
    Result,
    playbook_env,
    run,
    write_inventory,
)
from tests.testbed import Testbed  # noqa: E402

DEMO = """- hosts: h1
  gather_facts: false
  tasks:
%s    - copy: content="demo {{ inventory_hostname }}\\n" dest=/tmp/mitogen-demo.txt
    - stat: path=/tmp/mitogen-demo.txt
      register: st
    - command: id -un
      become: true
      register: who
    - assert:
        that: [st.stat.exists, who.stdout == "root"]
    - file: path=/tmp/mitogen-demo.txt state=absent
""" % "".join("    - command: echo task %d\n" % i for i in range(30))

#: Tasks of DEMO that reach the host (all but `assert`).
REACHING_TASKS = 34
#: What stock's ssh connection prints at -vvv when it serves a task.
STOCK_LINES = ("ESTABLISH SSH CONNECTION", "SSH: EXEC")


def served_by_mitogen(playbook: str, inventory: str, workdir: str) -> str:
    """Run `playbook` once more under mitogen_linear at -vvv (untimed) and check that
    Mitogen established the connection of every task that reaches the host and stock ssh
    served none; returns a line saying so, or exits with what was wrong."""
    proc = subprocess.run(
        [os.path.join(VENV_BIN, "ansible-playbook"), "-vvv", "-i", inventory, playbook],
        env=playbook_env("mitogen_linear", 1, workdir),
        capture_output=True,
        text=True,
    )
    established = proc.stdout.count("ESTABLISH MITOGEN CONNECTION")
    stock = [line for line in proc.stdout.splitlines() if any(s in line for s in STOCK_LINES)]
    if proc.returncode or established < REACHING_TASKS or stock:
        sys.exit(
            "demo: Mitogen did not serve every task (exit %d, %d of %d tasks through Mitogen, "
            "stock ssh lines: %s)\n%s"
            % (proc.returncode, established, REACHING_TASKS, stock[:3], proc.stdout[-3000:])
        )
    return "served by Mitogen: %d of %d tasks that reach the host (checked at -vvv)" % (
        min(established, REACHING_TASKS),
        REACHING_TASKS,
    )


def run_demo(bed: Testbed, workdir: str) -> dict[str, Result]:
    """Run the demo playbook on `bed`'s sshd with each strategy, printing the
    times; exits with a message if a run fails."""
    inventory = os.path.join(workdir, "inventory.ini")
    write_inventory(bed, inventory, [(bed.sshd.address, bed.sshd.port)])
    playbook = os.path.join(workdir, "demo.yml")
    with open(playbook, "w") as fp:
        fp.write(DEMO)
    times = {}
    for strategy in ("linear", "mitogen_linear"):
        result = run(playbook, Hosts(inventory, [bed.sshd], None, 1, None), strategy, workdir)
        if not result.ok:
            sys.exit("demo playbook failed with strategy %s" % (strategy,))
        times[strategy] = result
        print(
            "%-15s %6.2f s wall  %6.2f s controller CPU" % (strategy, result.wall, result.cpu),
            flush=True,
        )
    print(
        "mitogen_linear took %.2fx the wall time and %.2fx the controller CPU of stock"
        % (
            times["mitogen_linear"].wall / times["linear"].wall,
            times["mitogen_linear"].cpu / times["linear"].cpu,
        )
    )
    print(served_by_mitogen(playbook, inventory, workdir), flush=True)
    return times


def main() -> None:
    with Testbed() as bed, tempfile.TemporaryDirectory() as workdir:
        run_demo(bed, workdir)


if __name__ == "__main__":
    main()
