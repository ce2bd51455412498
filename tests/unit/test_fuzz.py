"""The fuzz targets in the suite: seeds, saved findings, and a short atheris run of each.

``make fuzz`` runs each target for a million inputs; here every target gets
its seeds, every input saved in ``tests/fixtures/fuzz/<target>/`` (each one
crashed or hung a parser once: these are the regression tests of those
fixes), and a few seconds of coverage-guided fuzzing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.__main__ import run_target
from fuzz.targets import TARGETS

FINDINGS = Path(__file__).resolve().parent.parent / "fixtures" / "fuzz"
SHORT_RUN_INPUTS = 20000
SHORT_RUN_SECONDS = 3


def saved_findings() -> list[tuple[str, Path]]:
    return [(path.parent.name, path) for path in sorted(FINDINGS.glob("*/*")) if path.is_file()]


@pytest.fixture(scope="module")
def built():
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = TARGETS[name].build()
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(TARGETS))
def test_seeds_pass_the_target(name, built):
    one = built(name)
    seeds = list(TARGETS[name].seeds())
    assert seeds
    for data in seeds:
        one(data)


def test_every_saved_finding_names_a_target():
    assert saved_findings()
    assert {target for target, _ in saved_findings()} <= set(TARGETS)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name, path", saved_findings(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_saved_finding_no_longer_fails(name, path, built):
    built(name)(path.read_bytes())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(TARGETS))
def test_short_fuzz_run(name, tmp_path):
    outcome = run_target(name, runs=SHORT_RUN_INPUTS, max_time=SHORT_RUN_SECONDS, workdir=tmp_path, timeout=10,
                         max_findings=0)
    assert outcome.findings == []
    assert outcome.crashes == outcome.hangs == 0
    assert outcome.inputs > 0
