"""The packet path's asyncio shells: one DatagramProtocol per bound media port.

Theory of operation
-------------------
Access side (toward the WebRTC client / secure UE), one :class:`AccessChannel`
per port (the RTP port, and a separate RTCP port when RTCP is not
multiplexed, each with its own DTLS association: RFC 5764 section 4.1).  The
channel is a shell: every decision is its sans-IO
:class:`~mediad.core.termination.AccessTermination`'s, which it feeds with the
datagram, its source and the loop's clock, and whose requests (send, timer,
event, route changed) it carries out.  Every datagram goes through small named
steps::

    classify (RFC 7983 / RFC 5761 section 4, mediad.proto.demux)
      STUN  -> termination.receive_stun: ICE-lite answer, selection, consent (RFC 8445 2.5, RFC 7675)
      DTLS  -> termination.receive_dtls: the DTLS session, its flights, its events
      RTP   -> termination.unprotect (SRTP) -> core RTP port
      RTCP  -> termination.unprotect (SRTCP) -> core RTCP port (or the RTP port when muxed)
      else  -> drop ("unknown_kind")

Core side (plain RTP/RTCP or UDPTL), one :class:`CoreChannel` per port::

    RTP  -> termination.protect (SRTP) -> access peer;  RTCP -> SRTCP likewise
    UDPTL -> DTLS application data -> access peer (T.38, RFC 7345)

Timers: the termination names three (DTLS retransmission/handshake, a
client's wait for its first ICE check, the consent deadline of the cached
destination); the shell keeps one ``call_at`` handle for each.

A bad packet is dropped, counted by reason and logged at debug level; nothing
raises out of ``datagram_received``.

The packet path (established RTP/RTCP) is kept lean: RTP/RTCP is recognised
inline from its first two bytes before the general demultiplexer runs; the
transport's ``sendto`` is bound once (:attr:`Channel.sendto`); packet and byte
counts are integers added in place (``mediad.metrics``); the destination
toward access is cached by the termination, so no packet reads the clock
(see ``mediad.core.termination``).  On the core side the destinations are
computed by the leg when its spec or latched address changes
(``mediad.core.session.CoreLeg.refresh``).

Why the shells are still in ``core/``: ``mediad.core.transport`` (a BUNDLE
transport's port) and ``mediad.core.datachannel`` (the SCTP association's port)
subclass :class:`AccessChannel`, and the tree builds the channels; moving the
shells to ``io/`` moves those subclasses with them.

Overload: nothing here pauses reading.  A UDP port that receives more than
the process can handle loses datagrams in the kernel (its receive buffer
overflows) and relays again as soon as the load falls; an error the kernel
reports on the socket reaches ``error_received`` (logged at debug level) and
the transport stays open.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from mediad.core.termination import AccessTermination, State, Timer
from mediad.proto import demux
from mediad.proto.dtls import ApplicationData
from mediad.proto.srtp import SrtpTransformer

if TYPE_CHECKING:
    from iq import Role

    from mediad.core.session import AccessLeg, CoreLeg

log = logging.getLogger("mediad.relay")

RTP, RTCP, STUN, DTLS = demux.RTP, demux.RTCP, demux.STUN, demux.DTLS
# The association's states (mediad.core.termination.TRANSITIONS), under the names the tree and the daemon use.
NEW, HANDSHAKING, ESTABLISHED, FAILED, CLOSED = (State.NEW, State.HANDSHAKING, State.ESTABLISHED, State.FAILED,
                                                 State.CLOSED)


class Channel(asyncio.DatagramProtocol):
    """A bound UDP port; subclasses implement ``datagram_received``."""

    def __init__(self, port: int, component: str) -> None:
        self.port = port
        self.component = component  # "rtp" or "rtcp"
        self._transport: asyncio.DatagramTransport | None = None
        self.sendto = None  # the transport's bound sendto, for the packet path

    @property
    def transport(self) -> asyncio.DatagramTransport | None:
        return self._transport

    @transport.setter
    def transport(self, transport) -> None:
        self._transport = transport
        self.sendto = transport.sendto if transport is not None else None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def error_received(self, exc) -> None:  # type: ignore[override]
        """A send or receive the kernel refused (ENOBUFS, ICMP unreachable): the port stays open."""
        log.debug("port %d: %s", self.port, exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class AccessChannel(Channel):
    """One access-side port: the asyncio shell of its :class:`~mediad.core.termination.AccessTermination`.

    It classifies each datagram, hands it to the termination with the loop's
    clock, and carries out what the termination asks (:class:`~mediad.core.termination.Shell`):
    sends, timers, events, the native path's sync, the leg's DTLS application
    data.  The attributes below the constructor read (and, for the callers that
    restore or reconfigure a channel, write) the termination's fields.
    """

    def __init__(self, leg: "AccessLeg", port: int, component: str) -> None:
        super().__init__(port, component)
        self.leg = leg  # an AccessLeg (one stream), or a mediad.core.transport.Transport (a BUNDLE group's streams)
        self.stream = leg.stream  # None on a transport: its streams are the transport's
        owner = leg.dialog.owner
        self.owner = owner
        self.metrics = owner.metrics
        self.loop = owner.loop
        traffic = owner.metrics.traffic
        self.t = traffic
        self.in_rtp, self.in_rtcp = traffic[("access", "in", "rtp")], traffic[("access", "in", "rtcp")]
        self.in_udptl = traffic[("access", "in", "udptl")]
        config = owner.config
        self.term = AccessTermination(
            self, leg, component, certificate=leg.certificate or owner.certificate, metrics=owner.metrics,
            consent_timeout=config.mediad_consent_timeout, handshake_timeout=config.mediad_dtls_handshake_timeout,
            max_ssrcs=config.mediad_max_ssrcs,
        )
        self.timer: asyncio.TimerHandle | None = None  # Timer.DTLS
        self.ice_timer: asyncio.TimerHandle | None = None  # Timer.ICE
        self.consent_timer: asyncio.TimerHandle | None = None  # Timer.CONSENT
        self.start_handle: asyncio.Handle | None = None  # a start_client scheduled by start_client_soon

    # -- the termination's fields (read by the tree, the documents and the native path) -------
    state = property(lambda self: self.term.state)
    dtls = property(lambda self: self.term.dtls)
    dest = property(lambda self: self.term.dest)
    ssrcs = property(lambda self: self.term.ssrcs)
    source = property(lambda self: self.term.source)
    pending_start = property(lambda self: self.term.pending_start)
    _peer = property(lambda self: self.term.peer)

    @property
    def peer(self) -> tuple[str, int] | None:
        return self.term.peer

    @peer.setter
    def peer(self, peer: tuple[str, int] | None) -> None:
        self.term.set_peer(peer)

    @property
    def srtp(self):
        """The SRTP contexts of the established association (None: not established)."""
        return self.term.srtp

    @srtp.setter
    def srtp(self, srtp) -> None:
        self.term.set_srtp(srtp)

    @property
    def keys(self):
        return self.term.keys

    @keys.setter
    def keys(self, keys) -> None:
        self.term.keys = keys

    @property
    def failure(self) -> str | None:
        return self.term.failure

    @failure.setter
    def failure(self, reason: str | None) -> None:
        """A stored failure (restart)."""
        if reason is not None:
            self.term.restore_failure(reason)

    @property
    def role(self) -> Role | None:
        return self.term.role

    @role.setter
    def role(self, role: Role | None) -> None:
        self.term.role = role

    @property
    def responder(self):
        return self.term.responder

    @responder.setter
    def responder(self, responder) -> None:
        self.term.responder = responder

    @property
    def received(self) -> int:
        """Authenticated packets from the peer (the dialog's expiry: refreshed by traffic)."""
        return self.term.received

    @received.setter
    def received(self, count: int) -> None:
        self.term.received = count

    # -- Shell: what the termination asks ----------------------------------------------------
    def send(self, data: bytes, addr) -> None:
        sendto = self.sendto
        if sendto is not None:
            sendto(data, addr)

    def set_timer(self, timer: Timer, when: float | None) -> None:
        name, callback = _TIMERS[timer]
        handle = getattr(self, name)
        if handle is not None:
            handle.cancel()
        setattr(self, name, None if when is None else self.loop.call_at(when, getattr(self, callback)))

    def report(self, name: str, reason: str | None) -> None:
        self.leg.report(name, reason, self.component)

    def route_changed(self) -> None:
        path = self.leg.path
        if path is not None:
            path.sync()

    def changed(self) -> None:
        self.owner.changed(self.leg.dialog)

    def new_srtp(self, keys):
        """SRTP contexts for ``keys``: shared with the native path when the stream has one.

        Their packets note a ROC that advanced or an SRTCP index to store
        (``mediad.proto.srtp``): the daemon then reads this channel's.
        """
        path = self.leg.path
        cap = self.owner.config.mediad_max_ssrcs  # inbound SSRCs too (mediad.proto.srtp)
        srtp = path.new_srtp(keys, cap) if path is not None else SrtpTransformer(keys, cap)
        srtp.note = self.noted
        return srtp

    def noted(self) -> None:
        self.owner.note_srtp(self)

    def handle_event(self, event) -> None:
        """A DTLS event the termination acted on; application data is UDPTL (T.38, RFC 7345)."""
        if isinstance(event, ApplicationData):
            core = self.leg.stream.core
            if self.leg.stream.kind != "t38" or core is None:
                self.metrics.dropped("unexpected")
                return
            self.in_udptl.count(len(event.data))
            self.stream.from_access += 1
            term = self.term
            if term.source is not None:
                term.latch(term.source)  # authenticated: counted; without ICE, it moves the peer
            else:
                term.received += 1
            core.send_udptl(event.data)

    # -- the pipeline ---------------------------------------------------------------
    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        try:
            # RTP/RTCP first: RFC 7983 first byte 128..191, RFC 5761 section 4 packet type 192..223
            # (the same answer as demux.classify for a datagram of 12 bytes or more).
            if len(data) >= 12 and 127 < data[0] < 192:
                self.media_in(data, addr, RTCP if 191 < data[1] < 224 else RTP)
                return
            kind = demux.classify(data)
            if kind is RTP or kind is RTCP:
                self.media_in(data, addr, kind)
            elif kind == STUN:
                self.stun_in(data, addr)
            elif kind == DTLS:
                self.dtls_in(data, addr)
            else:
                self.metrics.dropped("unknown_kind")
        except Exception as exc:  # a packet never takes the daemon down
            self.metrics.dropped("unexpected")
            log.debug("access port %d: dropped a packet: %r", self.port, exc, exc_info=True)

    def media_in(self, data: bytes, addr, kind) -> None:
        is_rtp = kind is RTP
        plain = self.term.unprotect(data, addr, is_rtp)
        if plain is None:
            return
        self.stream.from_access += 1
        core = self.stream.core
        if core is None:
            self.metrics.dropped("no_peer")
        elif is_rtp:
            core.send_rtp(plain)
        else:
            core.send_rtcp(plain)

    def stun_in(self, data: bytes, addr) -> None:
        self.term.receive_stun(data, addr, self.loop.time())

    def dtls_in(self, data: bytes, addr) -> None:
        self.term.receive_dtls(data, addr, self.loop.time())

    # -- toward access --------------------------------------------------------------
    def check_consent(self) -> bool:
        """RFC 7675: False (and the ALG told once) when the peer's consent expired."""
        return self.term.check_consent(self.loop.time())

    def forget_route(self) -> None:
        """Something the destination depends on changed (spec, ICE selection, association)."""
        self.term.forget_route()

    def send_protected(self, data: bytes, is_rtp: bool) -> None:
        sendto = self.sendto
        if sendto is None:
            self.metrics.dropped("dtls_failed" if self.term.state is FAILED else "not_established")
            return
        term = self.term
        out = term.protect(data, is_rtp, self.loop.time() if term.dest is None else 0.0)
        if out is not None:
            sendto(out, term.dest)

    def send_application_data(self, data: bytes) -> None:
        self.term.send_application_data(data, self.loop.time())

    # -- the DTLS association -------------------------------------------------------
    def start_client(self) -> None:
        """Establish (D)TLS session IE (see AccessTermination.start_client)."""
        self.term.start_client(self.loop.time())

    def start_client_soon(self) -> None:
        """:meth:`start_client` on the next loop turn, so that the Iq answer goes out first.

        Building the ClientHello (a new OpenSSL connection and its first flight) is
        about 40 % of a RESERVE's work; the ALG waits for the answer, not for it.
        """
        if self.start_handle is None:
            self.start_handle = self.loop.call_soon(self._deferred_start)

    def _deferred_start(self) -> None:
        self.start_handle = None
        if self.transport is None or not self.term.may_start():
            return  # closed, reconfigured, failed or started meanwhile
        try:
            self.start_client()
        except Exception:
            log.exception("DTLS start failed on access port %d", self.port)
            self.term.fail("protocol_error")

    def set_remote_fingerprints(self, fingerprints) -> None:
        self.term.set_remote_fingerprints(fingerprints, self.loop.time())

    def cancel_timer(self) -> None:
        self.term.cancel_timers()

    def on_timer(self) -> None:
        self.timer = None
        try:
            self.term.timer_expired(Timer.DTLS, self.loop.time())
        except Exception:
            log.exception("DTLS timer failed on access port %d", self.port)
            self.term.fail("protocol_error")

    def on_ice_timeout(self) -> None:
        self.ice_timer = None
        self.term.timer_expired(Timer.ICE, self.loop.time())

    def on_consent_timer(self) -> None:
        self.consent_timer = None
        self.term.timer_expired(Timer.CONSENT, self.loop.time())

    def restore(self, keys, peer, rocs=None, srtcp=None) -> None:
        """Continue an association from stored SRTP keys, rollover counters and SRTCP indices (restart:
        no new handshake)."""
        self.term.restore(keys, peer, rocs, srtcp)

    def known_ssrcs(self) -> tuple[set[int], set[int]]:
        """The SSRCs the SRTP session protects toward the peer, and those it heard or was told of."""
        term = self.term
        rx = set(term.heard)
        rx.update(self.leg.spec.ssrcs or ())  # a=ssrc of the peer's m-line (RFC 5576)
        path = self.leg.path
        if path is not None:
            rx.update(path.heard(self))
        return set(term.ssrcs), rx

    def srtp_rocs(self) -> dict[str, dict[str, int]] | None:
        """The rollover counters to store with the keys (read from libsrtp now); None: no SRTP."""
        srtp = self.srtp
        if srtp is None:
            return None
        srtp.refresh_rocs(*self.known_ssrcs())
        return srtp.rocs()

    def srtcp_indices(self) -> dict[str, int] | None:
        """The SRTCP index of each SSRC sent, to store with the keys (read now); None: no SRTP."""
        srtp = self.srtp
        if srtp is None:
            return None
        srtp.refresh_srtcp(self.known_ssrcs()[0])
        return srtp.srtcp_indices()

    def rocs_advanced(self) -> bool:
        """Did a stream's ROC advance (a sequence-number wrap), or an SRTCP index, since the last read?"""
        srtp = self.srtp
        if srtp is None:
            return False
        tx, rx = self.known_ssrcs()
        return srtp.refresh_rocs(tx, rx) | srtp.refresh_srtcp(tx)

    def reset(self) -> None:
        """A new association is asked for: the old one's close_notify goes to the peer."""
        peer = self.term.peer
        for datagram in self.term.reset():
            if peer is not None:
                self.send(datagram, peer)

    def close(self) -> None:
        if self.start_handle is not None:
            self.start_handle.cancel()
            self.start_handle = None
        try:
            self.term.close()  # (not written to the native path: closing the transport takes the channel off it)
        except Exception:
            log.debug("DTLS close failed on port %d", self.port, exc_info=True)
        super().close()


# A timer of the termination: the channel's attribute holding its handle, and the method it calls.
_TIMERS = {Timer.DTLS: ("timer", "on_timer"), Timer.ICE: ("ice_timer", "on_ice_timeout"),
           Timer.CONSENT: ("consent_timer", "on_consent_timer")}


class CoreChannel(Channel):
    """One core-side port: plain RTP/RTCP or UDPTL toward the IMS core."""

    def __init__(self, leg: "CoreLeg", port: int, component: str) -> None:
        super().__init__(port, component)
        self.leg = leg
        self.stream = leg.stream
        self.is_t38 = leg.stream.kind == "t38"
        self.rtp_port = component == "rtp"
        self.metrics = leg.stream.dialog.owner.metrics
        traffic = self.metrics.traffic
        self.t = traffic
        self.in_rtp, self.in_rtcp = traffic[("core", "in", "rtp")], traffic[("core", "in", "rtcp")]
        self.in_udptl = traffic[("core", "in", "udptl")]
        self.out = {kind: traffic[("core", "out", kind)] for kind in ("rtp", "rtcp", "udptl")}
        self.out_rtp, self.out_rtcp, self.out_udptl = self.out["rtp"], self.out["rtcp"], self.out["udptl"]

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        try:
            leg = self.leg
            access = self.stream.access
            if self.is_t38:
                if not leg.admits(self.component, addr):
                    self.metrics.dropped("wrong_source")
                    return
                self.in_udptl.count(len(data))
                self.stream.from_core += 1
                if access is None:
                    self.metrics.dropped("no_peer")
                else:
                    access.rtp.send_application_data(data)
                return
            # RTP/RTCP inline as in AccessChannel.datagram_received; shorter ones go to demux.
            if len(data) >= 12 and 127 < data[0] < 192:
                is_rtp = self.rtp_port and not 191 < data[1] < 224
            else:
                kind = demux.classify(data)
                if kind is RTCP:
                    is_rtp = False
                elif kind is RTP:
                    is_rtp = self.rtp_port
                else:
                    self.metrics.dropped("malformed")
                    return
            if not is_rtp and not demux.rtcp_is_valid(data):
                self.metrics.dropped("malformed")  # plain RTCP is unauthenticated: check its form
                return
            # Only media from the core's address (or the latched source) goes on; garbage never latches.
            if leg.latch_mode or addr[0] != leg.expected_host:
                if not leg.admits(self.component, addr):
                    self.metrics.dropped("wrong_source")
                    return
            counters = self.in_rtp if is_rtp else self.in_rtcp
            counters.packets += 1
            counters.bytes += len(data)
            self.stream.from_core += 1
            if access is None:
                self.metrics.dropped("no_peer")
            elif is_rtp:
                access.rtp.send_protected(data, True)
            else:
                access.rtcp_channel.send_protected(data, False)
        except Exception as exc:
            self.metrics.dropped("unexpected")
            log.debug("core port %d: dropped a packet: %r", self.port, exc, exc_info=True)

    def send(self, data: bytes, dest: tuple[str, int] | None, counters) -> None:
        """Send toward the core; ``counters``: the PacketCounters of the kind sent."""
        if dest is None:
            self.metrics.dropped("no_peer")
            return
        sendto = self.sendto
        if sendto is None:
            self.metrics.dropped("send_error")
            return
        sendto(data, dest)
        counters.packets += 1
        counters.bytes += len(data)
