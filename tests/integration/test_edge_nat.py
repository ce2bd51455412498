"""The edge behind a 1:1 NAT: bound to a private address, advertising the public one.

Two network namespaces made by the test: the edge's, whose interface has the
private address 10.77.0.5 and which DNATs the public address 203.0.113.10
(TEST-NET-3) to it (iptables ``PREROUTING``, as a cloud host's 1:1 NAT does),
and the client's, 203.0.113.20, which has no route to 10.77.0.0/24: it reaches
only the public address.  In the edge's namespace: Redis, mediad (media bound on
10.77.0.5, advertised as 203.0.113.10), Kamailio (WSS bound on 10.77.0.5:PORT
``advertise 203.0.113.10:PORT``), the core registrar and the core UA on
loopback.  In the client's: headless Chromium with JsSIP on the web phone page.

The phone registers to ``wss://203.0.113.10:PORT``, calls the core UA and gets
audio both ways: the answer's ``c=`` line and ICE candidate carry the public
address, the browser's selected remote candidate is the public address, and
mediad's sockets are bound on the private one.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time

import pytest

from deploy.demo_core import CORE_UA_HOST, DOMAIN, CoreRegistrar, CoreUa
from deploy.sip_tls import spki_sha256
from tests.conftest import RedisServer, free_port
from tests.integration.edge_harness import Edge
from tests.integration.webrtc_harness import Browser, NamedNetns, PageServer, web_ready

pytestmark = [pytest.mark.integration, pytest.mark.skipif(web_ready() is not None, reason=str(web_ready()))]

PRIVATE, PUBLIC, CLIENT = "10.77.0.5", "203.0.113.10", "203.0.113.20"


@pytest.fixture
def nat():
    """The two namespaces, the veth between them and the DNAT rule."""
    suffix = f"{os.getpid()}-{threading.get_ident() % 10000}"
    edge_ns, client_ns = NamedNetns(f"e2ae-nat-edge-{suffix}"), None
    try:
        client_ns = NamedNetns(f"e2ae-nat-client-{suffix}")
        edge_ns.run("ip", "link", "add", "veth-edge", "type", "veth", "peer", "name", "veth-client",
                    "netns", client_ns.name)
        edge_ns.run("ip", "addr", "add", f"{PRIVATE}/24", "dev", "veth-edge")
        edge_ns.run("ip", "link", "set", "veth-edge", "up")
        edge_ns.run("ip", "route", "add", "203.0.113.0/24", "dev", "veth-edge")
        edge_ns.run("iptables", "-t", "nat", "-A", "PREROUTING", "-d", PUBLIC, "-j", "DNAT",
                    "--to-destination", PRIVATE)
        client_ns.run("ip", "addr", "add", f"{CLIENT}/24", "dev", "veth-client")
        client_ns.run("ip", "link", "set", "veth-client", "up")
        mac = json.loads(edge_ns.run("ip", "-j", "link", "show", "veth-edge"))[0]["address"]
        # The "router" answers for the public address: its MAC, as the provider's gateway would.
        client_ns.run("ip", "neigh", "add", PUBLIC, "lladdr", mac, "dev", "veth-client")
        yield edge_ns, client_ns
    finally:
        if client_ns is not None:
            client_ns.delete()
        edge_ns.delete()


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.timeout(150)
def test_a_client_behind_the_public_address_registers_and_calls_with_media_both_ways(nat):
    edge_ns, client_ns = nat
    import asyncio

    loop = asyncio.new_event_loop()
    with edge_ns.enter():
        redis = RedisServer()
        redis.start()
        wss = free_port(host=PRIVATE)
        edge = Edge(redis, access_host=PRIVATE,
                    edge_extra=f"access_wss = {PRIVATE}:{wss} advertise {PUBLIC}:{wss}\n",
                    mediad_extra=f"access_advertise = {PUBLIC}\n")
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
    registrar = ua = browser = pages = None
    try:
        with edge_ns.enter():
            edge.start()
            ua_port = free_port(host=CORE_UA_HOST)
            registrar = CoreRegistrar(edge.next_hop, (CORE_UA_HOST, ua_port))
            registrar.start()
            ua = CoreUa(CORE_UA_HOST, ua_port, edge.next_hop)
            asyncio.run_coroutine_threadsafe(ua.open(), loop).result(10)
        with client_ns.enter():
            assert not _reachable(PRIVATE, wss)  # the client reaches only the public address
            assert _reachable(PUBLIC, wss)
            pages = PageServer()
            browser = Browser(pages.url("jssip.html"), spki=spki_sha256(edge.tls_certificate))
        ms = browser.eval(f"phone.register({{server: 'wss://{PUBLIC}:{wss}', uri: 'sip:natted@{DOMAIN}'}})")
        assert ms > 0
        bindings = registrar.bindings()
        # The flow the edge saw: the client's own address (DNAT changed only the destination).
        assert re.search(rf"received=sip:{re.escape(CLIENT)}:\d+", bindings), bindings
        setup = browser.eval(f"phone.call('sip:tone@{DOMAIN}')")
        print(f"NAT: REGISTER -> 200 {ms} ms, call setup {setup} ms")
        time.sleep(2.0)
        stats = browser.eval("phone.stats()")
        deadline = time.monotonic() + 6
        while (stats["inbound"] or {}).get("audioLevel", 0) <= 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            stats = browser.eval("phone.stats()")
        answer = browser.eval("phone.pc().remoteDescription.sdp")
        # SDP carries the advertised address; the sockets are bound on the private one.
        assert re.search(rf"^c=IN IP4 {re.escape(PUBLIC)}\r?$", answer, re.M), answer
        candidates = re.findall(r"^a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host", answer, re.M)
        assert candidates and all(host == PUBLIC for host, _ in candidates), answer
        assert PRIVATE not in answer
        with edge_ns.enter():
            port = int(candidates[0][1])
            with pytest.raises(OSError):  # mediad holds it, on the private address
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind((PRIVATE, port))
        assert stats["remote"]["address"] == PUBLIC, stats["remote"]
        assert stats["transport"]["dtlsState"] == "connected", stats["transport"]
        assert stats["inbound"]["packetsReceived"] >= 50 and stats["inbound"]["audioLevel"] > 0.05, stats["inbound"]
        assert stats["outbound"]["packetsSent"] >= 50
        assert ua.rtp.received >= 50 and ua.rtp.sound >= 3, ua.rtp
        # SIP toward the client names the public address: the Record-Route its dialog keeps.
        routes = browser.eval("phone.session._dialog._route_set.map(String)")
        assert any(f"{PUBLIC}:{wss}" in route for route in routes), routes
        assert not any(PRIVATE in route for route in routes), routes
        browser.eval("phone.hangup()")
        with edge_ns.enter():
            assert edge.wait_no_dialogs(8) == []
            assert edge.mediad_dialogs() == []
    finally:
        if browser is not None:
            browser.close()
        if pages is not None:
            pages.stop()
        if ua is not None:
            loop.call_soon_threadsafe(ua.close)
        loop.call_soon_threadsafe(loop.stop)
        with edge_ns.enter():
            if registrar is not None:
                registrar.stop()
            edge.stop()
            redis.stop()
