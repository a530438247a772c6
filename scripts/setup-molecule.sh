#!/usr/bin/env bash
# Install Molecule and its docker driver (molecule-plugins[docker]) into .venv, pinned
# in requirements-molecule.txt, for examples/molecule and tests/ansible/test_molecule.py.
# The ansible-core 2.21 and test-tool pins are constraints, so this never moves them.
# The community.docker collection the driver needs comes from scripts/setup-collections.sh
# (run by setup-ansible.sh). Idempotent: pins already installed are left alone. Fails
# loudly.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

script=setup-molecule.sh
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

venv=.venv
pins=requirements-molecule.txt
[ -x "$venv/bin/python" ] || die "$venv is missing: run scripts/setup.sh first"
began=$EPOCHREALTIME
wanted=$(sed -e 's/#.*//' -e 's/\[[^]]*\]//' -e '/^[[:space:]]*$/d' "$pins" | tr 'A-Z_' 'a-z-' | sort -u)
installed=$("$venv/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | tr 'A-Z_' 'a-z-' | sort -u)
if [ -n "$(comm -23 <(echo "$wanted") <(echo "$installed"))" ]; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        -c requirements-ansible-2.21.txt -c requirements-dev.txt -r "$pins" ||
        die "pip install of $pins into $venv failed"
else
    echo "$script: $venv already has the pins of $pins"
fi
version=$(pin_of "$pins" molecule)
actual=$("$venv/bin/python" -c 'import importlib.metadata as m, molecule_plugins.docker; print(m.version("molecule"))') ||
    die "molecule or its docker driver does not import in $venv"
[ "$actual" = "$version" ] || die "$venv has molecule $actual, expected $version"
# molecule runs ansible-config from PATH: the venv's bin must come first
PATH="$here/$venv/bin:$PATH" "$venv/bin/molecule" --version >/dev/null || die "molecule does not run in $venv"
printf '%s: %s: molecule %s with the docker driver (%.1fs)\n' \
    "$script" "$venv" "$version" "$(awk "BEGIN { print $EPOCHREALTIME - $began }")"
