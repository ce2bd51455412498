"""The lossless SDP model (sdp_rules.sdp): round trips, mutations, malformed input.

Golden round trips run on the real bodies in tests/fixtures/sdp (see its
README for where each came from); the property tests generate random
well-formed SDP and random edits of it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdp_rules.errors import PeerError, SdpParseError
from sdp_rules.sdp import CRLF, Connection, MediaLine, parse
from tests.conftest import property_examples

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sdp"
FIXTURE_FILES = sorted(FIXTURES.glob("*.sdp"))

EXPECTED_FIXTURES = {
    "aiortc_answer.sdp", "aiortc_offer.sdp", "baresip_offer.sdp", "chromium_answer_audio.sdp",
    "chromium_offer_audio.sdp", "chromium_offer_audio_video_data.sdp", "core_msrp_offer.sdp",
    "core_rtp_offer.sdp", "core_t140_offer.sdp", "datachannel_msrp_offer.sdp",
    "datachannel_t140_offer.sdp", "firefox_offer.sdp", "ims_ue_offer.sdp",
    "sipp_default_offer.sdp", "srtp_over_tcp_offer.sdp", "t38_offer_udptl_dtls.sdp",
}

HEAD = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def read_fixture(name: str) -> str:
    with open(FIXTURES / name, newline="") as f:
        return f.read()


# -- golden round trips on real bodies --------------------------------------

def test_every_expected_fixture_is_present_and_documented():
    names = {p.name for p in FIXTURE_FILES}
    assert EXPECTED_FIXTURES <= names
    readme = (FIXTURES / "README.rst").read_text()
    for name in names:
        assert f"``{name}``" in readme, f"{name} is not described in the fixtures README"


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_fixture_round_trips_byte_for_byte(path: Path):
    text = path.read_bytes().decode("utf-8")
    assert text.endswith(CRLF)
    assert "\n" not in text.replace(CRLF, ""), "fixture must use CRLF line endings only"
    assert str(parse(text)) == text


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_fixture_in_lf_form_normalises_to_the_crlf_original(path: Path):
    text = path.read_bytes().decode("utf-8")
    assert str(parse(text.replace(CRLF, "\n"))) == text


def test_fixture_structure_is_what_the_senders_sent():
    chromium = parse(read_fixture("chromium_offer_audio_video_data.sdp"))
    assert [(m.media, m.proto) for m in chromium.media] == [
        ("audio", "UDP/TLS/RTP/SAVPF"), ("video", "UDP/TLS/RTP/SAVPF"),
        ("application", "UDP/DTLS/SCTP"),
    ]
    assert chromium.media[2].fmts == ["webrtc-datachannel"]
    assert chromium.media[2].attribute("sctp-port") == "5000"
    # Chromium's space after the colon is part of the value and must survive.
    assert chromium.session.attribute("msid-semantic").startswith(" WMS ")

    firefox = parse(read_fixture("firefox_offer.sdp"))
    # Firefox puts the fingerprint at session level only.
    assert firefox.session.has_attribute("fingerprint")
    assert not any(m.has_attribute("fingerprint") for m in firefox.media)
    assert firefox.attribute_for(firefox.media[0], "fingerprint").startswith("sha-256 ")

    baresip = parse(read_fixture("baresip_offer.sdp"))
    assert baresip.session.attribute("setup") == "actpass"
    assert baresip.connection_for(baresip.media[0]) == Connection("IN", "IP4", "127.0.0.1")

    ims = parse(read_fixture("ims_ue_offer.sdp"))
    assert ims.media[0].bandwidths() == [("AS", 50), ("RS", 600), ("RR", 2000)]
    assert ims.media[0].attributes("des") == ["qos mandatory local sendrecv", "qos optional remote sendrecv"]

    msrp = parse(read_fixture("core_msrp_offer.sdp"))
    assert (msrp.media[0].media, msrp.media[0].port, msrp.media[0].proto, msrp.media[0].fmts) == (
        "message", 7394, "TCP/MSRP", ["*"])


# -- hypothesis: random well-formed SDP round-trips -------------------------

_TEXT = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), min_size=0, max_size=30
)
_NONEMPTY_TEXT = _TEXT.filter(bool)
_TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+!", min_size=1, max_size=12)
_ADDRESS = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.from_regex(r"\A[a-z][a-z0-9.-]{0,20}\Z"),
)


@st.composite
def _connection(draw) -> str:
    addr_type = draw(st.sampled_from(["IP4", "IP6"]))
    suffix = draw(st.sampled_from(["", "/127", "/127/3"]))
    return f"c=IN {addr_type} {draw(_ADDRESS)}{suffix}"


_BANDWIDTH = st.builds(
    lambda t, v: f"b={t}:{v}", st.sampled_from(["AS", "CT", "RS", "RR", "TIAS", "X-YZ"]),
    st.integers(0, 10**9),
)


@st.composite
def _attribute(draw) -> str:
    name = draw(_TOKEN)
    value = draw(st.one_of(st.none(), _TEXT))
    return f"a={name}" if value is None else f"a={name}:{value}"


@st.composite
def _media_line(draw) -> str:
    media = draw(st.sampled_from(["audio", "video", "application", "image", "text", "message"]) | _TOKEN)
    port = draw(st.integers(0, 65535))
    count = draw(st.one_of(st.none(), st.integers(1, 8)))
    proto = draw(st.sampled_from([
        "RTP/AVP", "RTP/AVPF", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "TCP/DTLS/RTP/SAVPF",
        "UDP/DTLS/SCTP", "UDP/TLS/UDPTL", "udptl", "TCP/MSRP",
    ]) | _TOKEN)
    fmts = draw(st.lists(_TOKEN | st.integers(0, 127).map(str), min_size=1, max_size=6))
    port_text = str(port) if count is None else f"{port}/{count}"
    return "m=" + " ".join([media, port_text, proto, *fmts])


@st.composite
def sdp_bodies(draw) -> str:
    lines = ["v=0", "o=" + draw(_NONEMPTY_TEXT), "s=" + draw(_TEXT)]
    for prefix in "iue":
        if draw(st.booleans()):
            lines.append(f"{prefix}=" + draw(_TEXT))
    lines += ["p=" + draw(_TEXT) for _ in range(draw(st.integers(0, 2)))]
    if draw(st.booleans()):
        lines.append(draw(_connection()))
    lines += draw(st.lists(_BANDWIDTH, max_size=2))
    for _ in range(draw(st.integers(1, 2))):
        lines.append(f"t={draw(st.integers(0, 2**32))} {draw(st.integers(0, 2**32))}")
        lines += ["r=" + draw(_NONEMPTY_TEXT) for _ in range(draw(st.integers(0, 2)))]
    if draw(st.booleans()):
        lines.append("z=" + draw(_NONEMPTY_TEXT))
    if draw(st.booleans()):
        lines.append("k=" + draw(_NONEMPTY_TEXT))
    lines += draw(st.lists(_attribute(), max_size=5))
    for _ in range(draw(st.integers(0, 4))):
        lines.append(draw(_media_line()))
        if draw(st.booleans()):
            lines.append("i=" + draw(_TEXT))
        lines += draw(st.lists(_connection(), max_size=2))
        lines += draw(st.lists(_BANDWIDTH, max_size=2))
        if draw(st.booleans()):
            lines.append("k=" + draw(_NONEMPTY_TEXT))
        lines += draw(st.lists(_attribute(), max_size=6))
    return CRLF.join(lines) + CRLF


_SETTINGS = settings(max_examples=property_examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(sdp_bodies())
def test_random_sdp_round_trips(body: str):
    parsed = parse(body)
    assert str(parsed) == body
    raw = body.split(CRLF)[:-1]
    assert len(parsed.media) == sum(line.startswith("m=") for line in raw)
    assert len(parsed.session.lines) + sum(len(m.lines) for m in parsed.media) == len(raw)


@_SETTINGS
@given(sdp_bodies())
def test_random_sdp_with_lf_endings_normalises_to_crlf(body: str):
    assert str(parse(body.replace(CRLF, "\n"))) == body


@_SETTINGS
@given(sdp_bodies())
def test_parsed_attributes_split_at_the_first_colon(body: str):
    parsed = parse(body)
    for section in [parsed.session, *parsed.media]:
        for line in section.attribute_lines():
            name, colon, value = line.value.partition(":")
            assert line.attribute_name == name
            assert line.attribute_value == (value if colon else None)


# -- hypothesis: edits keep every other line byte-identical ------------------

def _lines(text: str) -> list[str]:
    return text.split(CRLF)[:-1]


def _with_media(bodies):
    return bodies.filter(lambda b: "\r\nm=" in b)


@_SETTINGS
@given(_with_media(sdp_bodies()), st.data())
def test_setting_proto_changes_only_that_m_line(body: str, data):
    parsed = parse(body)
    index = data.draw(st.integers(0, len(parsed.media) - 1))
    section = parsed.media[index]
    section.proto = data.draw(st.sampled_from(["RTP/AVP", "RTP/AVPF", "UDP/TLS/RTP/SAVPF", "UDPTL"]))
    after = _lines(str(parsed))
    original = _lines(body)
    assert len(after) == len(original)
    m_at = [i for i, line in enumerate(original) if line.startswith("m=")][index]
    assert [i for i, (a, b) in enumerate(zip(original, after)) if a != b] in ([], [m_at])
    old_parts, new_parts = original[m_at].split(" "), after[m_at].split(" ")
    assert new_parts[2] == section.proto
    assert old_parts[:2] + old_parts[3:] == new_parts[:2] + new_parts[3:]


@_SETTINGS
@given(sdp_bodies(), st.data())
def test_removing_attributes_drops_only_those_lines(body: str, data):
    parsed = parse(body)
    sections = [parsed.session, *parsed.media]
    names = sorted({line.attribute_name for s in sections for line in s.attribute_lines()})
    if not names:
        names = ["absent"]
    victim = data.draw(st.sampled_from(names))
    where = data.draw(st.integers(0, len(sections) - 1))
    target = sections[where]
    expected_removed = [str(line) for line in target.attribute_lines(victim)]
    removed = target.remove_attributes(victim)
    assert removed == len(expected_removed)
    assert not target.has_attribute(victim)
    # Rebuild the expected text: the original with exactly those lines of that section gone.
    reparsed = parse(body)
    expected_sections = [reparsed.session, *reparsed.media]
    expected_sections[where].lines = [
        line for line in expected_sections[where].lines
        if not (line.is_attribute and line.attribute_name == victim)
    ]
    assert str(parsed) == str(reparsed)
    assert len(_lines(str(parsed))) == len(_lines(body)) - removed


@_SETTINGS
@given(_with_media(sdp_bodies()), st.data(), st.ip_addresses(v=4).map(str))
def test_set_connection_touches_only_the_c_line(body: str, data, address: str):
    parsed = parse(body)
    index = data.draw(st.integers(0, len(parsed.media) - 1))
    section = parsed.media[index]
    had_c = bool(section.lines_of("c"))
    section.set_connection(address)
    assert section.connection == Connection("IN", "IP4", address)
    original_other = [str(line) for s in parse(body).media[:index] + parse(body).media[index + 1:]
                      for line in s.lines]
    new_other = [str(line) for s in parsed.media[:index] + parsed.media[index + 1:] for line in s.lines]
    assert new_other == original_other
    assert [str(line) for line in parsed.session.lines] == [str(line) for line in parse(body).session.lines]
    old_section = [str(line) for line in parse(body).media[index].lines if line.type != "c"]
    new_section = [str(line) for line in section.lines if line.type != "c"]
    assert new_section == old_section
    assert len(section.lines_of("c")) == 1
    c_at = [line.type for line in section.lines].index("c")
    # RFC 8866 order inside a media description: m, i, c, b, k, a.
    assert all(line.type in "mi" for line in section.lines[:c_at])
    assert all(line.type in "cbka" for line in section.lines[c_at:])
    if not had_c:
        assert len(section.lines) == len(parse(body).media[index].lines) + 1


@_SETTINGS
@given(sdp_bodies(), st.data(), _TOKEN, st.one_of(st.none(), _TEXT))
def test_add_attribute_appends_one_line_at_the_end_of_its_section(body: str, data, name, value):
    parsed = parse(body)
    sections = [parsed.session, *parsed.media]
    where = data.draw(st.integers(0, len(sections) - 1))
    sections[where].add_attribute(name, value)
    expected = parse(body)
    expected_sections = [expected.session, *expected.media]
    new_line = f"a={name}" if value is None else f"a={name}:{value}"
    after = _lines(str(parsed))
    before_sections = [[str(line) for line in s.lines] for s in expected_sections]
    before_sections[where].append(new_line)
    assert after == [line for s in before_sections for line in s]
    assert parse(str(parsed)).__str__() == str(parsed)


def test_set_connection_inserts_session_c_before_b_and_t():
    parsed = parse(HEAD.replace("s=-\r\n", "s=-\r\nb=AS:64\r\n") + "m=audio 9 RTP/AVP 0\r\n")
    parsed.session.set_connection("127.0.0.2")
    assert str(parsed) == (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nb=AS:64\r\nt=0 0\r\n"
        "m=audio 9 RTP/AVP 0\r\n"
    )


def test_set_attribute_replaces_in_place_and_drops_duplicates():
    body = HEAD + "m=audio 9 RTP/AVP 0\r\na=setup:actpass\r\na=x\r\na=setup:active\r\na=y\r\n"
    parsed = parse(body)
    parsed.media[0].set_attribute("setup", "passive")
    assert str(parsed) == HEAD + "m=audio 9 RTP/AVP 0\r\na=setup:passive\r\na=x\r\na=y\r\n"


def test_port_and_fmts_setters_rewrite_only_the_m_line():
    body = HEAD + "m=audio 5004/2 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n"
    parsed = parse(body)
    parsed.media[0].port = 30000
    parsed.media[0].fmts = ["8"]
    assert str(parsed) == HEAD + "m=audio 30000/2 RTP/AVP 8\r\na=rtpmap:0 PCMU/8000\r\n"
    assert parsed.media[0].m == MediaLine("audio", 30000, 2, "RTP/AVP", ["8"])
    assert not parsed.media[0].rejected
    parsed.media[0].port = 0
    assert parsed.media[0].rejected


# -- malformed input ---------------------------------------------------------

MALFORMED = [
    # (id, body, line number, token fragment)
    ("missing-v", "o=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", 1, "o=- 1 1"),
    ("v-not-0", "v=1\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", 1, "v=1"),
    ("no-equals", HEAD + "m=audio 9 RTP/AVP 0\r\nrtpmap 0 PCMU\r\n", 6, "rtpmap 0 PCMU"),
    ("colon-for-equals", HEAD + "m=audio 9 RTP/AVP 0\r\na:rtcp-mux\r\n", 6, "a:rtcp-mux"),
    ("upper-case-type", HEAD + "A=sendrecv\r\n", 5, "A=sendrecv"),
    ("empty-line", HEAD + "\r\nm=audio 9 RTP/AVP 0\r\n", 5, "(empty line)"),
    ("bad-m-port", HEAD + "m=audio 9x RTP/AVP 0\r\n", 5, "9x"),
    ("m-port-too-big", HEAD + "m=audio 65536 RTP/AVP 0\r\n", 5, "65536"),
    ("m-bad-port-count", HEAD + "m=audio 9/x RTP/AVP 0\r\n", 5, "9/x"),
    ("m-no-fmt", HEAD + "m=audio 9 RTP/AVP\r\n", 5, "audio 9 RTP/AVP"),
    ("m-empty-fmt", HEAD + "m=audio 9 RTP/AVP 0  8\r\n", 5, "audio 9 RTP/AVP 0  8"),
    ("m-media-not-token", HEAD + "m=au(dio 9 RTP/AVP 0\r\n", 5, "au(dio"),
    ("bad-session-c", HEAD.replace("s=-\r\n", "s=-\r\nc=IN IP4\r\n"), 4, "IN IP4"),
    ("bad-media-c", HEAD + "m=audio 9 RTP/AVP 0\r\nc=IN  IP4 127.0.0.1\r\n", 6, "IN  IP4 127.0.0.1"),
    ("b-no-colon", HEAD + "m=audio 9 RTP/AVP 0\r\nb=AS64\r\n", 6, "AS64"),
    ("b-not-number", HEAD.replace("s=-\r\n", "s=-\r\nb=AS:sixty\r\n"), 4, "AS:sixty"),
    ("b-no-type", HEAD + "m=audio 9 RTP/AVP 0\r\nb=:64\r\n", 6, ":64"),
    ("bare-cr", HEAD + "m=audio 9 RTP/AVP 0\ra=sendrecv\r\n", 5, "\\r"),
    ("bare-cr-lf-body", "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\rt=0 0\n", 3, "\\r"),
    ("empty-body", "", 1, ""),
    ("empty-attribute", HEAD + "a=\r\n", 5, "a="),
    ("t-in-media", HEAD + "m=audio 9 RTP/AVP 0\r\nt=0 0\r\n", 6, "t=0 0"),
    ("unknown-type", HEAD + "x=foo\r\n", 5, "x=foo"),
    ("no-o", "v=0\r\ns=-\r\nt=0 0\r\n", 1, "o="),
    ("no-s", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\nt=0 0\r\n", 1, "s="),
    ("m-trailing-space", HEAD + "m=audio 9 RTP/AVP \r\n", 5, "audio 9 RTP/AVP "),
]


# What the Warning header says for each (the reason is behaviour: it reaches the peer).
MALFORMED_REASONS = {
    "missing-v": "SDP must start with v=0", "v-not-0": "SDP must start with v=0",
    "no-equals": "not a '<type>=<value>' line", "colon-for-equals": "not a '<type>=<value>' line",
    "upper-case-type": "not a '<type>=<value>' line", "empty-line": "not a '<type>=<value>' line",
    "bad-m-port": "port is not a number in 0..65535", "m-port-too-big": "port is not a number in 0..65535",
    "m-bad-port-count": "port count is not a number", "m-no-fmt": "m= needs '<media> <port> <proto> <fmt> ...'",
    "m-empty-fmt": "empty format token", "m-media-not-token": "media type is not a token",
    "bad-session-c": "c= needs '<nettype> <addrtype> <address>'",
    "bad-media-c": "c= needs '<nettype> <addrtype> <address>'",
    "b-no-colon": "b= needs '<bwtype>:<bandwidth>'", "b-not-number": "b= needs '<bwtype>:<bandwidth>'",
    "b-no-type": "b= needs '<bwtype>:<bandwidth>'", "bare-cr": "bare CR in SDP", "bare-cr-lf-body": "bare CR in SDP",
    "empty-body": "empty SDP body", "empty-attribute": "empty attribute",
    "t-in-media": "'t=' is not allowed at media level", "unknown-type": "'x=' is not allowed at session level",
    "no-o": "session section lacks 'o='", "no-s": "session section lacks 's='",
    "m-trailing-space": "empty format token",
}


@pytest.mark.parametrize("body, lineno, token", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_sdp_raises_naming_line_and_token(body: str, lineno: int, token: str, request):
    with pytest.raises(SdpParseError) as caught:
        parse(body)
    error = caught.value
    assert error.lineno == lineno
    assert token in error.token
    assert str(error) == f"SDP line {lineno}: {MALFORMED_REASONS[request.node.callspec.id]} (at {error.token!r})"
    assert f"SDP line {lineno}:" in str(error)
    assert repr(error.token) in str(error)
    assert isinstance(error, PeerError) and error.sip_status == 488
    assert "\n" not in str(error)


@pytest.mark.parametrize("value", [b"v=0\r\n", None, 42, ["v=0"]], ids=["bytes", "none", "int", "list"])
def test_non_text_body_is_a_parse_error(value):
    with pytest.raises(SdpParseError) as caught:
        parse(value)  # type: ignore[arg-type]
    assert type(value).__name__ in caught.value.token
    assert str(caught.value) == f"SDP line 0: SDP body must be text (at {repr(type(value))!r})"
    assert caught.value.lineno == 0


def test_connection_and_media_line_parsers_name_their_line():
    with pytest.raises(SdpParseError) as caught:
        Connection.parse("IN IP4", 7)
    assert caught.value.lineno == 7
    with pytest.raises(SdpParseError) as caught:
        MediaLine.parse("audio -1 RTP/AVP 0", 9)
    assert (caught.value.lineno, caught.value.token) == (9, "-1")


@pytest.mark.parametrize("digit", ["\u00b2", "\u0663"], ids=["superscript-two", "arabic-indic-three"])
def test_non_ascii_digits_are_parse_errors(digit: str):
    for body, lineno in [
        (HEAD + f"m=audio {digit} RTP/AVP 0\r\n", 5),
        (HEAD + f"m=audio 9 RTP/AVP 0\r\nb=AS:{digit}\r\n", 6),
    ]:
        with pytest.raises(SdpParseError) as caught:
            parse(body)
        assert caught.value.lineno == lineno


def test_the_first_bare_cr_is_named_and_long_lines_are_cut_to_20_characters():
    with pytest.raises(SdpParseError) as caught:
        parse(HEAD + "a=one\ra=two\r\na=three\rx\r\n")
    assert caught.value.lineno == 5
    with pytest.raises(SdpParseError) as caught:
        parse(HEAD + "m=audio 9 RTP/AVP 0\r\nt=" + "1" * 40 + "\r\n")
    assert caught.value.token == "t=" + "1" * 18
    with pytest.raises(SdpParseError) as caught:
        parse(HEAD + "this line has no equals sign at all\r\n")
    assert caught.value.token == "this line has no equ"


def test_set_connection_on_sections_holding_nothing_after_it():
    parsed = parse("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nm=audio 9 RTP/AVP 0\r\ni=title\r\n")
    parsed.session.set_connection("127.0.0.2")
    parsed.media[0].set_connection("127.0.0.3")
    assert str(parsed) == ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.2\r\n"
                           "m=audio 9 RTP/AVP 0\r\ni=title\r\nc=IN IP4 127.0.0.3\r\n")


def test_set_connection_goes_right_after_the_m_line_when_attributes_follow_it():
    parsed = parse(HEAD + "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")
    parsed.media[0].set_connection("127.0.0.3")
    assert [str(line) for line in parsed.media[0]] == [
        "m=audio 9 RTP/AVP 0", "c=IN IP4 127.0.0.3", "a=rtpmap:0 PCMU/8000", "a=sendrecv"]


def test_attribute_names_end_at_the_first_colon():
    parsed = parse(HEAD + "m=audio 9 RTP/AVP 0\r\na=x:y\r\nb=AS:64\r\na=flag\r\n")
    section = parsed.media[0]
    assert not section.has_attribute("x:y") and section.attribute_lines("x:y") == []
    assert section.attribute("x") == "y" and section.attribute("flag") is None and section.has_attribute("flag")
    assert [line.value for line in section.attribute_lines()] == ["x:y", "flag"]


def test_set_attribute_appends_when_absent_and_remove_lines_counts():
    parsed = parse(HEAD + "m=audio 9 RTP/AVP 0\r\nb=AS:64\r\nb=RR:0\r\na=x\r\n")
    section = parsed.media[0]
    added = section.set_attribute("setup", "actpass")
    assert str(added) == "a=setup:actpass" and section.lines[-1] is added
    assert str(section.set_attribute("rtcp-mux")) == "a=rtcp-mux"
    assert section.remove_lines("b") == 2 and section.remove_lines("b") == 0
    assert [str(line) for line in section] == ["m=audio 9 RTP/AVP 0", "a=x", "a=setup:actpass", "a=rtcp-mux"]
    replaced = section.set_attribute("setup", "passive")
    assert replaced is section.lines[2] and str(replaced) == "a=setup:passive"


def test_media_level_attribute_wins_over_the_session_level_one():
    parsed = parse(HEAD.replace("t=0 0", "t=0 0\r\na=setup:actpass\r\na=flag:session") +
                   "m=audio 9 RTP/AVP 0\r\na=setup:active\r\na=flag\r\nm=audio 10 RTP/AVP 0\r\n")
    first, second = parsed.media
    assert parsed.attribute_for(first, "setup") == "active"
    assert parsed.attribute_for(first, "flag") is None  # a media-level flag: no value, not the session's
    assert parsed.attribute_for(second, "setup") == "actpass" and parsed.attribute_for(second, "flag") == "session"


def test_copy_is_an_independent_equal_description():
    parsed = parse(HEAD + "m=audio 9 RTP/AVP 0\r\n")
    copied = parsed.copy()
    assert str(copied) == str(parsed) and copied is not parsed
    copied.media[0].port = 10
    assert str(parsed) == HEAD + "m=audio 9 RTP/AVP 0\r\n"
