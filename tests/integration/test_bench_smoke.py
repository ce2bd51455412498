"""The benchmark's smoke mode: the whole measuring path, in seconds, with no targets.

Runs ``python -m bench.run --smoke`` against rtpengine (installed by the
benchmark itself when missing) and against mediad, plus a few calls through
Kamailio + plugin + mediad, and checks that packets went through every relay
measured, that calls were answered, and that the results have their keys.

The load generator alone, on loopback: it protects and verifies SRTP with the
libsrtp it is given (pylibsrtp's, built on OpenSSL) rather than the Debian
libsrtp2 it is linked with, and what it sends verifies with the other one.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest

from bench import callsetup, mediad_side, procs
from bench.run import DIRECTIONS, build_generator, ensure_tools, openssl_libsrtp
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
        # The SRTP below was protected / verified by pylibsrtp's libsrtp, not Debian's.
        assert ramp["srtp_lib"] == _libsrtp_version(openssl_libsrtp())
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


def _call_setup(report, kind):
    why = callsetup.unavailable(kind)
    cs = report["call_setup"]
    if why is not None:
        assert cs["systems"][kind.value]["status"] == "not measured"
        pytest.skip(f"{kind.value} cannot be benchmarked: {why}")
    entry = cs["systems"][kind.value]
    assert entry["status"] == "measured", entry
    (rnd,) = entry["round_results"]
    return cs, rnd


def test_smoke_call_setup_through_the_edge(smoke):
    report, _ = smoke
    cs, rnd = _call_setup(report, callsetup.Kind.EDGE)
    _, base = _call_setup(report, callsetup.Kind.BASELINE)
    assert rnd["latency"]["answered"] > 0 and base["latency"]["answered"] > 0
    # The INVITE alone is timed at the probe's callee, and is part of INVITE->200.
    for entry in (rnd, base):
        assert 0 < entry["latency"]["invite_forward_p50_ms"] < entry["latency"]["p50_ms"]
    assert rnd["calls_per_second"] > 0
    # The plugin's own times on the probe's calls: one INVITE offer and one answer per
    # call, and mediad's RESERVE round trip is a part of the INVITE's time.
    plugin = rnd["plugin_ms"]
    assert plugin["invite_sdp"]["count"] == plugin["reserve_round_trip"]["count"] == rnd["latency"]["calls"]
    assert plugin["answer_sdp"]["count"] >= rnd["latency"]["answered"]  # a repeated 200 counts again
    assert 0 < plugin["reserve_round_trip"]["mean"] < plugin["invite_sdp"]["mean"]
    # The edge's CPU per call of each step, from the /proc times of its processes.
    for step in rnd["steps"]:
        cpu = step["cpu_ms_per_call"]
        assert cpu["kamailio"] > 0 and cpu["media"] > 0 and cpu["redis"] >= 0
        assert cpu["total"] == pytest.approx(cpu["kamailio"] + cpu["media"] + cpu["redis"], abs=0.005)
        assert step["shm"]["real_used"] > 0  # read over Kamailio's ctl socket
    median = cs["systems"]["edge"]["median"]
    assert median["added_ms"]["p50"] is not None and median["cpu_ms_per_call"]["total"] > 0
    assert cs["sdp_check"]["edge"]["ok"], cs["sdp_check"]["edge"]["problems"]
    kw = report["memory"]["kamailio_worker"]
    assert kw["status"] == "measured"
    # The calls were held and ended once before the measured round (first touches of shared memory).
    assert kw["warm_round_answered"] == kw["established_calls"] > 0
    # A held call keeps its dialog in Kamailio's shared memory.
    assert kw["shm_bytes_per_held_call"] > 0


def test_smoke_call_setup_through_the_reference(smoke):
    """Kamailio + its rtpengine module + rtpengine: the same probe and SIPp step, and the same job done."""
    report, table = smoke
    cs, rnd = _call_setup(report, callsetup.Kind.REFERENCE)
    assert rnd["latency"]["answered"] == rnd["latency"]["calls"] > 0
    assert rnd["calls_per_second"] > 0
    for step in rnd["steps"]:
        cpu = step["cpu_ms_per_call"]
        assert cpu["kamailio"] > 0 and cpu["media"] > 0 and cpu["redis"] == 0  # rtpengine keeps no Redis
    assert cs["sdp_check"]["reference"]["ok"], cs["sdp_check"]["reference"]["problems"]
    assert cs["systems"]["reference"]["median"]["added_ms"]["p50"] is not None
    assert "| SDPs toward core and access checked | same job ✓ | same job ✓ | — | |" in table


# -- the generator's libsrtp -------------------------------------------------------------

def _libsrtp_version(path: str) -> str:
    lib = ctypes.CDLL(path)
    lib.srtp_get_version_string.restype = ctypes.c_char_p
    return lib.srtp_get_version_string().decode()


def _streams_file(path, dst_port: int, tx_keys, rx_key: str) -> str:
    """Streams all sent to 127.0.0.1:dst_port; stream 0's packets verified with ``rx_key``."""
    with open(path, "w") as f:
        f.writelines(f"127.0.0.1 {dst_port} {key} {rx_key if i == 0 else '-'}\n" for i, key in enumerate(tx_keys))
    return str(path)


def _generator(binary, streams, rx_port, rates="2000", seconds="1", libsrtp=None):
    argv = [binary, "--streams", streams, "--rx", f"127.0.0.1:{rx_port}",
            "--tx", f"127.0.0.1:{procs.free_udp_port()}", "--rates", rates, "--step-seconds", seconds,
            "--drain-ms", "200"]
    return argv + (["--libsrtp", libsrtp] if libsrtp else [])


def _bound(port: int) -> bool:
    """Is a UDP socket bound to ``port``?  (Read, not probed: a probe could take the port first.)"""
    with open("/proc/net/udp") as f:
        return any(line.split()[1].endswith(f":{port:04X}") for line in list(f)[1:])


@pytest.fixture(scope="module")
def generator():
    missing = ensure_tools(install=False)
    if "gcc" in missing or "libsrtp2-dev" in missing:
        pytest.skip(f"cannot build the load generator: {missing} missing")
    binding = openssl_libsrtp()
    if binding is None:
        pytest.skip("pylibsrtp is not installed")
    return build_generator(), binding


def test_generator_protects_and_verifies_with_the_libsrtp_it_is_given(generator, tmp_path):
    binary, binding = generator
    rx = procs.free_udp_port()
    key = os.urandom(30).hex()
    streams = _streams_file(tmp_path / "streams.txt", rx, [key] + [os.urandom(30).hex() for _ in range(4)], key)
    runs = {}
    for name, libsrtp in (("given", binding), ("linked", None), ("unloadable", str(tmp_path / "missing.so"))):
        out = subprocess.run(_generator(binary, streams, rx, libsrtp=libsrtp), capture_output=True, text=True,
                             timeout=30, check=False)
        assert out.returncode == 0, out.stderr
        runs[name] = json.loads(out.stdout)
        (step,) = runs[name]["steps"]
        # Its own SRTP comes back to its sink: every packet, stream 0's verified.
        assert step["received"] == step["sent"] > 0 and step["foreign"] == 0, name
        assert step["verify_ok"] > 0 and step["verify_fail"] == 0, name

    given, linked, unloadable = runs["given"], runs["linked"], runs["unloadable"]
    assert given["srtp_lib"] == _libsrtp_version(binding)
    assert os.path.samefile(given["srtp_lib_file"], binding) and "srtp_lib_error" not in given
    # Without the path, or when it cannot be loaded: Debian's libsrtp2, and why.
    assert not os.path.samefile(linked["srtp_lib_file"], binding) and "srtp_lib_error" not in linked
    assert unloadable["srtp_lib_file"] == linked["srtp_lib_file"] and "missing.so" in unloadable["srtp_lib_error"]


def test_the_given_libsrtp_runs_its_own_code_not_the_linked_ones(generator, tmp_path):
    """Its calls to its own functions bind inside it, not to the linked libsrtp2 (the loader's log says so).

    pylibsrtp's libsrtp calls its exported functions through the PLT: loaded
    without RTLD_DEEPBIND they would bind to the libsrtp2 linked into the
    generator, and its srtp_protect would run Debian's NSS-based internals
    while reporting its own version.
    """
    binary, binding = generator
    rx = procs.free_udp_port()
    streams = _streams_file(tmp_path / "streams.txt", rx, [os.urandom(30).hex()], "-")
    env = dict(os.environ, LD_DEBUG="bindings", LD_DEBUG_OUTPUT=str(tmp_path / "ld"))
    out = subprocess.run(_generator(binary, streams, rx, rates="100", seconds="0.2", libsrtp=binding),
                         capture_output=True, text=True, timeout=30, check=False, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["srtp_lib"] == _libsrtp_version(binding)
    (log,) = tmp_path.glob("ld.*")
    targets = {}  # symbol -> the file its reference from the loaded libsrtp bound to
    for line in log.read_text().splitlines():
        # "PID: binding file FROM [0] to TO [0]: normal symbol `NAME' [VERSION]"
        if f"binding file {binding} [" in line and "symbol `srtp_" in line:
            targets[line.split("`")[1].split("'")[0]] = line.split(" to ", 1)[1].split(" [")[0]
    assert "srtp_protect_mki" in targets  # srtp_protect's own callee, through the PLT
    assert {name: to for name, to in targets.items() if to != binding} == {}


@pytest.mark.parametrize("sender", ["given", "linked"])
def test_generator_srtp_verifies_with_the_other_libsrtp(generator, tmp_path, sender):
    """The SRTP of one libsrtp, verified by the other, in a second generator acting as the sink."""
    binary, binding = generator
    rx = procs.free_udp_port()
    key = os.urandom(30).hex()
    # The sink's own (plain) packets go to a port nobody reads: it only receives the sender's.
    sink_streams = _streams_file(tmp_path / "sink.txt", procs.free_udp_port(), ["-"] * 5, key)
    sender_streams = _streams_file(tmp_path / "sender.txt", rx, [key] + [os.urandom(30).hex() for _ in range(4)], "-")
    sink = subprocess.Popen(_generator(binary, sink_streams, rx, rates="10", seconds="4",
                                       libsrtp=None if sender == "given" else binding),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert procs.wait_until(lambda: _bound(rx), timeout=5.0), "the sink did not bind its port"
        own_rx = procs.free_udp_port()  # the sender's sink: not the port it sends to
        out = subprocess.run(_generator(binary, sender_streams, own_rx, libsrtp=binding if sender == "given" else None),
                             capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 0, out.stderr
        stdout, stderr = sink.communicate(timeout=30)
    finally:
        procs.stop(sink)
    assert sink.returncode == 0, stderr
    sent, received = json.loads(out.stdout), json.loads(stdout)
    assert os.path.samefile(sent["srtp_lib_file"], binding) == (sender == "given")
    assert os.path.samefile(received["srtp_lib_file"], binding) == (sender == "linked")
    (step,) = received["steps"]
    assert step["received"] == sent["steps"][0]["sent"], stderr
    assert step["verify_ok"] > 0 and step["verify_fail"] == 0
