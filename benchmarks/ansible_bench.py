"""Stock Ansible (ssh, pipelining, ControlPersist) against mitogen_linear,
measured in one run against the project's loopback sshd hosts.

For each workload it prints wall time, controller CPU time (ansible-playbook
and everything it started: the mux, and stock's detached ssh ControlPersist
masters, which are stopped after each run) and bytes carried over the
loopback interface, with the ratio to stock and to the `debug` floor (100
tasks that need no connection: Ansible's own per-task cost). Needs root.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.testbed import Testbed  # noqa: E402
from tests.testbed.proc import proc_cmdline  # noqa: E402

VENV_BIN = os.path.join(ROOT, ".venv", "bin")
STRATEGY_DIR = os.path.join(ROOT, "ansible_mitogen", "plugins", "strategy")
HOSTS = 10


def tasks(body: str, count: int) -> str:
    return "".join(body.format(i=i) for i in range(count))


def play(hosts: str, body: str, gather: bool = False) -> str:
    return "- hosts: %s\n  gather_facts: %s\n  tasks:\n%s" % (
        hosts,
        "true" if gather else "false",
        body,
    )


def workloads(workdir: str) -> dict[str, str]:
    files = os.path.join(workdir, "files")
    os.makedirs(files, exist_ok=True)
    for i in range(50):
        with open(os.path.join(files, "small%d.txt" % i), "w") as fp:
            fp.write("small file %d\n" % i * 20)
    with open(os.path.join(files, "big.bin"), "wb") as fp:
        fp.write(os.urandom(20 * 1048576))
    template = os.path.join(workdir, "tmpl.j2")
    with open(template, "w") as fp:
        fp.write("host {{ inventory_hostname }} item {{ item }}\n")
    dest = "/tmp/mitogen-bench-{{ inventory_hostname }}"
    escaped = dest.replace("{", "{{").replace("}", "}}")
    copy_tasks = (
        "    - file: path=%s state=directory\n" % dest
        + tasks("    - copy: src=%s/small{i}.txt dest=%s/small{i}.txt\n" % (files, escaped), 50)
        + "    - copy: src=%s/big.bin dest=%s/big.bin\n" % (files, dest)
    )
    fresh = "    - file: path=%s state=absent\n" % dest
    return {
        "debug x100 (floor)": play("h1", tasks('    - debug: msg="task {i}"\n', 100)),
        "command x100": play("h1", tasks("    - command: echo {i}\n", 100)),
        "loop x100": play(
            "h1", '    - command: echo {{ item }}\n      loop: "{{ range(100) | list }}"\n'
        ),
        "copy 50 small + 20MB": play("h1", fresh + copy_tasks),
        "copy again, unchanged": play("h1", copy_tasks),
        "become x30": play("h1", tasks("    - command: id -u\n      become: true\n", 30)),
        "facts x5": play("h1", tasks("    - setup:\n", 5)),
        "20 tasks x 10 hosts": play("all", tasks("    - command: echo {i}\n", 20)),
        "template x20": play(
            "h1",
            tasks(
                "    - template: src=%s\n"
                "        dest=/tmp/mitogen-bench-tmpl-{{{{ inventory_hostname }}}}-{i}\n"
                "      vars: {{item: {i}}}\n" % template,
                20,
            ),
        ),
    }


def write_inventory(bed: Testbed, path: str, hosts: list[tuple[str, int]]) -> None:
    user = bed.accounts.sudo_nopw.name
    lines = ["[all]"]
    for index, (address, port) in enumerate(hosts, 1):
        lines.append(
            "h%d ansible_host=%s ansible_port=%d ansible_user=%s "
            "ansible_ssh_private_key_file=%s ansible_python_interpreter=/usr/bin/python3"
            % (index, address, port, user, bed.keys.client_key)
        )
    lines += [
        "[all:vars]",
        'ansible_ssh_common_args="-o UserKnownHostsFile=/dev/null '
        '-o StrictHostKeyChecking=no -o IdentitiesOnly=yes"',
    ]
    with open(path, "w") as fp:
        fp.write("\n".join(lines) + "\n")


def lo_bytes() -> int:
    with open("/sys/class/net/lo/statistics/tx_bytes") as fp:
        return int(fp.read())


@dataclass
class Result:
    wall: float
    cpu: float
    wire: int
    ok: bool


def reap_control_masters(control_dir: str) -> float:
    """CPU seconds of the ssh ControlPersist masters stock Ansible left in
    `control_dir` (they detach, so ansible-playbook's rusage misses them);
    each is then told to exit."""
    cpu = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    prefix = "ssh: %s/" % control_dir
    for pid in filter(str.isdigit, os.listdir("/proc")):
        args = proc_cmdline(int(pid))
        if not args or not args[0].startswith(prefix):
            continue
        try:
            with open("/proc/%s/stat" % pid) as fp:
                fields = fp.read().rpartition(")")[2].split()
        except OSError:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / ticks
        path = args[0][len("ssh: ") :].split(" ")[0]
        subprocess.run(
            ["ssh", "-O", "exit", "-o", "ControlPath=" + path, "master"], capture_output=True
        )
    return cpu


def run(playbook: str, inventory: str, strategy: str, workdir: str) -> Result:
    control_dir = os.path.join(workdir, "cp")
    env = dict(
        os.environ,
        ANSIBLE_STRATEGY=strategy,
        ANSIBLE_STRATEGY_PLUGINS=STRATEGY_DIR,
        ANSIBLE_PIPELINING="true",
        ANSIBLE_HOST_KEY_CHECKING="false",
        ANSIBLE_FORKS=str(HOSTS),
        ANSIBLE_DEPRECATION_WARNINGS="false",
        ANSIBLE_LOCAL_TEMP=os.path.join(workdir, "local-tmp"),
        ANSIBLE_SSH_CONTROL_PATH_DIR=control_dir,
        PYTHONPATH=ROOT,
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wire = lo_bytes()
    started = time.perf_counter()
    proc = subprocess.run(
        [os.path.join(VENV_BIN, "ansible-playbook"), "-i", inventory, playbook],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu += reap_control_masters(control_dir)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
    return Result(wall, cpu, lo_bytes() - wire, proc.returncode == 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="run only workloads whose name contains this")
    args = parser.parse_args()
    with Testbed() as bed, tempfile.TemporaryDirectory() as workdir:
        hosts = [(bed.sshd.address, bed.sshd.port)]
        for i in range(2, HOSTS + 1):
            extra = bed.start_sshd("127.0.0.%d" % i)
            hosts.append((extra.address, extra.port))
        inventory = os.path.join(workdir, "inventory.ini")
        write_inventory(bed, inventory, hosts)
        results: dict[tuple[str, str], Result] = {}
        print(
            "%-24s %-15s %8s %8s %10s %9s %9s"
            % ("workload", "strategy", "wall s", "cpu s", "wire KB", "vs stock", "vs floor")
        )
        floor: dict[str, float] = {}
        for name, text in workloads(workdir).items():
            if args.only and args.only not in name and "floor" not in name:
                continue
            playbook = os.path.join(workdir, "play.yml")
            with open(playbook, "w") as fp:
                fp.write(text)
            for strategy in ("linear", "mitogen_linear"):
                result = run(playbook, inventory, strategy, workdir)
                results[name, strategy] = result
                if "floor" in name:
                    floor[strategy] = result.wall
                stock = results[name, "linear"].wall
                print(
                    "%-24s %-15s %8.2f %8.2f %10.0f %8.2fx %8.2fx%s"
                    % (
                        name,
                        strategy,
                        result.wall,
                        result.cpu,
                        result.wire / 1024,
                        stock / result.wall,
                        result.wall / floor.get(strategy, result.wall),
                        "" if result.ok else "  FAILED",
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
