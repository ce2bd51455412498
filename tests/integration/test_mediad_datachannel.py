"""WebRTC data channels through mediad with aiortc as the WebRTC client (DC-10..DC-13).

aiortc makes the offer with SDP-negotiated channels (``negotiated=True`` and
the SCTP stream id of the dcmap, RFC 8864); the test reserves the ``sctp``
association stream and one ``dc_channel`` stream per channel on mediad (as the
ALG's data-channel rules do), builds the ICE-lite ``UDP/DTLS/SCTP`` answer
from mediad's reply and lets aiortc connect.  The core is played by plain
sockets on 127.0.0.3: a UDP socket for T.140 in RTP (RFC 4103) and TCP
sockets for MSRP (RFC 4975).  Everything is real: DTLS (OpenSSL on both
ends), SCTP (aiortc on both ends), redis-server for the events.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time

import aioice.ice
import pytest
import redis.asyncio as aioredis
from aiortc import RTCPeerConnection, RTCSessionDescription

from mediad.proto.t140 import parse_rtp
from iq import Command, DcMap, Fingerprint, Role, Side, StreamSpec, TerminationSpec
from tests.integration.test_mediad_webrtc import Queue, parse_offer

CORE_PEER = "127.0.0.3"
CHANNEL_BASE = 65536  # the ALG's Iq id of a channel: CHANNEL_BASE * (sid + 1) + SCTP stream id
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MSRP_SEND = (
    b"MSRP a786hjs2 SEND\r\n"
    b"To-Path: msrp://127.0.0.2:7777/iau39soe2843z;tcp\r\n"
    b"From-Path: msrp://127.0.0.1:5000/9di4ea;dc\r\n"
    b"Message-ID: 87652491\r\n"
    b"Byte-Range: 1-25/25\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Hey Bob, are you there?\r\n"
    b"\r\n"
    b"-------a786hjs2$\r\n"
)
MSRP_OK = (
    b"MSRP a786hjs2 200 OK\r\n"
    b"To-Path: msrp://127.0.0.1:5000/9di4ea;dc\r\n"
    b"From-Path: msrp://127.0.0.2:7777/iau39soe2843z;tcp\r\n"
    b"-------a786hjs2$\r\n"
)
MSRP_REPLY = (
    b"MSRP dkei38sd SEND\r\n"
    b"To-Path: msrp://127.0.0.1:5000/9di4ea;dc\r\n"
    b"From-Path: msrp://127.0.0.2:7777/iau39soe2843z;tcp\r\n"
    b"Message-ID: 4564dpWd\r\n"
    b"Byte-Range: 1-*/8\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Hi Alice\r\n"
    b"-------dkei38sd+\r\n"
)


@pytest.fixture(autouse=True)
def loopback_candidates(monkeypatch):
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def answer_sdp(access, setup: str, mid: str) -> str:
    lines = [
        "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=ice-lite",
        f"m=application {access.local_port} UDP/DTLS/SCTP webrtc-datachannel",
        f"c=IN IP4 {access.local_address}", f"a=mid:{mid}",
        f"a=ice-ufrag:{access.ice_ufrag}", f"a=ice-pwd:{access.ice_pwd}",
        f"a=fingerprint:{access.local_fingerprint}", f"a=setup:{setup}",
        f"a=candidate:1 1 udp 2130706431 {access.local_address} {access.local_port} typ host",
        "a=end-of-candidates",
        f"a=sctp-port:{access.local_sctp_port}", f"a=max-message-size:{access.local_max_message_size}",
    ]
    return "\r\n".join(lines) + "\r\n"


def t140_rtp(seq: int, text: bytes, pt: int = 98) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, 1000 + seq * 300, 0x11223344) + text


class TcpCore:
    """An MSRP peer in the core: listens, or connects; keeps what it reads."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.server: asyncio.AbstractServer | None = None
        self.connected = asyncio.Event()
        self.eof = asyncio.Event()

    async def listen(self) -> int:
        self.server = await asyncio.start_server(self._accepted, CORE_PEER, 0)
        return self.server.sockets[0].getsockname()[1]

    async def connect(self, address: tuple[str, int]) -> None:
        reader, writer = await asyncio.open_connection(*address)
        await self._accepted(reader, writer)

    async def _accepted(self, reader, writer) -> None:
        self.reader, self.writer = reader, writer
        self.connected.set()
        asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.reader is not None
        while True:
            chunk = await self.reader.read(65536)
            if not chunk:
                self.eof.set()
                return
            self.data += chunk

    async def wait_bytes(self, size: int, timeout: float = 3.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.data) < size and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return bytes(self.data)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.server is not None:
            self.server.close()


class DcCall:
    """One aiortc peer connection with negotiated data channels through mediad."""

    def __init__(self, mediad, dialog: str) -> None:
        self.mediad = mediad
        self.dialog = dialog
        self.channels: dict[int, object] = {}
        self.received: dict[int, list] = {}

    def channel(self, sctp_id: int, sub: str):
        channel = self.pc.createDataChannel(sub, negotiated=True, id=sctp_id, protocol=sub)
        self.channels[sctp_id] = channel
        self.received[sctp_id] = []
        channel.on("message", self.received[sctp_id].append)
        return channel

    async def open(self, role: Role, channels: list[tuple[int, TerminationSpec]], *, fingerprints=None) -> None:
        self.pc = RTCPeerConnection()
        for sctp_id, core in channels:
            self.channel(sctp_id, "msrp" if core.transport == "TCP" else "t140")
        access, mid = await self.offer(role, [sctp_id for sctp_id, _ in channels], fingerprints)
        streams = [StreamSpec(0, "sctp", access=access, local_tls_id="agw-tls-1", remote_tls_id="wic-tls-1")]
        streams += [self.channel_spec(sctp_id, core) for sctp_id, core in channels]
        self.reply = await self.mediad.aclient().request(self.mediad.iq(Command.RESERVE, self.dialog, streams))
        assert self.reply.error is None, self.reply
        await self.answer(role, self.reply, mid)

    async def offer(self, role: Role, stream_ids: list[int], fingerprints=None) -> tuple[TerminationSpec, str]:
        """aiortc's offer as the ALG turns it into the association's access termination (DC-3)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = parse_offer(self.pc.localDescription.sdp)
        access = TerminationSpec(
            Side.ACCESS, "UDP/DTLS/SCTP", remote_address=offer["address"], remote_port=offer["port"],
            remote_fingerprints=offer["fingerprints"] if fingerprints is None else fingerprints,
            local_fingerprint_request=True, tls_role=role, establish_tls=role is Role.CLIENT,
            notify_tls_failure=True, ice_lite=True, remote_ice_ufrag=offer["ufrag"], remote_ice_pwd=offer["pwd"],
            remote_sctp_port=5000, remote_max_message_size=65536, local_sctp_port_request=True,
            local_max_message_size_request=True, establish_sctp=role is Role.CLIENT, notify_stream_reset=True,
            sctp_stream_ids=stream_ids,
        )
        return access, offer["mid"]

    async def answer(self, role: Role, reply, mid: str) -> None:
        setup = "active" if role is Role.CLIENT else "passive"
        self.started = time.perf_counter()
        await self.pc.setRemoteDescription(
            RTCSessionDescription(answer_sdp(reply.stream(0).access, setup, mid), "answer"))

    @staticmethod
    def channel_spec(sctp_id: int, core: TerminationSpec) -> StreamSpec:
        sub = "msrp" if core.transport == "TCP" else "t140"
        dcmap = DcMap(stream_id=sctp_id, label=sub, subprotocol=sub)
        return StreamSpec(CHANNEL_BASE + sctp_id, "dc_channel", group=0,
                          access=TerminationSpec(Side.ACCESS, "UDP/DTLS/SCTP", dcmap=dcmap), core=core)

    def core_address(self, sctp_id: int, reply=None) -> tuple[str, int]:
        core = (reply or self.reply).stream(CHANNEL_BASE + sctp_id).core
        return (core.local_address, core.local_port)

    async def wait_open(self, sctp_id: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.channels[sctp_id].readyState != "open" and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return self.channels[sctp_id].readyState == "open"

    async def wait_received(self, sctp_id: int, count: int, timeout: float = 3.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.received[sctp_id]) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.received[sctp_id]

    async def close(self) -> None:
        await self.mediad.aclient().request(self.mediad.iq(Command.RELEASE, self.dialog))
        await self.pc.close()


async def t140_core() -> tuple[asyncio.DatagramTransport, Queue, TerminationSpec]:
    transport, queue = await asyncio.get_running_loop().create_datagram_endpoint(Queue, local_addr=(CORE_PEER, 0))
    spec = TerminationSpec(Side.CORE, "RTP/AVP", remote_address=CORE_PEER,
                           remote_port=transport.get_extra_info("sockname")[1], rtcp_mux=True,
                           remote_dcsa=["rtpmap:98 t140/1000", "rtpmap:100 red/1000", "fmtp:100 98/98/98"])
    return transport, queue, spec


async def collect_events(url: str, stop: asyncio.Event, into: list) -> None:
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


@pytest.mark.req("DC-10", "DC-12")
@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_t140_channel_both_ways(mediad, redis_server, role):
    async def scenario() -> None:
        before = mediad.sockets()
        udp, core_queue, core_spec = await t140_core()
        call = DcCall(mediad, f"dc-t140-{role.value}")
        await call.open(role, [(1, core_spec)])
        access = call.reply.stream(0).access
        assert (access.local_sctp_port, access.local_max_message_size) == (5000, 262144)
        assert access.local_fingerprint is not None
        assert await call.wait_open(1), f"channel not open: {call.pc.connectionState}"
        elapsed = time.perf_counter() - call.started
        # access -> core: each channel message is one RTP t140 packet, payload byte for byte.
        texts = ["Hello", " wörld ✓", "\u2028"]
        for text in texts:
            call.channels[1].send(text)
        got = []
        deadline = time.monotonic() + 3
        while len(got) < len(texts) and time.monotonic() < deadline:
            try:
                got.append(await asyncio.wait_for(core_queue.queue.get(), 0.5))
            except asyncio.TimeoutError:
                pass
        parsed = [parse_rtp(p) for p in got]
        assert [p[5] for p in parsed] == [t.encode() for t in texts]
        assert {p[0] for p in parsed} == {98} and parsed[0][4]  # marker on the first packet (RFC 4103 3.2)
        assert [(p[1] - parsed[0][1]) & 0xFFFF for p in parsed] == [0, 1, 2]
        # core -> access: RTP text (plain t140, then red with a primary) arrives as string messages.
        core_addr = call.core_address(1)
        udp.sendto(t140_rtp(10, "From the core ".encode()), core_addr)
        red = struct.pack("!IB", 0x80000000 | (98 << 24) | (300 << 10) | 0, 98) + "é!".encode()  # RFC 2198
        udp.sendto(t140_rtp(11, red, pt=100), core_addr)
        udp.sendto(t140_rtp(11, red, pt=100), core_addr)  # a duplicate is dropped
        assert await call.wait_received(1, 2) == ["From the core ", "é!"]
        await asyncio.sleep(0.1)
        assert call.received[1] == ["From the core ", "é!"]
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role=role.value, result="ok") == 1
        assert mediad.metric("e2ae_mediad_sctp_setup_seconds_count") == 1
        sctp_ms = mediad.metric("e2ae_mediad_sctp_setup_seconds_sum") * 1000
        print(f"\nDTLS+SCTP ({role.value}) from answer to channel open: {elapsed * 1000:.1f} ms "
              f"(SCTP after DTLS: {sctp_ms:.1f} ms)")
        await call.close()
        udp.close()
        assert mediad.written()  # the release's deletion, written behind its answer
        assert [k for k in redis_server.client().keys("*") if b"dialog" in k] == []
        assert mediad.sockets() == before  # every port released
        assert mediad.metric("e2ae_mediad_data_channels_active") == 0

    asyncio.run(scenario())


@pytest.mark.req("DC-11", "DC-12", "DC-13")
def test_msrp_channel_reuse_and_stream_reset(mediad, redis_url):
    async def scenario() -> None:
        seen: list = []
        stop = asyncio.Event()
        listener = asyncio.ensure_future(collect_events(redis_url, stop, seen))
        # Channel 1: the AGW is the active MSRP side (the core's port is given): it connects.
        core1 = TcpCore()
        core1_port = await core1.listen()
        spec1 = TerminationSpec(Side.CORE, "TCP", remote_address=CORE_PEER, remote_port=core1_port,
                                remote_dcsa=["accept-types:text/plain", "path:msrp://127.0.0.3/x;tcp"])
        call = DcCall(mediad, "dc-msrp")
        await call.open(Role.SERVER, [(1, spec1)])
        assert await call.wait_open(1)
        await asyncio.wait_for(core1.connected.wait(), 3)
        # DC-12 access -> core: the MSRP message reaches TCP unchanged.
        call.channels[1].send(MSRP_SEND)
        assert await core1.wait_bytes(len(MSRP_SEND)) == MSRP_SEND
        # core -> access: a TCP stream cut anywhere becomes one channel message per MSRP message.
        stream = MSRP_OK + MSRP_REPLY
        core1.writer.write(stream[:30])
        await asyncio.sleep(0.05)
        core1.writer.write(stream[30:len(MSRP_OK) + 5])
        await asyncio.sleep(0.05)
        core1.writer.write(stream[len(MSRP_OK) + 5:])
        assert await call.wait_received(1, 2) == [MSRP_OK, MSRP_REPLY]

        # DC-11: a MODIFY adds channel 3 (MSRP, the AGW passive: the core connects) on the same association.
        handshakes = mediad.metric("e2ae_mediad_dtls_handshakes_total", role="server", result="ok")
        assert handshakes == 1
        sctp_transport = call.pc.sctp
        sctp_access = TerminationSpec(Side.ACCESS, "UDP/DTLS/SCTP", tls_role=Role.SERVER, notify_stream_reset=True,
                                      sctp_stream_ids=[1, 3])
        spec3 = TerminationSpec(Side.CORE, "TCP", remote_address=CORE_PEER)
        modify = [StreamSpec(0, "sctp", access=sctp_access, reuse_association=True, remote_tls_id="wic-tls-1"),
                  DcCall.channel_spec(3, spec3)]
        reply = await mediad.aclient().request(mediad.iq(Command.MODIFY, call.dialog, modify))
        assert reply.error is None, reply
        call.channel(3, "msrp")
        assert await call.wait_open(3)
        core3 = TcpCore()
        await core3.connect(call.core_address(3, reply))
        call.channels[3].send(MSRP_SEND)
        assert await core3.wait_bytes(len(MSRP_SEND)) == MSRP_SEND
        core3.writer.write(MSRP_OK)
        assert await call.wait_received(3, 1) == [MSRP_OK]
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role="server", result="ok") == handshakes
        assert call.pc.sctp is sctp_transport and sctp_transport.state == "connected"
        assert mediad.metric("e2ae_mediad_sctp_setup_seconds_count") == 1

        # Throughput: a bounded burst of MSRP messages over channel 3 to the core.
        count = 500
        burst_start = time.perf_counter()
        for i in range(count):
            call.channels[3].send(MSRP_SEND.replace(b"a786hjs2", b"t%07d" % i))
        expected = len(MSRP_SEND) * (count + 1)
        got = await core3.wait_bytes(expected, timeout=10)
        burst = time.perf_counter() - burst_start
        assert len(got) == expected
        print(f"\nMSRP burst: {count} messages access->core in {burst * 1000:.0f} ms "
              f"({count / burst:.0f} messages/s)")
        burst_start = time.perf_counter()
        core3.writer.write(b"".join(MSRP_OK.replace(b"a786hjs2", b"r%07d" % i) for i in range(count)))
        received = await call.wait_received(3, count + 1, timeout=10)
        burst = time.perf_counter() - burst_start
        assert len(received) == count + 1 and received[-1] == MSRP_OK.replace(b"a786hjs2", b"r%07d" % (count - 1))
        print(f"MSRP burst: {count} messages core->access in {burst * 1000:.0f} ms ({count / burst:.0f} messages/s)")
        del received[1:]

        # DC-13: the WIC closes channel 1: SCTP stream reset, answered by mediad; the ALG is told, the
        # core connection of that channel closes, channel 3 keeps working.
        call.channels[1].close()
        await asyncio.wait_for(core1.eof.wait(), 3)
        deadline = time.monotonic() + 3
        while not any(e["event"] == "sctp_stream_reset" for e in seen) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        resets = [e for e in seen if e["event"] == "sctp_stream_reset"]
        assert resets and resets[0]["stream_id"] == CHANNEL_BASE + 1 and resets[0]["sctp_stream_id"] == 1
        assert resets[0]["dialog"] == call.dialog
        deadline = time.monotonic() + 3
        while call.channels[1].readyState != "closed" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert call.channels[1].readyState == "closed"  # mediad reset its direction too (RFC 8831 6.7)
        state = (await mediad.aclient().request(mediad.iq(Command.QUERY, call.dialog))).data
        assert any(e["event"] == "sctp_stream_reset" for e in state["events"])
        core3.writer.write(MSRP_REPLY)
        assert await call.wait_received(3, 2) == [MSRP_OK, MSRP_REPLY]
        stop.set()
        await listener
        await call.close()
        await asyncio.wait_for(core3.eof.wait(), 3)
        core1.close()
        core3.close()

    asyncio.run(scenario())


@pytest.mark.req("DC-10")
def test_fingerprint_mismatch_no_association(mediad, redis_url):
    async def scenario() -> None:
        seen: list = []
        stop = asyncio.Event()
        listener = asyncio.ensure_future(collect_events(redis_url, stop, seen))
        await asyncio.sleep(0.1)
        udp, core_queue, core_spec = await t140_core()
        wrong = [Fingerprint("sha-256", ":".join(["AB"] * 32))]
        call = DcCall(mediad, "dc-mismatch")
        await call.open(Role.CLIENT, [(1, core_spec)], fingerprints=wrong)
        deadline = time.monotonic() + 6
        while not seen and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert seen and seen[0]["event"] == "dtls_failed" and seen[0]["reason"] == "fingerprint_mismatch"
        assert not await call.wait_open(1, timeout=0.5)
        assert mediad.metric("e2ae_mediad_sctp_setup_seconds_count") == 0
        assert mediad.metric("e2ae_mediad_packets_total", side="access", direction="out", kind="sctp") == 0
        stop.set()
        await listener
        await call.close()
        udp.close()

    asyncio.run(scenario())


def test_restart_then_new_association_reopens_channels(mediad, redis_server):
    """After a restart the association is gone; a new tls-id (new DTLS + SCTP) brings the channel back."""
    async def scenario() -> None:
        udp, core_queue, core_spec = await t140_core()
        call = DcCall(mediad, "dc-restart")
        await call.open(Role.SERVER, [(1, core_spec)])
        assert await call.wait_open(1)
        call.channels[1].send("before")
        assert parse_rtp(await asyncio.wait_for(core_queue.queue.get(), 3))[5] == b"before"
        await asyncio.sleep(0.2)
        mediad.kill()
        mediad.start()
        assert mediad.metric("e2ae_mediad_restored_sessions_total") == 1
        old_pc = call.pc
        # The WIC comes back with a new DTLS association (re-INVITE, new tls-id): a new aiortc peer.
        call.pc = RTCPeerConnection()
        call.channel(1, "t140")
        access, mid = await call.offer(Role.SERVER, [1])
        modify = [StreamSpec(0, "sctp", access=access, remote_tls_id="wic-tls-2")]
        reply = await mediad.aclient().request(mediad.iq(Command.MODIFY, call.dialog, modify))
        assert reply.error is None, reply
        assert reply.stream(0).access.local_port == call.reply.stream(0).access.local_port
        await call.answer(Role.SERVER, reply, mid)
        assert await call.wait_open(1), mediad.log()[-2000:]
        call.channels[1].send("after")
        assert parse_rtp(await asyncio.wait_for(core_queue.queue.get(), 3))[5] == b"after"
        udp.sendto(t140_rtp(40, b"back"), call.core_address(1))
        assert await call.wait_received(1, 1) == ["back"]
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role="server", result="ok") == 1
        await call.close()
        await old_pc.close()
        udp.close()
        assert mediad.written()  # the release's deletion, written behind its answer
        assert [k for k in redis_server.client().keys("*") if b"dialog" in k] == []

    asyncio.run(scenario())
