"""The benchmark's pure parts: the NG protocol's bencode, ramp summaries, the report table.

The benchmark itself (real relays, real packets) runs in smoke mode in
tests/integration/test_bench_smoke.py.
"""

from __future__ import annotations

import base64

import pytest

from bench import bencode
from bench.callsetup import cpu_per_call, parse_plugin_timings, timing_means_ms
from bench.rtpengine import _CRYPTO, _key_hex, _media, _sdp
from bench.run import SYSTEMS, markdown, parse_args, summarize_ramp


def _report(**parts) -> dict:
    """A report as bench.run writes it, nothing measured but what ``parts`` give."""
    report = {
        "started": "t", "mode": "full", "machine": {"cores": 2, "cpu_model": "cpu", "kernel": "k"},
        "config": {"cpus": {"generator": 0, "relay": 1}, "streams": 500, "packet_bytes": 172, "rounds": 1,
                   "max_loss": 0.001, "max_p99_ms": 20.0},
        "systems": {name: {"status": "not measured", "reason": "not selected"} for name in ("rtpengine", "mediad")},
        "relay": {}, "ratio": {}, "handshakes": {}, "memory": {"kamailio_worker": {}}, "call_setup": {},
    }
    report.update(parts)
    return report


def test_bencode_round_trip_of_an_ng_offer():
    command = {"command": "offer", "call-id": "c1", "flags": ["no-rtcp-attribute"], "n": -3,
               "sdp": "v=0\r\nm=audio 4000 RTP/AVP 0\r\n"}
    data = bencode.encode(command)
    assert data.startswith(b"d7:call-id2:c17:command5:offer")  # keys sorted (BEP 3)
    assert bencode.decode(data) == command


def test_bencode_keeps_non_utf8_strings_as_bytes():
    assert bencode.decode(bencode.encode({"k": b"\xff\x00"})) == {"k": b"\xff\x00"}


@pytest.mark.parametrize("bad", [b"", b"i12", b"5:abc", b"x", b"le trailing"])
def test_bencode_rejects_malformed_input(bad):
    with pytest.raises(ValueError):
        bencode.decode(bad)


def test_bencode_refuses_booleans():
    with pytest.raises(TypeError):
        bencode.encode({"x": True})


def test_sdes_crypto_line_parsing():
    key = bytes(range(30))
    sdp = _sdp("127.0.0.1", 4000, "RTP/SAVP",
               f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(key).decode()}|2^31")
    ((tag, suite, inline),) = _CRYPTO.findall(sdp)
    assert (tag, suite) == ("3", "AES_CM_128_HMAC_SHA1_80")
    assert _key_hex(inline) == key.hex()
    assert _media(sdp) == ("127.0.0.1", 4000)


def _step(rate, passed, received=1000, cpu=0.5):
    return {"rate": rate, "sent": 1000, "received": received, "foreign": 0, "verify_ok": 10, "verify_fail": 0,
            "payload_ok": received, "loss": 0.0, "tx_pps": rate, "rx_pps": rate * 0.999, "relay_cpu_seconds": cpu,
            "p50_us": 100.0, "p99_us": 900.0, "max_us": 2000.0, "passed": passed}


def test_ramp_result_is_the_last_passed_step_before_the_first_failure():
    ramp = summarize_ramp({"steps": [_step(1000, True), _step(2000, True), _step(3000, False), _step(4000, True)]})
    assert ramp["rate"] == 2000
    assert ramp["cpu_s_per_mpkt"] == pytest.approx(500.0)
    assert ramp["p99_ms"] == pytest.approx(0.9)
    assert ramp["checks"]["received"] == 4000


def test_ramp_result_is_the_best_passed_rate_when_the_generator_falls_short():
    short = dict(_step(3000, True), rx_pps=1500.0, tx_pps=1500.0)  # the generator could not send 3000/s
    ramp = summarize_ramp({"steps": [_step(1000, True), _step(2000, True), short, _step(4000, False)]})
    assert ramp["rate"] == 2000 and ramp["pps"] == pytest.approx(1998.0)


def test_ramp_without_a_passed_step_reports_zero():
    ramp = summarize_ramp({"steps": [_step(1000, False, received=0)]})
    assert ramp["pps"] == 0.0 and ramp["p99_ms"] is None


def test_smoke_arguments_are_small():
    args = parse_args(["--smoke"])
    assert args.streams <= 20 and args.rounds == 1 and max(args.rate_list) <= 5000


def test_table_says_not_measured_with_the_reason():
    reason = {"status": "not measured", "reason": "mediad does not import"}
    report = _report(
        mode="smoke", systems={"rtpengine": {"status": "measured"}, "mediad": reason},
        relay={"rtpengine": {d: {"median": {"pps": 1000.0, "cpu_s_per_mpkt": 3.0, "p50_ms": 0.1, "p99_ms": 0.2}}
                             for d in ("srtp_rtp", "rtp_srtp")}},
        ratio={"srtp_rtp": None, "rtp_srtp": None},
        handshakes=reason, memory={"kamailio_worker": reason}, call_setup=reason,
    )
    table = markdown(report)
    assert "| srtp_rtp | rtpengine | 1,000 |" in table
    assert "| srtp_rtp | mediad | not measured |" in table
    assert "mediad does not import" in table
    assert set(SYSTEMS) == {"rtpengine", "mediad"}


def test_memory_only_repeats_on_fresh_processes_and_reports_medians(monkeypatch):
    from bench import run

    args = parse_args(["--memory-only", "--systems", "mediad", "--rounds", "3"])
    assert args.memory_only and args.rounds == 3
    samples = iter([(40.0, 9.0), (30.0, 12.0), (35.0, 10.0)])

    def once(name, sessions, cpus, workdir):
        established, reserved = next(samples)
        return {"status": "measured", "rss_kib_per_1000": established, "rss_reserved_kib_per_1000": reserved}

    monkeypatch.setattr(run, "measure_memory_once", once)
    result = run.measure_memory("mediad", 1000, {"relay": None}, "unused", repeats=3)
    assert result["rss_kib_per_1000"] == 35.0 and result["rss_reserved_kib_per_1000"] == 10.0
    assert len(result["samples"]) == 3


def test_free_ports_are_never_in_the_relays_media_ranges():
    """A generator or sink port inside a relay's media range could be taken by the relay first."""
    from bench import mediad_side, procs, rtpengine

    low, high = procs.MEDIA_PORTS
    assert low <= min(mediad_side.ACCESS_PORTS[0], mediad_side.CORE_PORTS[0])
    assert high >= max(mediad_side.ACCESS_PORTS[1], mediad_side.CORE_PORTS[1])
    engine = rtpengine.Rtpengine.__init__.__defaults__
    assert low <= min(engine) and high >= max(engine)
    ports = {procs.free_udp_port() for _ in range(300)}
    assert not [p for p in ports if low <= p <= high]


def _ramp_step(rate, tx, passed=True):
    return {"rate": rate, "tx_pps": tx, "rx_pps": tx, "passed": passed, "received": int(tx * 3), "verify_fail": 0,
            "verify_ok": 0, "payload_ok": int(tx * 3), "relay_cpu_seconds": 1.0, "p50_us": 100.0, "p99_us": 900.0}


def test_a_relay_that_never_failed_a_generator_limited_ramp_is_shown_as_a_lower_bound():
    """mediad passed every step but the generator fell short: '≥' on its figure and on the ratio."""
    limited = summarize_ramp({"steps": [_ramp_step(100_000, 100_000), _ramp_step(200_000, 150_000)]})
    failed = summarize_ramp({"steps": [_ramp_step(100_000, 100_000), _ramp_step(200_000, 99_000, passed=False)]})
    assert limited["never_failed"] and limited["generator_limited"] and not failed["never_failed"]
    report = _report(
        systems={"rtpengine": {"status": "measured"}, "mediad": {"status": "measured"}},
        relay={"mediad": {"srtp_rtp": {"rounds": [limited], "median": limited},
                          "rtp_srtp": {"rounds": [failed], "median": failed}},
               "rtpengine": {d: {"rounds": [failed], "median": failed} for d in ("srtp_rtp", "rtp_srtp")}},
        ratio={"srtp_rtp": 150_000 / 100_000, "rtp_srtp": 1.0},
    )
    table = markdown(report)
    assert "| srtp_rtp | mediad | ≥ 150,000 |" in table and "| ≥ 1.50 |" in table
    assert "| rtp_srtp | mediad | 100,000 |" in table and "| 1.00 |" in table
    assert "lower bound" in table


def test_every_generator_run_is_given_pylibsrtps_openssl_libsrtp(monkeypatch, tmp_path):
    """Debian's libsrtp2 (NSS) caps the generator: every run is given pylibsrtp's libsrtp (OpenSSL)."""
    import subprocess
    import types

    from pylibsrtp import _binding

    from bench import run

    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout='{"srtp_lib": "libsrtp2 2.7.0", "steps": []}', stderr="")

    monkeypatch.setattr(run.subprocess, "run", fake_run)
    stream = types.SimpleNamespace(dst=("127.0.0.1", 4000), tx_key="00" * 30, rx_key=None)
    run.run_generator([stream], ("127.0.0.1", 4001), ("127.0.0.1", 4002), 0, [1000], 1.0, None, str(tmp_path),
                      stop_on_fail=False)
    (argv,) = calls
    assert argv[argv.index("--libsrtp") + 1] == _binding.__file__ == run.openssl_libsrtp()


def test_call_setup_cpu_per_call_is_shown_for_the_highest_passed_pinned_step():
    before = {"kamailio": 10.0, "mediad": 5.0, "redis": 1.0}
    after = {"kamailio": 13.3, "mediad": 6.5, "redis": 1.36}
    assert cpu_per_call(before, after, 1500) == {"kamailio": 2.2, "mediad": 1.0, "redis": 0.24, "total": 3.44}

    def step(rate, passed, total):
        return {"rate": rate, "passed": passed,
                "edge_cpu_ms_per_call": {"kamailio": total - 1.5, "mediad": 1.2, "redis": 0.3, "total": total}}

    latency = {"p50_ms": 1.0, "p99_ms": 2.0}
    report = _report(call_setup={
        "status": "measured", "calls_per_second": 250,
        "steps": [step(200, True, 3.9), step(250, True, 3.5), step(300, False, 3.3)],
        "baseline": latency, "edge_latency": latency, "added_ms": {"p50": 0.0, "p99": 0.0},
        "invite_added_ms": {"p50": 0.0, "p99": 0.0}})
    table = markdown(report)
    assert ("| edge CPU per call at 250 calls/s pinned: Kamailio / mediad / Redis (total), ms | | "
            "2.00 / 1.20 / 0.30 (3.50) |") in table


def test_cpu_time_counts_this_process_to_well_under_a_clock_tick():
    import os
    import time

    from bench import procs

    before = procs.cpu_time(os.getpid())
    deadline = time.process_time() + 0.003
    while time.process_time() < deadline:  # 3 ms of CPU: under one 10 ms tick
        pass
    spent = procs.cpu_time(os.getpid()) - before
    assert 0.0025 < spent < 0.008  # a clock-tick count would say 0 or 0.01


def test_plugin_timings_are_read_from_the_plugins_histograms_and_differenced():
    from prometheus_client import CollectorRegistry, generate_latest

    from plugin.metrics import Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry)

    def reading():
        return parse_plugin_timings(generate_latest(registry).decode())

    metrics.sdp_seconds.labels("access_to_core").observe(0.010)  # before: not counted
    metrics.iq_latency.labels("release").observe(0.5)  # not a timing the report names
    before = reading()
    for seconds in (0.002, 0.004):
        metrics.sdp_seconds.labels("access_to_core").observe(seconds)
        metrics.iq_latency.labels("reserve").observe(seconds / 2)
    metrics.sdp_seconds.labels("core_to_access").observe(0.003)
    means = timing_means_ms(before, reading())
    assert means == {"invite_sdp": {"mean": 3.0, "count": 2}, "reserve_round_trip": {"mean": 1.5, "count": 2},
                     "answer_sdp": {"mean": 3.0, "count": 1}}
    latency = {"p50_ms": 1.0, "p99_ms": 2.0}
    table = markdown(_report(call_setup={
        "status": "measured", "calls_per_second": 0, "steps": [], "baseline": latency, "edge_latency": latency,
        "added_ms": {"p50": 0.0, "p99": 0.0}, "plugin_ms": means}))
    assert "| the INVITE's SDP in the plugin / of which mediad's RESERVE round trip, mean ms | | 3.00 / 1.50 |" in table
