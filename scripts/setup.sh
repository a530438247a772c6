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

find_python() {  # find_python 3.12 -> path of an interpreter of that version
    local candidate
    for candidate in "$pyenv_root"/versions/"$1".*/bin/python"$1" "$(command -v python"$1" || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
    done
    die "no Python $1 found (looked in $pyenv_root/versions and PATH)"
}

make_venv() {  # make_venv DIR VERSION: a venv of that version with the test tools
    local dir=$1 version=$2
    if [ ! -x "$dir/bin/python" ] || ! "$dir/bin/python" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$version'" 2>/dev/null; then
        rm -rf "$dir"
        "$(find_python "$version")" -m venv "$dir"
    fi
    "$dir/bin/pip" install -q --disable-pip-version-check -r requirements-dev.txt
}

missing=()
for minor in 6 7 8 9 10 11 12 13; do
    ls "$pyenv_root"/versions/3."$minor".*/bin/python3."$minor" >/dev/null 2>&1 || missing+=("3.$minor")
done
[ "${#missing[@]}" -eq 0 ] || die "target Pythons missing under $pyenv_root/versions: ${missing[*]} (install them with pyenv)"

make_venv .venv 3.12
if [ "${FULL:-0}" = 1 ]; then
    make_venv .venv-3.11 3.11
fi
bash scripts/setup-ansible.sh
echo "setup.sh: ready (controller $(.venv/bin/python --version), venv $here/.venv)"
