"""A survivor takes over the dialogs of a dead mediad of the pool, on its floating address.

A node of the pool (``mediad.pool``) that dies (killed, host lost) leaves its
dialog documents in Redis, each naming the node and the addresses its ports
are bound on (``home``: access and core, bind and SDP addresses).  Where those
addresses can move to another host (a floating address: keepalived, a cloud
API, or any 127.x address on one machine), a survivor binds them, reloads each
dialog with the same code as a restart (``mediad.daemon.Daemon.adopt``: same
ports, same ICE credentials, SRTP from the stored keys and each stream's
rollover counter, RFC 3711 section 3.3.1; no new DTLS handshake, RFC 5764
section 4.1.2: the keys are those of the association the peers hold), and the peers' media goes on as if nothing happened: nothing is sent
to either side.

Keys (the pool's hash tag, ``{pool}``):

* ``e2ae:pool:{pool}:takeover:<id>``: who is taking over node ``<id>``'s
  dialogs, ``SET NX PX`` :data:`LOCK_TTL_MS` by the node that wins it, deleted
  when it is done.  A node starting with ``<id>`` takes the same lock before it
  reloads its own dialogs, so a node back from the dead and a survivor never
  both bind its ports: the second to come finds the documents rewritten.
* ``e2ae:pool:{pool}:moved``: a hash, node id → JSON list of ``[at, ref]``
  (wall-clock seconds, ``id@host:port`` of the survivor), oldest first, the
  last :data:`MOVES_KEPT`: where the dialogs of a node went, and when.  The
  plugin sends a dialog's later Iqs to the survivor when the dialog's record
  was made before ``at`` (:func:`resolve`); a dialog placed on the node after
  it came back (same id) stays there.

Who is dead: an id in the registry's set of nodes (``e2ae:pool:{pool}:nodes``)
whose record expired.  A clean stop (drained or not) removes the id from the
set, so a stopped node's dialogs wait for its restart; a killed one's do not.
A survivor that takes a dead node's dialogs puts that node in the operator's
drain set (``e2ae:pool:{pool}:draining``, :mod:`mediad.pool`), as a node that
stands down does (:mod:`mediad.fence`): restarted, it comes back draining (its
record says so from its first heartbeat) and gets no new call, since its
floating addresses may be the survivor's host's now, until the operator undrains
it (``e2ae-ctl undrain``).  A dead node that held no dialog is not drained.

What does not move (:func:`unmovable`); the whole dialog is then released and
an ``media_lost`` event (:data:`EVENT_MEDIA_LOST`) asks the plugin to end it
with a BYE each way:

* a data-channel association (``sctp`` and its ``dc_channel`` streams): the
  SCTP association (RFC 4960 section 5: verification tags, TSNs, stream
  sequence numbers, the congestion and retransmission state) lives in
  usrsctp's memory and mediad keeps no image of it; a restarted mediad does
  not restore it either (``mediad.core.datachannel``).  The DTLS association under
  it would move, the SCTP one above it cannot;
* DTLS-SRTP over TCP (``srtp_tcp``, or ICE-TCP, RFC 4571/6544): the TCP
  connection's sequence numbers and windows are the dead kernel's; the
  survivor's kernel answers the peer's next segment with a RST;
* a dialog its document does not place (no ``home``: written before
  takeover existed), and dialogs past the survivor's ``capacity``: a
  survivor without room for all of a dead node's dialogs leaves them to the
  others for :data:`PATIENCE` rounds; if none took them by then, it takes what
  fits and ends the rest.  A survivor takes over one dead node per round.

SRTP over UDP (RFC 5764), bundled or not, moves.

``[pool] takeover = reinvite``: the core side gets new ports on the survivor's own
core address (the edge re-INVITEs the core).  Where the dead node's access address
did not move either (``takeover_hook`` failed for it) or its ports cannot be bound
there, the access side gets new terminations on the survivor's own access address
(:func:`fresh_access_spec`): a new port per transport (or per stream of its own),
new ICE-lite credentials, no DTLS association (the survivor waits as server: the
edge re-offers ``a=setup:actpass``, RFC 5763 section 5, and the WIC answers
``active``) under the survivor's renewal certificate, another fingerprint than the
pool's (a WebRTC peer starts a new association only on a new fingerprint,
RFC 8842 section 5); the SSRCs learnt from the WIC and the whole core side stay.
Each such dialog is published in a ``media_moved`` event per side
(:func:`moved_event`, :func:`moved_access_event`) and re-INVITEd by the plugin.

* T.38 once its DTLS association is up (UDPTL over DTLS over UDP, RFC 7345):
  its UDPTL packets are DTLS application data, protected by the record layer
  of the OpenSSL connection (keys, epoch, sequence numbers, RFC 6347 section
  4.1), which the document does not hold (for SRTP the document holds the
  exported SRTP keys and the streams' rollover counters, which is all the
  media needs).  Moving it would take
  the record keys and the write sequence number in the document
  (``mediad.dtls_record.RecordProtection`` derives them; the survivor would
  jump the sequence number forward, which the peer's replay window accepts,
  RFC 6347 section 4.1.2.6); a restarted mediad cannot continue it either;

Theory of operation: :class:`Home`, :func:`dead_nodes`, :func:`unmovable`,
:func:`plan`, :func:`resolve` and :func:`add_move` are pure.  :class:`Takeover`
is the asyncio shell of one mediad: every heartbeat it reads the registry and
takes over each dead node it wins the lock of; :func:`restore_own` is a
starting node's reload under its own lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
import shlex
import time
from dataclasses import dataclass
from typing import Any, Iterable

from iq import Role
from mediad.io.ports import NoPortsError
from mediad.pool import DRAINING_KEY, MOVED_KEY, NODES_KEY, TAKEOVER_PREFIX, lock_key, node_key
from sdp_rules.errors import E2aeError


# What restoring a dialog from its document may raise (OverflowError: int(1e999) in a document).
ADOPT_ERRORS = (E2aeError, KeyError, TypeError, ValueError, OverflowError)
log = logging.getLogger("mediad.takeover")

LOCK_PREFIX = TAKEOVER_PREFIX
LOCK_TTL_MS = 30_000  # a takeover (or a start's reload) longer than this loses its lock
MOVES_KEPT = 8
HOOK_TIMEOUT = 10.0  # seconds [pool] takeover_hook may take
PATIENCE = 3  # rounds a survivor without room for all of a dead node's calls leaves them to others
EVENT_MEDIA_LOST = "media_lost"  # a dialog whose media could not be taken over: the plugin ends it
# A dialog whose media a survivor holds on its own addresses ([pool] takeover = reinvite):
# {"dialog", "side", "address", "ports"}: the plugin re-INVITEs that side (plugin.reinvite).
EVENT_MEDIA_MOVED = "media_moved"


class Lost(enum.Enum):
    """Why a dead node's dialog was not taken over (the event's reason, a metric label)."""

    SCTP = "sctp"  # a data-channel association (usrsctp state is not serialisable)
    TCP = "tcp"  # DTLS over TCP (the connection dies with its host's kernel)
    T38 = "t38"  # UDPTL in DTLS records (the record layer's state is OpenSSL's, not in Redis)
    NO_HOME = "no_home"  # its document does not say where its ports are
    MALFORMED = "malformed"  # its document cannot be read (a home or streams of the wrong shape)
    CAPACITY = "capacity"  # the survivor is full
    ADDRESS = "address"  # the hook could not move an address, or a port could not be bound


@dataclass(frozen=True)
class Home:
    """The addresses a dialog's ports are bound on, and those the SDP names (NAT)."""

    access: str
    core: str
    access_sdp: str
    core_sdp: str

    @classmethod
    def own(cls, config) -> "Home":
        return cls(config.mediad_access_address, config.mediad_core_address,
                   config.mediad_access_advertise or config.mediad_access_address,
                   config.mediad_core_advertise or config.mediad_core_address)

    def to_dict(self) -> dict[str, str]:
        return {"access": self.access, "core": self.core, "access_sdp": self.access_sdp, "core_sdp": self.core_sdp}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Home":
        """ValueError naming what is missing."""
        try:
            return cls(str(doc["access"]), str(doc["core"]), str(doc.get("access_sdp") or doc["access"]),
                       str(doc.get("core_sdp") or doc["core"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"dialog home without {exc}") from None

    @classmethod
    def of(cls, document: dict[str, Any], config) -> "Home | None":
        """Where a document's ports are, None when they are this node's own addresses (or it does not say)."""
        raw = document.get("home")
        if not raw:
            return None
        home = cls.from_dict(raw)
        return None if home == cls.own(config) else home

    def addresses(self) -> list[str]:
        return list(dict.fromkeys((self.access, self.core)))

    def with_own_core(self, config) -> "Home":
        """This home with the core side on ``config``'s own core address (``[pool] takeover =
        reinvite``: the access address floats, the core side is re-INVITEd to new ports)."""
        own = Home.own(config)
        return Home(self.access, own.core, self.access_sdp, own.core_sdp)

    def with_own_access(self, config) -> "Home":
        """This home with the access side on ``config``'s own access address too (the dead
        node's access address did not move: the WIC is re-INVITEd to a new termination)."""
        own = Home.own(config)
        return Home(own.access, self.core, own.access_sdp, self.core_sdp)


def moved_event(dialog: str, address: str, ports: list[int]) -> dict[str, Any]:
    """The ``media_moved`` event of a dialog whose core side a survivor holds on ``address``:
    ``ports``, the RTP port of each stream with a core side, in stream order (its m-lines')."""
    return {"dialog": dialog, "stream_id": None, "event": EVENT_MEDIA_MOVED, "side": "core", "address": address,
            "ports": list(ports), "time": round(time.time(), 3)}


def fresh_access_spec(spec):
    """The spec of a new access termination (or transport) replacing ``spec``'s, whose port
    the survivor could not bind: the WIC is re-offered it (RFC 8839 section 4.4.1.1.1, an
    ICE restart: its new credentials and candidates come with its answer; RFC 8842 section
    5, a new association: the edge offers ``actpass``, the WIC answers ``active``, so this
    side waits as DTLS server, RFC 5763 section 5).  The WIC's fingerprints stay (a WebRTC
    peer connection keeps its certificate) until the answer's replace them."""
    changes = {"remote_ice_ufrag": None, "remote_ice_pwd": None, "remote_candidates": [], "tls_role": Role.SERVER,
               "establish_tls": False, "local_tls_id": None, "remote_tls_id": None, "reuse_association": False,
               "ice_restart": False}
    names = {f.name for f in dataclasses.fields(spec)}
    return dataclasses.replace(spec, **{k: v for k, v in changes.items() if k in names})


def moved_access_event(dialog: str, address: str, fingerprint: str, transports: list[dict[str, Any]],
                       streams: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``media_moved`` event of a dialog whose access side a survivor holds on new
    terminations on ``address``: ``transports`` (``transport_id``, ``port``, ``ice_ufrag``,
    ``ice_pwd``) and the streams with a termination of their own (``stream_id``, ``port``,
    ``rtcp_port`` or None, ``ice_ufrag``, ``ice_pwd``); ``fingerprint``: this node's
    certificate's (``"sha-256 AB:..."``).  The plugin re-offers them to the WIC."""
    return {"dialog": dialog, "stream_id": None, "event": EVENT_MEDIA_MOVED, "side": "access", "address": address,
            "fingerprint": fingerprint, "transports": list(transports), "streams": list(streams),
            "time": round(time.time(), 3)}


def dead_nodes(ids: Iterable[str], alive: Iterable[str], me: str) -> list[str]:
    """The registered ids (``ids``) whose record expired (not in ``alive``; not ``me``), in order."""
    alive = set(alive)
    return sorted(i for i in set(ids) if i not in alive and i != me)


def unmovable(document: dict[str, Any]) -> Lost | None:
    """Why this dialog cannot move to another host (None: it can); see the module.

    Never raises: a document whose home or streams have the wrong shape is :attr:`Lost.MALFORMED`.
    """
    if not document.get("home"):
        return Lost.NO_HOME
    try:
        Home.from_dict(document["home"])
    except ValueError:
        return Lost.MALFORMED
    streams = document.get("streams") or []
    if not isinstance(streams, list) or not all(isinstance(sdoc, dict) for sdoc in streams):
        return Lost.MALFORMED
    for sdoc in streams:
        kind = sdoc.get("kind")
        if kind in ("sctp", "dc_channel"):
            return Lost.SCTP
        if kind == "srtp_tcp":
            return Lost.TCP
        access = sdoc.get("access") or {}
        channels = access.get("channels") or {} if isinstance(access, dict) else None
        if not isinstance(channels, dict) or not all(isinstance(c, dict) for c in channels.values()):
            return Lost.MALFORMED
        channels = channels.values()
        if kind == "t38" and any(c.get("state") == "established" for c in channels):
            return Lost.T38
        # Keys but no peer address: the association ran over an accepted TCP connection.
        if any(c.get("srtp_keys") and not c.get("peer") for c in channels):
            return Lost.TCP
    return None


def plan(documents: list[dict[str, Any]], room: int | None) -> tuple[list[dict[str, Any]], list[tuple[dict, Lost]]]:
    """(the documents to take over, those to end and why); ``room``: sessions the survivor
    may add (None: no limit).  Taken in dialog id order, so every survivor would pick the same."""
    take: list[dict[str, Any]] = []
    end: list[tuple[dict, Lost]] = []
    for document in sorted(documents, key=lambda d: str(d.get("dialog", ""))):
        reason = unmovable(document)
        if reason is None and room is not None and len(take) >= room:
            reason = Lost.CAPACITY
        if reason is None:
            take.append(document)
        else:
            end.append((document, reason))
    return take, end


Moves = dict[str, list[tuple[float, str]]]


def parse_moves(raw: dict) -> Moves:
    """The ``moved`` hash as read (bytes or str); a broken entry is skipped."""
    out: Moves = {}
    for key, value in (raw or {}).items():
        node = key.decode() if isinstance(key, bytes) else str(key)
        try:
            out[node] = sorted((float(at), str(ref)) for at, ref in json.loads(value))
        except (ValueError, TypeError):
            log.warning("moved entry of node %s skipped: unreadable", node[:64])
    return out


def add_move(history: list[tuple[float, str]], at: float, ref: str) -> list[tuple[float, str]]:
    """A node's history with one more move, oldest first, the last MOVES_KEPT."""
    return sorted([*history, (at, ref)])[-MOVES_KEPT:]


def resolve(ref: str, created: float, moves: Moves, hops: int = 16) -> str:
    """Where the dialog of ``ref`` made at ``created`` (wall clock) is now.

    The first move of its node after ``created`` took it; from there, the first
    move of that node after that one, and so on (a survivor that died too).
    """
    at = created
    for _ in range(hops):
        node = ref.partition("@")[0]
        move = next(((when, to) for when, to in moves.get(node, ()) if when > at), None)
        if move is None:
            return ref
        at, ref = move
    return ref


# ---------------------------------------------------------------------------
# The shell
# ---------------------------------------------------------------------------


class Takeover:
    """One mediad's watch over the pool, and its takeovers (see the module)."""

    def __init__(self, daemon) -> None:
        self.daemon = daemon
        self.config = daemon.config
        self.me = daemon.config.mediad_node_id
        self.waited: dict[str, int] = {}  # dead node -> rounds this node left it for lack of room
        self.dialogs = daemon.metrics.takeover_dialogs
        self.seconds = daemon.metrics.takeover_seconds
        for result in ["taken", *(lost.value for lost in Lost)]:
            self.dialogs.labels(result)

    @property
    def redis(self):
        return self.daemon.store.redis

    async def run(self) -> None:
        period = self.config.mediad_heartbeat
        while True:
            await asyncio.sleep(period)
            heartbeat = self.daemon.heartbeat
            if heartbeat is not None and heartbeat.draining:
                continue  # a draining node takes nothing new, calls of the dead included
            try:
                for dead in await self.dead():
                    if await self.take(dead):
                        break  # one node per round: the next dead one may go to another survivor
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis's doing, mostly: the next round tries again
                self.daemon.metrics.redis_errors.inc()
                log.warning("pool not watched this round: %s: %s", exc.__class__.__name__, exc)

    async def dead(self) -> list[str]:
        ids = sorted(i.decode() if isinstance(i, bytes) else str(i) for i in await self.redis.smembers(NODES_KEY))
        if not ids:
            return []
        records = await self.redis.mget([node_key(i) for i in ids])
        return dead_nodes(ids, [i for i, raw in zip(ids, records) if raw is not None], self.me)

    async def take(self, dead: str) -> bool:
        """Take over ``dead``'s dialogs if this node wins its lock; True when it did."""
        daemon = self.daemon
        if not await self.redis.set(lock_key(dead), self.me, nx=True, px=LOCK_TTL_MS):
            return False
        started = time.monotonic()
        at = time.time()
        try:
            documents = [(doc, remaining) for doc, remaining in await daemon.store.load_all()
                         if doc.get("node") == dead and doc.get("dialog")]
            capacity = self.config.mediad_capacity
            room = max(0, capacity - len(daemon.dialogs)) if capacity else None
            remaining_of = {str(doc["dialog"]): remaining for doc, remaining in documents}
            take, end = plan([doc for doc, _ in documents], room)
            if any(reason is Lost.CAPACITY for _, reason in end) and self.waited.get(dead, 0) < PATIENCE:
                self.waited[dead] = self.waited.get(dead, 0) + 1  # a survivor with room may take them all
                log.info("node %s is dead: no room here for its %d dialog(s), left to another node", dead,
                         len(documents))
                return False
            self.waited.pop(dead, None)
            rehome = self.config.pool_takeover == "reinvite"
            moved = await self._move_addresses(take, core=not rehome)
            taken, moved_events = [], []
            for document in take:
                home = Home.from_dict(document["home"])
                dialog = None
                reason = Lost.ADDRESS
                new_access = False
                if rehome:
                    home = home.with_own_core(self.config)
                    new_access = not moved.get(home.access, False)  # the hook could not move it
                if rehome or all(moved.get(address, False) for address in home.addresses()):
                    try:
                        dialog = await self._adopt(document, home, remaining_of[str(document["dialog"])], rehome,
                                                   new_access)
                    except NoPortsError as exc:
                        log.warning("dialog %s not taken over: %s", str(document["dialog"])[:64], exc)
                    except ADOPT_ERRORS as exc:
                        log.warning("dialog %s not taken over, its document is unreadable: %s",
                                    str(document["dialog"])[:64], exc)
                        reason = Lost.MALFORMED
                if dialog is None:
                    end.append((document, reason))
                    continue
                daemon.changed(dialog)  # written again, naming this node (fenced: mediad.fence)
                taken.append(dialog.id)
                if rehome:
                    moved_events.extend(self._moved_events(dialog))
            daemon.metrics.sessions_active.set(len(daemon.dialogs))
            await daemon.flush()
            taken = [d for d in taken if d in daemon.dialogs]  # a write refused: another node has it
            history = parse_moves({dead: await self.redis.hget(MOVED_KEY, dead) or "[]"}).get(dead, [])
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(MOVED_KEY, dead, json.dumps(add_move(history, at, self._ref())))
            if take:  # its calls (and with a hook their addresses) are here now: back, it drains
                pipe.sadd(DRAINING_KEY, dead)
            await pipe.execute()
            if take:
                log.warning("node %s drained: it takes no new call when it comes back, until an operator "
                            "undrains it (e2ae-ctl undrain %s) once its addresses are its own again", dead, dead)
            for event in moved_events:  # the plugin re-INVITEs the core (plugin.reinvite)
                self.daemon.metrics.events.labels(EVENT_MEDIA_MOVED).inc()
                await self.daemon.store.publish(event)
            for document, reason in end:
                await self._lose(document, reason)
            await self.redis.srem(NODES_KEY, dead)
        finally:
            if await self.redis.get(lock_key(dead)) == self.me.encode():
                await self.redis.delete(lock_key(dead))
        elapsed = time.monotonic() - started
        self.seconds.observe(elapsed)
        self.dialogs.labels("taken").inc(len(taken))
        log.warning("node %s is dead: took over %d of its dialog(s) in %.0f ms, ended %d (%s)", dead, len(taken),
                    elapsed * 1000, len(end), ", ".join(sorted({r.value for _, r in end})) or "none")
        return True

    async def _adopt(self, document: dict[str, Any], home: Home, remaining: float | None, rehome: bool,
                     new_access: bool):
        """The dialog of ``document`` restored with ``home`` (its ports on the dead node's access
        address when it moved, else, or when they cannot be bound there, on new terminations
        of this node: ``[pool] takeover = reinvite``)."""
        if rehome and not new_access:
            try:
                return await self.daemon.adopt_or_raise({**document, "home": home.to_dict()}, remaining,
                                                        new_core=True)
            except NoPortsError as exc:
                log.warning("dialog %s: the dead node's access ports cannot be bound here (%s): the WIC is "
                            "re-offered new ones", str(document["dialog"])[:64], exc)
        if rehome:
            home = home.with_own_access(self.config)
        return await self.daemon.adopt_or_raise({**document, "home": home.to_dict()}, remaining, new_core=rehome,
                                                new_access=rehome)

    def _moved_events(self, dialog) -> list[dict[str, Any]]:
        """The ``media_moved`` events of a dialog taken over in ``[pool] takeover = reinvite``:
        the core side's, and the access side's when it got new terminations."""
        home = dialog.home or Home.own(self.config)
        streams = [s for _, s in sorted(dialog.streams.items())]
        ports = [s.core.rtp.port for s in streams if s.core is not None and getattr(s.core, "rtp", None) is not None]
        events = [moved_event(dialog.id, home.core_sdp, ports)]
        if home.access != self.config.mediad_access_address:
            return events  # the dead node's access address moved here: the WIC sees nothing
        transports = [{"transport_id": t.transport_id, "port": t.rtp.port, "ice_ufrag": t.ice_ufrag,
                       "ice_pwd": t.ice_pwd} for _, t in sorted(dialog.transports.items()) if t.rtp is not None]
        own = [{"stream_id": s.stream_id, "port": s.access.rtp.port,
                "rtcp_port": s.access.rtcp.port if s.access.rtcp is not None else None,
                "ice_ufrag": s.access.ice_ufrag, "ice_pwd": s.access.ice_pwd}
               for s in streams if s.transport_id is None and s.access is not None
               and getattr(s.access, "rtp", None) is not None]
        fingerprint = str(self.daemon.renewal_certificate().fingerprint("sha-256"))
        events.append(moved_access_event(dialog.id, home.access_sdp, fingerprint, transports, own))
        return events

    def _ref(self) -> str:
        control = self.config.mediad_control
        return f"{self.me}@{control.host}:{control.port}"

    async def _move_addresses(self, documents: list[dict[str, Any]], core: bool = True) -> dict[str, bool]:
        """Run ``[pool] takeover_hook`` once per address the documents' ports are on (their access
        addresses only when not ``core``); which moved."""
        homes = [Home.from_dict(d["home"]) for d in documents]
        addresses = list(dict.fromkeys(a for h in homes for a in (h.addresses() if core else [h.access])))
        hook = self.config.pool_takeover_hook
        if not hook:
            return dict.fromkeys(addresses, True)
        out = {}
        for address in addresses:
            argv = [word.replace("{address}", address) for word in shlex.split(hook)]
            try:
                proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
                try:
                    code = await asyncio.wait_for(proc.wait(), HOOK_TIMEOUT)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()
                    code = None
            except OSError as exc:
                log.error("takeover hook for %s cannot run: %s", address, exc)
                code = None
            out[address] = code == 0
            if code != 0:
                log.error("takeover hook for %s failed (exit %s): its dialogs are ended", address, code)
        return out

    async def _lose(self, document: dict[str, Any], reason: Lost) -> None:
        """A dialog not taken over: its document deleted, the plugin told to end the call."""
        dialog = str(document["dialog"])
        if not await self.daemon.fence.delete_of(dialog, document):
            return  # the dead node (back) or another survivor has it: theirs to end
        event = {"dialog": dialog, "stream_id": None, "event": EVENT_MEDIA_LOST, "reason": reason.value,
                 "component": None, "time": round(time.time(), 3)}
        self.daemon.metrics.events.labels(EVENT_MEDIA_LOST).inc()
        self.dialogs.labels(reason.value).inc()
        await self.daemon.store.publish(event)
        log.warning("dialog %s of a dead node not taken over (%s): the call is ended", dialog, reason.value)


async def restore_own(daemon) -> None:
    """A starting node's reload of its own dialogs, under its takeover lock: while a survivor
    holds it (taking this node's dialogs over), wait; once it is done, they name the survivor."""
    redis = daemon.store.redis
    me = daemon.config.mediad_node_id
    deadline = time.monotonic() + LOCK_TTL_MS / 1000 + 1
    waited = False
    while not await redis.set(lock_key(me), me, nx=True, px=LOCK_TTL_MS):
        if time.monotonic() > deadline:  # (not reached: the lock expires first)
            raise RuntimeError(f"node {me}: the takeover lock of this node stays held")
        if not waited:
            log.warning("node %s: a survivor is taking over this node's dialogs: waiting for it", me)
            waited = True
        await asyncio.sleep(0.2)
    try:
        await daemon.restore()
    finally:
        await redis.delete(lock_key(me))


__all__ = ["EVENT_MEDIA_LOST", "EVENT_MEDIA_MOVED", "LOCK_PREFIX", "MOVED_KEY", "Home", "Lost", "Takeover", "add_move", "dead_nodes",
           "lock_key", "parse_moves", "plan", "resolve", "restore_own", "unmovable"]
