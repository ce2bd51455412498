"""A sequential SIP UAC measuring INVITE→200 with a microsecond clock.

SIPp's response times come from a coarse clock (one kernel tick, 4 ms here),
too coarse for the latency the plugin adds.  :func:`probe` places ``calls``
calls one after the other over UDP (INVITE with the same WebRTC DTLS-SRTP
offer as ``sipp_scenarios/wic_call_uac.xml``, ACK, BYE along the recorded
route, RFC 3261 sections 12.2.1.1 and 16.12) and times each INVITE→200 with
``time.perf_counter``.  The callee is a SIPp UAS.  Calls that fail or time out
are counted, not timed.
"""

from __future__ import annotations

import re
import secrets
import socket
import time

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
_URI = re.compile(r"<([^>]+)>")


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


def one_call(sock, target, local, timeout: float = 5.0) -> float | None:
    call_id = secrets.token_hex(12) + "@probe"
    from_tag = secrets.token_hex(6)
    uri = f"sip:callee@{target[0]}:{target[1]}"
    to = f"<{uri}>"
    body = SDP.format(ip=local[0], tls_id=secrets.token_hex(16))
    invite = _request("INVITE", uri, local, call_id, from_tag, to, 1, body=body)
    started = time.perf_counter()
    sock.sendto(invite, target)
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
    _await(sock, call_id, "BYE", time.perf_counter() + timeout)
    return elapsed


def probe(target: tuple[str, int], calls: int, local_ip: str = "127.0.0.1", pause: float = 0.02) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((local_ip, 0))
    local = sock.getsockname()
    times, failed = [], 0
    try:
        for _ in range(calls):
            t = one_call(sock, target, local)
            if t is None:
                failed += 1
            else:
                times.append(t * 1000)
            time.sleep(pause)
    finally:
        sock.close()
    times.sort()
    pick = (lambda q: times[min(len(times) - 1, int(q * len(times)))]) if times else (lambda q: None)
    return {"calls": calls, "answered": len(times), "failed": failed, "p50_ms": pick(0.5), "p99_ms": pick(0.99)}
