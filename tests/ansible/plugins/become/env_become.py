"""A become plugin Mitogen does not run as a context: it only marks the
environment, so a task can show the command really went through it."""

from __future__ import annotations

from ansible.plugins.become import BecomeBase

DOCUMENTATION = """
    name: env_become
    short_description: run the command with MITOGEN_TEST_BECOME=1 set
    description:
        - A test plugin that stays the same user and marks the environment.
    author: mitogen-ng
    options:
        become_user:
            description: ignored
            vars:
                - name: ansible_become_user
"""


class BecomeModule(BecomeBase):
    name = "env_become"

    def build_become_command(self, cmd: str, shell: object) -> str:
        super().build_become_command(cmd, shell)
        if not cmd:
            return cmd
        return "env MITOGEN_TEST_BECOME=1 %s" % (self._build_success_command(cmd, shell),)
