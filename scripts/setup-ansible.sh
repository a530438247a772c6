#!/usr/bin/env bash
# Install the pinned ansible-core releases the Ansible tests run against.
#
#   scripts/setup-ansible.sh            ansible-core 2.21 into .venv (Python 3.12)
#   FULL=1 scripts/setup-ansible.sh     also 2.20 into .venv-ansible-2.20 (Python 3.12)
#                                       and 2.19 into .venv-ansible-2.19 (Python 3.11)
#   scripts/setup-ansible.sh 2.19 2.21  exactly the series named
#
# Pins live in requirements-ansible-<series>.txt. The extra venvs also get
# requirements-dev.txt so the test suite can run under them. Every venv set up
# also gets, in VENV/ansible-collections, the collections listed in
# requirements-collection-modules.txt (scripts/setup-collections.sh), and the target
# Python 3.12 gets the lxml pinned there. Idempotent: a venv whose packages already
# match its pins is left alone, and so are collections and lxml already in place.
# Fails loudly.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

script=setup-ansible.sh
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

venv_python_is() {  # venv_python_is DIR 3.12: true if DIR is a venv of that Python
    [ -x "$1/bin/python" ] &&
        "$1/bin/python" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$2'" 2>/dev/null
}

pins_satisfied() {  # pins_satisfied DIR FILE...: every 'name==version' pin is installed
    local wanted installed
    wanted=$(cat "${@:2}" | sed -e 's/#.*//' -e '/^[[:space:]]*$/d' | tr 'A-Z_' 'a-z-' | sort -u)
    installed=$("$1/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | tr 'A-Z_' 'a-z-' | sort -u)
    [ -z "$(comm -23 <(echo "$wanted") <(echo "$installed"))" ]
}

install_series() {  # install_series SERIES VENV PYTHON_VERSION WITH_DEV(0|1)
    local series=$1 venv=$2 python=$3 with_dev=$4 began files pinned actual
    local pins="requirements-ansible-$series.txt"
    [ -f "$pins" ] || die "no pin file $pins"
    files=("$pins")
    [ "$with_dev" = 1 ] && files+=(requirements-dev.txt)
    began=$EPOCHREALTIME
    if ! venv_python_is "$venv" "$python"; then
        [ "$with_dev" = 1 ] || die "$venv is missing or not Python $python: run scripts/setup.sh first"
        rm -rf "$venv"
        "$(find_python "$python")" -m venv "$venv" || die "could not create $venv"
    fi
    if pins_satisfied "$venv" "${files[@]}"; then
        echo "setup-ansible.sh: $venv already has ansible-core $series"
    else
        local args=()
        for f in "${files[@]}"; do args+=(-r "$f"); done
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "${args[@]}" ||
            die "pip install into $venv failed"
    fi
    pinned=$(sed -n 's/^ansible-core==//p' "$pins")
    actual=$("$venv/bin/python" -c 'import ansible.release; print(ansible.release.__version__)') ||
        die "ansible-core does not import in $venv"
    [ "$actual" = "$pinned" ] || die "$venv has ansible-core $actual, expected $pinned"
    "$venv/bin/ansible-playbook" --version >/dev/null || die "$venv/bin/ansible-playbook does not run"
    printf 'setup-ansible.sh: %s: ansible-core %s on Python %s (%.1fs)\n' \
        "$venv" "$actual" "$python" "$(awk "BEGIN { print $EPOCHREALTIME - $began }")"
}

modules_pins=requirements-collection-modules.txt

install_target_lxml() {  # the pinned lxml in the Python 3.12 the test hosts run modules with
    local version target began=$EPOCHREALTIME
    version=$(pin_of "$modules_pins" lxml)
    target=$(find_python 3.12)
    if "$target" -c "import sys, lxml.etree; sys.exit(lxml.__version__ != '$version')" 2>/dev/null; then
        echo "setup-ansible.sh: $target already has lxml $version"
        return
    fi
    "$target" -m pip install -q --disable-pip-version-check --root-user-action=ignore \
        --no-deps --only-binary :all: "lxml==$version" || die "pip install lxml into $target failed"
    "$target" -c "import lxml.etree" || die "lxml does not import in $target"
    printf 'setup-ansible.sh: %s: lxml %s (%.1fs)\n' \
        "$target" "$version" "$(awk "BEGIN { print $EPOCHREALTIME - $began }")"
}

series=("$@")
if [ "${#series[@]}" -eq 0 ]; then
    series=(2.21)
    [ "${FULL:-0}" = 1 ] && series+=(2.20 2.19)
fi
venvs=()
for s in "${series[@]}"; do
    case "$s" in
        2.21) venv=.venv && install_series 2.21 "$venv" 3.12 0 ;;
        2.20) venv=.venv-ansible-2.20 && install_series 2.20 "$venv" 3.12 1 ;;
        2.19) venv=.venv-ansible-2.19 && install_series 2.19 "$venv" 3.11 1 ;;
        *) die "unknown ansible-core series '$s' (supported: 2.19 2.20 2.21)" ;;
    esac
    venvs+=("$venv")
done
bash scripts/setup-collections.sh "${venvs[@]}"
install_target_lxml
