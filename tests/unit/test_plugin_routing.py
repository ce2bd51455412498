"""plugin.routing: sides from every socket, send sockets per transport, flows, Path, 430/480."""

from __future__ import annotations

import pytest

from mediad.config import parse_config
from plugin.routing import (
    Action, SocketMap, Transport, alias_transport, core_next_hop, kamailio_defines, path_transport, path_user,
    relay_failed, toward, unroutable, uri_transport,
)
from iq import Side

CONFIG = parse_config(
    "[edge]\naccess_sip = 10.0.0.5:5060 advertise 203.0.113.5\naccess_tcp = 10.0.0.5:5060\n"
    "access_tls = 10.0.0.5:5061\naccess_ws = 10.0.0.5:8080\naccess_wss = 10.0.0.5:8443\n"
    "core_sip = 10.1.0.5:5060\ncore_tcp = 10.1.0.5:5060\n"
    "tls_certificate = /etc/e2ae/edge.pem\ntls_private_key = /etc/e2ae/edge.key\n")
SOCKETS = SocketMap.from_config(CONFIG)


@pytest.mark.parametrize("proto, ip, port, side", [
    ("udp", "10.0.0.5", 5060, Side.ACCESS),
    ("tcp", "10.0.0.5", 5060, Side.ACCESS),
    ("tls", "10.0.0.5", 5061, Side.ACCESS),
    ("ws", "10.0.0.5", 8080, Side.ACCESS),  # a WebSocket over the ws (TCP) listener
    ("wss", "10.0.0.5", 8443, Side.ACCESS),  # ... and over the wss (TLS) listener
    ("udp", "10.1.0.5", 5060, Side.CORE),
    ("tcp", "10.1.0.5", "5060", Side.CORE),
    ("tls", "10.1.0.5", 5060, None),  # no core TLS socket
    ("ws", "10.0.0.5", 8443, None),  # ws over the TLS listener is wss: not this one
    ("udp", "10.0.0.9", 5060, None),
    ("sctp", "10.0.0.5", 5060, None),
    ("carrier-pigeon", "10.0.0.5", 5060, None),
])
def test_side_from_every_socket_and_transport(proto, ip, port, side):
    assert SOCKETS.side_of(proto, ip, port) is side
    assert SOCKETS.side_of(proto, ip, port) is side  # the same answer once remembered
    fresh = SocketMap.from_config(CONFIG)
    assert fresh.side_of(proto.upper(), ip, port) is side and fresh.side_of(proto, ip, port) is side


def test_transports_parse_as_kamailio_and_people_write_them():
    assert Transport.parse("udp") is Transport.UDP and Transport.parse(" WSS ") is Transport.WSS
    assert [t.listener for t in Transport] == ["udp", "tcp", "tls", "tcp", "tls", "sctp"]
    with pytest.raises(ValueError, match="unknown SIP transport 'quic'"):
        Transport.parse("quic")


def test_a_foreign_socket_is_remembered_only_within_bounds():
    sockets = SocketMap.from_config(CONFIG)
    for port in range(1000):
        assert sockets.side_of("udp", "192.0.2.1", port) is None
    assert len(sockets._sides) <= 64
    assert sockets.side_of("udp", "10.1.0.5", 5060) is Side.CORE


def test_send_socket_per_side_and_transport_never_one_protocol_for_all():
    assert SOCKETS.send_socket(Side.CORE, "udp") == "udp:10.1.0.5:5060"
    assert SOCKETS.send_socket(Side.CORE, "tcp") == "tcp:10.1.0.5:5060"
    assert SOCKETS.send_socket(Side.CORE, "tls") is None
    assert SOCKETS.send_socket(Side.ACCESS, "ws") == "tcp:10.0.0.5:8080"
    assert SOCKETS.send_socket(Side.ACCESS, "wss") == "tls:10.0.0.5:8443"
    assert SOCKETS.send_socket(Side.ACCESS, "tls") == "tls:10.0.0.5:5061"


def test_kamailio_defines_name_every_socket_with_its_advertised_address():
    defines = kamailio_defines(CONFIG)
    assert defines["E2AE_ACCESS_SIP"] == "udp:10.0.0.5:5060 advertise 203.0.113.5:5060"
    assert defines["E2AE_ACCESS_WS"] == "tcp:10.0.0.5:8080"
    assert defines["E2AE_ACCESS_WSS"] == "tls:10.0.0.5:8443"
    assert defines["E2AE_CORE_TCP"] == "tcp:10.1.0.5:5060"
    assert "E2AE_CORE_TLS" not in defines
    assert {"E2AE_WITH_TCP", "E2AE_WITH_TLS", "E2AE_WITH_WS"} <= set(defines)
    plain = kamailio_defines(parse_config(""))
    assert plain == {"E2AE_ACCESS_SIP": "udp:127.0.0.1:5060", "E2AE_CORE_SIP": "udp:127.0.0.2:5060"}


def test_path_user_names_the_flows_transport_and_comes_back_from_the_route():
    assert path_user("wss") == "e2ae-wss"
    route = "<sip:e2ae-wss@10.1.0.5:5060;lr;received=sip:198.51.100.7:51234%3Btransport%3Dws>"
    assert path_transport(route) is Transport.WSS
    assert path_transport("<sip:e2ae-tcp@10.1.0.5;lr>, <sip:other@x;lr>") is Transport.TCP
    assert path_transport("<sip:10.1.0.5:5060;lr>") is None
    assert path_transport("<sip:e2ae-pigeon@10.1.0.5;lr>") is None


def test_alias_transport_from_nathelper_protocol_ids():
    assert alias_transport("sip:ab@xyz.invalid;transport=ws;alias=127.0.0.1~40592~6") is Transport.WSS
    assert alias_transport("sip:ab@xyz.invalid;transport=ws;alias=127.0.0.1~40592~5") is Transport.WS
    assert alias_transport("sip:ue@198.51.100.7:5062;alias=198.51.100.7~5062~1") is Transport.UDP
    assert alias_transport("sip:ue@198.51.100.7:5062") is None


@pytest.mark.parametrize("uri, expected", [
    ("sip:u@abc.invalid;transport=ws", True), ("sip:abc.invalid", True), ("<sip:x@INVALID>", True),
    ("sip:u@invalid.example.org", False), ("sip:u@10.0.0.1:5060", False), ("sips:[::1]:5061", False),
])
def test_unroutable_hosts_are_the_invalid_tld(uri, expected):
    assert unroutable(uri) is expected


def test_uri_transport():
    assert uri_transport("sip:a@b;transport=TCP") is Transport.TCP
    assert uri_transport("sips:a@b") is Transport.TLS
    assert uri_transport("sip:a@b") is Transport.UDP


def test_core_next_hop_gets_a_transport_when_the_core_has_no_udp_socket():
    assert core_next_hop(CONFIG, SOCKETS) == "sip:127.0.0.3:5060"
    tcp_only = parse_config("[edge]\ncore_sip = off\ncore_tcp = 127.0.0.2:5060\n")
    assert core_next_hop(tcp_only, SocketMap.from_config(tcp_only)) == "sip:127.0.0.3:5060;transport=tcp"
    explicit = parse_config("[edge]\ncore_sip = off\ncore_tcp = 127.0.0.2:5060\ncore_next_hop = sip:c;transport=udp\n")
    assert core_next_hop(explicit, SocketMap.from_config(explicit)) == "sip:c;transport=udp"


def test_toward_a_wss_flow_uses_the_wss_listener_and_never_connects():
    decision = toward(SOCKETS, Side.ACCESS, "ws", "sip:198.51.100.7:51234;transport=ws", flow=True,
                      flow_transport=Transport.WSS)
    assert decision.action is Action.RELAY
    assert decision.socket == "tls:10.0.0.5:8443" and decision.no_connect


def test_toward_a_udp_client_relays_from_the_udp_access_socket_and_may_send():
    decision = toward(SOCKETS, Side.ACCESS, "udp", "sip:ue@198.51.100.7:5062", flow=False)
    assert decision.action is Action.RELAY and decision.socket == "udp:10.0.0.5:5060" and not decision.no_connect


def test_toward_an_invalid_host_without_a_flow_is_480_never_a_send():
    decision = toward(SOCKETS, Side.ACCESS, "ws", "sip:ab@xyz.invalid;transport=ws", flow=False)
    assert (decision.action, decision.status) == (Action.REPLY, 480)
    assert ".invalid" in decision.warning


def test_toward_a_websocket_without_a_known_flow_never_opens_a_connection():
    decision = toward(SOCKETS, Side.ACCESS, "ws", "sip:198.51.100.7:51234;transport=ws", flow=False)
    assert decision.action is Action.RELAY and decision.no_connect


def test_toward_the_core_picks_the_core_socket_of_the_next_hops_transport():
    assert toward(SOCKETS, Side.CORE, "udp", "sip:127.0.0.3", flow=False).socket == "udp:10.1.0.5:5060"
    assert toward(SOCKETS, Side.CORE, "tcp", "sip:127.0.0.3;transport=tcp", flow=False).socket == "tcp:10.1.0.5:5060"
    refused = toward(SOCKETS, Side.CORE, "tls", "sips:127.0.0.3", flow=False)
    assert (refused.action, refused.status) == (Action.REPLY, 503) and "tls" in refused.warning
    unknown = toward(SOCKETS, Side.CORE, "pigeon", "sip:127.0.0.3", flow=False)
    assert (unknown.action, unknown.status) == (Action.REPLY, 503)


def test_a_failed_relay_to_a_flow_is_430_flow_failed_else_503():
    flow = toward(SOCKETS, Side.ACCESS, "tcp", "sip:198.51.100.7:40000;transport=tcp", flow=True,
                  flow_transport=Transport.TCP)
    assert relay_failed(Side.ACCESS, flow)[:2] == (430, "Flow Failed")
    core = toward(SOCKETS, Side.CORE, "udp", "sip:127.0.0.3", flow=False)
    assert relay_failed(Side.CORE, core)[0] == 503
