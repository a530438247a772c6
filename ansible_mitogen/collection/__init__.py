"""The Ansible collection mitogen_ng.mitogen: its files, and `build` to make the tarball."""
