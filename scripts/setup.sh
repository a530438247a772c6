#!/usr/bin/env bash
# Set up a fresh Debian machine for this project: system packages (as root),
# a Python 3.12 virtualenv in .venv with the test and docs tools, ansible-core and
# Molecule, and a check that the target Pythons 3.6 to 3.13 exist under pyenv.
# Idempotent; fails loudly.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

script=setup.sh
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

if [ "$(id -u)" -eq 0 ]; then
    bash scripts/setup-system.sh
else
    echo "setup.sh: not root: skipping system packages (sshd, sudo, doas); tests needing them will be skipped" >&2
fi

make_venv() {  # make_venv DIR VERSION [REQUIREMENTS...]: a venv of that version with the test tools (and those)
    local dir=$1 version=$2 extra=() req
    for req in "${@:3}"; do extra+=(-r "$req"); done
    if [ ! -x "$dir/bin/python" ] || ! "$dir/bin/python" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$version'" 2>/dev/null; then
        rm -rf "$dir"
        "$(find_python "$version")" -m venv "$dir"
    fi
    "$dir/bin/pip" install -q --disable-pip-version-check -r requirements-dev.txt "${extra[@]}"
}

missing=()
for minor in 6 7 8 9 10 11 12 13; do
    ls "$pyenv_root"/versions/3."$minor".*/bin/python3."$minor" >/dev/null 2>&1 || missing+=("3.$minor")
done
[ "${#missing[@]}" -eq 0 ] || die "target Pythons missing under $pyenv_root/versions: ${missing[*]} (install them with pyenv)"

make_venv .venv 3.12 requirements-docs.txt  # the docs are built (and tested) with .venv only
if [ "${FULL:-0}" = 1 ]; then
    make_venv .venv-3.11 3.11
fi
bash scripts/setup-ansible.sh
bash scripts/setup-molecule.sh
echo "setup.sh: ready (controller $(.venv/bin/python --version), venv $here/.venv)"
