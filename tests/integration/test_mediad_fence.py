"""A mediad of the pool paused (SIGSTOP), its calls taken over, then resumed: it harms none of them.

Real processes on a private network: network namespaces made for the run, joined by a
bridge (``tests.integration.netns``).  The hub holds Redis and the peers (a DTLS-SRTP
peer per call on the access side, a plain RTP socket per call on the core side); node
``x`` and node ``y`` each have a namespace of their own.  x's media are on a floating
address (``10.77.0.100``); y's ``[pool] takeover_hook`` moves it as keepalived would:
off x's host, onto y's, announced by a gratuitous ARP.  On one machine's loopback the
survivor could not bind the paused node's ports (the paused process still holds
them); here, as between two hosts, each node has its own kernel's sockets.

x is stopped with calls carrying media both ways; y takes them over (its record
expired); x is continued.  The calls keep their media from y, their documents still
name y, x holds no socket of theirs, and x sent nothing: no event (which would make
the plugin end a call), no write over y's documents.  x stands down: from its first
record after the pause it is draining (in the operator's drain set), since its
floating address is y's now; once the operator moves the address back and undrains
it, x is active again and carries a new call.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pylibsrtp
import pytest
import redis

from iq import Command, Role, Side, StreamSpec, TerminationSpec
from mediad.pool import DRAINING_KEY, Node, node_key
from mediad.state import dialog_key
from mediad.takeover import MOVED_KEY
from plugin.pool import Standing, classify
from tests.conftest import REPO
from tests.integration import netns
from tests.integration.conftest import Mediad
from tests.integration.dtls_peer import DtlsPeer, rtp_packet

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not netns.available() or not shutil.which("arping"),
                                 reason="needs root, iproute2 and arping (network namespaces)")]

CALLS = 3
HEARTBEAT = 0.5  # the record lives 1.5 s
REDIS_HOST, WIC_HOST, CORE_HOST = 1, 2, 3  # the hub's addresses
NODES = {"x": 11, "y": 12}
FLOATING = {"x": 100, "y": 200}  # each node's media address
CONTROL_PORT, METRICS_PORT = 7000, 9100  # the namespaces are the run's own: fixed ports are free


class NsMediad(Mediad):
    """A pool node in its own namespace: control and metrics on its host address, media on its
    floating address."""

    def __init__(self, tmp_path: Path, lan: netns.Lan, name: str, redis_url: str, hook: str) -> None:
        self.ns = lan.hosts[name]
        self.control_host = lan.address(NODES[name])
        self.control_port = CONTROL_PORT
        self.metrics_port = METRICS_PORT
        self.secret = secrets.token_hex(16)
        media = lan.address(FLOATING[name])
        lines = ["[mediad]", f"node_id = {name}", f"control = {self.control_host}:{CONTROL_PORT}",
                 f"control_secret = {self.secret}", f"access_address = {media}", f"core_address = {media}",
                 "access_ports = 20000-20099", "core_ports = 30000-30099",
                 f"metrics = {self.control_host}:{METRICS_PORT}", f"heartbeat = {HEARTBEAT}",
                 "dtls_handshake_timeout = 5", "consent_timeout = 30", "log_level = INFO",
                 "[redis]", f"url = {redis_url}", "dialog_ttl = 600",
                 "[pool]", f"takeover_hook = {hook}"]
        self.config_path = tmp_path / f"e2ae-{name}.conf"
        self.config_path.write_text("\n".join(lines) + "\n")
        self.log_path = tmp_path / f"mediad-{name}.log"
        self.proc = None

    def start(self, timeout: float = 15.0) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [netns.IP, "netns", "exec", self.ns, sys.executable, "-m", "mediad", "--config", str(self.config_path)],
            cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mediad exited: {self.log()}")
            if "mediad ready" in self.log():
                return
            time.sleep(0.05)
        raise RuntimeError(f"mediad did not start: {self.log()}")

    def metrics(self):
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        text = urllib.request.urlopen(f"http://{self.control_host}:{METRICS_PORT}/metrics", timeout=2).read()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text.decode()) for s in family.samples}

    def held(self) -> list[str]:
        return list(self.client().request(self.iq(Command.LIST, "list")).data["dialogs"])


class Call:
    """One call's media, both ways, every 20 ms: SRTP from the WIC's DTLS peer, RTP from the
    core; each side records when a packet arrives (decrypted, for the WIC)."""

    def __init__(self, lan: netns.Lan) -> None:
        self.dialog = f"call-{uuid.uuid4().hex[:8]}"
        self.peer = DtlsPeer("client", srtp=True, host=lan.address(WIC_HOST))
        self.core = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.core.bind((lan.address(CORE_HOST), 0))
        self.core.settimeout(0.2)
        self.at_wic: list[float] = []
        self.at_core: list[float] = []
        self.core_remote: tuple[str, int] | None = None
        self.ports: set[int] = set()
        self.running = False
        self.threads: list[threading.Thread] = []

    def spec(self) -> StreamSpec:
        access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=True, tls_role=Role.SERVER,
                                 remote_fingerprints=[self.peer.fingerprint("sha-256")],
                                 local_fingerprint_request=True)
        host, port = self.core.getsockname()
        core = TerminationSpec(Side.CORE, "RTP/AVP", remote_address=host, remote_port=port, rtcp_mux=True)
        return StreamSpec(1, "srtp", access, core)

    def start(self, node: NsMediad) -> None:
        reply = node.client().request(node.iq(Command.RESERVE, self.dialog, [self.spec()]))
        assert reply.error is None, reply
        stream = reply.stream(1)
        assert self.peer.handshake((stream.access.local_address, stream.access.local_port))
        self.core_remote = (stream.core.local_address, stream.core.local_port)
        self.ports = {stream.access.local_port, stream.core.local_port}
        self.running = True
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._send, self._wic, self._core)]
        for thread in self.threads:
            thread.start()

    def _send(self) -> None:
        seq, started = 0, time.monotonic()
        while self.running:
            self.peer.send_rtp(rtp_packet(seq, ssrc=0x1111))
            self.core.sendto(rtp_packet(seq, ssrc=0x2222), self.core_remote)
            seq += 1
            time.sleep(max(0.0, started + seq * 0.02 - time.monotonic()))

    def _wic(self) -> None:
        while self.running:
            try:
                if self.peer.recv_media(timeout=0.2) is not None:
                    self.at_wic.append(time.monotonic())
            except (OSError, pylibsrtp.Error):
                pass

    def _core(self) -> None:
        while self.running:
            try:
                data, _ = self.core.recvfrom(2048)
            except OSError:
                continue
            if data[0] & 0xC0 == 0x80:
                self.at_core.append(time.monotonic())

    def after(self, at: float) -> tuple[int, int]:
        """Packets received after ``at`` (at the WIC, at the core)."""
        return sum(t > at for t in self.at_wic), sum(t > at for t in self.at_core)

    def stop(self) -> None:
        self.running = False
        for thread in self.threads:
            thread.join(2)
        self.peer.close()
        self.core.close()


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def lan():
    made = netns.Lan(NODES, hub_addresses=(REDIS_HOST, WIC_HOST, CORE_HOST)).up()
    try:
        made.add_address("x", FLOATING["x"])
        made.add_address("y", FLOATING["y"])
        yield made
    finally:
        made.down()


def move_hook(tmp_path: Path, lan: netns.Lan) -> str:
    """y's takeover hook: the address leaves x's host and comes to y's, with a gratuitous ARP."""
    script = tmp_path / "move-address.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"{netns.IP} netns exec {lan.hosts['x']} {netns.IP} addr del \"$1/24\" dev eth0 2>/dev/null\n"
        f"{netns.IP} addr add \"$1/24\" dev eth0 || exit 1\n"
        f"{shutil.which('arping')} -q -U -c 1 -I eth0 \"$1\"\n"
        "exit 0\n")
    return f"sh {script} {{address}}"


def test_a_paused_node_back_after_its_calls_were_taken_over_harms_none_of_them(lan, tmp_path):
    with netns.inside(lan.hub):
        _paused_node(lan, tmp_path)


def _paused_node(lan: netns.Lan, tmp_path: Path) -> None:
    server = subprocess.Popen(["redis-server", "--bind", lan.address(REDIS_HOST), "--port", "6379", "--save", "",
                               "--appendonly", "no", "--protected-mode", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"redis://{lan.address(REDIS_HOST)}:6379/0"
    store = redis.Redis.from_url(url, socket_timeout=2)
    nodes: dict[str, NsMediad] = {}
    calls: list[Call] = []
    events = None
    try:
        assert wait_for(lambda: _pings(store), 10), "redis-server in the hub"
        hook = move_hook(tmp_path, lan)
        for name in NODES:
            nodes[name] = NsMediad(tmp_path, lan, name, url, hook)
            nodes[name].start()
        x, y = nodes["x"], nodes["y"]
        calls = [Call(lan) for _ in range(CALLS)]
        for call in calls:
            call.start(x)
        time.sleep(1.0)
        flowing = time.monotonic() - 0.5
        for call in calls:
            assert min(call.after(flowing)) > 15, "media both ways through x"
        assert wait_for(lambda: all(store.exists(dialog_key(c.dialog)) for c in calls), 2)

        os.kill(x.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            assert wait_for(lambda: set(y.held()) >= {c.dialog for c in calls}, 10), y.log()
            took = time.monotonic() - stopped
            assert wait_for(lambda: store.hget(MOVED_KEY, "x") is not None, 3)  # once its documents are written
            for call in calls:  # rewritten by y at the next epoch, on x's address
                document = json.loads(store.get(dialog_key(call.dialog)))
                assert (document["node"], document["epoch"]) == ("y", 1), document
                assert document["home"]["access"] == lan.address(FLOATING["x"])
            time.sleep(1.0)
            on_y = time.monotonic() - 0.7
            for call in calls:
                assert min(call.after(on_y)) > 15, "media both ways through y"
            events = store.pubsub(ignore_subscribe_messages=True)
            events.subscribe("e2ae:events")
        finally:
            os.kill(x.proc.pid, signal.SIGCONT)
        resumed = time.monotonic()
        print(f"\nx paused {resumed - stopped:.1f} s; y held its {CALLS} calls {took * 1000:.0f} ms after the pause")

        mine = {c.dialog for c in calls}
        assert wait_for(lambda: not mine & set(x.held()), 5), x.log()
        dropped_in = time.monotonic() - resumed
        # x's write-behind, heartbeats, expiry and consent sweeps all have their turn; meanwhile x's record
        # (expired during the pause) is back, never saying active: x stood down.
        standings = records_during(store, "x", 1.5)
        print(f"x let go of them {dropped_in * 1000:.0f} ms after it was continued")
        assert standings and set(standings) == {Standing.DRAINING}, standings
        assert store.sismember(DRAINING_KEY, "x")
        stood_down = [line for line in x.log().splitlines() if "was taken over while it ran" in line]
        assert len(stood_down) == 1 and "WARNING" in stood_down[0], stood_down
        for call in calls:
            n_wic, n_core = call.after(resumed)
            assert n_wic > 40 and n_core > 40, (call.dialog, n_wic, n_core)  # 1.5 s and more at 50/s, from y
            document = json.loads(store.get(dialog_key(call.dialog)))
            assert (document["node"], document["epoch"]) == ("y", 1), document
        x_ports = {port for address, port in x.sockets() if address == lan.address(FLOATING["x"])}
        assert not x_ports & set().union(*(c.ports for c in calls)), x_ports
        assert x.metric("e2ae_mediad_dialogs_fenced_total") == CALLS
        assert x.metric("e2ae_mediad_fenced_refusals_total", op="set") >= CALLS
        assert x.metric("e2ae_mediad_sessions_active") == 0
        assert set(y.held()) == mine and y.metric("e2ae_mediad_dialogs_fenced_total") == 0
        sent = [json.loads(m["data"]) for m in _drain(events)]
        assert sent == [], sent  # x announced nothing (no event would make the plugin end a call)
        warnings = [line for line in x.log().splitlines() if "dropped: its document is" in line]
        assert len(warnings) == CALLS and all("WARNING" in line for line in warnings), warnings

        for call in calls:  # the calls end on y, which deletes their documents
            assert y.client().request(y.iq(Command.RELEASE, call.dialog)).error is None
        assert y.written()
        assert wait_for(lambda: not any(store.exists(dialog_key(c.dialog)) for c in calls), 3)

        # The operator gives x its address back (off y's host, onto x's) and undrains it: x takes calls again.
        give_back(lan, "y", "x", FLOATING["x"])
        store.srem(DRAINING_KEY, "x")  # what e2ae-ctl undrain x does
        assert wait_for(lambda: records_during(store, "x", 0) == [Standing.ACTIVE], 3 * HEARTBEAT)
        again = Call(lan)
        calls.append(again)
        again.start(x)
        time.sleep(1.0)
        assert min(again.after(time.monotonic() - 0.5)) > 15, "media both ways through x again"
        assert x.client().request(x.iq(Command.RELEASE, again.dialog)).error is None
    finally:
        if events is not None:
            events.close()
        for call in calls:
            call.stop()
        for node in nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                os.kill(node.proc.pid, signal.SIGCONT)
            node.stop()
        store.close()
        server.terminate()
        server.wait(5)


def records_during(store, node: str, seconds: float) -> list:
    """How the plugin stands ``node`` (its record and the drain set, ``plugin.pool.classify``) every 50 ms
    for ``seconds`` (once when 0), while its record exists."""
    seen = []
    deadline = time.monotonic() + seconds
    while True:
        raw = store.get(node_key(node))
        if raw is not None:
            draining = {d.decode() for d in store.smembers(DRAINING_KEY)}
            seen.append(classify(Node.from_dict(json.loads(raw)), draining, {}, 0.0))
        if time.monotonic() >= deadline:
            return seen
        time.sleep(0.05)


def give_back(lan: netns.Lan, holder: str, owner: str, n: int) -> None:
    """The operator moves address ``n`` from ``holder``'s host back to ``owner``'s (gratuitous ARP)."""
    address = lan.address(n)
    netns.ip("addr", "del", f"{address}/24", "dev", "eth0", ns=lan.hosts[holder])
    lan.add_address(owner, n)
    subprocess.run([netns.IP, "netns", "exec", lan.hosts[owner], shutil.which("arping"), "-q", "-U", "-c", "1",
                    "-I", "eth0", address], timeout=10, stdin=subprocess.DEVNULL, check=False)


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _drain(pubsub, seconds: float = 0.5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message is not None:
            yield message
