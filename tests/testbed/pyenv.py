"""Finding the target Pythons installed by pyenv (one per minor version)."""

import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_VERSION_DIR = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


@dataclass(frozen=True, order=True)
class PythonInstall:
    """One pyenv-installed CPython, e.g. version (3, 9, 18)."""

    version: tuple[int, int, int]
    executable: Path

    @property
    def short(self) -> str:
        """'3.9'"""
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def full(self) -> str:
        """'3.9.18'"""
        return ".".join(map(str, self.version))

    @property
    def tag(self) -> str:
        """'39', as used in account names such as mitogen__py39."""
        return f"{self.version[0]}{self.version[1]}"


def pyenv_root() -> Path | None:
    """pyenv's root: `pyenv root`, else $PYENV_ROOT, else ~root/.pyenv; None if absent."""
    candidates: list[Path] = []
    exe = shutil.which("pyenv")
    if exe:
        try:
            out = subprocess.run(
                [exe, "root"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            candidates.append(Path(out))
    if os.environ.get("PYENV_ROOT"):
        candidates.append(Path(os.environ["PYENV_ROOT"]))
    candidates.append(Path(pwd.getpwuid(0).pw_dir) / ".pyenv")
    for candidate in candidates:
        if (candidate / "versions").is_dir():
            return candidate
    return None


def discover(root: Path | None = None) -> list[PythonInstall]:
    """The newest patch release of each CPython minor version under pyenv, sorted."""
    root = root if root is not None else pyenv_root()
    if root is None:
        return []
    best: dict[tuple[int, int], PythonInstall] = {}
    for entry in (root / "versions").iterdir():
        match = _VERSION_DIR.match(entry.name)
        if not match:
            continue
        major, minor, patch = (int(g) for g in match.groups())
        executable = entry / "bin" / f"python{major}.{minor}"
        if not os.access(executable, os.X_OK):
            continue
        install = PythonInstall((major, minor, patch), executable)
        current = best.get((major, minor))
        if current is None or install.version > current.version:
            best[(major, minor)] = install
    return sorted(best.values())
