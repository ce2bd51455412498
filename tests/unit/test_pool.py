"""The pool of mediads: node records, the static list, the choice of a node per dialog."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from mediad.config import ConfigError, parse_config
from mediad.pool import Node, NodeState, parse_nodes, parse_ref
from plugin.pool import Standing, candidates, choose, classify, read_records

A = Node("a", "127.0.0.11", 2223, weight=1)
B = Node("b", "127.0.0.12", 2223, weight=1)
C = Node("c", "127.0.0.13", 2223, weight=2)


def spread(nodes, draining=frozenset(), disabled=None, n=4000, now=0.0):
    rng = random.Random(7)
    out = Counter()
    for _ in range(n):
        node = choose(nodes, draining, disabled or {}, now, rng.random())
        out[node.id if node else None] += 1
    return out


def test_choice_follows_the_weights():
    counts = spread([A, B, C])
    assert set(counts) == {"a", "b", "c"}
    for node_id, share in (("a", 0.25), ("b", 0.25), ("c", 0.5)):
        assert abs(counts[node_id] / 4000 - share) < 0.03, counts


def test_choice_edges_of_the_random_number():
    nodes = [A, B, C]
    assert choose(nodes, frozenset(), {}, 0.0, 0.0) is A
    assert choose(nodes, frozenset(), {}, 0.0, 0.2499) is A
    assert choose(nodes, frozenset(), {}, 0.0, 0.25) is B
    assert choose(nodes, frozenset(), {}, 0.0, 0.9999999) is C


def test_draining_node_gets_no_new_call_by_record_or_by_operator_set():
    drained = Node("c", "127.0.0.13", 2223, weight=2, state=NodeState.DRAINING)
    assert "c" not in spread([A, B, drained])
    assert "c" not in spread([A, B, C], draining=frozenset({"c"}))
    assert classify(C, {"c"}, {}, 0.0) is Standing.DRAINING


def test_full_node_gets_no_new_call():
    full = Node("c", "127.0.0.13", 2223, weight=2, capacity=10, load=10)
    below = Node("c", "127.0.0.13", 2223, weight=2, capacity=10, load=9)
    assert classify(full, set(), {}, 0.0) is Standing.FULL
    assert "c" not in spread([A, B, full])
    assert classify(below, set(), {}, 0.0) is Standing.ACTIVE
    assert classify(Node("u", "127.0.0.1", 1, capacity=0, load=10**6), set(), {}, 0.0) is Standing.ACTIVE


def test_disabled_node_comes_back_after_its_timeout():
    disabled = {"a": 10.0}
    assert classify(A, set(), disabled, 9.9) is Standing.DISABLED
    assert "a" not in spread([A, B], disabled=disabled, now=9.9)
    assert classify(A, set(), disabled, 10.0) is Standing.ACTIVE


def test_no_node_available_is_none():
    assert choose([], frozenset(), {}, 0.0, 0.5) is None
    assert choose([A, B], frozenset({"a", "b"}), {}, 0.0, 0.5) is None
    assert choose([Node("z", "127.0.0.1", 1, weight=0)], frozenset(), {}, 0.0, 0.5) is None


def test_a_node_without_a_live_record_is_no_candidate():
    # The registry holds live records only (they expire 3 heartbeats after the last).
    live = read_records([json.dumps(A.to_dict()), None, json.dumps(C.to_dict())])
    nodes = candidates([], live, registry=True)
    assert [n.id for n in nodes] == ["a", "c"]
    assert "b" not in spread(nodes)
    assert candidates([], live, registry=False) == []


def test_listed_nodes_take_load_and_state_from_their_record():
    listed = parse_nodes("a@127.0.0.11:2223 1, c@127.0.0.13:2223 2")
    record = Node("c", "127.0.0.13", 2223, weight=9, capacity=5, load=5, state=NodeState.DRAINING, registered=True)
    nodes = candidates(listed, [record, B], registry=False)
    assert [n.id for n in nodes] == ["a", "c"]  # b registered but not listed, registry off
    c = nodes[1]
    assert (c.weight, c.load, c.capacity, c.state) == (2, 5, 5, NodeState.DRAINING)  # the operator's weight
    assert [n.id for n in candidates(listed, [B], registry=True)] == ["a", "c", "b"]


def test_record_round_trip_and_broken_records_skipped():
    node = Node("n-1", "::1", 2300, weight=3, capacity=100, load=7, state=NodeState.DRAINING, registered=True)
    assert Node.from_dict(json.loads(json.dumps(node.to_dict()))) == node
    assert read_records([b"not json", json.dumps({"id": "x"}), json.dumps({"id": "x y", "control": "1.2.3.4:5"})]) \
        == []


def test_static_list_and_refs():
    nodes = parse_nodes("a@127.0.0.11:2223, b@127.0.0.12:2224 3\n c@[::1]:2225 0".replace("[::1]", "::1"))
    assert [(n.id, n.host, n.port, n.weight) for n in nodes] == [
        ("a", "127.0.0.11", 2223, 1), ("b", "127.0.0.12", 2224, 3), ("c", "::1", 2225, 0)]
    assert parse_ref(nodes[1].ref) == ("b", "127.0.0.12", 2224)
    for bad in ("a@127.0.0.1", "127.0.0.1:5", "a b@127.0.0.1:5", "a@host:5", "a@127.0.0.1:5 x",
                "a@127.0.0.1:5 1 2", "a@127.0.0.1:5, a@127.0.0.2:5"):
        with pytest.raises(ValueError):
            parse_nodes(bad)


def test_pool_settings_are_checked():
    config = parse_config("[mediad]\nnode_id = m1\nweight = 2\ncapacity = 500\nheartbeat = 0.5\n"
                          "[pool]\nnodes = m1@127.0.0.11:2223 2\nregistry = on\n")
    assert (config.mediad_node_id, config.mediad_weight, config.mediad_capacity, config.mediad_heartbeat) == \
        ("m1", 2, 500, 0.5)
    assert config.pool_registry == "on"
    for text in ("[mediad]\nnode_id = a/b\n", "[mediad]\nweight = -1\n", "[mediad]\nheartbeat = 0\n",
                 "[pool]\nnodes = m1@nowhere\n", "[pool]\nregistry = maybe\n"):
        with pytest.raises(ConfigError):
            parse_config(text)
