"""`python -m ansible_mitogen check` from the checkout: it says OK only when Mitogen served
the task, and names what happened otherwise (a builtin strategy, a silent fallback)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ansible", reason="ansible-core is not installed: run scripts/setup-ansible.sh")

from ansible_mitogen import cli  # noqa: E402

BECOME_PLUGINS = Path(__file__).resolve().parents[1] / "ansible" / "plugins" / "become"


def test_check_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    result = cli.check()
    assert result.served, result.output
    assert "<localhost> MITOGEN MODULE ansible.modules.ping done: rc 0" in result.output


def test_check_reports_a_builtin_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANSIBLE_STRATEGY", "linear")
    result = cli.check(as_configured=True)
    assert not result.served
    assert result.message.startswith("the strategy in force is not a Mitogen one"), result.message


def test_check_reports_a_silent_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    # a become method Mitogen does not run as a context: the task succeeds through stock local
    monkeypatch.setenv("ANSIBLE_BECOME", "true")
    monkeypatch.setenv("ANSIBLE_BECOME_METHOD", "env_become")
    monkeypatch.setenv("ANSIBLE_BECOME_PLUGINS", str(BECOME_PLUGINS))
    result = cli.check()
    assert not result.served, result.output
    assert "fallback to stock" in result.message, result.message
    assert "ok: [localhost]" in result.output


def test_main_exit_status_and_messages(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config"]) == 0
    assert f"strategy_plugins = {cli.STRATEGY_PLUGINS}\n" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("mitogen-ng ")
    assert cli.main([]) == 2
