"""Shared test configuration: the ``req`` marker and fixtures for real parts.

Every server a test starts listens on a free port chosen at run time on
127.0.0.1, so suites can run side by side on one machine.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parent.parent

# ``make mutate`` runs the unit tests once per mutant (thousands of times): there the
# property tests draw fewer examples, always the same ones, so that a run takes minutes
# and a mutant's verdict does not change from one run to the next.
settings.register_profile("mutate", max_examples=20, derandomize=True, database=None)
settings.load_profile(os.environ.get("E2AE_HYPOTHESIS_PROFILE", "default"))


def property_examples(suite: int) -> int:
    """Examples for a property test that sets its own number: ``suite``, or the profile's in ``make mutate``."""
    return settings.default.max_examples if os.environ.get("E2AE_HYPOTHESIS_PROFILE") == "mutate" else suite


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "req(*ids): requirement IDs this test proves")
    # E2AE_COMPILED=1: the tests import the mypyc build of the rules (deploy/compiled.py), and
    # stop at once when it cannot be used rather than run the sources under its name.
    if os.environ.get("E2AE_COMPILED") == "1":
        from deploy import compiled

        why = compiled.stale()
        if why is not None:
            pytest.exit(f"E2AE_COMPILED=1 but {why}", returncode=4)
        compiled.use()


def pytest_report_header(config: pytest.Config) -> str | None:
    if os.environ.get("E2AE_COMPILED") == "1":
        import sdp_rules.rules

        return f"compiled build: {sdp_rules.rules.__file__}"
    return None


# Ports a test hands to a process it starts (and may restart): below the kernel's ephemeral range
# (32768-60999 here), so no outgoing connection on the machine takes one while the process is down,
# and below the media ranges the integration tests draw (20000-29000).
LISTEN_PORTS = (10000, 19999)


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` right now."""
    for _ in range(200):
        port = random.randint(*LISTEN_PORTS)
        try:
            for sock_kind in (kind, socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, sock_kind) as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def free_port_block(count: int, host: str = "127.0.0.1", avoid: tuple[int, ...] = ()) -> int:
    """The first of ``count`` consecutive ports free for UDP and TCP on ``host`` right now, none
    of them in ``avoid`` (SIPp takes its -mp port and the three above it for audio and video)."""
    for _ in range(200):
        base = free_port(host=host)
        block = range(base, base + count)
        if block[-1] > LISTEN_PORTS[1] or any(port in block for port in avoid):
            continue
        try:
            for port in block[1:]:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind((host, port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free block of ports")


class RedisServer:
    """A real ``redis-server`` on 127.0.0.1 with a password, in a temp dir."""

    password = "e2ae-test"

    def __init__(self) -> None:
        self.port = free_port(socket.SOCK_STREAM)
        self.dir = tempfile.mkdtemp(prefix="e2ae-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", self.password,
             "--save", "", "--appendonly", "no", "--dir", self.dir, "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                    if b"PONG" in s.recv(100):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self):  # -> redis.Redis
        import redis

        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session; tests must clean their keys (and check it)."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A clean database for one test: flushed before and after."""
    client = redis_server.client()
    client.flushdb()
    yield redis_server.url
    client.flushdb()
    client.close()


@pytest.fixture
def metrics_registry():
    """A fresh Prometheus registry per test."""
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "no", "false")
