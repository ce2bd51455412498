"""The call's lifecycle at the edge: one state table, and what the plugin keeps to end
calls and to finish releases after the message that started them is gone.

Theory of operation
-------------------
A call is one dialog.  The plugin sees it go through these states
(:class:`CallState`):

``IDLE``
    no record: nothing seen yet, or the dialog's first message carries no SDP.
``OFFERED``
    an offer is out (RFC 3264): the record exists and mediad holds its media.
``ANSWERED``
    the offer in progress was answered; a re-offer goes back to ``OFFERED``.
``ENDING``
    the edge ends the call itself, because its final answer could not be
    converted or DTLS failed: media and record are released at once, and a BYE
    to each side is queued (:class:`EndRequest`) for the one process that
    sends them (Kamailio's ``rtimer`` process) once the dialog module has
    confirmed the dialog.
``ENDED``
    released: nothing of the call left in mediad or Redis (a tombstone for
    32 s, :mod:`plugin.state`).

What moves a call is an :class:`CallEvent`; :data:`TABLE` maps each
``(state, event)`` to the actions to take and the next state, and whatever is
not in it is a :class:`LifecycleError` (logged and counted, nothing done).
:class:`Lifecycle` is the one place that looks the table up, logs and counts
every transition.  Where each state is kept: ``OFFERED`` / ``ANSWERED`` in
the Redis record (:attr:`plugin.state.DialogRecord.state`); ``ENDING`` in the
end queue entry, once the record is gone; a dialog without a record is
``ENDED`` for any event but an offer (a late BYE, a retransmitted 2xx).

Ending a call (RFC 3261 section 15): a proxy cannot refuse a 2xx, so a call
whose answer failed is ended with a BYE to each side, sent by Kamailio's
dialog module (``dlg_get`` + ``dlg_bye("all")``) from the ``rtimer`` process,
never from a reply route.  The BYE toward the caller stands for the callee's,
and a callee must not send BYE before the ACK of its 2xx (section 15), so a
queued call waits for the dialog module's ``CONFIRMED`` state (its ACK seen)
and at most :data:`ACK_WAIT_S` (64*T1, after which the 2xx's server
transaction has timed out); a dialog the module no longer has (ended by its
own BYE, or failed) is ``GONE``.  :func:`end_step` is that decision.

Why a marker around the BYEs: Kamailio 5.6's ``dlg_bye_all`` sends the BYE to
the caller, then the one to the callee, and refuses the second when the first
one's reply has already deleted the dialog ("terminating non-confirmed dialogs
not supported"; on a dialog timeout the module then drops one reference too
many: "invalid unref'ing dlg", heap corruption, SIGABRT).  The sender marks
the Call-ID in shared memory while it sends both BYEs, and the core reply route
holds a BYE's reply back (at most :data:`BYE_HOLD_S`) while the mark is there.

Releases that fail (Redis or mediad unreachable or timing out) are not
dropped: a :class:`PendingRelease` goes to a queue in Kamailio's shared memory
that the ``rtimer`` process retries with the delays of :func:`retry_delay`,
up to :data:`RELEASE_ATTEMPTS` times (then counted as abandoned and logged).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from enum import Enum

log = logging.getLogger("e2ae.plugin.lifecycle")


class CallState(str, Enum):
    IDLE = "idle"
    OFFERED = "offered"
    ANSWERED = "answered"
    ENDING = "ending"
    ENDED = "ended"


class CallEvent(str, Enum):
    OFFER = "offer"  # an offer converted and relayed
    ANSWER = "answer"  # an answer converted and relayed
    ANSWER_FAILED = "answer_failed"  # a final answer that could not be converted
    FAILURE = "failure"  # a final error to the initial INVITE (a CANCEL's 487 included)
    BYE = "bye"  # a BYE from either side
    TIMEOUT = "timeout"  # the dialog module's timeout
    OPERATOR = "operator"  # ended by the operator (e2ae-ctl end: the dialog module's BYEs, over RPC)
    DTLS_FAILED = "dtls_failed"  # mediad: the DTLS handshake of a stream failed
    MEDIA_LOST = "media_lost"  # mediad: the dialog's node died and its media could not be taken over
    REFUSED = "refused"  # a message the edge applied could not go on (its body not set, relay failed)
    HUNG_UP = "hung_up"  # the queued BYEs were sent
    GONE = "gone"  # the dialog ended before its queued BYEs could be sent


class Action(str, Enum):
    RELEASE = "release"  # release the media in mediad and the record in Redis
    END_DIALOG = "end_dialog"  # queue a BYE to each side


_LIVE = (CallState.OFFERED, CallState.ANSWERED)
_END_NOW = (Action.RELEASE, Action.END_DIALOG)
_RELEASE_ONLY = (Action.RELEASE,)


def _table() -> dict[tuple[CallState, CallEvent], tuple[tuple[Action, ...], CallState]]:
    t: dict[tuple[CallState, CallEvent], tuple[tuple[Action, ...], CallState]] = {
        (CallState.IDLE, CallEvent.OFFER): ((), CallState.OFFERED),
        (CallState.OFFERED, CallEvent.OFFER): ((), CallState.OFFERED),  # replaced (a fork, glare)
        (CallState.OFFERED, CallEvent.ANSWER): ((), CallState.ANSWERED),
        (CallState.ANSWERED, CallEvent.OFFER): ((), CallState.OFFERED),
        (CallState.ANSWERED, CallEvent.ANSWER): ((), CallState.ANSWERED),  # another fork's answer
        (CallState.ENDING, CallEvent.HUNG_UP): ((), CallState.ENDED),
        (CallState.ENDING, CallEvent.GONE): ((), CallState.ENDED),
        # Late: the call was released already (a BYE crossing ours, a retransmission).
        (CallState.ENDED, CallEvent.FAILURE): ((), CallState.ENDED),
        (CallState.ENDED, CallEvent.BYE): ((), CallState.ENDED),
        (CallState.ENDED, CallEvent.TIMEOUT): ((), CallState.ENDED),
        (CallState.ENDED, CallEvent.OPERATOR): ((), CallState.ENDED),
        (CallState.ENDED, CallEvent.DTLS_FAILED): ((), CallState.ENDED),
        (CallState.ENDED, CallEvent.MEDIA_LOST): ((), CallState.ENDED),
        (CallState.ENDED, CallEvent.REFUSED): ((), CallState.ENDED),
        # A 2xx whose answer cannot be applied to a released call (DTLS failed before
        # the 2xx, a record lost): the call has no media, so it is ended all the same.
        # A retransmission queues the same request again, which finds nothing to end.
        (CallState.ENDED, CallEvent.ANSWER_FAILED): ((Action.END_DIALOG,), CallState.ENDED),
    }
    for state in _LIVE:
        # The call has no usable media any more: released now, its BYEs queued (a call
        # not confirmed yet has no callee to end: its failure ends it, or its 2xx fails).
        for event in (CallEvent.ANSWER_FAILED, CallEvent.DTLS_FAILED, CallEvent.MEDIA_LOST, CallEvent.REFUSED):
            t[(state, event)] = (_END_NOW, CallState.ENDING)
        for event in (CallEvent.FAILURE, CallEvent.BYE, CallEvent.TIMEOUT, CallEvent.OPERATOR):
            t[(state, event)] = ((Action.RELEASE,), CallState.ENDED)
    return t


TABLE = _table()


class LifecycleError(Exception):
    """An event the table has no transition for in the call's state: a defect of ours
    (or a message the edge did not expect); nothing is done."""

    def __init__(self, state: CallState, event: CallEvent) -> None:
        super().__init__(f"no transition for {event.value} in state {state.value}")
        self.state = state
        self.event = event


@dataclass(frozen=True)
class Transition:
    state: CallState
    event: CallEvent
    actions: tuple[Action, ...]
    next: CallState


class Lifecycle:
    """Looks transitions up in :data:`TABLE`; logs and counts each one (``metrics``:
    a :class:`plugin.metrics.Metrics`)."""

    def __init__(self, metrics) -> None:
        self.metrics = metrics

    def step(self, call_id: str, state: CallState, event: CallEvent) -> Transition:
        """The transition for ``event`` in ``state``; raises :class:`LifecycleError`
        (logged and counted) when there is none."""
        try:
            actions, nxt = TABLE[(state, event)]
        except KeyError:
            self.metrics.lifecycle_errors.labels(state.value, event.value).inc()
            log.error("Call-ID %s: %s in state %s: no such transition", call_id, event.value, state.value)
            raise LifecycleError(state, event) from None
        self.metrics.transitions.labels(state.value, event.value, nxt.value).inc()
        # A call's end is logged at INFO, but a plain release: its own line (plugin.edge) says
        # it with the dialog's context, and one line per call event is enough.
        ending = actions != _RELEASE_ONLY and (
            bool(actions) or (nxt is not state and nxt in (CallState.ENDING, CallState.ENDED)))
        if log.isEnabledFor(logging.INFO if ending else logging.DEBUG):
            log.log(logging.INFO if ending else logging.DEBUG, "Call-ID %s: %s -> %s (%s)", call_id, state.value,
                    nxt.value, event.value)
        return Transition(state, event, actions, nxt)


# ---------------------------------------------------------------------------
# Ending a call: the queue entry and the decision taken at each tick
# ---------------------------------------------------------------------------

# The dialog module's states ($dlg(state), Kamailio 5.6 dlg_hash.h).
DLG_UNCONFIRMED, DLG_EARLY, DLG_CONFIRMED_NA, DLG_CONFIRMED, DLG_DELETED = 1, 2, 3, 4, 5
# How long a queued call waits for the ACK of its 2xx (64*T1, RFC 3261 13.3.1.4); then
# the BYEs go anyway (the 2xx's server transaction has timed out, section 15).
ACK_WAIT_S = 32.0
# How long a queued call waits for a dialog that is not confirmed at all yet (a DTLS
# failure on early media: the 2xx may come up to the INVITE's fr_inv_timer later).
EARLY_WAIT_S = 90.0
# How long the core reply route holds back the reply to a BYE while the BYEs of its
# dialog are being sent (the sender is never blocked: this only bounds a defect).
BYE_HOLD_S = 0.2
# The htable (deploy/kamailio.cfg) where e2ae-ctl marks, over RPC, a Call-ID it is about
# to end with the dialog module's dlg.terminate_dlg: the dialog's end event finds the
# mark and releases the call as OPERATOR (not as a BYE or a timeout).
OPERATOR_TABLE = "e2ae_operator"
# The htable where whoever sends a dialog's two BYEs marks its Call-ID meanwhile (the
# rtimer process around dlg_bye("all"), e2ae-ctl around dlg.terminate_dlg): the reply
# route holds a BYE's reply while the mark is there (see the module docstring).
BYE_TABLE = "e2ae_bye"


class EndStep(str, Enum):
    BYE = "bye"  # send the BYEs now
    WAIT = "wait"  # look again at the next tick
    GONE = "gone"  # the dialog module has no such dialog any more: nothing to end


def end_step(dialog_state: int | None, waited: float) -> EndStep:
    """What to do with a queued call whose dialog is in ``dialog_state`` (None: the
    dialog module has none) after ``waited`` seconds in the queue."""
    if dialog_state is None or dialog_state == DLG_DELETED:
        return EndStep.GONE
    if dialog_state == DLG_CONFIRMED:
        return EndStep.BYE
    if dialog_state == DLG_CONFIRMED_NA:
        return EndStep.BYE if waited >= ACK_WAIT_S else EndStep.WAIT
    return EndStep.GONE if waited >= EARLY_WAIT_S else EndStep.WAIT


@dataclass(frozen=True)
class EndRequest:
    """A call to end with a BYE to each side: the dialog as the dialog module finds it
    (``dlg_get`` takes the Call-ID and both tags, in either order)."""

    call_id: str
    from_tag: str
    to_tag: str
    event: CallEvent
    queued: float  # wall clock (the queue is shared by processes)

    @property
    def key(self) -> str:
        return f"{self.call_id}\t{self.from_tag}"

    def to_value(self) -> str:
        return json.dumps([self.call_id, self.from_tag, self.to_tag, self.event.value, self.queued])

    @classmethod
    def from_value(cls, value: str) -> "EndRequest":
        call_id, from_tag, to_tag, event, queued = json.loads(value)
        return cls(str(call_id), str(from_tag), str(to_tag), CallEvent(event), float(queued))


# ---------------------------------------------------------------------------
# Releases to retry
# ---------------------------------------------------------------------------

RELEASE_ATTEMPTS = 16
_RETRY_DELAYS = (1, 2, 4, 8, 15, 30, 60)


def retry_delay(attempts: int) -> float:
    """Seconds before the next try of a release that failed ``attempts`` times (1, 2,
    4, ... 60 s; 16 tries span about 11 minutes)."""
    return float(_RETRY_DELAYS[min(max(attempts, 1), len(_RETRY_DELAYS)) - 1])


@dataclass(frozen=True)
class PendingRelease:
    """A release still to do.  ``dialog`` set: the record is gone already and only
    mediad's RELEASE of that dialog id is left; else the whole release of the dialog
    found by ``call_id`` and ``tags`` (Redis could not be reached)."""

    call_id: str
    tags: tuple[str, ...]
    event: CallEvent
    dialog: str = ""
    attempts: int = 0
    next_at: float = 0.0
    mediad: str = ""  # the dialog's media node in a pool ("id@host:port"); "": [mediad] control
    created: float = 0.0  # when the dialog's record was made (a survivor of its node may hold it: plugin.pool)

    @property
    def key(self) -> str:
        return self.dialog or "\t".join((self.call_id, *self.tags))

    def failed_again(self, now: float) -> "PendingRelease | None":
        """This release after one more failed try; None when it is given up."""
        attempts = self.attempts + 1
        if attempts >= RELEASE_ATTEMPTS:
            return None
        return PendingRelease(self.call_id, self.tags, self.event, self.dialog, attempts,
                              now + retry_delay(attempts), self.mediad, self.created)

    def to_value(self) -> str:
        doc = asdict(self)
        doc["event"] = self.event.value
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_value(cls, value: str) -> "PendingRelease":
        doc = json.loads(value)
        return cls(str(doc["call_id"]), tuple(str(t) for t in doc["tags"]), CallEvent(doc["event"]),
                   str(doc.get("dialog", "")), int(doc.get("attempts", 0)), float(doc.get("next_at", 0.0)),
                   str(doc.get("mediad", "")), float(doc.get("created", 0.0)))


__all__ = ["ACK_WAIT_S", "BYE_HOLD_S", "EARLY_WAIT_S", "RELEASE_ATTEMPTS", "TABLE", "Action", "CallEvent",
           "CallState", "EndRequest", "EndStep", "Lifecycle", "LifecycleError", "PendingRelease", "Transition",
           "end_step", "retry_delay"]
