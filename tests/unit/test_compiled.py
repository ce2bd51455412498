"""The mypyc build of the rules and the plugin (deploy/compiled.py): used only when it is fresh."""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import time

import pytest

from deploy import compiled


PKG = "e2ae_compiled_probe"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A repository of one package with one compiled module, and its build, fresh."""
    (tmp_path / PKG).mkdir()
    for name in ("__init__", "a", "b"):
        (tmp_path / PKG / f"{name}.py").write_text("")
    build = tmp_path / "build" / "compiled"
    (build / PKG).mkdir(parents=True)
    (build / PKG / "__init__.py").write_text("")
    monkeypatch.setattr(compiled, "REPO", str(tmp_path))
    monkeypatch.setattr(compiled, "BUILD_DIR", str(build))
    monkeypatch.setattr(compiled, "STAMP", str(build / ".built"))
    monkeypatch.setattr(compiled, "COMPILED", {PKG: ("a",)})
    monkeypatch.setattr(compiled, "__file__", str(tmp_path / PKG / "__init__.py"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv(compiled.ENV, raising=False)
    past = time.time() - 60
    for f in (tmp_path / PKG).iterdir():
        os.utime(f, (past, past))
    (build / ".built").write_text(compiled._built_from())
    os.utime(build / ".built", (past + 30, past + 30))
    yield tmp_path
    sys.modules.pop(PKG, None)


def test_a_fresh_build_goes_first_on_the_path(tree):
    assert compiled.stale() is None
    assert compiled.use() is None
    assert sys.path[0] == compiled.BUILD_DIR
    assert sys.modules[PKG].__file__ == os.path.join(compiled.BUILD_DIR, PKG, "__init__.py")


def test_no_build_runs_the_sources_and_says_why(tree):
    os.unlink(compiled.STAMP)
    why = compiled.use()
    assert why is not None and "no compiled build" in why
    assert compiled.BUILD_DIR not in sys.path and PKG not in sys.modules


def test_a_source_newer_than_the_build_runs_the_sources(tree):
    # Any module of a compiled package counts, the ones copied as source too.
    os.utime(tree / PKG / "b.py")
    why = compiled.use()
    assert why is not None and f"{PKG}/b.py is newer" in why
    assert compiled.BUILD_DIR not in sys.path and PKG not in sys.modules


def test_a_module_removed_since_the_build_runs_the_sources(tree):
    os.unlink(tree / PKG / "b.py")  # its copy in the build would still import
    why = compiled.use()
    assert why is not None and "a module was added or removed" in why
    assert compiled.BUILD_DIR not in sys.path


def test_a_build_for_another_interpreter_runs_the_sources(tree):
    with open(compiled.STAMP, "w") as f:
        f.write(compiled._built_from().replace(compiled._tag(), ".cpython-312-x86_64-linux-gnu.so 3.12.1"))
    os.utime(compiled.STAMP, (time.time(), time.time()))
    why = compiled.use()
    assert why is not None and "3.12.1" in why
    assert compiled.BUILD_DIR not in sys.path and PKG not in sys.modules


def test_e2ae_compiled_0_runs_the_sources_without_a_word(tree, monkeypatch):
    monkeypatch.setenv(compiled.ENV, "0")
    assert compiled.use() is None
    assert compiled.BUILD_DIR not in sys.path and PKG not in sys.modules


@pytest.mark.skipif(os.environ.get("E2AE_COMPILED") != "1", reason="a compiled run only (E2AE_COMPILED=1)")
def test_a_compiled_run_imports_the_extensions():
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for package, names in compiled.COMPILED.items():
        for name in names:
            module = importlib.import_module(package if name == "__init__" else f"{package}.{name}")
            assert module.__file__.startswith(compiled.BUILD_DIR) and module.__file__.endswith(suffix), module
