"""A simulated IMS-AGW: answers Iq requests with deterministic values, no I/O.

``e2ae-sdp`` uses it to show what the edge would do to a call without running
mediad.  Every value it hands out is predictable:

* addresses: ``127.0.0.1`` on access terminations, ``127.0.0.2`` on core ones;
* ports: even numbers counted up from 30000 (access) and 40000 (core) in the
  order the terminations are requested; RTCP on port + 1 when the termination
  carries RTP and is not multiplexed (``rtcp_mux``), else none;
* the certificate fingerprint :data:`FINGERPRINT` on every access termination
  (the sha-256 of a throwaway self-signed certificate, fixed here);
* ICE-lite credentials :data:`ICE_UFRAG` / :data:`ICE_PWD`;
* SCTP port :data:`SCTP_PORT` and max-message-size :data:`MAX_MESSAGE_SIZE`
  on data-channel associations;
* a data channel (``dc_channel``) shares the access termination of its SCTP
  association (``group``) and gets a core termination of its own;
* a BUNDLE transport (``TransportSpec``) gets one access port, the fingerprint
  and the ICE credentials; a stream on it gets no access port of its own, its
  access reply repeats the transport's address and port; an ICE restart gets
  the credentials suffixed with the number of restarts so far.

It remembers what it gave each stream, so a MODIFY (or a repeated RESERVE) for
a known stream gets the same values back; RELEASE forgets them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from iq import (
    Command,
    Fingerprint,
    IqReply,
    IqRequest,
    Side,
    StreamReply,
    StreamSpec,
    TerminationReply,
    TerminationSpec,
    TransportReply,
    TransportSpec,
)

ACCESS_ADDRESS = "127.0.0.1"
CORE_ADDRESS = "127.0.0.2"
ACCESS_FIRST_PORT = 30000
CORE_FIRST_PORT = 40000
FINGERPRINT = Fingerprint(
    "sha-256",
    "87:7A:2D:7D:57:C0:86:F8:56:8F:08:E8:87:11:F1:BB:5D:F3:E4:FE:45:A3:0F:2C:7B:F6:D8:DF:92:2A:21:10",
)
ICE_UFRAG = "e2aeSimUfrag"
ICE_PWD = "e2aeSimulatedIcePassword"
SCTP_PORT = 5000
MAX_MESSAGE_SIZE = 262144

DESCRIPTION = f"""\
The simulated AGW answers every Iq request with fixed values: access
terminations on {ACCESS_ADDRESS}, core terminations on {CORE_ADDRESS}; even
ports counted from {ACCESS_FIRST_PORT} (access) and {CORE_FIRST_PORT} (core),
RTCP on port+1 unless multiplexed; fingerprint {FINGERPRINT.hash_func}
{FINGERPRINT.value}; ICE ufrag {ICE_UFRAG}, pwd {ICE_PWD}; SCTP port
{SCTP_PORT}, max-message-size {MAX_MESSAGE_SIZE}.  Only the a=tls-id values
are fresh on every run (RFC 8842 wants them unique)."""


@dataclass
class SimulatedAgw:
    """Deterministic stand-in for mediad's control endpoint (see the module docstring)."""

    next_access_port: int = ACCESS_FIRST_PORT
    next_core_port: int = CORE_FIRST_PORT
    # (dialog, stream_id, side) -> what was handed out
    given: dict[tuple[str, int, Side], TerminationReply] = field(default_factory=dict)
    # (dialog, transport_id) -> what was handed out
    transports: dict[tuple[str, int], TransportReply] = field(default_factory=dict)
    restarts: int = 0

    def answer(self, iq: IqRequest) -> IqReply:
        if iq.command is Command.RELEASE:
            return self._release(iq)
        if iq.command in (Command.QUERY, Command.LIST):
            data = {
                "streams": sorted({sid for (dialog, sid, _) in self.given if dialog == iq.dialog})
            }
            return IqReply(iq.dialog, iq.transaction, data=data)
        for stream_id in iq.release_streams:
            self._forget(iq.dialog, stream_id)
        for transport_id in iq.release_transports:
            self.transports.pop((iq.dialog, transport_id), None)
        transports = [self._transport(iq.dialog, spec) for spec in iq.transports]
        replies = [self._stream(iq.dialog, spec) for spec in iq.streams]
        return IqReply(iq.dialog, iq.transaction, streams=replies, transports=transports)

    # -- internals -------------------------------------------------------
    def _transport(self, dialog: str, spec: TransportSpec) -> TransportReply:
        known = self.transports.get((dialog, spec.transport_id))
        if known is None:
            known = TransportReply(spec.transport_id, ACCESS_ADDRESS, self._allocate(Side.ACCESS),
                                   FINGERPRINT, ICE_UFRAG, ICE_PWD)
        elif spec.ice_restart:
            self.restarts += 1
            known = replace(known, ice_ufrag=f"{ICE_UFRAG}{self.restarts}", ice_pwd=f"{ICE_PWD}{self.restarts}")
        self.transports[(dialog, spec.transport_id)] = known
        return replace(known)

    def _stream(self, dialog: str, spec: StreamSpec) -> StreamReply:
        access = core = None
        if spec.access is not None and spec.transport_id is not None:
            access = self._on_transport(dialog, spec, spec.transport_id)
        elif spec.access is not None:
            access = self._access(dialog, spec, spec.access)
        if spec.core is not None:
            core = self._termination(dialog, spec.stream_id, spec.core)
        return StreamReply(spec.stream_id, access=access, core=core)

    def _on_transport(self, dialog: str, spec: StreamSpec, transport_id: int) -> TerminationReply:
        transport = self.transports[(dialog, transport_id)]
        reply = TerminationReply(local_address=transport.local_address, local_port=transport.local_port)
        if spec.kind == "sctp":
            reply.local_sctp_port = SCTP_PORT
            reply.local_max_message_size = MAX_MESSAGE_SIZE
        return reply

    def _access(self, dialog: str, spec: StreamSpec, term: TerminationSpec) -> TerminationReply:
        if spec.kind == "dc_channel" and spec.group is not None:
            parent = self.given.get((dialog, spec.group, Side.ACCESS))
            if parent is not None:
                self.given[(dialog, spec.stream_id, Side.ACCESS)] = parent
                return replace(parent)
        return self._termination(dialog, spec.stream_id, term, sctp=spec.kind == "sctp")

    def _termination(
        self, dialog: str, stream_id: int, term: TerminationSpec, sctp: bool = False
    ) -> TerminationReply:
        key = (dialog, stream_id, term.side)
        known = self.given.get(key)
        if known is not None:
            return replace(known)
        port = self._allocate(term.side)
        carries_rtp = "RTP" in term.transport.upper()
        reply = TerminationReply(
            local_address=ACCESS_ADDRESS if term.side is Side.ACCESS else CORE_ADDRESS,
            local_port=port,
            local_rtcp_port=port + 1 if carries_rtp and not term.rtcp_mux else None,
        )
        if term.side is Side.ACCESS:
            reply.local_fingerprint = FINGERPRINT
            reply.ice_ufrag = ICE_UFRAG
            reply.ice_pwd = ICE_PWD
            if sctp or term.local_sctp_port_request:
                reply.local_sctp_port = SCTP_PORT
            if sctp or term.local_max_message_size_request:
                reply.local_max_message_size = MAX_MESSAGE_SIZE
        self.given[key] = reply
        return replace(reply)

    def _allocate(self, side: Side) -> int:
        if side is Side.ACCESS:
            port, self.next_access_port = self.next_access_port, self.next_access_port + 2
        else:
            port, self.next_core_port = self.next_core_port, self.next_core_port + 2
        return port

    def _release(self, iq: IqRequest) -> IqReply:
        if iq.release_streams:
            for stream_id in iq.release_streams:
                self._forget(iq.dialog, stream_id)
        else:
            for given in [k for k in self.given if k[0] == iq.dialog]:
                del self.given[given]
            for key in [k for k in self.transports if k[0] == iq.dialog]:
                del self.transports[key]
        return IqReply(iq.dialog, iq.transaction)

    def _forget(self, dialog: str, stream_id: int) -> None:
        for side in Side:
            self.given.pop((dialog, stream_id, side), None)
