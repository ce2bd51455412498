"""mediad.proto.dtls compaction: an established DTLS-SRTP session without its OpenSSL connection.

Each test runs the same peer input against a compacted session and against one
that keeps OpenSSL (``compact=False``), and requires the same records, states
and events from both.
"""

from __future__ import annotations

import time

import pytest
from OpenSSL import SSL

from mediad.proto.certs import Certificate
from mediad.proto.dtls import (
    ApplicationData,
    Closed,
    DtlsSession,
    HandshakeComplete,
    split_records,
)
from mediad.proto.dtls_record import record_epoch
from iq import Role
from tests.unit.test_mediad_dtls import events, pump


@pytest.fixture(scope="module")
def agw_cert() -> Certificate:
    return Certificate.generate("agw")


@pytest.fixture(scope="module")
def wic_cert() -> Certificate:
    return Certificate.generate("wic")


def established(agw_cert, wic_cert, agw_role: Role, compact: bool):
    """(agw, wic), handshaken; the WIC is compact so that it can seal any record as the peer."""
    wic_role = Role.CLIENT if agw_role is Role.SERVER else Role.SERVER
    agw = DtlsSession(agw_cert, agw_role, srtp=True, remote_fingerprints=[wic_cert.fingerprint()], compact=compact)
    wic = DtlsSession(wic_cert, wic_role, srtp=True, remote_fingerprints=[agw_cert.fingerprint()])
    agw.start(0.0)
    wic.start(0.0)
    pump(agw, wic)
    assert [type(e) for e in events(agw)] == [HandshakeComplete]
    events(wic)
    assert wic.compacted and agw.compacted is compact
    return agw, wic


def run(agw_cert, wic_cert, agw_role, compact, records):
    """What the AGW sends (record type and plaintext), its state and events, per peer record, then on close."""
    agw, wic = established(agw_cert, wic_cert, agw_role, compact)
    log = []
    for content_type, plaintext in records:
        agw.receive(wic._protection.seal(content_type, plaintext), 1.0)
        sent = [r for d in agw.datagrams_to_send() for r in split_records(d)]
        log.append(([(r[0], wic._protection.open(r)) for r in sent], agw.state, events(agw)))
    agw.close()
    sent = [r for d in agw.datagrams_to_send() for r in split_records(d)]
    log.append(([(r[0], wic._protection.open(r)) for r in sent], agw.state))
    return log


def _handshake(kind: int, body: bytes = b"", message_seq: int = 0) -> bytes:
    """A DTLS handshake message (RFC 6347 section 4.2.2), unfragmented."""
    length = len(body).to_bytes(3, "big")
    return bytes([kind]) + length + message_seq.to_bytes(2, "big") + bytes(3) + length + body


WARNING = (21, b"\x01\x5a")  # user_canceled
PEER_INPUTS = {
    "application data": [(23, b"hello"), (23, b""), (23, b"again")],
    "close_notify": [(21, b"\x01\x00"), (23, b"late")],
    "fatal alert": [(21, b"\x02\x28")],
    "no_renegotiation warning": [(21, b"\x01\x64")],
    "malformed alert": [(21, b"\x01")],
    "warnings": [WARNING] * 4 + [(23, b"x")] + [WARNING] * 4 + [(23, b""), WARNING],
    "ClientHello": [(22, _handshake(1, b"hello")), (23, b"x")],
    "HelloRequest": [(22, _handshake(0)), (23, b"x")],
    "change cipher spec": [(20, b"\x01"), (23, b"x")],
    "heartbeat": [(24, b"\x01")],
}


@pytest.mark.parametrize("agw_role", [Role.SERVER, Role.CLIENT])
@pytest.mark.parametrize("name", list(PEER_INPUTS))
def test_compact_session_answers_as_openssl_does(agw_cert, wic_cert, agw_role, name):
    reference = run(agw_cert, wic_cert, agw_role, False, PEER_INPUTS[name])
    assert run(agw_cert, wic_cert, agw_role, True, PEER_INPUTS[name]) == reference


@pytest.mark.parametrize("agw_role", [Role.SERVER, Role.CLIENT])
def test_established_srtp_session_is_compacted_and_keeps_working_with_openssl(agw_cert, wic_cert, agw_role):
    # The WIC keeps OpenSSL: it checks what the compact AGW seals, and the AGW opens what OpenSSL seals.
    wic_role = Role.CLIENT if agw_role is Role.SERVER else Role.SERVER
    agw = DtlsSession(agw_cert, agw_role, srtp=True, remote_fingerprints=[wic_cert.fingerprint()])
    wic = DtlsSession(wic_cert, wic_role, srtp=True, remote_fingerprints=[agw_cert.fingerprint()], compact=False)
    agw.start(0.0)
    wic.start(0.0)
    pump(agw, wic)
    events(agw), events(wic)
    assert agw.compacted and agw._ssl is None and agw.timeout() is None
    wic.send_application_data(b"to agw")
    agw.send_application_data(b"to wic")
    pump(agw, wic)
    assert events(agw) == [ApplicationData(b"to agw")]
    assert events(wic) == [ApplicationData(b"to wic")]
    agw.close()
    pump(agw, wic)
    assert events(wic) == [Closed()] and wic.state == "closed"


def test_forged_replayed_and_old_epoch_records_are_dropped_silently(agw_cert, wic_cert):
    agw, wic = established(agw_cert, wic_cert, Role.SERVER, True)
    record = wic._protection.seal(23, b"once")
    agw.receive(record, 1.0)
    assert events(agw) == [ApplicationData(b"once")]
    agw.receive(record, 1.0)  # replayed
    forged = record[:-1] + bytes([record[-1] ^ 1])
    agw.receive(forged, 1.0)
    agw.receive(wic._protection.seal(21, b"\x01\x00")[:3] + b"\x00\x00" + record[5:], 1.0)  # epoch 0
    assert events(agw) == [] and agw.state == "established" and agw.datagrams_to_send() == []
    assert agw.dropped == 0  # well-framed records are not "dropped datagrams" (as with OpenSSL)


def _flight_six_lost(agw_cert, wic_cert, compact: bool):
    """The AGW (server) sends its last flight into the void; the WIC (OpenSSL) retransmits its Finished."""
    wic = DtlsSession(wic_cert, Role.CLIENT, srtp=True, remote_fingerprints=[agw_cert.fingerprint()], compact=False)
    agw = DtlsSession(agw_cert, Role.SERVER, srtp=True, remote_fingerprints=[wic_cert.fingerprint()],
                      compact=compact)
    start = time.monotonic()
    wic.start(start)
    for datagram in wic.datagrams_to_send():  # ClientHello
        agw.receive(datagram, start)
    for datagram in agw.datagrams_to_send():  # ServerHello .. ServerHelloDone
        wic.receive(datagram, start)
    for datagram in wic.datagrams_to_send():  # Certificate .. Finished
        agw.receive(datagram, start)
    lost = agw.datagrams_to_send()  # ChangeCipherSpec, Finished
    assert agw.state == "established" and wic.state == "handshaking"
    assert agw.compacted is compact
    time.sleep(max(0.0, wic.timeout() - time.monotonic()) + 0.02)
    wic.handle_timeout(time.monotonic())
    for datagram in wic.datagrams_to_send():
        agw.receive(datagram, time.monotonic())
    again = agw.datagrams_to_send()
    for datagram in again:
        wic.receive(datagram, time.monotonic())
    return lost, again, wic


@pytest.mark.req("T38-8")
def test_compact_server_resends_its_lost_last_flight_as_openssl_does(agw_cert, wic_cert):
    lost, again, wic = _flight_six_lost(agw_cert, wic_cert, compact=True)
    assert wic.state == "established"
    assert [type(e) for e in events(wic)] == [HandshakeComplete]

    def shape(datagrams):
        return [(r[0], record_epoch(r), int.from_bytes(r[5:11], "big"), len(r))
                for d in datagrams for r in split_records(d)]

    _, reference, _ = _flight_six_lost(agw_cert, wic_cert, compact=False)
    assert shape(again) == shape(reference)
    assert shape(again) != shape(lost)  # renumbered, as OpenSSL does


def _openssl_client(cert: Certificate, suite: bytes) -> SSL.Connection:
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.use_certificate(cert.x509.to_cryptography())
    ctx.use_privatekey(cert.key.to_cryptography_key())
    ctx.set_cipher_list(suite)
    ctx.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
    ctx.set_verify(SSL.VERIFY_PEER, lambda *args: True)
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    return conn


def _drive(conn: SSL.Connection, agw: DtlsSession) -> None:
    for _ in range(20):
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            pass
        sent = False
        while True:
            try:
                agw.receive(conn.bio_read(65536), 0.0)
                sent = True
            except SSL.WantReadError:
                break
        back = agw.datagrams_to_send()
        for datagram in back:
            conn.bio_write(datagram)
        if not sent and not back:
            return


@pytest.mark.parametrize("suite,compacted", [
    (b"ECDHE-ECDSA-AES128-GCM-SHA256", True),
    (b"ECDHE-ECDSA-AES256-GCM-SHA384", True),
    (b"ECDHE-ECDSA-CHACHA20-POLY1305", True),
    (b"ECDHE-ECDSA-AES128-SHA", False),  # not an AEAD suite: the OpenSSL connection stays
])
def test_each_suite_either_compacts_or_keeps_openssl(agw_cert, wic_cert, suite, compacted):
    conn = _openssl_client(wic_cert, suite)
    agw = DtlsSession(agw_cert, Role.SERVER, srtp=True, remote_fingerprints=[wic_cert.fingerprint()])
    _drive(conn, agw)
    assert agw.state == "established" and conn.get_cipher_name() == suite.decode()
    assert agw.compacted is compacted
    events(agw)
    conn.send(b"from the peer")
    agw.receive(conn.bio_read(65536), 0.0)
    assert events(agw) == [ApplicationData(b"from the peer")]
    agw.close()
    for datagram in agw.datagrams_to_send():
        conn.bio_write(datagram)
    with pytest.raises(SSL.ZeroReturnError):
        conn.recv(65536)


def test_sessions_without_srtp_are_not_compacted(agw_cert, wic_cert):
    agw = DtlsSession(agw_cert, Role.SERVER, srtp=False, remote_fingerprints=[wic_cert.fingerprint()])
    wic = DtlsSession(wic_cert, Role.CLIENT, srtp=False, remote_fingerprints=[agw_cert.fingerprint()])
    wic.start(0.0)
    pump(agw, wic)
    assert agw.state == "established" and not agw.compacted
