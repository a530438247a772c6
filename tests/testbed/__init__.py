"""Test host infrastructure: private sshd, test accounts, sudo/su/doas, namespace hosts.

Typical use is through the pytest plugin `tests.testbed.plugin` (fixtures `testbed` and
`netns_hosts`); `Testbed` also works on its own as a context manager. Needs root and
the packages installed by scripts/setup-system.sh.
"""

from .accounts import ROLES, Account, Accounts
from .core import Testbed
from .keys import Keys
from .netns import NetnsHost, NetnsHosts
from .proc import CommandError, TestbedError
from .ptyproc import PtyProcess, PtyTimeout
from .pyenv import PythonInstall, discover, pyenv_root
from .sshd import Sshd

__all__ = [
    "ROLES",
    "Account",
    "Accounts",
    "CommandError",
    "Keys",
    "NetnsHost",
    "NetnsHosts",
    "PtyProcess",
    "PtyTimeout",
    "PythonInstall",
    "Sshd",
    "Testbed",
    "TestbedError",
    "discover",
    "pyenv_root",
]
