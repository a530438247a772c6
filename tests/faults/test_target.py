"""Faults on the target, stock and Mitogen side by side: the destination filesystem full
during a copy and during module runs (a small tmpfs, mounted by the test and unmounted
in teardown), 100 MB of stdout, a module printing non-UTF-8 bytes, a module that never
exits (`timeout:` on the task), and a module whose children outlive it (they do, as with
stock: a decision, see docs/reliability.rst)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.harness import Harness, PlaybookRun
from tests.faults import faultlib
from tests.faults.test_link import STRATEGIES, answer

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

#: Size of each tmpfs: a copy of `BIG` bytes does not fit.
TMPFS_SIZE = "1m"
BIG = 4 << 20


@pytest.fixture
def small_disks(harness: Harness, tmp_path: Path) -> Iterator[dict[str, Path]]:
    """One mounted 1 MB tmpfs per strategy, owned by the `plain` account."""
    account = harness.account("plain")
    mounted: dict[str, Path] = {}
    base = Path(tempfile.mkdtemp(prefix="faults-disk-"))
    os.chmod(base, 0o755)
    try:
        for strategy in STRATEGIES:
            point = base / strategy
            point.mkdir()
            subprocess.run(
                [
                    "mount",
                    "-t",
                    "tmpfs",
                    "-o",
                    f"size={TMPFS_SIZE},mode=0755,uid={account.uid},gid={account.gid}",
                    "faults-tmpfs",
                    str(point),
                ],
                check=True,
            )
            mounted[strategy] = point
        yield mounted
    finally:
        for point in mounted.values():
            subprocess.run(["umount", str(point)], check=True)
        shutil.rmtree(base)


DISK_FULL = """- hosts: plain
  gather_facts: false
  tasks:
    - name: copy bigger than the disk
      copy:
        src: "{{ big }}"
        dest: "{{ disk }}/big"
      ignore_errors: true
    - name: what the failed copy left
      command: ls -A {{ disk }}
    - name: a small copy after it
      copy:
        content: small
        dest: "{{ disk }}/small"
    - name: fill the disk
      shell: "cat /dev/zero > {{ disk }}/fill"
      ignore_errors: true
    - name: a module with remote_tmp on the full disk
      command: echo ran
      vars:
        ansible_remote_tmp: "{{ disk }}/tmp"
      ignore_errors: true
      ignore_unreachable: true
    - name: free the disk
      file:
        path: "{{ disk }}/fill"
        state: absent
    - name: a module after the disk was freed
      command: echo fine
      vars:
        ansible_remote_tmp: "{{ disk }}/tmp"
"""


def run_both(
    harness: Harness, path: Path, per_strategy: dict[str, dict[str, Any]], timeout: float = 180
) -> dict[str, PlaybookRun]:
    runs = {s: harness.start(path, s, extra_vars=per_strategy.get(s, {})) for s in STRATEGIES}
    return {s: r.wait(timeout) for s, r in runs.items()}


def test_disk_full(
    harness: Harness, playbook: Any, small_disks: dict[str, Path], tmp_path: Path
) -> None:
    big = tmp_path / "big"
    big.write_bytes(os.urandom(BIG))
    strays = faultlib.Strays(harness)
    began = time.monotonic()
    runs = run_both(
        harness,
        playbook(DISK_FULL),
        {s: {"big": str(big), "disk": str(d)} for s, d in small_disks.items()},
    )
    seconds = time.monotonic() - began
    left = strays.wait(5)
    strays.reap(left)
    stock = runs["linear"]
    problems = []
    for strategy, run in runs.items():
        copy = run.result("plain", "copy bigger than the disk")
        observed = answer(copy)
        if "No space left on device" in copy.get("msg", "") + copy.get("module_stderr", ""):
            observed += " (ENOSPC)"
        faultlib.record(
            "disk full during copy",
            strategy,
            "FAILED (ENOSPC)",
            observed,
            seconds,
            len(left) if strategy != "linear" else None,
        )
        if observed != "FAILED (ENOSPC)":
            problems.append(f"{strategy}: copy answered {observed}: {copy}")
        partial = run.result("plain", "what the failed copy left")["stdout"]
        if partial:
            problems.append(f"{strategy}: the failed copy left {partial!r}")
        if run.result("plain", "a small copy after it")["failed"]:
            problems.append(f"{strategy}: the next copy failed")
        module = run.result("plain", "a module with remote_tmp on the full disk")
        expected = answer(stock.result("plain", "a module with remote_tmp on the full disk"))
        faultlib.record(
            "disk full (remote_tmp) during a module run",
            strategy,
            # Mitogen needs no remote_tmp for a `command` task: it may just run.
            expected if strategy == "linear" else f"{expected}|OK",
            answer(module),
            seconds,
            len(left) if strategy != "linear" else None,
        )
        if answer(module) not in (expected, "OK"):
            problems.append(f"{strategy}: module on a full disk: {module}")
        after = run.result("plain", "a module after the disk was freed")
        if after.get("stdout") != "fine":
            problems.append(f"{strategy}: after the disk was freed: {after}")
    assert not problems, "\n".join(problems)
    assert not left, left


OUTPUTS = """- hosts: plain,sudo_nopw
  gather_facts: false
  become: "{{ inventory_hostname == 'sudo_nopw' }}"
  tasks:
    - name: non-UTF-8 stdout
      shell: printf 'a\\377b\\300\\n\\376'
      ignore_errors: true
    - name: a module printing non-UTF-8 bytes
      bad_bytes:
      ignore_errors: true
    - name: a module that never exits
      command: sleep 3600
      timeout: 3
      ignore_errors: true
    - name: after the timeout
      command: echo fine
    - name: after the children
      command: echo fine
"""

BAD_BYTES = """#!/usr/bin/python
import sys
sys.stdout.buffer.write(b'{"changed": false, "msg": "bad \\xff\\xfe bytes"}')
"""


def leftover(marker: str) -> list[int]:
    return [pid for pid, (_u, cmd) in faultlib.processes().items() if cmd.strip() == marker]


def test_module_outputs(harness: Harness, playbook: Any, tmp_path: Path) -> None:
    (tmp_path / "library").mkdir()
    (tmp_path / "library" / "bad_bytes.py").write_text(BAD_BYTES)
    path = playbook(OUTPUTS)
    # One run after the other: what each leaves behind is counted on its own.
    runs, never, left = {}, {}, {}
    for strategy in STRATEGIES:
        strays = faultlib.Strays(harness)
        runs[strategy] = harness.run(path, strategy)
        time.sleep(1)
        never[strategy] = leftover("sleep 3600")
        left[strategy] = strays.wait(3)
        strays.reap(left[strategy])
    stock, ours = runs["linear"], runs["mitogen_linear"]
    problems = []
    for host in ("plain", "sudo_nopw"):
        for task in ("non-UTF-8 stdout", "a module printing non-UTF-8 bytes"):
            a, b = stock.result(host, task), ours.result(host, task)
            fields = ("failed", "unreachable", "stdout", "msg", "raw")
            same = all(a.get(k) == b.get(k) for k in fields)
            faultlib.record(
                f"{task} ({host})",
                "mitogen_linear",
                answer(a) + " as stock",
                answer(b) + (" as stock" if same else " differs"),
                ours.seconds,
                None,
            )
            if not same:
                problems.append(f"{host} {task}: stock {a}\nours {b}")
        for strategy, run in runs.items():
            timed = run.result(host, "a module that never exits")
            faultlib.record(
                f"module never exits, timeout: 3 ({host})",
                strategy,
                "FAILED",
                answer(timed),
                run.seconds,
                None,
            )
            if not timed["failed"] or "timed out" not in timed.get("msg", "").lower():
                problems.append(f"{strategy} {host}: timeout gave {timed}")
            for task in ("after the timeout",):
                if run.result(host, task).get("stdout") != "fine":
                    problems.append(f"{strategy} {host}: {task}: {run.result(host, task)}")
    for strategy, run in runs.items():
        faultlib.record(
            "module never exits (timeout: 3): its process",
            strategy,
            "0 left",
            "%d left" % len(never[strategy]),
            run.seconds,
            len(left[strategy]),
        )
    assert not problems, "\n".join(problems)
    assert not never["mitogen_linear"], "the module that never exits is still running"
    assert not left["mitogen_linear"], left


CHILDREN = """- hosts: plain,sudo_nopw
  gather_facts: false
  become: "{{ inventory_hostname == 'sudo_nopw' }}"
  tasks:
    - name: a module whose children outlive it
      shell: "sleep 3599 >/dev/null 2>&1 & echo forked"
    - name: after the children
      command: echo fine
"""


#: Ways to run CHILDREN: label -> (strategy, environment).
CHILDREN_RUNS = {
    "linear": ("linear", {}),
    "linear, pipelining": ("linear", {"ANSIBLE_PIPELINING": "True"}),
    "mitogen_linear": ("mitogen_linear", {}),
}


def test_module_children_outlive_it_as_with_stock(harness: Harness, playbook: Any) -> None:
    """Decided (docs/reliability.rst, "Decisions"): what a module starts in the
    background and leaves running is the user's, as with stock, where `nohup daemon &` in
    a `shell:` task is how services get started. Mitogen runs modules without a terminal,
    as stock does with pipelining, and leaves the same children as that; Mitogen leaves
    nothing else. (Stock without pipelining runs each module under `ssh -tt`, whose
    hang-up at the end can kill them: that row is informative.) The test stops the
    children after each run."""
    path = playbook(CHILDREN)
    hosts = {harness.account("plain").uid: "plain", 0: "sudo_nopw"}
    survivors, left, runs = {}, {}, {}
    for label, (strategy, env) in CHILDREN_RUNS.items():
        strays = faultlib.Strays(harness)
        runs[label] = harness.run(path, strategy, env=env)
        time.sleep(1)
        forked = leftover("sleep 3599")
        survivors[label] = sorted(hosts.get(os.stat("/proc/%d" % p).st_uid, "?") for p in forked)
        found = strays.wait(3)
        strays.reap(found)
        left[label] = {p: c for p, c in found.items() if p not in forked}
    expected = survivors["linear, pipelining"]
    for label, run in runs.items():
        faultlib.record(
            "module forks children and exits: children left",
            label,
            # stock's default (ssh -tt) is shown, not judged
            " ".join(survivors[label] if label == "linear" else expected) or "none",
            " ".join(survivors[label]) or "none",
            run.seconds,
            len(left[label]) if label == "mitogen_linear" else None,
        )
        for host in ("plain", "sudo_nopw"):
            assert run.result(host, "after the children")["stdout"] == "fine", run.describe()
    assert survivors["mitogen_linear"] == expected, survivors
    assert expected, "stock with pipelining left no children: the test shows nothing"
    assert not left["mitogen_linear"], left


@pytest.mark.slow
def test_100mb_stdout(harness: Harness, playbook: Any) -> None:
    path = playbook(
        """- hosts: plain
  gather_facts: false
  tasks:
    - name: 100 MB of stdout
      shell: head -c 100000000 /dev/zero | tr '\\0' x
"""
    )
    strays = faultlib.Strays(harness)
    began = time.monotonic()
    run = harness.run(path, "mitogen_linear", timeout=240)
    seconds = time.monotonic() - began
    left = strays.wait(5)
    strays.reap(left)
    result = run.result("plain", "100 MB of stdout")
    size = len(result.get("stdout", ""))
    faultlib.record(
        "100 MB of stdout",
        "mitogen_linear",
        "OK, 100000000 bytes",
        f"{answer(result)}, {size} bytes",
        seconds,
        len(left),
    )
    assert (answer(result), size) == ("OK", 100_000_000), run.describe()
    assert not left, left
