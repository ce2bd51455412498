"""Two mediads of a pool, one killed: what moves to the survivor and what is ended.

Real mediads on two loopback "hosts" (127.0.0.11 and .12, core media on
127.0.1.11 and .12) sharing the session's Redis, driven over their control
endpoints; a pyOpenSSL DTLS peer plays the fax endpoint on the access side.
"""

from __future__ import annotations

import json
import time

import pytest

from mediad.pool import NODES_KEY
from mediad.state import dialog_key
from mediad.takeover import EVENT_MEDIA_LOST, MOVED_KEY
from iq import Command, Role, Side, StreamSpec, TerminationSpec
from tests.integration.dtls_peer import DtlsPeer
from tests.integration.test_mediad_pool import listed, node_options
from tests.integration.test_mediad_t38 import core_socket, t38_stream, udptl

pytestmark = pytest.mark.integration


def sctp_stream() -> StreamSpec:
    """A data-channel association (no peer needed: what matters is that one is there)."""
    return StreamSpec(0, "sctp", access=TerminationSpec(
        Side.ACCESS, "UDP/DTLS/SCTP", remote_address="127.0.0.1", remote_port=9, local_fingerprint_request=True,
        tls_role=Role.SERVER, ice_lite=True, remote_ice_ufrag="abcd", remote_ice_pwd="a" * 24, remote_sctp_port=5000,
        local_sctp_port_request=True))


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def relay_both_ways(peer: DtlsPeer, core, core_addr, first: int) -> None:
    sent = [udptl(first + i) for i in range(10)]
    for packet in sent:
        peer.send_data(packet)
    assert [core.recvfrom(2048)[0] for _ in sent] == sent
    back = [udptl(first + 100 + i) for i in range(10)]
    for packet in back:
        core.sendto(packet, core_addr)
    assert [peer.recv_data() for _ in back] == back


def test_a_fax_and_a_data_channel_call_of_a_killed_node_are_ended_and_it_back_restores_neither(
        mediad_factory, redis_server):
    redis = redis_server.client()
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe("e2ae:events")
    peer = DtlsPeer("client")
    core = core_socket()
    try:
        x = mediad_factory(**node_options("x", 11))
        y = mediad_factory(**node_options("y", 12))
        reply = x.client().request(x.iq(Command.RESERVE, "fax", [t38_stream(peer, core, Role.SERVER)]))
        assert reply.error is None, reply
        access = reply.stream(1).access
        assert access.local_address == "127.0.0.11"
        assert peer.handshake((access.local_address, access.local_port))
        core_addr = (reply.stream(1).core.local_address, reply.stream(1).core.local_port)
        relay_both_ways(peer, core, core_addr, 0)
        assert x.client().request(x.iq(Command.RESERVE, "dc", [sctp_stream()])).error is None
        assert x.written()
        assert json.loads(redis.get(dialog_key("fax")))["home"]["access"] == "127.0.0.11"

        x.kill()
        lost = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(lost) < 2:
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                event = json.loads(message["data"])
                if event["event"] == EVENT_MEDIA_LOST:
                    lost[event["dialog"]] = event["reason"]
        assert lost == {"fax": "t38", "dc": "sctp"}, y.log()
        assert redis.exists(dialog_key("fax"), dialog_key("dc")) == 0 and listed(y) == []
        assert y.metric("e2ae_mediad_takeover_dialogs_total", result="t38") == 1
        assert y.metric("e2ae_mediad_takeover_dialogs_total", result="sctp") == 1
        assert y.metric("e2ae_mediad_takeover_dialogs_total", result="taken") == 0
        assert redis.smembers(NODES_KEY) == {b"y"} and redis.hget(MOVED_KEY, "x") is not None

        x.start()  # back with the same id: nothing of its own is left to reload
        assert x.metric("e2ae_mediad_restored_sessions_total") == 0 and listed(x) == []
        assert wait_for(lambda: redis.smembers(NODES_KEY) == {b"x", b"y"}, 3)
    finally:
        pubsub.close()
        redis.close()
        peer.close()
        core.close()
