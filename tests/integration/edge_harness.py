"""Fixtures that run the edge for real: Redis, mediad and Kamailio on free loopback ports.

One :class:`Edge` per test session: a generated ``e2ae.conf`` in a temp dir
(access SIP on 127.0.0.1, core SIP on 127.0.0.2, the core next hop on
127.0.0.3, all on free ports), ``python -m mediad`` and ``kamailio -DD -E``
started with ``deploy/kamailio.cfg`` and ``-A`` defines from that
configuration.  :class:`RunCommand` runs ``deploy/e2ae run`` itself (its
Python part) on free ports.  :class:`Sipp` runs one SIPp scenario and parses
what it received from its ``-trace_msg`` log.  Every process is stopped by the
fixture's finalizer.

The fixtures themselves are in ``conftest.py``: ``edge`` (one per test module,
started with the module's ``EDGE_OPTIONS``, through :func:`running_edge`),
``no_state_left`` (:func:`assert_no_state_left` after each test of a module
that asks for it) and ``sipps`` (the SIPp runs a test started, stopped after it).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from deploy.run_edge import kamailio_command
from deploy.sip_tls import ensure_certificate, write_tls_cfg
from mediad.config import sip_sockets
from tests.conftest import REPO, free_port, free_port_block

SCENARIOS = REPO / "sipp_scenarios"
KAMAILIO_CFG = REPO / "deploy" / "kamailio.cfg"
PLUGIN = REPO / "plugin" / "kemi.py"
CONTROL_SECRET = "e2ae-test-control-secret"


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if predicate():
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not start\n{tail}")


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def sip_ping(host: str, port: int, timeout: float = 0.3) -> bool:
    """OPTIONS with Max-Forwards 0: Kamailio answers 483 once its routes run."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        lport = s.getsockname()[1]
        branch = "z9hG4bK" + "%x" % random.getrandbits(48)
        msg = (
            f"OPTIONS sip:ping@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{lport};branch={branch};rport\r\n"
            "Max-Forwards: 0\r\n"
            f"From: <sip:probe@{host}>;tag=probe\r\nTo: <sip:ping@{host}>\r\n"
            f"Call-ID: probe-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        s.settimeout(timeout)
        try:
            s.sendto(msg.encode(), (host, port))
            return s.recv(4096).startswith(b"SIP/2.0 ")
        except OSError:
            return False


@dataclass
class EdgeConfig:
    access_port: int
    core_port: int
    next_hop_port: int
    control_port: int
    plugin_metrics_port: int
    mediad_metrics_port: int
    access_ports: str
    core_ports: str
    redis_url: str
    iq_timeout_ms: int = 500
    actpass: str = "active"
    dtls_failure: str = "bye"
    dialog_ttl: int = 600
    rpc_socket: str = ""
    log_level: str = "INFO"  # mediad's and the plugin's
    log_format: str = "text"
    # The access side's SIP and media address (127.0.0.1, or a private address behind a NAT).
    access_host: str = "127.0.0.1"
    # More lines for [edge] (TCP/TLS/WS sockets), [mediad] (advertised addresses), [policy].
    # Unless edge_extra names access_tcp or core_tcp, each side has a TCP socket on its UDP
    # socket's address and port: a request over 1300 bytes toward a UDP peer goes over TCP
    # (RFC 3261 18.1.1), as with the shipped e2ae.conf.
    edge_extra: str = ""
    mediad_extra: str = ""
    policy_extra: str = ""
    redis_extra: str = ""  # more [redis] lines (TLS, ACL users, Sentinel, Cluster: redis_ha)

    def tcp_twins(self) -> str:
        lines = []
        if "access_tcp" not in self.edge_extra:
            lines.append(f"access_tcp = {self.access_host}:{self.access_port}")
        if "core_tcp" not in self.edge_extra:
            lines.append(f"core_tcp = 127.0.0.2:{self.core_port}")
        return "\n".join(lines)

    def text(self) -> str:
        return f"""[edge]
access_sip = {self.access_host}:{self.access_port}
core_sip = 127.0.0.2:{self.core_port}
core_next_hop = sip:127.0.0.3:{self.next_hop_port}
{self.tcp_twins()}
{self.edge_extra}

[mediad]
control = 127.0.0.1:{self.control_port}
control_secret = {CONTROL_SECRET}
access_address = {self.access_host}
core_address = 127.0.0.2
access_ports = {self.access_ports}
core_ports = {self.core_ports}
metrics = 127.0.0.1:{self.mediad_metrics_port}
dtls_handshake_timeout = 5
log_level = {self.log_level}
log_format = {self.log_format}
{self.mediad_extra}

[redis]
url = {self.redis_url}
dialog_ttl = {self.dialog_ttl}
{self.redis_extra}

[policy]
actpass = {self.actpass}
dtls_failure = {self.dtls_failure}
{self.policy_extra}

[plugin]
metrics = 127.0.0.1:{self.plugin_metrics_port}
iq_timeout_ms = {self.iq_timeout_ms}
retry_after = 7
rpc_socket = {self.rpc_socket}
log_level = {self.log_level}
log_format = {self.log_format}
"""


def _port_range(size: int = 200) -> str:
    base = random.randrange(20000, 29000, 2)
    return f"{base}-{base + size - 1}"


class Edge:
    """Redis (given), mediad and Kamailio for one test session."""

    def __init__(self, redis_server, **options) -> None:
        self.redis_server = redis_server
        self.dir = Path(tempfile.mkdtemp(prefix="e2ae-edge-"))
        self.conf = EdgeConfig(
            access_port=free_port(host=options.get("access_host", "127.0.0.1")), core_port=free_port(host="127.0.0.2"),
            next_hop_port=free_port(host="127.0.0.3"), control_port=free_port(),
            plugin_metrics_port=free_port(socket.SOCK_STREAM), mediad_metrics_port=free_port(socket.SOCK_STREAM),
            redis_url=redis_server.url,
            **{"access_ports": _port_range(), "core_ports": _port_range(), **options},
        )
        while self.conf.core_ports == self.conf.access_ports:
            self.conf.core_ports = _port_range()
        self.conf.rpc_socket = str(self.dir / "kamailio" / "kamailio_rpc.sock")
        self.config_path = self.dir / "e2ae.conf"
        self.config_path.write_text(self.conf.text())
        self.env = dict(os.environ, E2AE_CONFIG=str(self.config_path),
                        E2AE_METRICS_DIR=str(self.dir / "plugin-metrics"), PYTHONUNBUFFERED="1")
        self.mediad: subprocess.Popen | None = None
        self.kamailio: subprocess.Popen | None = None
        self.mediad_log = self.dir / "mediad.log"
        self.kamailio_log = self.dir / "kamailio.log"
        # Dialog state already in the (shared) Redis when this edge started: another edge's, left by a test
        # that failed before this one ran.  It is not this edge's to account for (dialog_keys).
        self.foreign: frozenset[str] = frozenset()

    @property
    def access(self) -> tuple[str, int]:
        return (self.conf.access_host, self.conf.access_port)

    @property
    def core(self) -> tuple[str, int]:
        return ("127.0.0.2", self.conf.core_port)

    @property
    def next_hop(self) -> tuple[str, int]:
        return ("127.0.0.3", self.conf.next_hop_port)

    def start(self) -> None:
        self.foreign = frozenset(self._dialog_keys())
        self.start_mediad()
        self.start_kamailio()

    def start_mediad(self) -> None:
        before = self._ready_count()
        out = open(self.mediad_log, "ab")
        self.mediad = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "python"), "-m", "mediad", "--config", str(self.config_path)],
            cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        out.close()
        _wait(lambda: self._ready_count() > before, 20, "mediad", self.mediad, self.mediad_log)

    def _ready_count(self) -> int:
        return self.mediad_log.read_bytes().count(b"mediad ready") if self.mediad_log.exists() else 0

    def stop_mediad(self) -> None:
        stop_process(self.mediad)
        self.mediad = None

    def start_kamailio(self) -> None:
        rundir = self.dir / "kamailio"
        rundir.mkdir(exist_ok=True)
        from mediad.config import load_config

        config = load_config(self.config_path)
        tls_config = None
        if any(proto == "tls" for _, proto, _ in sip_sockets(config)):
            cert, key = ensure_certificate(config, self.dir / "tls")
            self.tls_certificate = cert
            tls_config = str(write_tls_cfg(cert, key, self.dir / "tls.cfg"))
        cmd = kamailio_command(str(KAMAILIO_CFG), str(rundir), config, plugin=str(PLUGIN), tls_config=tls_config,
                               rpc_socket=self.conf.rpc_socket)
        out = open(self.kamailio_log, "ab")
        self.kamailio = subprocess.Popen(cmd, cwd=self.dir, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        out.close()
        _wait(lambda: sip_ping(*self.access) and sip_ping(*self.core), 30, "kamailio",
              self.kamailio, self.kamailio_log)

    def stop(self) -> None:
        stop_process(self.kamailio)
        stop_process(self.mediad)
        if not os.environ.get("E2AE_KEEP_LOGS"):
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- inspection ---------------------------------------------------------------
    def redis(self):
        return self.redis_server.client()

    def dialog_keys(self) -> list[str]:
        """The plugin's and mediad's dialog state left in Redis by this edge.

        The one documented exception: the plugin's release tombstones
        (``e2ae:alg:released:{id}``, see plugin/state.py) are not state: they hold no
        media or dialog data and expire by themselves after TOMBSTONE_TTL (32 s, longer
        than a test waits), so they are not counted; :meth:`tombstones` lists them.
        Keys that were there before :meth:`start` (another module's edge left them when
        one of its tests failed) are that module's failure, not counted here again.
        """
        return [key for key in self._dialog_keys() if key not in self.foreign]

    def _dialog_keys(self) -> list[str]:
        from plugin.state import TOMBSTONE_PREFIX

        client = self.redis()
        try:
            keys = client.keys("e2ae:alg:*") + client.keys("e2ae:agw:dialog:*")
        finally:
            client.close()
        return sorted(k.decode() for k in keys if not k.decode().startswith(TOMBSTONE_PREFIX))

    def tombstones(self) -> list[str]:
        from plugin.state import TOMBSTONE_PREFIX

        client = self.redis()
        try:
            return sorted(k.decode() for k in client.keys(TOMBSTONE_PREFIX + "*"))
        finally:
            client.close()

    def wait_no_dialogs(self, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        keys = self.dialog_keys()
        while keys and time.monotonic() < deadline:
            time.sleep(0.05)
            keys = self.dialog_keys()
        return keys

    def mediad_dialogs(self) -> list[str]:
        """Dialogs mediad holds now, asked over the Iq interface (LIST)."""
        from mediad.io.client import IqClient
        from iq import Command, IqRequest

        client = IqClient(("127.0.0.1", self.conf.control_port), CONTROL_SECRET, timeout=2.0)
        try:
            reply = client.request(IqRequest(Command.LIST, "list", "list-%d" % random.getrandbits(32)))
        finally:
            client.close()
        data = reply.data or {}
        return list(data.get("dialogs", data) if isinstance(data, dict) else data)

    def plugin_metrics(self) -> str:
        url = f"http://127.0.0.1:{self.conf.plugin_metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()

    def kamailio_log_text(self) -> str:
        return self.kamailio_log.read_text(errors="replace")


# ---------------------------------------------------------------------------
# The run command (deploy/e2ae run)
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def running_edge(redis_server, **options) -> Iterator[Edge]:
    """An :class:`Edge` on ``redis_server`` started with ``options``, stopped on leaving (also when
    it failed to start)."""
    edge = Edge(redis_server, **options)
    try:
        edge.start()
        yield edge
    finally:
        edge.stop()


def assert_no_state_left(edge: Edge, timeout: float = 5.0) -> None:
    """Nothing of a call is left: no dialog key in Redis (waited for up to ``timeout``), no dialog
    in mediad (when it runs)."""
    leftover = edge.wait_no_dialogs(timeout)
    assert leftover == [], f"state left in Redis: {leftover}"
    assert edge.mediad is None or edge.mediad_dialogs() == []


class RunCommand:
    """``python -m deploy.run_edge`` on free ports, its output collected, stopped with SIGINT.

    :meth:`pids` reads the children's pids from what it prints; :meth:`kamailio_pids`
    adds Kamailio's workers (children of its main process).  Without the demo core and
    the web phone (their fixed loopback ports are tested in a network namespace of their
    own, test_web_phone.py): the core next hop is the test's.  Each side has a TCP socket
    on its UDP socket's port, as in the shipped e2ae.conf.
    """

    def __init__(self, *extra_args: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="e2ae-run-"))
        self.config_path = self.dir / "e2ae.conf"
        self.rundir = self.dir / "run"
        self.ports = {
            "access": free_port(host="127.0.0.1"), "core": free_port(host="127.0.0.2"),
            "next_hop": free_port(host="127.0.0.3"), "control": free_port(),
            "redis": free_port(socket.SOCK_STREAM), "mediad_metrics": free_port(socket.SOCK_STREAM),
            "plugin_metrics": free_port(socket.SOCK_STREAM),
        }
        p = self.ports
        self.config_path.write_text(f"""[edge]
access_sip = 127.0.0.1:{p['access']}
access_tcp = 127.0.0.1:{p['access']}
core_sip = 127.0.0.2:{p['core']}
core_tcp = 127.0.0.2:{p['core']}
core_next_hop = sip:127.0.0.3:{p['next_hop']}
[mediad]
control = 127.0.0.1:{p['control']}
access_ports = {_port_range()}
core_ports = {_port_range()}
metrics = 127.0.0.1:{p['mediad_metrics']}
[redis]
url = redis://127.0.0.1:{p['redis']}/0
[plugin]
metrics = 127.0.0.1:{p['plugin_metrics']}
""")
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.status: int | None = None

    @property
    def access(self) -> tuple[str, int]:
        return ("127.0.0.1", self.ports["access"])

    @property
    def next_hop(self) -> tuple[str, int]:
        return ("127.0.0.3", self.ports["next_hop"])

    def start(self, timeout: float = 60.0) -> "RunCommand":
        import threading

        self.proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "python"), "-m", "deploy.run_edge", "--config", str(self.config_path),
             "--rundir", str(self.rundir), "--no-demo", "--web", "off", *self.extra_args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        reader = threading.Thread(
            target=lambda: self.lines.extend(line.decode(errors="replace") for line in self.proc.stdout), daemon=True)
        reader.start()
        self.wait_line("Ctrl-C stops everything", timeout)
        return self

    def text(self) -> str:
        return "".join(self.lines)

    def wait_line(self, fragment: str, timeout: float, after: int = 0) -> int:
        """Wait until a line from index ``after`` on contains ``fragment``; its index."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in range(after, len(self.lines)):
                if fragment in self.lines[i]:
                    return i
            if self.proc is not None and self.proc.poll() is not None and not any(
                    fragment in line for line in self.lines[after:]):
                break
            time.sleep(0.05)
        raise AssertionError(f"no {fragment!r} from the run command:\n{self.text()[-5000:]}")

    def pids(self) -> dict[str, int]:
        """The pid of each child, as last printed ("<name> started (pid N)")."""
        out = {}
        for line in self.lines:
            m = re.match(r"\[e2ae\] (\w+) started \(pid (\d+)\)", line)
            if m:
                out[m.group(1)] = int(m.group(2))
        return out

    def kamailio_pids(self, settle: float = 0.3, timeout: float = 10.0) -> set[int]:
        """Kamailio's main process and its workers, once no worker has been forked for `settle` s.

        Kamailio answers SIP before its last processes (timers, TCP readers) are forked, so a
        set read right after start can be short of some.
        """
        main = self.pids()["kamailio"]
        deadline = time.monotonic() + timeout
        seen = {main} | children_of(main)
        while time.monotonic() < deadline:
            time.sleep(settle)
            now = {main} | children_of(main)
            if now == seen:
                break
            seen = now
        return seen

    def runtime_config(self):
        from mediad.config import load_config

        return load_config(self.rundir / "e2ae.conf")

    def redis(self):
        import redis

        return redis.Redis.from_url(self.runtime_config().redis_url_with_password)

    def edge_keys(self) -> list[str]:
        """The plugin's and mediad's dialog state in the run's Redis (tombstones excluded)."""
        from plugin.state import TOMBSTONE_PREFIX

        client = self.redis()
        try:
            keys = client.keys("e2ae:alg:*") + client.keys("e2ae:agw:dialog:*")
        finally:
            client.close()
        return sorted(k.decode() for k in keys if not k.decode().startswith(TOMBSTONE_PREFIX))

    def mediad_dialogs(self) -> list[str]:
        from mediad.io.client import IqClient
        from iq import Command, IqRequest

        client = IqClient.from_config(self.runtime_config())
        try:
            reply = client.request(IqRequest(Command.LIST, "list", "list-%d" % random.getrandbits(32)))
        finally:
            client.close()
        data = reply.data or {}
        return list(data.get("dialogs", data) if isinstance(data, dict) else data)

    def stop(self, timeout: float = 40.0, sig: int = signal.SIGINT) -> int | None:
        """SIGINT (as Ctrl-C delivers it) or ``sig``; the exit status (None: it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.status = None
        return self.status

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def children_of(pid: int) -> set[int]:
    """The pids whose parent is ``pid`` (from /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.add(int(entry.name))
    return out


# ---------------------------------------------------------------------------
# SIPp
# ---------------------------------------------------------------------------

@dataclass
class SipMessage:
    direction: str  # "received" or "sent"
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\r\n", 1)[0].split("\n", 1)[0]

    @property
    def head(self) -> str:
        return self.text.replace("\r\n", "\n").split("\n\n", 1)[0]

    @property
    def body(self) -> str:
        parts = self.text.replace("\r\n", "\n").split("\n\n", 1)
        return parts[1] if len(parts) > 1 else ""

    @property
    def body_lines(self) -> list[str]:
        return [line for line in self.body.split("\n") if line]

    def header(self, name: str) -> list[str]:
        out = []
        for line in self.head.split("\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                out.append(value.strip())
        return out


_LOG_ENTRY = re.compile(
    r"^-{20,} [^\n]*\n(UDP|TCP|TLS) message (received|sent) (?:\[\d+\] bytes :|\(\d+ bytes\):)\n\n", re.M)


def parse_message_log(text: str) -> list[SipMessage]:
    messages = []
    matches = list(_LOG_ENTRY.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        raw = text[match.end():end].rstrip("\n")
        messages.append(SipMessage(match.group(2), raw.replace("\n", "\r\n")))
    return messages


@dataclass
class Sipp:
    scenario: str
    local_ip: str
    remote: tuple[str, int] | None = None
    keys: dict[str, str] = field(default_factory=dict)
    calls: int = 1
    rate: float = 1.0
    limit: int = 1
    timeout: float = 30.0
    extra: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="e2ae-sipp-"))
        self.port = free_port(host=self.local_ip)
        # SIPp binds -mp and the three ports above it (audio and video RTP/RTCP).
        self.media_port = free_port_block(4, host=self.local_ip, avoid=(self.port,))
        self.proc: subprocess.Popen | None = None
        self.message_file = self.dir / "messages.log"
        self.error_file = self.dir / "errors.log"
        self.stat_file = self.dir / "stat.csv"
        self.returncode: int | None = None

    def command(self) -> list[str]:
        exe = shutil.which("sipp") or "/usr/bin/sipp"
        cmd = [exe, "-sf", str(SCENARIOS / self.scenario), "-i", self.local_ip, "-p", str(self.port),
               "-mi", self.local_ip, "-mp", str(self.media_port), "-m", str(self.calls),
               "-r", str(self.rate), "-l", str(self.limit), "-nostdin",
               "-timeout", f"{int(self.timeout)}s", "-timeout_error",
               "-trace_msg", "-message_file", str(self.message_file),
               "-trace_err", "-error_file", str(self.error_file),
               "-recv_timeout", "10000", "-max_recv_loops", "1000"]
        for key, value in self.keys.items():
            cmd += ["-key", key, value]
        cmd += self.extra
        if self.remote:
            cmd.append(f"{self.remote[0]}:{self.remote[1]}")
        return cmd

    def start(self) -> "Sipp":
        self.proc = subprocess.Popen(self.command(), cwd=self.dir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        return self

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        try:
            self.proc.wait(timeout or self.timeout + 10)
        except subprocess.TimeoutExpired:
            stop_process(self.proc, signal.SIGKILL)
        self.returncode = self.proc.returncode
        return self.returncode

    def run(self) -> int:
        return self.start().wait()

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGKILL, timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def messages(self) -> list[SipMessage]:
        if not self.message_file.exists():
            return []
        return parse_message_log(self.message_file.read_text(errors="replace"))

    def received(self, first_line_prefix: str = "") -> list[SipMessage]:
        return [m for m in self.messages() if m.direction == "received" and m.first_line.startswith(first_line_prefix)]

    def errors(self) -> str:
        return self.error_file.read_text(errors="replace") if self.error_file.exists() else ""

    def diagnostics(self) -> str:
        err = self.proc.stderr.read().decode(errors="replace") if self.proc and self.proc.stderr else ""
        msgs = "\n".join(f"[{m.direction}] {m.text}" for m in self.messages())
        return f"sipp {self.scenario} rc={self.returncode}\nstderr: {err[-2000:]}\nerrors: {self.errors()[-2000:]}\n{msgs[-6000:]}"


__all__ = ["Edge", "EdgeConfig", "RunCommand", "Sipp", "SipMessage", "children_of", "parse_message_log",
           "sip_ping", "stop_process", "kamailio_command", "CONTROL_SECRET"]
