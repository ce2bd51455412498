"""T.140 in RTP (RFC 4103) and RED (RFC 2198) for the data-channel gateway (mediad.t140)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediad.t140 import (
    IDLE_SECONDS, T140Depacketizer, T140Packetizer, parse_red, parse_rtp, split_utf8,
)


def rtp(seq: int, payload: bytes, pt: int = 98) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, 5000, 0xCAFE) + payload


def red_payload(blocks: list[bytes], primary: bytes, pt: int = 98) -> bytes:
    """RFC 2198 section 3: redundant headers (F=1), the primary header (F=0), then the blocks."""
    headers = b"".join(struct.pack("!I", 0x80000000 | (pt << 24) | (300 * (len(blocks) - i) << 10) | len(b))
                       for i, b in enumerate(blocks))
    return headers + bytes([pt]) + b"".join(blocks) + primary


def test_packetizer_header_marker_and_timestamp():
    packetizer = T140Packetizer(pt=98, ssrc=0x01020304, seq=0xFFFF)
    first = packetizer.packetize("Hi".encode(), now=10.0)
    second = packetizer.packetize(" there".encode(), now=10.2)
    after_idle = packetizer.packetize("!".encode(), now=10.2 + IDLE_SECONDS + 0.1)
    (p1,), (p2,), (p3,) = first, second, after_idle
    pt, seq1, ts1, ssrc, marker1, payload1 = parse_rtp(p1)
    assert (pt, seq1, ssrc, marker1, payload1) == (98, 0xFFFF, 0x01020304, True, b"Hi")
    _, seq2, ts2, _, marker2, payload2 = parse_rtp(p2)
    assert (seq2, marker2, payload2) == (0, False, b" there")  # sequence wraps
    assert (ts2 - ts1) & 0xFFFFFFFF == 200  # 1000 Hz clock (RFC 4103 section 6)
    assert parse_rtp(p3)[4] is True  # marker after an idle period (section 3.2)


def test_long_text_is_split_on_character_boundaries():
    text = ("é" * 700).encode()  # 1400 bytes of two-byte characters
    packets = T140Packetizer().packetize(text, now=0.0)
    payloads = [parse_rtp(p)[5] for p in packets]
    assert b"".join(payloads) == text and len(payloads) == 2
    for payload in payloads:
        payload.decode("utf-8")  # whole characters in each packet


@given(st.text(min_size=1, max_size=600), st.integers(min_value=4, max_value=50))
def test_split_utf8_keeps_text(text, limit):
    data = text.encode()
    pieces = split_utf8(data, limit)
    assert b"".join(pieces) == data and all(len(p) <= limit for p in pieces)
    for piece in pieces:
        piece.decode("utf-8")


def test_depacketizer_plain_duplicates_and_other_types():
    depacketizer = T140Depacketizer(pt=98, red_pt=100)
    assert depacketizer.receive(rtp(1, b"abc")) == b"abc"
    assert depacketizer.receive(rtp(1, b"abc")) is None  # duplicate
    assert depacketizer.receive(rtp(2, b"x", pt=0)) is None and depacketizer.dropped == 1
    assert depacketizer.receive(b"\x80\x62") is None and depacketizer.dropped == 2


def test_red_primary_and_recovery_of_a_lost_packet():
    depacketizer = T140Depacketizer(pt=98, red_pt=100)
    assert depacketizer.receive(rtp(10, red_payload([b"", b"a"], b"b"), pt=100)) == b"b"
    # seq 11 (carrying "c") is lost; seq 12 carries it as the newest redundant generation.
    assert depacketizer.receive(rtp(12, red_payload([b"b", b"c"], b"d"), pt=100)) == b"cd"


def test_red_parser_rfc2198_layout():
    blocks, primary = parse_red(red_payload([b"one", b"two"], b"three"))
    assert [(pt, data) for pt, _off, data in blocks] == [(98, b"one"), (98, b"two")]
    assert primary == (98, b"three")
    with pytest.raises(ValueError):
        parse_red(b"\x80\x00")
