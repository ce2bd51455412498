"""The plugin's dialog record: its fields, its JSON, its keys and what the store's scripts answer about it.

Pure (no I/O): :mod:`plugin.state` (the store) reads and writes these records
in Redis; this module says what a record is, how it is encoded, which keys
name a dialog, and what each script's reply means.  It is compiled with the
rules (:mod:`deploy.compiled`); the store stays Python, since it reaches into
redis-py's connections and may hold a Cluster client.

A record is one JSON document (``e2ae:alg:dialog:{T}rest``, :mod:`plugin.state`
says which keys go with it): the caller's and callee's tags, the Call-ID,
the rules' :class:`~sdp_rules.plan.DialogState`, the offer/answer tracker
and the last rendered bodies (the idempotency cache for retransmitted and
forked messages), keyed ``"<tx>|<side>|<sha256 of body>"``, the last
:data:`CACHE_SIZE` kept.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sdp_rules.plan import DialogState

from mediad.redis_keys import ALG_DIALOG, ALG_LOCK, ALG_RELEASED, tagged
from plugin.lifecycle import CallState

DIALOG_PREFIX = ALG_DIALOG
LOCK_PREFIX = ALG_LOCK
TOMBSTONE_PREFIX = ALG_RELEASED
CACHE_SIZE = 16
# What a script that writes answers when Redis ran it after its deadline (plugin.state): it
# wrote nothing.
LATE = -9


class Found(str, enum.Enum):
    """What a release's ``take`` found (:meth:`plugin.state.DialogStore.take`)."""

    TAKEN = "taken"  # the record was there and is now buried
    ABSENT = "absent"  # no record
    BUSY = "busy"  # the record is there but locked: nothing changed


TAKEN = Found.TAKEN
ABSENT = Found.ABSENT
BUSY = Found.BUSY


@functools.lru_cache(maxsize=1024)
def dialog_id(call_id: str, caller_tag: str) -> str:
    """The dialog's id: stable, short, safe in a Redis key and on the Iq interface.

    32 hex digits: the Call-ID's digest (the Redis hash tag every id of the Call-ID
    shares, :mod:`mediad.redis_keys`), then the digest of the Call-ID and the tag.
    Remembered for the last dialogs: one call's messages ask for it about ten times.
    """
    call = hashlib.sha256(call_id.encode("utf-8", "surrogateescape")).hexdigest()
    digest = hashlib.sha256(f"{call_id}\0{caller_tag}".encode("utf-8", "surrogateescape"))
    return call[:16] + digest.hexdigest()[:16]


def dialog_key(ident: str) -> str:
    """The dialog's record."""
    return tagged(ALG_DIALOG, ident)


def lock_key(ident: str) -> str:
    """The dialog's lock."""
    return tagged(ALG_LOCK, ident)


def tombstone_key(ident: str) -> str:
    """The dialog's release tombstone."""
    return tagged(ALG_RELEASED, ident)


def dialog_keys(ident: str) -> list[str]:
    """The Redis keys of the dialog ``ident``, in the order every script takes them:
    record, lock, tombstone (the one place that names them)."""
    return [dialog_key(ident), lock_key(ident), tombstone_key(ident)]


def candidate_keys(candidates: list[str]) -> list[str]:
    """The keys of each candidate dialog id in turn (the scripts that find a dialog by its tags)."""
    return [key for ident in candidates for key in dialog_keys(ident)]


def record_digest(raw: str) -> str:
    """The digest the conditional commit compares (Lua's ``redis.sha1hex`` of the stored record)."""
    return hashlib.sha1(raw.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class DialogRecord:
    """Everything the plugin keeps for one dialog."""

    id: str
    call_id: str
    caller_tag: str
    caller_side: str  # "access" or "core": where the initial INVITE came from
    callee_tag: str = ""
    rules: DialogState = field(default_factory=DialogState)
    # The offer in progress: {"tx": "<cseq> <method>", "side": origin, "in_reply": bool}.
    offer: dict[str, Any] | None = None
    # Idempotency cache: "<tx>|<side>|<sha256 of body>" -> rendered body.
    rendered: dict[str, str] = field(default_factory=dict)
    applied: str = ""  # cache key of the body whose plan mediad applied last
    created: float = 0.0
    state: CallState = CallState.IDLE  # the call's lifecycle state (plugin.lifecycle)
    mediad: str = ""  # in a pool: the dialog's media node, "id@host:port" (plugin.pool); else ""
    # The JSON this record was read from or last saved as ("" for a new one): what a
    # conditional commit (DialogStore.commit_if) compares with Redis's.
    raw: str = field(default="", repr=False, compare=False)

    def to_json(self) -> str:
        return json.dumps({
            "id": self.id, "call_id": self.call_id, "caller_tag": self.caller_tag,
            "caller_side": self.caller_side, "callee_tag": self.callee_tag,
            "rules": {"version": self.rules.version, "data": self.rules.data},
            "offer": self.offer, "rendered": self.rendered, "applied": self.applied,
            "created": self.created, "state": self.state.value, **({"mediad": self.mediad} if self.mediad else {}),
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> "DialogRecord":
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "surrogateescape")
        doc = json.loads(raw)
        rules = doc.get("rules") or {}
        return cls(raw=raw,
            id=doc["id"], call_id=doc["call_id"], caller_tag=doc["caller_tag"],
            caller_side=doc["caller_side"], callee_tag=doc.get("callee_tag", ""),
            rules=DialogState(int(rules.get("version", 0)), dict(rules.get("data", {}))),
            offer=doc.get("offer"), rendered=dict(doc.get("rendered", {})), applied=doc.get("applied", ""),
            created=float(doc.get("created", 0.0)),
            state=CallState(doc.get("state", CallState.OFFERED.value)), mediad=str(doc.get("mediad", "")),
        )

    def remember(self, key: str, body: str) -> None:
        self.rendered[key] = body
        while len(self.rendered) > CACHE_SIZE:
            self.rendered.pop(next(iter(self.rendered)))


# -- the scripts' replies (plugin.state says what each script does) ----------------------

def is_late(reply: Any) -> bool:
    """Whether a script's reply says Redis ran it after its deadline (it wrote nothing)."""
    return reply == LATE or (isinstance(reply, list) and bool(reply) and reply[0] == LATE)


def read_take(reply: list) -> tuple[Found, DialogRecord | None]:
    """``take``'s reply: what it found, and the record it buried when it did."""
    if reply[0] == 1:
        return TAKEN, DialogRecord.from_json(reply[2])
    return (BUSY, None) if reply[0] == -1 else (ABSENT, None)


def read_create(reply: list) -> tuple[bool, DialogRecord | None]:
    """``create``'s reply: whether it saved, else the record the dialog already has (None when
    it has only a lock holder)."""
    if reply[0] == 1:
        return True, None
    return False, DialogRecord.from_json(reply[1]) if len(reply) > 1 and reply[1] else None


@dataclass
class ClaimReply:
    """``claim``'s reply: ``status`` 0 (no record, none created), -1 (locked by another worker)
    or 1 (locked for the caller); ``index`` the candidate it picked (0-based); when locked for
    the caller, the ``record`` read, whether the tombstone is there (``released``) and whether
    a record was there at the start (``existed``); when locked by another, ``existed``."""

    status: int
    index: int = 0
    record: DialogRecord | None = None
    released: bool = False
    existed: bool = False


def read_claim(reply: list) -> ClaimReply:
    """Decode ``claim``'s reply (its shapes in :mod:`plugin.state`)."""
    status = int(reply[0])
    if status == 0:
        return ClaimReply(0)
    index = int(reply[1]) - 1
    if status == 1:
        raw = reply[2]
        return ClaimReply(1, index, DialogRecord.from_json(raw) if raw else None, bool(reply[3]), bool(reply[4]))
    return ClaimReply(status, index, existed=reply[2] == 1)


__all__ = ["ABSENT", "BUSY", "CACHE_SIZE", "DIALOG_PREFIX", "LATE", "LOCK_PREFIX", "TAKEN", "TOMBSTONE_PREFIX",
           "ClaimReply", "DialogRecord", "Found", "candidate_keys", "dialog_id", "dialog_key", "dialog_keys",
           "is_late", "lock_key", "read_claim", "read_create", "read_take", "record_digest", "tombstone_key"]
