"""Connection plugin `mitogen_local`: stock local's options, Mitogen's transport."""

from ansible.plugins.connection.local import DOCUMENTATION  # noqa: F401  (read by the loader)

from ansible_mitogen.connection import LocalConnection


class Connection(LocalConnection):
    """A persistent local Mitogen context."""
