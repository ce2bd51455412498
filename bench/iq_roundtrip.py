"""``python -m bench.iq_roundtrip``: the cost of one Iq round trip, plugin side to mediad and back.

Theory of operation
-------------------
A private Redis and one mediad (``bench.mediad_side.MediadUnderTest``, pinned
to the relay CPU when the machine has two, this process to the other) are
started; this process plays
the plugin with the blocking ``mediad.io.client.IqClient`` a Kamailio worker
uses (one client, one request at a time, as a worker sends them).  Measured,
after a warm-up:

* ``list``: N LIST requests, the control channel alone (codec, transport,
  authentication, dispatch; no state);
* ``reserve`` / ``release``: N dialogs with one DTLS-SRTP audio stream
  (rtcp-mux on both sides, mediad as DTLS server, so no handshake starts),
  reserved then released, as a call does;
* ``size``: one RESERVE padded with remote ICE candidates to each of a few
  request sizes, to show which sizes go through.

Each figure is the median and 99th percentile of the wall-clock round trip in
microseconds, mediad's CPU time per request (all its threads, from
``/proc``) and the client's (this process: what a Kamailio worker spends).  The figures are printed and returned; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from bench import procs
from bench.mediad_side import MediadUnderTest


def _streams(candidates: int = 0):
    from iq import Role, Side, StreamSpec, TerminationSpec

    access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=True, tls_role=Role.SERVER,
                             local_fingerprint_request=True,
                             remote_candidates=[f"{i} 1 udp 2122260223 127.0.0.1 {10000 + i} typ host"
                                                for i in range(candidates)])
    core = TerminationSpec(Side.CORE, "RTP/AVP", remote_address="127.0.0.2", remote_port=4000, rtcp_mux=True)
    return [StreamSpec(1, "srtp", access, core)]


def _figure(samples: list[float], cpu: float | None, client_cpu: float) -> dict:
    ordered = sorted(samples)
    return {
        "n": len(samples),
        "median_us": round(statistics.median(ordered) * 1e6, 1),
        "p99_us": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6, 1),
        "mediad_cpu_us": round(cpu / len(samples) * 1e6, 1) if cpu is not None else None,
        "client_cpu_us": round(client_cpu / len(samples) * 1e6, 1),
    }


def measure(n: int = 2000, sizes: tuple[int, ...] = (1000, 2800, 16000, 65536, 200000)) -> dict:
    from sdp_rules.errors import UnavailableError
    from iq import Command, IqRequest

    with tempfile.TemporaryDirectory(prefix="e2ae-iq-") as workdir:
        cpu = 1 if procs.cpu_count() > 1 else None
        mediad = MediadUnderTest(workdir, cpu, packet_path="python")
        mediad.start()
        if cpu is not None:
            os.sched_setaffinity(0, {0})  # the plugin's side on the other CPU
        client = mediad.client
        results: dict = {}
        try:
            for i in range(200):  # warm-up: connections, caches, allocator
                client.request(IqRequest(Command.LIST, "warm", f"w{i}"))

            def timed(requests):
                samples = []
                requests = list(requests)
                client_before = time.process_time()
                cpu_before = procs.cpu_time(mediad.pid)
                for request in requests:
                    started = time.perf_counter()
                    reply = client.request(request)
                    samples.append(time.perf_counter() - started)
                    if reply.error_code is not None:
                        raise RuntimeError(f"{request.command.value}: {reply.error_code} {reply.error}")
                cpu_after = procs.cpu_time(mediad.pid)
                client_cpu = time.process_time() - client_before
                used = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
                return _figure(samples, used, client_cpu)

            results["list"] = timed(IqRequest(Command.LIST, "bench", f"l{i}") for i in range(n))
            dialogs = [f"iq-bench-{i}" for i in range(n // 4)]
            results["reserve"] = timed(IqRequest(Command.RESERVE, d, "r", _streams()) for d in dialogs)
            results["release"] = timed(IqRequest(Command.RELEASE, d, "x") for d in dialogs)
            fits = {}
            for size in sizes:
                candidates = 0
                request = IqRequest(Command.RESERVE, f"size-{size}", "r", _streams(0))
                base = len(json.dumps(request.to_dict()))
                candidates = max(0, (size - base) // 50)
                request = IqRequest(Command.RESERVE, f"size-{size}", "r", _streams(candidates))
                actual = len(json.dumps(request.to_dict(), separators=(",", ":")))
                try:
                    reply = client.request(request)
                    outcome = "ok" if reply.error_code is None else f"{reply.error_code} {reply.error}"
                    client.request(IqRequest(Command.RELEASE, request.dialog, "x"))
                except UnavailableError as exc:
                    outcome = f"unavailable: {exc.reason}"
                fits[str(actual)] = outcome
            results["request_bytes"] = fits
        finally:
            mediad.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="requests per figure")
    args = parser.parse_args(argv)
    results = measure(args.n)
    print(f"{'figure':<10} {'n':>6} {'median µs':>10} {'p99 µs':>10} {'mediad CPU µs/req':>18} "
          f"{'client CPU µs/req':>18}")
    for name in ("list", "reserve", "release"):
        r = results[name]
        print(f"{name:<10} {r['n']:>6} {r['median_us']:>10} {r['p99_us']:>10} {str(r['mediad_cpu_us']):>18} "
              f"{r['client_cpu_us']:>18}")
    print("request size (bytes of JSON) -> outcome")
    for size, outcome in results["request_bytes"].items():
        print(f"  {size:>8}  {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
