"""Build the Ansible collection tarball (mitogen_ng-mitogen-<version>.tar.gz).

    python -m ansible_mitogen.collection.build [--output-dir DIR] [--ansible-galaxy PATH]

Stages this directory's collection files plus a copy of the `mitogen` and `ansible_mitogen`
packages under vendor/ (the ones imported: a checkout's or an installed package's), stamps
galaxy.yml with `ansible_mitogen.__version__`, then runs `ansible-galaxy collection build`.
Prints the tarball path. Install it with `ansible-galaxy collection install <tarball>`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import ansible_mitogen

HERE = Path(__file__).resolve().parent
#: Collection files copied from this directory (the rest of it is build tooling).
COLLECTION_FILES = ("galaxy.yml", "README.md", "meta", "plugins")
#: Packages vendored into the collection, and what of them to leave out.
VENDORED = ("mitogen", "ansible_mitogen")
VENDOR_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "collection")


class BuildError(Exception):
    """The collection could not be built."""


def find_ansible_galaxy() -> list[str]:
    """The command that runs ansible-galaxy: the one beside the running Python, else
    ansible-core's `python -m ansible galaxy` if this Python has it, else one on PATH."""
    beside = Path(sys.executable).parent / "ansible-galaxy"
    if beside.is_file():
        return [str(beside)]
    if importlib.util.find_spec("ansible") is not None:
        return [sys.executable, "-m", "ansible", "galaxy"]
    found = shutil.which("ansible-galaxy")
    if found is None:
        raise BuildError(
            "ansible-galaxy not found: install ansible-core (pip install ansible-core)"
        )
    return [found]


def stage(directory: Path) -> Path:
    """Lay the collection's source tree out in `directory` (which must not exist)."""
    directory.mkdir(parents=True)
    for name in COLLECTION_FILES:
        source = HERE / name
        if not source.exists():
            raise BuildError(f"the collection file {source} is missing (an incomplete install?)")
        if source.is_dir():
            shutil.copytree(source, directory / name, ignore=VENDOR_IGNORE)
        else:
            shutil.copy2(source, directory / name)
    with open(directory / "galaxy.yml", "a", encoding="utf-8") as galaxy:
        galaxy.write(f"version: {ansible_mitogen.__version__}\n")
    for package in VENDORED:
        source = Path(importlib.import_module(package).__file__ or "").resolve().parent
        if not (source / "__init__.py").is_file():
            raise BuildError(f"package {package} not found at {source}")
        shutil.copytree(source, directory / "vendor" / package, ignore=VENDOR_IGNORE)
    return directory


def build(output_dir: Path, ansible_galaxy: str | None = None) -> Path:
    """Build the tarball into `output_dir` (created if missing); returns its path."""
    galaxy = [ansible_galaxy] if ansible_galaxy else find_ansible_galaxy()
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mitogen-collection-") as tmp:
        source = stage(Path(tmp) / "mitogen")
        try:
            proc = subprocess.run(
                [*galaxy, "collection", "build", "--force", "--output-path", str(output_dir)],
                cwd=source,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BuildError(f"could not run {' '.join(galaxy)}: {exc}") from exc
    if proc.returncode != 0:
        raise BuildError(
            f"ansible-galaxy collection build failed (exit {proc.returncode}):\n"
            f"{proc.stdout}{proc.stderr}"
        )
    built = sorted(output_dir.glob("mitogen_ng-mitogen-*.tar.gz"), key=lambda p: p.stat().st_mtime)
    if not built:
        raise BuildError(f"ansible-galaxy reported success but left no tarball in {output_dir}")
    return built[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("dist"),
        help="default: dist/ in the current directory",
    )
    parser.add_argument("--ansible-galaxy", help="ansible-galaxy to use (default: found)")
    args = parser.parse_args(argv)
    try:
        print(build(args.output_dir.resolve(), args.ansible_galaxy))
    except BuildError as exc:
        print(f"build: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
