"""DTLS-SRTP over UDP: TS 23.334 5.11.2.4 and 6.2.10.5 (RFC 5763, RFC 8842), ALG side.

Golden pairs: a real offer in, the whole forwarded SDP out, and the Iq request
compared field by field (dataclass equality covers every IE).
"""

from __future__ import annotations

import pytest

from sdp_rules import DialogState, Kind, Side
from iq import Command, Fingerprint, IqRequest, Role, StreamSpec, TerminationSpec
from sdp_rules.plan import ActpassPolicy

from tests.unit.rules_helpers import (
    AGW_FP_TEXT,
    DIALOG,
    TlsIds,
    agw_reply,
    fixture,
    policy,
    run,
    sdp,
    unbundled,
)

CHROMIUM_FP = Fingerprint(
    "sha-256", "98:2D:67:80:63:16:A2:58:72:38:F6:B2:C0:4E:4A:6A:55:27:9A:BC:AB:AA:24:44:9B:0F:5B:1D:44:B8:69:BE"
)

CHROMIUM_TO_CORE = sdp("""
    v=0
    o=- 3281778005194094765 2 IN IP4 127.0.0.1
    s=-
    t=0 0
    a=extmap-allow-mixed
    a=msid-semantic: WMS 9c6a5ac8-0def-44a6-baa6-f568cf939c15
    m=audio 30000 RTP/AVPF 111 63 9 0 8 13 110 126
    c=IN IP4 198.51.100.10
    a=mid:0
    a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
    a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
    a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
    a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
    a=sendrecv
    a=msid:9c6a5ac8-0def-44a6-baa6-f568cf939c15 799f4a82-fd45-4f12-80e1-ec035c2d227c
    a=rtcp-mux
    a=rtcp-rsize
    a=rtcp-xr:rcvr-rtt=all
    a=rtpmap:111 opus/48000/2
    a=rtcp-fb:111 transport-cc
    a=fmtp:111 minptime=10;useinbandfec=1
    a=rtpmap:63 red/48000/2
    a=fmtp:63 111/111
    a=rtpmap:9 G722/8000
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:13 CN/8000
    a=rtpmap:110 telephone-event/48000
    a=rtpmap:126 telephone-event/8000
    a=ssrc:925907277 cname:UgX+jRa2pShanAlw
    a=ssrc:925907277 msid:9c6a5ac8-0def-44a6-baa6-f568cf939c15 799f4a82-fd45-4f12-80e1-ec035c2d227c
""")

CORE_ANSWER_AVPF = sdp("""
    v=0
    o=core 1 1 IN IP4 192.0.2.50
    s=-
    c=IN IP4 192.0.2.50
    t=0 0
    m=audio 6000 RTP/AVPF 111 126
    a=rtpmap:111 opus/48000/2
    a=rtpmap:126 telephone-event/8000
    a=sendrecv
""")


def _chromium_offer(pol):
    return run(fixture("chromium_offer_audio.sdp"), Side.ACCESS, Kind.OFFER, DialogState(), pol)


@pytest.mark.req("SRTP-1", "SRTP-2", "SRTP-4", "ICE-1", "MUX-1", "TCP-1")
def test_chromium_offer_reserves_dtls_access_and_plain_core():
    ids = TlsIds()
    plan, result = _chromium_offer(unbundled(new_tls_id=ids))
    assert plan.iq == IqRequest(Command.RESERVE, DIALOG, "t1", [StreamSpec(
        stream_id=0,
        kind="srtp",
        access=TerminationSpec(
            side=Side.ACCESS,
            transport="UDP/TLS/RTP/SAVPF",
            remote_address="127.0.0.1",
            remote_port=36879,
            remote_rtcp_port=None,
            rtcp_mux=True,
            remote_fingerprints=[CHROMIUM_FP],
            local_fingerprint_request=True,
            establish_tls=True,  # actpass, default policy: the AGW is the DTLS client
            tls_role=Role.CLIENT,
            notify_tls_failure=True,
            ice_lite=True,
            remote_ice_ufrag="Px4O",
            remote_ice_pwd="JD0qmWg46o6dRgitM21OjtSt",
            remote_candidates=[
                "4031816974 1 udp 2122260223 127.0.0.1 36879 typ host generation 0 network-id 1 network-cost 50",
                "251294106 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active generation 0 network-id 1"
                " network-cost 50",
            ],
        ),
        core=TerminationSpec(side=Side.CORE, transport="RTP/AVPF"),
        local_tls_id=ids.nth(1),
        remote_tls_id=None,
        reuse_association=False,
    )])
    assert result.sdp == CHROMIUM_TO_CORE
    assert [(d.index, d.kind, d.stream_ids) for d in plan.streams] == [(0, "srtp", [0])]


@pytest.mark.req("SRTP-5", "SRTP-3", "ICE-1", "MUX-1", "TCP-1")
def test_core_answer_goes_back_to_the_wic_as_dtls_srtp():
    ids = TlsIds()
    pol = unbundled(new_tls_id=ids)
    _, offered = _chromium_offer(pol)
    plan, result = run(CORE_ANSWER_AVPF, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert plan.iq == IqRequest(Command.MODIFY, DIALOG, "t1", [StreamSpec(
        stream_id=0,
        kind="srtp",
        access=None,
        core=TerminationSpec(
            side=Side.CORE, transport="RTP/AVPF", remote_address="192.0.2.50", remote_port=6000,
            remote_rtcp_port=6001, rtcp_mux=False,
        ),
        local_tls_id=ids.nth(1),
        reuse_association=True,
    )])
    assert result.sdp == sdp(f"""
        v=0
        o=core 1 1 IN IP4 192.0.2.50
        s=-
        c=IN IP4 203.0.113.10
        t=0 0
        a=ice-lite
        m=audio 40000 UDP/TLS/RTP/SAVPF 111 126
        a=rtpmap:111 opus/48000/2
        a=rtpmap:126 telephone-event/8000
        a=sendrecv
        a=rtcp-mux
        a=ice-ufrag:agwu0
        a=ice-pwd:agwpwd0xxxxxxxxxxxxxxxxx
        a=candidate:1 1 udp 2130706431 203.0.113.10 40000 typ host
        a=candidate:2 1 tcp 2124414975 203.0.113.10 40000 typ host tcptype passive
        a=end-of-candidates
        a=fingerprint:{AGW_FP_TEXT}
        a=setup:active
        a=tls-id:{ids.nth(1)}
    """)


BARESIP_TO_CORE = sdp("""
    v=0
    o=- 3143768228 23094683 IN IP4 127.0.0.1
    s=-
    c=IN IP4 198.51.100.10
    t=0 0
    a=tool:baresip 1.0.0
    m=audio 30000 RTP/AVPF 0 101
    a=rtpmap:0 PCMU/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
    a=sendrecv
    a=label:1
    a=rtcp-rsize
    a=ssrc:2758381030 cname:sip:a@127.0.0.1
    a=minptime:20
    a=ptime:20
    a=rtcp-mux
""")


@pytest.mark.req("SRTP-1", "SRTP-2", "SRTP-4", "SRTP-5", "MUX-1")
def test_baresip_session_level_dtls_no_ice_no_mux():
    ids = TlsIds()
    pol = policy(actpass=ActpassPolicy.PASSIVE, new_tls_id=ids)
    plan, offered = run(fixture("baresip_offer.sdp"), Side.ACCESS, Kind.OFFER, DialogState(), pol)
    assert plan.iq.streams[0].access == TerminationSpec(
        side=Side.ACCESS,
        transport="UDP/TLS/RTP/SAVPF",
        remote_address="127.0.0.1",
        remote_port=15476,
        remote_rtcp_port=15477,  # no rtcp-mux, no a=rtcp: RTP port + 1
        rtcp_mux=False,
        remote_fingerprints=[Fingerprint(
            "sha-256",
            "30:60:51:37:6C:44:88:ED:F7:92:79:61:13:A5:58:A5:ED:E2:99:0A:5E:74:EC:3B:6F:9B:23:DA:1F:15:92:BF",
        )],
        local_fingerprint_request=True,
        establish_tls=False,  # actpass with the passive policy: the AGW waits for the ClientHello
        tls_role=Role.SERVER,
        notify_tls_failure=True,
        ice_lite=False,  # baresip does no ICE: no ICE toward it either
    )
    # Session-level a=setup / a=fingerprint do not reach the core; the
    # session c= follows the AGW's core termination.
    assert offered.sdp == BARESIP_TO_CORE

    answer = sdp("""
        v=0
        o=core 7 7 IN IP4 192.0.2.50
        s=-
        c=IN IP4 192.0.2.50
        t=0 0
        m=audio 6000 RTP/AVPF 0 101
        a=rtpmap:0 PCMU/8000
        a=rtpmap:101 telephone-event/8000
        a=ptime:20
    """)
    _, answered = run(answer, Side.CORE, Kind.ANSWER, offered.state, pol)
    # No ICE, no rtcp-mux toward a peer that offered neither; RTCP on port+1.
    assert answered.sdp == sdp(f"""
        v=0
        o=core 7 7 IN IP4 192.0.2.50
        s=-
        c=IN IP4 203.0.113.10
        t=0 0
        m=audio 40000 UDP/TLS/RTP/SAVPF 0 101
        a=rtpmap:0 PCMU/8000
        a=rtpmap:101 telephone-event/8000
        a=ptime:20
        a=fingerprint:{AGW_FP_TEXT}
        a=setup:passive
        a=tls-id:{ids.nth(1)}
    """)


@pytest.mark.req("SRTP-2")
def test_every_wic_fingerprint_goes_to_the_agw_per_stream():
    """aiortc offers sha-256/384/512: all three are the Remote certificate fingerprint IE."""
    body = fixture("aiortc_offer.sdp").split("m=application")[0]
    plan, _ = run(body, Side.ACCESS, Kind.OFFER, DialogState(), unbundled())
    assert [str(fp) for fp in plan.iq.streams[0].access.remote_fingerprints] == [
        "sha-256 F5:81:BD:28:E7:FE:AF:EF:5A:54:0A:25:8E:7E:DB:1D:2E:E5:24:86:FB:AD:10:31:68:84:62:13:2E:9A:E5:F3",
        "sha-384 C1:77:8C:9B:FB:A4:D1:94:5F:D7:09:82:47:04:94:4B:50:B1:86:6F:A3:58:14:9D:0D:47:22:2C:AB:CC:13:D8"
        ":E9:27:B6:E5:5C:EB:09:0A:2B:3E:7D:36:4C:F1:27:FC",
        "sha-512 14:0C:FC:E3:D7:50:7F:6C:4D:C7:0B:FD:42:7D:34:E1:4E:49:41:83:B5:3D:C3:AE:A2:34:39:C7:04:F9:3F:3F"
        ":92:86:9D:79:6A:64:A3:A1:12:01:B9:DF:C9:4F:3A:F8:35:33:3F:30:F7:24:CC:5F:55:15:76:FC:12:92:AA:B1",
    ]


@pytest.mark.req("SRTP-2", "SRTP-1")
def test_firefox_session_fingerprint_applies_to_each_stream():
    body = fixture("firefox_offer.sdp").split("m=application")[0]
    ids = TlsIds()
    plan, result = run(body, Side.ACCESS, Kind.OFFER, DialogState(), unbundled(new_tls_id=ids))
    fp = Fingerprint(
        "sha-256", "BF:85:E0:10:BE:D0:16:E3:AB:4B:2F:71:DD:75:24:7A:34:94:18:C0:37:48:3A:48:E6:EB:40:6B:54:44:D1:FC"
    )
    assert [(s.stream_id, s.kind, s.access.remote_fingerprints, s.access.remote_port, s.local_tls_id)
            for s in plan.iq.streams] == [
        (0, "srtp", [fp], 33134, ids.nth(1)),
        (1, "srtp", [fp], 35430, ids.nth(2)),
    ]
    assert [line for line in result.sdp.split("\r\n") if line.startswith("m=")] == [
        "m=audio 30000 RTP/AVPF 109 9 0 8 101",
        "m=video 30002 RTP/AVPF 120 124 121 125 99 100 123 122 119",
    ]


CORE_OFFER_TO_WIC = sdp(f"""
    v=0
    o=core 1742203311 1742203311 IN IP4 127.0.0.1
    s=-
    c=IN IP4 203.0.113.10
    t=0 0
    a=ice-lite
    m=audio 40000 UDP/TLS/RTP/SAVP 0 8 101
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
    a=ptime:20
    a=sendrecv
    a=rtcp-mux
    a=ice-ufrag:agwu0
    a=ice-pwd:agwpwd0xxxxxxxxxxxxxxxxx
    a=candidate:1 1 udp 2130706431 203.0.113.10 40000 typ host
    a=candidate:1 2 udp 2130706430 203.0.113.10 40001 typ host
    a=end-of-candidates
    a=fingerprint:{AGW_FP_TEXT}
    a=setup:actpass
    a=tls-id:e2aeTlsId00000000001
""")


def _core_offer(pol):
    return run(fixture("core_rtp_offer.sdp"), Side.CORE, Kind.OFFER, DialogState(), pol)


@pytest.mark.req("SRTP-6", "SRTP-3", "SRTP-1", "ICE-1", "MUX-1")
def test_core_offer_becomes_dtls_offer_with_actpass_and_new_tls_id():
    plan, result = _core_offer(unbundled())
    assert plan.iq == IqRequest(Command.RESERVE, DIALOG, "t1", [StreamSpec(
        stream_id=0,
        kind="srtp",
        access=TerminationSpec(
            side=Side.ACCESS, transport="UDP/TLS/RTP/SAVP", local_fingerprint_request=True,
            notify_tls_failure=True, ice_lite=True,
        ),
        core=TerminationSpec(
            side=Side.CORE, transport="RTP/AVP", remote_address="127.0.0.1", remote_port=20000,
            remote_rtcp_port=20001,  # a=rtcp:20001
        ),
        local_tls_id="e2aeTlsId00000000001",
    )])
    assert result.sdp == CORE_OFFER_TO_WIC


WIC_ANSWER = """
    v=0
    o=- 4836076879187043265 2 IN IP4 127.0.0.1
    s=-
    t=0 0
    a=msid-semantic: WMS 00a1f85a-a94d-42ba-b015-1106e9ead49b
    m=audio 42558 UDP/TLS/RTP/SAVP 0 101
    c=IN IP4 127.0.0.1
    a=rtcp:9 IN IP4 0.0.0.0
    a=candidate:2389298293 1 udp 2122260223 127.0.0.1 42558 typ host generation 0
    a=ice-ufrag:zJTZ
    a=ice-pwd:r1emCTenBPfghoScHZ1gNQ24
    a=ice-options:trickle
    a=fingerprint:sha-256 4B:71:29:53:1E:D4:8E:A2:80:21:81:6D:50:D0:C1:D8:E8:B7:71:2C:0F:83:4A:F2:60:82:BF:5F:FC:5A:CA:8B
    a=setup:{setup}
    a=tls-id:wicTlsIdAAAAAAAAAAAAAA
    a=mid:0
    a=sendrecv
    a=msid:00a1f85a-a94d-42ba-b015-1106e9ead49b b769b8aa-e247-4200-b560-cf03d845cc2a
    a=rtcp-mux
    a=rtpmap:0 PCMU/8000
    a=rtpmap:101 telephone-event/8000
    a=ssrc:2967200251 cname:1LNjkxo6qJVvCEDh
"""
WIC_FP = Fingerprint(
    "sha-256", "4B:71:29:53:1E:D4:8E:A2:80:21:81:6D:50:D0:C1:D8:E8:B7:71:2C:0F:83:4A:F2:60:82:BF:5F:FC:5A:CA:8B"
)


@pytest.mark.req("SRTP-7", "SRTP-1", "ICE-1", "MUX-1")
@pytest.mark.parametrize(("setup", "role", "establish"), [
    ("active", Role.SERVER, False),   # the WIC is client: the AGW waits
    ("passive", Role.CLIENT, True),   # the WIC is server: the AGW starts the handshake
])
def test_wic_answer_sets_role_and_goes_to_core_as_rtp_avp(setup, role, establish):
    pol = unbundled()
    _, offered = _core_offer(pol)
    plan, result = run(sdp(WIC_ANSWER.format(setup=setup)), Side.ACCESS, Kind.ANSWER, offered.state, pol)
    assert plan.iq == IqRequest(Command.MODIFY, DIALOG, "t1", [StreamSpec(
        stream_id=0,
        kind="srtp",
        access=TerminationSpec(
            side=Side.ACCESS,
            transport="UDP/TLS/RTP/SAVP",
            remote_address="127.0.0.1",
            remote_port=42558,
            remote_rtcp_port=None,
            rtcp_mux=True,
            remote_fingerprints=[WIC_FP],
            establish_tls=establish,
            tls_role=role,
            notify_tls_failure=False,  # already given with the reservation
            ice_lite=True,
            remote_ice_ufrag="zJTZ",
            remote_ice_pwd="r1emCTenBPfghoScHZ1gNQ24",
            remote_candidates=["2389298293 1 udp 2122260223 127.0.0.1 42558 typ host generation 0"],
        ),
        local_tls_id="e2aeTlsId00000000001",
        remote_tls_id="wicTlsIdAAAAAAAAAAAAAA",
    )])
    # Toward the core: RTP/AVP, no setup/fingerprint/tls-id/ICE, RTCP as the
    # core's offer said (separate, port+1: no a=rtcp needed, no rtcp-mux).
    assert result.sdp == sdp("""
        v=0
        o=- 4836076879187043265 2 IN IP4 127.0.0.1
        s=-
        t=0 0
        a=msid-semantic: WMS 00a1f85a-a94d-42ba-b015-1106e9ead49b
        m=audio 30000 RTP/AVP 0 101
        c=IN IP4 198.51.100.10
        a=mid:0
        a=sendrecv
        a=msid:00a1f85a-a94d-42ba-b015-1106e9ead49b b769b8aa-e247-4200-b560-cf03d845cc2a
        a=rtpmap:0 PCMU/8000
        a=rtpmap:101 telephone-event/8000
        a=ssrc:2967200251 cname:1LNjkxo6qJVvCEDh
    """)


@pytest.mark.req("SRTP-1")
@pytest.mark.parametrize(("access_proto", "core_proto"), [
    ("UDP/TLS/RTP/SAVP", "RTP/AVP"),
    ("UDP/TLS/RTP/SAVPF", "RTP/AVPF"),
])
def test_proto_mapping_both_directions_of_offer_and_answer(access_proto, core_proto):
    def m_lines(body):
        return [line for line in body.split("\r\n") if line.startswith("m=")]

    pol = policy()
    wic_offer = fixture("chromium_offer_audio.sdp").replace("UDP/TLS/RTP/SAVPF", access_proto)
    plan, offered = run(wic_offer, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    assert (plan.iq.streams[0].access.transport, plan.iq.streams[0].core.transport) == (access_proto, core_proto)
    assert m_lines(offered.sdp) == [f"m=audio 30000 {core_proto} 111 63 9 0 8 13 110 126"]
    _, answered = run(CORE_ANSWER_AVPF.replace("RTP/AVPF", core_proto), Side.CORE, Kind.ANSWER, offered.state, pol)
    assert m_lines(answered.sdp) == [f"m=audio 40000 {access_proto} 111 126"]

    core_offer = fixture("core_rtp_offer.sdp").replace("RTP/AVP", core_proto)
    plan, offered = run(core_offer, Side.CORE, Kind.OFFER, DialogState(), pol)
    assert (plan.iq.streams[0].access.transport, plan.iq.streams[0].core.transport) == (access_proto, core_proto)
    assert m_lines(offered.sdp) == [f"m=audio 40000 {access_proto} 0 8 101"]
    wic_answer = sdp(WIC_ANSWER.format(setup="active")).replace("UDP/TLS/RTP/SAVP", access_proto)
    _, answered = run(wic_answer, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    assert m_lines(answered.sdp) == [f"m=audio 30000 {core_proto} 0 101"]


@pytest.mark.req("SRTP-3")
def test_answer_to_an_offer_with_tls_id_carries_a_new_different_tls_id():
    """The WIC offers tls-id X; the answer carries our own new value, never X."""
    wic_tls_id = "dfa2f6b2b31e5f8b9c1a47c53a6f7d12"
    body = fixture("chromium_offer_audio.sdp").replace(
        "a=setup:actpass\r\n", f"a=setup:actpass\r\na=tls-id:{wic_tls_id}\r\n")
    # A generator that first returns the WIC's own value: the rules must skip it.
    values = iter([wic_tls_id, "ourTlsIdBBBBBBBBBBBBBBBB"])
    pol = unbundled(new_tls_id=lambda: next(values))
    plan, offered = run(body, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    assert (plan.iq.streams[0].local_tls_id, plan.iq.streams[0].remote_tls_id) == (
        "ourTlsIdBBBBBBBBBBBBBBBB", wic_tls_id)
    _, answered = run(CORE_ANSWER_AVPF, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert [line for line in answered.sdp.split("\r\n") if line.startswith("a=tls-id")] == [
        "a=tls-id:ourTlsIdBBBBBBBBBBBBBBBB"]


@pytest.mark.req("SRTP-3", "SRTP-6")
def test_every_offer_to_the_wic_carries_a_new_tls_id():
    """Two m-lines in one core offer and a second dialog: three distinct tls-ids."""
    two = fixture("core_rtp_offer.sdp") + sdp("""
        m=video 20002 RTP/AVPF 96
        a=rtpmap:96 H264/90000
    """)
    ids = TlsIds()
    pol = unbundled(new_tls_id=ids)
    _, first = run(two, Side.CORE, Kind.OFFER, DialogState(), pol)
    _, second = _core_offer(pol)
    got = [line for body in (first.sdp, second.sdp) for line in body.split("\r\n") if line.startswith("a=tls-id")]
    assert got == [f"a=tls-id:{ids.nth(1)}", f"a=tls-id:{ids.nth(2)}", f"a=tls-id:{ids.nth(3)}"]


@pytest.mark.req("SRTP-4", "SRTP-2")
def test_agw_reply_fingerprint_is_what_the_wic_sees():
    """The fingerprint inserted is the Local certificate fingerprint IE of the reply, not a constant."""
    other = Fingerprint("sha-384", ":".join(["5C"] * 48))
    pol = unbundled()
    plan, offered = _chromium_offer(pol)
    _, answered = run(CORE_ANSWER_AVPF, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert f"a=fingerprint:{AGW_FP_TEXT}\r\n" in answered.sdp
    plan, offered = run(fixture("chromium_offer_audio.sdp"), Side.ACCESS, Kind.OFFER, DialogState(), pol)
    offered = plan.finish(agw_reply(plan.iq, fingerprint=other))
    _, answered = run(CORE_ANSWER_AVPF, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert [line for line in answered.sdp.split("\r\n") if line.startswith("a=fingerprint")] == [
        f"a=fingerprint:{other}"]


@pytest.mark.req("SRTP-7")
def test_wic_rejecting_the_stream_in_its_answer_to_a_core_offer_releases_it():
    """RFC 3264 section 6: port 0 in the WIC's answer; the stream is released, the core gets port 0."""
    pol = unbundled()
    _, offered = _core_offer(pol)
    rejected = sdp(WIC_ANSWER.format(setup="active")).replace("m=audio 42558 ", "m=audio 0 ")
    plan, answered = run(rejected, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    assert plan.iq == IqRequest(Command.MODIFY, DIALOG, "t1", [], [0])
    assert [line for line in answered.sdp.split("\r\n") if line.startswith("m=")] == ["m=audio 0 RTP/AVP 0 101"]
    assert answered.state.data["streams"] == {}


@pytest.mark.req("SRTP-7")
def test_tls_failure_notification_is_asked_once_per_stream_on_the_core_offer_path():
    """The Notify (D)TLS session establishment Failure Event IE rides on the reservation only."""
    pol = unbundled()
    plan, offered = _core_offer(pol)
    assert plan.iq.streams[0].access.notify_tls_failure is True
    answer = sdp(WIC_ANSWER.format(setup="passive"))
    plan, answered = run(answer, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    assert plan.iq.streams[0].access.notify_tls_failure is False
    assert answered.state.data["streams"]["0"]["notified_failure"] is True
    # The same answer again (a reliable 18x, then the 2xx): asked neither for the event nor a handshake.
    plan, _ = run(answer, Side.ACCESS, Kind.ANSWER, answered.state, pol, transaction="t2")
    access = plan.iq.streams[0].access
    assert (access.notify_tls_failure, access.establish_tls) == (False, False)


@pytest.mark.req("SRTP-1", "SRTP-5")
def test_sdes_crypto_and_access_transport_attributes_never_reach_the_core():
    """A WIC offer carrying a=crypto (SDES) next to DTLS: the plain core leg gets neither."""
    offer = fixture("chromium_offer_audio.sdp").replace(
        "a=setup:actpass\r\n",
        "a=setup:actpass\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
        "a=rtcp:9 IN IP4 0.0.0.0\r\na=rtcp-mux-only\r\na=3ge2ae:requested\r\n")
    _, offered = run(offer, Side.ACCESS, Kind.OFFER, DialogState(), unbundled())
    names = {line.split(":")[0] for line in offered.sdp.split("\r\n")}
    assert not names & {"a=crypto", "a=fingerprint", "a=setup", "a=tls-id", "a=ice-ufrag", "a=ice-pwd",
                        "a=candidate", "a=ice-options", "a=rtcp", "a=rtcp-mux-only", "a=3ge2ae"}
    assert offered.sdp == CHROMIUM_TO_CORE


@pytest.mark.req("SRTP-5", "SRTP-6", "ICE-1")
@pytest.mark.parametrize("path", ["core answer", "core offer"])
def test_the_cores_own_dtls_ice_crypto_and_rtcp_attributes_are_replaced_toward_the_wic(path):
    core_attributes = (
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
        "a=fingerprint:sha-1 11:22:33:44:55:66:77:88:99:00:11:22:33:44:55:66:77:88:99:00\r\n"
        "a=setup:passive\r\na=tls-id:coreTlsIdDDDDDDDDDDDDDD\r\na=connection:new\r\n"
        "a=ice-ufrag:core\r\na=ice-pwd:corecorecorecorecorecore\r\na=ice-options:trickle\r\n"
        "a=candidate:1 1 udp 1 192.0.2.50 6000 typ host\r\na=end-of-candidates\r\n"
        "a=rtcp:6011\r\na=rtcp-mux\r\na=rtcp-mux-only\r\n")
    pol = unbundled()
    if path == "core answer":
        _, offered = _chromium_offer(pol)
        _, result = run(CORE_ANSWER_AVPF + core_attributes, Side.CORE, Kind.ANSWER, offered.state, pol)
    else:
        _, result = run(fixture("core_rtp_offer.sdp") + core_attributes, Side.CORE, Kind.OFFER, DialogState(), pol)
    out = result.sdp.split("\r\n")
    assert not [line for line in out if line.startswith(("a=crypto", "a=connection", "a=ice-options"))]
    assert not [line for line in out if line.startswith("a=") and ("192.0.2.50 6000" in line or "core" in line)]
    assert [line for line in out if line.startswith("a=fingerprint")] == [f"a=fingerprint:{AGW_FP_TEXT}"]
    assert len([line for line in out if line.startswith("a=setup")]) == 1
    assert [line for line in out if line.startswith("a=ice-ufrag")] == ["a=ice-ufrag:agwu0"]
    assert [line for line in out if line.startswith(("a=rtcp:", "a=rtcp-mux"))] == ["a=rtcp-mux"]
