"""Place one demo call through a running edge and print what flowed.

    .venv/bin/python -m deploy.demo_call [--config deploy/e2ae.conf] [--seconds 3]

The access side is a real WebRTC client (aiortc: ICE, DTLS-SRTP, a 440 Hz
tone) signalled by a small SIP user agent over UDP to ``[edge] access_sip``;
the core side is a plain SIP/RTP endpoint bound on ``[edge] core_next_hop``
(127.0.0.3:5060 by default), which answers with PCMU over RTP/AVP, sends its
own tone and counts what arrives.  The WIC hangs up after ``--seconds``.  The
run prints the SDP each side received, the DTLS state and the packets that
flowed each way, and exits 0 only when DTLS-SRTP completed and audio flowed
both ways.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import math
import random
import re
import struct
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction

PCMU = 0
SAMPLE_RATE = 8000
PTIME = 0.02
SAMPLES = int(SAMPLE_RATE * PTIME)


# ---------------------------------------------------------------------------
# A small SIP user agent (RFC 3261 over UDP, enough for one call)
# ---------------------------------------------------------------------------

def _headers(raw: str) -> tuple[str, list[tuple[str, str]], str]:
    head, _, body = raw.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return lines[0], headers, body


@dataclass
class SipMessage:
    first_line: str
    headers: list[tuple[str, str]]
    body: str
    source: tuple[str, int]
    stream: asyncio.Transport | None = None  # the TCP connection it came on (else UDP)

    @classmethod
    def parse(cls, data: bytes, source, stream: asyncio.Transport | None = None) -> "SipMessage":
        first, headers, body = _headers(data.decode("utf-8", "replace"))
        return cls(first, headers, body.replace("\n", "\r\n"), source, stream)

    def get(self, name: str) -> str:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return ""

    def all(self, name: str) -> list[str]:
        out = []
        for key, value in self.headers:
            if key == name.lower():
                out.extend(v.strip() for v in re.split(r",(?=\s*<)", value))
        return out

    @property
    def status(self) -> int:
        return int(self.first_line.split()[1]) if self.first_line.startswith("SIP/2.0") else 0

    @property
    def method(self) -> str:
        if self.first_line.startswith("SIP/2.0"):
            return self.get("cseq").split()[-1]
        return self.first_line.split()[0]


class _Queue(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[SipMessage] = asyncio.Queue()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        try:
            self.queue.put_nowait(SipMessage.parse(data, addr))
        except (ValueError, IndexError):
            pass


class _StreamQueue(asyncio.Protocol):
    """SIP over TCP (RFC 3261 18.3): messages framed by their Content-Length, into ``queue``."""

    def __init__(self, queue: asyncio.Queue) -> None:
        self.queue = queue
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            self.buffer = self.buffer.lstrip(b"\r\n")  # keepalives (RFC 5626 3.5.1)
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            length = re.search(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)", head, re.I | re.M)
            size = int(length.group(1)) if length else 0
            if len(rest) < size:
                return
            message, self.buffer = head + sep + rest[:size], rest[size:]
            try:
                self.queue.put_nowait(SipMessage.parse(message, self.transport.get_extra_info("peername"),
                                                       self.transport))
            except (ValueError, IndexError):
                pass


def _tag() -> str:
    return "%x" % random.getrandbits(48)


def _uri_of(name_addr: str) -> str:
    match = re.search(r"<([^>]+)>", name_addr)
    return match.group(1) if match else name_addr.split(";")[0].strip()


def _host_port(uri: str) -> tuple[str, int]:
    match = re.match(r"sips?:(?:[^@]+@)?([^;:>]+)(?::(\d+))?", uri)
    if not match:
        raise ValueError(f"cannot route to {uri!r}")
    return match.group(1), int(match.group(2) or 5060)


class SipUac:
    """The WIC's SIP side: INVITE with an SDP offer, ACK, BYE."""

    def __init__(self, local_host: str, edge: tuple[str, int]) -> None:
        self.local_host = local_host
        self.edge = edge
        self.call_id = "%x@%s" % (random.getrandbits(64), local_host)
        self.from_tag = _tag()
        self.to = ""
        self.route: list[str] = []
        self.remote_target = ""
        self.cseq = 0
        self.proto: _Queue | None = None
        self.port = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, self.proto = await loop.create_datagram_endpoint(_Queue, local_addr=(self.local_host, 0))
        self.port = transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self.proto and self.proto.transport:
            self.proto.transport.close()

    def _request(self, method: str, uri: str, cseq: int, branch: str, body: str = "", extra: str = "") -> bytes:
        routes = "".join(f"Route: {r}\r\n" for r in self.route)
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        to = self.to or f"<sip:demo@{self.edge[0]}:{self.edge[1]}>"
        text = (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.local_host}:{self.port};branch={branch};rport\r\n"
            f"{routes}Max-Forwards: 70\r\n"
            f"From: <sip:wic@{self.local_host}:{self.port}>;tag={self.from_tag}\r\n"
            f"To: {to}\r\nCall-ID: {self.call_id}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:wic@{self.local_host}:{self.port}>\r\n{extra}{ctype}"
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        )
        return text.encode()

    def _next_hop(self) -> tuple[str, int]:
        if self.route:
            return _host_port(_uri_of(self.route[0]))
        return self.edge

    async def _transaction(self, data: bytes, dest, method: str, cseq: int, timeout: float) -> SipMessage:
        assert self.proto is not None
        deadline = time.monotonic() + timeout
        interval = 0.5
        self.proto.transport.sendto(data, dest)
        next_send = time.monotonic() + interval
        provisional = False
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"no final response to {method}")
            wait = min(deadline, next_send) - now if not provisional else deadline - now
            try:
                msg = await asyncio.wait_for(self.proto.queue.get(), max(wait, 0.01))
            except asyncio.TimeoutError:
                if not provisional and time.monotonic() >= next_send:
                    self.proto.transport.sendto(data, dest)
                    interval = min(interval * 2, 4.0)
                    next_send = time.monotonic() + interval
                continue
            if msg.get("call-id") != self.call_id or msg.get("cseq") != f"{cseq} {method}":
                continue
            if msg.status < 200:
                provisional = True
                continue
            return msg

    async def invite(self, sdp: str, timeout: float = 10.0, uri: str | None = None) -> SipMessage:
        self.cseq += 1
        cseq = self.cseq
        uri = uri or f"sip:demo@{self.edge[0]}:{self.edge[1]}"
        branch = "z9hG4bK" + _tag()
        reply = await self._transaction(self._request("INVITE", uri, cseq, branch, sdp), self.edge,
                                        "INVITE", cseq, timeout)
        if reply.status >= 300:
            # RFC 3261 17.1.1.3: ACK a final error in the same transaction.
            self.to = reply.get("to")
            self.proto.transport.sendto(self._request("ACK", uri, cseq, branch), self.edge)
            return reply
        self.to = reply.get("to")
        self.route = list(reversed(reply.all("record-route")))
        self.remote_target = _uri_of(reply.get("contact"))
        ack = self._request("ACK", self.remote_target, cseq, "z9hG4bK" + _tag())
        self.proto.transport.sendto(ack, self._next_hop())
        return reply

    async def bye(self, timeout: float = 5.0) -> SipMessage:
        self.cseq += 1
        data = self._request("BYE", self.remote_target, self.cseq, "z9hG4bK" + _tag())
        return await self._transaction(data, self._next_hop(), "BYE", self.cseq, timeout)


class CoreEndpoint:
    """The IMS core's side: a SIP UAS answering PCMU over RTP/AVP, and its RTP socket.

    It takes SIP over UDP and over TCP on the same address: the edge sends a request
    over 1300 bytes over TCP (RFC 3261 18.1.1)."""

    def __init__(self, sip: tuple[str, int], media_host: str) -> None:
        self.sip = sip
        self.media_host = media_host
        self.sip_proto: _Queue | None = None
        self.rtp_transport = None
        self.rtp_port = 0
        self.offer: SipMessage | None = None
        self.remote_media: tuple[str, int] | None = None
        self.rtp_in = 0
        self.rtp_out = 0
        self.rtp_in_tone = 0  # packets whose payload is not mu-law silence
        self.tone_times: list[float] = []  # time.monotonic() of each of those packets
        self.bye_received = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._sender: asyncio.Task | None = None
        self._tcp: asyncio.AbstractServer | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        _, self.sip_proto = await loop.create_datagram_endpoint(_Queue, local_addr=self.sip)
        queue = self.sip_proto.queue
        self._tcp = await loop.create_server(lambda: _StreamQueue(queue), *self.sip)
        endpoint = self

        class Rtp(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr) -> None:
                if len(data) >= 12 and data[0] >> 6 == 2 and data[1] & 0x7F == PCMU:
                    endpoint.rtp_in += 1
                    if any(b not in (0xFF, 0x7F) for b in data[12:]):
                        endpoint.rtp_in_tone += 1
                        endpoint.tone_times.append(time.monotonic())

        self.rtp_transport, _ = await loop.create_datagram_endpoint(Rtp, local_addr=(self.media_host, 0))
        self.rtp_port = self.rtp_transport.get_extra_info("sockname")[1]
        self._task = asyncio.ensure_future(self._serve())

    def close(self) -> None:
        for task in (self._task, self._sender):
            if task:
                task.cancel()
        if self.sip_proto and self.sip_proto.transport:
            self.sip_proto.transport.close()
        if self._tcp:
            self._tcp.close()
        if self.rtp_transport:
            self.rtp_transport.close()

    def _answer(self) -> str:
        offer = self.offer.body if self.offer else ""
        mid = re.search(r"^a=mid:(\S+)", offer, re.M)
        return (
            "v=0\r\n"
            f"o=core {random.getrandbits(31)} 1 IN IP4 {self.media_host}\r\n"
            "s=-\r\n"
            f"c=IN IP4 {self.media_host}\r\n"
            "t=0 0\r\n"
            f"m=audio {self.rtp_port} RTP/AVPF 0\r\n"
            "a=rtpmap:0 PCMU/8000\r\n"
            "a=ptime:20\r\n"
            "a=rtcp-mux\r\n"
            "a=sendrecv\r\n"
            + (f"a=mid:{mid.group(1)}\r\n" if mid else "")  # RFC 5888: the answer echoes the mid
        )

    def _response(self, req: SipMessage, status: str, body: str = "", to_tag: str = "") -> bytes:
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

    async def _serve(self) -> None:
        assert self.sip_proto is not None
        to_tag = _tag()
        while True:
            msg = await self.sip_proto.queue.get()
            if msg.status:
                continue
            method = msg.method
            if method == "INVITE":
                if self.offer is None:
                    self.offer = msg
                    self.remote_media = _media_address(msg.body)
                    if self.remote_media and self._sender is None:
                        self._sender = asyncio.ensure_future(self._send_rtp())
                self._send(msg, self._response(msg, "200 OK", self._answer(), to_tag))
            elif method == "BYE":
                self._send(msg, self._response(msg, "200 OK"))
                self.bye_received.set()
                if self._sender:
                    self._sender.cancel()
            elif method not in ("ACK",):
                self._send(msg, self._response(msg, "200 OK"))

    def _send(self, request: SipMessage, data: bytes) -> None:
        """A response goes back the way its request came (RFC 3261 18.2.2)."""
        if request.stream is not None:
            if not request.stream.is_closing():
                request.stream.write(data)
        else:
            self.sip_proto.transport.sendto(data, request.source)

    async def _send_rtp(self) -> None:
        ssrc = random.getrandbits(32)
        seq = random.getrandbits(16)
        ts = random.getrandbits(32)
        start = time.monotonic()
        n = 0
        while True:
            samples = bytes(_ulaw(int(8000 * math.sin(2 * math.pi * 330 * (n * SAMPLES + i) / SAMPLE_RATE)))
                            for i in range(SAMPLES))
            header = struct.pack("!BBHII", 0x80, PCMU, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
            self.rtp_transport.sendto(header + samples, self.remote_media)
            self.rtp_out += 1
            n += 1
            seq += 1
            ts += SAMPLES
            await asyncio.sleep(max(0.0, start + n * PTIME - time.monotonic()))


def _ulaw(sample: int) -> int:
    """G.711 mu-law encoding of one 16-bit sample."""
    sign = 0x80 if sample < 0 else 0
    sample = min(abs(sample), 32635) + 0x84
    exponent = max(0, sample.bit_length() - 8)
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _media_address(sdp: str) -> tuple[str, int] | None:
    host = None
    port = None
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("c=IN IP4 "):
            host = line.split()[2]
        elif line.startswith("m=audio ") and port is None:
            port = int(line.split()[1])
    return (host, port) if host and port else None


# ---------------------------------------------------------------------------
# The WebRTC client (aiortc)
# ---------------------------------------------------------------------------

def loopback_only() -> None:
    """aioice leaves 127.0.0.1 out of its host candidates; a loopback call needs it."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]


def tone_track(frequency: float = 440.0):
    from aiortc.mediastreams import AudioStreamTrack
    from av import AudioFrame

    class Tone(AudioStreamTrack):
        async def recv(self):
            frame = await super().recv()
            base = frame.pts
            pcm = b"".join(
                struct.pack("<h", int(8000 * math.sin(2 * math.pi * frequency * (base + i) / SAMPLE_RATE)))
                for i in range(frame.samples))
            out = AudioFrame(format="s16", layout="mono", samples=frame.samples)
            out.planes[0].update(pcm)
            out.pts, out.sample_rate, out.time_base = frame.pts, SAMPLE_RATE, Fraction(1, SAMPLE_RATE)
            return out

    return Tone()


@dataclass
class DemoResult:
    status: int = 0
    dtls_state: str = ""
    wic_frames_in: int = 0
    wic_tone_frames: int = 0  # decoded frames carrying the core's tone (not silence)
    core_tone_packets: int = 0  # RTP packets at the core carrying the WIC's tone
    wic_rtp_out: int = 0
    core_rtp_in: int = 0
    core_rtp_out: int = 0
    bye_status: int = 0
    core_bye: bool = False
    access_offer: str = ""
    core_offer: str = ""
    access_answer: str = ""
    notes: list[str] = field(default_factory=list)
    # time.monotonic() of each packet (core) and frame (WIC) carrying the other side's tone
    core_tone_times: list[float] = field(default_factory=list)
    wic_tone_times: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.status == 200 and self.dtls_state == "connected" and self.wic_tone_frames > 0
                and self.core_tone_packets > 0 and self.bye_status == 200)


async def run_call(access: tuple[str, int], core_sip: tuple[str, int], seconds: float = 3.0,
                   log=print, request_uri: str | None = None, during=None) -> DemoResult:
    """One call: aiortc WIC → edge access socket → core endpoint at ``core_sip``.

    ``request_uri``, when given, is the INVITE's Request-URI (else the core endpoint's).
    ``during``, when given, is a coroutine function awaited after ``seconds`` of
    media, followed by ``seconds`` more before the BYE (what a test does mid-call).
    """
    from aiortc import RTCPeerConnection, RTCSessionDescription

    loopback_only()
    result = DemoResult()
    core = CoreEndpoint(core_sip, core_sip[0])
    uac = SipUac("127.0.0.1", access)
    pc = RTCPeerConnection()
    frames = tone_frames = 0

    @pc.on("track")
    def on_track(track) -> None:
        async def consume() -> None:
            nonlocal frames, tone_frames
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                frames += 1
                samples = array.array("h", bytes(frame.planes[0])[: frame.samples * 2])
                if samples and max(abs(x) for x in samples) > 1000:
                    tone_frames += 1
                    result.wic_tone_times.append(time.monotonic())
        asyncio.ensure_future(consume())

    try:
        await core.open()
        await uac.open()
        pc.addTransceiver(tone_track(), direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        result.access_offer = pc.localDescription.sdp
        log(f"WIC: INVITE to {access[0]}:{access[1]} with a WebRTC offer (aiortc)")
        reply = await uac.invite(pc.localDescription.sdp, uri=request_uri)
        result.status = reply.status
        if reply.status != 200:
            result.notes.append(f"INVITE answered {reply.first_line}")
            return result
        result.access_answer = reply.body
        result.core_offer = core.offer.body if core.offer else ""
        await pc.setRemoteDescription(RTCSessionDescription(reply.body, "answer"))
        dtls = pc.getTransceivers()[0].sender.transport
        deadline = time.monotonic() + 10
        while dtls.state not in ("connected", "failed", "closed") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        result.dtls_state = dtls.state
        log(f"WIC: DTLS {dtls.state}; media for {seconds:.1f} s")
        await asyncio.sleep(seconds)
        if during is not None:
            await during()
            await asyncio.sleep(seconds)
        sender_stats = await pc.getTransceivers()[0].sender.getStats()
        for stat in sender_stats.values():
            if getattr(stat, "type", "") == "outbound-rtp":
                result.wic_rtp_out = stat.packetsSent
        result.wic_frames_in, result.wic_tone_frames = frames, tone_frames
        result.core_rtp_in, result.core_rtp_out = core.rtp_in, core.rtp_out
        result.core_tone_packets = core.rtp_in_tone
        result.core_tone_times = core.tone_times
        bye = await uac.bye()
        result.bye_status = bye.status
        try:
            await asyncio.wait_for(core.bye_received.wait(), 5)
            result.core_bye = True
        except asyncio.TimeoutError:
            result.notes.append("the core never received the BYE")
        return result
    finally:
        await pc.close()
        uac.close()
        core.close()


def report(result: DemoResult, out=sys.stdout) -> None:
    def section(title: str, sdp: str) -> None:
        print(f"--- {title}", file=out)
        for line in sdp.replace("\r\n", "\n").strip().split("\n"):
            print(f"    {line}", file=out)

    section("SDP offer sent by the WIC (access)", result.access_offer)
    section("SDP offer received by the core (rewritten by the edge)", result.core_offer)
    section("SDP answer received by the WIC (rewritten by the edge)", result.access_answer)
    print(f"INVITE: {result.status}  DTLS-SRTP: {result.dtls_state or '-'}", file=out)
    print(f"WIC -> core: {result.wic_rtp_out} SRTP packets sent by the WIC, "
          f"{result.core_rtp_in} RTP packets received by the core ({result.core_tone_packets} with the tone)",
          file=out)
    print(f"core -> WIC: {result.core_rtp_out} RTP packets sent by the core, "
          f"{result.wic_frames_in} audio frames decoded by the WIC ({result.wic_tone_frames} with the tone)",
          file=out)
    print(f"BYE: {result.bye_status}  (core saw it: {'yes' if result.core_bye else 'no'})", file=out)
    for note in result.notes:
        print(f"note: {note}", file=out)
    print("demo call: " + ("OK" if result.ok else "FAILED"), file=out)


# Where the core endpoint goes when the next hop is taken by the run command's demo core.
DEMO_ENDPOINT = ("127.0.0.5", 5060)


def _free(address: tuple[str, int]) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(address)
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    from mediad.config import load_config

    parser = argparse.ArgumentParser(prog="demo_call", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="configuration file (default: $E2AE_CONFIG, else deploy/e2ae.conf)")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long media flows (default 3)")
    args = parser.parse_args(argv)
    from pathlib import Path

    path = args.config
    if path is None and not __import__("os").environ.get("E2AE_CONFIG"):
        path = str(Path(__file__).resolve().parent / "e2ae.conf")
    config = load_config(path)
    access = config.edge_access_sip.as_tuple()
    core = _host_port(config.edge_core_next_hop)
    request_uri = None
    if not _free(core):
        # "deploy/e2ae run" put its demo core (a registrar) on the next hop: our own core
        # endpoint goes beside it, named by the Request-URI the registrar follows.
        core = DEMO_ENDPOINT
        request_uri = f"sip:demo@{core[0]}:{core[1]}"
    print(f"demo call: WIC (aiortc) -> edge {access[0]}:{access[1]} -> core endpoint {core[0]}:{core[1]}")
    try:
        result = asyncio.run(asyncio.wait_for(run_call(access, core, args.seconds, request_uri=request_uri),
                                              args.seconds + 40))
    except (TimeoutError, asyncio.TimeoutError, OSError) as exc:
        print(f"demo call: FAILED ({exc.__class__.__name__}: {exc}); is the edge running (deploy/e2ae run)?")
        return 1
    report(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
