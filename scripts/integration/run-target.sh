#!/usr/bin/env bash
# Runs inside a throwaway container made by scripts/ansible-integration.sh:
#   run-target.sh STRATEGY TARGET [VERBOSITY]     (VERBOSITY: -v (default) to -vvvvv)
# Starts sshd (for needs/ssh targets), puts the strategy's config where ansible-test
# looks for it (test/integration/integration.cfg in the content root), and runs one
# target with `ansible-test integration --local`. /out is the host's per-run directory.
set -euo pipefail

strategy=$1
target=$2
verbosity=${3:--v}
cfg_dst=/opt/ansible-core/test/integration/integration.cfg

case "$strategy" in
    linear | mitogen_linear) cp "/opt/integration/${strategy%_linear}.cfg" "$cfg_dst" ;;
    *) echo "run-target.sh: unknown strategy $strategy" >&2; exit 2 ;;
esac
if [ "$strategy" = mitogen_linear ] && [ ! -f /opt/mitogen/ansible_mitogen/plugins/strategy/mitogen_linear.py ]; then
    echo "run-target.sh: /opt/mitogen is not the mitogen repo snapshot" >&2
    exit 2
fi

# sudo wants the hostname resolvable; with --network none docker does not list it.
grep -qw -- "$(hostname)" /etc/hosts || echo "127.0.1.1 $(hostname)" >>/etc/hosts

mkdir -p /run/sshd
# Default PidFile /run/sshd.pid: /etc/init.d/ssh (used by `service: name=ssh
# state=restarted` in connection_ssh) finds this daemon through it.
/usr/sbin/sshd -E /out/sshd.log

echo "run-target.sh: strategy=$strategy target=$target python=$(command -v python3.12)"
echo "run-target.sh: ANSIBLE_CONFIG will be $cfg_dst:"
sed 's/^/    /' "$cfg_dst"

# ansible-test itself refuses non-blocking stdio; give it /dev/null as stdin.
exec python3.12 bin/ansible-test integration --local --python 3.12 \
    --allow-destructive --color no "$verbosity" "$target" </dev/null
