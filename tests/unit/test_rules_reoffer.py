"""Re-offers: keeping or renewing the DTLS association (RFC 8842 sections 4, 5.3, 5.5; RFC 5763 section 5)."""

from __future__ import annotations

import pytest

from sdp_rules import DialogState, Kind, SdpPolicyError, Side
from iq import Command, IqRequest, Role, StreamSpec, TerminationSpec
from sdp_rules.plan import ActpassPolicy

from tests.unit.rules_helpers import AGW_FP_TEXT, TlsIds, fixture, plan, policy, run, sdp, unbundled

WIC_TLS_ID = "wicFirstTlsIdAAAAAAAAAA"
CORE_ANSWER = sdp("""
    v=0
    o=core 1 1 IN IP4 192.0.2.50
    s=-
    c=IN IP4 192.0.2.50
    t=0 0
    m=audio 6000 RTP/AVPF 111
    a=rtpmap:111 opus/48000/2
""")


def _chromium(setup="actpass", tls_id=WIC_TLS_ID, ufrag="Px4O", fp_byte=None):
    body = fixture("chromium_offer_audio.sdp").replace("a=setup:actpass", f"a=setup:{setup}")
    if tls_id:
        body = body.replace(f"a=setup:{setup}\r\n", f"a=setup:{setup}\r\na=tls-id:{tls_id}\r\n")
    body = body.replace("a=ice-ufrag:Px4O", f"a=ice-ufrag:{ufrag}")
    if fp_byte:
        body = body.replace("a=fingerprint:sha-256 98:", f"a=fingerprint:sha-256 {fp_byte}:")
    return body


def _call(pol, offer):
    """Initial WIC offer and core answer; returns (offer plan, answer SDP, state)."""
    plan, offered = run(offer, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    return plan, answered.sdp, answered.state


def _reoffer(pol, state, offer):
    plan, offered = run(offer, Side.ACCESS, Kind.OFFER, state, pol, transaction="t2")
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol, transaction="t2")
    return plan, answered.sdp, answered.state


def _dtls_lines(body):
    return [line for line in body.split("\r\n") if line.split(":")[0] in ("a=fingerprint", "a=setup", "a=tls-id")]


@pytest.mark.req("SRTP-3", "SRTP-4")
def test_same_tls_id_keeps_the_association():
    ids = TlsIds()
    pol = unbundled(new_tls_id=ids)
    _, first_answer, state = _call(pol, _chromium())
    plan, second_answer, _ = _reoffer(pol, state, _chromium())
    spec = plan.iq.streams[0]
    assert plan.iq.command is Command.MODIFY
    assert (spec.reuse_association, spec.local_tls_id, spec.remote_tls_id) == (True, ids.nth(1), WIC_TLS_ID)
    assert (spec.access.establish_tls, spec.access.tls_role) == (False, Role.CLIENT)  # no new handshake
    assert _dtls_lines(second_answer) == _dtls_lines(first_answer) == [
        f"a=fingerprint:{AGW_FP_TEXT}", "a=setup:active", f"a=tls-id:{ids.nth(1)}"]
    assert ids.count == 1


@pytest.mark.req("SRTP-3", "SRTP-4")
def test_new_tls_id_starts_a_new_association():
    ids = TlsIds()
    pol = unbundled(new_tls_id=ids)
    _, _, state = _call(pol, _chromium())
    plan, answer, _ = _reoffer(pol, state, _chromium(tls_id="wicSecondTlsIdBBBBBBBBB"))
    spec = plan.iq.streams[0]
    assert (spec.reuse_association, spec.local_tls_id, spec.remote_tls_id) == (
        False, ids.nth(2), "wicSecondTlsIdBBBBBBBBB")
    assert (spec.access.establish_tls, spec.access.local_fingerprint_request) == (True, True)
    assert _dtls_lines(answer) == [f"a=fingerprint:{AGW_FP_TEXT}", "a=setup:active", f"a=tls-id:{ids.nth(2)}"]


@pytest.mark.req("SRTP-4", "T38-2")
@pytest.mark.parametrize(("first_setup", "actpass", "role", "answer_setup"), [
    # The policy would make the AGW client on actpass; the kept association stays server.
    ("active", ActpassPolicy.ACTIVE, Role.SERVER, "a=setup:passive"),
    # ... and the other way round.
    ("passive", ActpassPolicy.PASSIVE, Role.CLIENT, "a=setup:active"),
])
def test_actpass_reoffer_keeps_the_role(first_setup, actpass, role, answer_setup):
    pol = unbundled(actpass=actpass)
    plan, first_answer, state = _call(pol, _chromium(setup=first_setup))
    assert plan.iq.streams[0].access.tls_role is role
    plan, second_answer, _ = _reoffer(pol, state, _chromium(setup="actpass"))
    assert (plan.iq.streams[0].access.tls_role, plan.iq.streams[0].access.establish_tls) == (role, False)
    assert answer_setup in second_answer.split("\r\n")
    assert _dtls_lines(second_answer) == _dtls_lines(first_answer)


@pytest.mark.req("SRTP-4")
@pytest.mark.parametrize("actpass", [ActpassPolicy.ACTIVE, ActpassPolicy.PASSIVE])
def test_actpass_policy_both_ways(actpass):
    """6.2.10.5 c): on actpass the ALG decides; the default is client (RFC 5763 section 5)."""
    pol = unbundled(actpass=actpass)
    plan, answer, _ = _call(pol, _chromium())
    client = actpass is ActpassPolicy.ACTIVE
    access = plan.iq.streams[0].access
    assert (access.tls_role, access.establish_tls) == ((Role.CLIENT, True) if client else (Role.SERVER, False))
    assert ("a=setup:active" if client else "a=setup:passive") in answer.split("\r\n")
    assert unbundled().actpass is ActpassPolicy.ACTIVE


def test_same_tls_id_with_a_role_change_is_refused():
    pol = policy()
    _, _, state = _call(pol, _chromium(setup="passive"))  # the AGW is client
    with pytest.raises(SdpPolicyError) as err:
        run(_chromium(setup="active"), Side.ACCESS, Kind.OFFER, state, pol)
    assert err.value.sip_status == 488
    assert err.value.reason == ("m-line 1: a=setup:active would change the DTLS role of an existing association"
                                " (same tls-id; RFC 8842 section 5.3)")


@pytest.mark.req("SRTP-4")
@pytest.mark.parametrize(("change", "kept"), [
    ({}, True),
    ({"ufrag": "NEW1"}, False),        # ICE restart
    ({"fp_byte": "11"}, False),        # another certificate
    ({"setup": "active"}, False),      # the WIC changes role (was actpass -> AGW client; now AGW server)
])
def test_peer_without_tls_id(change, kept):
    """RFC 8842 section 4: without tls-id, a new fingerprint, role or ICE ufrag means a new association."""
    ids = TlsIds()
    pol = unbundled(new_tls_id=ids)
    _, _, state = _call(pol, _chromium(tls_id=None))
    plan, answer, _ = _reoffer(pol, state, _chromium(tls_id=None, **change))
    spec = plan.iq.streams[0]
    assert (spec.reuse_association, spec.local_tls_id) == (kept, ids.nth(1) if kept else ids.nth(2))
    assert f"a=tls-id:{spec.local_tls_id}" in answer.split("\r\n")


@pytest.mark.req("SRTP-4")
@pytest.mark.parametrize(("port", "kept"), [(15476, True), (15500, False)])
def test_peer_without_tls_id_and_ice_changing_port(port, kept):
    """RFC 8842 section 4: without ICE, a new transport address/port means a new association."""
    pol = policy()
    body = fixture("baresip_offer.sdp")
    _, _, state = _call(pol, body)
    plan, _, _ = _reoffer(pol, state, body.replace("m=audio 15476", f"m=audio {port}"))
    assert plan.iq.streams[0].reuse_association is kept
    assert plan.iq.streams[0].access.establish_tls is not kept


@pytest.mark.req("SRTP-3", "SRTP-6")
def test_core_reoffer_keeps_the_wic_association():
    """RFC 8842 5.5: an offer on a kept association repeats tls-id and fingerprint and keeps the role."""
    ids = TlsIds()
    pol = unbundled(new_tls_id=ids)
    _, _, state = _call(pol, _chromium())  # the AGW is DTLS client
    core_reoffer = sdp("""
        v=0
        o=core 1 2 IN IP4 192.0.2.50
        s=-
        c=IN IP4 192.0.2.50
        t=0 0
        m=audio 6100 RTP/AVPF 111
        a=rtpmap:111 opus/48000/2
        a=sendonly
    """)
    plan, offered = run(core_reoffer, Side.CORE, Kind.OFFER, state, pol, transaction="t3")
    spec = plan.iq.streams[0]
    assert plan.iq.command is Command.MODIFY
    assert (spec.access, spec.reuse_association, spec.local_tls_id) == (None, True, ids.nth(1))
    assert (spec.core.remote_address, spec.core.remote_port) == ("192.0.2.50", 6100)
    assert offered.sdp == sdp(f"""
        v=0
        o=core 1 2 IN IP4 192.0.2.50
        s=-
        c=IN IP4 203.0.113.10
        t=0 0
        a=ice-lite
        m=audio 40000 UDP/TLS/RTP/SAVPF 111
        a=rtpmap:111 opus/48000/2
        a=sendonly
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
    # The WIC answers keeping the roles (passive): nothing new to establish.
    answer = _chromium(setup="passive").replace("a=group:BUNDLE 0\r\n", "")
    plan, _ = run(answer, Side.ACCESS, Kind.ANSWER, offered.state, pol, transaction="t3")
    assert (plan.iq.streams[0].access.tls_role, plan.iq.streams[0].access.establish_tls) == (Role.CLIENT, False)


@pytest.mark.req("SRTP-6", "SRTP-7")
def test_core_reoffer_after_wic_answered_active_says_passive_and_adds_new_line_with_actpass():
    ids = TlsIds()
    pol = unbundled(new_tls_id=ids)
    core_offer = fixture("core_rtp_offer.sdp")
    _, offered = run(core_offer, Side.CORE, Kind.OFFER, DialogState(), pol)
    wic_answer = _chromium(setup="active", tls_id="wicAnswerTlsIdCCCCCCCCC").replace(
        "UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126", "UDP/TLS/RTP/SAVP 0")
    plan, answered = run(wic_answer, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    assert plan.iq.streams[0].access.tls_role is Role.SERVER
    reoffer = core_offer + sdp("""
        m=audio 20002 RTP/AVP 8
        a=rtpmap:8 PCMA/8000
    """)
    plan, offered = run(reoffer, Side.CORE, Kind.OFFER, answered.state, pol, transaction="t4")
    assert [(s.stream_id, s.reuse_association, s.local_tls_id, s.access is None) for s in plan.iq.streams] == [
        (0, True, ids.nth(1), True),
        (1, False, ids.nth(2), False),
    ]
    assert _dtls_lines(offered.sdp) == [
        f"a=fingerprint:{AGW_FP_TEXT}", "a=setup:passive", f"a=tls-id:{ids.nth(1)}",
        f"a=fingerprint:{AGW_FP_TEXT}", "a=setup:actpass", f"a=tls-id:{ids.nth(2)}",
    ]


def _disabled(body):
    """The same offer with its (only) m-line disabled: port 0 (RFC 3264 section 8.2)."""
    head, _, rest = body.partition("m=audio ")
    return head + "m=audio 0 " + rest.split(" ", 1)[1]


@pytest.mark.req("SRTP-4")
def test_wic_reoffer_disabling_the_stream_releases_it():
    pol = policy()
    _, _, state = _call(pol, _chromium())
    plan, offered = run(_disabled(_chromium()), Side.ACCESS, Kind.OFFER, state, pol, transaction="t2")
    assert (plan.iq.command, plan.iq.streams, plan.iq.release_streams) == (Command.MODIFY, [], [0])
    assert [(d.kind, d.reason) for d in plan.streams] == [("passthrough", "disabled in a re-offer: stream released")]
    forwarded = offered.sdp.split("\r\n")
    m_lines = [line for line in forwarded if line.startswith("m=")]
    assert m_lines == ["m=audio 0 RTP/AVPF 111 63 9 0 8 13 110 126"]
    assert offered.state.data["streams"] == {}


@pytest.mark.req("SRTP-6")
def test_core_reoffer_disabling_the_stream_releases_it():
    pol = policy()
    core_offer = fixture("core_rtp_offer.sdp")
    _, offered = run(core_offer, Side.CORE, Kind.OFFER, DialogState(), pol)
    access_m = [line for line in offered.sdp.split("\r\n") if line.startswith("m=")][0]
    wic_answer = sdp(f"""
        v=0
        o=- 2 2 IN IP4 127.0.0.1
        s=-
        c=IN IP4 127.0.0.1
        t=0 0
        {access_m.replace(access_m.split(" ")[1], "50000", 1)}
        a=fingerprint:sha-256 {':'.join(['AB'] * 32)}
        a=setup:active
        a=tls-id:wicTlsIdForCoreCallAAAA
    """)
    _, answered = run(wic_answer, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    plan, reoffered = run(_disabled(core_offer), Side.CORE, Kind.OFFER, answered.state, pol, transaction="t2")
    assert (plan.iq.streams, plan.iq.release_streams) == ([], [0])
    assert [(d.kind, d.reason) for d in plan.streams] == [("passthrough", "disabled in a re-offer: stream released")]
    m_lines = [line for line in reoffered.sdp.split("\r\n") if line.startswith("m=")]
    assert m_lines == [" ".join(["m=audio", "0", "UDP/TLS/RTP/SAVP", *access_m.split(" ")[3:]])]
    assert reoffered.state.data["streams"] == {}


@pytest.mark.req("SRTP-3", "SRTP-4")
@pytest.mark.parametrize(("first", "second"), [(WIC_TLS_ID, None), (None, WIC_TLS_ID)],
                         ids=["tls-id-dropped", "tls-id-added"])
def test_tls_id_on_one_side_only_starts_a_new_association(first, second):
    """RFC 8842 section 4: with a=tls-id on either offer, only equal tls-ids keep the association,
    even when fingerprint, role and ICE ufrag are unchanged."""
    ids = TlsIds()
    pol = unbundled(new_tls_id=ids)
    _, _, state = _call(pol, _chromium(tls_id=first))
    plan, answer, _ = _reoffer(pol, state, _chromium(tls_id=second))
    spec = plan.iq.streams[0]
    assert (spec.reuse_association, spec.local_tls_id, spec.remote_tls_id) == (False, ids.nth(2), second)
    assert spec.access.establish_tls is True
    assert f"a=tls-id:{ids.nth(2)}" in answer.split("\r\n")


@pytest.mark.req("SRTP-3", "SRTP-6")
def test_core_reoffer_on_a_kept_association_modifies_the_core_termination_only():
    """The whole MODIFY of a core re-offer on a kept association (RFC 8842 5.5, TS 23.334 6.2.10.5)."""
    ids = TlsIds()
    pol = unbundled(new_tls_id=ids)
    core_offer = fixture("core_rtp_offer.sdp")
    _, offered = run(core_offer, Side.CORE, Kind.OFFER, DialogState(), pol)
    wic_answer = _chromium(setup="active", tls_id="wicAnswerTlsIdCCCCCCCCC").replace(
        "UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126", "UDP/TLS/RTP/SAVP 0")
    _, answered = run(wic_answer, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    moved = core_offer.replace("c=IN IP4 127.0.0.1", "c=IN IP4 192.0.2.77").replace(
        "m=audio 20000", "m=audio 22000").replace("a=rtcp:20001", "a=rtcp:22009")
    plan, reoffered = run(moved, Side.CORE, Kind.OFFER, answered.state, pol, transaction="t4")
    assert plan.iq == IqRequest(Command.MODIFY, "dlg-1", "t4", [StreamSpec(
        stream_id=0,
        kind="srtp",
        access=None,
        core=TerminationSpec(side=Side.CORE, transport="RTP/AVP", remote_address="192.0.2.77", remote_port=22000,
                             remote_rtcp_port=22009, rtcp_mux=False),
        local_tls_id=ids.nth(1),
        remote_tls_id="wicAnswerTlsIdCCCCCCCCC",
        reuse_association=True,
    )])
    assert _dtls_lines(reoffered.sdp) == [f"a=fingerprint:{AGW_FP_TEXT}", "a=setup:passive", f"a=tls-id:{ids.nth(1)}"]


@pytest.mark.req("SRTP-4")
@pytest.mark.parametrize(("first", "again"), [("passive", "passive"), ("active", "active"), ("active", "actpass")])
def test_peer_without_tls_id_keeping_its_role_keeps_the_association(first, again):
    """RFC 8842 section 4: same fingerprint, ufrag and role (an actpass re-offer changes no role)."""
    ids = TlsIds()
    pol = unbundled(new_tls_id=ids)
    _, _, state = _call(pol, _chromium(setup=first, tls_id=None))
    plan, _, _ = _reoffer(pol, state, _chromium(setup=again, tls_id=None))
    spec = plan.iq.streams[0]
    assert (spec.reuse_association, spec.local_tls_id, spec.access.establish_tls) == (True, ids.nth(1), False)


@pytest.mark.req("SRTP-6")
def test_core_reoffer_decisions_for_kept_new_and_pass_through_lines():
    pol = policy()
    core_offer = fixture("core_rtp_offer.sdp") + "m=video 5006 RTP/SAVP 96\r\n"
    _, offered = run(core_offer, Side.CORE, Kind.OFFER, DialogState(), pol)
    access_m = [line for line in offered.sdp.split("\r\n") if line.startswith("m=")]
    wic_answer = sdp(f"""
        v=0
        o=- 2 2 IN IP4 127.0.0.1
        s=-
        c=IN IP4 127.0.0.1
        t=0 0
        {access_m[0].replace(access_m[0].split(" ")[1], "50000", 1)}
        a=fingerprint:sha-256 {':'.join(['AB'] * 32)}
        a=setup:active
        {access_m[1]}
    """)
    _, answered = run(wic_answer, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    reoffer = core_offer + "m=audio 5008 RTP/AVP 0\r\n"
    plan, reoffered = run(reoffer, Side.CORE, Kind.OFFER, answered.state, pol, transaction="t2")
    assert [(d.index, d.kind, d.reason, d.stream_ids) for d in plan.streams] == [
        (0, "srtp", "", [0]),
        (1, "passthrough", "existing m-line", []),
        (2, "srtp", "", [2]),
    ]
    assert [line for line in reoffered.sdp.split("\r\n") if line.startswith("m=")][1] == "m=video 5006 RTP/SAVP 96"


@pytest.mark.parametrize(("body", "origin", "message"), [
    (CORE_ANSWER, Side.CORE, "SDP answer without an offer in progress"),
])
def test_an_answer_without_an_offer_is_refused(body, origin, message):
    with pytest.raises(SdpPolicyError) as caught:
        run(body, origin, Kind.ANSWER, DialogState(), policy())
    assert caught.value.reason == message


def test_an_answer_from_the_offerer_itself_is_refused():
    pol = policy()
    _, offered = run(_chromium(), Side.ACCESS, Kind.OFFER, DialogState(), pol)
    with pytest.raises(SdpPolicyError) as caught:
        run(_chromium(setup="active"), Side.ACCESS, Kind.ANSWER, offered.state, pol)
    assert caught.value.reason == "SDP answer from access to its own offer"



def test_a_core_reoffer_turning_a_dtls_media_line_into_t140_is_refused():
    """Found by fuzzing: the data-channel rules took the kept SRTP stream for an association (a 500)."""
    pol = policy()
    core_offer = fixture("core_rtp_offer.sdp")
    _, offered = run(core_offer, Side.CORE, Kind.OFFER, DialogState(), pol)
    access_m = [line for line in offered.sdp.split("\r\n") if line.startswith("m=")][0]
    wic_answer = sdp(f"""
        v=0
        o=- 2 2 IN IP4 127.0.0.1
        s=-
        c=IN IP4 127.0.0.1
        t=0 0
        {access_m.replace(access_m.split(" ")[1], "50000", 1)}
        a=fingerprint:sha-256 {':'.join(['AB'] * 32)}
        a=setup:active
    """)
    _, answered = run(wic_answer, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    t140 = core_offer.replace("m=audio 20000 RTP/AVP 0 8 101", "m=text 20000 RTP/AVP 98").replace(
        "a=rtpmap:0 PCMU/8000", "a=rtpmap:98 t140/1000")
    with pytest.raises(SdpPolicyError) as caught:
        run(t140, Side.CORE, Kind.OFFER, answered.state, pol, transaction="t2")
    assert caught.value.sip_status == 488
    assert caught.value.reason == "m-line 1: a re-offer turning a srtp stream into text for a data channel is not supported"


def test_a_wic_reoffer_with_fewer_m_lines_keeps_the_cores_lines_rejected_in_place():
    """RFC 3264 section 8: the core must see every m-line it knows; a missing one goes as port 0."""
    pol = policy()
    two = _chromium() + "m=video 9 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    _, offered = run(two, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    answer = CORE_ANSWER + "m=video 7000 RTP/AVP 96\r\n"
    _, answered = run(answer, Side.CORE, Kind.ANSWER, offered.state, pol)
    _, reoffered = run(_chromium(), Side.ACCESS, Kind.OFFER, answered.state, pol, transaction="t2")
    assert [line for line in reoffered.sdp.split("\r\n") if line.startswith("m=")] == [
        "m=audio 30000 RTP/AVPF 111 63 9 0 8 13 110 126", "m=video 0 RTP/AVP 96"]


def test_rejected_placeholders_for_core_lines_keep_their_media_and_proto():
    from sdp_rules.rules import _rejected_from_m
    from sdp_rules.sdp import parse

    fallback = parse(fixture("core_rtp_offer.sdp")).media[0]
    assert str(_rejected_from_m("video 7000 RTP/AVP 96", fallback).lines[0]) == "m=video 0 RTP/AVP 96"
    assert str(_rejected_from_m(None, fallback).lines[0]) == "m=audio 0 RTP/AVP 0 8 101"
    assert str(_rejected_from_m(None, None).lines[0]) == "m=application 0 TCP *"


def test_a_wic_reoffer_with_fewer_lines_after_a_core_call_keeps_the_cores_lines():
    pol = unbundled()
    core_offer = fixture("core_rtp_offer.sdp") + "m=video 7000 RTP/AVP 96\r\n"
    _, offered = run(core_offer, Side.CORE, Kind.OFFER, DialogState(), pol)
    access_m = [line for line in offered.sdp.split("\r\n") if line.startswith("m=")]
    wic_answer = sdp(f"""
        v=0
        o=- 2 2 IN IP4 127.0.0.1
        s=-
        c=IN IP4 127.0.0.1
        t=0 0
        {access_m[0].replace(access_m[0].split(" ")[1], "50000", 1)}
        a=fingerprint:sha-256 {':'.join(['AB'] * 32)}
        a=setup:active
        {access_m[1].replace(access_m[1].split(" ")[1], "50002", 1)}
        a=fingerprint:sha-256 {':'.join(['AB'] * 32)}
        a=setup:active
    """)
    _, answered = run(wic_answer, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    reoffer = wic_answer.split("m=video")[0]
    _, reoffered = run(reoffer, Side.ACCESS, Kind.OFFER, answered.state, pol, transaction="t2")
    assert [line for line in reoffered.sdp.split("\r\n") if line.startswith("m=")] == [
        "m=audio 30000 RTP/AVP 0 8 101", "m=video 0 RTP/AVP 96"]


def test_a_core_offer_with_a_new_data_channel_line_then_audio_keeps_their_order():
    from sdp_rules.simulated_agw import SimulatedAgw

    pol = policy()
    body = fixture("core_msrp_offer.sdp") + "m=audio 5008 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    p, offered = run(body, Side.CORE, Kind.OFFER, DialogState(), pol, reply=SimulatedAgw().answer)
    assert [line.split(" ")[0] + " " + line.split(" ")[2] for line in offered.sdp.split("\r\n")
            if line.startswith("m=")] == ["m=application UDP/DTLS/SCTP", "m=audio UDP/TLS/RTP/SAVP"]
    assert [d.kind for d in p.streams] == ["datachannel", "srtp"]


# The m-line of an established DTLS-SRTP stream, in a re-offer, turned into what carries no such stream.
INCOMPLETE_DATA_CHANNEL = sdp("""
    v=0
    o=- 3840232462 1 IN IP4 127.0.0.1
    s=-
    t=0 0
    m=application 46436 UDP/DTLS/SCTP webrtc-datachannel
    c=IN IP4 127.0.0.1
    a=max-message-size:10
""")
PLAIN_AUDIO = sdp("""
    v=0
    o=- 3840232462 2 IN IP4 127.0.0.1
    s=-
    c=IN IP4 127.0.0.1
    t=0 0
    m=audio 46436 RTP/AVP 0
    a=rtpmap:0 PCMU/8000
""")


@pytest.mark.parametrize("bundled", [True, False], ids=["bundle", "no-bundle"])
@pytest.mark.parametrize("reoffer", [INCOMPLETE_DATA_CHANNEL, PLAIN_AUDIO], ids=["data-channel", "plain-rtp"])
def test_a_line_that_no_longer_carries_its_dtls_stream_releases_it(bundled, reoffer):
    """The stream goes with the line (and its transport with it when bundled): the modify never
    leaves mediad a stream no m-line carries, nor a released transport with a stream on it."""
    pol = policy() if bundled else unbundled()
    first, _, state = _call(pol, _chromium())
    assert (first.iq.streams[0].transport_id is not None) is bundled
    again = plan(reoffer, Side.ACCESS, Kind.OFFER, state, pol, transaction="t2")
    assert again.iq is not None and again.iq.release_streams == [0], again.iq
    assert 0 not in [s.stream_id for s in again.iq.streams]
    assert again.iq.release_transports == ([0] if bundled else [])


@pytest.mark.parametrize("bundled", [True, False], ids=["bundle", "no-bundle"])
def test_a_reoffer_that_leaves_a_dtls_line_out_releases_its_stream(bundled):
    """A WIC re-offer with fewer m-lines (RFC 3264 section 8 keeps them; the edge forwards the
    missing ones rejected): their streams are released, never left in mediad on a transport the
    bundle rules release."""
    pol = policy() if bundled else unbundled()
    _, _, state = _call(pol, _chromium())
    session_only = "".join(line + "\r\n" for line in _chromium().split("\r\n")[:4])
    assert "m=" not in session_only
    again = plan(session_only, Side.ACCESS, Kind.OFFER, state, pol, transaction="t2")
    assert again.iq is not None and again.iq.release_streams == [0] and again.iq.streams == []
    assert again.iq.release_transports == ([0] if bundled else [])
