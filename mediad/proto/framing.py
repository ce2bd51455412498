"""RFC 4571 section 2 framing: RTP, RTCP and DTLS packets over a TCP stream (TCP-1).

Each packet is preceded by a 16-bit big-endian length, so a packet carries at
most 65535 bytes; a zero length is legal and carries nothing (it is skipped).
:func:`frame` adds the prefix; a :class:`Deframer` takes the stream in whatever
pieces TCP delivers it (split or joined frames) and returns whole packets.  RFC
6544 section 3 uses the same framing for STUN and the media on ICE-TCP.
"""

from __future__ import annotations

MAX_FRAME = 0xFFFF
LENGTH_SIZE = 2


def frame(packet: bytes) -> bytes:
    """``packet`` with its RFC 4571 length prefix; ValueError above 65535 bytes."""
    if len(packet) > MAX_FRAME:
        raise ValueError(f"RFC 4571 frame too long: {len(packet)} bytes (max {MAX_FRAME})")
    return len(packet).to_bytes(LENGTH_SIZE, "big") + packet


class Deframer:
    """Reassembles RFC 4571 frames from a TCP byte stream; never raises."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.empty_frames = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the packets now complete, in order."""
        self._buffer += data
        packets = []
        buffer = self._buffer
        pos = 0
        while len(buffer) - pos >= LENGTH_SIZE:
            length = (buffer[pos] << 8) | buffer[pos + 1]
            end = pos + LENGTH_SIZE + length
            if end > len(buffer):
                break
            if length:
                packets.append(bytes(buffer[pos + LENGTH_SIZE : end]))
            else:
                self.empty_frames += 1
            pos = end
        if pos:
            del buffer[:pos]
        return packets

    @property
    def next_length(self) -> int | None:
        """The length the next (incomplete) frame announces, once its prefix is in."""
        buffer = self._buffer
        if len(buffer) < LENGTH_SIZE:
            return None
        return (buffer[0] << 8) | buffer[1]

    @property
    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buffer)
