"""The SIP fuzz's judge of what reaches the WIC (``tests.sipfuzz.harness.Fuzz.inspect``)."""

from __future__ import annotations

import types

import pytest

from tests.sipfuzz.harness import Fuzz, Msg

WIC = types.SimpleNamespace(name="wic")


def ok(mline: str, extra: str = "", warning: str = "") -> Msg:
    """A 200 with ``mline`` (characters up to U+00FF stand for one byte each)."""
    body = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
            f"{mline}\r\n{extra}")
    head = ("SIP/2.0 200 OK\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
            + (f"Warning: 399 edge \"{warning}\"\r\n" if warning else "")
            + f"Content-Length: {len(body)}\r\n\r\n")
    msg = Msg.parse((head + body).encode("latin-1"), ("127.0.0.1", 5060))
    assert msg is not None
    return msg


def judged(msg: Msg) -> list[str]:
    fuzz = Fuzz(None, "judge", log=lambda *_: None)
    fuzz.current["c1"] = 1
    fuzz.inspect(WIC, msg)
    return [v.kind for v in fuzz.stats.violations]


@pytest.mark.parametrize("mline", [
    "m=audio 4000 UDP/TLS/RTP/SAVPF 111",
    "m=audio 4000 udp/tls/rtp/savp 0",
    "m=image 4000 UDP/TLS/UDPTL t38",
    "m=application 4000 UDP/DTLS/SCTP webrtc-datachannel",
])
def test_a_protected_profile_without_the_edges_fingerprint_is_unconverted(mline):
    assert judged(ok(mline)) == ["unconverted_to_access"]
    assert judged(ok(mline, "a=fingerprint:sha-256 AA:BB\r\n")) == []
    assert judged(ok(mline, warning="answer not converted")) == []


@pytest.mark.parametrize("mline", [
    "m=audio 4000 UDP/TLS/RTP/SAVRF 111",  # a profile the edge does not know: passed through as it is
    "m=audio 4000 RTP/AVP 0",  # plain media the WIC asked for itself
    "m=audio 0 UDP/TLS/RTP/SAVPF 111",  # rejected: nothing to protect
    "m=audio 4000 UDP/TLS/RTP/SAV\x80F 111",  # a mutated profile, not UTF-8
    "m=application 4000 UDP/DTLS/SCTP webrtc-datqchannel",  # an SCTP usage the edge does not know
])
def test_nothing_to_protect_is_not_unconverted(mline):
    assert judged(ok(mline)) == []


def test_an_exception_out_of_the_plugin_is_a_violation_named_by_its_last_line():
    from tests.sipfuzz.harness import plugin_exceptions

    log = (" 7(2455) ERROR: app_python3 [python_support.c:156]: python_handle_exception(): apy_exec: "
           "ksr_onreply_edge((null)): Unhandled exception in the Python code:\n"
           "Traceback (most recent call last):\n"
           '  File "plugin/kemi.py", line 247, in _message\n'
           "    cseq=int(cseq or 0),\n"
           "ValueError: invalid literal for int() with base 10: 'abc'\n"
           " 6(2454) INFO: <core> [core/kemi.c:106]: sr_kemi_core_info(): e2ae: INFO refused: a ValueError\n")
    assert plugin_exceptions(log) == ["ValueError: invalid literal for int() with base 10: 'abc'"]
    assert plugin_exceptions(log.replace("Unhandled exception", "Handled")) == []
