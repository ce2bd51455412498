"""DTLS-protected media lines: DTLS-SRTP over UDP and TCP, T.38 over UDPTL/DTLS.

Clauses: TS 23.334 5.11.2.3 (general, bandwidth), 5.11.2.3.2 and 6.2.10.4.2
(T.38, RFC 7345), 5.11.2.4 and 6.2.10.5 (DTLS-SRTP, RFC 5763/5764), 5.11.2.5
(DTLS-SRTP over TCP, RFC 4571/6544), with RFC 8842 ``a=tls-id``.

Theory of operation
-------------------
Each function handles one m-line in one of four situations:

==========================  ===============================================
``offer_from_access``       WIC offer: reserve access (DTLS) + core (plain)
``answer_from_core``        core answer to it: modify core, answer the WIC
``offer_from_core``         core offer: reserve both, offer DTLS to the WIC
``answer_from_access``      WIC answer to it: modify access with role/fp
==========================  ===============================================

Stream state kept per stream (``ctx.streams[str(stream_id)]``): ``kind``,
``role`` (the AGW's DTLS role), ``local_tls_id``, ``remote_tls_id``,
``remote_fingerprints``, ``remote_ice_ufrag``, ``access_proto``,
``core_proto``, the AGW's ``access``/``core`` termination replies, and the
RTCP multiplexing decided on each side.

A DTLS-SRTP line on a BUNDLE transport (``member``, see :mod:`sdp_rules.bundle`)
leaves ICE, DTLS and its access address to the transport: its access
termination carries its payload types and SSRCs and names the transport, and
its state holds ``transport_id`` and ``mid`` instead of an association.

Association reuse (RFC 8842 section 5): a re-offer from the WIC whose tls-id is
the one stored (or, from a peer that sends no tls-id, whose fingerprints and
ICE ufrag are unchanged) keeps the DTLS association: our tls-id, role and
fingerprint stay as they were -- even when the re-offer says ``actpass``
(role stickiness).  Any other re-offer starts a new association: a new tls-id
and a new handshake.
"""

from __future__ import annotations

from typing import Any

from iq import (
    TRANSPORT_UDP,
    TRANSPORT_UDP_DTLS,
    IqReply,
    Role,
    Side,
    StreamSpec,
    TerminationReply,
    TerminationSpec,
)
from sdp_rules import attrs, bandwidth, bundle
from sdp_rules.errors import SdpPolicyError
from sdp_rules.handlers import AnswerPart, Context, OfferPart
from sdp_rules.sdp import MediaSection

# Access proto -> (kind, core proto, access Iq transport, core Iq transport)
ACCESS_PROTOS: dict[str, tuple[str, str, str, str]] = {
    "UDP/TLS/RTP/SAVP": ("srtp", "RTP/AVP", "UDP/TLS/RTP/SAVP", "RTP/AVP"),
    "UDP/TLS/RTP/SAVPF": ("srtp", "RTP/AVPF", "UDP/TLS/RTP/SAVPF", "RTP/AVPF"),
    "TCP/DTLS/RTP/SAVP": ("srtp_tcp", "RTP/AVP", "TCP/DTLS/RTP/SAVP", "RTP/AVP"),
    "TCP/DTLS/RTP/SAVPF": ("srtp_tcp", "RTP/AVPF", "TCP/DTLS/RTP/SAVPF", "RTP/AVPF"),
    "UDP/TLS/UDPTL": ("t38", "udptl", TRANSPORT_UDP_DTLS, TRANSPORT_UDP),
}
# Core proto (upper-cased) -> (kind, access proto, access Iq transport, core Iq transport)
CORE_PROTOS: dict[str, tuple[str, str, str, str]] = {
    "RTP/AVP": ("srtp", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVP", "RTP/AVP"),
    "RTP/AVPF": ("srtp", "UDP/TLS/RTP/SAVPF", "UDP/TLS/RTP/SAVPF", "RTP/AVPF"),
    "UDPTL": ("t38", "UDP/TLS/UDPTL", TRANSPORT_UDP_DTLS, TRANSPORT_UDP),
}
RTP_KINDS = ("srtp", "srtp_tcp")
ACCESS_KINDS = ("srtp", "srtp_tcp", "t38")


def classify_access(m: MediaSection) -> str | None:
    entry = ACCESS_PROTOS.get(m.proto.upper())
    return entry[0] if entry else None


def classify_core(m: MediaSection) -> str | None:
    entry = CORE_PROTOS.get(m.proto.upper())
    return entry[0] if entry else None


def _where(index: int) -> str:
    return f"m-line {index + 1}"


def _access_reply(reply: IqReply | None, sid: int, prev: dict[str, Any] | None) -> TerminationReply:
    """The AGW's access termination: from this reply, else as stored."""
    if reply is not None:
        try:
            got = reply.stream(sid).access
        except KeyError:
            got = None
        if got is not None:
            return got
    if prev and prev.get("access"):
        return TerminationReply.from_dict(prev["access"])
    raise ValueError(f"AGW reply lacks the access termination of stream {sid}")


def _core_reply(reply: IqReply | None, sid: int, prev: dict[str, Any] | None) -> TerminationReply:
    if reply is not None:
        try:
            got = reply.stream(sid).core
        except KeyError:
            got = None
        if got is not None:
            return got
    if prev and prev.get("core"):
        return TerminationReply.from_dict(prev["core"])
    raise ValueError(f"AGW reply lacks the core termination of stream {sid}")


# ---------------------------------------------------------------------------
# WIC-originated: offer from access, answer from the core
# ---------------------------------------------------------------------------

def offer_from_access(ctx: Context, index: int, m: MediaSection, sid: int,
                      member: bundle.Member | None = None) -> OfferPart:
    """TS 23.334 6.2.10.4.2 / 6.2.10.5 / 5.11.2.5: the WIC's offer of a DTLS media line."""
    if member is not None:
        return _bundled_offer_from_access(ctx, m, sid, member)
    where = _where(index)
    kind, core_proto, access_transport, core_transport = ACCESS_PROTOS[m.proto.upper()]
    dtls = attrs.dtls_params(ctx.sdp, m, where, answer=False)
    ice = attrs.ice_params(ctx.sdp, m)
    address, port = attrs.remote_rtp_address(ctx.sdp, m, where)
    prev = ctx.streams.get(str(sid))
    if dtls.tls_id:
        ctx.used_tls_ids.add(dtls.tls_id)
    association = attrs.decide_association(
        prev if prev and prev["kind"] == kind and "transport_id" not in prev else None, dtls, ice.ufrag,
        [address, port], ctx.policy.actpass, ctx.new_tls_id, where,
    )
    reuse, role, local_tls_id = association.reuse, association.role, association.local_tls_id
    rtp = kind in RTP_KINDS
    access = TerminationSpec(
        side=Side.ACCESS,
        transport=access_transport,
        remote_address=address,
        remote_port=port,
        remote_rtcp_port=attrs.remote_rtcp_port(m) if rtp else None,
        rtcp_mux=rtp and (m.has_attribute("rtcp-mux") or m.has_attribute("rtcp-mux-only")),
        remote_fingerprints=list(dtls.fingerprints),
        local_fingerprint_request=True,
        establish_tls=(role is Role.CLIENT and not reuse),
        tls_role=role,
        notify_tls_failure=True,
        ice_lite=ice.present,
        remote_ice_ufrag=ice.ufrag,
        remote_ice_pwd=ice.pwd,
        remote_candidates=list(ice.candidates),
    )
    core = TerminationSpec(side=Side.CORE, transport=core_transport, rtcp_mux=False)
    spec = StreamSpec(
        stream_id=sid, kind=kind, access=access, core=core,
        local_tls_id=local_tls_id, remote_tls_id=dtls.tls_id, reuse_association=reuse,
    )
    pending = {
        "sid": sid,
        "kind": kind,
        "access_proto": m.proto,
        "core_proto": core_proto,
        "role": role.value,
        "local_tls_id": local_tls_id,
        "remote_tls_id": dtls.tls_id,
        "remote_fingerprints": [str(fp) for fp in dtls.fingerprints],
        "remote_ice_ufrag": ice.ufrag,
        "remote_transport": [address, port],
        "ice": ice.present,
        "ice_tcp": ice.has_tcp or kind == "srtp_tcp",
        "access_rtcp_mux": access.rtcp_mux,
        "reuse": reuse,
    }
    source = m

    def finish(reply: IqReply | None) -> list[MediaSection]:
        core_reply = _core_reply(reply, sid, prev)
        access_reply = _access_reply(reply, sid, prev)
        out = _copy(source)
        out.proto = core_proto
        attrs.strip_for_core(out)
        # Offer RTP/RTCP multiplexing to the core; its answer decides (RFC 5761 5.1.1).
        attrs.set_core_transport(out, core_reply, rtcp_mux=rtp, rtp=rtp)
        bandwidth.adjust(out, kind, add=False)
        state = dict(prev or {}) if not (prev and "transport_id" in prev) else {}
        state.update(pending)
        state.pop("sid", None)
        state["notified_failure"] = True
        state["access"] = access_reply.to_dict()
        state["core"] = core_reply.to_dict()
        ctx.streams[str(sid)] = state
        return [out]

    return OfferPart(streams=[spec], finish=finish, pending=pending)


def _bundled_offer_from_access(ctx: Context, m: MediaSection, sid: int, member: bundle.Member) -> OfferPart:
    """A WIC offer's DTLS-SRTP line on a BUNDLE transport: the core side as any, the access side on the transport."""
    kind, core_proto, access_transport, core_transport = ACCESS_PROTOS[m.proto.upper()]
    prev = ctx.streams.get(str(sid))
    access = TerminationSpec(side=Side.ACCESS, transport=access_transport, rtcp_mux=True,
                             payload_types=bundle.payload_types(m), ssrcs=bundle.ssrcs(m))
    core = TerminationSpec(side=Side.CORE, transport=core_transport, rtcp_mux=False)
    spec = StreamSpec(stream_id=sid, kind=kind, access=access, core=core, transport_id=member.tid, mid=member.mid)
    pending = {"sid": sid, "kind": kind, "access_proto": m.proto, "core_proto": core_proto,
               "transport_id": member.tid, "mid": member.mid}
    source = m

    def finish(reply: IqReply | None) -> list[MediaSection]:
        core_reply = _core_reply(reply, sid, prev)
        out = _copy(source)
        out.proto = core_proto
        attrs.strip_for_core(out)
        bundle.strip_transport_wide_cc(out)
        attrs.set_core_transport(out, core_reply, rtcp_mux=True, rtp=True)
        bandwidth.adjust(out, kind, add=False)
        state = {k: v for k, v in pending.items() if k != "sid"}
        state["core"] = core_reply.to_dict()
        ctx.streams[str(sid)] = state
        return [out]

    return OfferPart(streams=[spec], finish=finish, pending=pending)


def answer_from_core(ctx: Context, index: int, pending: dict[str, Any], m: MediaSection,
                     member: bundle.Member | None = None) -> AnswerPart:
    """The core's answer to a WIC offer: back to DTLS toward the WIC (SRTP-5, T38-5)."""
    sid, kind = pending["sid"], pending["kind"]
    prev = ctx.streams.get(str(sid))
    if m.rejected:
        return _rejected_answer(ctx, sid, m, pending["access_proto"])
    where = _where(index)
    address, port = attrs.remote_rtp_address(ctx.sdp, m, where)
    rtp = kind in RTP_KINDS
    core_mux = rtp and (m.has_attribute("rtcp-mux") or m.has_attribute("rtcp-mux-only"))
    core = TerminationSpec(
        side=Side.CORE,
        transport=ACCESS_PROTOS[pending["access_proto"].upper()][3],
        remote_address=address,
        remote_port=port,
        remote_rtcp_port=attrs.remote_rtcp_port(m) if rtp else None,
        rtcp_mux=core_mux,
    )
    if member is not None:
        spec = StreamSpec(stream_id=sid, kind=kind, core=core, transport_id=member.tid, mid=member.mid)
    else:
        spec = StreamSpec(
            stream_id=sid, kind=kind, core=core,
            local_tls_id=pending["local_tls_id"], remote_tls_id=pending["remote_tls_id"],
            reuse_association=True,
        )
    source = m

    def finish_bundled(reply: IqReply | None, on: bundle.Member) -> list[MediaSection]:
        out = _copy(source)
        out.proto = pending["access_proto"]
        attrs.strip_for_access(out)
        on.transport.render(out, reply, mid_value=on.mid, tagged=on.tagged, rtp=rtp)
        bandwidth.adjust(out, kind, add=True)
        state = dict(prev or {})
        state["core_rtcp_mux"] = core_mux
        ctx.streams[str(sid)] = state
        return [out]

    def finish(reply: IqReply | None) -> list[MediaSection]:
        access_reply = _access_reply(reply, sid, prev)
        out = _copy(source)
        out.proto = pending["access_proto"]
        attrs.strip_for_access(out)
        attrs.add_access_transport(
            out, access_reply,
            role_setup=attrs.setup_for_role(Role(pending["role"])),
            tls_id=pending["local_tls_id"],
            ice=pending["ice"],
            rtcp_mux=pending["access_rtcp_mux"],
            tcp_candidates=pending["ice_tcp"],
        )
        bandwidth.adjust(out, kind, add=True)
        state = dict(prev or {})
        state["core_rtcp_mux"] = core_mux
        state["access"] = access_reply.to_dict()
        ctx.streams[str(sid)] = state
        return [out]

    if member is not None:
        bundled = member
        return AnswerPart(streams=[spec], finish=lambda reply: finish_bundled(reply, bundled))
    return AnswerPart(streams=[spec], finish=finish)


# ---------------------------------------------------------------------------
# WIC-terminated: offer from the core, answer from access
# ---------------------------------------------------------------------------

def offer_from_core(ctx: Context, index: int, m: MediaSection, sid: int,
                    member: bundle.Member | None = None) -> OfferPart:
    """TS 23.334 6.2.10.5 (SRTP-6) and 5.11.2.3.2 (T38-6): a core offer toward the WIC."""
    if member is not None:
        return _bundled_offer_from_core(ctx, index, m, sid, member)
    where = _where(index)
    kind, access_proto, access_transport, core_transport = CORE_PROTOS[m.proto.upper()]
    address, port = attrs.remote_rtp_address(ctx.sdp, m, where)
    prev = ctx.streams.get(str(sid))
    if kind == "srtp" and prev and prev.get("kind") == "srtp_tcp":
        # The WIC's m-line runs DTLS-SRTP over TCP (5.11.2.5): it stays so.
        kind = "srtp_tcp"
        access_proto = "TCP/DTLS/" + access_proto.split("/", 2)[2]
        access_transport = ACCESS_PROTOS[access_proto][2]
    rtp = kind in RTP_KINDS
    core_mux = rtp and (m.has_attribute("rtcp-mux") or m.has_attribute("rtcp-mux-only"))
    # A core re-offer keeps the access association as it is (the WIC's DTLS is not
    # the core's business); a new stream gets a new association and tls-id.
    kept: dict[str, Any] = prev or {}
    reuse = bool(kept) and kept["kind"] == kind and kept.get("remote_fingerprints") is not None
    local_tls_id = kept["local_tls_id"] if reuse else ctx.new_tls_id()
    # A kept association leaves the access termination as it is (None: unchanged);
    # the offer to the WIC repeats the stored fingerprint, ICE credentials and port.
    access = None if reuse else TerminationSpec(
        side=Side.ACCESS,
        transport=access_transport,
        local_fingerprint_request=True,
        notify_tls_failure=True,
        ice_lite=True,
        rtcp_mux=False,
    )
    core = TerminationSpec(
        side=Side.CORE,
        transport=core_transport,
        remote_address=address,
        remote_port=port,
        remote_rtcp_port=attrs.remote_rtcp_port(m) if rtp else None,
        rtcp_mux=core_mux,
    )
    spec = StreamSpec(
        stream_id=sid, kind=kind, access=access, core=core, local_tls_id=local_tls_id,
        remote_tls_id=kept.get("remote_tls_id") if reuse else None, reuse_association=reuse,
    )
    pending = {
        "sid": sid,
        "kind": kind,
        "access_proto": access_proto,
        "core_proto": m.proto,
        "local_tls_id": local_tls_id,
        "core_rtcp_mux": core_mux,
        "reuse": reuse,
        "role": kept["role"] if reuse else None,
    }
    source = m

    def finish(reply: IqReply | None) -> list[MediaSection]:
        access_reply = _access_reply(reply, sid, prev)
        core_reply = _core_reply(reply, sid, prev)
        out = _copy(source)
        out.proto = access_proto
        attrs.strip_for_access(out)
        # RFC 8842 5.2 / RFC 5763 5: an offerer says actpass; for a kept
        # association the role it already has (role stickiness).
        setup = attrs.setup_for_role(Role(pending["role"])) if reuse else "actpass"
        # A kept association keeps its ICE candidates (RFC 8839 4.4.1.2.2: no ICE
        # restart) and its RTP/RTCP multiplexing (RFC 8035 section 5.3).
        attrs.add_access_transport(
            out, access_reply, role_setup=setup, tls_id=local_tls_id,
            ice=kept.get("ice", True) if reuse else True,
            rtcp_mux=rtp and (ctx.policy.offer_rtcp_mux_to_access or bool(reuse and kept.get("access_rtcp_mux"))),
            tcp_candidates=bool(reuse and kept.get("ice_tcp")),
        )
        bandwidth.adjust(out, kind, add=True)
        state = dict(prev or {}) if reuse else {}
        state.update({k: v for k, v in pending.items() if k != "sid"})
        state["access"] = access_reply.to_dict()
        state["core"] = core_reply.to_dict()
        state["answered"] = False
        state["notified_failure"] = True
        ctx.streams[str(sid)] = state
        return [out]

    return OfferPart(streams=[spec], finish=finish, pending=pending)


def _bundled_offer_from_core(ctx: Context, index: int, m: MediaSection, sid: int,
                             member: bundle.Member) -> OfferPart:
    """A core RTP line offered to the WIC on the BUNDLE transport (RFC 9143 7.2, 7.5)."""
    kind, _proto, _transport, core_transport = CORE_PROTOS[m.proto.upper()]
    # Every bundled RTP m-line has the same proto (RFC 9143 section 9.1).
    access_proto = access_transport = member.transport.state.get("rtp_proto") or _proto
    address, port = attrs.remote_rtp_address(ctx.sdp, m, _where(index))
    prev = ctx.streams.get(str(sid))
    core_mux = m.has_attribute("rtcp-mux") or m.has_attribute("rtcp-mux-only")
    access = TerminationSpec(side=Side.ACCESS, transport=access_transport, rtcp_mux=True,
                             payload_types=bundle.payload_types(m))
    core = TerminationSpec(
        side=Side.CORE, transport=core_transport, remote_address=address, remote_port=port,
        remote_rtcp_port=attrs.remote_rtcp_port(m), rtcp_mux=core_mux,
        payload_types=bundle.payload_types(m), ssrcs=bundle.ssrcs(m),
    )
    spec = StreamSpec(stream_id=sid, kind=kind, access=access, core=core, transport_id=member.tid, mid=member.mid)
    pending = {"sid": sid, "kind": kind, "access_proto": access_proto, "core_proto": m.proto,
               "core_rtcp_mux": core_mux, "transport_id": member.tid, "mid": member.mid}
    source = m

    def finish(reply: IqReply | None) -> list[MediaSection]:
        core_reply = _core_reply(reply, sid, prev)
        out = _copy(source)
        out.proto = access_proto
        attrs.strip_for_access(out)
        bundle.strip_transport_wide_cc(out)
        member.transport.render(out, reply, mid_value=member.mid, tagged=member.tagged, rtp=True, offer=True)
        bandwidth.adjust(out, kind, add=True)
        state = {k: v for k, v in pending.items() if k != "sid"}
        state["core"] = core_reply.to_dict()
        state["answered"] = bool(prev and prev.get("transport_id") == member.tid and prev.get("answered"))
        ctx.streams[str(sid)] = state
        return [out]

    return OfferPart(streams=[spec], finish=finish, pending=pending)


def answer_from_access(ctx: Context, index: int, pending: dict[str, Any], m: MediaSection,
                       member: bundle.Member | None = None) -> AnswerPart:
    """The WIC's answer to a core offer (SRTP-7): role, fingerprints, Establish if client."""
    sid, kind = pending["sid"], pending["kind"]
    prev = ctx.streams.get(str(sid))
    if m.rejected:
        return _rejected_answer(ctx, sid, m, pending["core_proto"])
    if pending.get("transport_id") is not None:
        return _bundled_answer_from_access(ctx, index, pending, m, member)
    where = _where(index)
    if m.proto.upper() != pending["access_proto"].upper():
        raise SdpPolicyError(f"{where}: answer proto {m.proto} does not match the offer's {pending['access_proto']}")
    dtls = attrs.dtls_params(ctx.sdp, m, where, answer=True)
    ice = attrs.ice_params(ctx.sdp, m)
    address, port = attrs.remote_rtp_address(ctx.sdp, m, where)
    role = attrs.agw_role_for_answer(dtls.setup)
    if pending.get("reuse") and pending.get("role") and Role(pending["role"]) is not role:
        raise SdpPolicyError(f"{where}: a=setup:{dtls.setup} changes the DTLS role of an existing association")
    if dtls.tls_id:
        ctx.used_tls_ids.add(dtls.tls_id)
    rtp = kind in RTP_KINDS
    access_mux = rtp and (m.has_attribute("rtcp-mux") or m.has_attribute("rtcp-mux-only"))
    first = not (prev and prev.get("notified_failure"))
    # The same answer seen again (a reliable 18x, then the 2xx): the handshake
    # was asked for already.
    repeat = bool(prev and prev.get("answered"))
    access = TerminationSpec(
        side=Side.ACCESS,
        transport=CORE_PROTOS[pending["core_proto"].upper()][2],
        remote_address=address,
        remote_port=port,
        remote_rtcp_port=attrs.remote_rtcp_port(m) if rtp else None,
        rtcp_mux=access_mux,
        remote_fingerprints=list(dtls.fingerprints),
        establish_tls=(role is Role.CLIENT and not pending.get("reuse") and not repeat),
        tls_role=role,
        notify_tls_failure=first,
        ice_lite=ice.present,
        remote_ice_ufrag=ice.ufrag,
        remote_ice_pwd=ice.pwd,
        remote_candidates=list(ice.candidates),
    )
    spec = StreamSpec(
        stream_id=sid, kind=kind, access=access, local_tls_id=pending["local_tls_id"],
        remote_tls_id=dtls.tls_id, reuse_association=bool(pending.get("reuse")),
    )
    source = m

    def finish(reply: IqReply | None) -> list[MediaSection]:
        core_reply = _core_reply(reply, sid, prev)
        out = _copy(source)
        out.proto = pending["core_proto"]
        attrs.strip_for_core(out)
        out.remove_attributes("rtcp-mux")
        attrs.set_core_transport(out, core_reply, rtcp_mux=pending["core_rtcp_mux"], rtp=rtp)
        bandwidth.adjust(out, kind, add=False)
        state = dict(prev or {})
        state.update({
            "role": role.value,
            "remote_tls_id": dtls.tls_id,
            "remote_fingerprints": [str(fp) for fp in dtls.fingerprints],
            "remote_ice_ufrag": ice.ufrag,
            "remote_transport": [address, port],
            "ice": ice.present,
            "access_rtcp_mux": access_mux,
            "notified_failure": True,
            "answered": True,
        })
        ctx.streams[str(sid)] = state
        return [out]

    return AnswerPart(streams=[spec], finish=finish)


def _bundled_answer_from_access(ctx: Context, index: int, pending: dict[str, Any], m: MediaSection,
                                member: bundle.Member | None) -> AnswerPart:
    """The WIC's answer for a line offered on the BUNDLE transport: its payload types and SSRCs."""
    sid, kind = pending["sid"], pending["kind"]
    where = _where(index)
    if member is None:
        raise SdpPolicyError(f"{where}: answered outside the BUNDLE group it was offered bundle-only in"
                             " (RFC 9143 7.3.2)")
    if m.proto.upper() != pending["access_proto"].upper():
        raise SdpPolicyError(f"{where}: answer proto {m.proto} does not match the offer's {pending['access_proto']}")
    prev = ctx.streams.get(str(sid))
    access = TerminationSpec(side=Side.ACCESS, transport=pending["access_proto"],
                             rtcp_mux=True, payload_types=bundle.payload_types(m), ssrcs=bundle.ssrcs(m))
    spec = StreamSpec(stream_id=sid, kind=kind, access=access, transport_id=member.tid, mid=member.mid)
    source = m

    def finish(reply: IqReply | None) -> list[MediaSection]:
        core_reply = _core_reply(reply, sid, prev)
        out = _copy(source)
        out.proto = pending["core_proto"]
        attrs.strip_for_core(out)
        out.remove_attributes("rtcp-mux")
        attrs.set_core_transport(out, core_reply, rtcp_mux=pending["core_rtcp_mux"], rtp=True)
        bundle.strip_added(out, member.transport.state)
        bandwidth.adjust(out, kind, add=False)
        state = dict(prev or {})
        state["answered"] = True
        ctx.streams[str(sid)] = state
        return [out]

    return AnswerPart(streams=[spec], finish=finish)


def _copy(m: MediaSection) -> MediaSection:
    from sdp_rules.sdp import Line

    return MediaSection([Line(line.type, line.value) for line in m.lines])


def _rejected_answer(ctx: Context, sid: int, m: MediaSection, proto: str) -> AnswerPart:
    """An answer that rejects the stream (port 0): release it, answer port 0 in ``proto``."""
    def finish(reply: IqReply | None) -> list[MediaSection]:
        ctx.streams.pop(str(sid), None)
        return [_rejected(m, proto)]

    return AnswerPart(streams=[], finish=finish, release=[sid])


def _rejected(m: MediaSection, proto: str) -> MediaSection:
    """A rejected m-line (port 0) in the other side's proto (RFC 3264 section 6)."""
    out = _copy(m)
    out.port = 0
    out.proto = proto
    return out
