"""The Iq messages: what the IMS-ALG asks of the IMS-AGW, and what it answers.

3GPP TS 23.334 models the IMS-AGW with H.248 (TS 29.334): a *context* per call
holds *terminations* (one toward access, one toward the core) and each
termination carries *streams*.  Here:

* a context is a dialog (``IqRequest.dialog``);
* a stream is one media line or one data channel (``StreamSpec.stream_id``);
  the access and core terminations of one stream are its ``access`` and
  ``core`` :class:`TerminationSpec`;
* a data-channel SCTP association is a *deaggregation stream*
  (``kind == "sctp"``) and its channels are *component streams*
  (``kind == "dc_channel"``) grouped with it by ``group``.

Commands: RESERVE opens the dialog's context with its first streams; MODIFY
changes streams the context has and *adds* any stream id it does not have yet
(a re-offer that adds an m-line: H.248 MOD carrying a new stream); RELEASE
without ``release_streams`` drops the whole context, MODIFY with
``release_streams`` drops only those.  A termination spec left ``None`` in a
MODIFY means "unchanged".

*Transports* (BUNDLE, RFC 9143).  A :class:`TransportSpec` is one access
5-tuple: one ICE-lite agent (RFC 8445 section 2.5), one DTLS association
(RFC 9143 section 11, RFC 8842) and one local port, with RTP and RTCP
multiplexed (RFC 9143 section 9.3).  It owns several streams: a stream whose
``transport_id`` names it has no transport of its own on the access side --
its access termination carries only what belongs to its m-line (Iq
transport name, payload types, SSRCs, SCTP values) and the packets of every
such stream arrive on, and leave from, the transport's port, told apart by
the RTP MID header extension, SSRC and payload type (RFC 9143 section 9.2).
The core side of a bundled stream is as any other: one core termination per
stream.  A stream without ``transport_id`` owns its access transport, as
before transports existed (non-bundled offers, T.38, TCP, data channels
without bundle).  RELEASE of a whole context drops its transports too; MODIFY
with ``release_transports`` drops those (after their streams).

The fields of :class:`TerminationSpec` are the information elements of the
spec (names in the comments).  Every type round-trips through
``to_dict``/``from_dict`` (plain JSON values) so the same messages travel on
the control socket, are stored in Redis and are printed by ``e2ae-sdp --json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from iq.values import TRANSPORT_UDP_DTLS, Command, DcMap, Fingerprint, Role, Side


@dataclass
class TerminationSpec:
    """What the ALG asks of one termination of one stream (spec IE names in comments)."""

    side: Side
    # Transport protocol: "UDP/TLS/RTP/SAVPF", "RTP/AVP", "UDP/DTLS", "UDP", "UDP/DTLS/SCTP", "TCP", ...
    transport: str
    # Remote media address as the peer's SDP gives it (None until known).
    remote_address: str | None = None
    remote_port: int | None = None
    remote_rtcp_port: int | None = None  # a=rtcp or port+1; None when muxed or unknown
    rtcp_mux: bool = False  # RTP/RTCP multiplexed on this termination (RFC 5761)
    # "Remote certificate fingerprint" IE: the peer's a=fingerprint value(s).
    remote_fingerprints: list[Fingerprint] = field(default_factory=list)
    # "Local certificate fingerprint Request" IE.
    local_fingerprint_request: bool = False
    # "Establish (D)TLS session" IE: the AGW is DTLS client and starts the handshake.
    establish_tls: bool = False
    # The AGW's DTLS role on this termination (None: not DTLS).
    tls_role: Role | None = None
    # "Notify (D)TLS session establishment Failure Event" IE.
    notify_tls_failure: bool = False
    # "Notify (D)TLS session establishment" IE (server role, optional).
    notify_tls_establishment: bool = False
    # ICE (access side, the AGW is ICE-lite): the peer's credentials and candidates.
    ice_lite: bool = False
    remote_ice_ufrag: str | None = None
    remote_ice_pwd: str | None = None
    remote_candidates: list[str] = field(default_factory=list)
    # SCTP (deaggregation stream of a data-channel association).
    remote_sctp_port: int | None = None
    remote_max_message_size: int | None = None
    local_sctp_port_request: bool = False
    local_max_message_size_request: bool = False
    establish_sctp: bool = False  # "Establish SCTP association" IE
    notify_stream_reset: bool = False  # notify SCTP stream resets, answer them autonomously
    sctp_stream_ids: list[int] = field(default_factory=list)  # component streams to demultiplex
    # Data channel (component stream): its dcmap and the dcsa values.
    dcmap: DcMap | None = None
    remote_dcsa: list[str] = field(default_factory=list)
    local_dcsa: list[str] = field(default_factory=list)
    # RTP (a stream on a transport, RFC 9143 section 9.2): the payload types this
    # termination receives from its peer (the m-line's formats), and the SSRCs the
    # peer announced with a=ssrc (RFC 5576; empty when it announced none).
    payload_types: list[int] = field(default_factory=list)
    ssrcs: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in _field_names(TerminationSpec):
            value = getattr(self, name)
            if value is None or value.__class__ in _PLAIN:
                pass
            elif isinstance(value, Enum):
                value = value.value
            elif name == "remote_fingerprints":
                value = [fp.to_dict() for fp in value]
            elif isinstance(value, DcMap):
                value = value.to_dict()
            elif isinstance(value, list):
                value = list(value)
            out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TerminationSpec":
        kwargs = dict(data)
        kwargs["side"] = Side(kwargs["side"])
        if kwargs.get("tls_role") is not None:
            kwargs["tls_role"] = Role(kwargs["tls_role"])
        kwargs["remote_fingerprints"] = [
            Fingerprint.from_dict(fp) for fp in kwargs.get("remote_fingerprints", [])
        ]
        if kwargs.get("dcmap") is not None:
            kwargs["dcmap"] = DcMap.from_dict(kwargs["dcmap"])
        return cls(**_known(cls, kwargs))


@dataclass
class StreamSpec:
    """One H.248 stream: an m-line, an SCTP association, or one data channel."""

    stream_id: int
    # "srtp" (DTLS-SRTP over UDP), "srtp_tcp" (over TCP, RFC 4571), "t38" (UDPTL/DTLS),
    # "sctp" (data-channel association: deaggregation stream), "dc_channel" (component stream).
    kind: str
    access: TerminationSpec | None = None
    core: TerminationSpec | None = None
    group: int | None = None  # for dc_channel: the stream_id of its "sctp" stream
    # For "sctp"/"srtp": the tls-id pair identifying the association (ours, the peer's).
    local_tls_id: str | None = None
    remote_tls_id: str | None = None
    reuse_association: bool = False  # keep the existing DTLS (and SCTP) association
    # The transport (TransportSpec.transport_id) that carries this stream on the
    # access side, None when the stream has a transport of its own.  The DTLS and
    # ICE fields of ``access`` and the tls-ids above are then unused: the
    # transport has them.
    transport_id: int | None = None
    mid: str | None = None  # the m-line's identification-tag (RFC 5888 a=mid; RFC 9143 section 9.2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "kind": self.kind,
            "access": self.access.to_dict() if self.access else None,
            "core": self.core.to_dict() if self.core else None,
            "group": self.group,
            "local_tls_id": self.local_tls_id,
            "remote_tls_id": self.remote_tls_id,
            "reuse_association": self.reuse_association,
            "transport_id": self.transport_id,
            "mid": self.mid,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StreamSpec":
        kwargs = dict(data)
        for side in ("access", "core"):
            if kwargs.get(side) is not None:
                kwargs[side] = TerminationSpec.from_dict(kwargs[side])
        return cls(**_known(cls, kwargs))


@dataclass
class TransportSpec:
    """One access transport owning several streams: a BUNDLE group's 5-tuple (RFC 9143).

    The ICE, DTLS and address fields mean what the same fields of an access
    :class:`TerminationSpec` mean, for the whole transport: the peer's values
    are those of the tagged m-line (RFC 9143 section 7.1.3), the AGW's reply
    (:class:`TransportReply`) is written once, into the tagged m-line.
    """

    transport_id: int
    # Iq transport of the 5-tuple: RFC 9143 section 8 puts every bundled m-line on
    # the same transport-layer protocol; bundles here are DTLS over UDP.
    transport: str = TRANSPORT_UDP_DTLS
    remote_address: str | None = None
    remote_port: int | None = None
    # ICE (the AGW is ICE-lite): the peer's credentials and candidates.
    ice_lite: bool = False
    remote_ice_ufrag: str | None = None
    remote_ice_pwd: str | None = None
    remote_candidates: list[str] = field(default_factory=list)
    # The peer restarted ICE on a kept transport (a new ufrag, RFC 8839 section
    # 4.4.1.1.1): the AGW answers with new ICE credentials of its own and keeps
    # its port; the DTLS association is kept or renewed as ``reuse_association`` says.
    ice_restart: bool = False
    # DTLS: one association per transport (RFC 9143 section 11), IEs as on a termination.
    remote_fingerprints: list[Fingerprint] = field(default_factory=list)
    local_fingerprint_request: bool = False
    establish_tls: bool = False
    tls_role: Role | None = None
    notify_tls_failure: bool = False
    notify_tls_establishment: bool = False
    # The association's tls-id pair (RFC 8842: ours, the peer's) and whether it is kept.
    local_tls_id: str | None = None
    remote_tls_id: str | None = None
    reuse_association: bool = False
    # The id of the RTP MID header extension (urn:ietf:params:rtp-hdrext:sdes:mid,
    # RFC 9143 section 15.2; RFC 8285 a=extmap), one id for every bundled m-line
    # (RFC 9143 section 12); None when the peer did not offer it.
    mid_extension_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in _field_names(TransportSpec):
            value = getattr(self, name)
            if isinstance(value, Enum):
                value = value.value
            elif name == "remote_fingerprints":
                value = [fp.to_dict() for fp in value]
            elif isinstance(value, list):
                value = list(value)
            out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TransportSpec":
        kwargs = dict(data)
        kwargs["transport_id"] = int(kwargs["transport_id"])
        if kwargs.get("tls_role") is not None:
            kwargs["tls_role"] = Role(kwargs["tls_role"])
        kwargs["remote_fingerprints"] = [
            Fingerprint.from_dict(fp) for fp in kwargs.get("remote_fingerprints", [])
        ]
        return cls(**_known(cls, kwargs))


@dataclass
class IqRequest:
    """A request on the Iq interface: one transaction on one dialog's context."""

    command: Command
    dialog: str
    transaction: str
    streams: list[StreamSpec] = field(default_factory=list)
    release_streams: list[int] = field(default_factory=list)  # MODIFY may drop streams
    # Access transports owning several streams (BUNDLE); RESERVE and MODIFY add
    # the ids the context lacks and change the others, as for streams.
    transports: list[TransportSpec] = field(default_factory=list)
    release_transports: list[int] = field(default_factory=list)  # MODIFY may drop transports

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command.value,
            "dialog": self.dialog,
            "transaction": self.transaction,
            "streams": [s.to_dict() for s in self.streams],
            "release_streams": list(self.release_streams),
            "transports": [t.to_dict() for t in self.transports],
            "release_transports": list(self.release_transports),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IqRequest":
        try:
            return cls(
                command=Command(data["command"]),
                dialog=str(data["dialog"]),
                transaction=str(data["transaction"]),
                streams=[StreamSpec.from_dict(s) for s in data.get("streams", [])],
                release_streams=[int(s) for s in data.get("release_streams", [])],
                transports=[TransportSpec.from_dict(t) for t in data.get("transports", [])],
                release_transports=[int(t) for t in data.get("release_transports", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed Iq request: {exc}") from exc

    def transport(self, transport_id: int) -> TransportSpec:
        for spec in self.transports:
            if spec.transport_id == transport_id:
                return spec
        raise KeyError(f"no transport {transport_id} in the request")


@dataclass
class TerminationReply:
    """What the AGW answers for one termination of one stream."""

    local_address: str
    local_port: int
    local_rtcp_port: int | None = None  # None when muxed
    # "Local certificate fingerprint" IE.
    local_fingerprint: Fingerprint | None = None
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    local_sctp_port: int | None = None
    local_max_message_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in _field_names(TerminationReply)}
        out["local_fingerprint"] = self.local_fingerprint.to_dict() if self.local_fingerprint else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TerminationReply":
        kwargs = dict(data)
        if kwargs.get("local_fingerprint") is not None:
            kwargs["local_fingerprint"] = Fingerprint.from_dict(kwargs["local_fingerprint"])
        return cls(**_known(cls, kwargs))


@dataclass
class StreamReply:
    """What the AGW answers for one stream.

    For a stream on a transport, ``access`` (when given) repeats the
    transport's address and port and carries only the stream's own values
    (``local_sctp_port``, ``local_max_message_size``); the fingerprint and the
    ICE credentials are the :class:`TransportReply`'s.
    """

    stream_id: int
    access: TerminationReply | None = None
    core: TerminationReply | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "access": self.access.to_dict() if self.access else None,
            "core": self.core.to_dict() if self.core else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StreamReply":
        return cls(
            stream_id=int(data["stream_id"]),
            access=TerminationReply.from_dict(data["access"]) if data.get("access") else None,
            core=TerminationReply.from_dict(data["core"]) if data.get("core") else None,
        )


@dataclass
class TransportReply:
    """What the AGW answers for one transport: its 5-tuple end, certificate and ICE credentials."""

    transport_id: int
    local_address: str
    local_port: int
    local_fingerprint: Fingerprint | None = None  # "Local certificate fingerprint" IE
    ice_ufrag: str | None = None
    ice_pwd: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in _field_names(TransportReply)}
        out["local_fingerprint"] = self.local_fingerprint.to_dict() if self.local_fingerprint else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TransportReply":
        kwargs = dict(data)
        if kwargs.get("local_fingerprint") is not None:
            kwargs["local_fingerprint"] = Fingerprint.from_dict(kwargs["local_fingerprint"])
        return cls(**_known(cls, kwargs))


@dataclass
class IqReply:
    """The AGW's answer.  ``error`` is set (and ``streams`` empty) on failure."""

    dialog: str
    transaction: str
    streams: list[StreamReply] = field(default_factory=list)
    error: str | None = None
    error_code: int | None = None  # SIP-like: 400 malformed, 404 unknown dialog, 503 no resources
    data: dict[str, Any] | None = None  # QUERY / LIST payloads
    transports: list[TransportReply] = field(default_factory=list)

    def stream(self, stream_id: int) -> StreamReply:
        for reply in self.streams:
            if reply.stream_id == stream_id:
                return reply
        raise KeyError(f"no reply for stream {stream_id}")

    def transport(self, transport_id: int) -> TransportReply:
        for reply in self.transports:
            if reply.transport_id == transport_id:
                return reply
        raise KeyError(f"no reply for transport {transport_id}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "dialog": self.dialog,
            "transaction": self.transaction,
            "streams": [s.to_dict() for s in self.streams],
            "error": self.error,
            "error_code": self.error_code,
            "data": self.data,
            "transports": [t.to_dict() for t in self.transports],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IqReply":
        try:
            return cls(
                dialog=str(data["dialog"]),
                transaction=str(data["transaction"]),
                streams=[StreamReply.from_dict(s) for s in data.get("streams", [])],
                error=data.get("error"),
                error_code=data.get("error_code"),
                data=data.get("data"),
                transports=[TransportReply.from_dict(t) for t in data.get("transports", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed Iq reply: {exc}") from exc


# Types a to_dict passes through as they are (JSON values already).
_PLAIN = (str, int, bool, float)
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    """The dataclass's field names in order, computed once per class (messages are built per call)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _known(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    names = _field_names(cls)
    unknown = [name for name in kwargs if name not in names]
    if unknown:
        raise ValueError(f"unknown fields for {cls.__name__}: {sorted(unknown)}")
    return kwargs
