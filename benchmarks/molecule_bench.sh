#!/usr/bin/env bash
# Time `molecule test` of examples/molecule (scenarios docker and default) with stock
# Ansible and with mitogen_linear in the same run, and print the ratio. Needs root;
# sets up what is missing first. Arguments go to benchmarks/molecule_bench.py
# (--rounds N, --scenario docker|default).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh >/dev/null
unset PYTHONDONTWRITEBYTECODE  # measure with bytecode caching on, as users have it
exec .venv/bin/python benchmarks/molecule_bench.py "$@"
