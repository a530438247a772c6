#!/usr/bin/env bash
# Put the collections listed in requirements-collection-modules.txt into each VENV's
# ansible-collections/ directory (the harness's collections_path; Molecule scenarios
# reach it through ANSIBLE_COLLECTIONS_PATH):
#
#   scripts/setup-collections.sh VENV...
#
# Ansible Galaxy is not reachable from CI: the collections come from the wheel of the
# pinned full `ansible` package on PyPI, downloaded once (never pip-installed, so the
# pinned ansible-core is not touched) and extracted. Idempotent: a directory already
# holding exactly the listed collections of that release is left alone. Fails loudly.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

script=setup-collections.sh
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

modules_pins=requirements-collection-modules.txt
wheel_dir=
trap '[ -z "$wheel_dir" ] || rm -rf "$wheel_dir"' EXIT

install_collections() {  # install_collections VENV: the pinned collections in VENV/ansible-collections
    local venv=$1 dest="$1/ansible-collections" began version collections wanted
    began=$EPOCHREALTIME
    version=$(pin_of "$modules_pins" ansible)
    collections=$(sed -n 's/^# collections: //p' "$modules_pins")
    [ -n "$collections" ] || die "no '# collections:' line in $modules_pins"
    wanted="ansible==$version: $collections"
    if [ "$(cat "$dest/.installed-from" 2>/dev/null)" = "$wanted" ]; then
        echo "$script: $dest already has $collections from ansible $version"
        return
    fi
    if [ -z "$wheel_dir" ]; then
        wheel_dir=$(mktemp -d)
        # --no-deps: only the wheel, so pip never touches the pinned ansible-core;
        # its Requires-Python does not matter, nothing of it is installed.
        "$venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
            --ignore-requires-python --only-binary :all: -d "$wheel_dir" "ansible==$version" ||
            die "could not download the ansible $version wheel"
    fi
    rm -rf "$dest.new"
    # shellcheck disable=SC2086  # one argument per collection name
    "$venv/bin/python" - "$wheel_dir/ansible-$version-py3-none-any.whl" "$dest.new" $collections <<'PY' ||
import sys
import zipfile

wheel, dest, *names = sys.argv[1:]
prefixes = ["ansible_collections/%s/" % name.replace(".", "/") for name in names]
with zipfile.ZipFile(wheel) as archive:
    members = [m for m in archive.namelist() if m.startswith(tuple(prefixes))]
    missing = [p for p in prefixes if not any(m.startswith(p) for m in members)]
    if missing:
        sys.exit("%s lacks %s" % (wheel, ", ".join(missing)))
    archive.extractall(dest, members)
PY
        die "could not extract $collections from the ansible $version wheel"
    echo "$wanted" >"$dest.new/.installed-from"
    rm -rf "$dest"
    mv "$dest.new" "$dest"
    printf '%s: %s: %s from ansible %s (%.1fs)\n' \
        "$script" "$dest" "$collections" "$version" "$(awk "BEGIN { print $EPOCHREALTIME - $began }")"
}

[ "$#" -gt 0 ] || die "usage: $script VENV..."
for venv in "$@"; do
    [ -x "$venv/bin/python" ] || die "$venv is not a venv: run scripts/setup.sh first"
    install_collections "$venv"
done
