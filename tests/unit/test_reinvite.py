"""The edge's own re-INVITE (plugin.reinvite): the request from the dialog module's view,
the moved offer, what a reply means."""

from __future__ import annotations

import pytest

from plugin.reinvite import (ATTEMPTS, alias_uri, alias_value, back_to_callee, CSEQ_REFRESH_HEADER, DialogView, Leg, Outcome,
                             Party, Pending, ReinviteError, build, moved_offer, outcome, refresh_value, route_uris,
                             toward_caller, moved_access_offer, RenewedTransport, answer_specs, check_answer)

CALLER = Leg(uri="sip:wic@192.0.2.10:5062", tag="wic1", cseq=1, contact="sip:wic@192.0.2.10:5062",
             route_set="", socket="udp:127.0.0.1:5060")
CALLEE = Leg(uri="sip:callee@ims.example", tag="core1", cseq=1, contact="sip:core@198.51.100.7:5060;transport=udp",
             route_set="<sip:pcscf.ims.example;lr>, <sip:scscf.ims.example;lr>", socket="udp:127.0.0.2:5060")
VIEW = DialogView("abc@192.0.2.10", CALLER, CALLEE)

OFFER = ("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
         "m=audio 27828 RTP/AVPF 0 126\r\nc=IN IP4 127.0.0.2\r\na=rtcp:27829 IN IP4 127.0.0.2\r\na=mid:0\r\n"
         "a=rtpmap:0 PCMU/8000\r\na=x-unknown:kept\r\n"
         "m=video 0 RTP/AVPF 96\r\nc=IN IP4 127.0.0.2\r\n"
         "m=text 27900 RTP/AVP 98\r\nc=IN IP4 127.0.0.2\r\na=rtpmap:98 t140/1000\r\n")


def _headers(request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in request.headers.split("\r\n"):
        if line:
            name, _, value = line.partition(": ")
            out.setdefault(name, []).append(value)
    return out


def test_a_reinvite_to_the_callee_speaks_as_the_caller_inside_the_dialog():
    request = build(VIEW, Party.CALLEE, OFFER)
    h = _headers(request)
    assert h["From"] == ["<sip:wic@192.0.2.10:5062>;tag=wic1"]
    assert h["To"] == ["<sip:callee@ims.example>;tag=core1"]
    assert h["Call-ID"] == ["abc@192.0.2.10"]
    assert h["CSeq"] == ["2 INVITE"]  # RFC 3261 12.2.1.1: above the caller's last
    assert h["Contact"] == ["<sip:wic@192.0.2.10:5062>"]  # the caller's: no target refresh
    assert h["Route"] == ["<sip:pcscf.ims.example;lr>", "<sip:scscf.ims.example;lr>"]
    # No dialog-module cookie on the edge's own request: tm must match its reply by branch.
    assert CSEQ_REFRESH_HEADER not in h
    assert request.ruri == CALLEE.contact and request.nexthop == "sip:pcscf.ims.example;lr"
    assert request.socket == "udp:127.0.0.2:5060" and request.body == OFFER
    assert (request.cseq, request.cseq_diff) == (2, 1)


def test_a_second_reinvite_counts_the_first_one():
    request = build(DialogView(VIEW.call_id, Leg(**{**CALLER.__dict__, "cseq": 5}), CALLEE, cseq_diff=1),
                    Party.CALLEE, OFFER)
    assert (request.cseq, request.cseq_diff) == (7, 2)  # the callee saw the caller's 5 as 6


def test_without_a_route_set_the_request_goes_to_the_contact():
    request = build(DialogView(VIEW.call_id, CALLER, Leg(**{**CALLEE.__dict__, "route_set": ""})), Party.CALLEE, OFFER)
    assert request.nexthop == "" and "Route" not in _headers(request)


@pytest.mark.parametrize("view, why", [
    (DialogView(VIEW.call_id, CALLER, Leg(**{**CALLEE.__dict__, "tag": ""})), "not confirmed"),
    (DialogView(VIEW.call_id, CALLER, Leg(**{**CALLEE.__dict__, "route_set": "<sip:strict.example>"})), "strict"),
], ids=["unconfirmed", "strict-router"])
def test_what_cannot_be_sent_is_refused_with_a_reason(view, why):
    with pytest.raises(ReinviteError, match=why):
        build(view, Party.CALLEE, OFFER)


def test_the_moved_offer_changes_addresses_ports_and_version_only():
    out = moved_offer(OFFER, "203.0.113.9", [30000, 30010])
    expected = (OFFER.replace("127.0.0.2", "203.0.113.9").replace("m=audio 27828", "m=audio 30000")
                .replace("a=rtcp:27829", "a=rtcp:30001").replace("m=text 27900", "m=text 30010")
                .replace("4611731400430051336 2 IN", "4611731400430051336 3 IN"))
    assert out == expected  # the rejected video stays at port 0; unknown attributes kept


def test_the_moved_offer_needs_one_port_per_live_m_line():
    with pytest.raises(ReinviteError):
        moved_offer(OFFER, "203.0.113.9", [30000])


def test_ipv6_addresses_get_ip6_connection_lines():
    out = moved_offer(OFFER, "2001:db8::9", [30000, 30010])
    assert "c=IN IP6 2001:db8::9" in out and "a=rtcp:30001 IN IP6 2001:db8::9" in out


@pytest.mark.parametrize("status, attempts, want", [
    (100, 1, None), (180, 1, None), (200, 1, Outcome.ANSWERED), (491, 1, Outcome.RETRY),
    (491, ATTEMPTS, Outcome.FAILED), (488, 1, Outcome.FAILED), (408, 1, Outcome.FAILED), (500, 1, Outcome.FAILED),
])
def test_what_a_reply_means(status, attempts, want):
    assert outcome(status, attempts) is want


def test_pending_round_trips():
    pending = Pending("abc", "wic1", "core1", Party.CALLEE, "d1", 2, OFFER, 1700000000.5, 1, 0.0)
    assert Pending.from_value(pending.to_value()) == pending
    assert pending.key == "abc\t2"


def test_the_callers_later_cseqs_are_raised_by_the_diff():
    assert refresh_value(2, 1) == 3 and refresh_value(7, 0) == 7


def test_the_contact_keeps_the_alias_the_callee_got():
    caller = Leg(**{**CALLER.__dict__, "alias": alias_value("192.0.2.10", 5062, "udp")})
    h = _headers(build(DialogView(VIEW.call_id, caller, CALLEE), Party.CALLEE, OFFER))
    assert h["Contact"] == ["<sip:wic@192.0.2.10:5062;alias=192.0.2.10~5062~1>"]
    assert alias_value("2001:db8::1", 443, "WSS") == "[2001:db8::1]~443~6"


def test_route_uris():
    assert route_uris("<sip:a;lr>, <sip:b;lr;ftag=x>") == ["sip:a;lr", "sip:b;lr;ftag=x"]
    assert route_uris("") == []


# The WIC of a WIC-originated call, over WebSocket: its Contact names no address, the alias does.
WS_CALLER = Leg(uri="sip:alice@example.org", tag="wic1", cseq=3, contact="sip:k3j2@df7jal23ls0d.invalid;transport=ws",
                route_set="", socket="tcp:127.0.0.1:8080", alias=alias_value("192.0.2.10", 51000, "ws"))
CORE_CALLEE = Leg(uri="sip:bob@ims.example", tag="core1", cseq=7, contact="sip:bob@198.51.100.7:5060",
                  route_set="<sip:pcscf.ims.example;lr>", socket="udp:127.0.0.2:5060")


def test_a_reinvite_to_the_caller_speaks_as_the_callee_in_the_callees_cseq_space():
    request = build(DialogView("abc", WS_CALLER, CORE_CALLEE, cseq_diff=1), Party.CALLER, OFFER)
    h = _headers(request)
    assert h["From"] == ["<sip:bob@ims.example>;tag=core1"]  # From/To swapped (RFC 3261 12.2.1.1)
    assert h["To"] == ["<sip:alice@example.org>;tag=wic1"]
    assert h["CSeq"] == ["8 INVITE"]  # above the core's last 7; the caller's own diff does not count
    assert h["Contact"] == ["<sip:bob@198.51.100.7:5060>"]  # the callee's: no target refresh
    assert "Route" not in h
    assert request.ruri == WS_CALLER.contact  # the remote target, as the WIC gave it
    assert request.nexthop == "sip:192.0.2.10:51000;transport=ws"  # its flow, from the alias
    assert request.socket == "tcp:127.0.0.1:8080"
    # Every later number of the core, even a first one of 0 (RFC 3261 8.1.1.5), lands above 8.
    assert (request.cseq, request.cseq_diff, request.toward) == (8, 9, Party.CALLER)
    assert toward_caller(0, request.cseq_diff) > request.cseq


def test_a_second_reinvite_to_the_caller_counts_the_first():
    request = build(DialogView("abc", WS_CALLER, CORE_CALLEE, callee_diff=9), Party.CALLER, OFFER)
    assert (request.cseq, request.cseq_diff) == (17, 18)  # above the core's 7 as the WIC saw it (16)


def test_the_callees_later_requests_are_raised_and_their_replies_put_back():
    # The edge's re-INVITE took the number 8 in the core's space: the core's own 8 reaches the WIC as 17.
    assert toward_caller(8, 9) == 17
    assert back_to_callee(17, 9, base=8) == 8
    assert back_to_callee(8, 9, base=8) is None  # the edge's own number (its reply is tm's)
    assert back_to_callee(7, 9, base=8) is None  # relayed before the re-INVITE: never raised
    assert back_to_callee(12, 0, base=0) is None  # nothing raised in this dialog


@pytest.mark.parametrize("alias, uri", [
    ("192.0.2.10~5060~1", "sip:192.0.2.10:5060"),
    ("192.0.2.10~443~6", "sip:192.0.2.10:443;transport=ws"),  # Kamailio's name for WSS too
    ("[2001:db8::1]~8080~5", "sip:[2001:db8::1]:8080;transport=ws"),
])
def test_an_alias_names_the_address_to_send_to(alias, uri):
    assert alias_uri(alias) == uri


@pytest.mark.parametrize("alias", ["192.0.2.10~5060~9", "192.0.2.10~x~1", "~5060~1", "nothing"])
def test_an_alias_that_names_no_address_is_refused(alias):
    with pytest.raises(ReinviteError):
        alias_uri(alias)


# What the edge answered the WIC (BUNDLE, the transport's attributes in the tagged m-line).
TO_WIC = ("v=0\r\no=- 77 2 IN IP4 127.0.0.11\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=ice-lite\r\n"
          "a=msid-semantic: WMS x\r\n"
          "m=audio 20000 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 127.0.0.11\r\na=mid:0\r\na=rtpmap:0 PCMU/8000\r\n"
          "a=rtcp-mux\r\na=ice-ufrag:OLDU\r\na=ice-pwd:oldpasswordoldpassword\r\n"
          "a=candidate:1 1 udp 2130706431 127.0.0.11 20000 typ host\r\na=end-of-candidates\r\n"
          "a=fingerprint:sha-256 " + ":".join(["AA"] * 32) + "\r\na=setup:passive\r\na=tls-id:old\r\na=sendrecv\r\n"
          "m=video 20000 UDP/TLS/RTP/SAVPF 97\r\nc=IN IP4 127.0.0.11\r\na=mid:1\r\na=rtpmap:97 VP8/90000\r\n"
          "a=rtcp-mux\r\na=sendrecv\r\n"
          "m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 127.0.0.11\r\na=mid:2\r\n")
NEW_FP = "sha-256 " + ":".join(["BB"] * 32)
RENEWED = RenewedTransport(("0", "1"), "0", 21000, "NEWU", "newpasswordnewpassword", "fresh")


def test_the_access_offer_names_the_new_transport_credentials_and_certificate_as_actpass():
    from sdp_rules.sdp import parse

    out = parse(moved_access_offer(TO_WIC, "127.0.0.12", NEW_FP, [RENEWED]))
    assert out.session.lines_of("o")[0].value == "- 77 3 IN IP4 127.0.0.11"
    assert out.session.attributes("group") == ["BUNDLE 0 1"] and out.session.has_attribute("ice-lite")
    audio, video, data = out.media
    assert (audio.port, video.port, data.port) == (21000, 21000, 0)  # RFC 8843 7.5.1: one address:port
    assert audio.connection.address == video.connection.address == "127.0.0.12"
    assert audio.attributes("ice-ufrag") == ["NEWU"] and audio.attributes("ice-pwd") == ["newpasswordnewpassword"]
    assert audio.attributes("candidate") == [f"1 1 udp {(126 << 24) | (65535 << 8) | 255} 127.0.0.12 21000 typ host"]
    assert audio.attributes("fingerprint") == [NEW_FP]
    assert audio.attributes("setup") == ["actpass"] and audio.attributes("tls-id") == ["fresh"]
    assert audio.has_attribute("rtcp-mux") and audio.has_attribute("end-of-candidates")
    assert audio.attributes("rtpmap") == ["0 PCMU/8000"] and audio.has_attribute("sendrecv")  # the rest kept
    assert not video.has_attribute("ice-ufrag") and video.attributes("rtpmap") == ["97 VP8/90000"]


@pytest.mark.parametrize("transports, why", [
    ([RenewedTransport(("0",), "0", 21000, "u", "p", "t")], "m-line 1"),
    ([RenewedTransport(("0", "1"), "9", 21000, "u", "p", "t")], "tagged"),
], ids=["an-m-line-of-its-own", "no-tagged-m-line"])
def test_an_access_offer_that_cannot_be_written_is_refused(transports, why):
    with pytest.raises(ReinviteError, match=why):
        moved_access_offer(TO_WIC, "127.0.0.12", NEW_FP, transports)


def test_a_bad_fingerprint_is_refused():
    with pytest.raises(ReinviteError, match="fingerprint"):
        moved_access_offer(TO_WIC, "127.0.0.12", "sha-256 nothex", [RENEWED])


WIC_FP = "sha-256 " + ":".join(["CC"] * 32)


def _answer(setup: str) -> str:
    return ("v=0\r\no=- 9 3 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
            "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 127.0.0.1\r\na=mid:0\r\na=ice-ufrag:wicR\r\n"
            "a=ice-pwd:wicpasswordwicpassword\r\na=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n"
            f"a=fingerprint:{WIC_FP}\r\na=setup:{setup}\r\na=rtcp-mux\r\n"
            "m=video 9 UDP/TLS/RTP/SAVPF 97\r\nc=IN IP4 127.0.0.1\r\na=mid:1\r\n")


@pytest.mark.parametrize("setup, role", [("active", "server"), ("passive", "client")])
def test_the_wics_answer_becomes_the_modify_of_the_renewed_transport(setup, role):
    from iq import Role

    state = {"1": {"mids": ["0", "1"], "tag": "0", "local_tls_id": "fresh", "mid_ext": 4, "answered": False}}
    (spec,) = answer_specs(_answer(setup), state)
    assert spec.transport_id == 1 and spec.tls_role is Role(role) and spec.establish_tls is (role == "client")
    assert (spec.remote_ice_ufrag, spec.remote_ice_pwd) == ("wicR", "wicpasswordwicpassword")
    assert [str(f) for f in spec.remote_fingerprints] == [WIC_FP] and spec.reuse_association
    assert (spec.local_tls_id, spec.mid_extension_id) == ("fresh", 4)
    assert state["1"]["answered"] is True and state["1"]["role"] == role


def test_an_answer_that_rejects_the_transport_is_refused():
    state = {"1": {"mids": ["0"], "tag": "0"}}
    with pytest.raises(ReinviteError):
        answer_specs(_answer("active").replace("m=audio 9", "m=audio 0"), state)


CORE_ANSWER = ("v=0\r\no=core 1 2 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
               "m=audio 40000 RTP/AVPF 0\r\na=rtpmap:0 PCMU/8000\r\nm=video 0 RTP/AVPF 96\r\n"
               "m=text 40002 RTP/AVP 98\r\na=rtpmap:98 t140/1000\r\n")
RE_OFFER = moved_access_offer(TO_WIC, "127.0.0.12", NEW_FP, [RENEWED])
WIC_ANSWER = _answer("active") + "m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 127.0.0.1\r\n"


def test_usable_answers_to_the_edges_reoffers_pass():
    check_answer(moved_offer(OFFER, "127.0.0.9", [30000, 30002]), CORE_ANSWER)
    check_answer(RE_OFFER, WIC_ANSWER)
    # RFC 9143 7.3.1: the answerer may give the other bundled m-lines port 0 with a=bundle-only.
    check_answer(RE_OFFER, WIC_ANSWER.replace("m=video 9 ", "m=video 0 ").replace("a=mid:1\r\n",
                                                                                   "a=mid:1\r\na=bundle-only\r\n"))


@pytest.mark.parametrize("answer, why", [
    ("", "not a usable SDP"),
    ("v=0\r\no=core 1 2 IN IP4 127.0.0.3\r\nm=audio x RTP/AVP 0\r\n", "not a usable SDP"),
    (CORE_ANSWER.split("m=text")[0], "2 m-line"),
    (CORE_ANSWER.replace("m=text 40002 RTP/AVP 98", "m=audio 40002 RTP/AVP 98"), "m-line 2 is audio"),
    (CORE_ANSWER.replace("m=audio 40000", "m=audio 0"), "rejects m-line 0"),
    (CORE_ANSWER.replace("t=0 0\r\n", "t=0 0\r\na=group:BUNDLE 0\r\n"), "BUNDLE"),
], ids=["empty", "malformed", "an-m-line-dropped", "another-media", "a-stream-rejected", "a-bundle-added"])
def test_an_unusable_answer_from_the_core_is_refused(answer, why):
    with pytest.raises(ReinviteError, match=why):
        check_answer(moved_offer(OFFER, "127.0.0.9", [30000, 30002]), answer)


@pytest.mark.parametrize("change, why", [
    (lambda a: a.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0"), "BUNDLE"),
    (lambda a: a.replace("a=group:BUNDLE 0 1\r\n", ""), "BUNDLE"),
    (lambda a: a.replace("m=video 9 ", "m=video 0 "), "rejects m-line 1"),
    (lambda a: a.split("m=application")[0], "2 m-line"),
], ids=["an-m-line-out-of-the-group", "no-group", "a-bundled-m-line-rejected", "an-m-line-dropped"])
def test_an_unusable_answer_from_the_wic_is_refused(change, why):
    with pytest.raises(ReinviteError, match=why):
        check_answer(RE_OFFER, change(WIC_ANSWER))
