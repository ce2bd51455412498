"""A real Chromium call through the edge: BoringSSL's DTLS against mediad's OpenSSL.

Headless Chromium (``/usr/bin/chromium``, driven over CDP by
``tests/integration/chromium_peer.py``) takes the fake microphone, creates an
``RTCPeerConnection`` with the default configuration (no ICE servers, BUNDLE
policy "balanced") and offers; the offer, unmodified, is the body of an INVITE
that a small SIP UA (``deploy.demo_call.SipUac``) sends to the edge's access
socket.  A plain SIP/RTP endpoint on the core next hop (``CoreEndpoint``)
answers PCMU over RTP/AVPF and sends a 330 Hz tone; the edge's answer goes back
to the page with ``setRemoteDescription``.  The test then checks that
Chromium's ``connectionState`` is "connected" (ICE against mediad's ICE-lite and
the DTLS handshake done), that ``getStats()`` counts audio packets both ways
over the SRTP profile the handshake chose, that the core receives plain
(decrypted) PCMU RTP and RTCP from Chromium, and that after the BYE nothing is
left in Redis or mediad.  Both DTLS roles: ``[policy] actpass = active``
(the AGW is the DTLS client, ``a=setup:active`` in the answer) and ``passive``.

Loopback only: each test runs in its own network namespace whose only
interface is ``lo`` (``chromium_peer.private_loopback_netns``: the test thread
calls ``unshare(CLONE_NEWNET)``, sets ``lo`` up and turns IPv6 off there).
Redis, mediad, Kamailio, Chromium and the test's own SIP and RTP sockets are
all created inside it, so Chromium can gather no address but 127.0.0.1; the
test asserts that the namespace has only ``lo`` and that every candidate in
the offer sent to the edge, and both ends of the selected candidate pair, are
127.x.  Nothing is filtered out of Chromium's SDP.  unshare needs CAP_SYS_ADMIN
(root, as ``deploy/e2ae test`` runs); without it the fixture fails and says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import struct
import time
from dataclasses import dataclass, field

import pytest

from deploy.demo_call import PCMU, CoreEndpoint, SipUac
from tests.conftest import RedisServer
from tests.integration.chromium_peer import (
    CHROMIUM,
    ChromiumPeer,
    interfaces,
    private_loopback_netns,
)
from tests.integration.edge_harness import Edge, running_edge

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (Debian package chromium)"),
]

MEDIA_SECONDS = 2.0
BEEP_WAIT = 6.0
# 2 s of 20 ms packets is 100 each way; allow for start-up.
MIN_PACKETS = 50
RTCP_WAIT = 6.0
# Peak sample (16-bit) of a decoded 20 ms packet: under QUIET is Chromium's processed silence
# (seen: 8..72), over LOUD its fake device's beep (seen: 4600..31100).
QUIET, LOUD = 1000, 2000


@pytest.fixture(params=["active", "passive"])
def netns_edge(request):
    """Redis, mediad and Kamailio started inside a fresh loopback-only network namespace."""
    with private_loopback_netns():
        redis = RedisServer()
        try:
            redis.start()
            with running_edge(redis, actpass=request.param) as edge:
                yield edge
        finally:
            redis.stop()


@pytest.fixture
def chromium(netns_edge):
    """A ChromiumPeer (started by the test, inside the namespace); killed and removed in any case."""
    peer = ChromiumPeer()
    yield peer
    peer.stop()


@dataclass
class CoreRtp:
    """Every RTP packet the core endpoint received: payload type and payload length."""

    packets: list[tuple[int, int]] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)  # of each PCMU payload, decoded
    rtcp: list[bytes] = field(default_factory=list)

    def record(self, data: bytes) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        if 72 <= data[1] & 0x7F <= 76:  # RTCP (RFC 5761 4)
            self.rtcp.append(data)
            return
        offset = 12 + 4 * (data[0] & 0x0F)
        if data[0] & 0x10 and len(data) >= offset + 4:  # header extension
            offset += 4 + 4 * struct.unpack("!H", data[offset + 2:offset + 4])[0]
        padding = data[-1] if data[0] & 0x20 else 0
        payload = data[offset:len(data) - padding]
        self.packets.append((data[1] & 0x7F, len(payload)))
        if data[1] & 0x7F == PCMU:
            self.peaks.append(max((abs(_ulaw_decode(b)) for b in payload), default=0))


def _ulaw_decode(byte: int) -> int:
    """G.711 mu-law to a 16-bit linear sample."""
    byte = ~byte & 0xFF
    magnitude = ((((byte & 0x0F) << 3) + 0x84) << ((byte >> 4) & 0x07)) - 0x84
    return -magnitude if byte & 0x80 else magnitude


def _tap_core_rtp(core: CoreEndpoint) -> CoreRtp:
    """Record what reaches the core's RTP socket, then hand it to CoreEndpoint's own counting."""
    tap = CoreRtp()
    inner = core.rtp_transport.get_protocol()

    class Tap(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr) -> None:
            tap.record(data)
            inner.datagram_received(data, addr)

    core.rtp_transport.set_protocol(Tap())
    return tap


@dataclass
class ChromiumCall:
    offer: str = ""
    status: int = 0
    answer: str = ""
    core_offer: str = ""
    signaling_state: str = ""
    connection_state: str = ""
    stats: dict = field(default_factory=dict)
    bye_status: int = 0
    core_bye: bool = False
    core_rtp: CoreRtp = field(default_factory=CoreRtp)
    core_rtp_in_before_stats: int = 0
    core_rtp_out: int = 0
    timings: dict = field(default_factory=dict)


async def _call(edge: Edge, peer: ChromiumPeer) -> ChromiumCall:
    result = ChromiumCall()
    t0 = time.monotonic()
    core = CoreEndpoint(edge.next_hop, "127.0.0.3")
    uac = SipUac("127.0.0.1", edge.access)
    try:
        await core.open()
        result.core_rtp = _tap_core_rtp(core)
        await uac.open()
        await peer.start()
        result.timings["chromium_start"] = peer.started_in
        result.offer = await peer.evaluate("makeOffer()")
        result.timings["offer"] = time.monotonic() - t0
        reply = await uac.invite(result.offer)
        result.status = reply.status
        if reply.status != 200:
            return result
        result.answer = reply.body
        result.core_offer = core.offer.body if core.offer else ""
        # A rejected answer raises CdpError carrying Chromium's setRemoteDescription error text.
        result.signaling_state = await peer.evaluate(f"acceptAnswer({json.dumps(reply.body)})")
        result.connection_state = await peer.evaluate("waitConnection(10000)")
        result.timings["connected"] = time.monotonic() - t0
        if result.connection_state == "connected":
            await asyncio.sleep(MEDIA_SECONDS)
            # Chromium's fake device can start late under load: wait (bounded) for its beeps.
            deadline = time.monotonic() + BEEP_WAIT
            while sum(1 for peak in result.core_rtp.peaks if peak > LOUD) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            # Chromium's first RTCP report for audio can take a few seconds.
            deadline = time.monotonic() + RTCP_WAIT
            while not result.core_rtp.rtcp and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        result.core_rtp_in_before_stats = len(result.core_rtp.packets)
        result.stats = await peer.evaluate("rtpStats()")
        result.core_rtp_out = core.rtp_out
        await peer.evaluate("hangUp()")
        bye = await uac.bye()
        result.bye_status = bye.status
        try:
            await asyncio.wait_for(core.bye_received.wait(), 5)
            result.core_bye = True
        except TimeoutError:
            pass
        result.timings["total"] = time.monotonic() - t0
        return result
    finally:
        await peer.close()
        uac.close()
        core.close()


def _rtcp_compound_length(datagram: bytes) -> int:
    """The length the RTCP packets in ``datagram`` declare, added up (RFC 3550 6.4)."""
    offset = 0
    while offset + 4 <= len(datagram) and datagram[offset] >> 6 == 2:
        offset += 4 * (struct.unpack("!H", datagram[offset + 2:offset + 4])[0] + 1)
    return offset


def _candidates(sdp: str) -> list[list[str]]:
    return [line.split() for line in sdp.splitlines() if line.startswith("a=candidate:")]


@pytest.mark.req("SRTP-1", "SRTP-4", "SRTP-5", "SRTP-8", "ICE-1", "MUX-1")
@pytest.mark.timeout(60)
def test_chromium_call_dtls_srtp_audio_both_ways(netns_edge, chromium):
    edge = netns_edge
    assert interfaces() == ["lo"]
    call = asyncio.run(asyncio.wait_for(_call(edge, chromium), 45))
    print(f"timings (s): {call.timings}; transport: {call.stats.get('transport')}")

    # What Chromium offered: BUNDLE, actpass, and only loopback candidates.
    assert "a=group:BUNDLE" in call.offer and "a=setup:actpass" in call.offer
    candidates = _candidates(call.offer)
    assert candidates, call.offer
    assert all(c[4].startswith("127.") for c in candidates), candidates
    assert call.status == 200, (call.status, edge.kamailio_log_text()[-3000:])

    # SRTP-4/SRTP-1: the core sees plain RTP/AVPF without DTLS or ICE attributes.
    assert re.search(r"^m=audio \d+ RTP/AVPF ", call.core_offer, re.MULTILINE), call.core_offer
    assert "a=fingerprint" not in call.core_offer and "a=setup" not in call.core_offer
    assert "a=candidate" not in call.core_offer and "a=ice-" not in call.core_offer
    # SRTP-5/ICE-1/MUX-1: the answer to Chromium accepts its BUNDLE group ([policy] bundle = on,
    # the default; RFC 9143 7.3): the one m-line is the answerer-tagged one.
    answer = call.answer
    assert re.search(r"^m=audio \d+ UDP/TLS/RTP/SAVPF 0\r?$", answer, re.MULTILINE), answer
    expected_setup = "active" if edge.conf.actpass == "active" else "passive"
    assert f"a=setup:{expected_setup}" in answer, answer
    fingerprint = re.search(r"^a=fingerprint:sha-256 (\S+)\r?$", answer, re.MULTILINE)
    assert fingerprint, answer
    assert re.search(r"^a=tls-id:\S+", answer, re.MULTILINE), answer
    assert "a=ice-lite" in answer and "a=rtcp-mux" in answer, answer
    assert re.search(r"^a=group:BUNDLE 0\r?$", answer, re.MULTILINE), answer
    assert all(c[4].startswith("127.") for c in _candidates(answer)), answer
    assert call.signaling_state == "stable"

    # Chromium's view: ICE + DTLS done with mediad, audio both ways over SRTP.
    stats = call.stats
    assert call.connection_state == "connected", (call.connection_state, stats)
    transport = stats["transport"]
    assert transport["dtlsState"] == "connected", transport
    # A protection profile mediad implements (RFC 5764 4.1.2, RFC 7714 14.2), as Chromium names it.
    assert transport["srtpCipher"] in ("SRTP_AES128_CM_HMAC_SHA1_80", "SRTP_AES128_CM_HMAC_SHA1_32",
                                       "SRTP_AEAD_AES_128_GCM"), transport
    # The AGW as DTLS client (a=setup:active) makes Chromium the server, and the other way round.
    assert transport["dtlsRole"] == ("server" if expected_setup == "active" else "client"), transport
    # BoringSSL got mediad's certificate, the one the answer's fingerprint names.
    certificate = stats["remoteCertificate"]
    assert certificate["fingerprintAlgorithm"] == "sha-256", certificate
    assert certificate["fingerprint"].upper() == fingerprint.group(1).upper(), (certificate, fingerprint.group(1))
    assert stats["local"]["address"].startswith("127.") and stats["remote"]["address"].startswith("127."), stats
    outbound, inbound = stats["outbound"], stats["inbound"]
    assert outbound["packetsSent"] >= MIN_PACKETS, outbound
    assert inbound["packetsReceived"] >= MIN_PACKETS, inbound
    assert stats["codecs"][outbound["codecId"]]["mimeType"] == "audio/PCMU", stats["codecs"]
    assert stats["codecs"][inbound["codecId"]]["mimeType"] == "audio/PCMU", stats["codecs"]
    assert inbound["packetsReceived"] <= call.core_rtp_out
    # The core's tone (amplitude 8000 of 32767), decoded and played: audioLevel near 0.24.
    assert inbound.get("totalAudioEnergy", 0) > 0 and inbound.get("audioLevel", 0) > 0.1, inbound

    # SRTP-8: the core receives Chromium's audio as plain RTP, decrypted by mediad: PCMU with
    # 160-byte payloads (SRTP would add a 10- or 16-byte authentication tag) that decode to what
    # the fake microphone sends: near-silence (no encrypted payload decodes to 160 quiet samples)
    # broken every 0.5 s by a loud beep.
    received = call.core_rtp.packets
    assert len(received) >= MIN_PACKETS, received[:5]
    assert {pt for pt, _ in received} == {PCMU}, received[:5]
    assert sum(1 for _, size in received if size == 160) >= len(received) - 2, received[:10]
    peaks = call.core_rtp.peaks
    assert sum(1 for peak in peaks if peak < QUIET) >= len(peaks) // 2, peaks
    assert sum(1 for peak in peaks if peak > LOUD) >= 3, peaks
    # ... and its RTCP as plain compound RTCP: the packets' lengths add up to the datagram, with
    # no SRTCP index or authentication tag after them.
    assert call.core_rtp.rtcp, "no RTCP reached the core"
    for datagram in call.core_rtp.rtcp:
        assert _rtcp_compound_length(datagram) == len(datagram), datagram.hex()
    assert call.core_rtp_in_before_stats <= outbound["packetsSent"]

    assert call.bye_status == 200 and call.core_bye
    assert edge.wait_no_dialogs() == []
    assert edge.mediad_dialogs() == []
