"""mediad.proto.framing: RFC 4571 section 2 length-prefixed packets on a TCP stream."""

from __future__ import annotations

import os

import pytest

from mediad.proto.framing import MAX_FRAME, Deframer, frame

PACKETS = [b"\x80" + os.urandom(171), b"\x16\xfe\xfd" + os.urandom(120), b"x", os.urandom(1500)]


@pytest.mark.req("TCP-1")
def test_rfc4571_frame_layout():
    assert frame(b"\x80\x00") == b"\x00\x02\x80\x00"
    assert frame(bytes(300))[:2] == b"\x01\x2c"
    assert frame(b"") == b"\x00\x00"
    assert len(frame(bytes(MAX_FRAME))) == MAX_FRAME + 2
    with pytest.raises(ValueError, match="frame too long: 65536 bytes"):
        frame(bytes(MAX_FRAME + 1))


@pytest.mark.req("TCP-1")
def test_joined_frames_in_one_read():
    deframer = Deframer()
    assert deframer.feed(b"".join(frame(p) for p in PACKETS)) == PACKETS
    assert deframer.pending == 0


@pytest.mark.req("TCP-1")
def test_split_frames_byte_by_byte():
    stream = b"".join(frame(p) for p in PACKETS)
    deframer = Deframer()
    out = []
    for i in range(len(stream)):
        out += deframer.feed(stream[i : i + 1])
    assert out == PACKETS


@pytest.mark.req("TCP-1")
@pytest.mark.parametrize("cut", [1, 2, 3, 100, 175, 176])
def test_partial_frames_across_reads(cut):
    stream = b"".join(frame(p) for p in PACKETS)
    deframer = Deframer()
    first = deframer.feed(stream[:cut])
    assert all(p in PACKETS for p in first)
    assert deframer.pending == cut - sum(len(p) + 2 for p in first)
    assert first + deframer.feed(stream[cut:]) == PACKETS


def test_zero_length_frames_are_skipped_and_max_frame_passes():
    big = os.urandom(MAX_FRAME)
    deframer = Deframer()
    stream = frame(b"") + frame(b"a") + frame(b"") + frame(big) + frame(b"")
    assert deframer.feed(stream[:5]) == [b"a"]
    assert deframer.feed(stream[5:]) == [big]
    assert deframer.empty_frames == 3
    assert deframer.feed(b"") == []
    assert deframer.pending == 0
