"""The call's ownership tree: dialog → stream → termination (leg) → channel.

Theory of operation
-------------------
A :class:`Dialog` (the H.248 context) owns its :class:`Stream` objects by
``stream_id``; a stream owns at most one :class:`AccessLeg` and one
:class:`CoreLeg`; a leg owns its bound ports, as ``relay`` channels.  Only the
owner writes a field: the daemon (Iq requests) writes specs and creates or
closes legs; channels write what they learn from packets (peer address, DTLS
state, SRTP keys) and tell the daemon, which persists the dialog.

Ports (``mediad.io.ports``): an access leg has one RTP port, plus an RTCP port
with its own DTLS association while RTCP is not multiplexed (RFC 5764
section 4.1); a core leg has an even RTP port plus RTP+1 for RTCP unless the
core multiplexes (RFC 3550 section 11, RFC 5761).  T.38 legs have one port.

``Dialog.document()`` is the JSON stored in Redis; ``Dialog.restore`` rebuilds
the tree from it, re-binds the same ports and keeps SRTP running from the
stored keys and rollover counters (RFC 3711 section 3.3.1: each channel's
``srtp_rocs``, by direction and SSRC; a stream that wrapped its sequence number
before the restart continues at its ROC).  libsrtp's replay window restarts
from zero: an old packet replayed to the new process within the window of the
first packet after the restart would pass once.
"""

from __future__ import annotations

import enum
import ipaddress
from typing import Any

from iq import Role, StreamReply, StreamSpec, TerminationReply, TerminationSpec
from sdp_rules.errors import UsageError

from mediad.core.relay import ESTABLISHED, AccessChannel, Channel, CoreChannel
from mediad.proto.srtp import SrtpKeys
from mediad.proto.stun import random_ice_credentials

class StreamKind(enum.StrEnum):
    """An Iq stream's kind (docs/iq.md); the value is the Iq string (JSON, logs, comparisons)."""

    SRTP = "srtp"  # DTLS-SRTP over UDP (RFC 5764)
    SRTP_TCP = "srtp_tcp"  # DTLS-SRTP over TCP (RFC 4571, RFC 7850)
    T38 = "t38"  # UDPTL over DTLS (RFC 7345)
    SCTP = "sctp"  # a data-channel association: the deaggregation stream (RFC 8261)
    DC_CHANNEL = "dc_channel"  # one data channel: a component stream (RFC 8864)


SUPPORTED_KINDS = (StreamKind.SRTP, StreamKind.SRTP_TCP, StreamKind.T38)  # this module's legs; mediad.core.datachannel's
DOCUMENT_VERSION = 1


def _merge_access(old: TerminationSpec, new: TerminationSpec) -> TerminationSpec:
    """A modify's termination: what it leaves out (None, empty) keeps its old value."""
    for name in ("remote_address", "remote_port", "remote_rtcp_port", "tls_role", "remote_ice_ufrag",
                 "remote_ice_pwd"):
        if getattr(new, name) is None:
            setattr(new, name, getattr(old, name))
    for name in ("remote_fingerprints", "remote_candidates"):
        if not getattr(new, name):
            setattr(new, name, list(getattr(old, name)))
    return new


class AccessLeg:
    """A stream's own access termination: its ports (``relay.AccessChannel``), ICE credentials, spec.

    Written by the daemon (``spec``, the channels); the channels report through
    :meth:`report` and read ``path``, ``over_tcp`` and ``dtls_srtp``, which a
    ``mediad.core.transport.Transport`` answers too (the leg of a BUNDLE group).
    """

    transport = None  # a leg of its own: no BUNDLE transport
    # The DTLS identity of its association when not the node's (a termination renewed in a
    # takeover, mediad.takeover.fresh_access_spec: another fingerprint makes the WIC start anew).
    certificate = None

    def __init__(self, stream: "Stream", spec: TerminationSpec, ice: tuple[str, str] | None = None) -> None:
        self.stream = stream
        self.dialog = stream.dialog
        self.spec = spec
        self.over_tcp = stream.kind is StreamKind.SRTP_TCP  # RFC 4571: the SDP address is checked, never sent to
        self.dtls_srtp = stream.kind in (StreamKind.SRTP, StreamKind.SRTP_TCP)  # the handshake negotiates use_srtp
        self.ice_ufrag, self.ice_pwd = ice or random_ice_credentials()
        self.rtp: AccessChannel | None = None
        self.rtcp: AccessChannel | None = None

    @property
    def rtcp_channel(self) -> AccessChannel:
        if self.rtp is None:
            raise UsageError("access leg: its RTCP channel asked for before its ports are open")
        return self.rtcp or self.rtp

    @property
    def path(self):
        """The stream's native packet path (mediad.io.fastpath.StreamPath), or None."""
        return self.stream.path

    def report(self, name: str, reason: str | None, component: str) -> None:
        """An event of this leg's DTLS association or ICE agent, for the ALG."""
        self.dialog.owner.event(self.stream, name, reason, component)

    def channels(self) -> list[AccessChannel]:
        return [c for c in (self.rtp, self.rtcp) if c is not None]

    def reply(self, address: str) -> TerminationReply:
        if self.rtp is None:
            raise UsageError("access leg: a reply before its ports are open")
        owner = self.stream.dialog.owner
        return TerminationReply(
            local_address=address, local_port=self.rtp.port,
            local_rtcp_port=self.rtcp.port if self.rtcp else None,
            local_fingerprint=(self.certificate or owner.certificate).fingerprint("sha-256"),
            ice_ufrag=self.ice_ufrag, ice_pwd=self.ice_pwd,
        )

    def apply(self, spec: TerminationSpec) -> list[int]:
        """Take a modify's spec; returns ports released (RTCP port once muxed)."""
        self.spec = _merge_access(self.spec, spec)
        released = []
        if self.spec.rtcp_mux and self.rtcp is not None:
            released.append(self.rtcp.port)
            self.rtcp.close()
            self.rtcp = None
        self.configure()
        return released

    def configure(self) -> None:
        """Push the spec into the channels: fingerprints, ICE credentials, role, start."""
        spec = self.spec
        for channel in self.channels():
            channel.forget_route()
            channel.responder.set_remote_credentials(spec.remote_ice_ufrag, spec.remote_ice_pwd)
            if spec.tls_role is not None and channel.dtls is None and channel.state != ESTABLISHED:
                channel.role = spec.tls_role
            if spec.remote_fingerprints:
                channel.set_remote_fingerprints(spec.remote_fingerprints)
            if (spec.establish_tls and spec.tls_role is Role.CLIENT and channel.state != ESTABLISHED
                    and (channel.dtls is None or channel.dtls.state == "new")):
                channel.role = Role.CLIENT
                channel.start_client_soon()  # after the answer

    def reset_association(self) -> None:
        """New tls-id without reuse: forget the association, a new handshake follows."""
        for channel in self.channels():
            channel.reset()

    def document(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "ice_ufrag": self.ice_ufrag,
            "ice_pwd": self.ice_pwd,
            "channels": {
                c.component: {
                    "port": c.port, "state": c.state, "failure": c.failure,
                    "role": c.role.value if c.role else None,
                    # a TCP peer (mediad.io.tcp.TcpPeer, a tuple subclass) dies with the process
                    "peer": list(c.peer) if c.peer and type(c.peer) is tuple else None,
                    "srtp_keys": c.keys.to_dict() if c.keys is not None else None,
                    "srtp_rocs": c.srtp_rocs(),
                    "srtcp_index": c.srtcp_indices(),
                }
                for c in self.channels()
            },
        }


def host_of(address: str | None) -> str | None:
    """An SDP address as the kernel writes a datagram's source (IPv4 dotted quad, IPv6 compressed)."""
    if not address:
        return None
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


class CoreLeg:
    """The core termination of an RTP or UDPTL stream.

    Source filtering (``[mediad] core_source``): in ``sdp`` mode media is taken
    only from the address the core's SDP names (any port), and nothing before
    that address is known; in ``latch`` mode (a core behind NAT) the first media
    packet of each component after the core's SDP was given fixes its source
    (address and port) and media toward the core goes there.  :meth:`admits` is
    the rule; ``expected_host`` and ``latched`` are what the native path repeats.
    """

    def __init__(self, stream: "Stream", spec: TerminationSpec) -> None:
        self.stream = stream
        self.spec = spec
        self.rtp: CoreChannel | None = None
        self.rtcp: CoreChannel | None = None
        self.latched: dict[str, tuple[str, int]] = {}
        self.latch_mode = stream.dialog.owner.config.mediad_core_source == "latch"
        # Computed by refresh() whenever spec or latched changes (the packet path reads them).
        self.expected_host: str | None = None  # sdp mode: the only address media is taken from
        self.dest_rtp: tuple[str, int] | None = None
        self.dest_rtcp: tuple[str, int] | None = None
        self._compute()  # not refresh(): no channel of this leg is on the native path yet

    def channels(self) -> list[CoreChannel]:
        return [c for c in (self.rtp, self.rtcp) if c is not None]

    def reply(self, address: str) -> TerminationReply:
        if self.rtp is None:
            raise UsageError("core leg: a reply before its ports are open")
        return TerminationReply(address, self.rtp.port, self.rtcp.port if self.rtcp else None)

    def apply(self, spec: TerminationSpec) -> list[int]:
        before = (self.spec.remote_address, self.spec.remote_port, self.spec.remote_rtcp_port)
        self.spec = _merge_access(self.spec, spec)
        if self.latch_mode and (self.spec.remote_address, self.spec.remote_port, self.spec.remote_rtcp_port) != before:
            self.latched.clear()  # the core moved (a new SDP): latch again
        released = []
        if self.spec.rtcp_mux and self.rtcp is not None:
            released.append(self.rtcp.port)
            self.rtcp.close()
            self.rtcp = None
        self.refresh()
        return released

    def refresh(self) -> None:
        """Recompute what the packet path reads: after a change of ``spec`` or ``latched``."""
        self._compute()
        if self.stream.path is not None:
            self.stream.path.sync()

    def _compute(self) -> None:
        spec = self.spec
        known = bool(spec.remote_address and spec.remote_port)
        self.expected_host = host_of(spec.remote_address) if known else None
        self.dest_rtp = self.remote("rtp")
        self.dest_rtcp = self.remote("rtcp")

    def admits(self, component: str, addr) -> bool:
        """May media arriving on ``component``'s port from ``addr`` go on (latching it if so)?"""
        if self.latch_mode:
            latched = self.latched.get(component)
            if latched is None:
                self.latch(component, addr)
                return True
            return latched == addr
        return addr[0] == self.expected_host

    def latch(self, component: str, addr: tuple[str, int]) -> None:
        if self.latched.get(component) != addr:
            self.latched[component] = addr
            self.refresh()

    def remote(self, component: str) -> tuple[str, int] | None:
        """Where media of ``component`` goes: the latched source (latch mode), else the SDP's address."""
        if self.latch_mode:
            latched = self.latched.get(component)
            if latched is not None:
                return latched
        spec = self.spec
        if spec.remote_address and spec.remote_port:
            if component == "rtp" or spec.rtcp_mux:
                return (spec.remote_address, spec.remote_port)
            return (spec.remote_address, spec.remote_rtcp_port or spec.remote_port + 1)
        return None

    def send_rtp(self, data: bytes) -> None:
        channel = self.rtp
        channel.send(data, self.dest_rtp, channel.out_rtp)  # type: ignore[union-attr]

    def send_rtcp(self, data: bytes) -> None:
        channel = self.rtcp or self.rtp
        channel.send(data, self.dest_rtcp, channel.out_rtcp)  # type: ignore[union-attr]

    def send_udptl(self, data: bytes) -> None:
        channel = self.rtp
        channel.send(data, self.dest_rtp, channel.out_udptl)  # type: ignore[union-attr]

    def document(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "ports": {c.component: c.port for c in self.channels()},
            "latched": {k: list(v) for k, v in self.latched.items()},
        }


class Stream:
    path = None  # mediad.io.fastpath.StreamPath when the native packet path carries it

    def __init__(self, dialog: "Dialog", spec: StreamSpec) -> None:
        self.dialog = dialog
        self.stream_id = spec.stream_id
        self.kind = StreamKind(spec.kind)  # (the daemon checked it: a ValueError is a document of ours)
        self.group = spec.group  # dc_channel: the stream id of its "sctp" stream (mediad.core.datachannel)
        self.local_tls_id = spec.local_tls_id
        self.remote_tls_id = spec.remote_tls_id
        # The BUNDLE transport (mediad.core.transport.Transport) carrying the access side, and the
        # m-line's mid: written by the daemon (a stream may move onto or off a transport).
        self.transport_id = spec.transport_id
        self.mid = spec.mid
        self.access: AccessLeg | None = None
        self.core: CoreLeg | None = None
        # Packets taken in for relay from each side (RTP, RTCP, UDPTL; authenticated on access);
        # the native packet path counts its own (StreamPath.relayed).
        self.from_access = 0
        self.from_core = 0

    def packets(self) -> dict[str, int]:
        """Packets relayed from each side so far, by Python and by the native path."""
        native = self.path.relayed() if self.path is not None else (0, 0)
        return {"from_access": self.from_access + native[0], "from_core": self.from_core + native[1]}

    def reply(self, access_address: str, core_address: str) -> StreamReply:
        return StreamReply(
            self.stream_id,
            access=self.access.reply(access_address) if self.access else None,
            core=self.core.reply(core_address) if self.core else None,
        )

    def channels(self) -> list[Channel]:
        out: list[Channel] = []
        if self.access:
            out += self.access.channels()
        if self.core:
            out += self.core.channels()
        return out

    def traffic(self) -> int:
        """Authenticated access packets of this stream (Python's count, the native path's)."""
        count = self.path.access_received() if self.path is not None else 0
        if self.access is not None:
            count += sum(c.received for c in self.access.channels())
        return count

    def document(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id, "kind": self.kind,
            "local_tls_id": self.local_tls_id, "remote_tls_id": self.remote_tls_id,
            "transport_id": self.transport_id, "mid": self.mid,
            "access": self.access.document() if self.access else None,
            "core": self.core.document() if self.core else None,
        }


class Dialog:
    """One dialog's media context; ``owner`` is the daemon (metrics, config, certificate, loop)."""

    MAX_REPLIES = 32
    MAX_EVENTS = 32

    def __init__(self, owner, dialog_id: str) -> None:
        self.owner = owner
        self.id = dialog_id
        self.streams: dict[int, Stream] = {}
        self.transports: dict[int, Any] = {}  # transport_id -> mediad.core.transport.Transport (BUNDLE)
        self.replies: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.version = 0
        loop = owner.loop
        self.refreshed_at = loop.time() if loop is not None else 0.0  # expiry: the daemon's _expire_idle
        self.traffic_seen = 0  # access traffic counted at the last refresh
        self.home = None  # mediad.takeover.Home: the addresses of a dialog taken over from a dead node

    def traffic(self) -> int:
        """Authenticated packets received on the access side so far (both packet paths)."""
        return sum(stream.traffic() for stream in self.streams.values()) + sum(
            transport.rtp.received + (transport.path.access_received() if transport.path is not None else 0)
            for transport in self.transports.values() if transport.rtp is not None)

    def active(self) -> bool:
        """Has access traffic come since the last refresh?"""
        return self.traffic() != self.traffic_seen

    def refresh(self, now: float) -> None:
        self.refreshed_at = now
        self.traffic_seen = self.traffic()

    def remember(self, transaction: str, reply: dict[str, Any]) -> None:
        self.replies[transaction] = reply
        while len(self.replies) > self.MAX_REPLIES:
            del self.replies[next(iter(self.replies))]

    def add_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        del self.events[: -self.MAX_EVENTS]

    def document(self) -> dict[str, Any]:
        self.version += 1
        return {
            "version": self.version,
            "format": DOCUMENT_VERSION,
            "dialog": self.id,
            "certificate": self.owner.certificate_reference,
            "streams": [s.document() for s in self.streams.values()],
            "transports": [t.document() for t in self.transports.values()],
            "replies": self.replies,
            "events": self.events,
        }

    def public_view(self) -> dict[str, Any]:
        """The document without secrets (keys, ice-pwd, cached replies): QUERY answers this."""
        streams = []
        for stream in self.streams.values():
            doc = stream.document()
            if doc["access"]:
                doc["access"].pop("ice_pwd", None)
                doc["access"]["spec"].pop("remote_ice_pwd", None)
                for channel in doc["access"]["channels"].values():
                    channel["srtp_keys"] = channel["srtp_keys"] is not None
            if doc["core"]:
                doc["core"]["spec"].pop("remote_ice_pwd", None)
            doc["packets"] = stream.packets()
            streams.append(doc)
        transports = []
        for transport in self.transports.values():
            doc = transport.document()
            doc.pop("ice_pwd")
            doc["spec"].pop("remote_ice_pwd", None)
            doc["srtp_keys"] = doc["srtp_keys"] is not None
            transports.append(doc)
        return {"dialog": self.id, "version": self.version, "streams": streams, "transports": transports,
                "events": self.events}


def stored_keys(channel_doc: dict[str, Any]) -> SrtpKeys | None:
    raw = channel_doc.get("srtp_keys")
    return SrtpKeys.from_dict(raw) if raw else None


def stored_rocs(channel_doc: dict[str, Any]) -> dict[str, Any] | None:
    """The channel's SRTP rollover counters by direction and SSRC (absent in older documents: ROC 0)."""
    return channel_doc.get("srtp_rocs")


def stored_srtcp(channel_doc: dict[str, Any]) -> dict[str, Any] | None:
    """The SRTCP index of each SSRC the channel sent (absent in older documents: they restart at 1)."""
    return channel_doc.get("srtcp_index")
