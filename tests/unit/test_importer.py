"""Import over the wire: packages, related modules, negative caching,
namespace packages and per-hop caching."""

import pytest

import mitogen.master
import mitogen.parent
from tests import remote_helpers


def test_package_and_related_module_in_one_request(router):
    context = router.local()
    responder = router.responder
    before = responder.get_module_count
    path = context.call(remote_helpers.import_and_report, "mitogen_test_wirepkg")[0]
    assert path.startswith("master:")
    where = context.call(remote_helpers.import_and_report, "mitogen_test_wirepkg.helper")[0]
    assert where.startswith("master:")
    requests = responder.get_module_count - before
    assert requests == 1, "helper should have been sent ahead with the package"


def test_negative_answers_are_cached(router):
    context = router.local()
    responder = router.responder
    assert context.call(remote_helpers.try_import, "mitogen_no_such_mod").startswith("ImportError")
    after_first = responder.get_module_count
    assert context.call(remote_helpers.try_import, "mitogen_no_such_mod").startswith("ImportError")
    assert responder.get_module_count == after_first


def test_missing_submodule_of_remote_package_not_requested(router):
    context = router.local()
    context.call(remote_helpers.import_and_report, "mitogen_test_wirepkg")
    before = router.responder.get_module_count
    result = context.call(remote_helpers.try_import, "mitogen_test_wirepkg.absent")
    assert result.startswith("ImportError")
    assert router.responder.get_module_count == before


def test_namespace_package(router):
    context = router.local()
    path, name = context.call(remote_helpers.import_and_report, "mitogen_test_nspkg.mod", "NAME")
    assert name == "nspkg.mod" and path.startswith("master:")


def test_stdlib_never_served(router):
    tup = router.responder._build_tuple("json")
    assert tup[3] is None


def test_grandchildren_fetch_once_per_hop(router):
    hop = router.local(name="hop")
    leaves = [router.local(via=hop) for _ in range(2)]
    counts = []
    for leaf in leaves:
        before = router.responder.get_module_count
        path, value = leaf.call(
            remote_helpers.import_and_report, "mitogen_test_wirepkg.extra", "ANSWER"
        )
        assert value == 42 and path.startswith("master:")
        counts.append(router.responder.get_module_count - before)
    assert counts[0] >= 1
    assert counts[1] == 0, "the intermediate context should have answered from its cache"


@pytest.mark.parametrize("modname", ["mitogen.parent", "mitogen.select", "mitogen.utils"])
def test_mitogen_modules_come_from_master(router, modname):
    context = router.local()
    path = context.call(remote_helpers.import_and_report, modname)[0]
    assert path.startswith("master:") and path.endswith(modname.split(".")[1] + ".py")


def test_via_hop_module_requests(router):
    """A child that becomes a parent for a via= hop fetches Mitogen's parent
    side (mitogen.parent and the modules it is split into) in as few
    GET_MODULE requests as before the split: the function's own module, the
    connection method's, and one stdlib module that subprocess imports
    behind a platform check (msvcrt), answered negatively."""
    hop = router.local(name="hop")
    before = router.responder.get_module_count
    leaf = router.local(via=hop, name="leaf")
    assert leaf.call(remote_helpers.identity, 5) == 5
    assert router.responder.get_module_count - before <= 3


def test_bootstrap_budgets():
    assert len(mitogen.parent.get_stage0_command()) < 1024
    assert len(mitogen.parent.get_preamble()) <= 19108


SCANNED_SOURCE = """
import os.path
import a.b as ab
from . import sibling
from ..parent_mod import x, y
from .deep.er import *
from z import (w)


def later():
    import inside_function


class Holder:
    from lazy import thing
"""


def test_import_scan_finds_every_form():
    finder = mitogen.master.ModuleFinder()
    code = compile(SCANNED_SOURCE, "pkg/sub/mod.py", "exec")
    names = list(finder._scan_imports(code, "pkg.sub"))
    assert sorted(names) == sorted(
        [
            "os.path",
            "a.b",
            "pkg.sub",
            "pkg.sub.sibling",
            "pkg.parent_mod",
            "pkg.parent_mod.x",
            "pkg.parent_mod.y",
            "pkg.sub.deep.er",
            "z",
            "z.w",
            "inside_function",
            "lazy",
            "lazy.thing",
        ]
    )


def test_modules_another_finder_provides_are_not_fetched(router):
    # six.moves: the master has a package-like module object that no file backs;
    # the child's own six finder provides it, so it must not be fetched.
    import sys
    import types

    standin = types.ModuleType("mitogen_test_virtual")
    standin.__path__ = []
    sys.modules["mitogen_test_virtual"] = standin
    try:
        context = router.local()
        before = router.responder.get_module_count
        value, loader = context.call(remote_helpers.import_virtual, "mitogen_test_virtual", "x")
        assert (value, loader) == ("local", "VirtualModules")
        assert router.responder.get_module_count == before
    finally:
        del sys.modules["mitogen_test_virtual"]


def test_serve_only_answers_other_packages_not_found(router):
    router.responder.serve_only(("mitogen", "tests"))
    context = router.local()
    # the master has it (test_package_and_related_module_in_one_request imports it)
    assert router.responder._build_tuple("mitogen_test_wirepkg")[3] is not None
    assert context.call(remote_helpers.try_import, "mitogen_test_wirepkg").startswith("ImportError")
    path = context.call(remote_helpers.import_and_report, "mitogen.fakessh")[0]
    assert path.startswith("master:")
    assert router.responder.serves("mitogen.fakessh") and router.responder.serves("tests")
    assert not router.responder.serves("mitogenx") and not router.responder.serves(
        "typing_extensions"
    )


def test_children_never_ask_for_what_the_master_does_not_serve(router):
    """serve_only() travels to children (and theirs): a module outside it is not
    found without a request; a served one still comes from the master."""
    router.responder.serve_only(("mitogen", "tests"))
    hop = router.local(name="hop")
    for context in (hop, router.local(via=hop)):
        before = router.responder.get_module_count
        for name in ("mitogen_test_wirepkg", "mitogen_no_such_mod"):
            assert context.call(remote_helpers.try_import, name).startswith("ImportError")
        assert router.responder.get_module_count == before
        path = context.call(remote_helpers.import_and_report, "mitogen.fakessh")[0]
        assert path.startswith("master:")
