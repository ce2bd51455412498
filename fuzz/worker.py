"""One fuzz target under atheris: ``python -m fuzz.worker TARGET [libFuzzer options] [CORPUS...]``.

The target's modules are instrumented for coverage before they are imported;
everything after the target's name goes to libFuzzer as it is (``-runs=``,
``-timeout=``, ``-artifact_prefix=``, corpus directories...).

``E2AE_COMPILED=1`` runs the target on the mypyc build (``deploy/compiled.py``),
as Kamailio's plugin does, and stops at once when the build cannot be used.  A
compiled module is not Python bytecode: atheris cannot instrument it, so such a
run gets no coverage from it and should start from a corpus grown on the sources.
"""

from __future__ import annotations

import logging
import os
import sys

import atheris

from fuzz.targets import TARGETS


def use_compiled_build() -> None:
    """Import the compiled packages from the build when ``E2AE_COMPILED=1``, or exit saying why not."""
    from deploy import compiled

    why = compiled.stale()
    if why is not None:
        sys.exit(f"E2AE_COMPILED=1 but {why}")
    compiled.use()


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m fuzz.worker {{{','.join(TARGETS)}}} [libFuzzer options] [corpus...]")
    target = TARGETS[argv[1]]
    if os.environ.get("E2AE_COMPILED") == "1":
        use_compiled_build()
    logging.disable(logging.CRITICAL)  # the parsers log drops at debug level: not the fuzzer's output
    with atheris.instrument_imports(include=list(target.modules)):
        one = target.build()

    def test_one_input(data: bytes) -> None:
        one(data)  # its outcome is for fuzz.differential

    atheris.Setup([argv[0], *argv[2:]], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
