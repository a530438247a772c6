"""Tasks Mitogen cannot serve run as stock Ansible, with the same results."""

from __future__ import annotations

from pathlib import Path

from tests.ansible.harness import Harness

BECOME_PLUGINS = Path(__file__).parent / 'plugins' / 'become'


def test_unsupported_become_method_falls_back_to_stock(harness: Harness) -> None:
    comparison = harness.compare('become_fallback.yml',
                                 env={'ANSIBLE_BECOME_PLUGINS': str(BECOME_PLUGINS)})
    comparison.assert_same()
    candidate = comparison.candidate
    assert candidate.rc == 0, candidate.describe()
    marked = candidate.result('plain', 'a command through an unsupported become method')
    assert marked['stdout'] == '1', marked
