"""mediad's control endpoint (the Iq interface) against a real mediad and Redis."""

from __future__ import annotations

import json
import socket

import pytest

from mediad.client import IqClient
from mediad.control import encode_request
from sdp_rules.errors import UnavailableError
from sdp_rules.iq import Command, IqReply, IqRequest, Role, Side, StreamSpec, TerminationSpec
from tests.conftest import free_port


def srtp_stream(stream_id: int = 1, access_mux: bool = False, core_mux: bool = False) -> StreamSpec:
    return StreamSpec(stream_id, "srtp",
                      access=TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=access_mux,
                                             tls_role=Role.SERVER, local_fingerprint_request=True),
                      core=TerminationSpec(Side.CORE, "RTP/AVPF", rtcp_mux=core_mux))


def raw(mediad, data: bytes) -> IqReply:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    try:
        sock.sendto(data, mediad.control)
        return IqReply.from_dict(json.loads(sock.recv(65535)))
    finally:
        sock.close()


@pytest.mark.req("SRTP-2", "T38-9")
def test_reserve_is_idempotent_and_release_cleans_everything(mediad, redis_server):
    client = mediad.client()
    before = mediad.sockets()
    request = mediad.iq(Command.RESERVE, "call-1", [srtp_stream(1), srtp_stream(2, access_mux=True, core_mux=True)],
                        transaction="tx-1")
    first = client.request(request)
    assert first.error is None, first
    bound = mediad.sockets() - before
    assert len(bound) == 2 + 2 + 1 + 1
    # Each stream gets its own ports; the one certificate's fingerprint on both (T38-9: the
    # association is identified by ports and tls-id, not by the certificate).
    one, two = first.stream(1), first.stream(2)
    assert one.access.local_port != two.access.local_port
    assert one.access.local_fingerprint == two.access.local_fingerprint
    assert one.access.ice_ufrag != two.access.ice_ufrag
    assert one.core.local_port % 2 == 0 and one.core.local_rtcp_port == one.core.local_port + 1
    assert two.core.local_rtcp_port is None and two.access.local_rtcp_port is None
    # The same transaction again (a retransmission, or the plugin's retry): same answer, no ports.
    assert client.request(request) == first
    assert raw(mediad, encode_request(mediad.secret.encode(), request)) == first
    assert mediad.sockets() - before == bound
    # ... even after a restart (the answer is kept with the dialog in Redis).
    mediad.stop()
    mediad.start()
    assert mediad.client().request(request) == first
    assert mediad.sockets() - before == bound
    keys = sorted(redis_server.client().keys("*"))
    assert keys == [b"e2ae:agw:certificate", b"e2ae:agw:dialog:call-1"]
    assert redis_server.client().ttl("e2ae:agw:dialog:call-1") > 500
    document = json.loads(redis_server.client().get("e2ae:agw:dialog:call-1"))
    assert document["version"] >= 1 and len(document["streams"]) == 2
    listing = mediad.client().request(mediad.iq(Command.LIST, "*"))
    assert listing.data["dialogs"] == ["call-1"]
    query = mediad.client().request(mediad.iq(Command.QUERY, "call-1"))
    text = json.dumps(query.data)
    assert "ice_pwd" not in text, text[text.index("ice_pwd") - 200:text.index("ice_pwd") + 50]
    release = mediad.iq(Command.RELEASE, "call-1", transaction="tx-2")
    assert mediad.client().request(release).error is None
    assert mediad.client().request(release).error is None  # retransmitted release
    assert redis_server.client().keys("*") == [b"e2ae:agw:certificate"]
    assert mediad.sockets() == before
    assert mediad.metric("e2ae_mediad_sessions_active") == 0
    assert mediad.metric("e2ae_mediad_terminations_active", side="access") == 0


def test_errors_are_typed_replies(mediad):
    client = mediad.client()
    assert raw(mediad, b"not json").error_code == 400
    assert raw(mediad, b'{"iq": {"command": "reserve"}, "mac": "x"}').error_code == 401
    wrong_key = encode_request(b"not the secret", mediad.iq(Command.LIST, "x"))
    assert raw(mediad, wrong_key).error_code == 401
    iq = {"command": "explode", "dialog": "d", "transaction": "t"}
    from mediad.control import sign
    assert raw(mediad, json.dumps({"iq": iq, "mac": sign(mediad.secret.encode(), iq)}).encode()).error_code == 400
    assert client.request(mediad.iq(Command.QUERY, "nobody")).error_code == 404
    assert client.request(mediad.iq(Command.MODIFY, "nobody", [srtp_stream()])).error_code == 404
    assert client.request(mediad.iq(Command.RELEASE, "nobody")).error_code == 404
    for kind in ("bogus",):
        stream = StreamSpec(1, kind, access=TerminationSpec(Side.ACCESS, "UDP/DTLS/SCTP"))
        assert client.request(mediad.iq(Command.RESERVE, "d", [stream])).error_code == 501
    assert client.request(mediad.iq(Command.RESERVE, "d", [StreamSpec(1, "srtp")])).error_code == 400
    assert client.request(mediad.iq(Command.LIST, "x")).data["count"] == 0
    assert mediad.metric("e2ae_mediad_control_requests_total", command="unknown", result="401") == 2


def test_no_ports_left_is_503_and_nothing_leaks(mediad_factory, redis_server):
    first = free_port()
    mediad = mediad_factory(access_ports=f"{first}-{first + 3}")
    before = mediad.sockets()
    client = mediad.client()
    replies = [client.request(mediad.iq(Command.RESERVE, f"d{i}", [srtp_stream()])) for i in range(3)]
    codes = [r.error_code for r in replies]
    assert codes[-1] == 503 and codes.count(None) <= 2
    ok = [i for i, r in enumerate(replies) if r.error is None]
    for i in ok:
        client.request(mediad.iq(Command.RELEASE, f"d{i}"))
    assert mediad.sockets() == before
    assert redis_server.client().keys("e2ae:agw:dialog:*") == []


def test_a_modify_whose_ports_cannot_be_had_changes_nothing(mediad_factory, redis_server):
    first = free_port()
    mediad = mediad_factory(access_ports=f"{first}-{first + 3}")
    client = mediad.client()

    def access_only(stream_id):
        return StreamSpec(stream_id, "srtp", access=srtp_stream(stream_id, access_mux=True).access)

    def view():
        reply = client.request(mediad.iq(Command.QUERY, "d0"))
        return {s["stream_id"]: s for s in reply.data["streams"]}

    # d0: stream 1 with both sides, stream 4 access only; one access port each.
    assert client.request(mediad.iq(Command.RESERVE, "d0", [srtp_stream(1, access_mux=True),
                                                              access_only(4)])).error is None
    fillers = []
    while len(fillers) < 4:  # take the access ports left, one by one
        reply = client.request(mediad.iq(Command.RESERVE, f"f{len(fillers)}", [access_only(1)]))
        if reply.error is not None:
            assert reply.error_code == 503
            break
        fillers.append(f"f{len(fillers)}")
    assert fillers
    before, sockets, core_terminations = view(), mediad.sockets(), mediad.metric(
        "e2ae_mediad_terminations_active", side="core")
    moved = srtp_stream(1, access_mux=True)
    moved.core.remote_address, moved.core.remote_port = "127.0.0.3", 40000
    gains_core = srtp_stream(4, access_mux=True)
    # A change to stream 1, a core side for stream 4 (ports to be had) and a new stream 2
    # (an access port, none left): refused, and nothing of it applied.
    change = [moved, gains_core, srtp_stream(2, access_mux=True)]
    assert client.request(mediad.iq(Command.MODIFY, "d0", change)).error_code == 503
    assert view() == before
    assert before[1]["core"]["spec"]["remote_address"] is None and before[4]["core"] is None
    assert mediad.sockets() == sockets
    assert mediad.metric("e2ae_mediad_terminations_active", side="core") == core_terminations
    # Dropping stream 1 for a new stream 3 that cannot be had keeps stream 1.
    reply = client.request(mediad.iq(Command.MODIFY, "d0", [srtp_stream(3, access_mux=True)], release_streams=[1]))
    assert reply.error_code == 503
    assert view() == before and mediad.sockets() == sockets
    # With a port free again the same change applies, whole.
    client.request(mediad.iq(Command.RELEASE, fillers.pop()))
    reply = client.request(mediad.iq(Command.MODIFY, "d0", change))
    assert reply.error is None and [s.stream_id for s in reply.streams] == [1, 4, 2]
    after = view()
    assert after[1]["core"]["spec"]["remote_address"] == "127.0.0.3" and after[4]["core"] is not None
    for dialog in ["d0"] + fillers:
        client.request(mediad.iq(Command.RELEASE, dialog))
    assert mediad.metric("e2ae_mediad_terminations_active", side="core") == 0
    assert redis_server.client().keys("e2ae:agw:dialog:*") == []


def test_secret_generated_in_redis_when_not_configured(mediad_factory, redis_server):
    mediad = mediad_factory(control_secret="")
    secret = redis_server.client().get("e2ae:control_secret")
    assert secret and len(secret) == 64
    from mediad.config import load_config
    config = load_config(mediad.config_path)
    client = IqClient.from_config(config)
    assert client.request(mediad.iq(Command.LIST, "x")).error is None
    assert IqClient(mediad.control, b"wrong", 1).request(mediad.iq(Command.LIST, "x")).error_code == 401


def test_client_raises_unavailable_when_mediad_is_down():
    client = IqClient(("127.0.0.1", free_port()), b"secret", timeout=0.2)
    with pytest.raises(UnavailableError):
        client.request(IqRequest(Command.LIST, "x", "t"))


def test_answers_do_not_wait_for_redis_nor_for_other_dialogs(tmp_path):
    """Write-behind and one lock per dialog: a stalled Redis delays only what must wait for it.

    A release answers once its deletion is written, so it waits for Redis; a reserve of
    another dialog meanwhile is answered at once, and its document reaches Redis as soon
    as Redis is back, after the deletion that was ahead of it.
    """
    import os
    import signal
    import threading
    import time

    from tests.conftest import RedisServer
    from tests.integration.conftest import Mediad

    server = RedisServer()
    server.start()
    mediad = Mediad(tmp_path, server.url)
    try:
        mediad.start()
        assert mediad.client().request(mediad.iq(Command.RESERVE, "call-a", [srtp_stream(1)])).error is None
        store = server.client()
        deadline = time.monotonic() + 2
        while not store.exists("e2ae:agw:dialog:call-a") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.exists("e2ae:agw:dialog:call-a")
        released: list = []
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            release = threading.Thread(target=lambda: released.append(
                mediad.client(timeout=5.0).request(mediad.iq(Command.RELEASE, "call-a"))))
            release.start()
            time.sleep(0.1)
            started = time.monotonic()
            reply = mediad.client(timeout=1.0).request(mediad.iq(Command.RESERVE, "call-b", [srtp_stream(1)]))
            elapsed = time.monotonic() - started
            assert reply.error is None and elapsed < 0.3, elapsed
            assert not released  # still waiting for its deletion to be written
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        release.join(5)
        assert released and released[0].error is None
        assert not store.exists("e2ae:agw:dialog:call-a")
        deadline = time.monotonic() + 2
        while not store.exists("e2ae:agw:dialog:call-b") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert json.loads(store.get("e2ae:agw:dialog:call-b"))["dialog"] == "call-b"
        store.close()
    finally:
        mediad.stop()
        server.stop()
