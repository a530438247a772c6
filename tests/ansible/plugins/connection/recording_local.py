"""Connection plugin `recording_local`: ansible-core's local connection that logs its use
(tests/ansible/recording.py); stands in for Mitogen's local connection in hook tests."""

from __future__ import annotations

from ansible.plugins.connection.local import DOCUMENTATION  # noqa: F401 (same options)
from ansible.plugins.connection.local import Connection as LocalConnection

from tests.ansible.recording import RecordingConnectionMixin


class Connection(RecordingConnectionMixin, LocalConnection):
    """local, recorded."""
