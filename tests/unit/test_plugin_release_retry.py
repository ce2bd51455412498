"""Writes that Redis runs after the client gave up do nothing.  A real redis-server of this
module's own, stopped (SIGSTOP) to stall it."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from sdp_rules.iq import Command

from plugin.state import DialogStore
from tests.conftest import RedisServer
from tests.unit.test_plugin_edge import FIXTURES, WIC_OFFER_FILE, Agw, make_edge, msg

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
