"""Every Redis key name of e2ae edge, and the ACL rules of the components that use them.

Theory of operation: Redis Cluster places a key by the CRC16 of its hash tag,
the text between the first ``{`` and the next ``}`` (Redis Cluster
specification, "Hash tags"); a script or a transaction may only touch keys of
one slot.  The plugin's scripts touch the record, lock and tombstone of every
candidate dialog id of one Call-ID at once (the caller's and the callee's tag
name different ids), so the ids of one Call-ID must share a tag: a dialog id
(:func:`plugin.state.dialog_id`) is the digest of the Call-ID (16 hex digits)
followed by the digest of the Call-ID and the tag, and the tag is the id's
first :data:`TAG_LENGTH` characters (all of a shorter id).  mediad's document
of the dialog carries the same tag, so both sides of one dialog share a slot.

Keys of one dialog (``T`` its tag, ``id`` the whole dialog id)::

    e2ae:alg:dialog:{T}rest     the plugin's record (plugin.state)
    e2ae:alg:lock:{T}rest       the plugin's per-dialog lock
    e2ae:alg:released:{T}rest   the plugin's release tombstone
    e2ae:agw:dialog:{T}rest     mediad's document (mediad.state)

where ``rest`` is what follows the tag in the id, so the key still spells the
id (braces aside).  Global keys keep their names (each is one key, in its own
slot): ``e2ae:agw:certificate``, ``e2ae:control_secret``, and the pub/sub
channel ``e2ae:events`` (Cluster's PUBLISH reaches every node).

Keys of the names used before hash tags (``e2ae:alg:dialog:<id>``,
``e2ae:agw:dialog:<dialog>``) are never read: the dialog id's form changed
with them, so no such call can be continued; they expire with their TTL.
docs/redis.rst says how to upgrade (drain first).

:data:`ACL_RULES` is what each component may do (Redis 7 ACL, ``ACL SETUSER``
syntax): the commands its code sends (scripts included: Redis checks the
commands a script runs and their keys too) on its own keys only.
"""

from __future__ import annotations

import enum

TAG_LENGTH = 16

ALG_DIALOG = "e2ae:alg:dialog:"
ALG_LOCK = "e2ae:alg:lock:"
ALG_RELEASED = "e2ae:alg:released:"
AGW_DIALOG = "e2ae:agw:dialog:"
CERTIFICATE_KEY = "e2ae:agw:certificate"
CONTROL_SECRET_KEY = "e2ae:control_secret"
EVENTS_CHANNEL = "e2ae:events"


def tagged(prefix: str, dialog: str) -> str:
    """``prefix`` + the dialog id with its hash tag in braces."""
    return f"{prefix}{{{dialog[:TAG_LENGTH]}}}{dialog[TAG_LENGTH:]}"


def pattern(prefix: str) -> str:
    """The SCAN/KEYS pattern of every tagged key of ``prefix`` (not the untagged old names)."""
    return prefix + "{*"


def dialog_of(prefix: str, key: str | bytes) -> str:
    """The dialog id a tagged key of ``prefix`` names (the inverse of :func:`tagged`)."""
    text = key.decode() if isinstance(key, bytes) else key
    if not text.startswith(prefix + "{") or "}" not in text:
        raise ValueError(f"not a tagged {prefix!r} key: {text!r}")
    tag, _, rest = text[len(prefix) + 1:].partition("}")
    return tag + rest


class Component(enum.Enum):
    """Who connects to Redis: each has its own ACL user (``[redis] <component>_username``)."""

    PLUGIN = "plugin"
    MEDIAD = "mediad"
    CTL = "ctl"


# What every client needs to connect: AUTH and HELLO are always allowed; redis-py pings
# (health checks), Sentinel's connections may ask ROLE, Cluster clients read the slot map.
# (redis-py's CLIENT SETINFO is left out: Redis 7.0 has none, and redis-py ignores its refusal.)
_CONNECT = "+ping +role +cluster|slots +cluster|shards +cluster|nodes +cluster|myid"
_SCRIPTS = "+evalsha +script|load +time"
_SECRET = f"%R~{CONTROL_SECRET_KEY}"
_POOL = "~e2ae:pool:*"  # the pool of mediads (mediad.pool): node records, the drain set, takeovers (mediad.takeover)

ACL_RULES: dict[Component, str] = {
    # The plugin's scripts (get/set/del/exists/expire inside), its plain calls, the events.
    Component.PLUGIN: (f"{_CONNECT} {_SCRIPTS} +get +set +del +exists +expire +subscribe +unsubscribe "
                       f"+smembers +mget +hgetall ~e2ae:alg:* {_SECRET} &{EVENTS_CHANNEL} {_POOL}"),
    # mediad: its documents (write-behind, restore by SCAN; a pool node's writes and events through
    # the fence script, mediad.fence, which runs get/set/del/publish), the certificate, the secret, events.
    Component.MEDIAD: (f"{_CONNECT} +evalsha +script|load +get +set +del +scan +pttl +publish +sismember +sadd "
                       f"+srem +smembers +mget +hget +hset "
                       f"~{AGW_DIALOG}* ~{CERTIFICATE_KEY} ~{CONTROL_SECRET_KEY} &{EVENTS_CHANNEL} {_POOL}"),
    # e2ae-ctl: lists the plugin's records and, when a call's end event did not release it,
    # releases it as the plugin does (its scripts); reads the secret to ask mediad.
    Component.CTL: (f"{_CONNECT} {_SCRIPTS} +get +mget +set +del +exists +expire +scan +smembers +sadd +srem "
                    f"+hgetall ~e2ae:alg:* {_SECRET} {_POOL}"),
}


__all__ = ["ACL_RULES", "AGW_DIALOG", "ALG_DIALOG", "ALG_LOCK", "ALG_RELEASED", "CERTIFICATE_KEY",
           "CONTROL_SECRET_KEY", "Component", "EVENTS_CHANNEL", "TAG_LENGTH", "dialog_of", "pattern", "tagged"]
