"""BUNDLE toward access (RFC 9143, RFC 8842, RFC 8858, RFC 8859) in the SDP rules.

The AGW is the simulated one (``sdp_rules.simulated_agw``): transports on
127.0.0.1 from port 30000, core terminations on 127.0.0.2 from 40000, fixed
fingerprint and ICE credentials.  tls-ids come from a counter.  Offers from
the WIC are written out below (audio mid ``a``, video mid ``v``, a second
video ``v2``) or are real Chromium offers from ``tests/fixtures/sdp``.
"""

from __future__ import annotations

import pytest

from iq import Command, Role
from mediad.config import ConfigError, parse_config
from plugin.edge import Edge
from plugin.metrics import Metrics
from sdp_rules import BundlePolicy, DialogState, Kind, SdpPolicyError, Side, process
from sdp_rules.bundle import groups, mid_extension_id
from sdp_rules.cli import main as cli_main
from sdp_rules.plan import Plan, Policy
from sdp_rules.sdp import parse
from sdp_rules.simulated_agw import FINGERPRINT, ICE_PWD, ICE_UFRAG, SimulatedAgw

from tests.unit.rules_helpers import FIXTURES, TlsIds, fixture

WIC_FP = "sha-256 " + ":".join(f"{b:02X}" for b in range(0x40, 0x60))
TLS_A = "wicTlsIdAAAAAAAAAAAAAAAA"
TLS_B = "wicTlsIdBBBBBBBBBBBBBBBB"
PORT = 30000  # the simulated AGW's first access port: the transport's


class Call:
    """One dialog through the rules, BUNDLE on unless told, with the simulated AGW."""

    def __init__(self, bundle: BundlePolicy = BundlePolicy.ON) -> None:
        self.tls_ids = TlsIds()
        self.policy = Policy(bundle=bundle, new_tls_id=self.tls_ids)
        self.agw = SimulatedAgw()
        self.state = DialogState()
        self.count = 0

    def step(self, body: str, origin: Side, kind: Kind) -> tuple[Plan, str]:
        self.count += 1
        plan = process(body, origin=origin, kind=kind, state=self.state, dialog="d", transaction=str(self.count),
                       policy=self.policy)
        result = plan.finish(self.agw.answer(plan.iq) if plan.iq is not None else None)
        self.state = result.state
        return plan, result.sdp

    def offer(self, body: str) -> tuple[Plan, str]:
        return self.step(body, Side.ACCESS, Kind.OFFER)

    def answer(self, body: str) -> tuple[Plan, str]:
        return self.step(body, Side.CORE, Kind.ANSWER)


def transport_attrs(port: int, *, ufrag: str = "uf01", tls_id: str | None = TLS_A, setup: str = "actpass",
                    extra: tuple[str, ...] = ()) -> list[str]:
    out = [f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{ufrag}pwd0123456789012345",
           f"a=candidate:1 1 udp 2122260223 192.0.2.10 {port} typ host",
           f"a=fingerprint:{WIC_FP}", f"a=setup:{setup}"]
    if tls_id:
        out.append(f"a=tls-id:{tls_id}")
    return out + list(extra)


def audio(port: int = 50000, *, mid: str = "a", transport: list[str] | None = None) -> list[str]:
    return [f"m=audio {port} UDP/TLS/RTP/SAVPF 111", "c=IN IP4 192.0.2.10", f"a=mid:{mid}",
            "a=rtpmap:111 opus/48000/2", "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid", "a=sendrecv",
            "a=rtcp-mux", "a=ssrc:1111 cname:wic", *(transport or [])]


def video(port: int = 0, *, mid: str = "v", transport: list[str] | None = None, bundle_only: bool = True,
          ssrc: int = 2222) -> list[str]:
    out = [f"m=video {port} UDP/TLS/RTP/SAVPF 96 97", "c=IN IP4 192.0.2.10", f"a=mid:{mid}",
           "a=rtpmap:96 VP8/90000", "a=rtcp-fb:96 nack", "a=rtcp-fb:96 nack pli", "a=rtcp-fb:96 ccm fir",
           "a=rtcp-fb:96 goog-remb", "a=rtcp-fb:96 transport-cc",
           "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96", "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
           "a=sendrecv", "a=rtcp-mux", f"a=ssrc:{ssrc} cname:wic", *(transport or [])]
    if port == 0 and bundle_only:
        out.append("a=bundle-only")
    return out


def offer(*sections: list[str], group: str | None = "a v", version: int = 1) -> str:
    session = ["v=0", f"o=- 7 {version} IN IP4 192.0.2.10", "s=-", "t=0 0"]
    if group is not None:
        session.append(f"a=group:BUNDLE {group}")
    return "\r\n".join(session + [line for s in sections for line in s]) + "\r\n"


def core_answer(*media: str) -> str:
    """A core's answer: ``audio``/``video`` accepted (opus, VP8+rtx), ``-`` for a rejected m-line."""
    lines = ["v=0", "o=core 1 1 IN IP4 192.0.2.50", "s=-", "c=IN IP4 192.0.2.50", "t=0 0"]
    for n, kind in enumerate(media):
        if kind == "audio":
            lines += [f"m=audio {6000 + 2 * n} RTP/AVPF 111", "a=rtpmap:111 opus/48000/2", "a=sendrecv"]
        elif kind == "video":
            lines += [f"m=video {6000 + 2 * n} RTP/AVPF 96 97", "a=rtpmap:96 VP8/90000", "a=rtcp-fb:96 nack",
                      "a=rtcp-fb:96 nack pli", "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96", "a=sendrecv"]
        else:
            lines.append(f"m={kind.split(':')[1]} 0 RTP/AVPF 0")
    return "\r\n".join(lines) + "\r\n"


def section(body: str, index: int) -> list[str]:
    out: list[list[str]] = []
    for line in body.split("\r\n")[:-1]:
        if line.startswith("m="):
            out.append([])
        if out:
            out[-1].append(line)
    return out[index]


def transport_lines(lines: list[str]) -> list[str]:
    """The RFC 8859 TRANSPORT/IDENTICAL lines the edge writes for a transport."""
    names = ("a=ice-ufrag", "a=ice-pwd", "a=candidate", "a=end-of-candidates", "a=fingerprint", "a=setup",
             "a=tls-id", "a=rtcp:", "a=rtcp-mux-only")
    return [line for line in lines if line.startswith(names)]


def tagged_lines(tls_id: str, setup: str = "active", ufrag: str = ICE_UFRAG, pwd: str = ICE_PWD) -> list[str]:
    return [f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}",
            f"a=candidate:1 1 udp 2130706431 127.0.0.1 {PORT} typ host", "a=end-of-candidates",
            f"a=fingerprint:{FINGERPRINT}", f"a=setup:{setup}", f"a=tls-id:{tls_id}"]


def max_bundle_call(call: Call | None = None) -> tuple[Call, Plan, str, Plan, str]:
    call = call or Call()
    offer_plan, to_core = call.offer(offer(audio(transport=transport_attrs(50000)), video()))
    answer_plan, to_wic = call.answer(core_answer("audio", "video"))
    return call, offer_plan, to_core, answer_plan, to_wic


# ---------------------------------------------------------------------------
# A WIC offer with a BUNDLE group, and the core's answer to it
# ---------------------------------------------------------------------------

@pytest.mark.req("MUX-1")
def test_one_transport_for_the_group_each_line_its_own_core_termination():
    """RFC 9143 sections 7.3 and 11: the group's m-lines share one ICE-lite agent, DTLS association and port."""
    _, plan, to_core, _, _ = max_bundle_call()
    assert plan.iq.command is Command.RESERVE
    [transport] = plan.iq.transports
    assert (transport.transport_id, transport.remote_address, transport.remote_port) == (0, "192.0.2.10", 50000)
    assert transport.remote_ice_ufrag == "uf01" and transport.ice_lite
    assert [str(fp) for fp in transport.remote_fingerprints] == [WIC_FP]
    assert transport.tls_role is Role.CLIENT and transport.establish_tls and transport.notify_tls_failure
    assert (transport.remote_tls_id, transport.local_tls_id) == (TLS_A, "e2aeTlsId00000000001")
    assert transport.mid_extension_id == 4 and not transport.reuse_association and not transport.ice_restart
    a, v = plan.iq.streams
    assert (a.stream_id, a.transport_id, a.mid, v.stream_id, v.transport_id, v.mid) == (0, 0, "a", 1, 0, "v")
    assert a.access.payload_types == [111] and a.access.ssrcs == [1111] and a.access.rtcp_mux
    assert v.access.payload_types == [96, 97] and v.access.ssrcs == [2222]
    # A stream on a transport carries no DTLS or ICE of its own.
    for stream in (a, v):
        assert stream.access.remote_fingerprints == [] and stream.access.remote_ice_ufrag is None
        assert stream.access.tls_role is None and stream.local_tls_id is None
    # Toward the core: one m-line each, no group, no bundle-only, no DTLS/ICE.
    core = parse(to_core)
    assert groups(core) == [] and [m.port for m in core.media] == [40000, 40002]
    assert not any(m.has_attribute(name) for m in core.media for name in ("bundle-only", "fingerprint", "ice-ufrag"))
    assert [m.proto for m in core.media] == ["RTP/AVPF", "RTP/AVPF"]


@pytest.mark.req("MUX-1")
def test_the_answer_accepts_the_group_with_the_transport_in_the_tagged_line_only():
    """RFC 9143 7.3 and 7.1.3: one address:port for every member, TRANSPORT/IDENTICAL attributes in the tagged one.

    ``a=rtcp-mux`` is repeated in every bundled RTP m-line: Chromium refuses a
    bundled RTP m-line without it (see ``sdp_rules.bundle``).
    """
    *_, to_wic = max_bundle_call()
    out = parse(to_wic)
    assert groups(out) == [["a", "v"]]
    assert [m.port for m in out.media] == [PORT, PORT]
    assert out.session.connection.address == "127.0.0.1" and out.session.has_attribute("ice-lite")
    assert transport_lines(section(to_wic, 0)) == tagged_lines("e2aeTlsId00000000001")
    assert transport_lines(section(to_wic, 1)) == []
    for index in (0, 1):
        lines = section(to_wic, index)
        assert lines.count("a=rtcp-mux") == 1 and "a=bundle-only" not in lines
        assert "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid" in lines  # RFC 9143 9.1
    assert section(to_wic, 0)[2:] and "a=mid:a" in section(to_wic, 0) and "a=mid:v" in section(to_wic, 1)
    assert section(to_wic, 1)[0] == f"m=video {PORT} UDP/TLS/RTP/SAVPF 96 97"
    assert "a=rtcp-fb:96 nack pli" in section(to_wic, 1)


def test_transport_wide_congestion_control_is_not_negotiated_over_a_bundle():
    """One 5-tuple, several core streams: transport-cc and its header extension are left out; NACK/PLI/FIR/REMB pass."""
    body = fixture("chromium_offer_max_bundle.sdp")
    assert "transport-cc" in body and "transport-wide-cc" in body
    _, to_core = Call().offer(body)
    assert "transport-cc" not in to_core and "transport-wide-cc" not in to_core
    assert "a=rtcp-fb:96 nack pli" in to_core and "a=rtcp-fb:96 goog-remb" in to_core
    assert "a=rtcp-fb:96 ccm fir" in to_core and "abs-send-time" in to_core
    _, unbundled = Call(BundlePolicy.OFF).offer(body)
    assert "a=rtcp-fb:111 transport-cc" in unbundled
    body = fixture("core_audio_video_offer.sdp").replace("a=rtcp-fb:96 nack\r\n",
                                                         "a=rtcp-fb:96 nack\r\na=rtcp-fb:96 transport-cc\r\n")
    _, to_wic = Call().step(body, Side.CORE, Kind.OFFER)
    assert "transport-cc" not in to_wic and "a=rtcp-fb:96 nack pli" in to_wic


def test_the_core_answer_asks_nothing_of_the_transport():
    """The core's answer changes only the core terminations: the transport stays as reserved."""
    _, _, _, plan, _ = max_bundle_call()
    assert plan.iq.command is Command.MODIFY and plan.iq.transports == [] and plan.iq.release_transports == []
    assert [(s.stream_id, s.transport_id, s.access, s.core.remote_port) for s in plan.iq.streams] == [
        (0, 0, None, 6000), (1, 0, None, 6002)]


def test_bundle_off_keeps_one_transport_per_line_and_rejects_bundle_only():
    """``[policy] bundle = off``: the group is declined (RFC 9143 7.3) and a bundle-only line stays rejected."""
    call = Call(BundlePolicy.OFF)
    plan, to_core = call.offer(offer(audio(transport=transport_attrs(50000)), video()))
    assert plan.iq.transports == [] and [s.stream_id for s in plan.iq.streams] == [0]
    assert plan.iq.streams[0].transport_id is None and plan.iq.streams[0].access.remote_fingerprints
    assert parse(to_core).media[1].port == 0
    _, to_wic = call.answer(core_answer("audio", "x:video"))
    assert groups(parse(to_wic)) == [] and parse(to_wic).media[1].port == 0


@pytest.mark.req("MUX-1")
def test_chromium_max_bundle_offer_port_9_lines_join_the_transport():
    """Chromium 156's max-bundle offer: the lines after the first have port 9 and 0.0.0.0, not bundle-only."""
    call = Call()
    plan, _ = call.offer(fixture("chromium_offer_max_bundle.sdp"))
    [transport] = plan.iq.transports
    assert (transport.remote_address, transport.remote_port) == ("127.0.0.1", 43629)
    assert [(s.stream_id, s.transport_id, s.mid) for s in plan.iq.streams] == [(0, 0, "0"), (1, 0, "1")]
    assert plan.iq.streams[1].access.ssrcs == [3974389467, 3531061635]
    # The DCEP-only data channel has nothing the edge interworks: rejected, not bundled.
    assert [d.kind for d in plan.streams] == ["srtp", "srtp", "datachannel"]


def test_balanced_offer_uses_the_offerer_tagged_line_for_the_transport():
    """RFC 9143 7.3.1: each line has its own port in a balanced offer; the first mid of the group is the tag."""
    call = Call()
    plan, _ = call.offer(fixture("chromium_offer_audio_video_data.sdp"))
    [transport] = plan.iq.transports
    assert transport.remote_port == 57099 and transport.remote_ice_ufrag == "ES46"


@pytest.mark.req("MUX-1")
def test_rtcp_mux_only_in_the_offerer_tagged_line_is_answered_in_the_answerer_tagged_one():
    """RFC 9143 9.3.1.2 (RFC 8858): rtcp-mux-only in the offerer-tagged m-line -> in the answerer-tagged one."""
    call = Call()
    call.offer(offer(audio(transport=transport_attrs(50000, extra=("a=rtcp-mux-only",))), video()))
    _, to_wic = call.answer(core_answer("audio", "video"))
    assert "a=rtcp-mux-only" in section(to_wic, 0) and "a=rtcp-mux-only" not in section(to_wic, 1)


def test_a_t38_line_in_the_group_is_moved_out_and_a_bundle_only_one_rejected():
    """RFC 9143 section 8: UDPTL and SCTP cannot share one DTLS association; T.38 keeps a transport of its own.

    With a port the line is moved out of the group (7.3.2); bundle-only it can only be rejected (7.3.3).
    """
    t38 = ["m=image 50010 UDP/TLS/UDPTL t38", "c=IN IP4 192.0.2.10", "a=mid:f",
           *transport_attrs(50010, ufrag="uf02", tls_id=TLS_B), "a=T38FaxVersion:0"]
    call = Call()
    plan, _ = call.offer(offer(audio(transport=transport_attrs(50000)), t38, group="a f"))
    assert [(s.stream_id, s.kind, s.transport_id) for s in plan.iq.streams] == [(0, "srtp", 0), (1, "t38", None)]
    assert plan.iq.streams[1].access.remote_ice_ufrag == "uf02"
    core = "\r\n".join(core_answer("audio").split("\r\n")[:-1] + [
        "m=image 6002 udptl t38", "a=T38FaxVersion:0"]) + "\r\n"
    _, to_wic = call.answer(core)
    assert groups(parse(to_wic)) == [["a"]]
    assert parse(to_wic).media[1].port != PORT and "a=tls-id:e2aeTlsId00000000002" in section(to_wic, 1)
    bundle_only_t38 = ["m=image 0 UDP/TLS/UDPTL t38", "c=IN IP4 192.0.2.10", "a=mid:f", "a=bundle-only"]
    plan, to_core = Call().offer(offer(audio(transport=transport_attrs(50000)), bundle_only_t38, group="a f"))
    assert [s.stream_id for s in plan.iq.streams] == [0] and parse(to_core).media[1].port == 0


def test_the_core_rejecting_the_offerer_tagged_line_moves_the_tag():
    """RFC 9143 7.3.1: when the offerer-tagged m-line is not accepted, the next accepted member is tagged."""
    call = Call()
    call.offer(offer(audio(transport=transport_attrs(50000)), video()))
    plan, to_wic = call.answer(core_answer("x:audio", "video"))
    out = parse(to_wic)
    assert groups(out) == [["v"]] and out.media[0].port == 0 and out.media[1].port == PORT
    assert transport_lines(section(to_wic, 1)) == tagged_lines("e2aeTlsId00000000001")
    assert plan.iq.release_streams == [0] and plan.iq.release_transports == []
    assert call.state.data["transports"]["0"]["tag"] == "v"


def test_the_core_rejecting_every_member_releases_the_transport():
    call = Call()
    call.offer(offer(audio(transport=transport_attrs(50000)), video()))
    plan, to_wic = call.answer(core_answer("x:audio", "x:video"))
    assert plan.iq.release_transports == [0] and sorted(plan.iq.release_streams) == [0, 1]
    assert groups(parse(to_wic)) == [] and "transports" in call.state.data
    assert call.state.data["transports"] == {}


@pytest.mark.parametrize("group, reason", [
    ("a v z", "names mid 'z'"),
])
def test_a_group_that_names_a_missing_mid_is_refused(group, reason):
    with pytest.raises(SdpPolicyError, match=reason):
        Call().offer(offer(audio(transport=transport_attrs(50000)), video(), group=group))


@pytest.mark.parametrize("line", ["a=group", "a=group:", "a=group: "])
def test_a_group_without_semantics_is_refused_as_the_peer_s_error(line):
    # RFC 5888 section 5: a=group:<semantics> *(SP identification-tag); none at all is malformed
    body = offer(audio(transport=transport_attrs(50000)), video()).replace("a=group:BUNDLE a v", line)
    with pytest.raises(SdpPolicyError, match="a=group without semantics"):
        Call().offer(body)


def test_a_mid_in_two_groups_is_refused():
    body = offer(audio(transport=transport_attrs(50000)), video()).replace(
        "a=group:BUNDLE a v\r\n", "a=group:BUNDLE a v\r\na=group:BUNDLE v\r\n")
    with pytest.raises(SdpPolicyError, match="more than one BUNDLE group"):
        Call().offer(body)


# ---------------------------------------------------------------------------
# Re-offers from the WIC (RFC 9143 section 7.5, RFC 8842 section 5)
# ---------------------------------------------------------------------------

def reoffer(*sections: list[str], group: str = "a v") -> str:
    return offer(*sections, group=group, version=2)


def test_reoffer_adding_a_line_to_the_bundle_keeps_the_transport():
    """RFC 9143 7.5.1: the added m-line joins the group; same tls-id (RFC 8842 5.5): no new handshake."""
    call, *_ = max_bundle_call()
    plan, _ = call.offer(reoffer(audio(PORT_W, transport=transport_attrs(PORT_W)), video(PORT_W, bundle_only=False),
                                 video(PORT_W, mid="v2", bundle_only=False, ssrc=4444), group="a v v2"))
    [transport] = plan.iq.transports
    assert transport.reuse_association and not transport.establish_tls
    assert transport.local_tls_id == "e2aeTlsId00000000001"
    assert plan.iq.command is Command.MODIFY and plan.iq.release_streams == []
    assert [(s.stream_id, s.transport_id, s.mid) for s in plan.iq.streams] == [(0, 0, "a"), (1, 0, "v"), (2, 0, "v2")]
    assert plan.iq.streams[2].access.ssrcs == [4444]
    _, to_wic = call.answer(core_answer("audio", "video", "video"))
    assert groups(parse(to_wic)) == [["a", "v", "v2"]]
    assert [m.port for m in parse(to_wic).media] == [PORT, PORT, PORT]
    assert [len(transport_lines(section(to_wic, i))) for i in range(3)] == [7, 0, 0]


PORT_W = 50000


def test_reoffer_disabling_a_bundled_line_releases_only_its_stream():
    """RFC 9143 7.5.3: port 0 without bundle-only, out of the group: the m-line is disabled, the transport stays."""
    call, *_ = max_bundle_call()
    plan, to_core = call.offer(reoffer(audio(PORT_W, transport=transport_attrs(PORT_W)), video(0, bundle_only=False),
                                       group="a"))
    assert plan.iq.release_streams == [1] and plan.iq.release_transports == []
    assert [s.stream_id for s in plan.iq.streams] == [0] and plan.iq.transports[0].reuse_association
    assert parse(to_core).media[1].port == 0
    _, to_wic = call.answer(core_answer("audio", "x:video"))
    assert groups(parse(to_wic)) == [["a"]] and parse(to_wic).media[1].port == 0
    assert call.state.data["transports"]["0"]["mids"] == ["a"]


def test_reoffer_moving_the_tagged_line_moves_the_transport_attributes():
    """RFC 9143 7.5: the offerer may tag another member; the answerer tags the same (7.3), port and tls-id kept."""
    call, *_ = max_bundle_call()
    plan, _ = call.offer(reoffer(audio(PORT_W), video(PORT_W, transport=transport_attrs(PORT_W), bundle_only=False),
                                 group="v a"))
    [transport] = plan.iq.transports
    assert transport.reuse_association and not transport.establish_tls and transport.remote_port == PORT_W
    plan, to_wic = call.answer(core_answer("audio", "video"))
    assert groups(parse(to_wic)) == [["v", "a"]]
    assert transport_lines(section(to_wic, 1)) == tagged_lines("e2aeTlsId00000000001")
    assert transport_lines(section(to_wic, 0)) == []
    assert [m.port for m in parse(to_wic).media] == [PORT, PORT]


def test_ice_restart_on_the_bundle_with_the_same_tls_id_keeps_the_association():
    """RFC 8839 4.4.1.1.1: a new ufrag restarts ICE, the answer carries new credentials of ours.

    RFC 8842 sections 3.3 and 5: with tls-id unchanged the DTLS association is kept.
    """
    call, *_ = max_bundle_call()
    plan, _ = call.offer(reoffer(audio(PORT_W, transport=transport_attrs(PORT_W, ufrag="uf99")),
                                 video(PORT_W, bundle_only=False)))
    [transport] = plan.iq.transports
    assert transport.ice_restart and transport.reuse_association and transport.remote_ice_ufrag == "uf99"
    assert not transport.establish_tls
    _, to_wic = call.answer(core_answer("audio", "video"))
    assert transport_lines(section(to_wic, 0)) == tagged_lines(
        "e2aeTlsId00000000001", ufrag=f"{ICE_UFRAG}1", pwd=f"{ICE_PWD}1")


def test_ice_restart_from_a_peer_without_tls_id_is_a_new_association():
    """RFC 8842 section 3.3 for peers without tls-id (Chromium): a new ufrag, a new association."""
    call = Call()
    call.offer(offer(audio(transport=transport_attrs(50000, tls_id=None)), video()))
    call.answer(core_answer("audio", "video"))
    plan, _ = call.offer(reoffer(audio(PORT_W, transport=transport_attrs(PORT_W, ufrag="uf99", tls_id=None)),
                                 video(PORT_W, bundle_only=False)))
    [transport] = plan.iq.transports
    assert transport.ice_restart and not transport.reuse_association and transport.establish_tls
    assert transport.local_tls_id == "e2aeTlsId00000000002"


def test_a_new_tls_id_on_the_bundle_is_a_new_association_on_the_same_transport():
    """RFC 8842 5.2/5.3: a new tls-id in the tagged m-line asks for a new DTLS association; a new tls-id answers it."""
    call, *_ = max_bundle_call()
    plan, _ = call.offer(reoffer(audio(PORT_W, transport=transport_attrs(PORT_W, tls_id=TLS_B)),
                                 video(PORT_W, bundle_only=False)))
    [transport] = plan.iq.transports
    assert (transport.transport_id, transport.remote_tls_id) == (0, TLS_B)
    assert transport.local_tls_id == "e2aeTlsId00000000002"
    assert not transport.reuse_association and transport.establish_tls and not transport.ice_restart
    _, to_wic = call.answer(core_answer("audio", "video"))
    assert [line for line in to_wic.split("\r\n") if line.startswith("a=tls-id")] == ["a=tls-id:e2aeTlsId00000000002"]
    assert [m.port for m in parse(to_wic).media] == [PORT, PORT]


def test_a_role_change_on_a_kept_bundle_association_is_refused():
    """RFC 8842 5.3: same tls-id, a setup that would swap the DTLS roles: 488."""
    call, *_ = max_bundle_call()
    with pytest.raises(SdpPolicyError, match="would change the DTLS role"):
        call.offer(reoffer(audio(PORT_W, transport=transport_attrs(PORT_W, setup="active")),
                           video(PORT_W, bundle_only=False)))


def test_the_offerer_tagged_line_of_a_later_offer_cannot_be_refused():
    """RFC 9143 7.3.3: the answerer cannot reject (or move out) the offerer-tagged m-line of a subsequent offer."""
    call, *_ = max_bundle_call()
    t38 = ["m=image 50010 UDP/TLS/UDPTL t38", "c=IN IP4 192.0.2.10", "a=mid:f", *transport_attrs(50010)]
    with pytest.raises(SdpPolicyError, match="offerer-tagged m-line"):
        call.offer(reoffer(audio(PORT_W, transport=transport_attrs(PORT_W)), video(PORT_W, bundle_only=False),
                           t38, group="f a v"))


# ---------------------------------------------------------------------------
# Data channel in the bundle
# ---------------------------------------------------------------------------

MSRP_LINE = ["m=application 0 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 192.0.2.10", "a=mid:d", "a=bundle-only",
             "a=sctp-port:5000", "a=max-message-size:100000", 'a=dcmap:0 label="chat";subprotocol="msrp"',
             "a=dcsa:0 msrp-cema", "a=dcsa:0 accept-types:message/cpim text/plain",
             "a=dcsa:0 path:msrp://wic.example.com:9/2s93i93idj;dc"]
MSRP_ANSWER = ["m=message 7394 TCP/MSRP *", "a=accept-types:message/cpim text/plain",
               "a=path:msrp://core.example.com:7394/jshA7we;tcp", "a=setup:active", "a=connection:new"]


@pytest.mark.req("DC-2")
def test_a_data_channel_in_the_bundle_shares_the_dtls_association():
    """RFC 9143 section 11: one DTLS association per bundle, SCTP over it (RFC 8841); the data line joins the group."""
    call = Call()
    plan, to_core = call.offer(offer(audio(transport=transport_attrs(50000)), MSRP_LINE, group="a d"))
    [transport] = plan.iq.transports
    sctp = next(s for s in plan.iq.streams if s.kind == "sctp")
    assert (sctp.stream_id, sctp.transport_id, sctp.mid) == (1, 0, "d")
    assert sctp.access.remote_sctp_port == 5000 and sctp.access.remote_max_message_size == 100000
    assert sctp.access.establish_sctp and sctp.access.remote_fingerprints == [] and sctp.local_tls_id is None
    assert transport.establish_tls and transport.tls_role is Role.CLIENT
    assert [m.proto for m in parse(to_core).media] == ["RTP/AVPF", "TCP/MSRP"]
    answer = "\r\n".join(core_answer("audio").split("\r\n")[:-1] + MSRP_ANSWER) + "\r\n"
    _, to_wic = call.answer(answer)
    out = parse(to_wic)
    assert groups(out) == [["a", "d"]] and [m.port for m in out.media] == [PORT, PORT]
    data = section(to_wic, 1)
    assert transport_lines(data) == [] and "a=rtcp-mux" not in data
    assert 'a=dcmap:0 label="chat";subprotocol="msrp"' in data and "a=sctp-port:5000" in data
    assert f"a=dcsa:0 path:msrp://127.0.0.1:{PORT}/jshA7we;dc" in data


def test_a_second_data_line_or_another_rtp_proto_is_moved_out_of_the_bundle():
    """One SCTP association per DTLS association (RFC 8841), one proto for the bundled RTP lines (RFC 9143 9.1).

    A member that cannot share the transport but has a port of its own is moved out (RFC 9143 7.3.2).
    """
    second = [line.replace("a=mid:d", "a=mid:e").replace("m=application 0", "m=application 50020")
              .replace("wic.example.com:9/2s93i93idj", "wic.example.com:9/other") for line in MSRP_LINE
              if line != "a=bundle-only"] + transport_attrs(50020, ufrag="uf03", tls_id=TLS_B)
    plan, _ = Call().offer(offer(audio(transport=transport_attrs(50000)), MSRP_LINE, second, group="a d e"))
    sctp = [(s.stream_id, s.transport_id) for s in plan.iq.streams if s.kind == "sctp"]
    assert sctp == [(1, 0), (2, None)]
    savp = [line.replace("UDP/TLS/RTP/SAVPF", "UDP/TLS/RTP/SAVP") for line in video(50010, bundle_only=False,
                                                                                     transport=transport_attrs(50010))]
    plan, _ = Call().offer(offer(audio(transport=transport_attrs(50000)), savp))
    assert [(s.stream_id, s.transport_id) for s in plan.iq.streams] == [(0, 0), (1, None)]


def test_a_dcep_only_data_line_in_the_bundle_is_rejected_not_bundled():
    """Chromium's createDataChannel line has no a=dcmap: nothing to interwork, rejected (RFC 9143 7.3.3)."""
    *_, to_wic = max_bundle_call()
    call = Call()
    call.offer(fixture("chromium_offer_max_bundle.sdp"))
    _, to_wic = call.answer(core_answer("audio", "video", "x:application"))
    out = parse(to_wic)
    assert groups(out) == [["0", "1"]] and out.media[2].port == 0


# ---------------------------------------------------------------------------
# Core offers toward access (RFC 9143 section 7.2), and the WIC's answer
# ---------------------------------------------------------------------------

def core_offer_call() -> tuple[Call, Plan, str]:
    call = Call()
    plan, to_wic = call.step(fixture("core_audio_video_offer.sdp"), Side.CORE, Kind.OFFER)
    return call, plan, to_wic


def test_a_core_offer_goes_to_the_wic_as_one_bundle():
    """RFC 9143 7.2: the tagged line has the transport; the others are bundle-only (port 0) in an initial offer.

    The core wrote no a=mid and no MID extension: the edge adds both (RFC 5888, RFC 9143 9.1), and one
    proto for every bundled RTP line (RFC 9143 9.1).
    """
    _, plan, to_wic = core_offer_call()
    [transport] = plan.iq.transports
    assert transport.local_fingerprint_request and transport.ice_lite and transport.remote_fingerprints == []
    assert transport.local_tls_id == "e2aeTlsId00000000001" and transport.mid_extension_id == 1
    assert [(s.stream_id, s.transport_id, s.mid) for s in plan.iq.streams] == [(0, 0, "0"), (1, 0, "1")]
    assert plan.iq.streams[1].access.payload_types == [96, 97] and plan.iq.streams[1].core.remote_port == 16002
    out = parse(to_wic)
    assert groups(out) == [["0", "1"]]
    assert [(m.port, m.proto) for m in out.media] == [(PORT, "UDP/TLS/RTP/SAVPF"), (0, "UDP/TLS/RTP/SAVPF")]
    assert transport_lines(section(to_wic, 0)) == tagged_lines("e2aeTlsId00000000001", setup="actpass") + [
        "a=rtcp-mux-only"]
    video_lines = section(to_wic, 1)
    assert transport_lines(video_lines) == [] and "a=bundle-only" in video_lines and "a=rtcp-mux" in video_lines
    assert [mid_extension_id(m) for m in out.media] == [1, 1]


def test_the_wics_bundled_answer_sets_the_transport_and_the_core_gets_plain_rtp():
    """The answerer-tagged m-line of Chromium's answer gives the transport's role and fingerprint (RFC 9143 7.4)."""
    call, *_ = core_offer_call()
    plan, to_core = call.step(fixture("chromium_answer_bundled.sdp"), Side.ACCESS, Kind.ANSWER)
    [transport] = plan.iq.transports
    assert transport.tls_role is Role.SERVER and not transport.establish_tls  # the WIC answered setup:active
    assert (transport.remote_address, transport.remote_port, transport.remote_ice_ufrag) == ("127.0.0.1", 49635, "W+/T")
    assert [fp.value[:5] for fp in transport.remote_fingerprints] == ["59:C3"]
    assert [(s.stream_id, s.access.ssrcs) for s in plan.iq.streams] == [(0, [135880095]), (1, [790009745])]
    core = parse(to_core)
    assert [(m.port, m.proto) for m in core.media] == [(40000, "RTP/AVP"), (40002, "RTP/AVPF")]
    assert groups(core) == [] and not any(m.has_attribute("mid") for m in core.media)
    assert not any(m.has_attribute("extmap") for m in core.media)
    assert not any(m.has_attribute(n) for m in core.media for n in ("fingerprint", "setup", "ice-ufrag", "rtcp-mux"))


def test_a_core_reoffer_keeps_the_bundle_port_tag_role_and_tls_id():
    """RFC 9143 7.5: the BUNDLE address:port in every member, the transport only in the tagged line; RFC 8842 5.5."""
    call, *_ = core_offer_call()
    call.step(fixture("chromium_answer_bundled.sdp"), Side.ACCESS, Kind.ANSWER)
    plan, to_wic = call.step(fixture("core_audio_video_offer.sdp").replace("1742203500 IN", "1742203501 IN"),
                             Side.CORE, Kind.OFFER)
    assert plan.iq.transports == []  # nothing changes on the transport
    out = parse(to_wic)
    assert groups(out) == [["0", "1"]] and [m.port for m in out.media] == [PORT, PORT]
    assert transport_lines(section(to_wic, 0)) == tagged_lines("e2aeTlsId00000000001", setup="passive") + [
        "a=rtcp-mux-only"]
    assert "a=bundle-only" not in to_wic and transport_lines(section(to_wic, 1)) == []


def test_a_core_offer_whose_lines_cannot_share_an_rtp_session_is_not_bundled():
    """RFC 9143 9.1.1: payload type 96 for two codecs cannot be one RTP session: one transport per line."""
    body = fixture("core_audio_video_offer.sdp").replace("m=audio 16000 RTP/AVP 0 8 101", "m=audio 16000 RTP/AVP 96") \
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:96 AMR-WB/16000")
    call = Call()
    plan, to_wic = call.step(body, Side.CORE, Kind.OFFER)
    assert plan.iq.transports == [] and groups(parse(to_wic)) == []
    assert all(s.transport_id is None for s in plan.iq.streams)


def test_a_core_offer_with_its_own_bundle_group_is_answered_unbundled():
    """The core side never bundles: its group goes no further; the WIC gets the edge's own group."""
    body = fixture("core_audio_video_offer.sdp").replace("t=0 0\r\n", "t=0 0\r\na=group:BUNDLE x y\r\n") \
        .replace("a=ptime:20\r\n", "a=ptime:20\r\na=mid:x\r\n").replace("a=rtpmap:96 VP8/90000\r\n",
                                                                       "a=mid:y\r\na=rtpmap:96 VP8/90000\r\n")
    call = Call()
    _, to_wic = call.step(body, Side.CORE, Kind.OFFER)
    assert groups(parse(to_wic)) == [["x", "y"]]
    answer = fixture("chromium_answer_bundled.sdp").replace("a=mid:0", "a=mid:x").replace("a=mid:1", "a=mid:y") \
        .replace("a=group:BUNDLE 0 1", "a=group:BUNDLE x y")
    _, to_core = call.step(answer, Side.ACCESS, Kind.ANSWER)
    core = parse(to_core)
    assert groups(core) == [] and [m.attribute("mid") for m in core.media] == ["x", "y"]


# ---------------------------------------------------------------------------
# The policy switch
# ---------------------------------------------------------------------------

def test_policy_bundle_is_on_by_default_and_read_from_the_configuration():
    from prometheus_client import CollectorRegistry

    assert parse_config("").policy_bundle == "on" and Policy().bundle is BundlePolicy.ON
    edge = Edge.from_config(parse_config(""), Metrics(CollectorRegistry()), iq_client=object())
    assert edge.policy.bundle is BundlePolicy.ON
    config = parse_config("[policy]\nbundle = off\n")
    edge = Edge.from_config(config, Metrics(CollectorRegistry()), iq_client=object())
    assert edge.policy.bundle is BundlePolicy.OFF
    with pytest.raises(ConfigError, match="bundle"):
        parse_config("[policy]\nbundle = max\n")


@pytest.mark.parametrize("flag, bundled", [("on", True), ("off", False), (None, True)],
                         ids=["on", "off", "default"])
def test_e2ae_sdp_bundle_flag_shows_the_bundled_answer(tmp_path, capsys, flag, bundled):
    answer = tmp_path / "core_answer.sdp"
    answer.write_bytes(core_answer("audio", "video", "x:application").encode())
    offer_path = str(FIXTURES / "chromium_offer_max_bundle.sdp")
    option = ["--bundle", flag] if flag else []
    assert cli_main(["call", "--from", "access", *option, offer_path, str(answer)]) == 0
    returned = parse(capsys.readouterr().out.split("# answer returned to access\n")[1])
    assert groups(returned) == ([["0", "1"]] if bundled else [])
    ports = [m.port for m in returned.media]
    assert (ports[0] == ports[1]) is bundled and ports[2] == 0


# ---------------------------------------------------------------------------
# ICE-TCP on a transport (RFC 6544)
# ---------------------------------------------------------------------------

WIC_TCP = "a=candidate:2 1 tcp 1518280447 192.0.2.10 9 typ host tcptype active"
AGW_TCP = f"a=candidate:2 1 tcp 2124414975 127.0.0.1 {PORT} typ host tcptype passive"


@pytest.mark.req("TCP-1")
def test_a_transport_offered_tcp_candidates_gets_a_passive_one_for_its_lifetime():
    """mediad listens on TCP on the transport's port from its creation: the candidate stays in later answers."""
    call = Call()
    plan, _ = call.offer(offer(audio(transport=transport_attrs(50000, extra=(WIC_TCP,))), video()))
    assert WIC_TCP[len("a=candidate:"):] in plan.iq.transports[0].remote_candidates
    _, to_wic = call.answer(core_answer("audio", "video"))
    lines = transport_lines(section(to_wic, 0))
    assert lines[2:4] == [f"a=candidate:1 1 udp 2130706431 127.0.0.1 {PORT} typ host", AGW_TCP]
    assert not [line for line in transport_lines(section(to_wic, 1)) if "tcp" in line]
    call.offer(reoffer(audio(PORT_W, transport=transport_attrs(PORT_W)), video(PORT_W, bundle_only=False)))
    _, to_wic = call.answer(core_answer("audio", "video"))
    assert AGW_TCP in transport_lines(section(to_wic, 0))


@pytest.mark.req("TCP-1")
def test_a_transport_made_without_tcp_candidates_never_offers_one():
    """No listener was opened for it: a later offer's TCP candidates get no passive one in the answer."""
    call, *_ = max_bundle_call()
    call.offer(reoffer(audio(PORT_W, transport=transport_attrs(PORT_W, extra=(WIC_TCP,))),
                       video(PORT_W, bundle_only=False)))
    _, to_wic = call.answer(core_answer("audio", "video"))
    assert transport_lines(section(to_wic, 0)) == tagged_lines("e2aeTlsId00000000001")
