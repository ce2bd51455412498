"""``deploy/e2ae run``: run the whole edge on this machine, in the foreground.

    .venv/bin/python -m deploy.run_edge [--config FILE] [--rundir DIR]

Starts, in order, and prints where each listens:

1. ``redis-server`` on the address of ``[redis] url``, loopback only, with a
   password (the configured one, else a fresh random one), no persistence;
   when a Redis already answers there, that one is used instead;
2. ``python -m mediad`` (the media daemon);
3. ``kamailio -DD -E`` with ``deploy/kamailio.cfg`` and the plugin, its sockets
   and metrics port taken from the configuration.

Each child's output is copied to this terminal with a ``[name]`` prefix.
Ctrl-C (or SIGTERM) stops Kamailio, then mediad, then Redis, each within a
bounded time, and exits 0; if one of them dies, the others are stopped and the
exit status is 1.  The children read a runtime copy of the configuration
(with the Redis password filled in) under ``--rundir`` (``.run/`` in the
repository by default).
"""

from __future__ import annotations

import argparse
import asyncio
import configparser
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from mediad.config import sip_sockets

ROOT = Path(__file__).resolve().parent.parent
KAMAILIO_CFG = ROOT / "deploy" / "kamailio.cfg"
PLUGIN = ROOT / "plugin" / "kemi.py"
STOP_TIMEOUT = 10.0
# The web phone's HTTPS address and the demo tone's SIP port (deploy/e2ae run only).
WEB_PHONE = ("127.0.0.1", 8088)
TONE_PORT = 5060


def kamailio_command(cfg_path: str, rundir: str, config, *, tls_config: str | None = None,
                     plugin: str = str(PLUGIN)) -> list[str]:
    """The foreground Kamailio command for ``deploy/kamailio.cfg``: its ``-A`` defines
    from the configuration (every SIP socket of ``[edge]``, metrics, dialog timeout) and
    ``tls_config``, the tls module's file (:mod:`deploy.sip_tls`) when a socket uses TLS."""
    from plugin.routing import kamailio_defines

    exe = shutil.which("kamailio") or "/usr/sbin/kamailio"
    cmd = [exe, "-DD", "-E", "-f", cfg_path, "-Y", rundir, "-P", os.path.join(rundir, "kamailio.pid"),
           "-m", "64", "-M", "8",
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


class Runner:
    def __init__(self, config_path: Path, rundir: Path, *, demo: bool = True,
                 web: tuple[str, int] | None = WEB_PHONE) -> None:
        self.source = config_path
        self.rundir = rundir
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.stopping = False
        self.demo = demo
        self.web = web
        self.tls_pair: tuple[Path, Path] | None = None
        self.demo_stops: list = []
        self.demo_lines: list[str] = []

    # -- children -------------------------------------------------------------------
    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=str(ROOT), start_new_session=True)
        threading.Thread(target=_pump, args=(name, proc.stdout), daemon=True).start()
        self.procs.append((name, proc))
        return proc

    def wait_for(self, what: str, predicate, proc: subprocess.Popen, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with status {proc.returncode}")
            if predicate():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{what} not ready after {timeout:.0f} s")

    def stop_all(self) -> None:
        self.stopping = True
        for stop in reversed(self.demo_stops):
            try:
                stop()
            except Exception as exc:  # keep stopping the others
                say(f"stopping the demo: {exc}")
        for name, proc in reversed(self.procs):
            if proc.poll() is not None:
                continue
            say(f"stopping {name} (pid {proc.pid})")
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop in {STOP_TIMEOUT:.0f} s: killing it")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()

    # -- the edge -------------------------------------------------------------------
    def runtime_config(self) -> tuple[Path, object, str]:
        """Copy of the configuration with the Redis password filled in (0600, under .run/)."""
        from mediad.config import load_config

        config = load_config(self.source)
        parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
        parser.read(self.source)
        url = urlsplit(config.redis_url)
        password = url.password or config.redis_password
        host, port = url.hostname or "127.0.0.1", url.port or 6379
        if not password and not _redis_ping(host, port, ""):
            password = secrets.token_urlsafe(24)
        if password and not url.password:
            if not parser.has_section("redis"):
                parser.add_section("redis")
            parser.set("redis", "password", password)
        self.rundir.mkdir(exist_ok=True)
        path = self.rundir / "e2ae.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("; generated by deploy/e2ae run from %s; do not edit\n" % self.source.name)
            parser.write(out)
        return path, load_config(path), password

    def run(self) -> int:
        path, config, password = self.runtime_config()
        env = dict(os.environ, E2AE_CONFIG=str(path), E2AE_METRICS_DIR=str(self.rundir / "plugin-metrics"),
                   PYTHONUNBUFFERED="1")
        url = urlsplit(config.redis_url)
        rhost, rport = url.hostname or "127.0.0.1", url.port or 6379
        if _redis_ping(rhost, rport, password):
            say(f"Redis already answers on {rhost}:{rport}: using it")
            if not password:
                say("warning: that Redis accepts clients without a password; it will hold SRTP keys "
                    "(set requirepass and put the password in [redis])")
        else:
            redis_dir = self.rundir / "redis"
            redis_dir.mkdir(exist_ok=True)
            exe = shutil.which("redis-server") or "/usr/bin/redis-server"
            proc = self.spawn("redis", [exe, "--bind", rhost, "--port", str(rport), "--requirepass", password,
                                        "--protected-mode", "yes", "--save", "", "--appendonly", "no",
                                        "--dir", str(redis_dir)])
            self.wait_for("redis-server", lambda: _redis_ping(rhost, rport, password), proc)
        mediad = self.spawn("mediad", [sys.executable, "-m", "mediad", "--config", str(path)], env)
        control = config.mediad_control
        self.wait_for("mediad", lambda: self._mediad_ready(config), mediad)
        rundir = self.rundir / "kamailio"
        rundir.mkdir(exist_ok=True)
        metrics = config.plugin_metrics
        cmd = kamailio_command(str(KAMAILIO_CFG), str(rundir), config, tls_config=self.tls_config(config))
        kamailio = self.spawn("kamailio", cmd, env)
        self.wait_for("kamailio", lambda: all(_listening(proto, sock) for _, proto, sock in sip_sockets(config)),
                      kamailio)
        self.start_demo(config)
        say("edge ready:")
        for line in ready_lines(config):
            say("  " + line)
        say(f"  mediad control      udp:{config.mediad_control}   media access {config.mediad_access_address} "
            f"{config.mediad_access_ports}, core {config.mediad_core_address} {config.mediad_core_ports}")
        if config.mediad_metrics:
            say(f"  mediad metrics      http://{config.mediad_metrics}/metrics")
        if metrics:
            say(f"  plugin metrics      http://{metrics}/metrics")
        say(f"  Redis               {rhost}:{rport} (password in {path})")
        for line in self.demo_lines:
            say(line)
        say("Ctrl-C stops everything.  Place a demo call with: .venv/bin/python -m deploy.demo_call")
        while True:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    say(f"{name} exited with status {proc.returncode}: stopping the edge")
                    return 1
            time.sleep(0.2)

    def start_demo(self, config) -> None:
        """The demo's core (a registrar with Path on the core next hop, a tone behind it) and
        the web phone's pages, for a loopback next hop (deploy.demo_core, deploy.web_phone)."""
        next_hop = _loopback_next_hop(config.edge_core_next_hop)
        if self.demo and next_hop is not None:
            from deploy.demo_core import CORE_UA_HOST, DOMAIN, CoreRegistrar, CoreUa

            tone = (CORE_UA_HOST, TONE_PORT)
            registrar = CoreRegistrar(next_hop, tone)
            proc = registrar.start_process()
            self.procs.append(("core", proc))
            threading.Thread(target=_pump, args=("core", proc.stdout), daemon=True).start()
            registrar.wait_ready()
            self.demo_stops.append(registrar.stop)
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

        from mediad.client import IqClient

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="e2ae run", description="run the e2ae edge in the foreground")
    parser.add_argument("--config", help="configuration file (default: $E2AE_CONFIG, else deploy/e2ae.conf)")
    parser.add_argument("--rundir", default=str(ROOT / ".run"),
                        help="directory for the runtime configuration, pid files and Redis (default .run/)")
    parser.add_argument("--no-demo", action="store_true",
                        help="do not start the demo core (registrar + tone) on a loopback next hop")
    parser.add_argument("--web", default="%s:%d" % WEB_PHONE,
                        help="HOST:PORT of the web phone's HTTPS pages, or off (default %(default)s)")
    args = parser.parse_args(argv)
    source = Path(args.config or os.environ.get("E2AE_CONFIG") or ROOT / "deploy" / "e2ae.conf").resolve()
    web = None if args.web == "off" else (args.web.rsplit(":", 1)[0], int(args.web.rsplit(":", 1)[1]))
    runner = Runner(source, Path(args.rundir).resolve(), demo=not args.no_demo, web=web)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    status = 0
    try:
        status = runner.run()
    except KeyboardInterrupt:
        say("interrupted")
    except Exception as exc:  # a child that did not start: say why, stop the others
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
