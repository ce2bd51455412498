"""The SIPp scenarios over TCP and TLS toward access.

Debian's SIPp 3.6.1 is built without OpenSSL (``-t l1`` answers "To use a TLS
transport you must compile SIPp with OpenSSL"), so over TLS it runs ``-t t1``
into :class:`TlsTunnel`, which carries each TCP connection over its own TLS
connection to the edge's TLS socket (Python's ``ssl``): the edge sees a TLS
client, SIPp the same scenario as over TCP.

The edge listens on access UDP, TCP and TLS (its certificate from the harness,
self-signed for loopback) and core UDP + TCP.  A WIC-originated call runs over
TCP and over TLS with the same scenario and the same checks as over UDP (the
rewritten offer at the core, the DTLS answer back); a core-originated call
reaches a WIC listening on TCP.  Replies and in-dialog requests follow the
WIC's connection; nothing is left in Redis or mediad.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading

import pytest

from tests.conftest import free_port
from tests.integration.edge_harness import Sipp, running_edge
from tests.integration.test_edge_sipp import (
    ACCESS_ANSWER, CORE_OFFER, UNBUNDLED, agw_fingerprint, core_uas, match_lines, run_pair,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_state_left")]


@pytest.fixture(scope="module")
def edge(redis_server):
    tcp, tls = free_port(host="127.0.0.1"), free_port(host="127.0.0.1")
    with running_edge(redis_server, edge_extra=f"access_tcp = 127.0.0.1:{tcp}\naccess_tls = 127.0.0.1:{tls}\n",
                      policy_extra=UNBUNDLED) as e:  # the expected bodies of test_edge_sipp
        e.ports = {"tcp": tcp, "tls": tls}
        yield e


class TlsTunnel:
    """TCP on 127.0.0.1:``port`` in, one TLS connection to ``target`` out per connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE  # the edge's self-signed loopback certificate
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                plain, _ = self.server.accept()
            except OSError:
                return
            secure = self.context.wrap_socket(socket.create_connection(self.target, timeout=10))
            secure.settimeout(None)
            self.sockets += [plain, secure]
            threading.Thread(target=self._pump, args=(plain, secure), daemon=True).start()
            threading.Thread(target=self._pump, args=(secure, plain), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()
        for s in self.sockets:
            s.close()


@pytest.fixture
def tunnel(edge):
    t = TlsTunnel(("127.0.0.1", edge.ports["tls"]))
    yield t
    t.close()


@pytest.mark.req("SRTP-4", "SRTP-5")
@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_wic_originated_call_over_tcp_and_tls(edge, sipps, tunnel, transport):
    uas = core_uas(edge)
    remote = ("127.0.0.1", edge.ports["tcp"] if transport == "tcp" else tunnel.port)
    uac = Sipp("wic_call_uac.xml", "127.0.0.1", remote=remote, extra=["-s", "callee", "-d", "100", "-t", "t1"])
    sipps += [uas, uac]
    run_pair(uas, uac)
    offer = uas.received("INVITE ")[0]
    match_lines(offer.body_lines, CORE_OFFER)
    ok = [m for m in uac.received("SIP/2.0 200") if m.header("CSeq") == ["1 INVITE"]][0]
    values = match_lines(ok.body_lines, ACCESS_ANSWER)
    assert values["fp"] == agw_fingerprint(edge)
    # The edge's Via toward the core is UDP; the WIC's own Via says its transport.
    assert offer.header("Via")[0].startswith("SIP/2.0/UDP 127.0.0.2:")
    assert offer.header("Via")[1].upper().startswith("SIP/2.0/TCP ")  # SIPp's own (it speaks TCP)
    # ... but the edge received it over ``transport``: the Via's received/rport are the
    # connection's, and replies went back over it.
    assert re.search(r";rport=\d+", offer.header("Via")[1]), offer.header("Via")
    # Double Record-Route across the transport change: the access side's names it.
    record_route = ",".join(ok.header("Record-Route"))
    assert re.search(rf"sip:127\.0\.0\.1:{edge.ports[transport]};transport={transport};r2=on;lr", record_route), record_route
    assert [m.first_line.split()[0] for m in uas.received()] == ["INVITE", "ACK", "BYE"]


def test_core_originated_call_to_a_wic_on_tcp(edge, sipps):
    wic = Sipp("wic_uas.xml", "127.0.0.1", extra=["-t", "t1"])
    core = Sipp("core_call_uac.xml", "127.0.0.3", remote=edge.core, keys={"wic_uri": ""}, extra=["-d", "100"])
    core.keys["wic_uri"] = f"sip:wic@127.0.0.1:{wic.port};transport=tcp"
    sipps += [wic, core]
    run_pair(wic, core)
    invite = wic.received("INVITE ")[0]
    assert invite.header("Via")[0].startswith(f"SIP/2.0/TCP 127.0.0.1:{edge.ports['tcp']};"), invite.header("Via")
    assert "UDP/TLS/RTP/SAVP" in invite.body
    assert [m.first_line.split()[0] for m in wic.received()] == ["INVITE", "ACK", "BYE"]
