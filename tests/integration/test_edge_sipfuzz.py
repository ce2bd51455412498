"""The SIP-level fuzz (``tests/sipfuzz``) against a real edge: Kamailio + plugin, mediad, Redis.

``test_sip_fuzz`` runs a bounded number of cases (a few hundred messages) from a fixed
seed (``E2AE_SIPFUZZ_SEED`` to change it; it is printed, and ``python -m tests.sipfuzz
--seed S --case N`` replays one case); ``make fuzz-sip`` runs thousands.  Each message
in ``tests/fixtures/sip/`` is a reproducer of a violation class the fuzz found, replayed
here on its own (``tests/fixtures/sip/README.rst`` lists them).
"""

from __future__ import annotations

import asyncio
import io
import os
import time

import pytest

from tests.conftest import REPO
from tests.sipfuzz.harness import EDGE_EXTRA, Fuzz, replay_case, report

pytestmark = pytest.mark.integration
EDGE_OPTIONS = {"edge_extra": EDGE_EXTRA}

SEED = os.environ.get("E2AE_SIPFUZZ_SEED", "e2ae-suite-1")
CASES = 100
FIXTURES = sorted((REPO / "tests" / "fixtures" / "sip").glob("*.sip"))


def _summary(stats, seed: str, started: float) -> str:
    out = io.StringIO()
    report(stats, seed, time.monotonic() - started, out=lambda line: print(line, file=out))
    return out.getvalue()


@pytest.mark.timeout(180)
def test_sip_fuzz_every_request_answered_nothing_left(edge):
    started = time.monotonic()
    fuzz = Fuzz(edge, SEED, concurrency=8, answer_timeout=3.0, settle_timeout=8.0, log=lambda *_: None)

    async def go():
        await fuzz.open()
        return await fuzz.run(fuzz.make_cases(CASES), batch=50)

    stats = asyncio.run(go())
    summary = _summary(stats, SEED, started)
    print("\n" + summary)
    assert stats.cases == CASES and sum(stats.sent.values()) >= 300, summary
    assert sum(stats.finals.values()) > 0, summary
    assert stats.violations == [], summary


@pytest.fixture(scope="module")
def replayed(edge):
    """Every reproducer replayed once, concurrently, in one run: (stats, case index by file name)."""
    started = time.monotonic()
    fuzz = Fuzz(edge, "fixtures", concurrency=8, answer_timeout=3.0, log=lambda *_: None)

    async def go():
        await fuzz.open()
        cases = [replay_case(path, fuzz.sides) for path in FIXTURES]
        for index, case in enumerate(cases):
            case.index = index
        return await fuzz.run(cases, batch=len(cases), warm=False)

    stats = asyncio.run(go())
    print("\n" + _summary(stats, "fixtures", started))
    return stats, {path.name: index for index, path in enumerate(FIXTURES)}


@pytest.mark.parametrize("fixture", [p.name for p in FIXTURES])
def test_reproducer_keeps_the_invariants(replayed, fixture):
    stats, index = replayed
    found = [f"{v.kind}: {v.detail}" for v in stats.violations if v.case == index[fixture]]
    assert found == [], "\n".join(found)
