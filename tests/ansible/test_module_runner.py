"""New-style Python modules through ansiballz.parse() and module_runner.run_module(),
with payloads built by the running ansible-core and a real local target context."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

import mitogen.core
import mitogen.parent
from ansible_mitogen import ansiballz, module_runner
from tests import remote_helpers

REPO = Path(__file__).resolve().parents[2]

#: A module that reports where and how it ran; `calls` shows whether module
#: globals survive from one run to the next.
PROBE_MODULE = """#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule
import os
import sys

calls = []


def main():
    module = AnsibleModule(argument_spec=dict(word=dict(type='str'), crash=dict(type='bool')))
    if module.params['crash']:
        raise RuntimeError('probe crashed on purpose')
    calls.append(1)
    main_module = sys.modules['__main__']
    module.exit_json(word=module.params['word'], pid=os.getpid(), ppid=os.getppid(),
                     calls=len(calls), executable=sys.executable, cwd=os.getcwd(),
                     env=os.environ.get('PROBE_ENV'), argv=sys.argv,
                     modlib=main_module._modlib_path, fqn=main_module._module_fqn)


if __name__ == '__main__':
    main()
"""


def build_payload(
    tmp_path: Path, args: dict[str, Any], source: str = PROBE_MODULE, name: str = "probe"
) -> bytes:
    """The AnsiballZ payload the running ansible-core pipes to python for module
    `name` (which names ansible-core's cache entry for its zip)."""
    from ansible.executor.module_common import modify_module
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

    if not any(type(f).__name__ == "_AnsibleCollectionFinder" for f in sys.meta_path):
        _AnsibleCollectionFinder()._install()
    path = tmp_path / ("%s.py" % name)
    path.write_text(source)
    built = modify_module(
        module_name=name,
        module_path=str(path),
        module_args=args,
        templar=Templar(loader=DataLoader()),
        task_vars={"ansible_python_interpreter": sys.executable},
    )
    return built.b_module_data


def run(
    context: mitogen.parent.Context,
    payload: ansiballz.Payload,
    send: bool,
    interpreter: str = sys.executable,
    env: dict[str, str] | None = None,
    chdir: str | None = None,
) -> Any:
    digest = hashlib.sha256(payload.modlib).hexdigest()
    data = mitogen.core.Blob(payload.modlib) if send else None
    return context.call(
        module_runner.run_module, payload.spec, digest, data, env or {}, chdir, interpreter
    )


def result(outcome: Any) -> dict[str, Any]:
    rc, stdout, _ = outcome
    assert rc == 0, outcome
    return json.loads(bytes(stdout))


@pytest.fixture
def probe(tmp_path: Path) -> ansiballz.Payload:
    parsed = ansiballz.parse(build_payload(tmp_path, {"word": "hello"}))
    assert parsed is not None
    return parsed


def test_parse_reads_back_the_wrapper_arguments(probe: ansiballz.Payload) -> None:
    assert probe.spec["ansible_module"] == "probe"
    assert probe.spec["module_fqn"] == "ansible.legacy.probe"
    assert json.loads(probe.spec["params"])["ANSIBLE_MODULE_ARGS"]["word"] == "hello"
    names = zipfile.ZipFile(io.BytesIO(probe.modlib)).namelist()
    assert "ansible/module_utils/basic.py" in names
    assert "ansible/legacy/probe.py" in names


def test_parse_refuses_payloads_of_another_form(tmp_path: Path) -> None:
    payload = build_payload(tmp_path, {"word": "x"})
    assert ansiballz.parse(b'print("not a payload")\n') is None
    assert ansiballz.parse(payload[: payload.index(b"zip_data=")]) is None
    assert ansiballz.parse(payload.replace(b"\nprofile=", b'\nprofile=open("x"),\n#')) is None
    assert ansiballz.parse(payload.replace(b"zip_data='", b"zip_data='*")) is None


def test_modlib_travels_once_and_each_run_is_a_fresh_fork(router, probe) -> None:
    context = router.local(python_path=sys.executable)
    context_pid = context.call(os.getpid)
    assert run(context, probe, send=False) is None
    first = result(run(context, probe, send=True))
    second = result(run(context, probe, send=False))
    assert first["word"] == second["word"] == "hello"
    assert first["ppid"] == second["ppid"] == context_pid
    assert len({first["pid"], second["pid"], context_pid}) == 3
    assert first["calls"] == second["calls"] == 1
    assert first["fqn"] == "ansible.legacy.probe"
    assert os.path.isfile(os.path.join(first["modlib"], "ansible", "module_utils", "basic.py"))
    assert first["argv"] == [os.path.join(first["modlib"], "ansible", "legacy", "probe.py")]
    context.shutdown(wait=True)
    assert not os.path.exists(first["modlib"])


def test_environment_and_directory_apply_to_the_run_only(router, probe, tmp_path) -> None:
    context = router.local(python_path=sys.executable)
    outcome = result(run(context, probe, send=True, env={"PROBE_ENV": "set"}, chdir=str(tmp_path)))
    assert outcome["env"] == "set"
    assert outcome["cwd"] == str(tmp_path)
    assert context.call(os.getenv, "PROBE_ENV") is None
    assert context.call(os.getcwd) != str(tmp_path)


def test_another_interpreter_runs_the_module_in_a_new_process(router, probe) -> None:
    other = shutil.which("python3", path="/usr/bin")
    if other is None or os.path.realpath(other) == os.path.realpath(sys.executable):
        pytest.skip("no second Python at /usr/bin/python3")
    context = router.local(python_path=sys.executable)
    outcome = result(run(context, probe, send=True, interpreter=other))
    assert os.path.realpath(outcome["executable"]) == os.path.realpath(other)
    assert outcome["argv"] == [os.path.join(outcome["modlib"], "ansible", "legacy", "probe.py")]
    assert outcome["word"] == "hello"


def test_crashing_module_fails_with_its_error(router, tmp_path) -> None:
    payload = ansiballz.parse(build_payload(tmp_path, {"crash": True}))
    assert payload is not None
    context = router.local(python_path=sys.executable)
    rc, stdout, _ = run(context, payload, send=True)
    assert rc == 1
    failure = json.loads(bytes(stdout))
    assert failure["failed"] is True
    assert "probe crashed on purpose" in json.dumps(failure)
    after = ansiballz.parse(build_payload(tmp_path, {"word": "after"}))
    assert after is not None and after.modlib == payload.modlib
    assert result(run(context, after, send=False))["word"] == "after"


#: Reports what an interpreter starts with: run by a module, and by a fresh Python for
#: reference.
REPORT = r"""
import json
import logging
import os
import signal
import sys
import threading


def report():
    handlers = {}
    for signum in signal.valid_signals():
        handler = signal.getsignal(signum)
        if handler is signal.default_int_handler:
            handlers[int(signum)] = 'default_int_handler'
        elif handler in (signal.SIG_DFL, signal.SIG_IGN):
            handlers[int(signum)] = signal.Handlers(handler).name
        else:
            handlers[int(signum)] = repr(handler)
    stdio = {}
    for name in ('stdin', 'stdout', 'stderr'):
        stream = getattr(sys, name)
        stdio[name] = [stream.fileno(), stream.line_buffering, stream.write_through,
                       stream.encoding, stream.errors, stream is getattr(sys, '__%s__' % name)]
    return {
        'signals': handlers,
        'blocked': sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        'stdio': stdio,
        'fds': sorted(int(fd) for fd in os.listdir('/proc/self/fd')),
        'threads': [t.name for t in threading.enumerate()],
        'log_handlers': len(logging.getLogger().handlers),
        'log_level': logging.getLogger().level,
        'importers': [type(f).__module__ for f in sys.meta_path
                      if type(f).__module__.startswith('mitogen')],
    }
"""

#: A module that leaves work for the interpreter's exit: an atexit handler, a
#: non-daemon thread, a TemporaryDirectory never cleaned up, AnsibleModule's own
#: temporary directory, and a file never closed (which stays unflushed: runpy leaves
#: the module's globals unfinalised); `interrupt` ends it by KeyboardInterrupt.
EXIT_MODULE = (
    """#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule
import atexit
import tempfile
import time
"""
    + REPORT
    + """

LEFT = []


def write(path, text):
    with open(path, 'w') as fp:
        fp.write(text)


def write_later(path):
    time.sleep(0.2)
    write(path, 'thread')


def main():
    module = AnsibleModule(argument_spec=dict(dir=dict(type='str'),
                                              interrupt=dict(type='bool')))
    if module.params['interrupt']:
        raise KeyboardInterrupt()
    started_with = report()
    directory = module.params['dir']
    atexit.register(write, os.path.join(directory, 'atexit'), 'atexit')
    threading.Thread(target=write_later, args=(os.path.join(directory, 'thread'),)).start()
    stream = open(os.path.join(directory, 'left-open'), 'w')
    stream.write('left open')
    LEFT.append(stream)
    LEFT.append(tempfile.TemporaryDirectory(dir=directory))
    module.exit_json(report=started_with, module_tmpdir=module.tmpdir)


if __name__ == '__main__':
    main()
"""
)


def fresh_report() -> dict[str, Any]:
    """What a Python started like the test's local contexts reports."""
    out = subprocess.run(
        [sys.executable, "-c", REPORT + "print(json.dumps(report()))"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
    ).stdout
    return json.loads(out)


def files_in(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() if p.is_file() else "dir" for p in directory.iterdir()}


def test_a_forked_module_starts_and_exits_as_in_a_fresh_interpreter(router, tmp_path) -> None:
    context = router.local(python_path=sys.executable)
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    remote_tmp = tmp_path / "remote" / "tmp"
    parsed = ansiballz.parse(
        build_payload(
            build_dir,
            {"dir": str(first_dir), "_ansible_remote_tmp": str(remote_tmp)},
            source=EXIT_MODULE,
            name="exit_module",
        )
    )
    assert parsed is not None
    # as the action mixin says for a task without become
    payload = dataclasses.replace(parsed, spec=dict(parsed.spec, ensure_remote_tmp=True))
    expected = fresh_report()
    first = result(run(context, payload, send=True))
    assert first["report"] == expected
    assert files_in(first_dir) == {"atexit": "atexit", "thread": "thread", "left-open": ""}
    # AnsibleModule's temporary directory, in a remote_tmp made as stock's task
    # directory would have made it (else AnsibleModule warns that it made it)
    assert os.path.dirname(first["module_tmpdir"]) == str(remote_tmp)
    assert not os.path.exists(first["module_tmpdir"])
    assert "warnings" not in first
    assert [oct(p.stat().st_mode & 0o777) for p in (remote_tmp.parent, remote_tmp)] == [
        "0o700",
        "0o700",
    ]

    # what the context changes after its start is not inherited by later runs
    kept = context.call(remote_helpers.disturb_process_state, str(tmp_path))
    again = ansiballz.parse(
        build_payload(build_dir, {"dir": str(second_dir)}, source=EXIT_MODULE, name="exit_module")
    )
    assert again is not None
    second = result(run(context, again, send=False))
    assert second["report"] == expected
    assert files_in(second_dir) == {"atexit": "atexit", "thread": "thread", "left-open": ""}
    assert not os.path.exists(second["module_tmpdir"])
    assert os.path.isdir(kept)
    assert not (tmp_path / "context-atexit").exists()
    assert (tmp_path / "context-pending").read_text() == ""
    context.shutdown(wait=True)


def test_an_uncaught_keyboard_interrupt_ends_the_run_by_sigint(router, tmp_path) -> None:
    payload = ansiballz.parse(
        build_payload(tmp_path, {"interrupt": True}, source=EXIT_MODULE, name="exit_module")
    )
    assert payload is not None
    context = router.local(python_path=sys.executable)
    rc, _, stderr = run(context, payload, send=True)
    assert rc == 128 + signal.SIGINT  # as the shell stock runs it through reports it
    assert b"KeyboardInterrupt" in bytes(stderr)


RESPAWN_MODULE = """#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.respawn import has_respawned, respawn_module
import os
import sys


def main():
    module = AnsibleModule(argument_spec=dict(interpreter=dict(type='str')))
    if not has_respawned():
        respawn_module(module.params['interpreter'])
    module.exit_json(respawned=True, pid=os.getpid(), executable=sys.executable)


if __name__ == '__main__':
    main()
"""


def test_module_respawns_from_the_modlib_on_disk(router, tmp_path) -> None:
    other = shutil.which("python3", path="/usr/bin") or sys.executable
    payload = ansiballz.parse(
        build_payload(tmp_path, {"interpreter": other}, source=RESPAWN_MODULE, name="respawner")
    )
    assert payload is not None
    context = router.local(python_path=sys.executable)
    outcome = result(run(context, payload, send=True))
    assert outcome["respawned"] is True
    assert os.path.realpath(outcome["executable"]) == os.path.realpath(other)


def test_failure_before_the_module_starts_is_reported(router, probe) -> None:
    context = router.local(python_path=sys.executable)
    rc, stdout, stderr = run(context, probe, send=True, chdir="/nonexistent/directory")
    assert rc == 1
    assert b"FileNotFoundError" in bytes(stderr) and b"/nonexistent/directory" in bytes(stderr)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to act as another user",
)
def test_directories_another_user_may_not_enter_are_skipped() -> None:
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        (base / "open").mkdir(mode=0o755)
        inner = base / "closed" / "inner"
        inner.mkdir(parents=True)
        (base / "closed").chmod(0o700)
        code = (
            "import sys; sys.path.insert(0, %r); from ansible_mitogen.target import "
            'usable_directory as u; print(u(%r), u(%r), u(%r), u("/nonexistent/dir"))'
            % (str(REPO), str(inner), str(base / "closed"), str(base / "open"))
        )
        out = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-c",
                code,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert out == ["None", "None", str(base / "open"), "/nonexistent/dir"]
    finally:
        shutil.rmtree(base)


SELECTOR_MODULE = """#!/usr/bin/python
import time

from ansible.module_utils import basic


def main():
    module = basic.AnsibleModule(argument_spec={})
    started = time.monotonic()
    events = basic.selectors.PollSelector().select(30)
    waited = time.monotonic() - started
    rc, out, err = module.run_command(["echo", "ran"])
    module.exit_json(events=events, waited=waited, rc=rc, out=out, err=err)


if __name__ == '__main__':
    main()
"""


def test_run_command_does_not_wait_on_no_pipes(router, tmp_path) -> None:
    """AnsibleModule.run_command's race (a second's poll on no pipes after its
    command ended) is closed in forked runs: basic.py's selector returns at
    once when nothing is registered, and run_command's results are unchanged."""
    context = router.local(python_path=sys.executable)
    parsed = ansiballz.parse(build_payload(tmp_path, {}, source=SELECTOR_MODULE, name="selector"))
    assert parsed is not None
    report = result(run(context, parsed, send=True))
    assert report["events"] == []
    assert report["waited"] < 10, report  # a 30 s timeout, not slept
    assert (report["rc"], report["out"], report["err"]) == (0, "ran\n", "")
    context.shutdown(wait=True)
