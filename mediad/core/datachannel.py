"""Data-channel terminations: the association leg and one bridge per channel.

Implements the AGW side of TS 23.334 clause 5.20.2.2 (DC-10..DC-13) with
RFC 8831 (data channels), RFC 8864 (SDP-negotiated channels), RFC 8865 (T.140
over a data channel) ↔ RFC 4103 (T.140 in RTP), and RFC 8873 (MSRP over a data
channel) ↔ RFC 4975 / RFC 6714 (MSRP over TCP).

Theory of operation
-------------------
The ownership tree (``mediad.core.session``) grows one level::

    dialog → stream "sctp" → SctpAccessLeg (one access port, ICE-lite, DTLS)
                                 → SctpAssociation (mediad.core.sctp) → data channels
           → stream "dc_channel" → ChannelAccessLeg (its dcmap; no port)
                                 → T140CoreLeg (UDP RTP[/RTCP] ports) or
                                   MsrpCoreLeg (one TCP port)

A ``dc_channel`` stream is linked to its association by ``group`` (the id of
the ``sctp`` stream).  Its :class:`ChannelAccessLeg` *attaches* to the
association leg, which opens a negotiated channel on the SCTP stream id of the
dcmap on whatever association is current: at once when one runs (a MODIFY
adding channels to a running association: no new DTLS, no new SCTP, DC-11),
else when the next one starts; a new tls-id (new DTLS association) re-opens
every attached channel on the new SCTP association.

Per channel, both directions are one call each::

    data channel message ─► ChannelAccessLeg.from_access ─► core.from_access
        T.140: UTF-8 text → RTP t140 packets (mediad.proto.t140) → core UDP peer
        MSRP:  the MSRP message bytes, unchanged → core TCP connection
    core ─► core leg ─► ChannelAccessLeg.send ─► data channel message
        T.140: RTP (t140 or red primary) → text → one string message
        MSRP:  TCP stream cut at message end lines (mediad.proto.msrp) → one binary message

Decisions where the specifications leave a choice:

* SCTP start: the AGW sends INIT when it is DTLS client or told "Establish
  SCTP association" (simultaneous-open emulation, TS 23.334 NOTE 3); as DTLS
  server it waits for the WIC's INIT.
* MSRP TCP setup (RFC 6135 / RFC 4145, CEMA RFC 6714): the AGW always
  listens on its core port (it is the port in the ``a=path`` the ALG put
  toward the core); when the core termination carries a ``remote_port`` (the
  ALG decided the AGW is ``active``) it also connects to it, a few times if
  refused.  One connection per channel: a second one is closed.  Paths are not
  rewritten: with CEMA each endpoint matches the session by session-id, which
  the ALG keeps identical on both sides.
* MSRP messages go to the WIC as binary messages (PPID 53, they may carry
  any bytes), T.140 as string messages (PPID 51, RFC 8865 section 4.1);
  both are accepted either way from the WIC.
* Until a channel is open or its TCP connection is up, up to
  :data:`MAX_PENDING` messages wait; more are dropped and counted.
* A stream reset by the WIC (DC-13): aiortc answers it (and resets our
  direction); the ALG gets ``sctp_stream_reset`` with the channel's Iq stream
  id and ``sctp_stream_id``; the core side stops: the MSRP connection and
  listener close, T.140 stops relaying.  The ports stay reserved until the ALG
  releases the stream.

Restart: ports, ICE credentials and specs are restored; SCTP and DTLS state
are not, so the association needs a new DTLS handshake (re-INVITE with a new
tls-id), after which every channel re-opens on the new association.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from typing import TYPE_CHECKING, Any

from aiortc.exceptions import InvalidStateError

from iq import EVENT_SCTP_STREAM_RESET, Role, TerminationReply, TerminationSpec
from sdp_rules.errors import UsageError

from mediad.proto.iqcodec import E_MALFORMED, ControlError
from mediad.proto.dtls import ApplicationData, Closed, HandshakeComplete, HandshakeFailed
from mediad.proto.msrp import MsrpFramer, MsrpFramingError
from mediad.core.relay import AccessChannel
from mediad.core.sctp import DEFAULT_SCTP_PORT, ESTABLISHED, SctpAssociation
from mediad.core.session import AccessLeg, _merge_access
from mediad.proto.t140 import DEFAULT_T140_PT, T140Depacketizer, T140Packetizer

if TYPE_CHECKING:
    from mediad.core.session import Stream

log = logging.getLogger("mediad.datachannel")

KINDS = ("sctp", "dc_channel")
MAX_PENDING = 256
CONNECT_ATTEMPTS = 5
CONNECT_RETRY_SECONDS = 0.2
_SCTP_FIELDS = ("remote_sctp_port", "remote_max_message_size")


# -- what the daemon calls ---------------------------------------------------------------
async def add_access(daemon, stream: "Stream", spec: TerminationSpec) -> None:
    if stream.kind == "sctp":
        sock = daemon.access_pool.allocate(1)[0]
        leg = SctpAccessLeg(stream, spec)
        await _bind_access(daemon, leg, sock)
    else:
        stream.access = ChannelAccessLeg(stream, spec)
        daemon.metrics.terminations["access"].inc()


async def add_core(daemon, stream: "Stream", spec: TerminationSpec) -> None:
    if stream.kind != "dc_channel":
        raise ControlError(E_MALFORMED, f"stream {stream.stream_id}: an SCTP association has no core termination")
    if _is_tcp(spec):
        leg: MsrpCoreLeg | T140CoreLeg = MsrpCoreLeg(stream, spec)
        await leg.listen(daemon.core_pool.allocate(1, kind=socket.SOCK_STREAM)[0])
    else:
        leg = T140CoreLeg(stream, spec)
        count = 1 if spec.rtcp_mux else 2
        await leg.bind(daemon.core_pool.allocate(count, even=True))
    stream.core = leg
    daemon.metrics.terminations["core"].inc()
    leg.configure()


async def restore_access(daemon, stream: "Stream", adoc: dict[str, Any]) -> None:
    spec = TerminationSpec.from_dict(adoc["spec"])
    if stream.kind == "sctp":
        sock = daemon.access_pool.claim(int(adoc["channels"]["rtp"]["port"]))
        leg = SctpAccessLeg(stream, spec, (adoc["ice_ufrag"], adoc["ice_pwd"]))
        await _bind_access(daemon, leg, sock)
    else:
        stream.group = adoc.get("group")
        stream.access = ChannelAccessLeg(stream, spec)
        daemon.metrics.terminations["access"].inc()


async def restore_core(daemon, stream: "Stream", cdoc: dict[str, Any]) -> None:
    spec = TerminationSpec.from_dict(cdoc["spec"])
    ports = cdoc["ports"]
    if _is_tcp(spec):
        leg: MsrpCoreLeg | T140CoreLeg = MsrpCoreLeg(stream, spec)
        await leg.listen(daemon.core_pool.claim(int(ports["tcp"]), kind=socket.SOCK_STREAM))
    else:
        leg = T140CoreLeg(stream, spec)
        await leg.bind([daemon.core_pool.claim(int(ports[c])) for c in ("rtp", "rtcp") if c in ports])
        leg.latched = tuple(cdoc["latched"]) if cdoc.get("latched") else None
    stream.core = leg
    daemon.metrics.terminations["core"].inc()
    leg.configure()


async def _bind_access(daemon, leg: "SctpAccessLeg", sock: socket.socket) -> None:
    leg.stream.access = leg
    daemon.metrics.terminations["access"].inc()
    leg.rtp = SctpAccessChannel(leg, sock.getsockname()[1], "rtp")
    await daemon.loop.create_datagram_endpoint(lambda: leg.rtp, sock=sock)


def _is_tcp(spec: TerminationSpec) -> bool:
    return spec.transport.upper().startswith("TCP")


# -- the association ------------------------------------------------------------------
class SctpAccessChannel(AccessChannel):
    """The association's access port: DTLS application data is SCTP (RFC 8261)."""

    leg: "SctpAccessLeg"

    def __init__(self, leg: "SctpAccessLeg", port: int, component: str) -> None:
        """As for DTLS-SRTP, but the SRTP keys the handshake exports are dropped.

        WebRTC peers negotiate ``use_srtp`` (RFC 5764) on a data-only DTLS
        association too (aiortc refuses a handshake without it; browsers offer
        it), so the session offers and accepts it like an SRTP one.
        """
        super().__init__(leg, port, component)
        self.term.offer_srtp = True

    def handle_event(self, event) -> None:
        if isinstance(event, ApplicationData):
            self.t[("access", "in", "sctp")].count(len(event.data))
            self.received += 1
            if self.source is not None and not self.leg.spec.ice_lite:
                self.peer = self.source  # authenticated: latch (NAT rebinding)
            self.leg.association.receive(event.data)
            return
        super().handle_event(event)
        if isinstance(event, HandshakeComplete):
            self.srtp = self.keys = None  # no SRTP on this association: nothing to keep or store
            self.leg.dtls_up(self)
        elif isinstance(event, (HandshakeFailed, Closed)):
            self.leg.association.dtls_lost()

    def close(self) -> None:
        self.leg.association.close()
        super().close()


class SctpAccessLeg(AccessLeg):
    """The ``sctp`` stream's access termination: one port, DTLS, the SCTP association."""

    rtp: SctpAccessChannel | None

    def __init__(self, stream: "Stream", spec: TerminationSpec, ice: tuple[str, str] | None = None) -> None:
        super().__init__(stream, spec, ice)
        self.owner = stream.dialog.owner
        self.bridges: dict[int, ChannelAccessLeg] = {}  # SCTP stream id → channel leg
        self.association = self._new_association()
        self.dtls_up_at: float | None = None

    def _new_association(self) -> SctpAssociation:
        return SctpAssociation(self.send_sctp, local_port=DEFAULT_SCTP_PORT, on_reset=self.streams_reset,
                               on_state=self.association_state)

    # DTLS below
    def send_sctp(self, packet: bytes) -> None:
        channel = self.rtp
        if channel is None:
            self.owner.metrics.dropped("not_established")
            return
        channel.t[("access", "out", "sctp")].count(len(packet))
        channel.send_application_data(packet)

    def dtls_up(self, channel: AccessChannel) -> None:
        spec = self.spec
        role = channel.role or Role.SERVER
        self.dtls_up_at = self.owner.loop.time()
        self.association.start(role, remote_port=spec.remote_sctp_port,
                               remote_max_message_size=spec.remote_max_message_size,
                               initiate=spec.establish_sctp or role is Role.CLIENT)

    def association_state(self, state: str) -> None:
        if state == ESTABLISHED and self.dtls_up_at is not None:
            elapsed = self.owner.loop.time() - self.dtls_up_at
            self.owner.metrics.sctp_setup_seconds.observe(elapsed)
            log.info("dialog %s stream %d: SCTP association established in %.1f ms",
                     self.stream.dialog.id, self.stream.stream_id, elapsed * 1000)
        self.owner.changed(self.stream.dialog)

    def streams_reset(self, stream_ids: list[int]) -> None:
        """The WIC reset these SCTP streams (aiortc answered): tell the ALG (DC-13)."""
        for stream_id in stream_ids:
            bridge = self.bridges.get(stream_id)
            target = bridge.stream if bridge is not None else self.stream
            self.owner.event(target, EVENT_SCTP_STREAM_RESET, None, "sctp", sctp_stream_id=stream_id)
            if bridge is not None:
                bridge.peer_reset()

    # the channels
    def attach(self, bridge: "ChannelAccessLeg") -> None:
        stream_id = bridge.dcmap.stream_id
        other = self.bridges.get(stream_id)
        if other is not None and other is not bridge:
            other.detach()
        self.bridges[stream_id] = bridge
        bridge.bind(self.association)

    def detach(self, bridge: "ChannelAccessLeg") -> None:
        stream_id = bridge.dcmap.stream_id
        if self.bridges.get(stream_id) is bridge:
            del self.bridges[stream_id]
            self.association.close_channel(stream_id)

    # the Iq interface
    def reply(self, address: str) -> TerminationReply:
        reply = super().reply(address)
        reply.local_sctp_port = self.association.local_port
        reply.local_max_message_size = self.owner.config.mediad_sctp_max_message_size
        return reply

    def apply(self, spec: TerminationSpec) -> list[int]:
        for name in _SCTP_FIELDS:
            if getattr(spec, name) is None:
                setattr(spec, name, getattr(self.spec, name))
        spec.establish_sctp = spec.establish_sctp or self.spec.establish_sctp
        return super().apply(spec)

    def reset_association(self) -> None:
        """New tls-id: a new DTLS and SCTP association; the channels move to it."""
        super().reset_association()
        self.association.close()
        self.association = self._new_association()
        for bridge in list(self.bridges.values()):
            bridge.bind(self.association)

    def document(self) -> dict[str, Any]:
        doc = super().document()
        doc["sctp"] = {"state": self.association.state, "stream_ids": sorted(self.bridges)}
        return doc


# -- one data channel -----------------------------------------------------------------
class ChannelAccessLeg:
    """A ``dc_channel`` stream's access side: one negotiated data channel, no port."""

    port = None  # rides on the association's port: nothing to give back to the pool

    def __init__(self, stream: "Stream", spec: TerminationSpec) -> None:
        self.stream = stream
        self.spec = spec
        self.dcmap = spec.dcmap
        self.owner = stream.dialog.owner
        self.channel = None
        self.association: SctpAssociation | None = None
        self.pending: deque = deque()
        self.reset = False
        self.closed = False
        self.owner.metrics.data_channels_active.inc()

    # A channel's traffic is its association's: counted on the sctp stream's access channel.
    received = 0

    def channels(self) -> list["ChannelAccessLeg"]:
        return [self]

    def sctp_leg(self) -> SctpAccessLeg | None:
        dialog = self.stream.dialog
        group = getattr(self.stream, "group", None)
        candidates = [dialog.streams.get(group)] if group is not None else [
            s for s in dialog.streams.values() if s.kind == "sctp"]
        for stream in candidates:
            if stream is not None and isinstance(stream.access, SctpAccessLeg):
                return stream.access
        return None

    def configure(self) -> None:
        leg = self.sctp_leg()
        if leg is None or self.dcmap is None:
            log.warning("dialog %s stream %d: no SCTP association or dcmap for this data channel",
                        self.stream.dialog.id, self.stream.stream_id)
            return
        leg.attach(self)

    def bind(self, association: SctpAssociation) -> None:
        """Open the channel on ``association`` (again, when it is a new one)."""
        if self.closed or self.dcmap is None:
            return
        current = self.channel
        if current is not None and self.association is association and current.readyState in ("connecting", "open"):
            return
        self.association = association
        self.reset = False
        channel = association.open_channel(self.dcmap)
        self.channel = channel
        channel.on("message", self.from_access)
        channel.on("open", self.flush)
        if channel.readyState == "open":
            self.flush()

    # access → core
    def from_access(self, message: str | bytes) -> None:
        data = message.encode("utf-8") if isinstance(message, str) else message
        core = self.stream.core
        if core is None or self.reset:
            self.owner.metrics.dropped("no_peer")
            return
        core.from_access(data)

    # core → access
    def send(self, message: str | bytes) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            if len(self.pending) >= MAX_PENDING or self.reset or self.closed:
                self.owner.metrics.dropped("not_established")
            else:
                self.pending.append(message)
            return
        try:
            channel.send(message)
        except (InvalidStateError, ValueError):  # closing, or above the WIC's max-message-size
            self.owner.metrics.dropped("send_error")

    def flush(self) -> None:
        while self.pending and self.channel is not None and self.channel.readyState == "open":
            self.send(self.pending.popleft())

    def peer_reset(self) -> None:
        """The WIC closed the channel (DC-13): the core side stops too."""
        self.reset = True
        self.channel = None
        self.pending.clear()
        if self.stream.core is not None:
            self.stream.core.close_transport()
        self.owner.changed(self.stream.dialog)

    def detach(self) -> None:
        self.channel = None
        self.association = None

    # the Iq interface
    def apply(self, spec: TerminationSpec) -> list[int]:
        if spec.dcmap is None:
            spec.dcmap = self.dcmap
        self.spec = spec
        if spec.dcmap != self.dcmap:
            leg = self.sctp_leg()
            if leg is not None and self.dcmap is not None:
                leg.detach(self)
            self.channel = None
            self.dcmap = spec.dcmap
        self.configure()
        return []

    def reply(self, address: str) -> None:
        return None  # the association's termination answers for the port and SCTP values

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        leg = self.sctp_leg()
        if leg is not None and self.dcmap is not None:
            leg.detach(self)
        self.owner.metrics.data_channels_active.dec()

    def document(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "channels": {}, "group": getattr(self.stream, "group", None),
                "reset": self.reset}


# -- core side: T.140 in RTP ----------------------------------------------------------
class UdpPort(asyncio.DatagramProtocol):
    def __init__(self, leg: "T140CoreLeg", port: int, component: str) -> None:
        self.leg = leg
        self.port = port
        self.component = component
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        try:
            if self.component == "rtp":
                self.leg.from_core(data, addr)
        except Exception:
            self.leg.metrics.dropped("unexpected")
            log.debug("core port %d: dropped a packet", self.port, exc_info=True)

    def error_received(self, exc) -> None:  # type: ignore[override]
        log.debug("core port %d: %s", self.port, exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


def _payload_types(dcsa: list[str]) -> tuple[int, int | None]:
    """(t140 pt, red pt) from the core's ``rtpmap`` values (RFC 4103 section 6)."""
    t140, red = None, None
    for value in dcsa:
        name, _, rest = value.partition(":")
        if name.strip().lower() != "rtpmap":
            continue
        pt, _, encoding = rest.strip().partition(" ")
        encoding = encoding.strip().lower()
        if pt.isdigit() and encoding.startswith("t140/"):
            t140 = int(pt)
        elif pt.isdigit() and encoding.startswith("red/"):
            red = int(pt)
    return (DEFAULT_T140_PT if t140 is None else t140), red


class T140CoreLeg:
    """A T.140 channel's core termination: RTP text (RFC 4103) on a UDP port (and RTCP+1)."""

    def __init__(self, stream: "Stream", spec: TerminationSpec) -> None:
        self.stream = stream
        self.spec = spec
        self.owner = stream.dialog.owner
        self.metrics = self.owner.metrics
        self.rtp: UdpPort | None = None
        self.rtcp: UdpPort | None = None
        self.latched: tuple[str, int] | None = None
        self.closed = False
        pt, red = _payload_types(spec.remote_dcsa)
        self.packetizer = T140Packetizer(pt)
        self.depacketizer = T140Depacketizer(pt, red)
        traffic = self.metrics.traffic
        self.t_in, self.t_out = traffic[("core", "in", "t140")], traffic[("core", "out", "t140")]

    async def bind(self, socks: list[socket.socket]) -> None:
        loop = self.owner.loop
        for sock, component in zip(socks, ("rtp", "rtcp")):
            port = UdpPort(self, sock.getsockname()[1], component)
            setattr(self, component, port)
            await loop.create_datagram_endpoint(lambda p=port: p, sock=sock)

    def channels(self) -> list[UdpPort]:
        return [p for p in (self.rtp, self.rtcp) if p is not None]

    def configure(self) -> None:
        pt, red = _payload_types(self.spec.remote_dcsa)
        self.packetizer.pt = pt
        self.depacketizer.pt, self.depacketizer.red_pt = pt, red

    def remote(self) -> tuple[str, int] | None:
        if self.spec.remote_address and self.spec.remote_port:
            return (self.spec.remote_address, self.spec.remote_port)
        return self.latched

    def from_access(self, text: bytes) -> None:
        dest = self.remote()
        port = self.rtp
        if self.closed or dest is None or port is None or port.transport is None:
            self.metrics.dropped("no_peer")
            return
        try:
            packets = self.packetizer.packetize(text, self.owner.loop.time())
        except ValueError:
            self.metrics.dropped("malformed")
            return
        for packet in packets:
            port.transport.sendto(packet, dest)
            self.t_out.count(len(packet))

    def from_core(self, data: bytes, addr: tuple[str, int]) -> None:
        self.t_in.count(len(data))
        if self.closed:
            self.metrics.dropped("no_peer")
            return
        if not (self.spec.remote_address and self.spec.remote_port):
            self.latched = addr
        dropped = self.depacketizer.dropped
        text = self.depacketizer.receive(data)
        if self.depacketizer.dropped != dropped:
            self.metrics.dropped("malformed")
        if text is None:
            return
        try:
            message = text.decode("utf-8")
        except UnicodeDecodeError:
            self.metrics.dropped("malformed")
            return
        access = self.stream.access
        if isinstance(access, ChannelAccessLeg):
            access.send(message)
        else:
            self.metrics.dropped("no_peer")

    def close_transport(self) -> None:
        self.closed = True

    def apply(self, spec: TerminationSpec) -> list[int]:
        self.spec = _merge_access(self.spec, spec)
        released = []
        if self.spec.rtcp_mux and self.rtcp is not None:
            released.append(self.rtcp.port)
            self.rtcp.close()
            self.rtcp = None
        self.configure()
        return released

    def reply(self, address: str) -> TerminationReply:
        if self.rtp is None:
            raise UsageError("datachannel: a reply for an access leg without its port")
        return TerminationReply(address, self.rtp.port, self.rtcp.port if self.rtcp else None)

    def document(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "ports": {p.component: p.port for p in self.channels()},
                "latched": list(self.latched) if self.latched else None}


# -- core side: MSRP over TCP ---------------------------------------------------------
class MsrpConnection(asyncio.Protocol):
    def __init__(self, leg: "MsrpCoreLeg") -> None:
        self.leg = leg
        self.framer = MsrpFramer(max(leg.owner.config.mediad_sctp_max_message_size, 1 << 16))
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.leg.connected(self)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except MsrpFramingError as exc:
            self.leg.metrics.dropped("malformed")
            log.info("MSRP connection on core port %s closed: %s", self.leg.port, exc)
            self.close()
            return
        for message in messages:
            self.leg.from_core(message)

    def connection_lost(self, exc) -> None:
        self.leg.lost(self)
        self.transport = None

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class MsrpCoreLeg:
    """An MSRP channel's core termination: a TCP port, listening and/or connecting (RFC 4975)."""

    def __init__(self, stream: "Stream", spec: TerminationSpec) -> None:
        self.stream = stream
        self.spec = spec
        self.owner = stream.dialog.owner
        self.metrics = self.owner.metrics
        self.port: int | None = None
        self.server: asyncio.AbstractServer | None = None
        self.conn: MsrpConnection | None = None
        self.connecting: asyncio.Task | None = None
        self.pending: deque[bytes] = deque()
        self.closed = False
        traffic = self.metrics.traffic
        self.t_in, self.t_out = traffic[("core", "in", "msrp")], traffic[("core", "out", "msrp")]

    async def listen(self, sock: socket.socket) -> None:
        self.port = sock.getsockname()[1]
        self.server = await self.owner.loop.create_server(lambda: MsrpConnection(self), sock=sock, backlog=4)

    def channels(self) -> list["MsrpCoreLeg"]:
        return [self]

    def configure(self) -> None:
        """Connect to the core when the ALG made the AGW the active side (remote port given)."""
        spec = self.spec
        if (self.closed or self.conn is not None or self.connecting is not None
                or not (spec.remote_address and spec.remote_port)):
            return
        self.connecting = asyncio.ensure_future(self._connect(spec.remote_address, spec.remote_port))

    async def _connect(self, host: str, port: int) -> None:
        local = (self.owner.config.mediad_core_address, 0)
        try:
            for attempt in range(CONNECT_ATTEMPTS):
                if self.conn is not None or self.closed:
                    return
                try:
                    await self.owner.loop.create_connection(lambda: MsrpConnection(self), host, port,
                                                            local_addr=local)
                    return
                except OSError as exc:
                    log.info("MSRP connect to %s:%d failed (%s), attempt %d", host, port, exc.strerror, attempt + 1)
                    await asyncio.sleep(CONNECT_RETRY_SECONDS * (attempt + 1))
        finally:
            self.connecting = None

    def connected(self, conn: MsrpConnection) -> None:
        if self.closed or (self.conn is not None and self.conn is not conn):
            conn.close()  # one connection per channel
            return
        self.conn = conn
        while self.pending:
            self._write(conn, self.pending.popleft())

    def lost(self, conn: MsrpConnection) -> None:
        if self.conn is conn:
            self.conn = None

    def from_access(self, data: bytes) -> None:
        if self.closed:
            self.metrics.dropped("no_peer")
        elif self.conn is not None:
            self._write(self.conn, data)
        elif len(self.pending) < MAX_PENDING:
            self.pending.append(data)
        else:
            self.metrics.dropped("not_established")

    def _write(self, conn: MsrpConnection, data: bytes) -> None:
        conn.write(data)
        self.t_out.count(len(data))

    def from_core(self, message: bytes) -> None:
        self.t_in.count(len(message))
        access = self.stream.access
        if isinstance(access, ChannelAccessLeg):
            access.send(message)
        else:
            self.metrics.dropped("no_peer")

    def close_transport(self) -> None:
        self.closed = True
        self.pending.clear()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.server is not None:
            self.server.close()
            self.server = None

    def close(self) -> None:
        self.close_transport()

    def apply(self, spec: TerminationSpec) -> list[int]:
        self.spec = _merge_access(self.spec, spec)
        self.configure()
        return []

    def reply(self, address: str) -> TerminationReply:
        if self.port is None:
            raise UsageError("datachannel: a reply for a core leg without its port")
        return TerminationReply(address, self.port)

    def document(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "ports": {"tcp": self.port}}
