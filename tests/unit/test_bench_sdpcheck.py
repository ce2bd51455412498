"""The call-setup benchmark's check that the edge and the reference did the same job on one call's SDPs.

The fixtures are the SDPs one probe call produced through each system
(tests/fixtures/bench/README.rst); each defect below is one the check must
name, made by changing one line of a good body.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import callsetup, sdpcheck

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "bench"


def _sdp(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode()


def _check(core: str | None, access: str) -> dict:
    return sdpcheck.check(core, access, callsetup.caller_offer(), callsetup.ACCESS_MEDIA, callsetup.CORE_MEDIA)


@pytest.mark.parametrize("system", ["edge", "reference"])
def test_both_systems_did_the_same_job(system):
    result = _check(_sdp(f"{system}_to_core.sdp"), _sdp(f"{system}_to_access.sdp"))
    assert result["ok"], result["problems"]
    seen = result["seen"]
    assert seen["core_proto"] == "RTP/AVPF" and seen["access_proto"] == "UDP/TLS/RTP/SAVPF"
    assert seen["access_setup"] == "active" and seen["access_ice_lite"] and seen["access_candidates"] == 1
    assert seen["core_formats"] == ["111", "0", "8", "126"]


def _swap(body: str, old: str, new: str) -> str:
    assert old in body, old
    return body.replace(old, new)


CORE = "reference_to_core.sdp"
ACCESS = "edge_to_access.sdp"


@pytest.mark.parametrize("side, old, new, problem", [
    (CORE, "RTP/AVPF", "UDP/TLS/RTP/SAVPF", "core: proto UDP/TLS/RTP/SAVPF, expected RTP/AVPF"),
    (CORE, "a=mid:0\r\n", "a=mid:0\r\na=tls-id:abc\r\n", "core: DTLS/ICE/SDES attributes left: tls-id"),
    (CORE, "a=mid:0\r\n", "a=mid:0\r\na=fingerprint:sha-256 AA\r\na=setup:actpass\r\n",
     "core: DTLS/ICE/SDES attributes left: fingerprint, setup"),
    (CORE, "a=mid:0\r\n", "a=mid:0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n",
     "core: DTLS/ICE/SDES attributes left: crypto"),
    (CORE, "c=IN IP4 127.0.0.2", "c=IN IP4 127.0.0.1", "core: media address 127.0.0.1, expected the relay's 127.0.0.2"),
    (CORE, "m=audio 46000 ", "m=audio 49152 ", "core: media port 49152 is the caller's own"),
    (ACCESS, "UDP/TLS/RTP/SAVPF", "RTP/AVPF", "access: proto RTP/AVPF, expected UDP/TLS/RTP/SAVPF"),
    (ACCESS, "a=ice-lite\r\n", "", "access: no a=ice-lite"),
    (ACCESS, "a=setup:active", "a=setup:actpass", "access: a=setup ['actpass'], expected one of active, passive"),
    (ACCESS, "a=rtcp-mux\r\n", "", "access: no a=rtcp-mux"),
    (ACCESS, "c=IN IP4 127.0.0.1", "c=IN IP4 127.0.0.3", "access: media address 127.0.0.3, expected the relay's 127.0.0.1"),
    (ACCESS, "a=sendrecv\r\n", "a=sendrecv\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n",
     "access: SDES a=crypto offered beside DTLS-SRTP"),
])
def test_each_defect_is_named(side, old, new, problem):
    core, access = _sdp(CORE), _sdp(ACCESS)
    if side == CORE:
        core = _swap(core, old, new)
    else:
        access = _swap(access, old, new)
    result = _check(core, access)
    assert not result["ok"] and result["problems"] == [problem]


def test_the_callers_own_fingerprint_and_candidate_coming_back_are_named():
    access = _sdp(ACCESS)
    own = next(line for line in access.split("\r\n") if line.startswith("a=fingerprint:"))
    caller = next(line for line in callsetup.caller_offer().split("\r\n") if line.startswith("a=fingerprint:"))
    candidate = next(line for line in access.split("\r\n") if line.startswith("a=candidate:"))
    access = _swap(_swap(access, own, caller), candidate, "a=candidate:1 1 udp 2122260223 127.0.0.1 49152 typ host")
    assert _check(_sdp(CORE), access)["problems"] == [
        "access: the caller's own fingerprint came back",
        "access: candidate 1 1 udp 2122260223 127.0.0.1 49152 typ host is not the relay's host address and port"]


def test_a_missing_offer_or_answer_line_is_named():
    assert _check(None, _sdp(ACCESS))["problems"] == ["core: the callee received no offer"]
    no_media = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    assert _check(_sdp(CORE), no_media)["problems"] == ["access: expected one m= line, found 0"]
    stripped = "".join(line + "\r\n" for line in _sdp(ACCESS).split("\r\n")
                       if line and not line.startswith(("a=fingerprint", "a=ice-ufrag", "a=candidate")))
    assert _check(_sdp(CORE), stripped)["problems"] == [
        "access: no a=fingerprint", "access: no ICE credentials (a=ice-ufrag, a=ice-pwd)", "access: no a=candidate"]


def test_kamcmd_shmmem_output_is_read():
    text = "{\n\ttotal: 67108784\n\tfree: 64595616\n\tused: 2472864\n\treal_used: 2513168\n" \
           "\tmax_used: 2513168\n\tfragments: 1\n}\n"
    assert callsetup.parse_shmmem(text) == {"total": 67108784, "free": 64595616, "used": 2472864,
                                            "real_used": 2513168, "max_used": 2513168, "fragments": 1}
