"""BUNDLE toward access: several m-lines on one transport (RFC 9143, RFC 8842, RFC 8858, RFC 8859).

Theory of operation
-------------------
With ``[policy] bundle = on`` (the default) the m-lines of an access
``a=group:BUNDLE`` share one *transport* (Iq :class:`~iq.TransportSpec`): one ICE-lite agent, one
DTLS association (RFC 9143 section 11: one handshake, one fingerprint check,
one ``a=tls-id``, RFC 8842 section 4) and one port, with RTP and RTCP
multiplexed (RFC 9143 section 9.3).  Each bundled m-line stays an Iq stream of
its own with its own core termination (the core does not bundle); its access
termination carries only what belongs to the m-line (payload types, SSRCs,
SCTP values) and names the transport.

The attributes of the RFC 8859 TRANSPORT and IDENTICAL categories that the
rules read or write are the transport's: ``ice-ufrag``, ``ice-pwd``,
``candidate``, ``end-of-candidates``, ``fingerprint``, ``setup``, ``tls-id``,
``rtcp`` (TRANSPORT) and ``rtcp-mux``, ``rtcp-mux-only`` (IDENTICAL).  They are
read from the *tagged* m-line only and written into it only (RFC 9143 section
7.1.3), with one exception: ``a=rtcp-mux`` is repeated in every bundled RTP
m-line, because Chromium refuses a bundled RTP m-line without it ("rtcp-mux
must be enabled when BUNDLE is enabled"), in answers and in the offers it
answers; RFC 8859 section 4.3 asks IDENTICAL values to be the same
everywhere, which they are.  Every other attribute (codecs, ``rtcp-fb``,
``extmap``, ``ssrc``, ``msid``, ``rtcp-rsize``, ``sctp-port``...) stays per
m-line, as the far side wrote it.

===================  ==================================================
WIC offer            the offerer-tagged m-line is the first eligible
                     mid of the group with a port (RFC 9143 7.3.1); its
                     ICE/DTLS attributes are the transport's; the
                     association is kept or renewed as RFC 8842 says
                     (:func:`sdp_rules.attrs.decide_association`)
core answer to it    the answerer-tagged m-line is the offerer-tagged one
                     unless the core rejected it (then the next accepted
                     member, RFC 9143 7.3.1); every accepted member gets
                     the transport's address and port (RFC 9143 7.3)
core offer           the edge offers one group with one transport: the
                     first member tagged, the others ``bundle-only`` with
                     port 0 in an initial BUNDLE offer (RFC 9143 7.2),
                     the transport's port in a later one (7.5)
WIC answer to it     the answerer-tagged m-line (first mid of the answer's
                     group) gives the peer's ICE/DTLS values and role
===================  ==================================================

Eligible members: DTLS-SRTP over UDP (``UDP/TLS/RTP/SAVP(F)``, every RTP
member with the same proto, RFC 9143 section 9.1) and at most one
``UDP/DTLS/SCTP`` data-channel line that carries a channel the edge
interworks.  T.38 (UDPTL and SCTP would both be DTLS application data, which
nothing tells apart: RFC 9143 section 8 wants a specification for that) and
TCP lines (another transport-layer protocol) are not bundled.  A member that
cannot join is answered with a transport of its own when it has a port
(moved out of the group, RFC 9143 7.3.2) and rejected when it is
``bundle-only`` (7.3.3).

ICE-TCP (RFC 6544): a transport whose peer offered TCP candidates when it was
created gets a passive TCP host candidate on its port, as an unbundled stream
does; mediad listens on TCP on that port for as long as the transport lives, so
the candidate is kept in later offers and answers on it (``ice_tcp``), and a
transport made without one never gets one.

RTCP feedback on a bundle: NACK, PLI, FIR and REMB (``a=rtcp-fb``) pass as the
far side wrote them and stay end to end between the WIC and the core (the AGW
relays the RTCP, routed by SSRC, RFC 9143 section 9.2).  Transport-wide
congestion control does not: its sequence numbers (the
``transport-wide-cc`` RTP header extension, ``a=rtcp-fb:* transport-cc``)
count every packet of one 5-tuple, and the bundle's 5-tuple carries several
core streams, each with a counter of its own.  So on a bundle both are
removed from the offer, in whichever direction it goes, and neither side
negotiates them.  (Without BUNDLE each m-line has its own 5-tuple and they
pass.)

A core offer is bundled toward access only when its m-lines can share one RTP
session: no payload type number with two different codecs (RFC 9143 9.1.1)
and no RTP header extension id with two meanings (RFC 9143 section 12);
otherwise it is offered unbundled, as with ``bundle = off``.  The data-channel
m-line the edge makes of a core offer's MSRP/T.140 lines keeps a transport of
its own (not bundled; WIC offers do bundle their data channel).  m-lines without
``a=mid`` get one (RFC 5888); mids and the MID header extension the edge added
are removed again from the answer sent to the core.

State: ``state.data["transports"][str(transport_id)]`` holds the transport's
``mids`` (members in group order), its ``tag``, the association (``role``,
tls-ids, the peer's fingerprints, ICE ufrag and address), ``ice``, ``ice_tcp``,
``mid_ext``, ``rtcp_mux_only`` and the AGW's ``reply``.  A bundled stream's
own state names its ``transport_id`` and ``mid``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from iq import IqReply, Role, TerminationReply, TransportReply, TransportSpec
from sdp_rules import attrs
from sdp_rules.errors import SdpPolicyError
from sdp_rules.handlers import Context
from sdp_rules.sdp import MediaSection, SessionDescription

SEMANTICS = "BUNDLE"
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
BUNDLE_ONLY = "bundle-only"
# Protos that can share a bundle here: DTLS-SRTP and data channels, both over UDP.
RTP_PROTOS = ("UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF")
SCTP_PROTO = "UDP/DTLS/SCTP"
TRANSPORT_WIDE_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
TRANSPORT_WIDE_CC_FEEDBACK = "transport-cc"
# One-byte RTP header extension ids (RFC 8285 section 4.2), for a MID extension the edge adds.
EXTMAP_IDS = range(1, 15)


# ---------------------------------------------------------------------------
# Reading the grouping attributes (RFC 5888, RFC 9143 sections 5 and 6)
# ---------------------------------------------------------------------------

def mid(m: MediaSection) -> str | None:
    value = m.attribute("mid")
    return value.strip() if value else None


def is_bundle_only(m: MediaSection) -> bool:
    """Port 0 with ``a=bundle-only``: offered, but only inside its BUNDLE group (RFC 9143 section 6)."""
    return m.port == 0 and m.has_attribute(BUNDLE_ONLY)


def groups(sdp: SessionDescription) -> list[list[str]]:
    """The mids of every ``a=group:BUNDLE`` (RFC 9143 section 5); 488 when they contradict."""
    mids = [mid(m) for m in sdp.media]
    known = [x for x in mids if x is not None]
    if len(set(known)) != len(known):
        raise SdpPolicyError("two m-lines have the same a=mid (RFC 5888 section 4)")
    out: list[list[str]] = []
    seen: set[str] = set()
    for value in sdp.session.attributes("group"):
        words = (value or "").split()
        if not words:
            raise SdpPolicyError("a=group without semantics (RFC 5888 section 5)")
        semantics, tags = words[0], words[1:]
        if semantics.upper() != SEMANTICS:
            continue
        for tag in tags:
            if tag not in known:
                raise SdpPolicyError(f"a=group:BUNDLE names mid {tag!r}, which no m-line has (RFC 5888 section 5)")
            if tag in seen:
                raise SdpPolicyError(f"mid {tag!r} is in more than one BUNDLE group (RFC 9143 section 5)")
            seen.add(tag)
        if tags:
            out.append(tags)
    return out


def mid_extension_id(m: MediaSection) -> int | None:
    """The ``a=extmap`` id of the RTP MID header extension in ``m`` (RFC 8285 section 5)."""
    for value in m.attributes("extmap"):
        ident, _, rest = (value or "").partition(" ")
        if rest.split(" ")[0] == MID_URI:
            number = ident.split("/")[0]
            if number.isdigit():
                return int(number)
    return None


def payload_types(m: MediaSection) -> list[int]:
    return [int(pt) for pt in m.fmts if pt.isdigit() and int(pt) < 128]


def ssrcs(m: MediaSection) -> list[int]:
    """The SSRCs an m-line announces with ``a=ssrc`` (RFC 5576 section 4.1), in order."""
    out: list[int] = []
    for value in m.attributes("ssrc"):
        number = (value or "").split(" ")[0]
        if number.isdigit() and int(number) < 2**32 and int(number) not in out:
            out.append(int(number))
    return out


def _rtpmaps(m: MediaSection) -> dict[int, tuple[str, str]]:
    """Payload type -> (encoding lower-cased, fmtp) of an m-line."""
    fmtps = {}
    for value in m.attributes("fmtp"):
        pt, _, params = (value or "").partition(" ")
        fmtps[pt] = params.strip()
    out = {}
    for value in m.attributes("rtpmap"):
        pt, _, encoding = (value or "").partition(" ")
        if pt.isdigit():
            out[int(pt)] = (encoding.strip().lower(), fmtps.get(pt, ""))
    return out


def rtp_session_conflict(sections: list[MediaSection]) -> str | None:
    """Why ``sections`` cannot be one RTP session, or None (RFC 9143 sections 9.1.1 and 12)."""
    codecs: dict[int, tuple[str, str]] = {}
    extensions: dict[int, str] = {}
    for m in sections:
        maps = _rtpmaps(m)
        for pt in payload_types(m):
            codec = maps.get(pt, (f"static {pt}", ""))
            if codecs.setdefault(pt, codec) != codec:
                return f"payload type {pt} stands for two codecs (RFC 9143 section 9.1.1)"
        for value in m.attributes("extmap"):
            ident, _, rest = (value or "").partition(" ")
            uri = rest.split(" ")[0]
            number = ident.split("/")[0]
            if number.isdigit() and extensions.setdefault(int(number), uri) != uri:
                return f"RTP header extension id {number} has two meanings (RFC 9143 section 12)"
    return None


def free_extension_id(sections: list[MediaSection]) -> int | None:
    """The MID extension id already used by ``sections``, else the lowest one-byte id none uses."""
    used = set()
    for m in sections:
        found = mid_extension_id(m)
        if found is not None:
            return found
        for value in m.attributes("extmap"):
            number = (value or "").split(" ")[0].split("/")[0]
            if number.isdigit():
                used.add(int(number))
    return next((i for i in EXTMAP_IDS if i not in used), None)


# ---------------------------------------------------------------------------
# One transport
# ---------------------------------------------------------------------------

@dataclass
class Transport:
    """One BUNDLE transport as one SDP exchange sees it.

    ``spec`` is what to ask of the AGW (None: nothing changes); ``state`` is
    what :meth:`record` stores once the AGW has answered; ``prev`` what was
    stored before.
    """

    tid: int
    mids: list[str]
    tag: str
    state: dict[str, Any]
    prev: dict[str, Any] | None = None
    spec: TransportSpec | None = None
    initial: bool = False  # the edge's own first BUNDLE offer: non-tagged members bundle-only
    _reply: TransportReply | None = field(default=None, repr=False)

    @classmethod
    def stored(cls, tid: int, state: dict[str, Any]) -> "Transport":
        return cls(tid, list(state["mids"]), state["tag"], dict(state), prev=state)

    def local(self, reply: IqReply | None) -> TransportReply:
        """The AGW's end of the transport: this reply's, else as stored (a kept transport)."""
        if self._reply is not None:
            return self._reply
        got = None
        if reply is not None:
            try:
                got = reply.transport(self.tid)
            except KeyError:
                got = None
        known = TransportReply.from_dict(self.prev["reply"]) if self.prev and self.prev.get("reply") else None
        if got is None:
            if known is None:
                raise ValueError(f"AGW reply lacks transport {self.tid}")
            got = known
        elif known is not None:
            # A kept association asks for nothing new: what the AGW leaves out stays.
            restart = self.spec is not None and self.spec.ice_restart
            for name in ("local_fingerprint",) if restart else ("local_fingerprint", "ice_ufrag", "ice_pwd"):
                if getattr(got, name) is None:
                    setattr(got, name, getattr(known, name))
        if self.spec is not None and self.spec.ice_restart and known is not None and got.ice_ufrag == known.ice_ufrag:
            raise ValueError(f"AGW kept its ICE credentials on transport {self.tid} through an ICE restart")
        self._reply = got
        return got

    def record(self, transports: dict[str, dict[str, Any]], reply: IqReply | None) -> None:
        transports[str(self.tid)] = dict(self.state, mids=list(self.mids), tag=self.tag,
                                         reply=self.local(reply).to_dict())

    @property
    def role(self) -> Role | None:
        return Role(self.state["role"]) if self.state.get("role") else None

    def setup(self, *, offer: bool) -> str:
        """``a=setup`` the AGW writes: its role, or ``actpass`` in an offer on a new association."""
        role = self.role
        if role is None or (offer and not self.state.get("answered", True)):
            return "actpass"
        return attrs.setup_for_role(role)

    def render(self, m: MediaSection, reply: IqReply | None, *, mid_value: str, tagged: bool, rtp: bool,
               offer: bool = False) -> None:
        """Put the transport into one member's m-line toward access (RFC 9143 sections 7.1.3, 7.2, 7.3, 7.5)."""
        local = self.local(reply)
        if self.initial and not tagged:
            m.port = 0
            m.set_connection(local.local_address, "IP6" if ":" in local.local_address else "IP4")
            m.add_attribute(BUNDLE_ONLY)
        elif tagged:
            term = TerminationReply(local.local_address, local.local_port, None, local.local_fingerprint,
                                    local.ice_ufrag, local.ice_pwd)
            attrs.add_access_transport(
                m, term, role_setup=self.setup(offer=offer), tls_id=self.state["local_tls_id"],
                ice=self.state.get("ice", True), rtcp_mux=bool(self.state.get("carries_rtp")),
                tcp_candidates=bool(self.state.get("ice_tcp")),
            )
            if self.state.get("rtcp_mux_only") and self.state.get("carries_rtp"):
                m.add_attribute("rtcp-mux-only")
        else:
            m.port = local.local_port
            m.set_connection(local.local_address, "IP6" if ":" in local.local_address else "IP4")
        if rtp and not tagged:
            m.add_attribute("rtcp-mux")
        ext = self.state.get("mid_ext")
        if rtp and ext is not None and mid_extension_id(m) is None:
            m.add_attribute("extmap", f"{ext} {MID_URI}")
        if mid(m) is None:
            m.add_attribute("mid", mid_value)

    def group_line(self, accepted: list[str]) -> str:
        """The ``a=group:BUNDLE`` value: the tag first, then the other accepted members in order."""
        rest = [x for x in self.mids if x in accepted and x != self.tag]
        return " ".join([SEMANTICS, self.tag, *rest])


@dataclass
class Member:
    """One bundled m-line: its transport, its mid, whether it is the tagged one."""

    transport: Transport
    mid: str
    tagged: bool

    @property
    def tid(self) -> int:
        return self.transport.tid


@dataclass
class Bundles:
    """The transports of one SDP exchange and which m-line belongs to which."""

    transports: list[Transport] = field(default_factory=list)
    members: dict[int, Member] = field(default_factory=dict)  # m-line index (access side) -> member
    release: list[int] = field(default_factory=list)  # transport ids to release

    def specs(self) -> list[TransportSpec]:
        return [t.spec for t in self.transports if t.spec is not None]

    def record(self, transports: dict[str, dict[str, Any]], reply: IqReply | None) -> None:
        for tid in self.release:
            transports.pop(str(tid), None)
        for transport in self.transports:
            transport.record(transports, reply)


def _where(index: int) -> str:
    return f"m-line {index + 1}"


def _transport_for(data: dict[str, Any], mids: list[str]) -> tuple[int, dict[str, Any] | None]:
    """The stored transport whose members overlap ``mids``, else a new id."""
    stored = data.get("transports", {})
    for tid, state in stored.items():
        if set(state["mids"]) & set(mids):
            return int(tid), state
    new = int(data.get("next_transport", 0))
    data["next_transport"] = new + 1
    return new, None


# ---------------------------------------------------------------------------
# WIC offer (and the core's answer to it)
# ---------------------------------------------------------------------------

def plan_access_offer(ctx: Context, sdp: SessionDescription, data: dict[str, Any],
                      eligible: Callable[[int], bool]) -> Bundles:
    """Which access m-lines share which transport, and what to ask of the AGW for it.

    ``eligible(index)`` says whether the edge can put m-line ``index`` on a
    transport it shares (see the module docstring).
    """
    out = Bundles()
    mids = [mid(m) for m in sdp.media]
    index_of = {x: i for i, x in enumerate(mids) if x is not None}
    mid_at = {i: x for x, i in index_of.items()}
    kept: set[int] = set()
    for group in groups(sdp):
        members: list[int] = []
        rtp_proto = None
        has_sctp = False
        for name in group:
            i = index_of[name]
            m = sdp.media[i]
            if m.port == 0 and not is_bundle_only(m):
                continue  # disabled (RFC 9143 7.5.3): not a member
            if not eligible(i):
                continue
            proto = m.proto.upper()
            if proto in RTP_PROTOS:
                if rtp_proto is not None and proto != rtp_proto:
                    continue  # RFC 9143 9.1: one proto for every bundled RTP m-line
                rtp_proto = proto
            elif proto == SCTP_PROTO:
                if has_sctp:
                    continue  # one SCTP association per DTLS association (RFC 8841 section 5)
                has_sctp = True
            members.append(i)
        if not members:
            continue
        tid, prev = _transport_for(data, [mid_at[i] for i in members])
        tagged = [i for i in members if sdp.media[i].port != 0]
        if prev is not None and mids[members[0]] != group[0] and prev.get("role"):
            # RFC 9143 7.3.3: the offerer-tagged m-line of a later offer cannot be refused.
            raise SdpPolicyError(f"the offerer-tagged m-line (mid {group[0]}) cannot be kept in the BUNDLE group")
        if not tagged:
            continue  # every member bundle-only: nothing to take the transport from (RFC 9143 7.3.1)
        tag = tagged[0]
        kept.add(tid)
        transport = _offer_transport(ctx, sdp, tid, prev, tag, members)
        out.transports.append(transport)
        for i in members:
            out.members[i] = Member(transport, mid_at[i], i == tag)
    out.release = sorted(int(t) for t in data.get("transports", {}) if int(t) not in kept)
    return out


def _offer_transport(ctx: Context, sdp: SessionDescription, tid: int, prev: dict[str, Any] | None, tag: int,
                     members: list[int]) -> Transport:
    m = sdp.media[tag]
    where = _where(tag)
    dtls = attrs.dtls_params(sdp, m, where, answer=False)
    ice = attrs.ice_params(sdp, m)
    address, port = attrs.remote_rtp_address(sdp, m, where)
    if dtls.tls_id:
        ctx.used_tls_ids.add(dtls.tls_id)
    known = prev if prev is not None and prev.get("role") else None
    association = attrs.decide_association(known, dtls, ice.ufrag, [address, port], ctx.policy.actpass,
                                           ctx.new_tls_id, where)
    ice_restart = bool(known and known.get("remote_ice_ufrag") and ice.ufrag
                       and ice.ufrag != known["remote_ice_ufrag"])
    rtp_members = [sdp.media[i] for i in members if sdp.media[i].proto.upper() in RTP_PROTOS]
    mid_ext = next((x for x in (mid_extension_id(r) for r in rtp_members) if x is not None), None)
    role = association.role
    spec = TransportSpec(
        transport_id=tid, remote_address=address, remote_port=port,
        ice_lite=ice.present, remote_ice_ufrag=ice.ufrag, remote_ice_pwd=ice.pwd,
        remote_candidates=list(ice.candidates), ice_restart=ice_restart,
        remote_fingerprints=list(dtls.fingerprints), local_fingerprint_request=True,
        establish_tls=role is Role.CLIENT and not association.reuse, tls_role=role, notify_tls_failure=True,
        local_tls_id=association.local_tls_id, remote_tls_id=dtls.tls_id,
        reuse_association=association.reuse, mid_extension_id=mid_ext,
    )
    state = {
        "role": role.value, "local_tls_id": association.local_tls_id, "remote_tls_id": dtls.tls_id,
        "remote_fingerprints": [str(fp) for fp in dtls.fingerprints], "remote_ice_ufrag": ice.ufrag,
        "remote_transport": [address, port], "ice": ice.present,
        # mediad listens for ICE-TCP on a transport from its creation on, when the peer offered TCP then.
        "ice_tcp": bool(prev.get("ice_tcp")) if prev is not None else ice.has_tcp,
        "mid_ext": mid_ext, "rtcp_mux_only": m.has_attribute("rtcp-mux-only"),
        "carries_rtp": bool(rtp_members), "reuse": association.reuse, "answered": True,
    }
    mids = [mid(sdp.media[i]) or "" for i in members]
    return Transport(tid, mids, mid(m) or "", state, prev=prev, spec=spec)


def answer_tag(transport: Transport, accepted: list[str]) -> str | None:
    """The answerer-tagged member: the offerer-tagged one if accepted, else the next (RFC 9143 7.3.1)."""
    order = [transport.tag] + [x for x in transport.mids if x != transport.tag]
    return next((x for x in order if x in accepted), None)


# ---------------------------------------------------------------------------
# Core offer toward access (and the WIC's answer to it)
# ---------------------------------------------------------------------------

def plan_core_offer(ctx: Context, data: dict[str, Any], candidates: list[tuple[int, MediaSection, bool]]) -> Bundles:
    """One transport for the access m-lines of a core offer (RFC 9143 7.2 and 7.5).

    ``candidates``: (access index, the core m-line it comes from, whether it is
    RTP) for every access m-line that may share the transport, in order.
    """
    out = Bundles()
    stored = data.get("transports", {})
    if len(candidates) < 1 or rtp_session_conflict([m for _, m, rtp in candidates if rtp]):
        out.release = sorted(int(t) for t in stored)
        return out
    mids: list[str] = []
    used = {mid(m) for _, m, _ in candidates if mid(m) is not None}
    added: dict[int, str] = {}
    for index, m, _ in candidates:
        value = mid(m)
        if value is None:
            value = str(index)
            while value in used:
                value += "x"
            used.add(value)
            added[index] = value
        mids.append(value)
    tid, prev = _transport_for(data, mids)
    rtp_sections = [m for _, m, rtp in candidates if rtp]
    mid_ext = prev.get("mid_ext") if prev else None
    ext_added = False
    if rtp_sections and mid_ext is None:
        mid_ext = free_extension_id(rtp_sections)
        ext_added = mid_ext is not None and all(mid_extension_id(m) is None for m in rtp_sections)
    tag = prev["tag"] if prev is not None and prev["tag"] in mids else mids[0]
    reuse = prev is not None and prev.get("remote_fingerprints") is not None and prev.get("role") is not None
    if prev is not None and reuse:
        spec = None
        state = dict(prev, mid_ext=mid_ext, carries_rtp=bool(rtp_sections), reuse=True)
    else:
        local_tls_id = ctx.new_tls_id()
        spec = TransportSpec(transport_id=tid, local_fingerprint_request=True, notify_tls_failure=True,
                             ice_lite=True, local_tls_id=local_tls_id, mid_extension_id=mid_ext)
        state = {"role": None, "local_tls_id": local_tls_id, "remote_tls_id": None, "remote_fingerprints": None,
                 "remote_ice_ufrag": None, "remote_transport": None, "ice": True, "ice_tcp": False,
                 "mid_ext": mid_ext, "rtcp_mux_only": True, "carries_rtp": bool(rtp_sections),
                 "reuse": False, "answered": False}
    # RFC 9143 9.1: one proto for every bundled RTP m-line; SAVPF (RFC 5124) as soon as one
    # core line is AVPF -- an AVPF endpoint also serves a plain AVP session (RFC 4585 section 5).
    avpf = any(m.proto.upper() == "RTP/AVPF" for m, rtp in ((m, rtp) for _, m, rtp in candidates) if rtp)
    state["rtp_proto"] = RTP_PROTOS[1] if avpf else RTP_PROTOS[0]
    state["added_mids"] = sorted(added.values())
    state["added_mid_ext"] = ext_added or bool(prev and prev.get("added_mid_ext"))
    transport = Transport(tid, mids, tag, state, prev=prev, spec=spec, initial=prev is None)
    out.transports.append(transport)
    for (index, _m, _rtp), value in zip(candidates, mids):
        out.members[index] = Member(transport, value, value == tag)
    out.release = sorted(int(t) for t in stored if int(t) != tid)
    return out


def plan_access_answer(ctx: Context, sdp: SessionDescription, transport: Transport,
                       indices: dict[str, int]) -> list[str]:
    """The WIC's answer to a bundled core offer: which members it kept, and the transport's new values.

    Sets ``transport.spec`` (the MODIFY of the transport) and its state, and
    returns the accepted mids.  The answerer-tagged m-line is the first mid of
    the answer's group that holds our members (RFC 9143 7.3.1); an answer
    without the group keeps only the tagged m-line, if it accepted it.
    """
    accepted_all = [x for x, i in indices.items() if not sdp.media[i].rejected]
    answer_groups = [g for g in groups(sdp) if set(g) & set(transport.mids)]
    if answer_groups:
        group = answer_groups[0]
        accepted = [x for x in group if x in accepted_all and x in transport.mids]
        tag = group[0] if group[0] in accepted else (accepted[0] if accepted else None)
    else:
        accepted = [transport.tag] if transport.tag in accepted_all else []
        tag = accepted[0] if accepted else None
    if tag is None:
        return []
    m = sdp.media[indices[tag]]
    where = _where(indices[tag])
    dtls = attrs.dtls_params(sdp, m, where, answer=True)
    ice = attrs.ice_params(sdp, m)
    address, port = attrs.remote_rtp_address(sdp, m, where)
    role = attrs.agw_role_for_answer(dtls.setup)
    state = transport.state
    reuse = bool(state.get("reuse"))
    if reuse and state.get("role") and Role(state["role"]) is not role:
        raise SdpPolicyError(f"{where}: a=setup:{dtls.setup} changes the DTLS role of the bundle's association")
    if dtls.tls_id:
        ctx.used_tls_ids.add(dtls.tls_id)
    repeat = bool(transport.prev and transport.prev.get("answered") and not reuse)
    transport.spec = TransportSpec(
        transport_id=transport.tid, remote_address=address, remote_port=port, ice_lite=ice.present,
        remote_ice_ufrag=ice.ufrag, remote_ice_pwd=ice.pwd, remote_candidates=list(ice.candidates),
        remote_fingerprints=list(dtls.fingerprints),
        establish_tls=role is Role.CLIENT and not reuse and not repeat, tls_role=role,
        notify_tls_failure=not (transport.prev and transport.prev.get("answered")),
        local_tls_id=state["local_tls_id"], remote_tls_id=dtls.tls_id, reuse_association=reuse,
        mid_extension_id=state.get("mid_ext"),
    )
    state.update({
        "role": role.value, "remote_tls_id": dtls.tls_id, "remote_fingerprints": [str(fp) for fp in dtls.fingerprints],
        "remote_ice_ufrag": ice.ufrag, "remote_transport": [address, port], "ice": ice.present, "answered": True,
    })
    transport.tag = tag
    transport.mids = [x for x in transport.mids if x in accepted]
    return accepted


def strip_added(m: MediaSection, state: dict[str, Any] | None) -> None:
    """Take out of a section going to the core what the edge added toward access (mid, MID extension)."""
    if not state:
        return
    value = mid(m)
    if value is not None and value in state.get("added_mids", []):
        m.remove_attributes("mid")
    if state.get("added_mid_ext"):
        keep = [line for line in m.lines
                if not (line.type == "a" and line.value.startswith("extmap:") and MID_URI in line.value)]
        m.lines[:] = keep


def strip_transport_wide_cc(m: MediaSection) -> None:
    """Remove transport-wide congestion control from a bundled RTP m-line (see the module docstring)."""
    def wanted(line) -> bool:
        if line.type != "a":
            return True
        name, _, value = line.value.partition(":")
        if name == "extmap":
            return TRANSPORT_WIDE_CC_URI not in value.split(" ")[1:2]
        if name == "rtcp-fb":
            return value.split(" ")[1:2] != [TRANSPORT_WIDE_CC_FEEDBACK]
        return True

    m.lines[:] = [line for line in m.lines if wanted(line)]
