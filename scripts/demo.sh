#!/usr/bin/env bash
# Set everything up, then run the demo: a few contexts on this machine and
# the core benchmark (start times, round trips, throughput, bootstrap size).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh
.venv/bin/python benchmarks/core_bench.py "$@"
