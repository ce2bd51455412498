"""Reading and writing the DTLS, ICE and RTCP attributes of a media section.

* DTLS: ``a=fingerprint`` (RFC 8122 section 5), ``a=setup`` (RFC 4145 section
  4, RFC 5763 section 5), ``a=tls-id`` (RFC 8842 section 4).  Media-level values
  override session-level ones; when both levels carry *different* values the
  SDP is ambiguous and is refused (488).
* ICE (RFC 8839): every ``ice-*`` attribute, ``candidate``,
  ``remote-candidates`` and ``end-of-candidates``.  The AGW is ICE-lite toward
  access (RFC 8445 section 2.5); toward the core no ICE attribute survives.
* RTCP: ``a=rtcp`` (RFC 3605), ``a=rtcp-mux`` (RFC 5761), ``a=rtcp-mux-only``
  (RFC 8858).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from iq import Fingerprint, Role, TerminationReply
from sdp_rules.errors import SdpPolicyError
from sdp_rules.plan import ActpassPolicy
from sdp_rules.sdp import MediaSection, SessionDescription

SETUP_VALUES = ("active", "passive", "actpass", "holdconn")
# RFC 8122 section 5 / IANA "Hash Function Textual Names", without MD2 and MD5
# (which RFC 8122 section 5 forbids for new fingerprints).
USABLE_HASH_FUNCTIONS = ("sha-1", "sha-224", "sha-256", "sha-384", "sha-512")
DTLS_ATTRIBUTES = ("fingerprint", "setup", "tls-id", "connection")
ICE_ATTRIBUTES = (
    "ice-ufrag", "ice-pwd", "ice-lite", "ice-options", "ice-pacing", "ice-mismatch",
    "candidate", "remote-candidates", "end-of-candidates",
)
RTCP_ATTRIBUTES = ("rtcp", "rtcp-mux", "rtcp-mux-only")
# RFC 8842 section 4: tls-id-value = 20*255(ALPHA / DIGIT / "+" / "/" / "-" / "_")
_TLS_ID_RE = re.compile(r"^[A-Za-z0-9+/\-_]{20,255}$")


@dataclass
class DtlsParams:
    """The DTLS attributes that apply to one media section."""

    fingerprints: list[Fingerprint]
    setup: str  # "active" | "passive" | "actpass"
    tls_id: str | None


def _level_values(sdp: SessionDescription, m: MediaSection, name: str, where: str) -> list[str]:
    media_values = [v or "" for v in m.attributes(name)]
    session_values = [v or "" for v in sdp.session.attributes(name)]
    if media_values and session_values and sorted(media_values) != sorted(session_values):
        raise SdpPolicyError(f"{where}: a={name} differs between session and media level")
    return media_values or session_values


def dtls_params(sdp: SessionDescription, m: MediaSection, where: str, *, answer: bool) -> DtlsParams:
    """Validate and return the DTLS attributes of a DTLS-protected media section."""
    raw_fps = _level_values(sdp, m, "fingerprint", where)
    if not raw_fps:
        raise SdpPolicyError(f"{where}: DTLS media without a=fingerprint (RFC 8122)")
    fingerprints = []
    unknown = []
    for raw in raw_fps:
        hash_func = raw.strip().split(" ")[0]
        if hash_func.lower() not in USABLE_HASH_FUNCTIONS:
            # RFC 8122 section 5: the verifier picks the set of its preferred
            # hash function among those offered; others are ignored.
            unknown.append(hash_func)
            continue
        try:
            fingerprints.append(Fingerprint.parse(raw))
        except ValueError as exc:
            raise SdpPolicyError(f"{where}: {exc}") from None
    if not fingerprints:
        raise SdpPolicyError(
            f"{where}: a=fingerprint uses no supported hash function ({', '.join(unknown)}; RFC 8122 section 5)"
        )
    setups = _level_values(sdp, m, "setup", where)
    if len(set(setups)) > 1:
        raise SdpPolicyError(f"{where}: more than one a=setup value")
    # RFC 4145 section 4.1: without a setup attribute an offerer is "active"
    # and an answerer "passive".
    setup = setups[0].strip() if setups else ("passive" if answer else "active")
    if setup not in SETUP_VALUES:
        raise SdpPolicyError(f"{where}: a=setup:{setup} is not active/passive/actpass")
    if setup == "holdconn":
        raise SdpPolicyError(f"{where}: a=setup:holdconn cannot carry DTLS media")
    if answer and setup == "actpass":
        raise SdpPolicyError(f"{where}: a=setup:actpass is not allowed in an answer (RFC 4145)")
    tls_ids = [v.strip() for v in m.attributes("tls-id") if v]
    if sdp.session.has_attribute("tls-id"):
        raise SdpPolicyError(f"{where}: a=tls-id is a media-level attribute (RFC 8842 section 4)")
    if len(set(tls_ids)) > 1:
        raise SdpPolicyError(f"{where}: more than one a=tls-id value")
    tls_id = tls_ids[0] if tls_ids else None
    if tls_id is not None and not _TLS_ID_RE.match(tls_id):
        raise SdpPolicyError(f"{where}: a=tls-id:{tls_id} is not 20-255 tls-id characters (RFC 8842)")
    return DtlsParams(fingerprints, setup, tls_id)


def agw_role_for_offer(setup: str, policy: ActpassPolicy) -> Role:
    """The AGW's DTLS role answering an offer with ``a=setup:<setup>`` (TS 23.334 6.2.10.4.2)."""
    if setup == "active":
        return Role.SERVER
    if setup == "passive":
        return Role.CLIENT
    return Role.CLIENT if policy is ActpassPolicy.ACTIVE else Role.SERVER


def agw_role_for_answer(setup: str) -> Role:
    """The AGW's DTLS role after an answer with ``a=setup:<setup>`` (TS 23.334 6.2.10.5)."""
    return Role.SERVER if setup == "active" else Role.CLIENT


def setup_for_role(role: Role) -> str:
    """What the AGW's side says in SDP for its role: client → active, server → passive."""
    return "active" if role is Role.CLIENT else "passive"


def same_association(
    prev: dict, dtls: DtlsParams, ice_ufrag: str | None, transport: list, actpass: ActpassPolicy,
) -> bool:
    """RFC 8842 sections 4 and 5: does this re-offer keep the existing DTLS association?

    With ``a=tls-id`` on either side, the tls-id alone decides.  A peer without
    it wants a new association when it changes its fingerprint set, its DTLS
    role, its ICE ufrag or -- without ICE -- its transport address and port.
    (With ICE the m=/c= address follows the selected candidate pair and is no
    sign of a new association; the ufrag is.)  ``prev`` is the stream's stored
    state: ``remote_tls_id``, ``remote_fingerprints``, ``remote_ice_ufrag``,
    ``role`` and ``remote_transport``.
    """
    if dtls.tls_id is not None or prev.get("remote_tls_id") is not None:
        return dtls.tls_id == prev.get("remote_tls_id")
    same_fps = sorted(str(fp) for fp in dtls.fingerprints) == sorted(prev.get("remote_fingerprints") or [])
    if not same_fps or ice_ufrag != prev.get("remote_ice_ufrag"):
        return False
    if dtls.setup != "actpass" and agw_role_for_offer(dtls.setup, actpass).value != prev.get("role"):
        return False
    return ice_ufrag is not None or prev.get("remote_transport") == transport


@dataclass
class Association:
    """What a WIC offer means for a stream's DTLS association."""

    reuse: bool
    role: Role
    local_tls_id: str


def decide_association(
    prev: dict | None, dtls: DtlsParams, ice_ufrag: str | None, transport: list,
    policy_actpass: ActpassPolicy, new_tls_id, where: str,
) -> Association:
    """Keep the association (same role and tls-id: role stickiness) or start a new one.

    A kept association never changes role, even on an ``actpass`` re-offer;
    an explicit setup value that would change it is refused (RFC 8842 5.3).
    ``new_tls_id`` is called only for a new association.
    """
    if prev is not None and same_association(prev, dtls, ice_ufrag, transport, policy_actpass):
        role = Role(prev["role"])
        if dtls.setup != "actpass" and agw_role_for_offer(dtls.setup, policy_actpass) is not role:
            raise SdpPolicyError(
                f"{where}: a=setup:{dtls.setup} would change the DTLS role of an existing association"
                " (same tls-id; RFC 8842 section 5.3)"
            )
        return Association(True, role, prev["local_tls_id"])
    return Association(False, agw_role_for_offer(dtls.setup, policy_actpass), new_tls_id())


@dataclass
class IceParams:
    ufrag: str | None
    pwd: str | None
    candidates: list[str]

    @property
    def present(self) -> bool:
        return self.ufrag is not None or bool(self.candidates)

    @property
    def has_tcp(self) -> bool:
        return any(c.split(" ")[2].lower() == "tcp" for c in self.candidates if len(c.split(" ")) > 2)


def ice_params(sdp: SessionDescription, m: MediaSection) -> IceParams:
    return IceParams(
        ufrag=sdp.attribute_for(m, "ice-ufrag"),
        pwd=sdp.attribute_for(m, "ice-pwd"),
        candidates=[v for v in m.attributes("candidate") if v],
    )


def remote_rtp_address(sdp: SessionDescription, m: MediaSection, where: str) -> tuple[str | None, int]:
    """The peer's address and port of a stream the edge terminates.

    A port count (``m=audio 49170/2 ...``, RFC 8866 5.14) names more ports than
    the AGW reserves (one port, or an RTP/RTCP pair, per m-line): refused (488)
    rather than copied to the other side naming ports nobody holds.
    """
    if m.m.port_count not in (None, 1):
        raise SdpPolicyError(f"{where}: port count /{m.m.port_count}: the edge relays one port"
                             " (RTP/RTCP pair) per m-line (RFC 8866 5.14)")
    conn = sdp.connection_for(m)
    if conn is None and m.port != 0:
        raise SdpPolicyError(f"{where}: no c= line for the media (RFC 8866 5.7)")
    return (conn.address if conn else None), m.port


def remote_rtcp_port(m: MediaSection) -> int | None:
    """The peer's RTCP port: a=rtcp (RFC 3605), none when muxed, else RTP+1."""
    if m.has_attribute("rtcp-mux") or m.has_attribute("rtcp-mux-only"):
        return None
    value = m.attribute("rtcp")
    if value:
        port = value.split(" ")[0]
        if port.isdigit():
            return int(port)
    return m.port + 1 if m.port else None


def strip_for_core(m: MediaSection) -> None:
    """Remove DTLS, ICE, access-side RTCP and BUNDLE attributes from a section going to the core.

    ``a=3ge2ae`` (TS 24.229: the UE's request for e2ae protection) describes
    the access leg only; the edge applies it and does not pass it on.
    """
    m.remove_attributes(*DTLS_ATTRIBUTES, *ICE_ATTRIBUTES, "rtcp", "rtcp-mux-only", "crypto", "3ge2ae",
                        "bundle-only")


def strip_for_access(m: MediaSection) -> None:
    """Remove what the core said of its own transport before the AGW's values go in."""
    m.remove_attributes(*DTLS_ATTRIBUTES, *ICE_ATTRIBUTES, "rtcp", "rtcp-mux", "rtcp-mux-only", "crypto",
                        "bundle-only")


def host_candidates(reply: TerminationReply, *, tcp: bool = False) -> list[str]:
    """RFC 8839 section 5.1 host candidates for the AGW's access termination."""
    out = []
    priority_rtp = (126 << 24) | (65535 << 8) | (256 - 1)
    out.append(f"1 1 udp {priority_rtp} {reply.local_address} {reply.local_port} typ host")
    if reply.local_rtcp_port:
        priority_rtcp = (126 << 24) | (65535 << 8) | (256 - 2)
        out.append(f"1 2 udp {priority_rtcp} {reply.local_address} {reply.local_rtcp_port} typ host")
    if tcp:
        # RFC 6544: an ICE-lite agent offers passive TCP host candidates only;
        # local preference = 2^13 * direction-pref + other-pref
        # with the recommended direction-pref 4 for passive host candidates
        # (section 4.2), which keeps them below the UDP candidate.
        priority_tcp = (126 << 24) | (((4 << 13) | 8191) << 8) | (256 - 1)
        out.append(f"2 1 tcp {priority_tcp} {reply.local_address} {reply.local_port} typ host tcptype passive")
    return out


def add_access_transport(
    m: MediaSection,
    reply: TerminationReply,
    *,
    role_setup: str,
    tls_id: str,
    ice: bool,
    rtcp_mux: bool,
    tcp_candidates: bool = False,
) -> None:
    """Insert the AGW's access-side transport attributes (fingerprint, setup, tls-id, ICE, RTCP)."""
    m.port = reply.local_port
    m.set_connection(reply.local_address)
    if reply.local_rtcp_port and reply.local_rtcp_port != reply.local_port + 1:
        m.add_attribute("rtcp", f"{reply.local_rtcp_port} IN IP4 {reply.local_address}")
    if rtcp_mux:
        m.add_attribute("rtcp-mux")
    if ice:
        if not reply.ice_ufrag or not reply.ice_pwd:
            raise ValueError("AGW reply lacks ICE credentials for an ICE-lite termination")
        m.add_attribute("ice-ufrag", reply.ice_ufrag)
        m.add_attribute("ice-pwd", reply.ice_pwd)
        for candidate in host_candidates(reply, tcp=tcp_candidates):
            m.add_attribute("candidate", candidate)
        m.add_attribute("end-of-candidates")
    if reply.local_fingerprint is None:
        raise ValueError("AGW reply lacks the Local certificate fingerprint IE")
    m.add_attribute("fingerprint", str(reply.local_fingerprint))
    m.add_attribute("setup", role_setup)
    m.add_attribute("tls-id", tls_id)


def set_core_transport(m: MediaSection, reply: TerminationReply, *, rtcp_mux: bool, rtp: bool) -> None:
    """Point a section going to the core at the AGW's core termination."""
    m.port = reply.local_port
    m.set_connection(reply.local_address)
    if rtp:
        if reply.local_rtcp_port and reply.local_rtcp_port != reply.local_port + 1:
            m.add_attribute("rtcp", str(reply.local_rtcp_port))
        if rtcp_mux and not m.has_attribute("rtcp-mux"):
            m.add_attribute("rtcp-mux")
        if not rtcp_mux:
            m.remove_attributes("rtcp-mux")
