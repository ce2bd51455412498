"""plugin.profile: the RTP profile of offers toward the core (avpf | avp | auto)."""

from __future__ import annotations

import pytest

from plugin.profile import CoreRtpProfile, as_avp, offer_now, retry_as_avp

OFFER = ("v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
         "m=audio 40000 RTP/AVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n"
         "a=rtpmap:0 PCMU/8000\r\na=x-unknown:kept\r\na=rtcp-mux\r\n"
         "m=video 0 RTP/AVPF 96\r\na=rtcp-fb:96 nack\r\n"
         "m=application 40002 TCP/MSRP *\r\na=path:msrp://127.0.0.2:40002/x;tcp\r\n")


def test_as_avp_changes_only_the_avpf_lines_proto_and_their_feedback():
    out = as_avp(OFFER)
    assert "m=audio 40000 RTP/AVP 111 0\r\n" in out
    assert "a=rtcp-fb:111" not in out
    # A rejected line is left as it is (RFC 3264 6: its proto is not negotiated).
    assert "m=video 0 RTP/AVPF 96\r\na=rtcp-fb:96 nack\r\n" in out
    assert out.replace("m=audio 40000 RTP/AVP ", "m=audio 40000 RTP/AVPF ").replace(
        "a=rtpmap:111 opus/48000/2\r\n", "a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n") == OFFER


def test_as_avp_of_an_offer_without_avpf_is_none():
    assert as_avp(OFFER.replace("RTP/AVPF 111", "RTP/AVP 111")) is None


@pytest.mark.parametrize("profile, converted", [(CoreRtpProfile.AVPF, False), (CoreRtpProfile.AUTO, False),
                                                (CoreRtpProfile.AVP, True)])
def test_offer_now_only_under_avp(profile, converted):
    assert (offer_now(profile, OFFER) is not None) is converted


@pytest.mark.parametrize("profile, status, retried, expected", [
    (CoreRtpProfile.AUTO, 488, False, True),
    (CoreRtpProfile.AUTO, 488, True, False),  # once
    (CoreRtpProfile.AUTO, 486, False, False),
    (CoreRtpProfile.AUTO, 415, False, False),
    (CoreRtpProfile.AVPF, 488, False, False),
    (CoreRtpProfile.AVP, 488, False, False),
])
def test_retry_as_avp_only_after_a_488_under_auto_once(profile, status, retried, expected):
    assert retry_as_avp(profile, status, retried) is expected
