"""mediad in a pool: its registration, and a restart that reloads its own dialogs only.

Two real mediads on two loopback "hosts" sharing the session's Redis.
"""

from __future__ import annotations

import json
import time

import pytest

from mediad.pool import NODES_KEY, node_key
from mediad.state import dialog_key
from iq import Command
from tests.integration.test_mediad_control import srtp_stream

pytestmark = pytest.mark.integration


def node_options(name: str, n: int) -> dict[str, str]:
    return {"node_id": name, "control_host": f"127.0.0.{n}", "access_address": f"127.0.0.{n}",
            "core_address": f"127.0.1.{n}", "heartbeat": "0.5", "weight": "3", "capacity": "40"}


def listed(node) -> list[str]:
    return list((node.client().request(node.iq(Command.LIST, "list")).data or {}).get("dialogs", []))


def test_a_restarted_node_reloads_its_own_dialogs_only(mediad_factory, redis_server):
    redis = redis_server.client()
    try:
        x = mediad_factory(**node_options("x", 11))
        assert x.client().request(x.iq(Command.RESERVE, "dx", [srtp_stream(1)])).error is None
        assert x.written()
        assert json.loads(redis.get(dialog_key("dx")))["node"] == "x"
        deadline = time.monotonic() + 2
        while json.loads(redis.get(node_key("x")) or "{}").get("load") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert json.loads(redis.get(node_key("x"))) == {
            "id": "x", "control": f"127.0.0.11:{x.control_port}", "weight": 3, "capacity": 40, "load": 1,
            "state": "active"}
        assert 0 < redis.pttl(node_key("x")) <= 1500
        x.stop()  # its dialogs stay in Redis for its next start; its record goes now
        assert redis.get(node_key("x")) is None and redis.smembers(NODES_KEY) == set()
        y = mediad_factory(**node_options("y", 12))
        assert y.metric("e2ae_mediad_restored_sessions_total") == 0 and listed(y) == []
        assert redis.exists(dialog_key("dx")) == 1  # left alone by y
        x.start()
        assert x.metric("e2ae_mediad_restored_sessions_total") == 1 and listed(x) == ["dx"]
        assert x.client().request(x.iq(Command.RELEASE, "dx")).error is None
        assert x.written()
        assert redis.exists(dialog_key("dx")) == 0
    finally:
        redis.close()
