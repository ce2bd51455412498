"""``python -m bench.profile``: where each process of the edge spends its time per call, at a fixed call rate.

Theory of operation
-------------------
Each system of ``bench.callsetup`` (the edge, and for comparison the
reference) is started pinned to the relay CPU, warmed up with probe calls, and
carries SIPp calls at ``--rate`` calls/s for ``--seconds`` (the generator CPU
runs SIPp and the profilers).  Over exactly those calls:

* the CPU time of each process group (``/proc`` schedstat) gives milliseconds
  per call: Kamailio, mediad or rtpengine, Redis;
* ``perf record -e cpu-clock`` (a software event: this machine's virtual CPUs
  expose no hardware counters) samples every process of the system; the
  samples are split by process group and by object (Kamailio's core and
  modules, libpython and the Python extension modules, libc, the kernel...)
  and by symbol;
* ``py-spy record --nonblocking`` samples the Python stacks of every Kamailio
  process and of mediad while they run (idle samples left out); each stack is
  put in one category (:data:`KAMAILIO_CATEGORIES`, :data:`MEDIAD_CATEGORIES`:
  the first whose pattern a frame of the stack matches, categories in
  order) and, for Kamailio, in one operation (the plugin's KEMI entry point);
* Redis's ``INFO commandstats`` before and after gives its calls and
  microseconds per command.

A Python category's milliseconds per call is its share of the py-spy samples
times the time those samples stand for (samples / sampling rate / calls,
never more than the group's CPU per call).  py-spy's samples are not all
CPU: it samples a Kamailio worker blocked on a socket read as if it ran, and
mediad's loop waiting in epoll too.  So a stack whose innermost frame waits
(:data:`WAITS`: in Kamailio redis-py's socket read or the Iq client's, in
mediad the loop with no callback running) is counted as waiting, apart, and
the categories are the shares of the other samples: what ran, or waited for
the CPU (on one loaded core that can still be most of them: a process that
wakes another by a send is often preempted on the send's line).  In a Kamailio worker nearly all
time is under a Python frame: the plugin calls Kamailio's C functions
(``KSR.tm.t_relay`` ...) from Python, so their time counts in the category of
the Python code that called them.  Results go to
``bench/results/profile-<timestamp>.json`` and ``.md``.  ``--smoke`` runs the
whole path in seconds.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bench import callsetup, procs, sipprobe
from bench.callsetup import Kind

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")
SAMPLE_HZ = 499  # perf and py-spy; prime, away from the kernel tick
APT_FOR = {"perf": "linux-perf"}

# (category, pattern matched against a frame's "function (file:line)"), in order: a stack is the first
# category any of its frames matches.  The Iq client comes before JSON and AES-GCM (which it uses), Redis
# before the plugin's state module (which calls it).
KAMAILIO_CATEGORIES = (
    ("mediad Iq round trips (client: encode, seal, send, wait, open, decode)", r"[(/]mediad/io/client\.py"),
    ("Redis round trips (redis-py, the plugin's scripts)", r"[(/]redis/|hiredis"),
    ("SDP rules (parse, plan, render)", r"[(/]sdp_rules/"),
    ("metrics (prometheus-client)", r"[(/]plugin/metrics\.py|[(/]prometheus_client/"),
    ("dialog records and their store (plugin/record.py, plugin/state.py)", r"[(/]plugin/(record|state)\.py"),
    ("Kamailio relaying (KSR.tm.t_relay and the calls around it)", r"_relay \([^)]*plugin/kemi\.py"),
    ("message in and out of Python (KSR.pv reads, set_body)", r"(_pv|_message) \([^)]*plugin/kemi\.py"),
    ("plugin glue (other KSR calls, the plugin's own logic)", r"[(/]plugin/"),
)
MEDIAD_CATEGORIES = (
    ("Redis writes (redis-py)", r"[(/]redis/|hiredis"),
    ("control: frames, AES-GCM, JSON, dispatch",
     r"[(/]mediad/(io/control|proto/controlwire|proto/iqcodec)\.py|[(/]iq/(messages|values)\.py"),
    ("sessions and ports (reserve, modify, release)",
     r"[(/]mediad/(core/session|io/ports|state|core/relay|proto/demux|io/fastpath)\.py"),
    ("DTLS, ICE, SRTP set-up", r"[(/]mediad/proto/(dtls|dtls_record|stun|srtp|certs)\.py"),
    ("event loop (asyncio, uvloop)", r"[(/]asyncio/|uvloop"),
)
# Innermost frames of a Kamailio worker blocked on a reply (py-spy samples them as running).
KAMAILIO_WAITS = re.compile(r"^(\w+\.)?(read_from_socket \([^)]*redis/|_receive \([^)]*mediad/io/client\.py)")
# mediad's innermost frame when its event loop is in its own C code with no callback running:
# waiting in epoll, nearly always (uvloop's C is a few % of mediad's CPU in perf).
MEDIAD_WAITS = re.compile(r"^(\w+\.)?(run \([^)]*runners\.py|run_until_complete \(|run_forever \(|run \([^)]*uvloop/)")
WAITS = {"kamailio": KAMAILIO_WAITS, "media": MEDIAD_WAITS}
# The plugin's KEMI entry points, by the operation a call makes of them.
KAMAILIO_OPERATIONS = (
    ("release at dialog end (dialog:end event)", r"ksr_dialog_event"),
    ("replies (the 200's answer)", r"ksr_onreply_edge|ksr_failure_edge"),
    ("requests (the INVITE's offer, ACK, BYE)", r"ksr_request_route"),
    ("mediad events (rtimer)", r"ksr_rtimer_events"),
)
# perf objects that are Python: the interpreter, app_python3 and the extension modules it loads.
PYTHON_OBJECTS = re.compile(r"libpython|app_python3|\.cpython-|_hiredis|_json|libcrypto|libssl|python3")


def tool(name: str) -> str | None:
    return shutil.which(name) or (os.path.exists(f"/usr/bin/{name}") and f"/usr/bin/{name}") or None


def py_spy() -> str | None:
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return here if os.path.exists(here) else tool("py-spy")


def perf_usable() -> str | None:
    """None when ``perf record -e cpu-clock`` works here, else why not."""
    exe = tool("perf")
    if exe is None:
        return "perf is not installed (Debian package linux-perf)"
    try:
        out = subprocess.run([exe, "stat", "-e", "cpu-clock", "true"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"perf does not run: {exc}"
    return None if out.returncode == 0 else f"perf stat fails: {out.stderr.strip()[-200:]}"


# -- parsing (pure) ----------------------------------------------------------------------

def categorize(stack: list[str], categories) -> str:
    """The first category of ``categories`` one of ``stack``'s frames matches, else ``other Python``."""
    for name, pattern in categories:
        rx = re.compile(pattern)
        if any(rx.search(frame) for frame in stack):
            return name
    return "other Python"


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """py-spy's ``--format raw`` (collapsed stacks: ``frame;frame;... count``) as (frames root first, count)."""
    out = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def shares(samples: list[tuple[list[str], int]], categories) -> dict[str, float]:
    """Fraction of ``samples`` in each category."""
    totals: collections.Counter = collections.Counter()
    for stack, count in samples:
        totals[categorize(stack, categories)] += count
    n = sum(totals.values())
    return {name: count / n for name, count in totals.most_common()} if n else {}


def leaf_module(frame: str) -> str:
    """The module of a py-spy frame ``function (path/module.py:line)``: ``json``, ``hmac``, ``mediad/io/client.py``..."""
    m = re.search(r"\(([^:()]+):\d+\)$", frame)
    if not m:
        return frame
    path = m.group(1)
    for prefix in ("plugin/", "mediad/", "sdp_rules/"):
        if path.startswith(prefix) or "/" + prefix in path:
            return path[path.index(prefix):]
    first = path.split("/")[0]
    return first[:-3] if first.endswith(".py") else first


def leaf_shares(samples: list[tuple[list[str], int]], categories) -> dict[str, dict[str, float]]:
    """Within each category, the fraction of its samples by the module of the innermost frame."""
    per: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for stack, count in samples:
        per[categorize(stack, categories)][leaf_module(stack[-1])] += count
    return {name: {mod: c / sum(counter.values()) for mod, c in counter.most_common(6)}
            for name, counter in per.items()}


PROJECT_FRAME = re.compile(r"[(/](plugin|sdp_rules|mediad|iq)/[^:()]+:\d+\)$")


def blocked(stack: list[str], group: str = "kamailio") -> bool:
    """Whether a stack of ``group`` is waiting (:data:`WAITS`): a Kamailio worker blocked
    on a reply, mediad's loop with no callback running."""
    waits = WAITS.get(group)
    return bool(stack) and waits is not None and waits.search(stack[-1]) is not None


def project_lines(samples: list[tuple[list[str], int]], top: int = 30) -> dict[str, float]:
    """The fraction of ``samples`` by the innermost frame of the project's own code in each
    stack (``function (plugin/kemi.py:123)``): the line whose call the time went to, a C
    function of Kamailio called through KSR included.  The ``top`` largest."""
    counter: collections.Counter = collections.Counter()
    for stack, count in samples:
        frame = next((f for f in reversed(stack) if PROJECT_FRAME.search(f)), "outside the project")
        m = re.search(r"^(.*) \((?:.*/)?((?:plugin|sdp_rules|mediad|iq)/[^:()]+:\d+)\)$", frame)
        counter[f"{m.group(1)} ({m.group(2)})" if m else frame] += count
    n = sum(counter.values())
    return {frame: c / n for frame, c in counter.most_common(top)} if n else {}


def parse_perf_report(text: str) -> list[tuple[float, list[str]]]:
    """``perf report --stdio --no-children -F overhead,...`` lines as (percent, [fields])."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.match(r"\s*([\d.]+)%\s+(.*)$", line)
        if m:
            out.append((float(m.group(1)), re.split(r"\s{2,}", m.group(2).strip())))
    return out


def parse_commandstats(text: str) -> dict[str, dict[str, float]]:
    """Redis ``INFO commandstats``: {command: {calls, usec}}."""
    out = {}
    for m in re.finditer(r"^cmdstat_([^:]+):calls=(\d+),usec=(\d+)", text, re.M):
        out[m.group(1)] = {"calls": int(m.group(2)), "usec": int(m.group(3))}
    return out


# -- one system --------------------------------------------------------------------------

def _redis_info(system) -> str:
    if system.redis is None:
        return ""
    out = subprocess.run(["redis-cli", "-p", str(system.redis_port), "INFO", "commandstats"], capture_output=True,
                         text=True, timeout=10)
    return out.stdout


def _pin(cpu):
    return procs.pinned(cpu)


def profile_system(kind: Kind, workdir: str, cpus: dict, rate: float, seconds: float, outdir: str) -> dict:
    """Run ``rate`` calls/s for ``seconds`` through a fresh ``kind`` under perf and py-spy; the raw figures."""
    system = callsetup.System(workdir, cpus["relay"], kind)
    result: dict = {"kind": kind.value, "rate": rate}
    perf_exe, spy = tool("perf"), py_spy()
    try:
        system.start()
        sipprobe.probe(system.access, callsetup.WARM_CALLS, uas=system.next_hop)
        callsetup.run_step(system, system.workdir, rate, max(1, int(rate)), cpus["generator"])  # warm at rate
        time.sleep(callsetup.TM_WAIT_SECONDS)
        groups = system.process_groups()
        pids = [p for ps in groups.values() for p in ps]
        calls = max(1, int(rate * seconds))
        duration = calls / rate + 2
        recorders = []
        perf_data = os.path.join(outdir, f"{kind.value}.perf.data")
        if perf_exe and perf_usable() is None:
            recorders.append(("perf", subprocess.Popen(
                [perf_exe, "record", "-e", "cpu-clock", "-F", str(SAMPLE_HZ), "-o", perf_data,
                 "-p", ",".join(str(p) for p in pids)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pin(cpus["generator"]))))
        spy_files = {}
        python_pids = groups["kamailio"] + (groups["media"] if kind is Kind.EDGE else [])
        if spy is not None:
            for pid in python_pids:
                path = os.path.join(outdir, f"{kind.value}.{pid}.pyspy.txt")
                spy_files[pid] = path
                recorders.append(("py-spy", subprocess.Popen(
                    [spy, "record", "--pid", str(pid), "--rate", str(SAMPLE_HZ), "--format", "raw", "--nonblocking",
                     "--duration", str(int(duration + 1)), "--output", path],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_pin(cpus["generator"]))))
        time.sleep(1.0)  # the profilers attached
        redis_before = parse_commandstats(_redis_info(system))
        cpu_before = callsetup.process_cpu(system)
        step = callsetup.run_step(system, system.workdir, rate, calls, cpus["generator"])
        cpu_after = callsetup.process_cpu(system)
        redis_after = parse_commandstats(_redis_info(system))
        for name, proc in recorders:
            if name == "perf":
                proc.send_signal(signal.SIGINT)
        for name, proc in recorders:
            try:
                proc.wait(duration + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
        result["step"] = step
        result["calls"] = calls
        result["cpu_ms_per_call"] = callsetup.cpu_per_call(cpu_before, cpu_after, calls)
        result["redis_commands"] = {
            cmd: {"calls_per_call": (v["calls"] - redis_before.get(cmd, {}).get("calls", 0)) / calls,
                  "usec_per_call": (v["usec"] - redis_before.get(cmd, {}).get("usec", 0)) / calls}
            for cmd, v in redis_after.items() if v["calls"] > redis_before.get(cmd, {}).get("calls", 0)}
        result["groups"] = {name: ps for name, ps in groups.items()}
        # perf's pid field is a thread's id: every thread of each process, by group.
        result["threads"] = {name: sorted({t for p in ps for t in threads(p)}) for name, ps in groups.items()}
        result["perf_data"] = perf_data if os.path.exists(perf_data) else None
        result["py_spy"] = {str(pid): path for pid, path in spy_files.items() if os.path.exists(path)}
    finally:
        system.stop()
    return result


def threads(pid: int) -> list[int]:
    """The thread ids of ``pid`` now (``/proc/PID/task``), ``pid`` itself when unreadable."""
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def perf_breakdown(perf_data: str, groups: dict[str, list[int]]) -> dict:
    """Per process group: share of its perf samples by object, the Python share, and the top symbols."""
    exe = tool("perf")
    out: dict = {}
    text = subprocess.run([exe, "report", "-i", perf_data, "--stdio", "--no-children", "--sort", "pid,dso",
                           "-F", "overhead,pid,dso"], capture_output=True, text=True, timeout=300).stdout
    syms = subprocess.run([exe, "report", "-i", perf_data, "--stdio", "--no-children", "--sort", "pid,dso,sym",
                           "-F", "overhead,pid,dso,sym"], capture_output=True, text=True, timeout=300).stdout
    owner = {str(p): name for name, ps in groups.items() for p in ps}

    def group_of(field: str) -> str | None:
        m = re.match(r"\s*(\d+)", field)
        return owner.get(m.group(1)) if m else None

    for name in groups:
        out[name] = {"objects": collections.Counter(), "symbols": collections.Counter()}
    for pct, fields in parse_perf_report(text):
        if len(fields) >= 2 and group_of(fields[0]):
            out[group_of(fields[0])]["objects"][fields[1]] += pct
    for pct, fields in parse_perf_report(syms):
        if len(fields) >= 3 and group_of(fields[0]):
            out[group_of(fields[0])]["symbols"][f"{fields[1]} {fields[2]}"] += pct
    result = {}
    for name, e in out.items():
        total = sum(e["objects"].values())
        if not total:
            continue
        objects = {k: v / total for k, v in e["objects"].most_common()}
        result[name] = {
            "objects": objects,
            "python_share": sum(v for k, v in objects.items() if PYTHON_OBJECTS.search(k)),
            "kernel_share": sum(v for k, v in objects.items() if "kernel" in k),
            "top_symbols": [(k, v / total) for k, v in e["symbols"].most_common(15)],
        }
    return result


def analyse(raw: dict) -> dict:
    """Milliseconds per call by process group, object class and Python category."""
    cpu = raw["cpu_ms_per_call"]
    perf = perf_breakdown(raw["perf_data"], raw.get("threads") or raw["groups"]) if raw.get("perf_data") else {}
    out: dict = {"kind": raw["kind"], "rate": raw["rate"], "calls": raw["calls"], "cpu_ms_per_call": cpu,
                 "perf": perf, "redis_commands": raw.get("redis_commands", {}), "passed": raw["step"]["passed"]}
    stacks: dict[str, list] = {"kamailio": [], "media": []}
    for pid, path in raw.get("py_spy", {}).items():
        group = next((g for g, ps in raw["groups"].items() if int(pid) in ps), None)
        if group in stacks:
            with open(path) as f:
                stacks[group] += parse_collapsed(f.read())
    python = {}
    waiting: dict[str, float] = {}
    for group in stacks:
        all_samples = sum(c for _, c in stacks[group])
        stacks[group] = [(st, c) for st, c in stacks[group] if not blocked(st, group)]
        waiting[group] = (all_samples - sum(c for _, c in stacks[group])) / SAMPLE_HZ / raw["calls"] * 1000
    for group, categories in (("kamailio", KAMAILIO_CATEGORIES), ("media", MEDIAD_CATEGORIES)):
        if not stacks[group]:
            continue
        # Active samples x sampling period = time under a Python frame (for Kamailio that is nearly
        # all of a worker's time: KEMI calls the C functions from Python); never more than the CPU time.
        sampled_ms = sum(c for _, c in stacks[group]) / SAMPLE_HZ / raw["calls"] * 1000
        py_ms = min(cpu[group], sampled_ms)
        python[group] = {"python_ms_per_call": py_ms, "sampled_ms_per_call": sampled_ms,
                         "categories": {k: v * py_ms for k, v in shares(stacks[group], categories).items()},
                         "samples": sum(c for _, c in stacks[group]),
                         "waiting_ms_per_call": waiting.get(group)}
        python[group]["leaves"] = leaf_shares(stacks[group], categories)
        python[group]["lines"] = {k: v * py_ms for k, v in project_lines(stacks[group]).items()}
        if group == "kamailio":
            python[group]["operations"] = {k: v * py_ms for k, v in
                                           shares(stacks[group], KAMAILIO_OPERATIONS).items()}
    out["python"] = python
    return out


def markdown(results: list[dict], started: str, note: str) -> str:
    lines = [f"# e2ae edge profile — {started}", ""]
    if note:
        lines += [note, ""]
    for r in results:
        cpu = r["cpu_ms_per_call"]
        lines += [f"## {r['kind']} at {r['rate']:g} calls/s ({r['calls']} calls, step "
                  f"{'passed' if r['passed'] else 'FAILED'})", "",
                  "CPU per call, ms: " + ", ".join(f"{k} {v:.3f}" for k, v in cpu.items()), ""]
        for group, p in r["perf"].items():
            if not cpu.get(group):
                continue
            lines += [f"### {group}: {cpu[group]:.3f} ms per call, by object (perf)", "",
                      "| object | share | ms per call |", "| --- | ---: | ---: |"]
            for obj, share in list(p["objects"].items())[:10]:
                lines.append(f"| {obj} | {share * 100:.1f} % | {share * cpu[group]:.3f} |")
            lines += ["", "| top symbols | share |", "| --- | ---: |"]
            lines += [f"| {sym} | {share * 100:.1f} % |" for sym, share in p["top_symbols"][:12]]
            lines.append("")
        for group, p in r["python"].items():
            waited = ("" if p.get("waiting_ms_per_call") is None else
                      f"; besides, {p['waiting_ms_per_call']:.3f} ms per call of samples waiting, left out")
            lines += [f"### {group}: {p['python_ms_per_call']:.3f} ms per call under Python frames, by category "
                      f"(py-spy, {p['samples']} samples: {p['sampled_ms_per_call']:.3f} ms per call{waited})", "",
                      "| category | ms per call | innermost frames by module |", "| --- | ---: | --- |"]
            for k, v in p["categories"].items():
                leaves = ", ".join(f"{mod} {share * 100:.0f} %" for mod, share in p.get("leaves", {}).get(k, {}).items())
                lines.append(f"| {k} | {v:.3f} | {leaves} |")
            if "operations" in p:
                lines += ["", "| operation (KEMI entry point) | ms per call |", "| --- | ---: |"]
                lines += [f"| {k} | {v:.3f} |" for k, v in p["operations"].items()]
            if p.get("lines"):
                lines += ["", "| innermost line of the project's own code | ms per call |", "| --- | ---: |"]
                lines += [f"| {k} | {v:.3f} |" for k, v in p["lines"].items()]
            lines.append("")
        if r["redis_commands"]:
            lines += ["### Redis commands per call", "", "| command | calls per call | µs per call |",
                      "| --- | ---: | ---: |"]
            lines += [f"| {cmd} | {v['calls_per_call']:.2f} | {v['usec_per_call']:.1f} |"
                      for cmd, v in sorted(r["redis_commands"].items(), key=lambda kv: -kv[1]["usec_per_call"])]
            lines.append("")
    return "\n".join(lines) + "\n"


def ensure_profilers() -> None:
    """Install what is missing: Debian's linux-perf (apt-get, as root) and py-spy (pip, pinned by constraints.txt)."""
    if tool("perf") is None and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                                                    APT_FOR["perf"]]):
            subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, timeout=900, check=False)
    if py_spy() is None:
        constraints = os.path.join(os.path.dirname(HERE), "constraints.txt")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c",
                        constraints, "py-spy"], stdin=subprocess.DEVNULL, timeout=900, check=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=100.0, help="calls/s (default 100)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of calls profiled (default 20)")
    p.add_argument("--systems", default="edge,reference", help="edge, reference, baseline")
    p.add_argument("--smoke", action="store_true", help="a few seconds at 10 calls/s")
    p.add_argument("--out", default=RESULTS_DIR)
    p.add_argument("--note", default="")
    p.add_argument("--keep-stacks", action="store_true",
                   help="keep py-spy's collapsed stacks beside the results (profile-<timestamp>-<system>-<pid>.pyspy.txt)")
    p.add_argument("--no-install", action="store_true", help="do not install perf or py-spy when missing")
    args = p.parse_args(argv)
    if not args.no_install:
        ensure_profilers()
    if args.smoke:
        args.rate, args.seconds = 10.0, 2.0
    if not 0 < args.rate <= 2000 or not 0 < args.seconds <= 120:
        p.error("rate (0, 2000], seconds (0, 120]")
    kinds = [Kind(k) for k in args.systems.split(",") if k]
    for why in (perf_usable(),):
        if why:
            print(f"bench.profile: {why}; profiling without perf", file=sys.stderr)
    if py_spy() is None:
        print("bench.profile: py-spy is not installed (make profile installs it); no Python stacks",
              file=sys.stderr)
    ncpu = os.cpu_count() or 1
    cpus = {"generator": 0, "relay": 1} if ncpu >= 2 else {"generator": None, "relay": None}
    started = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    results = []
    with tempfile.TemporaryDirectory(prefix="e2ae-profile-") as workdir:
        for kind in kinds:
            why = callsetup.unavailable(kind)
            if why is not None:
                print(f"bench.profile: {kind.value} not profiled: {why}", file=sys.stderr)
                continue
            raw = profile_system(kind, workdir, cpus, args.rate, args.seconds, workdir)
            results.append(analyse(raw))
            if args.keep_stacks:
                os.makedirs(args.out, exist_ok=True)
                for pid, path in raw.get("py_spy", {}).items():
                    shutil.copy(path, os.path.join(args.out, f"profile-{started}-{kind.value}-{pid}.pyspy.txt"))
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"profile-{started}")
    with open(base + ".json", "w") as f:
        json.dump({"started": started, "rate": args.rate, "seconds": args.seconds, "note": args.note,
                   "results": results}, f, indent=2)
    text = markdown(results, started, args.note)
    with open(base + ".md", "w") as f:
        f.write(text)
    print(text)
    print(f"bench.profile: results in {base}.json and {base}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
