"""The ansible-core facts of ansible_mitogen against the ansible-core releases themselves.

compat.TABLE holds what the controller side relies on per release series. The target side
(module_runner.LAUNCHER) cannot read it, so it is checked here against what every installed
series' ansible-core generates: the AnsiballZ payload's trailing call (compat's row of that
series, ansiballz.parse()) and the wrapper's call of `_loader.run_module()` (the launcher
makes the same call, with arguments that function takes). The ActionBase overrides and the
loader callers are checked in-process against the running ansible-core: run this file with
each series' Python (scripts/test.sh FULL=1 does) to check them all.
"""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ansible.plugins.action import ActionBase

from ansible_mitogen import ansiballz, compat, module_runner
from ansible_mitogen.mixins import ActionModuleMixin

#: The venv of each supported series, beside the one running the tests
#: (scripts/setup-ansible.sh makes them).
VENV_ROOT = Path(sys.prefix).parent
SERIES_VENVS: dict[tuple[int, int], Path] = {
    (2, 19): VENV_ROOT / ".venv-ansible-2.19",
    (2, 20): VENV_ROOT / ".venv-ansible-2.20",
    (2, 21): VENV_ROOT / ".venv",
}

#: Run by a series' Python: build a new-style module's payload as the action plugin
#: does and describe `_loader.run_module()`; prints JSON.
PROBE = r"""
import inspect, json, sys, tempfile, os
import ansible.release
from ansible.executor.module_common import modify_module
from ansible.module_utils._internal._ansiballz import _loader
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

_AnsibleCollectionFinder()._install()
path = os.path.join(tempfile.mkdtemp(), "probe.py")
with open(path, "w") as f:
    f.write("#!/usr/bin/python\nfrom ansible.module_utils.basic import AnsibleModule\n")
built = modify_module(module_name="probe", module_path=path, module_args={"a": 1},
                      templar=Templar(loader=DataLoader()),
                      task_vars={"ansible_python_interpreter": sys.executable})
os.remove(path)
os.rmdir(os.path.dirname(path))
parameters = [(p.name, p.kind.name, p.default is not p.empty)
              for p in inspect.signature(_loader.run_module).parameters.values()]
print(json.dumps({"version": ansible.release.__version__,
                  "payload": built.b_module_data.decode("utf-8"),
                  "run_module": parameters}))
"""


def probe(venv: Path) -> dict[str, Any]:
    python = venv / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{venv} is not installed: FULL=1 scripts/setup-ansible.sh")
    done = subprocess.run(
        [str(python), "-c", PROBE], capture_output=True, text=True, timeout=120, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def calls(tree: ast.AST, function: str) -> list[ast.Call]:
    """Calls in `tree` of a function or attribute named `function`."""
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and function in (getattr(node.func, "id", None), getattr(node.func, "attr", None))
    ]


def keywords(call: ast.Call) -> set[str]:
    assert not call.args, ast.unparse(call)
    return {k.arg for k in call.keywords if k.arg is not None}


def imported_from(tree: ast.AST, name: str) -> set[str]:
    """The modules `name` is imported from in `tree`."""
    return {
        node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and any(a.name == name for a in node.names)
    }


def run_module_call(tree: ast.AST) -> tuple[set[str], str, set[str]]:
    """The keywords of the `_loader.run_module(...)` calls in `tree` (all alike), the
    name `_loader` is called by, and the modules it is imported from."""
    found = [c for c in calls(tree, "run_module") if isinstance(c.func, ast.Attribute)]
    assert found, "no run_module() call"
    assert len({frozenset(keywords(c)) for c in found}) == 1, [ast.unparse(c) for c in found]
    owners = {c.func.value.id for c in found if isinstance(c.func.value, ast.Name)}  # type: ignore[attr-defined]
    assert len(owners) == 1, owners
    owner = owners.pop()
    return keywords(found[0]), owner, imported_from(tree, owner)


def test_the_table_covers_exactly_the_supported_series() -> None:
    assert set(compat.TABLE) == set(compat.SUPPORTED_SERIES)
    assert all(facts.series == key for key, facts in compat.TABLE.items())
    assert set(SERIES_VENVS) == set(compat.SUPPORTED_SERIES), "a venv per supported series"


@pytest.mark.parametrize("series", sorted(SERIES_VENVS), ids="%d.%d".__mod__)
def test_the_payload_and_the_launcher_match_what_the_series_generates(
    series: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    found = probe(SERIES_VENVS[series])
    assert compat.series(found["version"]) == series, found["version"]
    facts = compat.TABLE[series]
    payload = found["payload"]

    # the trailing call: its text and arguments as in the table, and parse() reads it back
    assert facts.ansiballz_call.decode() in payload
    wrapper = ast.parse(payload)
    main_calls = calls(wrapper, "_ansiballz_main")
    assert len(main_calls) == 1
    assert keywords(main_calls[0]) == facts.ansiballz_arguments
    monkeypatch.setattr(compat, "ANSIBLE_VERSION", found["version"])
    parsed = ansiballz.parse(payload.encode())
    assert parsed is not None, "ansiballz.parse() refuses the payload of %s" % found["version"]
    assert parsed.spec.keys() == ansiballz.SPEC_KEYS <= facts.ansiballz_arguments
    assert json.loads(parsed.spec["params"])["ANSIBLE_MODULE_ARGS"]["a"] == 1

    # the launcher calls run_module() as the series' wrapper does, from the same module
    stock_keywords, stock_owner, stock_from = run_module_call(wrapper)
    launcher = ast.parse(module_runner.LAUNCHER)
    our_keywords, owner, our_from = run_module_call(launcher)
    assert our_keywords == stock_keywords
    assert (owner, our_from) == (stock_owner, stock_from)
    assert {"%s.%s" % (m, owner) for m in our_from} <= set(module_runner.WARM_MODULES)

    # ... with every argument run_module() requires and only ones it takes
    parameters = {name: (kind, has_default) for name, kind, has_default in found["run_module"]}
    assert all(kind == "KEYWORD_ONLY" for kind, _ in parameters.values())
    required = {name for name, (_, has_default) in parameters.items() if not has_default}
    assert required <= our_keywords <= parameters.keys()

    # ... and reads only the spec keys the controller sends
    read = {
        node.slice.value
        for node in ast.walk(launcher)
        if isinstance(node, ast.Subscript)
        and getattr(node.value, "id", None) == "spec"
        and isinstance(node.slice, ast.Constant)
    }
    assert read and read <= ansiballz.SPEC_KEYS


# -- the running series ----------------------------------------------------------


def signature_problems(base: inspect.Signature, ours: inspect.Signature) -> list[str]:
    """How a call valid for method signature `base` could fail or bind differently for
    method signature `ours` (`self` first in both); empty if every such call works alike."""
    kinds = inspect.Parameter
    positional_kinds = (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
    keyword_kinds = (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
    our_params = list(ours.parameters.values())
    our_positional = [p for p in our_params if p.kind in positional_kinds]
    var_positional = any(p.kind is kinds.VAR_POSITIONAL for p in our_params)
    var_keyword = any(p.kind is kinds.VAR_KEYWORD for p in our_params)
    problems = []
    for index, param in enumerate(base.parameters.values()):
        if param.kind is kinds.VAR_POSITIONAL and not var_positional:
            problems.append("no *%s" % param.name)
        if param.kind is kinds.VAR_KEYWORD and not var_keyword:
            problems.append("no **%s" % param.name)
        if param.kind in positional_kinds:
            if index < len(our_positional):
                if index and our_positional[index].name != param.name:
                    problems.append(
                        "argument %d is %s, not %s"
                        % (index, our_positional[index].name, param.name)
                    )
            elif not var_positional:
                problems.append("%s cannot be passed by position" % param.name)
        if param.kind in keyword_kinds:
            mine = ours.parameters.get(param.name)
            if mine is None and not var_keyword:
                problems.append("%s cannot be passed by name" % param.name)
            elif (
                mine is not None and param.default is not param.empty and mine.default is mine.empty
            ):
                problems.append("%s has no default" % param.name)
    for param in our_params:
        required = param.default is param.empty and param.kind in positional_kinds + keyword_kinds
        if required and param.name not in base.parameters:
            problems.append("%s is required but ActionBase has no such argument" % param.name)
    return problems


def test_signature_problems_finds_incompatible_overrides() -> None:
    def base(self, path, sudoable=True, *, flag=None): ...
    def same(self, path, sudoable=True, *, flag=None): ...
    def loose(self, *args, **kwargs): ...
    def renamed(self, where, sudoable=True, *, flag=None): ...
    def required(self, path, sudoable, *, flag=None): ...
    def keyword_only(self, path, *, sudoable=True, flag=None): ...
    def missing(self, path, sudoable=True): ...
    def extra(self, path, sudoable=True, more=1, *, flag=None, must): ...

    def check(function: Any) -> list[str]:
        return signature_problems(inspect.signature(base), inspect.signature(function))

    assert check(same) == check(loose) == []
    assert check(renamed) == [
        "argument 1 is where, not path",
        "path cannot be passed by name",
        "where is required but ActionBase has no such argument",
    ]
    assert check(required) == ["sudoable has no default"]
    assert check(keyword_only) == ["sudoable cannot be passed by position"]
    assert check(missing) == ["flag cannot be passed by name"]
    assert check(extra) == ["must is required but ActionBase has no such argument"]


def test_the_mixin_overrides_exactly_the_listed_actionbase_methods() -> None:
    own = {name for name, value in vars(ActionModuleMixin).items() if inspect.isfunction(value)}
    overrides = compat.facts().action_overrides
    missing = sorted(name for name in overrides if not hasattr(ActionBase, name))
    assert missing == [], "ActionBase of ansible-core %s has no %s" % (
        compat.ANSIBLE_VERSION,
        missing,
    )
    assert overrides <= own, "listed in compat.TABLE but not in ActionModuleMixin"
    private = {name for name in own if name.startswith("_") and not name.startswith("__")}
    assert {name for name in private if hasattr(ActionBase, name)} == overrides


@pytest.mark.parametrize(
    "name",
    sorted(
        name
        for name, value in vars(ActionModuleMixin).items()
        if inspect.isfunction(value) and hasattr(ActionBase, name)
    ),
)
def test_each_override_takes_the_arguments_actionbase_takes(name: str) -> None:
    base = inspect.signature(getattr(ActionBase, name))
    ours = inspect.signature(getattr(ActionModuleMixin, name))
    assert signature_problems(base, ours) == [], "ansible-core %s ActionBase.%s%s vs ours %s" % (
        compat.ANSIBLE_VERSION,
        name,
        base,
        ours,
    )


def test_the_loader_callers_exist_in_the_running_series() -> None:
    facts = compat.facts()
    for name in facts.task_callers + facts.passthrough_callers:
        assert compat.code_of(name).co_name == name.rpartition(".")[2]
    with pytest.raises(compat.UnsupportedAnsibleVersion, match="has no function .*Base.gone"):
        compat.code_of("ansible.plugins.strategy:StrategyBase.gone")
