"""The pool of mediads: node records, their Redis keys, and a mediad's heartbeat.

A pool is any number of mediads, each on its own host with its own control,
access and core addresses, sharing one Redis.  The plugin picks one per dialog
(``plugin.pool``).  A mediad with ``[mediad] node_id`` set registers itself:
every ``heartbeat`` seconds it writes its :class:`Node` record with a TTL of
``HEARTBEAT_LIVES`` heartbeats, so a mediad that stops (killed, stopped, cut
off) leaves the pool when its record expires.  The operator may also list the
nodes in ``[pool] nodes`` (:func:`parse_nodes`); a registered record of the
same id then tells their load and state.

Keys (all of the pool's, and only here; one hash tag, ``{pool}``, so that
they share one Redis Cluster slot):

* ``e2ae:pool:{pool}:node:<id>``: the node's record (JSON of :meth:`Node.to_dict`),
  ``PX`` = ``HEARTBEAT_LIVES`` heartbeats;
* ``e2ae:pool:{pool}:nodes``: a set of the node ids that registered once (a reader
  fetches their records with one MGET; an id whose record expired is skipped,
  and removed by the node itself when it stops cleanly);
* ``e2ae:pool:{pool}:draining``: the set of node ids an operator drains
  (``e2ae-ctl drain``); no TTL, so a drain outlives the node's restart.  A
  draining node keeps its calls and gets no new ones.  ``SIGUSR1`` drains a
  mediad from its own host (its record says so at the next heartbeat).  A
  node that finds it was taken over while it ran adds itself (it stands down,
  :class:`Heartbeat`).

Theory of operation: :class:`Node` and :func:`parse_nodes` are pure;
:class:`Heartbeat` is the asyncio shell that reads the drain set and writes
the record at each beat, and removes it at a clean stop.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from mediad.config import NODE_ID_CHARS, parse_host_port, ConfigError

log = logging.getLogger("mediad.pool")

POOL_PREFIX = "e2ae:pool:{pool}:"  # one hash tag: a reader's MGET and pipelines stay in one Cluster slot
NODE_PREFIX = POOL_PREFIX + "node:"
NODES_KEY = POOL_PREFIX + "nodes"
DRAINING_KEY = POOL_PREFIX + "draining"
TAKEOVER_PREFIX = POOL_PREFIX + "takeover:"  # + a node id: who takes its dialogs over (mediad.takeover)
MOVED_KEY = POOL_PREFIX + "moved"  # where dead nodes' dialogs went (mediad.takeover)
HEARTBEAT_LIVES = 3  # a record outlives this many missed heartbeats


def node_key(node_id: str) -> str:
    return NODE_PREFIX + node_id


def lock_key(node_id: str) -> str:
    return TAKEOVER_PREFIX + node_id


class NodeState(enum.Enum):
    ACTIVE = "active"
    DRAINING = "draining"


@dataclass(frozen=True)
class Node:
    """One mediad of the pool: where its control endpoint is, its share and its load."""

    id: str
    host: str
    port: int
    weight: int = 1
    capacity: int = 0  # 0: no limit
    load: int = 0  # sessions it holds now
    state: NodeState = NodeState.ACTIVE
    registered: bool = False  # a live record in Redis (else: only listed in [pool] nodes)

    @property
    def ref(self) -> str:
        """``id@host:port``: what a dialog's record keeps (enough to reach the node later)."""
        return f"{self.id}@{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        """Its control endpoint."""
        return (self.host, self.port)

    @property
    def full(self) -> bool:
        return 0 < self.capacity <= self.load

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "control": f"{self.host}:{self.port}", "weight": self.weight,
                "capacity": self.capacity, "load": self.load, "state": self.state.value}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Node":
        """A record read from Redis; ValueError naming what is wrong."""
        try:
            node_id, host, port = parse_ref(f"{doc['id']}@{doc['control']}")
            return cls(node_id, host, port, weight=int(doc.get("weight", 1)), capacity=int(doc.get("capacity", 0)),
                       load=int(doc.get("load", 0)), state=NodeState(doc.get("state", "active")), registered=True)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"node record without {exc}") from None

    def merged(self, record: "Node") -> "Node":
        """This listed node with what its registered record says (load, state, capacity)."""
        return replace(self, capacity=record.capacity, load=record.load, state=record.state, registered=True)


def parse_ref(text: str) -> tuple[str, str, int]:
    """``id@host:port`` → (id, host, port); ValueError naming the bad text."""
    node_id, sep, address = text.strip().partition("@")
    if not sep or not node_id or not set(node_id) <= NODE_ID_CHARS or len(node_id) > 64:
        raise ValueError(f"expected id@host:port, got {text!r}")
    try:
        where = parse_host_port(address, where="node")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return node_id, where.host, where.port


def parse_nodes(text: str) -> list[Node]:
    """``[pool] nodes``: ``id@host:port [weight]`` entries, separated by commas or new lines."""
    nodes: list[Node] = []
    for entry in text.replace("\n", ",").split(","):
        words = entry.split()
        if not words:
            continue
        if len(words) > 2:
            raise ValueError(f"expected 'id@host:port [weight]', got {entry.strip()!r}")
        node_id, host, port = parse_ref(words[0])
        weight = 1
        if len(words) == 2:
            if not words[1].isdigit() or int(words[1]) > 1000:
                raise ValueError(f"weight must be 0 to 1000, got {words[1]!r}")
            weight = int(words[1])
        if any(n.id == node_id for n in nodes):
            raise ValueError(f"node {node_id!r} listed twice")
        nodes.append(Node(node_id, host, port, weight))
    return nodes


def own_node(config, load: int = 0, state: NodeState = NodeState.ACTIVE) -> Node:
    """The record a mediad writes for itself."""
    control = config.mediad_control
    return Node(config.mediad_node_id, control.host, control.port, config.mediad_weight, config.mediad_capacity,
                load, state, registered=True)


class Heartbeat:
    """Writes this mediad's record every ``[mediad] heartbeat`` seconds (see the module).

    ``redis``: an asyncio redis client; ``load``: the number of sessions now;
    ``watch``: what looks for signs that this node was taken over while it ran
    (``mediad.fence.Fence``): at each beat, before the record is written,
    ``watch.taken_over(lock, moved, first)`` with the holder of this node's
    takeover lock and its entry of the ``moved`` hash (a reason when a survivor
    took this node's dialogs over: the node *stands down*, below); after it,
    ``watch.beat(previous, first)`` with the record it replaced (None when it
    had expired).

    Standing down: a node taken over while it ran (paused, cut off) finds its
    dialogs and its floating media addresses on a survivor.  It puts itself in
    the operator's drain set and writes its record as draining in that same
    beat, so no new call is placed on it while its addresses may be another
    host's; it stays so (across restarts: the set has no TTL) until the
    operator, once its addresses are its own again, takes it out
    (``e2ae-ctl undrain``).
    """

    def __init__(self, config, redis, load: Callable[[], int], watch: Any = None) -> None:
        self.config = config
        self.redis = redis
        self.load = load
        self.watch = watch
        self.draining = False  # the operator's set (read at each beat) or SIGUSR1
        self.drained_locally = False  # SIGUSR1: draining until the process ends
        self.beats = 0

    @property
    def ttl_ms(self) -> int:
        return int(self.config.mediad_heartbeat * HEARTBEAT_LIVES * 1000)

    async def beat(self) -> None:
        """One registration (two round trips): the operator's drain set and the signs of a takeover
        read, then the record written (with the record it replaced)."""
        node_id = self.config.mediad_node_id
        first = self.beats == 0
        pipe = self.redis.pipeline(transaction=False)
        pipe.sismember(DRAINING_KEY, node_id)
        pipe.get(lock_key(node_id))
        pipe.hget(MOVED_KEY, node_id)
        drained, lock, moved = await pipe.execute()
        drained = bool(drained)
        taken = self.watch.taken_over(lock, moved, first) if self.watch is not None else None
        # Already in the set (a survivor that took its calls over put it there) but not yet
        # draining here: it stands down all the same, and says why.
        stand_down = taken is not None and not (drained and self.draining)
        if stand_down:
            drained = True
            log.warning("node %s was taken over while it ran (%s): draining, no new calls, until an operator "
                        "undrains it (e2ae-ctl undrain %s) once its media addresses are its own again",
                        node_id, taken, node_id)
        elif drained != self.draining and not self.drained_locally:
            log.info("node %s %s (operator); %d session(s)", node_id,
                     "draining: no new calls" if drained else "active again", self.load())
        if not self.drained_locally:
            self.draining = drained
        node = own_node(self.config, self.load(), NodeState.DRAINING if self.draining else NodeState.ACTIVE)
        pipe = self.redis.pipeline(transaction=False)
        if stand_down:
            pipe.sadd(DRAINING_KEY, node_id)
        pipe.set(node_key(node_id), json.dumps(node.to_dict(), separators=(",", ":")), px=self.ttl_ms, get=True)
        pipe.sadd(NODES_KEY, node_id)
        previous = (await pipe.execute())[-2]
        self.beats += 1
        if self.watch is not None:
            self.watch.beat(previous, first)

    def drain(self) -> None:
        """SIGUSR1: this node takes no new calls (until it restarts)."""
        self.draining = self.drained_locally = True
        log.info("node %s draining (signal): no new calls; %d session(s) left", self.config.mediad_node_id,
                 self.load())

    async def run(self, on_error: Callable[[Exception], None]) -> None:
        period = self.config.mediad_heartbeat
        while True:
            started = time.monotonic()
            try:
                await self.beat()
            except Exception as exc:  # Redis's doing (the record expires; the next beat writes it again)
                on_error(exc)
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))

    async def leave(self) -> None:
        """A clean stop: the record goes now rather than at its TTL."""
        node_id = self.config.mediad_node_id
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(node_key(node_id))
        pipe.srem(NODES_KEY, node_id)
        await pipe.execute()


__all__ = ["DRAINING_KEY", "HEARTBEAT_LIVES", "MOVED_KEY", "NODES_KEY", "POOL_PREFIX", "TAKEOVER_PREFIX", "Heartbeat",
           "Node", "NodeState", "lock_key", "node_key", "own_node", "parse_nodes", "parse_ref"]
