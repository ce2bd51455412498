"""The SIP fuzz's pure half (``tests.sipfuzz.mutate``): drafts, seeds, mutations, replay."""

from __future__ import annotations

import random
import re

import pytest

from tests.sipfuzz.mutate import (FLOWS, MUTATORS, Context, Draft, Seeds, keep_on_loopback, make_case,
                                  reply_draft, request_draft)

SIDES = {"access": ("127.0.0.1", 40000), "core": ("127.0.0.3", 40002)}


@pytest.fixture(scope="module")
def seeds():
    return Seeds.load()


def test_seeds_come_from_the_sdp_fixtures_and_the_sipp_scenarios(seeds):
    names = [n for n, _ in seeds.access_offers]
    assert "chromium_offer_audio.sdp" in names and "wic_call_uac.xml#0" in names
    assert all(b"a=fingerprint" in body for _, body in seeds.access_offers)
    assert "core_rtp_offer.sdp" in [n for n, _ in seeds.core_offers]
    assert seeds.core_answers and all(b"a=fingerprint" not in body for _, body in seeds.core_answers)
    # SIPp keywords are filled in; the multipart body is a seed of its own kind.
    assert not any(re.search(rb"\[\w+\]", body) for _, body in seeds.access_offers + seeds.core_answers)
    assert not any(b"--e2ae-b0undary" in body for _, body in seeds.access_offers)
    (_, ctype, body), = seeds.multipart
    assert ctype.startswith("multipart/mixed") and b"application/pidf+xml" in body


def test_a_draft_renders_its_placeholders_and_its_content_length():
    draft = request_draft("invite", b"v=0\r\n")
    data = draft.render({"local": "127.0.0.1:5", "branch": "z9hG4bKx", "from_tag": "t", "call_id": "c",
                         "cseq": "1", "edge": "127.0.0.1:6"})
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"INVITE sip:callee@127.0.0.1:6 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bKx")
    assert b"From: <sip:wic@127.0.0.1:5>;tag=t" in head and head.endswith(b"Content-Length: 5")
    assert body == b"v=0\r\n"


def test_a_header_that_renders_empty_is_left_out():
    # A reply to a request without Record-Route: no empty line ends the headers early.
    data = reply_draft(b"").render({"vias": "Via: SIP/2.0/UDP a;branch=b", "record_routes": "", "from": "f",
                                    "to": "<sip:t>", "to_tag": "x", "call_id": "c", "cseq": "1 INVITE",
                                    "local": "l"})
    head = data.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[:3] == [b"SIP/2.0 200 OK", b"Via: SIP/2.0/UDP a;branch=b", b"From: f"] and b"" not in head


def test_a_template_replays_the_same_bytes(seeds):
    for index in range(60):
        case = make_case("s", index, seeds, sides=SIDES)
        values = {"local": "127.0.0.1:5", "branch": "b", "from_tag": "t", "call_id": "c", "cseq": "2",
                  "edge": "e", "wic": "w", "route": "<sip:r;lr>", "from": "f", "to": "t", "target": "sip:x",
                  "rack": "1 1 INVITE", "vias": "Via: v", "record_routes": "", "to_tag": "g"}
        assert Draft.from_template(case.draft.template()).render(values) == case.draft.render(values), case.describe()


def test_a_case_is_the_same_from_its_seed_and_index(seeds):
    a = [make_case("run-1", i, seeds, sides=SIDES) for i in range(40)]
    b = [make_case("run-1", i, seeds, sides=SIDES) for i in range(40)]
    assert [(c.flow, c.mutations, c.draft.template()) for c in a] == [(c.flow, c.mutations, c.draft.template())
                                                                      for c in b]
    other = [make_case("run-2", i, seeds, sides=SIDES) for i in range(40)]
    assert [c.draft.template() for c in other] != [c.draft.template() for c in a]
    assert {c.flow for c in a + other} == set(FLOWS)


def test_every_mutator_runs_on_every_kind_of_seed(seeds):
    ctx = Context(seeds)
    bodies = [seeds.access_offers[0][1], seeds.core_offers[0][1], seeds.core_answers[0][1], b""]
    for name, (mutator, _) in MUTATORS.items():
        for n, body in enumerate(bodies):
            draft = request_draft("update", body)
            text = mutator(random.Random(f"{name}{n}"), draft, ctx)
            assert text.startswith(name + "("), text


def _mutate(name: str, body: bytes, seed: str = "1", seeds=None) -> tuple[Draft, str]:
    draft = request_draft("invite", body)
    text = MUTATORS[name][0](random.Random(seed), draft, Context(seeds or Seeds()))
    return draft, text


OFFER = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0\r\na=x\r\n"


def test_byte_mutations_put_nul_and_non_utf8_bytes_in_the_body():
    draft, _ = _mutate("nul_in_line", OFFER)
    assert draft.body.count(b"\x00") == 1 and draft.body.replace(b"\x00", b"") == OFFER
    draft, _ = _mutate("non_utf8", OFFER)
    with pytest.raises(UnicodeDecodeError):
        draft.body.decode("utf-8")


def test_many_m_lines_repeats_a_media_section():
    for seed in map(str, range(20)):
        draft, text = _mutate("many_m_lines", OFFER, seed)
        count = int(text.rsplit("x", 1)[1].rstrip(")"))
        assert draft.body.count(b"m=audio") == 1 + count


@pytest.mark.parametrize("seed", [str(n) for n in range(30)])
def test_content_length_mutations_say_what_they_wrote(seed):
    draft, text = _mutate("content_length", OFFER, seed)
    how = text[len("content_length("):-1]
    lengths = [h.split(":", 1)[1].strip() for h in draft.headers if h.startswith("Content-Length:")]
    assert not draft.auto_length
    expected = {"zero": ["0"], "negative": ["-5"], "huge": ["99999999999"], "abc": ["abc"], "missing": [],
                "duplicated_same": [str(len(OFFER))] * 2}
    if how in expected:
        assert lengths == expected[how]
    elif how == "longer":
        assert int(lengths[0]) > len(OFFER)
    elif how == "shorter":
        assert int(lengths[0]) < len(OFFER)


def test_multipart_wraps_the_body_and_names_its_boundary():
    for seed in map(str, range(30)):
        draft, text = _mutate("multipart", OFFER, seed, Seeds())
        (ctype,) = [h for h in draft.headers if h.startswith("Content-Type:")]
        if "seeded" in text:
            continue
        boundary = ctype.split("boundary=", 1)[1]
        if len(boundary) > 1 and boundary[0] == boundary[-1] == '"':
            boundary = boundary[1:-1]
        assert ctype.startswith("Content-Type: multipart/mixed")
        assert draft.body.count(b"--" + boundary.encode()) >= 1
        assert OFFER.rstrip() in draft.body


def test_missing_tag_takes_the_tag_out_of_from():
    draft, text = _mutate("missing_tag", OFFER)
    (from_,) = [h for h in draft.headers if h.startswith("From:")]
    assert "${from_tag}" not in from_ and text == "missing_tag(From)"


def test_addresses_and_valid_ports_are_kept_on_the_harness():
    body = (b"o=- 1 1 IN IP4 10.0.0.7\r\nc=IN IP6 2001:db8::1\r\nc=IN IP4 0.0.0.0\r\nm=audio 5004 RTP/AVP 0\r\n"
            b"m=video 0 RTP/AVP 96\r\nm=text 99999999/2 RTP/AVP 98\r\na=rtcp:5005 IN IP4 192.0.2.1\r\n"
            b"a=candidate:1 1 udp 2130706431 198.51.100.2 61000 typ srflx raddr 10.1.1.1 rport 7000\r\n"
            b"a=candidate:2 1 udp 2130706431 ::1 61001 typ host\r\n")
    kept = keep_on_loopback(body, "127.0.0.1", 40000)
    assert re.findall(rb"\d+\.\d+\.\d+\.\d+", kept) == [b"127.0.0.1", b"127.0.0.1", b"0.0.0.0", b"127.0.0.1",
                                                         b"127.0.0.1", b"127.0.0.1", b"127.0.0.1"]
    assert b"IN IP6" not in kept and b"::1" not in kept
    lines = kept.split(b"\r\n")
    assert lines[3] == b"m=audio 40000 RTP/AVP 0" and lines[4] == b"m=video 0 RTP/AVP 96"
    assert lines[5] == b"m=text 99999999/2 RTP/AVP 98"  # a port no datagram can go to stays
    assert lines[6].startswith(b"a=rtcp:40000 ")
    assert lines[7].endswith(b"127.0.0.1 40000 typ srflx raddr 127.0.0.1 rport 40000")
    assert lines[8] == b"a=candidate:2 1 udp 2130706431 127.0.0.1 40000 typ host"


def test_cases_bodies_name_only_the_harness(seeds):
    for index in range(200):
        case = make_case("loopback", index, seeds, sides=SIDES)
        address, port = SIDES["core" if case.flow in ("core_invite", "ok") else "access"]
        for found in re.findall(rb"(?<![\d.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\d.])", case.draft.body):
            assert found in (address.encode(), b"0.0.0.0"), case.describe()
