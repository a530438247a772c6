"""In-process tests of the loader hooks (ansible_mitogen.loaders), the version gate
(ansible_mitogen.compat) and StrategyMixin.run()."""

from __future__ import annotations

import os
import re
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
from ansible.executor.task_executor import TaskExecutor
from ansible.playbook.play_context import PlayContext
from ansible.plugins.action.command import ActionModule as CommandAction
from ansible.plugins.connection.local import Connection as LocalConnection
from ansible.plugins.connection.ssh import Connection as SshConnection
from ansible.plugins.loader import (
    PluginLoader,
    action_loader,
    connection_loader,
    init_plugin_loader,
)

import ansible_mitogen.process
from ansible_mitogen import compat, loaders, strategy
from tests.ansible.harness import PLUGINS

ALL_NAMES = loaders.SSH_NAMES + loaders.LOCAL_NAMES
RECORDING = loaders.redirect_map(ssh="recording_ssh", local="recording_local")


@pytest.fixture(autouse=True)
def clean_hooks() -> Iterator[None]:
    """Every test starts and ends with the hooks uninstalled."""
    loaders.uninstall()
    yield
    loaders.uninstall()


@pytest.fixture(scope="module", autouse=True)
def plugin_loading() -> Iterator[None]:
    """Plugin loading as ansible-playbook sets it up (the collection finder, for FQCNs) plus
    the recording connection plugins; the import machinery is restored afterwards so the
    rest of the test session does not import through Ansible's finder."""
    meta_path, path_hooks = sys.meta_path[:], sys.path_hooks[:]
    init_plugin_loader()
    connection_loader.add_directory(str(PLUGINS / "connection"))
    yield
    sys.meta_path[:], sys.path_hooks[:] = meta_path, path_hooks
    sys.path_importer_cache.clear()


def loader_state() -> dict[str, Any]:
    """What install()/uninstall() must leave as they found it."""
    return {
        name: (
            vars(loader).get("get_with_context", "<absent>"),
            loader.get_with_context.__func__,  # type: ignore[attr-defined]
            loader.get_with_context.__self__,  # type: ignore[attr-defined]
        )
        for name, loader in (("connection", connection_loader), ("action", action_loader))
    }


def task_get_connection(name: str, **kwargs: Any) -> Any:
    """Call the real TaskExecutor._get_connection (a task context) on a stand-in executor."""
    executor = types.SimpleNamespace(
        _play_context=PlayContext(),
        _shared_loader_obj=types.SimpleNamespace(connection_loader=connection_loader),
        _task=types.SimpleNamespace(_uuid="test-uuid"),
        _set_become_plugin=lambda *args: None,
    )
    return TaskExecutor._get_connection(executor, {}, None, name)  # type: ignore[arg-type]


def build_action(name: str, connection: Any) -> Any:
    return action_loader.get(
        name,
        task=types.SimpleNamespace(action=name),
        connection=connection,
        play_context=PlayContext(),
        loader=None,
        templar=None,
        shared_loader_obj=None,
    )


class Marker:
    """A stand-in action mixin."""

    def marker(self) -> str:
        return "mixed"


class MitogenishConnection:
    is_mitogen_connection = True


# -- install / uninstall -------------------------------------------------------------------


def test_uninstall_restores_the_original_methods() -> None:
    before = loader_state()
    loaders.install(RECORDING, Marker)
    assert loaders.installed() and loaders.active()
    assert "get_with_context" in vars(connection_loader)
    assert "get_with_context" in vars(action_loader)
    loaders.uninstall()
    assert loader_state() == before
    assert vars(connection_loader).get("get_with_context") is None
    assert connection_loader.get_with_context.__func__ is PluginLoader.get_with_context
    assert not loaders.installed()
    # ... and behaviour: a task gets stock ssh again.
    assert type(task_get_connection("ssh")) is SshConnection


def test_install_is_idempotent() -> None:
    before = loader_state()
    loaders.install(RECORDING)
    wrapper = vars(connection_loader)["get_with_context"]
    loaders.install(RECORDING)
    loaders.install({})
    assert vars(connection_loader)["get_with_context"] is wrapper
    loaders.uninstall()
    loaders.uninstall()
    assert loader_state() == before


def test_an_existing_instance_attribute_is_restored_exactly() -> None:
    calls: list[str] = []
    original = connection_loader.get_with_context

    def spy(name: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return original(name, *args, **kwargs)

    connection_loader.get_with_context = spy  # type: ignore[method-assign]
    try:
        loaders.install(RECORDING)
        assert type(task_get_connection("local")).__module__.endswith("recording_local")
        assert calls == ["recording_local"]
        loaders.uninstall()
        assert vars(connection_loader)["get_with_context"] is spy
    finally:
        del connection_loader.get_with_context


def test_uninstall_leaves_a_later_wrapper_in_place_and_passes_through() -> None:
    loaders.install(RECORDING)
    ours = connection_loader.get_with_context

    def theirs(name: str, *args: Any, **kwargs: Any) -> Any:
        return ours(name, *args, **kwargs)

    connection_loader.get_with_context = theirs  # type: ignore[method-assign]
    try:
        loaders.uninstall()
        assert vars(connection_loader)["get_with_context"] is theirs
        assert type(task_get_connection("ssh")) is SshConnection
        loaders.install({"ssh": "recording_local"})
        assert type(task_get_connection("ssh")).__module__.endswith("recording_local")
        loaders.uninstall()
        assert vars(connection_loader)["get_with_context"] is theirs
    finally:
        del connection_loader.get_with_context


def test_deactivate_passes_everything_through() -> None:
    loaders.install(RECORDING, Marker)
    loaders.deactivate()
    assert loaders.installed() and not loaders.active()
    assert type(task_get_connection("ssh")) is SshConnection
    assert type(build_action("command", MitogenishConnection())) is CommandAction


@pytest.mark.parametrize(
    "redirects, message",
    [
        (
            {"ssh": "no_such_plugin"},
            "connection plugin 'no_such_plugin' (to be used instead of 'ssh') was not found",
        ),
        ({"ssh": ""}, "use non-empty names"),
        (["ssh"], "must be a mapping, not list"),
    ],
)
def test_bad_redirects_are_refused_clearly(redirects: Any, message: str) -> None:
    with pytest.raises(loaders.HookError, match=re.escape(message)):
        loaders.install(redirects)
    assert not loaders.installed()


def test_a_mixin_must_be_a_class() -> None:
    with pytest.raises(loaders.HookError, match="must be a class, not str"):
        loaders.install({}, "Marker")  # type: ignore[arg-type]


# -- connection redirects ------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_NAMES)
def test_task_contexts_get_the_redirect_target(name: str) -> None:
    loaders.install(RECORDING)
    connection = task_get_connection(name)
    target = RECORDING[name]
    assert type(connection).__module__.endswith(target)
    assert connection._load_name == target
    assert connection.matches_name([name]), "loop items must be able to reuse the connection"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_other_callers_get_the_original(name: str) -> None:
    loaders.install(RECORDING)
    expected = SshConnection if name in loaders.SSH_NAMES else LocalConnection
    obj, context = connection_loader.get_with_context(name, PlayContext())
    assert type(obj) is expected
    assert context.resolved_fqcn.endswith(expected.transport)
    assert connection_loader.get(name, class_only=True) is expected


def test_class_only_in_a_task_context_gets_the_original(monkeypatch: pytest.MonkeyPatch) -> None:
    loaders.install(RECORDING)

    def execute_meta() -> Any:
        return connection_loader.get("ssh", class_only=True)

    monkeypatch.setattr(loaders, "_task_callers", loaders._task_callers | {execute_meta.__code__})
    assert execute_meta() is SshConnection


def test_get_from_a_task_context_is_redirected(monkeypatch: pytest.MonkeyPatch) -> None:
    """StrategyBase._execute_meta calls get(), which calls get_with_context()."""
    loaders.install(RECORDING)

    def execute_meta() -> Any:
        return connection_loader.get("ssh", PlayContext(), os.devnull)

    monkeypatch.setattr(loaders, "_task_callers", loaders._task_callers | {execute_meta.__code__})
    assert type(execute_meta()).__module__.endswith("recording_ssh")


def test_unmapped_names_are_untouched() -> None:
    loaders.install({"ssh": "recording_ssh"})
    assert type(task_get_connection("local")) is LocalConnection
    assert type(task_get_connection("ssh")).__module__.endswith("recording_ssh")


def test_the_redirect_map_covers_every_name() -> None:
    assert loaders.redirect_map("a", "b") == {
        "ssh": "a",
        "ansible.builtin.ssh": "a",
        "ansible.legacy.ssh": "a",
        "local": "b",
        "ansible.builtin.local": "b",
        "ansible.legacy.local": "b",
    }


# -- action mixin --------------------------------------------------------------------------


def test_actions_for_mitogen_connections_get_the_mixin() -> None:
    loaders.install({}, Marker)
    action = build_action("command", MitogenishConnection())
    cls = type(action)
    assert isinstance(action, CommandAction) and isinstance(action, Marker)
    assert cls.__mro__[1:3] == (Marker, CommandAction)
    assert cls.__name__ == "ActionModule"
    assert cls.__qualname__ == "MitogenActionModule"
    assert action.plugin_type == "action"
    assert action._load_name == "command"
    assert action.marker() == "mixed"
    assert type(build_action("ansible.builtin.command", MitogenishConnection())) is cls


def test_actions_for_other_connections_are_untouched() -> None:
    loaders.install({}, Marker)
    assert type(build_action("command", object())) is CommandAction
    assert action_loader.get("command", class_only=True) is CommandAction


def test_without_a_mixin_the_original_result_is_returned() -> None:
    sentinel = compat.load_result(object(), None)
    action_loader.get_with_context = lambda *args, **kwargs: sentinel  # type: ignore[method-assign]
    try:
        loaders.install({}, None)
        result = action_loader.get_with_context(
            "command", connection=MitogenishConnection(), task=None
        )
        assert result is sentinel
    finally:
        loaders.uninstall()
        del action_loader.get_with_context


def test_mixed_classes_are_cached_per_class() -> None:
    first = loaders.mixed_action_class(Marker, CommandAction)
    assert loaders.mixed_action_class(Marker, CommandAction) is first
    assert loaders.mixed_action_class(Marker, first) is first


# -- version gate and StrategyMixin --------------------------------------------------------


def test_the_running_version_is_supported() -> None:
    compat.check_supported()
    assert compat.series() in compat.SUPPORTED_SERIES


@pytest.mark.parametrize("version", ["2.18.3", "2.22.0rc1", "3.0.0", "devel", ""])
def test_unsupported_versions_fail_clearly(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    monkeypatch.setattr(compat, "ANSIBLE_VERSION", version)
    with pytest.raises(compat.UnsupportedAnsibleVersion) as info:
        compat.check_supported()
    message = str(info.value)
    assert f"does not support ansible-core {version} (running from " in message
    assert "supported ansible-core releases: 2.19, 2.20, 2.21" in message


@pytest.mark.parametrize(
    "version, expected",
    [
        ("2.19.0", (2, 19)),
        ("2.21.5", (2, 21)),
        ("2.20.0b1", (2, 20)),
        ("2.20", (2, 20)),
        ("x", None),
    ],
)
def test_series(version: str, expected: tuple[int, int] | None) -> None:
    assert compat.series(version) == expected


class FakeBuiltinStrategy:
    seen: list[bool] = []

    def run(self, iterator: Any, play_context: Any) -> int:
        self.seen.append(loaders.active())
        return 7


class FakeStrategy(strategy.StrategyMixin, FakeBuiltinStrategy):
    connection_redirects = RECORDING
    action_mixin = Marker


def test_strategy_run_gates_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "ANSIBLE_VERSION", "2.18.0")
    FakeBuiltinStrategy.seen = []
    with pytest.raises(compat.UnsupportedAnsibleVersion, match="2.18.0"):
        FakeStrategy().run(None, None)
    assert FakeBuiltinStrategy.seen == []
    assert not loaders.installed()


def test_strategy_run_installs_once_and_activates_only_while_running() -> None:
    FakeBuiltinStrategy.seen = []
    try:
        assert FakeStrategy().run(None, None) == 7
        wrapper = vars(connection_loader)["get_with_context"]
        mux_path = os.environ[ansible_mitogen.process.ENV_PATH]
        assert FakeStrategy().run(None, None) == 7
        assert os.environ[ansible_mitogen.process.ENV_PATH] == mux_path, "one mux per process"
        assert FakeBuiltinStrategy.seen == [True, True]
        assert loaders.installed() and not loaders.active()
        assert vars(connection_loader)["get_with_context"] is wrapper
    finally:
        ansible_mitogen.process.MuxProcess.stop()
    assert ansible_mitogen.process.ENV_PATH not in os.environ
