"""A mediad of the pool killed mid-call: a survivor takes its calls over on its address.

Real processes: three mediads, each on its own loopback "host" (control and access
media on 127.0.0.1N, core media on 127.0.1.1N; any 127.x address is local, as a
floating address moved by keepalived would be), registering in the session's
Redis every half second; Kamailio with the plugin reading that registry; ten
WebRTC calls (aiortc: ICE, DTLS-SRTP, a tone) through it to a core that answers
each with PCMU over RTP and counts what arrives.  One node holding calls is
killed with SIGKILL: each of its calls must keep its media both ways (packets
counted at the WIC and at the core after the kill, the gap measured per call),
with no re-INVITE and no DTLS handshake on the survivor, and end with its BYE
there, leaving nothing in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import statistics
import time

import pytest

from deploy.demo_call import (PCMU, SAMPLES, PTIME, SipUac, _media_address, _Queue, _StreamQueue, _tag, _ulaw,
                              loopback_only, tone_track)
from mediad.pool import DRAINING_KEY, NODES_KEY, Node, node_key
from mediad.state import dialog_key
from mediad.takeover import MOVED_KEY, lock_key
from plugin.pool import Standing, classify
from tests.integration.edge_harness import Edge
from tests.integration.test_edge_pool import HOSTS, Pool, clean_pool_keys, start_node

pytestmark = pytest.mark.integration

CALLS = 10
WRAP_AFTER = 0.5  # s: when the core's RTP sequence number wraps, counted from its first packet
CACHE = 0.5


class Core:
    """The core: one SIP UAS for every call, one RTP socket per call answering PCMU, counting
    what arrives (its times) and sending a tone to the edge."""

    def __init__(self, sip: tuple[str, int], media_host: str = "127.0.0.3") -> None:
        self.sip = sip
        self.media_host = media_host
        self.calls: dict[str, dict] = {}  # Call-ID -> {"transport", "port", "times", "remote", "sender"}
        self.invites = 0
        self.byes: set[str] = set()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        _, self.proto = await loop.create_datagram_endpoint(_Queue, local_addr=self.sip)
        self.tcp = await loop.create_server(lambda: _StreamQueue(self.proto.queue), *self.sip)
        self.task = asyncio.ensure_future(self._serve())

    def close(self) -> None:
        self.task.cancel()
        self.proto.transport.close()
        self.tcp.close()
        for call in self.calls.values():
            if call.get("sender"):
                call["sender"].cancel()
            call["transport"].close()

    async def _leg(self, call_id: str) -> dict:
        call = self.calls.get(call_id)
        if call is None:
            times: list[float] = []

            class Rtp(asyncio.DatagramProtocol):
                def datagram_received(self, data, addr) -> None:
                    if len(data) >= 12 and data[1] & 0x7F == PCMU:
                        times.append(time.monotonic())

            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                Rtp, local_addr=(self.media_host, 0))
            call = self.calls[call_id] = {"transport": transport, "port": transport.get_extra_info("sockname")[1],
                                          "times": times, "tag": _tag(), "sender": None}
        return call

    async def _serve(self) -> None:
        while True:
            msg = await self.proto.queue.get()
            if msg.status:
                continue
            call_id = msg.get("call-id")
            if msg.method == "INVITE":
                self.invites += 1
                call = await self._leg(call_id)
                remote = _media_address(msg.body)
                if remote and call["sender"] is None:
                    call["sender"] = asyncio.ensure_future(self._send_rtp(call["transport"], remote))
                answer = (f"v=0\r\no=core {random.getrandbits(31)} 1 IN IP4 {self.media_host}\r\ns=-\r\n"
                          f"c=IN IP4 {self.media_host}\r\nt=0 0\r\nm=audio {call['port']} RTP/AVP 0\r\n"
                          "a=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n")
                mid = re.search(r"^a=mid:(\S+)", msg.body, re.M)
                answer += f"a=mid:{mid.group(1)}\r\n" if mid else ""  # RFC 5888: the answer echoes it
                self._send(msg, self._response(msg, "200 OK", answer, call["tag"]))
            elif msg.method == "BYE":
                self.byes.add(call_id)
                call = self.calls.get(call_id)
                if call and call["sender"]:
                    call["sender"].cancel()
                self._send(msg, self._response(msg, "200 OK"))
            elif msg.method != "ACK":
                self._send(msg, self._response(msg, "200 OK"))

    def _response(self, req, status: str, body: str = "", to_tag: str = "") -> bytes:
        lines = [f"SIP/2.0 {status}"]
        for name, value in req.headers:
            if name in ("via", "from", "call-id", "cseq", "record-route"):
                lines.append(f"{name.title()}: {value}")
            elif name == "to":
                lines.append(f"To: {value}" + (f";tag={to_tag}" if to_tag and "tag=" not in value else ""))
        lines.append(f"Contact: <sip:core@{self.sip[0]}:{self.sip[1]}>")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def _send(self, request, data: bytes) -> None:
        if request.stream is not None:
            request.stream.write(data)
        else:
            self.proto.transport.sendto(data, request.source)

    @staticmethod
    async def _send_rtp(transport, remote) -> None:
        # The sequence number wraps about WRAP_AFTER s into the call, before the kill: the
        # survivor must continue the stream at rollover counter 1 (RFC 3711 3.3.1) for the WIC
        # to authenticate it (docs/scaling.rst, "Taking over a dead node's calls").
        ssrc, ts = random.getrandbits(32), random.getrandbits(32)
        seq = 65536 - round(WRAP_AFTER / PTIME)
        payload = bytes(_ulaw(int(8000 * (1 if (i // 10) % 2 else -1))) for i in range(SAMPLES))
        start, n = time.monotonic(), 0
        while True:
            transport.sendto(bytes([0x80, PCMU]) + (seq & 0xFFFF).to_bytes(2, "big") + (ts & 0xFFFFFFFF).to_bytes(
                4, "big") + ssrc.to_bytes(4, "big") + payload, remote)
            n, seq, ts = n + 1, seq + 1, ts + SAMPLES
            await asyncio.sleep(max(0.0, start + n * PTIME - time.monotonic()))


class Wic:
    """One WebRTC client (aiortc) and its SIP UA; the times of the audio frames it receives."""

    def __init__(self, edge: tuple[str, int]) -> None:
        self.uac = SipUac("127.0.0.1", edge)
        self.pc = None
        self.times: list[float] = []
        self.reader: asyncio.Task | None = None
        self.answer = ""

    async def start(self) -> str:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        self.pc = RTCPeerConnection()
        await self.uac.open()
        self.pc.addTransceiver(tone_track(), direction="sendrecv")

        @self.pc.on("track")
        def on_track(track) -> None:
            self.reader = asyncio.ensure_future(self._read(track))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        reply = await self.uac.invite(self.pc.localDescription.sdp)
        assert reply.status == 200, reply.first_line
        self.answer = reply.body
        await self.pc.setRemoteDescription(RTCSessionDescription(reply.body, "answer"))
        dtls = self.pc.getTransceivers()[0].sender.transport
        deadline = time.monotonic() + 10
        while dtls.state != "connected" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert dtls.state == "connected"
        return self.uac.call_id

    async def _read(self, track) -> None:
        while True:
            await track.recv()
            self.times.append(time.monotonic())

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        if self.pc is not None:
            await self.pc.close()
        self.uac.close()


def standing(pool: Pool, name: str, wait: float = 3.0) -> Standing | None:
    """How the plugin stands node ``name`` (its record and the drain set, ``plugin.pool.classify``),
    once it has a record (None: none within ``wait`` s)."""
    client = pool.edge.redis()
    try:
        deadline = time.monotonic() + wait
        while (raw := client.get(node_key(name))) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if raw is None:
            return None
        draining = {d.decode() for d in client.smembers(DRAINING_KEY)}
        return classify(Node.from_dict(json.loads(raw)), draining, {}, time.time())
    finally:
        client.close()


def gap(times: list[float], at: float) -> tuple[float, int]:
    """(ms from the last packet before ``at`` to the first after it, packets after it)."""
    before = [t for t in times if t <= at]
    after = [t for t in times if t > at]
    if not before or not after:
        return float("inf"), len(after)
    return (after[0] - before[-1]) * 1000, len(after)


@contextlib.contextmanager
def running_pool(redis_server, tmp_path, start=start_node, plugin_pool: str = ""):
    """Kamailio with the plugin over the three nodes ``start`` makes; ``plugin_pool``: more [pool] lines."""
    clean_pool_keys(redis_server)
    edge = Edge(redis_server)
    with open(edge.config_path, "a") as conf:
        conf.write(f"\n[pool]\nregistry = on\ncache = {CACHE}\n{plugin_pool}")
    nodes = {}
    try:
        for name in HOSTS:
            nodes[name] = start(tmp_path, redis_server.url, name)
        edge.start_kamailio()
        yield Pool(edge, nodes)
    finally:
        edge.stop()
        for node in nodes.values():
            node.stop()
        clean_pool_keys(redis_server)


@pytest.fixture
def pool(redis_server, tmp_path):
    with running_pool(redis_server, tmp_path) as running:
        yield running


def handshakes(node) -> float:
    return sum(v for (name, _), v in node.metrics().items() if name == "e2ae_mediad_dtls_handshakes_total")


def test_a_killed_nodes_calls_keep_their_media_on_a_survivor(pool):
    loopback_only()
    asyncio.run(_killed_node(pool))


async def _killed_node(pool: Pool) -> None:
    core = Core(pool.edge.next_hop)
    await core.open()
    wics = [Wic(pool.edge.access) for _ in range(CALLS)]
    try:
        ids = [await wic.start() for wic in wics]
        held = {name: pool.held(name) for name in HOSTS}
        assert sum(map(len, held.values())) == CALLS, held
        victim = max(held, key=lambda name: len(held[name]))
        dead_dialogs = set(held[victim])
        survivors = [name for name in HOSTS if name != victim]
        before = {name: handshakes(pool.nodes[name]) for name in survivors}
        invites = core.invites
        await asyncio.sleep(2.0)  # media flows; each core stream wraps and its ROC is stored
        # Which calls are on the victim: the WIC's SDP names its access address.
        victim_host = f"127.0.0.{HOSTS[victim]}"
        on_victim = [i for i, wic in enumerate(wics) if re.search(rf"c=IN IP4 {re.escape(victim_host)}\b", wic.answer)]
        assert len(on_victim) == len(dead_dialogs), (on_victim, dead_dialogs)

        killed = time.monotonic()
        pool.nodes[victim].kill()
        taken_by = None
        while time.monotonic() - killed < 10 and taken_by is None:
            await asyncio.sleep(0.05)
            for name in survivors:
                if dead_dialogs <= set(await asyncio.to_thread(pool.held, name)):
                    taken_by = name
        took = time.monotonic() - killed
        assert taken_by is not None, "no survivor took the dead node's dialogs over"
        await asyncio.sleep(2.0)  # media on the survivor

        gaps_wic, gaps_core = [], []
        for i in on_victim:
            g_wic, n_wic = gap(wics[i].times, killed)
            g_core, n_core = gap(core.calls[ids[i]]["times"], killed)
            assert n_wic > 20 and n_core > 20, (i, n_wic, n_core)  # 2 s at 50 packets/s, both ways
            gaps_wic.append(g_wic)
            gaps_core.append(g_core)
        for i in set(range(CALLS)) - set(on_victim):  # the other calls never stopped
            assert gap(core.calls[ids[i]]["times"], killed)[0] < 500
        after = {name: handshakes(pool.nodes[name]) for name in survivors}
        print(f"\nkilled node {victim} with {len(on_victim)} of {CALLS} calls; node {taken_by} held them "
              f"{took * 1000:.0f} ms after the kill (heartbeat 0.5 s, record TTL 1.5 s)")
        for label, gaps in (("toward the WIC", gaps_wic), ("toward the core", gaps_core)):
            print(f"media gap {label}, ms: min {min(gaps):.0f} p50 {statistics.median(gaps):.0f} "
                  f"max {max(gaps):.0f}")
        print(f"DTLS handshakes on the survivors during the takeover: {after} (before {before})")
        assert after == before  # no new DTLS handshake
        assert core.invites == invites  # no re-INVITE toward the core

        client = pool.edge.redis()
        try:
            assert client.smembers(NODES_KEY) == {n.encode() for n in survivors}  # until it comes back
            assert client.get(lock_key(victim)) is None and client.get(node_key(victim)) is None
            assert client.hget(MOVED_KEY, victim) is not None
            assert client.smembers(DRAINING_KEY) == {victim.encode()}  # the survivor drained it
            for dialog in dead_dialogs:  # rewritten: they name the survivor, on the dead node's addresses
                document = json.loads(client.get(dialog_key(dialog)))
                assert document["node"] == taken_by and document["home"]["access"] == victim_host
        finally:
            client.close()

        # The dead node back with the same id: it reloads none of the calls that moved and binds
        # none of their ports (the media goes on through the survivor).
        await asyncio.to_thread(pool.nodes[victim].start)
        assert pool.nodes[victim].metric("e2ae_mediad_restored_sessions_total") == 0
        assert await asyncio.to_thread(pool.held, victim) == []
        # ... and it is back draining, as the plugin reads its record: no new call there until undrained.
        assert await asyncio.to_thread(standing, pool, victim) is Standing.DRAINING
        back = time.monotonic()
        await asyncio.sleep(1.0)
        for i in on_victim:
            assert gap(wics[i].times, back)[1] > 25 and gap(core.calls[ids[i]]["times"], back)[1] > 25, i

        await asyncio.sleep(CACHE)
        for i, wic in enumerate(wics):  # every call ends with its BYE, the taken-over ones on the survivor
            assert (await wic.uac.bye()).status == 200, i
        deadline = time.monotonic() + 5
        held = {}
        while time.monotonic() < deadline:
            held = {n: await asyncio.to_thread(pool.held, n) for n in survivors}
            if not any(held.values()):
                break
            await asyncio.sleep(0.05)
        assert held == {n: [] for n in survivors}
        assert set(ids) <= core.byes
    finally:
        for wic in wics:
            await wic.close()
        core.close()
    assert await asyncio.to_thread(pool.edge.wait_no_dialogs, 10) == [], "state left in Redis"
    assert pool.nodes[taken_by].metric("e2ae_mediad_takeover_dialogs_total", result="taken") == len(on_victim)
