"""async.yml's commands keep their output through ansible-core's run_command() race.

AnsibleModule.run_command() (2.19 to 2.21) reads its command's pipes in a loop of select(1) and
leaves the loop once a select() has come back empty and the command has exited, without reading
the pipes again: output that the command writes after a select() timed out and before that exit
check is lost (rc 0, stdout ''). A command that prints right after a whole-second sleep, as
`sleep 1; echo polled` did, lands in that window whenever the module process is descheduled for
a few milliseconds just there, as on the loaded CI machine. An async job is ansible-core's own
module process (async_wrapper starts it) for stock and Mitogen alike, so either run of a
comparison could lose the output. Here each async task's command runs through this venv's
command module twice: as it is, and with every select() that timed out followed by a pause,
which forces that interleaving; both must give the same, non-empty output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ansible.parsing.utils.yaml import from_yaml

from tests.ansible.harness import PLAYBOOKS

#: Seconds the slowed module pauses after each select() that timed out.
PAUSE = 0.1

#: sitecustomize.py of the slowed module: the pause, and a line in SELECTS_FILE at exit with
#: how many select() calls the module made (0 would mean that the pause was never in place).
SLOWED_SELECT = """
import atexit, os, selectors, time

_selects = []


def _slowed(select):
    def wrapper(self, timeout=None):
        ready = select(self, timeout)
        _selects.append(len(ready))
        if not ready:
            time.sleep(%r)
        return ready
    return wrapper


for _name in ("PollSelector", "SelectSelector"):
    _class = getattr(selectors, _name, None)
    if _class is not None:
        _class.select = _slowed(_class.select)


@atexit.register
def _count():
    with open(os.environ["SELECTS_FILE"], "a") as fp:
        fp.write("%%d\\n" %% len(_selects))
""" % (PAUSE,)


def async_commands() -> list[tuple[str, str, bool]]:
    """(task name, command, uses the shell) of async.yml's async tasks that must succeed."""
    found = []
    for play in from_yaml((PLAYBOOKS / "async.yml").read_text()):
        for task in play["tasks"]:
            if not task.get("async") or task.get("ignore_errors"):
                continue
            for module, shell in (("command", False), ("shell", True)):
                if module in task:
                    found.append((task["name"], task[module], shell))
    return found


def start(command: str, shell: bool, directory: Path, env: dict[str, str]) -> Any:
    """ansible-core's command module running `command` (`{{ workdir }}` is `directory`)."""
    directory.mkdir()
    raw = command.replace("{{ workdir }}", str(directory))
    assert "{{" not in raw, raw
    args = directory / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"_raw_params": raw, "_uses_shell": shell}}))
    return subprocess.Popen(
        [sys.executable, "-m", "ansible.modules.command", str(args)],
        cwd=directory,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def result(proc: Any) -> dict[str, Any]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    data: dict[str, Any] = json.loads(out)
    return data


def test_async_commands_keep_their_output_when_the_module_is_slow(tmp_path: Path) -> None:
    commands = async_commands()
    assert len(commands) >= 2, commands
    slowed = tmp_path / "slowed"
    slowed.mkdir()
    (slowed / "sitecustomize.py").write_text(SLOWED_SELECT)
    selects = tmp_path / "selects"
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    runs = [
        (
            name,
            start(command, shell, tmp_path / f"plain-{index}", env),
            start(
                command,
                shell,
                tmp_path / f"slowed-{index}",
                {**env, "PYTHONPATH": str(slowed), "SELECTS_FILE": str(selects)},
            ),
        )
        for index, (name, command, shell) in enumerate(commands)
    ]
    outputs = [(name, result(plain), result(slow)) for name, plain, slow in runs]
    # every slowed module read its command's output through the slowed select()
    counts = [int(n) for n in selects.read_text().split()]
    assert len(counts) == len(commands) and min(counts) >= 1, counts
    for name, plain, slow in outputs:
        assert plain["rc"] == slow["rc"] == 0, (name, plain, slow)
        assert plain["stdout"], (name, plain)
        assert slow["stdout"] == plain["stdout"], (name, plain, slow)
