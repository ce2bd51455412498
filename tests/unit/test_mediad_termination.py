"""mediad.core.termination without sockets or a loop: datagrams, ``now`` and a recording shell.

Two terminations (one DTLS client, one server) hand each other datagrams
through a list until the association is up, then SRTP goes both ways; a wrong
fingerprint, consent expiry and a STUN check are driven the same way.
"""

from __future__ import annotations

import os
import types

import pytest
from aioice import stun
from prometheus_client import CollectorRegistry

from iq import EVENT_CONSENT_EXPIRED, EVENT_DTLS_ESTABLISHED, EVENT_DTLS_FAILED, Fingerprint, Role, Side, \
    TerminationSpec
from mediad.core.termination import TRANSITIONS, AccessTermination, Input, State, TerminationError, Timer
from mediad.metrics import Metrics
from mediad.proto.certs import Certificate
from mediad.proto.dtls import ApplicationData, HandshakeComplete, HandshakeFailed
from mediad.proto.srtp import AES_CM_128_HMAC_SHA1_80, SrtpKeys, SrtpTransformer

CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.2", 50000)


class RecordingShell:
    """The termination's interface, recorded: what an asyncio shell would carry out."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.timers: dict[Timer, float] = {}
        self.reports: list[tuple[str, str | None]] = []
        self.events: list = []
        self.syncs = 0
        self.changes = 0

    def send(self, data, addr) -> None:
        self.sent.append((data, addr))

    def set_timer(self, timer, when) -> None:
        if when is None:
            self.timers.pop(timer, None)
        else:
            self.timers[timer] = when

    def report(self, name, reason) -> None:
        self.reports.append((name, reason))

    def route_changed(self) -> None:
        self.syncs += 1

    def changed(self) -> None:
        self.changes += 1

    def new_srtp(self, keys):
        return SrtpTransformer(keys)

    def handle_event(self, event) -> None:
        self.events.append(event)


def termination(certificate: Certificate, *, role: Role | None = None, remote: Certificate | None = None,
                wrong: bool = False, ice_lite: bool = False, consent_timeout: float = 30.0):
    fingerprints = []
    if remote is not None:
        fingerprints = [remote.fingerprint("sha-256")]
    if wrong:
        fingerprints = [Fingerprint("sha-256", ":".join(["AB"] * 32))]
    spec = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", remote_address="127.0.0.9", remote_port=9,
                           rtcp_mux=True, tls_role=role, remote_fingerprints=fingerprints, ice_lite=ice_lite,
                           remote_ice_ufrag="peer", remote_ice_pwd="p" * 22)
    leg = types.SimpleNamespace(spec=spec, ice_ufrag="mine", ice_pwd="m" * 22, over_tcp=False, dtls_srtp=True)
    shell = RecordingShell()
    metrics = Metrics(CollectorRegistry())
    term = AccessTermination(shell, leg, "rtp", certificate=certificate, metrics=metrics,
                             consent_timeout=consent_timeout, handshake_timeout=30.0, max_ssrcs=4)
    return term, shell, metrics


def random_keys() -> SrtpKeys:
    return SrtpKeys(AES_CM_128_HMAC_SHA1_80, os.urandom(16), os.urandom(14), os.urandom(16), os.urandom(14))


def rtp(seq: int, ssrc: int = 0x11223344) -> bytes:
    return bytes([0x80, 0]) + seq.to_bytes(2, "big") + bytes(4) + ssrc.to_bytes(4, "big") + bytes(160)


def pair(wrong_fingerprint: bool = False):
    """A client and a server termination, each knowing the other's certificate (or not, for the client)."""
    client_cert, server_cert = Certificate.generate(), Certificate.generate()
    client = termination(client_cert, role=Role.CLIENT, remote=server_cert, wrong=wrong_fingerprint)
    server = termination(server_cert, role=Role.SERVER, remote=client_cert)
    client[0].set_peer(SERVER_ADDR)
    return client, server


def exchange(client, server, now: float = 100.0, rounds: int = 10) -> None:
    """Carry every datagram each side sent to the other, until neither sends."""
    (c, c_shell, _), (s, s_shell, _) = client, server
    for _ in range(rounds):
        to_server, c_shell.sent[:] = [d for d, addr in c_shell.sent if addr == SERVER_ADDR], []
        to_client, s_shell.sent[:] = [d for d, addr in s_shell.sent if addr == CLIENT_ADDR], []
        if not to_server and not to_client:
            return
        for datagram in to_server:
            s.receive_dtls(datagram, CLIENT_ADDR, now)
        for datagram in to_client:
            c.receive_dtls(datagram, SERVER_ADDR, now)


def test_two_terminations_complete_dtls_and_round_trip_srtp():
    client, server = pair()
    (c, c_shell, c_metrics), (s, s_shell, _) = client, server
    c.start_client(100.0)
    assert c.state is State.HANDSHAKING and Timer.DTLS in c_shell.timers  # the retransmission timer is armed
    exchange(client, server)
    assert c.state is State.ESTABLISHED and s.state is State.ESTABLISHED
    assert c_shell.reports == [(EVENT_DTLS_ESTABLISHED, None)] and s_shell.reports == [(EVENT_DTLS_ESTABLISHED, None)]
    assert any(isinstance(e, HandshakeComplete) for e in c_shell.events)  # the leg hears of it after the termination
    assert c.keys is not None and c.srtp is not None and s.peer == CLIENT_ADDR
    assert c_metrics.registry.get_sample_value(
        "e2ae_mediad_dtls_handshakes_total", {"role": "client", "result": "ok"}) == 1
    out = c.protect(rtp(1), True, 100.0)
    assert out is not None and c.dest == SERVER_ADDR and out != rtp(1)
    assert s.unprotect(out, CLIENT_ADDR, True) == rtp(1)
    back = s.protect(rtp(7, ssrc=0x55667788), True, 100.0)
    assert c.unprotect(back, SERVER_ADDR, True) == rtp(7, ssrc=0x55667788)
    assert c.unprotect(back, SERVER_ADDR, True) is None  # a replay: dropped and counted
    assert c_metrics.drop_counts["replay"] == 1
    s.send_application_data(b"udptl", 100.0)
    exchange(client, server)
    assert [e.data for e in c_shell.events if isinstance(e, ApplicationData)] == [b"udptl"]


def test_a_wrong_fingerprint_fails_the_association_and_reports_it():
    client, server = pair(wrong_fingerprint=True)
    (c, c_shell, c_metrics), (s, _, _) = client, server
    c.start_client(100.0)
    exchange(client, server)
    assert c.state is State.FAILED and c.failure == "fingerprint_mismatch"
    assert c_shell.reports == [(EVENT_DTLS_FAILED, "fingerprint_mismatch")]
    assert [type(e) for e in c_shell.events] == [HandshakeFailed]
    assert c.srtp is None and c.keys is None and c_shell.timers == {}
    assert c_metrics.registry.get_sample_value(
        "e2ae_mediad_dtls_handshakes_total", {"role": "client", "result": "fingerprint_mismatch"}) == 1
    c.receive_dtls(b"\x16\xfe\xfd" + bytes(20), SERVER_ADDR, 101.0)  # nothing more reaches the session
    assert c_metrics.drop_counts["dtls_failed"] == 1
    assert c.protect(rtp(1), True, 101.0) is None and c_metrics.drop_counts["dtls_failed"] == 2


def check(term: AccessTermination, use_candidate: bool = True, pwd: str | None = None) -> bytes:
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{term.leg.ice_ufrag}:peer"
    request.attributes["PRIORITY"] = 1
    request.attributes["ICE-CONTROLLING"] = 1
    if use_candidate:
        request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity((pwd or term.leg.ice_pwd).encode())
    request.add_fingerprint()
    return bytes(request)


def test_a_stun_binding_request_is_answered_and_selects_the_peer():
    term, shell, metrics = termination(Certificate.generate(), ice_lite=True)
    term.receive_stun(check(term), CLIENT_ADDR, 100.0)
    (answer, addr), = shell.sent
    response = stun.parse_message(answer)
    assert addr == CLIENT_ADDR and response.message_class == stun.Class.RESPONSE
    assert response.attributes["XOR-MAPPED-ADDRESS"] == CLIENT_ADDR
    assert term.peer == CLIENT_ADDR and shell.changes == 1 and term.received == 1
    term.receive_stun(check(term, pwd="w" * 22), ("127.0.0.1", 40001), 101.0)  # wrong password: 401
    rejected = stun.parse_message(shell.sent[-1][0])
    assert rejected.message_class == stun.Class.ERROR and rejected.attributes["ERROR-CODE"][0] == 401
    assert term.peer == CLIENT_ADDR and term.received == 1 and metrics.drop_counts["stun_rejected"] == 1
    term.receive_stun(b"\x00\x01" + bytes(6), CLIENT_ADDR, 101.0)  # not even a header: no answer
    assert len(shell.sent) == 2 and metrics.drop_counts["malformed"] == 1


def test_consent_expires_at_now_past_the_deadline():
    term, shell, metrics = termination(Certificate.generate(), ice_lite=True, consent_timeout=30.0)
    term.receive_stun(check(term), CLIENT_ADDR, 100.0)
    term.restore(random_keys(), None)
    assert term.protect(rtp(1), True, 100.0) is not None and term.dest == CLIENT_ADDR
    assert shell.timers[Timer.CONSENT] == 130.0  # the cached destination's deadline
    term.receive_stun(check(term, use_candidate=False), CLIENT_ADDR, 120.0)  # a consent check at 120
    term.timer_expired(Timer.CONSENT, 130.0)
    assert term.dest == CLIENT_ADDR and shell.timers[Timer.CONSENT] == 150.0  # still fresh: re-armed
    term.timer_expired(Timer.CONSENT, 150.5)
    assert term.dest is None
    assert term.protect(rtp(2), True, 150.5) is None and term.protect(rtp(3), True, 151.0) is None
    assert metrics.drop_counts["consent_expired"] == 2
    assert shell.reports == [(EVENT_CONSENT_EXPIRED, None)]  # reported once
    term.receive_stun(check(term, use_candidate=False), CLIENT_ADDR, 152.0)  # consent again
    assert term.protect(rtp(4), True, 152.0) is not None


def test_an_ice_lite_client_waits_for_a_check_then_starts_toward_it():
    term, shell, metrics = termination(Certificate.generate(), role=Role.CLIENT, ice_lite=True)
    term.start_client(100.0)
    assert shell.sent == [] and term.dtls is None and shell.timers == {Timer.ICE: 130.0}
    term.receive_stun(check(term), CLIENT_ADDR, 101.0)
    hellos = [addr for data, addr in shell.sent if data[0] == 22]
    assert hellos == [CLIENT_ADDR] and Timer.ICE not in shell.timers and term.state is State.HANDSHAKING


def test_an_ice_lite_client_without_a_check_fails_at_its_deadline():
    term, shell, metrics = termination(Certificate.generate(), role=Role.CLIENT, ice_lite=True)
    term.start_client(100.0)
    term.timer_expired(Timer.ICE, 130.0)
    assert term.state is State.FAILED and shell.reports == [(EVENT_DTLS_FAILED, "timeout")]
    assert metrics.registry.get_sample_value(
        "e2ae_mediad_dtls_handshakes_total", {"role": "client", "result": "timeout"}) == 1


def test_an_input_the_table_does_not_take_is_our_defect():
    term, _, _ = termination(Certificate.generate())
    assert (State.NEW, Input.HANDSHAKE_DONE) not in TRANSITIONS
    with pytest.raises(TerminationError, match="handshake_done in state new"):
        term._transition(Input.HANDSHAKE_DONE)
    assert term.state is State.NEW
    term.restore_failure("protocol_error")
    assert term.state is State.FAILED and term.reset() == [] and term.state is State.NEW


def test_closing_an_established_association_tells_the_peer():
    client, server = pair()
    (c, c_shell, _), (s, s_shell, _) = client, server
    c.start_client(100.0)
    exchange(client, server)
    c.close()
    assert c.state is State.CLOSED and c.dtls is None and c.srtp is None and c_shell.timers == {}
    (alert, addr), = c_shell.sent
    assert alert[0] == 21 and addr == SERVER_ADDR  # a DTLS alert record (close_notify) to the peer
    s.receive_dtls(alert, CLIENT_ADDR, 101.0)
    assert s.state is State.CLOSED and s_shell.changes == 1


@pytest.mark.parametrize("role", [Role.SERVER, None])
def test_a_dtls_record_cannot_end_an_association_restored_from_its_keys(role):
    """A restored association has its SRTP keys and no DTLS session: a ClientHello (anyone can
    send one) is dropped and counted; it neither starts a session nor takes the SRTP away (a new
    association comes with a re-offer, RFC 8842 section 5, which resets this one first)."""
    c = pair()[0][0]
    c.start_client(100.0)
    hello = c.shell.sent[-1][0]  # a real ClientHello
    term, shell, metrics = termination(Certificate.generate(), ice_lite=role is None)
    term.role = role
    keys = random_keys()
    term.restore(keys, CLIENT_ADDR)
    srtp = term.srtp
    term.receive_dtls(hello, ("198.51.100.7", 4000), 101.0)
    term.receive_dtls(hello, CLIENT_ADDR, 101.0)
    assert term.state is State.ESTABLISHED and term.srtp is srtp and term.dtls is None and term.keys == keys
    assert term.peer == CLIENT_ADDR and shell.sent == [] and shell.reports == []
    assert metrics.drop_counts["no_dtls_session"] == 2
    assert term.protect(rtp(1), True, 101.0) is not None
    term.reset()  # the re-offer's new association: a ClientHello now starts it
    term.receive_dtls(hello, CLIENT_ADDR, 102.0)
    assert term.state is State.HANDSHAKING and term.dtls is not None
