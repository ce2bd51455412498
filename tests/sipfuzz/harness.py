"""SIP-level fuzzing of the edge, the I/O half: user agents on both sides of a real edge
(Kamailio + plugin, mediad, Redis), the flows of :mod:`tests.sipfuzz.mutate`, and the invariants.

Theory of operation
-------------------
The harness owns two SIP sockets: the WIC's on 127.0.0.1 (it places calls to
the edge's access socket and answers the calls the edge sends it) and the
core's on the edge's core next hop, 127.0.0.3 (it answers the calls the edge
relays and places calls to the edge's core socket); and one pair of media
sinks per side that the SDP bodies point at (and that drain whatever mediad
sends them: DTLS ClientHellos).  Requests are retransmitted as RFC 3261
17.1.1.2/17.1.2.2 say (Timer A/E from 500 ms) until a final response or the
bounded wait; responses are matched by the top Via's branch.  Unless a case
asks for more, each side answers every request with a 200 (an INVITE or
UPDATE with SDP with an answer of its own making, one m-line per offered
m-line), so the only 4xx/5xx the harness sees are the edge's.

Cases run ``concurrency`` at a time, in batches.  Invariants checked:

* per request the harness sends: a final response within ``answer_timeout``
  (``no_final_answer``); a 4xx carries a Warning (``4xx_without_warning``);
  no 5xx but a 503 with Retry-After (``5xx``, ``503_without_retry_after``) for
  an unavailable mediad or Redis (``503_not_unavailable``: any other cause);
* per message the edge delivers: nothing reaching the core carries the
  access side's security attributes (``secrets_to_core``: a=fingerprint,
  a=ice-pwd, a=crypto; not in the answer to a core offer that itself carries
  a=fingerprint: that DTLS is end to end); an SDP with a live m-line of a profile the edge
  protects (DTLS-SRTP, UDPTL/DTLS, SCTP/DTLS data channels: not one it passes through as it
  is, such as an unknown profile) reaching the WIC in an offer or in a 2xx/18x answer has the
  edge's fingerprint, or, for a 2xx the edge could not convert, a Warning
  (``unconverted_to_access``); a core 2xx whose body is mutated but framed reaches the WIC
  (``reply_dropped``; one that does not frame its body is discarded, RFC 3261 18.3, and the
  core's clean retransmission must then complete the call);
* after each batch: Kamailio's main process and workers are the same pids
  (``kamailio_died``, restarted to go on), mediad is alive (``mediad_died``),
  and each case's dialog has left Redis and mediad within ``settle_timeout``
  (``leftover_state``);
* at the end: no dialog in mediad, no key of the edge's in Redis
  (``leftover_state``), mediad and Kamailio hold no more fds and sockets
  than after the warm-up (``extra_fds``), and no exception escaped the plugin
  into Kamailio (``plugin_exception``: app_python3 logged a traceback; the
  message then went on as if the plugin had not seen it).

Why a hand-made user agent: the fuzz must put exact bytes on the wire (NUL
and non-UTF-8 bodies, Content-Lengths that do not frame the body, duplicated
or missing headers), which SIP stacks (pjsua2, SIPp's XML scenarios, that
cannot even carry a NUL) refuse or repair; this one only builds, sends,
retransmits and matches, and reads what comes back leniently.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
import secrets
import socket
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from sdp_rules import datachannel, media
from tests.sipfuzz.mutate import (CORE_FLOWS, FLOWS, Case, Draft, Seeds, keep_on_loopback, make_case,
                                  reply_draft, request_draft)

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length", "c": "content-type",
           "m": "contact", "k": "supported", "s": "subject"}
T1 = 0.5
MAX_DATAGRAM = 65507
CLEAN_MARK = "X-Fuzz-Clean"
SECRETS = (b"a=fingerprint", b"a=ice-pwd", b"a=crypto")
# The access profiles the edge terminates (and so must answer with its own fingerprint).
PROTECTED_PROTOS = frozenset(media.ACCESS_PROTOS) | frozenset(datachannel.ACCESS_PROTOS)


def _protected(proto: str, fmt: str) -> bool:
    """An m-line the edge terminates: a DTLS media profile, or SCTP/DTLS carrying data channels."""
    if proto in datachannel.ACCESS_PROTOS:
        return fmt == "webrtc-datachannel"
    return proto in PROTECTED_PROTOS


# A fingerprint for the WIC's answers (no handshake happens: the harness sends no media).
WIC_FINGERPRINT = ":".join(f"{b:02X}" for b in hashlib.sha256(b"e2ae sipfuzz wic").digest())


# ---------------------------------------------------------------------------
# Messages received
# ---------------------------------------------------------------------------

# The edge the fuzz drives has no TCP socket toward the core: its core agent speaks UDP
# only, and on loopback a datagram carries any message the fuzz makes.  The move to
# TCP over 1300 bytes (RFC 3261 18.1.1) has its own test (test_edge_hardening).
EDGE_EXTRA = "core_tcp = off\n"

# The headers without which Kamailio's core drops a request before any route runs.
CORE_REQUIRED = ("via", "from", "to", "call-id", "cseq")


@dataclass
class Msg:
    first: str
    headers: list[tuple[str, str]]
    body: bytes
    source: tuple[str, int]

    @classmethod
    def parse(cls, data: bytes, source) -> "Msg | None":
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            head, sep, rest = data.partition(b"\n\n")
        lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
        if not lines or not lines[0]:
            return None
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:
                headers[-1] = (headers[-1][0], headers[-1][1] + " " + line.strip())
                continue
            name, _, value = line.partition(":")
            name = name.strip().lower()
            headers.append((COMPACT.get(name, name), value.strip()))
        msg = cls(lines[0], headers, rest, source)
        length = msg.get("content-length")
        if length.isdigit() and int(length) <= len(rest):
            msg.body = rest[:int(length)]
        return msg

    def get(self, name: str) -> str:
        for key, value in self.headers:
            if key == name:
                return value
        return ""

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def values(self, name: str) -> list[str]:
        """Comma-separated values of every ``name`` header (Via, Record-Route)."""
        out = []
        for value in self.all(name):
            out += [v.strip() for v in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", value) if v.strip()]
        return out

    @property
    def status(self) -> int:
        if not self.first.startswith("SIP/2.0 "):
            return 0
        try:
            return int(self.first.split()[1])
        except (IndexError, ValueError):
            return 0

    @property
    def method(self) -> str:
        if self.first.startswith("SIP/2.0"):
            return self.get("cseq").split()[-1] if self.get("cseq") else ""
        return self.first.split(" ", 1)[0]

    @property
    def branch(self) -> str:
        vias = self.values("via")
        m = re.search(r";\s*branch=([^;,\s]+)", vias[0]) if vias else None
        return m.group(1) if m else ""

    @property
    def call_id(self) -> str:
        return self.get("call-id")

    @property
    def tag(self) -> str:
        m = re.search(r";\s*tag=([^;,\s>]+)", self.get("to"))
        return m.group(1) if m else ""


def _uri(name_addr: str) -> str:
    m = re.search(r"<([^>]+)>", name_addr)
    return m.group(1) if m else name_addr.split(";")[0].strip()


def _host_port(uri: str) -> tuple[str, int]:
    m = re.match(r"sips?:(?:[^@]+@)?([^;:>]+)(?::(\d+))?", uri)
    if not m:
        raise ValueError(f"cannot route to {uri!r}")
    return m.group(1), int(m.group(2) or 5060)


def sdp_of(msg: Msg) -> bytes:
    """The SDP in a message's body, as a user agent would see it: the body labelled
    application/sdp, or a multipart body's first application/sdp part."""
    ctype = msg.get("content-type").lower()
    if ctype.startswith("multipart/"):
        m = re.search(r'boundary="?([^";]+)"?', msg.get("content-type"))
        if not m:
            return b""
        for part in msg.body.split(b"--" + m.group(1).encode()):
            head, _, content = part.partition(b"\r\n\r\n")
            if b"application/sdp" in head.lower():
                return content
        return b""
    media_type = ctype.split(";", 1)[0].strip()
    return msg.body if media_type == "application/sdp" or (not ctype and msg.body[:4] == b"v=0\r") else b""


def make_answer(offer: bytes, address: str, port: int, access: bool) -> bytes:
    """An answer to ``offer``: one m-line per offered m-line, its first format; the WIC's
    with DTLS-SRTP and ICE-lite attributes, the core's plain."""
    lines = [f"v=0", f"o=fuzz {random.getrandbits(31)} 1 IN IP4 {address}", "s=-", f"c=IN IP4 {address}", "t=0 0"]
    if access:
        lines.append("a=ice-lite")
    sections = re.split(rb"\r?\n(?=m=)", offer)
    for section in sections[1:]:
        section_lines = section.decode("utf-8", "replace").splitlines()
        parts = section_lines[0][2:].split()
        if len(parts) < 4:
            continue
        media, oport, proto, fmt = parts[0], parts[1], parts[2], parts[3]
        rejected = oport.split("/")[0] == "0"
        lines.append(f"m={media} {0 if rejected else port} {proto} {fmt}")
        if rejected:
            continue
        for line in section_lines[1:]:
            if line.startswith((f"a=rtpmap:{fmt} ", "a=mid:", f"a=fmtp:{fmt} ")) or line in ("a=rtcp-mux",):
                lines.append(line)
            if line.startswith("a=sctp-port:") or line.startswith("a=T38"):
                lines.append(line)
        if access:
            lines += [f"a=fingerprint:sha-256 {WIC_FINGERPRINT}", "a=setup:active", "a=ice-ufrag:fuzz",
                      "a=ice-pwd:fuzzfuzzfuzzfuzzfuzzfuzz", f"a=candidate:1 1 udp 2130706431 {address} {port} typ host"]
        lines.append("a=sendrecv")
    return ("\r\n".join(lines) + "\r\n").encode()


def make_offer(address: str, port: int, access: bool) -> bytes:
    """One audio stream, PCMU: the WIC's with DTLS-SRTP and ICE attributes, the core's plain."""
    lines = ["v=0", f"o=fuzz {random.getrandbits(31)} 1 IN IP4 {address}", "s=-", f"c=IN IP4 {address}", "t=0 0"]
    if access:
        lines += [f"m=audio {port} UDP/TLS/RTP/SAVPF 0", "a=rtpmap:0 PCMU/8000", "a=rtcp-mux",
                  f"a=fingerprint:sha-256 {WIC_FINGERPRINT}", "a=setup:actpass", "a=ice-ufrag:fuzz",
                  "a=ice-pwd:fuzzfuzzfuzzfuzzfuzzfuzz", f"a=candidate:1 1 udp 2130706431 {address} {port} typ host"]
    else:
        lines += [f"m=audio {port} RTP/AVP 0", "a=rtpmap:0 PCMU/8000"]
    lines.append("a=sendrecv")
    return ("\r\n".join(lines) + "\r\n").encode()


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------

@dataclass
class Violation:
    kind: str
    case: int
    detail: str


@dataclass
class Stats:
    sent: Counter = field(default_factory=Counter)  # by method, every datagram sent (retransmissions included)
    requests: Counter = field(default_factory=Counter)  # requests placed (one per transaction)
    finals: Counter = field(default_factory=Counter)  # final answers to the harness's requests, by status
    violations: list[Violation] = field(default_factory=list)
    leftovers: dict[str, list[str]] = field(default_factory=dict)
    fds: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (baseline, end)
    restarts: list[str] = field(default_factory=list)
    cases: int = 0


# ---------------------------------------------------------------------------
# User agents
# ---------------------------------------------------------------------------

class ClientTx:
    """One client transaction: sends, retransmits (Timer A/E), collects responses."""

    def __init__(self, ua: "Agent", data: bytes, dest, method: str, branch: str) -> None:
        self.ua, self.data, self.dest, self.method, self.branch = ua, data, dest, method, branch
        self.responses: list[Msg] = []
        self.changed = asyncio.Event()
        self.final: Msg | None = None
        self._task = asyncio.ensure_future(self._retransmit())

    def deliver(self, msg: Msg) -> None:
        self.responses.append(msg)
        if msg.status >= 200 and self.final is None:
            self.final = msg
        self.changed.set()

    async def _retransmit(self) -> None:
        interval = T1
        while True:
            self.ua.send(self.data, self.dest, self.method)
            await asyncio.sleep(interval)
            if self.final is not None or (self.method == "INVITE" and self.responses):
                return
            interval = min(interval * 2, 4.0)

    async def wait(self, predicate: Callable[[Msg], bool], timeout: float) -> Msg | None:
        deadline = asyncio.get_running_loop().time() + timeout
        seen = 0
        while True:
            if self._task.done() and not self._task.cancelled() and self._task.exception() is not None:
                raise self._task.exception()  # it could not send: the harness's fault, not the edge's
            for msg in self.responses[seen:]:
                if predicate(msg):
                    return msg
            seen = len(self.responses)
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                return None

    async def final_response(self, timeout: float) -> Msg | None:
        return await self.wait(lambda m: m.status >= 200, timeout)

    def close(self) -> None:
        self._task.cancel()
        self.ua.transactions.pop(self.branch, None)


RequestHandler = Callable[[Msg], Awaitable[None]]


class Agent(asyncio.DatagramProtocol):
    """One side's SIP socket: client transactions by branch, requests to handlers by Call-ID."""

    def __init__(self, name: str, address: str, port: int, sink: int, fuzz: "Fuzz") -> None:
        self.name, self.address, self.port, self.sink, self.fuzz = name, address, port, sink, fuzz
        self.transport: asyncio.DatagramTransport | None = None
        self.transactions: dict[str, ClientTx] = {}
        self.handlers: dict[str, RequestHandler] = {}
        self.received: dict[str, list[Msg]] = defaultdict(list)  # requests by Call-ID
        self.arrived = asyncio.Event()
        self.to_tag = "fz" + secrets.token_hex(4)

    @property
    def local(self) -> str:
        return f"{self.address}:{self.port}"

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((self.address, self.port))
        self.port = sock.getsockname()[1]
        await loop.create_datagram_endpoint(lambda: self, sock=sock)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, data: bytes, dest, method: str) -> None:
        if len(data) > MAX_DATAGRAM:
            raise ValueError(f"{method}: {len(data)} bytes do not fit a UDP datagram")
        self.fuzz.stats.sent[method] += 1
        if self.fuzz.trace:
            self.fuzz.log(f"{self.name} -> {dest[0]}:{dest[1]}\n{data.decode('utf-8', 'backslashreplace')}")
        self.transport.sendto(data, dest)

    def datagram_received(self, data: bytes, addr) -> None:
        if self.fuzz.trace:
            self.fuzz.log(f"{self.name} <- {addr[0]}:{addr[1]}\n{data.decode('utf-8', 'backslashreplace')}")
        msg = Msg.parse(data, addr)
        if msg is None:
            return
        self.fuzz.inspect(self, msg)
        if msg.status:
            tx = self.transactions.get(msg.branch)
            if tx is not None:
                tx.deliver(msg)
            return
        self.received[msg.call_id].append(msg)
        self.arrived.set()
        if msg.method == "ACK":
            return
        handler = self.handlers.get(msg.call_id, self.default_handler)
        asyncio.ensure_future(handler(msg))

    def request(self, data: bytes, dest, method: str, branch: str) -> ClientTx:
        tx = ClientTx(self, data, dest, method, branch)
        self.transactions[branch] = tx
        return tx

    # -- the UAS side -----------------------------------------------------------------
    def reply(self, request: Msg, status: str, body: bytes = b"", extra: list[str] | None = None,
              draft: Draft | None = None) -> None:
        values = self.reply_values(request)
        if draft is None:
            draft = reply_draft(body, status)
            draft.headers += extra or []
        self.send(draft.render(values), request.source, f"{status.split()[0]} {request.method}")

    def reply_values(self, request: Msg) -> dict[str, str]:
        to_tag = request.tag or self.to_tag
        return {
            "vias": "\r\n".join(f"Via: {v}" for v in request.values("via")),
            "record_routes": "\r\n".join(f"Record-Route: {v}" for v in request.values("record-route")),
            "from": request.get("from"), "to": re.sub(r";\s*tag=[^;,\s>]*", "", request.get("to")),
            "to_tag": to_tag, "call_id": request.call_id, "cseq": request.get("cseq"), "local": self.local,
        }

    def answer_for(self, request: Msg) -> bytes:
        """An answer to the request's offer; to an INVITE without one, an offer (RFC 3261
        13.2.1: the offer then comes in the 2xx)."""
        offer = sdp_of(request)
        if offer.strip():
            return make_answer(offer, self.address, self.sink, access=self.name == "wic")
        if request.method == "INVITE" and not request.tag and not request.body.strip():
            return make_offer(self.address, self.sink, access=self.name == "wic")
        return b""  # a body it cannot read: no answer (it sends no 4xx, module docstring)

    async def default_handler(self, msg: Msg) -> None:
        if msg.method in ("INVITE", "UPDATE", "PRACK"):
            self.reply(msg, "200 OK", self.answer_for(msg))
        else:
            self.reply(msg, "200 OK")


# ---------------------------------------------------------------------------
# Calls
# ---------------------------------------------------------------------------

def _branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


@dataclass
class Dialog:
    """The WIC's (or the core's) view of a call it placed, once it got a 1xx/2xx with a To tag."""

    ua: Agent
    call_id: str
    from_value: str
    to_value: str = ""
    target: str = ""
    route: list[str] = field(default_factory=list)
    cseq: int = 1

    established: bool = False

    def learn(self, response: Msg) -> None:
        """The remote target from a 1xx/2xx to an INVITE (a target refresh, RFC 3261 12.2.1.2);
        the route set and the remote tag only from the one that establishes the dialog (12.1.2)."""
        self.target = _uri(response.get("contact")) or self.target
        if not self.established:
            self.to_value = response.get("to")
            self.route = list(reversed(response.values("record-route")))
        if 200 <= response.status < 300:
            self.established = True

    @property
    def next_hop(self) -> tuple[str, int]:
        return _host_port(_uri(self.route[0]) if self.route else self.target)

    def values(self, branch: str, cseq: int, **extra: str) -> dict[str, str]:
        return {"local": self.ua.local, "branch": branch, "route": ", ".join(self.route),
                "from": self.from_value, "to": self.to_value, "call_id": self.call_id, "cseq": str(cseq),
                "target": self.target, **extra}

    def in_dialog(self, method: str, cseq: int, branch: str, body: bytes = b"") -> bytes:
        flow = {"INVITE": "reinvite", "UPDATE": "update", "PRACK": "prack"}.get(method)
        if flow is not None:
            return request_draft(flow, body).render(self.values(branch, cseq))
        routes = [f"Route: {', '.join(self.route)}"] if self.route else []
        draft = Draft(f"{method} ${{target}} SIP/2.0", [
            "Via: SIP/2.0/UDP ${local};branch=${branch};rport", *routes, "Max-Forwards: 70", "From: ${from}",
            "To: ${to}", "Call-ID: ${call_id}", f"CSeq: ${{cseq}} {method}", "Contact: <sip:x@${local}>"], body)
        return draft.render(self.values(branch, cseq))


# ---------------------------------------------------------------------------
# The fuzzer
# ---------------------------------------------------------------------------

class Fuzz:
    """Runs cases against one edge (``tests.integration.edge_harness.Edge``, started)."""

    def __init__(self, edge, seed: str, *, answer_timeout: float = 3.0, settle_timeout: float = 3.5,
                 concurrency: int = 8, save_dir: Path | None = None, log=print, trace: bool = False) -> None:
        self.edge = edge
        self.seed = seed
        self.answer_timeout = answer_timeout
        self.settle_timeout = settle_timeout
        self.concurrency = concurrency
        self.save_dir = save_dir
        self.log = log
        self.trace = trace  # log every datagram sent and received
        self.seeds = Seeds.load()
        self.stats = Stats()
        self.wic: Agent | None = None
        self.core: Agent | None = None
        self.sinks: list[socket.socket] = []
        self.current: dict[str, int] = {}  # Call-ID -> case index (messages the edge delivers)
        self.case_dialogs: dict[int, set[tuple[str, str]]] = defaultdict(set)  # (Call-ID, caller tag)
        self.cases: dict[int, Case] = {}
        self.saved: set[str] = set()

    # -- set-up ---------------------------------------------------------------------
    def _sink_pair(self, address: str) -> int:
        """Two sockets on consecutive ports (RTP and RTCP) that drain what they get."""
        for _ in range(200):
            a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            a.bind((address, 0))
            port = a.getsockname()[1]
            if port % 2 or port >= 65535:
                a.close()
                continue
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                b.bind((address, port + 1))
            except OSError:
                a.close()
                b.close()
                continue
            for s in (a, b):
                s.setblocking(False)
                asyncio.get_running_loop().add_reader(s.fileno(), self._drain, s)
                self.sinks.append(s)
            return port
        raise RuntimeError("no free port pair for the media sink")

    @staticmethod
    def _drain(s: socket.socket) -> None:
        try:
            while True:
                s.recv(65535)
        except OSError:
            return

    async def open(self) -> None:
        access_sink = self._sink_pair("127.0.0.1")
        core_sink = self._sink_pair("127.0.0.3")
        self.sides = {"access": ("127.0.0.1", access_sink), "core": ("127.0.0.3", core_sink)}
        self.wic = Agent("wic", "127.0.0.1", 0, access_sink, self)
        self.core = Agent("core", self.edge.next_hop[0], self.edge.next_hop[1], core_sink, self)
        await self.wic.open()
        await self.core.open()

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for s in self.sinks:
            loop.remove_reader(s.fileno())
            s.close()
        for agent in (self.wic, self.core):
            if agent is not None and agent.transport is not None:
                agent.transport.close()

    # -- invariants -----------------------------------------------------------------
    def violation(self, kind: str, case: Case | int, detail: str) -> None:
        index = case.index if isinstance(case, Case) else case
        self.stats.violations.append(Violation(kind, index, detail))
        found = self.cases.get(index)
        self.log(f"violation {kind}: {found.describe() if found else f'case {index}'}: {detail}")
        if self.save_dir is not None and found is not None and kind not in self.saved:
            self.saved.add(kind)
            self.save(kind, found, detail)

    def save(self, kind: str, case: Case, detail: str) -> None:
        """The case's mutated message as a fixture: ``<flow>-<kind>.sip`` (and what it showed)."""
        self.save_dir.mkdir(parents=True, exist_ok=True)
        (self.save_dir / f"{case.flow}-{kind}.sip").write_bytes(case.draft.template())
        (self.save_dir / f"{case.flow}-{kind}.txt").write_text(
            f"seed {self.seed}\n{case.describe()}\n{kind}: {detail}\n")

    def check_final(self, case: Case, method: str, tx: ClientTx, final: Msg | None) -> None:
        self.stats.requests[method] += 1
        if final is None:
            sent = Msg.parse(tx.data, None)
            if sent is not None and (not all(sent.get(name) for name in CORE_REQUIRED)
                                     or len(sent.get("cseq").split()) < 2):
                # Kamailio's core drops a request without one of these, or whose CSeq
                # has no method (its parser fails), before any route runs (receive_msg:
                # "required headers not found in request"): no script can answer it,
                # and no client could match an answer without a CSeq.
                self.stats.finals[f"dropped by Kamailio's core {method}"] += 1
                return
            got = ", ".join(sorted({m.first for m in tx.responses})) or "nothing"
            self.violation("no_final_answer", case, f"{method}: {got} within {self.answer_timeout:g} s")
            return
        self.stats.finals[f"{final.status} {method}"] += 1
        status, warning = final.status, final.get("warning")
        if 400 <= status < 500 and not warning:
            self.violation("4xx_without_warning", case, f"{method}: {final.first}")
        elif status == 503:
            if not final.get("retry-after"):
                self.violation("503_without_retry_after", case, f"{method}: {final.first} {warning}")
            elif not re.search(r"unreachable|timed? ?out|unavailable|redis", warning, re.I) or "too long" in warning:
                self.violation("503_not_unavailable", case, f"{method}: {final.first} {warning}")
        elif status >= 500:
            self.violation("5xx", case, f"{method}: {final.first} {warning or '(no Warning)'}")

    def inspect(self, agent: Agent, msg: Msg) -> None:
        """Check what the edge delivered to one side."""
        index = self.current.get(msg.call_id)
        if index is None:
            return
        sdp = sdp_of(msg) if msg.body else b""
        if agent.name == "core":
            case = self.cases.get(index)
            if (msg.status and case is not None and case.flow == "core_invite"
                    and b"a=fingerprint" in case.draft.body):
                return  # the core itself offered DTLS: passed through end to end, its peer's fingerprint is its due
            leaked = [s.decode() for s in SECRETS if s in msg.body]
            if leaked:
                self.violation("secrets_to_core", index, f"{msg.first}: {', '.join(leaked)}")
            return
        offer_or_answer = (not msg.status and msg.method in ("INVITE", "UPDATE", "PRACK")) or (
            msg.status and 100 < msg.status < 300 and msg.method in ("INVITE", "UPDATE", "PRACK"))
        # Nothing to protect without a live m-line the edge terminates: an m-line with a
        # profile (or an SCTP usage) it does not know is passed through as it is, both ways.
        live = any(int(port) and _protected(proto.decode("latin-1").upper(), fmt.decode("latin-1"))
                   for port, proto, fmt in re.findall(rb"^m=\S+ (\d+)(?:/\d+)? (\S+) ?(\S*)", msg.body, re.M))
        if msg.body.strip() and offer_or_answer and live and b"a=fingerprint" not in msg.body:
            if not (msg.status and msg.get("warning")):
                self.violation("unconverted_to_access", index,
                               f"{msg.first} ({msg.method}) body without the edge's fingerprint, no Warning")

    # -- flows ----------------------------------------------------------------------
    def _new_call(self, case: Case, ua: Agent) -> tuple[str, str]:
        call_id = f"fz{case.index}-{secrets.token_hex(6)}@{ua.address}"
        tag = secrets.token_hex(5)
        self.current[call_id] = case.index
        self.case_dialogs[case.index] |= {(call_id, tag), (call_id, "")}
        return call_id, tag

    async def _transact(self, case: Case, ua: Agent, data: bytes, dest, method: str, branch: str,
                        record: bool = True, timeout: float | None = None) -> tuple[ClientTx, Msg | None]:
        tx = ua.request(data, dest, method, branch)
        final = await tx.final_response(timeout or self.answer_timeout)
        if record:
            self.check_final(case, method, tx, final)
        return tx, final

    def _ack(self, dialog: Dialog, tx: ClientTx, final: Msg, cseq: int, request_uri: str) -> None:
        """ACK a final response to an INVITE: end to end for a 2xx, hop by hop else."""
        if 200 <= final.status < 300:
            dialog.learn(final)
            branch = _branch()
            draft = Draft("ACK ${target} SIP/2.0", [
                "Via: SIP/2.0/UDP ${local};branch=${branch};rport",
                *([f"Route: {', '.join(dialog.route)}"] if dialog.route else []), "Max-Forwards: 70",
                "From: ${from}", "To: ${to}", "Call-ID: ${call_id}", "CSeq: ${cseq} ACK"])
            dialog.ua.send(draft.render(dialog.values(branch, cseq)), dialog.next_hop, "ACK")
        else:
            draft = Draft(f"ACK {request_uri} SIP/2.0", [
                "Via: SIP/2.0/UDP ${local};branch=${branch};rport", "Max-Forwards: 70", "From: ${from}",
                f"To: {final.get('to')}", "Call-ID: ${call_id}", "CSeq: ${cseq} ACK"])
            dialog.ua.send(draft.render(dialog.values(tx.branch, cseq)), tx.dest, "ACK")
        tx.close()

    async def _bye(self, case: Case, dialog: Dialog) -> None:
        dialog.cseq += 1
        branch = _branch()
        _, final = await self._transact(case, dialog.ua, dialog.in_dialog("BYE", dialog.cseq, branch),
                                        dialog.next_hop, "BYE", branch)

    async def _place(self, case: Case, ua: Agent, draft: Draft, dest, *, record=True,
                     request_uri: str = "") -> tuple[Dialog, ClientTx, Msg | None]:
        call_id, tag = self._new_call(case, ua)
        peer = self.wic if ua is self.core else self.core
        who = "core" if ua is self.core else "wic"
        from_value = f"<sip:{who}@{ua.local}>;tag={tag}"
        dialog = Dialog(ua, call_id, from_value)
        branch = _branch()
        values = {"local": ua.local, "branch": branch, "from_tag": tag, "call_id": call_id, "cseq": "1",
                  "edge": "%s:%d" % self.edge.access, "wic": self.wic.local}
        data = draft.render(values)
        sent = Msg.parse(data, None)
        first_line = sent.first if sent else ""
        dialog.target = first_line.split(" ")[1] if " " in first_line else ""
        # The dialog's From is the one sent (a mutated one included: without its tag).
        dialog.from_value = sent.get("from") if sent and sent.get("from") else from_value
        tx, final = await self._transact(case, ua, data, dest, "INVITE", branch, record=record,
                                         timeout=self.answer_timeout + (2 * T1 if case.flow == "ok" else 0))
        return dialog, tx, final

    async def _establish(self, case: Case) -> tuple[Dialog, ClientTx, Msg | None]:
        return await self._place(case, self.wic, request_draft("invite", case.base_offer), self.edge.access,
                                 record=True)

    async def flow_invite(self, case: Case) -> None:
        dialog, tx, final = await self._place(case, self.wic, case.draft, self.edge.access)
        await self._finish(case, dialog, tx, final)

    async def flow_core_invite(self, case: Case) -> None:
        dialog, tx, final = await self._place(case, self.core, case.draft, self.edge.core)
        await self._finish(case, dialog, tx, final)

    async def _finish(self, case: Case, dialog: Dialog, tx: ClientTx, final: Msg | None, cseq: int = 1) -> None:
        if final is None:
            tx.close()
            return
        self._ack(dialog, tx, final, cseq, dialog.target)
        if 200 <= final.status < 300:
            await self._bye(case, dialog)

    async def _in_dialog(self, case: Case, method: str) -> None:
        dialog, tx, final = await self._establish(case)
        if final is None or not 200 <= final.status < 300:
            await self._finish(case, dialog, tx, final)
            return
        self._ack(dialog, tx, final, 1, dialog.target)
        dialog.cseq += 1
        branch = _branch()
        data = case.draft.render(dialog.values(branch, dialog.cseq))
        tx2, final2 = await self._transact(case, self.wic, data, dialog.next_hop, method, branch)
        if method == "INVITE" and final2 is not None:
            self._ack(dialog, tx2, final2, dialog.cseq, dialog.target)
        else:
            tx2.close()
        await self._bye(case, dialog)

    async def flow_reinvite(self, case: Case) -> None:
        await self._in_dialog(case, "INVITE")

    async def flow_update(self, case: Case) -> None:
        await self._in_dialog(case, "UPDATE")

    async def flow_prack(self, case: Case) -> None:
        """INVITE; the core answers in a reliable 183 (RFC 3262), waits for the PRACK (the
        mutated message, with an offer), then sends a 200 without a body."""
        pracked = asyncio.Event()
        core = self.core

        async def core_side(msg: Msg) -> None:
            if msg.method == "INVITE":
                core.reply(msg, "183 Session Progress", core.answer_for(msg),
                           extra=["Require: 100rel", "RSeq: 1"])
                try:
                    await asyncio.wait_for(pracked.wait(), 3 * T1)
                except asyncio.TimeoutError:
                    pass
                core.reply(msg, "200 OK")
            else:
                if msg.method == "PRACK":
                    core.reply(msg, "200 OK", core.answer_for(msg))
                    pracked.set()
                else:
                    core.reply(msg, "200 OK")

        call_id, tag = self._new_call(case, self.wic)
        core.handlers[call_id] = core_side
        try:
            dialog = Dialog(self.wic, call_id, f"<sip:wic@{self.wic.local}>;tag={tag}")
            branch = _branch()
            values = {"local": self.wic.local, "branch": branch, "from_tag": tag, "call_id": call_id, "cseq": "1",
                      "edge": "%s:%d" % self.edge.access}
            data = request_draft("invite", case.base_offer).render(values)
            dialog.target = f"sip:callee@{self.edge.access[0]}:{self.edge.access[1]}"
            tx = self.wic.request(data, self.edge.access, "INVITE", branch)
            early = await tx.wait(lambda m: m.status == 183 or m.status >= 200, self.answer_timeout)
            if early is not None and early.status == 183 and early.get("rseq"):
                dialog.learn(early)
                dialog.cseq += 1
                pbranch = _branch()
                pdata = case.draft.render(dialog.values(pbranch, dialog.cseq,
                                                        rack=f"{early.get('rseq')} 1 INVITE"))
                ptx, _ = await self._transact(case, self.wic, pdata, dialog.next_hop, "PRACK", pbranch)
                ptx.close()
            final = await tx.final_response(self.answer_timeout + 3 * T1)
            self.check_final(case, "INVITE", tx, final)
            await self._finish(case, dialog, tx, final)
        finally:
            core.handlers.pop(call_id, None)

    async def flow_ok(self, case: Case) -> None:
        """The WIC's INVITE; the core answers with the mutated 200 OK, and when no ACK
        came (the edge discarded it) a clean one (marked ``X-Fuzz-Clean``)."""
        core = self.core
        acked = asyncio.Event()

        async def core_side(msg: Msg) -> None:
            if msg.method == "INVITE" and not msg.tag:
                values = core.reply_values(msg)
                core.send(case.draft.render(values), msg.source, "200 INVITE")
                for _ in range(2):
                    try:
                        await asyncio.wait_for(acked.wait(), 2 * T1)
                        return
                    except asyncio.TimeoutError:
                        pass
                    core.reply(msg, "200 OK", core.answer_for(msg), extra=[f"{CLEAN_MARK}: 1"])
            else:
                await core.default_handler(msg)

        call_id, tag = self._new_call(case, self.wic)
        core.handlers[call_id] = core_side
        watcher = asyncio.ensure_future(self._watch_ack(call_id, acked))
        try:
            dialog = Dialog(self.wic, call_id, f"<sip:wic@{self.wic.local}>;tag={tag}")
            branch = _branch()
            values = {"local": self.wic.local, "branch": branch, "from_tag": tag, "call_id": call_id, "cseq": "1",
                      "edge": "%s:%d" % self.edge.access}
            dialog.target = f"sip:callee@{self.edge.access[0]}:{self.edge.access[1]}"
            tx = self.wic.request(request_draft("invite", case.base_offer).render(values), self.edge.access,
                                  "INVITE", branch)
            final = await tx.final_response(self.answer_timeout + 4 * T1)
            self.check_final(case, "INVITE", tx, final)
            if final is not None and final.get(CLEAN_MARK.lower()) and not case.may_be_discarded:
                self.violation("reply_dropped", case, "the core's 200 never reached the WIC; its clean "
                                                      "retransmission did")
            await self._finish(case, dialog, tx, final)
        finally:
            watcher.cancel()
            core.handlers.pop(call_id, None)

    async def _watch_ack(self, call_id: str, acked: asyncio.Event) -> None:
        core = self.core
        while True:
            if any(m.method == "ACK" for m in core.received.get(call_id, [])):
                acked.set()
                return
            core.arrived.clear()
            await core.arrived.wait()

    async def run_case(self, case: Case) -> None:
        self.cases[case.index] = case
        self.stats.cases += 1
        flow = getattr(self, f"flow_{case.flow}")
        try:
            await flow(case)
        except Exception as exc:  # a harness defect must not pass for an edge one
            self.violation("harness_error", case, f"{exc.__class__.__name__}: {exc}")

    # -- batches --------------------------------------------------------------------
    async def run_cases(self, cases: list[Case]) -> None:
        pending = list(cases)
        running: set[asyncio.Task] = set()
        while pending or running:
            while pending and len(running) < self.concurrency:
                running.add(asyncio.ensure_future(self.run_case(pending.pop(0))))
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)

    def kamailio_pids(self) -> set[int]:
        from tests.integration.edge_harness import children_of

        main = self.edge.kamailio.pid
        return {main} | children_of(main)

    def _dialog_state(self, ids: set[str]) -> dict[str, list[str]]:
        client = self.edge.redis()
        try:
            keys = {k.decode() for k in client.keys("e2ae:alg:dialog:*") + client.keys("e2ae:alg:lock:*")
                    + client.keys("e2ae:agw:dialog:*")}
        finally:
            client.close()
        try:
            in_mediad = set(self.edge.mediad_dialogs())
        except Exception:
            in_mediad = set()
        out: dict[str, list[str]] = {}
        for dialog in ids:
            found = sorted(k for k in keys if k.endswith(":" + dialog)) + (["mediad"] if dialog in in_mediad else [])
            if found:
                out[dialog] = found
        return out

    async def settle(self, cases: list[Case]) -> None:
        """Each case's dialog left Redis and mediad (bounded wait)."""
        from plugin.state import dialog_id

        owner: dict[str, int] = {}
        for case in cases:
            for call_id, tag in self.case_dialogs.get(case.index, ()):
                owner[dialog_id(call_id, tag)] = case.index
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.settle_timeout
        while True:
            left = await loop.run_in_executor(None, self._dialog_state, set(owner))
            if not left or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        for dialog, where in left.items():
            self.violation("leftover_state", owner[dialog], f"dialog {dialog}: {', '.join(where)}")
        for case in cases:
            for call_id, _ in self.case_dialogs.pop(case.index, ()):
                self.current.pop(call_id, None)

    def check_processes(self, kamailio_before: set[int], cases: list[Case]) -> set[int]:
        """Kamailio and mediad alive and the same; restarts what died.  Kamailio's pids now."""
        indexes = ",".join(str(c.index) for c in cases)
        if self.edge.mediad is None or self.edge.mediad.poll() is not None:
            code = self.edge.mediad.returncode if self.edge.mediad is not None else None
            self.violation("mediad_died", cases[0], f"exit {code} during cases {indexes}")
            self.stats.restarts.append("mediad")
            self.edge.start_mediad()
        now = self.kamailio_pids() if self.edge.kamailio.poll() is None else set()
        if now != kamailio_before:
            tail = self.edge.kamailio_log_text()[-1500:].replace("\n", " | ")
            code = self.edge.kamailio.poll()
            self.violation("kamailio_died", self._kamailio_suspect(cases),
                           f"exit {code}, pids {sorted(kamailio_before - now)} gone during cases {indexes}; "
                           f"log: {tail}")
            from tests.integration.edge_harness import stop_process

            stop_process(self.edge.kamailio)
            self.stats.restarts.append("kamailio")
            self.edge.start_kamailio()
            now = self.kamailio_pids()
        return now

    @staticmethod
    def _kamailio_suspect(cases: list[Case]) -> Case:
        # Kamailio's known abort is on failed 200 OK answers: name such a case if there is one.
        return next((c for c in cases if c.flow == "ok" and c.mutations), cases[0])

    def fds(self) -> dict[str, dict[int, Counter]]:
        """What mediad's and Kamailio's processes hold open, per process, by kind."""
        conf = self.edge.conf
        servers = {self.edge.redis_server.port, conf.control_port, conf.access_port, conf.core_port,
                   conf.next_hop_port, conf.plugin_metrics_port, conf.mediad_metrics_port}
        return {"mediad": open_files([self.edge.mediad.pid], servers),
                "kamailio": open_files(self.kamailio_pids(), servers)}

    def fd_lazy(self, name: str) -> list[tuple[str, int]]:
        """What each process of ``name`` may open on first use, and how many of each
        (:func:`fd_violations`)."""
        redis = re.escape(f"tcp -> 127.0.0.1:{self.edge.redis_server.port}")
        if name == "kamailio":
            # the plugin's store (its script connection and redis-py's pool for the
            # other commands) and, in the events process, its subscription; the Iq
            # connection; prometheus_client's files of the worker (each mapped once, opened twice)
            return [(redis, 3), (re.escape(f"tcp -> 127.0.0.1:{self.edge.conf.control_port}"), 1),
                    (re.escape(str(self.edge.dir / "plugin-metrics")) + r"/\w+\.db", 2)]
        return [(redis, self.concurrency + 2)]  # mediad's pool (one per concurrent command) and its writer

    # -- a run ----------------------------------------------------------------------
    def make_cases(self, count: int, first: int = 0, flows: tuple[str, ...] = FLOWS,
                   unmutated: float = 0.05) -> list[Case]:
        """Cases ``first`` to ``first + count - 1`` of the seed (``unmutated``: the share left
        as they are, the control group)."""
        return [make_case(self.seed, i, self.seeds, flows, self.sides, unmutated) for i in range(first, first + count)]

    async def warm_up(self, calls: int = 24) -> Stats:
        """Unmutated calls in every flow, so that every Kamailio worker opened its connections
        before the baseline of fds is taken; counted apart (its own :class:`Stats`)."""
        cases = [make_case(self.seed, -1 - i, self.seeds, (FLOWS[i % len(FLOWS)],), self.sides, unmutated=1.0)
                 for i in range(calls)]
        kept, self.stats = self.stats, Stats()
        saving, self.save_dir = self.save_dir, None
        try:
            await self.run_cases(cases)
            await self.settle(cases)
        finally:
            warm, self.stats, self.save_dir = self.stats, kept, saving
        if warm.violations:
            self.log(f"warm-up: {len(warm.violations)} violations in unmutated calls")
        return warm

    async def run(self, cases: list[Case], batch: int = 50, warm: bool = True) -> Stats:
        """Run ``cases`` in batches with the checks, then the end's; closes the sockets.

        ``warm``: warm up first and check the fds at the end against the warm-up's
        (a replay of a few fixtures leaves both out).
        """
        if self.wic is None:
            await self.open()
        try:
            if warm:
                await self.warm_up()
                await asyncio.sleep(0.5)
            baseline = self.fds() if warm else None
            kamailio = self.kamailio_pids()
            for start in range(0, len(cases), batch):
                chunk = cases[start:start + batch]
                restarts = len(self.stats.restarts)
                await self.run_cases(chunk)
                await self.settle(chunk)
                kamailio = self.check_processes(kamailio, chunk)
                if warm and len(self.stats.restarts) > restarts:  # new processes: a new baseline
                    await self.warm_up()
                    baseline = self.fds()
                self.log(f"{start + len(chunk)}/{len(cases)} cases, {sum(self.stats.sent.values())} messages, "
                         f"{len(self.stats.violations)} violations")
            await self.finish(baseline)
        finally:
            self.close()
        return self.stats

    async def finish(self, baseline) -> None:
        """Nothing left in Redis nor mediad; no more fds than ``baseline`` (None: not checked)."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.settle_timeout
        while True:
            keys = await loop.run_in_executor(None, self.edge.dialog_keys)
            sessions = await loop.run_in_executor(None, self.edge.mediad_dialogs)
            if (not keys and not sessions) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        self.stats.leftovers = {"redis": keys, "mediad": sessions}
        if keys or sessions:
            self.stats.violations.append(Violation("leftover_state", -1, f"at the end: {len(keys)} keys, "
                                                                         f"{len(sessions)} mediad dialogs"))
        for problem in plugin_exceptions(self.edge.kamailio_log_text()):
            self.stats.violations.append(Violation("plugin_exception", -1, problem))
        if baseline is None:
            return
        await asyncio.sleep(0.5)
        end = self.fds()
        for name in end:
            self.stats.fds[name] = (sum(sum(c.values()) for c in baseline[name].values()),
                                    sum(sum(c.values()) for c in end[name].values()))
            for problem in fd_violations(name, baseline[name], end[name], self.fd_lazy(name)):
                self.stats.violations.append(Violation("extra_fds", -1, problem))


UNHANDLED = "Unhandled exception in the Python code"  # app_python3's line before a traceback
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b.*")


def plugin_exceptions(log: str) -> list[str]:
    """One entry per exception that escaped the plugin into Kamailio's ``log``: the
    traceback's last line, which names the exception."""
    lines = log.splitlines()
    found = []
    for i, line in enumerate(lines):
        if UNHANDLED in line:
            named = (m.group(0) for m in map(_EXCEPTION_LINE.match, lines[i + 1:i + 80]) if m)
            found.append(next(named, line.strip()))
    return found


EPHEMERAL = range(32768, 61000)  # Linux's ip_local_port_range default


def _sockets(servers: set[int]) -> dict[str, str]:
    """socket inode -> what it is, with ``servers`` the ports the edge's parts listen on:
    "udp 127.0.0.1:5060" (bound), "tcp -> 127.0.0.1:6379" (a client's connection to a
    server port), "tcp 127.0.0.1:9811 <- 127.0.0.1" (a connection a server accepted);
    ephemeral ports that name nothing are left out."""
    out = {}
    for proto in ("udp", "tcp", "udp6", "tcp6", "unix"):
        try:
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if proto == "unix":
                out[fields[6]] = "unix " + (fields[7] if len(fields) > 7 else "")
                continue

            def addr(text: str) -> tuple[str, int]:
                host, port = text.split(":")
                if len(host) == 8:
                    host = ".".join(str(b) for b in reversed(bytes.fromhex(host)))
                return host, int(port, 16)

            (lhost, lport), (rhost, rport) = addr(fields[1]), addr(fields[2])
            kind = proto.rstrip("6")
            if not rport:
                named = lport in servers or lport not in EPHEMERAL
                out[fields[9]] = f"{kind} {lhost}:{lport if named else 'ephemeral'}"
            elif rport in servers:
                out[fields[9]] = f"{kind} -> {rhost}:{rport}"
            elif lport in servers:
                out[fields[9]] = f"{kind} {lhost}:{lport} <- {rhost}"
            else:
                out[fields[9]] = f"{kind} {lhost} <-> {rhost}"
    return out


def open_files(pids, servers: set[int]) -> dict[int, Counter]:
    """The fds of each of ``pids``, counted by what they are (sockets as :func:`_sockets` names them)."""
    sockets = _sockets(servers)
    out: dict[int, Counter] = {}
    for pid in pids:
        counts: Counter = Counter()
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            names = []
        for name in names:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                target = sockets.get(target[8:-1], "socket")
            elif target.startswith(("pipe:", "anon_inode:")):
                target = target.split("[")[0]
            counts[target] += 1
        out[pid] = counts
    return out


def fd_violations(name: str, before: dict[int, Counter], after: dict[int, Counter],
                  lazy: list[tuple[str, int]]) -> list[str]:
    """What a group of processes holds beyond its baseline.

    ``lazy``: (regular expression, most fds per process) of what a process opens
    on its first use and keeps: a client connection (one per worker, or a pool
    that grows to its peak concurrency), a metrics file.  Those are bounded per
    process and description, not compared.  Connections a server accepted
    (" <- ": a scrape of /metrics that Kamailio's TCP layer keeps for its
    connection lifetime) are the harness's own doing and left out.  Every other
    fd (media and listening sockets, files, pipes) must be as it was.
    """
    patterns = [(re.compile(pattern), most) for pattern, most in lazy]

    def bound(kind: str) -> int | None:
        return next((most for pattern, most in patterns if pattern.fullmatch(kind)), None)

    def own(counts: Counter) -> Counter:
        return Counter({k: n for k, n in counts.items() if bound(k) is None and " <- " not in k})

    total_before = sum((own(c) for c in before.values()), Counter())
    total_after = sum((own(c) for c in after.values()), Counter())
    extra = total_after - total_before
    problems = []
    if extra:
        shown = ", ".join(f"{k}" + (f" x{n}" if n > 1 else "") for k, n in sorted(extra.items())[:6])
        problems.append(f"{name}: {sum(extra.values())} more fds than after the warm-up: {shown}"
                        + (", ..." if len(extra) > 6 else ""))
    for pid, counts in after.items():
        for kind, n in counts.items():
            most = bound(kind)
            if most is not None and n > most:
                problems.append(f"{name} pid {pid}: {n} x {kind} (at most {most} expected)")
    return problems


def report(stats: Stats, seed: str, elapsed: float, out=print) -> None:
    out(f"sipfuzz seed {seed}: {stats.cases} cases, {sum(stats.sent.values())} messages sent in {elapsed:.1f} s")
    out("  sent: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.sent.items())))
    out("  final answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.finals.items())))
    kinds = Counter(v.kind for v in stats.violations)
    out(f"  violations: {sum(kinds.values())}" + "".join(f"\n    {k}: {n}" for k, n in kinds.most_common()))
    firsts: dict[str, Violation] = {}
    for v in stats.violations:
        firsts.setdefault(v.kind, v)
    for kind, v in firsts.items():
        out(f"    first {kind}: case {v.case}: {v.detail[:300]}")
    for v in [v for v in stats.violations if v.case < 0][:20]:  # the end's checks, each
        out(f"    at the end: {v.kind}: {v.detail[:300]}")
    out(f"  leftovers: {len(stats.leftovers.get('redis', []))} Redis keys, "
        f"{len(stats.leftovers.get('mediad', []))} mediad dialogs")
    out("  fds (after warm-up -> end): " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in stats.fds.items()))
    if stats.restarts:
        out("  restarted during the run: " + ", ".join(stats.restarts))
    out(f"  replay one case: python -m tests.sipfuzz --seed {seed} --case N")


def replay_case(path: Path, sides) -> Case:
    """A fixture of ``tests/fixtures/sip/`` (``<flow>-<name>.sip``) as a case."""
    flow = path.name.split("-", 1)[0]
    if flow not in FLOWS:
        raise ValueError(f"{path.name}: no flow {flow!r}")
    draft = Draft.from_template(path.read_bytes())
    seeds = Seeds.load()
    base = next(body for name, body in seeds.access_offers if name == "wic_call_uac.xml#0")
    side = "core" if flow in CORE_FLOWS else "access"
    draft.body = keep_on_loopback(draft.body, *sides[side])
    return Case(0, flow, draft, [f"fixture {path.name}"], path.name,
                base_offer=keep_on_loopback(base, *sides["access"]))


__all__ = ["EDGE_EXTRA", "Fuzz", "Msg", "Stats", "Violation", "make_answer", "make_offer", "replay_case", "report"]
