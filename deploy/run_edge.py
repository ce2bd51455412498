"""``deploy/e2ae run``: run the whole edge on this machine, in the foreground, supervised.

    .venv/bin/python -m deploy.run_edge [--config FILE] [--rundir DIR] [--shm-mb MB]
        [--restart-delay S] [--restart-burst N] [--restart-interval S]
        [--no-demo] [--web HOST:PORT|off]

Starts, in order, and prints where each listens and each child's pid:

1. ``redis-server`` on the address of ``[redis] url``, loopback only, with a
   password (the configured one, else a fresh random one), persistent: an
   append-only file under ``RUNDIR/redis`` (``appendfsync everysec``, no RDB
   snapshots; the directory is mode 0700, as the file holds SRTP keys); when a
   Redis already answers there, that one is used instead and not supervised
   (so is a Sentinel set or a Cluster).  With a ``rediss://`` URL it listens
   with TLS only, with a certificate of this run's own CA (under
   ``RUNDIR/redis-tls``, keys 0600; the runtime configuration's ``ca_file``);
   when ``[redis]`` names a component's ACL user, it has one ACL user per
   component with only what each needs, and ``default`` off (passwords not
   given are made and written to the runtime configuration)
   (:mod:`deploy.redis_setup`);
2. ``python -m mediad`` (the media daemon);
3. ``kamailio -DD -E`` with ``deploy/kamailio.cfg`` and the plugin, its sockets
   (every ``[edge]`` socket; a self-signed certificate for loopback under
   ``RUNDIR/tls`` when a TLS or WSS socket has none configured) and metrics
   port taken from the configuration;
4. unless ``--no-demo``, when the core next hop is a loopback address: the
   demo core (:mod:`deploy.demo_core`: a second Kamailio as registrar with
   Path on the next hop, supervised as ``core``, and a tone user agent in this
   process); unless ``--web off``, the web phone's HTTPS pages
   (:mod:`deploy.web_phone`).

Each child's output is copied to this terminal with a ``[name]`` prefix.

Supervision is that of the systemd units (``Restart=on-failure`` with a start
limit): a child that dies of a signal or exits with a non-zero status is
restarted after ``--restart-delay`` (0.5 s) and waited for until it answers
again, while the others keep running untouched.  A child that needs more than
``--restart-burst`` (5) restarts within ``--restart-interval`` (60 s) is given
up (systemd's start-limit-hit): the edge stops, exit status 1.  A child that
exits cleanly (status 0, or SIGTERM, SIGINT, SIGHUP or SIGPIPE, which systemd
counts as clean too) was stopped on purpose: it is not restarted and the edge
stops, exit status 1.  Kamailio's main process ends all of Kamailio when one
of its workers dies, so a dead worker restarts the whole of Kamailio; what is
left of a dead child's process group is killed before it starts again.

What a call in progress keeps across a restart:

* mediad reloads every dialog from Redis: same ports, same SRTP keys, media
  resumes without a new handshake (``docs/mediad.md``, Restart);
* Kamailio: in-dialog requests are routed by their Route headers and the
  plugin's records are in Redis, so media keeps flowing and the BYE still
  releases the call; the dialog module's memory is lost, so a call established
  before the restart is no longer ended by the dialog timeout nor by a DTLS
  failure's BYE: its record and mediad's dialog expire with their Redis TTL
  (``[redis] dialog_ttl`` plus the plugin's grace);
* Redis reloads its append-only file.  Every write Redis acknowledged was in
  the file (Redis writes it before it replies), so a killed Redis loses
  nothing; ``everysec`` bounds the loss to about one second only when the
  machine itself stops.  The file stays in ``RUNDIR`` from one run to the
  next, so calls also survive a restart of the whole edge; what is stale
  expires with its TTL.

Ctrl-C (or SIGTERM) stops the demo, then Kamailio, then mediad, then Redis, each within a
bounded time (``STOP_TIMEOUT``), and exits 0.  The children read a runtime copy
of the configuration (with the Redis password filled in) under ``--rundir``
(``.run/`` in the repository by default).
"""

from __future__ import annotations

import argparse
import asyncio
import configparser
import enum
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from deploy.redis_setup import DEFAULT_USERS, ensure_tls, redis_command, write_acl_file
from mediad.config import sip_sockets
from mediad.redis_keys import Component

ROOT = Path(__file__).resolve().parent.parent
KAMAILIO_CFG = ROOT / "deploy" / "kamailio.cfg"
PLUGIN = ROOT / "plugin" / "kemi.py"
STOP_TIMEOUT = 10.0
READY_TIMEOUT = 30.0
POLL_INTERVAL = 0.1
# The web phone's HTTPS address and the demo tone's SIP port (deploy/e2ae run only).
WEB_PHONE = ("127.0.0.1", 8088)
TONE_PORT = 5060


# Kamailio's shared memory (-m) and each process's private memory (-M), in MB: sized
# for the load in docs/performance.rst ("Kamailio's shared memory"), which gives the formula.
SHM_MB = 512
PKG_MB = 8


def kamailio_command(cfg_path: str, rundir: str, config, *, tls_config: str | None = None,
                     plugin: str = str(PLUGIN), shm_mb: int = SHM_MB, pkg_mb: int = PKG_MB,
                     rpc_socket: str | None = None) -> list[str]:
    """The foreground Kamailio command for ``deploy/kamailio.cfg``: its ``-A`` defines
    from the configuration (every SIP socket of ``[edge]``, metrics, dialog timeout),
    ``tls_config``, the tls module's file (:mod:`deploy.sip_tls`) when a socket uses
    TLS, and ``rpc_socket``, e2ae-ctl's JSON-RPC socket (None: ``kamailio_rpc.sock``
    under ``rundir``)."""
    from plugin.routing import kamailio_defines

    exe = shutil.which("kamailio") or "/usr/sbin/kamailio"
    cmd = [exe, "-DD", "-E", "-f", cfg_path, "-Y", rundir, "-P", os.path.join(rundir, "kamailio.pid"),
           "-m", str(shm_mb), "-M", str(pkg_mb),
           # TLSF for shared and private memory: 13 % less Kamailio CPU per call than the
           # default allocator, measured with the call-setup benchmark (docs/performance.rst)
           "-x", "tlsf", "-X", "tlsf",
           "-A", "E2AE_SOCKETS=1",
           "-A", f'E2AE_PLUGIN="{plugin}"', "-A", f"E2AE_DIALOG_TTL={config.redis_dialog_ttl}"]
    for name, value in kamailio_defines(config).items():
        cmd += ["-A", f"{name}={value}"]
    if tls_config:
        cmd += ["-A", f'E2AE_TLS_CONFIG="{tls_config}"']
    if config.plugin_metrics:
        cmd += ["-A", f"E2AE_METRICS=tcp:{config.plugin_metrics}"]
    if rpc_socket:
        cmd += ["-A", f'E2AE_RPC_SOCKET="{rpc_socket}"']
    return cmd


def ready_lines(config) -> list[str]:
    """One line per SIP socket: its transport, address (and public one), and its URL."""
    labels = {"access_sip": ("udp", "access"), "access_tcp": ("tcp", "access"), "access_tls": ("tls", "access"),
              "access_ws": ("ws", "access"), "access_wss": ("wss", "access"), "core_sip": ("udp", "core"),
              "core_tcp": ("tcp", "core"), "core_tls": ("tls", "core")}
    lines = []
    for option, _, sock in sip_sockets(config):
        transport, side = labels[option]
        public = f" (public {sock.advertise})" if sock.advertise else ""
        if transport in ("ws", "wss"):
            where = f"{transport}://{sock.public.host}:{sock.public.port}"
        else:
            where = f"{transport}:{sock}"
        suffix = f"-> next hop {config.edge_core_next_hop}" if side == "core" else "(WebRTC clients / UEs)"
        lines.append(f"SIP {side:<6} {where:<28}{public} {suffix}")
    return lines


def _listening(proto: str, sock) -> bool:
    if proto == "udp":
        return _sip_ready(sock.host, sock.port)
    try:
        with socket.create_connection((sock.host, sock.port), timeout=0.3):
            return True
    except OSError:
        return False


def _loopback_next_hop(uri: str) -> tuple[str, int] | None:
    """The next hop's address when it is a loopback IP literal (where the demo core may go)."""
    import ipaddress
    import re

    match = re.match(r"^sips?:(?:[^@]*@)?([0-9.]+)(?::(\d+))?", uri)
    if not match:
        return None
    try:
        if not ipaddress.ip_address(match.group(1)).is_loopback:
            return None
    except ValueError:
        return None
    return match.group(1), int(match.group(2) or 5060)


def say(text: str) -> None:
    print(f"[e2ae] {text}", flush=True)


def _pump(name: str, stream) -> None:
    for raw in iter(stream.readline, b""):
        sys.stdout.write(f"[{name}] {raw.decode(errors='replace').rstrip()}\n")
        sys.stdout.flush()


def _redis_answers(config, component: Component = Component.PLUGIN) -> bool:
    """Whether Redis answers PING to ``component``'s user (any shape: TLS, Sentinel, Cluster)."""
    from mediad.redis_client import connect, settings

    try:
        client = connect(settings(config, component), 0.3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # refused, not yet listening, TLS not ready: not answering
        return False


def _redis_ping(host: str, port: int, password: str) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3) as s:
            s.sendall((f"AUTH {password}\r\n" if password else "").encode() + b"PING\r\n")
            return b"PONG" in s.recv(200)
    except OSError:
        return False


def _sip_ready(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        s.settimeout(0.3)
        lport = s.getsockname()[1]
        branch = "z9hG4bK" + secrets.token_hex(6)
        probe = (f"OPTIONS sip:ping@{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{lport};branch={branch}\r\n"
                 f"Max-Forwards: 0\r\nFrom: <sip:run@{host}>;tag=run\r\nTo: <sip:ping@{host}>\r\n"
                 f"Call-ID: run-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
        try:
            s.sendto(probe.encode(), (host, port))
            return s.recv(2000).startswith(b"SIP/2.0")
        except OSError:
            return False


class Verdict(enum.Enum):
    """What becomes of a child that exited (the systemd units' ``Restart=on-failure``)."""

    RESTART = "restart"
    CLEAN_EXIT = "clean exit"  # stopped on purpose: not restarted
    GIVE_UP = "start limit hit"  # restarted too often


# Deaths systemd counts as a clean exit for Restart=on-failure (systemd.service(5)).
CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


@dataclass(frozen=True)
class RestartPolicy:
    """RestartSec, StartLimitBurst and StartLimitIntervalSec of one child."""

    delay: float = 0.5
    burst: int = 5
    interval: float = 60.0


class Restarts:
    """One child's restart history, and the verdict on each of its exits (no I/O: ``now`` is given)."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.times: deque[float] = deque()

    def verdict(self, returncode: int, now: float) -> Verdict:
        if returncode == 0 or (returncode < 0 and -returncode in CLEAN_SIGNALS):
            return Verdict.CLEAN_EXIT
        while self.times and now - self.times[0] >= self.policy.interval:
            self.times.popleft()
        if len(self.times) >= self.policy.burst:
            return Verdict.GIVE_UP
        self.times.append(now)
        return Verdict.RESTART

    @property
    def recent(self) -> int:
        """Restarts counted in the current interval (the last verdict's included)."""
        return len(self.times)


@dataclass
class Child:
    """One supervised process: how to start it and how to know it answers."""

    name: str
    command: list[str]
    env: dict[str, str] | None
    ready: Callable[[], bool]
    restarts: Restarts
    proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0


class EdgeStopped(Exception):
    """The edge must stop: a child exited cleanly, hit its start limit, or never started."""


def acl_users(config) -> bool:
    """Whether the configuration names a component's ACL user (then the run command's Redis has one
    user per component and ``default`` off)."""
    return any(getattr(config, f"redis_{c.value}_username") for c in Component)


class Runner:
    def __init__(self, config_path: Path, rundir: Path, policy: RestartPolicy = RestartPolicy(),
                 shm_mb: int = SHM_MB, *, demo: bool = True, web: tuple[str, int] | None = WEB_PHONE) -> None:
        self.source = config_path
        self.rundir = rundir
        self.policy = policy
        self.shm_mb = shm_mb
        self.children: list[Child] = []
        self.demo = demo
        self.web = web
        self.tls_pair: tuple[Path, Path] | None = None
        # The demo's parts that are not children (the tone, the web phone's server), and
        # what is removed once every child has stopped.
        self.demo_stops: list[Callable[[], None]] = []
        self.cleanups: list[Callable[[], None]] = []
        self.demo_lines: list[str] = []

    # -- children -------------------------------------------------------------------
    def add(self, name: str, cmd: list[str], ready: Callable[[], bool], env: dict[str, str] | None = None) -> Child:
        """Start a child and wait until it answers; the edge cannot start without it."""
        child = Child(name, cmd, env, ready, Restarts(self.policy))
        self.children.append(child)
        self._start(child)
        self._wait_ready(child)
        return child

    def _start(self, child: Child) -> subprocess.Popen:
        proc = subprocess.Popen(child.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=child.env, cwd=str(ROOT), start_new_session=True)
        threading.Thread(target=_pump, args=(child.name, proc.stdout), daemon=True).start()
        child.proc = proc
        say(f"{child.name} started (pid {proc.pid})")
        return proc

    def _wait_ready(self, child: Child, timeout: float = READY_TIMEOUT) -> None:
        proc = child.proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise EdgeStopped(f"{child.name} {describe_exit(proc.returncode)} before it was ready")
            if child.ready():
                return
            time.sleep(0.1)
        raise EdgeStopped(f"{child.name} not ready after {timeout:.0f} s")

    def supervise(self) -> None:
        """Watch the children until one must stop the edge (raises :class:`EdgeStopped`)."""
        while True:
            for child in self.children:
                if child.proc is not None and child.proc.poll() is not None:
                    self._restart(child)
            time.sleep(POLL_INTERVAL)

    def _restart(self, child: Child) -> None:
        """Restart a dead child until it answers again, within its start limit."""
        dead = child.proc
        while True:
            code, pid = dead.returncode, dead.pid
            verdict = child.restarts.verdict(code, time.monotonic())
            what = f"{child.name} (pid {pid}) {describe_exit(code)}"
            if verdict is Verdict.CLEAN_EXIT:
                raise EdgeStopped(f"{what}: not restarted (a clean exit): stopping the edge")
            if verdict is Verdict.GIVE_UP:
                raise EdgeStopped(f"{what}: restarted {self.policy.burst} times within "
                                  f"{self.policy.interval:.0f} s already: stopping the edge")
            say(f"{what}: restarting it in {self.policy.delay:g} s "
                f"(restart {child.restarts.recent} of at most {self.policy.burst} within {self.policy.interval:.0f} s)")
            _kill_group(pid)
            time.sleep(self.policy.delay)
            proc = self._start(child)
            try:
                self._wait_ready(child)
            except EdgeStopped as exc:
                say(str(exc))
                _kill_group(proc.pid)
                proc.wait()
                dead = proc
                continue
            say(f"{child.name} restarted (pid {proc.pid})")
            return

    def stop_all(self) -> None:
        for stop in reversed(self.demo_stops):
            try:
                stop()
            except Exception as exc:  # keep stopping the others
                say(f"stopping the demo: {exc}")
        for child in reversed(self.children):
            proc = child.proc
            if proc is None or proc.poll() is not None:
                if proc is not None:
                    _kill_group(proc.pid)
                continue
            say(f"stopping {child.name} (pid {proc.pid})")
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                say(f"{child.name} did not stop in {STOP_TIMEOUT:.0f} s: killing it")
            _kill_group(proc.pid)
            proc.wait()
        for cleanup in self.cleanups:
            cleanup()

    # -- the edge -------------------------------------------------------------------
    def runtime_config(self) -> tuple[Path, object, str]:
        """Copy of the configuration with the Redis password filled in (0600, under .run/), and
        Kamailio's RPC socket (e2ae-ctl's) under this run's directory unless one is configured
        in a directory this user can bind in."""
        from mediad.config import load_config

        config = load_config(self.source)
        parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
        parser.read(self.source)
        url = urlsplit(config.redis_url)
        password = url.password or config.redis_password
        host, port = url.hostname or "127.0.0.1", url.port or 6379
        if not parser.has_section("redis"):
            parser.add_section("redis")
        self.redis_acl = self.redis_tls = None
        if url.scheme == "rediss" and not config.redis_ca_file:
            # TLS with no CA of the operator's: this run's own (deploy/redis_setup.py)
            self.redis_tls = ensure_tls(self.rundir / "redis-tls", host)
            parser.set("redis", "ca_file", str(self.redis_tls[0]))
        if acl_users(config):
            # one ACL user per component (default off): names and passwords not given are made
            users = {}
            for component in Component:
                name = getattr(config, f"redis_{component.value}_username") or DEFAULT_USERS[component]
                secret = getattr(config, f"redis_{component.value}_password") or secrets.token_urlsafe(24)
                parser.set("redis", f"{component.value}_username", name)
                parser.set("redis", f"{component.value}_password", secret)
                users[component] = (name, secret)
            self.redis_acl = users
        elif not password and not _redis_ping(host, port, ""):
            password = secrets.token_urlsafe(24)
        if password and not url.password and not acl_users(config):
            parser.set("redis", "password", password)
        rpc = Path(config.plugin_rpc_socket) if parser.has_option("plugin", "rpc_socket") else None
        if rpc is None or (rpc.is_absolute() and not (rpc.parent.is_dir() and os.access(rpc.parent, os.W_OK))):
            # Kamailio's, under this run's directory: none configured, or the configured one's
            # directory is not there to bind in (the shipped file names the systemd units' /run)
            if not parser.has_section("plugin"):
                parser.add_section("plugin")
            parser.set("plugin", "rpc_socket", str(self.rundir / "kamailio" / "kamailio_rpc.sock"))
        self.rundir.mkdir(exist_ok=True)
        path = self.rundir / "e2ae.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("; generated by deploy/e2ae run from %s; do not edit\n" % self.source.name)
            parser.write(out)
        return path, load_config(path), password

    def start(self) -> None:
        path, config, password = self.runtime_config()
        env = dict(os.environ, E2AE_CONFIG=str(path), E2AE_METRICS_DIR=str(self.rundir / "plugin-metrics"),
                   PYTHONUNBUFFERED="1")
        url = urlsplit(config.redis_url)
        rhost, rport = url.hostname or "127.0.0.1", url.port or 6379
        secure = self.redis_acl is not None or url.scheme == "rediss"
        if config.redis_sentinels or config.redis_cluster:
            say(f"Redis is a {'Cluster' if config.redis_cluster else 'Sentinel set'}: using it (not supervised)")
        elif _redis_answers(config) if secure else _redis_ping(rhost, rport, password):
            say(f"Redis already answers on {rhost}:{rport}: using it (not supervised)")
            if not password and not secure:
                say("warning: that Redis accepts clients without a password; it will hold SRTP keys "
                    "(set requirepass and put the password in [redis])")
        else:
            redis_dir = self.rundir / "redis"
            redis_dir.mkdir(mode=0o700, exist_ok=True)
            os.chmod(redis_dir, 0o700)
            acl = write_acl_file(redis_dir / "users.acl", self.redis_acl) if self.redis_acl else None
            tls = self.redis_tls
            if url.scheme == "rediss" and tls is None:
                raise EdgeStopped("[redis] url is rediss:// with the operator's ca_file: start that Redis "
                                  "yourself (the run command makes TLS files only for its own CA)")
            self.add("redis", redis_command(rhost, rport, password, redis_dir, acl=acl, tls=tls),
                     (lambda: _redis_answers(config)) if secure else (lambda: _redis_ping(rhost, rport, password)))
        self.add("mediad", [sys.executable, "-m", "mediad", "--config", str(path)],
                 lambda: self._mediad_ready(config), env)
        rundir = self.rundir / "kamailio"
        rundir.mkdir(exist_ok=True)
        metrics = config.plugin_metrics
        cmd = kamailio_command(str(KAMAILIO_CFG), str(rundir), config, tls_config=self.tls_config(config),
                               shm_mb=self.shm_mb, rpc_socket=config.plugin_rpc_socket)
        self.add("kamailio", cmd, lambda: all(_listening(proto, sock) for _, proto, sock in sip_sockets(config)),
                 env)
        self.start_demo(config)
        say("edge ready:")
        for line in ready_lines(config):
            say("  " + line)
        say(f"  mediad control      tcp:{config.mediad_control}   media access {config.mediad_access_address} "
            f"{config.mediad_access_ports}, core {config.mediad_core_address} {config.mediad_core_ports}")
        if config.mediad_metrics:
            say(f"  mediad metrics      http://{config.mediad_metrics}/metrics")
        if metrics:
            say(f"  plugin metrics      http://{metrics}/metrics")
        say(f"  Redis               {rhost}:{rport} (password in {path})")
        for line in self.demo_lines:
            say(line)
        say(f"  e2ae-ctl            E2AE_CONFIG={path} .venv/bin/e2ae-ctl calls")
        say(f"A process that dies is restarted (at most {self.policy.burst} times within "
            f"{self.policy.interval:.0f} s); the others keep running.")
        say("Ctrl-C stops everything.  Place a demo call with: .venv/bin/python -m deploy.demo_call")

    def run(self) -> int:
        """Start the edge and supervise it; the exit status once it must stop (Ctrl-C raises)."""
        try:
            self.start()
        except EdgeStopped as exc:
            say(f"cannot run the edge: {exc}")
            return 1
        try:
            self.supervise()
        except EdgeStopped as exc:
            say(str(exc))
        return 1

    def start_demo(self, config) -> None:
        """The demo's core (a registrar with Path on the core next hop, a tone behind it) and
        the web phone's pages, for a loopback next hop (deploy.demo_core, deploy.web_phone)."""
        next_hop = _loopback_next_hop(config.edge_core_next_hop)
        if self.demo and next_hop is not None:
            from deploy.demo_core import CORE_UA_HOST, DOMAIN, CoreRegistrar, CoreUa

            tone = (CORE_UA_HOST, TONE_PORT)
            registrar = CoreRegistrar(next_hop, tone)
            self.cleanups.append(registrar.remove_directory)
            self.add("core", registrar.command(), lambda: _sip_ready(*next_hop))
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="demo-tone", daemon=True)
            thread.start()
            ua = CoreUa(tone[0], tone[1], next_hop)
            asyncio.run_coroutine_threadsafe(ua.open(), loop).result(10)

            def stop_tone() -> None:
                loop.call_soon_threadsafe(ua.close)
                loop.call_soon_threadsafe(loop.stop)
                thread.join(5)

            self.demo_stops.append(stop_tone)
            self.demo_lines.append(f"  demo core           registrar sip:{next_hop[0]}:{next_hop[1]} (Path), "
                                   f"tone sip:tone@{DOMAIN} (udp:{tone[0]}:{tone[1]})")
        if self.web is not None:
            from deploy.demo_core import DOMAIN
            from deploy.sip_tls import ensure_certificate, spki_sha256
            from deploy.web_phone import WebPhoneServer, page_config

            cert, key = self.tls_pair or ensure_certificate(config, self.rundir / "tls")
            server = WebPhoneServer(self.web, page_config(config, DOMAIN), certificate=cert, key=key)
            self.demo_stops.append(server.stop)
            self.demo_lines.append(f"  web phone           {server.url}")
            if not config.edge_tls_certificate:
                self.demo_lines.append(f"    open it with:     chromium --ignore-certificate-errors-spki-list="
                                       f"{spki_sha256(cert)} {server.url}")

    def tls_config(self, config) -> str | None:
        """Kamailio's tls.cfg when a socket uses TLS: the configured certificate, else a
        self-signed one for the configured addresses under the run directory."""
        from deploy.sip_tls import ensure_certificate, write_tls_cfg
        from mediad.config import sip_sockets

        if not any(proto == "tls" for _, proto, _ in sip_sockets(config)):
            return None
        cert, key = ensure_certificate(config, self.rundir / "tls")
        self.tls_pair = (cert, key)
        return str(write_tls_cfg(cert, key, self.rundir / "tls" / "tls.cfg"))

    def _mediad_ready(self, config) -> bool:
        from iq import Command, IqRequest

        from mediad.io.client import IqClient

        try:
            client = IqClient.from_config(config)
            client.timeout = 0.3
            try:
                client.request(IqRequest(Command.LIST, "run", "ready-" + secrets.token_hex(4)))
            finally:
                client.close()
            return True
        except Exception:
            return False


def _kill_group(pgid: int, timeout: float = STOP_TIMEOUT) -> None:
    """Kill what is left of a child's process group (a dead Kamailio main's workers) and
    wait, bounded, until it is gone, so that a restart finds its ports free."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="e2ae run", description="run the e2ae edge in the foreground")
    parser.add_argument("--config", help="configuration file (default: $E2AE_CONFIG, else deploy/e2ae.conf)")
    parser.add_argument("--rundir", default=str(ROOT / ".run"),
                        help="directory for the runtime configuration, pid files and Redis (default .run/)")
    parser.add_argument("--shm-mb", type=int, default=SHM_MB,
                        help=f"Kamailio's shared memory in MB (default {SHM_MB}; docs/performance.rst sizes it)")
    default = RestartPolicy()
    parser.add_argument("--restart-delay", type=float, default=default.delay, metavar="S",
                        help=f"wait before restarting a dead process (default {default.delay:g})")
    parser.add_argument("--restart-burst", type=int, default=default.burst, metavar="N",
                        help=f"restarts of one process allowed within the interval (default {default.burst})")
    parser.add_argument("--restart-interval", type=float, default=default.interval, metavar="S",
                        help=f"the interval of --restart-burst, in seconds (default {default.interval:g})")
    parser.add_argument("--no-demo", action="store_true",
                        help="do not start the demo core (registrar + tone) on a loopback next hop")
    parser.add_argument("--web", default="%s:%d" % WEB_PHONE,
                        help="HOST:PORT of the web phone's HTTPS pages, or off (default %(default)s)")
    args = parser.parse_args(argv)
    if args.shm_mb < 16:
        parser.error("--shm-mb: at least 16")
    source = Path(args.config or os.environ.get("E2AE_CONFIG") or ROOT / "deploy" / "e2ae.conf").resolve()
    policy = RestartPolicy(delay=args.restart_delay, burst=args.restart_burst, interval=args.restart_interval)
    web = None if args.web == "off" else (args.web.rsplit(":", 1)[0], int(args.web.rsplit(":", 1)[1]))
    runner = Runner(source, Path(args.rundir).resolve(), policy, args.shm_mb, demo=not args.no_demo, web=web)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    status = 0
    try:
        status = runner.run()
    except KeyboardInterrupt:
        say("interrupted")
    except Exception as exc:  # e.g. an unreadable configuration: say why, stop what started
        say(f"cannot run the edge: {exc}")
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        runner.stop_all()
        say("stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
