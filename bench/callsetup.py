"""Call setup side by side: the edge, the reference (Kamailio + rtpengine) and bare Kamailio.

Theory of operation
-------------------
:class:`System` starts one of three systems on free loopback ports (access SIP
on 127.0.0.1, core SIP on 127.0.0.2, the core's next hop on 127.0.0.3), every
process pinned to the relay CPU:

* ``Kind.EDGE``: the system as deployed, ``redis-server``, ``python -m mediad``
  and Kamailio started with ``deploy.run_edge.kamailio_command`` (the run
  command's own: ``deploy/kamailio.cfg``, the plugin, the same memory sizes),
  all reading one configuration written for the run;
* ``Kind.REFERENCE``: what an operator would run instead for the same job,
  Kamailio with ``bench/kamailio-rtpengine.cfg`` (its C ``rtpengine`` module)
  driving ``rtpengine`` (userspace, logical interfaces ``access`` on 127.0.0.1
  and ``core`` on 127.0.0.2, like mediad's two addresses);
* ``Kind.BASELINE``: Kamailio alone with ``bench/kamailio-baseline.cfg``: same
  sockets, same transaction and record-route settings, no SDP handling.

:func:`run_step` runs one SIPp pair for a fixed number of calls at a fixed
rate (the scenarios of ``sipp_scenarios/``: a WebRTC DTLS-SRTP offer from the
access side, a plain RTP answer from the core), the SIPp processes pinned to
the generator CPU, and reads every call's INVITE→200 time from SIPp's
``-trace_rtt`` file.  A step passes when every call was answered and the 99th
percentile INVITE→200 stayed below T1 (500 ms, RFC 3261 17.1.1.2): past that
the calls only got through by retransmission, the system was overloaded.

:func:`measure_round` measures one system in one round: a fresh start, a
warm-up, INVITE→200 one call at a time with ``bench.sipprobe`` (SIPp's clock
is too coarse for it), then the SIPp ramp until a step has a failed call, with
the CPU time of each process group and Kamailio's shared memory after each
step.  :func:`measure` runs the rounds, interleaved, the order of the systems
swapped every round, checks the SDPs of the edge and the reference once
(``bench.sdpcheck``), measures the edge's memory per held call, and takes the
medians.

``E2AE_BENCH_EDGE_DEFINES`` (``NAME=VALUE`` words) adds ``-A`` defines to the
edge's Kamailio: ``E2AE_BENCH_EDGE_DEFINES=E2AE_REINVITE=1`` measures the
dialog module's CSeq tracking that ``[pool] takeover = reinvite`` turns on
(docs/scaling.rst).
"""

from __future__ import annotations

import csv
import enum
import glob
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

from bench import procs, rtpengine, sdpcheck, sipprobe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(REPO, "sipp_scenarios")
UAC_SCENARIO = "wic_call_uac.xml"
# The core's side: the suite's core_uas.xml taking an ACK relayed after the BYE (bench/sipp/).
UAS_SCENARIO = os.path.join(HERE, "sipp", "core_uas.xml")
EDGE_CFG = os.path.join(REPO, "deploy", "kamailio.cfg")
BASELINE_CFG = os.path.join(HERE, "kamailio-baseline.cfg")
REFERENCE_CFG = os.path.join(HERE, "kamailio-rtpengine.cfg")
PLUGIN = os.path.join(REPO, "plugin", "kemi.py")
RETRANSMIT_MS = 500  # RFC 3261 T1: a slower INVITE->200 means the UAC retransmitted
ACCESS_MEDIA, CORE_MEDIA = "127.0.0.1", "127.0.0.2"  # each relay's media address on each side


class Kind(str, enum.Enum):
    EDGE = "edge"
    REFERENCE = "reference"
    BASELINE = "baseline"


# What the report calls each system's media relay process group.
MEDIA_PROCESS = {Kind.EDGE: "mediad", Kind.REFERENCE: "rtpengine"}


def unavailable(kind: Kind = Kind.EDGE) -> str | None:
    """None when ``kind`` can be measured, else why not."""
    paths = [os.path.join(SCENARIOS, UAC_SCENARIO), os.path.join(SCENARIOS, UAS_SCENARIO)]
    tools = ["kamailio", "sipp"]
    if kind is Kind.EDGE:
        paths += [EDGE_CFG, PLUGIN]
        tools.append("redis-server")
    elif kind is Kind.REFERENCE:
        paths.append(REFERENCE_CFG)
        if rtpengine.binary() is None:
            return "rtpengine is not installed (Debian package rtpengine-daemon)"
        if not glob.glob("/usr/lib/*/kamailio/modules/rtpengine.so"):
            return "Kamailio's rtpengine module is not installed (Debian package kamailio)"
    else:
        paths.append(BASELINE_CFG)
    for path in paths:
        if not os.path.exists(path):
            return f"{os.path.relpath(path, REPO)} is not in the tree yet"
    for tool in tools:
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


def parse_shmmem(text: str) -> dict[str, int]:
    """``kamcmd core.shmmem``'s ``name: value`` lines (total, free, used, real_used, max_used, fragments)."""
    out = {}
    for name, value in re.findall(r"^\s*(\w+):\s*(\d+)\s*$", text, re.M):
        out[name] = int(value)
    return out


class System:
    """One system under the call-setup benchmark, started and stopped as a whole."""

    def __init__(self, workdir: str, cpu: int | None, kind: Kind = Kind.EDGE, shm_mb: int | None = None) -> None:
        from deploy.run_edge import SHM_MB

        self.kind = kind
        self.workdir = os.path.join(workdir, f"{kind.value}-{secrets.token_hex(3)}")
        os.makedirs(self.workdir, exist_ok=True)
        self.cpu = cpu
        self.shm_mb = shm_mb or SHM_MB
        self.access = ("127.0.0.1", _free("127.0.0.1"))
        self.core = ("127.0.0.2", _free("127.0.0.2"))
        self.next_hop = ("127.0.0.3", _free("127.0.0.3"))
        self.control_port = procs.free_tcp_port("127.0.0.1")
        self.redis_port = _free("127.0.0.1")
        self.secret = secrets.token_hex(16)
        self.config_path = os.path.join(self.workdir, "e2ae.conf")
        self.rundir = os.path.join(self.workdir, "run")
        self.redis = self.mediad = self.kamailio = None
        self.rtpengine: rtpengine.Rtpengine | None = None

    @property
    def with_plugin(self) -> bool:
        return self.kind is Kind.EDGE

    def _config(self) -> str:
        return "\n".join([
            "[edge]", f"access_sip = {self.access[0]}:{self.access[1]}", f"core_sip = {self.core[0]}:{self.core[1]}",
            f"access_tcp = {self.access[0]}:{self.access[1]}", f"core_tcp = {self.core[0]}:{self.core[1]}",
            f"core_next_hop = sip:{self.next_hop[0]}:{self.next_hop[1]}",
            "[mediad]", f"control = 127.0.0.1:{self.control_port}", f"control_secret = {self.secret}",
            f"access_address = {ACCESS_MEDIA}", f"core_address = {CORE_MEDIA}",
            "access_ports = 54000-56999", "core_ports = 54000-56999", "metrics = off",
            "dtls_handshake_timeout = 30", "log_level = WARNING",
            "[redis]", f"url = redis://127.0.0.1:{self.redis_port}/0", "dialog_ttl = 600",
            "[plugin]", "metrics = off", "iq_timeout_ms = 2000",
        ]) + "\n"

    def _kamailio_argv(self, cfg: str, defines: list[str]) -> list[str]:
        """Kamailio in the foreground with the run command's memory sizes and allocator."""
        from deploy.run_edge import PKG_MB

        exe = shutil.which("kamailio") or "/usr/sbin/kamailio"
        argv = [exe, "-DD", "-E", "-f", cfg, "-Y", self.rundir, "-P", os.path.join(self.rundir, "kamailio.pid"),
                "-m", str(self.shm_mb), "-M", str(PKG_MB), "-x", "tlsf", "-X", "tlsf"]
        for define in defines:
            argv += ["-A", define]
        return argv

    def start(self) -> None:
        from deploy.run_edge import kamailio_command
        from mediad.config import load_config

        with open(self.config_path, "w") as f:
            f.write(self._config())
        env = dict(os.environ, E2AE_CONFIG=self.config_path, PYTHONPATH=REPO, PYTHONUNBUFFERED="1",
                   E2AE_METRICS_DIR=os.path.join(self.workdir, "plugin-metrics"))
        os.makedirs(self.rundir, exist_ok=True)
        if self.kind is Kind.EDGE:
            self.redis = procs.start(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"], self.cpu,
                                     os.path.join(self.workdir, "redis.log"))
            self.mediad = procs.start([sys.executable, "-m", "mediad", "--config", self.config_path], self.cpu,
                                      os.path.join(self.workdir, "mediad.log"), cwd=REPO, env=env)
            if not procs.wait_until(self._mediad_ready, 20, 0.1):
                raise RuntimeError(f"mediad did not start; see {self.workdir}/mediad.log")
            argv = kamailio_command(EDGE_CFG, self.rundir, load_config(self.config_path), plugin=PLUGIN,
                                    shm_mb=self.shm_mb)
            for define in os.environ.get("E2AE_BENCH_EDGE_DEFINES", "").split():
                argv += ["-A", define]
        else:
            defines = [f"BENCH_ACCESS_SIP=udp:{self.access[0]}:{self.access[1]}",
                       f"BENCH_CORE_SIP=udp:{self.core[0]}:{self.core[1]}",
                       f'BENCH_NEXT_HOP="sip:{self.next_hop[0]}:{self.next_hop[1]}"']
            cfg = BASELINE_CFG
            if self.kind is Kind.REFERENCE:
                self.rtpengine = rtpengine.Rtpengine(self.workdir, self.cpu,
                                                     interfaces=(f"access/{ACCESS_MEDIA}", f"core/{CORE_MEDIA}"))
                self.rtpengine.start()
                defines.append(f'BENCH_RTPENGINE="udp:127.0.0.1:{self.rtpengine.ng_port}"')
                cfg = REFERENCE_CFG
            argv = self._kamailio_argv(cfg, defines)
        self.kamailio = procs.start(argv, self.cpu, os.path.join(self.workdir, "kamailio.log"), cwd=self.workdir,
                                    env=env)
        if not procs.wait_until(lambda: _sip_ping(*self.access) and _sip_ping(*self.core), 30, 0.1):
            raise RuntimeError(f"kamailio did not start; see {self.workdir}/kamailio.log")

    def _mediad_ready(self) -> bool:
        from mediad.io.client import IqClient
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

    def process_groups(self) -> dict[str, list[int]]:
        """Pids by group: ``kamailio`` (all), ``media`` (mediad or rtpengine), ``redis``."""
        media = self.mediad.pid if self.mediad else (self.rtpengine.pid if self.rtpengine and self.rtpengine.proc
                                                     else None)
        return {"kamailio": ([self.kamailio.pid] + self.kamailio_workers()) if self.kamailio else [],
                "media": [media] if media else [], "redis": [self.redis.pid] if self.redis else []}

    def shm(self) -> dict[str, int] | None:
        """Kamailio's shared memory now (``core.shmmem`` over the ctl socket), None when unreadable."""
        exe = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
        try:
            out = subprocess.run([exe, "-s", f"unixs:{self.rundir}/kamailio_ctl", "core.shmmem"],
                                 capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return None
        values = parse_shmmem(out.stdout)
        return values if out.returncode == 0 and "real_used" in values else None

    def stop(self) -> None:
        procs.stop(self.kamailio)
        procs.stop(self.mediad)
        procs.stop(self.redis)
        if self.rtpengine is not None:
            self.rtpengine.stop()


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


def run_step(system: System, workdir: str, rate: float, calls: int, cpu: int | None, hold_ms: int = 0) -> dict:
    timeout = calls / rate + 30
    uas = Sipp(workdir, UAS_SCENARIO, system.next_hop[0], calls, cpu, port=system.next_hop[1], timeout=timeout).start()
    time.sleep(0.3)
    uac = Sipp(workdir, UAC_SCENARIO, "127.0.0.1", calls, cpu, remote=system.access, rate=rate, hold_ms=hold_ms,
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
            "passed": bool(rc == 0 and ok == calls and rtts and _pct(rtts, 0.99) < RETRANSMIT_MS),
            "invite_200_ms": {"p50": statistics.median(rtts) if rtts else None, "p99": _pct(rtts, 0.99),
                              "max": max(rtts) if rtts else None}}


WARM_CALLS = 20  # one at a time before the probe: imports, connections, first touches of memory


def measure_round(kind: Kind, workdir: str, cpus: dict, rates: list[float], step_seconds: float,
                  latency_calls: int, shm_mb: int | None = None) -> dict:
    """One system in one round: fresh start, warm-up, the probe, then the SIPp ramp over ``rates``."""
    system = System(workdir, cpus["relay"], kind, shm_mb)
    out: dict = {"status": "measured"}
    try:
        system.start()
        out["shm_idle"] = system.shm()
        sipprobe.probe(system.access, WARM_CALLS, uas=system.next_hop)
        metrics_dir = os.path.join(system.workdir, "plugin-metrics")
        before = plugin_timings(metrics_dir) if kind is Kind.EDGE else {}
        out["latency"] = sipprobe.probe(system.access, latency_calls, uas=system.next_hop)
        if kind is Kind.EDGE:
            # Where the plugin's time on those calls went, from its own histograms.
            out["plugin_ms"] = timing_means_ms(before, plugin_timings(metrics_dir))
        if rates:
            out["steps"], out["calls_per_second"] = ramp(system, rates, step_seconds, cpus["generator"])
    finally:
        system.stop()
    return out


def caller_offer() -> str:
    """The offer the probe sends (one call's; the tls-id changes per call)."""
    return sipprobe.SDP.format(ip="127.0.0.1", tls_id="0" * 32)


def check_sdps(latency: dict) -> dict:
    """:func:`bench.sdpcheck.check` of the first answered probe call's SDPs."""
    sdp = latency.get("sdp")
    if not sdp:
        return {"ok": False, "problems": ["no call answered"], "seen": {}}
    out = sdpcheck.check(sdp["core"], sdp["access"], caller_offer(), ACCESS_MEDIA, CORE_MEDIA)
    out["sdp"] = sdp
    return out


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def step_at(steps: list[dict], rate: float) -> dict | None:
    """The passed step of ``steps`` at ``rate`` calls/s, else None."""
    return next((s for s in steps if s["rate"] == rate and s["passed"]), None)


def summarize(rounds: list[dict], baseline_rounds: list[dict] | None, cpu_rate: float) -> dict:
    """Medians over the rounds of one system; latencies added over the baseline of the same round."""
    done = [r for r in rounds if r.get("status") == "measured"]
    out: dict = {"rounds": len(done)}
    if not done:
        return out
    lat = [r["latency"] for r in done]
    for key in ("p50_ms", "p99_ms", "invite_forward_p50_ms", "invite_forward_p99_ms"):
        out[key] = _median([entry.get(key) for entry in lat])
    if baseline_rounds is not None:
        pairs = [(r["latency"], b["latency"]) for r, b in zip(rounds, baseline_rounds)
                 if r.get("status") == "measured" and b.get("status") == "measured"]
        for name, key in (("added_ms", ""), ("invite_added_ms", "invite_forward_")):
            out[name] = {q: _median([(e.get(f"{key}{q}_ms") - b.get(f"{key}{q}_ms"))
                                     if e.get(f"{key}{q}_ms") is not None and b.get(f"{key}{q}_ms") is not None
                                     else None for e, b in pairs]) for q in ("p50", "p99")}
    ramps = [r for r in done if "steps" in r]
    if ramps:
        out["calls_per_second"] = _median([r["calls_per_second"] for r in ramps])
        # No step of any round failed: the ramp ran out of rates, not the system out of capacity.
        out["calls_per_second_lower_bound"] = all(s["passed"] for r in ramps for s in r["steps"])
        per_rate = [(s["shm"]["real_used"] - r["shm_idle"]["real_used"]) / s["rate"] / 1024
                    for r in ramps if r.get("shm_idle") for s in r["steps"] if s["passed"] and s.get("shm")]
        out["shm_kib_per_call_per_second"] = _median(per_rate)
        at = [step_at(r["steps"], cpu_rate) for r in ramps]
        at = [s for s in at if s is not None]
        if at:
            groups = at[0]["cpu_ms_per_call"].keys()
            out["cpu_ms_per_call"] = {g: _median([s["cpu_ms_per_call"][g] for s in at]) for g in groups}
            out["cpu_rate"] = cpu_rate
    return out


def shm_mb_for(calls_per_second: float, held_calls: int, kib_per_call_per_second: float = 168.0,
               bytes_per_held_call: float = 1400.0, idle_mb: float = 3.0, margin: float = 1.5) -> int:
    """Kamailio's ``-m`` for a load: ``margin`` x (idle + rate x per call/s + held calls x per held call), MB.

    The defaults are the edge's figures measured by this benchmark
    (docs/performance.rst, "Kamailio's shared memory"): every call/s keeps
    168 KiB in use (its INVITE and BYE transactions, held for tm's 5 s wait
    timer), every held call 1.4 KB (its dialog).
    """
    need = idle_mb + calls_per_second * kib_per_call_per_second / 1024 + held_calls * bytes_per_held_call / 2 ** 20
    return int(-(-need * margin // 1))


def measure(workdir: str, cpus: dict, rates: list[float], step_seconds: float, latency_calls: int,
            memory_calls: int, rounds: int = 1, kinds: tuple[Kind, ...] = tuple(Kind), cpu_rate: float = 100.0,
            ramp_baseline: bool = True, shm_mb: int | None = None) -> dict:
    """Every system of ``kinds`` in ``rounds`` interleaved rounds; the report's ``call_setup`` entry.

    Its ``memory`` entry (the edge's memory per held call) goes to the report's
    ``memory.kamailio_worker``.
    """
    result: dict = {"status": "measured", "rounds": rounds, "cpu_rate": cpu_rate, "systems": {}, "sdp_check": {}}
    per: dict[Kind, list[dict]] = {}
    for kind in kinds:
        why = unavailable(kind)
        result["systems"][kind.value] = {"status": "measured"} if why is None else {"status": "not measured",
                                                                                   "reason": why}
        if why is None:
            per[kind] = []
    active = [k for k in kinds if k in per]
    for rnd in range(1, rounds + 1):
        for kind in (active if rnd % 2 else list(reversed(active))):
            steps = rates if kind is not Kind.BASELINE or ramp_baseline else []
            try:
                entry = measure_round(kind, workdir, cpus, steps, step_seconds, latency_calls, shm_mb)
            except Exception as exc:
                entry = {"status": "failed", "reason": f"round {rnd}: {str(exc)[:400]}"}
                print(f"bench: call setup {kind.value} round {rnd} failed: {exc}", file=sys.stderr)
            entry["round"] = rnd
            per[kind].append(entry)
            lat = entry.get("latency") or {}
            print(f"bench: call setup round {rnd} {kind.value}: INVITE->200 p50 {lat.get('p50_ms')} ms, "
                  f"{entry.get('calls_per_second')} calls/s", file=sys.stderr)
    baseline = per.get(Kind.BASELINE)
    for kind in active:
        sysres = result["systems"][kind.value]
        sysres["round_results"] = per[kind]
        sysres["median"] = summarize(per[kind], baseline if kind is not Kind.BASELINE else None, cpu_rate)
        failed = [r for r in per[kind] if r.get("status") != "measured"]
        if len(failed) == len(per[kind]):
            sysres.update(status="failed", reason=failed[0].get("reason"))
        if kind is not Kind.BASELINE:
            first = next((r for r in per[kind] if r.get("status") == "measured"), None)
            result["sdp_check"][kind.value] = (check_sdps(first["latency"]) if first is not None
                                               else {"ok": False, "problems": ["not measured"], "seen": {}})
    if Kind.EDGE in per and result["systems"]["edge"]["status"] == "measured":
        edge = System(workdir, cpus["relay"], Kind.EDGE, shm_mb)
        try:
            edge.start()
            sipprobe.probe(edge.access, WARM_CALLS, uas=edge.next_hop)
            result["memory"] = _memory(edge, memory_calls, cpus)
        except Exception as exc:
            result["memory"] = {"status": "failed", "reason": str(exc)[:500]}
        finally:
            edge.stop()
    else:
        result["memory"] = {"status": "not measured", "reason": "the edge was not measured"}
    return result


def process_cpu(system: System) -> dict[str, float]:
    """CPU seconds so far (:func:`bench.procs.cpu_time`) of each of the system's process groups."""
    return {name: sum(procs.cpu_time(pid) or 0.0 for pid in pids) for name, pids in system.process_groups().items()}


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
    try:
        from plugin.metrics import exposition

        return parse_plugin_timings(exposition(metrics_dir).decode())
    except Exception as exc:  # the plugin's metrics being rewritten may fail in any way
        print(f"bench: plugin timings not read: {exc}", file=sys.stderr)
        return {}


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
    """Milliseconds of CPU per call of each process group between two :func:`process_cpu` readings, and their total."""
    out = {name: round((after[name] - before[name]) / calls * 1000, 3) for name in before}
    out["total"] = round(sum(out.values()), 3)
    return out


def ramp(system: System, rates: list[float], step_seconds: float, cpu: int | None) -> tuple[list[dict], float]:
    """SIPp ramp through a started system: (steps, highest rate whose step passed before the first failure).

    Each step also has the CPU per call of each process group over it
    (``cpu_ms_per_call``): what one core's capacity is made of, and a figure
    that moves less than pass/fail when the machine's speed drifts; and
    Kamailio's shared memory at its end (``shm``: ``real_used`` then holds the
    transactions of the last few seconds, still in tm's wait state), read
    through the ctl socket.
    """
    steps, best = [], None
    for rate in rates:
        calls = max(1, int(rate * step_seconds))
        before = process_cpu(system)
        step = run_step(system, system.workdir, rate, calls, cpu)
        step["cpu_ms_per_call"] = cpu_per_call(before, process_cpu(system), calls)
        step["shm"] = system.shm()
        steps.append(step)
        print(f"bench: call setup {system.kind.value} {rate:g}/s{'' if cpu is not None else ' (unpinned)'}: "
              f"{step['answered']}/{step['calls']} answered, INVITE->200 p99 {step['invite_200_ms']['p99']} ms, "
              f"CPU {step['cpu_ms_per_call']['total']} ms/call", file=sys.stderr)
        if not step["passed"]:
            break
        best = step
    return steps, best["rate"] if best else 0


def measure_unpinned(workdir: str, rates: list[float], step_seconds: float) -> dict:
    """The edge's ramp with nothing pinned: Kamailio, mediad, Redis and SIPp share every core."""
    edge = System(os.path.join(workdir, "unpinned"), None)
    try:
        edge.start()
        sipprobe.probe(edge.access, WARM_CALLS, uas=edge.next_hop)
        steps, best = ramp(edge, rates, step_seconds, None)
    finally:
        edge.stop()
    return {"status": "measured", "steps": steps, "calls_per_second": best}


TM_WAIT_SECONDS = 5.0  # tm's wait timer (wt_timer): a completed transaction stays this long in shared memory


def _memory(edge: System, calls: int, cpus: dict) -> dict:
    """Memory per call held open: RSS growth of each Kamailio process and of mediad, Kamailio's shared memory.

    The same calls are first held and ended once: a worker's RSS also counts the
    pages of Kamailio's shared memory (transactions, dialogs) it touches for the
    first time, which depends on what ran before; the second round counts what
    the calls themselves hold.  Kamailio's shared memory in use
    (``real_used``) is read before the calls, once they are all up, and again
    after tm's wait timer has freed their INVITE transactions: what is left is
    what a held call keeps (its dialog).
    """
    rate = min(100.0, max(5.0, calls / 10))
    warm = run_step(edge, edge.workdir, rate, calls, cpus["generator"], hold_ms=int((calls / rate + 2) * 1000))
    time.sleep(TM_WAIT_SECONDS + 0.5)  # the warm round's transactions and dialogs freed
    workers = edge.kamailio_workers()
    before = {pid: procs.rss_kib(pid) for pid in workers}
    mediad_before = procs.rss_kib(edge.mediad.pid) if edge.mediad else None
    shm_before = edge.shm()
    # Every call is held until the last one is up and measured, then ended with its BYE
    # (what runs next must not find a thousand dialogs and DTLS sessions left behind).
    margin = min(20.0, max(TM_WAIT_SECONDS + 5, calls / rate))
    hold_ms = int((calls / rate + margin) * 1000)
    uas = Sipp(edge.workdir, UAS_SCENARIO, edge.next_hop[0], calls, cpus["generator"], port=edge.next_hop[1],
               timeout=hold_ms / 1000 + 30).start()
    time.sleep(0.3)
    uac = Sipp(edge.workdir, UAC_SCENARIO, "127.0.0.1", calls, cpus["generator"], remote=edge.access, rate=rate,
               hold_ms=hold_ms, timeout=hold_ms / 1000 + 30).start()
    shm_held = shm_dialogs = None
    try:
        deadline = time.monotonic() + calls / rate + margin - TM_WAIT_SECONDS - 3
        while time.monotonic() < deadline and len(uac.rtts_ms()) < calls:
            time.sleep(0.5)
        established = len(uac.rtts_ms())
        time.sleep(1.0)
        after = {pid: procs.rss_kib(pid) for pid in workers}
        mediad_after = procs.rss_kib(edge.mediad.pid) if edge.mediad else None
        shm_held = edge.shm()
        time.sleep(TM_WAIT_SECONDS + 0.5)
        shm_dialogs = edge.shm()
        uac.wait()
        uas.wait()
    finally:
        uac.kill()
        uas.kill()
    deltas = [after[p] - before[p] for p in workers if before.get(p) is not None and after.get(p) is not None]
    if not established or not deltas:
        return {"status": "not measured", "reason": f"{established} of {calls} calls established"}
    scale = 1000 / established
    out = {
        "status": "measured", "established_calls": established, "kamailio_processes": len(workers),
        "warm_round_answered": warm["answered"],
        "kamailio_worker_max_kib_per_1000": max(deltas) * scale,
        "kamailio_total_kib_per_1000": sum(deltas) * scale,
        "mediad_kib_per_1000": (mediad_after - mediad_before) * scale
        if mediad_after is not None and mediad_before is not None else None,
    }
    if shm_before and shm_held and shm_dialogs:
        out["shm_before"], out["shm_held"], out["shm_dialogs"] = shm_before, shm_held, shm_dialogs
        out["shm_bytes_per_held_call"] = (shm_dialogs["real_used"] - shm_before["real_used"]) / established
        out["shm_bytes_per_call_with_transaction"] = (shm_held["real_used"] - shm_before["real_used"]) / established
    return out
