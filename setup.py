"""Packaging for mitogen and ansible_mitogen; tool settings live in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    name='mitogen-ng',
    version='0.1.0',
    description='Start Python interpreters anywhere a command runs; Ansible accelerator.',
    packages=find_packages(include=['mitogen', 'ansible_mitogen', 'ansible_mitogen.*']),
    python_requires='>=3.6',
)
