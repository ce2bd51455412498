"""SCTP over DTLS (RFC 8261) for WebRTC data channels, on aiortc's SCTP stack.

Implements the AGW's part of TS 23.334 clause 5.20.2.2 (DC-10, DC-11, DC-13):
an SCTP association (RFC 4960, with the RFC 6525 stream reconfiguration and
RFC 3758 partial reliability aiortc brings) carried in the application data of
the DTLS association of a ``sctp`` stream's access termination, and the data
channels on it (RFC 8831; SDP-negotiated channels, RFC 8864, are opened with
``negotiated=true`` and the SCTP stream id of their ``a=dcmap``, RFC 8832
section 6: no DCEP message is exchanged for them).

Why an adapter
--------------
aiortc's :class:`~aiortc.rtcsctptransport.RTCSctpTransport` is the SCTP
implementation used here: chunk codecs, the association state machine,
congestion control, SACKs, stream resets and data channels.  It expects to sit
on aiortc's ``RTCDtlsTransport``, which owns its ICE transport and socket.  Our
DTLS is :class:`mediad.proto.dtls.DtlsSession`, driven by the relay on mediad's own
access port (ICE-lite, fingerprints held until the ALG gives them, restart
rules), so it cannot be an ``RTCDtlsTransport``.  :class:`DtlsLink` is the
smallest object with what ``RTCSctpTransport`` uses of one: ``state``,
``_role`` (RFC 8832 ties stream-id parity to the DTLS role),
``_register_data_receiver`` / ``_unregister_data_receiver`` and the coroutine
``_send_data`` (one SCTP packet → one DTLS application-data record).  Inbound
records go the other way through :meth:`SctpAssociation.receive`, queued and
handed to ``RTCSctpTransport._handle_data`` in order by one task, as
aiortc's own DTLS receive loop does.

:class:`AgwSctpTransport` narrows ``RTCSctpTransport`` in three places:

* ``_init``: aiortc always sends INIT when started (RFC 8841 section 9.3 lets
  both ends initiate).  With the "Establish SCTP association" IE (the AGW is
  DTLS client) we do too, which is the simultaneous-open emulation of TS
  23.334 NOTE 3 (RFC 4960 section 5.2.1: INIT collision, both answer INIT-ACK,
  the first COOKIE-ECHO wins).  Without it (DTLS server) the AGW is passive: it
  answers the WIC's INIT and sends none of its own.
* ``_reset_deferred_streams``: after aiortc has answered a peer's outgoing
  stream reset request (RFC 6525 section 5.2.2; the AGW answers by itself,
  DC-13) the reset stream ids are reported to :class:`SctpAssociation`.
* ``_set_state``: state changes are reported (setup time, closure).

Association states (one table, :data:`TRANSITIONS`)::

    new --start (DTLS up)--> connecting --sctp up--> established
    connecting | established --lost (ABORT, DTLS gone)--> closed
    any --close--> closed

The association lives exactly as long as its DTLS association: a new DTLS
association (new tls-id) gets a new SCTP association, and a restarted mediad
cannot rebuild one (SCTP and DTLS state are not exported).

A packet that aiortc cannot survive is dropped before it gets there: aiortc's
parameter decoder never ends on a parameter whose length field is 0 (RFC 4960
section 3.2.1 makes it at least 4) in the chunks that carry parameters (INIT,
INIT ACK, HEARTBEAT, HEARTBEAT ACK, ABORT, ERROR, RE-CONFIG), and would hang
the event loop while its list of parameters grows (:func:`zero_length_parameter`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aiortc.rtcdatachannel import RTCDataChannel, RTCDataChannelParameters
from aiortc.rtcsctptransport import RTCSctpCapabilities, RTCSctpTransport

from sdp_rules.errors import UsageError
from iq import DcMap, Role

log = logging.getLogger("mediad.sctp")

DEFAULT_SCTP_PORT = 5000  # RFC 8841 section 5
DEFAULT_REMOTE_MAX_MESSAGE_SIZE = 65536  # RFC 8841 section 6: a=max-message-size absent
MAX_QUEUED_PACKETS = 1024

NEW, CONNECTING, ESTABLISHED, CLOSED = "new", "connecting", "established", "closed"
TRANSITIONS: dict[tuple[str, str], str] = {
    (NEW, "start"): CONNECTING,
    (CONNECTING, "sctp_up"): ESTABLISHED,
    (CONNECTING, "lost"): CLOSED,
    (ESTABLISHED, "lost"): CLOSED,
    (NEW, "close"): CLOSED,
    (CONNECTING, "close"): CLOSED,
    (ESTABLISHED, "close"): CLOSED,
    (CLOSED, "close"): CLOSED,
}


# Chunk type -> offset of its parameters in the chunk value (RFC 4960 3.3, RFC 6525 3.1).
_PARAMETER_CHUNKS = {1: 16, 2: 16, 4: 0, 5: 0, 6: 0, 9: 0, 130: 0}
_COMMON_HEADER = 12


def zero_length_parameter(packet: bytes) -> bool:
    """True when a chunk of ``packet`` carries a parameter whose length field is 0.

    Chunks and parameters are walked as aiortc walks them (each padded to 4
    bytes); a chunk whose length is out of bounds ends the walk (aiortc refuses
    the packet itself).
    """
    pos = _COMMON_HEADER
    size = len(packet)
    while pos + 4 <= size:
        chunk_type = packet[pos]
        length = int.from_bytes(packet[pos + 2:pos + 4], "big")
        if length < 4 or pos + length > size:
            return False
        offset = _PARAMETER_CHUNKS.get(chunk_type)
        if offset is not None:
            param = pos + 4 + offset
            end = pos + length
            while param + 4 <= end:
                param_length = int.from_bytes(packet[param + 2:param + 4], "big")
                if param_length == 0:
                    return True
                param += param_length + (-param_length % 4)
        pos += length + (-length % 4)
    return False


class DtlsLink:
    """What ``RTCSctpTransport`` uses of an ``RTCDtlsTransport``, over our DtlsSession."""

    def __init__(self, send: Callable[[bytes], None]) -> None:
        self.send = send
        self.state = "new"
        self._role = "auto"
        self.receiver = None

    def _register_data_receiver(self, receiver) -> None:
        self.receiver = receiver

    def _unregister_data_receiver(self, receiver) -> None:
        if self.receiver is receiver:
            self.receiver = None

    async def _send_data(self, data: bytes) -> None:
        if self.state != "connected":
            raise ConnectionError("the DTLS association is not up")
        self.send(data)


class AgwSctpTransport(RTCSctpTransport):
    """aiortc's SCTP transport, passive when asked, reporting stream resets and states."""

    def __init__(self, link: DtlsLink, port: int, association: "SctpAssociation") -> None:
        super().__init__(link, port)  # type: ignore[arg-type]
        self.association = association
        self.passive = False

    async def _init(self) -> None:
        if not self.passive:
            await super()._init()

    async def _reset_deferred_streams(self) -> None:
        request = self._reconfig_deferred
        await super()._reset_deferred_streams()
        if request is not None and self._reconfig_deferred is None:
            self.association.streams_reset(list(request.streams))

    def _set_state(self, state) -> None:
        super()._set_state(state)
        if state == self.State.ESTABLISHED:
            self.association.sctp_state("sctp_up")
        elif state == self.State.CLOSED:
            self.association.sctp_state("lost")


class SctpAssociation:
    """One SCTP association over one DTLS association, and its data channels.

    ``send`` takes an outgoing SCTP packet (the caller puts it in a DTLS
    record); ``on_reset(stream_ids)`` is called when the peer reset streams;
    ``on_state(state)`` on every transition.
    """

    def __init__(self, send: Callable[[bytes], None], *, local_port: int = DEFAULT_SCTP_PORT,
                 on_reset: Callable[[list[int]], None], on_state: Callable[[str], None]) -> None:
        self.state = NEW
        self.local_port = local_port
        self.on_reset = on_reset
        self.on_state = on_state
        self.link = DtlsLink(send)
        self.transport = AgwSctpTransport(self.link, local_port, self)
        self.transport.on("datachannel", self._unexpected_channel)
        self.channels: dict[int, RTCDataChannel] = {}
        self.closing: set[int] = set()  # streams we reset: the peer's answering reset is not news
        self.inbound: asyncio.Queue[bytes] = asyncio.Queue(MAX_QUEUED_PACKETS)
        self.reader: asyncio.Task | None = None
        self.dropped = 0

    def _transition(self, action: str) -> None:
        new = TRANSITIONS.get((self.state, action))
        if new is None:
            return
        if new != self.state:
            log.debug("SCTP association %s -> %s (%s)", self.state, new, action)
            self.state = new
            self.on_state(new)

    # -- the DTLS association below ------------------------------------------------
    def start(self, role: Role, *, remote_port: int | None, remote_max_message_size: int | None,
              initiate: bool) -> None:
        """DTLS is up: run SCTP (``initiate``: send INIT, the simultaneous-open emulation)."""
        if self.state != NEW:
            return
        self.link._role = role.value
        self.link.state = "connected"
        self.transport.passive = not initiate
        self._transition("start")
        mms = DEFAULT_REMOTE_MAX_MESSAGE_SIZE if remote_max_message_size is None else remote_max_message_size
        self.reader = asyncio.ensure_future(self._run(RTCSctpCapabilities(maxMessageSize=mms),
                                                      remote_port or DEFAULT_SCTP_PORT))

    def receive(self, data: bytes) -> None:
        """One DTLS application-data record from the peer: an SCTP packet."""
        if self.state not in (CONNECTING, ESTABLISHED) or zero_length_parameter(data):
            self.dropped += 1
            return
        try:
            self.inbound.put_nowait(data)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _run(self, caps: RTCSctpCapabilities, remote_port: int) -> None:
        """Start aiortc's transport (INIT unless passive), then feed it the packets in order."""
        try:
            await self.transport.start(caps, remote_port)
        except Exception:
            log.warning("SCTP association could not start", exc_info=True)
            self._transition("lost")
            return
        while True:
            data = await self.inbound.get()
            try:
                await self.transport._handle_data(data)
            except Exception:  # a bad packet never stops the association
                self.dropped += 1
                log.debug("SCTP packet dropped", exc_info=True)

    def dtls_lost(self) -> None:
        """The DTLS association failed or closed: SCTP is gone with it."""
        self.link.state = "closed"
        self._transition("lost")
        self._stop_reader()

    def close(self) -> None:
        """Our end closes (release, new association): ABORT when possible, then forget."""
        if self.state == CLOSED:
            return
        self._transition("close")
        self._stop_reader()
        transport = self.transport
        if transport._association_state != transport.State.CLOSED:
            asyncio.ensure_future(self._abort())
        else:
            transport._set_state(transport.State.CLOSED)
            self.link.state = "closed"

    async def _abort(self) -> None:
        try:
            await self.transport.stop()  # ABORT (RFC 4960 section 9.1), best effort
        except Exception:
            log.debug("SCTP abort failed", exc_info=True)
        self.link.state = "closed"

    def _stop_reader(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            self.reader = None

    # -- what aiortc tells us ------------------------------------------------------
    def sctp_state(self, action: str) -> None:
        self._transition(action)
        if self.state == CLOSED:
            self._stop_reader()

    def streams_reset(self, stream_ids: list[int]) -> None:
        """The peer reset its outgoing streams (aiortc answered): report those it started."""
        reported = []
        for stream_id in stream_ids:
            self.channels.pop(stream_id, None)
            if stream_id in self.closing:
                self.closing.discard(stream_id)
            else:
                reported.append(stream_id)
        if reported:
            self.on_reset(reported)

    def _unexpected_channel(self, channel: RTCDataChannel) -> None:
        """A DCEP-opened channel (RFC 8832) the ALG did not negotiate: refuse it (reset)."""
        log.info("SCTP stream %s: DCEP channel %r not negotiated in SDP, closing it", channel.id, channel.label)
        channel.close()

    # -- data channels -------------------------------------------------------------
    def open_channel(self, dcmap: DcMap) -> RTCDataChannel:
        """A negotiated channel (RFC 8831 section 6.5) on the dcmap's SCTP stream id."""
        existing = self.channels.get(dcmap.stream_id)
        if existing is not None and existing.readyState in ("connecting", "open"):
            return existing
        if dcmap.max_retr is not None and dcmap.max_time is not None:
            raise UsageError(f"dcmap of stream {dcmap.stream_id} has both max-retr and max-time")
        params = RTCDataChannelParameters(
            label=dcmap.label, ordered=dcmap.ordered is not False, maxRetransmits=dcmap.max_retr,
            maxPacketLifeTime=dcmap.max_time, protocol=dcmap.subprotocol or "", negotiated=True,
            id=dcmap.stream_id,
        )
        self.closing.discard(dcmap.stream_id)
        stale = self.transport._data_channels.get(dcmap.stream_id)
        if stale is not None:  # a DCEP channel on that id, or a closing one: replace it
            self.transport._data_channels.pop(dcmap.stream_id, None)
        channel = RTCDataChannel(self.transport, params)
        self.channels[dcmap.stream_id] = channel
        return channel

    def close_channel(self, stream_id: int) -> None:
        """Close our side: outgoing stream reset (RFC 8831 section 6.7)."""
        channel = self.channels.pop(stream_id, None)
        if channel is not None and self.state != CLOSED:
            if self.state == ESTABLISHED and channel.readyState == "open":
                self.closing.add(stream_id)
            channel.close()
