"""The demo's IMS core, for ``deploy/e2ae run`` and the browser tests: a registrar and a tone.

* :class:`CoreRegistrar`: a second Kamailio (``deploy/core_registrar.cfg``) on the
  edge's core next hop: registrar + usrloc with Path support (RFC 3327), and a proxy
  that sends requests for users not registered there to the core UA.
* :class:`CoreUa`: the core's user agent, a plain SIP/RTP endpoint over UDP (PCMU over
  ``RTP/AVPF`` or ``RTP/AVP``, a 330 Hz tone): it answers every INVITE that reaches it
  (one call at a time) and places calls to registered users through the registrar;
  it counts the RTP it receives (and how much of it carries sound) and sends.

Neither is part of the edge: they stand in for the operator's IMS core on loopback.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from deploy.demo_call import PCMU, SAMPLES, SipMessage, _ulaw

ROOT = Path(__file__).resolve().parent.parent
REGISTRAR_CFG = ROOT / "deploy" / "core_registrar.cfg"
DOMAIN = "e2ae.test"
CORE_UA_HOST = "127.0.0.4"
ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


def _sip_ping(host: str, port: int, timeout: float = 0.3) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        s.settimeout(timeout)
        branch = "z9hG4bK%x" % random.getrandbits(48)
        probe = (f"OPTIONS sip:ping@{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{s.getsockname()[1]};"
                 f"branch={branch}\r\nMax-Forwards: 0\r\nFrom: <sip:p@{host}>;tag=p\r\nTo: <sip:ping@{host}>\r\n"
                 f"Call-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
        try:
            s.sendto(probe.encode(), (host, port))
            return s.recv(2000).startswith(b"SIP/2.0")
        except OSError:
            return False


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, 15)
        proc.wait(10)
    except (ProcessLookupError, PermissionError):
        proc.terminate()
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


class CoreRegistrar:
    def __init__(self, listen: tuple[str, int], core_ua: tuple[str, int]) -> None:
        self.listen = listen
        self.core_ua = core_ua
        self.dir = Path(tempfile.mkdtemp(prefix="e2ae-core-"))
        self.log = self.dir / "registrar.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        host, port = self.listen
        exe = shutil.which("kamailio") or "/usr/sbin/kamailio"
        cmd = [exe, "-DD", "-E", "-f", str(REGISTRAR_CFG), "-Y", str(self.dir), "-P", str(self.dir / "k.pid"),
               "-m", "32", "-M", "4", "-A", f"CORE_UDP=udp:{host}:{port}", "-A", f"CORE_TCP=tcp:{host}:{port}",
               "-A", f'CORE_UA="sip:{self.core_ua[0]}:{self.core_ua[1]}"', "-A", f'CORE_UA_IP="{self.core_ua[0]}"',
               "-A", f'CORE_CTL="unixs:{self.dir}/ctl.sock"']
        return cmd

    def start(self, timeout: float = 20.0) -> None:
        """Start it with its output in its own log file, and wait until it answers."""
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(self.command(), cwd=self.dir, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 20.0) -> None:
        host, port = self.listen
        deadline = time.monotonic() + timeout
        while not _sip_ping(host, port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the core registrar did not start: {self.log_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        _stop(self.proc)
        self.remove_directory()

    def remove_directory(self) -> None:
        """Its runtime directory (log, pid file, ctl socket), unless E2AE_KEEP_LOGS is set."""
        if not os.environ.get("E2AE_KEEP_LOGS"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def bindings(self) -> str:
        """``kamctl ul show`` through the ctl module's socket: the registrar's usrloc."""
        out = subprocess.run(["kamcmd", "-s", f"unixs:{self.dir}/ctl.sock", "ul.dump"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout + out.stderr

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


class _SipSocket(asyncio.DatagramProtocol):
    def __init__(self, owner: "CoreUa") -> None:
        self.owner = owner
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        try:
            msg = SipMessage.parse(data, addr)
        except (ValueError, IndexError):
            return
        self.owner.on_sip(msg, data.decode("utf-8", "replace"))


@dataclass
class RtpCount:
    received: int = 0
    sound: int = 0  # packets whose decoded peak is over QUIET
    sent: int = 0
    sources: set = field(default_factory=set)


QUIET = 1000


def _ulaw_peak(payload: bytes) -> int:
    peak = 0
    for byte in payload:
        b = ~byte & 0xFF
        magnitude = ((((b & 0x0F) << 3) + 0x84) << ((b >> 4) & 0x07)) - 0x84
        peak = max(peak, magnitude)
    return peak


class CoreUa:
    """The core's plain SIP/RTP user agent (UDP): answers INVITEs, calls registered users."""

    def __init__(self, host: str, port: int, registrar: tuple[str, int], *, profile: str = "RTP/AVPF",
                 refuse_profiles: tuple[str, ...] = ()) -> None:
        self.host = host
        self.port = port
        self.registrar = registrar
        self.profile = profile
        # Offers whose m=audio proto is one of these get 488 (a plain RTP/AVP UA).
        self.refuse_profiles = refuse_profiles
        self.sip: _SipSocket | None = None
        self.rtp_transport = None
        self.rtp_port = 0
        self.rtp = RtpCount()
        self.remote_media: tuple[str, int] | None = None
        self.offers: list[str] = []  # bodies of INVITEs received
        self.answers: list[str] = []  # bodies of 2xx received to our INVITEs
        self.requests: list[str] = []  # request lines received
        self.byes = 0
        self.calls_ended = 0
        self._waiters: dict[str, asyncio.Future] = {}
        self._provisional: dict[str, list[int]] = {}
        self._sender: asyncio.Task | None = None
        self._dialog: dict | None = None
        self.to_tag = "%x" % random.getrandbits(40)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        _, self.sip = await loop.create_datagram_endpoint(lambda: _SipSocket(self), local_addr=self.address)
        ua = self

        class Rtp(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr) -> None:
                if len(data) >= 12 and data[0] >> 6 == 2 and data[1] & 0x7F == PCMU:
                    ua.rtp.received += 1
                    ua.rtp.sources.add(addr)
                    if _ulaw_peak(data[12:]) > QUIET:
                        ua.rtp.sound += 1

        self.rtp_transport, _ = await loop.create_datagram_endpoint(Rtp, local_addr=(self.host, 0))
        self.rtp_port = self.rtp_transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self._sender:
            self._sender.cancel()
        if self.sip and self.sip.transport:
            self.sip.transport.close()
        if self.rtp_transport:
            self.rtp_transport.close()

    # -- SIP --------------------------------------------------------------------
    def _send(self, text: str, dest) -> None:
        self.sip.transport.sendto(text.encode(), dest)

    @property
    def sdp_sent(self) -> str:
        """The SDP it answers and offers with (no a=rtcp-mux: RTCP on the next port)."""
        return self._sdp()

    def _sdp(self, offer: str = "") -> str:
        # RFC 3264 6.1: an answer's direction mirrors the offer's (hold: sendonly -> recvonly).
        found = re.search(r"^a=(sendrecv|sendonly|recvonly|inactive)\r?$", offer, re.M)
        direction = ANSWER_DIRECTION[found.group(1)] if found else "sendrecv"
        return ("v=0\r\n"
                f"o=core {random.getrandbits(31)} 1 IN IP4 {self.host}\r\n"
                "s=-\r\n"
                f"c=IN IP4 {self.host}\r\n"
                "t=0 0\r\n"
                f"m=audio {self.rtp_port} {self.profile} 0\r\n"
                "a=rtpmap:0 PCMU/8000\r\n"
                "a=ptime:20\r\n"
                f"a={direction}\r\n")

    def _response(self, req: SipMessage, status: str, body: str = "", tag: bool = True) -> str:
        lines = [f"SIP/2.0 {status}"]
        for name, value in req.headers:
            if name in ("via", "from", "call-id", "cseq", "record-route"):
                lines.append(f"{name.title()}: {value}")
            elif name == "to":
                lines.append(f"To: {value}" + (f";tag={self.to_tag}" if tag and "tag=" not in value else ""))
        lines.append(f"Contact: <sip:core@{self.host}:{self.port}>")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def on_sip(self, msg: SipMessage, raw: str) -> None:
        if msg.status:
            key = f"{msg.get('call-id')} {msg.get('cseq')}"
            if msg.status < 200:
                self._provisional.setdefault(key, []).append(msg.status)
            waiter = self._waiters.get(key)
            if waiter is not None and msg.status >= 200 and not waiter.done():
                waiter.set_result(msg)
            return
        self.requests.append(msg.first_line)
        method = msg.method
        if method == "INVITE":
            self.offers.append(msg.body)
            proto = re.search(r"^m=audio \d+ (\S+)", msg.body, re.M)
            if proto and proto.group(1) in self.refuse_profiles:
                self._send(self._response(msg, "488 Not Acceptable Here"), msg.source)
                return
            self._set_remote(msg.body)
            self._dialog = {"call_id": msg.get("call-id"), "peer": msg.source, "incoming": msg}
            self._send(self._response(msg, "200 OK", self._sdp(msg.body)), msg.source)
        elif method == "BYE":
            self._send(self._response(msg, "200 OK"), msg.source)
            # Only this call's BYE ends its media: a late BYE of an earlier call (a
            # retransmission) must not.
            if self._dialog is not None and msg.get("call-id") == self._dialog["call_id"]:
                self.byes += 1
                self.calls_ended += 1
                self._stop_rtp()
        elif method != "ACK":
            self._send(self._response(msg, "200 OK"), msg.source)

    def _set_remote(self, sdp: str) -> None:
        host = re.search(r"^c=IN IP4 (\S+)", sdp, re.M)
        port = re.search(r"^m=audio (\d+)", sdp, re.M)
        if host and port:
            self.remote_media = (host.group(1), int(port.group(1)))
            if self._sender is None:
                self._sender = asyncio.ensure_future(self._send_rtp())

    def _stop_rtp(self) -> None:
        if self._sender:
            self._sender.cancel()
            self._sender = None

    async def _send_rtp(self) -> None:
        ssrc, seq, ts = random.getrandbits(32), random.getrandbits(16), random.getrandbits(32)
        start, n = time.monotonic(), 0
        while True:
            samples = bytes(_ulaw(int(8000 * math.sin(2 * math.pi * 330 * (n * SAMPLES + i) / 8000)))
                            for i in range(SAMPLES))
            header = struct.pack("!BBHII", 0x80, PCMU, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
            self.rtp_transport.sendto(header + samples, self.remote_media)
            self.rtp.sent += 1
            n += 1
            seq += 1
            ts += SAMPLES
            await asyncio.sleep(max(0.0, start + n * 0.02 - time.monotonic()))

    async def _transaction(self, request: str, method: str, cseq: int, call_id: str, dest,
                           timeout: float) -> SipMessage:
        key = f"{call_id} {cseq} {method}"
        future = asyncio.get_running_loop().create_future()
        self._waiters[key] = future
        deadline = time.monotonic() + timeout
        interval = 0.5
        try:
            while True:
                self._send(request, dest)
                try:
                    return await asyncio.wait_for(asyncio.shield(future), min(interval, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"no final response to {method}") from None
                    if self._provisional.get(key):
                        interval = deadline - time.monotonic()  # no retransmission after a 1xx
                    else:
                        interval = min(interval * 2, 4.0)
        finally:
            self._waiters.pop(key, None)

    async def call(self, user: str, timeout: float = 20.0) -> SipMessage:
        """INVITE ``sip:user@DOMAIN`` through the registrar, and ACK its final response."""
        call_id = "%x@%s" % (random.getrandbits(64), self.host)
        tag = "%x" % random.getrandbits(40)
        branch = "z9hG4bK%x" % random.getrandbits(48)
        uri = f"sip:{user}@{DOMAIN}"
        body = self._sdp()
        head = (f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:core@{DOMAIN}>;tag={tag}\r\nTo: <{uri}>\r\n"
                f"Call-ID: {call_id}\r\n")
        invite = (f"INVITE {uri} SIP/2.0\r\n{head}CSeq: 1 INVITE\r\n"
                  f"Contact: <sip:core@{self.host}:{self.port}>\r\nContent-Type: application/sdp\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n{body}")
        reply = await self._transaction(invite, "INVITE", 1, call_id, self.registrar, timeout)
        to = reply.get("to")
        if reply.status >= 300:
            self._send(f"ACK {uri} SIP/2.0\r\n{head.replace('To: <' + uri + '>', 'To: ' + to)}CSeq: 1 ACK\r\n"
                       "Content-Length: 0\r\n\r\n", self.registrar)
            return reply
        self.answers.append(reply.body)
        self._set_remote(reply.body)
        route = list(reversed(reply.all("record-route")))
        target = re.search(r"<([^>]+)>", reply.get("contact")).group(1)
        self._dialog = {"call_id": call_id, "tag": tag, "to": to, "route": route, "target": target, "cseq": 1,
                        "uri": uri}
        self._in_dialog("ACK", 1)
        return reply

    def _in_dialog(self, method: str, cseq: int) -> tuple[str, tuple[str, int]]:
        d = self._dialog
        routes = "".join(f"Route: {r}\r\n" for r in d["route"])
        branch = "z9hG4bK%x" % random.getrandbits(48)
        text = (f"{method} {d['target']} SIP/2.0\r\nVia: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport\r\n"
                f"{routes}Max-Forwards: 70\r\nFrom: <sip:core@{DOMAIN}>;tag={d['tag']}\r\nTo: {d['to']}\r\n"
                f"Call-ID: {d['call_id']}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n")
        first = re.search(r"<sips?:(?:[^@>]*@)?([^:;>]+)(?::(\d+))?", d["route"][0]) if d["route"] else None
        dest = (first.group(1), int(first.group(2) or 5060)) if first else self.registrar
        if method == "ACK":
            self._send(text, dest)
        return text, dest

    async def bye(self, timeout: float = 10.0) -> SipMessage:
        """BYE in the dialog of our last call."""
        self._dialog["cseq"] += 1
        cseq = self._dialog["cseq"]
        text, dest = self._in_dialog("BYE", cseq)
        reply = await self._transaction(text, "BYE", cseq, self._dialog["call_id"], dest, timeout)
        self._stop_rtp()
        return reply

    def provisional(self, call_id_prefix: str = "") -> list[int]:
        return [s for key, statuses in self._provisional.items() for s in statuses if key.startswith(call_id_prefix)]


__all__ = ["CORE_UA_HOST", "DOMAIN", "CoreRegistrar", "CoreUa", "RtpCount"]
