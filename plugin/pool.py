"""The plugin's choice of a mediad per dialog, in a pool of mediads (``mediad.pool``).

Theory of operation: :func:`classify` and :func:`choose` are pure.  The
candidates are the nodes listed in ``[pool] nodes`` (merged with their
registered record, when they have one) and, with ``[pool] registry = on``,
every node with a live record in Redis.  A node is

* ``active``: it may take a new call;
* ``draining``: its record, or the operator's set, says so: it keeps its
  calls, gets no new one;
* ``full``: its load reached its capacity;
* ``disabled``: a RESERVE to it failed (unreachable, no answer) less than
  ``[pool] disable_timeout`` seconds ago, in this worker (as Kamailio's
  rtpengine module does with ``rtpengine_disable_tout``).

A registered node whose heartbeats stop leaves the candidates when its record
expires.  :func:`choose` takes one active node at random, in proportion to
its weight (the random number is an argument).  The shell draws it from the
dialog id (:func:`dialog_uniform`), so an INVITE retransmitted to another
worker before the first one's record is saved lands on the same node (given
the same view of the pool).  No active node: the call gets 503 with
Retry-After and a Warning.

:class:`Pool` is the thin shell of one Kamailio worker: it reads the registry
at most once per ``[pool] cache`` seconds (two round trips: the sets, then
one MGET of the records), so a call costs no Redis round trip of its own in
the common case, and keeps one Iq client per node, created on first use.  A
dialog's record keeps its node as ``id@host:port`` (``DialogRecord.mediad``):
every later Iq of the dialog (MODIFY, RELEASE, the release retry queue,
e2ae-ctl's release) goes there, whatever the registry says by then, unless
the node died and a survivor took its dialogs over (``mediad.takeover``): the
registry read also reads where dead nodes' dialogs went (the ``moved`` hash,
in the same round trip), and :meth:`Pool.route` sends a dialog made before
its node's move to the survivor (:func:`mediad.takeover.resolve`).
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import time
from dataclasses import replace
from typing import Callable, Iterable

from sdp_rules.errors import UnavailableError

from mediad.config import HostPort
from mediad.pool import DRAINING_KEY, NODES_KEY, Node, NodeState, node_key, parse_nodes, parse_ref
from mediad.takeover import MOVED_KEY, Moves, parse_moves, resolve

log = logging.getLogger("plugin.pool")


class Standing(enum.Enum):
    """What a node may do now, as the plugin sees it (the label of the nodes metric)."""

    ACTIVE = "active"
    DRAINING = "draining"
    FULL = "full"
    DISABLED = "disabled"


def candidates(listed: Iterable[Node], records: Iterable[Node], registry: bool) -> list[Node]:
    """The nodes to choose among: those listed (with their record's load and state),
    and with ``registry`` every registered one."""
    by_id = {record.id: record for record in records}
    out = []
    for node in listed:
        record = by_id.pop(node.id, None)
        out.append(node.merged(record) if record is not None else node)
    if registry:
        out.extend(by_id.values())
    return out


def classify(node: Node, draining: frozenset[str] | set[str], disabled_until: dict[str, float],
             now: float) -> Standing:
    if node.state is NodeState.DRAINING or node.id in draining:
        return Standing.DRAINING
    if disabled_until.get(node.id, 0.0) > now:
        return Standing.DISABLED
    if node.full:
        return Standing.FULL
    return Standing.ACTIVE


def choose(nodes: list[Node], draining, disabled_until: dict[str, float], now: float, rand: float) -> Node | None:
    """One active node with a weight, drawn in proportion to weight (``rand`` in [0, 1)); None: none."""
    active = [n for n in nodes if n.weight > 0 and classify(n, draining, disabled_until, now) is Standing.ACTIVE]
    total = sum(n.weight for n in active)
    if not total:
        return None
    point = rand * total
    for node in active:
        point -= node.weight
        if point < 0:
            return node
    return active[-1]


def dialog_uniform(dialog: str) -> float:
    """A number in [0, 1) fixed by the dialog id (spread as evenly as a random one)."""
    return int.from_bytes(hashlib.sha256(dialog.encode()).digest()[:8], "big") / 2.0 ** 64


def read_records(raw: Iterable[bytes | str | None]) -> list[Node]:
    """The records of an MGET (expired ones are None); a broken one is skipped and logged."""
    out = []
    for value in raw:
        if value is None:
            continue
        try:
            out.append(Node.from_dict(json.loads(value)))
        except ValueError as exc:
            log.warning("pool record skipped: %s", exc)
    return out


class Pool:
    """One worker's view of the pool and its Iq clients (see the module)."""

    def __init__(self, config, redis_of: Callable[[], object], metrics=None, client_of=None,
                 clock: Callable[[], float] = time.monotonic,
                 rand: Callable[[str], float] = dialog_uniform) -> None:
        self.config = config
        self.listed = parse_nodes(config.pool_nodes)
        self.registry = config.pool_registry == "on"
        self.redis_of = redis_of
        self.metrics = metrics
        self.client_of = client_of or _lazy_client(config)
        self.clock = clock
        self.rand = rand
        self.retry_after = config.plugin_retry_after
        self._nodes: list[Node] = list(self.listed)
        self._draining: frozenset[str] = frozenset()
        self._moves: Moves = {}
        self._read_at: float | None = None
        self._disabled: dict[str, float] = {}
        self._clients: dict[str, object] = {}

    @classmethod
    def configured(cls, config) -> bool:
        return bool(config.pool_nodes.strip()) or config.pool_registry == "on"

    # -- the registry ----------------------------------------------------------------
    def nodes(self) -> list[Node]:
        now = self.clock()
        if self._read_at is None or now - self._read_at >= self.config.pool_cache:
            self._refresh(now)
        return self._nodes

    def _refresh(self, now: float) -> None:
        try:
            redis = self.redis_of()
            pipe = redis.pipeline(transaction=False)
            pipe.smembers(DRAINING_KEY)
            pipe.smembers(NODES_KEY)
            pipe.hgetall(MOVED_KEY)
            draining, ids, moves = pipe.execute()
            ids = sorted(_text(i) for i in ids)
            records = read_records(redis.mget([node_key(i) for i in ids])) if ids else []
        except Exception as exc:  # redis-py's errors: keep the last view, read again at the next call
            log.warning("pool registry unreadable, last view kept: %s", exc.__class__.__name__)
            self._read_at = now
            return
        self._draining = frozenset(_text(d) for d in draining)
        self._moves = parse_moves(moves)
        self._nodes = candidates(self.listed, records, self.registry)
        self._read_at = now
        if self.metrics is not None:
            self.metrics.pool_view(self.standings(now))

    def standings(self, now: float | None = None) -> dict[Standing, int]:
        now = self.clock() if now is None else now
        counts = {standing: 0 for standing in Standing}
        for node in self._nodes:
            counts[classify(node, self._draining, self._disabled, now)] += 1
        return counts

    # -- the choice ------------------------------------------------------------------
    def choose(self, dialog: str) -> str:
        """The ``id@host:port`` of the node for the new ``dialog``; UnavailableError (503) when none may take it."""
        nodes = self.nodes()
        node = choose(nodes, self._draining, self._disabled, self.clock(), self.rand(dialog))
        if node is None:
            raise UnavailableError(f"no media node available ({len(nodes)} in the pool)", self.retry_after)
        if self.metrics is not None:
            self.metrics.pool_placed.labels(node.id).inc()
        return node.ref

    def failed(self, ref: str) -> None:
        """A RESERVE to ``ref`` could not be done: no new call there for ``disable_timeout`` s."""
        node_id = ref.partition("@")[0]
        self._disabled[node_id] = self.clock() + self.config.pool_disable_timeout
        log.warning("media node %s unreachable: no new calls there for %.0f s", node_id,
                    self.config.pool_disable_timeout)

    def route(self, ref: str, created: float) -> str:
        """Where the dialog placed on ``ref`` and made at ``created`` (its record's, wall clock)
        is now: ``ref``, or the survivor that took it over."""
        if not ref:
            return ref
        self.nodes()  # the view (and the moves), read again when older than [pool] cache
        return resolve(ref, created, self._moves)

    # -- the Iq clients ----------------------------------------------------------------
    def client(self, ref: str):
        """The Iq client of the node ``ref`` (one per node in this worker, made on first use)."""
        client = self._clients.get(ref)
        if client is None:
            node_id, host, port = parse_ref(ref)
            client = self._clients[ref] = self.client_of(HostPort(host, port))
        return client

    def clients(self) -> list:
        return list(self._clients.values())

    def request(self, iq, ref: str):
        """Send ``iq`` to the node ``ref`` and wait for its answer."""
        return self.client(ref).request(iq)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _lazy_client(config):
    def make(address: HostPort):
        from plugin.edge import LazyIqClient

        return LazyIqClient(replace(config, mediad_control=address))
    return make


__all__ = ["Pool", "Standing", "candidates", "choose", "classify", "read_records"]
