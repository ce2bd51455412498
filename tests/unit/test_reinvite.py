"""The edge's own re-INVITE (plugin.reinvite): the request from the dialog module's view,
the moved offer, what a reply means."""

from __future__ import annotations

import pytest

from plugin.reinvite import (ATTEMPTS, alias_value, CSEQ_REFRESH_HEADER, DialogView, Leg, Outcome, Party, Pending, ReinviteError,
                             build, moved_offer, outcome, refresh_value, route_uris)

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
    (VIEW, "toward the caller"),
    (DialogView(VIEW.call_id, CALLER, Leg(**{**CALLEE.__dict__, "tag": ""})), "not confirmed"),
    (DialogView(VIEW.call_id, CALLER, Leg(**{**CALLEE.__dict__, "route_set": "<sip:strict.example>"})), "strict"),
], ids=["upstream", "unconfirmed", "strict-router"])
def test_what_cannot_be_sent_is_refused_with_a_reason(view, why):
    toward = Party.CALLER if why == "toward the caller" else Party.CALLEE
    with pytest.raises(ReinviteError):
        build(view, toward, OFFER)


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
