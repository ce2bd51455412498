"""The packet path: one asyncio DatagramProtocol per bound media port.

Theory of operation
-------------------
Access side (toward the WebRTC client / secure UE), one :class:`AccessChannel`
per port (the RTP port, and a separate RTCP port when RTCP is not
multiplexed, each with its own DTLS association: RFC 5764 section 4.1).  Every
datagram goes through small named steps::

    classify (RFC 7983 / RFC 5761 section 4, mediad.proto.demux)
      STUN  -> ICE-lite responder (RFC 8445 2.5, RFC 7675) -> answer, learn peer
      DTLS  -> DtlsSession.receive -> pump (send flights, handle events)
      RTP   -> SRTP unprotect -> core RTP port
      RTCP  -> SRTCP unprotect -> core RTCP port (or the RTP port when muxed)
      else  -> drop ("unknown_kind")

Core side (plain RTP/RTCP or UDPTL), one :class:`CoreChannel` per port::

    RTP  -> SRTP protect -> access peer;  RTCP -> SRTCP protect -> access peer
    UDPTL -> DTLS application data -> access peer (T.38, RFC 7345)

The DTLS sessions are sans-IO (mediad.proto.dtls); time is the loop clock and the
retransmission / handshake timers are one ``call_at`` per session, re-armed
after every pump.  A DTLS failure (fingerprint mismatch, timeout, protocol
error) tears the association down: from then on nothing is relayed for the
channel.  Toward access the destination is the ICE-selected address, else the
address the peer's DTLS or SRTP came from, else the SDP address; with ICE,
nothing is sent once consent expired (RFC 7675 section 5.1).

A bad packet is dropped, counted by reason and logged at debug level; nothing
raises out of ``datagram_received``.

The packet path (established RTP/RTCP) is kept lean: RTP/RTCP is recognised
inline from its first two bytes before the general demultiplexer runs; the
transport's ``sendto`` is bound once (:attr:`Channel.sendto`); packet and byte
counts are integers added in place (``mediad.metrics``); the destination
toward access is computed once when it can change (peer learned, ICE
selection, spec, consent) and kept in :attr:`AccessChannel.dest`.  Consent
freshness does not read the clock per packet: while a destination chosen by
ICE is cached, one timer per channel fires at the consent deadline
(``last_consent + consent_timeout``); if no newer check came it drops the
cached destination, and the next packet takes the full check (which drops
and reports the expiry, RFC 7675 section 5.1).  On the core side the
destinations are computed by the leg when its spec or latched address
changes (``mediad.core.session.CoreLeg.refresh``).

Overload: nothing here pauses reading.  A UDP port that receives more than
the process can handle loses datagrams in the kernel (its receive buffer
overflows) and relays again as soon as the load falls; an error the kernel
reports on the socket reaches ``error_received`` (logged at debug level) and
the transport stays open.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import TYPE_CHECKING

from iq import EVENT_CONSENT_EXPIRED, EVENT_DTLS_ESTABLISHED, EVENT_DTLS_FAILED, Role

from mediad.proto import demux
from mediad.proto.dtls import ApplicationData, Closed, DtlsSession, HandshakeComplete, HandshakeFailed
from mediad.proto.srtp import SrtpError, SrtpTransformer
from mediad.proto.stun import IceLiteResponder

if TYPE_CHECKING:
    from mediad.core.session import AccessLeg, CoreLeg

log = logging.getLogger("mediad.relay")

RTP, RTCP, STUN, DTLS = demux.RTP, demux.RTCP, demux.STUN, demux.DTLS
_SSRC = struct.Struct("!I")  # RTP header bytes 8-11, RTCP bytes 4-7 (RFC 3550 sections 5.1, 6.4)

# A channel's association as the relay sees it: read from its DtlsSession (the only state machine,
# mediad.proto.dtls.TRANSITIONS), from the stored keys (restored after a restart: established, no session)
# and from its failure (a failed handshake, or no ICE check before the handshake timeout).
NEW, HANDSHAKING, ESTABLISHED, FAILED, CLOSED = "new", "handshaking", "established", "failed", "closed"
_FROM_DTLS = {"new": HANDSHAKING, "handshaking": HANDSHAKING, "held": HANDSHAKING, "established": ESTABLISHED,
              "failed": FAILED, "closed": CLOSED}


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
    """One access-side port: ICE-lite, one DTLS association, its SRTP context."""

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
        self.out_rtp, self.out_rtcp = traffic[("access", "out", "rtp")], traffic[("access", "out", "rtcp")]
        self.in_stun, self.out_stun = traffic[("access", "in", "stun")], traffic[("access", "out", "stun")]
        self.in_dtls, self.out_dtls = traffic[("access", "in", "dtls")], traffic[("access", "out", "dtls")]
        self.in_udptl = traffic[("access", "in", "udptl")]
        self.rtcp_only = component == "rtcp"
        self._dest: tuple[str, int] | None = None  # cached destination toward access (None: compute)
        self.consent_timer: asyncio.TimerHandle | None = None
        self.responder = IceLiteResponder(
            leg.ice_ufrag, leg.ice_pwd, leg.spec.remote_ice_ufrag, leg.spec.remote_ice_pwd,
            consent_timeout=owner.config.mediad_consent_timeout,
        )
        self.dtls: DtlsSession | None = None
        self._srtp: SrtpTransformer | None = None
        self.keys = None  # SrtpKeys of the established association (persisted)
        self.failure: str | None = None  # why the association failed (then nothing is relayed)
        self.role: Role | None = None
        self._peer: tuple[str, int] | None = None  # learned from DTLS/SRTP/STUN
        self.pending_start = False
        self.start_handle: asyncio.Handle | None = None  # a start_client scheduled by start_client_soon
        self.ice_timer: asyncio.TimerHandle | None = None  # a client's deadline for its first valid check
        self.started_at: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.consent_reported = False
        self.source: tuple[str, int] | None = None  # source of the datagram being processed
        self.received = 0  # authenticated packets from the peer (the dialog's expiry: refreshed by traffic)
        self.ssrcs: set[int] = set()  # SSRCs the SRTP session protects toward the peer (at most max_ssrcs)
        self.max_ssrcs = owner.config.mediad_max_ssrcs

    @property
    def state(self) -> str:
        """The association's state: failed, restored from keys, or its DTLS session's (see _FROM_DTLS)."""
        if self.failure is not None:
            return FAILED
        dtls = self.dtls
        if dtls is None:
            return NEW if self.keys is None else ESTABLISHED
        return _FROM_DTLS[dtls.state]

    # Whatever the native packet path (mediad.io.fastpath) repeats is written down there on change.
    @property
    def peer(self) -> tuple[str, int] | None:
        return self._peer

    @peer.setter
    def peer(self, peer: tuple[str, int] | None) -> None:
        self._peer = peer
        self.dest = None

    @property
    def dest(self) -> tuple[str, int] | None:
        """The cached destination toward access (None: compute it)."""
        return self._dest

    @dest.setter
    def dest(self, dest: tuple[str, int] | None) -> None:
        self._dest = dest
        path = self.leg.path
        if path is not None:
            path.sync()

    @property
    def srtp(self):
        """The SRTP contexts of the established association (None: not established)."""
        return self._srtp

    @srtp.setter
    def srtp(self, srtp) -> None:
        if srtp is not self._srtp:
            self.ssrcs = set()  # a new session (or none) has no streams yet
        self._srtp = srtp
        path = self.leg.path
        if path is not None:
            path.sync()

    def new_srtp(self, keys):
        """SRTP contexts for ``keys``: shared with the native path when the stream has one."""
        path = self.leg.path
        return path.new_srtp(keys) if path is not None else SrtpTransformer(keys)

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
        srtp = self.srtp
        if srtp is None:
            self.metrics.dropped("dtls_failed" if self.state == FAILED else "not_established")
            return
        is_rtp = kind is RTP
        if is_rtp and self.rtcp_only:
            self.metrics.dropped("unexpected")
            return
        try:
            plain = srtp.unprotect_rtp(data) if is_rtp else srtp.unprotect_rtcp(data)
        except SrtpError as exc:
            self.metrics.dropped(exc.reason)
            return
        counters = self.in_rtp if is_rtp else self.in_rtcp
        counters.packets += 1
        counters.bytes += len(data)
        self.received += 1
        self.stream.from_access += 1
        if self._peer != addr and not self.leg.spec.ice_lite:
            self.peer = addr  # authenticated: latch (restart, NAT rebinding)
        core = self.stream.core
        if core is None:
            self.metrics.dropped("no_peer")
        elif is_rtp:
            core.send_rtp(plain)
        else:
            core.send_rtcp(plain)

    def stun_in(self, data: bytes, addr) -> None:
        self.in_stun.count(len(data))
        responder = self.responder
        before, dropped, rejected = responder.selected_address, responder.dropped, responder.rejected
        consent = responder.last_consent
        reply = responder.handle(data, addr, self.loop.time())
        if responder.last_consent != consent:
            self.received += 1  # an authenticated check
        if responder.dropped != dropped:
            self.metrics.dropped("malformed")
        elif responder.rejected != rejected:
            self.metrics.dropped("stun_rejected")
        if reply is not None and self.sendto is not None:
            self.sendto(reply, addr)
            self.out_stun.count(len(reply))
        selected = self.responder.selected_address
        if selected is not None and selected != before:
            self.peer = selected  # (and the cached destination is recomputed)
            self.consent_reported = False
            self.owner.changed(self.leg.dialog)
            if self.pending_start:
                self.start_client()

    def dtls_in(self, data: bytes, addr) -> None:
        self.in_dtls.count(len(data))
        if self.state in (FAILED, CLOSED):
            self.metrics.dropped("dtls_failed")
            return
        if self.dtls is None:
            if self.role is Role.CLIENT:
                self.metrics.dropped("not_established")
                return
            self.new_session(Role.SERVER)
        if self.peer is None or (self.state != ESTABLISHED and not self.leg.spec.ice_lite):
            self.peer = addr  # once established, only authenticated data moves the peer
        self.source = addr
        assert self.dtls is not None
        self.dtls.receive(data, self.loop.time())
        self.pump()

    # -- toward access --------------------------------------------------------------
    def check_consent(self) -> bool:
        """RFC 7675: False (and the ALG told once) when the peer's consent expired."""
        if self.responder.selected_address is None or not self.responder.consent_expired(self.loop.time()):
            return True
        if not self.consent_reported:
            self.consent_reported = True
            self.leg.report(EVENT_CONSENT_EXPIRED, None, self.component)
        return False

    def route(self) -> tuple[str, int] | None:
        """:meth:`destination`, kept in :attr:`dest` until something it depends on changes."""
        dest = self.destination()
        if dest is not None:
            responder = self.responder
            if self.leg.spec.ice_lite and responder.selected_address is not None:
                if responder.last_consent is not None:
                    self.arm_consent_timer(responder.last_consent + responder.consent_timeout)
                    self.dest = dest
            else:
                self.dest = dest
        return dest

    def arm_consent_timer(self, when: float) -> None:
        if self.consent_timer is None:
            self.consent_timer = self.loop.call_at(when, self.on_consent_timer)

    def on_consent_timer(self) -> None:
        """The consent deadline of the cached destination: still fresh, or recompute (RFC 7675)."""
        self.consent_timer = None
        responder = self.responder
        last = responder.last_consent
        if self.dest is not None and last is not None and not responder.consent_expired(self.loop.time()):
            self.arm_consent_timer(last + responder.consent_timeout)  # a newer check moved the deadline
        else:
            self.dest = None  # the next packet runs the full check (drop, report once)

    def forget_route(self) -> None:
        """Something the destination depends on changed (spec, ICE selection, association)."""
        self.dest = None

    def destination(self) -> tuple[str, int] | None:
        """Where to send toward the peer now; None (and a counted drop) if nowhere."""
        if self.leg.spec.ice_lite:
            selected = self.responder.selected_address
            if not self.check_consent():
                self.metrics.dropped("consent_expired")
                return None
            if selected is not None:
                return selected
        if self.peer is not None:
            return self.peer
        spec = self.leg.spec
        if spec.remote_address and spec.remote_port and not self.leg.over_tcp:  # TCP: checked only
            if self.component == "rtp":
                return (spec.remote_address, spec.remote_port)
            return (spec.remote_address, spec.remote_rtcp_port or spec.remote_port + 1)
        self.metrics.dropped("no_peer")
        return None

    def send_protected(self, data: bytes, is_rtp: bool) -> None:
        srtp = self.srtp
        sendto = self.sendto
        if srtp is None or sendto is None:
            self.metrics.dropped("dtls_failed" if self.state == FAILED else "not_established")
            return
        dest = self.dest
        if dest is None:
            dest = self.route()
            if dest is None:
                return
        ssrc = _SSRC.unpack_from(data, 8 if is_rtp else 4)[0]
        if ssrc not in self.ssrcs and not self.admit_ssrc(ssrc):
            return
        try:
            out = srtp.protect_rtp(data) if is_rtp else srtp.protect_rtcp(data)
        except SrtpError as exc:
            self.metrics.dropped(exc.reason)
            return
        sendto(out, dest)
        counters = self.out_rtp if is_rtp else self.out_rtcp
        counters.packets += 1
        counters.bytes += len(out)

    def admit_ssrc(self, ssrc: int) -> bool:
        """A new SSRC toward the peer: each costs libsrtp a stream until the session ends; capped."""
        if len(self.ssrcs) >= self.max_ssrcs:
            self.metrics.dropped("too_many_ssrcs")
            return False
        self.ssrcs.add(ssrc)
        path = self.leg.path
        if path is not None:
            path.sync()
        return True

    def send_application_data(self, data: bytes) -> None:
        if self.state != ESTABLISHED or self.dtls is None:
            self.metrics.dropped("dtls_failed" if self.state == FAILED else "not_established")
            return
        self.dtls.send_application_data(data)
        self.pump()

    # -- the DTLS association -------------------------------------------------------
    def new_session(self, role: Role) -> None:
        now = self.loop.time()
        fps = self.leg.spec.remote_fingerprints or None
        self.dtls = DtlsSession(
            self.owner.certificate, role, srtp=self.leg.dtls_srtp,
            remote_fingerprints=fps, handshake_timeout=self.owner.config.mediad_dtls_handshake_timeout, now=now,
        )
        self.role = role
        self.failure = None
        self.started_at = now
        if self._srtp is not None:  # (the setter writes the native path down again)
            self.srtp = None
        self.keys = None

    def start_client(self) -> None:
        """Establish (D)TLS session IE: start once the peer's address is known.

        With ICE (the ALG's ``ice_lite``), known means checked: the first
        ClientHello goes to the address of a valid STUN check whose consent
        holds, never to the SDP address before (RFC 8445 section 12; RFC 7675).
        A ClientHello sent early reaches a client that may still hold it when
        the call is set up again with the same offer (an INVITE retried after a
        407): it answers that stale hello on the new association, whose own
        hello had another random, and the handshake fails ("bad signature").
        """
        if self.leg.spec.ice_lite and (self.responder.selected_address is None or not self.check_consent()):
            self.role = Role.CLIENT
            self.pending_start = True  # (no OpenSSL connection until then: ~80 KiB each while it handshakes)
            if self.ice_timer is None:  # the handshake must still be done in dtls_handshake_timeout
                when = self.loop.time() + self.owner.config.mediad_dtls_handshake_timeout
                self.ice_timer = self.loop.call_at(when, self.on_ice_timeout)
            return
        if self.ice_timer is not None:
            self.ice_timer.cancel()
            self.ice_timer = None
        if self.dtls is None or self.dtls.state != "new":
            self.new_session(Role.CLIENT)
        if self.destination() is None:
            self.pending_start = True
            return
        self.pending_start = False
        assert self.dtls is not None
        self.dtls.start(self.loop.time())
        self.pump()

    def on_ice_timeout(self) -> None:
        """No valid check came in ``dtls_handshake_timeout``: the handshake failed (timeout), as it
        would had it been started (the ALG is told, and ends the call)."""
        self.ice_timer = None
        if self.pending_start and self.dtls is None and self.state not in (ESTABLISHED, FAILED, CLOSED):
            self.metrics.handshakes.labels("client", "timeout").inc()
            self.fail("timeout")

    def start_client_soon(self) -> None:
        """:meth:`start_client` on the next loop turn, so that the Iq answer goes out first.

        Building the ClientHello (a new OpenSSL connection and its first flight) is
        about 40 % of a RESERVE's work; the ALG waits for the answer, not for it.
        """
        if self.start_handle is None:
            self.start_handle = self.loop.call_soon(self._deferred_start)

    def _deferred_start(self) -> None:
        self.start_handle = None
        if self.transport is None or self.role is not Role.CLIENT or self.state in (ESTABLISHED, FAILED, CLOSED):
            return  # closed, reconfigured or failed meanwhile
        if self.dtls is not None and self.dtls.state != "new":
            return  # started meanwhile
        try:
            self.start_client()
        except Exception:
            log.exception("DTLS start failed on access port %d", self.port)
            self.fail("protocol_error")

    def set_remote_fingerprints(self, fingerprints) -> None:
        if self.dtls is not None and fingerprints and self.state == HANDSHAKING:
            self.dtls.set_remote_fingerprints(list(fingerprints), self.loop.time())
            self.pump()

    def pump(self) -> None:
        dtls = self.dtls
        if dtls is None:
            return
        datagrams = dtls.datagrams_to_send()
        if datagrams:
            dest = self.destination()
            sendto = self.sendto
            if dest is not None and sendto is not None:
                out = self.out_dtls
                for datagram in datagrams:
                    sendto(datagram, dest)
                    out.count(len(datagram))
        while True:
            event = dtls.next_event()
            if event is None:
                break
            self.handle_event(event)
        self.arm_timer()

    def handle_event(self, event) -> None:
        if isinstance(event, ApplicationData):
            core = self.leg.stream.core
            if self.leg.stream.kind != "t38" or core is None:
                self.metrics.dropped("unexpected")
                return
            self.in_udptl.count(len(event.data))
            self.received += 1
            self.stream.from_access += 1
            if self.source is not None and not self.leg.spec.ice_lite:
                self.peer = self.source  # authenticated: latch (NAT rebinding)
            core.send_udptl(event.data)
        elif isinstance(event, HandshakeComplete):
            role = self.role.value if self.role else "server"
            self.metrics.handshakes.labels(role, "ok").inc()
            if self.started_at is not None:
                self.metrics.handshake_seconds.labels(role).observe(self.loop.time() - self.started_at)
            if event.srtp_keys is not None:
                self.keys = event.srtp_keys
                self.srtp = self.new_srtp(event.srtp_keys)
            self.leg.report(EVENT_DTLS_ESTABLISHED, None, self.component)
        elif isinstance(event, HandshakeFailed):
            role = self.role.value if self.role else "server"
            reason = event.reason if event.reason in ("fingerprint_mismatch", "timeout") else "protocol_error"
            self.metrics.handshakes.labels(role, reason).inc()
            self.fail(reason)
        elif isinstance(event, Closed):
            if not self.leg.dtls_srtp:
                self.srtp = None
            self.owner.changed(self.leg.dialog)

    def fail(self, reason: str) -> None:
        """Tear the association down: nothing is relayed for this channel any more."""
        self.failure = reason
        self.srtp = None
        self.keys = None
        self.pending_start = False
        dtls = self.dtls
        if dtls is not None:
            dtls.close()
            datagrams = dtls.datagrams_to_send()
            dest = self.peer
            if datagrams and dest is not None and self.transport is not None:
                for datagram in datagrams:
                    self.transport.sendto(datagram, dest)
        self.cancel_timer()
        self.leg.report(EVENT_DTLS_FAILED, reason, self.component)

    def arm_timer(self) -> None:
        self.cancel_timer()
        if self.dtls is None or self.state in (FAILED, CLOSED):
            return
        when = self.dtls.timeout()
        if when is not None:
            self.timer = self.loop.call_at(when, self.on_timer)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.ice_timer is not None:
            self.ice_timer.cancel()
            self.ice_timer = None

    def on_timer(self) -> None:
        self.timer = None
        try:
            if self.dtls is not None:
                self.dtls.handle_timeout(self.loop.time())
                self.pump()
        except Exception:
            log.exception("DTLS timer failed on access port %d", self.port)
            self.fail("protocol_error")

    def restore(self, keys, peer) -> None:
        """Continue an association from stored SRTP keys (restart: no new handshake)."""
        self.keys = keys
        self.srtp = self.new_srtp(keys)
        self.peer = peer

    def close(self) -> None:
        self.cancel_timer()
        if self.start_handle is not None:
            self.start_handle.cancel()
            self.start_handle = None
        if self.consent_timer is not None:
            self.consent_timer.cancel()
            self.consent_timer = None
        # Not through the setters: closing the transport (below) takes the channel off the native
        # path, whose state is written down again then.
        self._dest = None
        if self.dtls is not None and self.state == ESTABLISHED:
            try:
                self.dtls.close()
                datagrams = self.dtls.datagrams_to_send()
                if datagrams and self.peer is not None and self.transport is not None:
                    for datagram in datagrams:
                        self.transport.sendto(datagram, self.peer)
            except Exception:
                log.debug("DTLS close failed on port %d", self.port, exc_info=True)
        self.dtls = None
        self._srtp = None
        super().close()


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
