"""Fencing: a mediad writes a dialog's document only while it still owns it.

A node of the pool that was paused rather than killed (SIGSTOP, a VM freeze,
a long pause, a partition) is taken for dead when its heartbeat record
expires, and a survivor takes its dialogs over (``mediad.takeover``).  When
it comes back it still holds those dialogs in memory, their sockets, and a
write-behind queue of their documents.  Fencing keeps it from harming them:

* every write a pool node makes of a dialog's document (save, delete) and
  every event it publishes about a dialog runs as one Lua script
  (:data:`SCRIPT`) that first reads the document and goes on only when it
  names the node and the *epoch* the node expects.  A document's epoch is
  incremented by each takeover; the survivor's first write of a dialog is
  itself conditional on the dead node's name and epoch, so two survivors (a
  lock that expired mid-takeover) cannot both win a dialog, and a node that
  comes back cannot write over a survivor's document, delete it, or announce
  an event of a call it no longer carries (the plugin would end the call);
* a refused write or event tells the node it lost the dialog: it drops it
  locally (its sockets closed, so no media is sent; no event, no BYE, no
  write or deletion in Redis), counts it (``e2ae_mediad_dialogs_fenced``) and
  logs it once, at WARNING;
* a node notices it may have been taken over without waiting for a write to
  be refused: at each heartbeat (``mediad.pool.Heartbeat``, no extra round
  trip) it sees whether another node holds its takeover lock, whether a new
  move of its dialogs was recorded in ``e2ae:pool:{pool}:moved``
  (:meth:`Fence.taken_over`) and whether its record had expired; on any of
  these it writes every dialog it holds again (:meth:`Fence.verify`), and the
  fence sorts out which are still its;
* a node taken over while it held written dialogs (its lock held by another
  or a move of its dialogs, or one dropped to another node) also *stands
  down*: the survivor ran its ``takeover_hook`` for their addresses, which may
  be the survivor's now, so the heartbeat puts it in the operator's drain set
  before it writes its record, and it gets no new call until the operator
  undrains it (``mediad.pool``).  A record that merely expired (Redis
  restarted or failed over, a slow beat), or a takeover that found no
  document of it, makes it verify, not stand down: nothing of it moved.

The document keeps the fence in its first two members, ``{"node":"<id>",
"epoch":<n>,...}``, so that the script reads it with one anchored pattern
instead of decoding the JSON (a document written before fencing existed is
decoded).  A dialog this node made and never wrote yet has no document: its
first write expects none (or one of its own, the same dialog id released and
reserved again); once written, a missing document means another node released
or ended it, and the write is refused.

What fencing does not cover: the media addresses.  A paused node's sockets
stay bound; if its floating address is still configured on its host when it
resumes, peers may still reach it until it notices (one heartbeat); it does not
take the address back either (it stands down).  The
``[pool] takeover_hook`` must take the address away from the old host (as
keepalived does: the address goes to one host only, with a gratuitous ARP);
docs/redis.rst, "Fencing".

Theory of operation: :class:`Claim`, :class:`Claims` and :func:`stamp` are
pure (which owner and epoch this node expects of each dialog's document, and
what each write's reply means); :class:`Fence` is the shell that sends the
script and drops what was lost.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
from typing import Any

import redis

from mediad.redis_client import REDIS_ERRORS
from mediad.redis_keys import EVENTS_CHANNEL
from mediad.state import StateError, dialog_key

log = logging.getLogger("mediad.fence")

# KEYS[1]: a dialog's document.  ARGV: the operation ("set", "del", "pub"); the writer's node and the
# epoch it writes; the node and epoch it expects the document to name; "1" when no document is also
# fine (the writer never wrote it); then for "set" the document and its TTL, for "pub" the channel and
# the message.  A document that names the writer at the epoch it writes is its own too (the same write
# sent again after a lost connection).  Returns 1 when done, else what the document names
# ("node/epoch"; "" when there is none).
SCRIPT = """
local doc = redis.call('GET', KEYS[1])
if doc then
  local node, epoch = string.match(doc, '^{"node":"([^"]*)","epoch":(%d+)')
  if node == nil then
    local ok, decoded = pcall(cjson.decode, doc)
    if ok and type(decoded) == 'table' and type(decoded['node']) == 'string' then
      node, epoch = decoded['node'], decoded['epoch'] or 0
    else
      node, epoch = '', 0
    end
  end
  epoch = tonumber(epoch) or 0
  local mine = node == ARGV[2] and epoch == tonumber(ARGV[3])
  local expected = node == ARGV[4] and (ARGV[6] == '1' or epoch == tonumber(ARGV[5]))
  if not (mine or expected) then
    return node .. '/' .. epoch
  end
elseif ARGV[6] ~= '1' and ARGV[1] ~= 'del' then
  return ''
end
if ARGV[1] == 'set' then
  redis.call('SET', KEYS[1], ARGV[7], 'EX', ARGV[8])
elseif ARGV[1] == 'del' then
  redis.call('DEL', KEYS[1])
else
  redis.call('PUBLISH', ARGV[7], ARGV[8])
end
return 1
"""


class Op(enum.Enum):
    """What a fenced command does (the label of the refusals metric)."""

    SAVE = "set"
    DELETE = "del"
    PUBLISH = "pub"


class Claim:
    """Who this node expects a dialog's document to name: ``node`` at ``epoch``; ``fresh``:
    this node never wrote it, so no document at all is fine too."""

    __slots__ = ("node", "epoch", "fresh")

    def __init__(self, node: str, epoch: int = 0, fresh: bool = True) -> None:
        self.node = node
        self.epoch = epoch
        self.fresh = fresh

    def __repr__(self) -> str:
        return f"Claim({self.node!r}, {self.epoch}, fresh={self.fresh})"

    def next_epoch(self, me: str) -> int:
        """The epoch a document written by ``me`` carries: one more than another node's."""
        return self.epoch if self.node == me else self.epoch + 1

    def args(self, me: str) -> list[Any]:
        """The script's arguments after the operation: the writer, its epoch, what it expects."""
        return [me, self.next_epoch(me), self.node, self.epoch, "1" if self.fresh else "0"]


def stamp(document: dict[str, Any], node: str, epoch: int) -> dict[str, Any]:
    """The document with its fence first (the script reads it there)."""
    return {"node": node, "epoch": epoch, **{k: v for k, v in document.items() if k not in ("node", "epoch")}}


def refused(reply: Any) -> str | None:
    """What a fenced command's reply says: None when it was done, else who holds the document
    (``node/epoch``, ``""``: nobody).  ValueError for anything else (a defect)."""
    if reply == 1:
        return None
    if isinstance(reply, bytes):
        return reply.decode(errors="replace")
    if isinstance(reply, str):
        return reply
    raise ValueError(f"unexpected reply of the fence script: {reply!r}")


class Claims:
    """This node's claim on each dialog's document (sans-IO).

    ``live``: the dialogs it holds; ``releasing``: those it released whose
    deletion is not written yet (the claim its deletion must present; the same
    id may be reserved again meanwhile, with a fresh claim of its own).
    """

    def __init__(self, me: str) -> None:
        self.me = me
        self.live: dict[str, Claim] = {}
        self.releasing: dict[str, Claim] = {}

    def of(self, dialog: str) -> Claim:
        """The live claim on ``dialog`` (fresh when it has none yet: a dialog this node made)."""
        claim = self.live.get(dialog)
        if claim is None:
            claim = self.live[dialog] = Claim(self.me)
        return claim

    def adopted(self, dialog: str, document: dict[str, Any]) -> Claim:
        """A dialog loaded from its document (a restart's or a takeover's): expect what it names."""
        claim = self.live[dialog] = Claim(str(document.get("node") or ""), int(document.get("epoch") or 0), False)
        return claim

    def released(self, dialog: str) -> Claim:
        """``dialog`` released: its deletion presents the claim it had."""
        claim = self.live.pop(dialog, None) or Claim(self.me)
        self.releasing[dialog] = claim
        return claim

    def deleting(self, dialog: str) -> Claim:
        return self.releasing.get(dialog) or Claim(self.me)

    def forget(self, dialog: str) -> None:
        self.live.pop(dialog, None)

    def saved(self, claim: Claim, epoch: int) -> None:
        """A save under ``claim`` was written: the document names this node at ``epoch`` now."""
        claim.node, claim.epoch, claim.fresh = self.me, epoch, False

    def deleted(self, dialog: str, claim: Claim) -> None:
        if self.releasing.get(dialog) is claim:
            del self.releasing[dialog]

    def lost(self, dialog: str, claim: Claim) -> bool:
        """A write under ``claim`` was refused; True when ``claim`` is still ``dialog``'s live one
        (the dialog this node holds is another node's now: drop it)."""
        if self.releasing.get(dialog) is claim:
            del self.releasing[dialog]
        if self.live.get(dialog) is claim:
            del self.live[dialog]
            return True
        return False


def latest_move(raw: bytes | str | None) -> float:
    """The time of the last move recorded for a node (``moved`` hash value), 0 when none."""
    if not raw:
        return 0.0
    try:
        return max((float(at) for at, _ in json.loads(raw)), default=0.0)
    except (ValueError, TypeError):
        return 0.0


class Fence:
    """One pool node's fenced writes, and what it does when one is refused (see the module)."""

    def __init__(self, daemon) -> None:
        self.daemon = daemon
        self.me = daemon.config.mediad_node_id
        self.claims = Claims(self.me)
        self.script = None
        self.seen_move: float | None = None  # the last move of this node's dialogs it knows of
        self.signs: list[str] = []  # what the last heartbeat read that tells of a takeover (taken_over)
        self.displaced: str | None = None  # a dialog was dropped to another node since (taken_over)
        self.fenced = daemon.metrics.dialogs_fenced
        self.refusals = {op: daemon.metrics.fenced_refusals.labels(op.value) for op in Op}

    @property
    def store(self):
        return self.daemon.store

    # -- what the daemon writes -------------------------------------------------------
    def stamp(self, dialog: str, document: dict[str, Any]) -> dict[str, Any]:
        """The document of ``dialog`` as this node writes it next: its fence first."""
        return stamp(document, self.me, self.claims.of(dialog).next_epoch(self.me))

    def adopted(self, dialog: str, document: dict[str, Any]) -> None:
        self.claims.adopted(dialog, document)

    def released(self, dialog: str) -> None:
        self.claims.released(dialog)

    async def write(self, deletes: list[str], documents: list[tuple[str, dict[str, Any]]]) -> None:
        """The write-behind's batch, each command fenced (one round trip, as ``StateStore.write``);
        a refused save drops its dialog.  StateError when Redis failed: nothing is settled then."""
        ttl = self.store.dialog_ttl
        plan: list[tuple[Op, str, Claim, int]] = []
        commands: list[tuple[Any, ...]] = []
        for dialog in deletes:
            claim = self.claims.deleting(dialog)
            plan.append((Op.DELETE, dialog, claim, claim.epoch))
            commands.append(self._command(dialog, claim, Op.DELETE))
        for dialog, document in documents:
            claim = self.claims.of(dialog)
            plan.append((Op.SAVE, dialog, claim, int(document["epoch"])))
            commands.append(self._command(dialog, claim, Op.SAVE, document_json(document), ttl))
        replies = await self._run(commands)
        for (op, dialog, claim, epoch), reply in zip(plan, replies):
            holder = refused(reply)
            if holder is None:
                if op is Op.SAVE:
                    self.claims.saved(claim, epoch)
                else:
                    self.claims.deleted(dialog, claim)
            else:
                self._refused(op, dialog, claim, holder)

    async def publish(self, event: dict[str, Any]) -> None:
        """An event of a dialog, published only while this node owns the dialog's document."""
        dialog = str(event.get("dialog") or "")
        claim = self.claims.live.get(dialog) or self.claims.deleting(dialog)
        message = json.dumps(event, separators=(",", ":"))
        holder = refused(await self._one(self._command(dialog, claim, Op.PUBLISH, EVENTS_CHANNEL, message)))
        if holder is not None:
            self._refused(Op.PUBLISH, dialog, claim, holder)

    async def delete_of(self, dialog: str, document: dict[str, Any]) -> bool:
        """A survivor's deletion of a dead node's document (a dialog it does not take over), as
        long as it still names the dead node at its epoch; True when deleted."""
        claim = Claim(str(document.get("node") or ""), int(document.get("epoch") or 0), False)
        holder = refused(await self._one(self._command(dialog, claim, Op.DELETE)))
        if holder is not None:
            self.refusals[Op.DELETE].inc()
            log.warning("dialog %s of node %s not ended: its document is %s's now", dialog[:64], claim.node,
                        holder or "nobody")
        return holder is None

    def verify(self, why: str) -> None:
        """Write every dialog this node holds again: the fence drops those it lost."""
        daemon = self.daemon
        if not daemon.dialogs:
            return
        log.warning("node %s: %s: checking that its %d dialog(s) are still its own", self.me, why,
                    len(daemon.dialogs))
        for dialog in list(daemon.dialogs.values()):
            daemon.changed(dialog)

    def taken_over(self, lock: bytes | None, moved: bytes | str | None, first: bool) -> str | None:
        """What a heartbeat read before writing this node's record (``mediad.pool.Heartbeat``): the holder
        of its takeover lock and its entry of the ``moved`` hash.  Returns why this node must stand down,
        else None: a survivor holds, or is taking, documents of dialogs this node had written, so it ran
        the ``takeover_hook`` for their addresses (another node holds the lock, or moved this node's dialogs
        since it last looked, while it holds such dialogs; or it already dropped one to another node).
        A takeover that found no document of this node moved no address.  The signs are kept for
        :meth:`beat`."""
        latest = latest_move(moved)
        if self.seen_move is None:
            self.seen_move = latest  # moves before this process started were done before its restore
        signs = []
        if lock is not None and lock != self.me.encode():
            signs.append(f"node {lock.decode(errors='replace')[:64]} holds its takeover lock")
        if latest > self.seen_move:
            self.seen_move = latest
            signs.append("its dialogs were moved to another node")
        self.signs = signs
        why, self.displaced = self.displaced, None
        if why is None and signs and any(not claim.fresh for claim in self.claims.live.values()):
            why = ", ".join(signs)
        return why

    def beat(self, previous: bytes | None, first: bool) -> None:
        """What the heartbeat saw once it wrote the record: the record it replaced (None: it had
        expired).  With :meth:`taken_over`'s signs, a sign of a takeover makes the node :meth:`verify`."""
        reasons, self.signs = self.signs, []
        if previous is None and not first:
            reasons.append("its pool record had expired")
        if reasons:
            self.verify(", ".join(reasons))

    # -- the shell ---------------------------------------------------------------------
    def _command(self, dialog: str, claim: Claim, op: Op, *rest: Any) -> tuple[Any, ...]:
        return ("EVALSHA", self._sha(), 1, dialog_key(dialog), op.value, *claim.args(self.me), *rest)

    def _sha(self) -> str:
        if self.script is None:
            self.script = script_sha()
        return self.script

    async def _one(self, command: tuple[Any, ...]) -> Any:
        """One fenced command on the client's connection pool: for every caller but the writer
        (whose connection is its own, one batch at a time)."""
        client = self.store.redis
        try:
            try:
                return await client.execute_command(*command)
            except redis.exceptions.NoScriptError:
                await client.script_load(SCRIPT)
                return await client.execute_command(*command)
        except REDIS_ERRORS as exc:
            raise StateError(f"redis: {exc.__class__.__name__}") from None

    async def _run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The writer's batch: the commands' replies (in order), on the writer's own connection
        (``StateStore.run``); the script is loaded when Redis does not know it
        (first use, a restarted or failed-over Redis) and the commands it refused are sent again."""
        replies = await self.store.run(commands)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
        if missing:
            try:
                await self.store.redis.script_load(SCRIPT)
            except REDIS_ERRORS as exc:
                raise StateError(f"redis: {exc.__class__.__name__}") from None
            again = await self.store.run([commands[i] for i in missing])
            for i, reply in zip(missing, again):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise StateError(f"redis: {reply.__class__.__name__}: {reply}")
        return replies

    def _refused(self, op: Op, dialog: str, claim: Claim, holder: str) -> None:
        self.refusals[op].inc()
        if self.claims.lost(dialog, claim):
            held = self.daemon.dialogs.get(dialog)
            if held is not None:
                self.daemon.drop(held)
                self.fenced.inc()
                if holder and not holder.startswith(self.me + "/"):
                    self.displaced = f"node {holder.split('/')[0][:64]} took its dialogs over"
                log.warning("dialog %s dropped: its document is %s now (taken over while this node was away); "
                            "its sockets are closed, nothing is sent", dialog[:64],
                            f"node {holder}'s" if holder else "gone")
                return
        log.info("dialog %s: %s refused, its document is %s now", dialog[:64], op.value,
                 f"node {holder}'s" if holder else "gone")


_COMPACT = json.JSONEncoder(separators=(",", ":"))


def document_json(document: dict[str, Any]) -> str:
    return _COMPACT.encode(document)


def script_sha() -> str:
    """What Redis names the script by (SHA-1 of its text, as ``SCRIPT LOAD`` answers)."""
    return hashlib.sha1(SCRIPT.encode()).hexdigest()


__all__ = ["Claim", "Claims", "Fence", "Op", "SCRIPT", "latest_move", "refused", "stamp"]
