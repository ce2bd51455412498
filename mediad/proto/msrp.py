"""MSRP message boundaries in a TCP byte stream (RFC 4975 section 7.1), sans-IO.

Theory of operation
-------------------
RFC 8873 carries MSRP over a data channel with one MSRP message (request or
response, a whole chunk) per data-channel message; over TCP (RFC 4975) the same
messages follow each other in a byte stream.  The gateway relays bytes
unchanged and only needs to know where each message ends, so the
:class:`MsrpFramer` cuts the TCP stream into messages:

* a message starts with its start line ``MSRP SP transact-id SP (method |
  status-code [SP comment]) CRLF`` (section 9, ``req-start`` / ``resp-start``);
* it ends with its end line ``"-------" transact-id continuation-flag CRLF``
  with the flag one of ``$`` (complete), ``+`` (more chunks) and ``#``
  (truncated), always preceded by CRLF (section 7.1: the end line follows
  the headers, or the body and its CRLF);
* the sender picks a transaction id that does not occur in the body
  (section 7.1), so the first ``CRLF "-------" transact-id flag CRLF`` after
  the start line is the end.

Bytes that do not start with a start line, a transaction id that is not
``ident`` (4 to 32 characters of ``ALPHANUM / "." / "-" / "+" / "%" / "="``)
or a message longer than ``max_message`` raise :class:`MsrpFramingError`
(the peer sent garbage: the shell closes the connection).  Nothing here
parses headers: To-Path / From-Path go through unchanged, which RFC 6714
(CEMA) allows: each endpoint matches its session by session-id only, and the
ALG keeps the session-ids of both paths (``sdp_rules.datachannel``).
"""

from __future__ import annotations

import re

from sdp_rules.errors import PeerError

END_LINE_PREFIX = b"-------"
CONTINUATION_FLAGS = b"$+#"
DEFAULT_MAX_MESSAGE = 1 << 20
_START_LINE = re.compile(rb"^MSRP ([A-Za-z0-9.\-+%=]{4,32}) ([A-Za-z]+|[0-9]{3}(?: [^\r\n]*)?)\r\n")
MAX_START_LINE = 512


class MsrpFramingError(PeerError):
    """The MSRP byte stream is not MSRP (RFC 4975 section 9)."""


def message_end(buffer: bytes | bytearray, start: int = 0) -> tuple[int, bytes] | None:
    """(end offset, transaction id) of the message starting at ``start``; None if incomplete."""
    head = bytes(buffer[start:start + MAX_START_LINE])
    match = _START_LINE.match(head)
    if match is None:
        if b"\r\n" in head or len(head) >= MAX_START_LINE or not b"MSRP ".startswith(head[:5]):
            raise MsrpFramingError(f"not an MSRP start line: {head[:40]!r}", 400)
        return None
    tid = match.group(1)
    needle = b"\r\n" + END_LINE_PREFIX + tid
    pos = start + match.end() - 2
    while True:
        found = buffer.find(needle, pos)
        if found < 0:
            return None
        flag_at = found + len(needle)
        if len(buffer) < flag_at + 3:
            return None
        if buffer[flag_at] in CONTINUATION_FLAGS and buffer[flag_at + 1:flag_at + 3] == b"\r\n":
            return flag_at + 3, tid
        pos = found + 1


class MsrpFramer:
    """TCP bytes in, whole MSRP messages (bytes, unchanged) out."""

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the messages now complete, in order."""
        self._buffer += data
        buffer = self._buffer
        out = []
        pos = 0
        while pos < len(buffer):
            found = message_end(buffer, pos)
            if found is None:
                break
            end, _tid = found
            out.append(bytes(buffer[pos:end]))
            pos = end
        if pos:
            del buffer[:pos]
        if len(buffer) > self.max_message:
            raise MsrpFramingError(f"MSRP message longer than {self.max_message} bytes", 413)
        return out

    @property
    def pending(self) -> int:
        return len(self._buffer)
