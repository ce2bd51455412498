"""WebRTC data channels toward access, MSRP and T.140 toward the core.

Clauses: TS 23.334 5.20.2.2 (data channel establishment) with RFC 8831
(data channels), RFC 8832 section 6 (stream identifiers), RFC 8841 (SCTP over
DTLS in SDP: ``a=sctp-port``, ``a=max-message-size``), RFC 8864 (``a=dcmap``,
``a=dcsa``), RFC 8842 (``a=tls-id``), RFC 8873 (MSRP over data channels),
RFC 8865 (T.140 over data channels), RFC 4975 / RFC 6135 / RFC 6714 (MSRP
over TCP, its connection setup and CEMA), RFC 4103 (T.140 over RTP).

Theory of operation
-------------------
Toward access one ``m=application ... UDP/DTLS/SCTP webrtc-datachannel`` line
(``TCP/DTLS/SCTP`` is accepted too, DC-1) carries one DTLS+SCTP association
and, per ``a=dcmap``, one data channel.  Toward the core every data channel the
edge can interwork is its own m-line: ``m=message ... TCP/MSRP *`` for
subprotocol ``msrp``, ``m=text ... RTP/AVP`` with ``t140/1000`` for ``t140``.

==========================  ===============================================
``offer_from_access``       WIC offer: association (new or reused), one core
                            m-line per channel (DC-2..DC-6)
``answer_from_core``        core answer: one access m-line with a dcmap per
                            accepted channel (DC-7)
``offer_from_core``         core MSRP/T.140 lines: one access m-line (DC-8)
``answer_from_access``      WIC answer: association details to the AGW, one
                            core answer line per channel (DC-9)
==========================  ===============================================

Iq streams.  The association is the H.248 *deaggregation* stream (kind
``sctp``) whose id is ``sid``, the index of the access m-line.  Each channel is
a *component* stream (kind ``dc_channel``, ``group`` = ``sid``) with both an
access termination (its dcmap and dcsa) and a core termination (TCP for MSRP,
RTP/AVP for T.140): the same H.248 stream id links the two (5.20.2.2 item 7).
Its id is ``CHANNEL_BASE * (sid + 1) + <SCTP stream id>``; SCTP stream ids
are 0..65534 (65535 is reserved, RFC 8831 section 6), so ids never collide
between m-lines or with the one-m-line streams of :mod:`media` (whose ids are
m-line indices).

Slot keys (see :mod:`rules`): a channel's core m-line has the key
``ch<SCTP stream id>.<subprotocol>``, so a re-offer keeps each channel at its
core m-line, a new channel gets a new line at the end, a closed channel's line
gets port 0, and a stream id reopened with another subprotocol gets a new line
rather than changing the media type of an old one (RFC 3264 section 8).

Association reuse (DC-2, DC-4; RFC 8842 section 5): a re-offer whose tls-id is
the stored remote tls-id (or, without tls-id, with the same fingerprints and
ICE ufrag) keeps the association: the ``sctp`` stream is modified with
``reuse_association`` and the new list of SCTP stream ids only; no Establish
IEs, our tls-id, role and SCTP port stay.  Only new channels get a component
stream; kept channels are not touched; closed ones are released once the
answer comes back (their core m-lines get port 0 in the offer).  Anything else
is a new association: a new tls-id, and every channel is (re)bound to it.

Decisions where the specification is silent:

* Channels the edge cannot interwork (subprotocol other than ``msrp`` or
  ``t140``, or none) are not forwarded to the core and their dcmap is left out
  of the answer, which refuses them (RFC 8864 section 6).  A data-channel
  m-line without any such channel -- for instance a browser's DCEP-only
  ``createDataChannel()`` line -- asks nothing of the AGW, goes to the core as
  a port-0 ``m=application`` line and is answered with port 0.  A data-channel
  line rejected (port 0) in a re-offer rejects its core lines in place and
  releases the association and its channels once the core has answered.
* ``a=sctp-port`` absent means 5000 and ``a=max-message-size`` absent means
  65536 (the RFC 8841 defaults); malformed values are refused (488).
* MSRP toward the core (RFC 4975): ``a=path`` becomes the AGW's core-side URI
  ``msrp://<core address>:<core port>/<session-id>;tcp``, and toward access
  ``msrp://<access address>:<access port>/<session-id>;dc`` (RFC 8873), where
  the session-id is always the one of the *other* peer's path, so the AGW can
  map From-Path/To-Path by session-id.  ``msrp-cema`` (RFC 6714) is always put
  in the dcsa toward access (RFC 8873 endpoints use CEMA); toward the core it
  is passed on as received.  The MSRP TCP connection (RFC 6135): when the ALG
  offers MSRP to the core the AGW says ``a=setup:passive`` (listens -- the
  RFC 4975 default for an offerer, so it also works with peers that ignore
  ``a=setup``); when it answers a core offer it is ``active`` unless the core
  said ``active``.  ``a=connection:new`` for a new channel, ``existing`` for a
  kept one.  On the Iq interface the AGW connects to the core's
  ``remote_port`` of a TCP core termination when one is given and listens
  when it is ``None`` (RFC 4145: the port of an active endpoint means nothing).
* A core re-offer keeps the association and the channels it still carries:
  the ``sctp`` stream gets the new SCTP stream id list, a kept channel only
  its core termination (the core's address may move), a new one both.
* T.140 toward the core (RFC 4103): ``m=text <port> RTP/AVP 98 100`` with
  ``t140/1000``, ``red/1000`` and ``a=fmtp:100 98/98/98`` (two redundant
  generations, RFC 4103); the dcsa ``fmtp:- <params>`` (RFC 8865)
  becomes ``a=fmtp:98 <params>``.  Toward access only ``fmtp`` (as ``fmtp:-``),
  ``hlang-send``/``hlang-recv`` and the direction attributes are encapsulated.
* The core peer's interworking attributes (MSRP ``path``/``accept-types``...,
  T.140 ``rtpmap``/``fmtp``) go to the AGW as ``remote_dcsa`` of the channel's
  *core* termination, in dcsa attribute syntax, so it knows the payload types
  and the peer's MSRP path.
* Stream ids the ALG picks for a core offer (DC-8; RFC 8864 section 6,
  RFC 8832 section 6): unused in the association, even when the AGW is DTLS
  client, odd when server.  For a new association offered with ``actpass`` the
  role is not known yet; the ALG expects the WIC to answer ``active`` (RFC 5763
  section 5 recommends it) and picks odd ids.  The ids agreed in the offer and
  answer stay whatever role the answer gives.
* max-retr / max-time / ordered / priority are never put in a dcmap the ALG
  writes: MSRP and T.140 use the defaults (NOTES 5-7).

State per stream in ``ctx.streams`` (JSON values): for the ``sctp`` stream its
``role``, tls-ids, the peer's fingerprints and ICE ufrag, the access proto, the
AGW's access reply and the ``channels`` (component stream ids); for each
``dc_channel`` its SCTP ``stream_id``, ``sub``protocol, ``dcmap``, core proto,
its core m= line (``core_m``) and the AGW's core reply.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote

from iq import (
    TRANSPORT_TCP,
    TRANSPORT_TCP_DTLS_SCTP,
    TRANSPORT_UDP_DTLS_SCTP,
    DcMap,
    Fingerprint,
    IqReply,
    Role,
    Side,
    StreamSpec,
    TerminationReply,
    TerminationSpec,
)
from sdp_rules import attrs, bundle
from sdp_rules.errors import SdpPolicyError
from sdp_rules.handlers import AnswerPart, Context, OfferPart
from sdp_rules.sdp import Line, MediaSection

KIND = "datachannel"
FORMAT = "webrtc-datachannel"
# Access proto -> Iq transport (DC-1: UDP mandatory, TCP may).
ACCESS_PROTOS = {"UDP/DTLS/SCTP": TRANSPORT_UDP_DTLS_SCTP, "TCP/DTLS/SCTP": TRANSPORT_TCP_DTLS_SCTP}
CHANNEL_BASE = 65536
MAX_STREAM_ID = 65534  # RFC 8831 section 6: 65535 is reserved
DEFAULT_SCTP_PORT = 5000  # RFC 8841: a=sctp-port absent
DEFAULT_MAX_MESSAGE_SIZE = 65536  # RFC 8841: a=max-message-size absent
MSRP = "msrp"
T140 = "t140"
SUBPROTOCOLS = (MSRP, T140)
T140_PT = "98"
RED_PT = "100"
RED_GENERATIONS = 3  # the primary and two redundant generations (RFC 4103)
PLACEHOLDER = "dc"  # slot key of a data-channel line with nothing to interwork
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# Never de-encapsulated toward the core nor encapsulated toward access: they
# describe a transport, not the subprotocol.
TRANSPORT_ATTRIBUTES = frozenset(
    (*attrs.DTLS_ATTRIBUTES, *attrs.ICE_ATTRIBUTES, *attrs.RTCP_ATTRIBUTES, "mid", "sctp-port",
     "max-message-size", "dcmap", "dcsa", "crypto", "msid", "ssrc", "ssrc-group", "extmap")
)
T140_ENCAPSULATED = frozenset(("hlang-send", "hlang-recv", *DIRECTIONS))

_STREAM_ID_RE = re.compile(r"^(0|[1-9][0-9]{0,4})$")
_QUOTED_RE = re.compile(r'^"((?:[^%"\x00-\x1f\x7f]|%[0-9A-Fa-f]{2})*)"$')
_DCSA_RE = re.compile(r"^(0|[1-9][0-9]{0,4}) ([^ ].*)$")
_MSRP_URI_RE = re.compile(r"^msrps?://[^/]+/([^/;]+);[A-Za-z0-9]+$", re.IGNORECASE)
_LABEL_SAFE = " !#$&'()*+,/:;<=>?@[\\]^`{|}"


def classify_access(m: MediaSection) -> bool:
    return m.proto.upper() in ACCESS_PROTOS and FORMAT in m.fmts


def classify_core(m: MediaSection) -> bool:
    return _core_subprotocol(m) is not None


def _core_subprotocol(m: MediaSection) -> str | None:
    """``msrp`` for RFC 4975 MSRP over TCP, ``t140`` for RFC 4103 text, else None."""
    if m.media.lower() == "message" and m.proto.upper() == "TCP/MSRP":
        return MSRP
    if m.media.lower() == "text" and m.proto.upper() in ("RTP/AVP", "RTP/AVPF") and _rtpmap_pt(m, T140):
        return T140
    return None


def _where(index: int) -> str:
    return f"m-line {index + 1}"


def channel_stream_id(sid: int, stream_id: int) -> int:
    """The Iq stream id of SCTP stream ``stream_id`` of the association of m-line ``sid``."""
    return CHANNEL_BASE * (sid + 1) + stream_id


def _key(stream_id: int, sub: str) -> str:
    return f"ch{stream_id}.{sub}"


def _addr_type(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _uri_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


# ---------------------------------------------------------------------------
# a=dcmap / a=dcsa (RFC 8864 section 5)
# ---------------------------------------------------------------------------

def _split_options(text: str) -> list[str]:
    """Split ``dcmap-opt *(";" dcmap-opt)``; a ';' inside a quoted string does not split."""
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            out.append("".join(current))
            current = []
            continue
        current.append(ch)
    if quoted:
        raise ValueError("unterminated quoted string")
    out.append("".join(current))
    return out


def _unquote(text: str) -> str:
    match = _QUOTED_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a quoted-string")
    value = unquote(match.group(1), errors="strict")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8 in the SDP
            raise ValueError(f"{text!r} is not UTF-8 text (RFC 8864 section 5.1.2)") from None
    return value


def _quote(text: str) -> str:
    return '"' + quote(text, safe=_LABEL_SAFE) + '"'


def parse_dcmap(value: str | None, where: str) -> DcMap:
    """Parse the value of an ``a=dcmap``; SdpPolicyError (488) naming the m-line."""
    text = value or ""
    stream_text, _, options = text.partition(" ")
    if not _STREAM_ID_RE.match(stream_text) or int(stream_text) > MAX_STREAM_ID:
        raise SdpPolicyError(f"{where}: a=dcmap:{text} has no valid stream id (RFC 8864 5.1)")
    dcmap = DcMap(stream_id=int(stream_text))
    seen: set[str] = set()
    try:
        for option in _split_options(options) if options else []:
            name, eq, raw = option.partition("=")
            if not eq or not name:
                raise ValueError(f"{option!r} is not name=value")
            if name in seen:
                raise ValueError(f"{name} appears twice")
            seen.add(name)
            if name == "label":
                dcmap.label = _unquote(raw)
            elif name == "subprotocol":
                dcmap.subprotocol = _unquote(raw)
            elif name in ("max-retr", "max-time", "priority"):
                if not raw.isdigit():
                    raise ValueError(f"{name}={raw} is not a number")
                setattr(dcmap, name.replace("-", "_"), int(raw))
            elif name == "ordered":
                if raw not in ("true", "false"):
                    raise ValueError(f"ordered={raw} is not true/false")
                dcmap.ordered = raw == "true"
            # Other parameters are extensions: ignored, for forward compatibility.
        if dcmap.max_retr is not None and dcmap.max_time is not None:
            raise ValueError("max-retr and max-time are mutually exclusive")
    except (ValueError, UnicodeDecodeError) as exc:
        raise SdpPolicyError(f"{where}: malformed a=dcmap:{text}: {exc}") from None
    return dcmap


def format_dcmap(dcmap: DcMap) -> str:
    """``<stream-id> [label="..."][;subprotocol="..."]``: what the ALG writes (NOTES 5-7)."""
    options = []
    if dcmap.label:
        options.append(f"label={_quote(dcmap.label)}")
    if dcmap.subprotocol:
        options.append(f"subprotocol={_quote(dcmap.subprotocol)}")
    return f"{dcmap.stream_id} {';'.join(options)}" if options else str(dcmap.stream_id)


def parse_channels(m: MediaSection, where: str) -> list[tuple[DcMap, list[str]]]:
    """Every ``a=dcmap`` of an m-line with its ``a=dcsa`` attribute values, in order."""
    channels: dict[int, tuple[DcMap, list[str]]] = {}
    for value in m.attributes("dcmap"):
        dcmap = parse_dcmap(value, where)
        if dcmap.stream_id in channels:
            raise SdpPolicyError(f"{where}: a=dcmap stream id {dcmap.stream_id} appears twice (RFC 8864 5.1)")
        channels[dcmap.stream_id] = (dcmap, [])
    for value in m.attributes("dcsa"):
        match = _DCSA_RE.match(value or "")
        if not match:
            raise SdpPolicyError(f"{where}: malformed a=dcsa:{value} (RFC 8864 5.2)")
        stream_id = int(match.group(1))
        if stream_id not in channels:
            raise SdpPolicyError(f"{where}: a=dcsa:{value} names no a=dcmap stream (RFC 8864 5.2)")
        channels[stream_id][1].append(match.group(2))
    return list(channels.values())


def _attr_name(value: str) -> str:
    return value.split(":", 1)[0]


def _attr_value(value: str) -> str:
    return value.split(":", 1)[1] if ":" in value else ""


# ---------------------------------------------------------------------------
# SCTP attributes (RFC 8841)
# ---------------------------------------------------------------------------

def _number_attribute(m: MediaSection, name: str, default: int, limit: int, where: str) -> int:
    values = m.attributes(name)
    if not values:
        return default
    first = values[0] or ""
    if len(set(values)) > 1 or not first.isdigit() or int(first) > limit:
        raise SdpPolicyError(f"{where}: malformed a={name} (RFC 8841)")
    return int(first)


def _sctp_port(m: MediaSection, where: str) -> int:
    return _number_attribute(m, "sctp-port", DEFAULT_SCTP_PORT, 65535, where)


def _max_message_size(m: MediaSection, where: str) -> int:
    return _number_attribute(m, "max-message-size", DEFAULT_MAX_MESSAGE_SIZE, 2**32 - 1, where)


# ---------------------------------------------------------------------------
# MSRP (RFC 4975, 6135, 6714, 8873) and T.140 (RFC 4103, 8865) attributes
# ---------------------------------------------------------------------------

def _msrp_session_id(path: str | None, where: str) -> str:
    """The session-id of the last URI of an ``a=path`` (the peer's own URI)."""
    uris = (path or "").split()
    match = _MSRP_URI_RE.match(uris[-1]) if uris else None
    if not match:
        raise SdpPolicyError(f"{where}: MSRP a=path {path!r} has no msrp URI (RFC 4975)")
    return match.group(1)


def _msrp_uri(address: str, port: int, session_id: str, transport: str) -> str:
    return f"msrp://{_uri_host(address)}:{port}/{session_id};{transport}"


def _rtpmap_pt(m: MediaSection, encoding: str) -> str | None:
    """The payload type whose rtpmap names ``encoding`` (first in m= order)."""
    found = {}
    for value in m.attributes("rtpmap"):
        pt, _, rest = (value or "").partition(" ")
        if rest.split("/")[0].lower() == encoding:
            found[pt] = True
    for pt in m.fmts:
        if pt in found:
            return pt
    return None


def _fmtp(m: MediaSection, pt: str) -> str | None:
    for value in m.attributes("fmtp"):
        fmt, _, params = (value or "").partition(" ")
        if fmt == pt:
            return params
    return None


def _encapsulate(sub: str, m: MediaSection, path: str | None) -> list[str]:
    """The dcsa values toward access for a core m-line (5.20.2.2 "a=dcsa")."""
    out: list[str] = []
    if sub == MSRP:
        out.append("msrp-cema")
        for line in m.attribute_lines():
            name = line.attribute_name
            if name in TRANSPORT_ATTRIBUTES or name == "msrp-cema":
                continue
            out.append(f"path:{path}" if name == "path" else line.value)
        return out
    t140_pt = _rtpmap_pt(m, T140)
    for line in m.attribute_lines():
        name = line.attribute_name
        if name == "fmtp":
            fmt, _, params = (line.attribute_value or "").partition(" ")
            if fmt == t140_pt and params:
                out.append(f"fmtp:- {params}")
        elif name in T140_ENCAPSULATED:
            out.append(line.value)
    return out


def _core_interworking(sub: str, m: MediaSection) -> list[str]:
    """The core peer's attributes the AGW needs, in dcsa syntax (core ``remote_dcsa``)."""
    if sub == MSRP:
        return [line.value for line in m.attribute_lines() if line.attribute_name not in TRANSPORT_ATTRIBUTES]
    pts = [pt for pt in (_rtpmap_pt(m, T140), _rtpmap_pt(m, "red")) if pt]
    out = []
    for line in m.attribute_lines():
        if line.attribute_name in ("rtpmap", "fmtp") and (line.attribute_value or "").split(" ")[0] in pts:
            out.append(line.value)
    return out


def _new_section(value: str) -> MediaSection:
    return MediaSection([Line("m", value)])


def _msrp_core_section(reply: TerminationReply, dcsa: list[str], session_id: str, *,
                       setup: str, connection: str) -> MediaSection:
    """``m=message ... TCP/MSRP *`` toward the core from a channel's dcsa (DC-5, DC-9)."""
    out = _new_section(f"message {reply.local_port} TCP/MSRP *")
    out.set_connection(reply.local_address, _addr_type(reply.local_address))
    for value in dcsa:
        name = _attr_name(value)
        if name in TRANSPORT_ATTRIBUTES:
            continue
        if name == "path":
            value = "path:" + _msrp_uri(reply.local_address, reply.local_port, session_id, "tcp")
        out.lines.append(Line("a", value))
    out.add_attribute("setup", setup)
    out.add_attribute("connection", connection)
    return out


def _t140_core_section(reply: TerminationReply, dcsa: list[str], *, proto: str, t140_pt: str,
                       red_pt: str | None, red_fmtp: str | None) -> MediaSection:
    """``m=text ... RTP/AVP`` toward the core from a channel's dcsa (DC-5, DC-9; RFC 4103)."""
    fmts = [t140_pt] + ([red_pt] if red_pt else [])
    out = _new_section(f"text {reply.local_port} {proto} {' '.join(fmts)}")
    out.add_attribute("rtpmap", f"{t140_pt} t140/1000")
    for value in dcsa:
        if _attr_name(value) == "fmtp":
            fmt, _, params = _attr_value(value).partition(" ")
            if fmt == "-" and params:
                out.add_attribute("fmtp", f"{t140_pt} {params}")
    if red_pt:
        out.add_attribute("rtpmap", f"{red_pt} red/1000")
        out.add_attribute("fmtp", f"{red_pt} {red_fmtp or '/'.join([t140_pt] * RED_GENERATIONS)}")
    for value in dcsa:
        name = _attr_name(value)
        if name not in TRANSPORT_ATTRIBUTES and name not in ("rtpmap", "fmtp"):
            out.lines.append(Line("a", value))
    attrs.set_core_transport(out, reply, rtcp_mux=False, rtp=True)
    out.set_connection(reply.local_address, _addr_type(reply.local_address))
    return out


def _access_section(proto: str, reply: TerminationReply, *, mid: str | None, setup: str, tls_id: str,
                    ice: bool, sctp_port: int, max_message_size: int,
                    channels: list[tuple[DcMap, list[str]]], member: bundle.Member | None = None,
                    iq_reply: IqReply | None = None) -> MediaSection:
    """The one ``m=application ... webrtc-datachannel`` line toward access (DC-7, DC-8)."""
    out = _new_section(f"application {reply.local_port} {proto} {FORMAT}")
    if mid is not None:
        out.add_attribute("mid", mid)
    if member is not None:
        member.transport.render(out, iq_reply, mid_value=member.mid, tagged=member.tagged, rtp=False)
    else:
        attrs.add_access_transport(
            out, reply, role_setup=setup, tls_id=tls_id, ice=ice, rtcp_mux=False,
            tcp_candidates=proto.upper().startswith("TCP/"),
        )
    out.set_connection(reply.local_address, _addr_type(reply.local_address))
    out.add_attribute("sctp-port", str(sctp_port))
    out.add_attribute("max-message-size", str(max_message_size))
    for dcmap, dcsa in channels:
        out.add_attribute("dcmap", format_dcmap(dcmap))
        for value in dcsa:
            out.add_attribute("dcsa", f"{dcmap.stream_id} {value}")
    return out


def _rejected_line(m_value: str, mid: str | None = None) -> MediaSection:
    """A port-0 m-line keeping media, proto and formats (RFC 3264 section 6)."""
    parts = m_value.split(" ")
    parts[1] = "0"
    out = _new_section(" ".join(parts))
    if mid is not None:
        out.add_attribute("mid", mid)
    return out


# ---------------------------------------------------------------------------
# AGW replies and association state
# ---------------------------------------------------------------------------

def _reply_side(reply: IqReply | None, stream_id: int, side: str, stored: dict[str, Any] | None) -> TerminationReply:
    """The AGW's ``side`` termination of a stream: from this reply, else as stored."""
    if reply is not None:
        try:
            got = getattr(reply.stream(stream_id), side)
        except KeyError:
            got = None
        if got is not None:
            return got
    if stored and stored.get(side):
        return TerminationReply.from_dict(stored[side])
    raise ValueError(f"AGW reply lacks the {side} termination of stream {stream_id}")


def _access_reply(reply: IqReply | None, sid: int, stored: dict[str, Any] | None) -> TerminationReply:
    """The association's access termination: this reply, what it leaves out as stored.

    A MODIFY that keeps the association asks for no fingerprint or SCTP values;
    the AGW may leave them out and the stored ones stay valid.
    """
    got = TerminationReply.from_dict(_reply_side(reply, sid, "access", stored).to_dict())
    if stored and stored.get("access"):
        known = TerminationReply.from_dict(stored["access"])
        for name in ("local_fingerprint", "ice_ufrag", "ice_pwd", "local_sctp_port", "local_max_message_size"):
            if getattr(got, name) is None:
                setattr(got, name, getattr(known, name))
    return got


def _sctp_values(reply: TerminationReply, ctx: Context) -> tuple[int, int]:
    if reply.local_sctp_port is None:
        raise ValueError("AGW reply lacks the local SCTP port")
    size = reply.local_max_message_size
    return reply.local_sctp_port, size if size is not None else ctx.policy.default_max_message_size


def _association(ctx: Context, sid: int) -> dict[str, Any] | None:
    prev = ctx.streams.get(str(sid))
    return prev if prev and prev.get("kind") == "sctp" else None


def _live_channels(ctx: Context, prev: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    """The component streams of an association as stored: Iq id -> state."""
    out = {}
    for iq_id in (prev or {}).get("channels", []):
        state = ctx.streams.get(str(iq_id))
        if state and state.get("kind") == "dc_channel":
            out[iq_id] = state
    return out


# ---------------------------------------------------------------------------
# WIC-originated: offer from access (DC-2..DC-6), answer from the core (DC-7)
# ---------------------------------------------------------------------------

def interworkable(m: MediaSection) -> bool:
    """Does a data-channel m-line carry a channel the edge interworks (or a dcmap it must refuse with 488)?"""
    try:
        return any((d.subprotocol or "").lower() in SUBPROTOCOLS for d, _ in parse_channels(m, "m-line"))
    except SdpPolicyError:
        return True  # the handler answers it with 488


def offer_from_access(ctx: Context, index: int, m: MediaSection, *, sid: int,
                      known_keys: dict[str, int], member: bundle.Member | None = None) -> OfferPart:
    """TS 23.334 5.20.2.2: the WIC's data-channel m-line -> one core m-line per channel.

    On a BUNDLE transport (``member``) the DTLS association and ICE are the
    transport's; the ``sctp`` stream names it and carries only the SCTP values.
    """
    where = _where(index)
    proto = m.proto.upper()
    prev = _association(ctx, sid)
    old_channels = _live_channels(ctx, prev)
    mid = m.attribute("mid")
    rejected = m.rejected and member is None
    channels = [] if rejected else [(d, dcsa) for d, dcsa in parse_channels(m, where)
                                    if (d.subprotocol or "").lower() in SUBPROTOCOLS]
    if not channels:
        # Nothing to interwork (e.g. DCEP only) or the line is rejected: every
        # core line of it gets port 0; the association goes once answered.
        release = ([sid] if prev else []) + sorted(old_channels)
        pending: dict[str, Any] = {"sid": sid, "proto": m.proto, "mid": mid, "channels": [], "release": release}
        keys = list(known_keys) or [PLACEHOLDER]

        def finish_empty(reply: IqReply | None) -> list[MediaSection]:
            out = []
            for key in keys:
                parsed = _parse_key(key)
                state = old_channels.get(channel_stream_id(sid, parsed[0])) if parsed else None
                out.append(_rejected_line(state["core_m"] if state and state.get("core_m")
                                          else f"application 0 {m.proto} {FORMAT}"))
            return out

        return OfferPart(streams=[], finish=finish_empty, pending=pending, keys=keys)

    # A live line is here because classify_access knew its proto; a rejected one (a re-offer
    # may reject the data-channel line under any proto) went back above.
    transport = ACCESS_PROTOS[proto]
    remote_sctp_port = _sctp_port(m, where)
    remote_mms = _max_message_size(m, where)
    if member is not None:
        kept = member.transport.state
        dtls = attrs.DtlsParams([Fingerprint.parse(fp) for fp in kept["remote_fingerprints"]], "actpass",
                                kept["remote_tls_id"])
        ice = attrs.IceParams(kept["remote_ice_ufrag"], None, [])
        address, port = kept["remote_transport"]
        role, local_tls_id = Role(kept["role"]), kept["local_tls_id"]
        # The SCTP association lives as long as the DTLS association under it.
        reuse = bool(kept.get("reuse")) and prev is not None and prev.get("transport_id") == member.tid
    else:
        dtls = attrs.dtls_params(ctx.sdp, m, where, answer=False)
        ice = attrs.ice_params(ctx.sdp, m)
        address, port = attrs.remote_rtp_address(ctx.sdp, m, where)
        if dtls.tls_id:
            ctx.used_tls_ids.add(dtls.tls_id)
        association = attrs.decide_association(
            prev if prev is None or "transport_id" not in prev else None, dtls, ice.ufrag, [address, port],
            ctx.policy.actpass, ctx.new_tls_id, where,
        )
        reuse, role, local_tls_id = association.reuse, association.role, association.local_tls_id

    entries: list[dict[str, Any]] = []
    streams: list[StreamSpec] = []
    for dcmap, dcsa in channels:
        sub = (dcmap.subprotocol or "").lower()
        key = _key(dcmap.stream_id, sub)
        iq_id = channel_stream_id(sid, dcmap.stream_id)
        stays = reuse and key in known_keys and iq_id in old_channels and old_channels[iq_id]["sub"] == sub
        session_id = _msrp_session_id(_dcsa_value(dcsa, "path"), where) if sub == MSRP else None
        entries.append({"key": key, "iq_id": iq_id, "sub": sub, "dcmap": dcmap.to_dict(), "dcsa": list(dcsa),
                        "kept": stays, "session_id": session_id})
        if stays:
            continue
        streams.append(StreamSpec(
            stream_id=iq_id, kind="dc_channel", group=sid,
            access=TerminationSpec(side=Side.ACCESS, transport=transport, dcmap=dcmap, remote_dcsa=list(dcsa)),
            core=TerminationSpec(side=Side.CORE, transport=TRANSPORT_TCP if sub == MSRP else "RTP/AVP"),
        ))
    stream_ids = [DcMap.from_dict(e["dcmap"]).stream_id for e in entries]
    if member is not None and reuse:
        access = TerminationSpec(side=Side.ACCESS, transport=transport, notify_stream_reset=True,
                                 sctp_stream_ids=stream_ids)
    elif member is not None:
        access = TerminationSpec(
            side=Side.ACCESS, transport=transport,
            remote_sctp_port=remote_sctp_port, remote_max_message_size=remote_mms,
            local_sctp_port_request=True, local_max_message_size_request=True,
            establish_sctp=role is Role.CLIENT, notify_stream_reset=True, sctp_stream_ids=stream_ids,
        )
    elif reuse:
        access = TerminationSpec(
            side=Side.ACCESS, transport=transport, remote_address=address, remote_port=port,
            tls_role=role, ice_lite=ice.present, remote_ice_ufrag=ice.ufrag, remote_ice_pwd=ice.pwd,
            remote_candidates=list(ice.candidates), notify_stream_reset=True, sctp_stream_ids=stream_ids,
        )
    else:
        access = TerminationSpec(
            side=Side.ACCESS, transport=transport, remote_address=address, remote_port=port,
            remote_fingerprints=list(dtls.fingerprints), local_fingerprint_request=True,
            establish_tls=role is Role.CLIENT, tls_role=role, notify_tls_failure=True,
            notify_tls_establishment=role is Role.SERVER,
            ice_lite=ice.present, remote_ice_ufrag=ice.ufrag, remote_ice_pwd=ice.pwd,
            remote_candidates=list(ice.candidates),
            remote_sctp_port=remote_sctp_port, remote_max_message_size=remote_mms,
            local_sctp_port_request=True, local_max_message_size_request=True,
            establish_sctp=role is Role.CLIENT, notify_stream_reset=True, sctp_stream_ids=stream_ids,
        )
    if member is not None:
        streams.insert(0, StreamSpec(stream_id=sid, kind="sctp", access=access, reuse_association=reuse,
                                     transport_id=member.tid, mid=member.mid))
    else:
        streams.insert(0, StreamSpec(
            stream_id=sid, kind="sctp", access=access, local_tls_id=local_tls_id,
            remote_tls_id=dtls.tls_id, reuse_association=reuse,
        ))
    current = {e["iq_id"] for e in entries}
    pending = {
        "sid": sid,
        "proto": m.proto,
        "transport": transport,
        "mid": mid,
        "role": role.value,
        "local_tls_id": local_tls_id,
        "ice": ice.present,
        "channels": [{k: e[k] for k in ("key", "iq_id", "sub", "dcmap")} for e in entries],
        "release": sorted(i for i in old_channels if i not in current),
    }

    def finish(reply: IqReply | None) -> list[MediaSection]:
        access_reply = _access_reply(reply, sid, prev)
        out = []
        for entry in entries:
            stored = old_channels.get(entry["iq_id"]) if entry["kept"] else None
            core_reply = _reply_side(reply, entry["iq_id"], "core", stored)
            connection = "existing" if entry["kept"] else "new"
            if entry["sub"] == MSRP:
                out.append(_msrp_core_section(core_reply, entry["dcsa"], entry["session_id"],
                                              setup="passive", connection=connection))
            else:
                out.append(_t140_core_section(core_reply, entry["dcsa"], proto="RTP/AVP", t140_pt=T140_PT,
                                              red_pt=RED_PT, red_fmtp=None))
            ctx.streams[str(entry["iq_id"])] = {
                "kind": "dc_channel", "group": sid, "stream_id": entry["dcmap"]["stream_id"],
                "sub": entry["sub"], "dcmap": entry["dcmap"],
                "core_proto": "TCP/MSRP" if entry["sub"] == MSRP else "RTP/AVP",
                "core_m": out[-1].lines[0].value, "core": core_reply.to_dict(),
            }
        state = dict(prev or {})
        state.update({
            "kind": "sctp", "role": role.value, "local_tls_id": local_tls_id, "remote_tls_id": dtls.tls_id,
            "remote_fingerprints": [str(fp) for fp in dtls.fingerprints], "remote_ice_ufrag": ice.ufrag,
            "remote_transport": [address, port], "access_proto": m.proto, "access": access_reply.to_dict(),
            "channels": sorted(current | set(pending["release"])),
        })
        state.pop("transport_id", None)
        state.pop("mid", None)
        if member is not None:
            state.update({"transport_id": member.tid, "mid": member.mid})
        ctx.streams[str(sid)] = state
        return out

    return OfferPart(streams=streams, finish=finish, pending=pending, keys=[e["key"] for e in entries])


def _dcsa_value(dcsa: list[str], name: str) -> str | None:
    for value in dcsa:
        if _attr_name(value) == name:
            return _attr_value(value)
    return None


def answer_from_core(ctx: Context, access_index: int, pending: dict[str, Any],
                     sections: dict[str, MediaSection], member: bundle.Member | None = None) -> AnswerPart:
    """The core's answer: its channel m-lines -> one data-channel m-line toward the WIC (DC-7)."""
    sid = pending["sid"]
    prev = _association(ctx, sid)
    rejected_line = _rejected_line(f"application 0 {pending['proto']} {FORMAT}", pending.get("mid"))
    accepted: list[tuple[dict[str, Any], MediaSection]] = []
    refused: list[tuple[dict[str, Any], MediaSection]] = []
    for channel in pending["channels"]:
        m = sections[channel["key"]]
        (refused if m.rejected else accepted).append((channel, m))
    release = list(pending["release"]) + [c["iq_id"] for c, _ in refused]
    if not accepted:
        # Every channel is refused, so every one is in release already.
        release = ([sid] if prev else []) + release

        def finish_rejected(reply: IqReply | None) -> list[MediaSection]:
            for iq_id in release:
                ctx.streams.pop(str(iq_id), None)
            return [_copy(rejected_line)]

        return AnswerPart(streams=[], finish=finish_rejected, release=sorted(set(release)))

    access_reply = _access_reply(None, sid, prev)
    transport = pending["transport"]
    streams: list[StreamSpec] = []
    answered: list[tuple[DcMap, list[str]]] = []
    for channel, m in accepted:
        offered = DcMap.from_dict(channel["dcmap"])
        dcmap = DcMap(stream_id=offered.stream_id, label=offered.label, subprotocol=offered.subprotocol)
        where = f"core m-line of data channel {offered.stream_id}"
        address, port = attrs.remote_rtp_address(ctx.sdp, m, where)
        sub = channel["sub"]
        if sub == MSRP:
            path = _msrp_uri(access_reply.local_address, access_reply.local_port,
                             _msrp_session_id(m.attribute("path"), where), "dc")
            core_setup = (m.attribute("setup") or "").strip()
            core = TerminationSpec(
                side=Side.CORE, transport=TRANSPORT_TCP, remote_address=address,
                remote_port=port if core_setup == "passive" else None,
                remote_dcsa=_core_interworking(sub, m),
            )
        else:
            path = None
            core = TerminationSpec(
                side=Side.CORE, transport=m.proto, remote_address=address, remote_port=port,
                remote_rtcp_port=attrs.remote_rtcp_port(m),
                rtcp_mux=m.has_attribute("rtcp-mux") or m.has_attribute("rtcp-mux-only"),
                remote_dcsa=_core_interworking(sub, m),
            )
        dcsa = _encapsulate(sub, m, path)
        answered.append((dcmap, dcsa))
        streams.append(StreamSpec(
            stream_id=channel["iq_id"], kind="dc_channel", group=sid,
            access=TerminationSpec(side=Side.ACCESS, transport=transport, dcmap=dcmap, local_dcsa=list(dcsa)),
            core=core,
        ))

    def finish(reply: IqReply | None) -> list[MediaSection]:
        got = _access_reply(reply, sid, prev)
        sctp_port, mms = _sctp_values(got, ctx)
        for iq_id in release:
            ctx.streams.pop(str(iq_id), None)
        if prev is not None:  # the record itself (ctx.streams[str(sid)])
            prev["channels"] = [c["iq_id"] for c, _ in accepted]
            prev["access"] = got.to_dict()
        return [_access_section(
            pending["proto"], got, mid=pending.get("mid"), setup=attrs.setup_for_role(Role(pending["role"])),
            tls_id=pending["local_tls_id"], ice=pending["ice"], sctp_port=sctp_port, max_message_size=mms,
            channels=answered, member=member, iq_reply=reply,
        )]

    return AnswerPart(streams=streams, finish=finish, release=sorted(set(release)))


# ---------------------------------------------------------------------------
# WIC-terminated: offer from the core (DC-8), answer from access (DC-9)
# ---------------------------------------------------------------------------

def _pick_stream_id(used: set[int], odd: bool) -> int:
    """The lowest unused SCTP stream id of the parity the AGW's DTLS role asks (RFC 8832 6)."""
    for candidate in range(1 if odd else 0, MAX_STREAM_ID + 1, 2):
        if candidate not in used:
            used.add(candidate)
            return candidate
    raise SdpPolicyError("no unused SCTP stream id left for a new data channel")


def _parse_key(key: str | None) -> tuple[int, str] | None:
    match = re.match(r"^ch(\d+)\.(msrp|t140)$", key or "")
    return (int(match.group(1)), match.group(2)) if match else None


def offer_from_core(ctx: Context, access_index: int, inputs: list[tuple[int, MediaSection, str | None]],
                    *, sid: int) -> OfferPart:
    """TS 23.334 5.20.2.2: core MSRP/T.140 m-lines -> one data-channel m-line toward the WIC (DC-8)."""
    prev = _association(ctx, sid)
    old_channels = _live_channels(ctx, prev)
    role = Role(prev["role"]) if prev and prev.get("role") else None
    used = {state["stream_id"] for state in old_channels.values()}
    entries: list[dict[str, Any]] = []
    keys: list[str] = []
    for j, m, key in inputs:
        sub = None if m.rejected else _core_subprotocol(m)
        parsed = _parse_key(key)
        entry: dict[str, Any] = {"m_value": m.lines[0].value, "sub": sub}
        if sub is None:
            entry["status"] = "rejected"
            keys.append(key if key is not None and key not in keys else f"x{j}")
            if parsed and channel_stream_id(sid, parsed[0]) in old_channels:
                entry["iq_id"] = channel_stream_id(sid, parsed[0])
            entries.append(entry)
            continue
        iq_old = channel_stream_id(sid, parsed[0]) if parsed else None
        if parsed and parsed[1] == sub and iq_old in old_channels:
            entry.update(status="kept", stream_id=parsed[0], iq_id=iq_old)
        else:
            stream_id = _pick_stream_id(used, odd=role is not Role.CLIENT)
            entry.update(status="new", stream_id=stream_id, iq_id=channel_stream_id(sid, stream_id))
        keys.append(_key(entry["stream_id"], sub))
        entries.append(entry)
    live = [e for e in entries if e["status"] != "rejected"]
    gone = sorted(set(old_channels) - {e["iq_id"] for e in live})
    kept: dict[str, Any] = prev or {}
    reuse = prev is not None and bool(live)
    local_tls_id: str | None = kept["local_tls_id"] if reuse else (ctx.new_tls_id() if live else None)
    # A new association is offered over UDP (DC-1); a kept one keeps its transport.
    proto = kept.get("access_proto", "UDP/DTLS/SCTP") if reuse else "UDP/DTLS/SCTP"
    transport = ACCESS_PROTOS[proto.upper()]
    streams: list[StreamSpec] = []
    for entry, (j, m, _k) in zip(entries, inputs):
        if entry["status"] == "rejected":
            continue
        where = _where(j)
        sub = entry["sub"]
        address, port = attrs.remote_rtp_address(ctx.sdp, m, where)
        if sub == MSRP:
            entry["session_id"] = _msrp_session_id(m.attribute("path"), where)
            entry["agw_setup"] = "passive" if (m.attribute("setup") or "").strip() == "active" else "active"
            core = TerminationSpec(
                side=Side.CORE, transport=TRANSPORT_TCP, remote_address=address,
                remote_port=port if entry["agw_setup"] == "active" else None,
                remote_dcsa=_core_interworking(sub, m),
            )
        else:
            entry["t140_pt"] = _rtpmap_pt(m, T140)
            entry["red_pt"] = _rtpmap_pt(m, "red")
            entry["red_fmtp"] = _fmtp(m, entry["red_pt"]) if entry["red_pt"] else None
            core = TerminationSpec(
                side=Side.CORE, transport=m.proto, remote_address=address, remote_port=port,
                remote_rtcp_port=attrs.remote_rtcp_port(m),
                rtcp_mux=m.has_attribute("rtcp-mux") or m.has_attribute("rtcp-mux-only"),
                remote_dcsa=_core_interworking(sub, m),
            )
        entry["core_proto"] = m.proto
        if entry["status"] == "kept":
            entry["dcmap"] = old_channels[entry["iq_id"]]["dcmap"]
            streams.append(StreamSpec(stream_id=entry["iq_id"], kind="dc_channel", group=sid, core=core))
            continue
        dcmap = DcMap(stream_id=entry["stream_id"], label=sub, subprotocol=sub)
        entry["dcmap"] = dcmap.to_dict()
        streams.append(StreamSpec(
            stream_id=entry["iq_id"], kind="dc_channel", group=sid,
            access=TerminationSpec(side=Side.ACCESS, transport=transport, dcmap=dcmap),
            core=core,
        ))
    if live:
        stream_ids = [e["stream_id"] for e in live]
        if reuse:
            access = TerminationSpec(side=Side.ACCESS, transport=transport,
                                     tls_role=role, notify_stream_reset=True, sctp_stream_ids=stream_ids)
        else:
            access = TerminationSpec(
                side=Side.ACCESS, transport=transport, local_fingerprint_request=True,
                notify_tls_failure=True, ice_lite=True, local_sctp_port_request=True,
                local_max_message_size_request=True, notify_stream_reset=True, sctp_stream_ids=stream_ids,
            )
        streams.insert(0, StreamSpec(
            stream_id=sid, kind="sctp", access=access, local_tls_id=local_tls_id,
            remote_tls_id=kept.get("remote_tls_id") if reuse else None, reuse_association=reuse,
        ))
    pending = {
        "sid": sid, "proto": proto, "reuse": reuse, "role": role.value if reuse and role else None,
        "local_tls_id": local_tls_id,
        "entries": [{k: v for k, v in e.items()} for e in entries],
        "release": gone if live else ([sid] if prev else []) + gone,
    }

    def finish(reply: IqReply | None) -> list[MediaSection]:
        if not live or local_tls_id is None:
            return [_rejected_line(f"application 0 {proto} {FORMAT}")]
        access_reply = _access_reply(reply, sid, prev)
        sctp_port, mms = _sctp_values(access_reply, ctx)
        channels = []
        for entry, (_j, m, _k) in zip(entries, inputs):
            if entry["status"] == "rejected":
                continue
            path = None
            if entry["sub"] == MSRP:
                path = _msrp_uri(access_reply.local_address, access_reply.local_port, entry["session_id"], "dc")
            dcsa = _encapsulate(entry["sub"], m, path)
            channels.append((DcMap.from_dict(entry["dcmap"]), dcsa))
            stored = old_channels.get(entry["iq_id"])
            core_reply = _reply_side(reply, entry["iq_id"], "core", stored)
            ctx.streams[str(entry["iq_id"])] = {
                "kind": "dc_channel", "group": sid, "stream_id": entry["stream_id"], "sub": entry["sub"],
                "dcmap": entry["dcmap"], "core_proto": entry["core_proto"], "core_m": entry["m_value"],
                "core": core_reply.to_dict(),
                "local_dcsa": dcsa,
            }
        setup = attrs.setup_for_role(role) if reuse and role else "actpass"
        state: dict[str, Any] = dict(kept) if reuse else {"kind": "sctp", "role": None, "remote_tls_id": None,
                                                 "remote_fingerprints": None, "remote_ice_ufrag": None}
        state.update({"local_tls_id": local_tls_id, "access_proto": proto, "access": access_reply.to_dict(),
                      "answered": False,
                      "channels": sorted({e["iq_id"] for e in live} | set(gone))})
        ctx.streams[str(sid)] = state
        return [_access_section(proto, access_reply, mid=None, setup=setup, tls_id=local_tls_id, ice=True,
                                sctp_port=sctp_port, max_message_size=mms, channels=channels)]

    return OfferPart(streams=streams, finish=finish, pending=pending, keys=keys)


def answer_from_access(ctx: Context, access_index: int, pending: dict[str, Any], m: MediaSection) -> AnswerPart:
    """The WIC's answer to a core offer: association to the AGW, MSRP/T.140 to the core (DC-9)."""
    sid = pending["sid"]
    where = _where(access_index)
    prev = _association(ctx, sid)
    entries = pending["entries"]
    live = [e for e in entries if e["status"] != "rejected"]
    if m.rejected or not live:
        release = sorted(set(pending["release"]) | ({sid} if prev else set())
                         | {e["iq_id"] for e in entries if "iq_id" in e})

        def finish_rejected(reply: IqReply | None) -> list[MediaSection]:
            for iq_id in release:
                ctx.streams.pop(str(iq_id), None)
            return [_rejected_line(e["m_value"]) for e in entries]

        return AnswerPart(streams=[], finish=finish_rejected, release=release)
    if m.proto.upper() != pending["proto"].upper() or FORMAT not in m.fmts:
        raise SdpPolicyError(f"{where}: answer proto {m.proto} does not match the offer's {pending['proto']}")
    dtls = attrs.dtls_params(ctx.sdp, m, where, answer=True)
    ice = attrs.ice_params(ctx.sdp, m)
    address, port = attrs.remote_rtp_address(ctx.sdp, m, where)
    remote_sctp_port = _sctp_port(m, where)
    remote_mms = _max_message_size(m, where)
    role = attrs.agw_role_for_answer(dtls.setup)
    reuse = bool(pending["reuse"])
    if reuse and pending.get("role") and Role(pending["role"]) is not role:
        raise SdpPolicyError(f"{where}: a=setup:{dtls.setup} changes the DTLS role of an existing association")
    if dtls.tls_id:
        ctx.used_tls_ids.add(dtls.tls_id)
    answered = {d.stream_id: (d, dcsa) for d, dcsa in parse_channels(m, where)}
    accepted: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    session_ids: dict[int, str] = {}
    for entry in live:
        got = answered.get(entry["stream_id"])
        ok = got is not None and (got[0].subprotocol or "").lower() == entry["sub"]
        (accepted if ok else refused).append(entry)
        if got is not None and ok and entry["sub"] == MSRP:
            session_ids[entry["stream_id"]] = _msrp_session_id(_dcsa_value(got[1], "path"), where)
    release = sorted(set(pending["release"]) | {e["iq_id"] for e in refused})
    transport = ACCESS_PROTOS[pending["proto"].upper()]
    stream_ids = [e["stream_id"] for e in accepted]
    # The same answer seen again (a reliable 18x, then the 2xx): the handshake
    # was asked for already.
    start = role is Role.CLIENT and not (prev and prev.get("answered"))
    if reuse:
        access = TerminationSpec(
            side=Side.ACCESS, transport=transport, remote_address=address, remote_port=port, tls_role=role,
            ice_lite=ice.present, remote_ice_ufrag=ice.ufrag, remote_ice_pwd=ice.pwd,
            remote_candidates=list(ice.candidates), notify_stream_reset=True, sctp_stream_ids=stream_ids,
        )
    else:
        access = TerminationSpec(
            side=Side.ACCESS, transport=transport, remote_address=address, remote_port=port,
            remote_fingerprints=list(dtls.fingerprints), establish_tls=start, tls_role=role,
            notify_tls_establishment=role is Role.SERVER, ice_lite=ice.present, remote_ice_ufrag=ice.ufrag,
            remote_ice_pwd=ice.pwd, remote_candidates=list(ice.candidates),
            remote_sctp_port=remote_sctp_port, remote_max_message_size=remote_mms,
            establish_sctp=start, notify_stream_reset=True, sctp_stream_ids=stream_ids,
        )
    streams = [StreamSpec(stream_id=sid, kind="sctp", access=access, local_tls_id=pending["local_tls_id"],
                          remote_tls_id=dtls.tls_id, reuse_association=reuse)]
    for entry in accepted:
        dcmap, dcsa = answered[entry["stream_id"]]
        streams.append(StreamSpec(
            stream_id=entry["iq_id"], kind="dc_channel", group=sid,
            access=TerminationSpec(side=Side.ACCESS, transport=transport, dcmap=dcmap, remote_dcsa=list(dcsa)),
        ))

    def finish(reply: IqReply | None) -> list[MediaSection]:
        out = []
        for entry in entries:
            if entry not in accepted:
                out.append(_rejected_line(entry["m_value"]))
                continue
            stored = ctx.streams.get(str(entry["iq_id"]))
            core_reply = _reply_side(reply, entry["iq_id"], "core", stored)
            dcsa = answered[entry["stream_id"]][1]
            connection = "existing" if entry["status"] == "kept" else "new"
            if entry["sub"] == MSRP:
                out.append(_msrp_core_section(core_reply, dcsa, session_ids[entry["stream_id"]],
                                              setup=entry["agw_setup"], connection=connection))
            else:
                out.append(_t140_core_section(core_reply, dcsa, proto=entry["core_proto"],
                                              t140_pt=entry["t140_pt"], red_pt=entry["red_pt"],
                                              red_fmtp=entry["red_fmtp"]))
        for iq_id in release:
            ctx.streams.pop(str(iq_id), None)
        state = ctx.streams.setdefault(str(sid), dict(prev or {"kind": "sctp"}))
        state.update({
            "role": role.value, "remote_tls_id": dtls.tls_id,
            "remote_fingerprints": [str(fp) for fp in dtls.fingerprints], "remote_ice_ufrag": ice.ufrag,
            "remote_transport": [address, port], "channels": [e["iq_id"] for e in accepted], "answered": True,
        })
        return out

    return AnswerPart(streams=streams, finish=finish, release=release)


def _copy(m: MediaSection) -> MediaSection:
    return MediaSection([Line(line.type, line.value) for line in m.lines])
