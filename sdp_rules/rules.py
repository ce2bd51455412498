"""The IMS-ALG's SDP rules: from one SDP body to a :class:`~sdp_rules.plan.Plan`.

Theory of operation
-------------------
The dialog has two lists of m-lines: the access side's (what the WIC sees)
and the core side's.  They map one to one, except that one data-channel
m-line toward access stands for one core m-line per channel (MSRP, T.140;
TS 23.334 5.20.2.2).  ``state.data["map"]`` keeps that mapping per access
index: ``{"handler": kind, "core": {slot key: core index}}``, so re-offers
keep every m-line at its place (RFC 3264 section 8) and new lines go at the end.

An offer is cut into *groups*, each handled by one handler (:mod:`media` for
DTLS-SRTP/T.38, :mod:`datachannel` for data channels, or pass-through).  Each
group asks for Iq streams and renders its outgoing m-lines once the AGW has
replied.  What an answer needs to know of its offer is kept in
``state.data["pending"]``; it stays after the answer so that the same answer
seen twice (an 18x and the 2xx, a retransmission) renders the same SDP.

Streams that are not e2ae pass through untouched and the plan says why: plain
RTP, SDES ``RTP/SAVP``, rejected (port 0) lines, and unknown protos.

BUNDLE (RFC 9143) toward access follows ``Policy.bundle``.  ``off``: every
m-line gets a transport of its own, offers and answers go without
``a=group:BUNDLE`` (an answerer may decline bundling, RFC 9143 7.3) and a
``bundle-only`` line (port 0) passes through rejected.  ``on``: the m-lines of
a group share one Iq transport (:mod:`sdp_rules.bundle`), planned before the
handlers run and given to each bundled m-line's handler as its ``member``.
The core side never bundles: a core offer's ``a=group:BUNDLE`` is not passed
on, so the core is answered without it and keeps one transport per m-line.
"""

from __future__ import annotations

import copy
from typing import Any

from iq import Command, IqReply, IqRequest, Side
from sdp_rules import bundle, datachannel, media
from sdp_rules.errors import SdpPolicyError
from sdp_rules.handlers import AnswerPart, Context, OfferPart
from sdp_rules.plan import BundlePolicy, DialogState, Kind, Plan, Policy, Result, StreamDecision
from sdp_rules.sdp import Line, MediaSection, SessionDescription, parse

PASSTHROUGH = "passthrough"
SINGLE = "m"  # slot key of a one-to-one m-line
SESSION_ICE_DTLS = ("fingerprint", "setup", "tls-id", "ice-ufrag", "ice-pwd", "ice-lite", "ice-options")
# The access side's ICE and DTLS attributes of an m-line (a=setup stays: the core's
# MSRP over TCP uses it, RFC 4145).
# Profiles with TLS of their own that pass through end to end (RFC 7850).
OWN_TLS_PROTOS = ("TCP/TLS/RTP/SAVP", "TCP/TLS/RTP/SAVPF")
MEDIA_ICE_DTLS = ("fingerprint", "tls-id", "ice-ufrag", "ice-pwd", "ice-lite", "ice-options", "candidate",
                  "end-of-candidates", "remote-candidates")
_ATOMIC = frozenset({str, int, float, bool, type(None)})


def copy_state(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """``copy.deepcopy`` of a dialog state, fast for what it is made of (JSON values).

    Plain dicts and lists are copied here, sharing preserved as deepcopy does;
    anything else goes to ``copy.deepcopy`` with the same memo, so the result is
    the same as deepcopy's (this runs twice per SDP body in the signalling path).
    """
    cls = value.__class__
    if cls in _ATOMIC:
        return value
    if memo is None:
        memo = {}
    seen = memo.get(id(value))
    if seen is not None:
        return seen
    if cls is dict:
        out: Any = {}
        memo[id(value)] = out
        for key, item in value.items():
            out[key if key.__class__ in _ATOMIC else copy_state(key, memo)] = (
                item if item.__class__ in _ATOMIC else copy_state(item, memo))
        return out
    if cls is list:
        out = []
        memo[id(value)] = out
        out.extend([item if item.__class__ in _ATOMIC else copy_state(item, memo) for item in value])
        return out
    return copy.deepcopy(value, memo)


def process(
    sdp: str,
    *,
    origin: Side,
    kind: Kind,
    state: DialogState,
    dialog: str,
    transaction: str,
    policy: Policy,
    owned: bool = False,
) -> Plan:
    """Plan the handling of one SDP body (see the module docstring).

    ``state`` is left as it is, unless ``owned``: the caller hands it over (it will
    keep the result's state, never this one), and the plan works on it in place
    rather than on a copy.
    """
    parsed = parse(sdp)
    data = state.data if owned else copy_state(state.data)
    data.setdefault("streams", {})
    data.setdefault("map", {})
    ctx = Context(
        origin=origin, kind=kind, policy=policy, sdp=parsed, streams=data["streams"],
        used_tls_ids=set(data.get("tls_ids", [])), transports=data.get("transports", {}),
    )
    if kind is Kind.OFFER:
        planner = _plan_offer_from_access if origin is Side.ACCESS else _plan_offer_from_core
    else:
        planner = _plan_answer
    streams, release, decisions, render, bundles = planner(ctx, parsed, data)
    iq = None
    transports = bundles.specs()
    if streams or release or transports or bundles.release:
        command = Command.MODIFY if data.get("agw") else Command.RESERVE
        iq = IqRequest(command, dialog, transaction, streams, release, transports, list(bundles.release))
    version = state.version

    def finish(reply: IqReply | None) -> Result:
        if iq is not None and reply is None:
            raise ValueError("the plan asked the AGW something; finish() needs its reply")
        if reply is not None and reply.error:
            raise ValueError(f"AGW refused the request: {reply.error}")
        out = render(reply)
        # A copy of ``data`` in which "streams" and "tls_ids" are replaced (not copied:
        # a copy of them would be thrown away), every key at its place.
        replaced = {"streams": ctx.streams, "tls_ids": sorted(ctx.used_tls_ids)}
        if ctx.transports or "transports" in data:
            replaced["transports"] = ctx.transports
        memo: dict[int, Any] = {}
        new = {key: replaced[key] if key in replaced else copy_state(value, memo) for key, value in data.items()}
        new.update(replaced)
        if iq is not None:
            new["agw"] = True
        return Result(sdp=str(out), state=DialogState(version=version + 1, data=new))

    return Plan(origin=origin, kind=kind, iq=iq, streams=decisions, _finish=finish)


# ---------------------------------------------------------------------------
# Offers from access: access m-line i -> one or more core m-lines
# ---------------------------------------------------------------------------

def _plan_offer_from_access(ctx: Context, sdp: SessionDescription, data: dict[str, Any]):
    old_map: dict[str, Any] = data["map"]
    next_core = 1 + max((idx for entry in old_map.values() for idx in entry["core"].values()), default=-1)
    groups: list[dict[str, Any]] = []
    parts: list[OfferPart | None] = []
    decisions: list[StreamDecision] = []
    release: list[int] = []
    orphaned: list[int] = []  # streams whose line now carries none (released; the line rendered by its handler)
    bundles = bundle.Bundles()
    if ctx.policy.bundle is BundlePolicy.ON:
        bundles = bundle.plan_access_offer(ctx, sdp, data, lambda i: _bundle_eligible(sdp.media[i]))
    for i, m in enumerate(sdp.media):
        member = bundles.members.get(i)
        rejected = m.rejected and member is None
        handler, reason = _classify_access(m, bundled=member is not None)
        if rejected and old_map.get(str(i), {}).get("handler") == datachannel.KIND:
            # A data-channel line rejected in a re-offer: its handler rejects its core lines in place.
            handler, reason = datachannel.KIND, "rejected (port 0)"
        part: OfferPart | None = None
        if rejected and old_map.get(str(i), {}).get("handler") in media.ACCESS_KINDS:
            # A DTLS media line disabled in a re-offer: release its AGW stream and
            # keep its core m-line in place, rejected (RFC 3264 section 8.2).
            release.append(i)
            reason = "disabled in a re-offer: stream released"
        if member is not None:
            reason = f"bundled on transport {member.tid}" + (" (tagged)" if member.tagged else "")
        if handler in media.ACCESS_KINDS:
            part = media.offer_from_access(ctx, i, m, sid=i, member=member)
        elif handler == datachannel.KIND:
            known = old_map.get(str(i), {}).get("core", {})
            part = datachannel.offer_from_access(ctx, i, m, sid=i, known_keys=dict(known), member=member)
        keys = part.keys if part else [SINGLE]
        known = old_map.get(str(i), {}).get("core", {})
        slots: dict[str, int] = {}
        for key in keys:
            if key in known:
                slots[key] = known[key]
            else:
                slots[key] = next_core
                next_core += 1
        vanished = {k: v for k, v in known.items() if k not in slots}
        groups.append({"access": i, "handler": handler, "core": slots, "vanished": vanished,
                       "data": part.pending if part else {}})
        parts.append(part)
        carried = [s.stream_id for s in part.streams] if part else []
        if i not in release and i not in carried and old_map.get(str(i), {}).get("handler") in media.ACCESS_KINDS:
            # The line no longer carries its DTLS stream (another protocol, an incomplete data
            # channel): the stream goes, as with a line disabled (else mediad keeps it, on a
            # transport the bundle rules may release).
            orphaned.append(i)
            reason = f"{reason}; its stream released" if reason else "no longer DTLS media: stream released"
        decisions.append(StreamDecision(i, m.media, m.proto, handler, reason, carried))
    # Lines the re-offer left out (RFC 3264 section 8 keeps them; they go to the core rejected): their
    # streams go too.
    orphaned += [int(i) for i, entry in old_map.items()
                 if int(i) >= len(sdp.media) and entry.get("handler") in media.ACCESS_KINDS]
    streams = [s for p in parts if p for s in p.streams]
    core_count = next_core

    def render(reply: IqReply | None) -> SessionDescription:
        out: list[MediaSection | None] = [None] * core_count
        old_lines = data.get("core_mlines", {})
        for i in orphaned:
            ctx.streams.pop(str(i), None)
        for group, part, m in zip(groups, parts, sdp.media):
            if group["access"] in release:
                ctx.streams.pop(str(group["access"]), None)
                sections = [_rejected_from_m(old_lines.get(str(group["core"][SINGLE])), m)]
            else:
                sections = part.finish(reply) if part else [_copy(m)]
            for key, section in zip(group["core"], sections):
                out[group["core"][key]] = section
            for key, idx in group["vanished"].items():
                out[idx] = _rejected_from_m(old_lines.get(str(idx)), m)
        filled = [s if s is not None else _rejected_from_m(data.get("core_mlines", {}).get(str(idx)), None)
                  for idx, s in enumerate(out)]
        bundles.record(ctx.transports, reply)
        result = _assemble(sdp, filled, toward=Side.CORE, any_e2ae=bool(streams))
        data["map"] = {str(g["access"]): {"handler": g["handler"], "core": g["core"]} for g in groups}
        data["core_mlines"] = {str(i): str(s.lines[0].value) for i, s in enumerate(filled)}
        data["pending"] = {"origin": Side.ACCESS.value, "groups": groups, "count": core_count}
        if bundles.transports:
            data["pending"]["bundles"] = _pending_bundles(bundles)
        return result

    return streams, release + orphaned, decisions, render, bundles


# ---------------------------------------------------------------------------
# Offers from the core: core m-lines -> access m-lines (several into one data channel line)
# ---------------------------------------------------------------------------

def _plan_offer_from_core(ctx: Context, sdp: SessionDescription, data: dict[str, Any]):
    old_map: dict[str, Any] = data["map"]
    reverse: dict[int, tuple[int, str]] = {}
    for access_key, entry in old_map.items():
        for key, core_idx in entry["core"].items():
            reverse[core_idx] = (int(access_key), key)
    next_access = 1 + max((int(k) for k in old_map), default=-1)
    by_access: dict[int, dict[str, Any]] = {}
    new_dc_access: int | None = None
    decisions: list[StreamDecision] = []
    release: list[int] = []
    for j, m in enumerate(sdp.media):
        if j in reverse:
            access_idx, key = reverse[j]
            handler = old_map[str(access_idx)]["handler"]
            reason = "existing m-line"
            if handler != datachannel.KIND and handler != PASSTHROUGH:
                if m.rejected and str(access_idx) in ctx.streams:
                    # Disabled by the core in a re-offer: release the AGW stream.
                    release.append(access_idx)
                    reason = "disabled in a re-offer: stream released"
                handler_now, reason_now = _classify_core(m)
                if handler_now == datachannel.KIND and not m.rejected:
                    # RFC 3264 8.3.3 lets the media type change, but this line's access
                    # m-line is a DTLS media line: it cannot become a data channel in place.
                    raise SdpPolicyError(
                        f"m-line {j + 1}: a re-offer turning a {handler} stream into {m.media} for a"
                        " data channel is not supported"
                    )
                handler = handler_now if not m.rejected else PASSTHROUGH
                reason = reason if m.rejected else reason_now
        else:
            handler, reason = _classify_core(m)
            key = None
            if handler == datachannel.KIND:
                existing = [int(a) for a, e in old_map.items() if e["handler"] == datachannel.KIND]
                if existing:
                    access_idx = existing[0]
                else:
                    if new_dc_access is None:
                        new_dc_access = next_access
                        next_access += 1
                    access_idx = new_dc_access
            else:
                access_idx = next_access
                next_access += 1
        group = by_access.setdefault(access_idx, {"access": access_idx, "handler": handler, "inputs": []})
        group["inputs"].append((j, m, key))
        decisions.append(StreamDecision(j, m.media, m.proto, handler, reason, []))
    order = sorted(by_access)
    if order != list(range(len(order))):
        raise SdpPolicyError("core offer does not keep every m-line of the session (RFC 3264 section 8)")
    bundles = bundle.Bundles()
    if ctx.policy.bundle is BundlePolicy.ON:
        candidates = [(a, by_access[a]["inputs"][0][1], True) for a in order
                      if _core_line_bundles(ctx, by_access[a], a)]
        bundles = bundle.plan_core_offer(ctx, data, candidates)
    parts: dict[int, OfferPart | None] = {}
    for access_idx in order:
        group = by_access[access_idx]
        handler = group["handler"]
        part = None
        member = bundles.members.get(access_idx)
        if handler == datachannel.KIND:
            part = datachannel.offer_from_core(ctx, access_idx, group["inputs"], sid=access_idx)
        elif handler in media.ACCESS_KINDS:
            j, m, _ = group["inputs"][0]
            part = media.offer_from_core(ctx, j, m, sid=access_idx, member=member)
        parts[access_idx] = part
        keys = part.keys if part else [SINGLE] * len(group["inputs"])
        group["core"] = {key: j for key, (j, _m, _k) in zip(keys, group["inputs"])}
        group["data"] = part.pending if part else {}
        for j, _m, _k in group["inputs"]:
            decisions[j].stream_ids = [s.stream_id for s in part.streams] if part else []
    streams = [s for p in parts.values() if p for s in p.streams]

    def render(reply: IqReply | None) -> SessionDescription:
        out: list[MediaSection] = []
        for access_idx in order:
            group, part = by_access[access_idx], parts[access_idx]
            if part:
                out.extend(part.finish(reply))
            elif access_idx in release:
                stream = ctx.streams.pop(str(access_idx))
                out.append(_rejected_as(group["inputs"][0][1], stream.get("access_proto")))
            else:
                out.append(_copy(group["inputs"][0][1]))
        bundles.record(ctx.transports, reply)
        result = _assemble(sdp, out, toward=Side.ACCESS, any_e2ae=bool(streams),
                           bundle_groups=[t.group_line(t.mids) for t in bundles.transports])
        data["map"] = {
            str(a): {"handler": by_access[a]["handler"], "core": by_access[a]["core"]} for a in order
        }
        data["core_mlines"] = {str(j): m.lines[0].value for j, m in enumerate(sdp.media)}
        data["pending"] = {
            "origin": Side.CORE.value,
            "groups": [
                {"access": a, "handler": by_access[a]["handler"], "core": by_access[a]["core"],
                 "data": by_access[a]["data"]}
                for a in order
            ],
            "count": len(order),
        }
        if bundles.transports:
            data["pending"]["bundles"] = _pending_bundles(bundles)
        return result

    return streams, release, decisions, render, bundles


# ---------------------------------------------------------------------------
# Answers: back through the same groups
# ---------------------------------------------------------------------------

def _plan_answer(ctx: Context, sdp: SessionDescription, data: dict[str, Any]):
    pending = data.get("pending")
    if not pending:
        raise SdpPolicyError("SDP answer without an offer in progress")
    offer_origin = Side(pending["origin"])
    if offer_origin is ctx.origin:
        raise SdpPolicyError(f"SDP answer from {ctx.origin.value} to its own offer")
    if len(sdp.media) != pending["count"]:
        raise SdpPolicyError(
            f"answer has {len(sdp.media)} m-lines, the offer had {pending['count']} (RFC 3264 section 6)"
        )
    parts: list[tuple[dict[str, Any], AnswerPart | None, list[MediaSection]]] = []
    decisions: list[StreamDecision] = []
    bundles, answer_groups = _answer_bundles(ctx, sdp, pending, offer_origin)
    for group in pending["groups"]:
        handler = group["handler"]
        member = bundles.members.get(group["access"])
        if offer_origin is Side.ACCESS:
            # The core answers: its m-lines at the group's core indices -> one access m-line.
            indices = list(group["core"].values())
            sections = [sdp.media[j] for j in indices]
            part = None
            if handler in media.ACCESS_KINDS:
                part = media.answer_from_core(ctx, indices[0], group["data"], sections[0], member=member)
            elif handler == datachannel.KIND:
                keyed = dict(zip(group["core"].keys(), sections))
                part = datachannel.answer_from_core(ctx, group["access"], group["data"], keyed, member=member)
        else:
            # The WIC answers: its m-line at the group's access index -> the group's core m-lines.
            m = sdp.media[group["access"]]
            sections = [m]
            part = None
            if handler in media.ACCESS_KINDS:
                part = media.answer_from_access(ctx, group["access"], group["data"], m, member=member)
            elif handler == datachannel.KIND:
                part = datachannel.answer_from_access(ctx, group["access"], group["data"], m)
        parts.append((group, part, sections))
        first = sections[0]
        decisions.append(StreamDecision(
            group["access"] if offer_origin is Side.CORE else list(group["core"].values())[0],
            first.media, first.proto, handler, "" if part else "not e2ae",
            [s.stream_id for s in part.streams] if part else [],
        ))
    streams = [s for _, p, _ in parts if p for s in p.streams]
    release = [sid for _, p, _ in parts if p for sid in p.release]

    def render(reply: IqReply | None) -> SessionDescription:
        if offer_origin is Side.ACCESS:
            out_access: list[MediaSection] = []
            for group, part, sections in parts:
                out_access.extend(part.finish(reply) if part else [_copy(sections[0])])
            bundles.record(ctx.transports, reply)
            return _assemble(sdp, out_access, toward=Side.ACCESS, any_e2ae=bool(streams or release),
                             bundle_groups=answer_groups)
        placed: dict[int, MediaSection] = {}
        for group, part, sections in parts:
            rendered = part.finish(reply) if part else [_copy(sections[0])]
            for core_idx, section in zip(group["core"].values(), rendered):
                placed[core_idx] = section
        out_core = [placed[j] for j in sorted(placed)]
        bundles.record(ctx.transports, reply)
        return _assemble(sdp, out_core, toward=Side.CORE, any_e2ae=bool(streams or release))

    return streams, release, decisions, render, bundles


def _answer_bundles(ctx: Context, sdp: SessionDescription, pending: dict[str, Any],
                    offer_origin: Side) -> tuple[bundle.Bundles, list[str]]:
    """The transports of an offer in progress, as its answer leaves them, and the access group lines."""
    out = bundle.Bundles()
    lines: list[str] = []
    for entry in pending.get("bundles", []):
        tid = entry["tid"]
        state = ctx.transports.get(str(tid))
        if state is None:
            continue
        transport = bundle.Transport.stored(tid, state)
        transport.mids, transport.tag = list(entry["mids"]), entry["tag"]
        indices = {mid: int(i) for mid, i in entry["indices"].items()}
        if offer_origin is Side.ACCESS:
            cores = {g["access"]: list(g["core"].values()) for g in pending["groups"]}
            accepted = [mid for mid in transport.mids
                        if any(not sdp.media[j].rejected for j in cores.get(indices[mid], []))]
            tag = bundle.answer_tag(transport, accepted)
            if tag is not None:
                transport.tag = tag
                transport.mids = [mid for mid in transport.mids if mid in accepted]
        else:
            accepted = bundle.plan_access_answer(ctx, sdp, transport, indices)
        if not accepted:
            out.release.append(tid)
            continue
        out.transports.append(transport)
        for mid in accepted:
            out.members[indices[mid]] = bundle.Member(transport, mid, mid == transport.tag)
        lines.append(transport.group_line(accepted))
    return out, lines


def _pending_bundles(bundles: bundle.Bundles) -> list[dict[str, Any]]:
    """What an answer needs to know of the transports of its offer (JSON)."""
    out = []
    for transport in bundles.transports:
        indices = {m.mid: i for i, m in bundles.members.items() if m.transport is transport}
        out.append({"tid": transport.tid, "tag": transport.tag, "mids": list(transport.mids),
                    "indices": {mid: indices[mid] for mid in transport.mids}})
    return out


def _bundle_eligible(m: MediaSection) -> bool:
    """May this access m-line share a BUNDLE transport? (see :mod:`sdp_rules.bundle`)."""
    proto = m.proto.upper()
    if proto == bundle.SCTP_PROTO:
        return datachannel.FORMAT in m.fmts and datachannel.interworkable(m)
    return proto in bundle.RTP_PROTOS


def _core_line_bundles(ctx: Context, group: dict[str, Any], access_idx: int) -> bool:
    """May the access m-line made of this core offer group share the BUNDLE transport?"""
    if group["handler"] != "srtp" or len(group["inputs"]) != 1:
        return False
    prev = ctx.streams.get(str(access_idx))
    return not (prev and prev.get("kind") == "srtp_tcp")


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def _classify_access(m: MediaSection, bundled: bool = False) -> tuple[str, str]:
    if m.rejected and not bundled:
        return PASSTHROUGH, "rejected (port 0)"
    kind = media.classify_access(m)
    if kind:
        return kind, ""
    if datachannel.classify_access(m):
        return datachannel.KIND, ""
    if m.proto.upper() == "RTP/SAVP" or m.proto.upper() == "RTP/SAVPF":
        return PASSTHROUGH, "SDES-SRTP, not DTLS: not e2ae"
    return PASSTHROUGH, f"proto {m.proto} is not e2ae"


def _classify_core(m: MediaSection) -> tuple[str, str]:
    if m.rejected:
        return PASSTHROUGH, "rejected (port 0)"
    if datachannel.classify_core(m):
        return datachannel.KIND, ""
    kind = media.classify_core(m)
    if kind:
        return kind, ""
    if m.proto.upper() in ("RTP/SAVP", "RTP/SAVPF"):
        return PASSTHROUGH, "SDES-SRTP from the core: not e2ae"
    return PASSTHROUGH, f"proto {m.proto} is not e2ae"


def _assemble(source: SessionDescription, sections: list[MediaSection], *, toward: Side,
              any_e2ae: bool, bundle_groups: list[str] | None = None) -> SessionDescription:
    """The outgoing SDP: the source's session section (adjusted) and the rendered m-lines.

    ``bundle_groups``: the ``a=group`` values of the edge's BUNDLE transports,
    written where the session's first attribute was.
    """
    session = type(source.session)([Line(line.type, line.value) for line in source.session.lines])
    out = SessionDescription(session, sections)
    if toward is Side.CORE:
        # The WIC's ICE and DTLS attributes never reach the core where nothing can use
        # them: on a passed-through m-line that is rejected or has no TLS of its own
        # (plain RTP, an unknown profile), and at session level when no m-line with
        # its own TLS (RFC 7850 TCP/TLS/RTP/...) is passed through.
        secure = False
        for section in sections:
            if section.rejected or section.proto.upper() not in OWN_TLS_PROTOS:
                section.remove_attributes(*MEDIA_ICE_DTLS)
            else:
                secure = True
        if not secure:
            session.remove_attributes(*SESSION_ICE_DTLS)
    if not any_e2ae:
        return out
    first = next((k for k, line in enumerate(session.lines) if line.type == "a"), len(session.lines))
    session.remove_attributes("group")
    session.remove_attributes(*SESSION_ICE_DTLS)
    for offset, value in enumerate(bundle_groups or []):
        session.lines.insert(min(first, len(session.lines)) + offset, Line("a", f"group:{value}"))
    if toward is Side.ACCESS and any(s.has_attribute("ice-ufrag") for s in sections):
        session.add_attribute("ice-lite")
    # With every live m-line anchored at the AGW, the session-level c= follows it.
    live = [s for s in sections if not s.rejected]
    connections = [s.connection for s in live if s.connection is not None]
    addresses = {c.address for c in connections}
    if live and len(addresses) == 1 and len(connections) == len(live):
        if session.connection is not None:
            session.set_connection(addresses.pop(), connections[0].addr_type)
            for s in live:
                s.remove_lines("c")
    return out


def _copy(m: MediaSection) -> MediaSection:
    return MediaSection([Line(line.type, line.value) for line in m.lines])


def _rejected_from_m(m_value: str | None, fallback: MediaSection | None) -> MediaSection:
    """A port-0 placeholder for a core m-line that no longer carries anything."""
    if m_value is None and fallback is not None:
        m_value = fallback.lines[0].value
    if m_value is None:
        m_value = "application 0 TCP *"
    parts = m_value.split(" ")
    parts[1] = "0"
    return MediaSection([Line("m", " ".join(parts))])


def _rejected_as(m: MediaSection, proto: str | None) -> MediaSection:
    """``m`` rejected (port 0), in the proto the other side has known it by."""
    out = MediaSection([m.lines[0]])
    out = _copy(out)
    out.port = 0
    if proto:
        out.proto = proto
    return out


def release_request(dialog: str, transaction: str) -> IqRequest:
    """The Iq request that releases everything of a dialog (BYE, CANCEL, failure)."""
    return IqRequest(Command.RELEASE, dialog, transaction)


__all__ = ["process", "release_request"]
