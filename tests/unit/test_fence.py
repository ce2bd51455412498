"""Fenced writes of dialog documents (mediad.fence), against a real redis-server.

Two pool nodes share one Redis: ``x`` (paused, then back) and ``y`` (the survivor that
took x's dialogs over).  Each is the fence of a node whose daemon part is reduced to what
the fence touches (its dialogs, ``drop``, ``changed``); the writes are the real script.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from mediad.config import Config
from mediad.fence import Claim, Claims, Fence, Op, latest_move, refused, script_sha, stamp
from mediad.metrics import Metrics
from mediad.redis_keys import EVENTS_CHANNEL
from mediad.state import StateStore, dialog_key


class Node:
    """What of a mediad the fence uses; ``dropped``/``changed_ids`` record its calls."""

    def __init__(self, url: str, node_id: str) -> None:
        self.config = replace(Config(), mediad_node_id=node_id)
        self.metrics = Metrics(CollectorRegistry())
        self.store = StateStore(url, 60)
        self.dialogs: dict[str, object] = {}
        self.dropped: list[str] = []
        self.changed_ids: list[str] = []
        self.fence = Fence(self)

    def hold(self, dialog: str) -> None:
        self.dialogs[dialog] = type("Dialog", (), {"id": dialog})()

    def drop(self, dialog) -> None:
        self.dropped.append(dialog.id)
        del self.dialogs[dialog.id]

    def changed(self, dialog) -> None:
        self.changed_ids.append(dialog.id)

    async def save(self, *dialogs: str, body: dict | None = None) -> None:
        await self.fence.write([], [(d, self.fence.stamp(d, {"dialog": d, **(body or {})})) for d in dialogs])

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def document(redis, dialog: str) -> dict | None:
    raw = redis.get(dialog_key(dialog))
    return json.loads(raw) if raw else None


class Nodes:
    """Makes the nodes of one test; :meth:`run` runs its scenario and closes their stores."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.made: list[Node] = []

    def __call__(self, node_id: str) -> Node:
        node = Node(self.url, node_id)
        self.made.append(node)
        return node

    def run(self, scenario) -> None:
        async def main() -> None:
            try:
                await scenario()
            finally:
                for node in self.made:
                    await node.store.close()
        asyncio.run(main())


@pytest.fixture
def nodes(redis_url):
    return Nodes(redis_url)


def test_a_paused_nodes_queued_write_is_refused_once_a_survivor_took_the_dialog(nodes, redis_server):
    redis = redis_server.client()

    async def scenario() -> None:
        x, y = nodes("x"), nodes("y")
        x.hold("d1")
        x.hold("d2")
        await x.save("d1", "d2", body={"streams": "before"})
        assert list(document(redis, "d1"))[:2] == ["node", "epoch"]  # the fence first
        # x pauses; y takes d1 over from its document (as mediad.takeover does) and writes it
        y.fence.adopted("d1", document(redis, "d1"))
        y.hold("d1")
        await y.save("d1", body={"streams": "survivor"})
        assert (document(redis, "d1")["node"], document(redis, "d1")["epoch"]) == ("y", 1)
        # x resumes: its write-behind's batch (both dialogs) goes out
        await x.save("d1", "d2", body={"streams": "stale"})
        assert document(redis, "d1") == {"node": "y", "epoch": 1, "dialog": "d1", "streams": "survivor"}
        assert document(redis, "d2")["streams"] == "stale"  # still x's own
        assert x.dropped == ["d1"] and list(x.dialogs) == ["d2"]
        assert x.sample("e2ae_mediad_dialogs_fenced_total") == 1
        assert x.sample("e2ae_mediad_fenced_refusals_total", op="set") == 1
        # and it may not delete it either (an expiry, a release sent to it late)
        x.fence.released("d1")
        await x.fence.write(["d1"], [])
        assert document(redis, "d1")["node"] == "y"
        assert x.sample("e2ae_mediad_fenced_refusals_total", op="del") == 1
        # y goes on writing it; y's release deletes it
        await y.save("d1", body={"streams": "later"})
        assert document(redis, "d1")["streams"] == "later" and y.dropped == []
        y.fence.released("d1")
        await y.fence.write(["d1"], [])
        assert document(redis, "d1") is None

    nodes.run(scenario)
    redis.close()


def test_a_dialog_another_node_ended_is_not_written_back(nodes, redis_server):
    redis = redis_server.client()

    async def scenario() -> None:
        x = nodes("x")
        x.hold("d")
        await x.save("d")
        redis.delete(dialog_key("d"))  # the survivor ended it (or released it) meanwhile
        await x.save("d")
        assert document(redis, "d") is None and x.dropped == ["d"]

    nodes.run(scenario)
    redis.close()


def test_two_survivors_with_the_same_view_cannot_both_take_a_dialog(nodes, redis_server):
    redis = redis_server.client()

    async def scenario() -> None:
        x, y, z = nodes("x"), nodes("y"), nodes("z")
        x.hold("d")
        await x.save("d")
        seen = document(redis, "d")
        for survivor in (y, z):
            survivor.fence.adopted("d", seen)
            survivor.hold("d")
        await y.save("d")
        await y.save("d")  # y's own write goes on (and the same write sent again is its own)
        await z.save("d")  # z's lock had expired: it read the document before y wrote it
        assert document(redis, "d")["node"] == "y" and z.dropped == ["d"] and y.dropped == []

    nodes.run(scenario)
    redis.close()


def test_the_same_takeover_write_sent_again_is_accepted(nodes, redis_server):
    redis = redis_server.client()

    async def scenario() -> None:
        x, y = nodes("x"), nodes("y")
        x.hold("d")
        await x.save("d")
        y.fence.adopted("d", document(redis, "d"))
        y.hold("d")
        command = y.fence._command("d", y.fence.claims.of("d"), Op.SAVE,
                                   json.dumps(stamp({"dialog": "d"}, "y", 1)), 60)
        # a connection lost after Redis ran it: the writer sends the same batch again
        assert refused((await y.fence._run([command]))[0]) is None
        assert refused((await y.fence._run([command]))[0]) is None

    nodes.run(scenario)
    redis.close()


def test_a_dialog_released_and_reserved_again_under_its_id_is_deleted_then_written(nodes, redis_server):
    redis = redis_server.client()

    async def scenario() -> None:
        x = nodes("x")
        x.hold("d")
        await x.save("d", body={"n": 1})
        x.fence.released("d")  # released, then the same id reserved again before the batch
        await x.fence.write(["d"], [("d", x.fence.stamp("d", {"dialog": "d", "n": 2}))])
        assert document(redis, "d")["n"] == 2 and x.dropped == []

    nodes.run(scenario)
    redis.close()


def test_events_of_a_lost_dialog_are_not_published(nodes, redis_server):
    redis = redis_server.client()
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(EVENTS_CHANNEL)

    async def scenario() -> None:
        x, y = nodes("x"), nodes("y")
        for d in ("mine", "lost"):
            x.hold(d)
        await x.save("mine", "lost")
        y.fence.adopted("lost", document(redis, "lost"))
        await y.save("lost")
        await x.fence.publish({"dialog": "lost", "event": "consent_expired"})  # would make the plugin end it
        await x.fence.publish({"dialog": "mine", "event": "dtls_established"})
        assert x.dropped == ["lost"] and x.sample("e2ae_mediad_fenced_refusals_total", op="pub") == 1

    nodes.run(scenario)
    messages = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # (None is also what the subscription's confirmation gives)
        message = pubsub.get_message(timeout=0.1)
        if message is not None:
            messages.append(json.loads(message["data"]))
    assert [m["dialog"] for m in messages] == ["mine"]
    pubsub.close()
    redis.close()


def test_the_script_is_loaded_again_when_redis_forgot_it(nodes, redis_server):
    redis = redis_server.client()

    async def scenario() -> None:
        x = nodes("x")
        x.hold("d")
        await x.save("d")
        redis.script_flush()  # as a restarted or failed-over Redis
        await x.save("d", body={"again": True})
        assert document(redis, "d")["again"] is True

    nodes.run(scenario)
    assert redis.script_exists(script_sha()) == [True]
    redis.close()


def test_a_document_written_before_fencing_is_read_by_its_node_field(nodes, redis_server):
    redis = redis_server.client()

    async def scenario() -> None:
        x, y = nodes("x"), nodes("y")
        old = {"dialog": "d", "streams": [], "node": "x"}  # no epoch, node last
        redis.set(dialog_key("d"), json.dumps(old))
        x.fence.adopted("d", old)
        x.hold("d")
        await x.save("d")
        assert list(document(redis, "d"))[:3] == ["node", "epoch", "dialog"] and x.dropped == []
        redis.set(dialog_key("e"), json.dumps({"dialog": "e", "node": "y"}))
        x.fence.adopted("e", {"dialog": "e", "node": "x"})  # what x last knew
        x.hold("e")
        await x.save("e")
        assert x.dropped == ["e"] and document(redis, "e")["node"] == "y"
        assert await y.fence.delete_of("e", {"node": "y"}) and document(redis, "e") is None

    nodes.run(scenario)
    redis.close()


def test_a_heartbeat_that_sees_a_takeover_makes_the_node_check_its_dialogs(nodes):
    x = nodes("x")
    x.hold("d")
    moved = json.dumps([[100.0, "y@h:1"]])

    def beat(previous, lock, moves, first=False):
        x.fence.taken_over(lock, moves, first)
        x.fence.beat(previous, first)

    beat(None, None, moved, first=True)  # the first beat: no record yet, old moves
    assert x.changed_ids == []
    beat(b"{}", b"x", moved)  # its own lock (a start's reload)
    assert x.changed_ids == []
    beat(None, None, moved)  # its record had expired
    assert x.changed_ids == ["d"]
    beat(b"{}", b"y", moved)  # another node is taking its dialogs
    assert x.changed_ids == ["d", "d"]
    newer = json.dumps([[100.0, "y@h:1"], [200.0, "z@h:1"]])
    beat(b"{}", None, newer)  # a new move
    assert x.changed_ids == ["d", "d", "d"]
    beat(b"{}", None, newer)
    assert x.changed_ids == ["d", "d", "d"]


def test_a_node_stands_down_when_a_takeover_took_dialogs_it_had_written(nodes, redis_server):
    """Standing down (mediad.pool.Heartbeat) is for a node whose written dialogs a survivor holds or is
    taking: it ran the takeover hook for their addresses.  A takeover of a node without any moved nothing."""
    redis = redis_server.client()

    async def scenario() -> None:
        x, y = nodes("x"), nodes("y")
        moved = json.dumps([[100.0, "y@h:1"]])
        assert x.fence.taken_over(None, None, first=True) is None
        assert x.fence.taken_over(None, moved, first=False) is None  # a move, but x held nothing
        x.hold("fresh")  # made, not written yet: no survivor can have its document
        assert x.fence.taken_over(b"y", moved, first=False) is None
        x.hold("d")
        await x.save("d")
        assert x.fence.taken_over(b"x", moved, first=False) is None  # its own lock, no new move
        assert x.fence.taken_over(b"y", moved, first=False) == "node y holds its takeover lock"
        newer = json.dumps([[100.0, "y@h:1"], [200.0, "y@h:1"]])
        assert x.fence.taken_over(None, newer, first=False) == "its dialogs were moved to another node"
        # y takes "d" over; x's next write of it is refused and x drops it: that alone says so at the next beat.
        y.fence.adopted("d", document(redis, "d"))
        y.hold("d")
        await y.save("d")
        await x.save("d")
        assert x.dropped == ["d"]
        assert x.fence.taken_over(None, newer, first=False) == "node y took its dialogs over"
        assert x.fence.taken_over(None, newer, first=False) is None  # said once

    nodes.run(scenario)
    redis.close()


def test_claims_and_stamps():
    claims = Claims("x")
    fresh = claims.of("a")
    assert (fresh.node, fresh.epoch, fresh.fresh) == ("x", 0, True) and fresh.next_epoch("x") == 0
    taken = claims.adopted("b", {"node": "w", "epoch": 4})
    assert taken.next_epoch("x") == 5 and taken.args("x") == ["x", 5, "w", 4, "0"]
    claims.saved(taken, 5)
    assert taken.args("x") == ["x", 5, "x", 5, "0"]
    released = claims.released("a")
    again = claims.of("a")
    assert again is not released and claims.deleting("a") is released
    assert claims.lost("a", released) is False and claims.lost("a", again) is True
    assert list(stamp({"epoch": 9, "dialog": "d", "node": "old"}, "x", 2).items()) == [
        ("node", "x"), ("epoch", 2), ("dialog", "d")]
    assert latest_move(None) == 0.0 and latest_move(b"garbage") == 0.0
    assert latest_move(json.dumps([[5, "a"], [7, "b"]])) == 7.0
    assert refused(1) is None and refused(b"y/1") == "y/1" and refused(b"") == ""
    with pytest.raises(ValueError):
        refused(0)
    assert repr(Claim("x")) == "Claim('x', 0, fresh=True)"


def test_events_and_the_writers_batches_may_go_out_at_once(nodes, redis_server):
    """The writer's connection is its own: an event published meanwhile takes another."""
    redis = redis_server.client()

    async def scenario() -> None:
        x = nodes("x")
        dialogs = [f"d{i}" for i in range(50)]
        for d in dialogs:
            x.hold(d)
        await x.save(*dialogs)
        for _ in range(5):
            await asyncio.gather(x.save(*dialogs, body={"n": 2}),
                                 *(x.fence.publish({"dialog": d, "event": "e"}) for d in dialogs[:10]))
        assert all(document(redis, d)["n"] == 2 for d in dialogs) and x.dropped == []

    nodes.run(scenario)
    redis.close()


def test_a_paused_node_its_survivor_drained_already_still_stands_down_and_says_why(nodes, redis_server, caplog):
    """The survivor put x in the drain set when it took x's dialogs over (mediad.takeover); x, back
    from its pause, sees the takeover at its next beat: it writes its record as draining and logs
    its WARNING once, as when the set did not name it yet."""
    from mediad.pool import DRAINING_KEY, NODES_KEY, Heartbeat, NodeState, node_key

    redis = redis_server.client()
    reasons = ["node y took its dialogs over", None]

    class Watch:
        def taken_over(self, lock, moved, first):
            return reasons.pop(0)

        def beat(self, previous, first):
            pass

    async def scenario() -> None:
        x = nodes("x")
        heartbeat = Heartbeat(x.config, x.store.redis, lambda: 0, Watch())
        heartbeat.beats = 1  # running before its pause
        redis.sadd(DRAINING_KEY, "x")
        with caplog.at_level("WARNING", logger="mediad.pool"):
            await heartbeat.beat()
            await heartbeat.beat()
        assert json.loads(redis.get(node_key("x")))["state"] == NodeState.DRAINING.value
        stood = [r for r in caplog.records if "was taken over while it ran" in r.getMessage()]
        assert len(stood) == 1 and stood[0].levelname == "WARNING", caplog.records

    try:
        nodes.run(scenario)
    finally:
        redis.delete(DRAINING_KEY, node_key("x"), NODES_KEY)
        redis.close()
