"""General SDP rules: which streams are e2ae (G-1), ICE-1, MUX-1, errors, pass-through, answers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdp_rules import DialogState, Kind, SdpPolicyError, Side
from iq import Command, Role

from tests.conftest import property_examples
from tests.unit.rules_helpers import AGW_FP2, AGW_FP_TEXT, TlsIds, attrs_of, core_port, fixture, policy, run, sdp, unbundled

FP = "sha-256 D6:00:20:5D:63:4E:97:C0:63:C2:2F:48:FC:FF:08:4F:55:CE:79:FD:B9:FB:29:55:9F:3B:47:3B:DF:96:BB:E3"
PLAIN_VIDEO = """
    m=video 5002 RTP/AVP 96
    a=rtpmap:96 H264/90000
    a=fmtp:96 profile-level-id=42e01f
"""
SDES_AUDIO = """
    m=audio 5004 RTP/SAVP 0
    a=rtpmap:0 PCMU/8000
    a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz
"""
REJECTED_DTLS = """
    m=video 0 UDP/TLS/RTP/SAVPF 97
    a=rtpmap:97 VP8/90000
"""
MIXED_OFFER = sdp(f"""
    v=0
    o=ue 10 10 IN IP4 127.0.0.1
    s=-
    c=IN IP4 127.0.0.1
    t=0 0
    m=audio 5000 UDP/TLS/RTP/SAVP 0
    a=rtpmap:0 PCMU/8000
    a=fingerprint:{FP}
    a=setup:actpass
    a=tls-id:ueMixedTlsIdAAAAAAAAAA
    {PLAIN_VIDEO}
    {SDES_AUDIO}
    {REJECTED_DTLS}
""")


@pytest.mark.req("G-1")
def test_e2ae_decided_per_stream_and_others_untouched():
    ids = TlsIds()
    plan, result = run(MIXED_OFFER, Side.ACCESS, Kind.OFFER, DialogState(), policy(new_tls_id=ids))
    assert [(d.index, d.proto, d.kind, d.reason, d.stream_ids) for d in plan.streams] == [
        (0, "UDP/TLS/RTP/SAVP", "srtp", "", [0]),
        (1, "RTP/AVP", "passthrough", "proto RTP/AVP is not e2ae", []),
        (2, "RTP/SAVP", "passthrough", "SDES-SRTP, not DTLS: not e2ae", []),
        (3, "UDP/TLS/RTP/SAVPF", "passthrough", "rejected (port 0)", []),
    ]
    assert [s.stream_id for s in plan.iq.streams] == [0]
    # The plain lines rely on the session c= of the UE: it stays; the e2ae line gets its own.
    assert result.sdp == sdp(f"""
        v=0
        o=ue 10 10 IN IP4 127.0.0.1
        s=-
        c=IN IP4 127.0.0.1
        t=0 0
        m=audio 30000 RTP/AVP 0
        c=IN IP4 198.51.100.10
        a=rtpmap:0 PCMU/8000
        a=rtcp-mux
        {PLAIN_VIDEO}
        {SDES_AUDIO}
        {REJECTED_DTLS}
    """)


@pytest.mark.req("G-1")
@pytest.mark.parametrize("name", ["sipp_default_offer.sdp", "ims_ue_offer.sdp"])
def test_sdp_without_e2ae_passes_byte_for_byte(name):
    body = fixture(name)
    plan, result = run(body, Side.ACCESS, Kind.OFFER, DialogState(), policy())
    assert plan.iq is None
    assert {d.kind for d in plan.streams} == {"passthrough"}
    assert result.sdp == body


@pytest.mark.req("ICE-1")
def test_no_ice_attribute_reaches_the_core():
    """Firefox: session-level ice-options, per-media ICE, RTCP candidates next to rtcp-mux."""
    body = fixture("firefox_offer.sdp").split("m=application")[0]
    plan, result = run(body, Side.ACCESS, Kind.OFFER, DialogState(), unbundled())
    ice = ("a=ice-", "a=candidate", "a=end-of-candidates", "a=remote-candidates", "a=fingerprint", "a=setup",
           "a=tls-id", "a=group:BUNDLE", "a=rtcp:")
    assert [line for line in result.sdp.split("\r\n") if line.startswith(ice)] == []
    assert [(s.access.ice_lite, s.access.remote_ice_ufrag, len(s.access.remote_candidates))
            for s in plan.iq.streams] == [(True, "e000b825", 4), (True, "e000b825", 4)]


@pytest.mark.req("MUX-1")
def test_rtcp_mux_only_from_wic_and_muxed_core_answer():
    body = fixture("chromium_offer_audio.sdp").replace("a=rtcp-mux\r\n", "a=rtcp-mux\r\na=rtcp-mux-only\r\n")
    # Unbundled: RFC 8858 4.3.  A bundled answer repeats it in the answerer-tagged m-line
    # (RFC 9143 9.3.1.2): test_rules_bundle.py.
    pol = unbundled()
    plan, offered = run(body, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    assert (plan.iq.streams[0].access.rtcp_mux, plan.iq.streams[0].access.remote_rtcp_port) == (True, None)
    # Toward the core: rtcp-mux offered, never rtcp-mux-only (the core may not mux; RFC 8858).
    core_lines = offered.sdp.split("\r\n")
    assert ("a=rtcp-mux" in core_lines, "a=rtcp-mux-only" in core_lines) == (True, False)
    answer = sdp("""
        v=0
        o=core 1 1 IN IP4 192.0.2.50
        s=-
        c=IN IP4 192.0.2.50
        t=0 0
        m=audio 6000 RTP/AVPF 111
        a=rtpmap:111 opus/48000/2
        a=rtcp-mux
    """)
    plan, answered = run(answer, Side.CORE, Kind.ANSWER, offered.state, pol)
    core = plan.iq.streams[0].core
    assert (core.rtcp_mux, core.remote_rtcp_port) == (True, None)
    access_lines = answered.sdp.split("\r\n")
    # RFC 8858 4.3: the answer accepts with rtcp-mux alone.
    assert (access_lines.count("a=rtcp-mux"), "a=rtcp-mux-only" in access_lines) == (1, False)


def _error(body, origin=Side.ACCESS, kind=Kind.OFFER, state=None):
    with pytest.raises(SdpPolicyError) as err:
        run(body, origin, kind, state or DialogState(), policy())
    assert err.value.sip_status == 488
    return err.value.reason


def _one_line(*media_attrs, session_attrs=()):
    return sdp("\n".join([
        "v=0", "o=ue 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0", *session_attrs,
        "m=audio 5000 RTP/AVP 0", "a=rtpmap:0 PCMU/8000",
        "m=audio 5002 UDP/TLS/RTP/SAVPF 0", "a=rtpmap:0 PCMU/8000", *media_attrs,
    ]))


@pytest.mark.parametrize(("media_attrs", "session_attrs", "reason"), [
    (["a=setup:actpass"], [], "m-line 2: DTLS media without a=fingerprint (RFC 8122)"),
    ([f"a=fingerprint:{FP.replace('sha-256', 'sha-3-256')}", "a=setup:actpass"], [],
     "m-line 2: a=fingerprint uses no supported hash function (sha-3-256; RFC 8122 section 5)"),
    ([f"a=fingerprint:{FP.replace('sha-256', 'md5')}", "a=setup:actpass"], [],
     "m-line 2: a=fingerprint uses no supported hash function (md5; RFC 8122 section 5)"),
    (["a=fingerprint:sha-256 D6:00:20", "a=setup:actpass"], [],
     "m-line 2: a=fingerprint value is not a sha-256 digest: 'D6:00:20'"),
    ([f"a=fingerprint:{FP}", "a=setup:holdconn"], [], "m-line 2: a=setup:holdconn cannot carry DTLS media"),
    ([f"a=fingerprint:{FP}", "a=setup:sometimes"], [], "m-line 2: a=setup:sometimes is not active/passive/actpass"),
    ([f"a=fingerprint:{FP}", "a=setup:active"], ["a=setup:passive"],
     "m-line 2: a=setup differs between session and media level"),
    ([f"a=fingerprint:{FP}", "a=setup:active"], [f"a=fingerprint:{FP[:-2]}00"],
     "m-line 2: a=fingerprint differs between session and media level"),
    ([f"a=fingerprint:{FP}", "a=setup:active", "a=setup:passive"], [], "m-line 2: more than one a=setup value"),
    ([f"a=fingerprint:{FP}", "a=setup:active", "a=tls-id:short"], [],
     "m-line 2: a=tls-id:short is not 20-255 tls-id characters (RFC 8842)"),
    ([f"a=fingerprint:{FP}", "a=setup:active"], ["a=tls-id:sessionLevelTlsIdAAAAAA"],
     "m-line 2: a=tls-id is a media-level attribute (RFC 8842 section 4)"),
    ([f"a=fingerprint:{FP}", "a=setup"], [], "m-line 2: a=setup: is not active/passive/actpass"),
    ([f"a=fingerprint:{FP}"], ["a=setup"], "m-line 2: a=setup: is not active/passive/actpass"),
    ([f"a=fingerprint:{FP.replace('sha-256', 'md5')}", f"a=fingerprint:{FP.replace('sha-256', 'sha-3-256')}"], [],
     "m-line 2: a=fingerprint uses no supported hash function (md5, sha-3-256; RFC 8122 section 5)"),
    ([f"a=fingerprint:{FP.replace(' ', chr(9))}"], [],  # a tab is no separator (RFC 8122 5: SP)
     f"m-line 2: a=fingerprint uses no supported hash function ({FP.replace(' ', chr(9))}; RFC 8122 section 5)"),
    ([f"a=fingerprint:{FP}", "a=tls-id:firstTlsIdAAAAAAAAAAAAA", "a=tls-id:secondTlsIdBBBBBBBBBBBB"], [],
     "m-line 2: more than one a=tls-id value"),
])
def test_bad_dtls_attributes_are_refused_with_488(media_attrs, session_attrs, reason):
    assert _error(_one_line(*media_attrs, session_attrs=session_attrs)) == reason


@pytest.mark.parametrize("count", ["2", "99999999999999999"])
def test_a_port_count_on_a_terminated_stream_is_refused(count):
    """RFC 8866 5.14: the AGW reserves one port (RTP/RTCP pair) per m-line; a count naming
    more is refused, not copied to the other side naming ports nobody holds.  A plain
    stream that passes through keeps its count."""
    body = _one_line(f"a=fingerprint:{FP}", "a=setup:actpass").replace(
        "m=audio 5002 UDP/TLS/RTP/SAVPF", f"m=audio 5002/{count} UDP/TLS/RTP/SAVPF")
    assert _error(body) == (f"m-line 2: port count /{count}: the edge relays one port (RTP/RTCP pair) per m-line"
                            " (RFC 8866 5.14)")
    _, result = run(body.replace(f"5002/{count}", "5002/1").replace("5000 RTP/AVP", "5000/2 RTP/AVP"),
                    Side.ACCESS, Kind.OFFER, DialogState(), policy())
    assert "m=audio 5000/2 RTP/AVP 0" in result.sdp and f"m=audio {core_port(1)}/1 RTP/AVPF 0" in result.sdp


CORE_OFFER = fixture("core_rtp_offer.sdp")


def _wic_answer(setup="active", extra=()):
    return sdp("\n".join([
        "v=0", "o=ue 2 2 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
        "m=audio 5000 UDP/TLS/RTP/SAVP 0", "a=rtpmap:0 PCMU/8000", f"a=fingerprint:{FP}",
        *([f"a=setup:{setup}"] if setup else []), *extra,
    ]))


def test_actpass_in_an_answer_is_refused():
    _, offered = run(CORE_OFFER, Side.CORE, Kind.OFFER, DialogState(), policy())
    assert _error(_wic_answer("actpass"), Side.ACCESS, Kind.ANSWER, offered.state) == (
        "m-line 1: a=setup:actpass is not allowed in an answer (RFC 4145)")


def test_answer_with_another_m_line_count_is_refused():
    _, offered = run(CORE_OFFER, Side.CORE, Kind.OFFER, DialogState(), policy())
    two = _wic_answer() + sdp("m=video 0 UDP/TLS/RTP/SAVP 96")
    assert _error(two, Side.ACCESS, Kind.ANSWER, offered.state) == (
        "answer has 2 m-lines, the offer had 1 (RFC 3264 section 6)")


@pytest.mark.req("SRTP-2")
def test_unknown_hash_next_to_a_known_one_is_ignored():
    """RFC 8122 section 5: the AGW checks against the hash function it knows."""
    body = _one_line(f"a=fingerprint:{FP.replace('sha-256', 'sha-3-256')}", f"a=fingerprint:{FP}", "a=setup:active")
    plan, _ = run(body, Side.ACCESS, Kind.OFFER, DialogState(), policy())
    assert [str(fp) for fp in plan.iq.streams[0].access.remote_fingerprints] == [FP]


@pytest.mark.req("SRTP-4", "SRTP-7")
def test_absent_setup_defaults_of_rfc_4145():
    """RFC 4145 4.1: no a=setup means active in an offer and passive in an answer."""
    plan, _ = run(_one_line(f"a=fingerprint:{FP}"), Side.ACCESS, Kind.OFFER, DialogState(), unbundled())
    assert (plan.iq.streams[0].access.tls_role, plan.iq.streams[0].access.establish_tls) == (Role.SERVER, False)
    _, offered = run(CORE_OFFER, Side.CORE, Kind.OFFER, DialogState(), unbundled())
    plan, _ = run(_wic_answer(setup=None), Side.ACCESS, Kind.ANSWER, offered.state, unbundled())
    assert (plan.iq.streams[0].access.tls_role, plan.iq.streams[0].access.establish_tls) == (Role.CLIENT, True)


@pytest.mark.req("SRTP-5", "SRTP-7")
def test_an_answer_seen_twice_renders_the_same_sdp():
    pol = unbundled()
    _, offered = run(fixture("chromium_offer_audio.sdp"), Side.ACCESS, Kind.OFFER, DialogState(), pol)
    core_answer = sdp("""
        v=0
        o=core 1 1 IN IP4 192.0.2.50
        s=-
        c=IN IP4 192.0.2.50
        t=0 0
        m=audio 6000 RTP/AVPF 111
        a=rtpmap:111 opus/48000/2
    """)
    _, early = run(core_answer, Side.CORE, Kind.ANSWER, offered.state, pol)
    _, final = run(core_answer, Side.CORE, Kind.ANSWER, early.state, pol, transaction="t1-2xx")
    assert final.sdp == early.sdp
    assert "a=setup:active\r\n" in final.sdp

    _, offered = run(CORE_OFFER, Side.CORE, Kind.OFFER, DialogState(), pol)
    first_plan, early = run(_wic_answer("passive"), Side.ACCESS, Kind.ANSWER, offered.state, pol)
    second_plan, final = run(_wic_answer("passive"), Side.ACCESS, Kind.ANSWER, early.state, pol)
    assert final.sdp == early.sdp
    # The handshake is asked for once.
    assert [p.iq.streams[0].access.establish_tls for p in (first_plan, second_plan)] == [True, False]


def test_rejected_line_in_the_core_answer_is_released():
    pol = unbundled()
    body = fixture("firefox_offer.sdp").split("m=application")[0]
    _, offered = run(body, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    answer = sdp("""
        v=0
        o=core 1 1 IN IP4 192.0.2.50
        s=-
        c=IN IP4 192.0.2.50
        t=0 0
        m=audio 6000 RTP/AVPF 109
        a=rtpmap:109 opus/48000/2
        m=video 0 RTP/AVPF 120
    """)
    plan, answered = run(answer, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert (plan.iq.command, [s.stream_id for s in plan.iq.streams], plan.iq.release_streams) == (
        Command.MODIFY, [0], [1])
    assert [line for line in answered.sdp.split("\r\n") if line.startswith("m=")] == [
        "m=audio 40000 UDP/TLS/RTP/SAVPF 109", "m=video 0 UDP/TLS/RTP/SAVPF 120"]
    assert "1" not in answered.state.data["streams"]


ATTR_NAME = st.from_regex(r"\Ax-[a-z]{1,8}\Z")
ATTR_VALUE = st.from_regex(r"\A[A-Za-z0-9=;/ .-]{0,20}\Z").map(str.strip)
EXTRA = st.lists(st.tuples(ATTR_NAME, ATTR_VALUE).map(lambda t: f"a={t[0]}:{t[1]}" if t[1] else f"a={t[0]}"),
                 max_size=6)


@pytest.mark.req("G-1", "SRTP-1")
@settings(max_examples=property_examples(60), deadline=None)
@given(offer_extra=EXTRA, answer_extra=EXTRA, session_extra=EXTRA)
def test_non_e2ae_lines_survive_offer_and_answer_byte_for_byte(offer_extra, answer_extra, session_extra):
    """Every line the e2ae rules do not own reaches the other side unchanged and in order."""
    offer = fixture("chromium_offer_audio.sdp").replace(
        "t=0 0\r\n", "t=0 0\r\n" + "".join(f"{x}\r\n" for x in session_extra)).replace(
        "a=sendrecv\r\n", "a=sendrecv\r\n" + "".join(f"{x}\r\n" for x in offer_extra))
    pol = policy()
    _, offered = run(offer, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    out = offered.sdp.split("\r\n")
    assert [line for line in out if line in session_extra + offer_extra] == session_extra + offer_extra
    answer = sdp("\n".join([
        "v=0", "o=core 1 1 IN IP4 192.0.2.50", "s=-", "c=IN IP4 192.0.2.50", "t=0 0",
        "m=audio 6000 RTP/AVPF 111", "a=rtpmap:111 opus/48000/2", *answer_extra,
    ]))
    _, answered = run(answer, Side.CORE, Kind.ANSWER, offered.state, pol)
    body = answered.sdp.split("\r\n")
    media = body[body.index("m=audio 40000 UDP/TLS/RTP/SAVPF 111"):]
    assert media[1:2 + len(answer_extra)] == ["a=rtpmap:111 opus/48000/2", *answer_extra]
    assert f"a=fingerprint:{AGW_FP_TEXT}" in media


@pytest.mark.req("G-1", "SRTP-4")
def test_3ge2ae_request_is_applied_at_the_edge_and_not_forwarded():
    """An IMS UE asks for e2ae with a=3ge2ae:requested; the core sees plain RTP and no such line."""
    body = sdp("""
        v=0
        o=- 1 1 IN IP4 127.0.0.1
        s=-
        c=IN IP4 127.0.0.1
        t=0 0
        m=audio 49152 UDP/TLS/RTP/SAVP 0
        a=3ge2ae:requested
        a=fingerprint:sha-256 """ + AGW_FP2.value + """
        a=setup:actpass
        a=tls-id:abcdefghijklmnopqrstuv
        a=rtpmap:0 PCMU/8000
    """)
    plan, result = run(body, Side.ACCESS, Kind.OFFER, DialogState(), policy())
    assert plan.streams[0].kind == "srtp"
    assert attrs_of(result.sdp, 0) == [
        f"m=audio {core_port(0)} RTP/AVP 0", "a=rtpmap:0 PCMU/8000", "a=rtcp-mux",
    ]


@pytest.mark.parametrize(("attributes", "port", "expected"), [
    ([], 5000, 5001),  # RTP port + 1 (RFC 3550 section 11)
    (["rtcp:5011"], 5000, 5011),  # RFC 3605 section 2.1: the port alone
    (["rtcp:53020 IN IP4 126.16.64.4"], 5000, 53020),  # and with an address
    (["rtcp:abc"], 5000, 5001),  # not a port: as if absent
    (["rtcp:"], 5000, 5001),
    (["rtcp: 5011"], 5000, 5001),  # RFC 3605: the port follows the colon, no space
    (["rtcp-mux", "rtcp:5011"], 5000, None),  # multiplexed: no RTCP port (RFC 5761)
    (["rtcp-mux-only"], 5000, None),  # RFC 8858
    ([], 0, None),  # a rejected stream has no RTCP
])
def test_remote_rtcp_port_reads_rfc3605_a_rtcp(attributes, port, expected):
    from sdp_rules.attrs import remote_rtcp_port
    from sdp_rules.sdp import Line, MediaSection

    section = MediaSection([Line("m", f"audio {port} RTP/AVP 0"), *[Line("a", a) for a in attributes]])
    assert remote_rtcp_port(section) == expected


def test_core_answer_a_rtcp_port_goes_to_the_agw():
    pol = policy()
    _, offered = run(fixture("chromium_offer_audio.sdp"), Side.ACCESS, Kind.OFFER, DialogState(), pol)
    answer = sdp("""
        v=0
        o=core 1 1 IN IP4 192.0.2.50
        s=-
        c=IN IP4 192.0.2.50
        t=0 0
        m=audio 6000 RTP/AVPF 111
        a=rtpmap:111 opus/48000/2
        a=rtcp:7003 IN IP4 192.0.2.50
    """)
    plan, _ = run(answer, Side.CORE, Kind.ANSWER, offered.state, pol)
    core = plan.iq.streams[0].core
    assert (core.remote_port, core.remote_rtcp_port, core.rtcp_mux) == (6000, 7003, False)


@pytest.mark.parametrize("port", [5002, 1])
def test_dtls_media_without_any_c_line_is_refused(port):
    body = sdp("\n".join([
        "v=0", "o=ue 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0",
        f"m=audio {port} UDP/TLS/RTP/SAVPF 0", "a=rtpmap:0 PCMU/8000", f"a=fingerprint:{FP}",
    ]))
    assert _error(body) == "m-line 1: no c= line for the media (RFC 8866 5.7)"


def _reply_with(request, **changes):
    """The fake AGW's reply with fields of every termination reply changed."""
    from dataclasses import replace

    from tests.unit.rules_helpers import agw_reply

    reply = agw_reply(request)
    for stream in reply.streams:
        if stream.access is not None:
            stream.access = replace(stream.access, **changes.get("access", {}))
        if stream.core is not None:
            stream.core = replace(stream.core, **changes.get("core", {}))
    return reply


def test_rtcp_ports_other_than_rtp_plus_one_are_written_as_a_rtcp():
    """RFC 3605: an RTCP port that is not RTP + 1 is announced, with its address toward access."""
    pol = policy()
    body = fixture("baresip_offer.sdp")  # no rtcp-mux: separate RTCP on both sides
    plan = sdp_rules_plan(body, pol)
    offered = plan.finish(_reply_with(plan.iq, core={"local_rtcp_port": 30011}, access={"local_rtcp_port": 40011}))
    assert [line for line in offered.sdp.split("\r\n") if line.startswith("a=rtcp:")] == ["a=rtcp:30011"]
    answer = sdp("""
        v=0
        o=core 1 1 IN IP4 192.0.2.50
        s=-
        c=IN IP4 192.0.2.50
        t=0 0
        m=audio 6000 RTP/AVPF 0 101
        a=rtpmap:0 PCMU/8000
    """)
    plan = sdp_rules_plan(answer, pol, offered.state, Side.CORE, Kind.ANSWER)
    answered = plan.finish(_reply_with(plan.iq))
    assert [line for line in answered.sdp.split("\r\n") if line.startswith("a=rtcp:")] == [
        "a=rtcp:40011 IN IP4 203.0.113.10"]


def sdp_rules_plan(body, pol, state=None, origin=Side.ACCESS, kind=Kind.OFFER):
    from tests.unit.rules_helpers import plan

    return plan(body, origin, kind, state or DialogState(), pol)


@pytest.mark.parametrize(("missing", "message"), [
    ({"ice_pwd": None}, "AGW reply lacks ICE credentials for an ICE-lite termination"),
    ({"ice_ufrag": None}, "AGW reply lacks ICE credentials for an ICE-lite termination"),
    ({"local_fingerprint": None}, "AGW reply lacks the Local certificate fingerprint IE"),
])
def test_an_agw_reply_without_what_the_access_sdp_needs_is_our_defect(missing, message):
    """A ValueError (our side's defect: 500), never a PeerError blamed on the WIC."""
    plan = sdp_rules_plan(CORE_OFFER, unbundled(), None, Side.CORE, Kind.OFFER)
    with pytest.raises(ValueError) as caught:
        plan.finish(_reply_with(plan.iq, access=missing))
    assert str(caught.value) == message and not isinstance(caught.value, SdpPolicyError)


@pytest.mark.req("MUX-1")
def test_rtcp_mux_only_alone_means_muxed_on_every_path():
    """RFC 8858: a=rtcp-mux-only implies multiplexing even without a=rtcp-mux (offers and answers)."""
    pol = policy()
    offer = fixture("chromium_offer_audio.sdp").replace("a=rtcp-mux\r\n", "a=rtcp-mux-only\r\n")
    plan, offered = run(offer, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    assert plan.iq.streams[0].access.rtcp_mux is True
    core_answer = sdp("""
        v=0
        o=core 1 1 IN IP4 192.0.2.50
        s=-
        c=IN IP4 192.0.2.50
        t=0 0
        m=audio 6000 RTP/AVPF 111
        a=rtpmap:111 opus/48000/2
        a=rtcp-mux-only
    """)
    plan, _ = run(core_answer, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert (plan.iq.streams[0].core.rtcp_mux, plan.iq.streams[0].core.remote_rtcp_port) == (True, None)
    _, core_offered = run(CORE_OFFER, Side.CORE, Kind.OFFER, DialogState(), pol)
    plan, _ = run(_wic_answer(extra=["a=rtcp-mux-only"]), Side.ACCESS, Kind.ANSWER, core_offered.state, pol)
    assert (plan.iq.streams[0].access.rtcp_mux, plan.iq.streams[0].access.remote_rtcp_port) == (True, None)


SDES_CRYPTO = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"


@pytest.mark.req("G-1")
def test_the_plan_says_per_m_line_what_was_decided_and_why_for_a_core_offer_and_its_answer():
    pol = policy()
    offer = (CORE_OFFER + "m=audio 5004 rtp/savpf 0\r\n" + SDES_CRYPTO + "m=video 0 RTP/AVP 96\r\n"
             "m=application 5070 TCP/BFCP *\r\n")
    p, offered = run(offer, Side.CORE, Kind.OFFER, DialogState(), pol)
    assert [(d.index, d.media, d.proto, d.kind, d.reason, d.stream_ids) for d in p.streams] == [
        (0, "audio", "RTP/AVP", "srtp", "", [0]),
        (1, "audio", "rtp/savpf", "passthrough", "SDES-SRTP from the core: not e2ae", []),
        (2, "video", "RTP/AVP", "passthrough", "rejected (port 0)", []),
        (3, "application", "TCP/BFCP", "passthrough", "proto TCP/BFCP is not e2ae", []),
    ]
    answer = sdp("\n".join([
        "v=0", "o=ue 2 2 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
        "m=audio 5000 UDP/TLS/RTP/SAVP 0", f"a=fingerprint:{FP}", "a=setup:active",
        "m=audio 5004 rtp/savpf 0", "m=video 0 RTP/AVP 96", "m=application 0 TCP/BFCP *",
    ]))
    p, answered = run(answer, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    assert (p.origin, p.kind, p.forward_to) == (Side.ACCESS, Kind.ANSWER, Side.CORE)
    assert [(d.index, d.media, d.proto, d.kind, d.reason, d.stream_ids) for d in p.streams] == [
        (0, "audio", "UDP/TLS/RTP/SAVP", "srtp", "", [0]),
        (1, "audio", "rtp/savpf", "passthrough", "not e2ae", []),
        (2, "video", "RTP/AVP", "passthrough", "not e2ae", []),
        (3, "application", "TCP/BFCP", "passthrough", "not e2ae", []),
    ]
    assert [line for line in answered.sdp.split("\r\n") if line.startswith("m=")][1:] == [
        "m=audio 5004 rtp/savpf 0", "m=video 0 RTP/AVP 96", "m=application 0 TCP/BFCP *"]


@pytest.mark.req("G-1")
def test_the_plan_says_per_m_line_what_was_decided_for_a_wic_offer_and_the_core_answer():
    pol = unbundled()
    offer = (fixture("chromium_offer_audio.sdp") + "m=audio 5004 RTP/SAVPF 0\r\n" + SDES_CRYPTO
             + "m=video 5006 RTP/AVP 96\r\n")
    p, offered = run(offer, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    assert [(d.index, d.media, d.proto, d.kind, d.reason, d.stream_ids) for d in p.streams] == [
        (0, "audio", "UDP/TLS/RTP/SAVPF", "srtp", "", [0]),
        (1, "audio", "RTP/SAVPF", "passthrough", "SDES-SRTP, not DTLS: not e2ae", []),
        (2, "video", "RTP/AVP", "passthrough", "proto RTP/AVP is not e2ae", [])]
    assert (p.origin, p.kind, p.forward_to) == (Side.ACCESS, Kind.OFFER, Side.CORE)
    answer = sdp("""
        v=0
        o=core 1 1 IN IP4 192.0.2.50
        s=-
        c=IN IP4 192.0.2.50
        t=0 0
        m=audio 6000 RTP/AVPF 111
        m=audio 6004 RTP/SAVPF 0
        m=video 6006 RTP/AVP 96
    """)
    p, answered = run(answer, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert [(d.index, d.media, d.proto, d.kind, d.reason, d.stream_ids) for d in p.streams] == [
        (0, "audio", "RTP/AVPF", "srtp", "", [0]),
        (1, "audio", "RTP/SAVPF", "passthrough", "not e2ae", []),
        (2, "video", "RTP/AVP", "passthrough", "not e2ae", []),
    ]
    assert [line for line in answered.sdp.split("\r\n") if line.startswith("m=")][1:] == [
        "m=audio 6004 RTP/SAVPF 0", "m=video 6006 RTP/AVP 96"]


def test_finish_without_the_agw_reply_or_with_a_refusal_is_our_defect():
    from iq import IqReply
    from tests.unit.rules_helpers import plan

    p = plan(fixture("chromium_offer_audio.sdp"), Side.ACCESS, Kind.OFFER, DialogState(), policy())
    with pytest.raises(ValueError) as caught:
        p.finish(None)
    assert str(caught.value) == "the plan asked the AGW something; finish() needs its reply"
    with pytest.raises(ValueError) as caught:
        p.finish(IqReply(p.iq.dialog, p.iq.transaction, error="no ports left", error_code=503))
    assert str(caught.value) == "AGW refused the request: no ports left"


@pytest.mark.req("SRTP-3")
def test_a_tls_id_used_earlier_in_the_dialog_is_never_handed_out_again():
    """RFC 8842 section 4: tls-id values are unique; those of earlier messages of the dialog count too."""
    wic_tls_id = "wicTlsIdFromTheOfferAAA"
    values = iter(["ourFirstTlsIdAAAAAAAAAA", wic_tls_id, "ourSecondTlsIdBBBBBBBBB"])
    pol = unbundled(new_tls_id=lambda: next(values))
    offer = fixture("chromium_offer_audio.sdp").replace(
        "a=setup:actpass\r\n", f"a=setup:actpass\r\na=tls-id:{wic_tls_id}\r\n")
    _, offered = run(offer, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    core_answer = sdp("""
        v=0
        o=core 1 1 IN IP4 192.0.2.50
        s=-
        c=IN IP4 192.0.2.50
        t=0 0
        m=audio 6000 RTP/AVPF 111
    """)
    _, answered = run(core_answer, Side.CORE, Kind.ANSWER, offered.state, pol)
    reoffer = core_answer + "m=video 6002 RTP/AVP 96\r\n"
    p, _ = run(reoffer, Side.CORE, Kind.OFFER, answered.state, pol, transaction="t2")
    assert [s.local_tls_id for s in p.iq.streams] == ["ourFirstTlsIdAAAAAAAAAA", "ourSecondTlsIdBBBBBBBBB"]
