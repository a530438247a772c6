"""Connection plugin `mitogen_ssh`: stock ssh's options, Mitogen's transport."""

from ansible.plugins.connection.ssh import DOCUMENTATION  # noqa: F401  (read by the loader)

from ansible_mitogen.connection import SshConnection


class Connection(SshConnection):
    """ssh through persistent Mitogen contexts."""
