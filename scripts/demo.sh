#!/usr/bin/env bash
# Set everything up, then run the demo: a playbook against a private sshd on
# this machine with stock Ansible and with mitogen_linear, printing both times.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh
.venv/bin/python benchmarks/demo.py "$@"
