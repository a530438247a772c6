"""Stock Ansible (ssh, pipelining, ControlPersist) against mitogen_linear,
measured in one run against the project's testbed hosts.

For each workload it prints wall time, controller CPU time (ansible-playbook
and everything it started: the mux, and stock's detached ssh ControlPersist
masters, which are stopped after each run), target CPU time (everything the
hosts' sshds ran for the playbook: logins, interpreters, modules), and bytes
carried between controller and hosts, with the ratio to stock and to the
`debug` floor (100 tasks that need no connection: Ansible's own per-task
cost). Needs root.

The hosts are 10 loopback sshds (127.0.0.1-10); `--hosts N` makes them N
network-namespace hosts instead (tests/testbed/netns.py), for the
multi-host workload "20 tasks x N hosts" run with `--forks` (default N).
Loop workloads also print per-item latency (from ansible's log timestamps):
median, 90th percentile, maximum and the number of stalls (items > 0.5 s);
`--stall-items N` runs one mitogen_linear loop of N items for that alone.
`--docker` runs the floor, "command x100" and "loop x100" against a container of a
private dockerd instead (tests/testbed/containers.py): stock community.docker.docker
(from the venv's container-collections, see scripts/setup-collections.sh) against
mitogen_linear's mitogen_docker; target CPU and wire bytes are not measured there.
`--load` (with `--hosts N`) runs only the floor and the load workload: 20 tasks and
10 more with become on every host. Every run also prints the controller's peak
resident set (ansible-playbook and every process it waited for: workers, the mux)
and, for Mitogen, the mux's own CPU time (sampled every 0.25 s while it runs).
Runs are made with bytecode writing on, as users have it.

`--mode connection` adds a third run per workload: the builtin `linear`
strategy with `connection = mitogen_ssh` (Mitogen without its strategy,
ansible_mitogen/standalone.py). Its mux is started by a worker and detaches;
this process is made a child subreaper, so it inherits that mux and waits for
it, and its CPU time is counted too.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.testbed import Testbed  # noqa: E402
from tests.testbed.containers import Dockerd  # noqa: E402
from tests.testbed.proc import child_pids, proc_cmdline  # noqa: E402
from tests.testbed.sshd import Sshd  # noqa: E402

#: ansible-playbook is beside the Python running this (the project venv).
VENV_BIN = os.path.dirname(sys.executable)
STRATEGY_DIR = os.path.join(ROOT, "ansible_mitogen", "plugins", "strategy")
#: The stock container connections' collections (scripts/setup-collections.sh).
CONTAINER_COLLECTIONS = os.path.join(os.path.dirname(VENV_BIN), "container-collections")
#: The workloads --docker runs.
DOCKER_WORKLOADS = ("debug x100 (floor)", "command x100", "loop x100")
CONNECTION_DIR = os.path.join(ROOT, "ansible_mitogen", "plugins", "connection")
#: How each kind of run is made: its name -> (strategy, extra environment).
RUN_KINDS: dict[str, tuple[str, dict[str, str]]] = {
    "linear": ("linear", {}),
    "mitogen_linear": ("mitogen_linear", {}),
    "connection": (
        "linear",
        {"ANSIBLE_TRANSPORT": "mitogen_ssh", "ANSIBLE_CONNECTION_PLUGINS": CONNECTION_DIR},
    ),
}
#: prctl(2) option making this process the reaper of its orphaned descendants.
PR_SET_CHILD_SUBREAPER = 36
#: Loopback hosts without --hosts.
LOOPBACK_HOSTS = 10
#: Multi-host workload: tasks per host.
FLEET_TASKS = 20
#: The --load workload: tasks with become on every host, besides FLEET_TASKS.
LOAD_BECOME_TASKS = 10
#: Seconds between samples of the mux's CPU time.
MUX_SAMPLE_SECONDS = 0.25
#: Where cgroup v1 accounts CPU time.
CPUACCT = "/sys/fs/cgroup/cpuacct"
#: Seconds allowed for the hosts' sessions to end after a run.
SESSION_END_TIMEOUT = 30.0
#: An item slower than this counts as a stall.
STALL_SECONDS = 0.5
#: A loop item's result line in ansible's log.
ITEM_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*\(item=")


def load_name(hosts: int) -> str:
    """The --load workload's name: FLEET_TASKS tasks and LOAD_BECOME_TASKS more with become."""
    return "load %d+%d become x %d hosts" % (FLEET_TASKS, LOAD_BECOME_TASKS, hosts)


def tasks(body: str, count: int) -> str:
    return "".join(body.format(i=i) for i in range(count))


def play(hosts: str, body: str, gather: bool = False) -> str:
    return "- hosts: %s\n  gather_facts: %s\n  tasks:\n%s" % (
        hosts,
        "true" if gather else "false",
        body,
    )


def workloads(workdir: str, hosts: int) -> dict[str, str]:
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
        # A play of one task on a host not yet connected: connection and first module.
        "first task": play("h1", tasks("    - command: echo {i}\n", 1)),
        "loop x100": play(
            "h1", '    - command: echo {{ item }}\n      loop: "{{ range(100) | list }}"\n'
        ),
        "copy 50 small + 20MB": play("h1", fresh + copy_tasks),
        "copy again, unchanged": play("h1", copy_tasks),
        "become x30": play("h1", tasks("    - command: id -u\n      become: true\n", 30)),
        "facts x5": play("h1", tasks("    - setup:\n", 5)),
        "%d tasks x %d hosts" % (FLEET_TASKS, hosts): play(
            "all", tasks("    - command: echo {i}\n", FLEET_TASKS)
        ),
        load_name(hosts): play(
            "all",
            tasks("    - command: echo {i}\n", FLEET_TASKS)
            + tasks("    - command: id -u\n      become: true\n", LOAD_BECOME_TASKS),
        ),
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


def _counter(interface: str, name: str) -> int:
    with open("/sys/class/net/%s/statistics/%s" % (interface, name)) as fp:
        return int(fp.read())


def wire_bytes(veth: str | None) -> int:
    """Bytes sent on loopback (each counted once) plus both directions of the
    namespace hosts' veth."""
    total = _counter("lo", "tx_bytes")
    if veth is not None:
        total += _counter(veth, "tx_bytes") + _counter(veth, "rx_bytes")
    return total


class TargetCpu:
    """CPU time of everything the hosts' sshds run (logins, interpreters,
    modules), counted by a cgroup-v1 cpuacct group the daemons are moved
    into, so processes that exit or leave their parent are counted too.
    `seconds()` is None where no such group can be made."""

    def __init__(self, daemons: list[Sshd]) -> None:
        self.path: str | None = os.path.join(CPUACCT, "mitogen-bench-%d" % os.getpid())
        try:
            os.mkdir(self.path)
            for daemon in daemons:
                self._write("cgroup.procs", str(daemon.pid))
        except OSError as e:
            sys.stderr.write("warning: no target CPU (%s)\n" % (e,))
            self.close()

    def _write(self, name: str, text: str, directory: str | None = None) -> None:
        with open(os.path.join(directory or self.path or "", name), "w") as fp:
            fp.write(text)

    def seconds(self) -> float | None:
        if self.path is None:
            return None
        with open(os.path.join(self.path, "cpuacct.usage")) as fp:
            return int(fp.read()) / 1e9

    def close(self) -> None:
        """Move what is left back to the root group and remove ours."""
        path, self.path = self.path, None
        if path is None or not os.path.isdir(path):
            return
        with open(os.path.join(path, "cgroup.procs")) as fp:
            pids = fp.read().split()
        for pid in pids:
            try:
                self._write("cgroup.procs", pid, CPUACCT)
            except OSError:
                pass  # exited meanwhile
        os.rmdir(path)


def wait_sessions_ended(daemons: list[Sshd]) -> None:
    """Wait until no sshd has a session left (their CPU is counted then)."""
    deadline = time.monotonic() + SESSION_END_TIMEOUT
    while any(d.pid is not None and child_pids(d.pid) for d in daemons):
        if time.monotonic() > deadline:
            sys.stderr.write("warning: sessions still open; target CPU is partial\n")
            return
        time.sleep(0.1)


@dataclass
class Result:
    wall: float
    cpu: float
    target_cpu: float | None
    wire: int
    ok: bool
    #: Seconds between consecutive loop items' results.
    item_gaps: list[float]
    #: The largest resident set of ansible-playbook and every process it waited for
    #: (workers, the mux), in MiB.
    peak_rss_mib: float = 0.0
    #: CPU seconds of the mux (the last sample before it exited), None without one.
    mux_cpu: float | None = None


def item_gaps(log_path: str) -> list[float]:
    """Seconds between the loop item results ansible logged to `log_path`."""
    stamps = []
    with open(log_path, errors="replace") as fp:
        for line in fp:
            match = ITEM_LINE.match(line)
            if match:
                stamps.append(datetime.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f"))
    return [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]


def latency_summary(gaps: list[float]) -> str:
    """'items 99: median 22 ms, p90 30 ms, max 41 ms, 0 stalls'"""
    ordered = sorted(gaps)
    if not ordered:
        return "no items"
    return "items %d: median %.0f ms, p90 %.0f ms, max %.0f ms, %d stalls (> %.1f s)" % (
        len(ordered) + 1,
        ordered[len(ordered) // 2] * 1000,
        ordered[int(len(ordered) * 0.9)] * 1000,
        ordered[-1] * 1000,
        sum(1 for g in ordered if g > STALL_SECONDS),
        STALL_SECONDS,
    )


@dataclass
class Hosts:
    """Where the playbooks run: the inventory, the sshds, the veth to count."""

    inventory: str
    daemons: list[Sshd]
    veth: str | None
    forks: int
    target_cpu: TargetCpu | None
    #: Extra environment for ansible-playbook.
    env: dict[str, str] = field(default_factory=dict)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far, None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as fp:
            fields = fp.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def is_mux(pid: int) -> bool:
    """Is `pid` a Mitogen mux (python -m ansible_mitogen.mux)?"""
    return any("ansible_mitogen.mux" in arg for arg in proc_cmdline(pid))


def reap_control_masters(control_dir: str) -> float:
    """CPU seconds of the ssh ControlPersist masters stock Ansible left in
    `control_dir` (they detach, so ansible-playbook's rusage misses them);
    each is then told to exit."""
    cpu = 0.0
    prefix = "ssh: %s/" % control_dir
    for pid in filter(str.isdigit, os.listdir("/proc")):
        args = proc_cmdline(int(pid))
        if not args or not args[0].startswith(prefix):
            continue
        seconds = process_cpu_seconds(int(pid))
        if seconds is None:
            continue
        cpu += seconds
        path = args[0][len("ssh: ") :].split(" ")[0]
        subprocess.run(
            ["ssh", "-O", "exit", "-o", "ControlPath=" + path, "master"], capture_output=True
        )
    return cpu


def reap_muxes() -> None:
    """Wait for the on-demand muxes of the run that just ended: orphaned when the worker
    that started them exited, they are this subreaper's children, and exit as soon as
    their ansible-playbook has."""
    for pid in child_pids(os.getpid()):
        if is_mux(pid):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def playbook_env(kind: str, forks: int, workdir: str) -> dict[str, str]:
    """The environment every benchmark run of ansible-playbook gets (bytecode caches on):
    `kind` is one of RUN_KINDS or a strategy name."""
    strategy, extra_env = RUN_KINDS.get(kind, (kind, {}))
    env = dict(
        os.environ,
        ANSIBLE_STRATEGY=strategy,
        ANSIBLE_STRATEGY_PLUGINS=STRATEGY_DIR,
        ANSIBLE_PIPELINING="true",
        ANSIBLE_HOST_KEY_CHECKING="false",
        ANSIBLE_FORKS=str(forks),
        ANSIBLE_DEPRECATION_WARNINGS="false",
        ANSIBLE_LOCAL_TEMP=os.path.join(workdir, "local-tmp"),
        ANSIBLE_SSH_CONTROL_PATH_DIR=os.path.join(workdir, "cp"),
        ANSIBLE_LOG_PATH=os.path.join(workdir, "ansible.log"),
        PYTHONPATH=ROOT,
        **extra_env,
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


class MuxCpu(threading.Thread):
    """Samples the CPU time of the mux under ansible-playbook `pid` until the run ends
    (the mux is gone before anyone can ask the kernel for its total)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.seconds: float | None = None
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        mux = None
        while not self.done.wait(MUX_SAMPLE_SECONDS):
            if mux is None:
                mux = next((c for c in child_pids(self.pid) if is_mux(c)), None)
            seconds = None if mux is None else process_cpu_seconds(mux)
            if seconds is not None:
                self.seconds = seconds


def run(playbook: str, hosts: Hosts, kind: str, workdir: str) -> Result:
    """One ansible-playbook run as `kind` (RUN_KINDS, or a strategy name)."""
    control_dir = os.path.join(workdir, "cp")
    log_path = os.path.join(workdir, "ansible.log")
    if os.path.exists(log_path):
        os.unlink(log_path)
    env = {**playbook_env(kind, hosts.forks, workdir), **hosts.env}
    wait_sessions_ended(hosts.daemons)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    target_before = hosts.target_cpu.seconds() if hosts.target_cpu else None
    wire = wire_bytes(hosts.veth)
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            [os.path.join(VENV_BIN, "ansible-playbook"), "-i", hosts.inventory, playbook],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        mux_cpu = MuxCpu(proc.pid)
        # wait4 rather than wait: the rusage of ansible-playbook and all it waited for
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        mux_cpu.done.set()
        mux_cpu.join()
        out.seek(0)
        output = out.read()
    reap_muxes()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu += reap_control_masters(control_dir)
    wait_sessions_ended(hosts.daemons)
    target_after = hosts.target_cpu.seconds() if hosts.target_cpu else None
    if proc.returncode:
        sys.stderr.write(output[-6000:])
    return Result(
        wall,
        cpu,
        None if target_after is None or target_before is None else target_after - target_before,
        wire_bytes(hosts.veth) - wire,
        proc.returncode == 0,
        item_gaps(log_path) if os.path.exists(log_path) else [],
        usage.ru_maxrss / 1024,
        mux_cpu.seconds,
    )


def start_hosts(bed: Testbed, count: int | None, forks: int | None, workdir: str) -> Hosts:
    """The loopback sshds, or `count` namespace hosts, in an inventory."""
    if count is None:
        daemons = [bed.sshd] + [
            bed.start_sshd("127.0.0.%d" % i) for i in range(2, LOOPBACK_HOSTS + 1)
        ]
        veth = None
    else:
        fleet = bed.start_netns(count)
        daemons = [host.sshd for host in fleet]
        veth = fleet.root_veth
    inventory = os.path.join(workdir, "inventory.ini")
    write_inventory(bed, inventory, [(d.address, d.port) for d in daemons])
    return Hosts(inventory, daemons, veth, forks or len(daemons), TargetCpu(daemons))


def docker_hosts(dockerd: Dockerd, workdir: str) -> Hosts:
    """One container of `dockerd`, as host h1 of a stock docker connection."""
    if not os.path.isdir(CONTAINER_COLLECTIONS):
        sys.exit("%s not found: run scripts/setup-ansible.sh" % CONTAINER_COLLECTIONS)
    name = dockerd.run_container()
    inventory = os.path.join(workdir, "inventory.ini")
    with open(inventory, "w") as fp:
        fp.write(
            "h1 ansible_connection=community.docker.docker ansible_host=%s "
            "ansible_docker_extra_args='%s' ansible_python_interpreter=/usr/bin/python3\n"
            % (name, " ".join(dockerd.cli_args))
        )
    return Hosts(
        inventory, [], None, 1, None, env={"ANSIBLE_COLLECTIONS_PATH": CONTAINER_COLLECTIONS}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="run only workloads whose name contains this")
    parser.add_argument(
        "--hosts", type=int, help="run on this many network-namespace hosts (1-250)"
    )
    parser.add_argument("--forks", type=int, help="Ansible forks (default: one per host)")
    parser.add_argument(
        "--stall-items", type=int, help="only run one mitogen_linear loop of this many items"
    )
    parser.add_argument(
        "--docker", action="store_true", help="the command and loop workloads in a container"
    )
    parser.add_argument(
        "--load",
        action="store_true",
        help="only the load workload (%d tasks and %d with become on every host; use with --hosts)"
        % (FLEET_TASKS, LOAD_BECOME_TASKS),
    )
    parser.add_argument(
        "--mode",
        choices=("strategy", "connection"),
        default="strategy",
        help="connection: also run each workload with linear + connection mitogen_ssh",
    )
    args = parser.parse_args()
    kinds = ("linear", "mitogen_linear") + (("connection",) if args.mode == "connection" else ())
    if args.mode == "connection":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if args.docker:
        dockerd = Dockerd()
        try:
            with tempfile.TemporaryDirectory() as workdir:
                dockerd.start()
                compare(docker_hosts(dockerd, workdir), workdir, args.only, DOCKER_WORKLOADS)
        finally:
            dockerd.stop()
        return
    with Testbed() as bed, tempfile.TemporaryDirectory() as workdir:
        hosts = start_hosts(bed, args.hosts, args.forks, workdir)
        try:
            if args.stall_items:
                stall_check(hosts, workdir, args.stall_items)
            else:
                names = ("debug x100 (floor)", load_name(len(hosts.daemons))) if args.load else None
                compare(hosts, workdir, args.only, names, kinds)
        finally:
            if hosts.target_cpu:
                hosts.target_cpu.close()


def compare(
    hosts: Hosts,
    workdir: str,
    only: str | None,
    names: tuple[str, ...] | None = None,
    kinds: tuple[str, ...] = ("linear", "mitogen_linear"),
) -> None:
    """Run each workload (those named in `names` if given, those whose name contains
    `only`, and the floor) as each of `kinds` (RUN_KINDS) and print a line per run."""
    results: dict[tuple[str, str], Result] = {}
    print(
        "%-24s %-15s %8s %8s %9s %10s %9s %9s"
        % (
            "workload",
            "strategy",
            "wall s",
            "cpu s",
            "target s",
            "wire KB",
            "vs stock",
            "vs floor",
        )
    )
    floor: dict[str, float] = {}
    for name, text in workloads(workdir, len(hosts.daemons)).items():
        if only and only not in name and "floor" not in name:
            continue
        if names is not None and name not in names:
            continue
        playbook = os.path.join(workdir, "play.yml")
        with open(playbook, "w") as fp:
            fp.write(text)
        for strategy in kinds:
            result = run(playbook, hosts, strategy, workdir)
            results[name, strategy] = result
            if "floor" in name:
                floor[strategy] = result.wall
            stock = results[name, "linear"].wall
            print(
                "%-24s %-15s %8.2f %8.2f %9s %10.0f %8.2fx %8.2fx%s"
                % (
                    name,
                    strategy,
                    result.wall,
                    result.cpu,
                    "-" if result.target_cpu is None else "%.2f" % result.target_cpu,
                    result.wire / 1024,
                    stock / result.wall,
                    result.wall / floor.get(strategy, result.wall),
                    "" if result.ok else "  FAILED",
                ),
                flush=True,
            )
            if result.item_gaps:
                print("%-24s %-15s %s" % ("", "", latency_summary(result.item_gaps)))
            print(
                "%-24s %-15s peak controller RSS %.0f MiB%s"
                % (
                    "",
                    "",
                    result.peak_rss_mib,
                    "" if result.mux_cpu is None else ", mux CPU %.2f s" % result.mux_cpu,
                )
            )


def stall_check(hosts: Hosts, workdir: str, items: int) -> None:
    """One mitogen_linear loop of `items` items: its per-item latency."""
    playbook = os.path.join(workdir, "play.yml")
    with open(playbook, "w") as fp:
        fp.write(
            play(
                "h1",
                '    - command: echo {{ item }}\n      loop: "{{ range(%d) | list }}"\n' % items,
            )
        )
    result = run(playbook, hosts, "mitogen_linear", workdir)
    print(
        "loop x%d mitogen_linear %.2f s wall, %s%s"
        % (items, result.wall, latency_summary(result.item_gaps), "" if result.ok else "  FAILED")
    )


if __name__ == "__main__":
    main()
