"""A sequential SIP UAC measuring INVITE→200 with a microsecond clock.

SIPp's response times come from a coarse clock (one kernel tick, 4 ms here),
too coarse for the latency the plugin adds.  :func:`probe` places ``calls``
calls one after the other over UDP (INVITE with the same WebRTC DTLS-SRTP
offer as ``sipp_scenarios/wic_call_uac.xml``, ACK, BYE along the recorded
route, RFC 3261 sections 12.2.1.1 and 16.12) and times each INVITE→200 with
``time.perf_counter``.  Calls that fail or time out are counted, not timed.

The callee is either a SIPp UAS (``probe(target, calls)``) or, with ``uas=(ip,
port)``, a minimal UAS of this module on that address, answering in the same
thread: then each call is also timed from the INVITE sent to the INVITE
received by the callee (the INVITE's forwarding delay, what the plugin adds
to an INVITE alone), and the 200's way back from the callee to the caller.
The probe keeps the SDP of its first answered call as each side saw it: the
offer the callee received (what reaches the core) and the answer the caller
received (what returns to the access side), for :mod:`bench.sdpcheck`.
"""

from __future__ import annotations

import re
import secrets
import socket
import time
from dataclasses import dataclass

SDP = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 {ip}\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "a=msid-semantic: WMS wicstream\r\nm=audio 49152 UDP/TLS/RTP/SAVPF 111 0 8 126\r\nc=IN IP4 {ip}\r\n"
    "b=AS:64\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
    "a=candidate:1467250027 1 udp 2122260223 {ip} 49152 typ host generation 0\r\n"
    "a=ice-ufrag:8hhY\r\na=ice-pwd:asd88fgpdd777uzjYhagZg0mq\r\na=ice-options:trickle\r\n"
    "a=fingerprint:sha-256 D1:2C:BE:AD:C4:F6:64:5C:25:16:11:9C:AF:E7:0F:73:79:36:4E:9C:1E:15:54:39:0C:06:"
    "8B:ED:96:86:00:39\r\na=setup:actpass\r\na=tls-id:{tls_id}\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\na=rtpmap:126 telephone-event/8000\r\na=ptime:20\r\n"
)
ANSWER = (
    "v=0\r\no=core 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVPF 0 126\r\nb=AS:64\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:126 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n"
)
_URI = re.compile(r"<([^>]+)>")
_COPIED = ("via", "record-route", "from", "call-id", "cseq")


def _headers(msg: str, name: str) -> list[str]:
    head = msg.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    return [line.split(":", 1)[1].strip() for line in head if line.split(":", 1)[0].strip().lower() == name]


def _request(method, uri, local, call_id, from_tag, to, cseq, routes=(), body=""):
    branch = "z9hG4bK" + secrets.token_hex(8)
    lines = [f"{method} {uri} SIP/2.0", f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch={branch};rport",
             "Max-Forwards: 70", f'From: "probe" <sip:probe@{local[0]}:{local[1]}>;tag={from_tag}', f"To: {to}",
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method.split()[0]}",
             f"Contact: <sip:probe@{local[0]}:{local[1]}>"]
    lines += [f"Route: {r}" for r in routes]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def _body(msg: str) -> str:
    return msg.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in msg else ""


def _all_headers(msg: str, name: str) -> list[str]:
    """Every ``name`` header line of ``msg``, as sent (for copying into a response)."""
    head = msg.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    return [line for line in head if line.split(":", 1)[0].strip().lower() == name]


class Uas:
    """A callee answering every INVITE with 200 + a plain RTP answer, and every BYE with 200."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.address = self.sock.getsockname()
        self.last_offer = ""

    def _answer(self, request: str, source, body: str = "") -> None:
        lines = ["SIP/2.0 200 OK"]
        for name in _COPIED:
            lines += _all_headers(request, name)
        to = _all_headers(request, "to")[0]
        lines.append(to if ";tag=" in to else to + ";tag=" + secrets.token_hex(4))
        lines.append(f"Contact: <sip:callee@{self.address[0]}:{self.address[1]}>")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), source)

    def serve(self, call_id: str, method: str, deadline: float) -> float | None:
        """Answer requests of ``call_id`` until one ``method`` came; when it came (perf_counter).

        The body of the last INVITE answered is kept in :attr:`last_offer`.
        """
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data, source = self.sock.recvfrom(65535)
            except socket.timeout:
                return None
            arrived = time.perf_counter()
            text = data.decode(errors="replace")
            if text.startswith("SIP/2.0 ") or _headers(text, "call-id") != [call_id]:
                continue
            got = text.split(" ", 1)[0]
            if got == "INVITE":
                self.last_offer = _body(text)
                self._answer(text, source, ANSWER.format(ip=self.address[0], port=40000))
            elif got == "BYE":
                self._answer(text, source)
            if got == method:
                return arrived

    def close(self) -> None:
        self.sock.close()


def _await(sock, call_id, cseq_method, deadline):
    """The next final response of ``call_id`` to ``cseq_method``, or None at the deadline."""
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65535).decode(errors="replace")
        except socket.timeout:
            return None
        if not data.startswith("SIP/2.0 ") or _headers(data, "call-id") != [call_id]:
            continue
        cseq = _headers(data, "cseq")
        if not cseq or not cseq[0].endswith(cseq_method):
            continue
        if int(data[8:11]) >= 200:
            return data


@dataclass
class Call:
    """One answered call: its times in seconds and the SDP each end received."""

    invite_200: float
    invite_forward: float | None  # INVITE sent -> received by the probe's UAS
    answer_sdp: str  # the 200's body as the caller received it
    offer_sdp: str | None  # the INVITE's body as the probe's UAS received it


def one_call(sock, target, local, timeout: float = 5.0, uas: Uas | None = None) -> Call | None:
    """One call, None if it failed."""
    call_id = secrets.token_hex(12) + "@probe"
    from_tag = secrets.token_hex(6)
    uri = f"sip:callee@{target[0]}:{target[1]}"
    to = f"<{uri}>"
    body = SDP.format(ip=local[0], tls_id=secrets.token_hex(16))
    invite = _request("INVITE", uri, local, call_id, from_tag, to, 1, body=body)
    started = time.perf_counter()
    sock.sendto(invite, target)
    forwarded = None
    if uas is not None:
        arrived = uas.serve(call_id, "INVITE", started + timeout)
        if arrived is None:
            return None
        forwarded = arrived - started
    reply = _await(sock, call_id, "INVITE", started + timeout)
    elapsed = time.perf_counter() - started
    if reply is None or not reply.startswith("SIP/2.0 200"):
        return None
    to_hdr = _headers(reply, "to")[0]
    contact = _URI.search(_headers(reply, "contact")[0]).group(1)
    rr = [f"<{u}>" for h in _headers(reply, "record-route") for u in _URI.findall(h)]
    routes = list(reversed(rr))
    first_hop = target
    if routes:
        host_port = _URI.search(routes[0]).group(1).split("@")[-1].split(";")[0].replace("sip:", "")
        host, _, port = host_port.partition(":")
        first_hop = (host, int(port or 5060))
    sock.sendto(_request("ACK", contact, local, call_id, from_tag, to_hdr, 1, routes), first_hop)
    sock.sendto(_request("BYE", contact, local, call_id, from_tag, to_hdr, 2, routes), first_hop)
    offer = uas.last_offer if uas is not None else None
    if uas is not None:
        uas.serve(call_id, "BYE", time.perf_counter() + timeout)
    _await(sock, call_id, "BYE", time.perf_counter() + timeout)
    return Call(elapsed, forwarded, _body(reply), offer)


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    values = sorted(values)
    if not values:
        return None, None
    return tuple(values[min(len(values) - 1, int(q * len(values)))] for q in (0.5, 0.99))


def probe(target: tuple[str, int], calls: int, local_ip: str = "127.0.0.1", pause: float = 0.02,
          uas: tuple[str, int] | None = None) -> dict:
    """``calls`` calls one after the other; with ``uas``, this module's UAS answers on that address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((local_ip, 0))
    local = sock.getsockname()
    callee = Uas(uas) if uas is not None else None
    times, forwarding, failed = [], [], 0
    first: Call | None = None
    try:
        for _ in range(calls):
            call = one_call(sock, target, local, uas=callee)
            if call is None:
                failed += 1
            else:
                first = first or call
                times.append(call.invite_200 * 1000)
                if call.invite_forward is not None:
                    forwarding.append(call.invite_forward * 1000)
            time.sleep(pause)
    finally:
        sock.close()
        if callee is not None:
            callee.close()
    p50, p99 = _percentiles(times)
    result = {"calls": calls, "answered": len(times), "failed": failed, "p50_ms": p50, "p99_ms": p99,
              "sdp": {"access": first.answer_sdp, "core": first.offer_sdp} if first is not None else None}
    if callee is not None:
        result["invite_forward_p50_ms"], result["invite_forward_p99_ms"] = _percentiles(forwarding)
    return result
