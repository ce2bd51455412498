"""The fuzz targets of the code compiled with mypyc give the same outcomes on the build as on the sources.

Each target's seeds and saved findings go through ``python -m fuzz.differential``:
input by input, the error each step was refused with (class, SIP status,
message) or the SDP forwarded must be the same on both.  A typed parameter
refusing a value (``TypeError``), a native int overflowing, an attribute
typed too narrowly: each shows here as a different outcome.  Needs the build:
runs with ``E2AE_COMPILED=1`` (``deploy/e2ae test`` runs it so after the suite).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fuzz import differential
from fuzz.__main__ import seed_corpus

FINDINGS = Path(__file__).resolve().parent.parent / "fixtures" / "fuzz"


def test_outcome_classes():
    assert differential.outcome_class("raised TypeError: str object expected; got None") == "raised TypeError"
    assert differential.outcome_class("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n\nSdpPolicyError 488 no media") == (
        "forwarded / SdpPolicyError 488")
    assert differential.outcome_class("MultipartError - no closing boundary") == "MultipartError -"
    assert differential.outcome_class("('', 'v=0\\r\\n', '')") == "found"
    assert differential.outcome_class("None") == "none"


@pytest.mark.skipif(os.environ.get("E2AE_COMPILED") != "1", reason="compares with the build: E2AE_COMPILED=1")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", differential.COMPARED)
def test_the_build_refuses_and_forwards_as_the_sources(name, tmp_path, capsys):
    seed_corpus(name, tmp_path / "seeds")
    paths = [tmp_path / "seeds", *([FINDINGS / name] if (FINDINGS / name).is_dir() else [])]
    status = differential.main([name, *map(str, paths)])
    assert status == 0, capsys.readouterr().out
