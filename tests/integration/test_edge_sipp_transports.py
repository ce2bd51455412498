"""The SIPp scenarios over TCP and TLS toward access (SIPp ``-t t1`` / ``-t l1``).

The edge listens on access UDP, TCP and TLS (its certificate from the harness,
self-signed for loopback) and core UDP + TCP.  A WIC-originated call runs over
TCP and over TLS with the same scenario and the same checks as over UDP (the
rewritten offer at the core, the DTLS answer back); a core-originated call
reaches a WIC listening on TCP.  Replies and in-dialog requests follow the
WIC's connection; nothing is left in Redis or mediad.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import free_port
from tests.integration.edge_harness import Edge, Sipp
from tests.integration.test_edge_sipp import (
    ACCESS_ANSWER, CORE_OFFER, agw_fingerprint, core_uas, match_lines, run_pair,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def edge(redis_server):
    tcp, tls = free_port(host="127.0.0.1"), free_port(host="127.0.0.1")
    e = Edge(redis_server, edge_extra=f"access_tcp = 127.0.0.1:{tcp}\naccess_tls = 127.0.0.1:{tls}\n")
    e.conf.edge_extra += f"core_tcp = 127.0.0.2:{e.conf.core_port}\n"
    e.config_path.write_text(e.conf.text())
    e.ports = {"tcp": tcp, "tls": tls}
    try:
        e.start()
        yield e
    finally:
        e.stop()


@pytest.fixture(autouse=True)
def _clean(edge):
    yield
    assert edge.wait_no_dialogs() == []
    assert edge.mediad_dialogs() == []


@pytest.fixture
def sipps():
    started: list[Sipp] = []
    yield started
    for s in started:
        s.stop()


def _transport_options(edge: Edge, transport: str) -> list[str]:
    if transport == "tcp":
        return ["-t", "t1"]
    return ["-t", "l1", "-tls_cert", str(edge.tls_certificate), "-tls_key",
            str(edge.tls_certificate.with_suffix(".key"))]


@pytest.mark.req("SRTP-4", "SRTP-5")
@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_wic_originated_call_over_tcp_and_tls(edge, sipps, transport):
    uas = core_uas(edge)
    uac = Sipp("wic_call_uac.xml", "127.0.0.1", remote=("127.0.0.1", edge.ports[transport]),
               extra=["-s", "callee", "-d", "100", *_transport_options(edge, transport)])
    sipps += [uas, uac]
    run_pair(uas, uac)
    offer = uas.received("INVITE ")[0]
    match_lines(offer.body_lines, CORE_OFFER)
    ok = [m for m in uac.received("SIP/2.0 200") if m.header("CSeq") == ["1 INVITE"]][0]
    values = match_lines(ok.body_lines, ACCESS_ANSWER)
    assert values["fp"] == agw_fingerprint(edge)
    # The edge's Via toward the core is UDP; the WIC's own Via says its transport.
    assert offer.header("Via")[0].startswith("SIP/2.0/UDP 127.0.0.2:")
    assert offer.header("Via")[1].upper().startswith(f"SIP/2.0/{transport.upper()} ")
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
