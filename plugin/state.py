"""The signalling side's dialog state in Redis, shared by every Kamailio worker.

Keys (nothing else is written by the plugin):

* ``e2ae:alg:dialog:{T}rest``: one JSON document per dialog, a
  :class:`plugin.record.DialogRecord` (the record, its keys and what the
  scripts below answer are :mod:`plugin.record`'s, pure and compiled; this
  module is the store, which talks to Redis).  Its TTL is set again on every write,
  on every unlock, and on in-dialog requests (with or without SDP, as the dialog
  module resets its own timeout on each; see :meth:`plugin.edge.Edge.refresh`
  for the ACK and the per-worker interval), so the record lives as long as the
  dialog; the key is deleted when the dialog is released.
* ``e2ae:alg:released:{T}rest``: a tombstone written when the dialog is released,
  expiring after ``TOMBSTONE_TTL`` s (32 s, a Timer B/F of slack for replies and
  requests still in flight): a late 18x/2xx or in-dialog request handled by
  another worker just after the release must not re-create the record (and a
  new RESERVE that nothing would ever release).  Only an initial INVITE (same
  Call-ID and From tag, e.g. retried after a 407) clears it.  Tombstones carry
  no media or state and always expire by themselves.
* ``e2ae:alg:lock:{T}rest``: a short-lived lock (``SET NX PX``) that serialises
  the workers handling messages of the same dialog (an 18x and a 2xx handled in
  parallel, a re-INVITE crossing an UPDATE, a BYE crossing a 2xx: a release
  waits for it when it is held, and otherwise buries the dialog in one step
  that no lock holder can interleave with).

``Trest`` is the dialog id given to mediad too: a digest of the Call-ID
(``T``, the Redis Cluster hash tag shared by every key of the Call-ID, so a
script may take the keys of both tags' ids: :mod:`mediad.redis_keys`)
followed by a digest of the Call-ID and the caller's From tag, so in-dialog
requests in either direction find it (from tag first, then to tag).  Redis is
reached as ``[redis]`` says (:mod:`mediad.redis_client`: TLS, the plugin's
ACL user, Sentinel, Cluster; on a Cluster each script goes to the master of
its slot).  Every Redis call has a socket timeout; Redis errors
become :class:`~sdp_rules.errors.UnavailableError` (503 + Retry-After).

Round trips (each a registered Lua script, sent as EVALSHA):

* an initial INVITE's work is one :meth:`DialogStore.create`: no worker can
  hold its dialog before it is relayed (Kamailio's transaction layer absorbs
  its retransmissions, and its replies come after it), so it is processed
  without a lock and its record saved by one conditional write, which clears
  the tombstone; when the dialog turns out to have a record or a lock holder
  after all (the same Call-ID and From tag seen again), nothing is written and
  the INVITE is handled as below (:mod:`plugin.edge` says what becomes of its
  reservation);
* an INVITE's 18x/2xx whose record a worker finds in the workers' shared cache
  (:class:`plugin.edge.RecordCache`: Kamailio's shared memory, filled by the
  INVITE and its 18x) is worked on from that copy without a lock and saved by
  one :meth:`DialogStore.commit_if`: a conditional write, done only when no
  worker holds the lock and the record in Redis is still the one read (its
  SHA-1 compared in the script).  Else nothing is written and the message is
  handled again as below, on the record as it is (what it asked mediad from
  the stale copy is then asked again under a new transaction, or refused);
* any other message's work on its dialog is one :meth:`DialogStore.claim` (finds the
  record by its tags, clears the tombstone for an initial INVITE, takes the
  lock and reads the record and the tombstone) and one :meth:`Claim.commit`
  (write and unlock) or a plain unlock; every unlock refreshes the record's TTL
  too, so every claimed message (a 2xx answered from the cache included) keeps
  the record alive at no extra cost;
* a release is one :meth:`DialogStore.take`: when the dialog's lock is free,
  it deletes the record, writes the tombstone and returns the record, for the
  RELEASE sent to mediad afterwards.  When the lock is held (a message of the
  dialog is being handled) it changes nothing, and the release claims the
  dialog (waiting for the lock) and buries it under the lock: two round trips;
* an in-dialog request's TTL refresh is one :meth:`DialogStore.touch`,
  whichever of its tags names the record.
* the edge's own changes outside any message of the dialog (a survivor moved
  its media, the WIC answered the edge's re-offer) are :meth:`DialogStore.update`:
  a read and a :meth:`DialogStore.commit_if`, read and applied again when the
  dialog changed meanwhile, and nothing written once it is released.

Deadlines: Redis runs a command it received even when the client stopped
waiting for it (a Redis stalled past the socket timeout: the INVITE was
answered 503, the release queued for retry).  So every script that writes
(create, claim, commit, commit_if, bury, take) carries a not-after time, the client's
send time plus its socket timeout, on Redis's clock (the offset of Redis's
``TIME`` from the local clock is measured once per connection); run later
than that, it writes nothing and answers :data:`LATE`, and the client, which
has given up, is not there to read it.

Why a release may send RELEASE after its record is gone: every message but an
initial INVITE talks to mediad about a dialog under the dialog's lock, holding
a record; ``take`` runs only while no one holds the lock, and a message that
claims the dialog after it finds no record and the tombstone (481, or left
alone), so it never reaches mediad.  The only message that can reserve the
same dialog id again is an initial INVITE (it clears the tombstone): an INVITE
retried after a 401/407 comes after the failure route that released (Kamailio
runs it before relaying the final reply), and mediad refuses a RESERVE of
streams a dialog id still holds, so a RELEASE in flight never releases a
reservation made after it (the INVITE racing it is refused).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import weakref
from typing import Any, Callable

import redis

from sdp_rules.errors import UnavailableError

from mediad.redis_client import REDIS_ERRORS, RedisSettings, connect, is_cluster
from mediad.redis_keys import ALG_DIALOG, tagged
from plugin.record import (ABSENT, BUSY, CACHE_SIZE, DIALOG_PREFIX, LATE, LOCK_PREFIX, TAKEN, TOMBSTONE_PREFIX,
                           DialogRecord, Found, candidate_keys, dialog_id, dialog_key, dialog_keys, is_late,
                           lock_key, read_claim, read_create, read_take, record_digest, tombstone_key)

TOMBSTONE_TTL = 32
LOCK_TTL_MS = 3000
LOCK_WAIT_S = 2.0

# Each script is registered once per client and sent as EVALSHA; every key it touches is in KEYS.
# A script that writes takes its deadline (Redis TIME, in ms) as its last ARGV and does
# nothing after it: _LATE is its first line, and its answer then is {-9} (or -9), LATE.
_LATE = """
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[#ARGV]) then return %s end
"""

# KEYS: lock. ARGV: token.
_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# KEYS: lock, record. ARGV: token, record TTL (s).  Unlocks and refreshes the record's TTL.
_UNLOCK_TOUCH = """
redis.call('expire', KEYS[2], ARGV[2])
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# KEYS: record, lock. ARGV: record JSON, record TTL (s), token.  Saves, then unlocks.
_COMMIT = _LATE % "-9" + """
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
if redis.call('get', KEYS[2]) == ARGV[3] then redis.call('del', KEYS[2]) end
return 1
"""
# KEYS: record, tombstone, lock. ARGV: tombstone TTL (s), token.
# Deletes the record, leaves the tombstone, unlocks; returns whether the record was there.
_BURY = _LATE % "-9" + """
local deleted = redis.call('del', KEYS[1])
redis.call('set', KEYS[2], '1', 'EX', ARGV[1])
if redis.call('get', KEYS[3]) == ARGV[2] then redis.call('del', KEYS[3]) end
return deleted
"""
# KEYS: the record of each candidate dialog id, the caller's first. ARGV: record TTL (s).
# Refreshes the first record there; returns its index (1-based), 0 when none is.
_TOUCH = """
for i = 1, #KEYS do
  if redis.call('expire', KEYS[i], ARGV[1]) == 1 then return i end
end
return 0
"""
# KEYS: (record, lock, tombstone) of each candidate dialog id, the caller's first.
# ARGV: tombstone TTL (s).  Finds the first candidate with a record: {-1, i} when its lock
# is held (nothing changed); else deletes the record, leaves the tombstone and returns
# {1, i, record}.  {0} when no candidate has a record.
_TAKE = _LATE % "{-9}" + """
for i = 1, #KEYS / 3 do
  local raw = redis.call('get', KEYS[3 * i - 2])
  if raw then
    if redis.call('exists', KEYS[3 * i - 1]) == 1 then return {-1, i} end
    redis.call('del', KEYS[3 * i - 2])
    redis.call('set', KEYS[3 * i], '1', 'EX', ARGV[1])
    return {1, i, raw}
  end
end
return {0}
"""
# KEYS: (record, lock, tombstone) of each candidate dialog id, the caller's first.
# ARGV: lock token, lock TTL (ms), "1" to create when no candidate has a record,
# "1" to clear the first candidate's tombstone before locking.
# Returns {0} (no record, not created), {-1, i, record existed} (candidate i is
# locked by another worker), or {1, i, record or false, tombstone exists, record existed}.
_CLAIM = _LATE % "{-9}" + """
local pick = 0
for i = 1, #KEYS / 3 do
  if redis.call('exists', KEYS[3 * i - 2]) == 1 then pick = i break end
end
local existed = pick > 0 and 1 or 0
if pick == 0 then
  if ARGV[3] ~= '1' then return {0} end
  pick = 1
end
local base = 3 * pick - 3
if ARGV[4] == '1' then redis.call('del', KEYS[base + 3]) end
if not redis.call('set', KEYS[base + 2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {-1, pick, existed} end
return {1, pick, redis.call('get', KEYS[base + 1]) or false, redis.call('exists', KEYS[base + 3]), existed}
"""
# KEYS: record, lock, tombstone. ARGV: record JSON, record TTL (s).
# A new dialog's record: saved (its tombstone cleared) unless the dialog has a record or a
# lock holder, in which case nothing changes.  Returns {1} when saved, else {0, record}
# ({0} when there is only a lock).
_CREATE = _LATE % "{-9}" + """
local raw = redis.call('get', KEYS[1])
if raw or redis.call('exists', KEYS[2]) == 1 then return {0, raw} end
redis.call('del', KEYS[3])
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {1}
"""
# KEYS: record, lock, tombstone. ARGV: digest (SHA-1) of the record as read, new record JSON,
# record TTL (s).  The commit of a message handled without a claim: saves the new record only
# when no worker holds the dialog's lock and the record is still the one read (so the dialog
# was neither changed nor released since).  Returns 1 when saved, 0 when the record changed
# or is gone, -1 when the lock is held: nothing changed.
_COMMIT_IF = _LATE % "-9" + """
if redis.call('exists', KEYS[2]) == 1 then return -1 end
local raw = redis.call('get', KEYS[1])
if not raw or redis.sha1hex(raw) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""
_SCRIPTS = {"unlock": _UNLOCK, "unlock_touch": _UNLOCK_TOUCH, "commit": _COMMIT, "bury": _BURY,
            "touch": _TOUCH, "take": _TAKE, "claim": _CLAIM, "create": _CREATE, "commit_if": _COMMIT_IF}
_DEADLINED = frozenset({"commit", "bury", "take", "claim", "create", "commit_if"})

class DialogStore:
    """Blocking Redis access for one Kamailio worker (connections opened lazily).

    The scripts run on a connection of the calling thread's own: a Kamailio worker is
    one process with one thread, but a store shared by threads (a test's lock holder,
    an embedding application) must never read another thread's reply.
    """

    def __init__(self, url: "RedisSettings | str", ttl: int, timeout: float = 0.5) -> None:
        self.url = url  # a URL, or the [redis] settings (mediad.redis_client)
        self.ttl = ttl
        self.timeout = timeout
        self._redis: redis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        # The connections the scripts run on (the hot path): one per process and thread
        # (a thread's goes with it; close() closes those still there).
        self._local = threading.local()
        self._conns: weakref.WeakSet[redis.Connection] = weakref.WeakSet()
        self._conns_lock = threading.Lock()

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            try:
                self._redis = connect(self.url, self.timeout)  # a Cluster client maps the slots now
            except REDIS_ERRORS as exc:
                raise UnavailableError(f"redis: {exc.__class__.__name__}") from None
            self._scripts = {name: self._redis.register_script(src) for name, src in _SCRIPTS.items()}
        return self._redis

    def load_scripts(self) -> None:
        """Load every script into Redis now (else the first EVALSHA of each loads it)."""
        _ = self.redis  # registers the scripts
        try:
            for conn in self._every_connection():
                for script in self._scripts.values():
                    self._load(conn, script)
                self._deadlined(conn, "create", ())  # and measure the clock offset
        except REDIS_ERRORS as exc:
            raise UnavailableError(f"redis: {exc.__class__.__name__}") from None

    def script(self, name: str, keys: list[str], *args):
        """Run one of the registered scripts (EVALSHA; loaded again if Redis lost it).

        Scripts are the plugin's hot path (every SIP message with SDP runs two), so
        they go straight to one redis-py connection kept by this worker: packed and
        parsed by redis-py (hiredis), without the client layer's per-command work
        (pool checkout, retry wrapper, observability hooks), which cost more CPU
        than the round trip itself.  A connection found broken when it is used
        again (Redis restarted) is reopened once; a timeout is not retried.
        """
        if self._redis is None:
            _ = self.redis  # registers the scripts
        script = self._scripts[name]
        conn = None
        try:
            conn, fresh = self._connection(keys)
            try:
                reply = self._evalsha(conn, script, keys, self._deadlined(conn, name, args))
            except redis.ConnectionError:
                if fresh:
                    raise
                conn.disconnect()
                self._offsets().pop(conn, None)
                conn.connect()
                reply = self._evalsha(conn, script, keys, self._deadlined(conn, name, args))
        except REDIS_ERRORS as exc:
            if conn is not None and not isinstance(exc, redis.ResponseError):
                conn.disconnect()
                self._offsets().pop(conn, None)
            if isinstance(exc, redis.exceptions.MovedError) and is_cluster(self.redis):
                self.redis.nodes_manager.initialize()  # slots moved: the next call goes to the new node
            raise UnavailableError(f"redis: {exc.__class__.__name__}") from None
        if is_late(reply):
            raise UnavailableError("redis: ran the request after its deadline")
        return reply

    def _deadlined(self, conn: redis.Connection, name: str, args: tuple) -> tuple:
        """``args`` with the script's deadline appended when it writes (module docstring)."""
        if name not in _DEADLINED:
            return args
        offsets = self._offsets()
        offset = offsets.get(conn)
        if offset is None:
            before = time.time()
            conn.send_command("TIME")
            seconds, micros = conn.read_response()
            after = time.time()
            offset = offsets[conn] = int(seconds) + int(micros) / 1e6 - (before + after) / 2
        return (*args, int((time.time() + offset + self.timeout) * 1000))

    def _offsets(self) -> dict:
        """This thread's measured offsets of Redis's clock, per script connection (a Cluster's
        nodes may each have their own clock)."""
        offsets = getattr(self._local, "offsets", None)
        if offsets is None:
            offsets = self._local.offsets = {}
        return offsets

    def _connection(self, keys: list[str] | tuple[str, ...] = ()) -> tuple[redis.Connection, bool]:
        """This thread's script connection for ``keys`` (on a Cluster: to the node serving
        their slot), and whether it has not been used yet."""
        local, pid = self._local, os.getpid()
        conns = getattr(local, "conns", None)
        if conns is None or local.pid != pid:
            conns = local.conns = {}
            local.pid = pid
            local.offsets = {}
        client = self.redis
        if is_cluster(client):
            node = client.get_node_from_key(keys[0]) if keys else client.get_default_node()
            name, pool = node.name, node.redis_connection.connection_pool
        else:
            name, pool = "", client.connection_pool
        conn = conns.get(name)
        if conn is None:
            conn = conns[name] = pool.make_connection()
            with self._conns_lock:
                self._conns.add(conn)
        fresh = conn._sock is None
        if fresh:
            # connect() itself (a command would connect by itself, but around a Sentinel
            # connection's connect(), which asks the sentinels where the master is now)
            conn.connect()
        return conn, fresh

    def _every_connection(self) -> list[redis.Connection]:
        """A script connection to every server that runs scripts (every Cluster primary)."""
        client = self.redis
        if not is_cluster(client):
            return [self._connection()[0]]
        return [self._connection([tagged(ALG_DIALOG, tag)])[0] for tag in _one_tag_per_primary(client)]

    @staticmethod
    def _evalsha(conn: redis.Connection, script, keys: list[str], args: tuple):
        try:
            conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            return conn.read_response()
        except redis.exceptions.NoScriptError:
            DialogStore._load(conn, script)
            conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            return conn.read_response()

    @staticmethod
    def _load(conn: redis.Connection, script) -> None:
        conn.send_command("SCRIPT", "LOAD", script.script)
        script.sha = conn.read_response().decode()

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except REDIS_ERRORS as exc:
            raise UnavailableError(f"redis: {exc.__class__.__name__}") from None

    def find(self, call_id: str, *tags: str) -> DialogRecord | None:
        for tag in tags:
            if not tag:
                continue
            raw = self._call(self.redis.get, dialog_key(dialog_id(call_id, tag)))
            if raw:
                return DialogRecord.from_json(raw)
        return None

    def get(self, ident: str) -> DialogRecord | None:
        raw = self._call(self.redis.get, dialog_key(ident))
        return DialogRecord.from_json(raw) if raw else None

    def save(self, record: DialogRecord) -> None:
        if not record.created:
            record.created = time.time()
        self._call(self.redis.set, dialog_key(record.id), record.to_json(), ex=self.ttl)

    def delete(self, ident: str) -> bool:
        return bool(self._call(self.redis.delete, dialog_key(ident)))

    def touch(self, call_id: str, *tags: str) -> bool:
        """Refresh the TTL of the dialog's record, found by the first tag that names one: one round trip."""
        keys = [dialog_key(dialog_id(call_id, tag)) for tag in tags if tag]
        return bool(keys) and bool(self.script("touch", keys, self.ttl))

    def bury(self, ident: str) -> bool:
        """Delete the record and leave a short-lived tombstone, in one round trip."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(dialog_key(ident))
        pipe.set(tombstone_key(ident), "1", ex=TOMBSTONE_TTL)
        return bool(self._call(pipe.execute)[0])

    def released(self, ident: str) -> bool:
        return bool(self._call(self.redis.exists, tombstone_key(ident)))

    def unbury(self, ident: str) -> None:
        self._call(self.redis.delete, tombstone_key(ident))

    def take(self, call_id: str, tags: tuple[str, ...]) -> tuple[Found, DialogRecord | None]:
        """Bury the dialog found by ``tags`` (the caller's first) unless it is locked: one round trip.

        ``(TAKEN, record)``: the record was deleted and the tombstone written; the
        caller sends RELEASE from ``record``.  ``(ABSENT, None)``: no record.
        ``(BUSY, None)``: a worker holds the dialog's lock; nothing changed.
        """
        return self._take([dialog_id(call_id, tag) for tag in tags if tag])

    def take_id(self, ident: str) -> tuple[Found, DialogRecord | None]:
        """:meth:`take` for the dialog ``ident``."""
        return self._take([ident])

    def _take(self, candidates: list[str]) -> tuple[Found, DialogRecord | None]:
        keys = candidate_keys(candidates)
        return read_take(self.script("take", keys, TOMBSTONE_TTL) if keys else [0])

    def create(self, record: DialogRecord) -> tuple[bool, DialogRecord | None]:
        """Save a new dialog's record, clearing its tombstone, unless the dialog exists: one round trip.

        ``(True, None)`` when saved; ``(False, record)`` when the dialog already has a
        record (the one in Redis) or ``(False, None)`` a lock holder: nothing changed.
        """
        if not record.created:
            record.created = time.time()
        raw = record.to_json()
        saved, found = read_create(self.script("create", dialog_keys(record.id), raw, self.ttl))
        if saved:
            record.raw = raw
        return saved, found

    def commit_if(self, record: DialogRecord, read: str) -> int:
        """Save ``record`` unless the dialog changed since its record was ``read`` (the JSON
        a message handled without a claim started from), was released, or is locked: one
        round trip, no lock.  1 when saved; 0 (changed or gone) or -1 (locked): nothing
        changed, the caller handles its message again under a claim."""
        if not record.created:
            record.created = time.time()
        raw = record.to_json()
        saved = int(self.script("commit_if", dialog_keys(record.id), record_digest(read), raw, self.ttl))
        if saved == 1:
            record.raw = raw
        return saved

    def update(self, ident: str, change: Callable[[DialogRecord], object]) -> DialogRecord | None:
        """Read the dialog's record, ``change`` it and save it with :meth:`commit_if`, taking
        no lock: read and changed again when another message changed the dialog meanwhile,
        tried again while a worker holds its lock (for at most LOCK_WAIT_S).  The saved
        record; None when the dialog has no record (released, or never was): nothing is
        written, so a released dialog is never re-created.  A ``change`` that raises writes
        nothing."""
        deadline = time.monotonic() + LOCK_WAIT_S
        delay = 0.001
        while True:
            record = self.get(ident)
            if record is None:
                return None
            read = record.raw
            change(record)
            saved = self.commit_if(record, read)
            if saved == 1:
                return record
            if time.monotonic() >= deadline:
                raise UnavailableError("dialog busy: its record not saved in time")
            if saved == -1:
                time.sleep(delay)
                delay = min(delay * 2, 0.02)

    def lock(self, ident: str) -> "DialogLock":
        return DialogLock(self, ident)

    def claim(self, call_id: str, tags: tuple[str, ...], *, create: bool, unbury: bool = False) -> "Claim | None":
        """Find the dialog by ``tags`` (the caller's first), lock it and read it: one round trip.

        None when no tag has a record and ``create`` is false (nothing locked).  With
        ``create``, a dialog without record is locked under the first tag's id (a new
        dialog).  ``unbury`` clears that id's tombstone first (an initial INVITE).  The
        lock is waited for as :class:`DialogLock` does; while waiting the claim sticks
        to the dialog it found first.
        """
        candidates = [dialog_id(call_id, tags[0])] + [dialog_id(call_id, t) for t in tags[1:] if t]
        return self._claim(candidates, create, unbury)

    def claim_id(self, ident: str) -> "Claim | None":
        """Lock and read the dialog ``ident`` (None when it has no record)."""
        return self._claim([ident], False, False)

    def _claim(self, candidates: list[str], create: bool, unbury: bool) -> "Claim | None":
        token = secrets.token_hex(8)
        deadline = time.monotonic() + LOCK_WAIT_S
        delay = 0.001
        seen = False
        while True:
            keys = candidate_keys(candidates)
            reply = read_claim(self.script("claim", keys, token, LOCK_TTL_MS, "1" if create else "0",
                                           "1" if unbury else "0"))
            if reply.status == 0:
                return None
            ident = candidates[reply.index]
            if reply.status == 1:
                return Claim(self, ident, token, reply.record, reply.released, seen or reply.existed)
            if time.monotonic() >= deadline:
                raise UnavailableError("dialog busy: lock not acquired in time")
            # Wait for this dialog; if its record goes meanwhile, that is for the caller to see.
            seen = seen or reply.existed
            candidates, create, unbury = [ident], True, False
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = list(self._conns), weakref.WeakSet()
        for conn in conns:
            conn.disconnect()
        self._local = threading.local()
        if self._redis is not None:
            self._redis.close()
            self._redis = None


def _one_tag_per_primary(client) -> list[str]:
    """A hash tag of a slot of each Cluster primary (to reach every primary by key)."""
    from redis.crc import key_slot

    wanted = {node.name for node in client.get_primaries()}
    found: dict[str, str] = {}
    n = 0
    while wanted - found.keys() and n < 100000:
        tag = str(n)
        node = client.nodes_manager.get_node_from_slot(key_slot(tag.encode()))
        found.setdefault(node.name, tag)
        n += 1
    return list(found.values())


class Claim:
    """A dialog locked by :meth:`DialogStore.claim`, with its record as read under the lock.

    ``record`` is None when there is none; ``existed`` says a record was found when
    the claim began (it went away while the claim waited for the lock: released);
    ``released`` says the dialog's tombstone is there.  Use as a context manager:
    leaving it unlocks (and refreshes the record's TTL), unless :meth:`commit` or
    :meth:`bury` already did.
    """

    def __init__(self, store: DialogStore, ident: str, token: str, record: DialogRecord | None,
                 released: bool, existed: bool) -> None:
        self.store = store
        self.id = ident
        self.token = token
        self.record = record
        self.released = released
        self.existed = existed
        self.held = True

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        if self.held:
            self.held = False
            try:
                record, lock, _ = dialog_keys(self.id)
                self.store.script("unlock_touch", [lock, record], self.token, self.store.ttl)
            except UnavailableError:
                pass  # the lock expires by itself

    def commit(self, record: DialogRecord) -> None:
        """Save ``record`` and unlock, in one round trip."""
        if not record.created:
            record.created = time.time()
        raw = record.to_json()
        self.store.script("commit", [dialog_keys(record.id)[0], dialog_keys(self.id)[1]], raw, self.store.ttl,
                          self.token)
        record.raw = raw
        self.held = False

    def bury(self) -> bool:
        """Delete the record, leave the tombstone and unlock, in one round trip."""
        record, lock, tombstone = dialog_keys(self.id)
        deleted = bool(self.store.script("bury", [record, tombstone, lock], TOMBSTONE_TTL, self.token))
        self.held = False
        return deleted


class DialogLock:
    """A bounded per-dialog lock: waits at most LOCK_WAIT_S, expires after LOCK_TTL_MS."""

    def __init__(self, store: DialogStore, ident: str) -> None:
        self.store = store
        self.key = lock_key(ident)
        self.token = secrets.token_hex(8)

    def __enter__(self) -> "DialogLock":
        deadline = time.monotonic() + LOCK_WAIT_S
        delay = 0.001
        while True:
            if self.store._call(self.store.redis.set, self.key, self.token, nx=True, px=LOCK_TTL_MS):
                return self
            if time.monotonic() >= deadline:
                raise UnavailableError("dialog busy: lock not acquired in time")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def __exit__(self, *exc) -> None:
        try:
            self.store.script("unlock", [self.key], self.token)
        except UnavailableError:
            pass  # the lock expires by itself


__all__ = ["Claim", "DialogLock", "DialogRecord", "DialogStore", "Found", "dialog_id", "dialog_keys", "record_digest",
           "ABSENT", "BUSY", "CACHE_SIZE", "DIALOG_PREFIX", "LOCK_PREFIX", "TAKEN", "TOMBSTONE_PREFIX",
           "TOMBSTONE_TTL", "dialog_key", "lock_key", "tombstone_key"]
