"""Tests of ansible_mitogen: loader hooks, strategy plugins, playbooks compared with stock."""
