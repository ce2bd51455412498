"""The edge's SIP routing as a P-CSCF, free of Kamailio: sides, sockets, flows, Path.

Theory of operation
-------------------
The edge has one SIP socket per transport and side (``[edge]`` in the
configuration: access UDP, TCP, TLS, WS, WSS; core UDP, TCP, TLS).  Kamailio
tells the glue (:mod:`plugin.kemi`) the transport a message came in on
(``$pr``: ``udp``, ``tcp``, ``tls``, ``ws``, ``wss``) and the local socket it
reached (``$Ri:$Rp``); :meth:`SocketMap.side_of` maps them to a side.  A
WebSocket runs over a TCP (ws) or TLS (wss) listener, so ``ws``/``wss`` are
looked up as that listener.

Which socket a request leaves on: :meth:`SocketMap.send_socket` gives the
other side's socket for the transport of the next hop (``$nh(P)``), never a
string of one protocol built blindly; a side without that transport gives
``None`` and the request is refused (:class:`Decision`).

Registration (RFC 3327, RFC 5626): a REGISTER from access is forwarded to the
core next hop with a Path header naming the edge's core socket and, in its
``received`` parameter, the client's flow (source address, port and
transport: the connection for TCP, TLS, WS, WSS).  The registrar keeps the
binding and the Path; the edge keeps nothing.  A request from the core that
comes back through that Path (initial INVITE, MESSAGE, OPTIONS) carries it as
its Route: Kamailio's ``path`` module (``use_received``) sets the destination
to the flow.  When the flow is a connection that is gone, Kamailio is told not
to open a new one (``set_forward_no_connect``) and the request gets
``430 Flow Failed`` (RFC 5626 5.3); a request toward a client that has no flow
and no routable address (a browser's ``*.invalid`` Contact) gets ``480``
instead of a send to a host that cannot exist (RFC 6761 6.4).

NAT (RFC 3581): replies follow the request's source (``rport``), and a
client's Contact gets an ``alias`` parameter with its source address, port and
transport (nathelper ``add_contact_alias``) on dialog-forming requests and
their replies from access, so that in-dialog requests from the core follow
the connection (``handle_ruri_alias``), whatever the Contact says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from iq import Side

from mediad.config import ACCESS_SIP_OPTIONS, SIP_OPTION_PROTO, sip_sockets

# RFC 5626 5.3: the flow a request was to follow is gone.
FLOW_FAILED = (430, "Flow Failed")
# RFC 3261 21.4.18: the callee is not reachable now (no flow, no routable address).
UNAVAILABLE = (480, "Temporarily Unavailable")
NO_TRANSPORT = (503, "Service Unavailable")
# Foreign (received_proto, ip, port) answers remembered by SocketMap.side_of at most.
SIDE_CACHE_SIZE = 64


class Transport(str, Enum):
    """A SIP transport as Kamailio names it (``$pr``, ``$nh(P)``, ``transport=``)."""

    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"
    WS = "ws"
    WSS = "wss"
    SCTP = "sctp"

    @classmethod
    def parse(cls, text: str) -> "Transport":
        found = _TRANSPORTS.get(text)  # as Kamailio writes it: one dict look-up per message
        if found is not None:
            return found
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise ValueError(f"unknown SIP transport {text!r}") from None

    @property
    def listener(self) -> str:
        """The Kamailio socket protocol that carries it (WebSocket runs over TCP or TLS)."""
        return _LISTENERS[self]

    @property
    def connection(self) -> bool:
        """A connection-oriented transport: its flow is a connection (RFC 5626 3.5)."""
        return self is not Transport.UDP


_TRANSPORTS = {t.value: t for t in Transport}
_LISTENERS = {t: {Transport.WS: "tcp", Transport.WSS: "tls"}.get(t, t.value) for t in Transport}


@dataclass(frozen=True)
class Listener:
    """One configured SIP socket."""

    side: Side
    option: str  # the [edge] option: access_ws, core_sip, ...
    proto: str  # the Kamailio socket protocol: udp, tcp, tls
    host: str
    port: int

    @property
    def socket(self) -> str:
        return f"{self.proto}:{self.host}:{self.port}"

    @property
    def websocket(self) -> bool:
        return self.option in ("access_ws", "access_wss")


class SocketMap:
    """Every configured SIP socket, by side; answers "which side" and "which socket"."""

    def __init__(self, listeners: list[Listener]) -> None:
        self.listeners = listeners
        self._by_address = {(lst.proto, lst.host, lst.port): lst for lst in listeners}
        # Answers already given (the sockets are fixed at start; at most one entry per
        # socket and transport of ours, plus a few foreign ones).
        self._sides: dict[tuple[str, str, object], Side | None] = {}
        self._send: dict[tuple[Side, str], str | None] = {}

    @classmethod
    def from_config(cls, config) -> "SocketMap":
        listeners = []
        for option, proto, sock in sip_sockets(config):
            side = Side.ACCESS if option in ACCESS_SIP_OPTIONS else Side.CORE
            listeners.append(Listener(side, option, proto, sock.host, sock.port))
        return cls(listeners)

    def side_of(self, received_proto: str, ip: str, port: int) -> Side | None:
        """The side of the socket a message arrived on; None for a socket not ours."""
        key = (received_proto, ip, port)
        try:
            return self._sides[key]
        except KeyError:
            pass
        try:
            proto = Transport.parse(received_proto).listener
        except ValueError:
            return None
        found = self._by_address.get((proto, ip, int(port)))
        side = found.side if found is not None else None
        if side is not None or len(self._sides) < SIDE_CACHE_SIZE:
            self._sides[key] = side
        return side

    def send_socket(self, side: Side, transport: str) -> str | None:
        """The socket of ``side`` that sends over ``transport``; None when ``side`` has none.

        For a WebSocket the listener must be a WebSocket one of that side (a TCP
        socket that only speaks SIP over TCP does not hold browsers' connections
        in a multi-socket setup, but Kamailio finds the connection by address
        anyway: any TCP/TLS socket of the side will do, WebSocket ones first).
        """
        key = (side, transport)
        if key in self._send:
            return self._send[key]
        wanted = Transport.parse(transport)
        candidates = [lst for lst in self.listeners if lst.side is side and lst.proto == wanted.listener]
        if wanted in (Transport.WS, Transport.WSS):
            candidates.sort(key=lambda lst: not lst.websocket)
        self._send[key] = found = candidates[0].socket if candidates else None
        return found

    def transports(self, side: Side) -> set[str]:
        return {lst.proto for lst in self.listeners if lst.side is side}

    def has_websocket(self) -> bool:
        return any(lst.websocket for lst in self.listeners)

    def has_tls(self) -> bool:
        return any(lst.proto == "tls" for lst in self.listeners)

    def has_tcp(self) -> bool:
        return any(lst.proto in ("tcp", "tls") for lst in self.listeners)


_TRANSPORT_PARAM = re.compile(r";\s*transport=([A-Za-z]+)", re.IGNORECASE)
_HOST = re.compile(r"^sips?:(?:[^@;>]*@)?(\[[^\]]+\]|[^:;>?]+)", re.IGNORECASE)


def uri_transport(uri: str) -> Transport:
    """The transport a SIP URI asks for (RFC 3261 19.1.1; sips: means TLS)."""
    match = _TRANSPORT_PARAM.search(uri)
    if match:
        return Transport.parse(match.group(1))
    return Transport.TLS if uri.lower().startswith("sips:") else Transport.UDP


def uri_host(uri: str) -> str:
    match = _HOST.match(uri.strip().lstrip("<"))
    return match.group(1).lower() if match else ""


def unroutable(uri: str) -> bool:
    """A host no request can be sent to: ``*.invalid`` (RFC 6761 6.4), as browsers' Contacts."""
    host = uri_host(uri)
    return host == "invalid" or host.endswith(".invalid")


# Kamailio's protocol numbers (ip_addr.h), as nathelper writes them in an alias.
_PROTO_IDS = {"1": Transport.UDP, "2": Transport.TCP, "3": Transport.TLS, "4": Transport.SCTP,
              "5": Transport.WS, "6": Transport.WSS}
_ALIAS = re.compile(r";alias=[^;>~]+~\d+~(\d)", re.IGNORECASE)
# The user part of the Path URI the edge inserts names the flow's transport: a URI says
# "transport=ws" for WS and WSS alike (RFC 7118 5.2), the edge must know which listener.
PATH_USER_PREFIX = "e2ae-"
_PATH_USER = re.compile(r"^\s*<?sips?:" + PATH_USER_PREFIX + r"([a-z]+)@", re.IGNORECASE)


def alias_transport(uri: str) -> Transport | None:
    """The transport of a Contact ``alias`` (nathelper: ``;alias=ip~port~protoid``)."""
    match = _ALIAS.search(uri)
    return _PROTO_IDS.get(match.group(1)) if match else None


def path_user(received_proto: str) -> str:
    """The user part of the Path URI for a REGISTER that came over ``received_proto``."""
    return PATH_USER_PREFIX + Transport.parse(received_proto).value


def path_transport(route: str) -> Transport | None:
    """The flow's transport named by the edge's own Path URI at the top of ``route``."""
    match = _PATH_USER.match(route)
    if not match:
        return None
    try:
        return Transport.parse(match.group(1))
    except ValueError:
        return None


def core_next_hop(config, sockets: SocketMap) -> str:
    """``[edge] core_next_hop``, with ``;transport=`` for a core reachable by TCP or TLS only."""
    uri = config.edge_core_next_hop
    if _TRANSPORT_PARAM.search(uri) or uri.lower().startswith("sips:"):
        return uri
    core = sockets.transports(Side.CORE)
    if "udp" in core:
        return uri
    return f"{uri};transport={'tcp' if 'tcp' in core else 'tls'}"


class Action(str, Enum):
    """What the glue does with a request toward a side."""

    RELAY = "relay"  # relay from ``socket`` (flow: without opening a new connection)
    REPLY = "reply"  # answer ``status`` ``reason`` and stop


@dataclass(frozen=True)
class Decision:
    action: Action
    socket: str | None = None
    no_connect: bool = False  # a flow: Kamailio must not open a new connection to it
    status: int = 0
    reason: str = ""
    warning: str = ""


def toward(sockets: SocketMap, side: Side, next_hop_proto: str, destination_uri: str,
           *, flow: bool, flow_transport: Transport | None = None) -> Decision:
    """How a request leaves toward ``side``.

    ``next_hop_proto`` is Kamailio's ``$nh(P)``, ``destination_uri`` the URI it
    will resolve (``$du``, else ``$ru``), ``flow`` whether that destination is a
    client's flow (a Path ``received``, a Contact ``alias``, a connection the
    request must follow).  Toward access, a connection-oriented flow must not be
    re-opened (a browser cannot be connected to) and an ``*.invalid`` host is
    never resolved.  ``flow_transport`` is the flow's own transport when the
    edge knows it (its Path user, a Contact alias): WS and WSS are told apart
    there, not in ``next_hop_proto``.
    """
    try:
        transport = flow_transport if flow and flow_transport else Transport.parse(next_hop_proto or "udp")
    except ValueError:
        return Decision(Action.REPLY, status=NO_TRANSPORT[0], reason=NO_TRANSPORT[1],
                        warning=f"no {next_hop_proto} transport toward the {side.value} side")
    if side is Side.ACCESS and not flow and unroutable(destination_uri):
        return Decision(Action.REPLY, status=UNAVAILABLE[0], reason=UNAVAILABLE[1],
                        warning="no flow to the client (its address is a .invalid host)")
    socket = sockets.send_socket(side, transport.value)
    if socket is None:
        return Decision(Action.REPLY, status=NO_TRANSPORT[0], reason=NO_TRANSPORT[1],
                        warning=f"the {side.value} is unreachable over {transport.value}: no such socket")
    no_connect = side is Side.ACCESS and transport.connection and (flow or transport in (Transport.WS, Transport.WSS))
    return Decision(Action.RELAY, socket=socket, no_connect=no_connect)


def relay_failed(side: Side, decision: Decision) -> tuple[int, str, str]:
    """The answer when relaying as ``decision`` said failed: the flow is gone (430) or not."""
    if side is Side.ACCESS and decision.no_connect:
        return FLOW_FAILED[0], FLOW_FAILED[1], "the client's connection is gone"
    return 503, "Service Unavailable", f"the {side.value} is unreachable: the request could not be sent toward it"


def kamailio_defines(config) -> dict[str, str]:
    """The ``-A`` defines of ``deploy/kamailio.cfg`` for every configured socket.

    ``E2AE_<OPTION>`` holds the ``listen=`` value (with ``advertise``);
    ``E2AE_WITH_TCP``/``_TLS``/``_WS`` turn on what those sockets need;
    ``E2AE_REINVITE`` the dialog module's CSeq renumbering (``[pool] takeover =
    reinvite``, :mod:`plugin.reinvite`).
    """
    defines: dict[str, str] = {}
    sockets = SocketMap.from_config(config)
    for option, proto, sock in sip_sockets(config):
        defines[f"E2AE_{option.upper()}"] = sock.listen(proto)
    if sockets.has_tcp():
        defines["E2AE_WITH_TCP"] = "1"
    if sockets.has_tls():
        defines["E2AE_WITH_TLS"] = "1"
    if sockets.has_websocket():
        defines["E2AE_WITH_WS"] = "1"
    if getattr(config, "pool_takeover", "") == "reinvite":
        defines["E2AE_REINVITE"] = "1"
    return defines


__all__ = [
    "Action", "Decision", "PATH_USER_PREFIX", "alias_transport", "path_transport", "path_user", "FLOW_FAILED", "Listener", "SIP_OPTION_PROTO", "SocketMap", "Transport",
    "UNAVAILABLE", "core_next_hop", "kamailio_defines", "relay_failed", "toward", "unroutable",
    "uri_host", "uri_transport",
]
