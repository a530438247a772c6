"""One version, one licence, and plugin files that are what their template makes."""

from __future__ import annotations

import ast
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

import ansible_mitogen
import mitogen

REPO = Path(__file__).resolve().parents[2]


def test_one_version() -> None:
    assert ansible_mitogen.__version__ == ".".join(map(str, mitogen.__version__))
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "ansible_mitogen.__version__"
    }
    galaxy = yaml.safe_load((REPO / "ansible_mitogen/collection/galaxy.yml").read_text())
    assert "version" not in galaxy  # stamped from __version__ by collection.build
    assert f"## [{ansible_mitogen.__version__}]" in (REPO / "CHANGELOG.md").read_text()


def test_one_licence() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License\n")
    assert "Copyright (c) 2026, The mitogen_ng authors" in text
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "BSD-3-Clause"
    galaxy = yaml.safe_load((REPO / "ansible_mitogen/collection/galaxy.yml").read_text())
    assert galaxy["license"] == ["BSD-3-Clause"]


def test_generated_plugin_files_are_current(tmp_path: Path) -> None:
    ansible = pytest.importorskip("ansible.release")
    from ansible_mitogen import plugin_files

    if ansible.__version__.split(".")[:2] != plugin_files.GENERATING_VERSION.split("."):
        pytest.skip(f"connection docs are generated with {plugin_files.GENERATING_VERSION}")
    assert plugin_files.differences() == [], "run python -m ansible_mitogen.plugin_files"
    # and a hand edit is noticed
    copy = tmp_path / "ansible_mitogen"
    shutil.copytree(REPO / "ansible_mitogen", copy)
    edited = copy / "plugins" / "strategy" / "mitogen_free.py"
    edited.write_text(edited.read_text().replace("free", "linear"))
    assert plugin_files.differences(copy) == ["plugins/strategy/mitogen_free.py"]


def _strategy_deprecation() -> str:
    """ansible-core's own text of its warning for third-party strategies."""
    loader = pytest.importorskip("ansible.plugins.loader")
    tree = ast.parse(Path(loader.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "msg":
            value = node.value
            if isinstance(value, ast.Constant) and "third party strategy" in str(value.value):
                return str(value.value)
    raise AssertionError("ansible-core's loader no longer has the strategy deprecation")


def test_readme_explains_the_strategy_deprecation() -> None:
    readme = " ".join((REPO / "README.md").read_text().split())
    assert " ".join(_strategy_deprecation().split()) in readme
    # the only switch silences every deprecation, and the README says so
    assert "deprecation_warnings = False" in readme
    assert "silences **every** deprecation warning" in readme
    # and the way around it: Mitogen without the strategy plugin
    assert "[without the strategy plugin](docs/standalone.rst)" in readme
