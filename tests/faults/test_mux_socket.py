"""The mux's UNIX socket against another local account (the testbed's `plain`), while a
real Mitogen run is using it: the socket's directory is 0700, so the account cannot even
reach the socket; and when it can (CAP_DAC_OVERRIDE kept across setpriv's uid change,
standing for a directory whose mode went wrong), the mux reads its uid with SO_PEERCRED,
refuses it and logs it. The same client as the mux's own uid is admitted (the probe can
tell the two apart), and the run goes on as if nothing happened."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.ansible.harness import REPO, Harness
from tests.faults import faultlib
from tests.faults.test_controller import mux_of
from tests.faults.test_link import answer

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

PLAY = """- hosts: plain,sudo_nopw
  gather_facts: false
  become: "{{ inventory_hostname == 'sudo_nopw' }}"
  tasks:
    - name: warm
      command: echo warm
    - name: gate probe
      shell: "{{ gate_probe }}"
      when: inventory_hostname == 'plain'
    - name: after the probes
      command: echo served
"""

#: A client joining the listener at argv[1] with mitogen.unix.connect(), as a worker
#: does; prints what happened.
CLIENT = r"""
import sys
import mitogen.core, mitogen.unix
try:
    router, parent = mitogen.unix.connect(sys.argv[1], timeout=10)
except mitogen.core.Error as e:
    print("refused: %s" % (e,))
else:
    print("joined as context %d" % (mitogen.context_id,))
    router.broker.shutdown()
    router.broker.join()
"""


def listening_path(pid: int) -> str:
    """The path of the UNIX socket process `pid` listens on (from /proc/net/unix)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    with open("/proc/net/unix") as fp:
        for line in fp.readlines()[1:]:
            fields = line.split()
            # Num RefCount Protocol Flags Type St Inode Path; St 01 with __SO_ACCEPTCON
            if len(fields) == 8 and fields[6] in inodes and int(fields[3], 16) & 0x10000:
                return fields[7]
    raise AssertionError(f"process {pid} listens on no UNIX socket path")


def probe(path: str, account: Any | None, *, dac_override: bool = False) -> str:
    """Run CLIENT as `account` (None: as ourselves, the mux's uid)."""
    argv = [sys.executable, "-c", CLIENT, path]
    if account is not None:
        caps = ["--inh-caps=+dac_override", "--ambient-caps=+dac_override"]
        argv = [
            "setpriv",
            f"--reuid={account.uid}",
            f"--regid={account.gid}",
            "--clear-groups",
            *(caps if dac_override else []),
            "--",
            *argv,
        ]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=False,
    )
    return (done.stdout + done.stderr).strip()


def test_another_account_is_refused_by_the_mux(
    harness: Harness, gate: faultlib.Gate, playbook: Any
) -> None:
    account = harness.account("plain")
    strays = faultlib.Strays(harness)
    running = harness.start(
        playbook(PLAY), "mitogen_linear", extra_vars={"gate_probe": gate.task("probe")}
    )
    try:
        gate.wait_ready("probe")
        began = time.monotonic()
        path = listening_path(mux_of(running))
        directory = os.stat(os.path.dirname(path))
        blocked = probe(path, account)
        refused = probe(path, account, dac_override=True)
        admitted = probe(path, None)
        seconds = time.monotonic() - began
    finally:
        gate.release("probe")
        run = running.wait(120)
    left = strays.wait(5)
    strays.reap(left)
    logged = [
        line for line in (run.stdout + run.stderr).splitlines() if "refused connection" in line
    ]
    observed = (
        "refused"
        if "Permission denied" in blocked
        and refused.startswith("refused:")
        and admitted.startswith("joined")
        and len(logged) == 1
        else "admitted"
    )
    faultlib.record(
        "another local account connects to the mux socket",
        "mitogen_linear",
        "refused",
        observed,
        seconds,
        len(left),
    )
    assert (stat.S_IMODE(directory.st_mode), directory.st_uid) == (0o700, os.geteuid())
    assert "Permission denied" in blocked, blocked
    assert refused.startswith("refused:"), refused
    assert admitted.startswith("joined as context"), admitted
    assert len(logged) == 1, run.stderr
    assert f"uid {account.uid} is not allowed" in logged[0]
    for host in ("plain", "sudo_nopw"):
        assert answer(run.result(host, "after the probes")) == "OK", run.describe()
    assert not left, left
