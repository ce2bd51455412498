"""T.140 real-time text in RTP (RFC 4103), sans-IO, for the data-channel gateway.

Theory of operation
-------------------
RFC 8865 carries T.140 over a data channel: each data-channel message is a
T.140 block, UTF-8 text.  Toward the IMS core the same text travels in RTP
(RFC 4103 section 3): payload type ``t140/1000`` from the core's SDP, a
1000 Hz timestamp, one T.140 block per packet, the marker bit on the first
packet after an idle period (section 3.2; we treat every gap longer than
:data:`IDLE_SECONDS` as idle).

:class:`T140Packetizer` turns text blocks into RTP packets (``now`` is the
caller's clock); a block longer than :data:`MAX_BLOCK` bytes is split on UTF-8
character boundaries, so every packet carries whole characters (RFC 4103
section 4).  :class:`T140Depacketizer` takes RTP packets from the core and
returns the text block, dropping duplicates (same sequence number as one
already seen in a small window) and packets of other payload types.

Redundancy (RFC 4103 section 4, RFC 2198 ``red``): the ALG offers ``red``
beside ``t140`` and the core may send it.  The depacketizer takes the primary
block of a ``red`` packet, and the redundant generations only to fill a gap of
missing sequence numbers.  The packetizer sends plain ``t140`` (no
redundancy): on a loopback or LAN core path loss is rare, and the ALG's offer
lists ``t140`` so the core accepts it.  Missing: T.140 buffering (the 300 ms
transmission interval of section 3.1: each data-channel message is sent at
once) and RTCP.
"""

from __future__ import annotations

import os
import struct

RTP_VERSION = 2
RTP_HEADER = struct.Struct("!BBHII")
DEFAULT_T140_PT = 98  # RFC 4103 uses a dynamic payload type; the ALG offers 98
T140_CLOCK_RATE = 1000  # RFC 4103 section 6: the timestamp runs at 1000 Hz
IDLE_SECONDS = 0.3  # a gap longer than one transmission interval (section 3.1) is idle
MAX_BLOCK = 1000  # bytes of text per packet
DUPLICATE_WINDOW = 64


def split_utf8(data: bytes, limit: int = MAX_BLOCK) -> list[bytes]:
    """Cut ``data`` into pieces of at most ``limit`` bytes, never inside a UTF-8 character."""
    out = []
    while len(data) > limit:
        cut = limit
        while cut > 0 and (data[cut] & 0xC0) == 0x80:  # a continuation byte: back off
            cut -= 1
        if cut == 0:
            raise ValueError("T.140 text is not UTF-8")
        out.append(data[:cut])
        data = data[cut:]
    if data:
        out.append(data)
    return out


def parse_rtp(packet: bytes) -> tuple[int, int, int, int, bool, bytes]:
    """(payload type, sequence, timestamp, ssrc, marker, payload); ValueError when malformed."""
    if len(packet) < RTP_HEADER.size:
        raise ValueError(f"RTP packet too short: {len(packet)} bytes")
    b0, b1, seq, ts, ssrc = RTP_HEADER.unpack_from(packet)
    if b0 >> 6 != RTP_VERSION:
        raise ValueError(f"RTP version {b0 >> 6}")
    offset = RTP_HEADER.size + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension (RFC 3550 section 5.3.1)
        if len(packet) < offset + 4:
            raise ValueError("RTP header extension truncated")
        offset += 4 + 4 * struct.unpack_from("!H", packet, offset + 2)[0]
    end = len(packet)
    if b0 & 0x20:  # padding
        if end <= offset or packet[-1] > end - offset:
            raise ValueError("RTP padding longer than the payload")
        end -= packet[-1]
    if offset > end:
        raise ValueError("RTP header longer than the packet")
    return b1 & 0x7F, seq, ts, ssrc, bool(b1 & 0x80), packet[offset:end]


def parse_red(payload: bytes) -> tuple[list[tuple[int, int, bytes]], tuple[int, bytes]]:
    """RFC 2198 section 3: ([(pt, timestamp offset, block)...] oldest first, (pt, primary))."""
    headers = []
    pos = 0
    while True:
        if pos >= len(payload):
            raise ValueError("RED header truncated")
        if not payload[pos] & 0x80:
            primary_pt = payload[pos] & 0x7F
            pos += 1
            break
        if pos + 4 > len(payload):
            raise ValueError("RED header truncated")
        word = struct.unpack_from("!I", payload, pos)[0]
        headers.append(((word >> 24) & 0x7F, (word >> 10) & 0x3FFF, word & 0x3FF))
        pos += 4
    blocks = []
    for pt, offset, length in headers:
        if pos + length > len(payload):
            raise ValueError("RED block longer than the packet")
        blocks.append((pt, offset, payload[pos:pos + length]))
        pos += length
    return blocks, (primary_pt, payload[pos:])


class T140Packetizer:
    """Text blocks (UTF-8 bytes) → RTP packets of payload type ``pt``."""

    def __init__(self, pt: int = DEFAULT_T140_PT, ssrc: int | None = None, seq: int | None = None) -> None:
        self.pt = pt
        self.ssrc = int.from_bytes(os.urandom(4), "big") if ssrc is None else ssrc
        self.seq = int.from_bytes(os.urandom(2), "big") if seq is None else seq
        self.ts_base = int.from_bytes(os.urandom(4), "big")
        self.started_at: float | None = None
        self.last_sent: float | None = None

    def packetize(self, text: bytes, now: float) -> list[bytes]:
        if self.started_at is None:
            self.started_at = now
        marker = self.last_sent is None or now - self.last_sent > IDLE_SECONDS
        self.last_sent = now
        ts = (self.ts_base + round((now - self.started_at) * T140_CLOCK_RATE)) & 0xFFFFFFFF
        out = []
        for block in split_utf8(text):
            header = RTP_HEADER.pack(RTP_VERSION << 6, (0x80 if marker else 0) | self.pt, self.seq, ts, self.ssrc)
            out.append(header + block)
            self.seq = (self.seq + 1) & 0xFFFF
            marker = False
        return out


class T140Depacketizer:
    """RTP packets from the core → T.140 text blocks (bytes); never raises on packets."""

    def __init__(self, pt: int = DEFAULT_T140_PT, red_pt: int | None = None) -> None:
        self.pt = pt
        self.red_pt = red_pt
        self.last_seq: int | None = None
        self.seen: list[int] = []
        self.dropped = 0

    def receive(self, packet: bytes) -> bytes | None:
        """The new text this packet brings (None: nothing new, or dropped and counted)."""
        try:
            pt, seq, _ts, _ssrc, _marker, payload = parse_rtp(packet)
            if seq in self.seen:
                return None
            if pt == self.pt:
                text = payload
            elif self.red_pt is not None and pt == self.red_pt:
                text = self._from_red(seq, payload)
            else:
                self.dropped += 1
                return None
        except ValueError:
            self.dropped += 1
            return None
        self.seen.append(seq)
        del self.seen[:-DUPLICATE_WINDOW]
        self.last_seq = seq
        return text or None

    def _from_red(self, seq: int, payload: bytes) -> bytes:
        """The primary block, preceded by the redundant ones that fill a sequence gap."""
        redundant, (primary_pt, primary) = parse_red(payload)
        if primary_pt != self.pt:
            raise ValueError(f"RED primary payload type {primary_pt} is not T.140")
        missing = 0 if self.last_seq is None else ((seq - self.last_seq - 1) & 0xFFFF)
        missing = min(missing, len(redundant))
        recovered = b"".join(block for pt, _off, block in redundant[len(redundant) - missing:] if pt == self.pt)
        return recovered + primary
