"""The SDP inside a multipart SIP body (RFC 5621): find it, put the rewritten one back.

A SIP message may carry its SDP as one part of a ``multipart/mixed`` (or
``related``, ``alternative``) body, beside other parts: the PIDF-LO location of
an emergency call (RFC 6442), an ISUP message (RFC 3204), a resource list.
The SDP part is the offer or answer and is rewritten like a bare SDP body; every
other byte of the body (preamble, part headers, the other parts, epilogue) is
left exactly as it came.

Why not the ``email`` package: it parses each part into a message object and
writes the whole body out again (header folding, line ends, boundary lines),
so the parts the edge must not touch would not come out byte for byte.  Only
the delimiters of RFC 2046 section 5.1.1 are looked for here: a line
``--boundary`` (transport padding allowed) starting the body or following a
line break, and the closing ``--boundary--``.  A part is its headers, an empty
line, and its content, which ends at the line break before the next delimiter.

A part that is itself multipart is searched the same way (a ``multipart/
alternative`` inside a ``multipart/mixed``), down to ``MAX_DEPTH`` levels; a
body nested deeper is refused (400) rather than let an SDP hidden in it reach
the other side unconverted.  A body with more than one SDP part, at any depth,
is refused (488): which of them is the offer would be a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sdp_rules.errors import PeerError

SDP_TYPE = "application/sdp"
MAX_DEPTH = 4  # multipart levels searched: the body's own and three nested
_PARAM = re.compile(r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]+)')


class MultipartError(PeerError, ValueError):
    """A multipart body that cannot be taken apart (400), or holds more than one SDP (488)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason, status)

    @property
    def status(self) -> int:
        return self.sip_status


@dataclass(frozen=True)
class SdpPart:
    """An SDP body part: the text before it, the SDP itself, and the text after it."""

    before: str
    sdp: str
    after: str

    def rebuild(self, sdp: str) -> str:
        """The whole body with ``sdp`` in place of the part's content."""
        return self.before + sdp + self.after


def media_type(content_type: str) -> str:
    """The ``type/subtype`` of a Content-Type value, lower case."""
    return content_type.split(";", 1)[0].strip().lower()


def is_multipart(content_type: str) -> bool:
    return media_type(content_type).startswith("multipart/")


def boundary(content_type: str) -> str:
    """The ``boundary`` parameter of a multipart Content-Type (RFC 2046 5.1.1)."""
    for name, value in _PARAM.findall(content_type):
        if name.lower() == "boundary":
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            if not 1 <= len(value) <= 70 or value.endswith(" "):
                raise MultipartError(f"multipart boundary of {len(value)} characters (1 to 70, RFC 2046)")
            return value
    raise MultipartError("multipart Content-Type without a boundary parameter")


def find_sdp(content_type: str, body: str) -> SdpPart | None:
    """The one ``application/sdp`` part of a multipart body; None when it has none.

    Raises :class:`MultipartError` when the body (or a multipart part of it)
    does not follow its Content-Type's boundary, nests deeper than
    ``MAX_DEPTH`` levels, or holds more than one SDP part.
    """
    found = _find(content_type, body, 1)
    if len(found) > 1:
        raise MultipartError(f"the multipart body has {len(found)} SDP parts", 488)
    return found[0] if found else None


def _find(content_type: str, body: str, depth: int) -> list[SdpPart]:
    """Every SDP part of a multipart body at this level and below."""
    if depth > MAX_DEPTH:
        raise MultipartError(f"multipart nested deeper than {MAX_DEPTH} levels")
    mark = re.escape(boundary(content_type))
    delimiters = list(re.finditer(rf"(?:\A|\r?\n)--{mark}(--)?[ \t]*(?:\r?\n|\Z)", body))
    if not delimiters:
        raise MultipartError("the body has no line with the Content-Type's boundary")
    closing = [i for i, d in enumerate(delimiters) if d.group(1)]
    if not closing:
        raise MultipartError("the multipart body has no closing boundary line")
    found: list[SdpPart] = []
    # The parts: from each delimiter up to the next, the first closing one ending the last.
    for opening, following in zip(delimiters, delimiters[1:closing[0] + 1]):
        start, end = opening.end(), following.start()
        head, separator = _split_head(body[start:end])
        part_type = _header(head, "content-type", "c")
        content = start + len(head) + len(separator)
        if media_type(part_type) == SDP_TYPE:
            found.append(SdpPart(body[:content], body[content:end], body[end:]))
        elif is_multipart(part_type):
            found += [SdpPart(body[:content] + inner.before, inner.sdp, inner.after + body[end:])
                      for inner in _find(part_type, body[content:end], depth + 1)]
    return found


def _split_head(part: str) -> tuple[str, str]:
    """(headers, the empty line after them) of one body part; its content follows them."""
    if part.startswith("\r\n") or part.startswith("\n"):  # no headers: text/plain (RFC 2046 5.1.1)
        return "", part[:2] if part.startswith("\r\n") else part[:1]
    match = re.search(r"\r?\n\r?\n", part)
    if match is None:
        return part, ""  # headers only: an empty part
    return part[:match.start()], match.group(0)


def _header(head: str, name: str, compact: str) -> str:
    """The value of header ``name`` (or its compact form) in a part's headers; "" if absent."""
    for line in re.split(r"\r?\n(?![ \t])", head):  # folded lines stay with their header
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in (name, compact):
            return " ".join(value.split())
    return ""


__all__ = ["MAX_DEPTH", "MultipartError", "SdpPart", "boundary", "find_sdp", "is_multipart", "media_type"]
