"""DTLS-SRTP over TCP on the access side (TCP-1, TCP-2, TCP-4; TS 23.334 clause 5.11.2.5).

Implements the AGW's part of RFC 6544 (ICE-TCP) as an ICE-lite agent: one
passive host candidate on the access address and the same port number as the
UDP access port; RFC 4571 section 2 framing of everything on the connection
(STUN, RFC 6544 section 3; DTLS and SRTP/SRTCP); RFC 7850 media
(``TCP/DTLS/RTP/SAVP(F)``: RTP and RTCP muxed on the one connection, RFC 5761)
keyed by RFC 5764 DTLS-SRTP with the same certificate and fingerprint as UDP
(TCP-2).  Toward the core nothing changes: plain RTP/RTCP over UDP (TCP-4).

Theory of operation
-------------------
Which streams listen: :func:`wants_tcp` — every ``srtp_tcp`` stream, and an
``srtp`` stream with rtcp-mux whose WIC offered TCP candidates.  Only the RTP
channel (component 1) listens.

:class:`TcpGate` is the sans-IO part: admission and framing of one connection.
It is a table (:data:`TRANSITIONS`)::

    unchecked --STUN frame--> (the shell asks the ICE-lite responder) --
        valid check --> accepted
        rejected check (400/401, answered) --> closed "unauthenticated"
    unchecked --any other frame--> closed "not_stun"
    unchecked --frame announced longer than MAX_CHECK_FRAME--> closed "oversized"
    unchecked --no valid check within the check timeout--> closed "idle_timeout"
    accepted --frame of no RFC 7983 kind (framing lost)--> closed "unknown_frame"
    accepted --nothing received for the idle timeout--> closed "idle_timeout"
    any --peer closed / listener closed--> closed

The shells: a :class:`TcpListener` per listening channel (the asyncio server,
its connections, at most :data:`MAX_UNCHECKED` unchecked ones and one accepted
one at a time: the first whose check authenticates); a :class:`TcpConnection`
(asyncio Protocol) per connection, which feeds the gate and hands each frame to
the channel's existing pipeline steps (``stun_in``, ``dtls_in``, ``media_in``
of ``mediad.core.relay``): a frame is a datagram.  The channel's ``transport``
becomes an :class:`AccessTransport` that sends to a :class:`TcpPeer` address
framed over its connection and to any other address over UDP, so the DTLS
driving, SRTP and ICE code is shared with UDP unchanged.  Who gets media is
still ICE's choice (the responder's selected address): a check over TCP with
USE-CANDIDATE moves the stream onto TCP, as a candidate pair switch would.

When the accepted connection closes, its address is deselected; the DTLS
association and SRTP keys stay (the WIC's ICE agent may reconnect, and DTLS
runs over the ICE transport, not over one connection); a DTLS client whose
handshake had not begun starts on the next accepted connection.

Sending: a frame that would grow the connection's write buffer beyond
:data:`MAX_WRITE_BUFFER` is dropped ("congested"): real-time media does not
queue behind a stalled TCP window.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

from sdp_rules.errors import UsageError

from mediad.proto import demux
from mediad.proto.framing import Deframer, frame

if TYPE_CHECKING:
    from mediad.core.relay import AccessChannel

log = logging.getLogger("mediad.tcp")

# A Binding request with ICE attributes is ~100-200 bytes; the first frame may not be larger.
MAX_CHECK_FRAME = 1280
MAX_UNCHECKED = 8  # unchecked connections per listener at once
MAX_WRITE_BUFFER = 256 * 1024
LISTEN_BACKLOG = 16

UNCHECKED, ACCEPTED, CLOSED = "unchecked", "accepted", "closed"
CHECK, PASS, CLOSE = "check", "pass", "close"

# (state, input) -> (action, next state); anything else closes the connection.
TRANSITIONS: dict[tuple[str, str], tuple[str, str]] = {
    (UNCHECKED, "stun"): (CHECK, UNCHECKED),
    (UNCHECKED, "check_ok"): (PASS, ACCEPTED),
    (UNCHECKED, "check_failed"): (CLOSE, CLOSED),
    (ACCEPTED, "stun"): (PASS, ACCEPTED),
    (ACCEPTED, "dtls"): (PASS, ACCEPTED),
    (ACCEPTED, "rtp"): (PASS, ACCEPTED),
    (ACCEPTED, "rtcp"): (PASS, ACCEPTED),
}
# Why a frame of a kind closes a connection in a state (the table's misses).
_CLOSE_REASONS = {UNCHECKED: "not_stun", ACCEPTED: "unknown_frame"}


def wants_tcp(kind: str, spec: Any) -> bool:
    """Does an access termination of this stream kind listen on TCP too (RFC 6544, RFC 7850)?"""
    if kind == "srtp_tcp":
        return True
    if kind != "srtp" or not spec.rtcp_mux:  # over TCP, RTCP is muxed: component 1 only
        return False
    return offers_tcp(spec.remote_candidates)


def offers_tcp(candidates: list[str]) -> bool:
    """Did the peer offer TCP candidates (RFC 6544 section 4.5: ``<foundation> <component> TCP ...``)?

    A transport (RFC 9143: RTP and RTCP always muxed) listens on TCP too when
    its peer did.
    """
    return any(len(c.split()) > 2 and c.split()[2].lower() == "tcp" for c in candidates)


class TcpPeer(tuple):
    """The address of a peer reached over an accepted access TCP connection (not a UDP address)."""

    __slots__ = ()

    def __new__(cls, addr) -> "TcpPeer":
        return super().__new__(cls, (addr[0], addr[1]))


class TcpGate:
    """Admission and framing of one access TCP connection, without I/O; see the module doc."""

    def __init__(self, now: float, check_timeout: float, idle_timeout: float) -> None:
        self.deframer = Deframer()
        self.state = UNCHECKED
        self.reason: str | None = None
        self.check_timeout = check_timeout
        self.idle_timeout = idle_timeout
        self.opened_at = now
        self.last_received = now

    def receive(self, data: bytes, now: float) -> list[tuple[demux.Kind, bytes]]:
        """Bytes in, ``(kind, frame)`` out; stops (state closed, ``reason`` set) at the first bad frame.

        While unchecked, the caller must conclude the STUN check of each frame
        (:meth:`checked`) before it looks at the next one: frames after a
        failed check are not processed.
        """
        if self.state == CLOSED:
            return []
        self.last_received = now
        frames = [(demux.classify(packet), packet) for packet in self.deframer.feed(data)]
        if self.state == UNCHECKED:
            if any(len(packet) > MAX_CHECK_FRAME for _, packet in frames[:1]):
                return self._close("oversized")
            if not frames and (self.deframer.next_length or 0) > MAX_CHECK_FRAME:
                return self._close("oversized")
        return frames

    def frame(self, kind: demux.Kind) -> str:
        """The action for one frame: CHECK (a STUN check to conclude), PASS (to the pipeline) or CLOSE."""
        if self.state == CLOSED:
            return CLOSE
        entry = TRANSITIONS.get((self.state, kind.value))
        if entry is None:
            self._close(_CLOSE_REASONS[self.state])
            return CLOSE
        return entry[0]

    def checked(self, ok: bool) -> None:
        """The verdict of the ICE-lite responder on the pending check."""
        if self.state != UNCHECKED:
            return
        action, state = TRANSITIONS[(UNCHECKED, "check_ok" if ok else "check_failed")]
        if state == CLOSED:
            self._close("unauthenticated")
        else:
            self.state = state

    def deadline(self) -> float | None:
        """When :meth:`expire` must be called (caller's clock), None once closed."""
        if self.state == UNCHECKED:
            return self.opened_at + self.check_timeout
        if self.state == ACCEPTED:
            return self.last_received + self.idle_timeout
        return None

    def expire(self, now: float) -> bool:
        """Close the connection if its time is over; True if it did."""
        deadline = self.deadline()
        if deadline is not None and now >= deadline:
            self._close("idle_timeout")
            return True
        return False

    def close(self, reason: str | None = None) -> None:
        if self.state != CLOSED:
            self._close(reason)

    def _close(self, reason: str | None) -> list:
        self.state = CLOSED
        self.reason = reason
        return []


class TcpConnection(asyncio.Protocol):
    """One access TCP connection: a thin shell around :class:`TcpGate` and the channel's pipeline."""

    def __init__(self, listener: "TcpListener") -> None:
        self.listener = listener
        self.channel = listener.channel
        self.metrics = listener.metrics
        self.loop = listener.loop
        self.transport: asyncio.Transport | None = None
        self.peer: TcpPeer | None = None
        self.gate = TcpGate(self.loop.time(), listener.check_timeout, listener.idle_timeout)
        self.timer: asyncio.TimerHandle | None = None
        self.was_accepted = False
        self.closing = False

    # -- asyncio ----------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.peer = TcpPeer(transport.get_extra_info("peername"))
        self.metrics.tcp_connections_active.inc()
        if not self.listener.admit(self, self.peer):
            self.close("busy")
            return
        self.arm_timer()

    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        try:
            gate = self.gate
            for kind, packet in gate.receive(data, self.loop.time()):
                action = gate.frame(kind)
                if action == PASS:
                    self.deliver(kind, packet)
                elif action == CHECK:
                    self.check(packet)
                if gate.state == CLOSED or self.transport is None:
                    break
            if gate.state == CLOSED:
                self.close(gate.reason)
        except Exception as exc:  # a connection never takes the daemon down
            self.metrics.dropped("unexpected")
            log.debug("access TCP %s: closing after %r", self.peer, exc, exc_info=True)
            self.close(None)

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        self.gate.close()
        self.cancel_timer()
        if self.transport is not None:
            self.transport = None
            self.metrics.tcp_connections_active.dec()
        self.listener.lost(self)

    # -- the pipeline ----------------------------------------------------------------
    def check(self, packet: bytes) -> None:
        """The first frame: a STUN check that must authenticate (RFC 6544 section 7.2, RFC 8445 7.3)."""
        if self.listener.active is not None:
            self.close("busy")
            return
        responder = self.channel.responder
        answered = responder.answered
        self.channel.stun_in(packet, self.peer)  # the answer goes back framed on this connection
        ok = responder.answered != answered
        self.gate.checked(ok)
        if ok:
            self.was_accepted = True
            self.listener.accepted(self)
            self.arm_timer()

    def deliver(self, kind: demux.Kind, packet: bytes) -> None:
        channel = self.channel
        if kind is demux.RTP or kind is demux.RTCP:
            channel.media_in(packet, self.peer, kind)
        elif kind is demux.DTLS:
            channel.dtls_in(packet, self.peer)
        else:
            channel.stun_in(packet, self.peer)

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self.gate.state == CLOSED:
            self.metrics.dropped("send_error")
            return
        if transport.get_write_buffer_size() + len(data) > MAX_WRITE_BUFFER:
            self.metrics.tcp_error["congested"].inc()
            self.metrics.dropped("send_error")
            return
        transport.write(frame(data))

    # -- timers and closing ------------------------------------------------------------
    def arm_timer(self) -> None:
        self.cancel_timer()
        deadline = self.gate.deadline()
        if deadline is not None:
            self.timer = self.loop.call_at(deadline, self.on_timer)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def on_timer(self) -> None:
        self.timer = None
        if self.gate.expire(self.loop.time()):
            self.close(self.gate.reason)
        else:
            self.arm_timer()

    def close(self, reason: str | None) -> None:
        """Close the connection (once); ``reason`` (an error) is counted; never accepted: rejected."""
        if self.closing:
            return
        self.closing = True
        self.gate.close(reason)
        self.cancel_timer()
        if reason is not None:
            self.metrics.tcp_error[reason].inc()
            log.debug("access TCP %s on port %d closed: %s", self.peer, self.listener.port, reason)
        if not self.was_accepted:
            self.metrics.tcp_result["rejected"].inc()
        if self.transport is not None:
            self.transport.close()


class TcpListener:
    """The passive ICE-TCP candidate of one access channel: a listening socket and its connections."""

    def __init__(self, channel: "AccessChannel", port: int) -> None:
        owner = channel.owner
        self.channel = channel
        self.port = port
        self.metrics = owner.metrics
        self.loop = owner.loop
        self.check_timeout = owner.config.mediad_dtls_handshake_timeout
        self.idle_timeout = owner.config.mediad_consent_timeout
        self.server: asyncio.AbstractServer | None = None
        self.connections: dict[TcpPeer, TcpConnection] = {}
        self.active: TcpConnection | None = None

    async def start(self, sock: socket.socket) -> None:
        self.server = await self.loop.create_server(
            lambda: TcpConnection(self), sock=sock, backlog=LISTEN_BACKLOG)

    def admit(self, connection: TcpConnection, peer: TcpPeer) -> bool:
        unchecked = sum(1 for c in self.connections.values() if c.gate.state == UNCHECKED)
        if self.server is None or unchecked >= MAX_UNCHECKED:
            return False
        self.connections[peer] = connection
        return True

    def accepted(self, connection: TcpConnection) -> None:
        self.active = connection
        self.metrics.tcp_result["accepted"].inc()
        log.debug("access TCP %s accepted on port %d", connection.peer, self.port)

    def lost(self, connection: TcpConnection) -> None:
        if self.connections.get(connection.peer) is connection:  # type: ignore[arg-type]
            del self.connections[connection.peer]  # type: ignore[arg-type]
        if self.active is connection:
            self.active = None
            channel = self.channel
            channel.responder.forget(connection.peer)  # the next valid check selects again
            channel.forget_route()
            if channel.peer == connection.peer:
                channel.peer = None

    def send(self, data: bytes, peer: TcpPeer) -> None:
        connection = self.connections.get(peer)
        if connection is None:
            self.metrics.dropped("no_peer")
        else:
            connection.send(data)

    def close(self) -> None:
        """Stop listening and close every connection (release, stop)."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for connection in list(self.connections.values()):
            connection.close(None)
        self.connections.clear()
        self.active = None


class AccessTransport:
    """The channel's transport once it listens on TCP too: TcpPeer → framed on TCP, else UDP."""

    def __init__(self, udp: asyncio.DatagramTransport, listener: TcpListener) -> None:
        self.udp = udp
        self.listener = listener

    def sendto(self, data: bytes, addr) -> None:
        if type(addr) is TcpPeer:
            self.listener.send(data, addr)
        else:
            self.udp.sendto(data, addr)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.udp.get_extra_info(name, default)

    def close(self) -> None:
        self.listener.close()
        self.udp.close()


async def listen(channel: "AccessChannel", sock: socket.socket) -> TcpListener:
    """Listen on ``sock`` (bound on the channel's port number) for the channel's ICE-TCP peer."""
    if channel.transport is None:
        raise UsageError(f"access port {channel.port}: ICE-TCP listened for before its UDP socket is open")
    listener = TcpListener(channel, channel.port)
    await listener.start(sock)
    channel.transport = AccessTransport(channel.transport, listener)  # type: ignore[assignment]
    return listener
