"""T.140 in RTP (RFC 4103) and RED (RFC 2198) for the data-channel gateway (mediad.proto.t140)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediad.proto.t140 import (
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


# -- RFC 3550 5.1 / 5.3.1: the RTP header as parse_rtp reads it ---------------------------

def test_parse_rtp_fixed_header_fields():
    packet = struct.pack("!BBHII", 0x80, 0x80 | 98, 0xBEEF, 0x01020304, 0xCAFEBABE) + b"text"
    assert parse_rtp(packet) == (98, 0xBEEF, 0x01020304, 0xCAFEBABE, True, b"text")
    assert parse_rtp(packet[:12]) == (98, 0xBEEF, 0x01020304, 0xCAFEBABE, True, b"")  # a header alone


def test_parse_rtp_skips_csrcs_and_the_header_extension():
    csrcs = struct.pack("!II", 1, 2)
    packet = struct.pack("!BBHII", 0x82, 98, 1, 0, 0) + csrcs + b"ab"
    assert parse_rtp(packet)[5] == b"ab"
    extension = struct.pack("!HH", 0xBEDE, 2) + bytes(8)  # two 32-bit words of extension
    packet = struct.pack("!BBHII", 0x91, 98, 1, 0, 0) + struct.pack("!I", 7) + extension + b"xyz"
    assert parse_rtp(packet)[5] == b"xyz"
    packet = struct.pack("!BBHII", 0x90, 98, 1, 0, 0) + struct.pack("!HH", 0xBEDE, 0)  # empty extension
    assert parse_rtp(packet)[5] == b""


def test_parse_rtp_removes_padding():
    packet = struct.pack("!BBHII", 0xA0, 98, 1, 0, 0) + b"hi" + bytes([0, 0, 3])
    assert parse_rtp(packet)[5] == b"hi"
    packet = struct.pack("!BBHII", 0xA0, 98, 1, 0, 0) + bytes([0, 2])  # padding is the whole payload
    assert parse_rtp(packet)[5] == b""


def test_parse_rtp_marker_is_the_top_bit_only():
    assert parse_rtp(struct.pack("!BBHII", 0x80, 99, 1, 0, 0))[4] is False
    assert parse_rtp(struct.pack("!BBHII", 0x80, 0x80 | 99, 1, 0, 0))[4] is True


@pytest.mark.parametrize(("packet", "message"), [
    (bytes(11), "RTP packet too short: 11 bytes"),
    (struct.pack("!BBHII", 0x40, 98, 1, 0, 0), "RTP version 1"),
    (struct.pack("!BBHII", 0xC0, 98, 1, 0, 0), "RTP version 3"),
    (struct.pack("!BBHII", 0x90, 98, 1, 0, 0) + b"\xbe\xde\x00", "RTP header extension truncated"),
    (struct.pack("!BBHII", 0x90, 98, 1, 0, 0) + struct.pack("!HH", 0xBEDE, 1), "RTP header longer than the packet"),
    (struct.pack("!BBHII", 0x81, 98, 1, 0, 0), "RTP header longer than the packet"),
    (struct.pack("!BBHII", 0xA0, 98, 1, 0, 0) + b"a" + bytes([3]), "RTP padding longer than the payload"),
    (struct.pack("!BBHII", 0xA0, 98, 1, 0, 0), "RTP padding longer than the payload"),
    (struct.pack("!BBHII", 0xA0, 98, 1, 0, 0) + bytes([0, 5]), "RTP padding longer than the payload"),
    (struct.pack("!BBHII", 0x90, 98, 1, 0, 0) + struct.pack("!HH", 0xBEDE, 0x8000) + bytes(8),
     "RTP header longer than the packet"),
])
def test_parse_rtp_errors_say_what_is_wrong(packet, message):
    with pytest.raises(ValueError) as caught:
        parse_rtp(packet)
    assert str(caught.value) == message


# -- RFC 2198 section 3: RED headers ----------------------------------------------------

def test_red_header_fields_offset_and_length():
    # F=1, block PT 98, timestamp offset 0x3FFF (all 14 bits), length 2; then the primary header
    header = struct.pack("!I", 0x80000000 | (98 << 24) | (0x3FFF << 10) | 2)
    blocks, primary = parse_red(header + bytes([98]) + b"ab" + b"primary")
    assert blocks == [(98, 0x3FFF, b"ab")] and primary == (98, b"primary")
    header = struct.pack("!I", 0x80000000 | (98 << 24) | (1 << 10) | 0x3FF)  # the largest length
    blocks, _ = parse_red(header + bytes([98]) + bytes(0x3FF))
    assert blocks == [(98, 1, bytes(0x3FF))]
    header = struct.pack("!I", 0xFF000000 | (200 << 10) | 1)  # block PT 127: the sign bit of the word set
    assert parse_red(header + bytes([98]) + b"x")[0] == [(127, 200, b"x")]


def test_red_primary_header_is_the_first_byte_without_f():
    assert parse_red(bytes([0x7F]) + b"text") == ([], (127, b"text"))
    assert parse_red(bytes([0x01])) == ([], (1, b""))


@pytest.mark.parametrize(("payload", "message"), [
    (b"", "RED header truncated"),
    (b"\x80\x00\x00", "RED header truncated"),  # a redundant header needs 4 bytes
    (b"\x80\x00\x00\x00", "RED header truncated"),  # and then a primary header
    (struct.pack("!I", 0x80000000 | (98 << 24) | 3) + bytes([98]) + b"ab", "RED block longer than the packet"),
])
def test_red_errors_say_what_is_wrong(payload, message):
    with pytest.raises(ValueError) as caught:
        parse_red(payload)
    assert str(caught.value) == message


def test_red_block_filling_the_packet_exactly_is_whole():
    payload = struct.pack("!I", 0x80000000 | (98 << 24) | 3) + bytes([98]) + b"abc"
    assert parse_red(payload) == ([(98, 0, b"abc")], (98, b""))


def test_a_character_longer_than_the_limit_cannot_be_split():
    with pytest.raises(ValueError) as caught:
        split_utf8("\u00e9".encode(), 1)
    assert str(caught.value) == "T.140 text is not UTF-8"
    assert split_utf8("a\u00e9".encode(), 2) == [b"a", "\u00e9".encode()]


def test_red_recovers_two_lost_packets_in_order_and_drops_are_counted():
    depacketizer = T140Depacketizer(pt=98, red_pt=100)
    assert depacketizer.receive(rtp(10, red_payload([b"", b"a"], b"b"), pt=100)) == b"b"
    # 11 and 12 are lost; 13 carries them as its two redundant generations
    assert depacketizer.receive(rtp(13, red_payload([b"c", b"d"], b"e"), pt=100)) == b"cde"
    assert depacketizer.receive(rtp(14, bytes([98]) + b"abc", pt=0)) is None  # not T.140, not RED
    assert depacketizer.receive(rtp(15, red_payload([], b"x", pt=97), pt=100)) is None  # RED of another type
    assert depacketizer.dropped == 2
