"""Container runtimes for the tests: a Debian rootfs built once with
debootstrap, a private dockerd, private podman storage and LXC containers.

Everything cached lives under CACHE_DIR (/var/tmp/mitogen-containers, or
$MITOGEN_CONTAINERS_DIR): the rootfs tree (also used as a chroot), docker's
data root with the imported image, and podman's storage. What runs per
session (the dockerd, its sockets and exec root, podman's run root) lives in
a temporary directory removed at stop. Only the daemon and the containers
made here are ever stopped or removed. A missing runtime is an error
naming the package to install, never a skip.
"""

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .proc import TestbedError, pid_alive, proc_cmdline, proc_exe, run, terminate_child

CACHE_DIR = Path(os.environ.get("MITOGEN_CONTAINERS_DIR", "/var/tmp/mitogen-containers"))
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
IMAGE = "local/mitogen-bookworm:1"
NO_PYTHON_IMAGE = "local/mitogen-no-python:1"
#: A user created in every test container.
CONTAINER_USER = "mitogen-app"
#: Podman's run root and temporary directory: fixed paths (its database
#: records them), on a tmpfs so a reboot clears them as podman expects.
PODMAN_RUN = Path("/run/mitogen-containers/podman")
PODMAN_FLAGS = [
    "--cgroup-manager=cgroupfs",
    "--events-backend=file",
    "--runtime",
    "runc",
]
PODMAN_RUN_FLAGS = [
    "--network",
    "none",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
]


def require(program: str, package: str) -> str:
    """The path of `program`, or an error naming the Debian package."""
    path = shutil.which(program)
    if path is None:
        raise TestbedError(
            f"{program} not found: install {package} (scripts/setup-system.sh does, as root)"
        )
    return path


@contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / name, "w") as fp:
        fcntl.flock(fp, fcntl.LOCK_EX)
        yield


def debian_rootfs() -> Path:
    """A bookworm minbase tree with python3, built once (about a minute)."""
    root = CACHE_DIR / "rootfs"
    with _locked("rootfs.lock"):
        if not (root / "usr" / "bin" / "python3").exists():
            require("debootstrap", "debootstrap")
            tmp = CACHE_DIR / "rootfs.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            run(
                ["debootstrap", "--variant=minbase", "--include=python3", "bookworm", str(tmp)]
                + [DEBIAN_MIRROR],
                what="building the container rootfs with debootstrap",
                timeout=900,
            )
            for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (tmp / sub).glob("*.deb" if "archives" in sub else "*"):
                    if entry.is_file():
                        entry.unlink()
            tmp.rename(root)
        if not (root / "etc" / "mitogen-user").exists():
            run(
                ["chroot", str(root), "useradd", "-m", "-u", "4321", CONTAINER_USER],
                what="adding the container test user",
            )
            (root / "etc" / "mitogen-user").write_text(CONTAINER_USER + "\n")
    return root


def import_tree(cli: list[str], tree: Path, image: str) -> None:
    """`tar -C TREE -c . | CLI import - IMAGE`, streamed."""
    tar = subprocess.Popen(["tar", "-C", str(tree), "-c", "."], stdout=subprocess.PIPE)
    try:
        done = subprocess.run(cli + ["import", "-", image], stdin=tar.stdout, capture_output=True)
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
    if done.returncode or tar.returncode:
        raise TestbedError(
            "importing %s as %s failed: %s" % (tree, image, done.stderr.decode(errors="replace"))
        )


def new_name(prefix: str) -> str:
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


class Dockerd:
    """A private dockerd: own socket, exec root and pidfile in a temporary
    directory, data root (with the images) cached in CACHE_DIR."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.tmp: Path | None = None
        self.containers: list[str] = []
        self.data_root = CACHE_DIR / "docker"
        self.pidfile = CACHE_DIR / "dockerd.pid"
        self._lock: int | None = None

    @property
    def socket(self) -> str:
        assert self.tmp is not None
        return "unix://%s/docker.sock" % (self.tmp,)

    @property
    def cli_args(self) -> list[str]:
        """Global docker CLI flags reaching this daemon."""
        return ["-H", self.socket]

    def docker(self, *args: str, check: bool = True, timeout: float = 60.0, what: str = "docker"):
        return run(["docker"] + self.cli_args + list(args), what=what, check=check, timeout=timeout)

    def start(self) -> None:
        require("dockerd", "docker.io")
        require("docker", "docker.io")
        rootfs = debian_rootfs()
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(CACHE_DIR / "dockerd.lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._stop_stale()
        self.tmp = Path(tempfile.mkdtemp(prefix="mct-", dir="/tmp"))
        log = open(self.tmp / "dockerd.log", "wb")
        # fmt: off
        argv = [
            "dockerd", "-H", self.socket, "--data-root", str(self.data_root),
            "--exec-root", str(self.tmp / "exec"), "--pidfile", str(self.pidfile),
            "--storage-driver", "overlay2", "--iptables=false", "--ip6tables=false",
            "--ip-forward=false", "--ip-masq=false", "--bridge=none", "--userland-proxy=false",
        ]
        # fmt: on
        with log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
        deadline = time.monotonic() + 30
        while self.docker("version", check=False, what="waiting for dockerd").returncode:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = (self.tmp / "dockerd.log").read_text(errors="replace")[-3000:]
                raise TestbedError("dockerd did not start:\n" + text)
            time.sleep(0.05)
        if self.docker("image", "inspect", IMAGE, check=False, what="image").returncode:
            import_tree(["docker"] + self.cli_args, rootfs, IMAGE)
        if self.docker("image", "inspect", NO_PYTHON_IMAGE, check=False, what="x").returncode:
            src = self.tmp / "nopython"
            src.mkdir()
            (src / "README").write_text("an image without any interpreter\n")
            import_tree(["docker"] + self.cli_args, src, NO_PYTHON_IMAGE)

    def _stop_stale(self) -> None:
        """Stop a dockerd of ours left by a run that was killed outright
        (we hold the lock, so no live run owns it)."""
        try:
            pid = int(self.pidfile.read_text())
        except (OSError, ValueError):
            return
        exe = proc_exe(pid) or ""
        if exe.endswith("/dockerd") and str(self.pidfile) in proc_cmdline(pid):
            os.kill(pid, 15)
            deadline = time.monotonic() + 30
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        self.pidfile.unlink(missing_ok=True)

    def run_container(self, image: str = IMAGE, command: tuple[str, ...] = ()) -> str:
        """Start a detached container (no network) and return its name."""
        name = new_name("mitogen-test")
        self.containers.append(name)
        self.docker(
            "run", "-d", "--network", "none", "--name", name, image,
            *(command or ("sleep", "infinity")),
            what="starting a test container",
        )  # fmt: skip
        return name

    def remove(self, name: str) -> None:
        self.docker("rm", "-f", name, check=False, what="removing a test container")
        if name in self.containers:
            self.containers.remove(name)

    def stop(self) -> None:
        for name in list(self.containers):
            self.remove(name)
        if self.proc is not None:
            # The daemon and its data root are private: any container left
            # (by a failed test) is ours, and must not persist in the cache.
            left = self.docker("ps", "-aq", check=False, what="listing containers").stdout.split()
            if left:
                self.docker("rm", "-f", *left, check=False, what="removing leftover containers")
            terminate_child(self.proc, timeout=20)
            self.proc = None
        if self.tmp is not None:
            mounts = [
                m for m in Path("/proc/mounts").read_text().splitlines() if str(self.tmp) in m
            ]
            if mounts:
                raise TestbedError("left mounted after dockerd stopped:\n" + "\n".join(mounts))
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


class Podman:
    """Podman with private storage (cached) and run root (under /run)."""

    def __init__(self) -> None:
        self.containers: list[str] = []

    @property
    def cli_args(self) -> list[str]:
        # fmt: off
        return PODMAN_FLAGS + [
            "--root", str(CACHE_DIR / "podman"), "--runroot", str(PODMAN_RUN / "run"),
            "--tmpdir", str(PODMAN_RUN / "libpod"),
        ]
        # fmt: on

    def podman(self, *args: str, check: bool = True, what: str = "podman", timeout: float = 60.0):
        return run(["podman"] + self.cli_args + list(args), what=what, check=check, timeout=timeout)

    def start(self) -> None:
        require("podman", "podman")
        rootfs = debian_rootfs()
        if self.podman("image", "exists", IMAGE, check=False).returncode:
            import_tree(["podman"] + self.cli_args, rootfs, IMAGE)

    def run_container(self) -> str:
        name = new_name("mitogen-test")
        self.containers.append(name)
        self.podman(
            "run", "-d", *PODMAN_RUN_FLAGS, "--name", name, IMAGE, "sleep", "infinity",
            what="starting a podman test container",
        )  # fmt: skip
        return name

    def remove(self, name: str) -> None:
        self.podman("rm", "-f", "-t", "0", name, check=False, what="removing a podman container")
        if name in self.containers:
            self.containers.remove(name)

    def stop(self) -> None:
        for name in list(self.containers):
            self.remove(name)
        if self.podman("ps", "-aq", check=False).stdout.strip():
            raise TestbedError("podman containers left: " + self.podman("ps", "-a").stdout)


class Lxc:
    """LXC containers in a private lxcpath (a temporary directory), each
    with the cached rootfs and `sleep infinity` as init, no network."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.containers: list[str] = []

    @property
    def cli_args(self) -> list[str]:
        return ["-P", str(self.path)]

    def start(self) -> None:
        require("lxc-start", "lxc")
        self.rootfs = debian_rootfs()
        self.path = Path(tempfile.mkdtemp(prefix="mlxc-", dir="/tmp"))

    def run_container(self) -> str:
        assert self.path is not None
        name = new_name("mitogen-test")
        (self.path / name).mkdir()
        (self.path / name / "config").write_text(
            "lxc.uts.name = %s\n"
            "lxc.rootfs.path = dir:%s\n"
            "lxc.net.0.type = empty\n"
            "lxc.include = /usr/share/lxc/config/common.conf\n"
            "lxc.apparmor.profile = unconfined\n"
            "lxc.init.cmd = /bin/sleep infinity\n" % (name, self.rootfs)
        )
        self.containers.append(name)
        run(["lxc-start", *self.cli_args, "-n", name, "-d"], what="starting an LXC container")
        run(
            ["lxc-wait", *self.cli_args, "-n", name, "-s", "RUNNING", "-t", "10"],
            what="waiting for an LXC container",
        )
        return name

    def remove(self, name: str) -> None:
        run(["lxc-stop", *self.cli_args, "-n", name, "-k"], what="stopping LXC", check=False)
        if name in self.containers:
            self.containers.remove(name)

    def stop(self) -> None:
        for name in list(self.containers):
            self.remove(name)
        if self.path is not None:
            mounts = [
                m for m in Path("/proc/mounts").read_text().splitlines() if "mitogen-test" in m
            ]
            if mounts:
                raise TestbedError("LXC left mounts:\n" + "\n".join(mounts))
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
