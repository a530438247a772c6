"""Simulated remote hosts: network namespaces on a private bridge, each with an sshd.

Layout for one instance with subnet index K (10.77.K.0/24; K=0 for the first instance):

    root namespace                switch namespace            host namespaces
    mt<tag>r 10.77.K.254/32 <--> uplink -+- br0 -+- pN <--> eth0 10.77.K.N/24, sshd :22

Traffic safety: before any address is created, `prohibit 10.77.0.0/16` is routed in the
root namespace, so nothing meant for a test host can ever leave through the default
route; only 10.77.K.0/24 is routed, onto our own veth. Host namespaces have no default
route at all. `start()` verifies both facts with `ip route get` before any traffic.

Hosts share the filesystem (same accounts, keys and Pythons) but each sshd runs in a
private UTS namespace whose hostname (mitogen-hN) is also put in /etc/hosts.
"""

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from . import etcfiles
from .keys import Keys
from .proc import TestbedError, pid_alive, run, terminate_pid
from .sshd import Sshd

SUPERNET = "10.77.0.0/16"
HOSTS = Path("/etc/hosts")
NS_PREFIX = "mitogen-tb-"
_STALE_NS = re.compile(rf"^{NS_PREFIX}(\d+)x\d+-")
_STALE_LINK = re.compile(r"^mt(\d+)x\d+r$")


def _ip(*args: str, what: str) -> subprocess.CompletedProcess[str]:
    return run(["ip", *args], what=what)


def _ip_json(*args: str, what: str) -> list[dict[str, object]]:
    out = run(["ip", "-j", *args], what=what).stdout.strip()
    return json.loads(out) if out else []


class NetnsHost:
    """One namespace host; use its `sshd` (or the shortcuts here) to reach it."""

    def __init__(
        self,
        index: int,
        hostname: str,
        namespace: str,
        address: str,
        switch_ns: str,
        sshd: Sshd,
    ) -> None:
        self.index = index
        self.hostname = hostname
        self.namespace = namespace
        self.address = address
        self.switch_ns = switch_ns
        self.switch_port = f"p{index}"
        self.sshd = sshd

    def __repr__(self) -> str:
        return f"<NetnsHost {self.hostname} {self.address} ns={self.namespace}>"

    def ssh_args(
        self, *, strict: bool = True, batch: bool = True, connect_timeout: int = 10
    ) -> list[str]:
        """ssh client options (see Sshd.ssh_args); known_hosts has address and name."""
        return self.sshd.ssh_args(strict=strict, batch=batch, connect_timeout=connect_timeout)

    @property
    def known_hosts(self) -> Path:
        return self.sshd.known_hosts

    @property
    def port(self) -> int:
        return self.sshd.port

    def run(
        self,
        user: str,
        command: str,
        *,
        input: str | None = None,
        timeout: float = 30.0,
        check: bool = True,
        connect_timeout: int = 10,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command on this host over ssh as `user`."""
        return self.sshd.run(
            user,
            command,
            input=input,
            timeout=timeout,
            check=check,
            connect_timeout=connect_timeout,
        )

    def link_down(self) -> None:
        """Unplug the host from the switch: it stays up but becomes unreachable."""
        _ip(
            "-n",
            self.switch_ns,
            "link",
            "set",
            self.switch_port,
            "down",
            what=f"taking {self.hostname}'s link down",
        )

    def link_up(self) -> None:
        """Plug the host back in."""
        _ip(
            "-n",
            self.switch_ns,
            "link",
            "set",
            self.switch_port,
            "up",
            what=f"bringing {self.hostname}'s link up",
        )


class NetnsHosts:
    """`count` namespace hosts of one testbed instance; `tag` makes names unique."""

    def __init__(self, keys: Keys, *, tag: str, count: int = 3, subnet: int | None = None) -> None:
        if not 1 <= count <= 250:
            raise TestbedError(f"netns host count must be 1..250, not {count}")
        self.keys = keys
        self.tag = tag
        self.count = count
        self.root_veth = f"mt{tag}r"
        if len(self.root_veth) > 15:
            raise TestbedError(f"tag {tag!r} too long for an interface name")
        self.switch_ns = f"{NS_PREFIX}{tag}-sw"
        self._subnet_index = subnet
        self.hosts: list[NetnsHost] = []
        self._created: list[str] = []  # namespaces, in creation order
        self._root_link = False
        self._hosts_block = False

    def __iter__(self) -> Iterator[NetnsHost]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, index: int) -> NetnsHost:
        return self.hosts[index]

    @property
    def subnet(self) -> str:
        """This instance's host subnet, e.g. '10.77.0.0/24'."""
        return f"10.77.{self._k}.0/24"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the host subnet (source of our traffic)."""
        return f"10.77.{self._k}.254"

    @property
    def namespaces(self) -> list[str]:
        """Every namespace this instance created (switch and hosts)."""
        return list(self._created)

    @property
    def _k(self) -> int:
        if self._subnet_index is None:
            raise TestbedError("netns hosts not started")
        return self._subnet_index

    def _name(self, index: int) -> str:
        return f"mitogen-h{index}" if self._k == 0 else f"mitogen-n{self._k}-h{index}"

    def start(self) -> None:
        """Create switch, hosts and routes, verify routing, then start each host's sshd.

        On failure, everything created so far is removed before the error is raised.
        """
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        # The hard rule: the whole range is unroutable before any address exists.
        _ip(
            "route",
            "replace",
            "prohibit",
            SUPERNET,
            what=f"adding prohibit route {SUPERNET}",
        )
        if self._subnet_index is None:
            self._subnet_index = _free_subnet_index()
        self._add_ns(self.switch_ns)
        sw = self.switch_ns
        _ip(
            "-n",
            sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            what="creating the switch bridge",
        )
        _ip("-n", sw, "link", "set", "br0", "up", what="bringing the switch bridge up")
        _ip(
            "link",
            "add",
            self.root_veth,
            "type",
            "veth",
            "peer",
            "name",
            "uplink",
            "netns",
            sw,
            what="creating the root namespace's veth to the switch",
        )
        self._root_link = True
        _ip(
            "-n",
            sw,
            "link",
            "set",
            "uplink",
            "master",
            "br0",
            "up",
            what="plugging in uplink",
        )
        ipv6 = Path(f"/proc/sys/net/ipv6/conf/{self.root_veth}/disable_ipv6")
        if ipv6.exists():
            ipv6.write_text("1\n")
        _ip(
            "addr",
            "add",
            f"{self.gateway}/32",
            "dev",
            self.root_veth,
            what="addressing the root namespace's veth",
        )
        _ip("link", "set", self.root_veth, "up", what="bringing the root veth up")
        # `add`, not `replace`: never take over a subnet another instance routes.
        _ip(
            "route",
            "add",
            self.subnet,
            "dev",
            self.root_veth,
            "src",
            self.gateway,
            what=f"routing {self.subnet} to the test hosts",
        )
        for index in range(1, self.count + 1):
            self._add_host(index)
        self._verify_routing()
        etcfiles.add_block(HOSTS, self.tag, [f"{h.address} {h.hostname}" for h in self.hosts])
        self._hosts_block = True
        for host in self.hosts:
            host.sshd.start()

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name, what=f"creating network namespace {name}")
        self._created.append(name)
        _ip("-n", name, "link", "set", "lo", "up", what=f"bringing lo up in {name}")

    def _add_host(self, index: int) -> None:
        ns = f"{NS_PREFIX}{self.tag}-h{index}"
        address = f"10.77.{self._k}.{index}"
        hostname = self._name(index)
        self._add_ns(ns)
        _ip(
            "-n",
            ns,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            f"p{index}",
            "netns",
            self.switch_ns,
            what=f"creating {hostname}'s veth",
        )
        _ip(
            "-n",
            self.switch_ns,
            "link",
            "set",
            f"p{index}",
            "master",
            "br0",
            "up",
            what=f"plugging {hostname} into the switch",
        )
        _ip(
            "-n",
            ns,
            "addr",
            "add",
            f"{address}/24",
            "dev",
            "eth0",
            what=f"addressing {hostname}",
        )
        _ip("-n", ns, "link", "set", "eth0", "up", what=f"bringing {hostname}'s eth0 up")
        sshd = Sshd(
            self.keys,
            f"{self.tag}-h{index}",
            address=address,
            port=22,
            netns=ns,
            hostname=hostname,
            aliases=[hostname],
        )
        self.hosts.append(NetnsHost(index, hostname, ns, address, self.switch_ns, sshd))

    def _verify_routing(self) -> None:
        """Check in the root namespace that host traffic goes only onto our veth."""
        prohibits = _ip_json(
            "route",
            "show",
            "type",
            "prohibit",
            SUPERNET,
            what="listing prohibit routes",
        )
        if not prohibits:
            raise TestbedError(f"prohibit route for {SUPERNET} is missing")
        for host in self.hosts:
            routes = _ip_json("route", "get", host.address, what=f"route lookup for {host}")
            dev = routes[0].get("dev") if routes else None
            if dev != self.root_veth:
                raise TestbedError(
                    f"{host.address} would be routed via {dev!r}, not {self.root_veth}: {routes}"
                )
        outside = "10.77.255.1"
        probe = run(["ip", "route", "get", outside], what="route lookup", check=False)
        if probe.returncode == 0:
            raise TestbedError(f"{outside} is routable ({probe.stdout.strip()}); expected prohibit")

    def stop(self) -> None:
        """Stop sshds and processes in our namespaces; delete links, namespaces, routes.

        Every step runs even if an earlier one fails; one error lists all failures.
        """
        errors: list[str] = []

        def attempt(what: str, func: Callable[[], object]) -> None:
            try:
                func()
            except (OSError, TestbedError) as exc:
                errors.append(f"{what}: {exc}")

        for host in self.hosts:
            attempt(f"stopping sshd on {host.hostname}", host.sshd.stop)
        for ns in reversed(self._created):
            attempt(f"stopping processes in {ns}", partial(_kill_ns_processes, ns))
        if self._hosts_block:
            attempt(
                "removing /etc/hosts entries",
                lambda: etcfiles.remove_block(HOSTS, self.tag),
            )
            self._hosts_block = False
        if self._root_link:
            attempt("deleting root veth", lambda: _delete_link(self.root_veth))
            self._root_link = False
        for ns in reversed(self._created):
            what = f"deleting namespace {ns}"
            attempt(what, partial(_ip, "netns", "delete", ns, what=what))
        self._created.clear()
        self.hosts.clear()
        attempt("removing prohibit route", remove_prohibit_route_if_unused)
        if errors:
            raise TestbedError("netns teardown failed:\n" + "\n".join(errors))


def _delete_link(name: str) -> None:
    """Delete a link in the root namespace if it exists (its veth peer goes with it)."""
    links = _ip_json("link", "show", what="listing links")
    if any(link.get("ifname") == name for link in links):
        _ip("link", "delete", name, what=f"deleting link {name}")


def _kill_ns_processes(ns: str) -> None:
    """Stop processes left inside a namespace we created (started through our sshd)."""
    out = run(["ip", "netns", "pids", ns], what=f"listing processes in {ns}", check=False)
    for pid in (int(p) for p in out.stdout.split()):
        terminate_pid(pid)


def _free_subnet_index() -> int:
    """The lowest K such that nothing in the root namespace routes 10.77.K.0/24."""
    used = set()
    for route in _ip_json("-4", "route", "show", "table", "all", what="listing routes"):
        dst = str(route.get("dst", ""))
        if dst.startswith("10.77.") and dst != SUPERNET:
            used.add(int(dst.split(".")[2]))
    for k in range(255):
        if k not in used:
            return k
    raise TestbedError("no free 10.77.K.0/24 subnet left")


def remove_prohibit_route_if_unused() -> None:
    """Delete the 10.77.0.0/16 prohibit route unless a 10.77.K.0/24 is still routed."""
    routes = _ip_json("-4", "route", "show", what="listing routes")
    others = [
        r for r in routes if str(r.get("dst", "")).startswith("10.77.") and r.get("dst") != SUPERNET
    ]
    has_prohibit = any(r.get("dst") == SUPERNET and r.get("type") == "prohibit" for r in routes)
    if has_prohibit and not others:
        _ip(
            "route",
            "delete",
            "prohibit",
            SUPERNET,
            what=f"deleting prohibit route {SUPERNET}",
        )


def reap_stale() -> None:
    """Remove namespaces, links and /etc/hosts entries left by crashed testbed runs."""
    for entry in _ip_json("netns", "list", what="listing namespaces"):
        name = str(entry.get("name", ""))
        match = _STALE_NS.match(name)
        if match and not pid_alive(int(match[1])):
            _kill_ns_processes(name)
            _ip("netns", "delete", name, what=f"deleting stale namespace {name}")
    for link in _ip_json("link", "show", what="listing links"):
        name = str(link.get("ifname", ""))
        match = _STALE_LINK.match(name)
        if match and not pid_alive(int(match[1])):
            _ip("link", "delete", name, what=f"deleting stale link {name}")
    etcfiles.remove_stale_blocks(HOSTS)
    remove_prohibit_route_if_unused()
