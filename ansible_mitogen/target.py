"""Functions that run inside target contexts on behalf of Ansible tasks.

This module is imported over the wire into every target interpreter, so it
uses only the standard library and mitogen, runs on Python 3.6+, and never
imports Ansible's controller code.
"""

import importlib.machinery
import os
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import traceback
import types
import warnings

import mitogen.core
import mitogen.service

#: Process groups of commands and module runs in progress: killed when
#: this context shuts down, so nothing outlives an interrupted playbook.
_running = set()


def _kill_running():
    for pgid in list(_running):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


@mitogen.core.takes_router
def init_child(router):
    """First call into a new target: arrange the cleanup above and return
    facts the controller keeps."""
    mitogen.core.listen(router.broker, 'shutdown', _kill_running)
    return {'home_dir': os.path.expanduser('~'), 'pid': os.getpid()}


def exec_command(cmd, in_data=None, chdir=None, executable=None):
    """Run shell command `cmd` like an ssh login would, in a process group
    of its own; return `(rc, stdout, stderr)` as bytes."""
    argv = [executable or '/bin/sh', '-c', cmd]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE if in_data else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=chdir or None,
        close_fds=True, start_new_session=True)
    _running.add(proc.pid)
    try:
        stdout, stderr = proc.communicate(in_data or None)
    finally:
        _running.discard(proc.pid)
    return proc.returncode, mitogen.core.Blob(stdout), mitogen.core.Blob(stderr)


def _atomic_write(path, write, mode=None):
    """Create `path` through a temporary file in the same directory and a
    rename, so readers never see a partial file."""
    directory = os.path.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.ansible_mitogen_')
    try:
        with os.fdopen(fd, 'wb') as fp:
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
        raise IOError('transfer of %s to %s ended early' % (source, path))
    return metadata['size']


def read_path(path):
    """Return the bytes of `path`."""
    with open(path, 'rb') as fp:
        return mitogen.core.Blob(fp.read())


# ---------------------------------------------------------------------------
# Running AnsiballZ payloads in a fork of this warm interpreter.

#: Modules imported once per target so every forked module run finds them
#: already loaded (importing them costs most of a module run).
WARM_MODULES = ('ansible.module_utils.basic',
                'ansible.module_utils._internal._ansiballz._loader')

_warm = {}


class _PayloadZipFinder(object):
    """In a forked module run, find submodules of packages that came over
    the wire (their __path__ is empty) inside the payload's zip, which the
    AnsiballZ wrapper puts on sys.path."""

    def find_spec(self, fullname, path, target=None):
        parts = fullname.split('.')
        top = sys.modules.get(parts[0])
        if len(parts) < 2 or not isinstance(
                getattr(top, '__loader__', None), mitogen.core.Importer):
            return None
        for entry in list(sys.path):
            spec = importlib.machinery.PathFinder.find_spec(
                fullname, [os.path.join(entry, *parts[:-1])])
            if spec is not None:
                return spec
        return None


def _warm_up():
    """Import WARM_MODULES once; False if they cannot be had."""
    if 'ok' not in _warm:
        try:
            for name in WARM_MODULES:
                __import__(name)
            _warm['ok'] = True
        except ImportError:
            _warm['ok'] = False
    return _warm['ok']


def _run_in_child(payload, env, chdir, out_w, err_w):
    """Body of the forked child: run `payload` as __main__ with stdout and
    stderr on the given pipes; never returns."""
    code = 1
    try:
        try:
            os.setsid()
        except OSError:
            pass  # the parent's setpgid() came first: a group of our own already
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        sys.meta_path[:] = [f for f in sys.meta_path
                            if not isinstance(f, mitogen.core.Importer)]
        sys.meta_path.append(_PayloadZipFinder())
        os.environ.update(env)
        if chdir:
            os.chdir(chdir)
        main = types.ModuleType('__main__')
        main.__file__ = os.path.join(tempfile.gettempdir(), 'AnsiballZ_mitogen.py')
        sys.modules['__main__'] = main
        sys.argv = [main.__file__]
        try:
            exec(compile(payload, main.__file__, 'exec'), main.__dict__)
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                sys.stderr.write('%s\n' % (e.code,))
        except BaseException:
            traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _collect(pid, out_r, err_r):
    """Read both pipes to EOF, then reap the child."""
    chunks = {out_r: [], err_r: []}
    open_fds = [out_r, err_r]
    while open_fds:
        for fd in select.select(open_fds, [], [])[0]:
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                open_fds.remove(fd)
                os.close(fd)
    _, status = os.waitpid(pid, 0)
    rc = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    return rc, b''.join(chunks[out_r]), b''.join(chunks[err_r])


def run_ansiballz(payload, env, chdir=None, interpreter=None):
    """Run an AnsiballZ `payload` (the script stock Ansible pipes to python)
    in a fork of this interpreter, whose warm module_utils save most of the
    cost of a run; fall back to a new interpreter when the task wants a
    different Python or module_utils cannot be imported here.

    :returns: `(rc, stdout, stderr)` as bytes.
    """
    same_python = interpreter is None or (
        os.path.realpath(interpreter) == os.path.realpath(sys.executable))
    if not (same_python and _warm_up()):
        cmd = ' '.join(shlex.quote('%s=%s' % item) for item in env.items())
        return exec_command('%s %s' % (cmd, shlex.quote(interpreter or sys.executable)),
                            payload, chdir)
    sys.stdout.flush()
    sys.stderr.flush()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.close(err_r)
        _run_in_child(payload, env, chdir, out_w, err_w)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass
    _running.add(pid)
    os.close(out_w)
    os.close(err_w)
    try:
        rc, stdout, stderr = _collect(pid, out_r, err_r)
    finally:
        _running.discard(pid)
    return rc, mitogen.core.Blob(stdout), mitogen.core.Blob(stderr)
