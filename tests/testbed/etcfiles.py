"""Adding and removing marked blocks of lines in shared files (/etc/hosts, /etc/doas.conf).

Each block is owned by one testbed instance and framed by marker comments that carry
the owner's PID, so blocks left behind by a crashed run can be recognised and removed:

    # BEGIN mitogen-testbed <tag> pid=<pid>
    ...
    # END mitogen-testbed <tag>

Files are rewritten in place (not renamed over): /etc/hosts is often a bind mount.
"""

import fcntl
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from .proc import pid_alive

_BEGIN = re.compile(r"^# BEGIN mitogen-testbed (?P<tag>\S+) pid=(?P<pid>\d+)$")


def _begin(tag: str) -> str:
    return f"# BEGIN mitogen-testbed {tag} pid={os.getpid()}"


def _end(tag: str) -> str:
    return f"# END mitogen-testbed {tag}"


def _strip_blocks(lines: Iterable[str], drop: set[str] | None) -> list[str]:
    """Remove blocks whose tag is in `drop`, or (drop=None) whose owner PID is dead."""
    out: list[str] = []
    skipping: str | None = None
    for line in lines:
        if skipping is not None:
            if line.rstrip("\n") == _end(skipping):
                skipping = None
            continue
        match = _BEGIN.match(line.rstrip("\n"))
        if match:
            tag = match["tag"]
            if (drop is None and not pid_alive(int(match["pid"]))) or (
                drop is not None and tag in drop
            ):
                skipping = tag
                continue
        out.append(line)
    return out


def _rewrite(path: Path, drop: set[str] | None, add: tuple[str, Sequence[str]] | None) -> None:
    exists = path.exists()
    if not exists and add is None:
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        original = f.readlines()
        lines = _strip_blocks(original, drop)
        if add is not None:
            tag, body = add
            lines = _strip_blocks(lines, {tag})
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines += [_begin(tag) + "\n", *(b + "\n" for b in body), _end(tag) + "\n"]
        f.seek(0)
        f.write("".join(lines))
        f.truncate()
        emptied = lines != original and not "".join(lines).strip()
    if emptied:
        path.unlink()


def add_block(path: Path, tag: str, body: Sequence[str]) -> None:
    """Append (or replace) the block `tag` holding `body`; creates the file if needed."""
    _rewrite(path, None, (tag, body))


def remove_block(path: Path, tag: str) -> None:
    """Remove the block `tag`; deletes the file if that left nothing in it."""
    _rewrite(path, {tag}, None)


def remove_stale_blocks(path: Path) -> None:
    """Remove every block whose owning process no longer exists."""
    _rewrite(path, None, None)
