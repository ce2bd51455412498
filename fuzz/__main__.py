"""``python -m fuzz``: run the fuzz targets under atheris and print one line per target.

    python -m fuzz [TARGET ...] [--runs N] [--max-time S] [--timeout S] [--workdir DIR]

Each target runs in its own process (:mod:`fuzz.worker`) with libFuzzer's
``-runs`` (inputs), ``-timeout`` (the per-input time limit: a slower input is
a hang) and ``-max_total_time``.  Its corpus lives in ``DIR/corpus/TARGET``,
seeded from :mod:`fuzz.seeds` and grown by every run; a crashing or hanging
input is saved in ``DIR/crashes/TARGET/`` (libFuzzer stops at a finding: the
run is resumed, up to ``--max-findings`` times, until the inputs are done).
A saved input becomes a regression test once copied to
``tests/fixtures/fuzz/TARGET/`` (``tests/unit/test_fuzz.py`` replays those).

``E2AE_COMPILED=1`` runs the targets on the mypyc build (:mod:`fuzz.worker`).
Compiled code gives libFuzzer no coverage, so there every input of the corpus
is kept as a base for mutations (``-keep_seed=1``): grow the corpus on the
sources first (same ``--workdir``), then run the build on it.

The table gives inputs run, crashes, hangs, libFuzzer's coverage figures
(``cov``: instrumented edges reached, ``ft``: features) and the corpus size.
Exit status 1 when anything crashed or hung.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fuzz.targets import TARGETS

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RUNS = 1_000_000
DEFAULT_TIMEOUT = 10  # seconds per input
RSS_LIMIT_MB = 2048
_STATUS = re.compile(r"^#(\d+)\s+\w+\s+(?:cov: (\d+) ft: (\d+) )?corp: (\d+)/")
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


@dataclass
class Outcome:
    target: str
    inputs: int = 0
    crashes: int = 0
    hangs: int = 0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    seconds: float = 0.0
    findings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.crashes and not self.hangs


def seed_corpus(target: str, corpus: Path) -> int:
    """Write the target's seeds into ``corpus`` (named by content); return how many."""
    corpus.mkdir(parents=True, exist_ok=True)
    count = 0
    for data in TARGETS[target].seeds():
        (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)
        count += 1
    return count


def run_target(target: str, *, runs: int, workdir: Path, max_time: int = 0, timeout: int = DEFAULT_TIMEOUT,
               max_findings: int = 5, log=None) -> Outcome:
    """Fuzz one target for ``runs`` inputs (or ``max_time`` seconds); resume after each finding."""
    corpus = workdir / "corpus" / target
    crashes = workdir / "crashes" / target
    crashes.mkdir(parents=True, exist_ok=True)
    seed_corpus(target, corpus)
    outcome = Outcome(target)
    started = time.monotonic()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    while outcome.inputs < runs and len(outcome.findings) <= max_findings:
        remaining_time = 0
        if max_time:
            remaining_time = int(max_time - (time.monotonic() - started))
            if remaining_time <= 0:
                break
        command = [
            sys.executable, "-m", "fuzz.worker", target,
            f"-runs={runs - outcome.inputs}", f"-timeout={timeout}", f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-artifact_prefix={crashes}/", "-print_final_stats=1", "-print_pcs=0",
            *([f"-max_total_time={remaining_time}"] if remaining_time else []),
            *([f"-max_len={TARGETS[target].max_len}"] if TARGETS[target].max_len else []),
            # on the mypyc build the rules give no coverage: every input of the corpus stays a base
            *(["-keep_seed=1"] if os.environ.get("E2AE_COMPILED") == "1" else []),
            str(corpus),
        ]
        proc = subprocess.run(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace")
        done, artifact = _read(proc.stdout, outcome)
        outcome.inputs += done
        if log is not None:
            log.write(proc.stdout)
        if artifact is None:
            if proc.returncode != 0:  # no artifact and no clean end: count it, keep the output
                outcome.crashes += 1
                outcome.findings.append(f"exit status {proc.returncode}: {proc.stdout[-2000:]}")
            break
        if Path(artifact).name.startswith(("timeout-", "slow-")):
            outcome.hangs += 1
        else:
            outcome.crashes += 1
        outcome.findings.append(artifact)
    outcome.seconds = round(time.monotonic() - started, 1)
    outcome.corpus = sum(1 for _ in corpus.iterdir())
    return outcome


def _read(output: str, outcome: Outcome) -> tuple[int, str | None]:
    """(inputs run, artifact written or None) of one libFuzzer run; updates the coverage figures."""
    done = 0
    artifact = None
    for line in output.splitlines():
        status = _STATUS.match(line)
        if status:
            done = int(status.group(1))
            if status.group(2):
                outcome.cov = max(outcome.cov, int(status.group(2)))
                outcome.ft = max(outcome.ft, int(status.group(3)))
        finished = _DONE.match(line)
        if finished:
            done = int(finished.group(1))
        written = _ARTIFACT.search(line)
        if written:
            artifact = written.group(1)
    return done, artifact


def table(outcomes: list[Outcome]) -> str:
    head = f"{'target':<12} {'inputs':>10} {'crashes':>7} {'hangs':>5} {'cov':>6} {'ft':>7} {'corpus':>6} {'seconds':>8}"
    lines = [head, "-" * len(head)]
    for o in outcomes:
        lines.append(f"{o.target:<12} {o.inputs:>10} {o.crashes:>7} {o.hangs:>5} {o.cov:>6} {o.ft:>7} "
                     f"{o.corpus:>6} {o.seconds:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=f"default: all ({', '.join(TARGETS)})")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="inputs per target (default %(default)s)")
    parser.add_argument("--max-time", type=int, default=0, help="seconds per target, 0: no limit")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds per input (a hang)")
    parser.add_argument("--max-findings", type=int, default=5, help="findings per target before giving up")
    parser.add_argument("--workdir", type=Path, default=REPO / ".fuzz", help="corpus, crashes, logs, summary")
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s): {', '.join(unknown)}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for target in args.targets or list(TARGETS):
        with open(args.workdir / f"{target}.log", "w") as log:
            outcome = run_target(target, runs=args.runs, workdir=args.workdir, max_time=args.max_time,
                                 timeout=args.timeout, max_findings=args.max_findings, log=log)
        outcomes.append(outcome)
        print(f"{target}: {outcome.inputs} inputs, {outcome.crashes} crashes, {outcome.hangs} hangs, "
              f"cov {outcome.cov}, {outcome.seconds} s", flush=True)
        for finding in outcome.findings:
            print(f"  finding: {finding}", flush=True)
    print(table(outcomes))
    (args.workdir / "summary.json").write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
