"""``deploy/e2ae run``: run the whole edge on this machine, in the foreground, supervised.

    .venv/bin/python -m deploy.run_edge [--config FILE] [--rundir DIR] [--shm-mb MB]
        [--restart-delay S] [--restart-burst N] [--restart-interval S]

Starts, in order, and prints where each listens and each child's pid:

1. ``redis-server`` on the address of ``[redis] url``, loopback only, with a
   password (the configured one, else a fresh random one), persistent: an
   append-only file under ``RUNDIR/redis`` (``appendfsync everysec``, no RDB
   snapshots; the directory is mode 0700, as the file holds SRTP keys); when a
   Redis already answers there, that one is used instead and not supervised;
2. ``python -m mediad`` (the media daemon);
3. ``kamailio -DD -E`` with ``deploy/kamailio.cfg`` and the plugin, its sockets
   and metrics port taken from the configuration.

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

Ctrl-C (or SIGTERM) stops Kamailio, then mediad, then Redis, each within a
bounded time (``STOP_TIMEOUT``), and exits 0.  The children read a runtime copy
of the configuration (with the Redis password filled in) under ``--rundir``
(``.run/`` in the repository by default).
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parent.parent
KAMAILIO_CFG = ROOT / "deploy" / "kamailio.cfg"
PLUGIN = ROOT / "plugin" / "kemi.py"
STOP_TIMEOUT = 10.0
READY_TIMEOUT = 30.0
POLL_INTERVAL = 0.1


# Kamailio's shared memory (-m) and each process's private memory (-M), in MB: sized
# for the load in docs/performance.rst ("Kamailio's shared memory"), which gives the formula.
SHM_MB = 512
PKG_MB = 8


def kamailio_command(cfg_path: str, rundir: str, *, access: str, core: str, metrics: str | None,
                     dialog_ttl: int, plugin: str = str(PLUGIN), shm_mb: int = SHM_MB,
                     pkg_mb: int = PKG_MB, rpc_socket: str | None = None) -> list[str]:
    """The foreground Kamailio command for ``deploy/kamailio.cfg`` (defines from the configuration)."""
    exe = shutil.which("kamailio") or "/usr/sbin/kamailio"
    cmd = [exe, "-DD", "-E", "-f", cfg_path, "-Y", rundir, "-P", os.path.join(rundir, "kamailio.pid"),
           "-m", str(shm_mb), "-M", str(pkg_mb),
           # TLSF for shared and private memory: 13 % less Kamailio CPU per call than the
           # default allocator, measured with the call-setup benchmark (docs/performance.rst)
           "-x", "tlsf", "-X", "tlsf",
           "-A", f"E2AE_ACCESS_SIP=udp:{access}", "-A", f"E2AE_CORE_SIP=udp:{core}",
           "-A", f"E2AE_ACCESS_SIP_TCP=tcp:{access}", "-A", f"E2AE_CORE_SIP_TCP=tcp:{core}",
           "-A", f'E2AE_PLUGIN="{plugin}"', "-A", f"E2AE_DIALOG_TTL={dialog_ttl}"]
    if metrics:
        cmd += ["-A", f"E2AE_METRICS=tcp:{metrics}"]
    if rpc_socket:
        cmd += ["-A", f'E2AE_RPC_SOCKET="{rpc_socket}"']
    return cmd


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


class Runner:
    def __init__(self, config_path: Path, rundir: Path, policy: RestartPolicy = RestartPolicy(),
                 shm_mb: int = SHM_MB) -> None:
        self.source = config_path
        self.rundir = rundir
        self.policy = policy
        self.shm_mb = shm_mb
        self.children: list[Child] = []

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

    # -- the edge -------------------------------------------------------------------
    def runtime_config(self) -> tuple[Path, object, str]:
        """Copy of the configuration with the Redis password filled in (0600, under .run/), and
        Kamailio's RPC socket (e2ae-ctl's) under this run's directory unless one is configured."""
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
        if not parser.has_option("plugin", "rpc_socket"):  # Kamailio's, under this run's directory
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
        if _redis_ping(rhost, rport, password):
            say(f"Redis already answers on {rhost}:{rport}: using it (not supervised)")
            if not password:
                say("warning: that Redis accepts clients without a password; it will hold SRTP keys "
                    "(set requirepass and put the password in [redis])")
        else:
            redis_dir = self.rundir / "redis"
            redis_dir.mkdir(mode=0o700, exist_ok=True)
            os.chmod(redis_dir, 0o700)
            self.add("redis", redis_command(rhost, rport, password, redis_dir),
                     lambda: _redis_ping(rhost, rport, password))
        self.add("mediad", [sys.executable, "-m", "mediad", "--config", str(path)],
                 lambda: self._mediad_ready(config), env)
        control = config.mediad_control
        rundir = self.rundir / "kamailio"
        rundir.mkdir(exist_ok=True)
        access, core = config.edge_access_sip, config.edge_core_sip
        metrics = config.plugin_metrics
        cmd = kamailio_command(str(KAMAILIO_CFG), str(rundir), access=str(access), core=str(core),
                               metrics=str(metrics) if metrics else None, dialog_ttl=config.redis_dialog_ttl,
                               shm_mb=self.shm_mb, rpc_socket=config.plugin_rpc_socket)
        self.add("kamailio", cmd, lambda: _sip_ready(access.host, access.port) and _sip_ready(core.host, core.port),
                 env)
        say("edge ready:")
        say(f"  SIP access socket   udp:{access}   (WebRTC clients / UEs)")
        say(f"  SIP core socket     udp:{core}   -> next hop {config.edge_core_next_hop}")
        say(f"  mediad control      tcp:{control}   media access {config.mediad_access_address} "
            f"{config.mediad_access_ports}, core {config.mediad_core_address} {config.mediad_core_ports}")
        if config.mediad_metrics:
            say(f"  mediad metrics      http://{config.mediad_metrics}/metrics")
        if metrics:
            say(f"  plugin metrics      http://{metrics}/metrics")
        say(f"  Redis               {rhost}:{rport} (password in {path})")
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


def redis_command(host: str, port: int, password: str, directory: Path) -> list[str]:
    """redis-server on loopback with a password and an append-only file in ``directory``."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    return [exe, "--bind", host, "--port", str(port), "--requirepass", password, "--protected-mode", "yes",
            "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(directory)]


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
    args = parser.parse_args(argv)
    if args.shm_mb < 16:
        parser.error("--shm-mb: at least 16")
    source = Path(args.config or os.environ.get("E2AE_CONFIG") or ROOT / "deploy" / "e2ae.conf").resolve()
    policy = RestartPolicy(delay=args.restart_delay, burst=args.restart_burst, interval=args.restart_interval)
    runner = Runner(source, Path(args.rundir).resolve(), policy, args.shm_mb)

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
