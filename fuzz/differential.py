"""``python -m fuzz.differential``: the same inputs on the sources and on the mypyc build.

    python -m fuzz.differential TARGET PATH [PATH ...] [--show N]

Every input (a file, or every file of a directory: a corpus, saved crashes)
goes through the target once on the sources (``E2AE_COMPILED=0``) and once
on the build ``deploy/compiled.py`` made (``E2AE_COMPILED=1``), each in its
own process, in the same order.  For each input the two outcomes are compared:

* its class: per step, forwarded, or refused with which error and SIP status;
  or an exception that escaped the target (a finding of the fuzzer);
* its text: the SDP forwarded, the refusal's message.

The build must behave as the sources: a different class is a defect (a
``TypeError`` or ``OverflowError`` of the compiled code where the sources
answer 488, say), and so is a different text.  Prints the outcome classes
counted on each build and the first differences; exit status 1 when any.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from fuzz.targets import TARGETS

REPO = Path(__file__).resolve().parent.parent
# The targets of the modules deploy/compiled.py compiles (their outcomes say what each step did).
COMPARED = ("sdp_model", "sdp_rules", "multipart")


def inputs(paths: list[Path]) -> list[Path]:
    """The files named, and the files of the directories named, sorted, each once."""
    found: set[Path] = set()
    for path in paths:
        found.update(p for p in path.iterdir() if p.is_file()) if path.is_dir() else found.add(path)
    return sorted(found)


def outcome_class(outcome: str) -> str:
    """An outcome without its text: ``forwarded`` per step, the refusal's error and status, or
    the exception that escaped."""
    if outcome.startswith("raised "):
        return outcome.split(":", 1)[0]
    if outcome == "None":
        return "none"
    if outcome.startswith("("):
        return "found"
    steps = []
    for line in outcome.split("\n"):
        words = line.split(" ", 2)
        if len(words) >= 2 and words[0].endswith("Error") and (words[1].isdigit() or words[1] == "-"):
            steps.append(f"{words[0]} {words[1]}")
        elif line.startswith("v="):
            steps.append("forwarded")
    return " / ".join(steps) or "none"


def run_child(target: str, files: list[Path]) -> None:
    """Print one JSON line per input: the target's outcome, or the exception it raised."""
    import logging

    logging.disable(logging.CRITICAL)
    if os.environ.get("E2AE_COMPILED") == "1":
        from fuzz.worker import use_compiled_build

        use_compiled_build()
    import sdp_rules

    one = TARGETS[target].build()
    print(json.dumps({"origin": os.path.dirname(sdp_rules.__file__)}), flush=True)
    for path in files:
        try:
            outcome = str(one(path.read_bytes()))
        except Exception as error:  # noqa: BLE001 - every escaping exception is an outcome to compare
            outcome = f"raised {type(error).__name__}: {error}"
        print(json.dumps({"outcome": outcome}))


def outcomes(target: str, listing: Path, compiled: bool) -> tuple[str, list[str]]:
    env = dict(os.environ, E2AE_COMPILED="1" if compiled else "0",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "fuzz.differential", "--child", target, str(listing)], cwd=REPO,
                          env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, check=True)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    return lines[0]["origin"], [line["outcome"] for line in lines[1:]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.differential", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=list(TARGETS))
    parser.add_argument("paths", nargs="+", type=Path, help="input files or directories (corpus, crashes)")
    parser.add_argument("--show", type=int, default=5, help="differences printed in full (default %(default)s)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # paths: one file listing the inputs, one a line
        run_child(args.target, [Path(line) for line in args.paths[0].read_text().splitlines()])
        return 0
    files = inputs(args.paths)
    listing = Path(os.environ.get("TMPDIR", "/tmp")) / f"e2ae-differential-{os.getpid()}.txt"
    listing.write_text("".join(f"{p.resolve()}\n" for p in files))
    try:
        source_origin, on_sources = outcomes(args.target, listing, compiled=False)
        build_origin, on_build = outcomes(args.target, listing, compiled=True)
    finally:
        listing.unlink()
    print(f"{args.target}: {len(files)} inputs; sources from {source_origin}, build from {build_origin}")
    for name, seen in (("sources", on_sources), ("build", on_build)):
        counted = Counter(outcome_class(o) for o in seen)
        print(f"  {name}: " + ", ".join(f"{n} {c}" for c, n in counted.most_common(8))
              + (f", {len(counted) - 8} more classes" if len(counted) > 8 else ""))
    differ = [(f, s, b) for f, s, b in zip(files, on_sources, on_build) if s != b]
    by_class = Counter((outcome_class(s), outcome_class(b)) for _, s, b in differ)
    print(f"  differences: {len(differ)} ({sum(n for (s, b), n in by_class.items() if s != b)} of class)")
    for (s, b), n in by_class.most_common():
        print(f"    {n:6d}  sources: {s}  |  build: {b}")
    for path, s, b in differ[:args.show]:
        print(f"  --- {path}\n  sources: {s[-600:]!r}\n  build:   {b[-600:]!r}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
