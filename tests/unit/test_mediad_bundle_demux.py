"""mediad.proto.bundle_demux: the m-line of each packet on a BUNDLE transport (RFC 9143 section 9.2).

The packets are Chromium's, captured on a max-bundle transport with VP8 and
with H.264 (``tests/fixtures/rtp``).  The routing tables are built the way the
AGW gets them: the SDP rules (BUNDLE on) turn Chromium's offer into the Iq
request, whose streams give the mids, payload types and SSRCs and whose
transport gives the MID extension id.  Where each packet belongs is known from
elsewhere: Chromium's offer lists its SSRCs per m-line, the answer the peer's.
Feedback messages Chromium did not send in the capture (PLI, FIR, TMMBN, ...)
are built after the layouts of RFC 4585, RFC 5104 and RFC 3611.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from iq import IqRequest
from mediad.proto.bundle_demux import BYE_GRACE, BundleDemux, BundleStream, Drop, MidStamp
from sdp_rules import BundlePolicy, DialogState, Kind, Policy, Side, process
from sdp_rules.bundle import mid, ssrcs
from sdp_rules.sdp import parse

RTP_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "rtp"
CODECS = ["vp8", "h264"]


class Capture:
    """One capture: its SDP, its packets, and where each SSRC belongs."""

    def __init__(self, codec: str) -> None:
        self.offer = (RTP_FIXTURES / f"chromium_{codec}.offer.sdp").read_text()
        self.answer = (RTP_FIXTURES / f"chromium_{codec}.answer.sdp").read_text()
        self.packets: list[tuple[int, str, bytes]] = []
        for line in (RTP_FIXTURES / f"chromium_{codec}.packets").read_text().splitlines():
            at, kind, data = line.split()
            self.packets.append((int(at), kind, bytes.fromhex(data)))
        plan = process(self.offer, origin=Side.ACCESS, kind=Kind.OFFER, state=DialogState(), dialog="d",
                       transaction="t", policy=Policy(bundle=BundlePolicy.ON))
        self.iq: IqRequest = plan.iq
        self.key_of_mid = {s.mid: s.stream_id for s in self.iq.streams}
        # Ground truth: the offer's SSRCs are Chromium's, the answer's those Chromium receives.
        self.wic_ssrc = {ssrc: self.key_of_mid[mid(m)] for m in parse(self.offer).media for ssrc in ssrcs(m)}
        self.peer_ssrc = {ssrc: self.key_of_mid[mid(m)] for m in parse(self.answer).media for ssrc in ssrcs(m)}

    def streams(self, *, announced: bool = True, sending: bool = True, merge_payload_types: bool = False):
        out = []
        all_pts = frozenset(pt for s in self.iq.streams for pt in s.access.payload_types)
        for s in self.iq.streams:
            out.append(BundleStream(
                key=s.stream_id, mid=s.mid,
                payload_types=all_pts if merge_payload_types else frozenset(s.access.payload_types),
                ssrcs=tuple(s.access.ssrcs) if announced else (),
                sending=tuple(x for x, k in self.peer_ssrc.items() if k == s.stream_id) if sending else (),
            ))
        return out

    def demux(self, **kwargs) -> BundleDemux:
        return BundleDemux(self.streams(**kwargs), self.iq.transports[0].mid_extension_id)

    def rtp(self) -> list[bytes]:
        return [data for _, kind, data in self.packets if kind == "rtp"]

    def rtcp(self) -> list[bytes]:
        return [data for _, kind, data in self.packets if kind == "rtcp"]


def carries_mid(packet: bytes, ident: int) -> bool:
    """An independent reading of the one-byte header extension (RFC 8285 4.2): is element ``ident`` there?"""
    if not packet[0] & 0x10:
        return False
    start = 12 + 4 * (packet[0] & 0x0F)
    assert packet[start:start + 2] == b"\xbe\xde"
    words = struct.unpack_from("!H", packet, start + 2)[0]
    i, end = start + 4, start + 4 + 4 * words
    while i < end:
        if packet[i] == 0:
            i += 1
            continue
        if packet[i] >> 4 == ident:
            return True
        i += 2 + (packet[i] & 0x0F)
    return False


@pytest.fixture(params=CODECS)
def capture(request) -> Capture:
    return Capture(request.param)


def ssrc_of(packet: bytes) -> int:
    return struct.unpack_from("!I", packet, 8)[0]


# ---------------------------------------------------------------------------
# RTP
# ---------------------------------------------------------------------------

def test_the_capture_is_what_the_tests_say(capture):
    """Audio, video and its RTX from Chromium; the MID extension early, not late (RFC 9143 section 15)."""
    packets = capture.rtp()
    assert {ssrc_of(p) for p in packets} == set(capture.wic_ssrc)
    assert len(set(capture.wic_ssrc.values())) == 2
    ext = capture.iq.transports[0].mid_extension_id
    early = [carries_mid(p, ext) for p in packets[:20]]
    late = [carries_mid(p, ext) for at, kind, p in capture.packets if kind == "rtp" and at > 2500]
    assert all(early) and late and not any(late)


def test_captured_rtp_goes_to_its_m_line(capture):
    """Every packet routed to the m-line whose a=ssrc names its SSRC, nothing dropped."""
    demux = capture.demux()
    got = [demux.route_rtp(p) for p in capture.rtp()]
    assert got == [capture.wic_ssrc[ssrc_of(p)] for p in capture.rtp()]
    assert demux.drops == [0] * len(Drop)


def test_the_mid_extension_binds_ssrcs_nobody_announced(capture):
    """RFC 9143 9.2: with no a=ssrc and no usable payload type, the MID routes, and the SSRC keeps the route.

    Every payload type is given to both m-lines (so the payload type table is
    empty); the late packets, which carry no MID, still go where their SSRC
    was bound by the early ones.
    """
    demux = capture.demux(announced=False, merge_payload_types=True)
    assert demux.by_pt == {} and demux.incoming == {}
    got = [demux.route_rtp(p) for p in capture.rtp()]
    assert got == [capture.wic_ssrc[ssrc_of(p)] for p in capture.rtp()]
    assert demux.incoming == capture.wic_ssrc


def test_without_mid_or_ssrc_the_payload_type_routes_and_binds(capture):
    """RFC 9143 9.2, the last resort: the late packets (no MID) of unannounced SSRCs go by payload type."""
    demux = capture.demux(announced=False)
    late = [p for at, kind, p in capture.packets if kind == "rtp" and at > 2500]
    assert [demux.route_rtp(p) for p in late] == [capture.wic_ssrc[ssrc_of(p)] for p in late]
    assert demux.incoming == {ssrc_of(p): capture.wic_ssrc[ssrc_of(p)] for p in late}


def test_a_mid_no_m_line_has_is_not_decoded(capture):
    """RFC 9143 9.2 step 1: a MID missing from the table: the RTP stream is not decoded."""
    streams = [BundleStream(s.key, "other" if s.mid == "1" else s.mid, s.payload_types, s.ssrcs, s.sending)
               for s in capture.streams()]
    demux = BundleDemux(streams, capture.iq.transports[0].mid_extension_id)
    video_key = capture.key_of_mid["1"]
    early_video = [p for p in capture.rtp()[:20] if capture.wic_ssrc[ssrc_of(p)] == video_key]
    assert early_video and all(demux.route_rtp(p) is None for p in early_video)
    assert demux.drops[Drop.UNKNOWN_MID] == len(early_video)


def test_a_payload_type_of_another_m_line_is_dropped(capture):
    """RFC 9143 9.2 step 3: the SSRC's m-line must receive the packet's payload type."""
    audio_key, video_key = capture.key_of_mid["0"], capture.key_of_mid["1"]
    video = next(p for p in capture.rtp() if capture.wic_ssrc[ssrc_of(p)] == video_key)
    demux = BundleDemux([BundleStream(audio_key, "0", frozenset({111}), (ssrc_of(video),)),
                         BundleStream(video_key, "1", frozenset({96, 97, 102, 103}))], None)
    assert demux.route_rtp(video) is None and demux.drops[Drop.PAYLOAD_TYPE] == 1


def rtp(seq: int, ssrc: int, pt: int, extension: bytes = b"", profile: int = 0xBEDE) -> bytes:
    x = 0x10 if extension else 0
    head = struct.pack("!BBHII", 0x80 | x, pt, seq, 1000, ssrc)
    if extension:
        padded = extension + b"\0" * (-len(extension) % 4)
        head += struct.pack("!HH", profile, len(padded) // 4) + padded
    return head + b"payload"


def test_two_byte_header_extension_and_padding():
    """RFC 8285 4.3 (two-byte form, profile 0x100X) and 4.2 (one-byte, padding bytes between elements)."""
    both = frozenset({96, 111})  # no payload type tells the m-lines apart: only the MID can
    demux = BundleDemux([BundleStream(0, "audio", both), BundleStream(1, "video", both)], 9)
    two_byte = rtp(1, 0xAAAA, 96, bytes([7, 2, 0xFF, 0xEE, 0, 0, 9, 5]) + b"video", profile=0x1000)
    assert demux.route_rtp(two_byte) == 1
    one_byte = rtp(1, 0xBBBB, 111, bytes([0, 0, 0x10, 0xFF, 0]) + bytes([0x94]) + b"audio")
    assert demux.route_rtp(one_byte) == 0
    assert demux.incoming == {0xAAAA: 1, 0xBBBB: 0}


def test_a_header_extension_past_the_packet_is_malformed():
    demux = BundleDemux([BundleStream(0, "a", frozenset({111}))], 4)
    bad = bytearray(rtp(1, 1, 111, bytes([0x40]) + b"a"))
    struct.pack_into("!H", bad, 14, 40)  # 40 words of extension in a 24-byte packet
    assert demux.route_rtp(bytes(bad)) is None and demux.drops[Drop.MALFORMED] == 1
    assert demux.route_rtp(b"\x80\x6f") is None and demux.route_rtp(b"\x40" + b"\0" * 20) is None
    assert demux.drops[Drop.MALFORMED] == 3


def test_an_older_mid_does_not_move_the_ssrc():
    """RFC 7941 4.2.6 via RFC 9143 9.2: a MID update older than the last one is ignored."""
    demux = BundleDemux([BundleStream(0, "a", frozenset({100})), BundleStream(1, "b", frozenset({100}))], 3)
    assert demux.route_rtp(rtp(10, 7, 100, bytes([0x30]) + b"b")) == 1
    assert demux.route_rtp(rtp(9, 7, 100, bytes([0x30]) + b"a")) == 1  # older: still "b"
    assert demux.route_rtp(rtp(65535 + 11 - 65536, 7, 100, bytes([0x30]) + b"a")) == 0  # newer (11): moves
    assert demux.route_rtp(rtp(12, 7, 100)) == 0


# ---------------------------------------------------------------------------
# RTCP
# ---------------------------------------------------------------------------

def parts(packet: bytes) -> list[tuple[int, int]]:
    out, offset = [], 0
    while offset < len(packet):
        out.append((packet[offset + 1], packet[offset] & 0x1F))
        offset += 4 * (struct.unpack_from("!H", packet, offset + 2)[0] + 1)
    return out


def test_captured_rtcp_goes_to_the_m_lines_it_reports_on(capture):
    """RFC 9143 9.2: SR by sender and blocks, SDES by chunk, RR by blocks, NACK by media source, REMB by its SSRCs."""
    demux = capture.demux()
    seen = set()
    for packet in capture.rtcp():
        routed = demux.route_rtcp(packet)
        assert [(s, e) for s, e, _ in routed][-1][1] == len(packet)
        for (start, end, keys), (kind, fmt) in zip(routed, parts(packet)):
            seen.add((kind, fmt))
            sub = packet[start:end]
            if kind == 200:  # SR: its sender, and each report block's source
                want = {capture.wic_ssrc[struct.unpack_from("!I", sub, 4)[0]]}
                want |= {capture.peer_ssrc[struct.unpack_from("!I", sub, 28 + 24 * n)[0]] for n in range(fmt)}
            elif kind == 201:  # RR: each report block's source (what the peer sends)
                want = {capture.peer_ssrc[struct.unpack_from("!I", sub, 8 + 24 * n)[0]] for n in range(fmt)}
            elif kind == 202:  # SDES: the chunk's SSRC
                want = {capture.wic_ssrc[struct.unpack_from("!I", sub, 4)[0]]}
            elif (kind, fmt) == (205, 1):  # generic NACK: the media source
                want = {capture.peer_ssrc[struct.unpack_from("!I", sub, 8)[0]]}
            elif (kind, fmt) == (206, 15):  # REMB: the SSRCs it names
                assert sub[12:16] == b"REMB"
                want = {capture.peer_ssrc[struct.unpack_from("!I", sub, 20 + 4 * n)[0]] for n in range(sub[16])}
            else:
                raise AssertionError(f"unexpected RTCP {kind}/{fmt} in the capture")
            assert set(keys) == want and len(keys) == len(want)
    assert {(200, 0), (201, 1), (201, 2), (202, 1), (205, 1), (206, 15)} <= seen
    assert demux.drops == [0] * len(Drop)


AUDIO, VIDEO = 0, 1
WIC_AUDIO, WIC_VIDEO, AGW_AUDIO, AGW_VIDEO = 0x1111, 0x2222, 0xA1A1, 0xB2B2


def demux_for_rtcp() -> BundleDemux:
    return BundleDemux([BundleStream(AUDIO, "0", frozenset({111}), (WIC_AUDIO,), (AGW_AUDIO,)),
                        BundleStream(VIDEO, "1", frozenset({96}), (WIC_VIDEO,), (AGW_VIDEO,))], 4)


def rtcp(pt: int, count: int, body: bytes) -> bytes:
    assert len(body) % 4 == 0
    return struct.pack("!BBH", 0x80 | count, pt, len(body) // 4) + body


@pytest.mark.parametrize("name, packet, want", [
    ("PLI: media source", rtcp(206, 1, struct.pack("!II", WIC_AUDIO, AGW_VIDEO)), (VIDEO,)),
    ("FIR: the FCI's SSRCs", rtcp(206, 4, struct.pack("!IIIIII", WIC_VIDEO, 0, AGW_VIDEO, 1 << 24, AGW_AUDIO, 0)),
     (VIDEO, AUDIO)),
    ("TMMBR: request about what the AGW sends", rtcp(205, 3, struct.pack("!IIII", WIC_VIDEO, 0, AGW_VIDEO, 0)),
     (VIDEO,)),
    ("TMMBN: notification about what the WIC sends", rtcp(205, 4, struct.pack("!IIII", WIC_VIDEO, 0, WIC_AUDIO, 0)),
     (AUDIO,)),
    ("SR: sender and blocks", rtcp(200, 1, struct.pack("!I", WIC_VIDEO) + bytes(20) + struct.pack("!I", AGW_AUDIO)
                                   + bytes(20)), (VIDEO, AUDIO)),
    ("XR: DLRR sub-blocks",
     rtcp(207, 0, struct.pack("!IBBH", WIC_AUDIO, 5, 0, 3) + struct.pack("!III", AGW_VIDEO, 0, 0)),
     (AUDIO, VIDEO)),
    ("APP: unknown, not routed", rtcp(204, 0, struct.pack("!I", WIC_AUDIO) + b"name"), ()),
    ("NACK about an SSRC nobody knows", rtcp(205, 1, struct.pack("!III", WIC_AUDIO, 0x5555, 0)), ()),
])
def test_feedback_and_reports_after_the_rfc_layouts(name, packet, want):
    """RFC 9143 9.2 per message type: RFC 4585 (PLI), RFC 5104 (FIR, TMMBR/N), RFC 3550 (SR), RFC 3611 (XR)."""
    demux = demux_for_rtcp()
    assert demux.route_rtcp(packet) == [(0, len(packet), want)]
    assert demux.drops[Drop.RTCP_NO_ROUTE] == (0 if want else 1)


def test_sdes_mid_item_binds_and_bye_forgets_after_the_grace():
    """RFC 9143 9.2 (SDES MID item, 15.1) and RFC 3550 6.2.1 (a BYE's SSRC goes after a delay)."""
    demux = demux_for_rtcp()
    chunk = struct.pack("!I", 0x7777) + bytes([1, 3]) + b"abc" + bytes([15, 1]) + b"1" + b"\0" * 4
    sdes = rtcp(202, 1, chunk)
    assert demux.route_rtcp(sdes) == [(0, len(sdes), (VIDEO,))]
    assert demux.incoming[0x7777] == VIDEO and demux.route_rtp(rtp(1, 0x7777, 96)) == VIDEO
    bye = rtcp(203, 1, struct.pack("!I", 0x7777))
    assert demux.route_rtcp(bye, now=100.0) == [(0, len(bye), (VIDEO,))]
    assert demux.timeout() == 100.0 + BYE_GRACE
    demux.expire(100.0 + BYE_GRACE - 1)
    assert 0x7777 in demux.incoming
    demux.expire(100.0 + BYE_GRACE)
    assert 0x7777 not in demux.incoming and demux.timeout() is None


def test_a_compound_with_a_length_past_its_end_is_dropped_whole():
    demux = demux_for_rtcp()
    good = rtcp(201, 0, struct.pack("!I", WIC_AUDIO))
    bad = bytearray(rtcp(206, 1, struct.pack("!II", WIC_AUDIO, AGW_VIDEO)))
    bad[3] = 9
    assert demux.route_rtcp(good + bytes(bad)) == [] and demux.drops[Drop.MALFORMED] == 1


# ---------------------------------------------------------------------------
# The reverse direction and re-negotiation
# ---------------------------------------------------------------------------

def test_ssrcs_sent_toward_the_wic_are_learnt_and_a_collision_is_counted():
    """RFC 9143 9.1: one SSRC must not carry two m-lines' media; the AGW learns what it sends on each."""
    demux = demux_for_rtcp()
    assert demux.sent(VIDEO, 0xC3C3) and demux.sent(VIDEO, 0xC3C3)
    assert demux.outgoing_ssrcs(VIDEO) == [AGW_VIDEO, 0xC3C3]
    assert not demux.sent(AUDIO, 0xC3C3) and demux.drops[Drop.SSRC_COLLISION] == 1
    nack = rtcp(205, 1, struct.pack("!III", WIC_VIDEO, 0xC3C3, 0))
    assert demux.route_rtcp(nack) == [(0, len(nack), (VIDEO,))]


def test_an_update_keeps_what_was_learnt_of_kept_m_lines(capture):
    """RFC 9143 9.2: the tables follow the m-lines added or removed by a new offer/answer."""
    demux = capture.demux(announced=False)
    for packet in capture.rtp():
        demux.route_rtp(packet)
    video_key = capture.key_of_mid["1"]
    kept = [s for s in capture.streams(announced=False) if s.key != video_key]
    demux.update(kept, capture.iq.transports[0].mid_extension_id)
    assert set(demux.incoming.values()) == {capture.key_of_mid["0"]}
    video = next(p for p in capture.rtp() if capture.wic_ssrc[ssrc_of(p)] == video_key)
    assert demux.route_rtp(video) is None


# ---------------------------------------------------------------------------
# The MID toward the WIC (RFC 9143 9.2 and 15.2, RFC 8285 section 4)
# ---------------------------------------------------------------------------

def elements(packet: bytes) -> tuple[int, list[tuple[int, bytes]], bytes]:
    """An independent reading of a packet's header extension: (profile, [(id, value)], payload)."""
    start = 12 + 4 * (packet[0] & 0x0F)
    if not packet[0] & 0x10:
        return 0, [], packet[start:]
    profile, words = struct.unpack_from("!HH", packet, start)
    body, out, i = packet[start + 4:start + 4 + 4 * words], [], 0
    while i < len(body):
        if body[i] == 0:
            i += 1
        elif profile == 0xBEDE:
            n = (body[i] & 0x0F) + 1
            out.append((body[i] >> 4, body[i + 1:i + 1 + n]))
            i += 1 + n
        else:
            out.append((body[i], body[i + 2:i + 2 + body[i + 1]]))
            i += 2 + body[i + 1]
    return profile, out, packet[start + 4 + 4 * words:]


def test_a_core_packet_gets_the_mid_and_chromiums_demultiplexer_routes_it():
    """Plain RTP from the core, no SSRC announced, a payload type on both m-lines: only the MID routes it."""
    both = frozenset({0, 96})
    receiver = BundleDemux([BundleStream(0, "a0", both), BundleStream(1, "v1", both)], 3)
    plain = rtp(1, 0xC0C0, 0) + bytes(160)
    assert receiver.route_rtp(plain) is None and receiver.drops[Drop.NO_ROUTE] == 1
    stamped = MidStamp(3, "v1").apply(plain)
    assert elements(stamped) == (0xBEDE, [(3, b"v1")], plain[12:])
    assert stamped[1:12] == plain[1:12] and stamped[0] == plain[0] | 0x10
    assert receiver.route_rtp(stamped) == 1


def test_the_mid_joins_an_extension_block_the_core_wrote():
    level = bytes([0x10, 0x85]) + bytes([0, 0])  # id 1, audio level, then padding
    plain = rtp(1, 0xC0C0, 0, level) + bytes(20)
    stamped = MidStamp(4, "0").apply(plain)
    assert elements(stamped) == (0xBEDE, [(1, b"\x85"), (4, b"0")], elements(plain)[2])
    assert len(stamped) == len(plain)  # the element took the padding's place: still one word
    two_byte = rtp(1, 0xC0C0, 0, bytes([7, 1, 0xAA]), profile=0x1000) + bytes(20)
    assert elements(MidStamp(4, "0").apply(two_byte))[:2] == (0x1000, [(7, b"\xaa"), (4, b"0")])


def test_the_two_byte_form_when_the_one_byte_form_cannot_hold_it():
    long_mid = "m" * 20  # over 16 bytes
    plain = rtp(1, 1, 0) + b"x"
    assert elements(MidStamp(4, long_mid).apply(plain))[:2] == (0x1000, [(4, long_mid.encode())])
    assert elements(MidStamp(200, "0").apply(plain))[:2] == (0x1000, [(200, b"0")])
    one_byte_block = rtp(1, 1, 0, bytes([0x10, 0x85])) + b"x"
    assert MidStamp(200, "0").apply(one_byte_block) == one_byte_block  # the forms do not mix (RFC 8285 4.1)


@pytest.mark.parametrize("packet", [
    rtp(1, 1, 0, bytes([0x40]) + b"x") + b"y",  # the MID id is there already
    rtp(1, 1, 0, b"abcd", profile=0x1234) + b"y",  # a profile of no RFC 8285 form
    rtp(1, 1, 0, bytes([0x10, 0x85]))[:14] + struct.pack("!H", 40) + bytes(8),  # a block past the packet
    bytes([0x8F]) + bytes(11),  # 15 CSRCs announced, none there
], ids=["has-mid", "other-profile", "truncated-block", "truncated-csrcs"])
def test_a_packet_the_stamp_cannot_or_need_not_change_is_sent_as_it_is(packet):
    assert MidStamp(4, "0").apply(packet) == packet


def test_csrcs_stay_before_the_new_block():
    with_csrc = struct.pack("!BBHIII", 0x81, 0, 1, 1000, 7, 0xCCCC) + b"payload"
    stamped = MidStamp(2, "a").apply(with_csrc)
    assert stamped[:16] == bytes([0x91]) + with_csrc[1:16]
    assert elements(stamped) == (0xBEDE, [(2, b"a")], b"payload")


# ---------------------------------------------------------------------------
# Bounds: what a WIC's packets can make the tables learn
# ---------------------------------------------------------------------------

def test_an_sdes_item_past_its_packet_is_not_read_from_the_next_packet():
    """RFC 3550 6.5 / RFC 8843 15.1: the MID item's length runs past the SDES packet into the next packet
    of the compound, whose first byte completes the MID "\u00e9" (C3 A9): it must bind nothing."""
    demux = BundleDemux([BundleStream(AUDIO, "0", frozenset({111})),
                         BundleStream(VIDEO, "\u00e9", frozenset({96}))], 4)
    chunk = struct.pack("!I", 0x7777) + b"\x01\x03xyz" + b"\x0f\x02\xc3"  # MID item: 2 bytes, 1 in the packet
    sdes = rtcp(202, 1, chunk)
    app = bytes([0xA9, 204]) + struct.pack("!H", 2) + struct.pack("!I", WIC_AUDIO) + b"name"
    assert app[0] == "\u00e9".encode()[1]
    demux.route_rtcp(sdes + app)
    assert 0x7777 not in demux.incoming
    whole = rtcp(202, 1, struct.pack("!I", 0x7777) + b"\x0f\x02\xc3\xa9" + bytes(4))  # the same item, within
    demux.route_rtcp(whole)
    assert demux.incoming[0x7777] == VIDEO


def test_learning_stops_at_the_limit_and_a_mid_still_routes():
    demux = BundleDemux([BundleStream(AUDIO, "0", frozenset({111}), (WIC_AUDIO,)),
                         BundleStream(VIDEO, "1", frozenset({96}))], 4, max_learnt=2)
    assert demux.limit == 3
    for ssrc in range(10, 20):  # SDES chunks may name any SSRC
        chunk = struct.pack("!I", ssrc) + bytes([15, 1]) + b"1" + b"\0"
        demux.route_rtcp(rtcp(202, 1, chunk))
    assert sorted(demux.incoming) == [10, 11, WIC_AUDIO]
    mid = bytes([0x40]) + b"1" + b"\0\0"  # one-byte element, id 4, the video MID
    assert demux.route_rtp(rtp(1, 30, 96, mid)) == VIDEO and 30 not in demux.incoming
    assert demux.route_rtp(rtp(1, 31, 96)) == VIDEO and 31 not in demux.incoming  # payload type
    assert 30 not in demux._mid_seq


def test_a_bye_of_an_unknown_ssrc_is_not_remembered_and_expire_names_what_it_forgot():
    demux = demux_for_rtcp()
    demux.route_rtcp(rtcp(203, 3, struct.pack("!III", 0x5001, WIC_VIDEO, 0x5002)), now=10.0)
    assert demux.timeout() == 10.0 + BYE_GRACE
    assert demux.expire(10.0) == [] and demux.expire(10.0 + BYE_GRACE) == [WIC_VIDEO]
    assert demux.timeout() is None
