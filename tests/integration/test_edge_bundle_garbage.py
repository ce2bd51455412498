"""Hostile datagrams on the access port of a live bundled call, before and after a mediad restart.

aiortc offers audio and video bundled (one ICE agent, one DTLS-SRTP transport, the
MID header extension, RFC 9143) through Kamailio and mediad (``[policy] bundle``
as shipped: on); the core (``ReflectingCore``) answers opus and VP8 on one port per
m-line and sends each RTP packet back under another SSRC.  While media flows, a
socket that is not the WIC's sends the transport's port a bounded, seeded mix of
what RFC 7983 demultiplexing sorts: random bytes; RTP truncated inside its header;
RTP with the call's SSRCs, with and without the MID extension naming the call's
MIDs, under no valid SRTP tag; RTCP with length fields past the datagram or
short of a header; STUN checks with the transport's username and a wrong key, or
a wrong username; DTLS records after the handshake (a ClientHello, a fatal alert
in the clear, records of epoch 1 that decrypt to nothing).

Checked, with the edge as DTLS client and as DTLS server (``[policy] actpass``), for
the established call and again for the same call restored by a restarted mediad
from Redis (stored keys and rollover counters, no handshake):
media keeps flowing both ways (aiortc's inbound RTP per kind, each core port's
packets), the datagrams are counted as drops by reason, nothing is counted as an
``unexpected`` drop (an exception in the packet path), and mediad's log has no
traceback.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import random
import re
import signal
import socket
import struct
import time
import zlib

import pytest

from deploy.demo_call import SipUac, loopback_only
from tests.integration.edge_harness import Edge, running_edge, stop_process
from tests.integration.test_edge_chromium_bundle import ReflectingCore, mediad_metrics
from tests.integration.test_mediad_bundle import for_aiortc

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

GARBAGE_PER_ROUND = 1200  # datagrams per round, about 400 a second
STUN_COOKIE = 0x2112A442
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"


class Target:
    """What a stranger learns of the call from its SDP: the port, the SSRCs, the MIDs, the ufrags."""

    def __init__(self, offer: str, answer: str) -> None:
        self.port = int(re.search(r"^m=audio (\d+)", answer, re.M).group(1))
        self.host = re.findall(r"^c=IN IP4 (\S+)", answer, re.M)[-1]
        self.ssrcs = sorted({int(s) for s in re.findall(r"^a=ssrc:(\d+) ", offer, re.M)})
        self.mids = re.findall(r"^a=mid:(\S+)", offer, re.M)
        extension = re.search(rf"^a=extmap:(\d+) {re.escape(MID_URI)}", offer, re.M)
        self.mid_extension = int(extension.group(1)) if extension else 1
        self.local_ufrag = re.search(r"^a=ice-ufrag:(\S+)", answer, re.M).group(1)
        self.remote_ufrag = re.search(r"^a=ice-ufrag:(\S+)", offer, re.M).group(1)


def _stun_check(rng: random.Random, username: str, key: bytes) -> bytes:
    """A Binding request (RFC 5389 section 15.4: MESSAGE-INTEGRITY, then FINGERPRINT) under ``key``."""
    name = username.encode()
    attrs = struct.pack("!HH", 0x0006, len(name)) + name + bytes(-len(name) % 4)
    attrs += struct.pack("!HHI", 0x0024, 4, 1853824767)  # PRIORITY
    attrs += struct.pack("!HHQ", 0x802A, 8, rng.getrandbits(64))  # ICE-CONTROLLING
    tid = rng.randbytes(12)
    head = struct.pack("!HHI", 0x0001, len(attrs) + 24, STUN_COOKIE) + tid
    mac = hmac.new(key, head + attrs, hashlib.sha1).digest()
    attrs += struct.pack("!HH", 0x0008, 20) + mac
    head = struct.pack("!HHI", 0x0001, len(attrs) + 8, STUN_COOKIE) + tid
    crc = (zlib.crc32(head + attrs) ^ 0x5354554E) & 0xFFFFFFFF
    return head + attrs + struct.pack("!HHI", 0x8028, 4, crc)


def _rtp(rng: random.Random, target: Target, extension: bool) -> bytes:
    ssrc = rng.choice(target.ssrcs or [rng.getrandbits(32)])
    block = b""
    if extension:
        mid = rng.choice(target.mids or ["0"]).encode()
        body = bytes([target.mid_extension << 4 | len(mid) - 1]) + mid
        body += bytes(-len(body) % 4)
        block = struct.pack("!HH", 0xBEDE, len(body) // 4) + body
    first = 0x80 | (0x10 if extension else 0)
    head = struct.pack("!BBHII", first, rng.choice([0, 96, 97, 111, rng.randrange(128)]), rng.getrandbits(16),
                       rng.getrandbits(32), ssrc)
    return head + block + rng.randbytes(rng.randrange(0, 400)) + rng.randbytes(10)  # a tag that is no tag


def garbage(rng: random.Random, target: Target) -> list[tuple[str, bytes]]:
    """One round of hostile datagrams, each with its kind (the drop reason it should be counted under)."""
    out: list[tuple[str, bytes]] = []
    username = f"{target.local_ufrag}:{target.remote_ufrag}"
    for n in range(GARBAGE_PER_ROUND):
        kind = n % 8
        if kind == 0:
            first = rng.choice([rng.randrange(0, 4), rng.randrange(64, 128), rng.randrange(192, 256)])
            out.append(("random", bytes([first]) + rng.randbytes(rng.randrange(0, 300))))
        elif kind == 1:
            out.append(("truncated", _rtp(rng, target, rng.random() < 0.5)[:rng.randrange(1, 12)]))
        elif kind in (2, 3):
            out.append(("srtp", _rtp(rng, target, kind == 3)))
        elif kind == 4:
            pt = rng.randrange(200, 207)
            length = rng.choice([0xFFFF, rng.randrange(0, 64)])
            body = struct.pack("!BBHI", 0x80 | rng.randrange(32), pt, length, rng.choice(target.ssrcs or [1]))
            out.append(("srtcp", body[:rng.choice([4, 6, 8])] if rng.random() < 0.3 else
                        body + rng.randbytes(rng.randrange(0, 80))))
        elif kind == 5:
            name = username if rng.random() < 0.7 else f"{target.local_ufrag}:intruder"
            out.append(("stun", _stun_check(rng, name, rng.randbytes(22))))
        elif kind == 6:
            out.append(("stun", _stun_check(rng, username, b"x" * 22)[:rng.randrange(20, 60)]))
        else:
            content, epoch = rng.choice([(22, 0), (21, 0), (23, 1), (22, 1), (20, 0)])
            body = {21: b"\x02\x28", 22: bytes([1]) + rng.randbytes(60)}.get(content, rng.randbytes(48)) \
                if epoch == 0 else rng.randbytes(rng.randrange(16, 120))
            record = struct.pack("!BHH", content, 0xFEFD, epoch) + rng.getrandbits(48).to_bytes(6, "big") \
                + struct.pack("!H", len(body)) + body
            out.append(("dtls", record))
    return out


class Call:
    """aiortc, bundled audio and video, through the edge to the reflecting core."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.core = ReflectingCore(edge.next_hop, "127.0.0.3")
        self.uac = SipUac("127.0.0.1", edge.access)

    async def start(self) -> Target:
        from aiortc import RTCPeerConnection, RTCSessionDescription
        from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

        loopback_only()
        await self.core.open()
        await self.uac.open()
        self.pc = RTCPeerConnection()
        self.pc.addTrack(AudioStreamTrack())
        self.pc.addTrack(VideoStreamTrack())
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription.sdp
        assert "a=group:BUNDLE 0 1" in offer
        reply = await self.uac.invite(offer)
        assert reply.status == 200, reply.status
        assert reply.body.count("a=ice-ufrag:") == 1, "the edge's answer is not bundled"
        await self.pc.setRemoteDescription(RTCSessionDescription(for_aiortc(reply.body), "answer"))
        deadline = time.monotonic() + 10
        while self.pc.connectionState not in ("connected", "failed") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert self.pc.connectionState == "connected"
        return Target(offer, reply.body)

    async def counts(self) -> tuple[int, int, int, int]:
        """(aiortc's inbound audio, video; the core's audio, video) packets so far."""
        inbound = {"audio": 0, "video": 0}
        for stats in (await self.pc.getStats()).values():
            if stats.type == "inbound-rtp":
                inbound[stats.kind] += stats.packetsReceived
        audio, video = (sum(r.payload_types.values()) for r in self.core.reflectors)
        return inbound["audio"], inbound["video"], audio, video

    async def flows(self, seconds: float = 6.0, minimum: int = 10) -> tuple[int, ...]:
        """How many packets each of the four directions gained (waiting up to ``seconds`` for ``minimum``)."""
        before = await self.counts()
        deadline = time.monotonic() + seconds
        gained = (0, 0, 0, 0)
        while min(gained) < minimum and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            gained = tuple(a - b for a, b in zip(await self.counts(), before))
        return gained

    async def close(self) -> None:
        try:
            await self.uac.bye()
        finally:
            await self.pc.close()
            self.uac.close()
            self.core.close()


def drops(edge: Edge) -> dict[str, float]:
    out = {}
    for (name, labels), value in mediad_metrics(edge).items():
        if name == "e2ae_mediad_drops_total":
            out[dict(labels)["reason"]] = value
    return out


async def attack(target: Target, rng: random.Random) -> dict[str, int]:
    """Send one round from a stranger's socket, spread over about three seconds; the kinds sent."""
    sent: dict[str, int] = {}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        for n, (kind, datagram) in enumerate(garbage(rng, target)):
            sock.sendto(datagram, (target.host, target.port))
            sent[kind] = sent.get(kind, 0) + 1
            if n % 40 == 39:
                await asyncio.sleep(0.1)
    finally:
        sock.close()
    return sent


def restart_mediad(edge: Edge) -> None:
    """mediad killed (no clean stop: its dialogs stay in Redis) and started again."""
    stop_process(edge.mediad, signal.SIGKILL)
    edge.mediad = None
    edge.start_mediad()


@pytest.fixture(params=["active", "passive"])
def edge(request, redis_server):
    """The edge as DTLS client of the WIC's actpass offer, then as its server (``[policy] actpass``)."""
    with running_edge(redis_server, actpass=request.param) as e:
        yield e


@pytest.mark.timeout(120)
def test_garbage_on_a_bundled_transport_is_dropped_and_counted_and_the_call_goes_on(edge):
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)

    async def round_(call: Call, target: Target, when: str) -> None:
        before = drops(edge)
        sent = await attack(target, rng)
        gained = await call.flows()
        assert min(gained) >= 10, f"{when}, seed {seed}: media stopped (in audio, in video, core audio, core video)" \
                                  f" {gained}"
        after = drops(edge)
        delta = {reason: after.get(reason, 0) - before.get(reason, 0) for reason in after}
        assert delta.get("unexpected", 0) == 0, f"{when}, seed {seed}: an exception in the packet path {delta}"
        # Forged SRTP/SRTCP fails authentication (or is too short for a tag); random and cut datagrams are
        # of no kind or malformed; STUN under a wrong key or username is rejected, cut STUN is malformed.
        srtp_drops = delta.get("auth_fail", 0) + delta.get("bad_packet", 0) + delta.get("replay", 0)
        assert srtp_drops >= sent["srtp"] + sent["srtcp"] * 0.5, f"{when}, seed {seed}: {delta} for {sent}"
        assert delta.get("stun_rejected", 0) + delta.get("malformed", 0) >= sent["stun"], \
            f"{when}, seed {seed}: {delta} for {sent}"
        assert sum(delta.values()) >= sent["random"] + sent["truncated"] + sent["srtp"] + sent["stun"], \
            f"{when}, seed {seed}: {delta} for {sent}"

    async def scenario() -> None:
        call = Call(edge)
        target = await call.start()
        try:
            assert min(await call.flows()) >= 10, "no media before the garbage"
            await round_(call, target, "established")
            await asyncio.sleep(0.5)  # the document with the ROCs written behind
            await asyncio.to_thread(restart_mediad, edge)  # restored from Redis: stored keys, no handshake
            restored = mediad_metrics(edge)[("e2ae_mediad_restored_sessions_total", ())]
            assert restored == 1, restored
            assert min(await call.flows(seconds=10)) >= 10, "no media after the restart"
            await round_(call, target, "restored")
        finally:
            await call.close()

    asyncio.run(scenario())
    log = edge.mediad_log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
