"""`pip install` of a wheel is all a user needs: build one from the source files, install
it into a fresh venv, and run the CLI, the collection build, ansible-doc and a one-task
playbook from there, with no checkout on sys.path.

The fresh venv has no site packages of its own besides the wheel; ansible-core comes from
the venv running the tests through a .pth line (installing it from a registry would make
the test slow and need the network), so the ansible-core in use is the one under test and
nothing of this checkout is importable there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import ansible_mitogen
import mitogen

pytest.importorskip("ansible", reason="ansible-core is not installed: run scripts/setup-ansible.sh")

REPO = Path(__file__).resolve().parents[2]
#: What of the checkout a wheel is built from.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "mitogen", "ansible_mitogen")


@dataclass
class Venv:
    root: Path
    python: Path
    work: Path

    def run(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ANSIBLE_"))}
        environ.update(ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(self.work / "ansible-tmp"))
        environ.update(env or {})
        return subprocess.run(
            [str(self.python), *argv],
            cwd=self.work,
            env=environ,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    def ok(self, *argv: str, env: dict[str, str] | None = None) -> str:
        proc = self.run(*argv, env=env)
        assert proc.returncode == 0, f"{argv} exit {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        return proc.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=240,
    )
    (wheel,) = dist.glob("mitogen_ng-*.whl")
    root = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
        + ["--no-index", str(wheel)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=240,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "ansible_core_under_test.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    work = tmp / "work"
    work.mkdir()
    return Venv(root, python, work)


def test_installed_package_is_the_wheel_and_reports_one_version(venv: Venv) -> None:
    facts = json.loads(
        venv.ok(
            "-c",
            "import json, importlib.metadata as m, ansible_mitogen, mitogen; "
            "d = m.metadata('mitogen-ng'); "
            "print(json.dumps({'am': ansible_mitogen.__file__, 'm': mitogen.__file__, "
            "'version': ansible_mitogen.__version__, 'mitogen': list(mitogen.__version__), "
            "'dist': d['Version'], 'license': d['License-Expression'], "
            "'files': [str(f) for f in m.files('mitogen-ng')]}))",
        )
    )
    for key in ("am", "m"):
        assert Path(facts[key]).is_relative_to(venv.root), facts[key]
    version = ansible_mitogen.__version__
    assert facts["version"] == facts["dist"] == version
    assert (
        ".".join(map(str, facts["mitogen"])) == version == ".".join(map(str, mitogen.__version__))
    )
    assert facts["license"] == "BSD-3-Clause"
    assert any(f.endswith("licenses/LICENSE") for f in facts["files"]), facts["files"]
    assert venv.ok("-m", "ansible_mitogen", "--version").startswith(f"mitogen-ng {version} ")


def test_cli_help_and_config(venv: Venv) -> None:
    assert "check" in venv.ok("-m", "ansible_mitogen", "--help")
    config = venv.ok("-m", "ansible_mitogen", "config").splitlines()
    assert "[defaults]" in config and "strategy = mitogen_linear" in config
    (path,) = [line.split(" = ", 1)[1] for line in config if line.startswith("strategy_plugins")]
    assert Path(path).is_relative_to(venv.root) and (Path(path) / "mitogen_linear.py").is_file()


def test_check_is_served_by_mitogen(venv: Venv) -> None:
    out = venv.ok("-m", "ansible_mitogen", "check")
    assert out.startswith("OK: Mitogen served the task: <localhost> ESTABLISH MITOGEN CONNECTION")
    # the strategy came from the installed package
    assert str(venv.root) in venv.ok("-m", "ansible_mitogen", "check", "--verbose")


@pytest.fixture(scope="module")
def collections(venv: Venv) -> Path:
    """The collection, built from the installed package and installed (its collections dir)."""
    dist = venv.work / "collection-dist"
    tarball = Path(
        venv.ok("-m", "ansible_mitogen.collection.build", "--output-dir", str(dist)).strip()
    )
    with tarfile.open(tarball) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
        names = tar.getnames()
    info = manifest["collection_info"]
    assert info["version"] == ansible_mitogen.__version__
    assert info["license"] == ["BSD-3-Clause"]
    assert "plugins/connection/mitogen_ssh.py" in names
    assert "plugins/action/mitogen_get_stack.py" in names
    assert "vendor/ansible_mitogen/strategy.py" in names
    path = venv.work / "collections"
    install = ["-m", "ansible", "galaxy", "collection", "install", "--offline", "-p", str(path)]
    venv.ok(*install, str(tarball))
    return path


def test_the_collection_serves_a_play(venv: Venv, collections: Path) -> None:
    env = {
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_STRATEGY": "mitogen_ng.mitogen.mitogen_linear",
    }
    out = venv.ok("-m", "ansible_mitogen", "check", "--as-configured", env=env)
    assert out.startswith("OK: Mitogen served the task"), out


def _doc(venv: Venv, env: dict[str, str], kind: str, name: str) -> dict:
    out = venv.ok("-m", "ansible", "doc", "--json", "-t", kind, name, env=env)
    return json.loads(out)[name]["doc"]


def test_ansible_doc_documents_every_plugin(venv: Venv, collections: Path) -> None:
    plugins = Path(venv.ok("-c", "import ansible_mitogen.cli as c; print(c.PACKAGE_DIR)").strip())
    env = {
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_STRATEGY_PLUGINS": str(plugins / "plugins" / "strategy"),
        "ANSIBLE_CONNECTION_PLUGINS": str(plugins / "plugins" / "connection"),
    }
    listing = venv.ok("-m", "ansible", "doc", "-t", "strategy", "-l", env=env)
    strategies = ("mitogen", "mitogen_linear", "mitogen_free", "mitogen_host_pinned")
    for name in strategies:
        assert f"mitogen_ng.mitogen.{name} " in listing, listing
    assert "UNDOCUMENTED" not in listing, listing
    for name in strategies:
        for fqcn in (name, f"mitogen_ng.mitogen.{name}"):
            doc = _doc(venv, env, "strategy", fqcn)
            assert "run through Mitogen" in doc["short_description"], doc
    for name, stock in (("mitogen_ssh", "ssh"), ("mitogen_local", "local")):
        stock_doc = _doc(venv, env, "connection", stock)
        for fqcn in (name, f"mitogen_ng.mitogen.{name}"):
            doc = _doc(venv, env, "connection", fqcn)
            assert doc["name"] == name
            assert set(doc["options"]) == set(stock_doc["options"]), fqcn


def test_ansible_doc_documents_the_container_connections(venv: Venv, collections: Path) -> None:
    """Each container plugin, bare and from the collection, documents the options of the
    stock plugin it replaces (from the collections scripts/setup-ansible.sh extracts), and
    loads without them."""
    from ansible_mitogen.loaders import CONTAINER_NAMES

    stock_collections = Path(sys.prefix) / "container-collections"
    general = Path(sys.prefix) / "ansible-collections"
    missing = [d for d in (stock_collections, general) if not d.is_dir()]
    assert not missing, f"{missing} not found: run scripts/setup-ansible.sh"
    plugins = Path(venv.ok("-c", "import ansible_mitogen.cli as c; print(c.PACKAGE_DIR)").strip())
    ours = {"ANSIBLE_CONNECTION_PLUGINS": str(plugins / "plugins" / "connection")}
    env = {**ours, "ANSIBLE_COLLECTIONS_PATH": str(collections)}
    stock_env = {"ANSIBLE_COLLECTIONS_PATH": f"{stock_collections}:{general}"}
    stock_names = {ours_name: names[1] for ours_name, names in CONTAINER_NAMES.items()}

    def docs(environment: dict[str, str], names: list[str]) -> dict:
        out = venv.ok("-m", "ansible", "doc", "--json", "-t", "connection", *names, env=environment)
        return {name: entry["doc"] for name, entry in json.loads(out).items()}

    stock = docs(stock_env, list(stock_names.values()))
    bare = docs(env, list(stock_names))
    fqcn = docs(env, [f"mitogen_ng.mitogen.{name}" for name in stock_names])
    for name, stock_name in stock_names.items():
        for doc in (bare[name], fqcn[f"mitogen_ng.mitogen.{name}"]):
            assert doc["name"] == name
            assert set(doc["options"]) == set(stock[stock_name]["options"]), name
            assert "persistent Mitogen contexts" in doc["short_description"], doc
