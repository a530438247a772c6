"""docs/ builds with Sphinx, warnings as errors; every page the docs promise is there with
content; the API reference covers exactly the names the reference documents give (the
list tests/unit/test_spec_names.py checks), minus the superseded ones; the tutorial's
runnable examples run and print what the tutorial shows."""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests import spec_index

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"

#: page -> phrases its built HTML must contain (its subject, in its own words).
PAGES = {
    "index": ["Mitogen for Ansible", "The mitogen library"],
    "getting-started": [
        "python -m ansible_mitogen config",
        "python -m ansible_mitogen check",
        "mitogen_ng.mitogen.mitogen_linear",
        "DEPRECATION WARNING",
    ],
    "configuration": [
        "max_interpreters_per_host",
        "MITOGEN_MAX_INTERPRETERS",
        "private_key_file",
        "become_flags",
        "as stock Ansible",
    ],
    "versions": ["2.19", "2.20", "2.21", "Python 3.6"],
    "molecule": [
        "not accelerated",
        "community.docker.docker",
        "provisioner.config_options.defaults",
        "ANSIBLE_COLLECTIONS_PATH",
        "examples/molecule",
        "molecule_bench.sh",
    ],
    "differences": ["requiretty", "SIGKILL"],
    "troubleshooting": [
        "ESTABLISH MITOGEN CONNECTION",
        "mitogen_get_stack",
        "A run hangs",
        "The first task is slow",
        "Reporting a bug",
    ],
    "how-it-works": ["python -m ansible_mitogen.mux", "ContextService", "spare"],
    "library/tutorial": ["router.local()", "via=", "call_async", "Channel", "call_service"],
    "library/api": ["mitogen.core", "mitogen.master.Router"],
    "library/superseded": ["How to port"],
}


def load_extension() -> ModuleType:
    """docs/_ext/spec_api.py, the extension that generates the API reference."""
    spec = importlib.util.spec_from_file_location("spec_api", DOCS / "_ext" / "spec_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("spec_api", module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def page_text(out: Path, page: str) -> str:
    """The visible text of a built page."""
    body = (out / (page + ".html")).read_text(encoding="utf-8")
    body = body.split('<div class="body" role="main">', 1)[-1]
    return html.unescape(re.sub(r"<[^>]+>", "", body))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/ built once with `sphinx-build -W` into a fresh directory."""
    out = tmp_path_factory.mktemp("docs-html")
    try:
        import sphinx  # noqa: F401
    except ImportError:
        pytest.fail(
            "Sphinx is not installed in %s: scripts/setup.sh installs "
            "requirements-docs.txt" % (sys.prefix,)
        )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(DOCS),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, "sphinx-build -W failed:\n" + proc.stdout + proc.stderr
    return out


def test_every_page_is_built_with_its_content(built: Path) -> None:
    for page, phrases in PAGES.items():
        assert (built / (page + ".html")).is_file(), page
        text = page_text(built, page)
        missing = [p for p in phrases if p not in text]
        assert not missing, "%s.html lacks %s" % (page, missing)
        assert len(text.split()) > 150, "%s.html has only %d words" % (page, len(text.split()))


def is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def documented_ids(built: Path) -> set[str]:
    """Every object the API reference page documents (autodoc's anchors)."""
    body = (built / "library" / "api.html").read_text(encoding="utf-8")
    ids = set(re.findall(r'<dt class="sig sig-object py" id="([^"]+)"', body))
    return ids | set(re.findall(r'id="module-([^"]+)"', body))


def test_api_reference_covers_the_spec_names(built: Path) -> None:
    superseded = spec_index.read_superseded()
    spec = {s.name for s in spec_index.read_spec()}
    wanted = spec - set(superseded)
    assert len(wanted) > 100, "the reference documents name only %d names" % (len(wanted),)
    shown = documented_ids(built)
    missing = sorted(wanted - shown)
    assert not missing, "the API reference lacks %s" % (missing,)
    assert not shown & set(superseded), "superseded names are shown as if they existed"
    # and nothing else: the modules holding those names, and the public members of the
    # classes the documents give with :members:
    extension = load_extension()
    with_members = {
        name
        for name, opts in extension.members_options(spec_index.spec_dir()).items()
        if "members" in opts
    }
    modules = {name.rpartition(".")[0] for name in wanted} | {"mitogen"}
    for name in shown - wanted:
        owner, _, member = name.rpartition(".")
        assert (name in modules and is_module(name)) or (
            owner in with_members and not member.startswith("_")
        ), "the API reference shows %s, which the reference documents do not give" % (name,)
    print(
        "API reference: %d of %d spec names (%d superseded), and %d members of the %d classes "
        "given with :members:"
        % (
            len(wanted),
            len(spec),
            len(superseded),
            len(shown - wanted - modules),
            len(with_members),
        )
    )


def test_superseded_table_is_rendered(built: Path) -> None:
    text = page_text(built, "library/superseded")
    rows = load_extension().superseded_rows()
    assert rows
    for old, _, _ in rows:
        for name in re.findall(r"`([^`]+)`", old):
            assert name in text, name


def test_tutorial_examples_run() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(DOCS / "examples" / "tutorial.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tutorial = (DOCS / "library" / "tutorial.rst").read_text(encoding="utf-8")
    lines = proc.stdout.splitlines()
    assert lines[0] == "add: 5"
    for line in lines:
        if not line.startswith("grandchild"):  # not shown in the tutorial
            assert "    " + line + "\n" in tutorial, "the tutorial does not show %r" % (line,)
    assert "grandchild's parent is the child: True" in lines


def test_reference_pages_follow_the_code(built: Path) -> None:
    """The settings, accelerated plugins and versions the code has are the ones the
    configuration and versions pages name."""
    pytest.importorskip("ansible", reason="ansible-core is not installed")
    from ansible_mitogen import compat, connection, loaders, services, strategy

    configuration = page_text(built, "configuration")
    named = [*strategy.MUX_SETTINGS, *services.LIMIT_VARIABLES.values()]
    named += [*connection.BECOME_METHODS, *loaders.SSH_NAMES, *loaders.LOCAL_NAMES]
    named += [str(getattr(services.Limits(), field)) for field, _ in strategy.MUX_SETTINGS.values()]
    missing = [name for name in named if name not in configuration]
    assert not missing, "configuration.html does not name %s" % (missing,)
    versions = page_text(built, "versions")
    for series in compat.SUPPORTED_SERIES:
        assert "%d.%d" % series in versions, series
