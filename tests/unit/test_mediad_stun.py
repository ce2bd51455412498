"""mediad.proto.stun: the ICE-lite responder, with RFC 5769 test vectors and aioice as the decoder."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from aioice import stun

from mediad.proto.stun import ICE_CHARS, IceLiteResponder, random_ice_credentials
from tests.conftest import property_examples

# RFC 5769 section 2.1: sample request (USERNAME "evtj:h6vY", password below).
RFC5769_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)
RFC5769_PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
PEER = ("192.0.2.1", 32853)


def request(username: str, pwd: str, *, use_candidate: bool = False, integrity: bool = True) -> bytes:
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = 1853824767
    message.attributes["ICE-CONTROLLING"] = 0x1234
    if use_candidate:
        message.attributes["USE-CANDIDATE"] = None
    if integrity:
        message.add_message_integrity(pwd.encode())
    else:
        message.add_fingerprint()
    return bytes(message)


@pytest.mark.req("ICE-1")
def test_rfc5769_sample_request_is_answered():
    sample = stun.parse_message(RFC5769_REQUEST)
    assert sample.check_message_integrity(RFC5769_PASSWORD.encode())
    assert not sample.check_message_integrity(b"wrong")

    responder = IceLiteResponder("evtj", RFC5769_PASSWORD, remote_ufrag="h6vY")
    answer = responder.handle(RFC5769_REQUEST, PEER, now=0.0)
    response = stun.parse_message(answer)  # checks FINGERPRINT
    assert response.message_method == stun.Method.BINDING
    assert response.message_class == stun.Class.RESPONSE
    assert response.transaction_id == bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert response.attributes["XOR-MAPPED-ADDRESS"] == PEER
    assert response.check_message_integrity(RFC5769_PASSWORD.encode())
    assert list(response.attributes)[-2:] == ["MESSAGE-INTEGRITY", "FINGERPRINT"]
    # RFC 5769 2.2: the XOR-MAPPED-ADDRESS of 192.0.2.1:32853 under that transaction id.
    assert bytes.fromhex("002000080001a147e112a643") in answer[:-32]
    assert responder.selected_address == PEER and not responder.nominated


@pytest.mark.req("ICE-1")
def test_bad_integrity_or_username_gets_401_and_missing_gets_400():
    responder = IceLiteResponder("lite", "a" * 24, remote_ufrag="full")
    cases = [
        (request("lite:full", "b" * 24), 401),  # wrong password
        (request("other:full", "a" * 24), 401),  # not our ufrag
        (request("lite:someone", "a" * 24), 401),  # not the peer's ufrag
        (request("litefull", "a" * 24), 401),  # no colon
        (request("lite:full", "a" * 24, integrity=False), 400),  # no MESSAGE-INTEGRITY
    ]
    for datagram, code in cases:
        answer = stun.parse_message(responder.handle(datagram, PEER, now=0.0))
        assert answer.message_class == stun.Class.ERROR
        assert answer.error_code == code
        # RFC 5389 15.6: the reason phrases of 400 and 401 as section 15.6 names them
        assert answer.attributes["ERROR-CODE"] == (code, {400: "Bad Request", 401: "Unauthorized"}[code])
        assert "MESSAGE-INTEGRITY" not in answer.attributes
        assert answer.transaction_id == datagram[8:20]
    assert responder.rejected == len(cases)
    assert responder.selected_address is None and responder.dropped == 0
    # With no remote ufrag known yet, any sender ufrag is accepted.
    assert stun.parse_message(IceLiteResponder("lite", "a" * 24).handle(
        request("lite:x", "a" * 24), PEER, 0.0)).message_class == stun.Class.RESPONSE


@pytest.mark.req("ICE-1")
@pytest.mark.parametrize("garbage", [
    b"", b"\x00\x01", os.urandom(19), b"\x80" + bytes(40), RFC5769_REQUEST[:-1],
    RFC5769_REQUEST[:-4] + b"\x00\x00\x00\x00",  # bad FINGERPRINT
    RFC5769_REQUEST[:4] + b"\x00\x00\x00\x00" + RFC5769_REQUEST[8:],  # no magic cookie
    bytes(stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST)),
    bytes(stun.Message(stun.Method.BINDING, stun.Class.RESPONSE)),
    b"\x00\x01\x00\x08" + RFC5769_REQUEST[4:20] + b"\x00\x24\x00\x02\x00\x00",  # short PRIORITY
])
def test_garbage_is_dropped(garbage):
    responder = IceLiteResponder("evtj", RFC5769_PASSWORD)
    assert responder.handle(garbage, PEER, now=0.0) is None
    assert responder.dropped == 1 and responder.selected_address is None
    assert responder.handle(garbage, PEER, now=0.0) is None
    assert responder.dropped == 2  # every drop is counted


def test_binding_indication_is_absorbed():
    responder = IceLiteResponder("lite", "a" * 24)
    indication = stun.Message(stun.Method.BINDING, stun.Class.INDICATION)
    indication.add_fingerprint()
    assert responder.handle(bytes(indication), PEER, 0.0) is None
    assert responder.dropped == 0


@pytest.mark.req("ICE-1")
def test_nomination_selects_the_address():
    responder = IceLiteResponder("lite", "a" * 24, remote_ufrag="full")
    first, second = ("10.0.0.1", 5000), ("127.0.0.1", 6000)
    responder.handle(request("lite:full", "a" * 24), first, 0.0)
    assert responder.selected_address == first and not responder.nominated
    responder.handle(request("lite:full", "a" * 24), second, 0.1)
    assert responder.selected_address == first  # not nominated: the first valid check's address
    responder.handle(request("lite:full", "a" * 24, use_candidate=True), second, 0.2)
    assert responder.selected_address == second and responder.nominated
    responder.handle(request("lite:full", "a" * 24), first, 0.3)
    assert responder.selected_address == second
    responder.handle(request("lite:full", "b" * 24, use_candidate=True), first, 0.4)  # 401: ignored
    assert responder.selected_address == second
    assert responder.answered == 4
    # A valid check nominating another pair moves the nomination there (RFC 8445 8.2.2).
    responder.handle(request("lite:full", "a" * 24, use_candidate=True), first, 0.5)
    assert responder.selected_address == first and responder.nominated
    assert responder.last_consent == 0.5 and responder.answered == 5


@pytest.mark.req("ICE-2")
def test_consent_expires_without_checks_from_the_selected_address():
    responder = IceLiteResponder("lite", "a" * 24, consent_timeout=30.0)
    assert not responder.consent_expired(1000.0) and not responder.has_consent(1000.0)
    check = request("lite:full", "a" * 24, use_candidate=True)
    responder.handle(check, PEER, now=100.0)
    assert responder.has_consent(129.9) and not responder.consent_expired(129.9)
    responder.handle(request("lite:full", "a" * 24), PEER, now=105.0)  # consent refresh (RFC 7675)
    assert not responder.consent_expired(134.9) and responder.has_consent(134.9)
    assert responder.last_consent == 105.0
    responder.handle(request("lite:full", "a" * 24), ("10.9.9.9", 1), now=120.0)  # another address: no refresh
    responder.handle(request("lite:full", "b" * 24), PEER, now=121.0)  # invalid check: no refresh
    assert responder.consent_expired(135.0) and not responder.has_consent(135.0)
    responder.handle(check, PEER, now=140.0)
    assert not responder.consent_expired(140.0)


def test_random_ice_credentials():
    seen = set()
    for _ in range(20):
        ufrag, pwd = random_ice_credentials()
        assert len(ufrag) >= 4 and len(pwd) >= 22
        assert set(ufrag + pwd) <= set(ICE_CHARS)
        seen.add((ufrag, pwd))
    assert len(seen) == 20


def test_random_ice_credentials_are_base64_of_one_random_draw(monkeypatch):
    """8 + 24 ice-chars from 24 random bytes: the base64 alphabet is exactly the ice-chars."""
    assert set(base64.b64encode(bytes(range(256)) * 3).decode()) == set(ICE_CHARS)
    draws = []
    monkeypatch.setattr("mediad.proto.stun.secrets.token_bytes", lambda n: draws.append(n) or bytes(range(n)))
    ufrag, pwd = random_ice_credentials()
    assert draws == [24]
    assert ufrag + pwd == base64.b64encode(bytes(range(24))).decode()
    assert (len(ufrag), len(pwd)) == (8, 24)


@given(st.binary(max_size=120), st.integers(0, 107), st.binary(min_size=1, max_size=8))
@settings(max_examples=property_examples(300), deadline=None)
def test_never_raises_on_mutated_requests(noise, offset, patch):
    responder = IceLiteResponder("evtj", RFC5769_PASSWORD)
    mutated = RFC5769_REQUEST[:offset] + patch + RFC5769_REQUEST[offset + len(patch):]
    for datagram in (noise, mutated, b"\x00\x01" + noise):
        answer = responder.handle(datagram, PEER, now=0.0)
        assert answer is None or stun.parse_message(answer).transaction_id == datagram[8:20]


@pytest.mark.req("ICE-2")
def test_consent_lasts_30_seconds_by_default():
    """RFC 7675 section 5.1: consent expires 30 s after the last valid check."""
    responder = IceLiteResponder("lite", "a" * 24)
    responder.handle(request("lite:full", "a" * 24, use_candidate=True), PEER, now=10.0)
    assert responder.has_consent(39.99) and responder.consent_expired(40.0)


@pytest.mark.req("ICE-1")
def test_nominating_the_address_already_selected_marks_it_nominated():
    responder = IceLiteResponder("lite", "a" * 24)
    responder.handle(request("lite:full", "a" * 24), PEER, 0.0)
    assert responder.selected_address == PEER and not responder.nominated
    responder.handle(request("lite:full", "a" * 24, use_candidate=True), PEER, 1.0)
    assert responder.selected_address == PEER and responder.nominated is True


def test_the_local_ufrag_ends_at_the_first_colon():
    """RFC 8445 7.2.2: USERNAME is "<our ufrag>:<their ufrag>"; ice-chars hold no colon."""
    responder = IceLiteResponder("lite", "a" * 24)
    answer = stun.parse_message(responder.handle(request("lite:fu:ll", "a" * 24), PEER, 0.0))
    assert answer.message_class == stun.Class.RESPONSE


def test_a_header_only_binding_request_is_answered_400_not_dropped():
    responder = IceLiteResponder("lite", "a" * 24)
    bare = bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST))
    assert len(bare) == 20
    answer = stun.parse_message(responder.handle(bare, PEER, 0.0))
    assert answer.error_code == 400 and (responder.rejected, responder.dropped) == (1, 0)


def test_remote_credentials_set_later_are_checked():
    responder = IceLiteResponder("lite", "a" * 24)
    responder.set_remote_credentials("full", "p" * 24)
    assert stun.parse_message(responder.handle(request("lite:other", "a" * 24), PEER, 0.0)).error_code == 401
    assert stun.parse_message(responder.handle(request("lite:full", "a" * 24), PEER, 0.0)).message_class == (
        stun.Class.RESPONSE)


def test_forget_deselects_only_the_selected_address():
    responder = IceLiteResponder("lite", "a" * 24)
    responder.handle(request("lite:full", "a" * 24, use_candidate=True), PEER, 5.0)
    responder.forget(("192.0.2.99", 1))
    assert (responder.selected_address, responder.nominated, responder.last_consent) == (PEER, True, 5.0)
    responder.forget(PEER)
    assert (responder.selected_address, responder.nominated, responder.last_consent) == (None, False, None)
    assert not responder.has_consent(5.0)
    responder.handle(request("lite:full", "a" * 24), ("192.0.2.7", 7), 6.0)
    assert responder.selected_address == ("192.0.2.7", 7)
