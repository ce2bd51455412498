"""mediad's state in Redis, keyed by dialog.

Keys (and nothing else is written):

* ``e2ae:agw:dialog:{T}rest``: one JSON document per dialog (``Trest`` the
  dialog id, ``T`` its hash tag, shared with the plugin's keys of the dialog:
  :mod:`mediad.redis_keys`), ``version``
  incremented on every write, ``EXPIRE dialog_ttl`` refreshed on every write,
  deleted on release.  It holds the stream specs, bound ports, ICE
  credentials, learned peer addresses, SRTP master keys (base64) of
  established associations, the idempotency cache of control replies and the
  events sent to the ALG.  It is what lets a restarted or standby mediad take
  the dialog over, so Redis must be private (loopback or TLS, password/ACL).
* ``e2ae:agw:certificate``: the generated certificate and key (PEM), shared by
  every mediad (SET NX), so the fingerprint survives restarts.
* ``e2ae:control_secret``: the generated control channel secret, when the
  configuration gives none (SET NX; the plugin reads it).

Events are PUBLISHed on ``e2ae:events`` as JSON ``{dialog, stream_id, event,
reason, ...}`` (names ``EVENT_*`` of ``iq``).  Redis errors are
translated to :class:`StateError` at this boundary.

Dialog documents are written behind: :class:`WriteBehind` (no I/O) records
which dialogs changed or were released since the last write; one writer in the
daemon takes a :meth:`~WriteBehind.batch` at a time and sends it in one
pipeline (:meth:`StateStore.write`): the deletions first, then each changed
dialog once (``SET ... EX``, never a read first), serialised when the batch is
taken (its latest state).  One writer, one batch after the other, so a
dialog's documents reach Redis in the order they were made; a release drops
the dialog's pending save, so no late save re-writes a released dialog.  A
batch Redis refused or could not take (an error, a dropped connection, a
restarted Redis) is put back (:meth:`~WriteBehind.retry`) under whatever
changed since, and written again, until it is written.  The writer has a
Redis connection of its own (it is the only one using it, one batch at a
time): a batch is packed and sent as one write and its replies read back,
with the pool's check of the connection (reconnected when Redis dropped it),
but without the pipeline machinery (pool checkout, per command bookkeeping),
which cost about as much CPU as the round trip itself.  On a Redis Cluster a
batch goes through redis-py's cluster pipeline instead (split by node; a
dialog's deletion and save share a slot, so they stay in order), and the
restart's SCAN visits every master.  Redis is reached as ``[redis]`` says
(:mod:`mediad.redis_client`: TLS, mediad's ACL user, Sentinel, Cluster).
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import redis

from mediad.redis_client import REDIS_ERRORS, RedisSettings, connect, connect_async, is_cluster
from mediad.redis_keys import AGW_DIALOG, CERTIFICATE_KEY, CONTROL_SECRET_KEY, EVENTS_CHANNEL, pattern, tagged
from sdp_rules.errors import UnavailableError

log = logging.getLogger("mediad.state")

DIALOG_PREFIX = AGW_DIALOG


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # made once (json.dumps with options makes one per call)


class StateError(UnavailableError):
    """Redis failed or is unreachable."""


def decode_document(raw: bytes | str) -> dict[str, Any] | None:
    """A stored dialog document, or None when it is unreadable: not JSON, JSON that is not an
    object, or nested too deep for the decoder (what a restart or a survivor then skips)."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def dialog_key(dialog: str) -> str:
    """The dialog's document (hash-tagged as the plugin's keys of the dialog: mediad.redis_keys)."""
    return tagged(DIALOG_PREFIX, dialog)


def read_control_secret_sync(url: "RedisSettings | str") -> bytes:
    """The shared control secret, for blocking callers (the plugin, e2ae-ctl)."""
    try:
        client = connect(url, 1.0)
        try:
            value = client.get(CONTROL_SECRET_KEY)
        finally:
            client.close()
    except REDIS_ERRORS as exc:
        raise StateError(f"redis: {exc.__class__.__name__}") from None
    if not value:
        raise StateError("no control secret in Redis yet (is mediad running?)")
    return bytes(value)


class WriteBehind:
    """Which dialog documents are to be written or deleted next (sans-IO)."""

    def __init__(self) -> None:
        self._saves: dict[str, None] = {}
        self._deletes: dict[str, None] = {}

    def __bool__(self) -> bool:
        return bool(self._saves or self._deletes)

    def changed(self, dialog: str) -> None:
        """The dialog's document is to be (re)written."""
        self._saves[dialog] = None

    def released(self, dialog: str) -> None:
        """The dialog is gone: delete its document, forget any save not taken yet."""
        self._saves.pop(dialog, None)
        self._deletes[dialog] = None

    def forget(self, dialog: str) -> None:
        """The dialog is another node's now: write nothing of it (mediad.fence)."""
        self._saves.pop(dialog, None)

    def batch(self) -> tuple[list[str], list[str]]:
        """``(deletes, saves)`` to write now, in this order; both are then forgotten.

        A dialog in both was released then reserved again under the same id: its old
        document goes first, then the new one.
        """
        deletes, saves = list(self._deletes), list(self._saves)
        self._deletes.clear()
        self._saves.clear()
        return deletes, saves

    def retry(self, deletes: list[str], saves: list[str]) -> None:
        """Put back a batch that was not written, under what changed since it was taken.

        Its deletions are pending again (a dialog reserved again since keeps its new
        save, written after the deletion).  Its saves are pending again unless the
        dialog was released since (then its deletion is pending and any save it has
        is newer).  The document written is the dialog's state when the batch is
        taken again.
        """
        released_since = set(self._deletes)
        for dialog in deletes:
            self._deletes[dialog] = None
        for dialog in saves:
            if dialog not in released_since:
                self._saves[dialog] = None

    def __len__(self) -> int:
        """Dialogs with a document to write or delete."""
        return len(self._saves.keys() | self._deletes.keys())


class StateStore:
    def __init__(self, url: "RedisSettings | str", dialog_ttl: int) -> None:
        self.redis = connect_async(url, 2.0)
        self.dialog_ttl = dialog_ttl
        self._writer: Any = None  # the connection of write(), made on first use

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.disconnect()
            self._writer = None
        await self.redis.aclose()

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except REDIS_ERRORS as exc:
            raise StateError(f"redis: {exc.__class__.__name__}: {exc}") from None

    async def save(self, dialog: str, document: dict[str, Any]) -> None:
        try:
            await self.redis.set(dialog_key(dialog), json.dumps(document, separators=(",", ":")), ex=self.dialog_ttl)
        except REDIS_ERRORS as exc:
            raise StateError(f"redis: {exc.__class__.__name__}") from None

    async def write(self, deletes: list[str], documents: list[tuple[str, dict[str, Any]]]) -> None:
        """Delete then save dialog documents, in this order, in one round trip.

        For one caller at a time (the daemon's writer): it uses a connection of its own.
        """
        commands: list[tuple[Any, ...]] = [("DEL", dialog_key(dialog)) for dialog in deletes]
        commands += [("SET", dialog_key(dialog), _COMPACT.encode(document), "EX", self.dialog_ttl)
                     for dialog, document in documents]
        for reply in await self.run(commands):
            if isinstance(reply, redis.ResponseError):
                raise StateError(f"redis: {reply.__class__.__name__}")

    async def run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one round trip; their replies in order, a command Redis refused
        as its ``ResponseError`` (not raised).  StateError when Redis could not be reached.

        For one caller at a time (the daemon's writer, and what it calls): it uses a
        connection of its own.
        """
        if not commands:
            return []
        if is_cluster(self.redis):
            return await self._run_cluster(commands)
        pool = self.redis.connection_pool
        conn = self._writer
        if conn is None:
            conn = self._writer = pool.make_connection()
        packed = conn.pack_commands(commands)

        async def send() -> list[Any]:
            await pool.ensure_connection(conn)  # as the pool checks a connection it hands out
            await conn.send_packed_command(packed)
            replies: list[Any] = []
            for _ in commands:  # every reply is read, so the connection stays in step
                try:
                    replies.append(await conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
            return replies

        try:
            return await conn.retry.call_with_retry(send, lambda error: conn.disconnect())
        except REDIS_ERRORS as exc:
            raise StateError(f"redis: {exc.__class__.__name__}") from None

    async def _run_cluster(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """:meth:`run` on a Cluster: one pipeline that redis-py splits by node (a dialog's
        commands go to the same node, in their order)."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                return await pipe.execute(raise_on_error=False)
        except REDIS_ERRORS as exc:
            raise StateError(f"redis: {exc.__class__.__name__}") from None

    async def delete(self, dialog: str) -> None:
        try:
            await self.redis.delete(dialog_key(dialog))
        except REDIS_ERRORS as exc:
            raise StateError(f"redis: {exc.__class__.__name__}") from None

    async def load_all(self) -> list[tuple[dict[str, Any], float | None]]:
        """Every dialog document, with the seconds its TTL has left (None: no TTL).

        One SCAN page (up to 500 keys) at a time, and each page's documents and TTLs
        in one round trip.
        """
        documents = []
        try:
            async for keys in self._scan_pages(pattern(DIALOG_PREFIX)):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.get(key).pttl(key)
                    replies = await pipe.execute()
                for key, raw, pttl in zip(keys, replies[0::2], replies[1::2]):
                    if raw is None:
                        continue
                    document = decode_document(raw)
                    if document is None:
                        log.warning("skipping unreadable dialog document %s", key.decode(errors="replace"))
                    else:
                        documents.append((document, pttl / 1000.0 if pttl >= 0 else None))
        except REDIS_ERRORS as exc:
            raise StateError(f"redis: {exc.__class__.__name__}") from None
        return documents

    async def _scan_pages(self, match: str):
        """The keys matching ``match``, a SCAN page (up to 500) at a time; on a Cluster, of
        every primary."""
        if is_cluster(self.redis):
            page = []
            async for key in self.redis.scan_iter(match=match, count=500):  # every primary
                page.append(key)
                if len(page) == 500:
                    yield page
                    page = []
            if page:
                yield page
            return
        cursor = None
        while cursor != 0:
            cursor, keys = await self.redis.scan(cursor or 0, match=match, count=500)
            if keys:
                yield keys

    async def publish(self, event: dict[str, Any]) -> None:
        try:
            await self.redis.publish(EVENTS_CHANNEL, json.dumps(event, separators=(",", ":")))
        except REDIS_ERRORS as exc:
            raise StateError(f"redis: {exc.__class__.__name__}") from None

    async def control_secret(self) -> bytes:
        """The shared control secret; created (SET NX) by the first mediad."""
        try:
            await self.redis.set(CONTROL_SECRET_KEY, secrets.token_hex(32), nx=True)
            return bytes(await self.redis.get(CONTROL_SECRET_KEY))
        except REDIS_ERRORS as exc:
            raise StateError(f"redis: {exc.__class__.__name__}") from None

    async def certificate_pem(self, generate) -> tuple[bytes, bytes]:
        """The shared (cert_pem, key_pem); ``generate()`` makes one when none is stored."""
        try:
            raw = await self.redis.get(CERTIFICATE_KEY)
            if raw is None:
                cert_pem, key_pem = generate()
                value = json.dumps({"cert": cert_pem.decode(), "key": key_pem.decode()})
                await self.redis.set(CERTIFICATE_KEY, value, nx=True)
                raw = await self.redis.get(CERTIFICATE_KEY)
        except REDIS_ERRORS as exc:
            raise StateError(f"redis: {exc.__class__.__name__}") from None
        stored = json.loads(raw)
        return stored["cert"].encode(), stored["key"].encode()

    async def replace_certificate_pem(self, cert_pem: bytes, key_pem: bytes) -> None:
        value = json.dumps({"cert": cert_pem.decode(), "key": key_pem.decode()})
        try:
            await self.redis.set(CERTIFICATE_KEY, value)
        except REDIS_ERRORS as exc:
            raise StateError(f"redis: {exc.__class__.__name__}") from None
