"""The four paths of a DTLS media line (sdp_rules.media), each with what only it does.

WIC offer / core answer and core offer / WIC answer, re-offers on kept
associations from either side, and what the ALG does with an AGW reply that
lacks what the SDP needs.
"""

from __future__ import annotations

import pytest

from sdp_rules import DialogState, Kind, SdpPolicyError, Side
from iq import IqReply, Role, StreamReply, TerminationReply

from tests.unit.rules_helpers import AGW_CORE_ADDRESS, TlsIds, agw_reply, fixture, plan, policy, run, sdp, unbundled

FP = "sha-256 D6:00:20:5D:63:4E:97:C0:63:C2:2F:48:FC:FF:08:4F:55:CE:79:FD:B9:FB:29:55:9F:3B:47:3B:DF:96:BB:E3"
CORE_ANSWER = sdp("""
    v=0
    o=core 1 1 IN IP4 192.0.2.50
    s=-
    c=IN IP4 192.0.2.50
    t=0 0
    m=audio 6000 RTP/AVPF 0 101
    a=rtpmap:0 PCMU/8000
""")
CORE_OFFER = fixture("core_rtp_offer.sdp")


def wic_answer(*extra: str, setup: str = "active", proto: str = "UDP/TLS/RTP/SAVP", c_line: bool = True,
               port: int = 5000) -> str:
    return sdp("\n".join([
        "v=0", "o=ue 2 2 IN IP4 127.0.0.1", "s=-", *(["c=IN IP4 127.0.0.1"] if c_line else []), "t=0 0",
        f"m=audio {port} {proto} 0", "a=rtpmap:0 PCMU/8000", f"a=fingerprint:{FP}", f"a=setup:{setup}", *extra,
    ]))


def _core_call(pol, answer=None):
    _, offered = run(CORE_OFFER, Side.CORE, Kind.OFFER, DialogState(), pol)
    return run(answer or wic_answer(), Side.ACCESS, Kind.ANSWER, offered.state, pol)


def _error(body, origin, kind, state, pol):
    with pytest.raises(SdpPolicyError) as caught:
        run(body, origin, kind, state, pol)
    assert caught.value.sip_status == 488
    return caught.value.reason


# -- where an error names the m-line ----------------------------------------------------

def test_every_path_names_the_m_line_without_a_c_line():
    pol = policy()
    no_c = "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    core_offer = "v=0\r\no=core 1 1 IN IP4 192.0.2.50\r\ns=-\r\nt=0 0\r\n" + no_c
    assert _error(core_offer, Side.CORE, Kind.OFFER, DialogState(), pol) == (
        "m-line 1: no c= line for the media (RFC 8866 5.7)")
    _, offered = run(fixture("chromium_offer_audio.sdp"), Side.ACCESS, Kind.OFFER, DialogState(), pol)
    core_answer = CORE_ANSWER.replace("c=IN IP4 192.0.2.50\r\n", "")
    assert _error(core_answer, Side.CORE, Kind.ANSWER, offered.state, pol) == (
        "m-line 1: no c= line for the media (RFC 8866 5.7)")
    _, offered = run(CORE_OFFER, Side.CORE, Kind.OFFER, DialogState(), pol)
    assert _error(wic_answer(c_line=False), Side.ACCESS, Kind.ANSWER, offered.state, pol) == (
        "m-line 1: no c= line for the media (RFC 8866 5.7)")


@pytest.mark.req("SRTP-7")
def test_a_wic_answer_in_another_proto_is_refused():
    pol = policy()
    _, offered = run(CORE_OFFER, Side.CORE, Kind.OFFER, DialogState(), pol)
    assert _error(wic_answer(proto="UDP/TLS/RTP/SAVPF"), Side.ACCESS, Kind.ANSWER, offered.state, pol) == (
        "m-line 1: answer proto UDP/TLS/RTP/SAVPF does not match the offer's UDP/TLS/RTP/SAVP")


# -- the WIC's answer to a core offer ------------------------------------------------------

@pytest.mark.req("SRTP-7", "MUX-1")
def test_a_wic_answer_without_rtcp_mux_gives_its_rtcp_port():
    pol = unbundled()
    _, offered = run(CORE_OFFER, Side.CORE, Kind.OFFER, DialogState(), pol)
    p, _ = run(wic_answer(), Side.ACCESS, Kind.ANSWER, offered.state, pol)
    assert (p.iq.streams[0].access.rtcp_mux, p.iq.streams[0].access.remote_rtcp_port) == (False, 5001)
    p, _ = run(wic_answer("a=rtcp:5011"), Side.ACCESS, Kind.ANSWER, offered.state, pol)
    assert p.iq.streams[0].access.remote_rtcp_port == 5011


@pytest.mark.req("SRTP-6", "SRTP-7", "MUX-1")
def test_a_core_offering_rtcp_mux_gets_it_in_the_answer():
    pol = policy()
    muxed = CORE_OFFER.replace("a=rtcp:20001\r\n", "a=rtcp-mux\r\n")
    p, offered = run(muxed, Side.CORE, Kind.OFFER, DialogState(), pol)
    assert (p.iq.streams[0].core.rtcp_mux, p.iq.streams[0].core.remote_rtcp_port) == (True, None)
    _, answered = run(wic_answer("a=rtcp-mux"), Side.ACCESS, Kind.ANSWER, offered.state, pol)
    lines = answered.sdp.split("\r\n")
    assert "a=rtcp-mux" in lines and not [line for line in lines if line.startswith("a=rtcp:")]
    _, answered = run(wic_answer(), Side.ACCESS, Kind.ANSWER, offered.state, pol)  # the WIC does not mux
    assert "a=rtcp-mux" in answered.sdp.split("\r\n")  # the core leg still does: its offer decided


@pytest.mark.req("SRTP-7")
def test_the_same_rejecting_answer_twice_releases_once_and_renders_the_same():
    """A reliable 18x and the 2xx carry the same answer; the stream is gone after the first."""
    pol = policy()
    _, offered = run(CORE_OFFER, Side.CORE, Kind.OFFER, DialogState(), pol)
    first_plan, first = run(wic_answer(port=0), Side.ACCESS, Kind.ANSWER, offered.state, pol)
    second_plan, second = run(wic_answer(port=0), Side.ACCESS, Kind.ANSWER, first.state, pol, transaction="t2")
    assert first_plan.iq.release_streams == second_plan.iq.release_streams == [0]
    assert second.sdp == first.sdp and second.state.data["streams"] == {}


# -- re-offers on kept associations -----------------------------------------------------------

@pytest.mark.req("SRTP-3", "SRTP-6")
def test_wic_answer_to_a_core_reoffer_on_a_kept_association():
    ids = TlsIds()
    pol = unbundled(new_tls_id=ids)
    _, answered = _core_call(pol, wic_answer(setup="active"))  # the AGW is DTLS server
    _, reoffered = run(CORE_OFFER, Side.CORE, Kind.OFFER, answered.state, pol, transaction="t2")
    assert "a=setup:passive" in reoffered.sdp.split("\r\n")
    p, _ = run(wic_answer(setup="active"), Side.ACCESS, Kind.ANSWER, reoffered.state, pol, transaction="t2")
    spec = p.iq.streams[0]
    assert (spec.reuse_association, spec.access.establish_tls, spec.access.tls_role) == (True, False, Role.SERVER)
    assert _error(wic_answer(setup="passive"), Side.ACCESS, Kind.ANSWER, reoffered.state, pol) == (
        "m-line 1: a=setup:passive changes the DTLS role of an existing association")


@pytest.mark.req("SRTP-4")
def test_wic_reoffer_after_a_core_call_keeps_the_association_its_answer_set_up():
    """No tls-id: the fingerprint, ICE ufrag, role and address the WIC answered decide (RFC 8842 4)."""
    ids = TlsIds()
    pol = unbundled(new_tls_id=ids)
    _, answered = _core_call(pol, wic_answer("a=ice-ufrag:wicU", "a=ice-pwd:wicpwdwicpwdwicpwdwicpwd",
                                             setup="passive"))
    reoffer = wic_answer("a=ice-ufrag:wicU", "a=ice-pwd:wicpwdwicpwdwicpwdwicpwd", setup="passive")
    p, _ = run(reoffer, Side.ACCESS, Kind.OFFER, answered.state, pol, transaction="t3")
    assert (p.iq.streams[0].reuse_association, p.iq.streams[0].local_tls_id) == (True, ids.nth(1))
    other_fp = reoffer.replace("D6:00:20", "D6:00:21")
    p, _ = run(other_fp, Side.ACCESS, Kind.OFFER, answered.state, pol, transaction="t4")
    assert p.iq.streams[0].reuse_association is False


@pytest.mark.req("SRTP-4")
def test_wic_reoffer_without_ice_after_a_core_call_is_judged_by_its_address():
    pol = unbundled()
    _, answered = _core_call(pol, wic_answer(setup="passive"))
    for port, kept in ((5000, True), (5010, False)):
        p, _ = run(wic_answer(setup="passive", port=port), Side.ACCESS, Kind.OFFER, answered.state, pol)
        assert p.iq.streams[0].reuse_association is kept


@pytest.mark.req("SRTP-6", "ICE-1")
def test_core_reoffer_keeps_a_wic_without_ice_without_ice():
    """baresip offers no ICE; a core re-offer on its kept association offers none either."""
    pol = unbundled()
    _, offered = run(fixture("baresip_offer.sdp"), Side.ACCESS, Kind.OFFER, DialogState(), pol)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    p, reoffered = run(CORE_OFFER, Side.CORE, Kind.OFFER, answered.state, pol, transaction="t2")
    assert p.iq.streams[0].reuse_association is True
    assert not [line for line in reoffered.sdp.split("\r\n") if line.startswith(("a=ice-", "a=candidate"))]


@pytest.mark.req("SRTP-6", "ICE-1")
def test_core_reoffer_after_a_wic_answer_without_ice_offers_no_ice():
    pol = unbundled()
    _, answered = _core_call(pol, wic_answer())
    p, reoffered = run(CORE_OFFER, Side.CORE, Kind.OFFER, answered.state, pol, transaction="t2")
    assert p.iq.streams[0].reuse_association is True
    assert not [line for line in reoffered.sdp.split("\r\n") if line.startswith(("a=ice-", "a=candidate"))]


@pytest.mark.req("SRTP-5")
def test_a_reply_without_the_stream_renders_the_answer_from_the_stored_access_termination():
    pol = policy()
    _, offered = run(fixture("chromium_offer_audio.sdp"), Side.ACCESS, Kind.OFFER, DialogState(), pol)
    p = plan(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert p.finish(IqReply(p.iq.dialog, p.iq.transaction, [])).sdp == p.finish(agw_reply(p.iq)).sdp


@pytest.mark.req("SRTP-6", "MUX-1")
def test_core_reoffer_keeps_the_wics_rtcp_mux_when_the_policy_does_not_offer_it():
    pol = unbundled(offer_rtcp_mux_to_access=False)
    for wic_mux, expected in ((True, True), (False, False)):
        _, offered = run(CORE_OFFER, Side.CORE, Kind.OFFER, DialogState(), pol)
        assert "a=rtcp-mux" not in offered.sdp.split("\r\n")
        extra = ("a=rtcp-mux",) if wic_mux else ()
        _, answered = run(wic_answer(*extra), Side.ACCESS, Kind.ANSWER, offered.state, pol)
        _, reoffered = run(CORE_OFFER, Side.CORE, Kind.OFFER, answered.state, pol, transaction="t2")
        assert ("a=rtcp-mux" in reoffered.sdp.split("\r\n")) is expected


@pytest.mark.req("SRTP-4", "TCP-3")
def test_a_reoffer_moving_the_line_to_tcp_is_a_new_association_even_with_the_same_tls_id():
    ids = TlsIds()
    pol = policy(new_tls_id=ids)
    body = fixture("chromium_offer_audio.sdp").replace(
        "a=setup:actpass\r\n", "a=setup:actpass\r\na=tls-id:sameTlsIdAAAAAAAAAAAAAA\r\n")
    _, offered = run(body, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    p, _ = run(body.replace("UDP/TLS/RTP/SAVPF", "TCP/DTLS/RTP/SAVPF"), Side.ACCESS, Kind.OFFER, answered.state,
               pol, transaction="t2")
    spec = p.iq.streams[0]
    assert (spec.kind, spec.reuse_association, spec.local_tls_id) == ("srtp_tcp", False, ids.nth(2))


# -- unknown core protos ------------------------------------------------------------------

@pytest.mark.parametrize("proto", ["TCP/BFCP", "RTP/SAVP", "udp"])
def test_core_offer_lines_that_are_not_e2ae_pass_through(proto):
    pol = policy()
    body = CORE_OFFER + f"m=application 5070 {proto} *\r\n"
    p, offered = run(body, Side.CORE, Kind.OFFER, DialogState(), pol)
    assert [(d.kind, d.reason) for d in p.streams][1][0] == "passthrough"
    assert offered.sdp.endswith(f"m=application 5070 {proto} *\r\n")


# -- AGW replies the SDP cannot be rendered from: our defect, never the WIC's -----------------

@pytest.mark.parametrize(("streams", "message"), [
    ([], "AGW reply lacks the core termination of stream 0"),
    ([StreamReply(0, access=None, core=TerminationReply(AGW_CORE_ADDRESS, 30000))],
     "AGW reply lacks the access termination of stream 0"),
])
def test_an_agw_reply_lacking_a_termination_is_a_value_error(streams, message):
    p = plan(fixture("chromium_offer_audio.sdp"), Side.ACCESS, Kind.OFFER, DialogState(), unbundled())
    with pytest.raises(ValueError) as caught:
        p.finish(IqReply(p.iq.dialog, p.iq.transaction, streams))
    assert str(caught.value) == message and not isinstance(caught.value, SdpPolicyError)
    assert p.finish(agw_reply(p.iq)).sdp  # the same plan renders from a whole reply


@pytest.mark.req("SRTP-3")
@pytest.mark.parametrize("side", [Side.ACCESS, Side.CORE])
def test_a_reoffer_reply_without_the_stream_renders_from_the_stored_terminations(side):
    """A kept stream's terminations are stored: a reply that does not repeat them changes nothing."""
    pol = unbundled()
    if side is Side.ACCESS:
        body = fixture("chromium_offer_audio.sdp")
        _, offered = run(body, Side.ACCESS, Kind.OFFER, DialogState(), pol)
        _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    else:
        body = CORE_OFFER
        _, answered = _core_call(pol)
    p = plan(body, side, Kind.OFFER, answered.state, pol, transaction="t2")
    assert p.iq.streams[0].reuse_association is True
    assert p.finish(IqReply(p.iq.dialog, p.iq.transaction, [])).sdp == p.finish(agw_reply(p.iq)).sdp
