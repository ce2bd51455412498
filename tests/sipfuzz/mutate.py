"""SIP-level fuzzing of the edge, the pure half: the messages, their seeds and their mutations.

Theory of operation
-------------------
A *case* is one call flow (:data:`FLOWS`) in which one message is mutated:

``invite``       an initial INVITE from the WIC (access side);
``core_invite``  an initial INVITE from the core;
``reinvite``     a re-INVITE from the WIC in an established call;
``update``       an UPDATE from the WIC in an established call (RFC 3311);
``prack``        a PRACK from the WIC carrying an offer, after a reliable 183 (RFC 3262);
``ok``           the core's 200 OK to an INVITE the WIC placed (its answer).

The mutated message is a :class:`Draft`: a start line, header lines and a body
of bytes.  What a flow only knows when it runs (addresses, Call-ID, tags,
branch, Route set, CSeq) stands in the draft as ``${name}`` placeholders,
filled in by :meth:`Draft.render`; a draft written out with its placeholders
(:meth:`Draft.template`) is a fixture that replays the same mutation
(``tests/fixtures/sip/``).

Bodies start from seeds: the SDP fixtures of ``tests/fixtures/sdp/`` and the
bodies in ``sipp_scenarios/`` (:class:`Seeds`), WebRTC offers for the access
side, plain offers and answers for the core side.  Mutations (:data:`MUTATORS`)
work on the SDP by line (delete, duplicate, swap, foreign, garbage, many
m-lines, huge attributes, line endings), by token (numbers, huge counts,
empty, long, odd characters), by byte (NUL, non-UTF-8, control characters,
bit flips, truncation), on the body's framing (multipart/mixed wrappings,
RFC 5621), and on headers (Content-Length wrong, negative, huge, non-numeric,
duplicated or missing; odd Content-Types; missing tags; odd CSeq).

Addresses and ports are kept on the harness's own sockets whatever the
mutation (:func:`keep_on_loopback`): every IPv4/IPv6 address in an SDP becomes
the side's loopback address and every valid port (1..65535) the harness's sink
port, so the edge never sends a datagram to anything but the harness.  Ports
that cannot be sent to (0, out of range, non-numeric, with a count) stay as
mutated.

Every choice comes from ``random.Random(f"{seed}:{index}")``: a case is
replayed from the run's seed and its index alone.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

ROOT = Path(__file__).resolve().parent.parent.parent
SDP_FIXTURES = ROOT / "tests" / "fixtures" / "sdp"
SIPP_SCENARIOS = ROOT / "sipp_scenarios"

FLOWS = ("invite", "core_invite", "reinvite", "update", "prack", "ok")
# Flows whose mutated message comes from the core (its body is a plain offer or answer).
CORE_FLOWS = frozenset({"core_invite", "ok"})

CRLF = b"\r\n"
# The largest body a case sends: what a UDP datagram (65,507 bytes) leaves after 1 KB of headers.
MAX_BODY = 64500
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------

@dataclass
class Draft:
    """One SIP message with placeholders: start line, header lines, body bytes.

    ``auto_length``: :meth:`render` appends a ``Content-Length`` of the body's
    length (a header mutation that writes its own turns it off).  A header line
    that renders empty (a placeholder for no Record-Route) is left out.
    """

    start: str
    headers: list[str]
    body: bytes = b""
    auto_length: bool = True

    def render(self, values: Mapping[str, str]) -> bytes:
        def fill(text: str) -> str:
            return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)

        lines = [fill(self.start)]
        for header in self.headers:
            text = fill(header)
            if text.strip():
                lines.append(text)
        if self.auto_length:
            lines.append(f"Content-Length: {len(self.body)}")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + CRLF + CRLF + self.body

    def template(self) -> bytes:
        """The draft as a fixture: placeholders kept, Content-Length written out."""
        headers = list(self.headers)
        if self.auto_length:
            headers.append(f"Content-Length: {len(self.body)}")
        return "\r\n".join([self.start, *headers]).encode("utf-8", "surrogateescape") + CRLF + CRLF + self.body

    @classmethod
    def from_template(cls, data: bytes) -> "Draft":
        head, sep, body = data.partition(CRLF + CRLF)
        if not sep:
            raise ValueError("no empty line between the headers and the body")
        lines = head.decode("utf-8", "surrogateescape").split("\r\n")
        return cls(lines[0], lines[1:], body, auto_length=False)

    def header_index(self, name: str) -> list[int]:
        lower = name.lower()
        return [i for i, line in enumerate(self.headers) if line.split(":", 1)[0].strip().lower() == lower]

    def set_header(self, name: str, value: str | None) -> None:
        """Replace every ``name`` header by one with ``value`` (None: remove them)."""
        where = self.header_index(name)
        at = where[0] if where else len(self.headers)
        self.headers = [h for i, h in enumerate(self.headers) if i not in where]
        if value is not None:
            self.headers.insert(min(at, len(self.headers)), f"{name}: {value}")


def request_draft(flow: str, body: bytes, content_type: str = "application/sdp") -> Draft:
    """The message a request flow mutates, before mutation."""
    ctype = [f"Content-Type: {content_type}"] if body else []
    if flow == "invite":
        return Draft("INVITE sip:callee@${edge} SIP/2.0", [
            "Via: SIP/2.0/UDP ${local};branch=${branch};rport", "Max-Forwards: 70",
            "From: <sip:wic@${local}>;tag=${from_tag}", "To: <sip:callee@${edge}>", "Call-ID: ${call_id}",
            "CSeq: ${cseq} INVITE", "Contact: <sip:wic@${local}>", "Supported: 100rel", *ctype], body)
    if flow == "core_invite":
        return Draft("INVITE sip:wic@${wic} SIP/2.0", [
            "Via: SIP/2.0/UDP ${local};branch=${branch};rport", "Max-Forwards: 70",
            "From: <sip:core@${local}>;tag=${from_tag}", "To: <sip:wic@${wic}>", "Call-ID: ${call_id}",
            "CSeq: ${cseq} INVITE", "Contact: <sip:core@${local}>", *ctype], body)
    method = {"reinvite": "INVITE", "update": "UPDATE", "prack": "PRACK"}[flow]
    extra = ["RAck: ${rack}"] if flow == "prack" else []
    return Draft(f"{method} ${{target}} SIP/2.0", [
        "Via: SIP/2.0/UDP ${local};branch=${branch};rport", "Route: ${route}", "Max-Forwards: 70",
        "From: ${from}", "To: ${to}", "Call-ID: ${call_id}", f"CSeq: ${{cseq}} {method}", *extra,
        "Contact: <sip:wic@${local}>", *ctype], body)


def reply_draft(body: bytes, status: str = "200 OK", content_type: str = "application/sdp") -> Draft:
    """A reply from the core to the request it answers (``${vias}`` and ``${record_routes}``
    stand for those header lines, as many as the request had)."""
    ctype = [f"Content-Type: {content_type}"] if body else []
    return Draft(f"SIP/2.0 {status}", [
        "${vias}", "${record_routes}", "From: ${from}", "To: ${to};tag=${to_tag}", "Call-ID: ${call_id}",
        "CSeq: ${cseq}", "Contact: <sip:core@${local}>", *ctype], body)


# ---------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------

SIPP_VALUES = {"[media_ip]": "127.0.0.1", "[media_port]": "49170", "[local_ip]": "127.0.0.1",
               "[reinvite_tls_id]": "6ba1e1b4d7c5a3f2e0d9c8b7a6f5e4d3", "[mline]": "m=audio 49170 RTP/AVP 0"}


def sipp_bodies(path: Path) -> list[tuple[str, bytes]]:
    """(first line, body) of every message with an SDP body in a SIPp scenario."""
    out = []
    for block in re.findall(r"<!\[CDATA\[(.*?)\]\]>", path.read_text(), re.S):
        lines = [line.strip() for line in block.strip().splitlines()]
        if "v=0" not in lines:
            continue
        body = "\r\n".join(line for line in lines[lines.index("v=0"):] if line) + "\r\n"
        for key, value in SIPP_VALUES.items():
            body = body.replace(key, value)
        out.append((lines[0], body.encode()))
    return out


@dataclass
class Seeds:
    """Bodies to start from, by role; each a (name, body) pair."""

    access_offers: list[tuple[str, bytes]] = field(default_factory=list)
    core_offers: list[tuple[str, bytes]] = field(default_factory=list)
    core_answers: list[tuple[str, bytes]] = field(default_factory=list)
    multipart: list[tuple[str, str, bytes]] = field(default_factory=list)  # (name, content type, body)

    @classmethod
    def load(cls) -> "Seeds":
        seeds = cls()
        for path in sorted(SDP_FIXTURES.glob("*.sdp")):
            body = path.read_bytes()
            if b"a=fingerprint" in body and "answer" not in path.name:
                seeds.access_offers.append((path.name, body))
            elif "answer" not in path.name:
                seeds.core_offers.append((path.name, body))
        multipart = SIPP_SCENARIOS / "wic_multipart_uac.xml"
        for path in sorted(SIPP_SCENARIOS.glob("*.xml")):
            if path == multipart:  # a multipart body: a seed of its own kind, below
                continue
            for n, (first, body) in enumerate(sipp_bodies(path)):
                name = f"{path.name}#{n}"
                if first.startswith("INVITE") and b"a=fingerprint" in body:
                    seeds.access_offers.append((name, body))
                elif first.startswith("INVITE"):
                    seeds.core_offers.append((name, body))
                elif path.name.startswith("core_uas") and b"m=video" not in body:
                    seeds.core_answers.append((name, body))
        if multipart.exists():
            text = multipart.read_text()
            block = re.findall(r"<!\[CDATA\[(.*?)\]\]>", text, re.S)[0]
            lines = [line.strip() for line in block.strip().splitlines()]
            ctype = next(line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("content-type"))
            first_blank = lines.index("")
            body = "\r\n".join(lines[first_blank + 1:]).strip() + "\r\n"
            for key, value in SIPP_VALUES.items():
                body = body.replace(key, value)
            seeds.multipart.append((multipart.name, ctype, body.encode()))
        return seeds


# ---------------------------------------------------------------------------
# Keeping the edge's datagrams on the harness
# ---------------------------------------------------------------------------

_IPV4 = re.compile(rb"(?<![\d.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\d.])")
_IP6_ADDR = re.compile(rb"IN IP6 [0-9A-Fa-f:.]+")
_IPV6_CANDIDATE = re.compile(rb"(a=candidate:\S+ \S+ \S+ \S+ )[0-9A-Fa-f]*:[0-9A-Fa-f:.]+")
_PORT_LINES = (
    re.compile(rb"^(m=\S+ )(\d+)", re.M),
    re.compile(rb"^(a=candidate:\S+ \S+ \S+ \S+ \S+ )(\d+)", re.M),
    re.compile(rb"^(a=rtcp:)(\d+)", re.M),
    re.compile(rb"( raddr \S+ rport )(\d+)"),
)


def keep_on_loopback(body: bytes, address: str, port: int) -> bytes:
    """Every address in ``body`` becomes ``address`` (0.0.0.0 stays: RFC 3264 hold) and every
    valid port ``port`` (module docstring)."""
    own = address.encode()
    body = _IP6_ADDR.sub(b"IN IP4 " + own, body)
    body = _IPV6_CANDIDATE.sub(lambda m: m.group(1) + own, body)
    body = _IPV4.sub(lambda m: m.group(0) if m.group(0) == b"0.0.0.0" else own, body)

    def port_of(m: re.Match) -> bytes:
        value = int(m.group(2)) if len(m.group(2)) < 7 else 0
        return m.group(1) + (str(port).encode() if 0 < value < 65536 else m.group(2))

    for pattern in _PORT_LINES:
        body = pattern.sub(port_of, body)
    return body


# ---------------------------------------------------------------------------
# Mutations
# ---------------------------------------------------------------------------

INTERESTING = ["", "0", "-1", "1", "65535", "65536", "4294967295", "4294967296", "18446744073709551616",
               "99999999999999999999", "abc", "0x10", "1e9", "NaN", "%s%n", "A" * 4096, "\u00e9\u00e8", " ",
               "*", "9/99999999999999", "0/0", "-", "::", "IN", "IP4", "UDP/TLS/RTP/SAVPF", "sha-256",
               "actpass", "\t", "../../", "1.5", "+1"]
BAD_BYTES = [b"\x00", b"\xff", b"\xc3\x28", b"\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xfe\xfe"]
CONTROL = [b"\x01", b"\x07", b"\x0b", b"\x1b", b"\x7f", b"\r", b"\n"]


@dataclass
class Context:
    """What a mutation may draw from: the other seeds (foreign lines)."""

    seeds: Seeds


Mutator = Callable[[random.Random, Draft, Context], str]


def _lines(body: bytes) -> list[bytes]:
    lines = body.split(CRLF)
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def _join(lines: list[bytes]) -> bytes:
    return CRLF.join(lines) + CRLF if lines else b""


def _pick_line(rng: random.Random, lines: list[bytes]) -> int:
    return rng.randrange(len(lines)) if lines else 0


def _short(data: bytes | str, limit: int = 40) -> str:
    text = data.decode("utf-8", "backslashreplace") if isinstance(data, bytes) else data
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def line_delete(rng, draft, ctx):
    lines = _lines(draft.body)
    if not lines:
        return "line_delete(empty)"
    i = _pick_line(rng, lines)
    gone = lines.pop(i)
    draft.body = _join(lines)
    return f"line_delete({_short(gone)})"


def line_duplicate(rng, draft, ctx):
    lines = _lines(draft.body)
    if not lines:
        return "line_duplicate(empty)"
    i = _pick_line(rng, lines)
    times = min(rng.choice([1, 1, 2, 10, 200]), max(1, (MAX_BODY - len(draft.body)) // (len(lines[i]) + 2)))
    lines[i + 1:i + 1] = [lines[i]] * times
    draft.body = _join(lines)
    return f"line_duplicate({_short(lines[i])} x{times})"


def line_swap(rng, draft, ctx):
    lines = _lines(draft.body)
    if len(lines) < 2:
        return "line_swap(short)"
    i, j = rng.sample(range(len(lines)), 2)
    lines[i], lines[j] = lines[j], lines[i]
    draft.body = _join(lines)
    return f"line_swap({i},{j})"


def line_foreign(rng, draft, ctx):
    pool = ctx.seeds.access_offers + ctx.seeds.core_offers + ctx.seeds.core_answers
    name, body = rng.choice(pool)
    line = rng.choice(_lines(body))
    lines = _lines(draft.body)
    at = rng.randrange(len(lines) + 1)
    lines.insert(at, line)
    draft.body = _join(lines)
    return f"line_foreign({_short(line)} from {name})"


def line_garbage(rng, draft, ctx):
    lines = _lines(draft.body)
    i = _pick_line(rng, lines)
    garbage = rng.choice([b"", b"=", b"x", b"a=", b"m=", b"v=1", b"zz=top",
                          bytes(rng.randrange(32, 127) for _ in range(rng.randrange(1, 80)))])
    if lines:
        lines[i] = garbage
    else:
        lines = [garbage]
    draft.body = _join(lines)
    return f"line_garbage({_short(garbage)})"


def many_m_lines(rng, draft, ctx):
    """Repeat one media section: 43 m-lines made the Iq request too long for a datagram."""
    lines = _lines(draft.body)
    starts = [i for i, line in enumerate(lines) if line.startswith(b"m=")]
    if not starts:
        return "many_m_lines(none)"
    k = rng.randrange(len(starts))
    end = starts[k + 1] if k + 1 < len(starts) else len(lines)
    section = lines[starts[k]:end]
    size = len(_join(section))
    count = min(rng.choice([2, 8, 43, 64, 200]), max(1, (MAX_BODY - len(draft.body)) // size))
    draft.body = _join(lines + section * count)
    return f"many_m_lines({_short(section[0])} x{count})"


def huge_attribute(rng, draft, ctx):
    size = rng.choice([1024, 4096, 16384, 64000])
    size = max(1, min(size, MAX_BODY - len(draft.body) - 80))
    name = rng.choice([b"a=x-fuzz:", b"a=fmtp:111 ", b"a=candidate:1 1 udp 1 127.0.0.1 9 typ host x ", b"s=",
                       b"a=ssrc:1 cname:", b"i="])
    lines = _lines(draft.body)
    at = rng.randrange(1, len(lines) + 1) if lines else 0
    lines.insert(at, name + b"A" * size)
    draft.body = _join(lines)
    return f"huge_attribute({_short(name)} {size} bytes)"


def line_endings(rng, draft, ctx):
    how = rng.choice(["lf", "cr", "mixed", "none_final", "double"])
    body = draft.body
    if how == "lf":
        body = body.replace(CRLF, b"\n")
    elif how == "cr":
        body = body.replace(CRLF, b"\r")
    elif how == "mixed":
        parts = body.split(CRLF)
        body = b"".join(p + (b"\n" if rng.random() < 0.5 else CRLF) for p in parts[:-1]) + parts[-1]
    elif how == "none_final":
        body = body.rstrip(b"\r\n")
    else:
        body = body.replace(CRLF, CRLF + CRLF)
    draft.body = body
    return f"line_endings({how})"


_TOKEN = re.compile(rb"[^ :/=\r\n]+")


def token_replace(rng, draft, ctx):
    lines = _lines(draft.body)
    if not lines:
        return "token_replace(empty)"
    i = _pick_line(rng, lines)
    tokens = list(_TOKEN.finditer(lines[i]))
    if not tokens:
        return "token_replace(no token)"
    m = rng.choice(tokens)
    value = rng.choice(INTERESTING).encode("utf-8")
    lines[i] = lines[i][:m.start()] + value + lines[i][m.end():]
    draft.body = _join(lines)
    return f"token_replace({_short(m.group(0))} -> {_short(value)} in {_short(lines[i], 30)})"


def m_line_count(rng, draft, ctx):
    """An m= port with a huge or odd count (RFC 4566 5.14 "port/number of ports")."""
    lines = _lines(draft.body)
    starts = [i for i, line in enumerate(lines) if line.startswith(b"m=")]
    if not starts:
        return "m_line_count(none)"
    i = rng.choice(starts)
    parts = lines[i].split(b" ")
    if len(parts) < 2:
        return "m_line_count(short)"
    count = rng.choice([b"2", b"0", b"65536", b"99999999999999", b"-1", b"x"])
    parts[1] = parts[1].split(b"/")[0] + b"/" + count
    lines[i] = b" ".join(parts)
    draft.body = _join(lines)
    return f"m_line_count(/{count.decode()})"


def byte_insert(rng, draft, ctx):
    what = rng.choice(BAD_BYTES + CONTROL)
    at = rng.randrange(len(draft.body) + 1)
    draft.body = draft.body[:at] + what + draft.body[at:]
    return f"byte_insert({what!r} at {at})"


def nul_in_line(rng, draft, ctx):
    lines = _lines(draft.body)
    if not lines:
        return "nul_in_line(empty)"
    i = _pick_line(rng, lines)
    at = rng.randrange(len(lines[i]) + 1)
    lines[i] = lines[i][:at] + b"\x00" + lines[i][at:]
    draft.body = _join(lines)
    return f"nul_in_line({_short(lines[i], 30)})"


def non_utf8(rng, draft, ctx):
    lines = _lines(draft.body)
    if not lines:
        return "non_utf8(empty)"
    i = _pick_line(rng, lines)
    bad = rng.choice(BAD_BYTES[1:])
    lines[i] = lines[i] + bad
    draft.body = _join(lines)
    return f"non_utf8({bad!r} after {_short(lines[i], 30)})"


def bit_flip(rng, draft, ctx):
    if not draft.body:
        return "bit_flip(empty)"
    body = bytearray(draft.body)
    flips = rng.choice([1, 1, 2, 8])
    for _ in range(flips):
        at = rng.randrange(len(body))
        body[at] ^= 1 << rng.randrange(8)
    draft.body = bytes(body)
    return f"bit_flip(x{flips})"


def truncate(rng, draft, ctx):
    if not draft.body:
        return "truncate(empty)"
    at = rng.randrange(len(draft.body))
    draft.body = draft.body[:at]
    return f"truncate({at})"


def empty_body(rng, draft, ctx):
    draft.body = rng.choice([b"", b"\r\n", b" ", b"v=0\r\n"])
    return f"empty_body({draft.body!r})"


def _content_type(draft: Draft) -> str:
    where = draft.header_index("Content-Type")
    return draft.headers[where[0]].split(":", 1)[1].strip() if where else "application/sdp"


def multipart(rng, draft, ctx):
    """Wrap the body in multipart/mixed (RFC 2046 5.1, RFC 5621), well or badly."""
    boundary = rng.choice(["fuzzb0undary", "x", "a" * 70, "b\"q", "=_edge"])
    sdp = draft.body
    how = rng.choice(["plain", "no_close", "two_sdp", "preamble_epilogue", "nested", "sdp_text_plain",
                      "boundary_in_sdp", "after_close", "no_part_headers", "seeded"])
    b = boundary.encode()
    ctype_sdp = b"Content-Type: application/sdp\r\n\r\n"
    pidf = b"Content-Type: application/pidf+xml\r\nContent-ID: <loc@wic>\r\n\r\n<presence/>\r\n"
    if how == "seeded" and ctx.seeds.multipart:
        _, seeded_type, body = rng.choice(ctx.seeds.multipart)
        draft.set_header("Content-Type", seeded_type)
        draft.body = body
        return "multipart(seeded)"
    if how == "plain":
        body = b"--" + b + CRLF + ctype_sdp + sdp + b"--" + b + CRLF + pidf + b"--" + b + b"--" + CRLF
    elif how == "no_close":
        body = b"--" + b + CRLF + ctype_sdp + sdp
    elif how == "two_sdp":
        body = b"--" + b + CRLF + ctype_sdp + sdp + b"--" + b + CRLF + ctype_sdp + sdp + b"--" + b + b"--" + CRLF
    elif how == "preamble_epilogue":
        body = b"preamble\r\n--" + b + CRLF + ctype_sdp + sdp + b"--" + b + b"--" + CRLF + b"epilogue\r\n"
    elif how == "nested":
        inner = b"--in" + CRLF + ctype_sdp + sdp + b"--in--" + CRLF
        body = (b"--" + b + CRLF + b"Content-Type: multipart/mixed;boundary=in\r\n\r\n" + inner
                + b"--" + b + b"--" + CRLF)
    elif how == "sdp_text_plain":
        body = b"--" + b + CRLF + b"Content-Type: text/plain\r\n\r\n" + sdp + b"--" + b + b"--" + CRLF
    elif how == "boundary_in_sdp":
        body = b"--" + b + CRLF + ctype_sdp + sdp + b"--" + b + CRLF + b"a=x\r\n" + b"--" + b + b"--" + CRLF
    elif how == "after_close":
        body = b"--" + b + CRLF + ctype_sdp + sdp + b"--" + b + b"--" + CRLF + b"--" + b + CRLF + pidf
    else:
        body = b"--" + b + CRLF + CRLF + sdp + b"--" + b + b"--" + CRLF
    quoted = rng.random() < 0.5
    draft.set_header("Content-Type", f'multipart/mixed;boundary={chr(34) + boundary + chr(34) if quoted else boundary}')
    draft.body = body
    return f"multipart({how}, boundary {_short(boundary, 12)})"


def content_length(rng, draft, ctx):
    """RFC 3261 18.3, 20.14: a Content-Length that does not frame the body."""
    n = len(draft.body)
    how = rng.choice(["longer", "shorter", "zero", "negative", "huge", "abc", "duplicated_same",
                      "duplicated_other", "missing", "spaces", "plus"])
    values = {"longer": [str(n + rng.choice([1, 5, 1000]))], "shorter": [str(max(0, n - rng.choice([1, 5, 50])))],
              "zero": ["0"], "negative": ["-5"], "huge": ["99999999999"], "abc": ["abc"],
              "duplicated_same": [str(n), str(n)], "duplicated_other": [str(n), str(n + 7)], "missing": [],
              "spaces": [f"  {n}  "], "plus": [f"+{n}"]}[how]
    draft.set_header("Content-Length", None)
    draft.headers += [f"Content-Length: {v}" for v in values]
    draft.auto_length = False
    return f"content_length({how})"


def content_type(rng, draft, ctx):
    value = rng.choice(["application/SDP", "application/sdp;charset=utf-8", "text/plain", "", "application/sdp, text/plain",
                        "application/x-unknown", "multipart/mixed", "application/sdp\t", "application", "/",
                        "APPLICATION/SDP ; version=2", None])
    draft.set_header("Content-Type", value)
    if value is not None and rng.random() < 0.2:
        draft.headers.append(f"Content-Type: {value}")
    return f"content_type({value!r})"


def missing_tag(rng, draft, ctx):
    which = [i for i in draft.header_index("From") + draft.header_index("To") if "tag=" in draft.headers[i]]
    if not which:
        return "missing_tag(none)"
    i = rng.choice(which)
    header = draft.headers[i]
    draft.headers[i] = re.sub(r";tag=[^;,\s]*", rng.choice(["", ";tag=", ";tag"]), header)
    return f"missing_tag({header.split(':', 1)[0]})"


def cseq(rng, draft, ctx):
    where = draft.header_index("CSeq")
    if not where:
        return "cseq(none)"
    old = draft.headers[where[0]].split(":", 1)[1].strip()
    method = old.split()[-1] if " " in old else old
    if method.startswith("${"):
        method = "INVITE"
    value = rng.choice([f"abc {method}", f"-1 {method}", f"4294967296 {method}", "1 BYE", "1", "",
                        f"1  {method}", f"0 {method}", f"1 {method.lower()}", None, "dup"])
    if value == "dup":
        draft.headers.insert(where[0], draft.headers[where[0]].replace("${cseq}", "99"))
    else:
        draft.set_header("CSeq", value)
    return f"cseq({value!r})"


# name -> (mutator, category); the categories are what the report counts by.
MUTATORS: dict[str, tuple[Mutator, str]] = {
    "line_delete": (line_delete, "line"), "line_duplicate": (line_duplicate, "line"),
    "line_swap": (line_swap, "line"), "line_foreign": (line_foreign, "line"),
    "line_garbage": (line_garbage, "line"), "many_m_lines": (many_m_lines, "line"),
    "huge_attribute": (huge_attribute, "line"), "line_endings": (line_endings, "line"),
    "token_replace": (token_replace, "token"), "m_line_count": (m_line_count, "token"),
    "byte_insert": (byte_insert, "byte"), "nul_in_line": (nul_in_line, "byte"), "non_utf8": (non_utf8, "byte"),
    "bit_flip": (bit_flip, "byte"), "truncate": (truncate, "byte"), "empty_body": (empty_body, "byte"),
    "multipart": (multipart, "multipart"),
    "content_length": (content_length, "header"), "content_type": (content_type, "header"),
    "missing_tag": (missing_tag, "header"), "cseq": (cseq, "header"),
}
BODY_MUTATORS = [name for name, (_, cat) in MUTATORS.items() if cat in ("line", "token", "byte")]
HEADER_MUTATORS = [name for name, (_, cat) in MUTATORS.items() if cat == "header"]


@dataclass
class Case:
    """One flow with its mutated message."""

    index: int
    flow: str
    draft: Draft
    mutations: list[str]
    seed_name: str
    base_offer: bytes = b""  # the WIC's offer placed before the mutated message (in-dialog, prack, ok)

    @property
    def categories(self) -> set[str]:
        return {MUTATORS[m.split("(", 1)[0]][1] for m in self.mutations if m.split("(", 1)[0] in MUTATORS}

    @property
    def may_be_discarded(self) -> bool:
        """A response a proxy may discard (RFC 3261 18.3, 16.7): its Content-Length does not
        frame its body, its CSeq is broken (it matches no transaction), or it is a 2xx
        without a To tag (RFC 3261 12.1.1: it starts no dialog)."""
        return any(m.startswith(("content_length(", "cseq(", "fixture ok-content_length", "fixture ok-cseq"))
                   or (self.flow == "ok" and m.startswith("missing_tag(To)")) for m in self.mutations)

    def describe(self) -> str:
        return f"case {self.index} {self.flow} seed {self.seed_name}: " + "; ".join(self.mutations or ["unmutated"])


def case_rng(seed: str, index: int) -> random.Random:
    return random.Random(f"{seed}:{index}")


def make_case(seed: str, index: int, seeds: Seeds, flows: tuple[str, ...] = FLOWS,
              sides: Mapping[str, tuple[str, int]] | None = None, unmutated: float = 0.05) -> Case:
    """Case ``index`` of the run ``seed``: its flow, seed body and mutations.

    ``sides`` maps "access" and "core" to the (address, sink port) that
    :func:`keep_on_loopback` keeps the body on.
    """
    rng = case_rng(seed, index)
    flow = rng.choice(flows)
    sides = sides or {"access": ("127.0.0.1", 9), "core": ("127.0.0.3", 9)}
    ctx = Context(seeds)
    # The call a mutated message goes into starts from one audio stream: the core's answers
    # in the seeds (and a mutated one before its mutation) fit it.
    single = [s for s in seeds.access_offers if s[1].count(b"\nm=") == 1 and b"m=audio" in s[1]
              and b"UDP/TLS/RTP/SAVP" in s[1] and "malformed" not in s[0]]
    base_name, base_offer = rng.choice(single or seeds.access_offers)
    if flow == "core_invite":
        name, body = rng.choice(seeds.core_offers)
        draft = request_draft(flow, body)
    elif flow == "ok":
        name, body = rng.choice(seeds.core_answers)
        draft = reply_draft(body)
    else:
        name, body = rng.choice(seeds.access_offers)
        draft = request_draft(flow, body)
    mutations: list[str] = []
    if rng.random() >= unmutated:
        roll = rng.random()
        count = rng.choice([1, 1, 1, 2, 3])
        names: list[str] = []
        if roll < 0.6:
            names = [rng.choice(BODY_MUTATORS) for _ in range(count)]
        elif roll < 0.72:
            names = ["multipart"] + [rng.choice(BODY_MUTATORS) for _ in range(count - 1)]
        elif roll < 0.9:
            names = [rng.choice(HEADER_MUTATORS)]
        else:
            names = [rng.choice(BODY_MUTATORS), rng.choice(HEADER_MUTATORS)]
        # body mutations first, then the framing (multipart), then headers (Content-Length last)
        order = {"line": 0, "token": 0, "byte": 0, "multipart": 1, "header": 2}
        names.sort(key=lambda n: (order[MUTATORS[n][1]], n == "content_length"))
        for mname in names:
            mutations.append(MUTATORS[mname][0](rng, draft, ctx))
        if len(draft.body) > MAX_BODY:  # what one datagram can carry
            draft.body = draft.body[:MAX_BODY]
            mutations.append(f"truncate({MAX_BODY}, to fit a datagram)")
    side = "core" if flow in CORE_FLOWS else "access"
    address, port = sides[side]
    draft.body = keep_on_loopback(draft.body, address, port)
    access_address, access_port = sides["access"]
    return Case(index, flow, draft, mutations, name,
                base_offer=keep_on_loopback(base_offer, access_address, access_port) if flow != "core_invite" else b"")


__all__ = ["Case", "Draft", "FLOWS", "MUTATORS", "Seeds", "case_rng", "keep_on_loopback", "make_case",
           "reply_draft", "request_draft", "sipp_bodies"]
