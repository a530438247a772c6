"""Mitogen for Ansible: strategy plugins that run tasks through persistent contexts."""
