"""Build the Ansible collection tarball (mitogen_ng-mitogen-<version>.tar.gz).

    python -m ansible_mitogen.collection.build [--output-dir DIR] [--ansible-galaxy PATH]

Stages this directory's collection files plus a copy of the `mitogen` and `ansible_mitogen`
packages under vendor/, then runs `ansible-galaxy collection build`. Prints the tarball path.
Install it with `ansible-galaxy collection install <tarball>`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
#: Collection files copied from this directory (the rest of it is build tooling).
COLLECTION_FILES = ("galaxy.yml", "README.md", "meta", "plugins")
#: Packages vendored into the collection, and what of them to leave out.
VENDORED = ("mitogen", "ansible_mitogen")
VENDOR_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "collection")


class BuildError(Exception):
    """The collection could not be built."""


def find_ansible_galaxy() -> str:
    """ansible-galaxy beside the running Python, else on PATH."""
    beside = Path(sys.executable).parent / "ansible-galaxy"
    if beside.is_file():
        return str(beside)
    found = shutil.which("ansible-galaxy")
    if found is None:
        raise BuildError(
            "ansible-galaxy not found (install ansible-core: scripts/setup-ansible.sh)"
        )
    return found


def stage(directory: Path) -> Path:
    """Lay the collection's source tree out in `directory` (which must not exist)."""
    directory.mkdir(parents=True)
    for name in COLLECTION_FILES:
        source = HERE / name
        if source.is_dir():
            shutil.copytree(source, directory / name, ignore=VENDOR_IGNORE)
        else:
            shutil.copy2(source, directory / name)
    for package in VENDORED:
        source = REPO / package
        if not (source / "__init__.py").is_file():
            raise BuildError(f"package {package} not found at {source}")
        shutil.copytree(source, directory / "vendor" / package, ignore=VENDOR_IGNORE)
    return directory


def build(output_dir: Path, ansible_galaxy: str | None = None) -> Path:
    """Build the tarball into `output_dir` (created if missing); returns its path."""
    galaxy = ansible_galaxy or find_ansible_galaxy()
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mitogen-collection-") as tmp:
        source = stage(Path(tmp) / "mitogen")
        try:
            proc = subprocess.run(
                [galaxy, "collection", "build", "--force", "--output-path", str(output_dir)],
                cwd=source,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BuildError(f"could not run {galaxy}: {exc}") from exc
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
    parser.add_argument("--output-dir", type=Path, default=REPO / "dist", help="default: dist/")
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
