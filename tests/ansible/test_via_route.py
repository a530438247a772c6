"""ansible_mitogen.via in-process: the hops a `mitogen_via` setting resolves to, built by
the connection plugin each via host's own tasks get, and the errors that name the hosts.
Host variables are plain dicts here (ansible-core's hostvars template on access)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from ansible.plugins.loader import connection_loader, init_plugin_loader

from ansible_mitogen import loaders, strategy, via

USER_HOST = {"ansible_python_interpreter": "/usr/bin/python3"}


@pytest.fixture(scope="module", autouse=True)
def plugin_loading() -> Iterator[None]:
    """Plugin loading as ansible-playbook sets it up, with our connection plugins and the
    strategy's redirects active (as in a worker); undone afterwards."""
    meta_path, path_hooks = sys.meta_path[:], sys.path_hooks[:]
    init_plugin_loader()
    connection_loader.add_directory(strategy.CONNECTION_PLUGINS)
    loaders.install(strategy.StrategyMixin.connection_redirects)
    yield
    loaders.uninstall()
    sys.meta_path[:], sys.path_hooks[:] = meta_path, path_hooks
    sys.path_importer_cache.clear()


def ssh_host(name: str, user: str, **extra: Any) -> dict[str, Any]:
    return {
        "inventory_hostname": name,
        "ansible_host": f"{name}.example",
        "ansible_user": user,
        **USER_HOST,
        **extra,
    }


def task_vars(host: str, hostvars: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {**hostvars[host], "hostvars": hostvars}


def test_a_bastion_contributes_its_own_connection_and_become() -> None:
    hostvars = {
        "bastion": ssh_host("bastion", "jump", ansible_port=2222, ansible_become=True),
        "web": ssh_host("web", "deploy", mitogen_via="bastion"),
    }
    route = via.route(task_vars("web", hostvars))
    assert route.hosts == ["bastion"]
    ssh, sudo = route.hops
    assert ssh["method"] == "ssh"
    assert {k: ssh["kwargs"][k] for k in ("hostname", "port", "username", "python_path")} == {
        "hostname": "bastion.example",
        "port": 2222,
        "username": "jump",
        "python_path": "/usr/bin/python3",
    }
    assert sudo["method"] == "sudo" and sudo["kwargs"]["username"] == "root"
    assert [route.host_of(i) for i in range(3)] == ["bastion", "bastion", None]


def test_a_list_chains_left_to_right_after_the_first_hosts_own_route() -> None:
    hostvars = {
        "a": ssh_host("a", "u"),
        "b": ssh_host("b", "u", mitogen_via="a"),
        "c": {"inventory_hostname": "c", "ansible_connection": "local", **USER_HOST},
        "web": ssh_host("web", "u", mitogen_via=" b, c "),
    }
    route = via.route(task_vars("web", hostvars))
    assert route.hosts == ["a", "b", "c"]
    assert [hop["method"] for hop in route.hops] == ["ssh", "ssh", "local"]
    assert via.route(task_vars("a", hostvars)).hops == []


def test_a_delegated_task_follows_the_delegated_hosts_setting() -> None:
    hostvars = {"bastion": ssh_host("bastion", "jump"), "db": ssh_host("db", "u")}
    variables = {
        **hostvars["db"],
        "hostvars": hostvars,
        "ansible_delegated_vars": {"inner": ssh_host("inner", "u", mitogen_via="bastion")},
    }
    assert via.route(variables).hosts == ["bastion"]


@pytest.mark.parametrize(
    "hostvars, message",
    [
        (
            {"a": ssh_host("a", "u", mitogen_via="b"), "b": ssh_host("b", "u", mitogen_via="a")},
            "mitogen_via loop: a -> b -> a (each is reached through the next)",
        ),
        ({"a": ssh_host("a", "u", mitogen_via="a")}, "mitogen_via loop: a -> a"),
        (
            {"a": ssh_host("a", "u", mitogen_via="b,b"), "b": ssh_host("b", "u")},
            "mitogen_via loop: a -> b -> b",
        ),
        (
            {"a": ssh_host("a", "u", mitogen_via="b"), "b": ssh_host("b", "u", mitogen_via="x")},
            "host b: mitogen_via names 'x', which is not in the inventory",
        ),
        (
            {"a": ssh_host("a", "u", mitogen_via="b"), "b": {"ansible_connection": "winrm"}},
            "mitogen_via host b uses connection 'winrm', which Mitogen does not run",
        ),
        (
            {
                "a": ssh_host("a", "u", mitogen_via="b"),
                "b": ssh_host(
                    "b",
                    "u",
                    ansible_become=True,
                    ansible_become_method="runas",
                    ansible_become_user="x",
                ),
            },
            "mitogen_via host b uses become method 'runas', which Mitogen does not run",
        ),
        (
            {
                "a": ssh_host("a", "u", mitogen_via="b"),
                "b": ssh_host("b", "u", ansible_become=True, ansible_become_method="nosuch"),
            },
            "mitogen_via host b: no become plugin 'nosuch'",
        ),
        (
            {"a": ssh_host("a", "u", mitogen_via={"not": "a name"})},
            "host a: mitogen_via must be a host name",
        ),
    ],
)
def test_unfollowable_settings_are_errors_naming_the_hosts(
    hostvars: dict[str, dict[str, Any]], message: str
) -> None:
    with pytest.raises(via.ViaError) as raised:
        via.route(task_vars("a", hostvars))
    assert message in str(raised.value)


@pytest.fixture
def connection_only() -> Iterator[None]:
    """The hooks as standalone.py configures them in a worker without a Mitogen strategy:
    the action mixin only, no connection redirects (the strategy's are put back after)."""
    loaders.install({}, None)
    yield
    loaders.install(strategy.StrategyMixin.connection_redirects)


@pytest.mark.usefixtures("connection_only")
def test_without_the_strategy_a_bastion_needs_mitogens_plugin() -> None:
    """A bastion saying `ssh` is not turned into mitogen_ssh without the strategy: the
    error says what to set; saying mitogen_ssh, it contributes its hops as before."""
    hostvars = {
        "bastion": ssh_host("bastion", "jump", ansible_connection="ssh"),
        "web": ssh_host("web", "deploy", mitogen_via="bastion"),
    }
    with pytest.raises(via.ViaError) as raised:
        via.route(task_vars("web", hostvars))
    assert (
        "mitogen_via host bastion uses connection 'ssh', which Mitogen does not run without a "
        "Mitogen strategy, so no host can be reached through it: give it Mitogen's plugin, "
        "ansible_connection: mitogen_ssh"
    ) in str(raised.value)
    hostvars["bastion"]["ansible_connection"] = "mitogen_ssh"
    route = via.route(task_vars("web", hostvars))
    assert [hop["method"] for hop in route.hops] == ["ssh"]
    assert route.hops[0]["kwargs"]["username"] == "jump"
