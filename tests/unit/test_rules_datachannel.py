"""WebRTC data channels: TS 23.334 5.20.2.2 (RFC 8841, 8864, 8873, 8865), ALG side.

Golden pairs through :func:`sdp_rules.process`: an offer or answer in, the
whole forwarded SDP out, and the Iq request compared as dataclasses (every IE).
The AGW is not under test: :func:`agw_reply` answers from the stream ids only.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sdp_rules
from sdp_rules import BundlePolicy, DialogState, Kind, Policy, SdpPolicyError, Side
from sdp_rules import datachannel
from sdp_rules.datachannel import CHANNEL_BASE
from iq import (
    Command,
    DcMap,
    Fingerprint,
    IqReply,
    IqRequest,
    Role,
    StreamReply,
    StreamSpec,
    TerminationReply,
    TerminationSpec,
)
from sdp_rules.attrs import host_candidates
from sdp_rules.plan import ActpassPolicy
from sdp_rules.sdp import parse

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sdp"
DIALOG = "dlg-dc"
AGW_ACCESS = "203.0.113.10"
AGW_CORE = "198.51.100.10"
AGW_FP = Fingerprint("sha-256", ":".join(f"{b:02X}" for b in range(0xA0, 0xC0)))
AGW_FP_TEXT = str(AGW_FP)
AGW_SCTP_PORT = 5000
AGW_MMS = 262144
WIC_FP = Fingerprint(
    "sha-256", "D6:00:20:5D:63:4E:97:C0:63:C2:2F:48:FC:FF:08:4F:55:CE:79:FD:B9:FB:29:55:9F:3B:47:3B:DF:96:BB:E3"
)
WIC_FP_TEXT = str(WIC_FP)


# ---------------------------------------------------------------------------
# A deterministic fake AGW and helpers
# ---------------------------------------------------------------------------

def access_port(sid: int) -> int:
    return 40000 + 2 * sid


def core_port(iq_id: int) -> int:
    """Core port of a channel: 30000 + 2 * SCTP stream id (+1000 per data-channel m-line)."""
    return 30000 + 2 * (iq_id % CHANNEL_BASE) + 1000 * (iq_id // CHANNEL_BASE - 1)


def ch(sid: int, stream_id: int) -> int:
    return CHANNEL_BASE * (sid + 1) + stream_id


def agw_reply(request: IqRequest) -> IqReply:
    """Access: the association's address/port, ICE credentials, and -- when asked for --
    the fingerprint, SCTP port and max-message-size.  Core: one port per channel
    (RTCP on the next port for RTP)."""
    streams = []
    for spec in request.streams:
        access = core = None
        if spec.kind != "dc_channel" and spec.access is not None:
            asked = spec.access
            access = TerminationReply(
                local_address=AGW_ACCESS, local_port=access_port(spec.stream_id),
                local_fingerprint=AGW_FP if asked and asked.local_fingerprint_request else None,
                ice_ufrag=f"agwu{spec.stream_id}", ice_pwd=f"agwpwd{spec.stream_id}".ljust(24, "x"),
                local_sctp_port=AGW_SCTP_PORT if asked and asked.local_sctp_port_request else None,
                local_max_message_size=AGW_MMS if asked and asked.local_max_message_size_request else None,
            )
        if spec.core is not None:
            port = core_port(spec.stream_id)
            rtp = spec.core.transport.startswith("RTP/")
            core = TerminationReply(local_address=AGW_CORE, local_port=port,
                                    local_rtcp_port=port + 1 if rtp else None)
        streams.append(StreamReply(spec.stream_id, access, core))
    return IqReply(request.dialog, request.transaction, streams)


class TlsIds:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return self.nth(self.count)

    @staticmethod
    def nth(n: int) -> str:
        return f"dcTlsId{n:013d}"


def policy(**kwargs) -> Policy:
    kwargs.setdefault("new_tls_id", TlsIds())
    return Policy(**kwargs)


def unbundled(**kwargs) -> Policy:
    """``[policy] bundle = off``: the data-channel line has a transport of its own (the
    subject of these tests); a bundled one is in ``test_rules_bundle.py``."""
    return policy(bundle=BundlePolicy.OFF, **kwargs)


def run(body: str, origin: Side, kind: Kind, state: DialogState, pol: Policy):
    plan = sdp_rules.process(body, origin=origin, kind=kind, state=state, dialog=DIALOG,
                             transaction="t1", policy=pol)
    return plan, plan.finish(agw_reply(plan.iq) if plan.iq is not None else None)


def sdp(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines()]
    return "\r\n".join(line for line in lines if line) + "\r\n"


def fixture(name: str, fallback: str) -> str:
    """A fixture from tests/fixtures/sdp when present, else the inline copy."""
    path = FIXTURES / name
    if path.exists():
        with open(path, encoding="ascii", newline="") as f:
            return f.read()
    return sdp(fallback)


MSRP_OFFER = fixture("datachannel_msrp_offer.sdp", f"""
    v=0
    o=- 4232740119 1 IN IP4 127.0.0.1
    s=-
    t=0 0
    m=application 10001 UDP/DTLS/SCTP webrtc-datachannel
    c=IN IP4 127.0.0.1
    a=max-message-size:100000
    a=sctp-port:5000
    a=setup:actpass
    a=fingerprint:{WIC_FP_TEXT}
    a=tls-id:abc3de65cddef001be82
    a=dcmap:0 label="chat";subprotocol="msrp"
    a=dcsa:0 msrp-cema
    a=dcsa:0 accept-types:message/cpim text/plain
    a=dcsa:0 path:msrp://alice.example.com:10001/2s93i93idj;dc
""")

T140_OFFER = fixture("datachannel_t140_offer.sdp", f"""
    v=0
    o=- 3840232462 1 IN IP4 127.0.0.1
    s=-
    t=0 0
    m=application 911 UDP/DTLS/SCTP webrtc-datachannel
    c=IN IP4 127.0.0.1
    a=max-message-size:1000
    a=sctp-port:5000
    a=setup:actpass
    a=fingerprint:{WIC_FP_TEXT}
    a=tls-id:4a756565cddef001be82
    a=dcmap:1 label="text";subprotocol="t140"
    a=dcsa:1 fmtp:- cps=20
    a=dcsa:1 hlang-send:en
    a=dcsa:1 hlang-recv:en
""")

CORE_MSRP_OFFER = fixture("core_msrp_offer.sdp", """
    v=0
    o=core 2890844526 2890844527 IN IP4 127.0.0.1
    s=-
    c=IN IP4 127.0.0.1
    t=0 0
    m=message 7394 TCP/MSRP *
    a=accept-types:message/cpim text/plain
    a=path:msrp://127.0.0.1:7394/jshA7weztas;tcp
    a=setup:actpass
    a=connection:new
    a=sendrecv
""")

CORE_T140_OFFER = fixture("core_t140_offer.sdp", """
    v=0
    o=core 2890844526 2890844526 IN IP4 127.0.0.1
    s=-
    c=IN IP4 127.0.0.1
    t=0 0
    m=text 11000 RTP/AVP 98 100
    a=rtpmap:98 t140/1000
    a=fmtp:98 cps=30
    a=rtpmap:100 red/1000
    a=fmtp:100 98/98/98
    a=sendrecv
""")

# A browser-style offer: ICE, mid, MSRP and T.140 channels, and a BFCP channel
# the edge cannot interwork.
WIC_OFFER = sdp(f"""
    v=0
    o=- 7046312839584755208 2 IN IP4 127.0.0.1
    s=-
    t=0 0
    a=group:BUNDLE 0
    m=application 52342 UDP/DTLS/SCTP webrtc-datachannel
    c=IN IP4 192.0.2.20
    a=candidate:1 1 udp 2122260223 192.0.2.20 52342 typ host
    a=ice-ufrag:wicU
    a=ice-pwd:wicPasswordwicPassword12
    a=ice-options:trickle
    a=fingerprint:{WIC_FP_TEXT}
    a=setup:actpass
    a=tls-id:wicTlsIdwicTlsId0001
    a=mid:0
    a=sctp-port:5000
    a=max-message-size:262144
    a=dcmap:0 label="chat";subprotocol="msrp"
    a=dcsa:0 msrp-cema
    a=dcsa:0 accept-types:message/cpim text/plain
    a=dcsa:0 max-size:65536
    a=dcsa:0 path:msrp://wic.example.org:52342/9di4eae923wzd;dc
    a=dcmap:2 label="rtt";subprotocol="t140"
    a=dcsa:2 fmtp:- cps=30
    a=dcsa:2 hlang-send:de
    a=dcmap:4 label="floor";subprotocol="bfcp";max-retr=3
""")

WIC_CHANNEL_MSRP = DcMap(stream_id=0, label="chat", subprotocol="msrp")
WIC_CHANNEL_T140 = DcMap(stream_id=2, label="rtt", subprotocol="t140")

WIC_OFFER_TO_CORE = sdp("""
    v=0
    o=- 7046312839584755208 2 IN IP4 127.0.0.1
    s=-
    t=0 0
    m=message 30000 TCP/MSRP *
    c=IN IP4 198.51.100.10
    a=msrp-cema
    a=accept-types:message/cpim text/plain
    a=max-size:65536
    a=path:msrp://198.51.100.10:30000/9di4eae923wzd;tcp
    a=setup:passive
    a=connection:new
    m=text 30004 RTP/AVP 98 100
    c=IN IP4 198.51.100.10
    a=rtpmap:98 t140/1000
    a=fmtp:98 cps=30
    a=rtpmap:100 red/1000
    a=fmtp:100 98/98/98
    a=hlang-send:de
""")

CORE_ANSWER = sdp("""
    v=0
    o=core 1 1 IN IP4 192.0.2.50
    s=-
    c=IN IP4 192.0.2.50
    t=0 0
    m=message 9 TCP/MSRP *
    a=accept-types:message/cpim text/plain
    a=path:msrp://192.0.2.50:2855/aXfs92kd;tcp
    a=setup:active
    a=connection:new
    m=text 6000 RTP/AVP 98 100
    a=rtpmap:98 t140/1000
    a=fmtp:98 cps=30
    a=rtpmap:100 red/1000
    a=fmtp:100 98/98/98
    a=hlang-recv:de
""")


def _wic_offer(pol: Policy, body: str = WIC_OFFER, state: DialogState | None = None):
    return run(body, Side.ACCESS, Kind.OFFER, state or DialogState(), pol)


def _wic_call(pol: Policy):
    """WIC offer + core answer: the established state."""
    _, offered = _wic_offer(pol)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    return answered


# ---------------------------------------------------------------------------
# DC-1: which lines are data channels
# ---------------------------------------------------------------------------

def _m(text: str):
    return parse(sdp(f"v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nt=0 0\n{text}")).media[0]


@pytest.mark.req("DC-1")
def test_classify_access_udp_mandatory_tcp_accepted_legacy_refused():
    assert datachannel.classify_access(_m("m=application 9 UDP/DTLS/SCTP webrtc-datachannel"))
    assert datachannel.classify_access(_m("m=application 9 TCP/DTLS/SCTP webrtc-datachannel"))
    assert not datachannel.classify_access(_m("m=application 9 DTLS/SCTP 5000"))
    assert not datachannel.classify_access(_m("m=application 9 UDP/DTLS/SCTP bfcp"))
    assert not datachannel.classify_access(_m("m=audio 9 UDP/TLS/RTP/SAVPF 0"))


@pytest.mark.req("DC-5", "DC-8")
def test_classify_core_msrp_and_t140_only():
    assert datachannel.classify_core(_m("m=message 7394 TCP/MSRP *"))
    assert datachannel.classify_core(_m("m=text 11000 RTP/AVP 98\na=rtpmap:98 T140/1000"))
    assert not datachannel.classify_core(_m("m=message 7394 TCP/TLS/MSRP *"))
    assert not datachannel.classify_core(_m("m=text 11000 RTP/AVP 98\na=rtpmap:98 red/1000"))
    assert not datachannel.classify_core(_m("m=audio 11000 RTP/AVP 0"))


@pytest.mark.req("DC-1", "DC-3")
def test_tcp_dtls_sctp_offer_is_accepted_with_tcp_transport():
    body = WIC_OFFER.replace("UDP/DTLS/SCTP", "TCP/DTLS/SCTP")
    ids = TlsIds()
    pol = policy(new_tls_id=ids)
    plan, offered = _wic_offer(pol, body)
    assert plan.iq.streams[0].access.transport == "TCP/DTLS/SCTP"
    assert [s.access.transport for s in plan.iq.streams[1:]] == ["TCP/DTLS/SCTP"] * 2
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    # ICE-TCP (RFC 6544) host candidates as the SRTP-over-TCP lines get them.
    candidates = host_candidates(TerminationReply(local_address=AGW_ACCESS, local_port=40000), tcp=True)
    assert answered.sdp.split("\r\nm=", 1)[1] == sdp(f"""
        application 40000 TCP/DTLS/SCTP webrtc-datachannel
        a=mid:0
        a=ice-ufrag:agwu0
        a=ice-pwd:agwpwd0xxxxxxxxxxxxxxxxx
        a=candidate:{candidates[0]}
        a=candidate:{candidates[1]}
        a=end-of-candidates
        a=fingerprint:{AGW_FP_TEXT}
        a=setup:active
        a=tls-id:{ids.nth(1)}
        a=sctp-port:5000
        a=max-message-size:262144
    """) + WIC_ANSWER_FROM_CORE.split("a=max-message-size:262144\r\n")[1]
    assert [c.split(" ")[2] for c in candidates] == ["udp", "tcp"]


# ---------------------------------------------------------------------------
# DC-2..DC-6: offer from the WIC
# ---------------------------------------------------------------------------

@pytest.mark.req("DC-2", "DC-3", "DC-5", "DC-6", "ICE-1")
def test_wic_offer_new_association_one_core_line_per_channel():
    ids = TlsIds()
    plan, result = _wic_offer(unbundled(new_tls_id=ids))
    assert plan.iq == IqRequest(Command.RESERVE, DIALOG, "t1", [
        StreamSpec(
            stream_id=0, kind="sctp",
            access=TerminationSpec(
                side=Side.ACCESS, transport="UDP/DTLS/SCTP", remote_address="192.0.2.20", remote_port=52342,
                remote_fingerprints=[WIC_FP], local_fingerprint_request=True,
                establish_tls=True, tls_role=Role.CLIENT,  # actpass, default policy: AGW is DTLS client
                notify_tls_failure=True, notify_tls_establishment=False,
                ice_lite=True, remote_ice_ufrag="wicU", remote_ice_pwd="wicPasswordwicPassword12",
                remote_candidates=["1 1 udp 2122260223 192.0.2.20 52342 typ host"],
                remote_sctp_port=5000, remote_max_message_size=262144,
                local_sctp_port_request=True, local_max_message_size_request=True,
                establish_sctp=True, notify_stream_reset=True, sctp_stream_ids=[0, 2],
            ),
            local_tls_id=ids.nth(1), remote_tls_id="wicTlsIdwicTlsId0001", reuse_association=False,
        ),
        StreamSpec(
            stream_id=ch(0, 0), kind="dc_channel", group=0,
            access=TerminationSpec(
                side=Side.ACCESS, transport="UDP/DTLS/SCTP", dcmap=WIC_CHANNEL_MSRP,
                remote_dcsa=["msrp-cema", "accept-types:message/cpim text/plain", "max-size:65536",
                             "path:msrp://wic.example.org:52342/9di4eae923wzd;dc"],
            ),
            core=TerminationSpec(side=Side.CORE, transport="TCP"),
        ),
        StreamSpec(
            stream_id=ch(0, 2), kind="dc_channel", group=0,
            access=TerminationSpec(
                side=Side.ACCESS, transport="UDP/DTLS/SCTP", dcmap=WIC_CHANNEL_T140,
                remote_dcsa=["fmtp:- cps=30", "hlang-send:de"],
            ),
            core=TerminationSpec(side=Side.CORE, transport="RTP/AVP"),
        ),
    ])
    # One m= line per interworked channel; the BFCP channel is not forwarded;
    # no setup/connection/dcmap/dcsa/fingerprint/tls-id/ICE/SCTP attribute of the WIC's.
    assert result.sdp == WIC_OFFER_TO_CORE
    assert [(d.index, d.kind, d.stream_ids) for d in plan.streams] == [(0, "datachannel", [0, ch(0, 0), ch(0, 2)])]
    assert result.state.data["map"] == {"0": {"handler": "datachannel", "core": {"ch0.msrp": 0, "ch2.t140": 1}}}


@pytest.mark.req("DC-2", "DC-3", "DC-5", "DC-6")
def test_rfc8873_msrp_offer_fixture():
    ids = TlsIds()
    plan, result = _wic_offer(policy(actpass=ActpassPolicy.PASSIVE, new_tls_id=ids), MSRP_OFFER)
    assert plan.iq == IqRequest(Command.RESERVE, DIALOG, "t1", [
        StreamSpec(
            stream_id=0, kind="sctp",
            access=TerminationSpec(
                side=Side.ACCESS, transport="UDP/DTLS/SCTP", remote_address="127.0.0.1", remote_port=10001,
                remote_fingerprints=[WIC_FP], local_fingerprint_request=True,
                establish_tls=False, tls_role=Role.SERVER,  # passive policy: the AGW waits
                notify_tls_failure=True, notify_tls_establishment=True,
                ice_lite=False, remote_sctp_port=5000, remote_max_message_size=100000,
                local_sctp_port_request=True, local_max_message_size_request=True,
                establish_sctp=False, notify_stream_reset=True, sctp_stream_ids=[0],
            ),
            local_tls_id=ids.nth(1), remote_tls_id="abc3de65cddef001be82",
        ),
        StreamSpec(
            stream_id=ch(0, 0), kind="dc_channel", group=0,
            access=TerminationSpec(
                side=Side.ACCESS, transport="UDP/DTLS/SCTP", dcmap=WIC_CHANNEL_MSRP,
                remote_dcsa=["msrp-cema", "accept-types:message/cpim text/plain",
                             "path:msrp://alice.example.com:10001/2s93i93idj;dc"],
            ),
            core=TerminationSpec(side=Side.CORE, transport="TCP"),
        ),
    ])
    assert result.sdp == sdp("""
        v=0
        o=- 4232740119 1 IN IP4 127.0.0.1
        s=-
        t=0 0
        m=message 30000 TCP/MSRP *
        c=IN IP4 198.51.100.10
        a=msrp-cema
        a=accept-types:message/cpim text/plain
        a=path:msrp://198.51.100.10:30000/2s93i93idj;tcp
        a=setup:passive
        a=connection:new
    """)


@pytest.mark.req("DC-3", "DC-5", "DC-6")
def test_rfc8865_t140_offer_fixture():
    ids = TlsIds()
    plan, result = _wic_offer(policy(new_tls_id=ids), T140_OFFER)
    assert plan.iq.streams[0].access.remote_max_message_size == 1000
    assert plan.iq.streams[0].access.sctp_stream_ids == [1]
    assert plan.iq.streams[1:] == [StreamSpec(
        stream_id=ch(0, 1), kind="dc_channel", group=0,
        access=TerminationSpec(
            side=Side.ACCESS, transport="UDP/DTLS/SCTP", dcmap=DcMap(stream_id=1, label="text", subprotocol="t140"),
            remote_dcsa=["fmtp:- cps=20", "hlang-send:en", "hlang-recv:en"],
        ),
        core=TerminationSpec(side=Side.CORE, transport="RTP/AVP"),
    )]
    assert result.sdp == sdp("""
        v=0
        o=- 3840232462 1 IN IP4 127.0.0.1
        s=-
        t=0 0
        m=text 30002 RTP/AVP 98 100
        c=IN IP4 198.51.100.10
        a=rtpmap:98 t140/1000
        a=fmtp:98 cps=20
        a=rtpmap:100 red/1000
        a=fmtp:100 98/98/98
        a=hlang-send:en
        a=hlang-recv:en
    """)


@pytest.mark.req("DC-3")
def test_rfc8841_defaults_when_sctp_port_and_max_message_size_are_absent():
    body = "".join(line + "\r\n" for line in MSRP_OFFER.split("\r\n")[:-1]
                   if not line.startswith(("a=sctp-port", "a=max-message-size")))
    plan, _ = _wic_offer(policy(), body)
    access = plan.iq.streams[0].access
    assert (access.remote_sctp_port, access.remote_max_message_size) == (5000, 65536)


@pytest.mark.req("DC-1", "DC-5")
def test_chromium_dcep_only_data_channel_goes_to_the_core_rejected():
    body = fixture("chromium_offer_audio_video_data.sdp", "")
    plan, result = _wic_offer(unbundled(), body)
    assert [s.kind for s in plan.iq.streams] == ["srtp", "srtp"]
    assert [(d.index, d.kind, d.stream_ids) for d in plan.streams][2] == (2, "datachannel", [])
    assert result.sdp.endswith("\r\nm=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n")
    answer = sdp("""
        v=0
        o=core 1 1 IN IP4 192.0.2.50
        s=-
        c=IN IP4 192.0.2.50
        t=0 0
        m=audio 6000 RTP/AVPF 111
        a=rtpmap:111 opus/48000/2
        m=video 6002 RTP/AVPF 96
        a=rtpmap:96 VP8/90000
        m=application 0 UDP/DTLS/SCTP webrtc-datachannel
    """)
    plan, answered = run(answer, Side.CORE, Kind.ANSWER, result.state, unbundled())
    assert plan.iq.release_streams == []
    assert answered.sdp.endswith("\r\nm=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n")


# ---------------------------------------------------------------------------
# DC-7: the core's answer
# ---------------------------------------------------------------------------

WIC_ANSWER_FROM_CORE = sdp(f"""
    v=0
    o=core 1 1 IN IP4 192.0.2.50
    s=-
    c=IN IP4 203.0.113.10
    t=0 0
    a=ice-lite
    m=application 40000 UDP/DTLS/SCTP webrtc-datachannel
    a=mid:0
    a=ice-ufrag:agwu0
    a=ice-pwd:agwpwd0xxxxxxxxxxxxxxxxx
    a=candidate:1 1 udp 2130706431 203.0.113.10 40000 typ host
    a=end-of-candidates
    a=fingerprint:{AGW_FP_TEXT}
    a=setup:active
    a=tls-id:{TlsIds.nth(1)}
    a=sctp-port:5000
    a=max-message-size:262144
    a=dcmap:0 label="chat";subprotocol="msrp"
    a=dcsa:0 msrp-cema
    a=dcsa:0 accept-types:message/cpim text/plain
    a=dcsa:0 path:msrp://203.0.113.10:40000/aXfs92kd;dc
    a=dcmap:2 label="rtt";subprotocol="t140"
    a=dcsa:2 fmtp:- cps=30
    a=dcsa:2 hlang-recv:de
""")


@pytest.mark.req("DC-7", "ICE-1")
def test_core_answer_becomes_one_data_channel_line():
    ids = TlsIds()
    pol = unbundled(new_tls_id=ids)
    _, offered = _wic_offer(pol)
    plan, result = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert plan.iq == IqRequest(Command.MODIFY, DIALOG, "t1", [
        StreamSpec(
            stream_id=ch(0, 0), kind="dc_channel", group=0,
            access=TerminationSpec(
                side=Side.ACCESS, transport="UDP/DTLS/SCTP", dcmap=WIC_CHANNEL_MSRP,
                local_dcsa=["msrp-cema", "accept-types:message/cpim text/plain",
                            "path:msrp://203.0.113.10:40000/aXfs92kd;dc"],
            ),
            # a=setup:active from the core: it connects, the AGW listens (no remote port).
            core=TerminationSpec(
                side=Side.CORE, transport="TCP", remote_address="192.0.2.50", remote_port=None,
                remote_dcsa=["accept-types:message/cpim text/plain", "path:msrp://192.0.2.50:2855/aXfs92kd;tcp"],
            ),
        ),
        StreamSpec(
            stream_id=ch(0, 2), kind="dc_channel", group=0,
            access=TerminationSpec(
                side=Side.ACCESS, transport="UDP/DTLS/SCTP", dcmap=WIC_CHANNEL_T140,
                local_dcsa=["fmtp:- cps=30", "hlang-recv:de"],
            ),
            core=TerminationSpec(
                side=Side.CORE, transport="RTP/AVP", remote_address="192.0.2.50", remote_port=6000,
                remote_rtcp_port=6001,
                remote_dcsa=["rtpmap:98 t140/1000", "fmtp:98 cps=30", "rtpmap:100 red/1000", "fmtp:100 98/98/98"],
            ),
        ),
    ])
    # Our tls-id, setup:active (AGW client), AGW SCTP values; the BFCP channel refused by omission.
    assert result.sdp == WIC_ANSWER_FROM_CORE
    state = result.state.data["streams"]
    assert state["0"]["channels"] == [ch(0, 0), ch(0, 2)]


@pytest.mark.req("DC-7")
def test_core_rejects_one_channel_its_dcmap_is_left_out_and_released():
    pol = unbundled()
    _, offered = _wic_offer(pol)
    answer = CORE_ANSWER.replace("m=text 6000 RTP/AVP 98 100", "m=text 0 RTP/AVP 98 100")
    plan, result = run(answer, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert plan.iq.release_streams == [ch(0, 2)]
    assert [s.stream_id for s in plan.iq.streams] == [ch(0, 0)]
    assert result.sdp == "".join(
        line + "\r\n" for line in WIC_ANSWER_FROM_CORE.split("\r\n")[:-1]
        if not line.startswith(("a=dcmap:2", "a=dcsa:2"))
    )
    assert str(ch(0, 2)) not in result.state.data["streams"]


@pytest.mark.req("DC-7")
def test_core_rejects_every_channel_the_line_is_rejected_and_all_released():
    pol = unbundled()
    _, offered = _wic_offer(pol)
    answer = CORE_ANSWER.replace("m=text 6000", "m=text 0").replace("m=message 9", "m=message 0")
    plan, result = run(answer, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert plan.iq == IqRequest(Command.MODIFY, DIALOG, "t1", [], [0, ch(0, 0), ch(0, 2)])
    assert result.sdp == sdp("""
        v=0
        o=core 1 1 IN IP4 192.0.2.50
        s=-
        c=IN IP4 192.0.2.50
        t=0 0
        m=application 0 UDP/DTLS/SCTP webrtc-datachannel
        a=mid:0
    """)
    assert result.state.data["streams"] == {}


# ---------------------------------------------------------------------------
# Re-offers from the WIC (DC-2, DC-4)
# ---------------------------------------------------------------------------

@pytest.mark.req("DC-4", "DC-2")
def test_reoffer_same_tls_id_reuses_the_association():
    ids = TlsIds()
    pol = unbundled(new_tls_id=ids)
    established = _wic_call(pol)
    plan, result = _wic_offer(pol, WIC_OFFER.replace("o=- 7046312839584755208 2", "o=- 7046312839584755208 3"),
                              established.state)
    assert plan.iq == IqRequest(Command.MODIFY, DIALOG, "t1", [StreamSpec(
        stream_id=0, kind="sctp",
        access=TerminationSpec(
            side=Side.ACCESS, transport="UDP/DTLS/SCTP", remote_address="192.0.2.20", remote_port=52342,
            tls_role=Role.CLIENT, ice_lite=True, remote_ice_ufrag="wicU",
            remote_ice_pwd="wicPasswordwicPassword12",
            remote_candidates=["1 1 udp 2122260223 192.0.2.20 52342 typ host"],
            notify_stream_reset=True, sctp_stream_ids=[0, 2],
        ),
        local_tls_id=ids.nth(1), remote_tls_id="wicTlsIdwicTlsId0001", reuse_association=True,
    )])
    assert result.sdp == WIC_OFFER_TO_CORE.replace("o=- 7046312839584755208 2", "o=- 7046312839584755208 3") \
        .replace("a=connection:new", "a=connection:existing")
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, result.state, pol)
    assert answered.sdp == WIC_ANSWER_FROM_CORE  # same tls-id, same setup, same ports
    assert ids.count == 1


@pytest.mark.req("DC-2", "DC-3")
def test_reoffer_new_tls_id_sets_up_a_new_association():
    ids = TlsIds()
    pol = unbundled(new_tls_id=ids)
    established = _wic_call(pol)
    body = WIC_OFFER.replace("wicTlsIdwicTlsId0001", "wicTlsIdwicTlsId0002")
    plan, result = _wic_offer(pol, body, established.state)
    sctp = plan.iq.streams[0]
    assert (sctp.reuse_association, sctp.local_tls_id, sctp.remote_tls_id) == (
        False, ids.nth(2), "wicTlsIdwicTlsId0002")
    assert (sctp.access.establish_tls, sctp.access.establish_sctp, sctp.access.local_fingerprint_request) == (
        True, True, True)
    assert [s.stream_id for s in plan.iq.streams] == [0, ch(0, 0), ch(0, 2)]
    assert result.sdp == WIC_OFFER_TO_CORE
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, result.state, pol)
    assert answered.sdp == WIC_ANSWER_FROM_CORE.replace(f"a=tls-id:{ids.nth(1)}", f"a=tls-id:{ids.nth(2)}")


T140_CHANNEL_6 = """a=dcmap:6 label="rtt2";subprotocol="t140"\r\na=dcsa:6 fmtp:- cps=10\r\n"""


@pytest.mark.req("DC-4", "DC-5")
def test_reoffer_adding_a_channel_keeps_core_lines_and_appends_the_new_one():
    pol = unbundled()
    established = _wic_call(pol)
    plan, result = _wic_offer(pol, WIC_OFFER + T140_CHANNEL_6, established.state)
    assert [(s.stream_id, s.kind, s.reuse_association) for s in plan.iq.streams] == [
        (0, "sctp", True), (ch(0, 6), "dc_channel", False)]
    assert plan.iq.streams[0].access.sctp_stream_ids == [0, 2, 6]
    assert plan.iq.streams[1] == StreamSpec(
        stream_id=ch(0, 6), kind="dc_channel", group=0,
        access=TerminationSpec(side=Side.ACCESS, transport="UDP/DTLS/SCTP",
                               dcmap=DcMap(stream_id=6, label="rtt2", subprotocol="t140"),
                               remote_dcsa=["fmtp:- cps=10"]),
        core=TerminationSpec(side=Side.CORE, transport="RTP/AVP"),
    )
    assert result.sdp == WIC_OFFER_TO_CORE.replace("a=connection:new", "a=connection:existing") + sdp("""
        m=text 30012 RTP/AVP 98 100
        c=IN IP4 198.51.100.10
        a=rtpmap:98 t140/1000
        a=fmtp:98 cps=10
        a=rtpmap:100 red/1000
        a=fmtp:100 98/98/98
    """)
    assert result.state.data["map"]["0"]["core"] == {"ch0.msrp": 0, "ch2.t140": 1, "ch6.t140": 2}


@pytest.mark.req("DC-4", "DC-7")
def test_reoffer_removing_a_channel_rejects_its_core_line_and_releases_it():
    pol = unbundled()
    established = _wic_call(pol)
    body = "".join(line + "\r\n" for line in WIC_OFFER.split("\r\n")[:-1]
                   if not line.startswith(("a=dcmap:0", "a=dcsa:0")))
    plan, result = _wic_offer(pol, body, established.state)
    assert [(s.stream_id, s.access.sctp_stream_ids) for s in plan.iq.streams] == [(0, [2])]
    assert result.sdp == sdp("""
        v=0
        o=- 7046312839584755208 2 IN IP4 127.0.0.1
        s=-
        t=0 0
        m=message 0 TCP/MSRP *
        m=text 30004 RTP/AVP 98 100
        c=IN IP4 198.51.100.10
        a=rtpmap:98 t140/1000
        a=fmtp:98 cps=30
        a=rtpmap:100 red/1000
        a=fmtp:100 98/98/98
        a=hlang-send:de
    """)
    answer = CORE_ANSWER.replace("m=message 9", "m=message 0")
    plan, answered = run(answer, Side.CORE, Kind.ANSWER, result.state, pol)
    assert plan.iq.release_streams == [ch(0, 0)]
    assert "a=dcmap:0" not in answered.sdp and "a=dcmap:2 " in answered.sdp
    assert answered.state.data["streams"]["0"]["channels"] == [ch(0, 2)]


# ---------------------------------------------------------------------------
# DC-8 / DC-9: the core offers MSRP and T.140
# ---------------------------------------------------------------------------

def _core_offer(pol: Policy, body: str, state: DialogState | None = None):
    return run(body, Side.CORE, Kind.OFFER, state or DialogState(), pol)


@pytest.mark.req("DC-8", "ICE-1")
def test_core_msrp_offer_becomes_a_data_channel_offer():
    ids = TlsIds()
    plan, result = _core_offer(policy(new_tls_id=ids), CORE_MSRP_OFFER)
    assert plan.iq == IqRequest(Command.RESERVE, DIALOG, "t1", [
        StreamSpec(
            stream_id=0, kind="sctp",
            access=TerminationSpec(
                side=Side.ACCESS, transport="UDP/DTLS/SCTP", local_fingerprint_request=True,
                notify_tls_failure=True, ice_lite=True, local_sctp_port_request=True,
                local_max_message_size_request=True, notify_stream_reset=True, sctp_stream_ids=[1],
            ),
            local_tls_id=ids.nth(1),
        ),
        StreamSpec(
            stream_id=ch(0, 1), kind="dc_channel", group=0,
            access=TerminationSpec(side=Side.ACCESS, transport="UDP/DTLS/SCTP",
                                   dcmap=DcMap(stream_id=1, label="msrp", subprotocol="msrp")),
            # actpass from the core: the AGW answers active and connects to the core's port.
            core=TerminationSpec(
                side=Side.CORE, transport="TCP", remote_address="127.0.0.1", remote_port=7394,
                remote_dcsa=["accept-types:message/cpim text/plain", "path:msrp://127.0.0.1:7394/jshA7weztas;tcp",
                             "sendrecv"],
            ),
        ),
    ])
    assert result.sdp == sdp(f"""
        v=0
        o=core 2890844526 2890844527 IN IP4 127.0.0.1
        s=-
        c=IN IP4 203.0.113.10
        t=0 0
        a=ice-lite
        m=application 40000 UDP/DTLS/SCTP webrtc-datachannel
        a=ice-ufrag:agwu0
        a=ice-pwd:agwpwd0xxxxxxxxxxxxxxxxx
        a=candidate:1 1 udp 2130706431 203.0.113.10 40000 typ host
        a=end-of-candidates
        a=fingerprint:{AGW_FP_TEXT}
        a=setup:actpass
        a=tls-id:{ids.nth(1)}
        a=sctp-port:5000
        a=max-message-size:262144
        a=dcmap:1 label="msrp";subprotocol="msrp"
        a=dcsa:1 msrp-cema
        a=dcsa:1 accept-types:message/cpim text/plain
        a=dcsa:1 path:msrp://203.0.113.10:40000/jshA7weztas;dc
        a=dcsa:1 sendrecv
    """)


@pytest.mark.req("DC-8")
def test_core_t140_offer_becomes_a_data_channel_offer():
    ids = TlsIds()
    plan, result = _core_offer(policy(new_tls_id=ids), CORE_T140_OFFER)
    assert plan.iq.streams[1] == StreamSpec(
        stream_id=ch(0, 1), kind="dc_channel", group=0,
        access=TerminationSpec(side=Side.ACCESS, transport="UDP/DTLS/SCTP",
                               dcmap=DcMap(stream_id=1, label="t140", subprotocol="t140")),
        core=TerminationSpec(
            side=Side.CORE, transport="RTP/AVP", remote_address="127.0.0.1", remote_port=11000,
            remote_rtcp_port=11001,
            remote_dcsa=["rtpmap:98 t140/1000", "fmtp:98 cps=30", "rtpmap:100 red/1000", "fmtp:100 98/98/98"],
        ),
    )
    media = result.sdp.split("\r\nm=", 1)[1].split("\r\n")
    assert media[media.index("a=max-message-size:262144"):] == [
        "a=max-message-size:262144",
        'a=dcmap:1 label="t140";subprotocol="t140"',
        "a=dcsa:1 fmtp:- cps=30",
        "a=dcsa:1 sendrecv",
        "",
    ]


CORE_MSRP_T140_OFFER = sdp("""
    v=0
    o=core 77 1 IN IP4 192.0.2.50
    s=-
    c=IN IP4 192.0.2.50
    t=0 0
    m=message 2855 TCP/MSRP *
    a=accept-types:text/plain
    a=path:msrp://192.0.2.50:2855/core7s1;tcp
    a=setup:active
    m=text 6000 RTP/AVP 98
    a=rtpmap:98 t140/1000
""")

WIC_ANSWER = sdp(f"""
    v=0
    o=- 55 2 IN IP4 127.0.0.1
    s=-
    t=0 0
    m=application 52342 UDP/DTLS/SCTP webrtc-datachannel
    c=IN IP4 192.0.2.20
    a=candidate:1 1 udp 2122260223 192.0.2.20 52342 typ host
    a=ice-ufrag:wicU
    a=ice-pwd:wicPasswordwicPassword12
    a=fingerprint:{WIC_FP_TEXT}
    a=setup:active
    a=tls-id:wicTlsIdwicTlsId0009
    a=sctp-port:5001
    a=max-message-size:131072
    a=dcmap:1 label="msrp";subprotocol="msrp"
    a=dcsa:1 msrp-cema
    a=dcsa:1 accept-types:text/plain
    a=dcsa:1 path:msrp://wic.example.org:52342/wic55;dc
    a=dcmap:3 label="t140";subprotocol="t140"
    a=dcsa:3 fmtp:- cps=30
""")


@pytest.mark.req("DC-8")
def test_core_msrp_and_t140_share_one_access_line_with_odd_stream_ids():
    ids = TlsIds()
    plan, result = _core_offer(policy(new_tls_id=ids), CORE_MSRP_T140_OFFER)
    assert [(s.stream_id, s.kind) for s in plan.iq.streams] == [
        (0, "sctp"), (ch(0, 1), "dc_channel"), (ch(0, 3), "dc_channel")]
    assert plan.iq.streams[0].access.sctp_stream_ids == [1, 3]
    # The core connects (a=setup:active): the AGW listens, no remote port.
    assert plan.iq.streams[1].core == TerminationSpec(
        side=Side.CORE, transport="TCP", remote_address="192.0.2.50", remote_port=None,
        remote_dcsa=["accept-types:text/plain", "path:msrp://192.0.2.50:2855/core7s1;tcp"],
    )
    assert result.sdp.split("a=max-message-size:262144\r\n")[1] == sdp("""
        a=dcmap:1 label="msrp";subprotocol="msrp"
        a=dcsa:1 msrp-cema
        a=dcsa:1 accept-types:text/plain
        a=dcsa:1 path:msrp://203.0.113.10:40000/core7s1;dc
        a=dcmap:3 label="t140";subprotocol="t140"
    """)
    assert result.state.data["map"] == {"0": {"handler": "datachannel", "core": {"ch1.msrp": 0, "ch3.t140": 1}}}


@pytest.mark.req("DC-9")
def test_wic_answer_sets_up_the_association_and_answers_the_core():
    ids = TlsIds()
    pol = policy(new_tls_id=ids)
    _, offered = _core_offer(pol, CORE_MSRP_T140_OFFER)
    plan, result = run(WIC_ANSWER, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    assert plan.iq == IqRequest(Command.MODIFY, DIALOG, "t1", [
        StreamSpec(
            stream_id=0, kind="sctp",
            access=TerminationSpec(
                side=Side.ACCESS, transport="UDP/DTLS/SCTP", remote_address="192.0.2.20", remote_port=52342,
                remote_fingerprints=[WIC_FP], establish_tls=False, tls_role=Role.SERVER,
                notify_tls_establishment=True, ice_lite=True, remote_ice_ufrag="wicU",
                remote_ice_pwd="wicPasswordwicPassword12",
                remote_candidates=["1 1 udp 2122260223 192.0.2.20 52342 typ host"],
                remote_sctp_port=5001, remote_max_message_size=131072, establish_sctp=False,
                notify_stream_reset=True, sctp_stream_ids=[1, 3],
            ),
            local_tls_id=ids.nth(1), remote_tls_id="wicTlsIdwicTlsId0009",
        ),
        StreamSpec(
            stream_id=ch(0, 1), kind="dc_channel", group=0,
            access=TerminationSpec(
                side=Side.ACCESS, transport="UDP/DTLS/SCTP", dcmap=DcMap(stream_id=1, label="msrp", subprotocol="msrp"),
                remote_dcsa=["msrp-cema", "accept-types:text/plain", "path:msrp://wic.example.org:52342/wic55;dc"],
            ),
        ),
        StreamSpec(
            stream_id=ch(0, 3), kind="dc_channel", group=0,
            access=TerminationSpec(
                side=Side.ACCESS, transport="UDP/DTLS/SCTP", dcmap=DcMap(stream_id=3, label="t140", subprotocol="t140"),
                remote_dcsa=["fmtp:- cps=30"],
            ),
        ),
    ])
    assert result.sdp == sdp("""
        v=0
        o=- 55 2 IN IP4 127.0.0.1
        s=-
        t=0 0
        m=message 30002 TCP/MSRP *
        c=IN IP4 198.51.100.10
        a=msrp-cema
        a=accept-types:text/plain
        a=path:msrp://198.51.100.10:30002/wic55;tcp
        a=setup:passive
        a=connection:new
        m=text 30006 RTP/AVP 98
        c=IN IP4 198.51.100.10
        a=rtpmap:98 t140/1000
        a=fmtp:98 cps=30
    """)
    assert result.state.data["streams"]["0"]["role"] == "server"


@pytest.mark.req("DC-9")
def test_wic_answer_passive_makes_the_agw_establish_dtls_and_sctp_once():
    ids = TlsIds()
    pol = policy(new_tls_id=ids)
    _, offered = _core_offer(pol, CORE_MSRP_OFFER)
    answer = WIC_ANSWER.replace("a=setup:active", "a=setup:passive")
    plan, result = run(answer, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    access = plan.iq.streams[0].access
    assert (access.tls_role, access.establish_tls, access.establish_sctp, access.notify_tls_establishment) == (
        Role.CLIENT, True, True, False)
    assert [s.stream_id for s in plan.iq.streams] == [0, ch(0, 1)]
    # The core offered actpass: the AGW is the active MSRP endpoint toward it.
    assert result.sdp.split("\r\nm=", 1)[1] == sdp("""
        message 30002 TCP/MSRP *
        c=IN IP4 198.51.100.10
        a=msrp-cema
        a=accept-types:text/plain
        a=path:msrp://198.51.100.10:30002/wic55;tcp
        a=setup:active
        a=connection:new
    """)
    # The same answer again (18x then 2xx): no second handshake.
    plan, _ = run(answer, Side.ACCESS, Kind.ANSWER, result.state, pol)
    assert (plan.iq.streams[0].access.establish_tls, plan.iq.streams[0].access.establish_sctp) == (False, False)


@pytest.mark.req("DC-9")
def test_channel_missing_from_the_wic_answer_rejects_its_core_line():
    pol = policy()
    _, offered = _core_offer(pol, CORE_MSRP_T140_OFFER)
    answer = "".join(line + "\r\n" for line in WIC_ANSWER.split("\r\n")[:-1]
                     if not line.startswith(("a=dcmap:3", "a=dcsa:3")))
    plan, result = run(answer, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    assert plan.iq.release_streams == [ch(0, 3)]
    assert plan.iq.streams[0].access.sctp_stream_ids == [1]
    assert result.sdp.endswith("a=connection:new\r\nm=text 0 RTP/AVP 98\r\n")


@pytest.mark.req("DC-8", "DC-4")
def test_core_reoffer_adding_t140_reuses_the_association():
    ids = TlsIds()
    pol = policy(new_tls_id=ids)
    _, offered = _core_offer(pol, CORE_MSRP_OFFER)
    answer = "".join(line + "\r\n" for line in WIC_ANSWER.split("\r\n")[:-1]
                     if not line.startswith(("a=dcmap:3", "a=dcsa:3")))
    _, answered = run(answer, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    reoffer = CORE_MSRP_OFFER.replace("2890844527", "2890844528") + sdp("""
        m=text 11000 RTP/AVP 98
        a=rtpmap:98 t140/1000
    """)
    plan, result = _core_offer(pol, reoffer, answered.state)
    assert [(s.stream_id, s.reuse_association, s.local_tls_id) for s in plan.iq.streams] == [
        (0, True, ids.nth(1)), (ch(0, 1), False, None), (ch(0, 3), False, None)]
    assert plan.iq.streams[0].access == TerminationSpec(
        side=Side.ACCESS, transport="UDP/DTLS/SCTP", tls_role=Role.SERVER, notify_stream_reset=True,
        sctp_stream_ids=[1, 3],
    )
    assert plan.iq.streams[1].access is None  # kept channel: only its core side is refreshed
    assert plan.iq.streams[2].access.dcmap == DcMap(stream_id=3, label="t140", subprotocol="t140")
    body = result.sdp
    assert f"a=tls-id:{ids.nth(1)}\r\n" in body and "a=setup:passive\r\n" in body
    assert ids.count == 1


# ---------------------------------------------------------------------------
# Refusals (488) and the dcmap codec
# ---------------------------------------------------------------------------

@pytest.mark.req("DC-2")
@pytest.mark.parametrize("change, message", [
    (("a=dcmap:0 label=\"chat\";subprotocol=\"msrp\"", "a=dcmap:x label=\"chat\""), "no valid stream id"),
    (("a=dcmap:0 label=\"chat\";subprotocol=\"msrp\"", "a=dcmap:0 label=chat;subprotocol=\"msrp\""),
     "malformed a=dcmap"),
    (("a=dcmap:2 label=\"rtt\"", "a=dcmap:0 label=\"rtt\""), "appears twice"),
    (("a=dcsa:2 hlang-send:de", "a=dcsa:8 hlang-send:de"), "names no a=dcmap"),
    (("a=dcsa:2 hlang-send:de", "a=dcsa:2"), "malformed a=dcsa"),
    (("a=sctp-port:5000", "a=sctp-port:five"), "malformed a=sctp-port"),
    (("a=max-message-size:262144", "a=max-message-size:-1"), "malformed a=max-message-size"),
    ((f"a=fingerprint:{WIC_FP_TEXT}\r\n", ""), "without a=fingerprint"),
    (("a=dcmap:4 label=\"floor\";subprotocol=\"bfcp\";max-retr=3", "a=dcmap:4 max-retr=3;max-time=9"),
     "mutually exclusive"),
])
def test_bad_data_channel_attributes_are_refused_with_488(change, message):
    body = WIC_OFFER.replace(*change)
    assert body != WIC_OFFER
    with pytest.raises(SdpPolicyError) as info:
        _wic_offer(policy(), body)
    assert info.value.sip_status == 488
    assert "m-line 1" in info.value.reason and message in info.value.reason


@pytest.mark.req("DC-5", "DC-7")
def test_dcmap_codec_quoted_strings_and_escapes():
    dcmap = datachannel.parse_dcmap('7 label="a;b %22c%22";subprotocol="msrp";ordered=false;priority=256', "m-line 1")
    assert dcmap == DcMap(stream_id=7, label='a;b "c"', subprotocol="msrp", ordered=False, priority=256)
    assert datachannel.format_dcmap(dcmap) == '7 label="a;b %22c%22";subprotocol="msrp"'
    assert datachannel.format_dcmap(DcMap(stream_id=3)) == "3"
    with pytest.raises(SdpPolicyError):
        datachannel.parse_dcmap("65535 label=\"x\"", "m-line 1")  # RFC 8831: 65535 is reserved


def test_dcmap_label_that_is_not_utf8_text_is_refused_488():
    # Bytes that are not UTF-8 reach the rules as lone surrogates (undecodable bytes kept);
    # such a label cannot be written back percent-encoded: refused, never a crash.
    with pytest.raises(SdpPolicyError) as info:
        datachannel.parse_dcmap('1 label="chat\udcff";subprotocol="msrp"', "m-line 1")
    assert info.value.sip_status == 488 and "not UTF-8" in info.value.reason
    assert datachannel.parse_dcmap('1 label="caf%C3%A9 ✓"', "m-line 1").label == "café ✓"


@pytest.mark.req("DC-4", "DC-7")
@pytest.mark.parametrize("proto", ["UDP/DTLS/SCTP", "UEP/DTLS/SCTP"], ids=["same-proto", "other-proto"])
def test_reoffer_rejecting_the_data_channel_line_rejects_core_lines_in_place_and_releases_all(proto):
    # A rejected line may come under any proto (found by fuzzing: another one raised KeyError).
    pol = unbundled()
    established = _wic_call(pol)
    body = sdp(f"""
        v=0
        o=- 7046312839584755208 3 IN IP4 127.0.0.1
        s=-
        t=0 0
        m=application 0 {proto} webrtc-datachannel
    """)
    plan, result = _wic_offer(pol, body, established.state)
    assert plan.iq is None
    assert [(d.index, d.kind, d.reason) for d in plan.streams] == [(0, "datachannel", "rejected (port 0)")]
    assert result.sdp == sdp("""
        v=0
        o=- 7046312839584755208 3 IN IP4 127.0.0.1
        s=-
        t=0 0
        m=message 0 TCP/MSRP *
        m=text 0 RTP/AVP 98 100
    """)
    answer = sdp("""
        v=0
        o=core 1 2 IN IP4 192.0.2.50
        s=-
        c=IN IP4 192.0.2.50
        t=0 0
        m=message 0 TCP/MSRP *
        m=text 0 RTP/AVP 98 100
    """)
    plan, answered = run(answer, Side.CORE, Kind.ANSWER, result.state, pol)
    assert plan.iq == IqRequest(Command.MODIFY, DIALOG, "t1", [], [0, ch(0, 0), ch(0, 2)])
    assert answered.sdp == sdp("""
        v=0
        o=core 1 2 IN IP4 192.0.2.50
        s=-
        c=IN IP4 192.0.2.50
        t=0 0
        m=application 0 {proto} webrtc-datachannel
    """.format(proto=proto))
    assert answered.state.data["streams"] == {}


@pytest.mark.req("DC-7", "DC-8")
@given(stream_id=st.integers(0, 65534), label=st.text(max_size=40), subprotocol=st.text(min_size=1, max_size=20))
def test_dcmap_written_by_the_alg_parses_back_to_the_same_channel(stream_id, label, subprotocol):
    dcmap = DcMap(stream_id=stream_id, label=label, subprotocol=subprotocol)
    assert datachannel.parse_dcmap(datachannel.format_dcmap(dcmap), "m-line 1") == dcmap


@pytest.mark.parametrize(("value", "why"), [
    ('1 label="a;b', "unterminated quoted string"),
    ("1 label=chat", "'chat' is not a quoted-string"),
    ('1 label="chat";subprotocol', "'subprotocol' is not name=value"),
    ('1 label="a";label="b"', "label appears twice"),
    ("1 max-retr=three", "max-retr=three is not a number"),
    ("1 ordered=yes", "ordered=yes is not true/false"),
    ("1 max-retr=1;max-time=2", "max-retr and max-time are mutually exclusive"),
])
def test_malformed_dcmap_reasons_name_the_problem(value, why):
    """RFC 8864 5.1 syntax errors: 488 with the line and what is wrong in the Warning."""
    with pytest.raises(SdpPolicyError) as caught:
        datachannel.parse_dcmap(value, "m-line 1")
    assert caught.value.reason == f"m-line 1: malformed a=dcmap:{value}: {why}"


@pytest.mark.req("DC-7", "DC-8")
@pytest.mark.parametrize("mux", ["a=rtcp-mux", "a=rtcp-mux-only", None])
def test_t140_core_lines_multiplex_rtcp_as_the_core_says(mux):
    """RFC 5761 / RFC 8858 on the core's T.140 line, in its answer and in its offer."""
    pol = unbundled()
    _, offered = _wic_offer(pol)
    answer = CORE_ANSWER.replace("m=text 6000 RTP/AVP 98 100\r\n", "m=text 6000 RTP/AVP 98 100\r\n"
                                 + (mux + "\r\n" if mux else ""))
    plan, _ = run(answer, Side.CORE, Kind.ANSWER, offered.state, pol)
    core = [s for s in plan.iq.streams if s.stream_id == ch(0, 2)][0].core
    assert (core.rtcp_mux, core.remote_rtcp_port) == ((True, None) if mux else (False, 6001))
    offer = CORE_T140_OFFER.replace("m=text 11000 RTP/AVP 98 100\r\n", "m=text 11000 RTP/AVP 98 100\r\n"
                                    + (mux + "\r\n" if mux else ""))
    plan, _ = _core_offer(pol, offer)
    core = plan.iq.streams[1].core
    assert (core.rtcp_mux, core.remote_rtcp_port) == ((True, None) if mux else (False, 11001))


@pytest.mark.req("DC-2", "DC-9")
def test_wic_answer_to_a_core_reoffer_on_a_kept_association_sends_only_the_new_transport_and_channels():
    """The kept association: no fingerprints, no Establish IEs, no SCTP port; ICE and stream ids as answered."""
    ids = TlsIds()
    pol = policy(new_tls_id=ids)
    _, offered = _core_offer(pol, CORE_MSRP_T140_OFFER)
    _, answered = run(WIC_ANSWER, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    _, reoffered = _core_offer(pol, CORE_MSRP_T140_OFFER, answered.state)
    plan, _ = run(WIC_ANSWER, Side.ACCESS, Kind.ANSWER, reoffered.state, pol)
    assert plan.iq.streams[0] == StreamSpec(
        stream_id=0, kind="sctp",
        access=TerminationSpec(
            side=Side.ACCESS, transport="UDP/DTLS/SCTP", remote_address="192.0.2.20", remote_port=52342,
            tls_role=Role.SERVER, ice_lite=True, remote_ice_ufrag="wicU", remote_ice_pwd="wicPasswordwicPassword12",
            remote_candidates=["1 1 udp 2122260223 192.0.2.20 52342 typ host"], notify_stream_reset=True,
            sctp_stream_ids=[1, 3],
        ),
        local_tls_id=ids.nth(1), remote_tls_id="wicTlsIdwicTlsId0009", reuse_association=True,
    )
