"""Web phones in Chromium through the edge: JsSIP 3.13 and SIP.js 0.21 over WSS.

Real parts only, in one loopback-only network namespace for the module
(``chromium_peer.private_loopback_netns``): Redis, mediad and Kamailio with the
plugin (access UDP, TCP, WS, WSS; core UDP and TCP), the core registrar
(``deploy/core_registrar.cfg``: registrar + usrloc with Path) on the edge's core
next hop, the core UA (plain RTP, a tone) behind it, and headless Chromium driven
by playwright-core (``web/driver.mjs``) on the web phone's pages (``web/build``).
The browser pins the edge's self-signed certificate by its SPKI hash.

Each test registers a browser phone over WSS (the registrar then holds a binding
whose Path names the edge and the client's flow), calls the core UA or is called
by it through that Path, measures audio both ways in the browser (getStats:
packetsReceived, audioLevel with the remote track playing in an audio element)
and at the core UA (RTP packets, and how many carry sound), and hangs up from one
side or the other; nothing is left in Redis or mediad after.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import pytest

from deploy.sip_tls import spki_sha256
from tests.conftest import RedisServer, free_port
from tests.integration.chromium_peer import interfaces, private_loopback_netns
from tests.integration.edge_harness import Edge
from deploy.demo_core import CORE_UA_HOST, DOMAIN, CoreRegistrar, CoreUa
from tests.integration.webrtc_harness import Browser, BrowserError, PageServer, web_ready

pytestmark = [pytest.mark.integration, pytest.mark.skipif(web_ready() is not None, reason=str(web_ready()))]

MEDIA_SECONDS = 2.0
MIN_PACKETS = 50  # of 100 in 2 s of 20 ms packets
PHONES = {"jssip": "jssip.html", "sipjs": "sipjs.html"}


class World:
    """Everything one module's tests share: the edge, the core, the pages."""

    def __init__(self, policy_extra: str = "", mediad_extra: str = "") -> None:
        self.policy_extra = policy_extra
        self.mediad_extra = mediad_extra
        self.redis = RedisServer()
        self.edge: Edge | None = None
        self.registrar: CoreRegistrar | None = None
        self.pages: PageServer | None = None
        self.browsers: dict[str, Browser] = {}
        # The core UA's loop runs in its own thread (started inside the namespace, so its
        # sockets are there too) while the test waits on the browser.
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="core-ua", daemon=True)
        self.thread.start()

    def start(self) -> None:
        self.redis.start()
        ws, wss, tcp = free_port(host="127.0.0.1"), free_port(host="127.0.0.1"), free_port(host="127.0.0.1")
        self.ports = {"ws": ws, "wss": wss, "tcp": tcp}
        self.edge = Edge(self.redis, policy_extra=self.policy_extra, mediad_extra=self.mediad_extra, edge_extra=(
            f"access_tcp = 127.0.0.1:{tcp}\naccess_ws = 127.0.0.1:{ws}\naccess_wss = 127.0.0.1:{wss}\n"))
        self.edge.start()
        self.core_ua_port = free_port(host=CORE_UA_HOST)
        self.registrar = CoreRegistrar(self.edge.next_hop, (CORE_UA_HOST, self.core_ua_port))
        self.registrar.start()
        self.pages = PageServer()

    @property
    def wss(self) -> str:
        return f"wss://127.0.0.1:{self.ports['wss']}"

    def browser(self, stack: str) -> Browser:
        if stack not in self.browsers:
            self.browsers[stack] = Browser(self.pages.url(PHONES[stack]),
                                           spki=spki_sha256(self.edge.tls_certificate))
        return self.browsers[stack]

    def core_ua(self, **options) -> CoreUa:
        ua = CoreUa(CORE_UA_HOST, self.core_ua_port, self.edge.next_hop, **options)
        self.run(ua.open())
        return ua

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self.loop).result(timeout + 5)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def stop(self) -> None:
        for browser in self.browsers.values():
            browser.close()
        if self.pages:
            self.pages.stop()
        if self.registrar:
            self.registrar.stop()
        if self.edge:
            self.edge.stop()
        self.redis.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def world():
    with private_loopback_netns():
        assert interfaces() == ["lo"]
        w = World()
        try:
            w.start()
            yield w
        finally:
            w.stop()


def _register(world: World, stack: str, user: str) -> tuple[Browser, int]:
    browser = world.browser(stack)
    ms = browser.eval(f"phone.register({{server: {json.dumps(world.wss)}, uri: 'sip:{user}@{DOMAIN}'}})")
    return browser, ms


def _media(world: World, browser: Browser, ua: CoreUa) -> dict:
    """Let audio flow, then the browser's view (getStats) with the core UA's counts."""
    time.sleep(MEDIA_SECONDS)
    deadline = time.monotonic() + 6
    stats = browser.eval("phone.stats()")
    while (stats["inbound"] or {}).get("audioLevel", 0) <= 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        stats = browser.eval("phone.stats()")
    return stats


def _check_audio(stats: dict, ua: CoreUa, answer_fingerprint: str | None = None) -> None:
    transport = stats["transport"]
    assert stats["connectionState"] == "connected", stats
    assert transport["dtlsState"] == "connected", transport
    assert transport["srtpCipher"], transport
    if answer_fingerprint:
        assert stats["remoteCertificate"]["fingerprint"].upper() == answer_fingerprint.upper()
    inbound, outbound = stats["inbound"], stats["outbound"]
    assert outbound["packetsSent"] >= MIN_PACKETS, outbound
    assert inbound["packetsReceived"] >= MIN_PACKETS, inbound
    # The core's tone, decrypted by Chromium and played: a level well over silence.
    assert inbound.get("audioLevel", 0) > 0.05, inbound
    # The browser's audio at the core, as plain RTP: its fake microphone beeps.
    assert ua.rtp.received >= MIN_PACKETS, ua.rtp
    assert ua.rtp.sound >= 3, ua.rtp


def _hang_up(browser: Browser) -> None:
    """End the browser's call whatever happened (a failed test must not leave it up)."""
    try:
        browser.eval("phone.status.call === 'ended' || phone.status.call === 'failed' || phone.hangup()")
    except BrowserError:
        pass


def _wait_clean(world: World) -> None:
    assert world.edge.wait_no_dialogs(8) == []
    assert world.edge.mediad_dialogs() == []


@pytest.mark.parametrize("stack", ["jssip", "sipjs"])
@pytest.mark.timeout(120)
def test_register_over_wss_leaves_a_binding_with_the_edges_path(world, stack):
    browser, ms = _register(world, stack, f"reg-{stack}")
    assert isinstance(ms, int) and ms > 0
    print(f"{stack}: REGISTER -> 200 in {ms} ms")
    bindings = world.registrar.bindings()
    assert f"AoR: reg-{stack}\n" in bindings, bindings
    entry = bindings[bindings.find(f"AoR: reg-{stack}\n"):]
    # The Path names the edge's core socket and, in "received", the client's flow: its
    # source address and port over the WebSocket (a URI names both ws and wss "ws"; the
    # Path's user part says which).
    path = re.search(r"Path: <([^>]*)>", entry)
    assert path, entry[:2000]
    assert path.group(1).startswith(f"sip:e2ae-wss@127.0.0.2:{world.edge.conf.core_port};lr;received=sip:127.0.0.1:")
    assert re.search(r"received=sip:127\.0\.0\.1:\d+%3Btransport%3Dwss?$", path.group(1), re.I), path.group(1)
    contact = re.search(r"Contact: \{\s*Address: (\S+)", entry)
    assert contact and ".invalid" in contact.group(1), entry[:1500]  # the browser's own Contact, kept


@pytest.mark.parametrize("stack", ["jssip", "sipjs"])
@pytest.mark.timeout(120)
def test_browser_calls_the_core_ua_audio_both_ways_bye_from_the_browser(world, stack):
    browser, _ = _register(world, stack, f"caller-{stack}")
    ua = world.core_ua()
    try:
        setup_ms = browser.eval(f"phone.call('sip:tone@{DOMAIN}')")
        print(f"{stack}: call setup over WSS {setup_ms} ms")
        stats = _media(world, browser, ua)
        offer = ua.offers[0]
        assert re.search(r"^m=audio \d+ RTP/AVPF ", offer, re.M), offer
        assert "a=fingerprint" not in offer and "a=candidate" not in offer
        # The core does not multiplex RTCP (its answer has no a=rtcp-mux); the answer the
        # browser accepted does (Chromium refuses one without it): RTCP demuxed at mediad.
        assert "a=rtcp-mux" not in ua.sdp_sent
        assert "a=rtcp-mux" in browser.eval("phone.pc().remoteDescription.sdp")
        _check_audio(stats, ua)
        print(f"{stack} -> core: {stats['outbound']['packetsSent']} sent, {ua.rtp.received} received at the core; "
              f"core -> {stack}: {ua.rtp.sent} sent, {stats['inbound']['packetsReceived']} received")
        browser.eval("phone.hangup()")
        deadline = time.monotonic() + 5
        while not ua.byes and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ua.byes == 1
    finally:
        _hang_up(browser)
        world.loop.call_soon_threadsafe(ua.close)
    _wait_clean(world)


@pytest.mark.parametrize("stack", ["jssip", "sipjs"])
@pytest.mark.timeout(120)
def test_core_ua_calls_the_registered_browser_through_the_path_bye_from_the_core(world, stack):
    browser, _ = _register(world, stack, f"callee-{stack}")
    ua = world.core_ua(profile="RTP/AVP")
    try:
        t0 = time.monotonic()
        reply = world.run(ua.call(f"callee-{stack}"))
        assert reply.status == 200, (reply.first_line, world.edge.kamailio_log_text()[-3000:])
        print(f"{stack}: core -> browser call answered in {1000 * (time.monotonic() - t0):.0f} ms")
        assert browser.eval("phone.waitEstablished(10000)") is not None
        answer = ua.answers[0]
        assert re.search(r"^m=audio \d+ RTP/AVP ", answer, re.M), answer
        stats = _media(world, browser, ua)
        _check_audio(stats, ua)
        print(f"core -> {stack}: {ua.rtp.sent} sent, {stats['inbound']['packetsReceived']} received; "
              f"{stack} -> core: {stats['outbound']['packetsSent']} sent, {ua.rtp.received} received")
        bye = world.run(ua.bye())
        assert bye.status == 200
        browser.eval("(async () => { for (let i = 0; i < 100 && phone.status.call !== 'ended'; i++)"
                     " await new Promise(r => setTimeout(r, 50)); return phone.status.call; })()")
        assert browser.eval("phone.status.call") == "ended"
    finally:
        _hang_up(browser)
        world.loop.call_soon_threadsafe(ua.close)
    _wait_clean(world)


def _handshakes(world: World) -> float:
    """DTLS handshakes mediad completed so far (its Prometheus counter, every role)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{world.edge.conf.mediad_metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "e2ae_mediad_dtls_handshakes_total" and sample.labels.get("result") == "ok")


def _call(world: World, browser: Browser, target: str) -> int:
    """Place the browser's call; a failure says what the edge logged."""
    try:
        return browser.eval(f"phone.call('{target}')")
    except BrowserError as exc:
        raise AssertionError(f"{exc}\n{browser.eval('phone.status.events')}\n"
                             f"{world.edge.kamailio_log_text()[-3000:]}") from None


def _tls_id(sdp: str) -> str:
    found = re.findall(r"^a=tls-id:(\S+)", sdp, re.M)
    assert found, sdp
    return found[0]


@pytest.mark.req("SRTP-3")
@pytest.mark.parametrize("stack", ["jssip", "sipjs"])
@pytest.mark.timeout(120)
def test_hold_and_unhold_from_the_browser_keep_the_dtls_association(world, stack):
    browser, _ = _register(world, stack, f"holder-{stack}")
    ua = world.core_ua()
    try:
        _call(world, browser, f"sip:tone@{DOMAIN}")
        before = _media(world, browser, ua)  # audio flows before the hold
        assert before["inbound"], before
        handshakes = _handshakes(world)
        answer_before = browser.eval("phone.remoteSdps()")[-1]
        assert before["transport"]["dtlsState"] == "connected", before["transport"]
        browser.eval("phone.hold()")
        invites_on_hold = len(ua.offers)
        assert invites_on_hold >= 2, ua.offers  # the re-INVITE reached the core
        assert re.search(r"^a=(sendonly|inactive)", ua.offers[-1], re.M), ua.offers[-1]
        browser.eval("phone.unhold()")
        assert len(ua.offers) >= invites_on_hold + 1
        assert re.search(r"^a=sendrecv", ua.offers[-1], re.M) or "a=send" not in ua.offers[-1]
        answers = browser.eval("phone.remoteSdps()")
        answer_after = answers[-1]
        time.sleep(1.0)
        after = _media(world, browser, ua)
        # The same association: the answers to the re-INVITEs repeat the tls-id (RFC 8842 5.3),
        # the browser never ran a new handshake (same transport, same certificate, connected
        # throughout) and audio flows again after the unhold.
        assert _tls_id(answer_after) == _tls_id(answer_before)
        assert len({_tls_id(sdp) for sdp in answers[-3:]}) == 1, answers[-3:]
        assert after["transport"]["dtlsState"] == "connected"
        assert after["transport"]["id"] == before["transport"]["id"]
        assert _handshakes(world) == handshakes  # mediad ran no new handshake
        assert after["inbound"]["packetsReceived"] > before["inbound"]["packetsReceived"] + MIN_PACKETS // 2
        assert browser.eval("phone.status.holds") >= 1
    finally:
        _hang_up(browser)
        world.loop.call_soon_threadsafe(ua.close)
    _wait_clean(world)


@pytest.mark.timeout(120)
def test_a_core_that_refuses_avpf_gets_the_same_offer_as_avp_in_the_same_transaction(world):
    browser, _ = _register(world, "jssip", "avp-caller")
    ua = world.core_ua(profile="RTP/AVP", refuse_profiles=("RTP/AVPF",))
    try:
        _call(world, browser, f"sip:tone@{DOMAIN}")
        stats = _media(world, browser, ua)
        offers = list(dict.fromkeys(ua.offers))  # a retransmitted INVITE counts once
        assert len(offers) == 2, offers
        first, second = offers
        assert re.search(r"^m=audio (\d+) RTP/AVPF ", first, re.M)
        assert re.search(r"^m=audio (\d+) RTP/AVP ", second, re.M) and "a=rtcp-fb" not in second
        # The same offer (same media address and port), a new branch of one INVITE transaction.
        assert re.search(r"^m=audio (\d+)", first, re.M).group(1) == re.search(r"^m=audio (\d+)", second, re.M).group(1)
        assert stats["inbound"], (ua.rtp, ua.remote_media, ua.requests, stats["transport"],
                                  world.edge.mediad_log.read_text(errors="replace")[-2500:])
        _check_audio(stats, ua)
        # The browser still sees its own profile.
        assert re.search(r"^m=audio \d+ UDP/TLS/RTP/SAVPF ", browser.eval("phone.remoteSdps()")[-1], re.M)
    finally:
        _hang_up(browser)
        world.loop.call_soon_threadsafe(ua.close)
    _wait_clean(world)


@pytest.mark.timeout(120)
def test_a_call_to_a_client_whose_websocket_dropped_gets_430_and_leaves_nothing(world):
    dropped = Browser(world.pages.url(PHONES["jssip"]), spki=spki_sha256(world.edge.tls_certificate))
    try:
        dropped.eval(f"phone.register({{server: {json.dumps(world.wss)}, uri: 'sip:gone@{DOMAIN}'}})")
    finally:
        dropped.close()  # Chromium dies: its WebSocket closes, no REGISTER with Expires 0
    assert "AoR: gone\n" in world.registrar.bindings()  # the registrar still holds the binding
    ua = world.core_ua()
    try:
        t0 = time.monotonic()
        reply = world.run(ua.call("gone"), timeout=20)
        elapsed = time.monotonic() - t0
    finally:
        world.loop.call_soon_threadsafe(ua.close)
    assert reply.status == 430, reply.first_line
    assert elapsed < 5, elapsed
    assert "connection" in reply.get("warning"), reply.headers
    _wait_clean(world)
