"""mediad.proto.dtls_record: the epoch-1 AEAD record layer without OpenSSL (RFC 6347 4.1, RFC 5288, RFC 7905).

Two RecordProtection objects with each other's keys stand for the two ends of
an association; the handshake tests (test_mediad_dtls_compact) derive the keys
from real OpenSSL connections.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from mediad.proto.dtls_record import (
    RECORD_HEADER_LENGTH, REPLAY_WINDOW, RecordProtection, prf, record_epoch, record_sequence, with_sequence,
)

APPLICATION_DATA = 23


def pair(gcm: bool = True) -> tuple[RecordProtection, RecordProtection]:
    """(sender, receiver) of one direction."""
    if gcm:
        a, b, aead, iv_length = (bytes(range(16)), b"\x01\x02\x03\x04"), (bytes(16), bytes(4)), AESGCM, 4
    else:
        a, b, aead, iv_length = (bytes(range(32)), bytes(range(12))), (bytes(32), bytes(12)), ChaCha20Poly1305, 12
    return RecordProtection(aead, iv_length, b, a, 0), RecordProtection(aead, iv_length, a, b, 0)


def test_record_header_fields():
    record = bytes([23, 0xFE, 0xFD, 0x01, 0x02, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0, 0])
    assert (record_epoch(record), record_sequence(record)) == (0x0102, 0x0A0B0C0D0E0F)
    renumbered = with_sequence(record, 0x010203040506)
    assert record_sequence(renumbered) == 0x010203040506 and renumbered[:5] == record[:5]


def test_seal_numbers_records_one_by_one_from_the_given_sequence():
    sender, receiver = pair()
    first, second = sender.seal(APPLICATION_DATA, b"a"), sender.seal(APPLICATION_DATA, b"b")
    assert [record_sequence(r) for r in (first, second)] == [0, 1] and sender.write_sequence == 2
    assert [record_epoch(r) for r in (first, second)] == [1, 1]
    assert receiver.open(second) == (APPLICATION_DATA, b"b") and receiver.open(first) == (APPLICATION_DATA, b"a")


@pytest.mark.parametrize("gcm", [True, False], ids=["aes-gcm", "chacha20-poly1305"])
def test_empty_records_round_trip(gcm):
    sender, receiver = pair(gcm)
    record = sender.seal(APPLICATION_DATA, b"")
    assert len(record) == RECORD_HEADER_LENGTH + (8 + 16 if gcm else 16)
    assert receiver.open(record) == (APPLICATION_DATA, b"")
    assert sender.open_own(record) == b""


def test_a_record_with_another_version_is_refused():
    sender, receiver = pair()
    record = sender.seal(APPLICATION_DATA, b"data")
    assert receiver.open(record[:1] + b"\xfe\xff" + record[3:]) is None
    assert receiver.open(record) == (APPLICATION_DATA, b"data")


def test_anti_replay_window_rfc6347_4_1_2_6():
    sender, receiver = pair()
    records = {}
    for _ in range(71):
        record = sender.seal(APPLICATION_DATA, b"x")
        records[record_sequence(record)] = record
    accepted = []
    for sequence in (0, 5, 3, 5, 3, 4, 0, 70, 7, 6, 7, 69):
        accepted.append(receiver.open(records[sequence]) is not None)
    # 0 new; 5 new; 3 out of order; 5 and 3 replays; 4 new; 0 replay; 70 new; 7 is 63 behind: in the
    # window; 6 is 64 behind: too old; 7 replayed; 69 new
    assert accepted == [True, True, True, False, False, True, False, True, True, False, False, True]
    assert REPLAY_WINDOW == 64


def test_the_window_remembers_out_of_order_records_after_it_moves():
    sender, receiver = pair()
    records = [sender.seal(APPLICATION_DATA, bytes([i])) for i in range(10)]
    for sequence in (2, 0, 9):
        assert receiver.open(records[sequence]) is not None
    assert receiver.open(records[0]) is None and receiver.open(records[2]) is None
    assert receiver.open(records[1]) is not None and receiver.open(records[1]) is None


def test_prf_is_rfc5246_p_hash():
    import hashlib
    import hmac

    secret, label, seed = b"secret", b"label", b"seed"
    a1 = hmac.new(secret, label + seed, hashlib.sha256).digest()
    a2 = hmac.new(secret, a1, hashlib.sha256).digest()
    expected = hmac.new(secret, a1 + label + seed, hashlib.sha256).digest() + hmac.new(
        secret, a2 + label + seed, hashlib.sha256).digest()
    assert prf(secret, label, seed, 40, hashlib.sha256) == expected[:40]
    assert prf(secret, label, seed, 32, hashlib.sha256) == expected[:32]
