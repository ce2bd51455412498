"""The plugin with a pool of mediads: a node per dialog, kept for every later request.

Real Redis (the session's redis-server) for the registry and the dialog records; each
node's mediad is the in-process stand-in of test_plugin_edge (the real mediads are in
tests/integration/test_edge_pool.py).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from sdp_rules.errors import UnavailableError
from iq import Command, Side

from mediad.config import Config
from mediad.pool import DRAINING_KEY, MOVED_KEY, NODES_KEY, Heartbeat, Node, NodeState, lock_key, node_key
from plugin.edge import Edge
from plugin.lifecycle import CallEvent, PendingRelease
from plugin.metrics import Metrics
from plugin.pool import Pool, dialog_uniform
from plugin.state import DIALOG_PREFIX, DialogStore
from tests.unit.test_plugin_edge import PLAIN_ANSWER, PLAIN_OFFER, Agw, msg

NODES = {"a": ("127.0.0.11", 1), "b": ("127.0.0.12", 1), "c": ("127.0.0.13", 2)}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class NodeAgw(Agw):
    """One node's mediad stand-in (the pool closes its clients)."""

    def close(self) -> None:
        pass


class Down(NodeAgw):
    """A node that cannot be reached."""

    def request(self, iq):
        self.requests.append(iq)
        raise UnavailableError("mediad unreachable: refused", 5)


@pytest.fixture
def store(redis_url):
    s = DialogStore(redis_url, ttl=60)
    yield s
    s.close()


def register(r, node_id, load=0, state=NodeState.ACTIVE, capacity=0):
    host, weight = NODES[node_id]
    node = Node(node_id, host, 2223, weight, capacity, load, state)
    r.set(node_key(node_id), json.dumps(node.to_dict()), px=3000)
    r.sadd(NODES_KEY, node_id)


def make(store, registry, agws, *, nodes="", clock=None, values=None):
    config = replace(Config(), pool_registry="on" if not nodes else "off", pool_nodes=nodes)
    rand = iter(values) if values is not None else None
    metrics = Metrics(registry)
    pool = Pool(config, lambda: store.redis, metrics, client_of=lambda address: agws[address.host],
                clock=clock or Clock(), rand=(lambda dialog: next(rand)) if rand else (lambda dialog: 0.5))
    return Edge(store, Agw(), metrics, agent="127.0.0.1:5060", pool=pool), pool


def agws():
    return {host: NodeAgw() for host, _ in NODES.values()}


def record_of(store):
    (key,) = store.redis.keys(DIALOG_PREFIX + "*")
    return json.loads(store.redis.get(key))


def test_every_request_of_a_dialog_goes_to_the_node_chosen_at_its_first_offer(store, metrics_registry):
    for node_id in NODES:
        register(store.redis, node_id)
    nodes = agws()
    # 0.9 of a total weight of 4: the third node ("c", weight 2)
    edge, pool = make(store, metrics_registry, nodes, values=[0.9, 0.0, 0.0])
    assert not edge.handle(msg(PLAIN_OFFER.replace("RTP/AVP", "UDP/TLS/RTP/SAVPF") + "a=fingerprint:sha-256 "
                                + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n")).failed
    assert record_of(store)["mediad"] == "c@127.0.0.13:2223"
    edge.handle(msg(PLAIN_ANSWER, request=False, side=Side.CORE, to_tag="t1", status=200))
    assert edge.release("call-1", ("ftag", "t1"), CallEvent.BYE)
    assert [r.command for r in nodes["127.0.0.13"].requests] == [Command.RESERVE, Command.MODIFY, Command.RELEASE]
    assert nodes["127.0.0.11"].requests == nodes["127.0.0.12"].requests == []
    assert metrics_registry.get_sample_value("e2ae_plugin_pool_calls_total", {"node": "c"}) == 1
    assert metrics_registry.get_sample_value("e2ae_plugin_pool_nodes", {"state": "active"}) == 3


SECURE_OFFER = (PLAIN_OFFER.replace("RTP/AVP", "UDP/TLS/RTP/SAVPF") + "a=fingerprint:sha-256 "
                + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n")


def test_no_node_is_503_with_retry_after_and_a_warning(store, metrics_registry):
    register(store.redis, "a", state=NodeState.DRAINING)
    register(store.redis, "b", capacity=3, load=3)
    store.redis.sadd(NODES_KEY, "c")  # registered once, its record expired: no heartbeat
    edge, _ = make(store, metrics_registry, agws())
    out = edge.handle(msg(SECURE_OFFER))
    assert out.status == 503 and out.retry_after == 5 and "no media node available (2 in the pool)" in out.warning
    assert store.redis.keys(DIALOG_PREFIX + "*") == []
    assert metrics_registry.get_sample_value("e2ae_plugin_pool_nodes", {"state": "draining"}) == 1
    assert metrics_registry.get_sample_value("e2ae_plugin_pool_nodes", {"state": "full"}) == 1


def test_operator_drain_and_the_registry_cache(store, metrics_registry):
    register(store.redis, "a")
    register(store.redis, "b")
    clock = Clock()
    nodes = agws()
    edge, pool = make(store, metrics_registry, nodes, clock=clock, values=[0.0] * 10)
    assert pool.choose("d") == "a@127.0.0.11:2223"
    store.redis.sadd(DRAINING_KEY, "a")
    clock.now += 0.5  # within [pool] cache: the view read before
    assert pool.choose("d") == "a@127.0.0.11:2223"
    clock.now += 0.5
    assert pool.choose("d") == "b@127.0.0.12:2223"


def test_unreachable_node_is_disabled_and_its_release_retried_there(store, metrics_registry):
    register(store.redis, "a")
    register(store.redis, "b")
    clock = Clock()
    nodes = agws()
    nodes["127.0.0.11"] = Down()
    edge, pool = make(store, metrics_registry, nodes, clock=clock, values=[0.0] * 10)
    out = edge.handle(msg(SECURE_OFFER))
    assert out.status == 503
    (pending,) = edge.take_outbox()  # the undo of a RESERVE that may have been done
    assert isinstance(pending, PendingRelease) and pending.mediad == "a@127.0.0.11:2223"
    assert PendingRelease.from_value(pending.to_value()) == pending
    assert pending.failed_again(0.0).mediad == pending.mediad
    assert pool.choose("d") == "b@127.0.0.12:2223"  # "a" disabled for [pool] disable_timeout
    nodes["127.0.0.11"] = NodeAgw()
    pool.close()  # its clients are made again on next use
    assert edge.retry(pending) == (None, True)  # that node released it
    assert [r.command for r in nodes["127.0.0.11"].requests] == [Command.RELEASE]
    assert nodes["127.0.0.12"].requests == []
    clock.now += Config().pool_disable_timeout
    assert pool.choose("d") == "a@127.0.0.11:2223"


def test_static_list_needs_no_registration(store, metrics_registry):
    nodes = agws()
    edge, pool = make(store, metrics_registry, nodes, nodes="a@127.0.0.11:2223 0, b@127.0.0.12:2223 1")
    assert not edge.handle(msg(SECURE_OFFER)).failed
    assert record_of(store)["mediad"] == "b@127.0.0.12:2223"
    assert [r.command for r in nodes["127.0.0.12"].requests] == [Command.RESERVE]


def test_without_a_pool_the_one_mediad_is_used_and_the_record_names_none(store, metrics_registry):
    agw = Agw()
    edge = Edge.from_config(replace(Config(), redis_url=store.url), Metrics(metrics_registry), iq_client=agw)
    try:
        assert edge.pool is None
        assert not edge.handle(msg(SECURE_OFFER)).failed
        assert "mediad" not in record_of(store)
        assert [r.command for r in agw.requests] == [Command.RESERVE]
    finally:
        edge.store.close()


def test_heartbeat_registers_drains_and_leaves(redis_url):
    config = replace(Config(), mediad_node_id="m1", mediad_weight=3, mediad_capacity=50, mediad_heartbeat=0.5)

    async def run():
        r = aioredis.Redis.from_url(redis_url)
        try:
            beat = Heartbeat(config, r, lambda: 7)
            await beat.beat()
            node = Node.from_dict(json.loads(await r.get(node_key("m1"))))
            assert node == Node("m1", "127.0.0.1", 2223, 3, 50, 7, NodeState.ACTIVE, registered=True)
            assert 1000 < await r.pttl(node_key("m1")) <= 1500  # 3 heartbeats
            assert await r.smembers(NODES_KEY) == {b"m1"}
            await r.sadd(DRAINING_KEY, "m1")
            await beat.beat()
            assert json.loads(await r.get(node_key("m1")))["state"] == "draining"
            await r.srem(DRAINING_KEY, "m1")
            await beat.beat()
            assert json.loads(await r.get(node_key("m1")))["state"] == "active"
            beat.drain()  # SIGUSR1: draining whatever the set says
            await beat.beat()
            assert json.loads(await r.get(node_key("m1")))["state"] == "draining"
            await beat.leave()
            assert await r.exists(node_key("m1")) == 0 and await r.smembers(NODES_KEY) == set()
        finally:
            await r.aclose()

    asyncio.run(run())


def test_a_heartbeat_that_finds_its_node_taken_over_stands_it_down_until_the_operator_undrains_it(redis_url):
    """A node taken over while it ran (its dialogs moved, or its lock held by another): the same beat puts
    it in the drain set and writes its record as draining; an expired record alone does not."""
    config = replace(Config(), mediad_node_id="m1", mediad_heartbeat=0.5)

    class Watch:
        def __init__(self) -> None:
            self.taken = None
            self.seen = []

        def taken_over(self, lock, moved, first):
            self.seen.append((lock, moved, first))
            return self.taken

        def beat(self, previous, first):
            self.seen.append((previous is None, first))

    async def run():
        r = aioredis.Redis.from_url(redis_url)
        watch = Watch()
        try:
            beat = Heartbeat(config, r, lambda: 0, watch)
            await beat.beat()
            assert watch.seen == [(None, None, True), (True, True)]
            await r.delete(node_key("m1"))  # expired (a Redis restart, a slow beat): no stand-down
            await beat.beat()
            assert json.loads(await r.get(node_key("m1")))["state"] == "active"
            assert watch.seen[-1] == (True, False)
            await r.set(lock_key("m1"), "m2")
            await r.hset(MOVED_KEY, "m1", '[[1.0,"m2@h:1"]]')
            watch.taken = "its dialogs were moved to another node"
            await beat.beat()
            assert watch.seen[-2] == (b"m2", b'[[1.0,"m2@h:1"]]', False)
            assert json.loads(await r.get(node_key("m1")))["state"] == "draining"
            assert await r.sismember(DRAINING_KEY, "m1")
            watch.taken = None
            await beat.beat()
            assert json.loads(await r.get(node_key("m1")))["state"] == "draining"  # until the operator...
            await r.srem(DRAINING_KEY, "m1")  # ... undrains it (e2ae-ctl undrain m1)
            await beat.beat()
            assert json.loads(await r.get(node_key("m1")))["state"] == "active"
            await beat.leave()
        finally:
            await r.delete(lock_key("m1"), MOVED_KEY, DRAINING_KEY)
            await r.aclose()

    asyncio.run(run())


def test_a_retransmitted_invite_reserved_on_another_node_is_undone_there(store, metrics_registry):
    # Two workers whose draws differ (views of the pool that differ): the second one's
    # RESERVE of the same dialog on another node is released there; the call keeps the first.
    for node_id in NODES:
        register(store.redis, node_id)
    nodes = agws()
    first, _ = make(store, metrics_registry, nodes, values=[0.0])
    second, _ = make(store, CollectorRegistry(), nodes, values=[0.9])
    out = first.handle(msg(SECURE_OFFER))
    again = second.handle(msg(SECURE_OFFER))
    assert not again.failed and again.body == out.body
    assert record_of(store)["mediad"] == "a@127.0.0.11:2223"
    assert [r.command for r in nodes["127.0.0.11"].requests] == [Command.RESERVE]
    assert [r.command for r in nodes["127.0.0.13"].requests] == [Command.RESERVE, Command.RELEASE]


def test_the_draw_is_fixed_by_the_dialog_id():
    assert dialog_uniform("call-1;tag") == dialog_uniform("call-1;tag")
    draws = [dialog_uniform(f"call-{i}") for i in range(4000)]
    assert all(0.0 <= d < 1.0 for d in draws)
    assert abs(sum(d < 0.25 for d in draws) / 4000 - 0.25) < 0.03
    assert abs(sum(draws) / 4000 - 0.5) < 0.02


class SendingAgw(NodeAgw):
    """A node whose client also sends without waiting (IqClient.send); failures come back later."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = []
        self.failed = []

    def send(self, iq, context) -> None:
        self.sent.append(iq)
        self.failed.append(context)  # as if the connection were lost before the answer

    def take_failed(self) -> list:
        failed, self.failed = self.failed, []
        return failed


def test_a_release_not_waited_for_goes_to_the_dialogs_node_and_its_failure_is_retried_there(
        store, metrics_registry):
    for node_id in NODES:
        register(store.redis, node_id)
    nodes = {host: SendingAgw() for host, _ in NODES.values()}
    edge, pool = make(store, metrics_registry, nodes, values=[0.9])
    edge.iq_client = SendingAgw()  # [mediad] control: must get nothing
    assert not edge.handle(msg(SECURE_OFFER)).failed
    edge.handle(msg(PLAIN_ANSWER, request=False, side=Side.CORE, to_tag="t1", status=200))
    edge.release("call-1", ("ftag", "t1"), CallEvent.BYE)
    assert [r.command for r in nodes["127.0.0.13"].sent] == [Command.RELEASE]
    assert edge.iq_client.sent == [] and nodes["127.0.0.11"].sent == []
    (pending,) = [p for p in edge.take_outbox() if isinstance(p, PendingRelease)]
    assert pending.mediad == "c@127.0.0.13:2223" and pending.dialog


def test_a_dead_nodes_dialog_follows_it_to_the_survivor_and_one_placed_after_its_return_stays(
        store, metrics_registry):
    from mediad.takeover import MOVED_KEY

    register(store.redis, "a")
    register(store.redis, "b")
    clock = Clock()
    nodes = agws()
    edge, pool = make(store, metrics_registry, nodes, clock=clock, values=[0.0] * 10)
    assert not edge.handle(msg(SECURE_OFFER)).failed  # on "a" (the draw's first)
    assert record_of(store)["mediad"] == "a@127.0.0.11:2223"
    store.redis.delete(node_key("a"))  # a dies; b takes its dialogs over
    moved_at = record_of(store)["created"] + 1
    store.redis.hset(MOVED_KEY, "a", json.dumps([[moved_at, "b@127.0.0.12:2223"]]))
    register(store.redis, "a")  # ... and a comes back, with the same id
    clock.now += 1  # past [pool] cache: the moves are read with the registry
    edge.handle(msg(PLAIN_ANSWER, request=False, side=Side.CORE, to_tag="t1", status=200))
    assert edge.release("call-1", ("ftag", "t1"), CallEvent.BYE)
    assert [r.command for r in nodes["127.0.0.11"].requests] == [Command.RESERVE]
    assert [r.command for r in nodes["127.0.0.12"].requests] == [Command.MODIFY, Command.RELEASE]
    # A dialog made after the move, on "a" again: its requests go there.
    nodes["127.0.0.11"].requests.clear()
    nodes["127.0.0.12"].requests.clear()
    store.redis.hset(MOVED_KEY, "a", json.dumps([[moved_at - 3600, "b@127.0.0.12:2223"]]))
    clock.now += 1
    assert not edge.handle(replace(msg(SECURE_OFFER), call_id="call-2")).failed
    assert edge.release("call-2", ("ftag",), CallEvent.FAILURE)
    assert [r.command for r in nodes["127.0.0.11"].requests] == [Command.RESERVE, Command.RELEASE]
    assert nodes["127.0.0.12"].requests == []
    store.redis.delete(MOVED_KEY)


def test_media_lost_in_a_takeover_ends_the_call_with_a_bye_each_way(store, metrics_registry):
    from plugin.lifecycle import EndRequest

    register(store.redis, "a")
    nodes = agws()
    edge, pool = make(store, metrics_registry, nodes, values=[0.0])
    assert not edge.handle(msg(SECURE_OFFER)).failed
    edge.handle(msg(PLAIN_ANSWER, request=False, side=Side.CORE, to_tag="t1", status=200))
    dialog = record_of(store)["id"]
    assert not edge.on_event({"event": "media_lost", "dialog": "unknown", "reason": "sctp"})
    assert edge.on_event({"event": "media_lost", "dialog": dialog, "reason": "sctp"})
    (end,) = [item for item in edge.take_outbox() if isinstance(item, EndRequest)]
    assert (end.call_id, end.from_tag, end.to_tag, end.event) == ("call-1", "ftag", "t1", CallEvent.MEDIA_LOST)
    assert store.redis.keys(DIALOG_PREFIX + "*") == []
    assert metrics_registry.get_sample_value("e2ae_plugin_releases_total", {"reason": "media_lost"}) == 1
