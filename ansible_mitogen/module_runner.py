"""Running new-style Python modules in a target context.

Stock Ansible pipes every task an AnsiballZ payload: a wrapper script with
the module, its module_utils (a zip, the "modlib") and its arguments baked
in. Here the modlib travels once per context and module: it is kept in a
private directory (unpacked, so imports leave bytecode there for the next
run) that lives as long as the context, and each task sends only the
module's arguments. The module runs in a fork of this interpreter,
which imported `ansible.module_utils.basic` once from the first modlib, so
a run costs a fork instead of a Python start plus the imports. Each run
gets a fresh fork, so module globals never leak from one task into the
next, and the modlib stays on disk for modules that respawn under another
interpreter. The fork starts and exits as a fresh interpreter would
(fresh_child.py): AnsibleModule's atexit cleanup runs, output is flushed,
signals are as at start.

Where forking cannot serve (the task wants another Python, or this one
cannot import the modlib), a new interpreter runs `LAUNCHER` instead,
which does the same steps.

Imported over the wire into targets: standard library and mitogen only,
Python 3.6+, never Ansible controller code.
"""

import errno
import io
import json
import logging
import os
import pickle
import select
import selectors
import shutil
import sys
import tempfile
import threading
import types
import warnings
import zipfile

import mitogen.core
from ansible_mitogen import fresh_child, target

LOG = logging.getLogger("ansible_mitogen.module_runner")

#: What the AnsiballZ wrapper does before handing over to the module's
#: runner, after making the remote_tmp if the spec's `ensure_remote_tmp`
#: says stock's task directory for the module would be in it (else
#: AnsibleModule makes it, and warns that it did). Run by `python -c` with
#: the modlib path in argv[1] and the spec as JSON on stdin, or exec'd here
#: for the forked runs. Its `_loader.run_module()` call is the one the
#: wrapper of every supported ansible-core series makes (this side cannot
#: read compat.TABLE; tests/ansible/test_series.py checks it per series).
LAUNCHER = r"""
import json
import os
import sys


def make_remote_tmp(params):
    args = json.loads(params).get('ANSIBLE_MODULE_ARGS', {})
    if not args.get('_ansible_remote_tmp') or args.get('_ansible_tmpdir'):
        return
    path = os.path.expanduser(os.path.expandvars(args['_ansible_remote_tmp']))
    if not os.path.isdir(path):
        umask = os.umask(0o077)
        try:
            os.makedirs(path)
        except OSError:
            pass  # AnsibleModule reports it
        finally:
            os.umask(umask)


def launch(spec, modlib):
    if spec.get('ensure_remote_tmp'):
        make_remote_tmp(spec['params'])
    try:
        os.getcwd()
    except OSError:
        try:
            os.chdir(os.path.expanduser('~'))
        except OSError:
            os.chdir('/')
    if spec['rlimit_nofile']:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = min(hard, spec['rlimit_nofile'])
        if wanted != soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            except ValueError:
                pass
    sys.path = [modlib] + [p for p in sys.path if p not in ('', '.')]
    sys.argv = [os.path.join(os.path.dirname(modlib),
                             'AnsiballZ_%s.py' % spec['ansible_module'])]
    from ansible.module_utils._internal._ansiballz import _loader
    _loader.run_module(json_params=spec['params'].encode('utf-8'),
                       profile=spec['profile'], module_fqn=spec['module_fqn'],
                       modlib_path=modlib, extensions=spec['extensions'])


if __name__ == '__main__':
    launch(json.loads(sys.stdin.read()), sys.argv[1])
"""

#: Modules imported once per context from the first modlib, so that forked
#: runs find them loaded.
WARM_MODULES = ("ansible.module_utils.basic", "ansible.module_utils._internal._ansiballz._loader")

_state = {}


def _launcher():
    """The LAUNCHER's `launch` function, compiled once."""
    if "launch" not in _state:
        namespace = {"__name__": "ansible_mitogen_launcher"}
        exec(compile(LAUNCHER, "<ansible_mitogen launcher>", "exec"), namespace)
        _state["launch"] = namespace["launch"]
    return _state["launch"]


def _cache_dir(router):
    """This context's modlib directory, removed when the context shuts down."""
    if "dir" not in _state:
        path = tempfile.mkdtemp(prefix="ansible_mitogen_modlib_")
        mitogen.core.listen(
            router.broker, "shutdown", lambda: shutil.rmtree(path, ignore_errors=True)
        )
        _state["dir"] = path
    return _state["dir"]


def _store_modlib(path, data):
    """Unpack modlib zip `data` into directory `path`, where imports leave
    compiled bytecode for the next run, with the sitecustomize.py the
    AnsiballZ wrapper adds for interpreters started with the modlib on
    PYTHONPATH (modules that respawn)."""
    tmp = tempfile.mkdtemp(dir=os.path.dirname(path))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(tmp)
    with open(os.path.join(tmp, "sitecustomize.py"), "w") as fp:
        fp.write("import sys\nsys.path.insert(0, %r)\n" % (path,))
    os.rename(tmp, path)


def _warm_up(modlib):
    """Import WARM_MODULES from `modlib` once; False if this interpreter
    cannot (e.g. too old for the controller's module_utils).

    basic.py imports `__main__`, which a Mitogen child fetches from its
    parent on demand: a stand-in keeps the mux's main module out of here.
    """
    if "warm" not in _state:
        sys.path.insert(0, modlib)
        stand_in = "__main__" not in sys.modules
        if stand_in:
            sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            for name in WARM_MODULES:
                __import__(name)
            _state["warm"] = True
        except Exception:
            _state["warm"] = False
        finally:
            sys.path.remove(modlib)
            if stand_in:
                del sys.modules["__main__"]
    return _state["warm"]


def _selector_class(base):
    """`base`, except that select() with nothing registered returns at once."""

    class Selector(base):
        def select(self, timeout=None):
            if not self.get_map():
                return []
            return base.select(self, timeout)

    return Selector


def _close_run_command_race():
    """AnsibleModule.run_command() can sleep a whole second after its command
    has ended: when both pipes report EOF before the command is reaped, its
    first poll() finds it still running and its second reaps it, so the loop
    goes round once more and selects on no pipes with a 1 s timeout (strace:
    `wait4(..., WNOHANG) = 0`, SIGCHLD, `wait4 = pid`, `poll([], 0, 1000)`).
    Stock Ansible loses that second too (1-5 of 100 loop items here). With no
    pipe left that loop always ends on its next test, so basic.py's selectors
    are given ones that return at once when nothing is registered."""
    basic = sys.modules.get("ansible.module_utils.basic")
    if basic is None or getattr(basic, "selectors", None) is not selectors:
        return
    shim = types.ModuleType("selectors")
    shim.__dict__.update(selectors.__dict__)
    for name in ("PollSelector", "SelectSelector"):
        if hasattr(selectors, name):
            setattr(shim, name, _selector_class(getattr(selectors, name)))
    basic.selectors = shim


def _point_packages_at(modlib):
    """Make `ansible` packages imported from an earlier modlib look into
    this one first, for the module_utils only this module ships."""
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__path__", None)
        if (name == "ansible" or name.startswith("ansible.")) and path is not None:
            path.insert(0, os.path.join(modlib, *name.split(".")))


def _read_to_eof(fd):
    chunks = []
    while True:
        data = os.read(fd, 65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _spare_main(spec_r, out_w, err_w):
    """Body of a spare child: become a fresh interpreter, then wait for the
    run's arguments on `spec_r` and run the module with stdout and stderr on
    the given pipes; exit quietly at EOF (the context is gone or shutting
    down). Never returns."""
    status, interrupted = 1, False
    try:
        try:
            os.setsid()
        except OSError:
            pass  # the parent's setpgid() came first: a group of our own already
        fresh_child.reset(out_w, err_w, keep=(spec_r,))
        data = _read_to_eof(spec_r)
        os.close(spec_r)
        if not data:
            os._exit(0)
        spec, modlib, env, chdir = pickle.loads(data)
        try:
            os.environ.update(env)
            target.enter_directory(chdir)
            sys.dont_write_bytecode = False  # the next run imports the modlib's bytecode
            _point_packages_at(modlib)
            _close_run_command_race()
            _launcher()(spec, modlib)
            status = 0
        except BaseException as e:
            interrupted = isinstance(e, KeyboardInterrupt) and sys.version_info >= (3, 8)
            status = fresh_child.exit_status(e)
    finally:
        fresh_child.finish(status, interrupted)


def _fork_spare():
    """Fork a spare child; return `(pid, spec_w, out_r, err_r)`."""
    sys.stdout.flush()
    sys.stderr.flush()
    spec_r, spec_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        for fd in (spec_w, out_r, err_r):
            os.close(fd)
        _spare_main(spec_r, out_w, err_w)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass
    target.running.add(pid)
    for fd in (spec_r, out_w, err_w):
        os.close(fd)
    return pid, spec_w, out_r, err_r


#: Guards the spare: runs may come from more than one thread.
_spare_lock = threading.Lock()


def _take_spare():
    """The spare forked during the last run, or a new one; a new spare is
    forked for the next run meanwhile."""
    with _spare_lock:
        spare = _state.pop("spare", None) or _fork_spare()
    return spare


def _put_next_spare():
    spare = _fork_spare()
    with _spare_lock:
        spare, _state["spare"] = _state.get("spare"), spare
    if spare is not None:
        _discard(spare)


def _discard(spare):
    pid, spec_w, out_r, err_r = spare
    for fd in (spec_w, out_r, err_r):
        os.close(fd)
    os.waitpid(pid, 0)
    target.running.discard(pid)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
    return target.shell_status(rc), b"".join(chunks[out_r]), b"".join(chunks[err_r])


def _run_forked(spec, modlib, env, chdir):
    """Run the module in a spare child, and fork the next run's spare while
    it runs, so that neither the fork nor the child's reset to a fresh
    interpreter is on the next run's critical path. Each child serves one
    run: module globals never leak from one task into the next."""
    run = pickle.dumps((spec, modlib, env, chdir), 2)
    spare = _take_spare()
    try:
        _write_all(spare[1], run)
    except OSError:  # the spare died (killed?): use a new one
        _discard(spare)
        spare = _fork_spare()
        _write_all(spare[1], run)
    pid, spec_w, out_r, err_r = spare
    os.close(spec_w)
    try:
        _put_next_spare()
        return _collect(pid, out_r, err_r)
    finally:
        target.running.discard(pid)


@mitogen.core.takes_router
def run_module(spec, digest, modlib_data, env, chdir, interpreter, router):
    """Run the module described by `spec` (the AnsiballZ wrapper's
    arguments, less the zip) with modlib `digest`.

    :param modlib_data: the modlib's bytes, or None to use the cached copy.
    :param interpreter: the Python the task asked for.
    :returns: `(rc, stdout, stderr)`, or None when `modlib_data` was None
        and this context has no copy yet.
    """
    modlib = os.path.join(_cache_dir(router), digest)
    if not os.path.exists(modlib):
        if modlib_data is None:
            return None
        _store_modlib(modlib, modlib_data)
    same_python = os.path.realpath(interpreter) == os.path.realpath(sys.executable)
    name = spec.get("module_fqn") or spec.get("ansible_module") or "?"
    if same_python and _warm_up(modlib):
        LOG.debug("module %s: running in a fork of pid %d", name, os.getpid())
        rc, stdout, stderr = _run_forked(spec, modlib, env, chdir)
    else:
        LOG.debug("module %s: running with %s", name, interpreter)
        try:
            rc, stdout, stderr = target.run_process(
                [interpreter, "-c", LAUNCHER, modlib], json.dumps(spec).encode(), chdir, env
            )
        except OSError as e:
            if e.filename != interpreter:
                raise
            # what the shell that runs stock's command says
            rc = 127 if e.errno == errno.ENOENT else 126
            stdout, stderr = b"", ("%s: %s\n" % (interpreter, e.strerror)).encode()
        rc = target.shell_status(rc)
    LOG.debug("module %s: rc %d", name, rc)
    return rc, mitogen.core.Blob(stdout), mitogen.core.Blob(stderr)
