"""mediad's dialogs expire like their Redis documents: ``dialog_ttl`` after the last refresh.

A RESERVE or MODIFY refreshes a dialog, and so does authenticated traffic from
the access side; a dialog nothing refreshed is released by mediad itself (ports,
native packet path, Redis document), counted and announced.  Real mediad, real
Redis, a real DTLS-SRTP peer (pyOpenSSL) whose SRTP keeps its dialog alive.
"""

from __future__ import annotations

import json
import time

import pytest

from mediad.state import dialog_key
from iq import Command, Role, Side, StreamSpec, TerminationSpec
from tests.integration.dtls_peer import DtlsPeer, rtp_packet
from tests.integration.test_mediad_control import srtp_stream

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TTL = 2


def wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def dialogs(mediad) -> list[str]:
    return mediad.client().request(mediad.iq(Command.LIST, "x")).data["dialogs"]


def test_a_dialog_nothing_refreshes_expires_and_leaves_nothing(mediad_factory, redis_server):
    mediad = mediad_factory(dialog_ttl=TTL)
    store = redis_server.client()
    events = store.pubsub(ignore_subscribe_messages=True)
    events.subscribe("e2ae:events")
    before = mediad.sockets()
    client = mediad.client()
    assert client.request(mediad.iq(Command.RESERVE, "idle", [srtp_stream(1)])).error is None
    assert client.request(mediad.iq(Command.RESERVE, "refreshed", [srtp_stream(1)])).error is None
    started = time.monotonic()
    assert len(mediad.sockets() - before) == 8
    time.sleep(TTL * 0.7)
    # A MODIFY refreshes "refreshed"; a QUERY or a LIST refreshes nothing.
    assert client.request(mediad.iq(Command.MODIFY, "refreshed", [srtp_stream(1)])).error is None
    assert client.request(mediad.iq(Command.QUERY, "idle")).error is None
    assert wait(lambda: dialogs(mediad) == ["refreshed"], TTL * 1.5)
    assert time.monotonic() - started >= TTL * 0.9
    assert len(mediad.sockets() - before) == 4
    assert mediad.written()  # the expiry's deletion, written behind it
    assert not store.exists(dialog_key("idle")) and store.exists(dialog_key("refreshed"))
    assert wait(lambda: dialogs(mediad) == [], TTL * 2)
    assert mediad.sockets() == before
    assert mediad.written()  # the expiry's deletion, written behind it
    assert store.keys("e2ae:agw:dialog:*") == []
    assert mediad.metric("e2ae_mediad_dialogs_expired_total") == 2
    assert mediad.metric("e2ae_mediad_sessions_active") == 0
    assert mediad.metric("e2ae_mediad_terminations_active", side="access") == 0
    expired = []
    deadline = time.monotonic() + 2
    while len(expired) < 2 and time.monotonic() < deadline:
        message = events.get_message(timeout=0.2)
        if message:
            expired.append(json.loads(message["data"]))
    assert sorted(e["dialog"] for e in expired) == ["idle", "refreshed"]
    assert {e["event"] for e in expired} == {"dialog_expired"}
    # The RELEASE the ALG may still send finds nothing to do.
    assert client.request(mediad.iq(Command.RELEASE, "idle")).error_code == 404
    events.close()


@pytest.mark.parametrize("packet_path", ["native", "python"])
def test_access_media_keeps_a_dialog_alive_until_it_stops(mediad_factory, redis_server, packet_path):
    mediad = mediad_factory(dialog_ttl=TTL, packet_path=packet_path)
    store = redis_server.client()
    peer = DtlsPeer("client", srtp=True)
    before = mediad.sockets()
    try:
        access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=True, tls_role=Role.SERVER,
                                 remote_fingerprints=[peer.fingerprint("sha-256")], local_fingerprint_request=True)
        core = TerminationSpec(Side.CORE, "RTP/AVP", remote_address="127.0.0.3", remote_port=9, rtcp_mux=True)
        reply = mediad.client().request(mediad.iq(Command.RESERVE, "talking", [StreamSpec(1, "srtp", access, core)]))
        assert reply.error is None, reply
        stream = reply.stream(1)
        assert peer.handshake((stream.access.local_address, stream.access.local_port))
        ttl_after_reserve = store.pttl(dialog_key("talking"))
        native_before = mediad.metric("e2ae_mediad_native_packets_total")
        started = time.monotonic()
        seq = 0
        while time.monotonic() - started < TTL * 2.5:  # well past the TTL, media flowing
            peer.send_rtp(rtp_packet(seq))
            seq += 1
            time.sleep(0.05)
        assert dialogs(mediad) == ["talking"]
        # The document was written again with a new TTL (a restart would find it).
        assert store.pttl(dialog_key("talking")) > ttl_after_reserve - TTL * 1000 + 500
        assert mediad.metric("e2ae_mediad_dialogs_expired_total") == 0
        if packet_path == "native":
            assert mediad.metric("e2ae_mediad_native_packets_total") - native_before >= seq - 5
        # Media stops: the dialog expires.
        assert wait(lambda: dialogs(mediad) == [], TTL * 2)
        assert mediad.sockets() == before
        assert mediad.written()  # the expiry's deletion, written behind it
        assert store.keys("e2ae:agw:dialog:*") == []
        assert mediad.metric("e2ae_mediad_dialogs_expired_total") == 1
    finally:
        peer.close()


def test_a_restarted_mediad_expires_a_dialog_when_its_document_does(mediad_factory, redis_server):
    ttl = 6
    mediad = mediad_factory(dialog_ttl=ttl)
    store = redis_server.client()
    assert mediad.client().request(mediad.iq(Command.RESERVE, "left", [srtp_stream(1)])).error is None
    reserved = time.monotonic()
    time.sleep(1.5)
    mediad.stop()
    mediad.start()
    assert dialogs(mediad) == ["left"]
    assert wait(lambda: dialogs(mediad) == [], ttl)
    elapsed = time.monotonic() - reserved
    assert ttl - 1 < elapsed < ttl + 1.5, elapsed  # the time its document had left, not a new TTL
    assert mediad.written()  # the expiry's deletion, written behind it
    assert store.keys("e2ae:agw:dialog:*") == []
