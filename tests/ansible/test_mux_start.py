"""The strategy's mux starts off the play's critical path (process.MuxProcess): start()
returns before the mux listens, and a process forked from the starter (as Ansible's
workers are) that needs the mux waits for it, or fails clearly when it died or never
listened. Connecting makes a process a child of the mux (mitogen.unix.connect), so the
connections are made in forks, never in the test process."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

import ansible_mitogen.process
import mitogen
import mitogen.unix
from ansible_mitogen.process import MuxError, MuxProcess

REAL_MUX_COMMAND = ansible_mitogen.process.mux_command


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "mux.sock")
    MuxProcess.stop()
    assert ansible_mitogen.process.ENV_PATH not in os.environ
    assert mitogen.is_master, "the test process joined the mux's tree"


def in_worker(function: Callable[[], object]) -> str:
    """What `function()` returned (as text) or raised ("TypeName: message"), run in a
    fork of this process, as a worker of ansible-playbook runs."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            try:
                text = str(function())
            except Exception as e:
                text = f"{type(e).__name__}: {e}"
            os.write(write_fd, text.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fp:
        text = fp.read().decode()
    os.waitpid(pid, 0)
    return text


def peer_of_the_mux(socket_path: str) -> int:
    """In a worker: connect as Ansible's workers do, then the pid serving the socket."""
    ansible_mitogen.process.get_router()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        sock.connect(socket_path)
        return int(mitogen.unix.get_peer_creds(sock)[0])


def mux_running(code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make MuxProcess run `code` (Python source) instead of the mux."""

    def command(settings: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        argv, env = REAL_MUX_COMMAND(settings)
        return [sys.executable, "-c", code], env

    monkeypatch.setattr(ansible_mitogen.process, "mux_command", command)


def test_start_returns_before_the_mux_listens_and_get_router_waits(
    socket_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    # the real mux, once something opens the gate for writing
    mux_running(
        f"import runpy; open({str(gate)!r}).close(); "
        "runpy.run_module('ansible_mitogen.mux', run_name='__main__')",
        monkeypatch,
    )
    assert MuxProcess.start(socket_path) == socket_path
    assert os.environ[ansible_mitogen.process.ENV_PATH] == socket_path
    assert not os.path.exists(socket_path), "start() waited for the mux"
    with pytest.raises(MuxError, match="did not listen within 0 seconds"):
        MuxProcess.wait_ready(timeout=0.2)
    fd = os.open(gate, os.O_WRONLY)
    os.close(fd)
    assert in_worker(lambda: peer_of_the_mux(socket_path)) == str(MuxProcess.pid())


def test_a_mux_that_dies_before_listening_fails_the_connect(
    socket_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mux_running("raise SystemExit(3)", monkeypatch)
    MuxProcess.start(socket_path)
    said = in_worker(ansible_mitogen.process.get_router)
    assert said.startswith("MuxError: the Mitogen mux has exited or was killed"), said


def test_a_mux_that_never_listens_fails_the_wait(
    socket_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mux_running("import sys; sys.stdin.read()", monkeypatch)  # exits when stop() closes stdin
    MuxProcess.start(socket_path)
    with pytest.raises(MuxError, match="did not listen within 1 seconds"):
        MuxProcess.wait_ready(timeout=1)
