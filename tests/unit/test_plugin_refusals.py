"""Bodies the edge refuses before any work (plugin.limits, plugin.edge): each answered with
a status and a Warning saying why, nothing asked of mediad, nothing left in Redis."""

from __future__ import annotations

import pytest

from iq import Side

from plugin import limits
from plugin.edge import ACCEPT
from plugin.state import DIALOG_PREFIX, DialogStore
from tests.unit.test_plugin_edge import FIXTURES, PLAIN_OFFER, Agw, make_edge, msg

CHROMIUM_BIG = (FIXTURES / "chromium_offer_audio_video_data.sdp").read_text()


@pytest.fixture
def store(redis_url):
    s = DialogStore(redis_url, ttl=60)
    yield s
    s.close()


def refused(store, metrics_registry, message, status, words):
    agw = Agw()
    out = make_edge(store, metrics_registry, agw).handle(message)
    assert out.status == status, out
    assert out.warning and words in out.warning, out.warning
    assert agw.requests == []
    assert store.redis.keys(DIALOG_PREFIX + "*") == []
    return out


def test_the_largest_real_offer_is_within_the_limits(store, metrics_registry):
    """Chromium's audio+video+data offer (6.4 KB, 3 m-lines) passes."""
    assert len(CHROMIUM_BIG.encode()) < limits.MAX_BODY_BYTES
    out = make_edge(store, metrics_registry).handle(msg(CHROMIUM_BIG))
    assert not out.failed and out.body


def test_too_many_m_lines_488(store, metrics_registry):
    head, media = PLAIN_OFFER.split("m=", 1)
    sdp = head + "".join(f"m={media}" for _ in range(limits.MAX_MEDIA_LINES + 11))  # 43 m-lines, ~3 KB
    refused(store, metrics_registry, msg(sdp), 488, "more than 32 m-lines")


def test_a_64_kib_attribute_413(store, metrics_registry):
    refused(store, metrics_registry, msg(PLAIN_OFFER + "a=x-big:" + "y" * 65000 + "\r\n"), 413,
            "over the edge's limit of 16384")


def test_a_line_over_the_limit_488(store, metrics_registry):
    refused(store, metrics_registry, msg(PLAIN_OFFER + "a=x-long:" + "y" * limits.MAX_LINE_BYTES + "\r\n"), 488,
            "SDP line 8 is 4105 bytes long")


@pytest.mark.parametrize("line", ["a=fingerprint>sha-256 F5:81:BD", "a=ice pwd:x", "a=:value", "a="])
def test_an_attribute_whose_name_is_not_a_token_488(store, metrics_registry, line):
    """RFC 8866 section 9: it would pass through unrecognised (a mangled fingerprint included)."""
    refused(store, metrics_registry, msg(PLAIN_OFFER + line + "\r\n"), 488, "SDP line 8: the attribute name")


def test_attribute_names_that_are_tokens_pass():
    limits.check_sdp("v=0\r\na=recvonly\r\na=msid-semantic: WMS\r\na=x-y.z~1:v\r\na=rtcp-mux \r\n")


def test_a_body_that_is_not_utf8_488(store, metrics_registry):
    raw = PLAIN_OFFER.encode().replace(b"s=-", b"s=\xff\xfe")
    refused(store, metrics_registry, msg(raw), 488, "byte 0xff at offset")


def test_a_nul_in_the_sdp_488(store, metrics_registry):
    refused(store, metrics_registry, msg(PLAIN_OFFER.replace("s=-", "s=a\x00b")), 488, "NUL character")


def test_a_nul_in_another_part_of_a_multipart_body_488(store, metrics_registry):
    body = ("--b\r\nContent-Type: application/sdp\r\n\r\n" + PLAIN_OFFER
            + "\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\x00y\r\n--b--\r\n")
    message = msg(body)
    message.content_type = "multipart/mixed;boundary=b"
    refused(store, metrics_registry, message, 488, "NUL character")


def test_an_offer_labelled_text_plain_415_with_accept(store, metrics_registry):
    """The WIC's DTLS and ICE attributes must not reach the core under another label."""
    message = msg((FIXTURES / "chromium_offer_audio.sdp").read_text())
    message.content_type = "text/plain"
    out = refused(store, metrics_registry, message, 415, "must be SDP")
    assert out.accept == ACCEPT and out.reason == "Unsupported Media Type"


def test_a_multipart_offer_without_an_sdp_part_415(store, metrics_registry):
    """An offer whose only part is labelled text/plain would reach the core untouched."""
    sdp = (FIXTURES / "chromium_offer_audio.sdp").read_text()
    message = msg(f"--x\r\nContent-Type: text/plain\r\n\r\n{sdp}\r\n--x--\r\n")
    message.content_type = 'multipart/mixed;boundary="x"'
    out = refused(store, metrics_registry, message, 415, "without one")
    assert out.accept == ACCEPT


def test_other_methods_keep_their_non_sdp_bodies(store, metrics_registry):
    agw = Agw()
    edge = make_edge(store, metrics_registry, agw)
    for message in (msg("hello", method="MESSAGE"), msg(b"\xff\x00binary", method="INFO"),
                    msg("hello", request=False, status=200, side=Side.CORE, to_tag="t", method="MESSAGE")):
        message.content_type = "text/plain"
        assert not edge.handle(message).failed
    assert agw.requests == []


@pytest.mark.parametrize("status", [183, 200])
def test_an_answer_labelled_other_than_sdp_is_a_failed_answer(store, metrics_registry, status):
    """The core's SDP under another label would reach the WIC unconverted."""
    agw = Agw()
    edge = make_edge(store, metrics_registry, agw)
    message = msg("v=0\r\n", request=False, status=status, side=Side.CORE, to_tag="t")
    message.content_type = "application"
    out = edge.handle(message)
    assert out.failed and "must be SDP" in out.warning
    assert agw.requests == []


@pytest.mark.parametrize("count", ["2", "99999999999999999"])
def test_a_port_count_on_a_converted_stream_488(store, metrics_registry, count):
    """RFC 8866 5.14: m=<media> <port>/<number of ports>: the edge reserves one port (pair)
    per m-line, so a count naming more is refused, not copied to the other side."""
    sdp = (FIXTURES / "chromium_offer_audio.sdp").read_text()
    port = sdp.split("m=audio ", 1)[1].split(" ", 1)[0]
    sdp = sdp.replace(f"m=audio {port} ", f"m=audio {port}/{count} ", 1)
    refused(store, metrics_registry, msg(sdp), 488, f"port count /{count}")


def test_a_port_count_of_one_is_kept(store, metrics_registry):
    sdp = (FIXTURES / "chromium_offer_audio.sdp").read_text()
    port = sdp.split("m=audio ", 1)[1].split(" ", 1)[0]
    out = make_edge(store, metrics_registry).handle(msg(sdp.replace(f"m=audio {port} ", f"m=audio {port}/1 ", 1)))
    assert not out.failed and "/1 RTP/AVPF" in out.body


def test_a_warning_is_printable_whatever_the_reason_held(store, metrics_registry):
    """A reason quoting a peer's bytes (a NUL, a control character, quotes) still makes a
    valid Warning quoted-string (RFC 3261 20.43, 25.1), one Kamailio can add."""
    edge = make_edge(store, metrics_registry)
    warning = edge.warning('bad "token" a\x00b\x1b[31m\\ \u2028end')
    assert warning.startswith('399 127.0.0.1:5060 "') and warning.endswith('"')
    inner = warning[len('399 127.0.0.1:5060 "'):-1]
    assert inner.isprintable() and '"' not in inner and "\\" not in inner
    assert inner == "bad 'token' a b [31m/ end"
