"""The benchmark's smoke mode: the whole measuring path, in seconds, with no targets.

Runs ``python -m bench.run --smoke`` against rtpengine (installed by the
benchmark itself when missing) and against mediad, plus a few calls through
Kamailio + plugin + mediad, and checks that packets went through every relay
measured, that calls were answered, and that the results have their keys.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import callsetup, mediad_side
from bench.run import DIRECTIONS, ensure_tools
from tests.conftest import REPO

# The first run may apt-get install rtpengine-daemon and libsrtp2-dev.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TOP_KEYS = {"schema", "started", "mode", "machine", "config", "systems", "relay", "ratio", "handshakes", "memory",
            "call_setup"}
MEDIAN_KEYS = {"pps", "cpu_s_per_mpkt", "p50_ms", "p99_ms", "rounds"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    missing = ensure_tools(install=True)
    if "rtpengine-daemon" in missing:
        pytest.skip("rtpengine-daemon is not installable here (Debian package)")
    if "gcc" in missing or "libsrtp2-dev" in missing:
        pytest.skip(f"cannot build the load generator: {missing} not installable")
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--no-install", "--out", str(out), "--memory-sessions", "5"],
        cwd=str(REPO), capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = out.glob("*-smoke.json")
    return json.loads(result.read_text()), proc.stdout


def test_smoke_results_have_the_expected_keys(smoke):
    report, table = smoke
    assert TOP_KEYS <= set(report)
    assert report["mode"] == "smoke"
    assert report["machine"]["cores"] >= 1
    assert "| direction | system | pps |" in table


def _check_relay(report, name):
    assert report["systems"][name]["status"] == "measured", report["systems"][name]
    for direction in DIRECTIONS:
        entry = report["relay"][name][direction]
        assert MEDIAN_KEYS <= set(entry["median"])
        (ramp,) = entry["rounds"]
        assert ramp["checks"]["received"] > 0, f"{name} {direction}: no packet went through"
        if direction == "rtp_srtp":
            assert ramp["checks"]["verify_ok"] > 0 and ramp["checks"]["verify_fail"] == 0
        else:
            assert ramp["checks"]["payload_ok"] == ramp["checks"]["received"]
    assert report["memory"][name]["status"] == "measured"


def test_smoke_rtpengine_relays_both_directions(smoke):
    _check_relay(smoke[0], "rtpengine")


def test_smoke_mediad_relays_both_directions(smoke):
    report, _ = smoke
    why = mediad_side.available()
    if why is not None:
        assert report["systems"]["mediad"]["status"] == "not measured"
        pytest.skip(f"mediad cannot be benchmarked yet: {why}")
    _check_relay(report, "mediad")
    assert report["handshakes"]["status"] == "measured" and report["handshakes"]["per_second"] > 0


def test_smoke_call_setup_through_the_edge(smoke):
    report, _ = smoke
    why = callsetup.unavailable()
    if why is not None:
        assert report["call_setup"]["status"] == "not measured"
        pytest.skip(f"call setup cannot be benchmarked yet: {why}")
    cs = report["call_setup"]
    assert cs["status"] == "measured", cs
    assert cs["edge_latency"]["answered"] > 0 and cs["baseline"]["answered"] > 0
    # The INVITE alone is timed at the probe's callee, and is part of INVITE->200.
    for key in ("edge_latency", "baseline"):
        assert 0 < cs[key]["invite_forward_p50_ms"] < cs[key]["p50_ms"]
    assert cs["calls_per_second"] > 0
    assert report["memory"]["kamailio_worker"]["status"] == "measured"
