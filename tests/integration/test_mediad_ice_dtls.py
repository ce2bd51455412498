"""As ICE-lite DTLS client, mediad starts the handshake only toward a checked, consented address.

aiortc is the WebRTC client (its ICE transport hands its DTLS transport whatever
arrives on its port, from any address, as browsers' may before a pair is
selected).  Two scenarios against a real mediad:

* after the RESERVE that tells mediad to establish DTLS as client, nothing is
  sent toward the client's SDP address until its first valid STUN check;
* the INVITE retried after a 407 with the same offer: the first reservation is
  released, a second one made for the same dialog.  A ClientHello sent by the
  first reservation before any check waits in the client's DTLS transport; the
  client answers it on the second association, whose ClientHello had another
  random, and mediad's check of the ServerKeyExchange signature fails ("bad
  signature") every time.  Without early ClientHellos there is nothing stale.
"""

from __future__ import annotations

import asyncio

import aioice.ice
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from iq import Command, Role, Side, StreamSpec, TerminationSpec
from tests.integration.test_mediad_webrtc import CORE_PEER, answer_sdp, core_endpoint, parse_offer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def loopback_candidates(monkeypatch):
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def dtls_sent(mediad) -> float:
    return mediad.metric("e2ae_mediad_packets_total", side="access", direction="out", kind="dtls")


async def reserve(mediad, dialog: str, offer: dict, core_port: int):
    access = TerminationSpec(
        Side.ACCESS, "UDP/TLS/RTP/SAVPF", remote_address=offer["address"], remote_port=offer["port"],
        rtcp_mux=True, remote_fingerprints=offer["fingerprints"], local_fingerprint_request=True,
        tls_role=Role.CLIENT, establish_tls=True, notify_tls_failure=True, ice_lite=True,
        remote_ice_ufrag=offer["ufrag"], remote_ice_pwd=offer["pwd"])
    core = TerminationSpec(Side.CORE, "RTP/AVP", remote_address=CORE_PEER, remote_port=core_port, rtcp_mux=True)
    reply = await mediad.aclient().request(mediad.iq(Command.RESERVE, dialog, [StreamSpec(0, "srtp", access, core)]))
    assert reply.error is None, reply
    return reply.stream(0).access


async def connected(pc: RTCPeerConnection, timeout: float = 8.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while pc.connectionState not in ("connected", "failed") and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    return pc.connectionState


def test_no_client_hello_before_a_valid_ice_check(mediad):
    async def scenario() -> None:
        pc = RTCPeerConnection()
        pc.addTrack(AudioStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        offer = parse_offer(pc.localDescription.sdp)
        core_t, _ = await core_endpoint()
        try:
            access = await reserve(mediad, "early", offer, core_t.get_extra_info("sockname")[1])
            await asyncio.sleep(1.5)  # past the deferred start and a DTLS retransmission timer
            assert dtls_sent(mediad) == 0  # nothing toward the unchecked SDP address
            await pc.setRemoteDescription(RTCSessionDescription(answer_sdp(access, "active", offer["mid"]), "answer"))
            assert await connected(pc) == "connected"
            assert dtls_sent(mediad) > 0
            assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role="client", result="ok") == 1
        finally:
            await pc.close()
            core_t.close()
            await mediad.aclient().request(mediad.iq(Command.RELEASE, "early"))

    asyncio.run(scenario())


def test_an_offer_retried_after_a_407_connects(mediad):
    async def scenario() -> None:
        pc = RTCPeerConnection()
        pc.addTrack(AudioStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        offer = parse_offer(pc.localDescription.sdp)
        core_t, _ = await core_endpoint()
        core_port = core_t.get_extra_info("sockname")[1]
        try:
            await reserve(mediad, "retried", offer, core_port)  # the first INVITE ...
            await asyncio.sleep(0.5)
            release = await mediad.aclient().request(mediad.iq(Command.RELEASE, "retried"))  # ... its 407
            assert release.error is None
            access = await reserve(mediad, "retried", offer, core_port)  # the same offer again, then its 200
            await pc.setRemoteDescription(RTCSessionDescription(answer_sdp(access, "active", offer["mid"]), "answer"))
            assert await connected(pc) == "connected"
            assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role="client", result="protocol_error") == 0
        finally:
            await pc.close()
            core_t.close()
            await mediad.aclient().request(mediad.iq(Command.RELEASE, "retried"))

    asyncio.run(scenario())
