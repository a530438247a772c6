#!/usr/bin/env bash
# Set up a fresh Debian machine for this project: system packages (as root),
# a Python 3.12 virtualenv in .venv with the test tools, and a check that the
# target Pythons 3.6 to 3.13 exist under pyenv. Idempotent; fails loudly.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

die() { echo "setup.sh: ERROR: $*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
    bash scripts/setup-system.sh
else
    echo "setup.sh: not root: skipping system packages (sshd, sudo, doas); tests needing them will be skipped" >&2
fi

pyenv_root=${PYENV_ROOT:-}
if [ -z "$pyenv_root" ] && command -v pyenv >/dev/null; then
    pyenv_root=$(pyenv root)
fi
pyenv_root=${pyenv_root:-$HOME/.pyenv}

controller=""
for candidate in "$pyenv_root"/versions/3.12.*/bin/python3.12 "$(command -v python3.12 || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then controller=$candidate; break; fi
done
[ -n "$controller" ] || die "no Python 3.12 found (looked in $pyenv_root/versions and PATH)"

missing=()
for minor in 6 7 8 9 10 11 12 13; do
    ls "$pyenv_root"/versions/3."$minor".*/bin/python3."$minor" >/dev/null 2>&1 || missing+=("3.$minor")
done
[ "${#missing[@]}" -eq 0 ] || die "target Pythons missing under $pyenv_root/versions: ${missing[*]} (install them with pyenv)"

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    rm -rf .venv
    "$controller" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
echo "setup.sh: ready (controller $(.venv/bin/python --version), venv $here/.venv)"
