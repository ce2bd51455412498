"""mediad's control endpoint (the Iq interface) against a real mediad and Redis."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import pytest

from mediad.io.client import IqClient
from mediad.proto.iqcodec import encode_request
from mediad.state import dialog_key
from mediad.proto import controlwire
from mediad.proto.controlwire import MAX_PAYLOAD, Authenticated, Frame, FrameType, ProtocolError, encode
from sdp_rules.errors import UnavailableError
from iq import Command, IqReply, IqRequest, Role, Side, StreamSpec, TerminationSpec
from tests.conftest import free_port


def srtp_stream(stream_id: int = 1, access_mux: bool = False, core_mux: bool = False) -> StreamSpec:
    return StreamSpec(stream_id, "srtp",
                      access=TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=access_mux,
                                             tls_role=Role.SERVER, local_fingerprint_request=True),
                      core=TerminationSpec(Side.CORE, "RTP/AVPF", rtcp_mux=core_mux))


def rejected(mediad, reason: str) -> float:
    return mediad.metric("e2ae_mediad_control_rejected_total", reason=reason)


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
    assert mediad.client().request(request) == first  # on another connection too
    assert mediad.sockets() - before == bound
    # ... even after a restart (the answer is kept with the dialog in Redis).
    mediad.stop()
    mediad.start()
    assert mediad.client().request(request) == first
    assert mediad.sockets() - before == bound
    keys = sorted(redis_server.client().keys("*"))
    assert keys == [b"e2ae:agw:certificate", dialog_key("call-1").encode()]
    assert redis_server.client().ttl(dialog_key("call-1")) > 500
    document = json.loads(redis_server.client().get(dialog_key("call-1")))
    assert document["version"] >= 1 and len(document["streams"]) == 2
    listing = mediad.client().request(mediad.iq(Command.LIST, "*"))
    assert listing.data["dialogs"] == ["call-1"]
    query = mediad.client().request(mediad.iq(Command.QUERY, "call-1"))
    text = json.dumps(query.data)
    assert "ice_pwd" not in text, text[text.index("ice_pwd") - 200:text.index("ice_pwd") + 50]
    release = mediad.iq(Command.RELEASE, "call-1", transaction="tx-2")
    assert mediad.client().request(release).error is None
    assert mediad.client().request(release).error is None  # retransmitted release
    assert mediad.written()  # the release's deletion, written behind its answer
    assert redis_server.client().keys("*") == [b"e2ae:agw:certificate"]
    assert mediad.sockets() == before
    assert mediad.metric("e2ae_mediad_sessions_active") == 0
    assert mediad.metric("e2ae_mediad_terminations_active", side="access") == 0


def test_errors_are_typed_replies(mediad):
    client = mediad.client()
    raw = mediad.raw()
    assert raw.handshake() == [Authenticated()]
    raw.send(b"not json")
    assert raw.reply().error_code == 400
    raw.send(json.dumps({"command": "explode", "dialog": "d", "transaction": "t"}).encode())
    reply = raw.reply()
    assert (reply.error_code, reply.transaction) == (400, "t")
    raw.close()
    assert client.request(mediad.iq(Command.QUERY, "nobody")).error_code == 404
    assert client.request(mediad.iq(Command.MODIFY, "nobody", [srtp_stream()])).error_code == 404
    assert client.request(mediad.iq(Command.RELEASE, "nobody")).error_code == 404
    for kind in ("bogus",):
        stream = StreamSpec(1, kind, access=TerminationSpec(Side.ACCESS, "UDP/DTLS/SCTP"))
        assert client.request(mediad.iq(Command.RESERVE, "d", [stream])).error_code == 501
    assert client.request(mediad.iq(Command.RESERVE, "d", [StreamSpec(1, "srtp")])).error_code == 400
    assert client.request(mediad.iq(Command.LIST, "x")).data["count"] == 0
    assert mediad.metric("e2ae_mediad_control_requests_total", command="unknown", result="400") == 2


def test_what_the_peer_asks_that_mediad_cannot_do_is_488_and_changes_nothing(mediad):
    """A host name or an impossible port from the peer's SDP: 488 (the peer's fault), not 400/500."""
    client = mediad.client()
    before = mediad.sockets()
    for address, port in (("core.example.net", 4000), ("127.0.0.3", 70000), ("127.0.0.3", 0), ("::1", 4000)):
        stream = srtp_stream(1)
        stream.core.remote_address, stream.core.remote_port = address, port
        reply = client.request(mediad.iq(Command.RESERVE, "d", [stream]))
        if port == 0:  # a rejected or held stream (RFC 3264 port 0) is no error
            assert reply.error is None, reply
            assert client.request(mediad.iq(Command.RELEASE, "d")).error is None
            continue
        assert reply.error_code == 488, (address, port, reply)
        assert "remote" in reply.error
    stream = srtp_stream(1)
    stream.access.remote_address, stream.access.remote_port = "wic.example.org", 5000
    assert client.request(mediad.iq(Command.RESERVE, "d", [stream])).error_code == 488
    assert client.request(mediad.iq(Command.LIST, "x")).data["count"] == 0
    assert mediad.sockets() == before
    assert mediad.metric("e2ae_mediad_control_requests_total", command="reserve", result="488") == 4


def test_a_64_kib_request_round_trips(mediad):
    """Requests do not have to fit a datagram any more: 64 KiB and 900 KiB go through whole."""
    client = mediad.client()
    for size in (66_000, 900_000):
        stream = srtp_stream(1)
        stream.access.remote_candidates = [f"{i} 1 udp 2122260223 127.0.0.1 {10000 + i % 50000} typ host"
                                           for i in range(size // 45)]
        request = mediad.iq(Command.RESERVE, f"big-{size}", [stream])
        assert len(encode_request(request)) > size
        reply = client.request(request)
        assert reply.error is None, reply
        query = client.request(mediad.iq(Command.QUERY, f"big-{size}"))
        assert query.data["streams"][0]["access"]["spec"]["remote_candidates"] == stream.access.remote_candidates
        assert client.request(mediad.iq(Command.RELEASE, f"big-{size}")).error is None
    with pytest.raises(ValueError):  # over the documented limit: refused before it is sent
        stream.access.remote_candidates = ["c" * 1000] * (MAX_PAYLOAD // 1000 + 1)
        client.request(mediad.iq(Command.RESERVE, "too-big", [stream]))


def test_a_deeply_nested_request_is_400_without_a_traceback(mediad):
    raw = mediad.raw()
    raw.handshake()
    for payload in (b"[" * 100_000 + b"]" * 100_000, b'{"command": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001):
        raw.send(payload)
        assert raw.reply().error_code == 400
    raw.close()
    assert mediad.client().request(mediad.iq(Command.LIST, "x")).error is None
    log = mediad.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-2000:]
    assert mediad.metric("e2ae_mediad_control_requests_total", command="unknown", result="400") == 2


def test_a_wrong_secret_is_refused_and_counted(mediad):
    # Our own client finds out first (mediad's proof does not check): a 401 reply, nothing sent.
    assert IqClient(mediad.control, b"wrong", 1).request(mediad.iq(Command.LIST, "x")).error_code == 401
    # A client that goes on with a proof of its own secret is refused by mediad, which counts it.
    sock = socket.create_connection(mediad.control, timeout=3)
    nonce = b"n" * controlwire.NONCE_SIZE
    sock.sendall(encode(Frame(FrameType.HELLO, controlwire.hello_body(nonce))))
    (challenge,), _ = controlwire.decode(sock.recv(4096), limit=64)
    server_nonce, _ = controlwire.parse_challenge(challenge.body)
    keys = controlwire.derive(b"wrong", nonce, server_nonce)
    sock.sendall(encode(Frame(FrameType.AUTH, keys.client_proof)))
    (error,), _ = controlwire.decode(sock.recv(4096), limit=64)
    assert error.kind is FrameType.ERROR and controlwire.parse_error(error.body)[0] == 401
    assert sock.recv(10) == b""  # and closed
    sock.close()
    assert rejected(mediad, "bad_proof") == 1
    assert mediad.client().request(mediad.iq(Command.LIST, "x")).error is None


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_replayed_requests_have_no_effect(mediad, redis_server):
    """RESERVE and RELEASE recorded off the wire, replayed on their connection, on a new one,
    after the call and after a restart: nothing is reserved again, no live call is released,
    and every attempt is counted."""
    store = redis_server.client()
    recorder = mediad.raw()
    recorder.handshake()
    reserve = recorder.send(encode_request(mediad.iq(Command.RESERVE, "call-a", [srtp_stream(1)])))
    assert recorder.reply().error is None
    release = recorder.send(encode_request(mediad.iq(Command.RELEASE, "call-a")))
    assert recorder.reply().error is None
    handshake_and_reserve = b"".join(recorder.sent[:2])  # HELLO, then AUTH + the RESERVE
    reserve = reserve[4 + 1 + controlwire.PROOF_SIZE:]  # its DATA frame, without the AUTH in front
    sockets_after_call = mediad.sockets()

    def dialogs() -> list[str]:
        return mediad.client().request(mediad.iq(Command.LIST, "x")).data["dialogs"]

    # 1. The RESERVE again on its own connection, after the call: the sequence check.
    recorder.write(reserve)
    assert isinstance(recorder.reply(), ProtocolError) or recorder.closed_by_peer()
    assert _wait(lambda: rejected(mediad, "replay") == 1)
    # 2. On a new connection, after its handshake: another key.
    raw = mediad.raw()
    raw.handshake()
    raw.send(encode_request(mediad.iq(Command.LIST, "x")))
    raw.reply()
    raw.write(reserve)
    assert raw.closed_by_peer()
    assert _wait(lambda: rejected(mediad, "bad_mac") == 1)
    # 3. The whole recorded conversation on a new connection: the old proof fails the new nonce.
    sock = socket.create_connection(mediad.control, timeout=3)
    sock.sendall(handshake_and_reserve)
    assert _wait(lambda: rejected(mediad, "bad_proof") == 1)
    sock.close()
    assert mediad.written()  # the release's deletion, written behind its answer
    assert dialogs() == [] and mediad.sockets() == sockets_after_call
    assert store.keys("e2ae:agw:dialog:*") == []

    # A live call of the same dialog id (the INVITE retried), then the old RELEASE replayed.
    client = mediad.client()
    assert client.request(mediad.iq(Command.RESERVE, "call-a", [srtp_stream(1)])).error is None
    live_sockets = mediad.sockets()
    for data in (release, handshake_and_reserve[:-len(reserve)] + release, reserve):
        sock = socket.create_connection(mediad.control, timeout=3)
        sock.sendall(data)
        time.sleep(0.2)
        sock.close()
    # 4. After a restart (new process, new nonces): RESERVE and RELEASE replayed.
    mediad.stop()
    mediad.start()
    for data in (handshake_and_reserve, handshake_and_reserve[:-len(reserve)] + release, release):
        sock = socket.create_connection(mediad.control, timeout=3)
        sock.sendall(data)
        time.sleep(0.2)
        sock.close()
    assert dialogs() == ["call-a"] and mediad.sockets() == live_sockets
    assert store.exists(dialog_key("call-a"))
    # Counted: the restarted process counts what it refused since it started.
    assert rejected(mediad, "bad_proof") + rejected(mediad, "unexpected") + rejected(mediad, "too_large") >= 3
    assert client.request(mediad.iq(Command.RELEASE, "call-a")).error is None
    assert dialogs() == []


def test_half_open_and_garbage_connections_hang_nothing(mediad):
    """Silent, half-sent and garbage connections are closed in time; requests go on meanwhile."""
    silent = socket.create_connection(mediad.control, timeout=10)
    half_hello = socket.create_connection(mediad.control, timeout=10)
    half_hello.sendall(encode(Frame(FrameType.HELLO, controlwire.hello_body(b"n" * 16)))[:7])
    stalled = mediad.raw()
    stalled.handshake()
    stalled.send(encode_request(mediad.iq(Command.LIST, "x")))
    assert stalled.reply().error is None
    stalled.write(stalled.wire.send(b'{"command": "list"}')[:20])  # an authenticated frame left half sent
    garbage = socket.create_connection(mediad.control, timeout=10)
    garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    old_protocol = socket.create_connection(mediad.control, timeout=10)
    old_protocol.sendall(b'{"iq": {"command": "release", "dialog": "d", "transaction": "t"}, "mac": "00"}')
    started = time.monotonic()
    client = mediad.client(timeout=0.5)
    for i in range(20):
        assert client.request(mediad.iq(Command.LIST, "x")).error is None
    assert time.monotonic() - started < 2
    for sock in (garbage, old_protocol, silent, half_hello):  # the last two after HANDSHAKE_TIMEOUT
        assert sock.recv(4096)[4:5] == bytes((FrameType.ERROR,))  # told why, then closed
        assert sock.recv(10) == b""
    assert rejected(mediad, "too_large") == 2
    assert rejected(mediad, "handshake_timeout") == 2
    assert stalled.closed_by_peer(timeout=10)
    assert rejected(mediad, "stalled") == 1
    assert client.request(mediad.iq(Command.LIST, "x")).error is None
    assert mediad.metric("e2ae_mediad_control_connections_active") == 1  # the client's own
    for sock in (silent, half_hello, garbage, old_protocol):
        sock.close()
    stalled.close()


def test_the_control_endpoint_serves_its_configured_address_beyond_loopback(tmp_path):
    """Bound to a non-loopback address (192.0.2.10, in a network namespace of the test's own), the
    control endpoint serves clients from that address: the secret protects it, not a loopback rule."""
    import subprocess

    from tests.conftest import RedisServer
    from tests.integration.chromium_peer import private_loopback_netns
    from tests.integration.conftest import Mediad

    with private_loopback_netns():
        subprocess.run(["ip", "addr", "add", "192.0.2.10/32", "dev", "lo"], check=True)
        server = RedisServer()
        server.start()
        mediad = Mediad(tmp_path, server.url, control_host="192.0.2.10")
        try:
            mediad.start()
            client = mediad.client()
            reply = client.request(mediad.iq(Command.RESERVE, "remote", [srtp_stream(1)]))
            assert reply.error is None, reply
            assert client._sock.getsockname()[0] == "192.0.2.10"  # not a loopback source
            with pytest.raises(OSError):  # and only there: nothing listens on 127.0.0.1
                socket.create_connection(("127.0.0.1", mediad.control_port), timeout=1).close()
            assert client.request(mediad.iq(Command.RELEASE, "remote")).error is None
        finally:
            mediad.stop()
            server.stop()


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
    assert mediad.written()  # the release's deletion, written behind its answer
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
    assert mediad.written()  # the release's deletion, written behind its answer
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
    """Write-behind and one lock per dialog: a stalled Redis delays no answer.

    While Redis is stopped, a release and a reserve of another dialog are answered at
    once; once Redis is back, the deletion is written, then the new document.
    """
    import os
    import signal

    from tests.conftest import RedisServer
    from tests.integration.conftest import Mediad

    server = RedisServer()
    server.start()
    mediad = Mediad(tmp_path, server.url)
    try:
        mediad.start()
        assert mediad.client().request(mediad.iq(Command.RESERVE, "call-a", [srtp_stream(1)])).error is None
        store = server.client()
        assert mediad.written()
        assert store.exists(dialog_key("call-a"))
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            release = mediad.client(timeout=1.0).request(mediad.iq(Command.RELEASE, "call-a"))
            reserve = mediad.client(timeout=1.0).request(mediad.iq(Command.RESERVE, "call-b", [srtp_stream(1)]))
            elapsed = time.monotonic() - started
            assert release.error is None and reserve.error is None and elapsed < 0.5, elapsed
            assert mediad.metric("e2ae_mediad_state_pending") >= 1  # not written yet
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert mediad.written()
        assert not store.exists(dialog_key("call-a"))
        assert json.loads(store.get(dialog_key("call-b")))["dialog"] == "call-b"
        store.close()
    finally:
        mediad.stop()
        server.stop()


def test_changes_made_while_redis_is_down_are_written_once_it_is_back(tmp_path):
    """The writer retries a batch Redis could not take until it is written.

    Redis is killed (its data saved), mediad releases one call and reserves another
    meanwhile (both answered), then a new Redis starts on the same port from the saved
    data: the released call's document is deleted and the new one written, without any
    new request; the retries are counted.
    """
    from tests.conftest import RedisServer
    from tests.integration.conftest import Mediad

    server = RedisServer()
    server.start()
    mediad = Mediad(tmp_path, server.url)
    try:
        mediad.start()
        client = mediad.client()
        assert client.request(mediad.iq(Command.RESERVE, "call-a", [srtp_stream(1)])).error is None
        assert mediad.written()
        store = server.client()
        store.save()  # what the new Redis starts from: call-a's document
        store.close()
        written = mediad.metric("e2ae_mediad_state_written_total")
        server.proc.kill()
        server.proc.wait()
        assert client.request(mediad.iq(Command.RELEASE, "call-a")).error is None
        assert client.request(mediad.iq(Command.RESERVE, "call-b", [srtp_stream(1)])).error is None
        assert _wait(lambda: mediad.metric("e2ae_mediad_state_write_retries_total") >= 2, 5)
        assert mediad.metric("e2ae_mediad_state_pending") == 2
        server.start()
        store = server.client()
        assert mediad.written(), mediad.log()[-2000:]
        assert not store.exists(dialog_key("call-a"))
        assert json.loads(store.get(dialog_key("call-b")))["dialog"] == "call-b"
        assert mediad.metric("e2ae_mediad_state_written_total") == written + 2
        assert client.request(mediad.iq(Command.RELEASE, "call-b")).error is None
        assert mediad.written()
        assert store.keys("e2ae:agw:dialog:*") == []
        store.close()
    finally:
        mediad.stop()
        server.stop()


def test_a_request_sent_without_waiting_is_served_and_its_reply_read_later(mediad, redis_server):
    """The release at a dialog's end: sent, not waited for; its reply is read with the next
    request's (or before the next send), and only a refusal comes back to the caller."""
    client = mediad.client()
    before = mediad.sockets()
    for dialog in ("d1", "d2"):
        assert client.request(mediad.iq(Command.RESERVE, dialog, [srtp_stream(1)])).error is None
    client.send(mediad.iq(Command.RELEASE, "d1"), "ctx-d1")
    client.send(mediad.iq(Command.RELEASE, "never-reserved"), "ctx-404")  # 404: nothing held, not a failure
    assert client.unanswered >= 1
    listing = client.request(mediad.iq(Command.LIST, "*"))  # on the same connection, after them
    assert listing.data["dialogs"] == ["d2"]
    deadline = time.monotonic() + 5
    while client.unanswered and time.monotonic() < deadline:
        client.request(mediad.iq(Command.LIST, "*"))
    assert client.unanswered == 0 and client.take_failed() == []
    # A request mediad refuses (an empty transaction breaks the schema: 400) comes back.
    client.send(IqRequest(Command.RELEASE, "d2", "", []), "ctx-refused")
    client.request(mediad.iq(Command.LIST, "*"))
    deadline = time.monotonic() + 5
    while client.unanswered and time.monotonic() < deadline:
        client.request(mediad.iq(Command.LIST, "*"))
    assert client.take_failed() == ["ctx-refused"]
    client.send(mediad.iq(Command.RELEASE, "d2"), "ctx-d2")
    assert mediad.written()
    deadline = time.monotonic() + 5
    while mediad.sockets() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mediad.sockets() == before
    assert redis_server.client().keys("e2ae:agw:dialog:*") == []


def test_a_send_finds_a_dead_connection_and_lost_replies_come_back(mediad_factory):
    """mediad stopped: a send on the kept connection is not written into it (503, the
    caller queues the release); requests in flight when the connection went come back."""
    mediad = mediad_factory()
    client = mediad.client(timeout=0.5)
    assert client.request(mediad.iq(Command.RESERVE, "d1", [srtp_stream(1)])).error is None
    mediad.proc.send_signal(signal.SIGSTOP)  # it reads nothing now
    try:
        client.send(mediad.iq(Command.RELEASE, "d1"), "ctx-in-flight")
        assert client.unanswered == 1
        with pytest.raises(UnavailableError):
            client.request(mediad.iq(Command.LIST, "*"))  # times out: the connection is closed
        assert client.take_failed() == ["ctx-in-flight"]
    finally:
        mediad.proc.send_signal(signal.SIGCONT)
    assert client.request(mediad.iq(Command.LIST, "*")).error is None  # a new connection
    mediad.stop()
    with pytest.raises(UnavailableError):
        client.send(mediad.iq(Command.RELEASE, "d1"), "ctx-down")
    assert client.unanswered == 0 and client.take_failed() == []
