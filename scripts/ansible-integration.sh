#!/usr/bin/env bash
# Run ansible-core's own integration targets with `ansible-test integration --local`,
# once with the stock `linear` strategy and once with our `mitogen_linear`, each target
# and strategy in a fresh throwaway Docker container (many targets are destructive: they
# create users, pip-install packages, edit /etc), and judge the result against
# scripts/integration/expected.toml, the one list of expected differences (plumbing, and
# known bugs until they are fixed). Prints a table target / linear / mitogen_linear /
# expected difference (result, seconds) and writes it to $WORK/results.md. CI runs it
# (scripts/test.sh with FULL=1).
#
#   scripts/ansible-integration.sh                 all default targets (list below)
#   scripts/ansible-integration.sh ping copy       only these targets
#
# The run fails (exit 1) when a target fails with linear (an environment problem), fails
# with mitogen_linear for a reason expected.toml does not list, or an expected difference
# no longer happens or fails at another point than recorded; scripts/integration/verdict.py
# holds these rules. For a target with such differences, expected.toml names a patch
# (scripts/integration/patches/) that turns just those checks into tasks allowed to
# fail, so the rest of the target still runs with Mitogen; the patch is applied here to
# a copy of the target's files, mounted over the image's for both strategies (with
# linear, those checks must pass). Patches also hand the run's strategy to the few
# ansible runs of a target that choose their own (handlers, template, connection_ssh).
#
# Run as root on Debian 12 (bookworm). It installs docker.io, debootstrap and patch,
# starts a private dockerd (own socket, data-root and pidfile under $WORK; no bridge, no
# iptables) and stops it again at exit, builds a bookworm base image with debootstrap (no
# registry needed) and on top of it the test image (Dockerfile in scripts/integration/).
# Both images stay cached in $WORK/docker, so later runs start at once. At exit it checks
# that no container, dockerd or mount of its own is left, and fails if one is.
#
# The test image gets a Python 3.12 copied from this machine (ansible-core 2.21 needs a
# 3.12+ controller; bookworm has 3.11): $PYTHON312, or else pyenv's newest 3.12.x. It is
# copied to the same prefix inside the image (it is built with an rpath). Everything pip
# installs inside the image (ansible-core's dependencies, plus passlib and pexpect which
# the targets' setup roles "install" at run time) is downloaded here first, so the
# containers run with --network none: a setup role's pip install then finds its package
# already present.
#
# Environment:
#   MITOGEN_INTEGRATION_DIR  work directory (default /var/tmp/mitogen-integration)
#   PYTHON312                Python 3.12 to copy into the image (default: pyenv's)
#   JOBS                     containers run at once (default 2)
#   TARGET_TIMEOUT           seconds allowed per target and strategy (default 900)
#   DEBIAN_MIRROR            for debootstrap (default http://deb.debian.org/debian)
#   STRATEGIES               default "linear mitogen_linear"
#   VERBOSITY                ansible-test's (and so ansible-playbook's) -v level, default -v
#   KEEP_RUNS                run directories kept in $WORK/runs (default 10)
#
# Each run goes to $WORK/runs/<timestamp>/<strategy>/<target>/: ansible-test.log (the
# container's whole output), ansible.log (ansible's log at -vvv level), sshd.log, rc and
# seconds, and results/ (ansible-test's test/results). The mitogen_linear run of a target
# only counts when its ansible.log shows StrategyMixin's "ansible_mitogen from" line in
# every ansible process that reported a task result, and no stock connection plumbing.
#
# One run at a time per work directory (a lock in $WORK/run; a second run fails at
# once). Ctrl-C or a TERM is meant to stop the running containers and dockerd before
# exiting. Known issue: a TERM that arrives while it waits for the containers can end
# bash without its EXIT trap (strace: bash resets SIGTERM to the default and re-raises
# it), leaving dockerd and the containers; the next run stops that dockerd first.
#
# Exit status: 0 everything as expected; 1 some target was not (see the table's
# "Not as expected" list); 2 the setup failed or something was left behind.
set -euo pipefail
script_began=$EPOCHREALTIME

script=ansible-integration.sh
here=$(cd "$(dirname "$0")/.." && pwd)
support=$here/scripts/integration

die() {
    echo "$script: ERROR: $*" >&2
    exit 2
}
say() { echo "$script: $*"; }
trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

ANSIBLE_CORE_VERSION=2.21.5
SDIST_DIR=ansible_core-$ANSIBLE_CORE_VERSION
# Longest first (by measured time), so that JOBS parallel containers finish together.
DEFAULT_TARGETS=(copy connection_local handlers connection_ssh delegate_to template
    file async lineinfile fetch command_shell no_log until interpreter_discovery_python
    become_su become_sudo loops slurp environment raw check_mode stat
    wait_for_connection script loop_control ping)
# Packages of the base image: sshd/sudo/su/acl for the targets, file (stat's
# mimetype), locales for en_US.UTF-8 (ansible-test's preferred locale), and the
# shared libraries the copied Python's extension modules link against. python3 (3.11)
# is there for targets that look for the system Python.
BASE_PACKAGES=file,openssh-server,openssh-client,sudo,acl,procps,locales,ca-certificates,python3,init-system-helpers,libbz2-1.0,libexpat1,libffi8,liblzma5,libncursesw6,libreadline8,libsqlite3-0,libssl3,libnsl2,libtirpc3,libuuid1,zlib1g,libgdbm6
# What the image's pip installs besides ansible-core's pinned dependencies: the
# packages the targets' setup roles install (setup_passlib_controller,
# setup_pexpect: pexpect 4.8.0 per its constraints.txt).
EXTRA_PIP=(passlib==1.7.4 pexpect==4.8.0 ptyprocess==0.7.0)

work=${MITOGEN_INTEGRATION_DIR:-/var/tmp/mitogen-integration}
target_timeout=${TARGET_TIMEOUT:-900}
jobs_max=${JOBS:-2}
keep_runs=${KEEP_RUNS:-10}
[[ "$jobs_max" =~ ^[1-9][0-9]*$ ]] || die "JOBS must be a positive number"
[[ "$keep_runs" =~ ^[1-9][0-9]*$ ]] || die "KEEP_RUNS must be a positive number"
expected=$support/expected.toml
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
verbosity=${VERBOSITY:--v}
[[ "$verbosity" =~ ^-v{1,5}$ ]] || die "VERBOSITY must be one of -v to -vvvvv"
read -r -a strategies <<<"${STRATEGIES:-linear mitogen_linear}"

case "${1:-}" in
-h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
esac
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=("${DEFAULT_TARGETS[@]}")
for strategy in "${strategies[@]}"; do
    case "$strategy" in linear | mitogen_linear) ;; *) die "unknown strategy $strategy" ;; esac
done

# ---------------------------------------------------------------- preflight
[ "$(id -u)" -eq 0 ] || die "must run as root (it starts dockerd and debootstrap)"
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian only"
if ! grep -qs '^VERSION_CODENAME=bookworm' /etc/os-release; then
    say "WARNING: not Debian bookworm; continuing anyway"
fi
for f in Dockerfile run-target.sh linear.cfg mitogen.cfg sshd_config verdict.py test_verdict.py expected.toml; do
    [ -f "$support/$f" ] || die "missing support file $support/$f"
done
[ -f "$here/ansible_mitogen/plugins/strategy/mitogen_linear.py" ] ||
    die "$here does not look like the mitogen repo (no ansible_mitogen/plugins/strategy)"
[ -f "$here/requirements-ansible-2.21.txt" ] || die "missing $here/requirements-ansible-2.21.txt"

install_packages() {  # install the Debian packages that are missing, starting no service
    local missing=() pkg status own_policy=0 ok=1
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
        [ "$status" = installed ] || missing+=("$pkg")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    say "installing Debian packages: ${missing[*]}"
    # docker.io's maintainer scripts would start the system dockerd: forbid it.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null || ok=0
    if [ "$ok" = 1 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}" </dev/null || ok=0
    fi
    [ "$own_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
    [ "$ok" = 1 ] || die "apt-get could not install: ${missing[*]}"
}
install_packages docker.io debootstrap patch ca-certificates coreutils tar gzip
for bin in dockerd docker docker-init debootstrap patch timeout sha256sum flock; do
    command -v "$bin" >/dev/null || die "$bin not found after installing docker.io, debootstrap and patch"
done

# A Python 3.12 with its own prefix, to copy into the image.
find_python312() {
    local candidate pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
    if [ -n "${PYTHON312:-}" ]; then
        echo "$PYTHON312"
        return 0
    fi
    if command -v pyenv >/dev/null; then pyenv_root=$(pyenv root); fi
    local -a found=("$pyenv_root"/versions/3.12.*)
    while read -r candidate; do
        if [ -x "$candidate/bin/python3.12" ]; then
            echo "$candidate/bin/python3.12"
            return 0
        fi
    done < <(printf '%s\n' "${found[@]}" | sort -V -r)
    return 1
}
py312=$(find_python312) ||
    die "no Python 3.12 found: set PYTHON312 to a self-contained 3.12 (e.g. pyenv's \$(pyenv root)/versions/3.12.x/bin/python3.12)"
[ -x "$py312" ] || die "PYTHON312=$py312 is not executable"
"$py312" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null ||
    die "$py312 is not a Python 3.12"
py_prefix=$("$py312" -c 'import sys; print(sys.base_prefix)')
py_version=$("$py312" -c 'import platform; print(platform.python_version())')
case "$py_prefix" in
/ | /usr | /usr/local | /opt) die "$py312 lives in $py_prefix, shared with other software: need a self-contained prefix (pyenv's)" ;;
esac
[ -x "$py_prefix/bin/python3.12" ] || die "no $py_prefix/bin/python3.12"
"$py312" -c 'import ensurepip' 2>/dev/null || die "$py312 has no ensurepip"
say "controller Python for the image: $py_prefix ($py_version)"
# The judge's own tests first: a broken verdict.py must not pass or fail a run.
if ! verdict_tests=$("$py312" -B "$support/test_verdict.py" 2>&1); then
    echo "$verdict_tests" >&2
    die "the tests of $support/verdict.py fail (above)"
fi
say "verdict.py's tests: $(tail -n 3 <<<"$verdict_tests" | grep -o 'Ran [0-9]* tests') ok"

mkdir -p "$work"/{cache,run,runs}
cache=$work/cache

# One run at a time per work directory: runs share its dockerd, socket and images.
# The lock is on fd 9, which the daemons and containers started below do not inherit.
exec 9>"$work/run/lock"
if ! flock -n 9; then
    die "another run of this script is using $work (it holds $work/run/lock); wait for it or set MITOGEN_INTEGRATION_DIR"
fi

# ---------------------------------------------------------------- downloads
sdist=$cache/$SDIST_DIR.tar.gz
if [ ! -s "$sdist" ]; then
    say "downloading the ansible-core $ANSIBLE_CORE_VERSION sdist"
    rm -rf "$cache/sdist.tmp"
    "$py312" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
        "ansible-core==$ANSIBLE_CORE_VERSION" -d "$cache/sdist.tmp" ||
        die "could not download the ansible-core $ANSIBLE_CORE_VERSION sdist from PyPI"
    mv "$cache/sdist.tmp/$SDIST_DIR.tar.gz" "$sdist"
    rm -rf "$cache/sdist.tmp"
fi
tar -tzf "$sdist" "$SDIST_DIR/test/integration/targets/ping/aliases" >/dev/null 2>&1 ||
    die "$sdist is not the ansible-core $ANSIBLE_CORE_VERSION sdist (no test/integration/targets)"
sdist_targets=$(tar -tzf "$sdist" | sed -n "s|^$SDIST_DIR/test/integration/targets/\([^/]*\)/aliases\$|\1|p")
for target in "${targets[@]}"; do
    grep -qx -- "$target" <<<"$sdist_targets" || die "no integration target '$target' in ansible-core $ANSIBLE_CORE_VERSION"
done
# Every entry of expected.toml names a real target, so a renamed target cannot leave
# a stale entry behind; and the file must parse before any container starts.
while read -r target; do
    grep -qx -- "$target" <<<"$sdist_targets" || die "$expected lists '$target', which is not an integration target of ansible-core $ANSIBLE_CORE_VERSION"
done < <(sed -n 's/^\[\([^].]*\)\][[:space:]]*$/\1/p' "$expected")
patch_list=$("$py312" "$support/verdict.py" check "$expected" "${targets[@]}") ||
    die "$expected is not valid (see above)"

requirements=$cache/requirements.txt
{
    sed -e 's/#.*//' -e '/^[[:space:]]*$/d' -e '/^ansible-core==/d' "$here/requirements-ansible-2.21.txt"
    printf '%s\n' "${EXTRA_PIP[@]}"
} >"$requirements.new"
mv "$requirements.new" "$requirements"
req_hash=$(sha256sum "$requirements" | cut -c1-12)
wheels=$cache/wheels-$req_hash
if [ ! -f "$wheels/.complete" ]; then
    say "downloading wheels for the image"
    rm -rf "$wheels"
    "$py312" -m pip download -q --disable-pip-version-check --only-binary :all: \
        -d "$wheels" -r "$requirements" || die "could not download the wheels in $requirements"
    touch "$wheels/.complete"
fi

# ---------------------------------------------------------------- dockerd
export DOCKER_HOST=unix://$work/run/docker.sock
export DOCKER_BUILDKIT=0
dockerd_pidfile=$work/run/dockerd.pid
dockerd_pid=
# The running jobs: runner PID -> container name, and -> "target strategy began".
declare -A job_container=() job_info=()

stop_pid() {  # stop_pid PID: TERM, then KILL after 30 s
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 300); do
        [ -e "/proc/$pid" ] || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

leftovers() {  # print what of ours is still there: mounts under $work, processes of our dockerd
    local pid cmdline
    awk -v w="$work/" 'index($5, w) == 1 { print "mount " $5 }' /proc/self/mountinfo
    for pid in /proc/[0-9]*; do
        { cmdline=$(tr '\0' ' ' <"$pid/cmdline"); } 2>/dev/null || continue  # gone meanwhile
        case "$cmdline" in
        *"$work/run/"*) echo "process ${pid#/proc/}: ${cmdline:0:160}" ;;
        esac
    done
}

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    local status=$? pid left
    trap - ERR
    set +e
    for pid in "${!job_container[@]}"; do
        docker rm -f "${job_container[$pid]}" >/dev/null 2>&1
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ -n "$dockerd_pid" ]; then
        # Containers of an interrupted run (this dockerd is private: all of them are ours).
        docker ps -aq | xargs -r docker rm -f >/dev/null 2>&1
        stop_pid "$dockerd_pid"
        say "dockerd (pid $dockerd_pid) stopped"
        # containerd and its shims end with dockerd; give them a moment.
        for _ in $(seq 100); do
            left=$(leftovers)
            [ -n "$left" ] || break
            sleep 0.1
        done
        if [ -n "$left" ]; then
            echo "$script: ERROR: left behind after stopping dockerd:" >&2
            echo "$left" | sed 's/^/    /' >&2
            [ "$status" -ne 0 ] || status=2
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A dockerd left by an earlier run of this script that was killed outright: we hold
# the lock, so no running instance owns it any more.
if [ -s "$dockerd_pidfile" ]; then
    old=$(cat "$dockerd_pidfile")
    if [ "$(readlink "/proc/$old/exe" 2>/dev/null || true)" = "$(command -v dockerd)" ] &&
        tr '\0' ' ' <"/proc/$old/cmdline" | grep -qF -- "--pidfile $dockerd_pidfile"; then
        say "stopping dockerd (pid $old) left by an earlier run"
        stop_pid "$old"
    fi
    rm -f "$dockerd_pidfile"
fi

say "starting dockerd (log $work/dockerd.log)"
dockerd -H "$DOCKER_HOST" --data-root "$work/docker" --exec-root "$work/run/exec" \
    --pidfile "$dockerd_pidfile" --storage-driver overlay2 --iptables=false \
    --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none \
    --userland-proxy=false >"$work/dockerd.log" 2>&1 9>&- &
dockerd_pid=$!
for _ in $(seq 300); do
    docker version >/dev/null 2>&1 && break
    [ -e "/proc/$dockerd_pid" ] || die "dockerd exited at start; see $work/dockerd.log"
    sleep 0.1
done
docker version >/dev/null 2>&1 || die "dockerd did not answer within 30 s; see $work/dockerd.log"

# ---------------------------------------------------------------- images
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

base_hash=$(printf '%s\n' bookworm "$BASE_PACKAGES" | sha256sum | cut -c1-12)
base_image=local/mitogen-integration-base:bookworm-$base_hash
build_began=$EPOCHREALTIME
built=
if ! image_exists "$base_image"; then
    say "building $base_image with debootstrap from $mirror (takes a minute or two)"
    rootfs=$work/rootfs.tmp
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$rootfs" "$mirror" \
        >"$work/debootstrap.log" 2>&1 || die "debootstrap failed; see $work/debootstrap.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - "$base_image" >/dev/null
    rm -rf "$rootfs"
    built+=" base"
    docker images local/mitogen-integration-base --format '{{.Repository}}:{{.Tag}}' |
        grep -vxF "$base_image" | xargs -r docker rmi >/dev/null 2>&1 || true
fi

image_hash=$(
    cd "$support"
    {
        cat Dockerfile run-target.sh linear.cfg mitogen.cfg sshd_config "$requirements"
        sha256sum "$sdist" | cut -d' ' -f1
        echo "$base_image $py_prefix $py_version"
    } | sha256sum | cut -c1-12
)
image=local/mitogen-integration:$image_hash
if ! image_exists "$image"; then
    say "building $image"
    context=$work/build
    rm -rf "$context"
    mkdir -p "$context"
    cp "$support"/{Dockerfile,run-target.sh,linear.cfg,mitogen.cfg,sshd_config} "$requirements" "$sdist" "$context/"
    cp -r "$wheels" "$context/wheels"
    rm -f "$context/wheels/.complete"
    # The Python's own prefix, minus its site-packages (the image gets a fresh pip and
    # only the pinned packages), its test suite and tkinter.
    tar -C / -cf "$context/python.tar" \
        --exclude="${py_prefix#/}/lib/python3.12/site-packages/*" \
        --exclude="${py_prefix#/}/lib/python3.12/test" \
        --exclude="${py_prefix#/}/lib/python3.12/idlelib" \
        --exclude="${py_prefix#/}/lib/python3.12/tkinter" \
        --exclude='__pycache__' \
        "${py_prefix#/}"
    docker build --network none --build-arg "BASE_IMAGE=$base_image" \
        --build-arg "PYTHON_PREFIX=$py_prefix" --build-arg "SDIST_DIR=$SDIST_DIR" \
        -t "$image" "$context" >"$work/build.log" 2>&1 ||
        die "docker build failed; see $work/build.log"
    rm -rf "$context"
    built+=" test"
    # Older test images are of no further use.
    docker images local/mitogen-integration --format '{{.Repository}}:{{.Tag}}' |
        grep -vxF "$image" | xargs -r docker rmi >/dev/null 2>&1 || true
fi
build_seconds=$(awk -v a="$build_began" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
if [ -n "$built" ]; then
    say "built images:$built in ${build_seconds} s"
else
    say "images cached: $image"
fi

# ---------------------------------------------------------------- runs
stamp=$(date +%Y%m%d-%H%M%S)
run_dir=$work/runs/$stamp
snapshot=$run_dir/src
mkdir -p "$snapshot"
# A snapshot of the code under test, so edits made while this runs do not mix in.
tar -C "$here" --exclude=__pycache__ -c mitogen ansible_mitogen | tar -C "$snapshot" -x
# It is mounted read-only: compile it now (same interpreter build as in the image).
"$py312" -m compileall -q "$snapshot" >/dev/null || die "could not compile $snapshot"
commit=$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$here" status --porcelain -- mitogen ansible_mitogen 2>/dev/null | wc -l) || dirty=unknown
say "run directory: $run_dir (code at commit $commit, $dirty locally changed files under mitogen/ and ansible_mitogen/)"

# The patches of expected.toml, applied to copies of the targets' directories taken
# from the sdist; each patched directory is mounted over the image's for both of the
# target's runs. A patch must apply exactly (no fuzz): if ansible-core's files change,
# it is looked at again.
declare -A patch_dirs=()   # target -> the target directories its patches touch
while IFS=$'\t' read -r target patch_file; do
    [ -n "$target" ] || continue
    pdir=$run_dir/patched/$target
    mapfile -t dirs < <(sed -n 's|^+++ [^/]*/\([^/[:space:]]*\)/.*|\1|p' "$patch_file" | sort -u)
    [ "${#dirs[@]}" -gt 0 ] || die "$patch_file patches no file (want paths a/TARGET/FILE and b/TARGET/FILE)"
    for d in "${dirs[@]}"; do
        grep -qx -- "$d" <<<"$sdist_targets" || die "$patch_file patches $d/, which is not an integration target"
        [ ! -d "$pdir/$d" ] || continue
        mkdir -p "$pdir"
        tar -xzf "$sdist" -C "$pdir" --strip-components=4 "$SDIST_DIR/test/integration/targets/$d"
        patch_dirs[$target]+=" $d"
    done
    patch -p1 --batch --forward --fuzz=0 --no-backup-if-mismatch -r - -d "$pdir" \
        <"$patch_file" >"$run_dir/patch-$target.log" 2>&1 ||
        die "$patch_file does not apply exactly to ansible-core $ANSIBLE_CORE_VERSION's targets; see $run_dir/patch-$target.log"
    say "$target runs with ${patch_file#"$here"/} (patched:${patch_dirs[$target]})"
done <<<"$patch_list"

start_job() {  # start_job TARGET STRATEGY N: run one container in the background
    local target=$1 strategy=$2 n=$3 tdir name d
    local -a mounts=()
    tdir=$run_dir/$strategy/$target
    mkdir -p "$tdir/results"
    name=mitogen-integration-$$-$n
    for d in ${patch_dirs[$target]:-}; do
        mounts+=(-v "$run_dir/patched/$target/$d:/opt/ansible-core/test/integration/targets/$d:ro")
    done
    # In the background, so that a signal to this script is handled at once (bash runs
    # traps only between foreground commands; `wait` is interrupted).
    timeout -k 30 "$target_timeout" docker run --rm --init --name "$name" \
        --label mitogen-integration --network none --hostname testhost \
        -v "$snapshot:/opt/mitogen:ro" -v "$tdir:/out" \
        -v "$tdir/results:/opt/ansible-core/test/results" "${mounts[@]}" \
        "$image" /opt/integration/run-target.sh "$strategy" "$target" "$verbosity" \
        >"$tdir/ansible-test.log" 2>&1 </dev/null 9>&- &
    job_container[$!]=$name
    job_info[$!]="$target $strategy $EPOCHREALTIME"
}

finish_job() {  # finish_job PID STATUS: record the exit status and time of a finished job
    local pid=$1 rc=$2 target strategy began tdir secs
    read -r target strategy began <<<"${job_info[$pid]}"
    docker rm -f "${job_container[$pid]}" >/dev/null 2>&1 || true
    unset "job_container[$pid]" "job_info[$pid]"
    tdir=$run_dir/$strategy/$target
    secs=$(awk -v a="$began" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    echo "$rc" >"$tdir/rc"
    echo "$secs" >"$tdir/seconds"
    printf '%s: %-28s %-15s exit %-3s %6s s  %s\n' "$script" "$target" "$strategy" "$rc" "$secs" "$tdir/ansible-test.log"
}

queue=()
for target in "${targets[@]}"; do
    for strategy in "${strategies[@]}"; do
        queue+=("$target $strategy")
    done
done
say "running ${#queue[@]} containers, $jobs_max at a time"
run_began=$EPOCHREALTIME
n=0
while [ "${#queue[@]}" -gt 0 ] || [ "${#job_container[@]}" -gt 0 ]; do
    while [ "${#queue[@]}" -gt 0 ] && [ "${#job_container[@]}" -lt "$jobs_max" ]; do
        n=$((n + 1))
        read -r target strategy <<<"${queue[0]}"
        queue=("${queue[@]:1}")
        start_job "$target" "$strategy" "$n"
    done
    done_pid=
    rc=0
    wait -n -p done_pid "${!job_container[@]}" || rc=$?
    [ -n "$done_pid" ] && [ -n "${job_info[$done_pid]:-}" ] || die "wait returned no job (status $rc)"
    finish_job "$done_pid" "$rc"
done
total_seconds=$(awk -v a="$run_began" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
wall_seconds=$(awk -v a="$script_began" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')

# ---------------------------------------------------------------- report
report=$run_dir/results.md
header=(
    "# ansible-core $ANSIBLE_CORE_VERSION integration targets: ${strategies[*]}"
    ""
    "- run: $stamp, mitogen commit $commit ($dirty locally changed files), logs in $run_dir"
    "- image: $image (controller and target Python $py_version), built this run:${built:- nothing} ($build_seconds s)"
    "- one fresh container (--network none) per target and strategy, $jobs_max at a time"
    "- targets: $total_seconds s; whole script: $wall_seconds s (setup and image builds included)"
)
header_args=()
for line in "${header[@]}"; do header_args+=("--header=$line"); done
echo
verdict=0
"$py312" "$support/verdict.py" report "$expected" "$run_dir" "$report" \
    --strategies="${strategies[*]}" "${header_args[@]}" "${targets[@]}" || verdict=$?
cp "$report" "$work/results.md"
say "table written to $work/results.md (and $report)"

# Old run directories: keep the newest $keep_runs.
find "$work/runs" -mindepth 1 -maxdepth 1 -type d -name '20*' | sort | head -n "-$keep_runs" |
    xargs -r rm -rf
case "$verdict" in
0) say "all as expected" ;;
1) say "FAILED: not as expected (see the list above)" ;;
*) die "verdict.py failed (status $verdict)" ;;
esac
exit "$verdict"
