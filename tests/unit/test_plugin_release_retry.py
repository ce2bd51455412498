"""Releases that fail are queued and retried; writes that Redis runs after the client gave
up do nothing.  A real redis-server of this module's own, stopped (SIGSTOP) to stall it."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from sdp_rules.errors import UnavailableError
from iq import Command, Side

from plugin.lifecycle import CallEvent, CallState, EndRequest, PendingRelease
from plugin.state import DialogStore, dialog_id, dialog_key
from tests.conftest import RedisServer
from tests.unit.test_plugin_edge import CORE_ANSWER, FIXTURES, WIC_OFFER_FILE, Agw, make_edge, msg

OFFER = (FIXTURES / WIC_OFFER_FILE).read_text()


@pytest.fixture(scope="module")
def own_redis():
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def store(own_redis):
    own_redis.client().flushdb()
    s = DialogStore(own_redis.url, ttl=60, timeout=0.3)
    yield s
    s.close()


class stalled:
    """Redis stopped (SIGSTOP) for ``seconds``; commands sent meanwhile run when it resumes."""

    def __init__(self, server: RedisServer, seconds: float) -> None:
        self.server, self.seconds = server, seconds

    def __enter__(self):
        os.kill(self.server.proc.pid, signal.SIGSTOP)
        self.timer = threading.Timer(self.seconds, os.kill, (self.server.proc.pid, signal.SIGCONT))
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.join()
        time.sleep(0.2)  # what Redis received meanwhile has run


def keys(server):
    return sorted(k.decode() for k in server.client().keys("e2ae:alg:dialog:*"))


def test_an_invite_answered_503_during_a_stall_leaves_nothing(own_redis, store, metrics_registry):
    """The record's create reaches Redis, the client gives up (503) and undoes mediad's
    reservation; Redis runs the create when it resumes: past its deadline, it writes nothing."""
    agw = Agw()
    edge = make_edge(store, metrics_registry, agw)
    store.load_scripts()
    with stalled(own_redis, 1.0):
        out = edge.handle(msg(OFFER))
    assert out.status == 503 and out.retry_after
    assert [r.command for r in agw.requests] == [Command.RESERVE, Command.RELEASE]
    assert keys(own_redis) == []


def test_a_bye_during_a_stall_is_queued_and_its_retry_releases(own_redis, store, metrics_registry):
    agw = Agw()
    edge = make_edge(store, metrics_registry, agw)
    edge.handle(msg(OFFER))
    edge.handle(msg(CORE_ANSWER, request=False, side=Side.CORE, to_tag="t1", status=200))
    started = time.time()
    with stalled(own_redis, 1.0):
        assert edge.release("call-1", ("ftag", "t1"), "bye") is False
    # The take ran late: it did nothing, and the record is still there for the retry.
    assert keys(own_redis) == [dialog_key(dialog_id("call-1", "ftag"))]
    (pending,) = edge.take_outbox()
    assert isinstance(pending, PendingRelease) and pending.event is CallEvent.BYE and not pending.dialog
    assert pending.next_at >= started + 1  # the first retry after a second
    assert edge.retry(pending) == (None, True)
    assert keys(own_redis) == [] and agw.requests[-1].command is Command.RELEASE
    assert edge.retry(pending) == (None, False)  # nothing left to release
    assert metrics_registry.get_sample_value("e2ae_plugin_releases_total", {"reason": "bye"}) == 1


def test_a_release_mediad_does_not_answer_is_retried_by_dialog_id(store, metrics_registry):
    class Flaky(Agw):
        down = True

        def request(self, iq):
            if iq.command is Command.RELEASE and self.down:
                self.requests.append(iq)
                raise UnavailableError("mediad did not answer within 0.500s")
            return super().request(iq)

    agw = Flaky()
    edge = make_edge(store, metrics_registry, agw)
    out = edge.handle(msg(OFFER))
    assert edge.release("call-1", ("ftag",), "failure") is True
    (pending,) = edge.take_outbox()
    assert pending.dialog == out.dialog and pending.event is CallEvent.FAILURE
    with pytest.raises(UnavailableError):
        edge.retry(pending)
    agw.down = False
    assert edge.retry(pending) == (None, True)
    assert [r.command for r in agw.requests].count(Command.RELEASE) == 3


def test_a_failed_answer_releases_and_queues_the_byes(store, metrics_registry):
    edge = make_edge(store, metrics_registry)
    edge.handle(msg(OFFER))
    record = store.find("call-1", "ftag")
    assert record.state is CallState.OFFERED
    assert edge.answer_failed("call-1", ("ftag", "t1")) is True
    (end,) = edge.take_outbox()
    assert isinstance(end, EndRequest) and (end.call_id, end.from_tag, end.to_tag) == ("call-1", "ftag", "t1")
    assert metrics_registry.get_sample_value("e2ae_plugin_releases_total", {"reason": "answer_failed"}) == 1
    # Its retransmission: nothing left to release, the same BYEs queued again (same key).
    assert edge.answer_failed("call-1", ("ftag", "t1")) is False
    assert [item.key for item in edge.take_outbox()] == [end.key]
