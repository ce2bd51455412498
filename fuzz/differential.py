"""``python -m fuzz.differential``: the same inputs on the sources and on the mypyc build.

    python -m fuzz.differential TARGET PATH [PATH ...] [--mutations N --seed S] [--show N] [--save DIR]

Every input (a file, or every file of a directory: a corpus, saved crashes),
or ``N`` inputs mutated from them, goes through the target once on the
sources (``E2AE_COMPILED=0``) and once on the build ``deploy/compiled.py``
made (``E2AE_COMPILED=1``), each in its own process, in the same order.  For
each input the two outcomes are compared:

* its class: per step, forwarded, or refused with which error and SIP status;
  or an exception that escaped the target (a finding of the fuzzer);
* its text: the SDP forwarded, the refusal's message.

The build must behave as the sources: a different class is a defect (a
``TypeError`` or ``OverflowError`` of the compiled code where the sources
answer 488, say), and so is a different text.  Prints the outcome classes
counted on each build and the first differences; exit status 1 when any.

The mutations are made here (:func:`mutate`, from a seeded ``random.Random``),
not by libFuzzer: both processes must see the same inputs, and libFuzzer,
with no coverage from compiled code, keeps mutating its smallest input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

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


# Values that break parsers and typed code: empty, signs, numbers past 32 and 64 bits, JSON's
# infinity, text that is not UTF-8 (a lone byte, a surrogate's encoding), separators.
INTERESTING = (b"", b"0", b"-1", b"+1", b"65535", b"65536", b"2147483648", b"4294967296",
               b"18446744073709551616", b"9" * 40, b"1e999", b"nan", b"0x10", b"\xff", b"\xed\xa0\x80",
               b" ", b"  ", b":", b"/", b"*", b"IN IP6 ::", b"actpass", b"UDP/TLS/RTP/SAVPF",
               b"webrtc-datachannel", b"BUNDLE")


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    """One to four edits of ``data``: of its bytes, of its lines (delete, repeat, swap, splice
    from another input) and of its tokens (one replaced by an :data:`INTERESTING` value)."""
    for _ in range(rng.randint(1, 4)):
        lines = data.split(b"\n")
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        edit = rng.randrange(8)
        if edit == 0 and data:  # a byte changed
            k = rng.randrange(len(data))
            data = data[:k] + bytes([rng.randrange(256)]) + data[k + 1:]
        elif edit == 1 and data:  # a span removed
            k = rng.randrange(len(data))
            data = data[:k] + data[k + rng.randint(1, 16):]
        elif edit == 2:
            del lines[i]
            data = b"\n".join(lines)
        elif edit == 3:
            lines.insert(i, lines[j])
            data = b"\n".join(lines)
        elif edit == 4:
            lines[i], lines[j] = lines[j], lines[i]
            data = b"\n".join(lines)
        elif edit == 5:
            other = rng.choice(others).split(b"\n")
            lines.insert(i, other[rng.randrange(len(other))])
            data = b"\n".join(lines)
        else:  # a token of a line replaced
            tokens = re.split(rb"([ :/=\r])", lines[i])
            k = rng.randrange(0, len(tokens), 2)
            tokens[k] = rng.choice(INTERESTING)
            lines[i] = b"".join(tokens)
            data = b"\n".join(lines)
    return data


def stream(files: list[Path], mutations: int, seed: str) -> Iterator[bytes]:
    """The inputs: the files as they are, or ``mutations`` inputs mutated from them (the same
    for the same files and seed, in every process)."""
    corpus = [path.read_bytes() for path in files]
    if not mutations:
        yield from corpus
        return
    rng = random.Random(seed)
    for _ in range(mutations):
        yield mutate(rng.choice(corpus), rng, corpus)


def run_child(target: str, files: list[Path], mutations: int, seed: str) -> None:
    """Print one JSON line per input: the class of its outcome, a digest, the outcome's end."""
    import logging

    logging.disable(logging.CRITICAL)
    if os.environ.get("E2AE_COMPILED") == "1":
        from fuzz.worker import use_compiled_build

        use_compiled_build()
    import sdp_rules

    one = TARGETS[target].build()
    print(json.dumps({"origin": os.path.dirname(sdp_rules.__file__)}), flush=True)
    for data in stream(files, mutations, seed):
        try:
            outcome = str(one(data))
        except Exception as error:  # noqa: BLE001 - every escaping exception is an outcome to compare
            outcome = f"raised {type(error).__name__}: {error}"
        digest = hashlib.sha1(outcome.encode("utf-8", "surrogateescape")).hexdigest()
        print(json.dumps([outcome_class(outcome), digest, outcome[-600:]]))


def child(target: str, listing: Path, compiled: bool, mutations: int, seed: str) -> subprocess.Popen:
    env = dict(os.environ, E2AE_COMPILED="1" if compiled else "0", PYTHONHASHSEED="0",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "fuzz.differential", "--child", target, str(listing),
                             "--mutations", str(mutations), "--seed", seed], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.differential", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=list(TARGETS))
    parser.add_argument("paths", nargs="+", type=Path, help="input files or directories (corpus, crashes)")
    parser.add_argument("--mutations", type=int, default=0,
                        help="compare this many inputs mutated from those (default: the inputs themselves)")
    parser.add_argument("--seed", default="0", help="the mutations' seed (default %(default)s)")
    parser.add_argument("--show", type=int, default=5, help="differences printed in full (default %(default)s)")
    parser.add_argument("--save", type=Path, help="write the inputs that differ here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # paths: one file listing the inputs, one a line
        run_child(args.target, [Path(line) for line in args.paths[0].read_text().splitlines()], args.mutations,
                  args.seed)
        return 0
    files = inputs(args.paths)
    listing = Path(os.environ.get("TMPDIR", "/tmp")) / f"e2ae-differential-{os.getpid()}.txt"
    listing.write_text("".join(f"{p.resolve()}\n" for p in files))
    started = time.monotonic()
    sources = child(args.target, listing, False, args.mutations, args.seed)
    build = child(args.target, listing, True, args.mutations, args.seed)
    counted: dict[str, Counter] = {"sources": Counter(), "build": Counter()}
    by_class: Counter = Counter()
    shown: list[str] = []
    compared = 0
    try:
        origins = [json.loads(p.stdout.readline() or "{}").get("origin") for p in (sources, build)]
        for data, s_line, b_line in zip(stream(files, args.mutations, args.seed), sources.stdout, build.stdout):
            (s_class, s_digest, s_text), (b_class, b_digest, b_text) = json.loads(s_line), json.loads(b_line)
            counted["sources"][s_class] += 1
            counted["build"][b_class] += 1
            compared += 1
            if s_digest == b_digest:
                continue
            by_class[s_class, b_class] += 1
            name = hashlib.sha1(data).hexdigest()
            if len(shown) < args.show:
                shown.append(f"  --- input {compared} ({name})\n  sources: {s_text!r}\n  build:   {b_text!r}")
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                (args.save / name).write_bytes(data)
    finally:
        for proc in (sources, build):
            proc.stdout.close()
            proc.wait()
        listing.unlink()
    if sources.returncode or build.returncode:
        print(f"{args.target}: a comparing process failed (sources {sources.returncode}, build {build.returncode})")
        return 2
    print(f"{args.target}: {compared} inputs ({f'{args.mutations} mutated from ' if args.mutations else ''}"
          f"{len(files)} files) in {time.monotonic() - started:.0f} s; sources from {origins[0]}, "
          f"build from {origins[1]}")
    for name, seen in counted.items():
        print(f"  {name}: " + ", ".join(f"{n} {c}" for c, n in seen.most_common(8))
              + (f", {len(seen) - 8} more classes" if len(seen) > 8 else ""))
        escaped = [f"{n} {c}" for c, n in seen.items() if "raised" in c]
        print(f"    escaped the target (findings on this side): {', '.join(escaped) or 'none'}")
    differ = sum(by_class.values())
    print(f"  differences: {differ} ({sum(n for (s, b), n in by_class.items() if s != b)} of class)")
    for (s, b), n in by_class.most_common():
        print(f"    {n:6d}  sources: {s}  |  build: {b}")
    print("\n".join(shown))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
