"""mediad.proto.demux: RFC 7983 first-byte ranges and the RFC 5761 section 4 RTP/RTCP split."""

from __future__ import annotations

import pytest

from mediad.proto import demux

BODY = bytes(40)


@pytest.mark.req("MUX-1")
@pytest.mark.parametrize("first, kind", [
    (0, demux.STUN), (3, demux.STUN),
    (4, demux.UNKNOWN), (15, demux.UNKNOWN),
    (16, demux.ZRTP), (19, demux.ZRTP),
    (20, demux.DTLS), (22, demux.DTLS), (23, demux.DTLS), (63, demux.DTLS),
    (64, demux.TURN_CHANNEL), (79, demux.TURN_CHANNEL),
    (80, demux.UNKNOWN), (127, demux.UNKNOWN),
    (128, demux.RTP), (191, demux.RTP),
    (192, demux.UNKNOWN), (255, demux.UNKNOWN),
])
def test_rfc7983_first_byte_ranges(first, kind):
    assert demux.classify(bytes([first, 0]) + BODY) is kind
    assert demux._first_byte_table()[first] is kind  # the table as the module builds it at import


def test_first_byte_table_covers_every_byte():
    table = demux._first_byte_table()
    assert isinstance(table, tuple) and len(table) == 256
    assert [sum(1 for k in table if k is kind) for kind in (demux.STUN, demux.ZRTP, demux.DTLS,
                                                              demux.TURN_CHANNEL, demux.RTP, demux.UNKNOWN)] == [
        4, 4, 44, 16, 64, 124]


@pytest.mark.req("MUX-1")
@pytest.mark.parametrize("second, kind", [
    (0, demux.RTP), (96, demux.RTP), (111, demux.RTP), (191, demux.RTP),  # 191: marker + PT 63
    (192, demux.RTCP), (200, demux.RTCP), (201, demux.RTCP), (206, demux.RTCP), (223, demux.RTCP),
    (224, demux.RTP), (255, demux.RTP),  # marker + PT 96..127
])
def test_rfc5761_rtcp_packet_types(second, kind):
    for first in (0x80, 0x81, 0xA0, 0xBF):  # version 2, padding / count bits
        assert demux.classify(bytes([first, second]) + BODY) is kind


@pytest.mark.req("MUX-1")
def test_real_packets():
    stun_binding = bytes.fromhex("000100002112a442") + bytes(12)
    client_hello_record = bytes.fromhex("16fefd0000000000000000") + b"\x00\x00"
    rtp = bytes.fromhex("80e0000100000000deadbeef")  # marker, PT 96
    rtcp_rr = bytes.fromhex("81c90001deadbeef")
    assert [demux.classify(p) for p in (stun_binding, client_hello_record, rtp, rtcp_rr)] == [
        demux.STUN, demux.DTLS, demux.RTP, demux.RTCP]


@pytest.mark.parametrize("packet", [
    b"", b"\x80", b"\x00\x01\x00", bytes(19), b"\x16\xfe\xfd" + bytes(9), b"\x80\x00" + bytes(9),
    b"\x81\xc9" + bytes(5), b"\x10" + bytes(10),
])
def test_short_datagrams_are_unknown(packet):
    assert demux.classify(packet) is demux.UNKNOWN


def test_minimum_lengths_are_enough():
    assert demux.classify(bytes(20)) is demux.STUN
    assert demux.classify(b"\x16" + bytes(12)) is demux.DTLS
    assert demux.classify(b"\x80\x00" + bytes(10)) is demux.RTP
    assert demux.classify(b"\x81\xc9" + bytes(6)) is demux.RTCP
    assert demux.classify(b"\x40\x00\x00\x00") is demux.TURN_CHANNEL
    assert demux.classify(b"\x10" + bytes(11)) is demux.ZRTP


# -- RFC 3550 A.2: RTCP header validity -------------------------------------------

_RR = bytes([0x80, 201, 0, 1]) + bytes(4)  # empty receiver report: 8 bytes, length 1
_SDES = bytes([0x81, 202, 0, 2]) + bytes(4) + bytes([1, 2, 0x61, 0x62])  # one chunk, 12 bytes


@pytest.mark.req("SRTP-8")
@pytest.mark.parametrize("datagram, valid", [
    (_RR, True),
    (_RR + _SDES, True),  # compound
    (bytes([0x80, 206, 0, 2]) + bytes(8), True),  # reduced size (RFC 5506): feedback alone
    (_RR + bytes([0xA0, 203, 0, 1]) + bytes(3) + b"\x04", True),  # padding on the last packet
    (bytes([0xA0, 201, 0, 1]) + bytes(4) + _SDES, False),  # padding not on the last packet
    (_RR[:7], False),  # short
    (bytes([0x8C, 200]) + bytes(9), False),  # 11 bytes: not a whole number of words
    (bytes([0x80, 201, 0, 2]) + bytes(4), False),  # length says 12, datagram has 8
    (_RR + bytes([0x40, 202, 0, 0]), False),  # second packet version 1
    (bytes([0x80, 201, 0, 0]) + bytes(4), False),  # length says 4, 4 bytes left over
    (bytes([0x80, 201, 0, 0]), False),  # a header alone (length 0: 4 bytes) carries no SSRC
    (_RR + bytes([0x80, 203, 0, 0]), True),  # a 4-byte BYE without SSRC (RFC 3550 6.6: SC = 0) last
    (_SDES + _RR, True),  # a count field of 1 is no padding bit
    (bytes([0x80, 204, 1, 0]) + bytes(1024), True),  # length 256 words: both bytes of the length count
    (bytes([0x80, 204, 1, 0]) + bytes(1020), False),
])
def test_rtcp_validity_rfc3550_a2(datagram, valid):
    assert demux.rtcp_is_valid(datagram) is valid
