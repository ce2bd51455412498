"""Call setup through the edge: SIPp UAC → Kamailio + plugin + mediad → SIPp UAS.

Theory of operation
-------------------
:class:`Edge` starts the system as deployed: ``redis-server``, ``python -m
mediad`` and ``kamailio -DD`` with ``deploy/kamailio.cfg`` loading the plugin,
all reading one configuration written for the run, on free loopback ports
(access SIP on 127.0.0.1, core SIP on 127.0.0.2, the core's next hop on
127.0.0.3), pinned to the relay CPU.  ``Edge(with_plugin=False)`` starts only
Kamailio with ``bench/kamailio-baseline.cfg``: same sockets, same transaction
and record-route settings, no plugin.

:func:`run_step` runs one SIPp pair for a fixed number of calls at a fixed
rate (the scenarios of ``sipp_scenarios/``: a WebRTC DTLS-SRTP offer from the
access side, a plain RTP answer from the core), the SIPp processes pinned to
the generator CPU, and reads every call's INVITE→200 time from SIPp's
``-trace_rtt`` file.  A step passes when every call was answered and the 99th
percentile INVITE→200 stayed below T1 (500 ms, RFC 3261 17.1.1.2): past that
the calls only got through by retransmission, the edge was overloaded.

:func:`measure` first times INVITE→200 one call at a time with
``bench.sipprobe`` (SIPp's clock is too coarse for it) through the baseline
Kamailio and through the edge (the difference is the latency the plugin and
mediad add), then ramps the call rate on the edge with SIPp until a step has
a failed call, then measures the RSS growth of each Kamailio worker and of
mediad with calls held open.
"""

from __future__ import annotations

import csv
import glob
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

from bench import procs, sipprobe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = os.path.join(REPO, "sipp_scenarios")
UAC_SCENARIO = "wic_call_uac.xml"
UAS_SCENARIO = "core_uas.xml"
EDGE_CFG = os.path.join(REPO, "deploy", "kamailio.cfg")
BASELINE_CFG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kamailio-baseline.cfg")
PLUGIN = os.path.join(REPO, "plugin", "kemi.py")
RETRANSMIT_MS = 500  # RFC 3261 T1: a slower INVITE->200 means the UAC retransmitted


def unavailable() -> str | None:
    """None when the call-setup benchmark can run, else why not."""
    for path in (EDGE_CFG, PLUGIN, os.path.join(SCENARIOS, UAC_SCENARIO), os.path.join(SCENARIOS, UAS_SCENARIO)):
        if not os.path.exists(path):
            return f"{os.path.relpath(path, REPO)} is not in the tree yet"
    for tool in ("kamailio", "sipp", "redis-server"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} is not installed (deploy/e2ae setup installs it)"
    return None


def _free(host: str) -> int:
    return procs.free_udp_port(host)


def _sip_ping(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        branch = "z9hG4bK" + secrets.token_hex(6)
        msg = (f"OPTIONS sip:ping@{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{s.getsockname()[1]};"
               f"branch={branch};rport\r\nMax-Forwards: 0\r\nFrom: <sip:probe@{host}>;tag=probe\r\n"
               f"To: <sip:ping@{host}>\r\nCall-ID: probe-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
        s.settimeout(0.3)
        try:
            s.sendto(msg.encode(), (host, port))
            return s.recv(4096).startswith(b"SIP/2.0 ")
        except OSError:
            return False


class Edge:
    def __init__(self, workdir: str, cpu: int | None, with_plugin: bool = True) -> None:
        self.workdir = os.path.join(workdir, "edge" if with_plugin else "baseline")
        os.makedirs(self.workdir, exist_ok=True)
        self.cpu = cpu
        self.with_plugin = with_plugin
        self.access = ("127.0.0.1", _free("127.0.0.1"))
        self.core = ("127.0.0.2", _free("127.0.0.2"))
        self.next_hop = ("127.0.0.3", _free("127.0.0.3"))
        self.control_port = _free("127.0.0.1")
        self.redis_port = _free("127.0.0.1")
        self.secret = secrets.token_hex(16)
        self.config_path = os.path.join(self.workdir, "e2ae.conf")
        self.redis = self.mediad = self.kamailio = None

    def _config(self) -> str:
        return "\n".join([
            "[edge]", f"access_sip = {self.access[0]}:{self.access[1]}", f"core_sip = {self.core[0]}:{self.core[1]}",
            f"core_next_hop = sip:{self.next_hop[0]}:{self.next_hop[1]}",
            "[mediad]", f"control = 127.0.0.1:{self.control_port}", f"control_secret = {self.secret}",
            "access_address = 127.0.0.1", "core_address = 127.0.0.2",
            "access_ports = 54000-56999", "core_ports = 54000-56999", "metrics = off",
            "dtls_handshake_timeout = 30", "log_level = WARNING",
            "[redis]", f"url = redis://127.0.0.1:{self.redis_port}/0", "dialog_ttl = 600",
            "[plugin]", "metrics = off", "iq_timeout_ms = 2000",
        ]) + "\n"

    def start(self) -> None:
        with open(self.config_path, "w") as f:
            f.write(self._config())
        env = dict(os.environ, E2AE_CONFIG=self.config_path, PYTHONPATH=REPO, PYTHONUNBUFFERED="1",
                   E2AE_METRICS_DIR=os.path.join(self.workdir, "plugin-metrics"))
        rundir = os.path.join(self.workdir, "run")
        os.makedirs(rundir, exist_ok=True)
        exe = shutil.which("kamailio") or "/usr/sbin/kamailio"
        if self.with_plugin:
            self.redis = procs.start(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"], self.cpu,
                                     os.path.join(self.workdir, "redis.log"))
            self.mediad = procs.start([sys.executable, "-m", "mediad", "--config", self.config_path], self.cpu,
                                      os.path.join(self.workdir, "mediad.log"), cwd=REPO, env=env)
            if not procs.wait_until(self._mediad_ready, 20, 0.1):
                raise RuntimeError(f"mediad did not start; see {self.workdir}/mediad.log")
            argv = [exe, "-DD", "-E", "-f", EDGE_CFG, "-Y", rundir, "-P", os.path.join(rundir, "k.pid"),
                    "-m", "64", "-M", "8", "-x", "tlsf", "-X", "tlsf", "-A", f"E2AE_ACCESS_SIP=udp:{self.access[0]}:{self.access[1]}",
                    "-A", f"E2AE_CORE_SIP=udp:{self.core[0]}:{self.core[1]}", "-A", f'E2AE_PLUGIN="{PLUGIN}"',
                    "-A", "E2AE_DIALOG_TTL=600"]
        else:
            argv = [exe, "-DD", "-E", "-f", BASELINE_CFG, "-Y", rundir, "-P", os.path.join(rundir, "k.pid"),
                    "-m", "64", "-M", "8", "-x", "tlsf", "-X", "tlsf", "-A", f"BENCH_ACCESS_SIP=udp:{self.access[0]}:{self.access[1]}",
                    "-A", f"BENCH_CORE_SIP=udp:{self.core[0]}:{self.core[1]}",
                    "-A", f'BENCH_NEXT_HOP="sip:{self.next_hop[0]}:{self.next_hop[1]}"']
        self.kamailio = procs.start(argv, self.cpu, os.path.join(self.workdir, "kamailio.log"), cwd=self.workdir,
                                    env=env)
        if not procs.wait_until(lambda: _sip_ping(*self.access) and _sip_ping(*self.core), 30, 0.1):
            raise RuntimeError(f"kamailio did not start; see {self.workdir}/kamailio.log")

    def _mediad_ready(self) -> bool:
        from mediad.client import IqClient
        from sdp_rules.errors import UnavailableError
        from iq import Command, IqRequest

        if self.mediad is not None and self.mediad.poll() is not None:
            raise RuntimeError(f"mediad exited; see {self.workdir}/mediad.log")
        client = IqClient(("127.0.0.1", self.control_port), self.secret, timeout=0.5)
        try:
            client.request(IqRequest(Command.LIST, "bench", "ready"))
            return True
        except UnavailableError:
            return False
        finally:
            client.close()

    def kamailio_workers(self) -> list[int]:
        """Pids of the Kamailio processes forked by the main one."""
        if self.kamailio is None:
            return []
        out = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(stat) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.kamailio.pid:
                out.append(int(stat.split("/")[2]))
        return sorted(out)

    def stop(self) -> None:
        procs.stop(self.kamailio)
        procs.stop(self.mediad)
        procs.stop(self.redis)


class Sipp:
    def __init__(self, workdir: str, scenario: str, local_ip: str, calls: int, cpu: int | None,
                 remote: tuple[str, int] | None = None, port: int | None = None, rate: float = 1.0,
                 hold_ms: int = 0, timeout: float = 60.0) -> None:
        self.dir = os.path.join(workdir, f"sipp-{secrets.token_hex(4)}")
        os.makedirs(self.dir)
        exe = shutil.which("sipp") or "/usr/bin/sipp"
        self.port = port or _free(local_ip)
        self.argv = [exe, "-sf", os.path.join(SCENARIOS, scenario), "-i", local_ip, "-p", str(self.port),
                     "-mi", local_ip, "-mp", str(_free(local_ip)), "-m", str(calls), "-l", str(calls),
                     "-r", f"{rate:g}", "-d", str(hold_ms), "-nostdin", "-timeout", f"{int(timeout)}s",
                     "-timer_resol", "1", "-trace_rtt", "-rtt_freq", "1", "-trace_err", "-error_file", os.path.join(self.dir, "err.log")]
        if remote:
            self.argv += ["-s", "callee", f"{remote[0]}:{remote[1]}"]
        self.cpu = cpu
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Sipp":
        self.proc = procs.start(self.argv, self.cpu, os.path.join(self.dir, "sipp.log"), cwd=self.dir)
        return self

    def wait(self) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(self.timeout + 15)
        except subprocess.TimeoutExpired:
            self.kill()
            return -1

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def rtts_ms(self) -> list[float]:
        out = []
        for path in glob.glob(os.path.join(self.dir, "*_rtt.csv")):
            with open(path, newline="") as f:
                for row in csv.reader(f, delimiter=";"):
                    try:
                        out.append(float(row[1]))
                    except (IndexError, ValueError):
                        continue
        return out


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_step(edge: Edge, workdir: str, rate: float, calls: int, cpu: int | None, hold_ms: int = 0) -> dict:
    timeout = calls / rate + 30
    uas = Sipp(workdir, UAS_SCENARIO, edge.next_hop[0], calls, cpu, port=edge.next_hop[1], timeout=timeout).start()
    time.sleep(0.3)
    uac = Sipp(workdir, UAC_SCENARIO, "127.0.0.1", calls, cpu, remote=edge.access, rate=rate, hold_ms=hold_ms,
               timeout=timeout).start()
    started = time.monotonic()
    try:
        rc = uac.wait()
        elapsed = time.monotonic() - started
    finally:
        uac.kill()
        uas.kill()
    rtts = uac.rtts_ms()
    ok = len(rtts)
    return {"rate": rate, "calls": calls, "answered": ok, "sipp_exit": rc, "seconds": elapsed,
            "passed": rc == 0 and ok == calls and rtts and _pct(rtts, 0.99) < RETRANSMIT_MS,
            "invite_200_ms": {"p50": statistics.median(rtts) if rtts else None, "p99": _pct(rtts, 0.99),
                              "max": max(rtts) if rtts else None}}


def measure(workdir: str, cpus: dict, rates: list[float], step_seconds: float, latency_calls: int,
            memory_calls: int) -> dict:
    result: dict = {"status": "measured"}
    # 1. INVITE->200, one call at a time, baseline Kamailio then the edge (bench.sipprobe).
    base = Edge(workdir, cpus["relay"], with_plugin=False)
    try:
        base.start()
        result["baseline"] = _probe(base, latency_calls, cpus)
    finally:
        base.stop()
    edge = Edge(workdir, cpus["relay"])
    try:
        edge.start()
        _probe(edge, 20, cpus)  # warm the workers up (imports, connections)
        metrics_dir = os.path.join(edge.workdir, "plugin-metrics")
        timings = plugin_timings(metrics_dir)
        result["edge_latency"] = _probe(edge, latency_calls, cpus)
        # Where the plugin's time on those calls went, from its own histograms.
        result["plugin_ms"] = timing_means_ms(timings, plugin_timings(metrics_dir))
        b, e = result["baseline"], result["edge_latency"]
        result["added_ms"] = {k: (e[f"{k}_ms"] - b[f"{k}_ms"]) if e[f"{k}_ms"] is not None
                              and b[f"{k}_ms"] is not None else None for k in ("p50", "p99")}
        # The INVITE alone: sent by the caller -> received by the callee.
        result["invite_added_ms"] = {
            k: (e[f"invite_forward_{k}_ms"] - b[f"invite_forward_{k}_ms"])
            if e.get(f"invite_forward_{k}_ms") is not None and b.get(f"invite_forward_{k}_ms") is not None
            else None for k in ("p50", "p99")}
        # 2. Memory: calls held open, before the ramp (whose last, failed, step can leave
        # a backlog of retransmissions and unfinished dialogs behind it).
        result["memory"] = _memory(edge, memory_calls, cpus)
        # 3. The ramp: highest calls/s with no failed call.
        result["steps"], result["calls_per_second"] = ramp(edge, rates, step_seconds, cpus["generator"])
    finally:
        edge.stop()
    return result


def edge_cpu(edge: Edge) -> dict[str, float]:
    """CPU seconds so far (:func:`bench.procs.cpu_time`) of the edge's processes: Kamailio (all), mediad, Redis."""
    groups = {"kamailio": ([edge.kamailio.pid] + edge.kamailio_workers()) if edge.kamailio else [],
              "mediad": [edge.mediad.pid] if edge.mediad else [], "redis": [edge.redis.pid] if edge.redis else []}
    return {name: sum(procs.cpu_time(pid) or 0.0 for pid in pids) for name, pids in groups.items()}


# The plugin's timing histograms the probe's calls feed, by the name the report gives them:
# the INVITE's offer and the 200's answer (the probe's only SDP bodies), and the Iq
# round trips inside them.
PLUGIN_TIMINGS = {
    ("e2ae_plugin_sdp_seconds", "access_to_core"): "invite_sdp",
    ("e2ae_plugin_sdp_seconds", "core_to_access"): "answer_sdp",
    ("e2ae_plugin_iq_latency_seconds", "reserve"): "reserve_round_trip",
    ("e2ae_plugin_iq_latency_seconds", "modify"): "modify_round_trip",
}


def plugin_timings(metrics_dir: str) -> dict[str, tuple[float, float]]:
    """(sum in seconds, count) of each of :data:`PLUGIN_TIMINGS` so far, from the workers' metric files."""
    from plugin.metrics import exposition

    return parse_plugin_timings(exposition(metrics_dir).decode())


def parse_plugin_timings(text: str) -> dict[str, tuple[float, float]]:
    """:func:`plugin_timings` of a text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            kind = sample.name[len(family.name):]
            label = sample.labels.get("direction") or sample.labels.get("command")
            name = PLUGIN_TIMINGS.get((family.name, label))
            if name is not None and kind in ("_sum", "_count"):
                out.setdefault(name, [0.0, 0.0])[kind == "_count"] += sample.value
    return {name: (total, count) for name, (total, count) in out.items()}


def timing_means_ms(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict:
    """Mean milliseconds and count of each timing between two :func:`plugin_timings` readings."""
    out = {}
    for name, (total, count) in after.items():
        total0, count0 = before.get(name, (0.0, 0.0))
        if count > count0:
            out[name] = {"mean": round((total - total0) / (count - count0) * 1000, 3), "count": int(count - count0)}
    return out


def cpu_per_call(before: dict[str, float], after: dict[str, float], calls: int) -> dict[str, float]:
    """Milliseconds of CPU per call of each process group between two :func:`edge_cpu` readings, and their total."""
    out = {name: round((after[name] - before[name]) / calls * 1000, 2) for name in before}
    out["total"] = round(sum(out.values()), 2)
    return out


def ramp(edge: Edge, rates: list[float], step_seconds: float, cpu: int | None) -> tuple[list[dict], float]:
    """SIPp ramp through a started edge: (steps, highest rate whose step passed before the first failure).

    Each step also has the edge's CPU per call over it (``edge_cpu_ms_per_call``):
    what one core's capacity is made of, and a figure that moves less than
    pass/fail when the machine's speed drifts.
    """
    steps, best = [], None
    for rate in rates:
        calls = max(1, int(rate * step_seconds))
        before = edge_cpu(edge)
        step = run_step(edge, edge.workdir, rate, calls, cpu)
        step["edge_cpu_ms_per_call"] = cpu_per_call(before, edge_cpu(edge), calls)
        steps.append(step)
        print(f"bench: call setup {rate:g}/s{'' if cpu is not None else ' (unpinned)'}: "
              f"{step['answered']}/{step['calls']} answered, INVITE->200 p99 {step['invite_200_ms']['p99']} ms",
              file=sys.stderr)
        if not step["passed"]:
            break
        best = step
    return steps, best["rate"] if best else 0


def measure_unpinned(workdir: str, rates: list[float], step_seconds: float) -> dict:
    """The same ramp with nothing pinned: Kamailio, mediad, Redis and SIPp share every core."""
    edge = Edge(os.path.join(workdir, "unpinned"), None)
    try:
        edge.start()
        _probe(edge, 20, {"generator": None})  # warm the workers up
        steps, best = ramp(edge, rates, step_seconds, None)
    finally:
        edge.stop()
    return {"status": "measured", "steps": steps, "calls_per_second": best}


def _probe(edge: Edge, calls: int, cpus: dict) -> dict:
    """Calls one at a time; the probe's own UAS is the callee, so the INVITE's way is timed too."""
    return sipprobe.probe(edge.access, calls, uas=edge.next_hop)


def _memory(edge: Edge, calls: int, cpus: dict) -> dict:
    """RSS growth per 1,000 calls held open, of each Kamailio process and of mediad.

    The same calls are first held and ended once: a worker's RSS also counts the
    pages of Kamailio's shared memory (transactions, dialogs) it touches for the
    first time, which depends on what ran before; the second round counts what
    the calls themselves hold.
    """
    rate = min(100.0, max(5.0, calls / 10))
    warm = run_step(edge, edge.workdir, rate, calls, cpus["generator"], hold_ms=int((calls / rate + 2) * 1000))
    time.sleep(1.0)
    workers = edge.kamailio_workers()
    before = {pid: procs.rss_kib(pid) for pid in workers}
    mediad_before = procs.rss_kib(edge.mediad.pid) if edge.mediad else None
    # Every call is held until the last one is up and measured, then ended with its BYE
    # (what runs next must not find a thousand dialogs and DTLS sessions left behind).
    margin = min(20.0, max(5.0, calls / rate))
    hold_ms = int((calls / rate + margin) * 1000)
    uas = Sipp(edge.workdir, UAS_SCENARIO, edge.next_hop[0], calls, cpus["generator"], port=edge.next_hop[1],
               timeout=hold_ms / 1000 + 30).start()
    time.sleep(0.3)
    uac = Sipp(edge.workdir, UAC_SCENARIO, "127.0.0.1", calls, cpus["generator"], remote=edge.access, rate=rate,
               hold_ms=hold_ms, timeout=hold_ms / 1000 + 30).start()
    try:
        deadline = time.monotonic() + calls / rate + margin - 3
        while time.monotonic() < deadline and len(uac.rtts_ms()) < calls:
            time.sleep(0.5)
        established = len(uac.rtts_ms())
        time.sleep(1.0)
        after = {pid: procs.rss_kib(pid) for pid in workers}
        mediad_after = procs.rss_kib(edge.mediad.pid) if edge.mediad else None
        uac.wait()
        uas.wait()
    finally:
        uac.kill()
        uas.kill()
    deltas = [after[p] - before[p] for p in workers if before.get(p) is not None and after.get(p) is not None]
    if not established or not deltas:
        return {"status": "not measured", "reason": f"{established} of {calls} calls established"}
    scale = 1000 / established
    return {
        "status": "measured", "established_calls": established, "kamailio_processes": len(workers),
        "warm_round_answered": warm["answered"],
        "kamailio_worker_max_kib_per_1000": max(deltas) * scale,
        "kamailio_total_kib_per_1000": sum(deltas) * scale,
        "mediad_kib_per_1000": (mediad_after - mediad_before) * scale
        if mediad_after is not None and mediad_before is not None else None,
    }
