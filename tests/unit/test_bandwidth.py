"""Bandwidth modifiers across the e2ae boundary (G-2): the formula of sdp_rules.bandwidth, and the rules using it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdp_rules import DialogState, Kind, Side, bandwidth
from sdp_rules.sdp import Line, MediaSection

from tests.unit.rules_helpers import policy, run, sdp


def _section(media="audio", ptime=None, bw=()):
    lines = [Line("m", f"{media} 5000 RTP/AVP 0")]
    lines += [Line("b", b) for b in bw]
    if ptime is not None:
        lines.append(Line("a", f"ptime:{ptime}"))
    return MediaSection(lines)


@pytest.mark.req("G-2")
@pytest.mark.parametrize(("kind", "media", "ptime", "value", "overhead"), [
    # 10-byte SRTP tag x 50 packets/s = 4,000 bit/s
    ("srtp", "audio", None, 50, 4),
    ("srtp", "audio", "20", 50, 4),
    # ptime 30: ceil(1000/30) = 34 packets/s; 8 * 10 * 34 = 2,720 bit/s -> 3 kbit/s
    ("srtp", "audio", "30", 40, 3),
    # over TCP: tag + RFC 4571 length + (TCP - UDP) header = 24 bytes; 8 * 24 * 50 = 9,600 -> 10
    ("srtp_tcp", "audio", "20", 50, 10),
    # UDPTL in a DTLS 1.2 AES-GCM record: 37 bytes; 8 * 37 * 50 = 14,800 -> 15
    ("t38", "image", None, 20, 15),
    # video, no ptime: 2,000 kbit/s in 1,000-byte packets = 250 packets/s; 8 * 10 * 250 = 20 kbit/s
    ("srtp", "video", None, 2000, 20),
    # 4,104 kbit/s: 513 packets/s; 8 * 10 * 513 = 41,040 bit/s -> 42 kbit/s (rounded up, never down)
    ("srtp", "video", None, 4104, 42),
])
def test_as_overhead_formula(kind, media, ptime, value, overhead):
    assert bandwidth.as_overhead_kbps(kind, _section(media, ptime), value) == overhead


@pytest.mark.req("G-2")
@pytest.mark.parametrize("ptime", ["0", "-20", "abc", ""])
def test_a_zero_negative_or_non_numeric_ptime_counts_as_absent(ptime):
    # 20 ms (50 packets/s) as without a=ptime, not a division by zero or 1,000 packets/s.
    assert bandwidth.packet_rate(_section("audio", ptime), 50_000) == 50
    assert bandwidth.as_overhead_kbps("srtp", _section("audio", ptime), 50) == 4
    assert bandwidth.packet_rate(_section("audio", "0.5"), 50_000) == 2000  # a fraction of a millisecond is a ptime


@pytest.mark.req("G-2")
def test_video_packet_rate_is_at_least_one_packet_per_second():
    assert bandwidth.packet_rate(_section("video"), 1000) == 1
    assert bandwidth.packet_rate(_section("video"), 0) == 1
    assert bandwidth.packet_rate(_section("video"), 8001) == 2


@pytest.mark.req("G-2")
def test_rtcp_overhead_formula():
    # SRTCP: 4-byte E+index and 10-byte tag on a 100-byte compound packet: +14 %.
    assert bandwidth.rtcp_overhead_bps(600) == 84
    assert bandwidth.rtcp_overhead_bps(2000) == 280
    # From access the value already carries it: 14/114 of it.
    assert bandwidth.rtcp_overhead_bps(684, protected=True) == 84
    assert bandwidth.rtcp_overhead_bps(2280, protected=True) == 280


@pytest.mark.req("G-2")
def test_adjust_rewrites_as_rs_rr_only():
    m = _section(ptime="20", bw=["AS:50", "TIAS:40000", "RS:600", "RR:2000", "CT:100"])
    bandwidth.adjust(m, "srtp", add=True)
    assert [line.value for line in m.lines_of("b")] == ["AS:54", "TIAS:40000", "RS:684", "RR:2280", "CT:100"]
    bandwidth.adjust(m, "srtp", add=False)
    assert [line.value for line in m.lines_of("b")] == ["AS:50", "TIAS:40000", "RS:600", "RR:2000", "CT:100"]


@pytest.mark.req("G-2")
def test_zero_stays_zero_and_never_negative():
    m = _section(bw=["AS:1", "RS:0", "RR:0"])
    bandwidth.adjust(m, "srtp", add=False)
    assert [line.value for line in m.lines_of("b")] == ["AS:0", "RS:0", "RR:0"]
    m = _section(bw=["RS:0"])
    bandwidth.adjust(m, "srtp", add=True)
    assert [line.value for line in m.lines_of("b")] == ["RS:0"]


@pytest.mark.req("G-2")
def test_t38_has_no_rtcp():
    m = _section("image", bw=["AS:20", "RR:100"])
    bandwidth.adjust(m, "t38", add=True)
    assert [line.value for line in m.lines_of("b")] == ["AS:35", "RR:100"]


@pytest.mark.req("G-2")
@given(
    kind=st.sampled_from(["srtp", "srtp_tcp", "t38"]),
    ptime=st.sampled_from(["10", "20", "30", "40", "60"]),
    as_kbps=st.integers(0, 100_000),
    rtcp_bps=st.integers(0, 10_000_000),
)
def test_add_then_subtract_gives_the_core_value_back(kind, ptime, as_kbps, rtcp_bps):
    m = _section(ptime=ptime, bw=[f"AS:{as_kbps}", f"RS:{rtcp_bps}", f"RR:{rtcp_bps}"])
    bandwidth.adjust(m, kind, add=True)
    added = [int(line.value.split(":")[1]) for line in m.lines_of("b")]
    rate = math.ceil(1000 / float(ptime))
    assert added[0] == as_kbps + math.ceil(8 * bandwidth.PER_PACKET_OVERHEAD[kind] * rate / 1000)
    assert added[0] >= as_kbps and added[1] >= rtcp_bps
    bandwidth.adjust(m, kind, add=False)
    assert [line.value for line in m.lines_of("b")] == [f"AS:{as_kbps}", f"RS:{rtcp_bps}", f"RR:{rtcp_bps}"]


IMS_UE_DTLS_OFFER = sdp("""
    v=0
    o=- 1 1000 IN IP6 2001:db8::1:10
    s=QC VOIP
    c=IN IP6 2001:db8::1:10
    b=AS:54
    t=0 0
    m=audio 50018 UDP/TLS/RTP/SAVP 104 96
    b=AS:54
    b=RS:684
    b=RR:2280
    a=rtpmap:104 AMR-WB/16000/1
    a=fmtp:104 mode-change-capability=2;max-red=0
    a=rtpmap:96 telephone-event/16000
    a=fmtp:96 0-15
    a=sendrecv
    a=maxptime:240
    a=ptime:20
    a=fingerprint:sha-256 D6:00:20:5D:63:4E:97:C0:63:C2:2F:48:FC:FF:08:4F:55:CE:79:FD:B9:FB:29:55:9F:3B:47:3B:DF:96:BB:E3
    a=setup:actpass
    a=tls-id:imsUeTlsIdAAAAAAAAAAAA
""")


@pytest.mark.req("G-2")
def test_ims_ue_bandwidth_subtracted_toward_core_added_toward_ue():
    """Media-level b= lines are adjusted; the session-level b=AS is passed unchanged (module doc)."""
    pol = policy()
    _, offered = run(IMS_UE_DTLS_OFFER, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    assert offered.sdp == sdp("""
        v=0
        o=- 1 1000 IN IP6 2001:db8::1:10
        s=QC VOIP
        c=IN IP4 198.51.100.10
        b=AS:54
        t=0 0
        m=audio 30000 RTP/AVP 104 96
        b=AS:50
        b=RS:600
        b=RR:2000
        a=rtpmap:104 AMR-WB/16000/1
        a=fmtp:104 mode-change-capability=2;max-red=0
        a=rtpmap:96 telephone-event/16000
        a=fmtp:96 0-15
        a=sendrecv
        a=maxptime:240
        a=ptime:20
        a=rtcp-mux
    """)
    core_answer = sdp("""
        v=0
        o=core 1 1 IN IP4 192.0.2.50
        s=-
        c=IN IP4 192.0.2.50
        t=0 0
        m=audio 6000 RTP/AVP 104 96
        b=AS:41
        b=RS:500
        b=RR:1500
        a=rtpmap:104 AMR-WB/16000/1
        a=rtpmap:96 telephone-event/16000
        a=ptime:20
    """)
    _, answered = run(core_answer, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert [line for line in answered.sdp.split("\r\n") if line.startswith("b=")] == [
        "b=AS:45", "b=RS:570", "b=RR:1710"]


CORE_OFFER_WITH_BANDWIDTH = sdp("""
    v=0
    o=core 1 1 IN IP4 192.0.2.50
    s=-
    c=IN IP4 192.0.2.50
    t=0 0
    m=audio 6000 RTP/AVP 0
    b=AS:64
    b=RS:600
    b=RR:2000
    a=rtpmap:0 PCMU/8000
    a=ptime:20
""")


def _b_lines(body):
    return [line for line in body.split("\r\n") if line.startswith("b=")]


@pytest.mark.req("G-2")
def test_core_offer_bandwidth_added_toward_wic_and_wic_answer_subtracted_toward_core():
    """The core-originated call: overhead added to the offer toward access, subtracted from the WIC's answer."""
    pol = policy()
    _, offered = run(CORE_OFFER_WITH_BANDWIDTH, Side.CORE, Kind.OFFER, DialogState(), pol)
    assert _b_lines(offered.sdp) == ["b=AS:68", "b=RS:684", "b=RR:2280"]
    wic_answer = sdp("""
        v=0
        o=- 2 2 IN IP4 127.0.0.1
        s=-
        c=IN IP4 127.0.0.1
        t=0 0
        m=audio 50000 UDP/TLS/RTP/SAVP 0
        b=AS:68
        b=RS:684
        b=RR:2280
        a=rtpmap:0 PCMU/8000
        a=ptime:20
        a=fingerprint:sha-256 AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB
        a=setup:active
    """)
    _, answered = run(wic_answer, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    assert _b_lines(answered.sdp) == ["b=AS:64", "b=RS:600", "b=RR:2000"]
