#!/usr/bin/env bash
# Extract collections from the pinned `ansible` wheel into a venv (never pip-installed).
#
#   scripts/setup-collections.sh VENV KEY DIR
#
# KEY names a '# KEY: NAME...' line of requirements-collection-modules.txt (the
# collections wanted); they go to VENV/DIR/ansible_collections, from the wheel of the
# `ansible==` version pinned there, downloaded with --no-deps so the venv's ansible-core
# is never touched. Called by setup-ansible.sh for every ansible venv:
#   collections            -> ansible-collections   (collection_modules.yml)
#   container collections  -> container-collections (community.docker, containers.podman,
#                             kubernetes.core: the stock container connections the
#                             container comparison tests run, tests/ansible/test_containers.py)
# Idempotent (DIR/.installed-from records what is there); fails loudly.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

script=setup-collections.sh
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

[ "$#" -eq 3 ] || die "usage: $0 VENV KEY DIR"
venv=$1 key=$2 dest="$1/$3"
pins=requirements-collection-modules.txt
[ -x "$venv/bin/python" ] || die "$venv/bin/python not found: run scripts/setup.sh first"

version=$(sed -n "s/^ansible==//p" "$pins")
[ -n "$version" ] || die "no 'ansible==' pin in $pins"
collections=$(sed -n "s/^# $key: //p" "$pins")
[ -n "$collections" ] || die "no '# $key:' line in $pins"
wanted="ansible==$version: $collections"
if [ "$(cat "$dest/.installed-from" 2>/dev/null)" = "$wanted" ]; then
    echo "$script: $dest already has $collections from ansible $version"
    exit 0
fi

began=$EPOCHREALTIME
wheel_dir=$(mktemp -d)
trap 'rm -rf "$wheel_dir"' EXIT
# --no-deps: only the wheel, so pip never touches the pinned ansible-core;
# its Requires-Python does not matter, nothing of it is installed.
"$venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
    --ignore-requires-python --only-binary :all: -d "$wheel_dir" "ansible==$version" ||
    die "could not download the ansible $version wheel"
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
