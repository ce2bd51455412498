"""One fuzz target under atheris: ``python -m fuzz.worker TARGET [libFuzzer options] [CORPUS...]``.

The target's modules are instrumented for coverage before they are imported;
everything after the target's name goes to libFuzzer as it is (``-runs=``,
``-timeout=``, ``-artifact_prefix=``, corpus directories...).
"""

from __future__ import annotations

import logging
import sys

import atheris

from fuzz.targets import TARGETS


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m fuzz.worker {{{','.join(TARGETS)}}} [libFuzzer options] [corpus...]")
    target = TARGETS[argv[1]]
    logging.disable(logging.CRITICAL)  # the parsers log drops at debug level: not the fuzzer's output
    with atheris.instrument_imports(include=list(target.modules)):
        one = target.build()
    atheris.Setup([argv[0], *argv[2:]], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
