"""The fuzz targets of the code compiled with mypyc give the same outcomes on the build as on the sources.

Each target's seeds and saved findings, and inputs mutated from them, go through
``python -m fuzz.differential``:
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


def test_the_mutated_inputs_are_the_same_in_every_process_for_a_seed(tmp_path):
    (tmp_path / "a").write_bytes(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n")
    (tmp_path / "b").write_bytes(b"v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n")
    files = differential.inputs([tmp_path])
    once = list(differential.stream(files, 500, "s1"))
    assert once == list(differential.stream(files, 500, "s1"))
    assert once != list(differential.stream(files, 500, "s2"))
    assert len(set(once)) > 100


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
    status = differential.main([name, *map(str, paths), "--mutations", "3000", "--seed", "suite"])
    assert status == 0, capsys.readouterr().out
