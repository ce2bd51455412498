"""``python -m bench.run``: relay throughput, handshakes and memory, mediad beside rtpengine.

Theory of operation
-------------------
1. :func:`ensure_tools` installs what is missing (Debian packages
   ``rtpengine-daemon``, ``libsrtp2-dev``, ``gcc``, ``redis-server``) and
   :func:`build_generator` compiles ``bench/gen/e2ae_gen.c`` into
   ``bench/build/``.  The generator is linked with Debian's libsrtp2 (built on
   NSS, which caps its SRTP rate) but is given pylibsrtp's OpenSSL-based
   libsrtp (:func:`openssl_libsrtp`, the one mediad's native path calls) and
   uses that one; each ramp records which (``srtp_lib``).
2. For each round, the systems run one after the other, their order swapped
   every round (interleaving spreads slow drifts of a shared machine over
   both).  Each system is started fresh, pinned to the relay CPU, and for
   each direction (``srtp_rtp``, ``rtp_srtp``) N streams are set up through
   its real control interface, the generator (pinned to the generator CPU)
   ramps the rate until a step fails (loss > 0.1 % or p99 > 20 ms), and the
   streams are deleted.  The result of a ramp is its highest passed step.
3. The figure of a (system, direction) is the median over the rounds;
   the ratio is mediad / rtpengine of those medians.
4. Memory: RSS growth of each system for idle, established sessions, scaled
   to 1,000.  DTLS handshakes per second come from mediad's session set-up.
5. Results go to ``bench/results/<timestamp>.json`` and ``.md``; the table
   is printed.  What could not be measured says so, with the reason; no
   figure is ever made up.

``--smoke`` runs the same path in seconds (few streams, two low rates, one
round, no pass/fail targets); the test suite runs it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

from bench import callsetup, mediad_side, procs, rtpengine

HERE = os.path.dirname(os.path.abspath(__file__))
GEN_SOURCE = os.path.join(HERE, "gen", "e2ae_gen.c")
BUILD_DIR = os.path.join(HERE, "build")
REPO = os.path.dirname(HERE)
GEN_BINARY = os.path.join(BUILD_DIR, "e2ae_gen")
RESULTS_DIR = os.path.join(HERE, "results")

DIRECTIONS = ("srtp_rtp", "rtp_srtp")
SYSTEMS = ("rtpengine", "mediad")
FULL_RATES = (10000, 20000, 40000, 60000, 70000, 80000, 90000, 100000, 110000, 120000, 130000, 140000,
              160000, 180000, 200000, 220000, 250000, 300000)
SMOKE_RATES = (1000, 3000)
FULL_CALL_RATES = (50, 100, 200, 300, 350, 400, 500, 600, 800, 1000, 1200, 1500, 2000)
SMOKE_CALL_RATES = (5,)
APT_FOR = {"gcc": "gcc", "srtp": "libsrtp2-dev", "rtpengine": "rtpengine-daemon", "redis": "redis-server"}
SCHEMA = 2


# -- tools -------------------------------------------------------------------------------

def _missing_packages() -> list[str]:
    missing = []
    if shutil.which("gcc") is None:
        missing.append(APT_FOR["gcc"])
    if not os.path.exists("/usr/include/srtp2/srtp.h"):
        missing.append(APT_FOR["srtp"])
    if rtpengine.binary() is None:
        missing.append(APT_FOR["rtpengine"])
    if shutil.which("redis-server") is None:
        missing.append(APT_FOR["redis"])
    return missing


def ensure_tools(install: bool = True) -> list[str]:
    """Install the missing Debian packages; return those still missing."""
    missing = _missing_packages()
    if missing and install:
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        print(f"bench: installing {' '.join(missing)}", file=sys.stderr)
        for argv in (sudo + ["apt-get", "update", "-q"],
                     sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + missing):
            try:
                subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, timeout=900, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                print(f"bench: {argv[len(sudo)]} failed: {exc}", file=sys.stderr)
                break
        missing = _missing_packages()
    return missing


def build_generator() -> str:
    os.makedirs(BUILD_DIR, exist_ok=True)
    if os.path.exists(GEN_BINARY) and os.path.getmtime(GEN_BINARY) >= os.path.getmtime(GEN_SOURCE):
        return GEN_BINARY
    # --export-dynamic-symbol: the CPython symbols the generator defines for pylibsrtp's module (see
    # load_libsrtp in the source) must be visible to the dynamic loader.
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-o", GEN_BINARY, GEN_SOURCE,
                    "-lsrtp2", "-lpthread", "-lm", "-ldl", "-Wl,--export-dynamic-symbol=Py*,--export-dynamic-symbol=_Py*"],
                   check=True, timeout=120)
    return GEN_BINARY


def openssl_libsrtp() -> str | None:
    """pylibsrtp's extension module, for the generator's ``--libsrtp``; None without pylibsrtp.

    It bundles libsrtp 2.x built on OpenSSL, the library mediad's native packet
    path calls; Debian's libsrtp2, which the generator is linked with, is built
    on NSS and caps the generator's SRTP rate below the relays'.
    """
    try:
        from pylibsrtp import _binding
    except ImportError:
        return None
    return _binding.__file__


def ensure_native() -> None:
    """Build mediad's native packet path when it is missing or older than its source."""
    from mediad.io import fastpath_build

    where = os.path.join(REPO, "mediad", "io")
    sources = [os.path.join(where, name) for name in ("fastpath.c", "fastpath_build.py")]
    built = [os.path.join(where, n) for n in os.listdir(where) if n.startswith("_fastpath.") and n.endswith(".so")]
    if not built or max(os.path.getmtime(p) for p in sources) > os.path.getmtime(built[0]):
        print(f"bench: built {fastpath_build.build()}", file=sys.stderr)


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "usable_cores": procs.cpu_count(), "cpu_model": model,
            "kernel": platform.release(), "python": platform.python_version()}


# -- one ramp ----------------------------------------------------------------------------

def run_generator(streams, gen_addr, sink_addr, relay_pid, rates, step_seconds, cpu, workdir, stop_on_fail):
    path = os.path.join(workdir, "streams.txt")
    with open(path, "w") as f:
        for s in streams:
            f.write(f"{s.dst[0]} {s.dst[1]} {s.tx_key or '-'} {s.rx_key or '-'}\n")
    argv = [GEN_BINARY, "--streams", path, "--rx", f"{sink_addr[0]}:{sink_addr[1]}",
            "--tx", f"{gen_addr[0]}:{gen_addr[1]}", "--rates", ",".join(str(r) for r in rates),
            "--step-seconds", str(step_seconds), "--relay-pid", str(relay_pid), "--drain-ms", "300"]
    if stop_on_fail:
        argv.append("--stop-on-fail")
    libsrtp = openssl_libsrtp()
    if libsrtp:
        argv += ["--libsrtp", libsrtp]
    limit = len(rates) * (step_seconds * 2.5 + 2) + 30
    out = subprocess.run(argv, capture_output=True, text=True, timeout=limit, preexec_fn=procs.pinned(cpu))
    if out.returncode != 0:
        raise RuntimeError(f"generator failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def summarize_ramp(result: dict) -> dict:
    """The passed step with the most packets/s received before the first failure, with its figures.

    Not simply the last passed step: when the generator falls short of a step's
    rate (``generator_limited``), a later step can pass at a lower rate than an
    earlier one, and the relay sustained the higher one.
    """
    best = None
    for step in result["steps"]:
        if not step["passed"]:
            break
        if best is None or step["rx_pps"] > best["rx_pps"]:
            best = step
    checks = {"verify_fail": sum(s["verify_fail"] for s in result["steps"]),
              "verify_ok": sum(s["verify_ok"] for s in result["steps"]),
              "payload_ok": sum(s["payload_ok"] for s in result["steps"]),
              "received": sum(s["received"] for s in result["steps"])}
    if best is None:
        return {"pps": 0.0, "rate": 0, "cpu_s_per_mpkt": None, "p50_ms": None, "p99_ms": None, "checks": checks,
                "never_failed": False}
    cpu = best["relay_cpu_seconds"]
    return {
        "pps": best["rx_pps"], "rate": best["rate"],
        "cpu_s_per_mpkt": cpu / best["received"] * 1e6 if cpu is not None and best["received"] else None,
        "p50_ms": best["p50_us"] / 1000 if best["p50_us"] is not None else None,
        "p99_ms": best["p99_us"] / 1000 if best["p99_us"] is not None else None,
        "generator_limited": best["tx_pps"] < 0.98 * best["rate"],
        # No step failed: the ramp ended with its rates, not at the relay's limit.
        "never_failed": all(step["passed"] for step in result["steps"]),
        "checks": checks,
    }


def lower_bound(report: dict, name: str, direction: str) -> bool:
    """Is ``name``'s figure for ``direction`` only a lower bound of what it relays?

    So when in every round no step failed and the best step was generator-limited:
    the relay kept up with everything the generator could send.
    """
    rounds = report["relay"].get(name, {}).get(direction, {}).get("rounds") or []
    return bool(rounds) and all(r.get("never_failed") and r.get("generator_limited") for r in rounds)


PACKET_PATH = "native"  # mediad's [mediad] packet_path for this run (--packet-path)
BUNDLE = False  # mediad's streams on BUNDLE transports, two by two (--bundle)


def start_system(name: str, workdir: str, cpu):
    system = (rtpengine.Rtpengine(workdir, cpu) if name == "rtpengine"
              else mediad_side.MediadUnderTest(workdir, cpu, packet_path=PACKET_PATH, bundle=BUNDLE))
    system.start()
    return system


def create(system, name, n, direction, gen, sink, on_reserved=None):
    if name == "rtpengine":
        return system.create_streams(n, direction, gen, sink), None
    return system.create_streams(n, direction, gen, sink, on_reserved=on_reserved)


def measure_relay(name, args, rates, cpus, workdir, rnd) -> dict:
    """One round of one system: both directions; {direction: ramp} or raises."""
    out = {}
    system = start_system(name, workdir, cpus["relay"])
    try:
        for direction in DIRECTIONS:
            gen = ("127.0.0.1", procs.free_udp_port())
            sink = ("127.0.0.1", procs.free_udp_port())
            t0 = time.monotonic()
            streams, handshakes = create(system, name, args.streams, direction, gen, sink)
            setup_seconds = time.monotonic() - t0
            try:
                raw = run_generator(streams, gen, sink, system.pid, rates, args.step_seconds, cpus["generator"],
                                    workdir, stop_on_fail=not args.smoke)
            finally:
                system.delete_streams(streams)
            ramp = summarize_ramp(raw)
            ramp.update({"round": rnd, "setup_seconds": setup_seconds, "handshakes": handshakes, "steps": raw["steps"],
                         "srtp_lib": raw.get("srtp_lib")})
            out[direction] = ramp
            print(f"bench: round {rnd} {name} {direction}: {ramp['pps']:.0f} pps "
                  f"(p99 {ramp['p99_ms']} ms)", file=sys.stderr)
    finally:
        system.stop()
    return out


MEMORY_SETTLE_SECONDS = 1.0


def measure_memory_once(name, sessions, cpus, workdir) -> dict:
    """RSS growth of a fresh ``name`` for ``sessions`` established, idle sessions (no media).

    For mediad the growth is also read after the reservations, before any
    handshake (``rss_reserved_kib_per_1000``).
    """
    system = start_system(name, workdir, cpus["relay"])
    reserved: list = []

    def on_reserved():
        time.sleep(MEMORY_SETTLE_SECONDS)
        reserved.append(procs.rss_kib(system.pid))

    try:
        time.sleep(0.5)
        before = procs.rss_kib(system.pid)
        gen = ("127.0.0.1", procs.free_udp_port())
        sink = ("127.0.0.1", procs.free_udp_port())
        streams, _ = create(system, name, sessions, "srtp_rtp", gen, sink, on_reserved)
        time.sleep(MEMORY_SETTLE_SECONDS)
        after = procs.rss_kib(system.pid)
        system.delete_streams(streams)
    finally:
        system.stop()
    if before is None or after is None:
        return {"status": "not measured", "reason": "RSS not readable"}
    out = {"status": "measured", "sessions": sessions, "rss_before_kib": before, "rss_after_kib": after,
           "rss_kib_per_1000": (after - before) * 1000 / sessions}
    if reserved and reserved[0] is not None:
        out["rss_reserved_kib"] = reserved[0]
        out["rss_reserved_kib_per_1000"] = (reserved[0] - before) * 1000 / sessions
    return out


def measure_memory(name, sessions, cpus, workdir, repeats: int = 1) -> dict:
    """:func:`measure_memory_once` ``repeats`` times, each on a fresh process; medians, samples kept."""
    samples = [measure_memory_once(name, sessions, cpus, workdir) for _ in range(repeats)]
    measured = [s for s in samples if s["status"] == "measured"]
    if not measured:
        return samples[0]
    out = {"status": "measured", "sessions": sessions, "samples": samples,
           "rss_kib_per_1000": statistics.median(s["rss_kib_per_1000"] for s in measured)}
    reserved = [s["rss_reserved_kib_per_1000"] for s in measured if "rss_reserved_kib_per_1000" in s]
    if reserved:
        out["rss_reserved_kib_per_1000"] = statistics.median(reserved)
    return out


def measure_call_setup(args, cpus, workdir) -> tuple[dict, dict]:
    """(call_setup entry, kamailio_worker memory entry) of the report."""
    kinds = tuple(callsetup.Kind(k) for k in args.call_system_list)
    try:
        result = callsetup.measure(workdir, cpus, args.call_rate_list, args.call_step_seconds,
                                   latency_calls=10 if args.smoke else 200,
                                   memory_calls=10 if args.smoke else args.memory_sessions,
                                   rounds=args.call_rounds, kinds=kinds, cpu_rate=args.cpu_call_rate,
                                   shm_mb=args.kamailio_shm_mb)
    except Exception as exc:
        traceback.print_exc()
        entry = {"status": "failed", "reason": str(exc)[:500]}
        return entry, dict(entry)
    if all(entry["status"] != "measured" for entry in result["systems"].values()):
        why = "; ".join(f"{k}: {e.get('reason')}" for k, e in result["systems"].items())
        entry = {"status": "not measured", "reason": why}
        return entry, dict(entry)
    memory = result.pop("memory")
    if not args.smoke and callsetup.Kind.EDGE in kinds and result["systems"]["edge"]["status"] == "measured":
        try:
            result["unpinned"] = callsetup.measure_unpinned(workdir, args.call_rate_list, args.call_step_seconds)
        except Exception as exc:
            traceback.print_exc()
            result["unpinned"] = {"status": "failed", "reason": str(exc)[:500]}
    return result, memory


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def aggregate(rounds: list[dict]) -> dict:
    keys = ("pps", "cpu_s_per_mpkt", "p50_ms", "p99_ms")
    return {k: _median([r[k] for r in rounds]) for k in keys} | {"rounds": len(rounds)}


# -- report ------------------------------------------------------------------------------

def _fmt(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def ratio(edge, reference, higher_is_better: bool) -> float | None:
    """Edge against reference, >= 1.0 when the edge is as good: edge/reference for a figure where more is
    better, reference/edge where less is; None without two positive figures."""
    if edge is None or reference is None or edge <= 0 or reference <= 0:
        return None
    return edge / reference if higher_is_better else reference / edge


def _cs_median(cs: dict, kind: str) -> dict:
    entry = cs["systems"].get(kind) or {}
    return entry.get("median") or {} if entry.get("status") == "measured" else {}


def call_setup_table(cs: dict) -> list[str]:
    """The side-by-side call-setup table: the edge, the reference, bare Kamailio, and the ratio."""
    edge, ref, base = (_cs_median(cs, k) for k in ("edge", "reference", "baseline"))
    rate = cs.get("cpu_rate")
    lines = [f"## Call setup: the edge beside Kamailio + rtpengine (median of {cs.get('rounds')} interleaved "
             f"round(s))", "",
             "| figure | e2ae edge | Kamailio + rtpengine | bare Kamailio | edge vs reference (≥ 1.0: as good) |",
             "| --- | ---: | ---: | ---: | ---: |"]

    def row(label, e, r, b, digits, higher=False, suffix=""):
        q = ratio(e, r, higher)
        lines.append(f"| {label} | {_fmt(e, digits)}{suffix} | {_fmt(r, digits)}{suffix} | "
                     f"{'—' if b is None else _fmt(b, digits) + suffix} | {_fmt(q, 2)} |")

    for q in ("p50", "p99"):
        row(f"INVITE→200 added over bare Kamailio, {q}, ms", (edge.get("added_ms") or {}).get(q),
            (ref.get("added_ms") or {}).get(q), None, 2)
    for q in ("p50", "p99"):
        row(f"the INVITE alone, added, {q}, ms", (edge.get("invite_added_ms") or {}).get(q),
            (ref.get("invite_added_ms") or {}).get(q), None, 2)
    for q in ("p50", "p99"):
        row(f"INVITE→200, {q}, ms", edge.get(f"{q}_ms"), ref.get(f"{q}_ms"), base.get(f"{q}_ms"), 2)
    medians = {"edge": edge, "reference": ref, "baseline": base}
    cps = {k: m.get("calls_per_second") for k, m in medians.items()}

    def cps_cell(kind):
        bound = "≥ " if medians[kind].get("calls_per_second_lower_bound") else ""
        return "—" if cps[kind] is None and kind == "baseline" else bound + _fmt(cps[kind])

    q = ratio(cps["edge"], cps["reference"], True)
    bounded = medians["edge"].get("calls_per_second_lower_bound") != medians["reference"].get(
        "calls_per_second_lower_bound")
    prefix = ("≥ " if medians["edge"].get("calls_per_second_lower_bound") else "≤ ") if bounded else ""
    lines.append(f"| calls/s with 0 failed, p99 < 500 ms | {cps_cell('edge')} | {cps_cell('reference')} | "
                 f"{cps_cell('baseline')} | {prefix if q is not None else ''}{_fmt(q, 2)} |")
    cpu = {k: m.get("cpu_ms_per_call") or {} for k, m in (("edge", edge), ("reference", ref), ("baseline", base))}
    at = f"at {_fmt(rate)} calls/s" if rate is not None else ""
    row(f"CPU per call {at}: Kamailio, ms", cpu["edge"].get("kamailio"), cpu["reference"].get("kamailio"),
        cpu["baseline"].get("kamailio"), 3)
    row(f"CPU per call {at}: mediad / rtpengine, ms", cpu["edge"].get("media"), cpu["reference"].get("media"),
        None, 3)
    lines.append(f"| CPU per call {at}: Redis, ms | {_fmt(cpu['edge'].get('redis'), 3)} | — | — | |")
    row(f"CPU per call {at}: all processes, ms", cpu["edge"].get("total"), cpu["reference"].get("total"),
        cpu["baseline"].get("total"), 3)
    shm = {k: m.get("shm_kib_per_call_per_second") for k, m in medians.items()}
    row("Kamailio shared memory per call/s (passed steps), KiB", shm["edge"], shm["reference"], shm["baseline"], 0)
    checks = cs.get("sdp_check") or {}

    def check_cell(kind):
        c = checks.get(kind)
        if c is None:
            return "—"
        return "same job ✓" if c.get("ok") else "✗ " + "; ".join(c.get("problems", []))

    lines.append(f"| SDPs toward core and access checked | {check_cell('edge')} | {check_cell('reference')} | — | |")
    missing = [f"{k}: {e.get('status')}: {e.get('reason', '')}" for k, e in cs["systems"].items()
               if e.get("status") != "measured"]
    if missing:
        lines += [""] + [f"- {m}" for m in missing]
    return lines


def equal_load_latency(report: dict, direction: str) -> list[dict]:
    """p50/p99 of mediad and rtpengine at the same offered rates of ``direction``.

    The rates are steps every round of both systems passed: the highest, and
    the highest at or below half of it (a light load).  Each figure is the
    median over the rounds of that step's latency.
    """
    per = {}
    for name in SYSTEMS:
        rounds = report["relay"].get(name, {}).get(direction, {}).get("rounds") or []
        if not rounds:
            return []
        passed = None
        for r in rounds:
            ok = set()
            for step in r.get("steps", []):
                if not step["passed"]:
                    break
                ok.add(step["rate"])
            passed = ok if passed is None else passed & ok
        per[name] = (rounds, passed or set())
    common = per["mediad"][1] & per["rtpengine"][1]
    if not common:
        return []
    top = max(common)
    light = max((r for r in common if r <= top / 2), default=None)
    out = []
    for rate in sorted({top, light} - {None}):
        entry: dict = {"rate": rate}
        for name in SYSTEMS:
            steps = [next(s for s in r["steps"] if s["rate"] == rate) for r in per[name][0]]
            for q in ("p50", "p99"):
                entry[f"{name}_{q}_ms"] = _median([s[f"{q}_us"] / 1000 if s[f"{q}_us"] is not None else None
                                                   for s in steps])
        out.append(entry)
    return out


def relay_latency_table(report: dict) -> list[str]:
    rows = [(d, e) for d in DIRECTIONS for e in report.get("relay_latency", {}).get(d, [])]
    if not rows:
        return []
    lines = ["", "## Relay latency at the same offered rate", "",
             "| direction | offered pps | rtpengine p50 / p99 ms | mediad p50 / p99 ms | mediad vs rtpengine, p99 "
             "(≥ 1.0: as good) |", "| --- | ---: | ---: | ---: | ---: |"]
    for d, e in rows:
        lines.append(f"| {d} | {_fmt(e['rate'])} | {_fmt(e['rtpengine_p50_ms'], 3)} / {_fmt(e['rtpengine_p99_ms'], 3)} | "
                     f"{_fmt(e['mediad_p50_ms'], 3)} / {_fmt(e['mediad_p99_ms'], 3)} | "
                     f"{_fmt(ratio(e['mediad_p99_ms'], e['rtpengine_p99_ms'], False), 2)} |")
    return lines


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# e2ae edge benchmark — {report['started']} ({report['mode']})", "",
        f"Machine: {m['cores']} cores ({m['cpu_model']}), kernel {m['kernel']}. "
        f"Generator on CPU {report['config']['cpus']['generator']}, relay on CPU {report['config']['cpus']['relay']}. "
        f"{report['config']['streams']} streams of {report['config']['packet_bytes']}-byte RTP, "
        f"median of {report['config']['rounds']} interleaved round(s); a step passes with loss ≤ "
        f"{report['config']['max_loss'] * 100:g} % and p99 ≤ {report['config']['max_p99_ms']:g} ms. "
        f"mediad's packet path: {report['config'].get('mediad_packet_path', 'native')}"
        f"{', its streams two by two on BUNDLE transports' if report['config'].get('mediad_bundle') else ''}.", "",
        "## Relay throughput", "",
        "| direction | system | pps | CPU s / Mpkt | p50 ms | p99 ms | mediad / rtpengine |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    bounded = False
    for direction in DIRECTIONS:
        for name in SYSTEMS:
            sysinfo = report["systems"][name]
            med = report["relay"].get(name, {}).get(direction, {}).get("median")
            ratio = report["ratio"].get(direction) if name == "mediad" else None
            if sysinfo["status"] != "measured" or med is None:
                lines.append(f"| {direction} | {name} | not measured | | | | |")
                continue
            bound = lower_bound(report, name, direction)
            bounded = bounded or bound
            ratio_cell = ""
            if ratio is not None:
                mine, theirs = bound, lower_bound(report, "rtpengine", direction)
                prefix = "" if mine == theirs else ("≥ " if mine else "≤ ")
                ratio_cell = prefix + _fmt(ratio, 2) + (" (both generator-limited)" if mine and theirs else "")
            lines.append(f"| {direction} | {name} | {'≥ ' if bound else ''}{_fmt(med['pps'])} | "
                         f"{_fmt(med['cpu_s_per_mpkt'], 2)} | {_fmt(med['p50_ms'], 2)} | {_fmt(med['p99_ms'], 2)} | "
                         f"{ratio_cell} |")
    if bounded:
        lines += ["", "≥: the relay passed every step of every round; the generator could not send faster "
                      "(generator-limited), so the figure is a lower bound of what the relay sustains."]
    lines += ["", "## Sessions", "", "| figure | rtpengine | mediad |", "| --- | ---: | ---: |"]
    mem = report["memory"]

    def mem_cell(name):
        e = mem.get(name, {})
        return _fmt(e.get("rss_kib_per_1000")) + " KiB" if e.get("status") == "measured" else "not measured"

    hs = report["handshakes"]
    lines.append(f"| RSS per 1,000 idle sessions | {mem_cell('rtpengine')} | {mem_cell('mediad')} |")
    reserved = mem.get("mediad", {}).get("rss_reserved_kib_per_1000")
    if reserved is not None:
        lines.append(f"| RSS per 1,000 reserved sessions (before the handshake) | | {_fmt(reserved)} KiB |")
    lines.append("| DTLS handshakes/s | (SDES) | "
                 f"{_fmt(hs.get('per_second'), 0) if hs.get('status') == 'measured' else 'not measured'} |")
    kw = mem.get("kamailio_worker", {})
    kw_cell = (f"{_fmt(kw['kamailio_worker_max_kib_per_1000'])} KiB (all workers "
               f"{_fmt(kw['kamailio_total_kib_per_1000'])} KiB; mediad {_fmt(kw.get('mediad_kib_per_1000'))} KiB)"
               if kw.get("status") == "measured" else "not measured")
    lines.append(f"| Kamailio worker RSS per 1,000 calls (largest worker) | | {kw_cell} |")
    cs = report["call_setup"]
    if kw.get("shm_bytes_per_held_call") is not None:
        lines.append(f"| Kamailio shared memory per held call / per call with its INVITE transaction, bytes | | "
                     f"{_fmt(kw['shm_bytes_per_held_call'])} / {_fmt(kw['shm_bytes_per_call_with_transaction'])} |")
    if cs.get("status") == "measured":
        unpinned = cs.get("unpinned", {})
        if unpinned.get("status") == "measured":
            lines.append(f"| edge calls/s with no failed call (nothing pinned: edge and SIPp share both cores) | | "
                         f"{_fmt(unpinned['calls_per_second'])} |")
        edge_rounds = (cs["systems"].get("edge") or {}).get("round_results") or []
        t = next((r.get("plugin_ms") for r in edge_rounds if r.get("plugin_ms")), None) or {}
        if "invite_sdp" in t:
            lines.append(f"| the INVITE's SDP in the plugin / of which mediad's RESERVE round trip, mean ms | | "
                         f"{_fmt(t['invite_sdp']['mean'], 2)} / {_fmt((t.get('reserve_round_trip') or {}).get('mean'), 2)} |")
        lines = lines[:4] + call_setup_table(cs) + [""] + lines[4:]
    else:
        lines.append("| call setup | | not measured |")
    lines += relay_latency_table(report)
    missing = [f"- {what}: {entry.get('status')}: {entry.get('reason', '')}" for what, entry in [
        ("mediad", report["systems"]["mediad"]), ("rtpengine", report["systems"]["rtpengine"]),
        ("call setup", cs), ("Kamailio worker memory", report["memory"]["kamailio_worker"]),
        ("rtpengine memory", mem.get("rtpengine", {})), ("mediad memory", mem.get("mediad", {}))]
        if entry.get("status") != "measured"]
    if missing:
        lines += ["", "## Not measured", ""] + missing
    if report.get("note"):
        lines += ["", report["note"]]
    return "\n".join(lines) + "\n"


# -- main --------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="seconds-long run of the whole path, no targets")
    p.add_argument("--packet-path", choices=("native", "python"), default="native",
                   help="mediad's packet path (default native; python measures the Python relay)")
    p.add_argument("--streams", type=int, help="concurrent streams (default 500; smoke 10)")
    p.add_argument("--bundle", action="store_true",
                   help="mediad's streams two by two on BUNDLE transports (rtpengine's as always)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3; smoke 1)")
    p.add_argument("--rates", help="comma-separated ramp of total packet rates")
    p.add_argument("--step-seconds", type=float, help="seconds per ramp step (default 3; smoke 1)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="rtpengine,mediad")
    p.add_argument("--memory-sessions", type=int, help="sessions for the memory figure (default 1000; smoke 20)")
    p.add_argument("--memory-only", action="store_true",
                   help="only the memory figure: no relay ramps, no call setup; --rounds fresh processes, median")
    p.add_argument("--call-rates", help="comma-separated ramp of call rates (calls/s) for the call-setup figure")
    p.add_argument("--call-step-seconds", type=float, help="seconds of calls per call-rate step (default 5; smoke 1)")
    p.add_argument("--no-call-setup", dest="call_setup", action="store_false",
                   help="skip the call-setup benchmark (SIPp through Kamailio)")
    p.add_argument("--call-systems", default="edge,reference,baseline",
                   help="call-setup systems: edge, reference (Kamailio + rtpengine), baseline (bare Kamailio)")
    p.add_argument("--call-rounds", type=int, help="interleaved call-setup rounds (default --rounds)")
    p.add_argument("--cpu-call-rate", type=float, default=100.0,
                   help="the call rate whose step gives the CPU per call (default 100; smoke: its one rate)")
    p.add_argument("--kamailio-shm-mb", type=int,
                   help="Kamailio's shared memory for every call-setup system (default: the run command's)")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install missing tools")
    p.add_argument("--out", default=RESULTS_DIR, help="directory for the JSON and markdown results")
    p.add_argument("--note", default="", help="free text stored with the results (e.g. machine load)")
    args = p.parse_args(argv)
    args.streams = args.streams or (10 if args.smoke else 500)
    args.rounds = args.rounds or (1 if args.smoke else 3)
    args.step_seconds = args.step_seconds or (1.0 if args.smoke else 3.0)
    args.memory_sessions = args.memory_sessions or (20 if args.smoke else 1000)
    rates = [int(r) for r in args.rates.split(",")] if args.rates else list(SMOKE_RATES if args.smoke else FULL_RATES)
    if not 1 <= args.streams <= 4000 or not 1 <= args.rounds <= 20 or not 0 < args.step_seconds <= 60:
        p.error("streams 1..4000, rounds 1..20, step-seconds (0, 60]")
    args.rate_list = rates
    args.call_rate_list = ([float(r) for r in args.call_rates.split(",")] if args.call_rates
                           else list(SMOKE_CALL_RATES if args.smoke else FULL_CALL_RATES))
    args.call_step_seconds = args.call_step_seconds or (1.0 if args.smoke else 5.0)
    args.system_list = [s for s in args.systems.split(",") if s]
    args.call_system_list = [s for s in args.call_systems.split(",") if s]
    if any(s not in {k.value for k in callsetup.Kind} for s in args.call_system_list):
        p.error("call systems are edge, reference, baseline")
    args.call_rounds = args.call_rounds or args.rounds
    if args.smoke and args.cpu_call_rate not in args.call_rate_list:
        args.cpu_call_rate = args.call_rate_list[0]
    global PACKET_PATH, BUNDLE
    PACKET_PATH = args.packet_path
    BUNDLE = args.bundle
    if args.bundle and args.streams and args.streams % 2:
        p.error("--bundle puts streams two by two on a transport: give an even --streams")
    if any(s not in SYSTEMS for s in args.system_list):
        p.error(f"systems are {', '.join(SYSTEMS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    missing = ensure_tools(install=not args.no_install)
    if "gcc" in missing or "libsrtp2-dev" in missing:
        print(f"bench: cannot build the generator, missing {missing}", file=sys.stderr)
        return 2
    build_generator()
    if "mediad" in args.systems and args.packet_path == "native":
        ensure_native()
    ncpu = os.cpu_count() or 1
    cpus = {"generator": 0, "relay": 1} if ncpu >= 2 else {"generator": None, "relay": None}
    report: dict = {
        "schema": SCHEMA, "started": started, "mode": "smoke" if args.smoke else "full", "machine": machine(),
        "config": {"streams": args.streams, "rounds": args.rounds, "rates": args.rate_list,
                   "step_seconds": args.step_seconds, "packet_bytes": 172, "max_loss": 0.001, "max_p99_ms": 20.0,
                   "cpus": cpus, "memory_sessions": args.memory_sessions, "mediad_packet_path": args.packet_path,
                   "mediad_bundle": args.bundle},
        "systems": {}, "relay": {}, "ratio": {}, "handshakes": {}, "memory": {},
        "call_setup": {"status": "not measured",
                       "reason": "not selected (--memory-only)" if args.memory_only else "not selected (--no-call-setup)"},
        "note": args.note,
    }
    report["memory"]["kamailio_worker"] = dict(report["call_setup"])
    for name in SYSTEMS:
        if name not in args.system_list:
            report["systems"][name] = {"status": "not measured", "reason": "not selected (--systems)"}
        elif name == "rtpengine":
            ok = rtpengine.binary() is not None
            report["systems"][name] = ({"status": "measured", "version": rtpengine.version()} if ok else
                                       {"status": "not measured", "reason": "rtpengine-daemon not installable"})
        else:
            why = mediad_side.available()
            report["systems"][name] = {"status": "measured"} if why is None else {"status": "not measured",
                                                                                  "reason": why}
    active = [n for n in SYSTEMS if report["systems"][n]["status"] == "measured"]
    per_round: dict = {n: {d: [] for d in DIRECTIONS} for n in active}
    with tempfile.TemporaryDirectory(prefix="e2ae-bench-") as workdir:
        for rnd in range(1, 0 if args.memory_only else args.rounds + 1):
            order = active if rnd % 2 else list(reversed(active))
            for name in order:
                try:
                    result = measure_relay(name, args, args.rate_list, cpus, workdir, rnd)
                except Exception as exc:
                    traceback.print_exc()
                    report["systems"][name] = {"status": "failed", "reason": f"round {rnd}: {exc}"}
                    continue
                for direction, ramp in result.items():
                    per_round[name][direction].append(ramp)
        for name in active:
            if report["systems"][name]["status"] != "measured":
                continue
            try:
                report["memory"][name] = measure_memory(name, args.memory_sessions, cpus, workdir,
                                                        repeats=args.rounds if args.memory_only else 1)
            except Exception as exc:
                report["memory"][name] = {"status": "not measured", "reason": str(exc)}
        if args.call_setup and not args.memory_only:
            report["call_setup"], report["memory"]["kamailio_worker"] = measure_call_setup(args, cpus, workdir)
    for name in active:
        report["relay"][name] = {d: {"rounds": per_round[name][d], "median": aggregate(per_round[name][d])}
                                 for d in DIRECTIONS if per_round[name][d]}
    for d in DIRECTIONS:
        a = report["relay"].get("mediad", {}).get(d, {}).get("median", {}).get("pps")
        b = report["relay"].get("rtpengine", {}).get(d, {}).get("median", {}).get("pps")
        report["ratio"][d] = a / b if a is not None and b else None
    report["relay_latency"] = {d: equal_load_latency(report, d) for d in DIRECTIONS}
    hs = [r["handshakes"]["per_second"] for d in DIRECTIONS for r in per_round.get("mediad", {}).get(d, [])
          if r.get("handshakes")]
    report["handshakes"] = ({"status": "measured", "per_second": _median(hs), "samples": len(hs),
                             "sessions_per_sample": args.streams}
                            if hs else {"status": "not measured", "reason": "mediad not measured"})
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, started + ("-smoke" if args.smoke else ""))
    with open(base + ".json", "w") as f:
        json.dump(report, f, indent=2)
    table = markdown(report)
    with open(base + ".md", "w") as f:
        f.write(table)
    print(table)
    print(f"bench: results in {base}.json and {base}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
