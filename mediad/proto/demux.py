"""Demultiplexing of one UDP port: RFC 7983 section 7 and RFC 5761 section 4.

RFC 7983 sorts a datagram by its first byte::

    [0..3]     STUN            [64..79]   TURN channel
    [16..19]   ZRTP            [128..191] RTP / RTCP
    [20..63]   DTLS            anything else: drop

RFC 5761 section 4 then tells RTCP from RTP on a muxed port: an RTCP packet's
second byte is its packet type, 192..223 (SR 200, RR 201, SDES 202, BYE 203,
APP 204, RTPFB 205, PSFB 206, ...), which as RTP would be a marker bit and a
payload type 64..95, the range RFC 5761 keeps out of RTP.

Datagrams too short to hold the header of their kind are UNKNOWN.  The lookup
is a 256-entry table on the first byte: no allocation on the packet path.
"""

from __future__ import annotations

import enum


class Kind(enum.Enum):
    STUN = "stun"
    ZRTP = "zrtp"
    DTLS = "dtls"
    TURN_CHANNEL = "turn_channel"
    RTP = "rtp"
    RTCP = "rtcp"
    UNKNOWN = "unknown"


STUN = Kind.STUN
ZRTP = Kind.ZRTP
DTLS = Kind.DTLS
TURN_CHANNEL = Kind.TURN_CHANNEL
RTP = Kind.RTP
RTCP = Kind.RTCP
UNKNOWN = Kind.UNKNOWN

# Shortest datagram of each kind: STUN header (RFC 5389 6), ZRTP packet header
# (RFC 6189 5), DTLS record header (RFC 6347 4.1), ChannelData header (RFC 8656
# 12.4), RTP fixed header (RFC 3550 5.1), RTCP header + SSRC (RFC 3550 6.4).
MIN_LENGTH = {STUN: 20, ZRTP: 12, DTLS: 13, TURN_CHANNEL: 4, RTP: 12, RTCP: 8}


def _first_byte_table() -> tuple[Kind, ...]:
    table = [UNKNOWN] * 256
    for lo, hi, kind in ((0, 3, STUN), (16, 19, ZRTP), (20, 63, DTLS), (64, 79, TURN_CHANNEL), (128, 191, RTP)):
        for value in range(lo, hi + 1):
            table[value] = kind
    return tuple(table)


_BY_FIRST_BYTE = _first_byte_table()


def classify(datagram: bytes) -> Kind:
    """The kind of one datagram received on a muxed port."""
    if len(datagram) < 4:
        return UNKNOWN
    kind = _BY_FIRST_BYTE[datagram[0]]
    if kind is RTP and 192 <= datagram[1] <= 223:
        kind = RTCP
    if len(datagram) < MIN_LENGTH.get(kind, 0):
        return UNKNOWN
    return kind


def rtcp_is_valid(datagram: bytes) -> bool:
    """RFC 3550 appendix A.2 header validity for a (compound) RTCP datagram.

    Every packet has version 2, and the packets' length fields -- ``(length + 1)``
    32-bit words each -- add up to exactly the datagram; padding only on the last.
    The first-packet SR/RR rule of A.2 is not applied, so reduced-size RTCP
    (RFC 5506) passes.  Used on plain RTCP from the core, which no
    authentication protects, so that garbage is not protected and sent on.
    """
    size = len(datagram)
    if size < 8 or size % 4:
        return False
    offset = 0
    while offset < size:
        if size - offset < 4 or datagram[offset] >> 6 != 2:
            return False
        length = (int.from_bytes(datagram[offset + 2:offset + 4], "big") + 1) * 4
        padded = datagram[offset] & 0x20
        offset += length
        if padded and offset != size:
            return False
    return offset == size
