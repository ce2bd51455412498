"""DTLS-SRTP through mediad with aiortc as the WebRTC client (SRTP-2, SRTP-8..10, ICE-1, MUX-1).

aiortc makes the offer (actpass, rtcp-mux, sha-256/384/512 fingerprints); the
test reserves the terminations on mediad from it, builds the ICE-lite answer
from mediad's reply (what the ALG's SDP rules do in the product) and lets
aiortc connect.  The core side is two plain UDP sockets on 127.0.0.3 (RTP and
RTCP, the core does not multiplex).  Decrypted packets are read at aiortc's
RTCDtlsTransport (``_handle_rtp_data`` / ``_handle_rtcp_data``) and crafted
packets are sent through it (``_send_rtp``), so payloads are compared byte for
byte after the SRTP round trip.
"""

from __future__ import annotations

import asyncio
import json
import time

import aioice.ice
import pytest
import redis.asyncio as aioredis
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from mediad.proto.certs import certificate_fingerprint
from mediad.state import dialog_key
from iq import Command, Fingerprint, Role, Side, StreamSpec, TerminationSpec
from tests.integration.dtls_peer import rtcp_rr, rtp_packet

CORE_PEER = "127.0.0.3"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def loopback_candidates(monkeypatch):
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


class Queue(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        self.queue.put_nowait(data)

    async def collect(self, wanted: list[bytes], timeout: float = 3.0) -> list[bytes]:
        """Wait (bounded) until every packet of ``wanted`` arrived; return those that did."""
        pending = set(wanted)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(self.queue.get(), max(deadline - time.monotonic(), 0.01))
            except asyncio.TimeoutError:
                break
            pending.discard(data)
        return [p for p in wanted if p not in pending]


async def core_endpoint() -> tuple[asyncio.DatagramTransport, Queue]:
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(Queue, local_addr=(CORE_PEER, 0))


def parse_offer(sdp: str) -> dict:
    out: dict = {"fingerprints": []}
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            out["ufrag"] = line.split(":", 1)[1]
        elif line.startswith("a=ice-pwd:"):
            out["pwd"] = line.split(":", 1)[1]
        elif line.startswith("a=fingerprint:"):
            fp = Fingerprint.parse(line.split(":", 1)[1])
            if fp not in out["fingerprints"]:
                out["fingerprints"].append(fp)
        elif line.startswith("a=mid:"):
            out["mid"] = line.split(":", 1)[1]
        elif line.startswith("a=candidate:") and " udp " in line.lower() and "port" not in out:
            parts = line.split()
            if parts[1] == "1":
                out["address"], out["port"] = parts[4], int(parts[5])
    return out


def answer_sdp(access, setup: str, mid: str) -> str:
    lines = [
        "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=ice-lite",
        f"m=audio {access.local_port} UDP/TLS/RTP/SAVPF 0",
        f"c=IN IP4 {access.local_address}", f"a=mid:{mid}", "a=sendrecv", "a=rtcp-mux",
        "a=rtpmap:0 PCMU/8000",
        f"a=ice-ufrag:{access.ice_ufrag}", f"a=ice-pwd:{access.ice_pwd}",
        f"a=fingerprint:{access.local_fingerprint}", f"a=setup:{setup}",
        f"a=candidate:1 1 udp 2130706431 {access.local_address} {access.local_port} typ host",
        "a=end-of-candidates",
    ]
    return "\r\n".join(lines) + "\r\n"


class Call:
    """One aiortc peer connection through mediad to the two core sockets."""

    def __init__(self, mediad, dialog: str) -> None:
        self.mediad = mediad
        self.dialog = dialog
        self.rtp_in: list[bytes] = []
        self.rtcp_in: list[bytes] = []

    async def open(self, role: Role, *, fingerprints=None, hold_fingerprints: bool = False) -> None:
        self.pc = RTCPeerConnection()
        self.pc.addTrack(AudioStreamTrack())
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.offer = parse_offer(self.pc.localDescription.sdp)
        self.core_rtp_t, self.core_rtp = await core_endpoint()
        self.core_rtcp_t, self.core_rtcp = await core_endpoint()
        fps = self.offer["fingerprints"] if fingerprints is None else fingerprints
        self.access_spec = TerminationSpec(
            Side.ACCESS, "UDP/TLS/RTP/SAVPF", remote_address=self.offer["address"],
            remote_port=self.offer["port"], rtcp_mux=True,
            remote_fingerprints=[] if hold_fingerprints else fps, local_fingerprint_request=True,
            tls_role=role, establish_tls=role is Role.CLIENT, notify_tls_failure=True, ice_lite=True,
            remote_ice_ufrag=self.offer["ufrag"], remote_ice_pwd=self.offer["pwd"],
        )
        core_spec = TerminationSpec(
            Side.CORE, "RTP/AVP", remote_address=CORE_PEER, remote_port=self.core_rtp_t.get_extra_info("sockname")[1],
            remote_rtcp_port=self.core_rtcp_t.get_extra_info("sockname")[1],
        )
        self.reply = await self.mediad.aclient().request(self.mediad.iq(
            Command.RESERVE, self.dialog, [StreamSpec(0, "srtp", access=self.access_spec, core=core_spec)]))
        assert self.reply.error is None, self.reply
        access, core = self.reply.stream(0).access, self.reply.stream(0).core
        self.core_rtp_addr = (core.local_address, core.local_port)
        self.core_rtcp_addr = (core.local_address, core.local_rtcp_port)
        self.dtls = self.pc.getTransceivers()[0].receiver.transport
        original_rtp, original_rtcp = self.dtls._handle_rtp_data, self.dtls._handle_rtcp_data

        async def on_rtp(data: bytes, arrival_time_ms: int) -> None:
            self.rtp_in.append(data)
            await original_rtp(data, arrival_time_ms)

        async def on_rtcp(data: bytes) -> None:
            self.rtcp_in.append(data)
            await original_rtcp(data)

        self.dtls._handle_rtp_data, self.dtls._handle_rtcp_data = on_rtp, on_rtcp
        setup = "active" if role is Role.CLIENT else "passive"
        self.started = time.perf_counter()
        await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp(access, setup, self.offer["mid"]), "answer"))

    async def wait_state(self, states=("connected",), timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while self.pc.connectionState not in states and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.pc.connectionState

    async def core_to_access(self, count: int = 20, seq0: int = 1000) -> tuple[list[bytes], list[bytes]]:
        sent = [rtp_packet((seq0 + i) % 65536, ssrc=0x0A0B0C0D) for i in range(count)]
        for packet in sent:
            self.core_rtp_t.sendto(packet, self.core_rtp_addr)
            await asyncio.sleep(0.002)
        deadline = time.monotonic() + 3
        while not set(sent) <= set(self.rtp_in) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return sent, [p for p in sent if p in self.rtp_in]

    async def access_to_core(self, count: int = 20, seq0: int = 5000) -> tuple[list[bytes], list[bytes]]:
        sent = [rtp_packet((seq0 + i) % 65536, ssrc=0x01020304) for i in range(count)]
        for packet in sent:
            await self.dtls._send_rtp(packet)
            await asyncio.sleep(0.002)
        return sent, await self.core_rtp.collect(sent)

    async def close(self, release: bool = True) -> None:
        if release:
            await self.mediad.aclient().request(self.mediad.iq(Command.RELEASE, self.dialog))
        await self.pc.close()
        self.core_rtp_t.close()
        self.core_rtcp_t.close()


async def events(url: str, stop: asyncio.Event, into: list) -> None:
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe("e2ae:events")
    try:
        while not stop.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if message:
                into.append(json.loads(message["data"]))
    finally:
        await pubsub.aclose()
        await client.aclose()


@pytest.mark.req("SRTP-2", "SRTP-8", "T38-8", "ICE-1", "MUX-1")
@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_dtls_srtp_media_both_ways(mediad, redis_server, role):
    async def scenario() -> None:
        before = mediad.sockets()
        call = Call(mediad, f"webrtc-{role.value}")
        await call.open(role)
        assert await call.wait_state() == "connected"
        elapsed = time.perf_counter() - call.started
        # SRTP-2: the certificate aiortc got in the handshake is the one whose fingerprint mediad returned.
        agw_certificate = call.dtls._ssl.get_peer_certificate(as_cryptography=True)
        assert certificate_fingerprint(agw_certificate, "sha-256") == call.reply.stream(0).access.local_fingerprint
        sent, got = await call.core_to_access()
        assert got == sent, f"{len(got)}/{len(sent)} core RTP packets reached aiortc"
        sent, got = await call.access_to_core()
        assert got == sent, f"{len(got)}/{len(sent)} aiortc RTP packets reached the core"
        # aiortc's own audio track (PCMU from a generated source) reaches the core as plain RTP.
        ssrc = call.pc.getSenders()[0]._ssrc.to_bytes(4, "big")
        deadline = time.monotonic() + 3
        seen = False
        while not seen and time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(call.core_rtp.queue.get(), 0.5)
            except asyncio.TimeoutError:
                continue
            seen = data[8:12] == ssrc and data[1] & 0x7F == 0
        assert seen, "no PCMU RTP from aiortc's track at the core"
        # RTCP both ways: core RTCP port <-> SRTCP on the muxed access port (MUX-1).
        report = rtcp_rr(0x0A0B0C0D)
        call.core_rtcp_t.sendto(report, call.core_rtcp_addr)
        deadline = time.monotonic() + 3
        while report not in call.rtcp_in and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert report in call.rtcp_in
        report = rtcp_rr(0x01020304)
        await call.dtls._send_rtp(report)
        assert await call.core_rtcp.collect([report]) == [report]
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role=role.value, result="ok") == 1
        assert mediad.metric("e2ae_mediad_packets_total", side="access", direction="in", kind="stun") >= 1
        print(f"\nhandshake ({role.value}) from answer to connected: {elapsed * 1000:.1f} ms")
        await call.close()
        assert mediad.written()  # the release's deletion, written behind its answer
        assert [k for k in redis_server.client().keys("*") if b"dialog" in k] == []
        assert mediad.sockets() == before

    asyncio.run(scenario())


@pytest.mark.req("SRTP-10", "T38-10")
@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_fingerprint_mismatch_no_media(mediad, redis_url, role):
    async def scenario() -> None:
        seen: list = []
        stop = asyncio.Event()
        listener = asyncio.ensure_future(events(redis_url, stop, seen))
        await asyncio.sleep(0.1)
        wrong = [Fingerprint("sha-256", ":".join(["AB"] * 32))]
        call = Call(mediad, f"mismatch-{role.value}")
        await call.open(role, fingerprints=wrong)
        deadline = time.monotonic() + 6
        while not seen and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert seen and seen[0]["event"] == "dtls_failed" and seen[0]["reason"] == "fingerprint_mismatch"
        assert seen[0]["dialog"] == call.dialog and seen[0]["stream_id"] == 0
        sent = [rtp_packet(i) for i in range(5)]
        for packet in sent:
            call.core_rtp_t.sendto(packet, call.core_rtp_addr)
        await asyncio.sleep(0.3)
        assert not call.rtp_in
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role=role.value,
                             result="fingerprint_mismatch") == 1
        assert mediad.metric("e2ae_mediad_packets_total", side="core", direction="out", kind="rtp") == 0
        assert mediad.metric("e2ae_mediad_packets_total", side="access", direction="out", kind="rtp") == 0
        assert mediad.metric("e2ae_mediad_drops_total", reason="dtls_failed") >= 5
        state = (await mediad.aclient().request(mediad.iq(Command.QUERY, call.dialog))).data
        assert state["events"][0]["reason"] == "fingerprint_mismatch"
        stop.set()
        await listener
        await call.close()

    asyncio.run(scenario())


@pytest.mark.req("SRTP-9")
def test_early_client_hello_held_until_fingerprint(mediad):
    async def scenario() -> None:
        call = Call(mediad, "early-hello")
        await call.open(Role.SERVER, hold_fingerprints=True)
        await asyncio.sleep(1.0)  # aiortc's ClientHello (and the rest of its flights) arrive now
        state = (await mediad.aclient().request(mediad.iq(Command.QUERY, call.dialog))).data
        assert state["streams"][0]["access"]["channels"]["rtp"]["state"] == "handshaking"
        assert mediad.metric("e2ae_mediad_packets_total", side="access", direction="in", kind="dtls") >= 1
        sent, got = await call.core_to_access(count=3)
        assert got == []  # no keys before the fingerprint is known
        spec = StreamSpec(0, "srtp", access=TerminationSpec(
            Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=True, remote_fingerprints=call.offer["fingerprints"],
            tls_role=Role.SERVER, ice_lite=True))
        reply = await mediad.aclient().request(mediad.iq(Command.MODIFY, call.dialog, [spec]))
        assert reply.error is None, reply
        assert await call.wait_state() == "connected"
        sent, got = await call.core_to_access(seq0=3000)
        assert got == sent
        sent, got = await call.access_to_core()
        assert got == sent
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role="server", result="ok") == 1
        await call.close()

    asyncio.run(scenario())


@pytest.mark.req("SRTP-8")
def test_restart_mid_call_keeps_srtp_flowing(mediad, redis_server):
    async def scenario() -> None:
        call = Call(mediad, "restart")
        await call.open(Role.SERVER)
        assert await call.wait_state() == "connected"
        sent, got = await call.core_to_access(seq0=100)
        assert got == sent
        await asyncio.sleep(0.2)  # the keys reach Redis on the next loop turn
        mediad.kill()
        mediad.start()
        assert mediad.metric("e2ae_mediad_restored_sessions_total") == 1
        sent, got = await call.core_to_access(seq0=200)
        assert got == sent
        sent, got = await call.access_to_core(seq0=9000)
        assert got == sent
        # No new handshake: the restarted process relays with the stored keys.
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role="server", result="ok") == 0
        assert call.pc.connectionState == "connected"
        await call.close()
        assert mediad.written()  # the release's deletion, written behind its answer
        assert [k for k in redis_server.client().keys("*") if b"dialog" in k] == []

    asyncio.run(scenario())


def test_restart_after_a_sequence_number_wrap_keeps_srtp_flowing(mediad, redis_server):
    """RFC 3711 3.3.1: streams that wrapped before a kill -9 continue at their ROC after the restart.

    Restored with ROC 0, the WIC (aiortc's libsrtp) would reject what mediad
    protects toward it, and mediad would reject what the WIC sends: no packet
    would be decoded on either side.  The SSRC from the WIC is not announced in
    the SDP: the native path learns it.
    """
    async def scenario() -> None:
        call = Call(mediad, "wrap")
        await call.open(Role.SERVER)
        assert await call.wait_state() == "connected"
        sent, got = await call.core_to_access(count=56, seq0=65500)  # 65500..65535, 0..19
        assert got == sent
        sent, got = await call.access_to_core(count=56, seq0=65500)
        assert got == sent
        await asyncio.sleep(1.0)  # a read of the ROCs (every 0.5 s) and the write behind it
        assert mediad.written()
        stored = json.loads(redis_server.client().get(dialog_key("wrap")))
        channel = stored["streams"][0]["access"]["channels"]["rtp"]
        assert channel["srtp_rocs"]["tx"][str(0x0A0B0C0D)] == 1
        assert channel["srtp_rocs"]["rx"][str(0x01020304)] == 1
        mediad.kill()
        mediad.start()
        assert mediad.metric("e2ae_mediad_restored_sessions_total") == 1
        sent, got = await call.core_to_access(count=20, seq0=20)
        assert len(got) == len(sent), f"{len(got)} of {len(sent)} packets decoded by the WIC after the restart"
        sent, got = await call.access_to_core(count=20, seq0=20)
        assert len(got) == len(sent), f"{len(got)} of {len(sent)} packets from the WIC relayed after the restart"
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role="server", result="ok") == 0
        await call.close()

    asyncio.run(scenario())


class _IndexTap:
    """aiortc's inbound SRTP session, recording the SRTCP index of each packet it is given."""

    def __init__(self, session, index_at: int) -> None:
        self.session = session
        self.index_at = index_at
        self.indices: list[int] = []  # of the packets that passed aiortc's replay and auth checks

    def unprotect(self, data: bytes) -> bytes:
        return self.session.unprotect(data)

    def unprotect_rtcp(self, data: bytes) -> bytes:
        plain = self.session.unprotect_rtcp(data)  # raises on a replayed index: not recorded
        at = len(data) - self.index_at
        self.indices.append(int.from_bytes(data[at:at + 4], "big") & 0x7FFFFFFF)
        return plain


def test_restart_starts_the_srtcp_index_above_every_index_sent(mediad, redis_server):
    """RFC 3711 3.4 and 9.2: after a kill -9 and a restore, mediad's SRTCP toward the WIC goes on past
    every index it sent before (the same master key: an index sent again reuses keystream).

    Restarted at index 1, every report is dropped by the WIC's replay check (aiortc's libsrtp).
    """
    from mediad.proto.srtp import PROFILES, SRTCP_MARGIN

    async def scenario() -> None:
        call = Call(mediad, "srtcp-index")
        await call.open(Role.SERVER)
        assert await call.wait_state() == "connected"
        profile = call.dtls._ssl.get_selected_srtp_profile().decode()
        tap = _IndexTap(call.dtls._rx_srtp, PROFILES[profile].srtcp_index_at)
        call.dtls._rx_srtp = tap

        async def reports(count: int) -> list[bytes]:
            sent = [rtcp_rr(0x0A0B0C0D) for _ in range(count)]
            for report in sent:
                call.core_rtcp_t.sendto(report, call.core_rtcp_addr)
                await asyncio.sleep(0.005)
            deadline = time.monotonic() + 3
            while not set(sent) <= set(call.rtcp_in) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return [r for r in sent if r in call.rtcp_in]

        assert len(await reports(7)) == 7
        before = list(tap.indices)
        assert before == list(range(1, 8))
        assert mediad.written()  # (the keys; the SSRC was admitted after: the document does not name it)
        mediad.kill()
        mediad.start()
        assert mediad.metric("e2ae_mediad_restored_sessions_total") == 1
        got = await reports(5)
        assert len(got) == 5, f"{len(got)} of 5 SRTCP reports passed the WIC's replay check after the restart"
        after = tap.indices[len(before):]
        assert min(after) > max(before)
        assert after == list(range(after[0], after[0] + 5)) and after[0] <= max(before) + SRTCP_MARGIN + 1
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role="server", result="ok") == 0
        await call.close()

    asyncio.run(scenario())
