"""Measure the edge with SIPp: INVITE latency added by the plugin, and sustained calls/s.

    .venv/bin/python -m tests.integration.bench_edge [--calls 1000] [--rates 50,100,200,400]

Starts its own Redis, mediad and Kamailio (as the test harness does) and runs:

* latency: ``--calls`` calls at 50 calls/s with the WebRTC offer of
  ``wic_call_uac.xml`` (the plugin rewrites the INVITE and the 200 OK, one Iq
  RESERVE and one MODIFY, Redis reads and writes), then the same count with
  ``wic_call_uac_nosdp.xml`` (same call, no SDP: the plugin has nothing to do).
  SIPp's response time INVITE → 200 OK (``-trace_rtt``) of each call is
  collected; the difference of the medians and of the 99th percentiles is the
  latency the plugin adds to a call set-up (both SDP rewrites together);
* throughput: ``--calls`` calls at each rate of ``--rates`` (at most 100
  calls in flight), the highest rate with no failed call and nothing left in
  Redis or mediad afterwards is the sustained rate.

Every run is bounded in calls and in time.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time

from tests.conftest import RedisServer
from tests.integration.edge_harness import Edge, Sipp


def _rtts(sipp: Sipp) -> list[float]:
    values = []
    for path in sipp.dir.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    values.append(float(parts[1]))
                except ValueError:
                    pass
    return values


def _failed(sipp: Sipp) -> int:
    """Failed calls in SIPp's statistics file (the last line's cumulated count)."""
    lines = sipp.stat_file.read_text().splitlines() if sipp.stat_file.exists() else []
    if len(lines) < 2:
        return -1
    header, last = lines[0].split(";"), lines[-1].split(";")
    return int(last[header.index("FailedCall(C)")])


def run(edge: Edge, uac_scenario: str, uas_scenario: str, calls: int, rate: float,
        limit: int = 100) -> tuple[list[float], bool, float]:
    timeout = calls / rate + 30
    uas = Sipp(uas_scenario, "127.0.0.3", calls=calls, timeout=timeout)
    uas.port = edge.conf.next_hop_port
    uac = Sipp(uac_scenario, "127.0.0.1", remote=edge.access, calls=calls, rate=rate, limit=limit,
               timeout=timeout, extra=["-s", "callee", "-d", "100", "-trace_rtt", "-rtt_freq", "1",
                                       "-trace_stat", "-stf", "stat.csv", "-fd", "1"])
    try:
        uas.start()
        time.sleep(0.2)
        started = time.monotonic()
        rc = uac.run()
        elapsed = time.monotonic() - started
        uas.wait(30)
        left = edge.wait_no_dialogs(10)
        in_mediad = edge.mediad_dialogs()
        failed = _failed(uac)
        ok = rc == 0 and uas.returncode == 0 and left == [] and in_mediad == []
        print(f"  {uac_scenario} {calls} calls at {rate:.0f} cps: {failed} failed, {len(left)} keys left in Redis, "
              f"{len(in_mediad)} dialogs left in mediad")
        if not ok:
            print(uac.errors()[-800:], uas.errors()[-800:], file=sys.stderr)
        return _rtts(uac), ok, elapsed
    finally:
        uac.stop()
        uas.stop()


def histogram_quantile(text: str, name: str, label: str, q: float) -> float:
    """Prometheus-style quantile (linear within the bucket) of one histogram series."""
    buckets = []
    for m in re.finditer(r'^%s_bucket\{%s,le="([^"]+)"\} (\S+)$' % (re.escape(name), re.escape(label)), text, re.M):
        buckets.append((float(m.group(1)), float(m.group(2))))
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-9)
        lower_bound, lower_count = bound, count
    return buckets[-1][0]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_edge")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rates", default="50,100,200,400")
    args = parser.parse_args(argv)
    redis = RedisServer()
    redis.start()
    edge = Edge(redis, access_ports="50000-54999", core_ports="55000-59999")
    try:
        edge.start()
        with_sdp, ok1, _ = run(edge, "wic_call_uac.xml", "core_uas.xml", args.calls, 50)
        text = edge.plugin_metrics()
        for d in ("access_to_core", "core_to_access"):
            label = f'direction="{d}"'
            print(f"plugin time per SDP body {d} (e2ae_plugin_sdp_seconds): "
                  f"median {histogram_quantile(text, 'e2ae_plugin_sdp_seconds', label, 0.5) * 1e3:.2f} ms, "
                  f"p99 {histogram_quantile(text, 'e2ae_plugin_sdp_seconds', label, 0.99) * 1e3:.2f} ms")
        label = 'command="reserve"'
        print(f"Iq reserve round trip: median "
              f"{histogram_quantile(text, 'e2ae_plugin_iq_latency_seconds', label, 0.5) * 1e3:.2f} ms, p99 "
              f"{histogram_quantile(text, 'e2ae_plugin_iq_latency_seconds', label, 0.99) * 1e3:.2f} ms")
        without, ok2, _ = run(edge, "wic_call_uac_nosdp.xml", "core_uas_nosdp.xml", args.calls, 50)
        print(f"latency runs ok: {ok1 and ok2}; samples {len(with_sdp)} / {len(without)}")
        if with_sdp and without:
            m1, m0 = statistics.median(with_sdp), statistics.median(without)
            p1, p0 = percentile(with_sdp, 99), percentile(without, 99)
            print(f"INVITE->200 with e2ae SDP: median {m1:.2f} ms, p99 {p1:.2f} ms")
            print(f"INVITE->200 without SDP:   median {m0:.2f} ms, p99 {p0:.2f} ms")
            print(f"added by the plugin (INVITE + 200 OK rewrites): median {m1 - m0:.2f} ms, p99 {p1 - p0:.2f} ms")
        best = 0.0
        for rate in (float(r) for r in args.rates.split(",")):
            rtts, ok, elapsed = run(edge, "wic_call_uac.xml", "core_uas.xml", args.calls, rate)
            achieved = args.calls / elapsed if elapsed else 0.0
            print(f"rate {rate:.0f} cps: {'ok' if ok else 'FAILED'}, {args.calls} calls in {elapsed:.1f} s "
                  f"({achieved:.0f} cps), median INVITE->200 {statistics.median(rtts) if rtts else float('nan'):.2f} ms")
            if not ok or achieved < 0.95 * rate:
                break
            best = rate
        print(f"sustained: {best:.0f} calls/s (no failed call, offered rate achieved)")
    finally:
        edge.stop()
        redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
