"""The SDP rules and the plugin's pure modules compiled with mypyc, and when to use them.

``python -m deploy.compiled`` (``deploy/e2ae setup`` runs it) compiles the
modules of :data:`COMPILED` into C extensions for the interpreter that runs it
(the virtualenv's, Debian's python3.11, which Kamailio's app_python3 embeds) and
lays out :data:`BUILD_DIR` as a mirror of their packages: a compiled module as
its extension, every other module of the package as a copy of its source.  It
builds only when a source of those packages is newer than the last build.

The Python sources stay the truth: the build is put on the path of Kamailio's
plugin only (``plugin/kemi.py`` calls :func:`use`), never imported by the tools
or the tests unless asked (``E2AE_COMPILED=1``, ``tests/conftest.py``).  A
build that is missing, failed, older than a source or made for another
interpreter is not used: :func:`use` says why in one line and the sources run.
``E2AE_COMPILED=0`` runs the sources on purpose.

mypyc compiles the classes of these modules to native classes, so nothing may
monkeypatch them, add attributes outside their declared ones or rely on a
class ``__dict__`` (mypyc's "Differences from Python"); their unit tests run
on both.
"""

from __future__ import annotations

import glob
import importlib
import os
import shutil
import sys
import sysconfig
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# E2AE_COMPILED_DIR: another build directory (the tests use an empty one to see the fallback).
BUILD_DIR = os.environ.get("E2AE_COMPILED_DIR") or os.path.join(REPO, "build", "compiled")
STAMP = os.path.join(BUILD_DIR, ".built")
# Package -> the modules compiled (every other module of the package is copied as source).
# sdp_rules.errors stays Python: its exceptions are raised from everywhere, mediad and the
# plugin's other modules subclass them, and a native exception class loses the class-level
# defaults (``sip_status``) its instances fall back to.
COMPILED: dict[str, tuple[str, ...]] = {
    "sdp_rules": ("__init__", "sdp", "attrs", "bandwidth", "bundle", "media", "datachannel",
                  "plan", "handlers", "rules"),
    "plugin": ("body", "lifecycle", "record", "edge"),
}
ENV = "E2AE_COMPILED"


def _sources() -> list[str]:
    """Every file the build depends on: the packages' sources and this module."""
    files = [os.path.abspath(__file__)]
    for package in COMPILED:
        files += glob.glob(os.path.join(REPO, package, "*.py"))
    return sorted(files)


def _built_from() -> str:
    """What the stamp records: the interpreter, then the packages' modules (one removed
    since the build would still import from it)."""
    modules = sorted(os.path.relpath(f, REPO) for f in _sources()[1:])
    return f"{_tag()}\n{' '.join(modules)}\n"


def _tag() -> str:
    """The interpreter an extension is built for (its ABI tag and version)."""
    return f"{sysconfig.get_config_var('EXT_SUFFIX')} {sys.version.split()[0]}"


def stale() -> str | None:
    """Why the build cannot be used by this interpreter now, or None when it can."""
    try:
        with open(STAMP, encoding="utf-8") as f:
            built_for, _, built_from = f.read().partition("\n")
        built_at = os.stat(STAMP).st_mtime
    except OSError:
        return "no compiled build (run deploy/e2ae setup)"
    if built_for != _tag():
        return f"the compiled build is for {built_for}, this interpreter is {_tag()}"
    if built_for + "\n" + built_from != _built_from():
        return "a module was added or removed since the compiled build (run deploy/e2ae setup)"
    newer = [os.path.relpath(f, REPO) for f in _sources() if os.stat(f).st_mtime > built_at]
    if newer:
        return f"{newer[0]} is newer than the compiled build (run deploy/e2ae setup)"
    return None


def use() -> str | None:
    """Import :data:`COMPILED`'s packages from the build when it can be used; else return why
    the sources run.

    Must run before any module of those packages is imported.  The packages are imported
    here, so their modules come from the build whatever is put before it on ``sys.path``
    later (pytest puts the repository first again for each test module it collects).
    """
    if os.environ.get(ENV) == "0":
        return None
    why = stale()
    if why is None:
        if BUILD_DIR not in sys.path:
            sys.path.insert(0, BUILD_DIR)
        for package in COMPILED:
            importlib.import_module(package)
    return why


def build() -> None:
    """Compile into a fresh :data:`BUILD_DIR` (what was there goes first)."""
    from mypyc.build import mypycify
    from setuptools import setup

    started = time.time()  # a source edited during the build is newer than the build
    work = os.path.join(REPO, "build", "compiled-work")
    for d in (BUILD_DIR, work):
        shutil.rmtree(d, ignore_errors=True)
    paths = [f"{package}/{name}.py" for package, names in COMPILED.items() for name in names]
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        setup(name="e2ae-compiled", packages=[], py_modules=[],
              ext_modules=mypycify(paths, opt_level="3", target_dir=os.path.join(work, "c")),
              script_args=["-q", "build_ext", "--build-lib", BUILD_DIR, "--build-temp", os.path.join(work, "o")])
    finally:
        os.chdir(cwd)
    for package, names in COMPILED.items():
        for source in glob.glob(os.path.join(REPO, package, "*.py")):
            name = os.path.splitext(os.path.basename(source))[0]
            if name not in names:
                shutil.copy2(source, os.path.join(BUILD_DIR, package, name + ".py"))
    shutil.rmtree(work, ignore_errors=True)
    with open(STAMP, "w", encoding="utf-8") as f:
        f.write(_built_from())
    os.utime(STAMP, (started, started))


def main() -> int:
    why = stale()
    if why is None:
        return 0
    print(f"[e2ae] compiling the SDP rules and the plugin with mypyc ({why})", file=sys.stderr)
    build()
    return 0


if __name__ == "__main__":
    sys.exit(main())
