"""A killed mediad whose addresses cannot move: both sides are re-INVITEd, the call goes on.

``[pool] takeover = reinvite`` with a ``takeover_hook`` that fails (no floating
address at all), in one loopback-only network namespace: Redis, three mediads on
three loopback "hosts" (access on 127.0.0.1N, core on 127.0.1.1N), Kamailio with
the plugin (WSS toward access), the core registrar and the core UA (plain RTP, a
tone), and JsSIP 3.13 in headless Chromium.  The node holding the call is killed
with SIGKILL; a survivor gives the call new core ports and new access
terminations (new port, ICE credentials, its own certificate), the edge
re-INVITEs the core and the WIC (Chromium restarts ICE and, on the new
fingerprint, DTLS) and the call's media flows again.  Measured and printed:
calls lost, kill to both sides re-INVITEd, the media gap each way (at the core
from its RTP, at Chromium from getStats' inbound packets, polled every 0.1 s),
DTLS handshakes on the survivor, re-INVITEs sent and answered.  Each call is
then ended, once by the WIC (a WIC-originated call) and once by the core (a
core-originated call, the mirror), and both ends must accept the BYE.
"""

from __future__ import annotations

import re
import threading
import time

import pytest

from deploy.sip_tls import spki_sha256
from deploy.demo_core import CORE_UA_HOST, DOMAIN, CoreRegistrar, CoreUa
from tests.conftest import RedisServer, free_port
from tests.integration.chromium_peer import interfaces, private_loopback_netns
from tests.integration.edge_harness import CONTROL_SECRET, Edge
from tests.integration.conftest import Mediad
from tests.integration.test_edge_pool import HEARTBEAT, HOSTS, WEIGHTS, Pool, clean_pool_keys
from tests.integration.test_edge_takeover import CACHE, handshakes
from tests.integration.test_webrtc_browsers import World, _call, _hang_up
from tests.integration.webrtc_harness import Browser, PageServer, web_ready

pytestmark = [pytest.mark.integration, pytest.mark.skipif(web_ready() is not None, reason=str(web_ready()))]

POLL_S = 0.1  # Chromium's getStats is read this often: the WIC's gap is known to this step
AFTER_S = 10.0  # how long media is watched after the kill


class PoolWorld(World):
    """The browsers' world (test_webrtc_browsers.World) over a pool of three mediads."""

    def start(self) -> None:
        self.redis.start()
        clean_pool_keys(self.redis)
        ws, wss, tcp = free_port(host="127.0.0.1"), free_port(host="127.0.0.1"), free_port(host="127.0.0.1")
        self.ports = {"ws": ws, "wss": wss, "tcp": tcp}
        self.edge = Edge(self.redis, edge_extra=(
            f"access_tcp = 127.0.0.1:{tcp}\naccess_ws = 127.0.0.1:{ws}\naccess_wss = 127.0.0.1:{wss}\n"))
        with open(self.edge.config_path, "a") as conf:
            conf.write(f"\n[pool]\nregistry = on\ncache = {CACHE}\ntakeover = reinvite\n")
        self.nodes = {name: self._node(name) for name in HOSTS}
        self.edge.start_kamailio()
        self.pool = Pool(self.edge, self.nodes)
        self.core_ua_port = free_port(host=CORE_UA_HOST)
        self.registrar = CoreRegistrar(self.edge.next_hop, (CORE_UA_HOST, self.core_ua_port))
        self.registrar.start()
        self.pages = PageServer()

    def _node(self, name: str) -> Mediad:
        n = HOSTS[name]
        node = Mediad(self.edge.dir, self.redis.url, control_host=f"127.0.0.{n}", access_address=f"127.0.0.{n}",
                      core_address=f"127.0.1.{n}", control_secret=CONTROL_SECRET, node_id=name,
                      weight=str(WEIGHTS[name]), heartbeat=str(HEARTBEAT), dtls_handshake_timeout="30")
        node.secret = CONTROL_SECRET
        with open(node.config_path, "a") as conf:  # no address moves: the hook always fails
            conf.write("[pool]\ntakeover = reinvite\ntakeover_hook = /bin/false {address}\n")
        node.start()
        return node

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            for node in getattr(self, "nodes", {}).values():
                node.stop()


@pytest.fixture(scope="module")
def world():
    with private_loopback_netns():
        assert interfaces() == ["lo"]
        w = PoolWorld()
        try:
            w.start()
            yield w
        finally:
            w.stop()


class CoreWatch(threading.Thread):
    """The core UA's RTP arrivals, sampled every 10 ms: (time, packets received so far)."""

    def __init__(self, ua: CoreUa) -> None:
        super().__init__(daemon=True)
        self.ua = ua
        self.samples: list[tuple[float, int]] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            self.samples.append((time.monotonic(), self.ua.rtp.received))
            time.sleep(0.01)


def gap(samples: list[tuple[float, int]], since: float) -> float:
    """The longest time without a new packet, from the last arrival before ``since`` on (ms)."""
    arrivals = [t for (t, n), (_, before) in zip(samples[1:], samples) if n > before]
    start = max((t for t in arrivals if t <= since), default=since)
    later = [t for t in arrivals if t > start]
    times = [start, *later]
    return max((b - a for a, b in zip(times, times[1:])), default=float("inf")) * 1000


def reinvites(world) -> dict[tuple[str, str], float]:
    out = {}
    for side, result, value in re.findall(r'e2ae_plugin_reinvites_total\{result="(\w+)",side="(\w+)"\} (\S+)',
                                          world.edge.plugin_metrics()):
        out[(result, side)] = float(value)
    return {(side, result): v for (side, result), v in out.items()}


def holder(world) -> str:
    held = {name: world.pool.held(name) for name in world.nodes if world.nodes[name].proc is not None}
    (name,) = [n for n, dialogs in held.items() if dialogs]
    return name


def _killed_during(world, browser: Browser, ua: CoreUa) -> dict:
    """Kill the call's node; watch both ends; the figures."""
    watch = CoreWatch(ua)
    watch.start()
    time.sleep(1.0)
    wic: list[tuple[float, int]] = []
    victim = holder(world)
    survivors = [n for n in world.nodes if n != victim and world.nodes[n].proc is not None]
    before = {n: handshakes(world.nodes[n]) for n in survivors}
    offers, remote_sdps = len(ua.offers), len(browser.eval("phone.remoteSdps()"))
    core_at = wic_at = None
    killed = time.monotonic()
    world.nodes[victim].kill()
    while time.monotonic() - killed < AFTER_S:
        stats = browser.eval("phone.stats()")
        now = time.monotonic()
        wic.append((now, (stats.get("inbound") or {}).get("packetsReceived", 0)))
        if core_at is None and len(ua.offers) > offers:
            core_at = now
        if wic_at is None and len(browser.eval("phone.remoteSdps()")) > remote_sdps:
            wic_at = time.monotonic()
        time.sleep(POLL_S)
    watch.running = False
    watch.join(1)
    if core_at is None or wic_at is None:
        log = [line for line in world.edge.kamailio_log_text().splitlines()
               if "e2ae" in line or "ERROR" in line or "WARNING" in line]
        raise AssertionError("\n".join(log[-40:]) + f"\n{browser.eval('phone.status.events')}")
    after = {n: handshakes(world.nodes[n]) for n in survivors}
    stats = browser.eval("phone.stats()")
    return {
        "victim": victim, "killed": killed, "core_at": core_at, "wic_at": wic_at,
        "gap_core_ms": gap(watch.samples, killed), "gap_wic_ms": gap(wic, killed),
        "handshakes": sum(after[n] - before[n] for n in survivors), "stats": stats,
        "core_after": watch.samples[-1][1] - next(n for t, n in watch.samples if t >= killed + AFTER_S - 2),
        "wic_after": wic[-1][1] - next(n for t, n in wic if t >= killed + AFTER_S - 2),
    }


def _report(what: str, figures: dict, counted: dict) -> None:
    both = max(figures["core_at"], figures["wic_at"]) - figures["killed"]
    print(f"\n{what}: killed node {figures['victim']}; kill to both sides re-INVITEd {both * 1000:.0f} ms "
          f"(core {(figures['core_at'] - figures['killed']) * 1000:.0f} ms, WIC "
          f"{(figures['wic_at'] - figures['killed']) * 1000:.0f} ms); media gap toward core "
          f"{figures['gap_core_ms']:.0f} ms, toward WIC {figures['gap_wic_ms']:.0f} ms (+-{POLL_S * 1000:.0f}); "
          f"DTLS handshakes on the survivors {figures['handshakes']:.0f}; re-INVITEs {counted}")


def _check(figures: dict) -> None:
    assert figures["core_at"] is not None and figures["wic_at"] is not None, figures
    assert figures["handshakes"] == 1, figures  # the WIC's new association, nothing else
    transport = figures["stats"]["transport"]
    assert figures["stats"]["connectionState"] == "connected" and transport["dtlsState"] == "connected", figures
    # Media both ways in the last 2 s watched (100 packets of 20 ms each way).
    assert figures["core_after"] >= 50 and figures["wic_after"] >= 50, figures


@pytest.mark.timeout(180)
def test_a_wic_call_on_a_killed_node_is_reinvited_both_ways_and_ended_by_the_wic(world):
    browser = world.browser("jssip")
    browser.eval(f"phone.register({{server: '{world.wss}', uri: 'sip:taken@{DOMAIN}'}})")
    ua = world.core_ua()
    try:
        _call(world, browser, f"sip:tone@{DOMAIN}")
        before = reinvites(world)
        figures = _killed_during(world, browser, ua)
        counted = {k: v - before.get(k, 0) for k, v in reinvites(world).items() if v - before.get(k, 0)}
        _report("WIC-originated call", figures, counted)
        _check(figures)
        assert counted == {("core", "sent"): 1, ("core", "answered"): 1, ("access", "sent"): 1,
                           ("access", "answered"): 1}, counted
        # The WIC's BYE (the caller's, renumbered toward the core by the dialog module).
        browser.eval("phone.hangup()")
        deadline = time.monotonic() + 10
        while ua.byes < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ua.byes == 1, ua.requests
        assert browser.eval("phone.status.call") == "ended"
    finally:
        _hang_up(browser)
        ua.close()
    assert world.edge.wait_no_dialogs(8) == []


@pytest.mark.timeout(180)
def test_a_core_call_on_a_killed_node_is_reinvited_both_ways_and_ended_by_the_core(world):
    browser = world.browser("jssip")
    browser.eval(f"phone.register({{server: '{world.wss}', uri: 'sip:called@{DOMAIN}'}})")
    ua = world.core_ua()
    try:
        world.run(ua.call("called"))
        browser.eval("phone.waitEstablished(10000)")
        before = reinvites(world)
        placed = dict(ua._dialog)  # the demo UA takes any INVITE for a new call: the edge's re-INVITE too
        figures = _killed_during(world, browser, ua)
        ua._dialog = placed
        counted = {k: v - before.get(k, 0) for k, v in reinvites(world).items() if v - before.get(k, 0)}
        _report("core-originated call", figures, counted)
        _check(figures)
        assert counted == {("core", "sent"): 1, ("core", "answered"): 1, ("access", "sent"): 1,
                           ("access", "answered"): 1}, counted
        # The core's BYE: accepted by JsSIP (above the edge's re-INVITE), its 200 back at the core.
        reply = world.run(ua.bye())
        assert reply.status == 200, reply.first_line
        deadline = time.monotonic() + 10
        while browser.eval("phone.status.call") != "ended" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert browser.eval("phone.status.call") == "ended"
    finally:
        _hang_up(browser)
        ua.close()
    assert world.edge.wait_no_dialogs(8) == []
