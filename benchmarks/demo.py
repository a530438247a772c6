"""The demo: one playbook against the project's loopback sshd, run with
stock Ansible (ssh, pipelining, ControlPersist) and with mitogen_linear;
prints both times. Needs root (it starts the testbed)."""

from __future__ import annotations

import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.ansible_bench import Hosts, Result, run, write_inventory  # noqa: E402
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
    return times


def main() -> None:
    with Testbed() as bed, tempfile.TemporaryDirectory() as workdir:
        run_demo(bed, workdir)


if __name__ == "__main__":
    main()
