"""A stateless SIP error response built from a request's header values (RFC 3261 8.2.6,
18.2.2), for the requests Kamailio cannot answer itself.

Kamailio's reply builders (``sl_send_reply``, ``t_reply``) parse every header of the
request first; a header they cannot parse (a Content-Length of ``abc``, ``-5`` or
``99999999999``, or two Content-Length headers) makes them give up, and so do
the header pseudo-variables, so such a request would get no answer at all.  This
module reads the headers a response needs from the raw message (``$mb``,
:func:`needed_headers`) and writes the response: the Via headers, From, To (with
a tag when the request had none), Call-ID and CSeq copied (a request with no CSeq
gets ``0`` and its request-line method, :func:`cseq_of`), a Warning, no body.  It is
sent back over UDP to the request's source address, and to its source port when the top Via asks for ``rport`` (RFC 3581), else to the Via's
sent-by port.
"""

from __future__ import annotations

import hashlib
import re

# RFC 3261 7.3.3: the compact forms of the headers read here.
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length"}
_NEEDED = ("via", "from", "to", "call-id", "cseq")
_SENT_BY = re.compile(r"^\s*SIP\s*/\s*2\.0\s*/\s*\S+\s+(\[[^\]]+\]|[^\s;:]+)(?::(\d+))?", re.I)


def _fields(message: str) -> tuple[list[tuple[str, str]], str]:
    """A raw SIP message's header fields as (lower-case full name, value), folded lines
    joined (RFC 3261 7.3.1) and a line that is not ``name: value`` skipped, and its body."""
    parts = re.split(r"\r?\n\r?\n", message, maxsplit=1)
    fields = []
    for line in re.sub(r"\r?\n[ \t]+", " ", parts[0]).splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            name = name.strip().lower()
            fields.append((_COMPACT.get(name, name), value.strip()))
    return fields, parts[1] if len(parts) > 1 else ""


def needed_headers(message: str) -> dict[str, list[str]]:
    """The values of the headers a response copies (Via, From, To, Call-ID, CSeq), read
    from a raw SIP message's header section."""
    found: dict[str, list[str]] = {name: [] for name in _NEEDED}
    for name, value in _fields(message)[0]:
        if name in found:
            found[name] += [v.strip() for v in value.split(",")] if name == "via" else [value]
    return found


def cseq_of(message: str, found: dict[str, list[str]]) -> str:
    """The CSeq a response copies: the request's own, or ``0`` and the request line's
    method when the request has none (RFC 3261 8.1.1.5 makes it mandatory, yet the
    sender is still told why it is refused)."""
    if found["cseq"]:
        return found["cseq"][0]
    method = message.split(" ", 1)[0].strip()
    return f"0 {method}" if re.fullmatch(r"[A-Za-z0-9.!%*_+`'~-]+", method) else ""


def framing_error(message: str) -> str | None:
    """Why a message's Content-Length does not frame its body (RFC 3261 18.3, 20.14:
    one header, ``1*DIGIT``, not more than the bytes after the empty line), or None.
    A message without the header is framed by its datagram."""
    fields, body = _fields(message)
    values = [value for name, value in fields if name == "content-length"]
    if not values:
        return None
    if len(values) > 1:
        return f"{len(values)} Content-Length headers"
    if not values[0].isdigit() or not values[0].isascii():
        return f"Content-Length {values[0][:20]!r} is not a number"
    if int(values[0]) > len(body.encode("utf-8", "surrogateescape")):
        return f"Content-Length {values[0][:20]} is larger than the body"
    return None


def response(status: int, reason: str, vias: list[str], from_: str, to: str, call_id: str, cseq: str,
             warning: str | None = None) -> str:
    """The response text; raises ValueError when a required header is missing."""
    if not (vias and from_ and to and call_id and cseq):
        raise ValueError("the request lacks Via, From, To, Call-ID or CSeq")
    if not re.search(r";\s*tag\s*=", to, re.I):
        to += ";tag=" + hashlib.sha256(f"{call_id}\0{from_}\0{cseq}".encode()).hexdigest()[:16]
    lines = [f"SIP/2.0 {status} {reason}", *(f"Via: {via}" for via in vias), f"From: {from_}", f"To: {to}",
             f"Call-ID: {call_id}", f"CSeq: {cseq}"]
    if warning:
        lines.append(f"Warning: {warning}")
    lines.append("Content-Length: 0")
    return "\r\n".join(lines) + "\r\n\r\n"


def destination(top_via: str, source: tuple[str, int]) -> tuple[str, int]:
    """Where a response to a request received over UDP from ``source`` goes (RFC 3261
    18.2.2 with RFC 3581): the source address, and the source port when the top Via
    has ``rport``, else its sent-by port (5060 when it names none)."""
    if re.search(r";\s*rport\b", top_via, re.I):
        return source
    match = _SENT_BY.match(top_via)
    return source[0], int(match.group(2)) if match and match.group(2) else 5060


__all__ = ["cseq_of", "destination", "framing_error", "needed_headers", "response"]
