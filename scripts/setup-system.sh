#!/usr/bin/env bash
# Prepare this machine (Debian 12, as root) for the test suite's private sshd,
# test accounts, sudo/su/doas, network-namespace hosts and container runtimes
# (docker.io, podman, lxc, debootstrap: the tests start their own private
# dockerd and podman storage, see tests/testbed/containers.py; no system
# container service is started or enabled).
#
# Idempotent and non-interactive. It installs the needed Debian packages, makes
# sure no system-wide sshd is left listening (the tests run their own sshd on
# custom ports), and opens /root to traversal so unprivileged test accounts can
# run the pyenv Pythons kept under root's home.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

PACKAGES=(openssh-server openssh-client sudo acl opendoas iproute2 rsync
    docker.io podman runc lxc debootstrap)

die() {
    echo "setup-system.sh: ERROR: $*" >&2
    exit 1
}

trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

[ "$(id -u)" -eq 0 ] || die "must run as root (try: sudo $0)"
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian/Ubuntu only"

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing+=("$pkg")
done

# Tell Debian's init script never to run the system sshd, whatever triggers it.
mkdir -p /etc/ssh
touch /etc/ssh/sshd_not_to_be_run

if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup-system.sh: installing: ${missing[*]}"
    # Forbid maintainer scripts from starting services while we install.
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    install_ok=1
    apt-get update -q </dev/null || install_ok=0
    if [ "$install_ok" -eq 1 ]; then
        apt-get install -y -q --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}" </dev/null || install_ok=0
    fi
    if [ "$own_policy" -eq 1 ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    [ "$install_ok" -eq 1 ] || die "apt-get failed to install: ${missing[*]}"
else
    echo "setup-system.sh: packages already installed: ${PACKAGES[*]}"
fi

for bin in /usr/sbin/sshd /usr/bin/ssh /usr/bin/ssh-keygen /usr/bin/sudo /usr/sbin/visudo \
    /usr/bin/doas /usr/bin/setfacl /usr/sbin/ip /usr/sbin/dockerd /usr/bin/podman \
    /usr/sbin/runc /usr/bin/lxc-start /usr/bin/lxc-attach /usr/sbin/debootstrap /usr/bin/nsenter; do
    [ -x "$bin" ] || die "$bin missing after install"
done

# If a package script did start the system sshd anyway, stop exactly that daemon
# (found through its pid file and checked to be /usr/sbin/sshd).
if [ -f /run/sshd.pid ]; then
    pid=$(cat /run/sshd.pid)
    if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" = /usr/sbin/sshd ]; then
        echo "setup-system.sh: stopping system sshd (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 50); do
            [ -e "/proc/$pid" ] || break
            sleep 0.1
        done
        [ ! -e "/proc/$pid" ] || die "system sshd (pid $pid) did not stop"
    fi
    rm -f /run/sshd.pid
fi

if ss -Hltn 'sport = :22' | grep -q .; then
    ss -Hltnp 'sport = :22' >&2
    die "something is still listening on port 22 in the root namespace"
fi

# sshd needs its privilege-separation directory; it is normally made by systemd.
mkdir -p /run/sshd
chmod 755 /run/sshd

# pyenv lives in /root; unprivileged test accounts must be able to traverse it.
chmod 711 /root

echo "setup-system.sh: done"
