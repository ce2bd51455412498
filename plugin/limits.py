"""What the edge accepts in a body that carries SDP, checked before any work is done.

An SDP body is bytes on the wire.  RFC 8866 section 5 makes it UTF-8 text
(ISO 10646) in which the NUL character is not allowed; a body that is not, or
that exceeds one of the limits below, is the peer's fault and is refused
before the rules run and before mediad is asked anything:

* a body over :data:`MAX_BODY_BYTES` (16 KiB): 413 Request Entity Too Large
  (RFC 3261 section 21.4.11), whatever its type;
* an SDP with more than :data:`MAX_MEDIA_LINES` (32) m-lines or a line longer
  than :data:`MAX_LINE_BYTES` (4 KiB), or a body that is not UTF-8 text or
  holds a NUL: 488 Not Acceptable Here.

Each refusal carries a Warning saying which limit.  The limits leave room for
the largest offers seen from real clients: Chromium's audio+video+data offer
is about 6.4 KB with 3 m-lines and lines under 250 bytes.  A reply cannot be
refused: its SDP failing these checks is a failed answer (:mod:`plugin.lifecycle`).

Kamailio hands a body that is not UTF-8 to the plugin as bytes
(:mod:`plugin.kemi` reads it hex-encoded); the rest arrives as ``str``.
"""

from __future__ import annotations

import re

from sdp_rules.errors import PeerError

MAX_BODY_BYTES = 16384
MAX_MEDIA_LINES = 32
MAX_LINE_BYTES = 4096
# Kamailio's $(rb{s.encode.hexa}) transformation works on bodies up to this size
# (pv_trans.c: half its 64 KiB buffer); MAX_BODY_BYTES stays below it.
HEX_READ_LIMIT = 32767
# a=<attribute> or a=<attribute>:<value>, the name a token (RFC 8866 section 9, RFC 3261 25.1)
_ATTRIBUTE = re.compile(r"a=[A-Za-z0-9!#$%&'*+.^_`{|}~-]+(?::|\s*$)")


class BodyError(PeerError):
    """A body the edge refuses before handling it (413 or 488)."""


def check_size(size: int) -> None:
    """Raise :class:`BodyError` (413) for a body of ``size`` bytes over the limit."""
    if size > MAX_BODY_BYTES:
        raise BodyError(f"body of {size} bytes, over the edge's limit of {MAX_BODY_BYTES}", 413)


def body_text(body: str | bytes) -> str:
    """The body as text: raises :class:`BodyError` when it is too large, not UTF-8, or
    holds a NUL (RFC 8866 section 5)."""
    if isinstance(body, bytes):
        check_size(len(body))
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BodyError(f"body is not UTF-8 text: byte 0x{body[exc.start]:02x} at offset {exc.start}"
                            " (RFC 8866 section 5)", 488) from None
    else:
        text = body
        check_size(len(text) if text.isascii() else len(text.encode("utf-8")))
    nul = text.find("\x00")
    if nul >= 0:
        raise BodyError(f"NUL character at offset {nul} of the body (RFC 8866 section 5)", 488)
    return text


def check_sdp(sdp: str) -> None:
    """Raise :class:`BodyError` (488) for an SDP with too many m-lines, too long a line, or
    an attribute whose name is not a token (RFC 8866 section 9: ``att-field = token``;
    such a line would pass through unrecognised, a mangled ``a=fingerprint`` included)."""
    media = 0
    for number, line in enumerate(sdp.splitlines(), 1):
        if len(line) > MAX_LINE_BYTES and len(line.encode("utf-8")) > MAX_LINE_BYTES:
            raise BodyError(f"SDP line {number} is {len(line.encode('utf-8'))} bytes long,"
                            f" over the edge's limit of {MAX_LINE_BYTES}", 488)
        if line.startswith("a=") and not _ATTRIBUTE.match(line):
            raise BodyError(f"SDP line {number}: the attribute name is not a token (RFC 8866 section 9)", 488)
        if line.startswith("m="):
            media += 1
            if media > MAX_MEDIA_LINES:
                raise BodyError(f"SDP has more than {MAX_MEDIA_LINES} m-lines, the edge's limit", 488)


__all__ = ["BodyError", "HEX_READ_LIMIT", "MAX_BODY_BYTES", "MAX_LINE_BYTES", "MAX_MEDIA_LINES", "body_text",
           "check_sdp", "check_size"]
