"""The benchmark's pure parts: the NG protocol's bencode, ramp summaries, the report table.

The benchmark itself (real relays, real packets) runs in smoke mode in
tests/integration/test_bench_smoke.py.
"""

from __future__ import annotations

import base64

import pytest

from bench import bencode
from bench.callsetup import cpu_per_call, parse_plugin_timings, summarize, timing_means_ms
from bench.rtpengine import _CRYPTO, _key_hex, _media, _sdp
from bench.run import SYSTEMS, equal_load_latency, markdown, parse_args, ratio, summarize_ramp


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
    engine = rtpengine.Rtpengine.__init__.__defaults__[:2]  # port_min, port_max
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


def _cs_round(p50, fwd50, cps=None, cpu=None, status="measured", p99=None, fwd99=None):
    """One round of one call-setup system as bench.callsetup.measure_round returns it."""
    entry = {"status": status, "latency": {"p50_ms": p50, "p99_ms": p99 if p99 is not None else p50 * 2,
                                           "invite_forward_p50_ms": fwd50,
                                           "invite_forward_p99_ms": fwd99 if fwd99 is not None else fwd50 * 2}}
    if cps is not None:
        entry["calls_per_second"] = cps
        entry["steps"] = [{"rate": 100, "passed": True, "cpu_ms_per_call": cpu}]
    return entry


def test_call_setup_cpu_per_call_is_the_median_of_the_rounds_step_at_the_cpu_rate():
    before = {"kamailio": 10.0, "media": 5.0, "redis": 1.0}
    after = {"kamailio": 13.3, "media": 6.5, "redis": 1.36}
    assert cpu_per_call(before, after, 1500) == {"kamailio": 2.2, "media": 1.0, "redis": 0.24, "total": 3.44}

    def cpu(k):
        return {"kamailio": k, "media": 1.0, "redis": 0.0, "total": k + 1.0}

    rounds = [_cs_round(3.0, 2.0, 300, cpu(2.0)), _cs_round(3.5, 2.5, 400, cpu(2.4)),
              _cs_round(4.0, 3.0, 350, cpu(2.2))]
    # A step at another rate, or one that failed, is not the CPU figure.
    rounds[0]["steps"].insert(0, {"rate": 50, "passed": True, "cpu_ms_per_call": cpu(9.0)})
    rounds[1]["steps"].append({"rate": 100, "passed": False, "cpu_ms_per_call": cpu(9.0)})
    median = summarize(rounds, None, 100)
    assert median["calls_per_second"] == 350 and median["cpu_ms_per_call"]["kamailio"] == 2.2
    assert median["p50_ms"] == 3.5 and median["rounds"] == 3
    assert not median["calls_per_second_lower_bound"]  # a step failed: the figure is the system's limit
    rounds[1]["steps"].pop()
    assert summarize(rounds, None, 100)["calls_per_second_lower_bound"]


def test_call_setup_latency_is_added_over_the_baseline_of_the_same_round():
    baseline = [_cs_round(1.0, 0.5), _cs_round(2.0, 1.5), _cs_round(1.0, 0.5)]
    edge = [_cs_round(4.0, 3.0), _cs_round(5.5, 4.5), _cs_round(3.0, 2.0, status="failed")]
    median = summarize(edge, baseline, 100)
    # Round 1: 3.0 added, round 2: 3.5 added; the failed round 3 counts for nothing.
    assert median["added_ms"]["p50"] == pytest.approx(3.25)
    assert median["invite_added_ms"]["p50"] == pytest.approx(2.75)
    assert median["rounds"] == 2


def _cs_report(edge, reference, baseline, checks=None):
    def system(median):
        return {"status": "measured", "median": median}

    return {"status": "measured", "rounds": 3, "cpu_rate": 100,
            "systems": {"edge": system(edge), "reference": system(reference), "baseline": system(baseline)},
            "sdp_check": checks or {"edge": {"ok": True}, "reference": {"ok": True}}}


def test_call_setup_table_puts_the_edge_beside_the_reference_with_ratios_where_1_is_as_good():
    cpu_e = {"kamailio": 2.0, "media": 1.0, "redis": 0.5, "total": 3.5}
    cpu_r = {"kamailio": 0.7, "media": 0.5, "redis": 0.0, "total": 1.2}
    edge = {"added_ms": {"p50": 3.0, "p99": 6.0}, "invite_added_ms": {"p50": 2.0, "p99": 4.0}, "p50_ms": 3.5,
            "p99_ms": 7.0, "calls_per_second": 400, "cpu_ms_per_call": cpu_e}
    ref = {"added_ms": {"p50": 0.9, "p99": 1.5}, "invite_added_ms": {"p50": 0.8, "p99": 1.2}, "p50_ms": 1.4,
           "p99_ms": 2.5, "calls_per_second": 1200, "cpu_ms_per_call": cpu_r}
    base = {"p50_ms": 0.5, "p99_ms": 1.0, "calls_per_second": 2000, "calls_per_second_lower_bound": True,
            "cpu_ms_per_call": {"kamailio": 0.27, "media": 0.0, "redis": 0.0, "total": 0.27}}
    checks = {"edge": {"ok": True}, "reference": {"ok": False, "problems": ["core: proto RTP/AVP"]}}
    table = markdown(_report(call_setup=_cs_report(edge, ref, base, checks)))
    assert "| INVITE→200 added over bare Kamailio, p50, ms | 3.00 | 0.90 | — | 0.30 |" in table
    assert "| the INVITE alone, added, p99, ms | 4.00 | 1.20 | — | 0.30 |" in table
    # More is better; bare Kamailio passed every step of its ramp: a lower bound.
    assert "| calls/s with 0 failed, p99 < 500 ms | 400 | 1,200 | ≥ 2,000 | 0.33 |" in table
    assert "| CPU per call at 100 calls/s: Kamailio, ms | 2.000 | 0.700 | 0.270 | 0.35 |" in table
    assert "| CPU per call at 100 calls/s: mediad / rtpengine, ms | 1.000 | 0.500 | — | 0.50 |" in table
    assert "| CPU per call at 100 calls/s: all processes, ms | 3.500 | 1.200 | 0.270 | 0.34 |" in table
    assert "| SDPs toward core and access checked | same job ✓ | ✗ core: proto RTP/AVP | — | |" in table
    assert table.index("## Call setup") < table.index("## Relay throughput")
    assert ratio(2.0, 1.0, higher_is_better=True) == 2.0 and ratio(2.0, 1.0, higher_is_better=False) == 0.5
    assert ratio(0.0, 1.0, False) is None and ratio(None, 1.0, True) is None


def _relay_steps(rates_passed, p99_us, failed_at=None):
    steps = [dict(_ramp_step(rate, rate), p50_us=p99_us / 2, p99_us=p99_us) for rate in rates_passed]
    if failed_at:
        steps.append(dict(_ramp_step(failed_at, failed_at, passed=False), p50_us=None, p99_us=None))
    return {"steps": steps}


def test_relay_latency_is_compared_at_rates_both_relays_passed_in_every_round():
    rates = [10_000, 20_000, 40_000, 60_000, 80_000]
    report = _report(relay={
        # rtpengine failed at 80k in one round, 60k in the other: 40k is the highest both passed always.
        "rtpengine": {"srtp_rtp": {"rounds": [_relay_steps(rates[:4], 900.0, 80_000),
                                              _relay_steps(rates[:3], 700.0, 60_000)]}},
        "mediad": {"srtp_rtp": {"rounds": [_relay_steps(rates, 300.0), _relay_steps(rates, 500.0)]}},
    })
    (light, top) = equal_load_latency(report, "srtp_rtp")
    assert top["rate"] == 40_000 and light["rate"] == 20_000
    assert top["rtpengine_p99_ms"] == pytest.approx(0.8) and top["mediad_p99_ms"] == pytest.approx(0.4)
    assert equal_load_latency(report, "rtp_srtp") == []
    report["relay_latency"] = {"srtp_rtp": [light, top]}
    table = markdown(report)
    assert "| srtp_rtp | 40,000 | 0.400 / 0.800 | 0.200 / 0.400 | 2.00 |" in table


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
    assert "| the INVITE's SDP in the plugin" not in markdown(_report())
    cs = _cs_report({}, {}, {})
    cs["systems"]["edge"]["round_results"] = [{"status": "measured", "plugin_ms": means}]
    table = markdown(_report(call_setup=cs))
    assert "| the INVITE's SDP in the plugin / of which mediad's RESERVE round trip, mean ms | | 3.00 / 1.50 |" in table
