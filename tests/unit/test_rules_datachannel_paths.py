"""WebRTC data channels (TS 23.334 5.20.2.2): the re-offer, answer and refusal paths, ALG side.

What :mod:`test_rules_datachannel` leaves out: core offers with rejected or
removed lines, core re-offers on a kept association, the WIC rejecting a core
offer, the TCP leg's ``a=setup`` both ways (RFC 4145 / RFC 6135), RED
parameters the core chose (RFC 4103), IPv6 addresses in ``c=`` lines and MSRP
URIs (RFC 4975 section 9, RFC 3986 IP-literal), the RFC 8841 value ranges,
stream-id allocation (RFC 8832 section 6), the m-line every refusal names,
the dialog record each path leaves, and a data channel on a BUNDLE transport
(RFC 9143, RFC 8841).  Same fake AGW and golden style as
:mod:`test_rules_datachannel`.
"""

from __future__ import annotations

import pytest

from sdp_rules import DialogState, Kind, SdpPolicyError, Side
from sdp_rules import datachannel
from iq import (
    Command,
    DcMap,
    IqReply,
    IqRequest,
    Role,
    StreamReply,
    StreamSpec,
    TerminationReply,
    TerminationSpec,
)
from sdp_rules.sdp import parse

from tests.unit.test_rules_datachannel import (
    AGW_FP_TEXT,
    CORE_ANSWER,
    CORE_MSRP_OFFER,
    CORE_MSRP_T140_OFFER,
    CORE_T140_OFFER,
    DIALOG,
    WIC_ANSWER,
    WIC_FP_TEXT,
    WIC_OFFER,
    WIC_OFFER_TO_CORE,
    TlsIds,
    agw_reply,
    ch,
    policy,
    run,
    sdp,
    unbundled,
)


def _core_offer(pol, body: str, state: DialogState | None = None):
    return run(body, Side.CORE, Kind.OFFER, state or DialogState(), pol)


def _wic_answer(pol, body: str, state: DialogState):
    return run(body, Side.ACCESS, Kind.ANSWER, state, pol)


def _without(body: str, *prefixes: str) -> str:
    return "".join(line + "\r\n" for line in body.split("\r\n")[:-1] if not line.startswith(prefixes))


def _m(text: str):
    return parse(sdp(f"v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nt=0 0\n{text}")).media[0]


def _media(body: str, index: int) -> str:
    """The text of m-line ``index`` (from its m= line to the next one)."""
    return "m=" + body.split("\r\nm=")[index + 1] + ("" if body.count("\r\nm=") == index + 1 else "\r\n")


# ---------------------------------------------------------------------------
# Which data-channel lines go to the core at all
# ---------------------------------------------------------------------------

@pytest.mark.req("DC-1", "DC-5")
def test_interworkable_only_for_msrp_or_t140_channels_or_a_dcmap_to_refuse():
    """A line with an MSRP or T.140 channel is interworked; DCEP-only or BFCP-only lines are not;
    a malformed dcmap is (the handler then answers 488 naming it)."""
    line = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\nc=IN IP4 192.0.2.1\n"
    assert datachannel.interworkable(_m(line + 'a=dcmap:0 label="x";subprotocol="MSRP"'))
    assert datachannel.interworkable(_m(line + 'a=dcmap:4 subprotocol="bfcp"\na=dcmap:2 subprotocol="t140"'))
    assert not datachannel.interworkable(_m(line + 'a=dcmap:4 label="floor";subprotocol="bfcp"'))
    assert not datachannel.interworkable(_m(line + 'a=dcmap:4 label="no subprotocol"'))
    assert not datachannel.interworkable(_m(line))
    assert datachannel.interworkable(_m(line + "a=dcmap:x label=\"bad\""))
    assert datachannel.interworkable(_m(line + 'a=dcmap:1 subprotocol="msrp"\na=dcsa:7 path:x'))


# ---------------------------------------------------------------------------
# RFC 8841 / RFC 8864 value ranges
# ---------------------------------------------------------------------------

@pytest.mark.req("DC-3")
@pytest.mark.parametrize("lines, expected", [
    (("a=sctp-port:65535",), (65535, 262144)),  # a port number: 0..65535
    (("a=max-message-size:4294967295",), (5000, 4294967295)),  # RFC 8841 6: up to 2^32 - 1
    (("a=sctp-port:5001", "a=sctp-port:5001"), (5001, 262144)),  # the same value twice says one thing
])
def test_sctp_attribute_values_at_the_top_of_their_range_are_accepted(lines, expected):
    body = _without(WIC_OFFER, "a=sctp-port", "a=max-message-size")
    body = body.replace("a=mid:0\r\n", "a=mid:0\r\n" + "".join(line + "\r\n" for line in lines))
    plan, _ = run(body, Side.ACCESS, Kind.OFFER, DialogState(), unbundled())
    access = plan.iq.streams[0].access
    assert (access.remote_sctp_port, access.remote_max_message_size) == (
        expected[0], expected[1] if expected[1] != 262144 else 65536)


@pytest.mark.req("DC-3")
@pytest.mark.parametrize("lines, name", [
    (("a=sctp-port:65536",), "sctp-port"),
    (("a=max-message-size:4294967296",), "max-message-size"),
    (("a=sctp-port:5000", "a=sctp-port:5001"), "sctp-port"),
])
def test_sctp_attribute_values_out_of_range_or_contradicting_are_refused_488(lines, name):
    body = _without(WIC_OFFER, "a=sctp-port", "a=max-message-size")
    body = body.replace("a=mid:0\r\n", "a=mid:0\r\n" + "".join(line + "\r\n" for line in lines))
    with pytest.raises(SdpPolicyError) as info:
        run(body, Side.ACCESS, Kind.OFFER, DialogState(), policy())
    assert info.value.sip_status == 488 and info.value.reason == f"m-line 1: malformed a={name} (RFC 8841)"


@pytest.mark.req("DC-2")
def test_dcmap_edges_of_rfc8864_syntax():
    """RFC 8864 5.1: stream id 65534 is the highest; no options at all is valid; ordered=true;
    a quoted label may hold '='; percent-escapes must decode to UTF-8."""
    assert datachannel.parse_dcmap("65534", "m-line 1") == DcMap(stream_id=65534)
    assert datachannel.parse_dcmap('3 ordered=true', "m-line 1").ordered is True
    assert datachannel.parse_dcmap('3 ordered=false', "m-line 1").ordered is False
    assert datachannel.parse_dcmap('3 label="a=b";subprotocol="msrp"', "m-line 1") == DcMap(
        stream_id=3, label="a=b", subprotocol="msrp")
    with pytest.raises(SdpPolicyError) as info:
        datachannel.parse_dcmap(None, "m-line 2")
    assert info.value.reason == "m-line 2: a=dcmap: has no valid stream id (RFC 8864 5.1)"
    with pytest.raises(SdpPolicyError) as info:
        datachannel.parse_dcmap('3 label="%FF"', "m-line 1")  # not UTF-8 once decoded
    assert info.value.sip_status == 488 and info.value.reason.startswith('m-line 1: malformed a=dcmap:3 label="%FF"')


# ---------------------------------------------------------------------------
# Stream ids the ALG picks for a core offer (RFC 8832 section 6)
# ---------------------------------------------------------------------------

@pytest.mark.req("DC-8")
def test_stream_id_allocation_by_parity_and_exhaustion():
    """The DTLS client uses even ids, the server odd ones; the lowest unused one; 65535 is never used."""
    assert datachannel._pick_stream_id({0, 2}, odd=False) == 4
    assert datachannel._pick_stream_id({1, 5}, odd=True) == 3
    used = set(range(1, 65533, 2))
    assert datachannel._pick_stream_id(used, odd=True) == 65533 and 65533 in used
    with pytest.raises(SdpPolicyError) as info:
        datachannel._pick_stream_id(used, odd=True)
    assert info.value.reason == "no unused SCTP stream id left for a new data channel"
    assert datachannel._pick_stream_id(set(range(0, 65534, 2)), odd=False) == 65534


@pytest.mark.req("DC-8", "DC-4")
def test_core_reoffer_on_an_association_where_the_agw_is_dtls_client_picks_even_ids():
    pol = policy()
    _, offered = _core_offer(pol, CORE_MSRP_OFFER)
    answer = _without(WIC_ANSWER, "a=dcmap:3", "a=dcsa:3").replace("a=setup:active", "a=setup:passive")
    _, answered = _wic_answer(pol, answer, offered.state)
    reoffer = CORE_MSRP_OFFER.replace("2890844527", "2890844528") + sdp("""
        m=text 11000 RTP/AVP 98
        a=rtpmap:98 t140/1000
    """)
    plan, result = _core_offer(pol, reoffer, answered.state)
    assert [s.stream_id for s in plan.iq.streams] == [0, ch(0, 1), ch(0, 0)]
    assert plan.iq.streams[0].access.sctp_stream_ids == [1, 0]
    assert 'a=dcmap:0 label="t140";subprotocol="t140"' in result.sdp and "a=setup:active\r\n" in result.sdp


# ---------------------------------------------------------------------------
# Where each refusal points (the Warning names the m-line)
# ---------------------------------------------------------------------------

def _refused(body: str, origin: Side, kind: Kind, state: DialogState | None = None, pol=None) -> SdpPolicyError:
    with pytest.raises(SdpPolicyError) as info:
        run(body, origin, kind, state or DialogState(), pol or policy())
    assert info.value.sip_status == 488
    return info.value


@pytest.mark.req("DC-2")
@pytest.mark.parametrize("change, reason", [
    (("a=dcsa:0 path:msrp://wic.example.org:52342/9di4eae923wzd;dc", "a=dcsa:0 path:bogus"),
     "m-line 1: MSRP a=path 'bogus' has no msrp URI (RFC 4975)"),
    (("a=dcsa:0 path:msrp://wic.example.org:52342/9di4eae923wzd;dc", "a=dcsa:0 path"),
     "m-line 1: MSRP a=path '' has no msrp URI (RFC 4975)"),
    (("c=IN IP4 192.0.2.20\r\n", ""), "m-line 1: no c= line for the media (RFC 8866 5.7)"),
])
def test_wic_offer_refusals_name_the_line(change, reason):
    assert _refused(WIC_OFFER.replace(*change), Side.ACCESS, Kind.OFFER).reason == reason


@pytest.mark.req("DC-2", "DC-4")
def test_wic_reoffer_changing_the_dtls_role_of_the_kept_association_is_refused():
    """RFC 8842 5.3: same tls-id, setup that makes the AGW server where it was client."""
    pol = unbundled()
    _, offered = run(WIC_OFFER, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    error = _refused(WIC_OFFER.replace("a=setup:actpass", "a=setup:active"), Side.ACCESS, Kind.OFFER,
                     answered.state, pol)
    assert error.reason.startswith("m-line 1: a=setup:active would change the DTLS role")


@pytest.mark.req("DC-8")
@pytest.mark.parametrize("change, reason", [
    (("a=path:msrp://127.0.0.1:7394/jshA7weztas;tcp", "a=path:"),
     "m-line 1: MSRP a=path '' has no msrp URI (RFC 4975)"),
    (("a=path:msrp://127.0.0.1:7394/jshA7weztas;tcp", "a=path:x y"),
     "m-line 1: MSRP a=path 'x y' has no msrp URI (RFC 4975)"),
    (("c=IN IP4 127.0.0.1\r\n", ""), "m-line 1: no c= line for the media (RFC 8866 5.7)"),
])
def test_core_offer_refusals_name_the_line(change, reason):
    assert _refused(CORE_MSRP_OFFER.replace(*change), Side.CORE, Kind.OFFER).reason == reason


@pytest.mark.req("DC-7")
@pytest.mark.parametrize("change, reason", [
    (("a=path:msrp://192.0.2.50:2855/aXfs92kd;tcp", "a=path:none"),
     "core m-line of data channel 0: MSRP a=path 'none' has no msrp URI (RFC 4975)"),
    (("c=IN IP4 192.0.2.50\r\nt=0 0", "t=0 0"), "core m-line of data channel 0: no c= line for the media"),
])
def test_core_answer_refusals_name_the_channel(change, reason):
    pol = unbundled()
    _, offered = run(WIC_OFFER, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    assert _refused(CORE_ANSWER.replace(*change), Side.CORE, Kind.ANSWER, offered.state, pol).reason.startswith(reason)


@pytest.mark.req("DC-9")
@pytest.mark.parametrize("change, reason", [
    (("UDP/DTLS/SCTP webrtc-datachannel", "TCP/DTLS/SCTP webrtc-datachannel"),
     "m-line 1: answer proto TCP/DTLS/SCTP does not match the offer's UDP/DTLS/SCTP"),
    (("UDP/DTLS/SCTP webrtc-datachannel", "UDP/DTLS/SCTP bfcp"),
     "m-line 1: answer proto UDP/DTLS/SCTP does not match the offer's UDP/DTLS/SCTP"),
    ((f"a=fingerprint:{WIC_FP_TEXT}\r\n", ""), "m-line 1: DTLS media without a=fingerprint (RFC 8122)"),
    (("c=IN IP4 192.0.2.20\r\n", ""), "m-line 1: no c= line for the media (RFC 8866 5.7)"),
    (("a=sctp-port:5001", "a=sctp-port:x"), "m-line 1: malformed a=sctp-port (RFC 8841)"),
    (("a=max-message-size:131072", "a=max-message-size:x"), "m-line 1: malformed a=max-message-size (RFC 8841)"),
    (('a=dcmap:3 label="t140"', 'a=dcmap:70000 label="t140"'), "m-line 1: a=dcmap:70000"),
    (("a=dcsa:1 path:msrp://wic.example.org:52342/wic55;dc", "a=dcsa:1 path:wic55"),
     "m-line 1: MSRP a=path 'wic55' has no msrp URI (RFC 4975)"),
])
def test_wic_answer_refusals_name_the_line(change, reason):
    pol = policy()
    _, offered = _core_offer(pol, CORE_MSRP_T140_OFFER)
    body = WIC_ANSWER.replace(*change)
    assert body != WIC_ANSWER
    assert _refused(body, Side.ACCESS, Kind.ANSWER, offered.state, pol).reason.startswith(reason)


@pytest.mark.req("DC-9", "DC-4")
def test_wic_answer_changing_the_dtls_role_of_a_kept_association_is_refused():
    """RFC 8842 5.3: the association the core's re-offer kept has a role; the answer cannot flip it."""
    pol = policy()
    _, offered = _core_offer(pol, CORE_MSRP_T140_OFFER)
    _, answered = _wic_answer(pol, WIC_ANSWER, offered.state)  # active: the AGW is DTLS server
    _, reoffered = _core_offer(pol, CORE_MSRP_T140_OFFER, answered.state)
    error = _refused(WIC_ANSWER.replace("a=setup:active", "a=setup:passive"), Side.ACCESS, Kind.ANSWER,
                     reoffered.state, pol)
    assert error.reason == "m-line 1: a=setup:passive changes the DTLS role of an existing association"


@pytest.mark.req("DC-9")
def test_wic_answer_without_setup_is_passive_and_the_agw_connects():
    """RFC 4145 section 4: an answer without a=setup means passive; the AGW is then DTLS client."""
    pol = policy()
    _, offered = _core_offer(pol, CORE_MSRP_OFFER)
    plan, _ = _wic_answer(pol, _without(WIC_ANSWER, "a=setup"), offered.state)
    access = plan.iq.streams[0].access
    assert (access.tls_role, access.establish_tls, access.establish_sctp) == (Role.CLIENT, True, True)


# ---------------------------------------------------------------------------
# The MSRP TCP leg's a=setup (RFC 4145, RFC 6135)
# ---------------------------------------------------------------------------

@pytest.mark.req("DC-8", "DC-9")
@pytest.mark.parametrize("core_setup, agw_setup, remote_port", [
    ("a=setup:active\r\n", "passive", None),  # the core connects: the AGW listens
    ("a=setup:passive\r\n", "active", 7394),  # the core listens: the AGW connects to its port
    ("", "active", 7394),  # no a=setup: RFC 4975 offerer default is passive, so the AGW connects
])
def test_core_msrp_offer_setup_decides_who_connects(core_setup, agw_setup, remote_port):
    pol = policy()
    body = CORE_MSRP_OFFER.replace("a=setup:actpass\r\n", core_setup)
    plan, offered = _core_offer(pol, body)
    assert (plan.iq.streams[1].core.remote_address, plan.iq.streams[1].core.remote_port) == ("127.0.0.1", remote_port)
    _, answered = _wic_answer(pol, _without(WIC_ANSWER, "a=dcmap:3", "a=dcsa:3"), offered.state)
    assert f"a=setup:{agw_setup}\r\na=connection:new\r\n" in answered.sdp


@pytest.mark.req("DC-7")
@pytest.mark.parametrize("core_setup, remote_port", [
    ("a=setup:passive", 9), ("a=setup:active", None), (None, None), ("a=setup: passive ", 9)])
def test_core_msrp_answer_setup_decides_whether_the_agw_connects(core_setup, remote_port):
    """We offered passive; a core that answers passive anyway listens, so the AGW connects to its port."""
    pol = unbundled()
    _, offered = run(WIC_OFFER, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    answer = CORE_ANSWER.replace("a=setup:active\r\n", core_setup + "\r\n" if core_setup else "")
    plan, _ = run(answer, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert plan.iq.streams[0].core.remote_port == remote_port


# ---------------------------------------------------------------------------
# RED parameters and payload types chosen by the core (RFC 4103)
# ---------------------------------------------------------------------------

CORE_T140_RED_OFFER = sdp("""
    v=0
    o=core 5 1 IN IP4 192.0.2.50
    s=-
    c=IN IP4 192.0.2.50
    t=0 0
    m=text 6000 RTP/AVP 97 96
    a=rtpmap:96 t140/1000
    a=fmtp:96 cps=30
    a=rtpmap:97 red/1000
    a=fmtp:97 96/96
""")


@pytest.mark.req("DC-8", "DC-9")
def test_core_t140_offer_keeps_its_payload_types_and_red_generations_in_the_answer():
    """The answer to the core uses the core's t140 and red payload types and its one redundant generation."""
    pol = policy()
    plan, offered = _core_offer(pol, CORE_T140_RED_OFFER)
    assert plan.iq.streams[1].core.remote_dcsa == [
        "rtpmap:96 t140/1000", "fmtp:96 cps=30", "rtpmap:97 red/1000", "fmtp:97 96/96"]
    answer = _without(WIC_ANSWER, "a=dcmap:3", "a=dcsa:3", "a=dcmap:1", "a=dcsa:1") + \
        'a=dcmap:1 label="t140";subprotocol="t140"\r\na=dcsa:1 fmtp:- cps=20\r\n'
    _, answered = _wic_answer(pol, answer, offered.state)
    assert _media(answered.sdp, 0) == sdp("""
        m=text 30002 RTP/AVP 96 97
        c=IN IP4 198.51.100.10
        a=rtpmap:96 t140/1000
        a=fmtp:96 cps=20
        a=rtpmap:97 red/1000
        a=fmtp:97 96/96
    """)


# ---------------------------------------------------------------------------
# IPv6 (RFC 8866 c=IN IP6, RFC 4975 section 9 / RFC 3986 IP-literal)
# ---------------------------------------------------------------------------

AGW_ACCESS6 = "2001:db8::a"
AGW_CORE6 = "2001:db8::c"


def agw6_reply(request: IqRequest) -> IqReply:
    """The fake AGW of :func:`agw_reply` on IPv6 addresses."""
    reply = agw_reply(request)
    streams = []
    for s in reply.streams:
        access = core = None
        if s.access is not None:
            access = TerminationReply(**{**s.access.__dict__, "local_address": AGW_ACCESS6})
        if s.core is not None:
            core = TerminationReply(**{**s.core.__dict__, "local_address": AGW_CORE6})
        streams.append(StreamReply(s.stream_id, access, core))
    return IqReply(reply.dialog, reply.transaction, streams)


def run6(body: str, origin: Side, kind: Kind, state: DialogState, pol):
    import sdp_rules
    plan = sdp_rules.process(body, origin=origin, kind=kind, state=state, dialog=DIALOG, transaction="t1", policy=pol)
    return plan, plan.finish(agw6_reply(plan.iq) if plan.iq is not None else None)


@pytest.mark.req("DC-5", "DC-7")
def test_ipv6_agw_addresses_in_c_lines_and_msrp_uris_of_a_wic_call():
    pol = unbundled()
    _, offered = run6(WIC_OFFER, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    assert _media(offered.sdp, 0) == sdp(f"""
        m=message 30000 TCP/MSRP *
        c=IN IP6 {AGW_CORE6}
        a=msrp-cema
        a=accept-types:message/cpim text/plain
        a=max-size:65536
        a=path:msrp://[{AGW_CORE6}]:30000/9di4eae923wzd;tcp
        a=setup:passive
        a=connection:new
    """)
    assert f"m=text 30004 RTP/AVP 98 100\r\nc=IN IP6 {AGW_CORE6}\r\n" in offered.sdp
    _, answered = run6(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert f"c=IN IP6 {AGW_ACCESS6}\r\n" in answered.sdp
    assert f"a=dcsa:0 path:msrp://[{AGW_ACCESS6}]:40000/aXfs92kd;dc\r\n" in answered.sdp


@pytest.mark.req("DC-8", "DC-9")
def test_ipv6_agw_addresses_in_c_lines_and_msrp_uris_of_a_core_call():
    pol = policy()
    _, offered = run6(CORE_MSRP_T140_OFFER, Side.CORE, Kind.OFFER, DialogState(), pol)
    assert f"c=IN IP6 {AGW_ACCESS6}\r\n" in offered.sdp
    assert f"a=dcsa:1 path:msrp://[{AGW_ACCESS6}]:40000/core7s1;dc\r\n" in offered.sdp
    _, answered = run6(WIC_ANSWER, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    assert answered.sdp.split("t=0 0\r\n")[1] == sdp(f"""
        m=message 30002 TCP/MSRP *
        c=IN IP6 {AGW_CORE6}
        a=msrp-cema
        a=accept-types:text/plain
        a=path:msrp://[{AGW_CORE6}]:30002/wic55;tcp
        a=setup:passive
        a=connection:new
        m=text 30006 RTP/AVP 98
        c=IN IP6 {AGW_CORE6}
        a=rtpmap:98 t140/1000
        a=fmtp:98 cps=30
    """)


# ---------------------------------------------------------------------------
# AGW replies that lack what was asked: a defect of the AGW (500), never the client's
# ---------------------------------------------------------------------------

@pytest.mark.req("DC-7")
def test_agw_reply_without_max_message_size_gets_the_policy_default():
    pol = policy(default_max_message_size=1200)
    plan = __import__("sdp_rules").process(CORE_MSRP_OFFER, origin=Side.CORE, kind=Kind.OFFER, state=DialogState(),
                                           dialog=DIALOG, transaction="t1", policy=pol)
    reply = agw_reply(plan.iq)
    reply.streams[0].access.local_max_message_size = None
    assert "a=max-message-size:1200\r\n" in plan.finish(reply).sdp


@pytest.mark.parametrize("drop, message", [
    ("sctp_port", "AGW reply lacks the local SCTP port"),
    ("core", f"AGW reply lacks the core termination of stream {ch(0, 1)}"),
])
def test_agw_reply_lacking_what_was_asked_is_an_agw_error(drop, message):
    plan = __import__("sdp_rules").process(CORE_MSRP_OFFER, origin=Side.CORE, kind=Kind.OFFER, state=DialogState(),
                                           dialog=DIALOG, transaction="t1", policy=policy())
    reply = agw_reply(plan.iq)
    if drop == "sctp_port":
        reply.streams[0].access.local_sctp_port = None
    else:
        reply.streams[1] = StreamReply(reply.streams[1].stream_id, reply.streams[1].access, None)
    with pytest.raises(ValueError) as info:
        plan.finish(reply)
    assert str(info.value) == message


# ---------------------------------------------------------------------------
# Core offers with rejected lines, core re-offers, the WIC rejecting (DC-8, DC-9)
# ---------------------------------------------------------------------------

@pytest.mark.req("DC-9")
def test_wic_rejecting_the_core_offer_rejects_every_core_line_and_releases_all():
    pol = policy()
    _, offered = _core_offer(pol, CORE_MSRP_T140_OFFER)
    rejected = _without(WIC_ANSWER, "a=", "c=").replace("m=application 52342", "m=application 0")
    plan, answered = _wic_answer(pol, rejected, offered.state)
    assert plan.iq == IqRequest(Command.MODIFY, DIALOG, "t1", [], [0, ch(0, 1), ch(0, 3)])
    assert answered.sdp.split("t=0 0\r\n")[1] == "m=message 0 TCP/MSRP *\r\nm=text 0 RTP/AVP 98\r\n"
    assert answered.state.data["streams"] == {}


def _core_call(pol):
    """Core MSRP+T.140 offer, WIC answer (active: the AGW is DTLS server)."""
    _, offered = _core_offer(pol, CORE_MSRP_T140_OFFER)
    _, answered = _wic_answer(pol, WIC_ANSWER, offered.state)
    return answered


@pytest.mark.req("DC-8", "DC-4")
def test_core_reoffer_removing_msrp_keeps_t140_and_releases_msrp_once_answered():
    ids = TlsIds()
    pol = policy(new_tls_id=ids)
    answered = _core_call(pol)
    reoffer = CORE_MSRP_T140_OFFER.replace("m=message 2855", "m=message 0").replace("o=core 77 1", "o=core 77 2")
    plan, offered = _core_offer(pol, reoffer, answered.state)
    assert plan.iq == IqRequest(Command.MODIFY, DIALOG, "t1", [
        StreamSpec(stream_id=0, kind="sctp", access=TerminationSpec(
            side=Side.ACCESS, transport="UDP/DTLS/SCTP", tls_role=Role.SERVER, notify_stream_reset=True,
            sctp_stream_ids=[3]),
            local_tls_id=ids.nth(1), remote_tls_id="wicTlsIdwicTlsId0009", reuse_association=True),
        # the kept channel: only its core termination, refreshed from the re-offer
        StreamSpec(stream_id=ch(0, 3), kind="dc_channel", group=0, core=TerminationSpec(
            side=Side.CORE, transport="RTP/AVP", remote_address="192.0.2.50", remote_port=6000,
            remote_rtcp_port=6001, remote_dcsa=["rtpmap:98 t140/1000"])),
    ])
    assert offered.sdp == sdp(f"""
        v=0
        o=core 77 2 IN IP4 192.0.2.50
        s=-
        c=IN IP4 203.0.113.10
        t=0 0
        a=ice-lite
        m=application 40000 UDP/DTLS/SCTP webrtc-datachannel
        a=ice-ufrag:agwu0
        a=ice-pwd:agwpwd0xxxxxxxxxxxxxxxxx
        a=candidate:1 1 udp 2130706431 203.0.113.10 40000 typ host
        a=end-of-candidates
        a=fingerprint:{AGW_FP_TEXT}
        a=setup:passive
        a=tls-id:{ids.nth(1)}
        a=sctp-port:5000
        a=max-message-size:262144
        a=dcmap:3 label="t140";subprotocol="t140"
    """)
    assert ids.count == 1
    # The rejected line keeps its slot (RFC 3264 section 8); the kept association keeps its role and peer.
    assert offered.state.data["map"] == {"0": {"handler": "datachannel", "core": {"ch1.msrp": 0, "ch3.t140": 1}}}
    record = offered.state.data["streams"]["0"]
    assert (record["role"], record["remote_tls_id"], record["remote_ice_ufrag"]) == (
        "server", "wicTlsIdwicTlsId0009", "wicU")
    answer = _without(WIC_ANSWER, "a=dcmap:1", "a=dcsa:1")
    plan, result = _wic_answer(pol, answer, offered.state)
    assert plan.iq.release_streams == [ch(0, 1)]
    assert [s.stream_id for s in plan.iq.streams] == [0, ch(0, 3)]
    assert result.sdp.split("t=0 0\r\n")[1] == sdp("""
        m=message 0 TCP/MSRP *
        m=text 30006 RTP/AVP 98
        c=IN IP4 198.51.100.10
        a=rtpmap:98 t140/1000
        a=fmtp:98 cps=30
    """)
    streams = result.state.data["streams"]
    assert sorted(streams) == ["0", str(ch(0, 3))] and streams["0"]["channels"] == [ch(0, 3)]


@pytest.mark.req("DC-8", "DC-4")
def test_core_reoffer_rejecting_every_line_releases_the_association_once_answered():
    ids = TlsIds()
    pol = policy(new_tls_id=ids)
    answered = _core_call(pol)
    reoffer = CORE_MSRP_T140_OFFER.replace("m=message 2855", "m=message 0").replace("m=text 6000", "m=text 0") \
        .replace("o=core 77 1", "o=core 77 2")
    plan, offered = _core_offer(pol, reoffer, answered.state)
    assert plan.iq is None and ids.count == 1  # no new association, so no new tls-id
    assert offered.sdp.split("t=0 0\r\n")[1] == "m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    plan, result = _wic_answer(pol, sdp("""
        v=0
        o=- 55 3 IN IP4 127.0.0.1
        s=-
        t=0 0
        m=application 0 UDP/DTLS/SCTP webrtc-datachannel
    """), offered.state)
    assert plan.iq == IqRequest(Command.MODIFY, DIALOG, "t1", [], [0, ch(0, 1), ch(0, 3)])
    assert result.sdp.split("t=0 0\r\n")[1] == "m=message 0 TCP/MSRP *\r\nm=text 0 RTP/AVP 98\r\n"
    assert result.state.data["streams"] == {}


@pytest.mark.req("DC-8", "DC-9", "DC-4")
def test_core_reoffer_keeping_msrp_answers_connection_existing_and_the_same_setup():
    """RFC 6135: a kept MSRP channel keeps its TCP connection (a=connection:existing)."""
    pol = policy()
    answered = _core_call(pol)
    _, offered = _core_offer(pol, CORE_MSRP_T140_OFFER.replace("o=core 77 1", "o=core 77 2"), answered.state)
    _, result = _wic_answer(pol, WIC_ANSWER, offered.state)
    assert _media(result.sdp, 0) == sdp("""
        m=message 30002 TCP/MSRP *
        c=IN IP4 198.51.100.10
        a=msrp-cema
        a=accept-types:text/plain
        a=path:msrp://198.51.100.10:30002/wic55;tcp
        a=setup:passive
        a=connection:existing
    """)


@pytest.mark.req("DC-8", "DC-4", "DC-1")
def test_core_reoffer_on_a_tcp_association_keeps_tcp_dtls_sctp():
    """A kept association keeps its transport (DC-1): the core's re-offer goes to the WIC over TCP/DTLS/SCTP."""
    pol = policy()
    body = WIC_OFFER.replace("UDP/DTLS/SCTP", "TCP/DTLS/SCTP")
    _, offered = run(body, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    reoffer = CORE_ANSWER.replace("o=core 1 1", "o=core 1 2").replace("a=setup:active", "a=setup:actpass")
    plan, result = _core_offer(pol, reoffer, answered.state)
    assert [s.access.transport for s in plan.iq.streams if s.access] == ["TCP/DTLS/SCTP"]
    assert "m=application 40000 TCP/DTLS/SCTP webrtc-datachannel\r\n" in result.sdp
    assert " tcptype passive" in result.sdp


# ---------------------------------------------------------------------------
# The dialog record each path leaves (module docstring, "State per stream")
# ---------------------------------------------------------------------------

FP_AGW = {"hash_func": "sha-256", "value": AGW_FP_TEXT.split(" ")[1]}


def _reply(address: str, port: int, rtcp: int | None = None, **extra) -> dict:
    return {"local_address": address, "local_port": port, "local_rtcp_port": rtcp, "local_fingerprint": None,
            "ice_ufrag": None, "ice_pwd": None, "local_sctp_port": None, "local_max_message_size": None, **extra}


def _dcmap(stream_id: int, label: str, sub: str) -> dict:
    return {"stream_id": stream_id, "label": label, "subprotocol": sub, "max_retr": None, "max_time": None,
            "ordered": None, "priority": None}


ACCESS_REPLY = _reply("203.0.113.10", 40000, local_fingerprint=FP_AGW, ice_ufrag="agwu0",
                      ice_pwd="agwpwd0xxxxxxxxxxxxxxxxx", local_sctp_port=5000, local_max_message_size=262144)


@pytest.mark.req("DC-8", "DC-9")
def test_dialog_record_after_a_core_offer_and_the_wic_answer():
    ids = TlsIds()
    pol = policy(new_tls_id=ids)
    _, offered = _core_offer(pol, CORE_MSRP_T140_OFFER)
    msrp = {"kind": "dc_channel", "group": 0, "stream_id": 1, "sub": "msrp", "dcmap": _dcmap(1, "msrp", "msrp"),
            "core_proto": "TCP/MSRP", "core_m": "message 2855 TCP/MSRP *", "core": _reply("198.51.100.10", 30002),
            "local_dcsa": ["msrp-cema", "accept-types:text/plain", "path:msrp://203.0.113.10:40000/core7s1;dc"]}
    t140 = {"kind": "dc_channel", "group": 0, "stream_id": 3, "sub": "t140", "dcmap": _dcmap(3, "t140", "t140"),
            "core_proto": "RTP/AVP", "core_m": "text 6000 RTP/AVP 98", "core": _reply("198.51.100.10", 30006, 30007),
            "local_dcsa": []}
    sctp = {"kind": "sctp", "role": None, "remote_tls_id": None, "remote_fingerprints": None,
            "remote_ice_ufrag": None, "local_tls_id": ids.nth(1), "access_proto": "UDP/DTLS/SCTP",
            "access": ACCESS_REPLY, "answered": False, "channels": [ch(0, 1), ch(0, 3)]}
    assert offered.state.data["streams"] == {str(ch(0, 1)): msrp, str(ch(0, 3)): t140, "0": sctp}
    _, answered = _wic_answer(pol, WIC_ANSWER, offered.state)
    sctp.update({"role": "server", "remote_tls_id": "wicTlsIdwicTlsId0009", "remote_fingerprints": [WIC_FP_TEXT],
                 "remote_ice_ufrag": "wicU", "remote_transport": ["192.0.2.20", 52342], "answered": True})
    assert answered.state.data["streams"] == {str(ch(0, 1)): msrp, str(ch(0, 3)): t140, "0": sctp}


@pytest.mark.req("DC-2", "DC-7")
def test_dialog_record_after_a_wic_offer_and_the_core_answer():
    ids = TlsIds()
    pol = unbundled(new_tls_id=ids)
    _, offered = run(WIC_OFFER, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    msrp = {"kind": "dc_channel", "group": 0, "stream_id": 0, "sub": "msrp", "dcmap": _dcmap(0, "chat", "msrp"),
            "core_proto": "TCP/MSRP", "core_m": "message 30000 TCP/MSRP *", "core": _reply("198.51.100.10", 30000)}
    t140 = {"kind": "dc_channel", "group": 0, "stream_id": 2, "sub": "t140", "dcmap": _dcmap(2, "rtt", "t140"),
            "core_proto": "RTP/AVP", "core_m": "text 30004 RTP/AVP 98 100",
            "core": _reply("198.51.100.10", 30004, 30005)}
    sctp = {"kind": "sctp", "role": "client", "local_tls_id": ids.nth(1), "remote_tls_id": "wicTlsIdwicTlsId0001",
            "remote_fingerprints": [WIC_FP_TEXT], "remote_ice_ufrag": "wicU",
            "remote_transport": ["192.0.2.20", 52342], "access_proto": "UDP/DTLS/SCTP", "access": ACCESS_REPLY,
            "channels": [ch(0, 0), ch(0, 2)]}
    assert offered.state.data["streams"] == {str(ch(0, 0)): msrp, str(ch(0, 2)): t140, "0": sctp}
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert answered.state.data["streams"] == {str(ch(0, 0)): msrp, str(ch(0, 2)): t140, "0": sctp}


@pytest.mark.req("DC-2", "DC-4")
@pytest.mark.parametrize("change, reuse", [
    ((), True),  # same fingerprint, ufrag and setup: the same association (RFC 8842 5.2 without tls-id)
    (("a=ice-ufrag:wicU", "a=ice-ufrag:wicV"), False),  # ICE restart without tls-id: a new one
    (("D6:00:20", "D6:00:21"), False),  # another certificate: a new one
])
def test_wic_reoffer_without_tls_id_is_matched_on_the_stored_fingerprint_and_ufrag(change, reuse):
    pol = unbundled()
    body = _without(WIC_OFFER, "a=tls-id")
    _, offered = run(body, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    plan, _ = run(body.replace(*change) if change else body, Side.ACCESS, Kind.OFFER, answered.state, pol)
    assert plan.iq.streams[0].reuse_association is reuse


@pytest.mark.req("DC-2", "DC-4")
@pytest.mark.parametrize("port, reuse", [(52342, True), (52344, False)])
def test_wic_reoffer_without_tls_id_or_ice_is_matched_on_the_stored_transport(port, reuse):
    """RFC 8842 5.2: without tls-id and ICE, another address or port is a new association."""
    pol = unbundled()
    body = _without(WIC_OFFER, "a=tls-id", "a=ice-", "a=candidate")
    _, offered = run(body, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    plan, _ = run(body.replace("m=application 52342", f"m=application {port}"), Side.ACCESS, Kind.OFFER,
                  answered.state, pol)
    assert plan.iq.streams[0].reuse_association is reuse


@pytest.mark.req("DC-9", "DC-2", "DC-4")
def test_wic_reoffer_after_answering_a_core_offer_without_tls_id_keeps_the_association():
    """The association the WIC's answer set up is matched on what that answer said (fingerprint, ufrag)."""
    pol = unbundled()
    _, offered = _core_offer(pol, CORE_MSRP_OFFER)
    answer = _without(WIC_ANSWER, "a=tls-id", "a=dcmap:3", "a=dcsa:3")
    _, answered = _wic_answer(pol, answer, offered.state)
    reoffer = _without(WIC_OFFER, "a=tls-id").replace("a=setup:actpass", "a=setup:active")
    reoffer = reoffer.replace('a=dcmap:0 label="chat"', 'a=dcmap:1 label="chat"').replace("a=dcsa:0", "a=dcsa:1")
    plan, _ = run(reoffer, Side.ACCESS, Kind.OFFER, answered.state, pol)
    assert plan.iq.streams[0].reuse_association is True
    assert plan.iq.streams[0].access.tls_role is Role.SERVER


# ---------------------------------------------------------------------------
# A data channel on a BUNDLE transport (RFC 9143 section 11, RFC 8841)
# ---------------------------------------------------------------------------

@pytest.mark.req("DC-2", "DC-4")
def test_bundled_data_channel_sctp_stream_rides_the_transport_and_is_kept_on_reoffer():
    """The DTLS association and ICE are the transport's: the sctp stream names the transport and mid and
    asks only the SCTP values; a re-offer on the same association asks only the stream-id list."""
    from sdp_rules.simulated_agw import FINGERPRINT

    from tests.unit.test_rules_bundle import MSRP_ANSWER, PORT, Call, audio, core_answer, offer, transport_attrs

    call = Call()
    wic_offer = offer(audio(transport=transport_attrs(50000)), MSRP_LINE_BUNDLED, group="a d")
    plan, _ = call.offer(wic_offer)
    sctp = next(s for s in plan.iq.streams if s.kind == "sctp")
    assert sctp == StreamSpec(stream_id=1, kind="sctp", access=TerminationSpec(
        side=Side.ACCESS, transport="UDP/DTLS/SCTP", remote_sctp_port=5000, remote_max_message_size=100000,
        local_sctp_port_request=True, local_max_message_size_request=True, establish_sctp=True,
        notify_stream_reset=True, sctp_stream_ids=[0],
    ), reuse_association=False, transport_id=0, mid="d")
    state = call.state.data["streams"]["1"]
    assert (state["transport_id"], state["mid"], state["role"], state["channels"]) == (0, "d", "client", [ch(1, 0)])
    assert (state["remote_tls_id"], state["remote_fingerprints"], state["remote_ice_ufrag"],
            state["remote_transport"]) == ("wicTlsIdAAAAAAAAAAAAAAAA", [BUNDLE_WIC_FP], "uf01", ["192.0.2.10", 50000])
    _, to_wic = call.answer("\r\n".join(core_answer("audio").split("\r\n")[:-1] + MSRP_ANSWER) + "\r\n")
    assert to_wic.split("\r\nm=")[2] == sdp(f"""
        application {PORT} UDP/DTLS/SCTP webrtc-datachannel
        a=mid:d
        a=sctp-port:5000
        a=max-message-size:262144
        a=dcmap:0 label="chat";subprotocol="msrp"
        a=dcsa:0 msrp-cema
        a=dcsa:0 accept-types:message/cpim text/plain
        a=dcsa:0 path:msrp://127.0.0.1:{PORT}/jshA7we;dc
    """)
    assert f"a=fingerprint:{FINGERPRINT}\r\n" in to_wic.split("\r\nm=")[1]
    plan, to_core = call.offer(wic_offer.replace("o=- 7 1", "o=- 7 2"))
    sctp = next(s for s in plan.iq.streams if s.kind == "sctp")
    assert sctp == StreamSpec(stream_id=1, kind="sctp", access=TerminationSpec(
        side=Side.ACCESS, transport="UDP/DTLS/SCTP", notify_stream_reset=True, sctp_stream_ids=[0],
    ), reuse_association=True, transport_id=0, mid="d")
    assert [s.kind for s in plan.iq.streams] == ["srtp", "sctp"]  # the kept channel is not touched
    assert "a=connection:existing\r\n" in to_core


BUNDLE_WIC_FP = "sha-256 " + ":".join(f"{b:02X}" for b in range(0x40, 0x60))
MSRP_LINE_BUNDLED = ["m=application 0 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 192.0.2.10", "a=mid:d",
                     "a=bundle-only", "a=sctp-port:5000", "a=max-message-size:100000",
                     'a=dcmap:0 label="chat";subprotocol="msrp"', "a=dcsa:0 msrp-cema",
                     "a=dcsa:0 accept-types:message/cpim text/plain",
                     "a=dcsa:0 path:msrp://wic.example.com:9/2s93i93idj;dc"]


@pytest.mark.req("DC-2", "DC-4")
def test_data_line_leaving_the_bundle_gets_its_own_association_and_keeps_it():
    """RFC 9143 7.5: a line moved out of the bundle needs its own DTLS association, even under the bundle's
    tls-id; the next re-offer with the same tls-id keeps that one (the record no longer names the transport)."""
    from tests.unit.test_rules_bundle import MSRP_ANSWER, Call, audio, core_answer, offer, transport_attrs

    call = Call()
    call.offer(offer(audio(transport=transport_attrs(50000)), MSRP_LINE_BUNDLED, group="a d"))
    answer = "\r\n".join(core_answer("audio").split("\r\n")[:-1] + MSRP_ANSWER) + "\r\n"
    call.answer(answer)
    own = [line.replace("m=application 0", "m=application 50020") for line in MSRP_LINE_BUNDLED
           if line != "a=bundle-only"] + transport_attrs(50020, ufrag="uf03")
    moved = offer(audio(transport=transport_attrs(50000)), own, group="a", version=2)
    plan, _ = call.offer(moved)
    assert [(s.stream_id, s.kind, s.transport_id, s.reuse_association) for s in plan.iq.streams] == [
        (0, "srtp", 0, False), (1, "sctp", None, False), (ch(1, 0), "dc_channel", None, False)]
    call.answer(answer.replace("o=core 1 1", "o=core 1 2"))
    assert "transport_id" not in call.state.data["streams"]["1"] and "mid" not in call.state.data["streams"]["1"]
    plan, _ = call.offer(moved.replace("o=- 7 2", "o=- 7 3"))
    assert [(s.stream_id, s.kind, s.transport_id, s.reuse_association) for s in plan.iq.streams] == [
        (0, "srtp", 0, False), (1, "sctp", None, True)]


@pytest.mark.req("DC-8", "DC-4")
def test_core_reoffer_putting_t140_where_msrp_was_opens_a_new_channel():
    """RFC 3264 section 8 / RFC 8832: another subprotocol on the line is another channel (new odd id),
    never the old MSRP stream id reused for T.140."""
    pol = policy()
    answered = _core_call(pol)
    reoffer = CORE_MSRP_T140_OFFER.replace("o=core 77 1", "o=core 77 2").replace(
        "m=message 2855 TCP/MSRP *\r\na=accept-types:text/plain\r\na=path:msrp://192.0.2.50:2855/core7s1;tcp\r\n"
        "a=setup:active\r\n", "m=text 6002 RTP/AVP 99\r\na=rtpmap:99 t140/1000\r\n")
    plan, offered = _core_offer(pol, reoffer, answered.state)
    assert [s.stream_id for s in plan.iq.streams] == [0, ch(0, 5), ch(0, 3)]
    assert plan.iq.streams[0].access.sctp_stream_ids == [5, 3]
    assert plan.iq.streams[1].access.dcmap == DcMap(stream_id=5, label="t140", subprotocol="t140")
    assert offered.state.data["map"]["0"]["core"] == {"ch5.t140": 0, "ch3.t140": 1}


@pytest.mark.req("DC-8", "DC-9")
def test_agw_reply_leaving_out_a_kept_channels_core_termination_keeps_the_stored_one():
    """A MODIFY that keeps a channel: an AGW that answers without its core termination leaves the
    stored one valid (the core keeps being answered on the same port)."""
    import sdp_rules

    pol = policy()
    answered = _core_call(pol)
    plan = sdp_rules.process(CORE_MSRP_T140_OFFER.replace("o=core 77 1", "o=core 77 2"), origin=Side.CORE,
                             kind=Kind.OFFER, state=answered.state, dialog=DIALOG, transaction="t2", policy=pol)
    reply = agw_reply(plan.iq)
    reply.streams = [StreamReply(s.stream_id, s.access, None if s.stream_id == ch(0, 3) else s.core)
                     for s in reply.streams]
    offered = plan.finish(reply)
    _, result = _wic_answer(pol, WIC_ANSWER, offered.state)
    assert "m=text 30006 RTP/AVP 98\r\n" in result.sdp


@pytest.mark.req("DC-3", "DC-7", "DC-8")
def test_max_message_size_is_the_agws_when_it_gives_one_else_the_policy_default():
    """RFC 8841 6: the AGW's own max-message-size is announced; the policy default only stands in for it."""
    import sdp_rules

    pol = unbundled(default_max_message_size=1200)
    _, offered = _core_offer(pol, CORE_MSRP_OFFER)
    assert "a=max-message-size:262144\r\n" in offered.sdp
    plan = sdp_rules.process(WIC_OFFER, origin=Side.ACCESS, kind=Kind.OFFER, state=DialogState(), dialog=DIALOG,
                             transaction="t1", policy=pol)
    reply = agw_reply(plan.iq)
    reply.streams[0].access.local_max_message_size = None
    offered = plan.finish(reply)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert "a=max-message-size:1200\r\n" in answered.sdp


@pytest.mark.req("DC-5")
def test_t140_core_line_names_an_rtcp_port_that_is_not_rtp_plus_one():
    """RFC 3605: when the AGW's RTCP port is not RTP+1, the T.140 line toward the core says a=rtcp."""
    import sdp_rules

    plan = sdp_rules.process(WIC_OFFER, origin=Side.ACCESS, kind=Kind.OFFER, state=DialogState(), dialog=DIALOG,
                             transaction="t1", policy=unbundled())
    reply = agw_reply(plan.iq)
    reply.streams[2].core.local_rtcp_port = 31111
    out = plan.finish(reply).sdp
    assert _media(out, 1) == sdp("""
        m=text 30004 RTP/AVP 98 100
        c=IN IP4 198.51.100.10
        a=rtpmap:98 t140/1000
        a=fmtp:98 cps=30
        a=rtpmap:100 red/1000
        a=fmtp:100 98/98/98
        a=hlang-send:de
        a=rtcp:31111
    """)


@pytest.mark.req("DC-8")
def test_core_t140_over_avpf_passes_only_its_rtpmap_and_fmtp_to_the_agw():
    """RFC 4585 lines (a=rtcp-fb) are no T.140 interworking attribute; the AVPF profile is kept."""
    body = CORE_T140_OFFER.replace("RTP/AVP 98 100", "RTP/AVPF 98 100") + "a=rtcp-fb:98 nack\r\n"
    plan, offered = _core_offer(policy(), body)
    core = plan.iq.streams[1].core
    assert (core.transport, core.remote_dcsa) == (
        "RTP/AVPF", ["rtpmap:98 t140/1000", "fmtp:98 cps=30", "rtpmap:100 red/1000", "fmtp:100 98/98/98"])
    assert 'a=dcmap:1 label="t140";subprotocol="t140"' in offered.sdp


@pytest.mark.req("DC-8")
def test_core_msrp_cema_is_written_once_toward_access():
    """RFC 8873 endpoints use CEMA: msrp-cema is always in the dcsa, once even when the core says it too."""
    body = CORE_MSRP_OFFER.replace("a=sendrecv\r\n", "a=msrp-cema\r\na=sendrecv\r\n")
    _, offered = _core_offer(policy(), body)
    assert offered.sdp.count("a=dcsa:1 msrp-cema\r\n") == 1
    assert offered.sdp.endswith("a=dcsa:1 msrp-cema\r\na=dcsa:1 accept-types:message/cpim text/plain\r\n"
                                "a=dcsa:1 path:msrp://203.0.113.10:40000/jshA7weztas;dc\r\na=dcsa:1 sendrecv\r\n")


@pytest.mark.req("DC-5", "DC-6")
def test_transport_and_rtp_attributes_in_a_wics_dcsa_are_not_forwarded_but_the_rest_is():
    """5.20.2.2: a dcsa carries the subprotocol's attributes; a transport attribute (a=setup) or an
    rtpmap/fmtp the ALG writes itself is not copied, the attributes after it are."""
    body = WIC_OFFER.replace("a=dcsa:0 msrp-cema\r\n", "a=dcsa:0 setup:actpass\r\na=dcsa:0 msrp-cema\r\n").replace(
        "a=dcsa:2 fmtp:- cps=30\r\n", "a=dcsa:2 rtpmap:98 t140/1000\r\na=dcsa:2 fmtp:98 cps=99\r\n"
        "a=dcsa:2 fmtp:- cps=30\r\n")
    _, offered = run(body, Side.ACCESS, Kind.OFFER, DialogState(), unbundled())
    assert offered.sdp == WIC_OFFER_TO_CORE


@pytest.mark.req("DC-4", "DC-7")
def test_reoffer_rejecting_the_data_line_but_keeping_its_dcmaps_is_still_a_rejection():
    """RFC 3264 section 8.2: port 0 rejects the line whatever attributes it still carries."""
    pol = unbundled()
    _, offered = run(WIC_OFFER, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    body = WIC_OFFER.replace("m=application 52342", "m=application 0").replace("o=- 7046312839584755208 2",
                                                                               "o=- 7046312839584755208 3")
    plan, result = run(body, Side.ACCESS, Kind.OFFER, answered.state, pol)
    assert plan.iq is None
    assert result.sdp.endswith("\r\nm=message 0 TCP/MSRP *\r\nm=text 0 RTP/AVP 98 100\r\n")
    plan, _ = run(CORE_ANSWER.replace("m=message 9", "m=message 0").replace("m=text 6000", "m=text 0"),
                  Side.CORE, Kind.ANSWER, result.state, pol)
    assert plan.iq.release_streams == [0, ch(0, 0), ch(0, 2)]


@pytest.mark.req("DC-8", "DC-9")
def test_core_reoffer_of_lines_the_wic_rejected_releases_nothing_more():
    """Once the WIC rejected the data line, nothing of it is left at the AGW: a core re-offer that keeps
    the lines rejected and the WIC's rejection again ask the AGW nothing."""
    pol = policy()
    _, offered = _core_offer(pol, CORE_MSRP_T140_OFFER)
    rejected = _without(WIC_ANSWER, "a=", "c=").replace("m=application 52342", "m=application 0")
    _, answered = _wic_answer(pol, rejected, offered.state)
    reoffer = CORE_MSRP_T140_OFFER.replace("m=message 2855", "m=message 0").replace("m=text 6000", "m=text 0") \
        .replace("o=core 77 1", "o=core 77 2")
    plan, reoffered = _core_offer(pol, reoffer, answered.state)
    assert plan.iq is None
    plan, result = _wic_answer(pol, rejected.replace("o=- 55 2", "o=- 55 3"), reoffered.state)
    assert plan.iq is None
    assert result.sdp.split("t=0 0\r\n")[1] == "m=message 0 TCP/MSRP *\r\nm=text 0 RTP/AVP 98\r\n"
    assert result.state.data["streams"] == {}


@pytest.mark.req("DC-2", "DC-3")
def test_data_line_tagged_in_the_bundle_carries_the_transport_and_a_new_tls_id_is_a_new_sctp_association():
    """RFC 9143 7.3.1: the answerer-tagged line (here the data line, first in the group) carries the
    transport's ICE and DTLS attributes; RFC 8842 5: a new tls-id on the bundle is a new DTLS association,
    so SCTP starts over on it (RFC 8841 10.1) although the transport stays."""
    from tests.unit.test_rules_bundle import MSRP_ANSWER, TLS_B, Call, audio, core_answer, offer, transport_attrs

    call = Call()
    data = [line for line in MSRP_LINE_BUNDLED if line != "a=bundle-only"] + transport_attrs(50000)
    data[0] = "m=application 50000 UDP/DTLS/SCTP webrtc-datachannel"
    wic_offer = offer(data, audio(port=0) + ["a=bundle-only"], group="d a")
    plan, _ = call.offer(wic_offer)
    # The association before its channels: the AGW builds the SCTP stream the channels name.
    assert [(s.stream_id, s.kind) for s in plan.iq.streams] == [(0, "sctp"), (ch(0, 0), "dc_channel"), (1, "srtp")]
    answer = "\r\n".join(core_answer().split("\r\n")[:-1] + MSRP_ANSWER + [
        "m=audio 6002 RTP/AVPF 111", "a=rtpmap:111 opus/48000/2", "a=sendrecv"]) + "\r\n"
    _, to_wic = call.answer(answer)
    data_out = to_wic.split("\r\nm=")[1].split("\r\n")
    assert data_out[:2] == ["application 30000 UDP/DTLS/SCTP webrtc-datachannel", "a=mid:d"]
    assert {"a=ice-ufrag:e2aeSimUfrag", "a=setup:active", "a=tls-id:e2aeTlsId00000000001",
            "a=candidate:1 1 udp 2130706431 127.0.0.1 30000 typ host"} <= set(data_out)
    assert data_out[-5:] == ["a=max-message-size:262144", 'a=dcmap:0 label="chat";subprotocol="msrp"',
                             "a=dcsa:0 msrp-cema", "a=dcsa:0 accept-types:message/cpim text/plain",
                             "a=dcsa:0 path:msrp://127.0.0.1:30000/jshA7we;dc"]
    plan, _ = call.offer(wic_offer.replace("wicTlsIdAAAAAAAAAAAAAAAA", TLS_B).replace("o=- 7 1", "o=- 7 2"))
    sctp = plan.iq.streams[0]
    assert (sctp.kind, sctp.reuse_association, sctp.transport_id) == ("sctp", False, 0)
    assert (sctp.access.establish_sctp, sctp.access.local_sctp_port_request) == (True, True)
    assert [s.kind for s in plan.iq.streams] == ["sctp", "dc_channel", "srtp"]  # every channel bound anew


@pytest.mark.req("DC-5", "DC-8")
def test_t140_fmtp_parameters_with_spaces_cross_both_ways_intact():
    """RFC 8865 / RFC 4566: the format parameters are everything after the first space."""
    pol = policy()
    body = CORE_MSRP_T140_OFFER.replace("a=rtpmap:98 t140/1000\r\n",
                                        "a=rtpmap:98 t140/1000\r\na=fmtp:98 cps=30; x=1\r\n")
    _, offered = _core_offer(pol, body)
    assert "a=dcsa:3 fmtp:- cps=30; x=1\r\n" in offered.sdp
    answer = WIC_ANSWER.replace("a=dcsa:3 fmtp:- cps=30", "a=dcsa:3 fmtp:- cps=20; y=2")
    _, answered = _wic_answer(pol, answer, offered.state)
    assert answered.sdp.endswith("a=rtpmap:98 t140/1000\r\na=fmtp:98 cps=20; y=2\r\n")
