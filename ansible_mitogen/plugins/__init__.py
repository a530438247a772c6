"""Ansible plugins shipped with ansible_mitogen (point Ansible at the subdirectories)."""
