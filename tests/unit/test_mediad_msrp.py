"""RFC 4975 section 7.1 message boundaries in a TCP stream (mediad.proto.msrp)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediad.proto.msrp import MsrpFramer, MsrpFramingError, message_end

# RFC 4975 section 4 (example exchange), the SEND and its 200 OK.
RFC4975_SEND = (
    b"MSRP a786hjs2 SEND\r\n"
    b"To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n"
    b"From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n"
    b"Message-ID: 87652491\r\n"
    b"Byte-Range: 1-25/25\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Hey Bob, are you there?\r\n"
    b"-------a786hjs2$\r\n"
)
RFC4975_OK = (
    b"MSRP a786hjs2 200 OK\r\n"
    b"To-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n"
    b"From-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n"
    b"-------a786hjs2$\r\n"
)
# A body that holds an end line of *another* transaction and a near miss of its own.
TRICKY = (
    b"MSRP dkei38sd SEND\r\n"
    b"To-Path: msrp://a/b;tcp\r\nFrom-Path: msrp://c/d;tcp\r\nByte-Range: 1-*/*\r\n"
    b"Content-Type: text/plain\r\n\r\n"
    b"-------a786hjs2$\r\n-------dkei38sdX\r\n-------dkei38sd\r\n"
    b"-------dkei38sd+\r\n"
)


def test_rfc4975_messages_in_one_piece():
    framer = MsrpFramer()
    assert framer.feed(RFC4975_SEND + RFC4975_OK) == [RFC4975_SEND, RFC4975_OK]
    assert framer.pending == 0


def test_end_line_flags_and_near_misses():
    assert message_end(TRICKY) == (len(TRICKY), b"dkei38sd")
    assert MsrpFramer().feed(TRICKY) == [TRICKY]
    truncated = RFC4975_SEND.replace(b"$\r\n", b"#\r\n")
    assert MsrpFramer().feed(truncated) == [truncated]


@given(st.lists(st.integers(min_value=0, max_value=len(RFC4975_SEND + TRICKY + RFC4975_OK)), max_size=8))
def test_any_split_gives_the_same_messages(cuts):
    stream = RFC4975_SEND + TRICKY + RFC4975_OK
    framer = MsrpFramer()
    out = []
    last = 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        out += framer.feed(stream[last:cut])
        last = cut
    assert out == [RFC4975_SEND, TRICKY, RFC4975_OK]
    assert framer.pending == 0


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\n\r\n",
    b"MSRP x SEND\r\n",  # transaction id shorter than 4 characters
    b"MSRP a786hjs2 SE ND\r\n",
])
def test_garbage_is_a_peer_error(garbage):
    with pytest.raises(MsrpFramingError):
        MsrpFramer().feed(garbage)


def test_partial_start_line_waits_and_oversize_fails():
    framer = MsrpFramer(max_message=64)
    assert framer.feed(b"MSR") == []
    assert framer.feed(b"P abcd1234 SEND\r\n") == []
    with pytest.raises(MsrpFramingError):
        framer.feed(b"x" * 100)


def test_a_message_without_headers_or_body_ends_right_after_its_start_line():
    """RFC 4975 7.1: the end line follows the start line's CRLF directly."""
    bare = b"MSRP abcd1234 200 OK\r\n-------abcd1234$\r\n"
    assert MsrpFramer().feed(bare + bare) == [bare, bare]
    assert message_end(bare) == (len(bare), b"abcd1234")


def test_a_start_line_of_512_bytes_without_crlf_is_garbage_511_still_waits():
    framer = MsrpFramer()
    assert framer.feed((b"MSRP abcd1234 200 " + b"x" * 600)[:511]) == []
    with pytest.raises(MsrpFramingError) as caught:
        MsrpFramer().feed((b"MSRP abcd1234 200 " + b"x" * 600)[:512])
    assert caught.value.sip_status == 400 and str(caught.value).startswith("not an MSRP start line: b'MSRP abcd")


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\n", b"HELLO"])
def test_garbage_is_refused_400_and_named(garbage):
    with pytest.raises(MsrpFramingError) as caught:
        MsrpFramer().feed(garbage)
    assert caught.value.sip_status == 400
    assert str(caught.value) == f"not an MSRP start line: {garbage[:40]!r}"
    with pytest.raises(MsrpFramingError) as caught:
        MsrpFramer().feed(b"GARBAGE-LONGER-THAN-FORTY-BYTES" * 3 + b"\r\n")
    assert str(caught.value) == f"not an MSRP start line: {(b'GARBAGE-LONGER-THAN-FORTY-BYTES' * 3)[:40]!r}"


def test_a_message_as_long_as_the_limit_waits_one_byte_more_fails_413():
    framer = MsrpFramer(max_message=64)
    framer.feed(b"MSRP abcd1234 SEND\r\n" + b"x" * 44)
    assert framer.pending == 64
    with pytest.raises(MsrpFramingError) as caught:
        framer.feed(b"x")
    assert caught.value.sip_status == 413 and str(caught.value) == "MSRP message longer than 64 bytes"
