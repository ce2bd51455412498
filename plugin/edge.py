"""The IMS-ALG's SIP logic, free of Kamailio: which SDP is an offer or an answer,
the call to the rules and to mediad, the dialog's state, and the errors.

Theory of operation
-------------------
:mod:`plugin.kemi` turns each SIP message into a :class:`Message` (the side it
arrived on, its method, tags, CSeq and body) and calls :meth:`Edge.handle`,
which answers with an :class:`Outcome`: a new body to put in the message, or
an error to answer with (488 + Warning for a peer's fault, 503 + Retry-After
when mediad or Redis cannot be reached, 500 for our own bugs).

Offer or answer (RFC 3264, RFC 3261 13.2.1, RFC 3262, RFC 3311): the dialog
record keeps the offer in progress (its transaction, the side that made it,
and whether it came in a reply).  A reply with a body to the transaction whose
request carried the offer is its answer (the 18x and the 2xx of one INVITE
both are); an ACK or PRACK with a body answers an offer made in a reply; every
other body is an offer (a late offer in an INVITE's 18x/2xx included).

Idempotency: what was rendered for a body is cached in the record, keyed by
transaction, side and a digest of the body, so a retransmission, or a 2xx
repeating its 18x's answer, gets the same bytes without a second rules run or
Iq request.  Forked early dialogs answering in turn are each applied to
mediad when they arrive (the last answer seen sets the core's media address),
and an answer seen before is applied again when another one was applied in
between.  The Iq transaction id carries the state version, so mediad's own
idempotency cache answers a retransmitted request, never a new one.  Messages of one dialog are serialised across workers by a Redis
lock with a bounded wait; an initial INVITE, which no other message of its
dialog can cross before it is relayed, takes none and is saved by one
conditional write (:mod:`plugin.state`).  Nor does an INVITE's 18x/2xx whose
record is in the workers' shared cache (:class:`RecordCache`, which holds a
dialog's record from its INVITE to its final answer): it is worked on from
that copy and saved by one write conditional on the record being unchanged
and unlocked; when it was changed, released or locked meanwhile, or mediad
or the rules refuse what the copy asked, the reply is handled again under a
claim on the record as it is (:meth:`Edge._unclaimed`).  A copy never
decides alone: Redis stays the truth.

Which bodies: only INVITE, UPDATE, PRACK and ACK bodies (and their replies')
are offers or answers; an SDP body in OPTIONS, MESSAGE, INFO... passes
untouched.  In a multipart body the SDP part is the offer or answer, and only
its content changes (:mod:`plugin.body`).  Non-initial messages, replies
included, find their record by both tags (a reply to a request the callee sent
has the callee's tag in From); a reply creates a record only as an INVITE's
18x/2xx (a late offer).  The callee's tag is the To tag of the last 2xx to the
caller's INVITE (the fork that won), with or without a body.

TTL: the record lives ``dialog_ttl`` + ``DIALOG_TTL_GRACE`` from its last
refresh.  Every write and every unlock of a claimed dialog refreshes it (so
every 18x/2xx with SDP does, answered from the cache or not), and every
in-dialog request but ACK and BYE refreshes it as the dialog module resets its
own timeout: at most once per ``REFRESH_INTERVAL`` (30 s) per dialog and
worker (a small per-worker cache of the dialogs it refreshed).  An ACK
refreshes nothing: the ACK of a 2xx comes within 64*T1 (32 s) of the 2xx, and
that 2xx refreshed the record, or (a 2xx without SDP after a reliable 18x)
the 18x did, within the INVITE's ``fr_inv_timer`` (60 s) before it; the ACK of
an error comes within ``fr_inv_timer`` of the in-dialog INVITE, itself
refreshed at most ``REFRESH_INTERVAL`` late.  The longest lag of the record's
refresh behind the dialog module's is thus 92 s; the grace (120 s) covers it,
so the record always outlives the dialog module's timeout.

Release: :meth:`Edge.release` steps the call's lifecycle (:mod:`plugin.lifecycle`:
BYE, a final error to the initial INVITE, a CANCEL included through its 487,
the dialog module's timeout, a DTLS failure, a failed answer) and does what its
table says.  It replaces the record by a short-lived tombstone, so that a
message still in flight cannot re-create it, and sends RELEASE to mediad from
the record as it was, under a transaction unique to this release (a dialog id
can be reserved again after a release), without waiting for mediad's answer
when the Iq client can (:meth:`mediad.io.client.IqClient.send`): a refusal, or
a connection lost before the answer, comes back with a later request and is
queued for retry like a release that could not be sent (the retries wait).
When no worker holds the dialog's lock that is one Redis round trip
(:meth:`~plugin.state.DialogStore.take`, which explains why RELEASE may follow
the burial); else the release waits for
the lock, re-reads the record, sends RELEASE and buries it under the lock.  A
RESERVE whose outcome cannot be used or saved (Iq timeout, Redis error, a reply
the rules cannot use) is released at once.  What cannot be done now is put in
the :attr:`Edge.outbox` for the glue to keep in Kamailio's shared memory: a
failed release (:class:`~plugin.lifecycle.PendingRelease`, retried with
:meth:`Edge.retry`) and a call to end with BYE
(:class:`~plugin.lifecycle.EndRequest`).

Errors: the peer's fault is a 4xx with a Warning (:mod:`plugin.limits` checks
sizes and text before anything else; an offer in a body that is not SDP is
415); mediad or Redis unreachable, 503 with Retry-After; mediad's own error or
a reply the rules cannot use, 500 (:class:`~sdp_rules.errors.AgwError`), never
blamed on the peer.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Protocol

import sdp_rules
from iq import EVENT_DTLS_FAILED, IqReply, IqRequest, Side
from sdp_rules.errors import AgwError, E2aeError, PeerError, UnavailableError
from sdp_rules.plan import ActpassPolicy, BundlePolicy, Kind, Policy
from sdp_rules.rules import release_request

# Imported here, in Kamailio's main process before it forks its workers: the
# control channel's cryptography costs 50-100 ms to import, which each worker's
# first call would otherwise pay.
from mediad.io.client import IqClient, SecretRefused
from mediad.redis_client import settings as redis_settings
from mediad.redis_keys import Component
from mediad.takeover import EVENT_MEDIA_LOST

from plugin import limits
from plugin.body import SDP_TYPE, MultipartError, find_sdp, is_multipart, media_type
from plugin.lifecycle import (Action, CallEvent, CallState, EndRequest, Lifecycle, LifecycleError,
                              PendingRelease, retry_delay)
from plugin.metrics import Metrics, direction
from plugin.record import BUSY, TAKEN, DialogRecord, dialog_id
from plugin.state import DialogStore

log = logging.getLogger("e2ae.plugin")

WARN_CODE = 399  # RFC 3261 20.43: miscellaneous warning
WARNING_MAX = 200
# The dialog module ends a dialog after [redis] dialog_ttl; the record outlives it by this
# much so that the release at that moment still finds what to release.  It covers the lag
# of the last refresh behind the dialog module's (module docstring: TTL).
DIALOG_TTL_GRACE = 120
# An in-dialog request does not refresh a record this worker refreshed less than this
# long ago (s); the cache of those dialogs holds at most REFRESH_CACHE_SIZE entries.
REFRESH_INTERVAL = 30.0
REFRESH_CACHE_SIZE = 512
# Only these methods' bodies are offers/answers (RFC 3261, 3262, 3311); an SDP body in
# OPTIONS, MESSAGE, INFO, ... is not negotiated and is left alone.
SDP_METHODS = frozenset({"INVITE", "UPDATE", "PRACK", "ACK"})
# The requests whose replies may carry an offer or an answer (an ACK has no reply); a
# request of these methods with a body of another type is refused (415).
REPLY_SDP_METHODS = frozenset({"INVITE", "UPDATE", "PRACK"})
# The body types an offer or answer may come in (415's Accept header, RFC 3261 21.4.13).
ACCEPT = "application/sdp, multipart/mixed, multipart/alternative, multipart/related"


@dataclass
class Message:
    """What the edge needs of one SIP message."""

    request: bool
    method: str  # the request's method; for a reply, the CSeq method
    call_id: str
    from_tag: str
    to_tag: str
    cseq: int
    side: Side  # where it arrived
    body: str | bytes = ""  # bytes when it is not UTF-8 text (plugin.limits)
    content_type: str = ""
    status: int = 0  # replies only

    @property
    def has_body(self) -> bool:
        return bool(self.body.strip())

    @property
    def has_sdp(self) -> bool:
        return self.has_body and media_type(self.content_type) in ("", SDP_TYPE)

    @property
    def tx(self) -> str:
        return f"{self.cseq} {self.method}"

    @property
    def text(self) -> str:
        """The body as text: it is text on every SDP path (:meth:`Edge.handle` converts it first)."""
        body = self.body
        return body if isinstance(body, str) else body.decode("utf-8", "surrogateescape")


@dataclass
class Outcome:
    """What to do with the message: put ``body`` in it, or answer ``status``."""

    body: str | None = None
    status: int | None = None
    reason: str = ""
    warning: str | None = None  # the Warning header's text (without the header name)
    retry_after: int | None = None
    dialog: str | None = None  # the dialog id, when there is one
    content_type: str = SDP_TYPE  # of ``body``: a multipart body keeps its own
    accept: str | None = None  # the Accept header of a 415

    @property
    def failed(self) -> bool:
        return self.status is not None


REASONS = {400: "Bad Request", 413: "Request Entity Too Large", 415: "Unsupported Media Type",
           488: "Not Acceptable Here", 503: "Service Unavailable", 500: "Server Internal Error",
           481: "Call/Transaction Does Not Exist"}


def other(side: Side) -> Side:
    return Side.CORE if side is Side.ACCESS else Side.ACCESS


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8", "surrogateescape")).hexdigest()[:20]


def _warning_text(agent: str, reason: str) -> str:
    # A quoted-string of printable text (RFC 3261 25.1): no quote, backslash or control
    # character (a NUL from a peer's bytes would also stop Kamailio from adding the header).
    printable = "".join(c if c.isprintable() else " " for c in reason.replace('"', "'").replace("\\", "/"))
    clean = " ".join(printable.split())[:WARNING_MAX]
    return f'{WARN_CODE} {agent} "{clean}"'


class Edge:
    """The plugin's logic for one worker: a store, an Iq client, metrics and the policy."""

    def __init__(self, store: DialogStore, iq_client, metrics: Metrics, *, agent: str,
                 policy: Policy | None = None, retry_after: int = 5, dtls_failure: str = "bye",
                 cache: RecordCache | None = None, pool=None) -> None:
        self.store = store
        # Records of dialogs being set up, shared by the workers (Kamailio's shared memory):
        # what lets an INVITE's 18x/2xx go without a claim (module docstring: round trips).
        self.cache = cache if cache is not None else NO_CACHE
        self.iq_client = iq_client
        self.pool = pool  # a plugin.pool.Pool: a media node per dialog; None: iq_client for all
        self.metrics = metrics
        self.agent = agent
        self.policy = policy or Policy()
        self.retry_after = retry_after
        self.dtls_failure = dtls_failure  # "bye": end the call; "keep": log and count only
        self.lifecycle = Lifecycle(metrics)
        # Work the SIP layer must keep beyond this call (plugin.lifecycle): calls to end
        # with BYE, releases to retry.  The glue takes it after each call (take_outbox).
        self.outbox: list[EndRequest | PendingRelease] = []
        # Dialogs this worker refreshed lately: "<Call-ID> <tag> <tag>" -> time.monotonic().
        self._refreshed: OrderedDict[str, float] = OrderedDict()

    @classmethod
    def from_config(cls, config, metrics: Metrics, iq_client=None, cache: RecordCache | None = None,
                    component=Component.PLUGIN) -> "Edge":
        """Build from a ``mediad.config.Config`` (the one configuration file), connecting to
        Redis as ``component`` (e2ae-ctl's own releases use its ACL user)."""
        timeout = config.plugin_iq_timeout_ms / 1000.0
        store = DialogStore(redis_settings(config, component), config.redis_dialog_ttl + DIALOG_TTL_GRACE,
                            timeout=timeout)
        if iq_client is None:
            iq_client = LazyIqClient(config)
        policy = Policy(actpass=ActpassPolicy(config.policy_actpass), bundle=BundlePolicy(config.policy_bundle))
        from mediad.config import sip_sockets

        access = next(sock for option, _, sock in sip_sockets(config) if option.startswith("access_")).public
        from plugin.pool import Pool

        pool = Pool(config, lambda: store.redis, metrics) if Pool.configured(config) else None
        return cls(store, iq_client, metrics, agent=f"{access.host}:{access.port}", policy=policy,
                   retry_after=config.plugin_retry_after, dtls_failure=config.policy_dtls_failure, cache=cache,
                   pool=pool)

    # -- messages -----------------------------------------------------------------
    def take_outbox(self) -> list[EndRequest | PendingRelease]:
        """The calls to end and releases to retry queued since the last call (and forget them)."""
        clients = [self.iq_client] + (self.pool.clients() if self.pool is not None else [])
        for take_failed in filter(None, (getattr(client, "take_failed", None) for client in clients)):
            for pending in take_failed():
                log.warning("Call-ID %s: mediad refused the release of dialog %s, or its connection was lost "
                            "before the answer: to be retried", pending.call_id, pending.dialog)
                self._retry(pending)
        out, self.outbox = self.outbox, []
        return out

    def warning(self, reason: str) -> str:
        """The value of a Warning header (RFC 3261 20.43) saying ``reason``."""
        return _warning_text(self.agent, reason)

    def handle(self, msg: Message) -> Outcome:
        """Rewrite the SDP of one message (or say which error to answer)."""
        if msg.method in SDP_METHODS and msg.has_body:
            if is_multipart(msg.content_type) or msg.has_sdp:
                try:
                    text = limits.body_text(msg.body)
                except limits.BodyError as exc:
                    return self.refuse(msg, exc)
                if text is not msg.body:
                    msg = replace(msg, body=text)
                if is_multipart(msg.content_type):
                    return self._handle_multipart(msg)
            elif msg.method in REPLY_SDP_METHODS:
                # An offer or answer in a body that is not SDP would reach the other side
                # untouched, a WIC's DTLS and ICE attributes included (RFC 3261 21.4.13);
                # in a reply it is an answer that cannot be converted.
                return self._not_sdp(msg, media_type(msg.content_type))
        sdp = msg.has_sdp and msg.method in SDP_METHODS
        if not sdp:
            self._bookkeep(msg)
            return Outcome()
        started = time.perf_counter()
        try:
            limits.check_sdp(msg.text)
            return self._handle_sdp(msg)
        except PeerError as exc:
            log.info("Call-ID %s: %s %s from %s refused: %s", msg.call_id, msg.method,
                     "request" if msg.request else msg.status, msg.side.value, exc.reason)
            return self._error(msg, exc.sip_status, exc.reason)
        except UnavailableError as exc:
            log.warning("Call-ID %s: %s", msg.call_id, exc.reason)
            return self._error(msg, 503, exc.reason, retry_after=exc.retry_after or self.retry_after)
        except AgwError as exc:  # mediad's fault or ours: never blamed on the peer
            log.error("Call-ID %s: %s %s from %s: %s", msg.call_id, msg.method,
                      "request" if msg.request else msg.status, msg.side.value, exc.reason)
            return self._error(msg, 500, exc.reason)
        except Exception:  # our bug: answer, never leave the worker hanging
            log.exception("Call-ID %s: internal error handling %s", msg.call_id, msg.method)
            return self._error(msg, 500, "internal error")
        finally:
            self.metrics.sdp_seconds.labels(direction(msg.side.value)).observe(time.perf_counter() - started)

    def _handle_multipart(self, msg: Message) -> Outcome:
        """A multipart body (RFC 5621): its SDP part is handled as a bare SDP body would be."""
        try:
            part = find_sdp(msg.content_type, msg.text)
        except MultipartError as exc:
            return self.refuse(msg, exc)
        if part is None:  # no SDP part: as a body that is not SDP (handle)
            return self._not_sdp(msg, f"{media_type(msg.content_type)} without one")
        outcome = self.handle(replace(msg, body=part.sdp, content_type=SDP_TYPE))
        if outcome.body is not None:
            outcome.body = part.rebuild(outcome.body)
            outcome.content_type = msg.content_type
        return outcome

    def _not_sdp(self, msg: Message, what: str) -> Outcome:
        """415 with Accept (RFC 3261 21.4.13) for an offer or answer in a body of ``what``."""
        outcome = self.refuse(msg, PeerError(
            f"a {msg.method} body must be SDP (or multipart with an SDP part), not {what}", 415))
        outcome.accept = ACCEPT
        return outcome

    def refuse(self, msg: Message, exc: PeerError) -> Outcome:
        """The error answer for ``msg``, refused because of ``exc`` (logged and counted)."""
        log.info("Call-ID %s: %s %s from %s refused: %s", msg.call_id, msg.method,
                 "request" if msg.request else msg.status, msg.side.value, exc.reason)
        return self._error(msg, exc.sip_status, exc.reason)

    def _error(self, msg: Message, status: int, reason: str, retry_after: int | None = None) -> Outcome:
        self.metrics.sip_errors.labels(str(status)).inc()
        self.metrics.rewrite(msg.side.value, "answer" if self._looks_like_answer(msg) else "offer", "error")
        return Outcome(status=status, reason=REASONS.get(status, "Error"),
                       warning=_warning_text(self.agent, reason), retry_after=retry_after)

    @staticmethod
    def _looks_like_answer(msg: Message) -> bool:
        return not msg.request or msg.method in ("ACK", "PRACK")

    @staticmethod
    def _initial(msg: Message) -> bool:
        return msg.request and msg.method == "INVITE" and not msg.to_tag

    @staticmethod
    def needs_bodyless(request: bool, method: str, to_tag: str, status: int) -> bool:
        """Whether a message without a body still changes the record (:meth:`_bookkeep`).

        Only an initial INVITE (it clears a tombstone) and a 2xx to an INVITE (it
        names the callee) do; the SIP layer need not hand any other body-less
        message (an ACK, an 18x, the 200 of an UPDATE) to :meth:`handle`.
        """
        if method != "INVITE":
            return False
        return not to_tag if request else 200 <= status < 300

    def _bookkeep(self, msg: Message) -> None:
        """What a message without SDP to process still does to the record (best effort).

        * a 2xx to the caller's INVITE names the callee (the fork that won), with or
          without a body;
        * an initial INVITE clears a tombstone left by an earlier release of the same
          Call-ID and From tag (a retry after 407).
        """
        try:
            if self._initial(msg):
                self.store.unbury(dialog_id(msg.call_id, msg.from_tag))
            elif self._is_final_ok(msg):
                self.cache.drop(dialog_id(msg.call_id, msg.from_tag))
                record = self.store.find(msg.call_id, msg.from_tag)
                if record is not None and record.callee_tag != msg.to_tag:
                    claim = self.store.claim_id(record.id)
                    if claim is not None:
                        with claim:
                            record = claim.record
                            if record is not None and record.caller_tag == msg.from_tag:
                                record.callee_tag = msg.to_tag
                                claim.commit(record)
        except UnavailableError as exc:
            log.warning("Call-ID %s: %s: %s", msg.call_id, msg.method, exc.reason)

    def refresh(self, call_id: str, tags: tuple[str, ...], method: str = "", now: float | None = None) -> bool:
        """Refresh the record's TTL for an in-dialog request ``method`` (best effort).

        The dialog module resets its timeout on every in-dialog request; the record
        must live as long as the dialog, or the final release finds nothing.  Called
        after the request is relayed, so it adds nothing to its forwarding delay.
        Nothing is sent for an ACK, nor for a dialog this worker refreshed less than
        ``REFRESH_INTERVAL`` ago (module docstring: TTL); else one round trip.  True
        when the record is known to be fresh.
        """
        if method == "ACK":
            return False
        now = time.monotonic() if now is None else now
        key = " ".join((call_id, *sorted(tags)))
        last = self._refreshed.get(key)
        if last is not None and now - last < REFRESH_INTERVAL:
            return True
        try:
            fresh = self.store.touch(call_id, *tags)
        except UnavailableError as exc:
            log.warning("Call-ID %s: refresh failed: %s", call_id, exc.reason)
            return False
        if fresh:
            self._refreshed[key] = now
            self._refreshed.move_to_end(key)
            if len(self._refreshed) > REFRESH_CACHE_SIZE:
                self._refreshed.popitem(last=False)
        return fresh

    @staticmethod
    def _is_final_ok(msg: Message) -> bool:
        return not msg.request and msg.method == "INVITE" and 200 <= msg.status < 300 and bool(msg.to_tag)

    @staticmethod
    def _may_create(msg: Message) -> bool:
        """May this message's SDP create the dialog's record (its first SDP)?

        A request may; a reply only as an 18x/2xx to an INVITE (a late offer).
        """
        return msg.request or (msg.method == "INVITE" and 100 < msg.status < 300)

    @staticmethod
    def _new_record(msg: Message) -> DialogRecord:
        # The dialog's first SDP: its caller is the From of this message.
        caller_side = msg.side if msg.request else other(msg.side)
        return DialogRecord(id=dialog_id(msg.call_id, msg.from_tag), call_id=msg.call_id,
                            caller_tag=msg.from_tag, caller_side=caller_side.value)

    def _handle_sdp(self, msg: Message) -> Outcome:
        initial = self._initial(msg)
        if initial:
            # No worker can hold a new dialog yet (plugin.state: round trips): processed
            # without a claim, saved by one conditional write.
            try:
                outcome = self._render(msg, self._new_record(msg), self._create)
            except _Exists:
                pass  # the same Call-ID and From tag seen before: as any other message
            else:
                return outcome
        elif self._setup_reply(msg):
            unclaimed = self._unclaimed(msg)
            if unclaimed is not None:
                return unclaimed
        # Every non-initial message (replies included) is looked up by both tags: a
        # reply to a request the callee sent carries the callee's tag in From.
        tags = (msg.from_tag,) if initial else (msg.from_tag, msg.to_tag)
        claim = self.store.claim(msg.call_id, tags, create=self._may_create(msg), unbury=initial)
        if claim is None:
            return Outcome()  # a reply with SDP to nothing we know: left alone
        with claim:
            record = claim.record
            if record is None:
                if claim.existed or (not initial and claim.released):
                    # Released (BYE, CANCEL, failure) while this message was on its way:
                    # never re-create the record (nothing would release it again).
                    log.info("Call-ID %s: %s %s after the dialog was released: refused", msg.call_id,
                             msg.method, "request" if msg.request else msg.status)
                    return self._error(msg, 481, "dialog already released")
                record = self._new_record(msg)
            return self._render(msg, record, claim.commit)

    def _create(self, record: DialogRecord) -> None:
        created, existing = self.store.create(record)
        if not created:
            raise _Exists(existing)

    @staticmethod
    def _setup_reply(msg: Message) -> bool:
        """An 18x/2xx to the caller's INVITE: the messages the record cache is for."""
        return not msg.request and msg.method == "INVITE" and 100 < msg.status < 300

    def _keep(self, msg: Message, record: DialogRecord) -> None:
        """Keep the record just saved in the shared cache while its dialog is being set up
        (the initial INVITE, an 18x); a 2xx or any other message ends its use there."""
        if record.raw and (self._initial(msg) or (self._setup_reply(msg) and msg.status < 200)):
            self.cache.put(record.id, record.raw)
        else:
            self.cache.drop(record.id)

    def _unclaimed(self, msg: Message) -> Outcome | None:
        """An INVITE's 18x/2xx handled from the shared cache's record, without a claim: its
        Iq request, then one conditional commit (:meth:`DialogStore.commit_if`).  None when
        it must be handled under a claim instead: no usable cached record, an answer the
        record already has, an error from mediad or the rules (the record may be stale),
        or a dialog changed, released or locked meanwhile (the claim then sees the
        dialog as it is, and applies the message again when it must)."""
        ident = dialog_id(msg.call_id, msg.from_tag)
        read = self.cache.get(ident)
        if not read:
            return None
        try:
            record = DialogRecord.from_json(read)
        except (ValueError, KeyError, TypeError):
            self.cache.drop(ident)
            return None
        if (record.id != ident or record.call_id != msg.call_id or not record.rules.data.get("agw")
                or f"{msg.tx}|{msg.side.value}|{_digest(msg.text)}" in record.rendered
                or self._kind(record, msg) is None):
            return None

        def save(changed: DialogRecord) -> None:
            if self.store.commit_if(changed, read) != 1:
                raise _Stale()

        try:
            return self._render(msg, record, save)
        except (_Stale, PeerError, AgwError):
            self.cache.drop(ident)
            return None

    def _render(self, msg: Message, record: DialogRecord, save) -> Outcome:
        """Plan, ask mediad, finish and ``save(record)``; the outcome for ``msg``."""
        cache_key = f"{msg.tx}|{msg.side.value}|{_digest(msg.text)}"
        cached = record.rendered.get(cache_key)
        kind = self._kind(record, msg)
        if cached is not None and (kind is not Kind.ANSWER or record.applied == cache_key):
            self.metrics.rewrite(msg.side.value, kind.value if kind else "offer", "cached")
            return Outcome(body=cached, dialog=record.id)
        if kind is None:
            return Outcome(dialog=record.id)
        log.debug("Call-ID %s: %s %s from %s: %s, dialog %s, state version %d", msg.call_id,
                  msg.method if msg.request else msg.status, msg.tx, msg.side.value, kind.value, record.id,
                  record.rules.version, extra={"call_id": msg.call_id, "dialog": record.id})
        # A known answer that is not the one mediad last applied (forks answering in
        # turn) is applied again, under a new Iq transaction.  The record was read for
        # this message alone and takes the plan's new state, or is dropped on an error:
        # the rules may work on its state in place.
        plan = sdp_rules.process(
            msg.body, origin=msg.side, kind=kind, state=record.rules, dialog=record.id,
            transaction=f"{cache_key}|{kind.value}|{record.rules.version}", policy=self.policy, owned=True,
        )
        reserving = plan.iq is not None and not record.rules.data.get("agw")
        reply = None
        if plan.iq is not None:
            if reserving and self.pool is not None and not record.mediad:
                record.mediad = self.pool.choose(record.id)
            try:
                reply = self._ask(plan.iq, self._where(record.mediad, record.created))
            except Exception as exc:
                if reserving:  # an Iq timeout may come after mediad did the work
                    if isinstance(exc, UnavailableError) and self.pool is not None and record.mediad:
                        self.pool.failed(record.mediad)
                    self._undo_reserve(record)
                raise
            if reply.error:
                raise self._refusal(reply)  # mediad answered: it did nothing to undo
        try:
            try:
                result = plan.finish(reply)
            except PeerError:
                raise
            except ValueError as exc:  # the rules' own checks of mediad's reply
                raise AgwError(f"mediad's reply cannot be used: {exc}") from None
            record.rules = result.state
            if kind is Kind.OFFER:
                record.offer = {"tx": msg.tx, "cseq": msg.cseq, "side": msg.side.value,
                                "in_reply": not msg.request}
            if not msg.request and msg.to_tag and msg.method == "INVITE" and msg.from_tag == record.caller_tag:
                # The callee: the fork whose 2xx came (any 2xx overrides an 18x's tag).
                if not record.callee_tag or 200 <= msg.status < 300:
                    record.callee_tag = msg.to_tag
            record.remember(cache_key, result.sdp)
            record.applied = cache_key
            event = CallEvent.OFFER if kind is Kind.OFFER else CallEvent.ANSWER
            record.state = self.lifecycle.step(msg.call_id, record.state, event).next
            save(record)
            self._keep(msg, record)
        except _Exists as exc:
            # A new record was not saved: the dialog was there.  mediad holds streams for
            # a dialog id only once, so when that dialog holds them this RESERVE was the
            # same request again, answered from mediad's cache: nothing to undo (in a pool,
            # unless it went to another node than the dialog's).
            if reserving and (exc.record is None or not exc.record.rules.data.get("agw")
                              or exc.record.mediad != record.mediad):
                self._undo_reserve(record)
            raise
        except Exception:
            if reserving:
                # mediad reserved, but the outcome cannot be used or saved: undo it, or
                # the ports stay and a retry is refused.
                self._undo_reserve(record)
            raise
        self.metrics.rewrite(msg.side.value, kind.value, "rewritten" if plan.iq else "passthrough")
        if reserving:
            log.info("Call-ID %s: dialog %s: %d stream(s) reserved on mediad", record.call_id, record.id,
                     len(plan.iq.streams), extra={"call_id": record.call_id, "dialog": record.id, "event": "reserved"})
        return Outcome(body=result.sdp, dialog=record.id)

    @staticmethod
    def _is_answer(record: DialogRecord, msg: Message) -> bool:
        offer = record.offer
        if not offer or offer["side"] == msg.side.value:
            return False
        if msg.request:
            return msg.method in ("ACK", "PRACK") and offer["in_reply"]
        return offer["tx"] == msg.tx and not offer["in_reply"]

    def _kind(self, record: DialogRecord, msg: Message) -> Kind | None:
        if self._is_answer(record, msg):
            return Kind.ANSWER
        if msg.request:
            if msg.method == "ACK":
                return None  # an ACK body that answers nothing: leave it alone
            return Kind.OFFER
        if msg.method == "INVITE" and 100 < msg.status < 300:
            return Kind.OFFER  # late offer in an 18x / 2xx
        return None

    # -- mediad -------------------------------------------------------------------
    def _ask(self, request: IqRequest, node: str = "") -> IqReply:
        """mediad's reply (which may be an error); UnavailableError when it cannot be reached.
        ``node``: the dialog's media node in a pool (``DialogRecord.mediad``)."""
        started = time.perf_counter()
        try:
            if node and self.pool is not None:
                return self.pool.request(request, node)
            return self.iq_client.request(request)
        finally:
            self.metrics.iq_latency.labels(request.command.value).observe(time.perf_counter() - started)

    def _where(self, node: str, created: float) -> str:
        """The node holding a dialog placed on ``node`` and made at ``created`` (its record's):
        ``node``, or the survivor that took its dialogs over (plugin.pool).  A record not saved
        yet (``created`` 0) is being made now."""
        return self.pool.route(node, created or time.time()) if node and self.pool is not None else node

    def _refusal(self, reply: IqReply) -> E2aeError:
        """The error for mediad's error reply (docs/mediad.md): 503 when it is overloaded,
        488 when the peer's SDP asks for what mediad cannot do, else a defect of ours or
        of mediad's (500), never the peer's."""
        code = reply.error_code or 500
        if code == 503:
            return UnavailableError(f"mediad: {reply.error}", self.retry_after)
        if code == 488:
            return PeerError(f"media: {reply.error}", 488)
        return AgwError(f"mediad refused the request (error {code}): {reply.error}")

    def _iq(self, request: IqRequest) -> IqReply:
        reply = self._ask(request)
        if reply.error:
            raise self._refusal(reply)
        return reply

    # -- the end of a call (plugin.lifecycle) -------------------------------------------
    def release(self, call_id: str, tags: tuple[str, ...], event: CallEvent | str, *, wait: bool = False) -> bool:
        """The dialog found by ``tags`` (the caller's first) ends with ``event``: release
        its media and record, queue its BYEs when the table says so.  True when this call
        released it; a release that fails is queued for retry (:meth:`take_outbox`).
        mediad's answer to the RELEASE is not waited for unless ``wait`` (a refusal, or a
        connection lost before it, comes back through :meth:`take_outbox` then)."""
        event = CallEvent(event)
        for tag in tags:
            if tag:
                self.cache.drop(dialog_id(call_id, tag))
        try:
            found, record = self.store.take(call_id, tags)
            if found == BUSY:
                claim = self.store.claim(call_id, tags, create=False)
                if claim is not None:
                    return self._end_claimed(claim, call_id, tags, event, wait)
        except UnavailableError as exc:
            log.warning("Call-ID %s: release (%s) failed, to be retried: %s", call_id, event.value, exc.reason)
            self._retry(PendingRelease(call_id, tuple(tags), event))
            return False
        return self._end(call_id, tags, event, record if found == TAKEN else None, wait)

    def release_record(self, record: DialogRecord, event: CallEvent | str) -> bool:
        """:meth:`release` of the dialog ``record`` names (waiting for the dialog's lock)."""
        return self.release(record.call_id, (record.caller_tag,), event)

    def _end_claimed(self, claim, call_id: str, tags: tuple[str, ...], event: CallEvent, wait: bool) -> bool:
        with claim:
            record = claim.record
            if record is None:
                return self._end(call_id, tags, event, None, wait)
            claim.bury()
        return self._end(call_id, tags, event, record, wait)

    def _end(self, call_id: str, tags: tuple[str, ...], event: CallEvent, record: DialogRecord | None,
             wait: bool) -> bool:
        """Step the lifecycle of a dialog whose record was just taken (None: there was none)
        and do what the table says."""
        state = record.state if record is not None else CallState.ENDED
        try:
            transition = self.lifecycle.step(call_id, state, event)
        except LifecycleError:
            return False
        released = False
        if Action.RELEASE in transition.actions and record is not None:
            self._release_media(record, event, wait)
            self.metrics.releases.labels(event.value).inc()
            log.info("Call-ID %s: dialog released (%s)", call_id, event.value,
                     extra={"call_id": call_id, "dialog": record.id, "event": "released", "reason": event.value})
            released = True
        if Action.END_DIALOG in transition.actions:
            caller, callee = (record.caller_tag, record.callee_tag) if record is not None else ("", "")
            if not callee and len(tags) > 1 and all(tags[:2]):
                caller, callee = tags[0], tags[1]
            if callee:
                self.outbox.append(EndRequest(call_id, caller, callee, event, time.time()))
            else:  # no 2xx nor 18x named the callee: the 2xx to come fails and ends it
                log.info("Call-ID %s: no callee yet: the call ends at its 2xx", call_id)
        return released

    @staticmethod
    def _release_tx(record_id: str, event: CallEvent) -> str:
        # Unique per release: mediad answers a repeated (dialog, transaction) from its
        # cache, and one dialog id can be reserved and released again (an INVITE retried
        # after a 407 has the same Call-ID and From tag).
        return f"release|{event.value}|{record_id[:8]}|{secrets.token_hex(6)}"

    def _release_dialog(self, dialog: str, event: CallEvent, node: str = "") -> int | None:
        """Send RELEASE for ``dialog`` (to ``node`` in a pool): None when mediad released it,
        else its error code (404: it held nothing).  UnavailableError when mediad cannot be reached."""
        reply = self._ask(release_request(dialog, self._release_tx(dialog, event)), node)
        return (reply.error_code or 500) if reply.error else None

    def _undo_reserve(self, record: DialogRecord) -> None:
        """A RESERVE whose outcome cannot be used: release what mediad may hold (retried
        when mediad cannot be reached; the original error is what the caller gets)."""
        try:
            if self._release_dialog(record.id, CallEvent.REFUSED,
                                    self._where(record.mediad, record.created)) in (None, 404):
                return
            log.warning("Call-ID %s: mediad refused the release of a failed reserve", record.call_id)
        except UnavailableError as exc:
            log.warning("Call-ID %s: release of a failed reserve failed, to be retried: %s",
                        record.call_id, exc.reason)
            self._retry(PendingRelease(record.call_id, (record.caller_tag,), CallEvent.REFUSED, dialog=record.id,
                                       mediad=record.mediad, created=record.created or time.time()))

    def _release_media(self, record: DialogRecord, event: CallEvent, wait: bool) -> None:
        if not record.rules.data.get("agw"):
            return
        client = self.iq_client
        if record.mediad and self.pool is not None:
            client = self.pool.client(self._where(record.mediad, record.created))  # the dialog's node
        send = None if wait else getattr(client, "send", None)
        if send is not None:
            # Not waited for: a refusal or a lost answer comes back through take_outbox.
            pending = PendingRelease(record.call_id, (record.caller_tag,), event, dialog=record.id,
                                     mediad=record.mediad, created=record.created or time.time())
            try:
                send(release_request(record.id, self._release_tx(record.id, event)), pending)
            except UnavailableError as exc:
                log.warning("Call-ID %s: mediad release (%s) failed, to be retried: %s", record.call_id,
                            event.value, exc.reason)
                self._retry(pending)
            return
        try:
            if self._release_dialog(record.id, event, self._where(record.mediad, record.created)) not in (None, 404):
                log.warning("Call-ID %s: mediad refused the release (%s)", record.call_id, event.value)
        except UnavailableError as exc:
            log.warning("Call-ID %s: mediad release (%s) failed, to be retried: %s", record.call_id,
                        event.value, exc.reason)
            self._retry(PendingRelease(record.call_id, (record.caller_tag,), event, dialog=record.id,
                                       mediad=record.mediad, created=record.created or time.time()))

    def _retry(self, pending: PendingRelease) -> None:
        if not pending.next_at:
            pending = replace(pending, next_at=time.time() + retry_delay(1))
        self.outbox.append(pending)

    def retry(self, pending: PendingRelease) -> tuple[PendingRelease | None, bool]:
        """Try a queued release again: (what is left of it, None when it is done; whether
        this try released something: False when another path had done it already).
        UnavailableError when mediad still cannot be reached."""
        if pending.dialog:
            code = self._release_dialog(pending.dialog, pending.event, self._where(pending.mediad, pending.created))
            if code not in (None, 404):
                log.warning("Call-ID %s: mediad refused the release of dialog %s (error %s)", pending.call_id,
                            pending.dialog, code)
            return None, code is None
        mark = len(self.outbox)
        released = self.release(pending.call_id, pending.tags, pending.event, wait=True)
        left = [item for item in self.outbox[mark:] if isinstance(item, PendingRelease)]
        self.outbox[mark:] = [item for item in self.outbox[mark:] if not isinstance(item, PendingRelease)]
        if not left:
            return None, released
        return replace(left[0], attempts=pending.attempts, next_at=pending.next_at), released

    def on_event(self, event: dict) -> bool:
        """An event from mediad: a DTLS failure ends the call (policy "bye"), and so does a
        dialog whose dead node's media could not be taken over; True when this released it."""
        if event.get("event") == EVENT_MEDIA_LOST:
            return self._media_lost(event)
        if event.get("event") != EVENT_DTLS_FAILED:
            return False
        reason = str(event.get("reason", "unknown"))[:40]
        self.metrics.dtls_failures.labels(reason).inc()
        try:
            record = self.store.get(str(event.get("dialog", "")))
        except UnavailableError as exc:
            log.warning("DTLS failure on dialog %s, state unreadable: %s", event.get("dialog"), exc.reason)
            return False
        if record is None:
            log.warning("DTLS failure (%s) on unknown dialog %s", reason, event.get("dialog"))
            return False
        if self.dtls_failure == "keep":
            log.warning("Call-ID %s: DTLS failed on stream %s (%s): call kept ([policy] dtls_failure)",
                        record.call_id, event.get("stream_id"), reason)
            return False
        log.warning("Call-ID %s: DTLS failed on stream %s (%s): ending the call",
                    record.call_id, event.get("stream_id"), reason,
                    extra={"call_id": record.call_id, "dialog": record.id, "stream": event.get("stream_id"),
                           "leg": "access", "event": "dtls_failed", "reason": reason})
        return self.release_record(record, CallEvent.DTLS_FAILED)

    def _media_lost(self, event: dict) -> bool:
        reason = str(event.get("reason", "unknown"))[:40]
        try:
            record = self.store.get(str(event.get("dialog", "")))
        except UnavailableError as exc:
            log.warning("media of dialog %s lost (%s), state unreadable: %s", event.get("dialog"), reason,
                        exc.reason)
            return False
        if record is None:
            return False
        log.warning("Call-ID %s: its media node died and its media could not be taken over (%s): ending the call",
                    record.call_id, reason, extra={"call_id": record.call_id, "dialog": record.id,
                                                   "event": EVENT_MEDIA_LOST, "reason": reason})
        return self.release_record(record, CallEvent.MEDIA_LOST)

    def answer_failed(self, call_id: str, tags: tuple[str, ...]) -> bool:
        """A 2xx (or an ACK) whose answer could not be converted went on unchanged: the
        call has no media.  It is released now and its BYEs queued (``tags``: the
        message's From and To tags); False when there was nothing to release."""
        return self.release(call_id, tags, CallEvent.ANSWER_FAILED)


class RecordCache(Protocol):
    """Records of dialogs being set up, by dialog id, as last saved to Redis (their JSON),
    shared by the workers; Redis stays the truth (:meth:`DialogStore.commit_if` checks a
    record read here against it).  :data:`NO_CACHE` keeps nothing; :class:`DictCache` keeps
    them in the process, :mod:`plugin.kemi` in Kamailio's shared memory.  A protocol, not a
    base class: the plugin's own cache is a class of an interpreted module, and classes
    compiled with mypyc cannot be subclassed there."""

    def get(self, ident: str) -> str | None: ...

    def put(self, ident: str, raw: str) -> None: ...

    def drop(self, ident: str) -> None: ...


class _NoCache:
    """A :class:`RecordCache` that keeps nothing."""

    def get(self, ident: str) -> str | None:
        return None

    def put(self, ident: str, raw: str) -> None:
        pass

    def drop(self, ident: str) -> None:
        pass


NO_CACHE: RecordCache = _NoCache()


class DictCache:
    """A :class:`RecordCache` in one process (tests, one worker), at most ``size`` records."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.records: OrderedDict[str, str] = OrderedDict()

    def get(self, ident: str) -> str | None:
        return self.records.get(ident)

    def put(self, ident: str, raw: str) -> None:
        self.records[ident] = raw
        self.records.move_to_end(ident)
        if len(self.records) > self.size:
            self.records.popitem(last=False)

    def drop(self, ident: str) -> None:
        self.records.pop(ident, None)


class _Stale(Exception):
    """A message handled without a claim found its dialog changed, released or locked."""


class _Exists(Exception):
    """A new dialog's record was not saved: the dialog has one (``record``) or a lock holder."""

    def __init__(self, record: DialogRecord | None) -> None:
        super().__init__("dialog exists")
        self.record = record


class LazyIqClient:
    """mediad's IqClient, created on first use (the control secret may come from Redis)."""

    def __init__(self, config) -> None:
        self.config = config
        self._client: IqClient | None = None
        self._failed: list = []

    def request(self, iq: IqRequest) -> IqReply:
        reply = self._client_now().request(iq)
        if reply.error_code == 401:
            # mediad no longer knows our secret (e.g. it generated a new one after Redis
            # lost the old): read it again, once, rather than failing every call until
            # Kamailio restarts.
            log.warning("mediad refused the control secret; reading it again")
            self.close()
            reply = self._client_now().request(iq)
        return reply

    def send(self, iq: IqRequest, context: object) -> None:
        """:meth:`IqClient.send` (the secret read again once when mediad refuses it)."""
        try:
            self._client_now().send(iq, context)
        except SecretRefused:
            log.warning("mediad refused the control secret; reading it again")
            self.close()
            self._client_now().send(iq, context)

    def take_failed(self) -> list:
        failed, self._failed = self._failed, []
        return failed + (self._client.take_failed() if self._client is not None else [])

    def _client_now(self) -> IqClient:
        if self._client is None:
            self._client = IqClient.from_config(self.config)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._failed += self._client.take_failed()  # sent on the connection just closed
            self._client = None


__all__ = ["DictCache", "Edge", "LazyIqClient", "Message", "NO_CACHE", "Outcome", "RecordCache", "other"]
