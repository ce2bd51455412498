"""The access termination of one port, sans-IO: ICE-lite, consent, DTLS driving, the route, SRTP.

Theory of operation
-------------------
:class:`AccessTermination` decides everything an access port does and does
none of it: datagrams come in with their source address and ``now``, timer
expiries come in with ``now``, and what follows goes out through a small
interface the caller implements (:class:`Shell`): send these bytes to that
address, arm or cancel this timer at that time, report this event to the ALG,
the route changed (the native path writes it down again), here is a DTLS
event for the leg.  No socket, no event loop: the asyncio shell
(``mediad.core.relay.AccessChannel``) executes the calls, the unit tests
record them.  The interface is a handful of calls rather than a list of action
objects so that the packet path allocates nothing of its own: an SRTP packet
in returns its plain form (:meth:`AccessTermination.unprotect`), a plain one
out returns its protected form with the destination left in
:attr:`AccessTermination.dest` (:meth:`AccessTermination.protect`).

What it owns, each field written only here:

* ICE-lite (RFC 8445 section 2.5): the :class:`~mediad.proto.stun.IceLiteResponder`
  answers checks and nominates; the first valid check selects the peer.
* Consent freshness (RFC 7675): with ICE, nothing is sent once consent expired
  (section 5.1), the expiry is reported once; the cached destination carries a
  deadline (timer ``CONSENT``) so that no packet reads the clock.
* The DTLS association (RFC 5764, RFC 6347 via ``mediad.proto.dtls.DtlsSession``):
  started as server by the first ClientHello, as client once the peer's
  address is known (with ICE: checked; timer ``ICE`` bounds the wait by the
  handshake timeout), its retransmission timer (timer ``DTLS``), handshake done
  → SRTP keys, failure → event and nothing relayed any more.
* The route toward the peer: the ICE-selected address, else the address the
  peer's DTLS or authenticated SRTP came from (latching, RFC 7983 and
  RFC 3550 section 8.2's spirit: only authenticated data moves it once
  established), else the SDP address.
* SRTP/SRTCP unprotect and protect (RFC 3711) and the SSRCs admitted toward the
  peer (each costs libsrtp a stream; capped at ``max_ssrcs``).  The peer's own
  SSRCs are capped by the SRTP session itself, before libsrtp runs
  (``mediad.proto.srtp``: ``inbound_ssrc_cap``).

The association's lifecycle is one table, :data:`TRANSITIONS`
(``(state, input) → next state``); an input that is not in it is a defect
(:class:`TerminationError`).  The DTLS session has its own table
(``mediad.proto.dtls.TRANSITIONS``) for the handshake's inside; this one is
what the relay acts on.
"""

from __future__ import annotations

import enum
import struct
from typing import Any, Protocol

from iq import EVENT_CONSENT_EXPIRED, EVENT_DTLS_ESTABLISHED, EVENT_DTLS_FAILED, Role
from sdp_rules.errors import E2aeError

from mediad.proto.dtls import Closed, DtlsSession, HandshakeComplete, HandshakeFailed
from mediad.proto.srtp import SrtpError, SrtpKeys
from mediad.proto.stun import IceLiteResponder

_SSRC = struct.Struct("!I")  # RTP header bytes 8-11, RTCP bytes 4-7 (RFC 3550 sections 5.1, 6.4)
_REASONS = ("fingerprint_mismatch", "timeout")  # else protocol_error


class TerminationError(E2aeError):
    """mediad misused a termination (an input its state does not take): our defect, never the peer's."""


class State(enum.StrEnum):
    """The association as the relay sees it (stored in Redis documents by value)."""

    NEW = "new"
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    FAILED = "failed"
    CLOSED = "closed"


class Input(enum.Enum):
    SESSION = "session"  # a new DTLS session (client start, or a ClientHello as server)
    HANDSHAKE_DONE = "handshake_done"  # HandshakeComplete: the peer is authenticated
    FAIL = "fail"  # the handshake failed, no check in time, a protocol error, a stored failure
    PEER_CLOSED = "peer_closed"  # close_notify or a fatal alert after the handshake
    RESTORE = "restore"  # stored SRTP keys (a restart: no new handshake)
    RESET = "reset"  # a new association is asked for (new tls-id, ICE restart without tls-id)
    CLOSE = "close"  # the port closes


_ANY = tuple(State)
TRANSITIONS: dict[tuple[State, Input], State] = {
    **{(state, Input.SESSION): State.HANDSHAKING for state in (State.NEW, State.HANDSHAKING, State.ESTABLISHED)},
    (State.HANDSHAKING, Input.HANDSHAKE_DONE): State.ESTABLISHED,
    **{(state, Input.FAIL): State.FAILED for state in _ANY},
    (State.HANDSHAKING, Input.PEER_CLOSED): State.CLOSED,
    (State.ESTABLISHED, Input.PEER_CLOSED): State.CLOSED,
    (State.NEW, Input.RESTORE): State.ESTABLISHED,
    (State.ESTABLISHED, Input.RESTORE): State.ESTABLISHED,
    **{(state, Input.RESET): State.NEW for state in _ANY},
    **{(state, Input.CLOSE): State.CLOSED for state in _ANY},
}


class Timer(enum.Enum):
    DTLS = "dtls"  # the session's retransmission / handshake deadline
    ICE = "ice"  # a client's deadline for its first valid check (the handshake timeout)
    CONSENT = "consent"  # the cached destination's consent deadline (RFC 7675)


class Shell(Protocol):
    """What a termination asks of whoever holds its socket and clock."""

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send one datagram (a STUN answer, a DTLS flight or alert) toward access."""

    def set_timer(self, timer: Timer, when: float | None) -> None:
        """Arm ``timer`` at ``when`` (replacing it), or cancel it (None); expiry: ``timer_expired``."""

    def report(self, name: str, reason: str | None) -> None:
        """An event of the association or ICE agent, for the ALG."""

    def route_changed(self) -> None:
        """peer, dest, srtp or the admitted SSRCs changed (the native path writes them down)."""

    def changed(self) -> None:
        """What the dialog's document stores changed (an ICE selection, the peer closed the association)."""

    def new_srtp(self, keys: SrtpKeys) -> Any:
        """SRTP contexts for ``keys`` (shared with the native path when there is one)."""

    def handle_event(self, event: Any) -> None:
        """A DTLS event, after the termination acted on it (application data is the leg's)."""


class AccessTermination:
    """One access port's decisions (see the module docstring).

    ``leg`` is read, never written: ``spec`` (ICE, fingerprints, SDP address),
    ``over_tcp`` and ``dtls_srtp``.
    """

    def __init__(self, shell: Shell, leg: Any, component: str, *, certificate: Any, metrics: Any,
                 consent_timeout: float, handshake_timeout: float, max_ssrcs: int) -> None:
        self.shell = shell
        self.leg = leg
        self.component = component  # "rtp" or "rtcp"
        self.rtcp_only = component == "rtcp"
        self.certificate = certificate
        self.metrics = metrics
        self.dropped = metrics.dropped
        self.handshake_timeout = handshake_timeout
        self.max_ssrcs = max_ssrcs
        self.offer_srtp: bool | None = None  # negotiate use_srtp (None: the leg's dtls_srtp)
        traffic = metrics.traffic
        self.in_rtp, self.in_rtcp = traffic[("access", "in", "rtp")], traffic[("access", "in", "rtcp")]
        self.out_rtp, self.out_rtcp = traffic[("access", "out", "rtp")], traffic[("access", "out", "rtcp")]
        self.in_stun, self.out_stun = traffic[("access", "in", "stun")], traffic[("access", "out", "stun")]
        self.in_dtls, self.out_dtls = traffic[("access", "in", "dtls")], traffic[("access", "out", "dtls")]
        spec = leg.spec
        self.responder = IceLiteResponder(leg.ice_ufrag, leg.ice_pwd, spec.remote_ice_ufrag, spec.remote_ice_pwd,
                                          consent_timeout=consent_timeout)
        self.state = State.NEW
        self.dtls: DtlsSession | None = None
        self.srtp: Any = None  # the established association's SRTP contexts
        self.keys: SrtpKeys | None = None  # their keys (persisted)
        self.failure: str | None = None  # why the association failed (then nothing is relayed)
        self.role: Role | None = None
        self.peer: tuple[str, int] | None = None  # learnt from DTLS, authenticated SRTP, or ICE
        self.dest: tuple[str, int] | None = None  # the cached destination toward access (None: compute)
        self.ssrcs: set[int] = set()  # SSRCs the SRTP session protects toward the peer
        self.heard: set[int] = set()  # SSRCs of RTP authenticated from the peer (their ROCs are kept)
        self.source: tuple[str, int] | None = None  # source of the DTLS datagram being processed
        self.pending_start = False  # a client waiting for the peer's address
        self.started_at: float | None = None
        self.consent_reported = False
        self.consent_armed = False
        self.ice_armed = False
        self.received = 0  # authenticated packets and checks from the peer (the dialog's expiry)

    # -- the lifecycle table ------------------------------------------------------------
    def _transition(self, event: Input) -> None:
        new_state = TRANSITIONS.get((self.state, event))
        if new_state is None:
            raise TerminationError(f"access termination: {event.value} in state {self.state.value}")
        self.state = new_state

    # -- fields the native path repeats -------------------------------------------------
    def set_peer(self, peer: tuple[str, int] | None) -> None:
        self.peer = peer
        self.dest = None
        self.shell.route_changed()

    def set_dest(self, dest: tuple[str, int] | None) -> None:
        self.dest = dest
        self.shell.route_changed()

    def set_srtp(self, srtp: Any) -> None:
        if srtp is not self.srtp:
            self.ssrcs = set()  # a new session (or none) has no streams yet
            self.heard = set()
        self.srtp = srtp
        self.shell.route_changed()

    def latch(self, addr: tuple[str, int]) -> None:
        """Authenticated data came from ``addr``: count it; without ICE, it moves the peer (NAT rebinding)."""
        self.received += 1
        if self.peer != addr and not self.leg.spec.ice_lite:
            self.set_peer(addr)

    # -- datagrams in ---------------------------------------------------------------------
    def unprotect(self, data: bytes, addr: tuple[str, int], is_rtp: bool) -> bytes | None:
        """SRTP/SRTCP from the peer: the plain packet, or None (dropped and counted)."""
        srtp = self.srtp
        if srtp is None:
            self.dropped("dtls_failed" if self.state is State.FAILED else "not_established")
            return None
        if is_rtp and self.rtcp_only:
            self.dropped("unexpected")
            return None
        try:
            plain = srtp.unprotect_rtp(data) if is_rtp else srtp.unprotect_rtcp(data)
        except SrtpError as exc:
            self.dropped(exc.reason)
            return None
        counters = self.in_rtp if is_rtp else self.in_rtcp
        counters.packets += 1
        counters.bytes += len(data)
        self.received += 1
        if is_rtp:
            self.hear(plain)
        if self.peer != addr and not self.leg.spec.ice_lite:
            self.set_peer(addr)  # authenticated: latch (restart, NAT rebinding)
        return plain

    def hear(self, plain_rtp: bytes) -> None:
        """Remember the SSRC of an authenticated RTP packet from the peer (its ROC is kept)."""
        heard = self.heard
        ssrc = _SSRC.unpack_from(plain_rtp, 8)[0]
        if ssrc not in heard and len(heard) < self.max_ssrcs:
            heard.add(ssrc)

    def receive_stun(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        """A STUN message: answered (RFC 8445 2.5); a first valid check selects and may start a client."""
        self.in_stun.count(len(data))
        responder = self.responder
        before, dropped, rejected = responder.selected_address, responder.dropped, responder.rejected
        consent = responder.last_consent
        reply = responder.handle(data, addr, now)
        if responder.last_consent != consent:
            self.received += 1  # an authenticated check
        if responder.dropped != dropped:
            self.dropped("malformed")
        elif responder.rejected != rejected:
            self.dropped("stun_rejected")
        if reply is not None:
            self.shell.send(reply, addr)
            self.out_stun.count(len(reply))
        selected = self.responder.selected_address
        if selected is not None and selected != before:
            self.set_peer(selected)  # (and the cached destination is recomputed)
            self.consent_reported = False
            self.shell.changed()
            if self.pending_start:
                self.start_client(now)

    def receive_dtls(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        """A DTLS record: to the session (a ClientHello starts one as server)."""
        self.in_dtls.count(len(data))
        if self.state is State.FAILED or self.state is State.CLOSED:
            self.dropped("dtls_failed")
            return
        if self.dtls is None:
            if self.state is State.ESTABLISHED:
                # Restored from its keys: no session takes the record, and none starts (anyone can send a
                # ClientHello); a new association comes with a re-offer (RFC 8842 section 5): reset first.
                self.dropped("no_dtls_session")
                return
            if self.role is Role.CLIENT:
                self.dropped("not_established")
                return
            self.new_session(Role.SERVER, now)
        if self.peer is None or (self.state is not State.ESTABLISHED and not self.leg.spec.ice_lite):
            self.set_peer(addr)  # once established, only authenticated data moves the peer
        self.source = addr
        self.dtls.receive(data, now)  # type: ignore[union-attr]
        self.pump(now)

    # -- toward access ----------------------------------------------------------------------
    def check_consent(self, now: float) -> bool:
        """RFC 7675: False (and the ALG told once) when the peer's consent expired."""
        if self.responder.selected_address is None or not self.responder.consent_expired(now):
            return True
        if not self.consent_reported:
            self.consent_reported = True
            self.shell.report(EVENT_CONSENT_EXPIRED, None)
        return False

    def destination(self, now: float) -> tuple[str, int] | None:
        """Where to send toward the peer now; None (and a counted drop) if nowhere."""
        spec = self.leg.spec
        if spec.ice_lite:
            selected = self.responder.selected_address
            if not self.check_consent(now):
                self.dropped("consent_expired")
                return None
            if selected is not None:
                return selected
        if self.peer is not None:
            return self.peer
        if spec.remote_address and spec.remote_port and not self.leg.over_tcp:  # TCP: checked only
            if self.component == "rtp":
                return (spec.remote_address, spec.remote_port)
            return (spec.remote_address, spec.remote_rtcp_port or spec.remote_port + 1)
        self.dropped("no_peer")
        return None

    def route(self, now: float) -> tuple[str, int] | None:
        """:meth:`destination`, kept in :attr:`dest` until something it depends on changes."""
        dest = self.destination(now)
        if dest is not None:
            responder = self.responder
            if self.leg.spec.ice_lite and responder.selected_address is not None:
                if responder.last_consent is not None:
                    if not self.consent_armed:
                        self.consent_armed = True
                        self.shell.set_timer(Timer.CONSENT, responder.last_consent + responder.consent_timeout)
                    self.set_dest(dest)
            else:
                self.set_dest(dest)
        return dest

    def forget_route(self) -> None:
        """Something the destination depends on changed (spec, ICE selection, association)."""
        self.set_dest(None)

    def protect(self, data: bytes, is_rtp: bool, now: float) -> bytes | None:
        """Plain RTP/RTCP toward the peer: protected (send it to :attr:`dest`), or None (dropped, counted)."""
        srtp = self.srtp
        if srtp is None:
            self.dropped("dtls_failed" if self.state is State.FAILED else "not_established")
            return None
        if self.dest is None and self.route(now) is None:
            return None
        ssrc = _SSRC.unpack_from(data, 8 if is_rtp else 4)[0]
        if ssrc not in self.ssrcs and not self.admit_ssrc(ssrc):
            return None
        try:
            out = srtp.protect_rtp(data) if is_rtp else srtp.protect_rtcp(data)
        except SrtpError as exc:
            self.dropped(exc.reason)
            return None
        counters = self.out_rtp if is_rtp else self.out_rtcp
        counters.packets += 1
        counters.bytes += len(out)
        return out

    def admit_ssrc(self, ssrc: int) -> bool:
        """A new SSRC toward the peer: each costs libsrtp a stream until the session ends; capped.

        On a restored session its SRTCP index starts past the margin (``SrtpTransformer.admit``).
        """
        if len(self.ssrcs) >= self.max_ssrcs:
            self.dropped("too_many_ssrcs")
            return False
        self.ssrcs.add(ssrc)
        self.srtp.admit(ssrc)
        self.shell.route_changed()
        return True

    def send_application_data(self, data: bytes, now: float) -> None:
        if self.state is not State.ESTABLISHED or self.dtls is None:
            self.dropped("dtls_failed" if self.state is State.FAILED else "not_established")
            return
        self.dtls.send_application_data(data)
        self.pump(now)

    # -- the DTLS association -------------------------------------------------------------
    def new_session(self, role: Role, now: float) -> None:
        srtp = self.leg.dtls_srtp if self.offer_srtp is None else self.offer_srtp
        self.dtls = DtlsSession(self.certificate, role, srtp=srtp,
                                remote_fingerprints=self.leg.spec.remote_fingerprints or None,
                                handshake_timeout=self.handshake_timeout, now=now)
        self._transition(Input.SESSION)
        self.role = role
        self.failure = None
        self.started_at = now
        if self.srtp is not None:
            self.set_srtp(None)
        self.keys = None

    def start_client(self, now: float) -> None:
        """Establish (D)TLS session IE: start once the peer's address is known.

        With ICE (the ALG's ``ice_lite``), known means checked: the first
        ClientHello goes to the address of a valid STUN check whose consent
        holds, never to the SDP address before (RFC 8445 section 12; RFC 7675).
        A ClientHello sent early reaches a client that may still hold it when
        the call is set up again with the same offer (an INVITE retried after a
        407): it answers that stale hello on the new association, whose own
        hello had another random, and the handshake fails ("bad signature").
        """
        if self.leg.spec.ice_lite and (self.responder.selected_address is None or not self.check_consent(now)):
            self.role = Role.CLIENT
            self.pending_start = True  # (no OpenSSL connection until then: ~80 KiB each while it handshakes)
            if not self.ice_armed:  # the handshake must still be done in the handshake timeout
                self.ice_armed = True
                self.shell.set_timer(Timer.ICE, now + self.handshake_timeout)
            return
        self._cancel_ice()
        if self.dtls is None or self.dtls.state != "new":
            self.new_session(Role.CLIENT, now)
        if self.destination(now) is None:
            self.pending_start = True
            return
        self.pending_start = False
        self.dtls.start(now)  # type: ignore[union-attr]
        self.pump(now)

    def may_start(self) -> bool:
        """A client start scheduled earlier still applies (not reconfigured, failed or started meanwhile)."""
        if self.role is not Role.CLIENT or self.state in (State.ESTABLISHED, State.FAILED, State.CLOSED):
            return False
        return self.dtls is None or self.dtls.state == "new"

    def set_remote_fingerprints(self, fingerprints, now: float) -> None:
        if self.dtls is not None and fingerprints and self.state is State.HANDSHAKING:
            self.dtls.set_remote_fingerprints(list(fingerprints), now)
            self.pump(now)

    def pump(self, now: float) -> None:
        """Send what the session has to send, act on its events, re-arm its timer."""
        dtls = self.dtls
        if dtls is None:
            return
        datagrams = dtls.datagrams_to_send()
        if datagrams:
            dest = self.destination(now)
            if dest is not None:
                out = self.out_dtls
                for datagram in datagrams:
                    self.shell.send(datagram, dest)
                    out.count(len(datagram))
        while True:
            event = dtls.next_event()
            if event is None:
                break
            if isinstance(event, HandshakeComplete):
                self._established(event, now)
            elif isinstance(event, HandshakeFailed):
                role = self.role.value if self.role else "server"
                reason = event.reason if event.reason in _REASONS else "protocol_error"
                self.metrics.handshakes.labels(role, reason).inc()
                self.fail(reason)
            elif isinstance(event, Closed):
                self._transition(Input.PEER_CLOSED)
                if not self.leg.dtls_srtp:
                    self.set_srtp(None)
                self.shell.changed()
            self.shell.handle_event(event)
        self._arm_dtls_timer()

    def _established(self, event: HandshakeComplete, now: float) -> None:
        self._transition(Input.HANDSHAKE_DONE)
        role = self.role.value if self.role else "server"
        self.metrics.handshakes.labels(role, "ok").inc()
        if self.started_at is not None:
            self.metrics.handshake_seconds.labels(role).observe(now - self.started_at)
        if event.srtp_keys is not None:
            self.keys = event.srtp_keys
            self.set_srtp(self.shell.new_srtp(event.srtp_keys))
        self.shell.report(EVENT_DTLS_ESTABLISHED, None)

    def fail(self, reason: str) -> None:
        """Tear the association down: nothing is relayed for this port any more."""
        self._transition(Input.FAIL)
        self.failure = reason
        self.set_srtp(None)
        self.keys = None
        self.pending_start = False
        dtls = self.dtls
        if dtls is not None:
            dtls.close()
            datagrams = dtls.datagrams_to_send()
            if self.peer is not None:
                for datagram in datagrams:
                    self.shell.send(datagram, self.peer)
        self.cancel_timers()
        self.shell.report(EVENT_DTLS_FAILED, reason)

    def _arm_dtls_timer(self) -> None:
        self.cancel_timers()
        if self.dtls is None or self.state is State.FAILED or self.state is State.CLOSED:
            return
        when = self.dtls.timeout()
        if when is not None:
            self.shell.set_timer(Timer.DTLS, when)

    def _cancel_ice(self) -> None:
        if self.ice_armed:
            self.ice_armed = False
            self.shell.set_timer(Timer.ICE, None)

    def cancel_timers(self) -> None:
        """The DTLS and ICE timers (the consent timer follows the cached destination)."""
        self.shell.set_timer(Timer.DTLS, None)
        self._cancel_ice()

    # -- timers ---------------------------------------------------------------------------
    def timer_expired(self, timer: Timer, now: float) -> None:
        if timer is Timer.DTLS:
            if self.dtls is not None:
                self.dtls.handle_timeout(now)
                self.pump(now)
        elif timer is Timer.ICE:
            self.ice_armed = False
            # No valid check in the handshake timeout: the handshake failed (timeout), as it would had it
            # been started (the ALG is told, and ends the call).
            if self.pending_start and self.dtls is None and self.state is State.NEW:
                self.metrics.handshakes.labels("client", "timeout").inc()
                self.fail("timeout")
        else:
            self.consent_armed = False
            responder = self.responder
            last = responder.last_consent
            if self.dest is not None and last is not None and not responder.consent_expired(now):
                self.consent_armed = True  # a newer check moved the deadline
                self.shell.set_timer(Timer.CONSENT, last + responder.consent_timeout)
            else:
                self.set_dest(None)  # the next packet runs the full check (drop, report once)

    # -- from the ALG and from storage ----------------------------------------------------
    def restore(self, keys: SrtpKeys, peer: tuple[str, int] | None, rocs: dict[str, Any] | None = None,
                srtcp: dict[str, Any] | None = None) -> None:
        """Continue an association from stored SRTP keys, rollover counters and SRTCP indices (restart:
        no new handshake)."""
        srtp = self.shell.new_srtp(keys)
        srtp.restore_rocs(rocs)  # before its first packet (ValueError: a malformed document)
        srtp.restore_srtcp(srtcp)
        self._transition(Input.RESTORE)
        self.keys = keys
        self.set_srtp(srtp)
        self.ssrcs.update(int(ssrc) for ssrc in (srtcp or {}))  # admitted before: their indices go on
        self.set_peer(peer)

    def restore_failure(self, reason: str) -> None:
        """A stored failed association: nothing is relayed."""
        self._transition(Input.FAIL)
        self.failure = reason

    def reset(self) -> list[bytes]:
        """A new association is asked for: forget this one; returns its closing datagrams (to the peer)."""
        self.cancel_timers()
        self.forget_route()
        datagrams: list[bytes] = []
        if self.dtls is not None:
            self.dtls.close()
            datagrams = self.dtls.datagrams_to_send()
        self._transition(Input.RESET)
        self.dtls = None
        self.set_srtp(None)
        self.keys = None
        self.failure = None
        return datagrams

    def close(self) -> None:
        """The port closes: a close_notify to the peer if established; nothing written to the native path."""
        self.cancel_timers()
        if self.consent_armed:
            self.consent_armed = False
            self.shell.set_timer(Timer.CONSENT, None)
        self.dest = None
        dtls, established = self.dtls, self.state is State.ESTABLISHED
        self._transition(Input.CLOSE)
        self.dtls = None
        self.srtp = None
        if dtls is not None and established:
            dtls.close()
            datagrams = dtls.datagrams_to_send()
            if self.peer is not None:
                for datagram in datagrams:
                    self.shell.send(datagram, self.peer)
