#!/usr/bin/env bash
# Run the test suite: set up what is missing, lint, then pytest. Extra
# arguments go to pytest (e.g. scripts/test.sh tests/unit -k fork). Set
# FULL=1 to include suites marked slow.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

bash scripts/setup.sh
.venv/bin/ruff check mitogen ansible_mitogen tests benchmarks

markers=(-m "not slow")
[ "${FULL:-0}" = 1 ] && markers=()
set +e
.venv/bin/python -m pytest "${markers[@]}" "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "test.sh: ERROR: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
