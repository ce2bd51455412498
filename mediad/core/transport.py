"""A BUNDLE transport: several streams on one ICE-lite agent, DTLS association and port (RFC 9143).

Theory of operation
-------------------
The ownership tree (``mediad.core.session``) with its transport branch::

    Dialog ─┬─ Transport (transport_id)       one access port, one ICE-lite agent (RFC 8445 2.5),
            │    └─ TransportChannel            one DtlsSession, one SRTP context pair (RFC 9143 11)
            │         └─ BundleDemux            which stream a packet is for (RFC 9143 9.2)
            └─ Stream (stream_id, mid) ─┬─ BundledLeg / BundledSctpLeg   access: the m-line's payload
                                        │                                types and SSRCs; no port
                                        └─ CoreLeg                       core: one port pair, as always

Who writes what: the daemon (Iq requests) writes :attr:`Transport.spec`,
attaches and detaches streams (:meth:`Transport.attach`,
:meth:`Transport.detach`) and writes the legs' specs; the transport's channel
writes what the packets teach (the ICE selection, the peer, the DTLS result
and SRTP keys, the SSRCs the demultiplexer learns) and reports DTLS and consent
events once for the transport, with ``transport_id`` and ``stream_ids``.  The
DTLS session's state is the transport's only state machine (``relay``'s
``AccessChannel.state`` reads it).

Access → core, on the transport's port: STUN and DTLS as on any access port
(``relay.AccessChannel``, RFC 7983); SRTP/SRTCP unprotected with the
transport's context (whose inbound SSRCs are capped, ``mediad.proto.srtp``;
an SSRC the WIC ended with an RTCP BYE is forgotten by the demultiplexer
after its grace and frees its slot); an RTP packet goes to the stream
:meth:`BundleDemux.route_rtp <mediad.proto.bundle_demux.BundleDemux.route_rtp>`
names (MID header extension, SSRC, payload type), out of that stream's core
leg; an RTCP compound packet is split per stream (:func:`split_rtcp`); DTLS
application data is SCTP (RFC 8261) for the transport's ``sctp`` stream.
Core → access: a stream's core port hands RTP/RTCP to its :class:`BundledLeg`,
which checks that no other stream sends the SSRC (RFC 9143 section 9.1;
:meth:`BundleDemux.sent <mediad.proto.bundle_demux.BundleDemux.sent>`), adds the
m-line's MID to RTP (:class:`~mediad.proto.bundle_demux.MidStamp`, when the MID
extension is negotiated: the WIC may route by nothing else) and sends it
through the transport's channel (its SRTP context, its port, the selected
address).  Drops are counted by :class:`~mediad.proto.bundle_demux.Drop` reason.

Re-offers (RFC 8843 section 7.3, RFC 8842 section 5): ``reuse_association``
false on a kept transport starts a new DTLS session (and a new SCTP
association for its ``sctp`` stream) on the same port; ``ice_restart`` gives
the transport new local ICE credentials, keeps the selected address until a
check with the new ones comes (RFC 8445 section 9) and the port.

On the native packet path (``mediad.io.fastpath.BundlePath``) C repeats the
demultiplexer's decisions for SRTP of a learnt SSRC and for the core ports'
RTP/RTCP of SSRCs a stream already sends; :meth:`Transport.rebuild` writes the
tables down again, and whatever C does not know comes here.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from iq import Role, TerminationReply, TerminationSpec, TransportReply, TransportSpec
from sdp_rules.errors import UsageError

from mediad.proto.bundle_demux import RR, SR, BundleDemux, BundleStream, Drop, MidStamp
from mediad.core.datachannel import SctpAccessLeg
from mediad.proto.dtls import ApplicationData, Closed, HandshakeComplete, HandshakeFailed
from mediad.core.relay import ESTABLISHED, RTP, AccessChannel
from mediad.core.session import AccessLeg, StreamKind
from mediad.proto.srtp import SrtpError, SrtpKeys
from mediad.proto.stun import IceLiteResponder, random_ice_credentials

if TYPE_CHECKING:
    from mediad.core.session import Dialog, Stream

_SSRC = struct.Struct("!I")


def split_rtcp(demux: BundleDemux, packet: bytes, now: float) -> list[tuple[int, bytes]]:
    """The parts of a compound RTCP packet for each stream it concerns: ``[(stream key, packet)]``.

    Each RTCP packet goes to the streams the demultiplexer names (RFC 9143
    section 9.2); the leading SR or RR, and a packet that names no stream (an
    APP, an RR without report blocks), go with every part, so that each part is
    a compound packet of its own (RFC 3550 section 6.1: it starts with SR/RR).
    A compound for one stream is passed on whole.  Empty when no packet of it
    names a stream (counted by the demux).
    """
    routed = demux.route_rtcp(packet, now)
    keys: list[int] = []
    for _, _, named in routed:
        for key in named:
            if key not in keys:
                keys.append(key)
    if len(keys) <= 1:
        return [(keys[0], packet)] if keys else []
    lead = routed[0][1] if packet[1] in (SR, RR) else 0
    return [(key, packet[:lead] + b"".join(packet[start:end] for start, end, named in routed
                                            if start >= lead and (key in named or not named)))
            for key in keys]


class TransportChannel(AccessChannel):
    """The transport's port: the AccessChannel steps, the streams named by the demultiplexer."""

    leg: "Transport"
    bye_timer = None  # asyncio.TimerHandle: the demultiplexer's next BYE to forget

    def known_ssrcs(self) -> tuple[set[int], set[int]]:
        """The SSRCs sent toward the WIC on the transport's streams, and those the demultiplexer knows."""
        transport = self.leg
        tx: set[int] = set(self.ssrcs)  # admitted by the SRTP session (RTP and RTCP senders)
        for leg in transport.legs.values():
            if isinstance(leg, BundledLeg):
                tx.update(leg.sent)
        return tx, set(transport.demux.incoming)

    def media_in(self, data: bytes, addr, kind) -> None:
        srtp = self.srtp
        if srtp is None:
            self.metrics.dropped("dtls_failed" if self.failure is not None else "not_established")
            return
        is_rtp = kind is RTP
        try:
            plain = srtp.unprotect_rtp(data) if is_rtp else srtp.unprotect_rtcp(data)
        except SrtpError as exc:
            self.metrics.dropped(exc.reason)
            return
        counters = self.in_rtp if is_rtp else self.in_rtcp
        counters.packets += 1
        counters.bytes += len(data)
        self.received += 1
        if self._peer != addr and not self.leg.spec.ice_lite:
            self.peer = addr  # authenticated: latch (restart, NAT rebinding)
        transport = self.leg
        if is_rtp:
            key = transport.demux.route_rtp(plain)
            if key is None:
                transport.count_drops()
                return
            stream = transport.streams.get(key)
            if stream is None or stream.core is None:
                self.metrics.dropped("no_peer")
                return
            stream.from_access += 1
            stream.core.send_rtp(plain)
            return
        parts = split_rtcp(transport.demux, plain, self.loop.time())
        transport.count_drops()
        if self.bye_timer is None and transport.demux.timeout() is not None:
            self.bye_timer = self.loop.call_at(transport.demux.timeout(), self.on_bye_timer)
        for key, part in parts:
            stream = transport.streams.get(key)
            if stream is None or stream.core is None:
                self.metrics.dropped("no_peer")
                continue
            stream.from_access += 1
            stream.core.send_rtcp(part)

    def on_bye_timer(self) -> None:
        """The WIC's BYE'd SSRCs past their grace: forgotten by the demultiplexer, their SRTP slots freed."""
        self.bye_timer = None
        transport = self.leg
        gone = transport.demux.expire(self.loop.time())
        srtp = self.srtp
        if srtp is not None:
            for ssrc in gone:
                srtp.retire(ssrc)
        if gone and transport.path is not None:
            transport.path.sync_table()
        when = transport.demux.timeout()
        if when is not None:
            self.bye_timer = self.loop.call_at(when, self.on_bye_timer)

    def close(self) -> None:
        if self.bye_timer is not None:
            self.bye_timer.cancel()
            self.bye_timer = None
        super().close()

    def handle_event(self, event) -> None:
        sctp = self.leg.sctp_leg()
        if isinstance(event, ApplicationData):  # SCTP over the transport's DTLS association (RFC 8261)
            if sctp is None:
                self.metrics.dropped("unexpected")
                return
            self.t[("access", "in", "sctp")].count(len(event.data))
            self.received += 1
            if self.source is not None and not self.leg.spec.ice_lite:
                self.peer = self.source
            sctp.association.receive(event.data)
            return
        super().handle_event(event)
        if sctp is None:
            return
        if isinstance(event, HandshakeComplete):
            sctp.dtls_up(self)
        elif isinstance(event, (HandshakeFailed, Closed)):
            sctp.association.dtls_lost()


class Transport(AccessLeg):
    """One access transport of a dialog and the streams it carries (see the module docstring)."""

    stream = None  # a transport carries several: :attr:`streams`
    path = None  # mediad.io.fastpath.BundlePath on the native packet path; None: the Python one
    over_tcp = False
    dtls_srtp = True  # use_srtp is negotiated even for a data-only bundle (as SctpAccessChannel does)

    def __init__(self, dialog: "Dialog", spec: TransportSpec, ice: tuple[str, str] | None = None) -> None:
        self.dialog = dialog
        self.owner = dialog.owner
        self.transport_id = spec.transport_id
        self.spec = spec
        self.ice_ufrag, self.ice_pwd = ice or random_ice_credentials()
        self.rtp: TransportChannel | None = None
        self.rtcp = None  # RTCP is always multiplexed on a transport (RFC 9143 section 9.3)
        self.legs: dict[int, BundledLeg | BundledSctpLeg] = {}  # stream_id -> the stream's leg on it
        self.streams: dict[int, "Stream"] = {}  # stream_id -> stream, for the packet path
        self.demux = BundleDemux((), spec.mid_extension_id, dialog.owner.config.mediad_max_ssrcs)
        self._drops_seen = [0] * len(Drop)

    # -- the streams --------------------------------------------------------------------
    def attach(self, leg: "BundledLeg | BundledSctpLeg") -> None:
        self.legs[leg.stream.stream_id] = leg
        self.streams[leg.stream.stream_id] = leg.stream
        self.rebuild()

    def detach(self, leg: "BundledLeg | BundledSctpLeg") -> None:
        """``leg`` leaves (its stream released, or moved to another access termination)."""
        stream_id = leg.stream.stream_id
        if self.legs.get(stream_id) is leg:
            del self.legs[stream_id]
            del self.streams[stream_id]
            self.rebuild()

    def rebuild(self) -> None:
        """The demultiplexer's tables from the streams' specs (what was learnt of kept streams stays).

        And each RTP leg's :class:`MidStamp`, the MID element it adds toward the WIC.
        """
        ext = self.spec.mid_extension_id
        for leg in self.legs.values():
            if isinstance(leg, BundledLeg):
                leg.stamp = MidStamp(ext, leg.stream.mid) if ext is not None and leg.stream.mid else None
        self.demux.update(
            [BundleStream(key=stream_id, mid=leg.stream.mid, payload_types=frozenset(leg.spec.payload_types),
                          ssrcs=tuple(leg.spec.ssrcs),
                          sending=tuple(leg.stream.core.spec.ssrcs) if leg.stream.core is not None else ())
             for stream_id, leg in self.legs.items() if isinstance(leg, BundledLeg)],
            self.spec.mid_extension_id)
        if self.path is not None:
            self.path.sync_members()

    def sctp_leg(self) -> "BundledSctpLeg | None":
        for leg in self.legs.values():
            if isinstance(leg, BundledSctpLeg):
                return leg
        return None

    def count_drops(self) -> None:
        """Add what the demultiplexer dropped since the last call to the labelled counter."""
        seen, drops = self._drops_seen, self.demux.drops
        if seen != drops:
            counters = self.owner.metrics.bundle_drop
            for reason, count in enumerate(drops):
                if count != seen[reason]:
                    counters[reason].inc(count - seen[reason])
                    seen[reason] = count

    # -- events ---------------------------------------------------------------------------
    def report(self, name: str, reason: str | None, component: str) -> None:
        """One event for the transport (RFC 9143: one association), naming every stream on it."""
        ids = sorted(self.streams)
        if ids:
            self.owner.event(self.streams[ids[0]], name, reason, component,
                             transport_id=self.transport_id, stream_ids=ids)

    # -- the Iq interface -------------------------------------------------------------------
    def reply(self, address: str) -> TransportReply:  # type: ignore[override]
        if self.rtp is None:
            raise UsageError("transport: a reply before its port is open")
        return TransportReply(self.transport_id, address, self.rtp.port,
                              local_fingerprint=(self.certificate or self.owner.certificate).fingerprint("sha-256"),
                              ice_ufrag=self.ice_ufrag, ice_pwd=self.ice_pwd)

    def apply(self, spec: TransportSpec) -> list[int]:  # type: ignore[override]
        """A modify's transport: what it leaves out keeps its value; a new association or ICE restart."""
        old = self.spec
        fingerprints_given = bool(spec.remote_fingerprints)
        for name in ("remote_address", "remote_port", "tls_role", "remote_ice_ufrag", "remote_ice_pwd",
                     "local_tls_id", "remote_tls_id"):
            if getattr(spec, name) is None:
                setattr(spec, name, getattr(old, name))
        for name in ("remote_fingerprints", "remote_candidates"):
            if not getattr(spec, name):
                setattr(spec, name, list(getattr(old, name)))
        new_association = self.renews_association(spec)
        if new_association and not fingerprints_given:
            spec.remote_fingerprints = []  # the new ones come with a later modify (the answer to our re-offer)
        self.spec = spec
        if spec.ice_restart:
            self.restart_ice()
        if new_association:
            self.reset_association()
        self.rebuild()
        self.configure()
        return []

    def renews_association(self, spec: TransportSpec) -> bool:
        """Does ``spec`` ask for a new DTLS association on this transport (RFC 8842 section 5)?

        ``reuse_association`` false with a remote tls-id that changed, or (a peer
        without tls-id) once the transport had the peer's fingerprints.
        """
        if spec.reuse_association:
            return False
        if spec.remote_tls_id and self.spec.remote_tls_id:
            return spec.remote_tls_id != self.spec.remote_tls_id
        channel = self.rtp
        return channel is not None and channel.state != "new" and bool(self.spec.remote_fingerprints)

    def restart_ice(self) -> None:
        """New local ICE credentials (RFC 8839 4.4.1.1.1); the selected pair is kept until a new check."""
        self.ice_ufrag, self.ice_pwd = random_ice_credentials()
        channel = self.rtp
        if channel is not None:
            old = channel.responder
            responder = IceLiteResponder(self.ice_ufrag, self.ice_pwd, self.spec.remote_ice_ufrag,
                                         self.spec.remote_ice_pwd, consent_timeout=old.consent_timeout)
            responder.selected_address, responder.nominated = old.selected_address, old.nominated
            responder.last_consent = old.last_consent
            channel.responder = responder
            channel.forget_route()

    def reset_association(self) -> None:
        """A new DTLS association on the same port (and a new SCTP association on it)."""
        super().reset_association()
        sctp = self.sctp_leg()
        if sctp is not None:
            sctp.renew_association()

    # -- Redis -------------------------------------------------------------------------------
    def document(self) -> dict[str, Any]:
        channel = self.rtp
        if channel is None:
            raise UsageError("transport: a document before its port is open")
        return {
            "transport_id": self.transport_id,
            "spec": self.spec.to_dict(),
            "ice_ufrag": self.ice_ufrag,
            "ice_pwd": self.ice_pwd,
            "port": channel.port,
            "state": channel.state,
            "failure": channel.failure,
            "role": channel.role.value if channel.role else None,
            "peer": list(channel.peer) if channel.peer else None,
            "srtp_keys": channel.keys.to_dict() if channel.keys is not None else None,
            "srtp_rocs": channel.srtp_rocs(),
            "srtcp_index": channel.srtcp_indices(),
            "learnt": {str(ssrc): key for ssrc, key in self.demux.incoming.items()},
        }

    def restore(self, doc: dict[str, Any]) -> None:
        """After a restart: the stored association (SRTP keys, peer, role) and learnt SSRCs."""
        channel = self.rtp
        if channel is None:
            raise UsageError("transport: restored before its port is open")
        channel.role = Role(doc["role"]) if doc.get("role") else None
        peer = tuple(doc["peer"]) if doc.get("peer") else None
        if doc.get("srtp_keys"):
            channel.restore(SrtpKeys.from_dict(doc["srtp_keys"]), peer, doc.get("srtp_rocs"), doc.get("srtcp_index"))
        elif doc.get("state") == "failed":
            channel.failure, channel.peer = doc.get("failure") or "protocol_error", peer
        for ssrc, key in (doc.get("learnt") or {}).items():
            self.demux.incoming.setdefault(int(ssrc), int(key))


class BundledLeg:
    """The access termination of an ``srtp`` stream on a transport: the m-line's values, no port.

    The core leg sends through it (``rtp`` and ``rtcp_channel`` are the leg
    itself, as ``CoreChannel`` expects of an access leg).
    """

    rtcp = None
    # The MID element added to RTP toward the WIC (RFC 9143 9.2, 15.2); the transport writes it.
    stamp: MidStamp | None = None

    def __init__(self, stream: "Stream", transport: Transport, spec: TerminationSpec) -> None:
        self.stream = stream
        self.transport = transport
        self.spec = spec
        self.rtp = self.rtcp_channel = self
        self.sent: set[int] = set()  # SSRCs admitted toward the WIC on this stream
        self.max_ssrcs = transport.owner.config.mediad_max_ssrcs

    def channels(self) -> list:
        return []

    def send_protected(self, data: bytes, is_rtp: bool) -> None:
        """Core → access: one SSRC per stream on the transport (RFC 9143 section 9.1), then SRTP."""
        transport = self.transport
        if is_rtp:
            ssrc = _SSRC.unpack_from(data, 8)[0]
            if ssrc not in self.sent:
                if not transport.demux.sent(self.stream.stream_id, ssrc):
                    transport.count_drops()
                    return
                if len(self.sent) < self.max_ssrcs:
                    self.sent.add(ssrc)
            if self.stamp is not None:
                data = self.stamp.apply(data)
        channel = transport.rtp
        if channel is None:
            transport.owner.metrics.dropped("no_peer")
            return
        channel.send_protected(data, is_rtp)

    def reply(self, address: str) -> TerminationReply:
        if self.transport.rtp is None:
            raise UsageError("bundled leg: a reply before its transport's port is open")
        return TerminationReply(address, self.transport.rtp.port)

    def apply(self, spec: TerminationSpec) -> list[int]:
        self.spec = spec
        self.transport.rebuild()
        return []

    def configure(self) -> None:
        self.transport.rebuild()

    def release(self) -> None:
        self.transport.detach(self)

    def document(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "channels": {}}


class BundledSctpLeg(SctpAccessLeg):
    """The ``sctp`` stream on a transport: its SCTP association runs over the transport's DTLS."""

    def __init__(self, stream: "Stream", transport: Transport, spec: TerminationSpec) -> None:
        self.transport = transport
        super().__init__(stream, spec, (transport.ice_ufrag, transport.ice_pwd))

    def send_sctp(self, packet: bytes) -> None:
        channel = self.transport.rtp
        if channel is None:
            self.owner.metrics.dropped("not_established")
            return
        channel.t[("access", "out", "sctp")].count(len(packet))
        channel.send_application_data(packet)

    def configure(self) -> None:
        """Joining a transport whose association is up: start SCTP now (RFC 8843 7.3, a DC added later)."""
        channel = self.transport.rtp
        if channel is not None and channel.state == ESTABLISHED and channel.dtls is not None \
                and self.association.state == "new":
            self.dtls_up(channel)

    def reset_association(self) -> None:
        """The stream's own tls-ids mean nothing on a transport: the transport renews (renew_association)."""

    def release(self) -> None:
        self.association.close()
        self.transport.detach(self)

    def renew_association(self) -> None:
        SctpAccessLeg.reset_association(self)

    def reply(self, address: str) -> TerminationReply:
        if self.transport.rtp is None:
            raise UsageError("bundled SCTP leg: a reply before its transport's port is open")
        return TerminationReply(address, self.transport.rtp.port, local_sctp_port=self.association.local_port,
                                local_max_message_size=self.owner.config.mediad_sctp_max_message_size)

    def document(self) -> dict[str, Any]:
        doc = super().document()
        doc.pop("ice_pwd", None)  # the transport's: stored once, there
        doc.pop("ice_ufrag", None)
        return doc


# The kinds a transport carries (RFC 9143 section 8: one transport-layer protocol, DTLS over UDP) and the
# class of their access termination on it.
BUNDLED_LEGS: dict[StreamKind, type[BundledLeg] | type[BundledSctpLeg]] = {
    StreamKind.SRTP: BundledLeg,
    StreamKind.SCTP: BundledSctpLeg,
}
KINDS_ON_TRANSPORT = tuple(BUNDLED_LEGS)
