"""SSH key material of one testbed: host key, client keypair, authorized_keys, known_hosts.

Private files live in a 0700 directory. authorized_keys lives in a separate world-readable
directory because sshd reads it with the target user's privileges; the test sshd points
`AuthorizedKeysFile` at it for every account (root included), so no home directory's own
~/.ssh/authorized_keys is needed and root's is never touched.
"""

import os
from collections.abc import Sequence
from pathlib import Path

from .proc import run


class Keys:
    """Generates and holds the keys; all paths are absolute."""

    def __init__(self, private_dir: Path, public_dir: Path) -> None:
        self.private_dir = private_dir
        self.public_dir = public_dir
        self.host_key = private_dir / "ssh_host_ed25519_key"
        self.client_key = private_dir / "id_ed25519"
        self.authorized_keys = public_dir / "authorized_keys"

    def generate(self) -> None:
        """Create both directories and all key files (replacing any old ones)."""
        self.private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.private_dir, 0o700)
        self.public_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(self.public_dir, 0o755)
        for key, comment in (
            (self.host_key, "testbed-host"),
            (self.client_key, "testbed-client"),
        ):
            for path in (key, key.with_suffix(".pub")):
                path.unlink(missing_ok=True)
            run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    comment,
                    "-f",
                    str(key),
                ],
                what=f"generating SSH key {key.name}",
            )
        self.authorized_keys.write_text(self.client_public + "\n")
        os.chmod(self.authorized_keys, 0o644)

    @property
    def client_public(self) -> str:
        """The client public key line ('ssh-ed25519 AAAA... testbed-client')."""
        return self.client_key.with_suffix(".pub").read_text().strip()

    @property
    def host_public(self) -> str:
        """The server host public key line."""
        return self.host_key.with_suffix(".pub").read_text().strip()

    def write_known_hosts(self, path: Path, names: Sequence[str], port: int) -> Path:
        """Write a known_hosts file trusting the host key for `names` on `port`."""
        keytype, blob = self.host_public.split()[:2]
        patterns = [name if port == 22 else f"[{name}]:{port}" for name in names]
        path.write_text(f"{','.join(patterns)} {keytype} {blob}\n")
        os.chmod(path, 0o600)
        return path
