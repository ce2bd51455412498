"""The takeover's decisions (mediad.takeover): who is dead, what moves, where a dialog went."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from mediad.config import Config, ConfigError, PortRange, parse_config
from mediad.io.ports import NoPortsError, PortPool
from mediad.takeover import (MOVES_KEPT, Home, Lost, add_move, dead_nodes, parse_moves, plan, resolve,
                             unmovable)

HOME = {"access": "127.0.0.11", "core": "127.0.1.11", "access_sdp": "127.0.0.11", "core_sdp": "127.0.1.11"}


def srtp(peer=("127.0.0.1", 5000), keys=True, kind="srtp", state="established"):
    channel = {"port": 20000, "peer": list(peer) if peer else None, "state": state,
               "srtp_keys": {"profile": "SRTP_AES128_CM_SHA1_80"} if keys else None}
    return {"stream_id": 0, "kind": kind, "access": {"channels": {"rtp": channel}}, "core": {"ports": {"rtp": 40000}}}


def document(dialog, *streams, home=HOME):
    doc = {"dialog": dialog, "node": "a", "streams": list(streams) or [srtp()]}
    if home:
        doc["home"] = home
    return doc


def test_a_dead_node_is_a_registered_id_whose_record_expired_not_this_one():
    assert dead_nodes(["a", "b", "c"], ["b"], "c") == ["a"]
    assert dead_nodes(["a", "b"], ["a", "b"], "a") == []
    assert dead_nodes([], [], "a") == []


def test_srtp_over_udp_moves_sctp_tcp_and_an_established_t38_do_not():
    assert unmovable(document("d")) is None
    assert unmovable(document("d", srtp(kind="t38", keys=False))) is Lost.T38  # UDPTL in OpenSSL's records
    assert unmovable(document("d", srtp(kind="t38", keys=False, state="handshaking"))) is None
    assert unmovable(document("d", srtp(keys=False, peer=None))) is None  # no association yet: nothing to lose
    assert unmovable(document("d", srtp(), {"stream_id": 1, "kind": "sctp"})) is Lost.SCTP
    assert unmovable(document("d", {"stream_id": 2, "kind": "dc_channel"})) is Lost.SCTP
    assert unmovable(document("d", srtp(kind="srtp_tcp"))) is Lost.TCP
    assert unmovable(document("d", srtp(peer=None))) is Lost.TCP  # keys, no UDP peer: ICE-TCP
    assert unmovable(document("d", home=None)) is Lost.NO_HOME


def test_plan_takes_what_fits_in_dialog_order_and_ends_the_rest_with_why():
    docs = [document("d3"), document("d1"), document("d2", srtp(kind="srtp_tcp")), document("d4")]
    take, end = plan(docs, room=2)
    assert [d["dialog"] for d in take] == ["d1", "d3"]
    assert [(d["dialog"], why) for d, why in end] == [("d2", Lost.TCP), ("d4", Lost.CAPACITY)]
    take, end = plan(docs, room=None)
    assert [d["dialog"] for d in take] == ["d1", "d3", "d4"] and len(end) == 1
    assert plan(docs, room=0)[0] == []


@pytest.mark.parametrize("broken", [
    {"home": {"core": "127.0.1.11"}},  # a home without its access address
    {"home": "127.0.0.11"},
    {"streams": "srtp"},
    {"streams": [["srtp"]]},
    {"streams": [{"stream_id": 0, "kind": "srtp", "access": ["rtp"]}]},
    {"streams": [{"stream_id": 0, "kind": "srtp", "access": {"channels": ["rtp"]}}]},
    {"streams": [{"stream_id": 0, "kind": "srtp", "access": {"channels": {"rtp": 20000}}}]},
])
def test_a_document_the_survivor_cannot_read_is_ended_and_the_others_are_taken(broken):
    """A malformed document of a dead node is ended (``malformed``), never an exception that
    fails the whole takeover round after round."""
    take, end = plan([document("d1"), {**document("d2"), **broken}, document("d3")], room=None)
    assert [d["dialog"] for d in take] == ["d1", "d3"]
    assert [(d["dialog"], why) for d, why in end] == [("d2", Lost.MALFORMED)]


def test_resolve_follows_moves_made_after_the_dialog_and_only_those():
    moves = {"a": [(100.0, "b@127.0.0.12:1"), (300.0, "c@127.0.0.13:1")], "b": [(200.0, "c@127.0.0.13:1")]}
    assert resolve("a@127.0.0.11:1", 50.0, moves) == "c@127.0.0.13:1"  # a -> b (100), b -> c (200)
    assert resolve("a@127.0.0.11:1", 150.0, {"a": moves["a"]}) == "c@127.0.0.13:1"  # a came back, died again
    assert resolve("a@127.0.0.11:1", 350.0, moves) == "a@127.0.0.11:1"  # placed on a after its return
    assert resolve("b@127.0.0.12:1", 250.0, moves) == "b@127.0.0.12:1"
    assert resolve("d@127.0.0.14:1", 0.0, moves) == "d@127.0.0.14:1"
    loop = {"a": [(1.0, "b@h:1")], "b": [(2.0, "a@h:1")]}
    assert resolve("a@h:1", 0.0, loop) == "a@h:1"  # a -> b -> a; then no later move of a


def test_moves_are_kept_bounded_and_read_back_from_the_hash():
    history: list = []
    for at in range(MOVES_KEPT + 3):
        history = add_move(history, float(at), f"n{at}@h:1")
    assert len(history) == MOVES_KEPT and history[0] == (3.0, "n3@h:1")
    raw = {b"a": json.dumps(history).encode(), b"b": b"not json", "c": json.dumps([[1, "x@h:1"]])}
    assert parse_moves(raw) == {"a": history, "c": [(1.0, "x@h:1")]}


def test_home_is_none_for_this_nodes_own_addresses():
    config = replace(Config(), mediad_access_address="127.0.0.11", mediad_core_address="127.0.1.11")
    assert Home.of(document("d"), config) is None
    other = replace(config, mediad_access_address="127.0.0.12")
    assert Home.of(document("d"), other) == Home.from_dict(HOME)
    assert Home.of(document("d", home=None), other) is None
    with pytest.raises(ValueError, match="without 'core'"):
        Home.from_dict({"access": "127.0.0.11"})


def test_takeover_options():
    config = parse_config("[pool]\ntakeover = off\ntakeover_hook = /usr/local/bin/move {address} eth1\n")
    assert config.pool_takeover == "off" and config.pool_takeover_hook == "/usr/local/bin/move {address} eth1"
    assert parse_config("").pool_takeover == "on"
    with pytest.raises(ConfigError, match="must name {address}"):
        parse_config("[pool]\ntakeover_hook = /usr/local/bin/move eth1\n")


def test_a_port_pool_binds_an_adopted_port_on_the_dead_nodes_address_and_releases_it_once():
    pool = PortPool("127.0.0.1", PortRange(31000, 31009))
    socks = [pool.claim(31000)]
    with pool.adopting("127.0.0.21"):
        socks += [pool.claim(31000), pool.claim(31004), pool.bind_tcp(31002)]  # 31000: the same number, elsewhere
    try:
        assert [s.getsockname() for s in socks[1:]] == [("127.0.0.21", 31000), ("127.0.0.21", 31004),
                                                         ("127.0.0.21", 31002)]
        assert pool.in_use == {31000} and pool.adopted == {31000: 1, 31004: 1}
        with pytest.raises(NoPortsError):
            pool.claim(31000)  # outside: this address's own port, already held
        mine = [pool.allocate(1)[0] for _ in range(8)]  # every port but the two held
        socks += mine
        assert sorted(s.getsockname()[1] for s in mine) == [p for p in range(31000, 31010) if p not in (31000, 31004)]
        pool.release(31000)
        pool.release(31000)
        pool.release(31004)
        assert 31000 not in pool.in_use and not pool.adopted
    finally:
        for sock in socks:
            sock.close()


class Survivor:
    """The parts of a mediad a takeover uses, with a real Redis store; ``adopt`` records what it
    is given (the reload itself is the restart's, tested with real mediads)."""

    def __init__(self, url: str, capacity: int) -> None:
        from prometheus_client import CollectorRegistry

        from mediad.metrics import Metrics
        from mediad.state import StateStore

        self.config = replace(Config(), mediad_node_id="s", mediad_capacity=capacity)
        self.metrics = Metrics(CollectorRegistry())
        self.store = StateStore(url, 60)
        self.dialogs: dict = {}
        self.heartbeat = None
        self.adopted: list[str] = []
        from mediad.fence import Fence

        self.fence = Fence(self)

    fails: dict[str, Exception] = {}  # dialog -> what adopting it raises

    async def adopt_or_raise(self, document, remaining, new_core=False, new_access=False):
        if document["dialog"] in self.fails:
            raise self.fails[document["dialog"]]
        dialog = type("Adopted", (), {"id": document["dialog"]})()
        self.dialogs[dialog.id] = dialog
        self.adopted.append(dialog.id)
        return dialog

    def changed(self, dialog) -> None:
        pass

    async def flush(self) -> None:
        pass


def test_a_survivor_without_room_for_all_leaves_them_to_others_then_takes_what_fits(redis_url):
    import asyncio

    from mediad.pool import NODES_KEY
    from mediad.state import dialog_key
    from mediad.takeover import MOVED_KEY, PATIENCE, Takeover, lock_key

    async def run() -> None:
        survivor = Survivor(redis_url, capacity=2)
        takeover = Takeover(survivor)
        redis = survivor.store.redis
        try:
            for dialog in ("d1", "d2", "d3"):
                await survivor.store.save(dialog, document(dialog) | {"node": "dead"})
            await redis.sadd(NODES_KEY, "dead", "s")
            await redis.set("e2ae:pool:{pool}:node:s", "{}")
            assert await takeover.dead() == ["dead"]
            for _ in range(PATIENCE):
                assert not await takeover.take("dead")
                assert await redis.get(lock_key("dead")) is None and survivor.adopted == []
            await redis.set(lock_key("dead"), "other", px=1000)  # another survivor at work
            assert not await takeover.take("dead")
            await redis.delete(lock_key("dead"))
            assert await takeover.take("dead")
            assert survivor.adopted == ["d1", "d2"]
            assert await redis.exists(dialog_key("d3")) == 0  # ended: past capacity
            assert await redis.smembers(NODES_KEY) == {b"s"} and await redis.get(lock_key("dead")) is None
            ((_, to),) = json.loads(await redis.hget(MOVED_KEY, "dead"))
            assert to == f"s@{survivor.config.mediad_control.host}:{survivor.config.mediad_control.port}"
            assert survivor.metrics.registry.get_sample_value("e2ae_mediad_takeover_dialogs_total",
                                                             {"result": "capacity"}) == 1
        finally:
            await survivor.store.close()

    asyncio.run(run())



def test_a_dialog_not_reloaded_is_counted_by_why_a_port_or_its_document(redis_url):
    import asyncio

    from mediad.io.ports import NoPortsError
    from mediad.pool import NODES_KEY
    from mediad.state import dialog_key
    from mediad.takeover import Takeover

    async def run() -> None:
        survivor = Survivor(redis_url, capacity=0)
        survivor.fails = {"d1": NoPortsError("port 31000 is taken"), "d2": KeyError("channels")}
        takeover = Takeover(survivor)
        redis = survivor.store.redis
        try:
            for dialog in ("d1", "d2", "d3"):
                await survivor.store.save(dialog, document(dialog) | {"node": "dead"})
            await redis.sadd(NODES_KEY, "dead", "s")
            await redis.set("e2ae:pool:{pool}:node:s", "{}")
            assert await takeover.take("dead")
            assert survivor.adopted == ["d3"]
            assert [await redis.exists(dialog_key(d)) for d in ("d1", "d2")] == [0, 0]  # ended
            sample = survivor.metrics.registry.get_sample_value
            assert sample("e2ae_mediad_takeover_dialogs_total", {"result": "address"}) == 1
            assert sample("e2ae_mediad_takeover_dialogs_total", {"result": "malformed"}) == 1
        finally:
            await survivor.store.close()

    asyncio.run(run())
