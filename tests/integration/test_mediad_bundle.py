"""A BUNDLE transport through mediad with aiortc as the WebRTC client (RFC 9143, RFC 8843).

aiortc offers audio and video bundled (``a=group:BUNDLE 0 1``, one ICE agent
and one DTLS-SRTP transport, the MID header extension); the SDP rules with
``[policy] bundle = on`` turn the offer into the Iq reserve (one transport, two
streams on it), mediad answers, the rules write the core offer; a core on
127.0.0.3 answers PCMU and VP8 on two ports (the core does not bundle) and
reflects what it receives, each packet under another SSRC; the rules turn the
core's answer into the Iq modify and the access answer, which aiortc applies.

What is checked: one access port and one DTLS handshake for the call; each
core port receives only its m-line's payload types (mediad demultiplexed the
transport); aiortc receives audio and video back (its inbound RTP statistics)
through the transport's one port; the events name the transport and its
streams; a mediad restart mid-call keeps media flowing on the same port with
the stored keys; re-offers: an ICE restart and a new DTLS association on the
kept transport, a stream released while the transport stays; and after the
release nothing is left in mediad or Redis.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time

import aioice.ice
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from iq import Command, IqRequest, Role, Side, StreamSpec, TerminationSpec, TransportSpec
from sdp_rules import BundlePolicy, DialogState, Kind, Policy, Side, process
from sdp_rules.sdp import parse
from tests.integration.test_mediad_webrtc import events

CORE_PEER = "127.0.0.3"
PCMU, VP8 = 0, 97
pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(autouse=True)
def loopback_candidates(monkeypatch):
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


class Reflector(asyncio.DatagramProtocol):
    """One core m-line's port: records what arrives, sends RTP back under another SSRC.

    What it sends back is plain RTP, as an IMS core's: the header extension aiortc put in is
    taken out (mediad's native path leaves a core packet that carries one to Python).
    """

    def __init__(self) -> None:
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) < 12:
            return
        if 192 <= data[1] <= 223:
            self.rtcp.append(data)
            return
        self.rtp.append(data)
        ssrc = struct.unpack_from("!I", data, 8)[0] ^ 0x5A5A5A5A
        head = 12 + 4 * (data[0] & 0x0F)
        if data[0] & 0x10 and len(data) >= head + 4:  # RFC 3550 5.3.1: the extension follows the CSRCs
            end = head + 4 + 4 * struct.unpack_from("!H", data, head + 2)[0]
            data = bytes([data[0] & ~0x10]) + data[1:head] + data[end:]
        self.transport.sendto(data[:8] + struct.pack("!I", ssrc) + data[12:], addr)

    @property
    def port(self) -> int:
        return self.transport.get_extra_info("sockname")[1]


def core_answer(offer: str, ports: list[int]) -> str:
    """The core's plain answer to the forwarded offer: PCMU for audio, VP8 for video, one port each."""
    lines = ["v=0", "o=core 1 1 IN IP4 127.0.0.3", "s=-", f"c=IN IP4 {CORE_PEER}", "t=0 0"]
    for m, port in zip(parse(offer).media, ports):
        pt, codec = (PCMU, "PCMU/8000") if m.media == "audio" else (VP8, "VP8/90000")
        lines += [f"m={m.media} {port} {m.proto} {pt}", f"a=rtpmap:{pt} {codec}", "a=sendrecv", "a=rtcp-mux"]
    return "\r\n".join(lines) + "\r\n"


TRANSPORT_ATTRIBUTES = ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:", "a=setup:", "a=candidate:",
                        "a=end-of-candidates")


def for_aiortc(answer: str) -> str:
    """The edge's bundled answer with the tagged m-section's transport attributes in every bundled one.

    RFC 8843 section 7.3.1 (and RFC 8859) put them in the tagged m-section only, as
    the edge does; aiortc 1.16 wants ICE credentials in each m-section it applies.
    """
    sections = answer.split("\r\nm=")
    tagged = [line for line in sections[1].split("\r\n") if line.startswith(TRANSPORT_ATTRIBUTES)]
    out = sections[:2]
    for section in sections[2:]:
        lines = section.rstrip("\r\n").split("\r\n")
        if lines[0].split()[1] != "0" and not any(line.startswith("a=ice-ufrag:") for line in lines):
            lines += tagged
        out.append("\r\n".join(lines) + "\r\n")
    return "\r\nm=".join(out)


class BundleCall:
    """aiortc (audio + video, bundled) through the rules and mediad to two reflecting core ports."""

    def __init__(self, mediad, dialog: str) -> None:
        self.mediad = mediad
        self.dialog = dialog
        self.policy = Policy(bundle=BundlePolicy.ON)
        self.state = DialogState()
        self.count = 0

    async def step(self, sdp: str, origin: Side, kind: Kind) -> str:
        self.count += 1
        plan = process(sdp, origin=origin, kind=kind, state=self.state, dialog=self.dialog,
                       transaction=str(self.count), policy=self.policy)
        self.requests.append(plan.iq)
        reply = await self.mediad.aclient().request(plan.iq) if plan.iq is not None else None
        assert reply is None or reply.error is None, reply
        self.replies.append(reply)
        result = plan.finish(reply)
        self.state = result.state
        return result.sdp

    async def open(self) -> None:
        self.requests: list[IqRequest] = []
        self.replies = []
        loop = asyncio.get_running_loop()
        self.core = []
        for _ in range(2):
            _, reflector = await loop.create_datagram_endpoint(Reflector, local_addr=(CORE_PEER, 0))
            self.core.append(reflector)
        self.pc = RTCPeerConnection()
        self.pc.addTrack(AudioStreamTrack())
        self.pc.addTrack(VideoStreamTrack())
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.offer = self.pc.localDescription.sdp
        forwarded = await self.step(self.offer, Side.ACCESS, Kind.OFFER)
        self.answer = await self.step(core_answer(forwarded, [r.port for r in self.core]), Side.CORE, Kind.ANSWER)
        await self.pc.setRemoteDescription(RTCSessionDescription(for_aiortc(self.answer), "answer"))

    async def reoffer(self, *, ice_restart: bool = False) -> str:
        """A new offer from aiortc (optionally restarting ICE), through the rules and mediad."""
        if ice_restart:
            for transceiver in self.pc.getTransceivers():
                transceiver.receiver.transport.transport._connection.local_username = "rst" + str(time.time_ns())[-5:]
        await self.pc.setLocalDescription(await self.pc.createOffer())
        forwarded = await self.step(self.pc.localDescription.sdp, Side.ACCESS, Kind.OFFER)
        return forwarded

    async def wait_connected(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while self.pc.connectionState not in ("connected", "failed") and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.pc.connectionState

    async def inbound(self) -> dict[str, int]:
        """aiortc's inbound RTP packets by kind (what came back through the transport)."""
        report = await self.pc.getStats()
        out = {"audio": 0, "video": 0}
        for stats in report.values():
            if stats.type == "inbound-rtp":
                out[stats.kind] += stats.packetsReceived
        return out

    async def wait_media(self, minimum: int, timeout: float = 8.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        counts = await self.inbound()
        while min(counts.values()) < minimum and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            counts = await self.inbound()
        return counts

    async def close(self, release: bool = True) -> None:
        if release:
            await self.mediad.aclient().request(self.mediad.iq(Command.RELEASE, self.dialog))
        await self.pc.close()
        for reflector in self.core:
            reflector.transport.close()


def payload_types(packets: list[bytes]) -> set[int]:
    return {p[1] & 0x7F for p in packets}


def dialog_keys(redis_server) -> list[bytes]:
    return [k for k in redis_server.client().keys("*") if b"dialog" in k]


def handshakes(mediad) -> float:
    return sum(v for (name, labels), v in mediad.metrics().items()
               if name == "e2ae_mediad_dtls_handshakes_total" and ("result", "ok") in labels)


@pytest.mark.req("MUX-1")
def test_aiortc_bundle_audio_and_video_both_ways_on_one_port(mediad, redis_server):
    async def scenario() -> None:
        before_sockets = mediad.sockets()
        before_handshakes = handshakes(mediad)
        stop, seen = asyncio.Event(), []
        listener = asyncio.ensure_future(events(redis_server.url, stop, seen))
        await asyncio.sleep(0.2)
        call = BundleCall(mediad, "bundle-aiortc")
        await call.open()
        try:
            reserve = call.requests[0]
            assert len(reserve.transports) == 1 and [s.transport_id for s in reserve.streams] == [0, 0]
            transport = call.replies[0].transports[0]
            assert {call.replies[0].stream(s.stream_id).access.local_port for s in reserve.streams} == {
                transport.local_port}
            assert await call.wait_connected() == "connected"
            counts = await call.wait_media(20)
            assert counts["audio"] >= 20 and counts["video"] >= 20, counts
            # Each core port got its own m-line's media only: the transport was demultiplexed.
            audio, video = call.core
            assert payload_types(audio.rtp) == {PCMU} and len(audio.rtp) >= 20
            assert payload_types(video.rtp) == {VP8} and len(video.rtp) >= 20
            # ... and aiortc's RTCP went to the m-lines it reports on.
            deadline = time.monotonic() + 6
            while not (audio.rtcp and video.rtcp) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert audio.rtcp and video.rtcp
            # One access port and one handshake for the call (was: one per m-line).
            opened = mediad.sockets() - before_sockets
            access = [port for address, port in opened if address == transport.local_address]
            assert access == [transport.local_port], opened
            assert len(opened) == 3, opened  # and the core's two (the core multiplexes RTCP)
            assert handshakes(mediad) - before_handshakes == 1
            # Past the first packets of each SSRC (learnt, admitted: Python), the native path carried the RTP:
            # access -> core (routed by the learnt SSRC, the MID agreeing) and core -> access (MID stamped).
            by_side = {side: mediad.metric("e2ae_mediad_packets_total", side=side, direction="in", kind="rtp")
                       for side in ("access", "core")}
            rtp_in, native = sum(by_side.values()), mediad.metric("e2ae_mediad_native_packets_total")
            assert rtp_in >= 80 and native >= rtp_in - 10, (by_side, native, mediad.log()[-3000:])
            dropped = {labels: v for (name, labels), v in mediad.metrics().items()
                       if name == "e2ae_mediad_bundle_demux_dropped_total"}
            assert dropped, "the demux drop counter is exported"
            await asyncio.sleep(0.2)
            established = [e for e in seen if e["event"] == "dtls_established" and e["dialog"] == call.dialog]
            assert len(established) == 1, seen
            assert established[0]["transport_id"] == 0 and established[0]["stream_ids"] == [0, 1]
        finally:
            stop.set()
            await listener
            await call.close()
        await asyncio.sleep(0.3)
        assert mediad.sockets() == before_sockets
        assert mediad.written()
        assert dialog_keys(redis_server) == []

    asyncio.run(scenario())


def test_aiortc_bundle_survives_a_mediad_restart(mediad, redis_server):
    async def scenario() -> None:
        call = BundleCall(mediad, "bundle-restart")
        await call.open()
        try:
            assert await call.wait_connected() == "connected"
            assert min((await call.wait_media(10)).values()) >= 10
            port = call.replies[0].transports[0].local_port
            assert mediad.written()  # the document (with the keys) written behind the answers
            mediad.kill()
            mediad.start()
            assert mediad.metric("e2ae_mediad_restored_sessions_total") == 1
            before = await call.inbound()
            audio, video = call.core
            core_before = (len(audio.rtp), len(video.rtp))
            counts = await call.wait_media(max(before.values()) + 25)
            assert counts["audio"] >= before["audio"] + 25 and counts["video"] >= before["video"] + 25, (
                before, counts)
            assert len(audio.rtp) > core_before[0] + 20 and len(video.rtp) > core_before[1] + 20
            assert port in {p for _, p in mediad.sockets()}
            assert handshakes(mediad) == 0  # the restarted mediad relays with the stored keys
        finally:
            await call.close()

    asyncio.run(scenario())


def test_bundle_reoffers_ice_restart_new_association_and_a_released_stream(mediad, redis_server):
    async def scenario() -> None:
        call = BundleCall(mediad, "bundle-reoffer")
        await call.open()
        client = mediad.aclient()
        try:
            assert await call.wait_connected() == "connected"
            first = call.replies[0].transports[0]
            # ICE restart on the kept transport: new local credentials, the same port, media goes on.
            spec = TransportSpec.from_dict(call.requests[0].transports[0].to_dict())
            spec.ice_restart, spec.reuse_association = True, True
            spec.remote_ice_ufrag, spec.remote_ice_pwd = "newufrag", "newpassword0123456789012"
            reply = await client.request(IqRequest(Command.MODIFY, call.dialog, "ice", transports=[spec]))
            assert reply.error is None, reply
            restarted = reply.transports[0]
            assert restarted.local_port == first.local_port
            assert (restarted.ice_ufrag, restarted.ice_pwd) != (first.ice_ufrag, first.ice_pwd)
            before = await call.inbound()
            counts = await call.wait_media(max(before.values()) + 10)
            assert min(counts[k] - before[k] for k in counts) >= 10, (before, counts)
            # A stream released, the transport kept: video stops at the core, audio goes on.
            reply = await client.request(IqRequest(Command.MODIFY, call.dialog, "drop", release_streams=[1]))
            assert reply.error is None, reply
            audio, video = call.core
            await asyncio.sleep(0.3)
            marks = (len(audio.rtp), len(video.rtp))
            await asyncio.sleep(1.0)
            assert len(audio.rtp) > marks[0] + 20 and len(video.rtp) == marks[1]
            query = await client.request(IqRequest(Command.QUERY, call.dialog, "q"))
            assert [t["transport_id"] for t in query.data["transports"]] == [0]
            assert [s["stream_id"] for s in query.data["streams"]] == [0]
            # A new DTLS association on the kept transport (RFC 8842: a new tls-id): the same port, the
            # old keys gone, and the AGW (DTLS client here) starts a new handshake (aiortc cannot take
            # part in a second one on its transport: it stays handshaking).
            spec = TransportSpec.from_dict(call.requests[0].transports[0].to_dict())
            spec.reuse_association, spec.remote_tls_id = False, "anotherTlsIdXXXXXXXXXXXX"
            spec.remote_ice_ufrag, spec.remote_ice_pwd = "newufrag", "newpassword0123456789012"
            reply = await client.request(IqRequest(Command.MODIFY, call.dialog, "tls", transports=[spec]))
            assert reply.error is None, reply
            assert reply.transports[0].local_port == first.local_port
            # A stream naming a transport the dialog does not have: 400, nothing changes.
            bad = IqRequest.from_dict(json.loads(json.dumps(call.requests[1].to_dict())))
            bad.transaction = "bad"
            for stream in bad.streams:
                stream.transport_id = 7
            reply = await client.request(bad)
            assert reply.error_code == 400 and "transport 7" in reply.error, reply
            await asyncio.sleep(0.2)
            query = await client.request(IqRequest(Command.QUERY, call.dialog, "q2"))
            renewed = query.data["transports"][0]
            assert renewed["state"] == "handshaking" and renewed["srtp_keys"] is False, renewed
            assert renewed["spec"]["remote_tls_id"] == "anotherTlsIdXXXXXXXXXXXX"
        finally:
            await call.close()
        assert mediad.written()
        assert dialog_keys(redis_server) == []

    asyncio.run(scenario())


def test_a_stream_moves_off_its_transport_and_back(mediad, redis_server):
    """RFC 9143 7.5.2: a stream leaving the bundle gets a port of its own; coming back gives it up."""
    async def scenario() -> None:
        call = BundleCall(mediad, "bundle-move")
        await call.open()
        client = mediad.aclient()
        try:
            port = call.replies[0].transports[0].local_port
            bundled = call.requests[0].streams[1]
            held = {p for _, p in mediad.sockets()}
            leaving = StreamSpec.from_dict(bundled.to_dict())
            leaving.transport_id = None
            leaving.access = TerminationSpec(
                Side.ACCESS, "UDP/TLS/RTP/SAVPF", remote_address="127.0.0.1", remote_port=9, rtcp_mux=True,
                ice_lite=True, remote_ice_ufrag="own1", remote_ice_pwd="ownpassword0123456789012",
                local_fingerprint_request=True, tls_role=Role.SERVER)
            leaving.core = None
            reply = await client.request(IqRequest(Command.MODIFY, call.dialog, "off", [leaving]))
            assert reply.error is None, reply
            own = reply.stream(1).access.local_port
            assert own != port and {p for _, p in mediad.sockets()} == held | {own}
            query = await client.request(IqRequest(Command.QUERY, call.dialog, "q1"))
            assert {s["stream_id"]: s["transport_id"] for s in query.data["streams"]} == {0: 0, 1: None}
            back = StreamSpec.from_dict(bundled.to_dict())
            back.core = None
            reply = await client.request(IqRequest(Command.MODIFY, call.dialog, "on", [back]))
            assert reply.error is None, reply
            assert reply.stream(1).access.local_port == port
            assert {p for _, p in mediad.sockets()} == held
            # The demultiplexer has the stream again: video reaches its core port.
            video = call.core[1]
            mark = len(video.rtp)
            await asyncio.sleep(1.0)
            assert len(video.rtp) > mark + 10
        finally:
            await call.close()
        assert mediad.written()
        assert dialog_keys(redis_server) == []

    asyncio.run(scenario())
