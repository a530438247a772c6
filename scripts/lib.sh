# Shell helpers shared by the setup scripts; source it after setting `script`
# to the caller's name (used in error messages).

die() { echo "$script: ERROR: $*" >&2; exit 1; }

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

pin_of() {  # pin_of FILE NAME -> the version pinned as NAME==VERSION in FILE
    local version
    version=$(sed -n "s/^$2==//p" "$1")
    [ -n "$version" ] || die "no '$2==' pin in $1"
    echo "$version"
}
