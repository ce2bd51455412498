"""Fixtures for mediad integration tests: a real mediad process on free ports.

``mediad`` starts ``python -m mediad --config FILE`` with a configuration on
free loopback ports (control, metrics) and small random media port ranges
(collisions with other suites are skipped by mediad's port pool), against the
real redis-server of ``tests/conftest.py``.  The handle can stop, kill and
restart the process, scrape its metrics and count its open sockets.

The edge's fixtures (Kamailio with the plugin, mediad and Redis;
``tests.integration.edge_harness``): ``edge``, one per module, started with
the module's ``EDGE_OPTIONS`` (``Edge``'s keyword arguments; a module on
another Redis defines its own ``edge`` with ``running_edge``);
``no_state_left``, for ``pytest.mark.usefixtures``: after each test, nothing
of its calls is left in Redis or mediad; ``sipps``: the SIPp runs a test
started, stopped after it.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mediad.io.client import AsyncIqClient, IqClient
from mediad.proto.iqcodec import decode_reply
from mediad.proto.controlwire import Authenticated, ClientConnection, Message, ProtocolError, Refused
from sdp_rules.errors import UnavailableError
from iq import Command, IqRequest
from tests.conftest import REPO, free_port
from tests.integration.edge_harness import Sipp, assert_no_state_left, running_edge

ACCESS_ADDRESS = "127.0.0.1"
CORE_ADDRESS = "127.0.0.2"


def random_range(size: int = 120) -> tuple[int, int]:
    first = random.randrange(20000, 29000, 2)
    return first, first + size - 1


class Mediad:
    def __init__(self, tmp_path: Path, redis_url: str, dialog_ttl: int = 600, control_host: str = "127.0.0.1",
                 **options: str) -> None:
        self.control_host = control_host
        self.control_port = free_port(host=control_host)
        self.metrics_port = free_port()
        self.secret = secrets.token_hex(16)
        a, c = random_range(), random_range()
        self.access_range, self.core_range = a, c
        values = {
            "control": f"{control_host}:{self.control_port}",
            "control_secret": self.secret,
            "access_address": ACCESS_ADDRESS,
            "core_address": CORE_ADDRESS,
            "access_ports": f"{a[0]}-{a[1]}",
            "core_ports": f"{c[0]}-{c[1]}",
            "metrics": f"127.0.0.1:{self.metrics_port}",
            "dtls_handshake_timeout": "5",
            "consent_timeout": "30",
            "log_level": "INFO",
        }
        values.update(options)
        if values["control_secret"] == "":
            self.secret = ""
        lines = ["[mediad]"] + [f"{k} = {v}" for k, v in values.items()]
        lines += ["[redis]", f"url = {redis_url}", f"dialog_ttl = {dialog_ttl}"]
        self.config_path = tmp_path / f"e2ae-{uuid.uuid4().hex[:8]}.conf"
        self.config_path.write_text("\n".join(lines) + "\n")
        self.log_path = tmp_path / f"mediad-{uuid.uuid4().hex[:8]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- process ----------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mediad", "--config", str(self.config_path)],
            cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mediad exited: {self.log()}")
            if self.secret:
                try:
                    self.client(timeout=0.2).request(self.iq(Command.LIST, "probe"))
                    return
                except UnavailableError:
                    pass
            elif "mediad ready" in self.log():
                return
            time.sleep(0.05)
        raise RuntimeError(f"mediad did not start: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- control ----------------------------------------------------------------
    @property
    def control(self) -> tuple[str, int]:
        return (self.control_host, self.control_port)

    def client(self, timeout: float = 2.0) -> IqClient:
        return IqClient(self.control, self.secret, timeout)

    def aclient(self, timeout: float = 2.0) -> AsyncIqClient:
        return AsyncIqClient(self.control, self.secret, timeout)

    def raw(self, secret: str | None = None) -> "RawControl":
        """A control connection whose every byte the test sees and may send again."""
        return RawControl(self.control, (self.secret if secret is None else secret).encode())

    @staticmethod
    def iq(command: Command, dialog: str, streams=None, transaction: str | None = None, **kw) -> IqRequest:
        return IqRequest(command, dialog, transaction or uuid.uuid4().hex[:12], streams or [], **kw)

    # -- observation ------------------------------------------------------------
    def metrics(self) -> dict[tuple[str, tuple], float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=2).read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def written(self, timeout: float = 5.0) -> bool:
        """Wait until mediad's write-behind has written every change it answered (state_pending 0)."""
        deadline = time.monotonic() + timeout
        while self.metric("e2ae_mediad_state_pending") and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.metric("e2ae_mediad_state_pending")

    def sockets(self, settle: float = 2.0) -> set[tuple[str, int]]:
        """The UDP sockets the process holds open, once the set stops changing.

        asyncio closes a transport's socket on the loop's next turn, after a reply
        may already have gone out: two reads 50 ms apart must agree.
        """
        deadline = time.monotonic() + settle
        seen = self._sockets()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = self._sockets()
            if now == seen:
                break
            seen = now
        return seen

    def _sockets(self) -> set[tuple[str, int]]:
        """(address, port) of the UDP sockets the process holds, from /proc/net/udp."""
        assert self.proc is not None
        inodes = set()
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        bound = set()
        for line in Path(f"/proc/{self.proc.pid}/net/udp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                hex_addr, hex_port = fields[1].split(":")
                address = ".".join(str(b) for b in reversed(bytes.fromhex(hex_addr)))
                bound.add((address, int(hex_port, 16)))
        return bound


class RawControl:
    """One control connection driven by hand: the handshake, payloads, raw bytes, what comes back."""

    def __init__(self, address: tuple[str, int], secret: bytes, timeout: float = 3.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.wire = ClientConnection(secret)
        self.sent: list[bytes] = []  # every write, as it went out

    def handshake(self) -> list:
        self.write(self.wire.hello())
        return self.events()

    def write(self, data: bytes) -> None:
        self.sent.append(data)
        self.sock.sendall(data)

    def send(self, payload: bytes) -> bytes:
        """Send one DATA message; returns its bytes (to replay them)."""
        data = self.wire.send(payload)
        self.write(data)
        return data

    def events(self) -> list:
        """The events of what mediad sends next; [] once it closed the connection."""
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                return []
            if not data:
                return []
            events = self.wire.receive_data(data)
            if events:
                return events

    def reply(self):
        """The next reply (an IqReply), or the event that ended the connection (None: closed)."""
        for event in self.events():
            if isinstance(event, Message):
                return decode_reply(event.payload)
            if isinstance(event, (Refused, ProtocolError)):
                return event
            assert isinstance(event, Authenticated)
        return None

    def closed_by_peer(self, timeout: float = 3.0) -> bool:
        """True when mediad closes the connection within ``timeout`` (what it sends meanwhile is read)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def mediad_factory(tmp_path: Path, redis_url: str) -> Iterator:
    started: list[Mediad] = []

    def make(**options) -> Mediad:
        daemon = Mediad(tmp_path, redis_url, **options)
        daemon.start()
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.stop()


@pytest.fixture
def mediad(mediad_factory) -> Mediad:
    return mediad_factory()


@pytest.fixture(scope="module")
def edge(request, redis_server):
    """The edge of a test module, started with its ``EDGE_OPTIONS`` (none: the defaults)."""
    with running_edge(redis_server, **getattr(request.module, "EDGE_OPTIONS", {})) as started:
        yield started


@pytest.fixture
def no_state_left(edge):
    """After the test: no dialog left in Redis or in mediad (the edge released every call)."""
    yield
    assert_no_state_left(edge)


@pytest.fixture
def sipps() -> Iterator[list[Sipp]]:
    """The SIPp runs a test appends (``sipps.append(Sipp(...).start())``), stopped after it."""
    started: list[Sipp] = []
    yield started
    for sipp in started:
        sipp.stop()
