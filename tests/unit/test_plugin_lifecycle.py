"""The call lifecycle's table and queues (plugin.lifecycle), pure."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from plugin.lifecycle import (ACK_WAIT_S, EARLY_WAIT_S, RELEASE_ATTEMPTS, TABLE, Action, CallEvent, CallState,
                              EndRequest, EndStep, Lifecycle, LifecycleError, PendingRelease, end_step, retry_delay)
from plugin.metrics import Metrics

LIVE = (CallState.OFFERED, CallState.ANSWERED)


def lifecycle():
    metrics = Metrics(CollectorRegistry())
    return Lifecycle(metrics), metrics


def test_offer_and_answer_move_a_call_between_offered_and_answered():
    lc, metrics = lifecycle()
    state = CallState.IDLE
    for event, expected in ((CallEvent.OFFER, CallState.OFFERED), (CallEvent.ANSWER, CallState.ANSWERED),
                            (CallEvent.OFFER, CallState.OFFERED), (CallEvent.ANSWER, CallState.ANSWERED),
                            (CallEvent.ANSWER, CallState.ANSWERED)):
        step = lc.step("c", state, event)
        assert step.actions == () and step.next is expected
        state = step.next
    assert metrics.transitions.labels("offered", "answer", "answered")._value.get() == 2


@pytest.mark.parametrize("state", LIVE)
@pytest.mark.parametrize("event, actions, nxt", [
    (CallEvent.BYE, (Action.RELEASE,), CallState.ENDED),
    (CallEvent.FAILURE, (Action.RELEASE,), CallState.ENDED),
    (CallEvent.TIMEOUT, (Action.RELEASE,), CallState.ENDED),
    (CallEvent.OPERATOR, (Action.RELEASE,), CallState.ENDED),
    (CallEvent.ANSWER_FAILED, (Action.RELEASE, Action.END_DIALOG), CallState.ENDING),
    (CallEvent.DTLS_FAILED, (Action.RELEASE, Action.END_DIALOG), CallState.ENDING),
    (CallEvent.REFUSED, (Action.RELEASE, Action.END_DIALOG), CallState.ENDING),
])
def test_every_end_of_a_live_call_releases_it(state, event, actions, nxt):
    step = lifecycle()[0].step("c", state, event)
    assert (step.actions, step.next) == (actions, nxt)


def test_an_ending_call_ends_when_its_byes_are_sent_or_its_dialog_is_gone():
    lc, _ = lifecycle()
    assert lc.step("c", CallState.ENDING, CallEvent.HUNG_UP).next is CallState.ENDED
    assert lc.step("c", CallState.ENDING, CallEvent.GONE).next is CallState.ENDED


@pytest.mark.parametrize("event", [CallEvent.BYE, CallEvent.FAILURE, CallEvent.TIMEOUT, CallEvent.OPERATOR,
                                   CallEvent.DTLS_FAILED, CallEvent.REFUSED])
def test_late_events_on_a_released_call_do_nothing(event):
    step = lifecycle()[0].step("c", CallState.ENDED, event)
    assert step.actions == () and step.next is CallState.ENDED


def test_a_failed_answer_on_a_released_call_still_ends_it():
    """DTLS failed before the 2xx, or the record is lost: the 2xx's answer cannot be
    applied, the call has no media: its BYEs are queued all the same."""
    step = lifecycle()[0].step("c", CallState.ENDED, CallEvent.ANSWER_FAILED)
    assert step.actions == (Action.END_DIALOG,) and step.next is CallState.ENDED


def test_anything_not_in_the_table_is_an_error_logged_and_counted(caplog):
    lc, metrics = lifecycle()
    missing = [(s, e) for s, e in itertools.product(CallState, CallEvent) if (s, e) not in TABLE]
    assert (CallState.IDLE, CallEvent.BYE) in missing and (CallState.ENDING, CallEvent.OFFER) in missing
    for state, event in missing:
        with pytest.raises(LifecycleError):
            lc.step("call-x", state, event)
    assert metrics.lifecycle_errors.labels("idle", "bye")._value.get() == 1
    assert "Call-ID call-x: bye in state idle: no such transition" in caplog.text


def test_only_the_end_of_a_call_releases_or_ends():
    for (state, event), (actions, nxt) in TABLE.items():
        if actions:
            assert event not in (CallEvent.OFFER, CallEvent.ANSWER, CallEvent.HUNG_UP, CallEvent.GONE)
        if nxt is CallState.ENDING:
            assert Action.RELEASE in actions and Action.END_DIALOG in actions


@pytest.mark.parametrize("state, waited, step", [
    (None, 0, EndStep.GONE),
    (5, 0, EndStep.GONE),  # deleted
    (4, 0, EndStep.BYE),  # confirmed: its ACK came
    (3, 0, EndStep.WAIT),  # confirmed, ACK pending
    (3, ACK_WAIT_S - 0.1, EndStep.WAIT),
    (3, ACK_WAIT_S, EndStep.BYE),  # the 2xx's server transaction has timed out
    (2, ACK_WAIT_S * 2, EndStep.WAIT),  # early: its 2xx may still come
    (1, EARLY_WAIT_S, EndStep.GONE),
])
def test_a_queued_call_gets_its_byes_once_its_dialog_is_confirmed(state, waited, step):
    assert end_step(state, waited) is step


@given(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1), st.sampled_from(list(CallEvent)),
       st.floats(allow_nan=False, allow_infinity=False))
def test_queue_entries_round_trip(call_id, a, b, event, when):
    request = EndRequest(call_id, a, b, event, when)
    assert EndRequest.from_value(request.to_value()) == request
    pending = PendingRelease(call_id, (a, b), event, dialog=b, attempts=3, next_at=when)
    assert PendingRelease.from_value(pending.to_value()) == pending


def test_a_release_is_retried_with_growing_delays_then_given_up():
    pending = PendingRelease("c", ("t",), CallEvent.BYE)
    delays = []
    now = 0.0
    while (again := pending.failed_again(now)) is not None:
        delays.append(again.next_at - now)
        pending = again
    assert len(delays) == RELEASE_ATTEMPTS - 1
    assert delays[:4] == [1, 2, 4, 8] and max(delays) == 60 and delays == sorted(delays)
    assert 600 <= sum(delays) <= 900
    assert retry_delay(0) == 1


def test_a_plain_release_leaves_its_info_line_to_the_release_other_ends_are_logged(caplog):
    """A call released by a BYE is one INFO line (the edge's "dialog released", with the
    dialog's context), not two; an end that also queues BYEs, or ends a call being ended,
    is logged here at INFO; every transition is at DEBUG."""
    import logging

    lc, _ = lifecycle()
    caplog.set_level(logging.INFO, logger="e2ae.plugin.lifecycle")
    lc.step("c-bye", CallState.ANSWERED, CallEvent.BYE)
    lc.step("c-offer", CallState.IDLE, CallEvent.OFFER)
    lc.step("c-dtls", CallState.ANSWERED, CallEvent.DTLS_FAILED)
    lc.step("c-hung", CallState.ENDING, CallEvent.HUNG_UP)
    assert [r.getMessage() for r in caplog.records] == ["Call-ID c-dtls: answered -> ending (dtls_failed)",
                                                         "Call-ID c-hung: ending -> ended (hung_up)"]
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="e2ae.plugin.lifecycle")
    lc.step("c-bye", CallState.ANSWERED, CallEvent.BYE)
    assert [r.getMessage() for r in caplog.records] == ["Call-ID c-bye: answered -> ended (bye)"]
