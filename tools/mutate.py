"""``make mutate``: mutation testing (mutmut 3) of the pure modules, each against its own tests.

    python -m tools.mutate [MODULE ...] [--jobs N] [--workdir DIR] [--survivors]

For each module of :data:`MODULES` a copy of the packages and tests is made
in ``DIR/<module>/`` with a ``[mutmut]`` section that mutates that module only
and runs only its own test files; ``mutmut run`` then runs there.  The
property tests draw 20 fixed examples each there (the ``mutate`` hypothesis
profile of ``tests/conftest.py``).

The table gives per module: mutants, killed (by a failing test or a timeout),
survived, no test at all, the survivors that are *equivalent* (no test can
kill them because the behaviour does not change: each matches a rule of
:mod:`tools.mutants_equivalent`, which says why), and two scores: killed /
all, and killed / behavioural (all but the equivalent ones).  ``--survivors``
prints the diff of every unclassified survivor.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tools.mutants_equivalent import equivalent_reason

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("iq", "sdp_rules", "mediad", "plugin")
RULES_TESTS = [
    "tests/unit/test_rules_general.py", "tests/unit/test_rules_srtp.py", "tests/unit/test_rules_reoffer.py",
    "tests/unit/test_rules_t38.py", "tests/unit/test_rules_tcp.py", "tests/unit/test_rules_state_isolation.py",
    "tests/unit/test_rules_copy_state.py", "tests/unit/test_rules_datachannel.py", "tests/unit/test_bandwidth.py",
    "tests/unit/test_rules_media_paths.py", "tests/unit/test_rules_datachannel_paths.py",
    "tests/unit/test_rules_bundle.py", "tests/unit/test_rules_bundle_golden.py",
]
# module -> its own tests
MODULES: dict[str, list[str]] = {
    "sdp_rules/sdp.py": ["tests/unit/test_sdp_model.py"],
    "sdp_rules/bandwidth.py": ["tests/unit/test_bandwidth.py"],
    "sdp_rules/attrs.py": RULES_TESTS,
    "sdp_rules/media.py": RULES_TESTS,
    "sdp_rules/rules.py": RULES_TESTS,
    "sdp_rules/datachannel.py": ["tests/unit/test_rules_datachannel.py", "tests/unit/test_rules_datachannel_paths.py"],
    "iq/messages.py": ["tests/unit/test_mediad_control_codec.py", *RULES_TESTS],
    "plugin/body.py": ["tests/unit/test_plugin_body.py"],
    "mediad/proto/stun.py": ["tests/unit/test_mediad_stun.py"],
    "mediad/proto/demux.py": ["tests/unit/test_mediad_demux.py"],
    "mediad/proto/framing.py": ["tests/unit/test_mediad_framing.py"],
    "mediad/proto/dtls_record.py": ["tests/unit/test_mediad_dtls_record.py", "tests/unit/test_mediad_dtls_compact.py"],
    "mediad/proto/srtp.py": ["tests/unit/test_mediad_srtp.py"],
    "mediad/proto/msrp.py": ["tests/unit/test_mediad_msrp.py"],
    "mediad/proto/t140.py": ["tests/unit/test_mediad_t140.py"],
}
KILLED = ("killed", "timeout", "caught by type check", "segfault")


@dataclass
class ModuleScore:
    module: str
    statuses: dict[str, str] = field(default_factory=dict)  # mutant name -> mutmut status
    diffs: dict[str, str] = field(default_factory=dict)  # survivor -> its diff
    equivalent: dict[str, str] = field(default_factory=dict)  # survivor -> why it is equivalent

    def count(self, *statuses: str) -> int:
        return sum(1 for s in self.statuses.values() if s in statuses)

    @property
    def total(self) -> int:
        return len(self.statuses)

    @property
    def killed(self) -> int:
        return self.count(*KILLED)

    @property
    def survivors(self) -> list[str]:
        return sorted(name for name, s in self.statuses.items() if s not in KILLED)

    @property
    def unclassified(self) -> list[str]:
        return [name for name in self.survivors if name not in self.equivalent]

    @property
    def behavioural(self) -> int:
        return self.total - len([n for n in self.survivors if n in self.equivalent])


def _prepare(workdir: Path, module: str) -> None:
    """A fresh copy of the packages and tests with a [mutmut] section for ``module``.

    Fresh: mutmut keeps the verdicts it finds in a work directory, and would not
    test again a mutant that changed tests now kill.
    """
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in (*PACKAGES, "tests"):
        target = workdir / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(REPO / name, target, ignore=ignore)
    config = configparser.ConfigParser(interpolation=None)
    config.read(REPO / "setup.cfg")
    config["mutmut"] = {
        "source_paths": "\n" + "\n".join(PACKAGES),
        "only_mutate": module,
        "pytest_add_cli_args_test_selection": "\n" + "\n".join(MODULES[module]),
        "pytest_add_cli_args": "\n-p\nno:cacheprovider\n-p\nno:randomly",
        "use_git_change_detection": "false",
    }
    with open(workdir / "setup.cfg", "w") as f:
        config.write(f)


def run_module(module: str, root: Path, jobs: int, log, *, run: bool = True) -> ModuleScore:
    """Mutate ``module`` and run its tests (``run``), or only read the results of the last run."""
    from mutmut.stats import status_by_exit_code

    workdir = root / module.replace("/", "_").removesuffix(".py")
    meta = workdir / "mutants" / (module + ".meta")
    score = ModuleScore(module)
    if run:
        _prepare(workdir, module)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", E2AE_HYPOTHESIS_PROFILE="mutate")
        proc = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs)], cwd=workdir,
                              env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace")
        log.write(proc.stdout)
        if proc.returncode != 0:
            print(f"{module}: mutmut failed (exit {proc.returncode}); see the log", file=sys.stderr)
            return score
    if not meta.exists():
        print(f"{module}: no results in {workdir}", file=sys.stderr)
        return score
    exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
    score.statuses = {name: status_by_exit_code[code] for name, code in exit_codes.items()}
    score.diffs = _diffs(workdir, score.survivors)
    for name, diff in score.diffs.items():
        reason = equivalent_reason(module, diff)
        if reason is not None:
            score.equivalent[name] = reason
    return score


_DIFF_SCRIPT = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
names = json.load(sys.stdin)
print(json.dumps({name: get_diff_for_mutant(name) for name in names}))
"""


def _diffs(workdir: Path, names: list[str]) -> dict[str, str]:
    """The diff of each named mutant (mutmut reads them from the workdir's mutants/)."""
    if not names:
        return {}
    proc = subprocess.run([sys.executable, "-c", _DIFF_SCRIPT], cwd=workdir, input=json.dumps(names),
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def table(scores: list[ModuleScore]) -> str:
    head = (f"{'module':<26} {'mutants':>7} {'killed':>6} {'survived':>8} {'no test':>7} {'equiv.':>6} "
            f"{'score':>6} {'behav.':>6}")
    lines = [head, "-" * len(head)]
    for s in scores:
        score = 100 * s.killed / s.total if s.total else 0.0
        behavioural = 100 * s.killed / s.behavioural if s.behavioural else 0.0
        lines.append(f"{s.module:<26} {s.total:>7} {s.killed:>6} {s.count('survived'):>8} {s.count('no tests'):>7} "
                     f"{len([n for n in s.survivors if n in s.equivalent]):>6} {score:>5.1f}% {behavioural:>5.1f}%")
    total = sum(s.total for s in scores)
    killed = sum(s.killed for s in scores)
    behavioural = sum(s.behavioural for s in scores)
    if total:
        lines.append("-" * len(head))
        lines.append(f"{'all':<26} {total:>7} {killed:>6} {'':>8} {'':>7} {total - behavioural:>6} "
                     f"{100 * killed / total:>5.1f}% {100 * killed / behavioural:>5.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.mutate", description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help="default: all of " + ", ".join(MODULES))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    parser.add_argument("--workdir", type=Path, default=REPO / ".mutate")
    parser.add_argument("--survivors", action="store_true", help="print the unclassified surviving mutants")
    parser.add_argument("--no-run", dest="run", action="store_false",
                        help="only read the results of the last run in --workdir")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s): {', '.join(unknown)}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    scores = []
    with open(args.workdir / "mutmut.log", "a" if not args.run else "w") as log:
        for module in args.modules or list(MODULES):
            score = run_module(module, args.workdir, args.jobs, log, run=args.run)
            scores.append(score)
            print(f"{module}: {score.killed}/{score.total} killed", flush=True)
    print(table(scores))
    summary = {s.module: {"statuses": s.statuses, "unclassified": s.unclassified, "equivalent": s.equivalent,
                          "diffs": s.diffs} for s in scores}
    (args.workdir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    if args.survivors:
        for s in scores:
            for name in s.unclassified:
                print(f"# {name}: {s.statuses[name]}")
                print("\n".join(line for line in s.diffs.get(name, "").splitlines()[2:]
                                if line[:1] in "-+" and not line.startswith(("---", "+++"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
