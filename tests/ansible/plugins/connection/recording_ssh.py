"""Connection plugin `recording_ssh`: ansible-core's ssh connection that logs its use
(tests/ansible/recording.py); stands in for Mitogen's ssh connection in hook tests."""

from __future__ import annotations

from ansible.plugins.connection.ssh import DOCUMENTATION  # noqa: F401 (same options as ssh)
from ansible.plugins.connection.ssh import Connection as SshConnection

from tests.ansible.recording import RecordingConnectionMixin


class Connection(RecordingConnectionMixin, SshConnection):
    """ssh, recorded."""
