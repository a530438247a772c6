"""Functions that run inside target contexts on behalf of Ansible tasks.

This module is imported over the wire into every target interpreter, so it
uses only the standard library and mitogen, runs on Python 3.6+, and never
imports Ansible's controller code.
"""

import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile

import mitogen.core
import mitogen.service

LOG = logging.getLogger("ansible_mitogen.target")

#: Process groups of commands and module runs in progress: killed when
#: this context shuts down, so nothing outlives an interrupted playbook.
running = set()  # type: set[int]


def _kill_running():
    for pgid in list(running):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


@mitogen.core.takes_router
def init_child(router):
    """First call into a new target: arrange the cleanup above."""
    mitogen.core.listen(router.broker, "shutdown", _kill_running)
    LOG.debug(
        "ready: pid %d, uid %d, Python %s (%s)",
        os.getpid(),
        os.getuid(),
        sys.version.split()[0],
        sys.executable,
    )


_used = []


def first_use():
    """`(first, pid)`: `first` is True at the first call in this context, False after
    (the controller's -vvv line says from it whether a task's context was started for
    it or reused); `pid` is this context's process."""
    first = not _used
    if first:
        _used.append(True)
    return first, os.getpid()


def usable_directory(path):
    """`path` as a working directory, or None where this user may not enter
    it: a process started by stock Ansible's become inherits the login
    user's working directory even then, which we cannot reproduce."""
    if not path:
        return None
    try:
        os.stat(path)
    except PermissionError:
        return None  # a parent directory is closed to us
    except OSError:
        return path  # missing: let the caller fail as stock's `cd` would
    return path if os.access(path, os.X_OK) else None


def enter_directory(path):
    """chdir() to `path` unless usable_directory() says no."""
    path = usable_directory(path)
    if path:
        os.chdir(path)


def shell_status(returncode):
    """`returncode` as a shell reports it: 128 + N for a death by signal N.
    Stock Ansible runs modules through `/bin/sh -c`, so that is what its
    tasks see."""
    return 128 - returncode if returncode < 0 else returncode


def run_process(argv, in_data=None, chdir=None, env=None, merge_stderr=False):
    """Run `argv` in a session of its own with `env` added to ours; return
    `(rc, stdout, stderr)` as bytes (stderr in stdout if `merge_stderr`)."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if in_data else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        cwd=usable_directory(chdir),
        env=dict(os.environ, **env) if env else None,
        close_fds=True,
        start_new_session=True,
    )
    running.add(proc.pid)
    try:
        stdout, stderr = proc.communicate(in_data or None)
    finally:
        running.discard(proc.pid)
    return proc.returncode, stdout, stderr or b""


def login_shell():
    """This account's shell from the password database, as sshd runs it."""
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        shell = ""
    return shell or "/bin/sh"


def exec_command(cmd, in_data=None, chdir=None, executable=None, emulate_tty=False):
    """Run shell command `cmd` with `executable -c` (default: the login
    shell, as sshd would); return `(rc, stdout, stderr)` as bytes. With
    `emulate_tty`, output looks as it would through the terminal `ssh -tt`
    gives: both streams in stdout, lines ending in CRLF."""
    rc, stdout, stderr = run_process(
        [executable or login_shell(), "-c", cmd], in_data, chdir, merge_stderr=emulate_tty
    )
    if emulate_tty:
        stdout = stdout.replace(b"\n", b"\r\n")
    return rc, mitogen.core.Blob(stdout), mitogen.core.Blob(stderr)


def _atomic_write(path, write, mode=None):
    """Create `path` through a temporary file in the same directory and a
    rename, so readers never see a partial file."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ansible_mitogen_")
    try:
        with os.fdopen(fd, "wb") as fp:
            write(fp)
        if mode is None and os.path.exists(path):
            mode = os.stat(path).st_mode & 0o7777
        os.chmod(tmp, 0o600 if mode is None else mode)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_path(path, data, mode=None):
    """Write bytes `data` to `path` atomically."""
    _atomic_write(path, lambda fp: fp.write(data), mode)


@mitogen.core.takes_router
def transfer_file(source, path, router, mode=None):
    """Fetch controller file `source` from the FileService of the context
    that started us all (the mux) into `path`, atomically."""
    master = router.context_by_id(0)
    outcome = []

    def fetch(fp):
        outcome.append(mitogen.service.FileService.get(master, source, fp))

    _atomic_write(path, fetch, mode)
    ok, metadata = outcome[0]
    if not ok:
        os.unlink(path)
        raise IOError("transfer of %s to %s ended early" % (source, path))
    return metadata["size"]


def read_small_file(path, limit):
    """The bytes of `path` if it holds at most `limit` bytes, else None
    (it is then streamed by a FileService)."""
    with open(path, "rb") as fp:
        if os.fstat(fp.fileno()).st_size > limit:
            return None
        return mitogen.core.Blob(fp.read())


def expand_user(path):
    """`path` with a leading `~` or `~user` expanded, as `echo ~user` would."""
    return os.path.expanduser(path)


def make_tmp_dir(tmpdir, basefile):
    """Create `tmpdir` (after ~ and $VAR expansion) if needed and a new
    directory `basefile` inside it, both private to this user, like the
    shell's `mkdtemp` command of stock Ansible; return the new path."""
    parent = os.path.expandvars(os.path.expanduser(tmpdir))
    old_umask = os.umask(0o077)
    try:
        os.makedirs(parent, exist_ok=True)
        path = os.path.join(parent, basefile)
        os.mkdir(path)
    finally:
        os.umask(old_umask)
    return path


def remove_tree(path):
    """Remove `path` and everything below it, ignoring errors like `rm -rf`."""
    shutil.rmtree(path, ignore_errors=True)
