"""`mitogen_via` and delegation (issue 12): hosts reached through a bastion give stock's
results, really go through the bastion's contexts (one for every host behind it),
unfollowable settings and a dead bastion are reported naming the hosts, and tasks
delegated to localhost from many hosts run at the same time.

The inventory is the harness's plus bastions on the testbed's sshd: `bastion` (the
sudo_nopw account, no become: ssh -> ssh) and `root_bastion` (the same account becoming
root: ssh -> sudo -> ssh). An ssh hop started through a bastion runs ssh there, as the
bastion's user, so the hosts behind it use copies of the client key and known_hosts that
the bastion account can read. Stock Ansible ignores `mitogen_via` and reaches those hosts
directly: the results must be the same.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ansible import served
from tests.ansible.harness import PLAYBOOKS, Harness
from tests.ansible.test_standalone import assert_mux_gone, assert_same, standalone_env
from tests.testbed import Testbed
from tests.testbed.sshd import free_port

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]

VIA = PLAYBOOKS / "via"
#: Hosts delegating to localhost at once, with as many forks.
MANY = 10


@pytest.fixture(scope="module")
def bastion_files(testbed: Testbed) -> Iterator[Path]:
    """A directory only the bastion account (and root) can read, holding copies of the
    client key and the sshd's known_hosts (outside pytest's 0700 temporary root)."""
    account = testbed.accounts["sudo_nopw"]
    directory = Path(tempfile.mkdtemp(prefix="mitogen-bastion-"))
    for name, source in (
        ("id_ed25519", testbed.keys.client_key),
        ("known_hosts", testbed.sshd.known_hosts),
    ):
        shutil.copyfile(source, directory / name)
        os.chmod(directory / name, 0o600)
        os.chown(directory / name, account.uid, account.gid)
    os.chmod(directory, 0o700)
    os.chown(directory, account.uid, account.gid)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def write_inventory(
    harness: Harness,
    bastion_files: Path,
    path: Path,
    via: dict[str, str],
    extra_hosts: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """The harness's inventory plus the bastions, with `via` (host -> mitogen_via) set
    and the hosts behind a bastion using the files it can read."""
    inventory = json.loads(harness.inventory_path.read_text())
    groups = inventory["all"]["children"]
    common = groups["testbed"]["vars"]
    sshd = harness.testbed.sshd
    bastion_user = harness.account("sudo_nopw").name
    groups["bastions"] = {
        "hosts": {
            "bastion": {"ansible_user": bastion_user},
            "root_bastion": {"ansible_user": bastion_user, "ansible_become": True},
            "dead_bastion": {"ansible_user": bastion_user, "ansible_port": free_port(sshd.address)},
            **(extra_hosts or {}),
        },
        "vars": {k: v for k, v in common.items() if k != "workdir"},
    }
    hosts = {**groups["testbed"]["hosts"], **groups["bastions"]["hosts"]}
    for host, value in via.items():
        hosts[host].update(
            mitogen_via=value,
            ansible_ssh_private_key_file=str(bastion_files / "id_ed25519"),
            ansible_ssh_common_args=(
                f"-o UserKnownHostsFile={bastion_files / 'known_hosts'} "
                "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
            ),
        )
    path.write_text(json.dumps(inventory, indent=2))
    return path


@pytest.mark.parametrize("bastion", ["bastion", "root_bastion"])
def test_a_host_behind_a_bastion_gives_stock_results(
    harness: Harness, bastion_files: Path, tmp_path: Path, bastion: str
) -> None:
    """ssh -> ssh, and ssh -> sudo -> ssh; tasks delegated to the host behind it too.
    -vvv shows the whole chain; `connection: local` stays on the controller."""
    inventory = write_inventory(harness, bastion_files, tmp_path / "inv.json", {"plain": bastion})
    comparison = harness.compare(
        VIA / "via.yml", args=["-i", str(inventory), "-vvv"], ignore=("delta", "start", "end")
    )
    stock, ours = comparison.baseline, comparison.candidate
    assert stock.result("plain", "command through the bastion")["rc"] == 0, stock.describe()
    comparison.assert_same()
    sshd = harness.testbed.sshd
    become = " -> sudo root" if bastion == "root_bastion" else ""
    chain = (
        f"ESTABLISH MITOGEN CONNECTION FOR USER: {harness.account('plain').name} VIA "
        f"ssh {harness.account('sudo_nopw').name}@{sshd.address}:{sshd.port}{become} -> "
        f"ssh {harness.account('plain').name}@{sshd.address}:{sshd.port} "
    )
    assert chain in ours.stdout, ours.describe()
    assert "VIA local (context" in ours.stdout and "-> local" not in ours.stdout


def test_hosts_behind_a_bastion_go_through_its_one_context(
    harness: Harness, testbed: Testbed, bastion_files: Path, tmp_path: Path
) -> None:
    """The ssh client of each host's session runs as the bastion's user (stock's is the
    controller's, root), and both are children of the context the bastion's own tasks
    run in."""
    via = {"plain": "bastion", "sudo_pw": "bastion"}
    inventory = write_inventory(harness, bastion_files, tmp_path / "inv.json", via)
    run = harness.run(VIA / "via_proof.yml", "mitogen_linear", args=["-i", str(inventory)])
    assert run.rc == 0, run.describe()
    assert not run.served_problems(), run.served_problems()
    uid = str(testbed.accounts["sudo_nopw"].uid)
    for host in via:
        assert run.result(host, "ssh client uid")["stdout"] == uid, run.describe()
    assert run.result("bastion", "ssh clients of the bastion's context")["stdout"] == "2"


def test_a_host_behind_a_bastion_without_the_strategy(
    harness: Harness, bastion_files: Path, tmp_path: Path, mux_runtime: Path
) -> None:
    """Builtin `linear` with `mitogen_ssh` for every host (connection-only mode): the host
    behind the bastion (ssh -> sudo -> ssh) gives stock's results through the bastion's
    chain; `connection: local` is stock's own plugin in this mode."""
    inventory = write_inventory(
        harness, bastion_files, tmp_path / "inv.json", {"plain": "root_bastion"}
    )
    args = ["-i", str(inventory), "-vvv"]
    env = standalone_env(mux_runtime)
    stock = harness.start(VIA / "via.yml", "linear", args=args)
    ours = harness.start(VIA / "via.yml", "linear", args=args, env=env)
    runs = stock.wait(), ours.wait()
    for run in runs:
        run.check_strategy()
    assert runs[0].result("plain", "command through the bastion")["rc"] == 0, runs[0].describe()
    local = "connection local runs on the controller, not through the bastion"
    assert_same(*runs, ignore=("delta", "start", "end"), stock_tasks=(local,))
    sshd = harness.testbed.sshd
    chain = (
        f"VIA ssh {harness.account('sudo_nopw').name}@{sshd.address}:{sshd.port} -> sudo root -> "
        f"ssh {harness.account('plain').name}@{sshd.address}:{sshd.port} "
    )
    assert chain in runs[1].stdout, runs[1].describe()
    assert_mux_gone(env)


def test_hosts_behind_a_bastion_go_through_its_one_context_without_the_strategy(
    harness: Harness, testbed: Testbed, bastion_files: Path, tmp_path: Path, mux_runtime: Path
) -> None:
    """As test_hosts_behind_a_bastion_go_through_its_one_context, with builtin `linear`
    and `mitogen_ssh`: the on-demand mux's bastion context runs both hosts' ssh clients."""
    via = {"plain": "bastion", "sudo_pw": "bastion"}
    inventory = write_inventory(harness, bastion_files, tmp_path / "inv.json", via)
    env = standalone_env(mux_runtime)
    run = harness.run(VIA / "via_proof.yml", "linear", args=["-i", str(inventory)], env=env)
    assert run.rc == 0, run.describe()
    assert not served.check_mitogen(run.records), served.check_mitogen(run.records)
    uid = str(testbed.accounts["sudo_nopw"].uid)
    for host in via:
        assert run.result(host, "ssh client uid")["stdout"] == uid, run.describe()
    assert run.result("bastion", "ssh clients of the bastion's context")["stdout"] == "2"
    assert_mux_gone(env)


def test_unfollowable_settings_and_a_dead_bastion_name_the_hosts(
    harness: Harness, bastion_files: Path, tmp_path: Path
) -> None:
    """A loop, an unknown via host, and a bastion that is down: the bastion reports
    itself unreachable as stock would, the host behind it names it."""
    sshd_host = {"ansible_user": harness.account("plain").name}
    inventory = write_inventory(
        harness,
        bastion_files,
        tmp_path / "inv.json",
        {
            "loop_a": "loop_b",
            "loop_b": "loop_a",
            "lonely": "plain,nosuch",
            "behind_dead": "dead_bastion",
        },
        extra_hosts={
            name: dict(sshd_host) for name in ("loop_a", "loop_b", "lonely", "behind_dead")
        },
    )
    run = harness.run(VIA / "via_errors.yml", "mitogen_linear", args=["-i", str(inventory)])
    loop = run.result("loop_a", "reach it")
    assert loop["failed"], loop
    assert "mitogen_via loop: loop_a -> loop_b -> loop_a" in loop["msg"], loop
    lonely = run.result("lonely", "reach it")
    assert lonely["failed"], lonely
    assert "host lonely: mitogen_via names 'nosuch', which is not in the inventory" in lonely["msg"]
    dead = run.result("dead_bastion", "reach it")
    assert dead["unreachable"], dead
    assert "Failed to connect to the host via ssh: ssh: connect to host" in dead["msg"], dead
    behind = run.result("behind_dead", "reach it")
    assert behind["unreachable"], behind
    assert re.search(
        r"cannot reach the host through its mitogen_via host dead_bastion: ssh \S+@\S+ failed: ",
        behind["msg"],
    ), behind
    assert "Connection refused" in behind["msg"], behind
    assert "Traceback" not in run.stdout + run.stderr


def test_tasks_delegated_to_localhost_from_many_hosts_run_together(
    harness: Harness, tmp_path: Path
) -> None:
    """MANY hosts (forks as many) each run a one-second task on localhost: they overlap,
    as with stock, rather than running one after another."""
    inventory = tmp_path / "many.ini"
    inventory.write_text(
        "[many]\n" + "".join(f"d{n} ansible_host=127.0.0.1\n" for n in range(MANY))
    )
    run = harness.run(
        VIA / "via_delegate_many.yml",
        "mitogen_linear",
        args=["-i", str(inventory), "--forks", str(MANY)],
    )
    assert run.rc == 0, run.describe()
    assert not run.served_problems(), run.served_problems()
    for task in ("sleep on localhost", "sleep on localhost again"):
        times = [
            [float(t) for t in run.result(f"d{n}", task)["stdout"].split()] for n in range(MANY)
        ]
        span = max(end for _, end in times) - min(start for start, _ in times)
        print(f"{task}: {MANY} one-second tasks took {span:.2f} s in all")
        assert span < MANY / 2, f"{task}: {span:.1f} s for {MANY} one-second tasks"
