"""The edge's own re-INVITE inside a live dialog: new media addresses for one side.

When a dialog's media node dies and its addresses cannot move to the survivor
(no floating address, ``[pool] takeover = reinvite``), the survivor holds the
dialog's media on ports of its own and the edge tells the far side with a
re-INVITE (RFC 3261 section 14.1) whose offer names them (RFC 3264 section 8:
the same m-lines, new c=/m= address and ports, the o= version one higher).

The edge is a proxy: the dialog is the two UAs', and Kamailio's dialog module
keeps what a UA of it would (``$dlg(...)``, Kamailio 5.6 ``dlg_var.c``): per
party its URI, tag, last CSeq, Contact (remote target), route set (already in
the order a UAC uses, RFC 3261 12.1.2; without the edge's own Record-Routes)
and the socket toward it; the Contact it keeps is the one received, so the
``alias`` parameter nathelper gave a client's Contact on the way (the callee's
remote target) is kept by the plugin in a dialog variable.  :func:`build` turns that into the request
Kamailio's tm sends (``KSR.tm.t_uac_send``, tm ``rpc_uac.c``: From, To,
Call-ID and CSeq taken from the headers given, tags included): the edge speaks
as the other party (its URI, tag and Contact, so the target does not change,
RFC 3261 12.2.1.1) with a CSeq above everything that side has seen from it
(12.2.1.1, 12.2.2).  tm sends the ACK of a 2xx to a local INVITE itself
(``t_reply.c`` ``build_local_ack``; ``local_ack_mode`` 1: where the re-INVITE went,
the first route or a client's flow, since a WebSocket client's Contact names no
reachable host).

CSeq, downstream (the edge re-INVITEs the callee, speaking as the caller):
the callee has now seen the caller's CSeq ``n + 1``, so every later request of
the caller must go to it renumbered, and its replies come back with the
caller's numbers.  Kamailio's dialog module does exactly this
(``track_cseq_updates``, ``dlg_cseq.c``): a relayed request leaving with a
``P-K-CSeq-Refresh`` header marks the dialog (``DLG_IFLAG_CSEQ_DIFF``) and has
its CSeq set to the header's value; later requests from the caller are raised
by the dialog variable ``cseq_diff`` (the original number kept in the Via
branch, ``.cs<n>``), and replies get their original CSeq back from that
branch.  The edge's own requests must not carry the header: the module
restores the branch of replies with two Vias only (``dlg_cseq_prepare_msg``:
"reply to local transaction -- nothing to do"), so tm could not match the
reply of a local request whose branch got the cookie.  So the edge's
re-INVITE carries its CSeq as is, and the caller's first request after it
gets the header from the plugin (:func:`refresh_value`), which marks the
dialog; the dialog module's own BYE to the callee gets its CSeq raised in
tm's ``tm:local-request`` event.

CSeq, upstream (the edge re-INVITEs the caller, speaking as the callee: the WIC
of a WIC-originated call, the core of a core-originated one): the dialog module
renumbers nothing that way ("supported only for downstream direction",
``dlg_cseq.c``), so the plugin does it itself (:func:`toward_caller`,
:func:`back_to_callee`), keeping in dialog variables how far the callee's
CSeqs are raised (:data:`UP_DIFF_VAR`) and the re-INVITE's own number
(:data:`UP_BASE_VAR`): a request of the callee (ACKs included) leaves with its
CSeq raised; a reply of the caller to one of them goes back with the callee's
number (tm matches replies by the Via branch and the CSeq method, not its
number: Kamailio 5.6 ``t_lookup.c`` ``t_reply_matching`` with the default
``callid_cseq_matching`` 0); a number at or below the base was never raised
(a request relayed before the re-INVITE) and is left alone.  The dialog
module's own BYE to the caller is raised too.

Toward access (:func:`moved_access_offer`): the last SDP the edge sent the WIC,
made an offer for the survivor's new terminations (RFC 8843 section 7.5.1: the
same BUNDLE address:port on every bundled m-line; RFC 8839 section 4.4.1.1.1:
new ICE credentials and candidates, an ICE restart; RFC 8842 section 5: a new
``a=tls-id``, ``a=setup:actpass`` and the survivor's fingerprint, a new DTLS
association), written by the rules' own :func:`sdp_rules.attrs.add_access_transport`.

What a final reply means (:data:`TABLE`): a 2xx is the answer (tm ACKs it);
491 (RFC 3261 14.1: glare) is retried once after 2.1 to 4 s; any other
final reply, or none within :data:`ANSWER_WAIT_S` (tm's timeout reply is
local and never reaches the script), ends the call.  A 2xx whose answer the
edge cannot use (:func:`check_answer`: no SDP or a malformed one, an m-line
dropped, rejected or of another media, a BUNDLE group changed) is ACKed all the
same and the call ended with a BYE each way (RFC 3261 13.2.2.4 asks the UAC to
ACK every 2xx; an unusable session is then ended).  A reply that matches no
re-INVITE waiting for one (a 2xx retransmitted or arriving after the call
ended, a reply to a re-INVITE retried after a 491, a CSeq naming another
method) changes nothing here: tm matches it or drops it (it has no second Via
to be relayed by).

The WIC's answer (:func:`answer_specs`) becomes a MODIFY of each renewed
transport: its new ICE credentials, its fingerprints, and the DTLS role it
leaves the survivor (the answerer of an ``actpass`` offer chooses, RFC 5763
section 5: ``active`` leaves it server, as it waits; ``passive`` makes it client).

Theory of operation: :class:`Leg`, :class:`DialogView`, :func:`build`,
:func:`moved_offer`, :func:`moved_access_offer`, :func:`answer_specs`, :func:`check_answer`,
:func:`toward_caller`, :func:`back_to_callee`, :func:`outcome` and :class:`Pending` are pure; the KEMI
shell (:mod:`plugin.kemi`) reads the dialog module, sends, and matches the
replies of its own requests (the only ones with a single Via) by Call-ID and
CSeq in Kamailio's shared memory (``htable`` ``e2ae_reinvite``).
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import asdict, dataclass

from iq import Fingerprint, Role, TerminationReply, TransportSpec
from sdp_rules import bundle
from sdp_rules import sdp as sdp_model
from sdp_rules.attrs import (add_access_transport, agw_role_for_answer, dtls_params, ice_params,
                             remote_rtp_address)
from sdp_rules.errors import E2aeError
from sdp_rules.rules import MEDIA_ICE_DTLS, SESSION_ICE_DTLS

# The header the dialog module's sent-message hook looks for (Kamailio 5.6 srapi.c,
# "uac_cseq_refresh"); it is taken off the request before it leaves.
CSEQ_REFRESH_HEADER = "P-K-CSeq-Refresh"
# The dialog variable holding how far the caller's CSeqs are raised toward the callee.
CSEQ_DIFF_VAR = "cseq_diff"
# The dialog variable set ("1") until a caller's request has carried CSEQ_REFRESH_HEADER.
CSEQ_MARK_VAR = "e2ae_cseq_mark"
# The dialog variables of the upstream renumbering: how far the callee's CSeqs are raised
# toward the caller, and the CSeq of the edge's last re-INVITE to the caller.
UP_DIFF_VAR = "e2ae_cseq_up"
UP_BASE_VAR = "e2ae_cseq_up_base"
MAX_FORWARDS = 70
# How long the edge waits for the final reply to its re-INVITE (64*T1, RFC 3261 17.1.1.2,
# plus a margin for the timer that looks).
ANSWER_WAIT_S = 34.0
# RFC 3261 14.1: after a 491, a UAC that owns the Call-ID waits 2.1 to 4 s.
GLARE_WAIT_S = (2.1, 4.0)
ATTEMPTS = 2


class ReinviteError(Exception):
    """A re-INVITE the edge cannot send in this dialog (says why); the call is ended."""


class Party(str, enum.Enum):
    CALLER = "caller"
    CALLEE = "callee"

    @property
    def other(self) -> "Party":
        return Party.CALLEE if self is Party.CALLER else Party.CALLER


@dataclass(frozen=True)
class Leg:
    """One party of the dialog as the dialog module keeps it."""

    uri: str  # its From (caller) or To (callee) URI
    tag: str
    cseq: int  # the last CSeq of its requests
    contact: str  # its remote target
    route_set: str  # toward it, "<uri>, <uri>" (may be empty)
    socket: str  # the edge's socket toward it, "proto:host:port"
    alias: str = ""  # nathelper's alias its Contact got on the way through ("ip~port~proto"), if any


@dataclass(frozen=True)
class DialogView:
    call_id: str
    caller: Leg
    callee: Leg
    cseq_diff: int = 0  # how far the caller's CSeqs are already raised toward the callee
    callee_diff: int = 0  # how far the callee's CSeqs are already raised toward the caller (UP_DIFF_VAR)

    def leg(self, party: Party) -> Leg:
        return self.caller if party is Party.CALLER else self.callee


@dataclass(frozen=True)
class UacRequest:
    """The arguments of ``KSR.tm.t_uac_send`` and what to remember of them."""

    ruri: str
    nexthop: str
    socket: str
    headers: str
    body: str
    cseq: int
    cseq_diff: int  # the speaker's new diff once sent (cseq_diff downstream, UP_DIFF_VAR upstream)
    toward: "Party" = None  # type: ignore[assignment]

    method = "INVITE"


_URI_IN_BRACKETS = re.compile(r"<([^>]*)>")


def route_uris(route_set: str) -> list[str]:
    """The URIs of a route set as the dialog module prints it ("<uri>, <uri>")."""
    return _URI_IN_BRACKETS.findall(route_set)


def build(view: DialogView, toward: Party, body: str) -> UacRequest:
    """The re-INVITE to ``toward`` carrying ``body`` (an SDP offer).

    Without a route set toward the target, a target reached through nathelper's alias
    (a WebSocket client: its Contact names no address of its own) is sent to the
    alias's address."""
    target, speaker = view.leg(toward), view.leg(toward.other)
    if not target.contact or not target.tag or not speaker.tag:
        raise ReinviteError("the dialog is not confirmed (no remote target or tag)")
    routes = route_uris(target.route_set)
    if routes and ";lr" not in routes[0]:
        raise ReinviteError("the first route is a strict router (RFC 3261 16.12.1.1)")
    diff = view.cseq_diff if toward is Party.CALLEE else view.callee_diff
    cseq = speaker.cseq + diff + 1
    # Downstream the caller's numbers are known and grow by one from its last.  Upstream the
    # callee may not have sent a request yet (the dialog module then shows the INVITE's CSeq,
    # and the callee's first request may carry any number, RFC 3261 8.1.1.5): its later
    # numbers are raised by one more than the re-INVITE's, so that even a 0 lands above it.
    new_diff = diff + 1 if toward is Party.CALLEE else cseq + 1
    lines = [
        f"From: <{speaker.uri}>;tag={speaker.tag}",
        f"To: <{target.uri}>;tag={target.tag}",
        f"Call-ID: {view.call_id}",
        f"CSeq: {cseq} INVITE",
        *(f"Route: <{uri}>" for uri in routes),
        f"Contact: <{speaker.contact}{f';alias={speaker.alias}' if speaker.alias else ''}>",
        f"Max-Forwards: {MAX_FORWARDS}",
        "Content-Type: application/sdp",
    ]
    nexthop = routes[0] if routes else (alias_uri(target.alias) if target.alias else "")
    return UacRequest(ruri=target.contact, nexthop=nexthop, socket=target.socket,
                      headers="\r\n".join(lines) + "\r\n", body=body, cseq=cseq, cseq_diff=new_diff, toward=toward)


# nathelper's transport digits (Kamailio's PROTO_* numbers) in an alias parameter.
ALIAS_PROTOS = {"udp": 1, "tcp": 2, "tls": 3, "sctp": 4, "ws": 5, "wss": 6}


def alias_value(address: str, port: int, proto: str) -> str:
    """The value nathelper's ``add_contact_alias`` gives a Contact received from
    ``address``:``port`` over ``proto`` (``ip~port~digit``; an IPv6 address in brackets)."""
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"{host}~{port}~{ALIAS_PROTOS[proto.lower()]}"


def alias_uri(alias: str) -> str:
    """The URI of the address an alias value names (``ip~port~digit``, :func:`alias_value`)."""
    host, port, digit = (alias.rsplit("~", 2) + ["", ""])[:3] if alias.count("~") >= 2 else ("", "", "")
    names = {str(number): name for name, number in ALIAS_PROTOS.items()}
    if digit not in names or not port.isdigit() or not host:
        raise ReinviteError(f"an alias that names no address: {alias!r}")
    # Kamailio has no ``transport=wss``: a WSS connection is named ``ws`` and found by its
    # address from the TLS socket (core/forward.c, get_send_socket2).
    proto = {"wss": "ws"}.get(names[digit], names[digit])
    return f"sip:{host}:{port}" + ("" if proto == "udp" else f";transport={proto}")


def toward_caller(cseq: int, up_diff: int) -> int:
    """The CSeq a callee's request numbered ``cseq`` carries toward the caller."""
    return cseq + up_diff


def back_to_callee(cseq: int, up_diff: int, base: int) -> int | None:
    """The callee's own number of a caller's reply numbered ``cseq`` (None: not one the edge
    raised, it goes as it is: ``base`` is the edge's re-INVITE, every raised number is above)."""
    if up_diff <= 0 or cseq <= base:
        return None
    return cseq - up_diff


def refresh_value(cseq: int, cseq_diff: int) -> int:
    """The CSeq a caller's request numbered ``cseq`` carries toward the callee."""
    return cseq + cseq_diff


def moved_offer(previous: str, address: str, ports: list[int]) -> str:
    """The offer for a side whose media moved: ``previous`` (the last SDP the edge sent to
    that side) with ``address`` in every c= line and the m-lines' ports replaced in order
    (0 kept for a rejected one), and the o= version one higher (RFC 3264 8)."""
    desc = sdp_model.parse(previous)
    live = [m for m in desc.media if not m.rejected]
    if len(ports) != len(live):
        raise ReinviteError(f"{len(ports)} new port(s) for {len(live)} live m-line(s)")
    addr_type = "IP6" if ":" in address else "IP4"
    if desc.session.connection is not None:
        desc.session.set_connection(address, addr_type)
    for section in desc.media:  # a rejected one's too: the old address is gone
        if section.connection is not None:
            section.set_connection(address, addr_type)
    for section, port in zip(live, ports):
        section.port = port
        rtcp = section.attribute("rtcp")
        if rtcp is not None:  # RFC 3605: the next port, on the new address
            section.set_attribute("rtcp", f"{port + 1} IN {addr_type} {address}")
    _next_version(desc)
    return str(desc)


@dataclass(frozen=True)
class RenewedTransport:
    """A BUNDLE transport toward the WIC that a survivor renewed (``media_moved``, side access)."""

    mids: tuple[str, ...]  # its m-lines (the dialog's rules state)
    tag: str  # the tagged one: the transport's attributes go there (RFC 9143 section 7.1.3)
    port: int
    ice_ufrag: str
    ice_pwd: str
    tls_id: str  # the edge's new a=tls-id


def moved_access_offer(previous: str, address: str, fingerprint: str, transports: list[RenewedTransport]) -> str:
    """The offer to the WIC for a dialog whose access side moved to new terminations:
    ``previous`` (the last SDP the edge sent it) with every bundled m-line on its
    transport's new port and ``address``, the tagged one's ICE and DTLS attributes
    replaced (new credentials and host candidate, ``fingerprint``, ``a=setup:actpass``,
    the new tls-id), and the o= version one higher (RFC 3264 section 8)."""
    desc = sdp_model.parse(previous)
    by_mid = {mid: transport for transport in transports for mid in transport.mids}
    try:
        fp = Fingerprint.parse(fingerprint)
    except ValueError as exc:
        raise ReinviteError(f"the survivor's fingerprint: {exc}") from None
    addr_type = "IP6" if ":" in address else "IP4"
    for index, section in enumerate(desc.media):
        if section.rejected:
            continue
        transport = by_mid.get(section.attribute("mid") or "")
        if transport is None:
            raise ReinviteError(f"m-line {index} is on no renewed transport (a termination of its own "
                                "is not re-offered)")
        if section.attribute("mid") != transport.tag:
            section.port = transport.port
            section.set_connection(address, addr_type)
            continue
        rtcp_mux = section.has_attribute("rtcp-mux")
        section.remove_attributes(*MEDIA_ICE_DTLS, "setup", "rtcp", "rtcp-mux")
        reply = TerminationReply(address, transport.port, None, fp, transport.ice_ufrag, transport.ice_pwd)
        add_access_transport(section, reply, role_setup="actpass", tls_id=transport.tls_id, ice=True,
                             rtcp_mux=rtcp_mux)
    if missing := [t.tag for t in transports if t.tag not in {m.attribute("mid") for m in desc.media}]:
        raise ReinviteError(f"no m-line has the tagged mid(s) {missing}")
    desc.session.remove_attributes(*(a for a in SESSION_ICE_DTLS if a not in ("ice-lite", "ice-options")))
    if desc.session.connection is not None:
        desc.session.set_connection(address, addr_type)
    _next_version(desc)
    return str(desc)


def answer_specs(answer: str, transports: dict[str, dict]) -> list[TransportSpec]:
    """The MODIFY of each renewed transport (``transports``: the dialog's rules state of
    them, by transport id) from the WIC's answer to :func:`moved_access_offer`: its new ICE
    credentials and candidates, its fingerprints and tls-id, and the DTLS role it left the
    survivor (``a=setup:active``: server, as it waits; ``passive``: client, which starts the
    handshake once a check came, RFC 8445 section 12).  The association the WIC may have
    started meanwhile is kept (``reuse_association``).  The state is updated to match."""
    try:
        desc = sdp_model.parse(answer)
    except ValueError as exc:
        raise ReinviteError(f"the WIC's answer: {exc}") from None
    by_mid = {m.attribute("mid"): m for m in desc.media if not m.rejected}
    out = []
    for tid, state in transports.items():
        m = by_mid.get(state["tag"]) or next((by_mid[x] for x in state["mids"] if x in by_mid), None)
        if m is None:
            raise ReinviteError(f"the WIC's answer rejected every m-line of transport {tid}")
        where = f"m-line mid {m.attribute('mid')}"
        try:
            dtls = dtls_params(desc, m, where, answer=True)
            address, port = remote_rtp_address(desc, m, where)
        except E2aeError as exc:
            raise ReinviteError(f"the WIC's answer: {exc}") from None
        ice = ice_params(desc, m)
        role = agw_role_for_answer(dtls.setup)
        out.append(TransportSpec(
            transport_id=int(tid), remote_address=address, remote_port=port, ice_lite=ice.ufrag is not None,
            remote_ice_ufrag=ice.ufrag, remote_ice_pwd=ice.pwd, remote_candidates=list(ice.candidates),
            remote_fingerprints=list(dtls.fingerprints), establish_tls=role is Role.CLIENT, tls_role=role,
            notify_tls_failure=True, local_tls_id=state.get("local_tls_id"), remote_tls_id=dtls.tls_id,
            reuse_association=True, mid_extension_id=state.get("mid_ext")))
        state.update(role=role.value, remote_tls_id=dtls.tls_id, remote_fingerprints=[str(f) for f in dtls.fingerprints],
                     remote_ice_ufrag=ice.ufrag, remote_transport=[address, port], answered=True, reuse=True)
    return out


def check_answer(offer: str, answer: str) -> None:
    """ReinviteError unless ``answer`` (the body of a 2xx to the edge's re-INVITE) is a usable
    answer to ``offer``: an SDP (RFC 3261 13.2.1: the 2xx to an INVITE with an offer carries
    the answer), with as many m-lines as the offer, each of the same media (RFC 3264 section
    6), none the offer kept rejected (a port of zero that is not ``a=bundle-only``, RFC 9143
    section 7.3.1), and the offer's BUNDLE groups unchanged (RFC 9143 section 7.3: an answerer
    that moves an m-line out of a group gives it a transport the survivor does not have).
    The edge ACKs even an unusable answer (tm does) and then ends the call with a BYE."""
    try:
        made, got = sdp_model.parse(offer), sdp_model.parse(answer)
        offered, answered = bundle.groups(made), bundle.groups(got)
    except (ValueError, E2aeError) as exc:
        raise ReinviteError(f"the answer is not a usable SDP: {exc}") from None
    if len(got.media) != len(made.media):
        raise ReinviteError(f"the answer has {len(got.media)} m-line(s), the offer {len(made.media)}")
    for index, (m_offer, m_answer) in enumerate(zip(made.media, got.media)):
        if m_answer.media != m_offer.media:
            raise ReinviteError(f"m-line {index} is {m_answer.media} in the answer, {m_offer.media} in the offer")
        if m_answer.rejected and not bundle.is_bundle_only(m_answer) and not m_offer.rejected:
            raise ReinviteError(f"the answer rejects m-line {index}")
    if sorted(map(sorted, answered)) != sorted(map(sorted, offered)):
        raise ReinviteError(f"the answer's BUNDLE groups {answered} are not the offer's {offered}")


def _next_version(desc) -> None:
    origin = desc.session.lines_of("o")
    if origin:
        fields = origin[0].value.split()
        if len(fields) == 6 and fields[2].isdigit():
            fields[2] = str(int(fields[2]) + 1)
            origin[0].value = " ".join(fields)


class Outcome(str, enum.Enum):
    ANSWERED = "answered"  # a 2xx: tm ACKs it
    RETRY = "retry"  # 491: once more after GLARE_WAIT_S
    FAILED = "failed"  # the call is ended with a BYE each way


def outcome(status: int, attempts: int) -> Outcome | None:
    """What a reply with ``status`` to the ``attempts``-th try means; None: provisional."""
    if status < 200:
        return None
    if status < 300:
        return Outcome.ANSWERED
    if status == 491 and attempts < ATTEMPTS:
        return Outcome.RETRY
    return Outcome.FAILED


@dataclass(frozen=True)
class Pending:
    """A re-INVITE sent and not answered yet (or one to send again at ``retry_at``)."""

    call_id: str
    from_tag: str
    to_tag: str
    toward: Party
    dialog: str  # the plugin's dialog id
    cseq: int
    body: str
    sent: float  # wall clock
    attempts: int = 1
    retry_at: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.call_id}\t{self.cseq}"

    def to_value(self) -> str:
        doc = asdict(self)
        doc["toward"] = self.toward.value
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_value(cls, value: str) -> "Pending":
        doc = json.loads(value)
        doc["toward"] = Party(doc["toward"])
        return cls(**doc)


__all__ = ["ALIAS_PROTOS", "ANSWER_WAIT_S", "ATTEMPTS", "CSEQ_DIFF_VAR", "CSEQ_MARK_VAR", "CSEQ_REFRESH_HEADER", "GLARE_WAIT_S", "DialogView",
           "Leg", "alias_uri", "alias_value", "Outcome", "Party", "Pending", "ReinviteError", "RenewedTransport", "UP_BASE_VAR",
           "UP_DIFF_VAR", "UacRequest", "answer_specs", "back_to_callee", "build", "moved_access_offer", "moved_offer", "outcome",
           "refresh_value", "route_uris", "toward_caller"]
