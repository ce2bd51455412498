"""A pool of three mediads behind one Kamailio: spread by weight, a node that goes silent, a drain.

Real processes: three mediads, each on its own loopback "host" (control and access
media on 127.0.0.1N, core media on 127.0.1.1N), registering in the session's Redis
every half second; Kamailio with the plugin reading that registry (``[pool]
registry = on``); SIPp on both sides.  Calls per node are counted by each mediad
(its RESERVE requests served) and by the plugin (``e2ae_plugin_pool_calls_total``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mediad.pool import NODES_KEY, node_key
from iq import Command
from tests.conftest import REPO
from tests.integration.conftest import Mediad
from tests.integration.edge_harness import CONTROL_SECRET, Edge, Sipp

pytestmark = pytest.mark.integration

HEARTBEAT = 0.5
CACHE = 0.5
WEIGHTS = {"a": 1, "b": 1, "c": 2}
HOSTS = {"a": 11, "b": 12, "c": 13}


class Pool:
    def __init__(self, edge: Edge, nodes: dict[str, Mediad]) -> None:
        self.edge = edge
        self.nodes = nodes

    def reserves(self, *skip: str) -> dict[str, float]:
        """RESERVE requests each running node (but ``skip``) served: dialogs placed there."""
        return {name: node.metric("e2ae_mediad_control_requests_total", command="reserve", result="ok")
                for name, node in self.nodes.items() if node.proc is not None and name not in skip}

    def placed(self) -> dict[str, float]:
        """What the plugin counted: dialogs placed per node."""
        out = {}
        for family in text_string_to_metric_families(self.edge.plugin_metrics()):
            for sample in family.samples:
                if sample.name == "e2ae_plugin_pool_calls_total":
                    out[sample.labels["node"]] = sample.value
        return out

    def held(self, name: str) -> list[str]:
        node = self.nodes[name]
        reply = node.client().request(node.iq(Command.LIST, "list"))
        return list((reply.data or {}).get("dialogs", []))

    def record(self, name: str) -> dict | None:
        client = self.edge.redis()
        try:
            raw = client.get(node_key(name))
        finally:
            client.close()
        return json.loads(raw) if raw else None

    def ctl(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "plugin.ctl", "--config", str(self.edge.config_path), *args],
                             cwd=REPO, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stderr
        return out.stdout


def start_node(tmp_path, redis_url: str, name: str) -> Mediad:
    n = HOSTS[name]
    node = Mediad(tmp_path, redis_url, control_host=f"127.0.0.{n}", access_address=f"127.0.0.{n}",
                  core_address=f"127.0.1.{n}", control_secret=CONTROL_SECRET, node_id=name,
                  weight=str(WEIGHTS[name]), heartbeat=str(HEARTBEAT),
                  dtls_handshake_timeout="30")  # SIPp does no DTLS: held calls outlive the default 5 s
    node.secret = CONTROL_SECRET  # the plugin's (the edge's configuration)
    node.start()
    return node


def clean_pool_keys(redis_server) -> None:
    client = redis_server.client()
    try:
        keys = client.keys("e2ae:pool:*")
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def pool(redis_server, tmp_path_factory):
    clean_pool_keys(redis_server)
    tmp = tmp_path_factory.mktemp("pool")
    edge = Edge(redis_server)
    with open(edge.config_path, "a") as conf:
        conf.write(f"\n[pool]\nregistry = on\ncache = {CACHE}\n")
    nodes: dict[str, Mediad] = {}
    try:
        for name in WEIGHTS:
            nodes[name] = start_node(tmp, redis_server.url, name)
        edge.start_kamailio()
        yield Pool(edge, nodes)
    finally:
        edge.stop()
        for node in nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                os.kill(node.proc.pid, signal.SIGCONT)
            node.stop()
        clean_pool_keys(redis_server)


@pytest.fixture(autouse=True)
def _clean(pool):
    yield
    assert pool.edge.wait_no_dialogs(10) == [], "state left in Redis"
    for name, node in pool.nodes.items():
        if node.proc is not None:
            assert pool.held(name) == [], f"node {name} holds dialogs"


def calls(pool: Pool, sipps: list, count: int, rate: float, hold_ms: int = 100, limit: int = 50,
          uas_calls: int | None = None) -> tuple[Sipp, Sipp]:
    uas = Sipp("core_uas.xml", "127.0.0.3", calls=uas_calls or count, timeout=60)
    uas.port = pool.edge.conf.next_hop_port
    uac = Sipp("wic_call_uac.xml", "127.0.0.1", remote=pool.edge.access, calls=count, rate=rate, limit=limit,
               timeout=60, extra=["-s", "callee", "-d", str(hold_ms)])
    sipps += [uas, uac]
    return uas, uac


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}


def test_two_hundred_calls_spread_by_weight(pool, sipps):
    before, placed_before = pool.reserves(), pool.placed()
    uas, uac = calls(pool, sipps, 200, rate=50)
    uas.start()
    time.sleep(0.2)
    assert uac.run() == 0, uac.diagnostics()
    assert uas.wait(30) == 0, uas.diagnostics()
    spread = delta(pool.reserves(), before)
    print(f"\n200 calls over weights {WEIGHTS}: {spread}")
    assert sum(spread.values()) == 200
    # Expected 50 / 50 / 100; four standard deviations of the draw (about 6 and 7) allowed.
    for name, weight in WEIGHTS.items():
        assert abs(spread[name] - 200 * weight / 4) <= 26, spread
    assert delta(pool.placed(), placed_before) == spread  # the plugin's count agrees with the nodes'


def test_a_node_whose_heartbeat_stops_gets_no_new_calls(pool, sipps):
    b = pool.nodes["b"]
    os.kill(b.proc.pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        while pool.record("b") is not None and time.monotonic() - stopped < 10:
            time.sleep(0.05)
        expired = time.monotonic() - stopped
        print(f"\nnode b's record expired {expired:.2f} s after its last heartbeat could be written "
              f"(heartbeat {HEARTBEAT} s, TTL {3 * HEARTBEAT} s; the plugin's view is at most {CACHE} s older)")
        assert pool.record("b") is None and expired <= 3 * HEARTBEAT + 0.5
        time.sleep(CACHE)
        before = pool.reserves("b")  # b is stopped: it answers nothing, its metrics neither
        uas, uac = calls(pool, sipps, 30, rate=30)
        uas.start()
        time.sleep(0.2)
        assert uac.run() == 0, uac.diagnostics()  # a call sent to b would get no answer: 503
        assert uas.wait(30) == 0, uas.diagnostics()
        spread = delta(pool.reserves("b"), before)
        assert sum(spread.values()) == 30, spread
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
    b_before = b.metric("e2ae_mediad_control_requests_total", command="reserve", result="ok")
    deadline = time.monotonic() + 5
    while pool.record("b") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.record("b") is not None  # back at its next heartbeat
    assert b_before == b.metric("e2ae_mediad_control_requests_total", command="reserve", result="ok")


def test_drain_keeps_the_calls_of_the_node_and_gives_it_no_new_ones(pool, sipps):
    c = pool.nodes["c"]
    # Held 8 s: past the drain and the new calls, within SIPp's 10 s -recv_timeout at the core UAS.
    uas, held = calls(pool, sipps, 12, rate=12, hold_ms=8000, uas_calls=42)
    uas.start()
    time.sleep(0.2)
    held.start()
    deadline = time.monotonic() + 5
    while sum(len(pool.held(name)) for name in WEIGHTS) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    on_c = pool.held("c")
    assert on_c, "no held call on c (12 calls, half the weight)"
    assert "draining" in pool.ctl("drain", "c")
    time.sleep(CACHE)
    before = pool.reserves()
    uac = Sipp("wic_call_uac.xml", "127.0.0.1", remote=pool.edge.access, calls=30, rate=30, limit=30,
               timeout=60, extra=["-s", "callee", "-d", "100"])
    sipps.append(uac)
    assert uac.run() == 0, uac.diagnostics()
    spread = delta(pool.reserves(), before)
    assert spread["c"] == 0 and spread["a"] + spread["b"] == 30, spread
    assert set(on_c) <= set(pool.held("c"))  # its calls go on
    assert held.wait(30) == 0, held.diagnostics()  # ... and end with their BYE, released there
    assert uas.wait(30) == 0, uas.diagnostics()
    assert pool.held("c") == []
    deadline = time.monotonic() + 3
    while (pool.record("c") or {}).get("load") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.record("c") == {"id": "c", "control": f"127.0.0.13:{c.control_port}", "weight": 2, "capacity": 0,
                                "load": 0, "state": "draining"}
    nodes = {n["id"]: n for n in json.loads(pool.ctl("--json", "nodes"))["nodes"]}
    assert (nodes["c"]["state"], nodes["c"]["load"]) == ("draining", 0)
    assert nodes["a"]["state"] == nodes["b"]["state"] == "active"
    c.stop()  # empty: it can stop, and leaves the pool at once
    client = pool.edge.redis()
    try:
        assert client.get(node_key("c")) is None and b"c" not in client.smembers(NODES_KEY)
    finally:
        client.close()
    assert "takes new calls again" in pool.ctl("undrain", "c")
