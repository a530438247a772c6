"""`python -m ansible_mitogen`: the user's entry point to an installed Mitogen for Ansible.

    python -m ansible_mitogen --version
    python -m ansible_mitogen config            the ansible.cfg lines that enable it
    python -m ansible_mitogen check             does Mitogen serve a task here?

`check` runs a one-task play against localhost (connection local) with ansible-core's
`ansible-playbook -vvv`, and says Mitogen served it only if the connection's own -vvv lines
show a Mitogen connection and a module run through it, and stock local's connection line is
absent (a silent fallback to stock prints that line). By default it enables the installed
strategy through the environment; `--as-configured` uses the ansible.cfg in force instead,
which verifies the user's own set-up.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import ansible_mitogen

PACKAGE_DIR = Path(ansible_mitogen.__file__).resolve().parent
STRATEGY_PLUGINS = PACKAGE_DIR / "plugins" / "strategy"
ACTION_PLUGINS = PACKAGE_DIR / "plugins" / "action"
STRATEGY = "mitogen_linear"

#: The -vvv lines check() looks for (see ansible_mitogen.connection.Connection._connect()).
ESTABLISHED = "<localhost> ESTABLISH MITOGEN CONNECTION"
MODULE_RUN = "<localhost> MITOGEN MODULE"
#: What a Mitogen strategy prints at -vvv when it starts (ansible_mitogen.strategy).
HOOKED = "loader hooks installed on ansible-core"
#: What stock `local` prints when it serves a task.
STOCK_LOCAL = "ESTABLISH LOCAL CONNECTION FOR USER"

CHECK_PLAY = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: ansible_mitogen check
      ansible.builtin.ping:
"""

CHECK_TIMEOUT = 180


def version_text() -> str:
    return f"mitogen-ng {ansible_mitogen.__version__} ({PACKAGE_DIR})"


def config_text() -> str:
    """The ansible.cfg lines that enable Mitogen for Ansible from this installation."""
    return (
        f"# Mitogen for Ansible, {version_text()}\n"
        "[defaults]\n"
        f"strategy_plugins = {STRATEGY_PLUGINS}\n"
        f"strategy = {STRATEGY}\n"
        "# for the mitogen_get_stack action by its short name (join it to your action_plugins):\n"
        f"# action_plugins = {ACTION_PLUGINS}\n"
    )


class CheckResult:
    """What `check` found: `served`, a one-line `message`, and the run's output."""

    def __init__(self, served: bool, message: str, output: str) -> None:
        self.served = served
        self.message = message
        self.output = output


def judge(returncode: int, output: str) -> CheckResult:
    """Whether the check play's run (exit status, -vvv output) was served by Mitogen."""
    lines = output.splitlines()
    established = [line for line in lines if line.startswith(ESTABLISHED)]
    if returncode != 0:
        return CheckResult(
            False, f"the check play failed (ansible-playbook exit {returncode})", output
        )
    if not any(HOOKED in line for line in lines):
        return CheckResult(
            False,
            "the strategy in force is not a Mitogen one (see `python -m ansible_mitogen config`)",
            output,
        )
    if any(STOCK_LOCAL in line for line in lines):
        return CheckResult(
            False, "stock Ansible's local connection served the task (a fallback to stock)", output
        )
    if not established:
        return CheckResult(
            False,
            "no Mitogen connection was made (the local connection was not redirected)",
            output,
        )
    if not any(line.startswith(MODULE_RUN) for line in lines):
        return CheckResult(False, "the module did not run through Mitogen", output)
    return CheckResult(True, f"Mitogen served the task: {established[0]}", output)


def check(as_configured: bool = False, timeout: float = CHECK_TIMEOUT) -> CheckResult:
    """Run the check play against localhost and judge() it."""
    try:
        import ansible  # noqa: F401
    except ImportError:
        return CheckResult(
            False, "ansible-core is not installed in this Python (pip install ansible-core)", ""
        )
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    if not as_configured:
        env.update(ANSIBLE_STRATEGY_PLUGINS=str(STRATEGY_PLUGINS), ANSIBLE_STRATEGY=STRATEGY)
    with tempfile.TemporaryDirectory(prefix="ansible-mitogen-check-") as tmp:
        playbook = Path(tmp) / "check.yml"
        playbook.write_text(CHECK_PLAY, encoding="utf-8")
        inventory = Path(tmp) / "inventory"
        inventory.write_text(
            f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n",
            encoding="utf-8",
        )
        argv = [sys.executable, "-m", "ansible", "playbook", "-vvv", "-i", str(inventory)]
        try:
            proc = subprocess.run(
                [*argv, str(playbook)],
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return CheckResult(False, f"the check play did not finish in {timeout:.0f} s", "")
    return judge(proc.returncode, proc.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ansible_mitogen",
        description="Mitogen for Ansible: show how to enable it, and check that it works.",
    )
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("config", help="print the ansible.cfg lines that enable it")
    checker = commands.add_parser(
        "check", help="run a one-task play against localhost and say whether Mitogen served it"
    )
    checker.add_argument(
        "--as-configured",
        action="store_true",
        help="use the strategy of the ansible.cfg in force instead of enabling the installed one",
    )
    checker.add_argument(
        "--verbose", "-v", action="store_true", help="print the play's -vvv output too"
    )
    args = parser.parse_args(argv)
    if args.command == "config":
        sys.stdout.write(config_text())
        return 0
    if args.command == "check":
        result = check(as_configured=args.as_configured)
        if args.verbose or not result.served:
            sys.stdout.write(result.output)
        if result.served:
            print(f"OK: {result.message}")
            return 0
        print(f"FAILED: {result.message}", file=sys.stderr)
        return 1
    parser.print_help()
    return 2
