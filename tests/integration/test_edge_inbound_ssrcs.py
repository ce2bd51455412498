"""A WIC that holds its SRTP keys sends under ever-new SSRCs: capped, counted, the call goes on.

aiortc offers audio and video through Kamailio and mediad, bundled (one DTLS-SRTP
transport, RFC 9143) or not (``[policy] bundle = off``: one transport per m-line),
on the native packet path; the core (``ReflectingCore``) reflects the RTP.  Once media
flows, the WIC's own DTLS transport (aiortc's libsrtp session, keyed by the real
handshake) protects and sends RTP and SRTCP sender reports under thousands of new
SSRCs: authenticated packets, as only a holder of the keys can make them.

Checked: ``[mediad] max_ssrcs`` (here 8) bounds the inbound SSRCs of each SRTP session:
the packets of the SSRCs past it are dropped and counted (``inbound_ssrc_cap``) without
libsrtp making a stream for them, so mediad's resident memory stays within 1 MiB of
what it was (unbounded, each new SSRC costs libsrtp a stream and the demultiplexer an
entry: several MiB for these packets); the call's own media still flows both ways; no
``unexpected`` drop and no traceback.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
import time

import pytest

from deploy.demo_call import loopback_only
from tests.integration.edge_harness import Edge
from tests.integration.test_mediad_bundle import for_aiortc
from tests.integration.test_edge_bundle_garbage import Call, drops

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

MAX_SSRCS = 8
NEW_SSRCS = 3000  # RTP under this many new SSRCs per transport, and SRTCP under a third as many


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def rtp(ssrc: int, seq: int, pt: int) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, seq * 960, ssrc) + bytes(160)


def sender_report(ssrc: int) -> bytes:
    return struct.pack("!BBHI", 0x80, 200, 6, ssrc) + bytes(20)


class AnyCall(Call):
    """:class:`Call`, taking an answer that is not bundled too (``[policy] bundle = off``)."""

    async def start(self) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription
        from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

        loopback_only()
        await self.core.open()
        await self.uac.open()
        self.pc = RTCPeerConnection()
        self.pc.addTrack(AudioStreamTrack())
        self.pc.addTrack(VideoStreamTrack())
        await self.pc.setLocalDescription(await self.pc.createOffer())
        reply = await self.uac.invite(self.pc.localDescription.sdp)
        assert reply.status == 200, reply.status
        await self.pc.setRemoteDescription(RTCSessionDescription(for_aiortc(reply.body), "answer"))
        deadline = time.monotonic() + 10
        while self.pc.connectionState not in ("connected", "failed") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert self.pc.connectionState == "connected"


class Flows:
    """Packets each direction of the call's own streams gained: aiortc's inbound RTP of the SSRCs it had
    before the flood (its stats name one stream per receiver, the last heard: a reflected flood SSRC),
    the core's packets per m-line."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.ssrcs = {kind: set(streams) for kind, streams in self._streams().items()}

    def _streams(self) -> dict[str, dict]:
        return {t.receiver.track.kind: t.receiver._RTCRtpReceiver__remote_streams
                for t in self.call.pc.getTransceivers()}

    def counts(self) -> tuple[int, ...]:
        inbound = [sum(s.packets_received for ssrc, s in streams.items() if ssrc in self.ssrcs[kind])
                   for kind, streams in sorted(self._streams().items())]
        return (*inbound, *(sum(r.payload_types.values()) for r in self.call.core.reflectors))

    async def gained(self, seconds: float = 6.0, minimum: int = 10) -> tuple[int, ...]:
        before = self.counts()
        deadline = asyncio.get_running_loop().time() + seconds
        gained = (0,) * len(before)
        while min(gained) < minimum and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
            gained = tuple(a - b for a, b in zip(self.counts(), before))
        return gained


async def flood(call: Call, rng: random.Random) -> int:
    """Authenticated RTP and SRTCP under new SSRCs on each of the WIC's DTLS transports; packets sent."""
    transports = []
    for transceiver in call.pc.getTransceivers():
        dtls = transceiver.sender.transport
        if dtls not in transports:
            transports.append(dtls)
    sent = 0
    for dtls in transports:
        for n in range(NEW_SSRCS):
            ssrc = rng.getrandbits(32)
            await dtls._send_rtp(rtp(ssrc, n, rng.choice([96, 97, 111])))
            sent += 1
            if n % 3 == 0:
                await dtls._send_rtp(sender_report(rng.getrandbits(32)))
                sent += 1
            if n % 50 == 49:
                await asyncio.sleep(0.02)  # (bounded rate: the kernel's buffers are not the test)
    return sent


@pytest.fixture(params=["bundle", "no_bundle"])
def edge(request, redis_server):
    e = Edge(redis_server, mediad_extra=f"max_ssrcs = {MAX_SSRCS}\npacket_path = native",
             policy_extra="bundle = off" if request.param == "no_bundle" else "")
    try:
        e.start()
        yield e
    finally:
        e.stop()


@pytest.mark.timeout(120)
def test_new_inbound_ssrcs_past_the_cap_are_dropped_and_memory_stays_bounded(edge):
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)

    async def scenario() -> None:
        call = AnyCall(edge)
        await call.start()
        try:
            assert min(await call.flows()) >= 10, "no media before the flood"
            flows = Flows(call)
            assert all(flows.ssrcs.values()), flows.ssrcs
            transports = len({t.sender.transport for t in call.pc.getTransceivers()})
            assert transports == (1 if edge.conf.policy_extra != "bundle = off" else 2)
            before, rss_before = drops(edge), rss_kib(edge.mediad.pid)
            sent = await flood(call, rng)
            gained = await flows.gained()
            after, rss_after = drops(edge), rss_kib(edge.mediad.pid)
            delta = {reason: after.get(reason, 0) - before.get(reason, 0) for reason in after}
            assert min(gained) >= 10, f"seed {seed}: media stopped (in audio, in video, core 1, core 2) " \
                                      f"{gained}"
            assert rss_after - rss_before < 1024, f"seed {seed}: mediad grew {rss_after - rss_before} KiB"
            # At most MAX_SSRCS per session, some taken by the call's own SSRCs: the rest is refused.
            assert delta.get("inbound_ssrc_cap", 0) >= sent - MAX_SSRCS * transports, \
                f"seed {seed}: {delta} for {sent} packets"
            assert delta.get("unexpected", 0) == 0, f"seed {seed}: {delta}"
        finally:
            await call.close()

    asyncio.run(scenario())
    log = edge.mediad_log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
