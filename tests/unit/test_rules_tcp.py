"""DTLS-SRTP over TCP: TS 23.334 5.11.2.5 (RFC 4571, RFC 6544, RFC 7850, RFC 8842), ALG side."""

from __future__ import annotations

import pytest

from sdp_rules import DialogState, Kind, Side
from iq import Command, Fingerprint, IqRequest, Role, StreamSpec, TerminationSpec

from tests.unit.rules_helpers import AGW_FP_TEXT, DIALOG, TlsIds, fixture, policy, run, sdp, unbundled

WIC_TLS_ID = "5b3a1f9e8c7d6b4a3f2e1d0c9b8a7f6e"
WIC_FP = Fingerprint(
    "sha-256", "D6:00:20:5D:63:4E:97:C0:63:C2:2F:48:FC:FF:08:4F:55:CE:79:FD:B9:FB:29:55:9F:3B:47:3B:DF:96:BB:E3"
)
CORE_ANSWER = sdp("""
    v=0
    o=core 3 3 IN IP4 192.0.2.70
    s=-
    c=IN IP4 192.0.2.70
    t=0 0
    m=audio 8000 RTP/AVPF 0 101
    a=rtpmap:0 PCMU/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
    a=sendrecv
""")


def _offer(pol, state=None, body=None):
    return run(body or fixture("srtp_over_tcp_offer.sdp"), Side.ACCESS, Kind.OFFER, state or DialogState(), pol)


@pytest.mark.req("TCP-1", "SRTP-4", "ICE-1", "MUX-1")
def test_tcp_dtls_offer_reserves_tcp_dtls_access_and_udp_core():
    ids = TlsIds()
    plan, result = _offer(policy(new_tls_id=ids))
    assert plan.iq == IqRequest(Command.RESERVE, DIALOG, "t1", [StreamSpec(
        stream_id=0,
        kind="srtp_tcp",
        access=TerminationSpec(
            side=Side.ACCESS,
            transport="TCP/DTLS/RTP/SAVPF",
            remote_address="127.0.0.1",
            remote_port=47213,
            rtcp_mux=True,
            remote_fingerprints=[WIC_FP],
            local_fingerprint_request=True,
            establish_tls=True,
            tls_role=Role.CLIENT,
            notify_tls_failure=True,
            ice_lite=True,
            remote_ice_ufrag="8hhY",
            remote_ice_pwd="asd88fgpdd777uzjYhagZg",
            remote_candidates=[
                "1 1 tcp 2128609535 127.0.0.1 47213 typ host tcptype passive",
                "2 1 tcp 2124414975 127.0.0.1 9 typ host tcptype active",
                "3 1 udp 2122260223 127.0.0.1 50906 typ host",
            ],
        ),
        # RTP over UDP toward the core (5.11.2.5).
        core=TerminationSpec(side=Side.CORE, transport="RTP/AVPF"),
        local_tls_id=ids.nth(1),
        remote_tls_id=WIC_TLS_ID,
    )])
    assert result.sdp == sdp("""
        v=0
        o=- 1052455641 1 IN IP4 127.0.0.1
        s=-
        t=0 0
        m=audio 30000 RTP/AVPF 0 8 101
        c=IN IP4 198.51.100.10
        a=rtcp-mux
        a=rtpmap:0 PCMU/8000
        a=rtpmap:8 PCMA/8000
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-15
        a=sendrecv
    """)


@pytest.mark.req("TCP-1", "TCP-3", "ICE-1")
def test_core_answer_back_to_tcp_dtls_with_passive_tcp_candidate_and_new_tls_id():
    ids = TlsIds()
    pol = policy(new_tls_id=ids)
    _, offered = _offer(pol)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    # RFC 6544: an ICE-lite agent offers passive TCP host candidates; priority
    # (126 << 24) | ((4 << 13 | 8191) << 8) | 255, below the UDP candidate's.
    assert answered.sdp == sdp(f"""
        v=0
        o=core 3 3 IN IP4 192.0.2.70
        s=-
        c=IN IP4 203.0.113.10
        t=0 0
        a=ice-lite
        m=audio 40000 TCP/DTLS/RTP/SAVPF 0 101
        a=rtpmap:0 PCMU/8000
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-15
        a=sendrecv
        a=rtcp-mux
        a=ice-ufrag:agwu0
        a=ice-pwd:agwpwd0xxxxxxxxxxxxxxxxx
        a=candidate:1 1 udp 2130706431 203.0.113.10 40000 typ host
        a=candidate:2 1 tcp 2124414975 203.0.113.10 40000 typ host tcptype passive
        a=end-of-candidates
        a=fingerprint:{AGW_FP_TEXT}
        a=setup:active
        a=tls-id:{ids.nth(1)}
    """)
    assert ids.nth(1) != WIC_TLS_ID
    assert 2124414975 == (126 << 24) | (((4 << 13) | 8191) << 8) | 255 < 2130706431


@pytest.mark.req("TCP-1", "ICE-1")
def test_udp_offer_with_tcp_candidates_gets_a_tcp_alternative():
    """5.11.2.5: TCP offered as an ICE alternative to UDP (Chromium's tcptype active candidates)."""
    pol = unbundled()
    plan, offered = run(fixture("chromium_offer_audio.sdp"), Side.ACCESS, Kind.OFFER, DialogState(), pol)
    assert plan.iq.streams[0].kind == "srtp"
    assert [c for c in plan.iq.streams[0].access.remote_candidates if " tcp " in c] == [
        "251294106 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active generation 0 network-id 1 network-cost 50"]
    answer = CORE_ANSWER.replace("RTP/AVPF 0 101", "RTP/AVPF 0")
    _, answered = run(answer, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert [line for line in answered.sdp.split("\r\n") if line.startswith("a=candidate")] == [
        "a=candidate:1 1 udp 2130706431 203.0.113.10 40000 typ host",
        "a=candidate:2 1 tcp 2124414975 203.0.113.10 40000 typ host tcptype passive",
    ]


@pytest.mark.req("TCP-1", "ICE-1")
def test_udp_only_candidates_get_no_tcp_candidate():
    pol = policy()
    body = fixture("chromium_offer_audio.sdp").replace(
        "a=candidate:251294106 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active generation 0 network-id 1"
        " network-cost 50\r\n", "")
    _, offered = run(body, Side.ACCESS, Kind.OFFER, DialogState(), pol)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert [line for line in answered.sdp.split("\r\n") if line.startswith("a=candidate")] == [
        "a=candidate:1 1 udp 2130706431 203.0.113.10 40000 typ host"]


@pytest.mark.req("TCP-3")
def test_tcp_reoffer_same_tls_id_keeps_new_tls_id_renews():
    ids = TlsIds()
    pol = policy(new_tls_id=ids)
    _, offered = _offer(pol)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    plan, offered = _offer(pol, answered.state)
    assert (plan.iq.command, plan.iq.streams[0].reuse_association, plan.iq.streams[0].local_tls_id,
            plan.iq.streams[0].access.establish_tls) == (Command.MODIFY, True, ids.nth(1), False)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    renewed = fixture("srtp_over_tcp_offer.sdp").replace(WIC_TLS_ID, "NewWicTlsIdDDDDDDDDDDDDD")
    plan, _ = _offer(pol, answered.state, renewed)
    assert (plan.iq.streams[0].reuse_association, plan.iq.streams[0].local_tls_id,
            plan.iq.streams[0].remote_tls_id, plan.iq.streams[0].access.establish_tls) == (
        False, ids.nth(2), "NewWicTlsIdDDDDDDDDDDDDD", True)


@pytest.mark.req("TCP-1")
@pytest.mark.parametrize("proto", ["TCP/TLS/RTP/SAVP", "TCP/TLS/RTP/SAVPF"])
def test_tcp_tls_is_not_dtls_srtp_and_passes_through(proto):
    """RFC 7850: TCP/TLS/... is RTP over TLS, not DTLS-SRTP; the AGW is not asked."""
    body = fixture("srtp_over_tcp_offer.sdp").replace("TCP/DTLS/RTP/SAVPF", proto)
    plan, result = run(body, Side.ACCESS, Kind.OFFER, DialogState(), policy())
    assert plan.iq is None
    assert [(d.kind, d.reason) for d in plan.streams] == [("passthrough", f"proto {proto} is not e2ae")]
    assert result.sdp == body


@pytest.mark.req("TCP-1", "TCP-3")
def test_core_reoffer_keeps_tcp_dtls_and_its_tcp_candidate():
    """A core re-offer (hold) on a DTLS-over-TCP stream keeps proto, tls-id and candidates."""
    ids = TlsIds()
    pol = policy(new_tls_id=ids)
    _, offered = _offer(pol)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    hold = CORE_ANSWER.replace("o=core 3 3", "o=core 3 4").replace("a=sendrecv", "a=sendonly")
    plan, offered = run(hold, Side.CORE, Kind.OFFER, answered.state, pol, transaction="t2")
    spec = plan.iq.streams[0]
    assert (spec.kind, spec.access, spec.reuse_association, spec.local_tls_id) == (
        "srtp_tcp", None, True, ids.nth(1))
    assert offered.sdp == sdp(f"""
        v=0
        o=core 3 4 IN IP4 192.0.2.70
        s=-
        c=IN IP4 203.0.113.10
        t=0 0
        a=ice-lite
        m=audio 40000 TCP/DTLS/RTP/SAVPF 0 101
        a=rtpmap:0 PCMU/8000
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-15
        a=sendonly
        a=rtcp-mux
        a=ice-ufrag:agwu0
        a=ice-pwd:agwpwd0xxxxxxxxxxxxxxxxx
        a=candidate:1 1 udp 2130706431 203.0.113.10 40000 typ host
        a=candidate:2 1 tcp 2124414975 203.0.113.10 40000 typ host tcptype passive
        a=end-of-candidates
        a=fingerprint:{AGW_FP_TEXT}
        a=setup:active
        a=tls-id:{ids.nth(1)}
    """)


@pytest.mark.req("TCP-1", "ICE-1")
def test_tcp_dtls_offer_without_tcp_candidates_still_gets_the_passive_tcp_candidate():
    """The m-line's proto says TCP (RFC 7850): the answer carries the passive TCP candidate anyway."""
    body = "".join(line for line in fixture("srtp_over_tcp_offer.sdp").splitlines(keepends=True)
                   if " tcp " not in line)
    pol = policy()
    _, offered = _offer(pol, body=body)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert "a=candidate:2 1 tcp 2124414975 203.0.113.10 40000 typ host tcptype passive" in answered.sdp.split("\r\n")


SECRETS = ("a=fingerprint", "a=ice-pwd", "a=ice-ufrag", "a=candidate", "a=tls-id")


@pytest.mark.parametrize("media", ["", "m=audio 49152 RTP/AVP 0\r\n", "m=audio 0 UDP/TLS/RTP/SAVPF 0\r\n",
                                   "m=audio 49152 RTP/65536 0\r\n", "m=audio 49152 UDP/TLS/RTP/SATPF 0\r\n"])
def test_the_wics_ice_and_dtls_attributes_never_reach_the_core_on_what_passes_through(media):
    """An offer with no m-line the edge terminates (none at all, a plain RTP one, a
    rejected one) still loses the WIC's ICE and DTLS attributes toward the core: at
    session level and on the m-lines passed through."""
    body = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "a=ice-ufrag:8hhY\r\na=ice-pwd:asd88fgpdd777uzjYhagZg0mq\r\n"
            f"a=fingerprint:sha-256 {AGW_FP_TEXT}\r\n{media}")
    if media:
        body += ("a=candidate:1 1 udp 2122260223 127.0.0.1 49152 typ host\r\n"
                 "a=ice-pwd:asd88fgpdd777uzjYhagZg0mq\r\na=tls-id:6ba1e1b4d7c5a3f2e0d9c8b7a6f5e4d3\r\n"
                 f"a=fingerprint:sha-256 {AGW_FP_TEXT}\r\n")
    plan, result = run(body, Side.ACCESS, Kind.OFFER, DialogState(), policy())
    assert plan.iq is None
    assert [line for line in result.sdp.splitlines() if line.startswith(SECRETS)] == []
    assert [line for line in result.sdp.splitlines() if line.startswith("m=")] == [media.strip()] * bool(media)
