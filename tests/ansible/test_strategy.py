"""ansible-playbook end to end: the loader hooks redirect connections and mix actions (with
the recording stand-in plugins), the version gate stops unsupported ansible-core with a clear
message, the harness notices differences, and the built collection works by FQCN."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ansible_mitogen.collection import build
from tests.ansible.harness import REPO, Harness, compare_runs

pytestmark = [pytest.mark.needs_testbed, pytest.mark.timeout(300)]


def test_hooks_redirect_connections_and_mix_actions(harness: Harness) -> None:
    comparison = harness.compare("recording.yml", candidate="recording_linear", recording=True)
    comparison.assert_same()
    assert comparison.baseline.recorded == [], "stock linear must not use the hooks"
    log = comparison.candidate.recorded

    commands = [r for r in log if r["event"] == "exec_command"]
    aliases = {alias for r in commands for alias in r["aliases"]}
    assert {"ssh", "ansible.builtin.ssh", "ansible.legacy.ssh"} <= aliases
    assert {"local", "ansible.builtin.local"} <= aliases
    assert {r["plugin"] for r in commands} == {"recording_ssh", "recording_local"}

    actions = [r for r in log if r["event"] == "action"]
    assert len(actions) == 10, actions  # every command task execution, loop items included
    for action in actions:
        assert action["cls"] == "ActionModule"
        assert action["mro"] == ["MitogenActionModule", "RecordingActionMixin", "ActionModule"]

    resets = [r for r in log if r["event"] == "reset"]
    assert [r["plugin"] for r in resets] == ["recording_ssh"], "meta: reset_connection"


FAKE_VERSION = (
    "import sys; sys.path.insert(0, {repo!r}); "
    "import ansible_mitogen.compat as compat; compat.ANSIBLE_VERSION = '2.18.7'; "
    "from ansible.cli.playbook import main; sys.argv[0] = 'ansible-playbook'; main()"
)


def test_an_unsupported_ansible_core_stops_with_a_clear_message(harness: Harness) -> None:
    command = [sys.executable, "-c", FAKE_VERSION.format(repo=str(REPO))]
    run = harness.run("command_shell.yml", "mitogen_linear", command=command)
    assert run.rc != 0, run.describe()
    assert run.results == [], "no task may run"
    assert "Mitogen for Ansible does not support ansible-core 2.18.7" in run.stderr
    assert "supported ansible-core releases: 2.19, 2.20, 2.21" in run.stderr
    assert "Traceback" not in run.stdout + run.stderr


def test_the_harness_reports_differences(harness: Harness) -> None:
    first = harness.start("divergent.yml", extra_vars={"flavour": "a"})
    second = harness.start("divergent.yml", extra_vars={"flavour": "b"})
    a, b = first.wait(), second.wait()
    differences = compare_runs(a, b)
    text = "\n".join(differences)
    expected = [
        "exit status: linear(1) 0, linear(2) 2",
        "recap plain: ",
        "plain result #0 ('output depends on the flavour'): stdout: linear(1) 'a', linear(2) 'b'",
        "file target:plain/flavour.txt: content: linear(1) 'a\\n', linear(2) 'b\\n'",
        "file target:plain/only-b: only after linear(2)",
        "('changed only with flavour b'): changed: linear(1) False, linear(2) True",
        "('a file only flavour b makes'): skipped: linear(1) True, linear(2) False",
        "(item_ok 'an item only flavour b has' item 1): only in linear(2)",
        "('flavour b fails at the end'): failed: linear(1) False, linear(2) True",
    ]
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not reported in:\n{text}"
    assert compare_runs(a, a) == []
    ignored = compare_runs(a, b, ignore={"stdout", "changed", "skipped", "event", "msg"})
    assert not any("stdout" in d or "changed:" in d for d in ignored)


def test_the_collection_works_by_fqcn(harness: Harness, tmp_path: Path) -> None:
    tarball = build.build(tmp_path / "dist")
    collections = tmp_path / "collections"
    galaxy = harness.bin_dir / "ansible-galaxy"
    subprocess.run(
        [str(galaxy), "collection", "install", "--offline", "-p", str(collections), str(tarball)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    installed = collections / "ansible_collections" / "mitogen_ng" / "mitogen"
    assert (installed / "vendor" / "ansible_mitogen" / "strategy.py").is_file()
    assert (installed / "vendor" / "mitogen" / "core.py").is_file()

    no_plugins = tmp_path / "no-strategy-plugins"
    no_plugins.mkdir()
    run = harness.run(
        "collection.yml",
        "mitogen_ng.mitogen.mitogen_linear",
        args=["-vvv"],
        env={
            "ANSIBLE_COLLECTIONS_PATH": str(collections),
            "ANSIBLE_STRATEGY_PLUGINS": str(no_plugins),
        },
    )
    assert run.rc == 0, run.describe()
    run.check_strategy()
    assert run.result("plain", "a task through the collection's strategy")["stdout"] == (
        "from the collection"
    )
    assert f"ansible_mitogen from {installed / 'vendor' / 'ansible_mitogen'}:" in run.stdout
