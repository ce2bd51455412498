"""DTLS 1.2 record protection of an established association, without OpenSSL's connection.

Implements, for the AEAD cipher suites only, the record layer of RFC 6347
section 4.1 (epoch and sequence number, 4.1.2.1; anti-replay window, 4.1.2.6)
with the key expansion of RFC 5246 section 6.3 (PRF, section 5) and the AEAD
record formats of RFC 5288 (AES-GCM: 4-byte salt, 8-byte explicit nonce) and
RFC 7905 (ChaCha20-Poly1305: 12-byte IV XORed with the sequence number).

Theory of operation
-------------------
An OpenSSL connection costs about 80 KiB after its handshake (record layer
buffers, the handshake state DTLS keeps for retransmissions, the session).  A
DTLS-SRTP association needs it for very little once established: alerts, the
odd application-data record, and the retransmission of our last flight.
:meth:`RecordProtection.from_connection` derives the epoch-1 keys from the
connection's master secret and randoms, so :class:`mediad.proto.dtls.DtlsSession`
can drop the connection and protect and check those few records itself.
:meth:`~RecordProtection.seal` numbers records exactly as OpenSSL does (the
explicit nonce is epoch and sequence number), so what goes out is what
OpenSSL would have sent.  Nothing here logs; keys are never shown.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

DTLS1_2_VERSION_BYTES = b"\xfe\xfd"
RECORD_HEADER_LENGTH = 13
EPOCH_1 = 1
REPLAY_WINDOW = 64  # RFC 6347 section 4.1.2.6
_GCM_EXPLICIT_NONCE = 8
_TAG = 16

# OpenSSL cipher name -> (AEAD, key length, fixed IV length, PRF hash): RFC 5289, RFC 7905.
AEAD_SUITES: dict[str, tuple[type, int, int, Callable]] = {
    "ECDHE-ECDSA-AES128-GCM-SHA256": (AESGCM, 16, 4, hashlib.sha256),
    "ECDHE-RSA-AES128-GCM-SHA256": (AESGCM, 16, 4, hashlib.sha256),
    "ECDHE-ECDSA-AES256-GCM-SHA384": (AESGCM, 32, 4, hashlib.sha384),
    "ECDHE-RSA-AES256-GCM-SHA384": (AESGCM, 32, 4, hashlib.sha384),
    "ECDHE-ECDSA-CHACHA20-POLY1305": (ChaCha20Poly1305, 32, 12, hashlib.sha256),
    "ECDHE-RSA-CHACHA20-POLY1305": (ChaCha20Poly1305, 32, 12, hashlib.sha256),
}


def prf(secret: bytes, label: bytes, seed: bytes, length: int, digest: Callable) -> bytes:
    """The TLS 1.2 PRF, P_<hash>(secret, label + seed) (RFC 5246 section 5)."""
    seed = label + seed
    out = b""
    a = seed
    while len(out) < length:
        a = hmac.new(secret, a, digest).digest()
        out += hmac.new(secret, a + seed, digest).digest()
    return out[:length]


def record_epoch(record: bytes) -> int:
    return int.from_bytes(record[3:5], "big")


def record_sequence(record: bytes) -> int:
    return int.from_bytes(record[5:11], "big")


def with_sequence(record: bytes, sequence: int) -> bytes:
    """The same unprotected (epoch-0) record under another sequence number."""
    return record[:5] + sequence.to_bytes(6, "big") + record[11:]


class RecordProtection:
    """Epoch-1 AEAD protection of one association: seal what we send, open what we receive."""

    __slots__ = (
        "_aead",
        "_fixed_iv_length",
        "_max_sequence",
        "_read_iv",
        "_read_key",
        "_window",
        "_write_iv",
        "_write_key",
        "write_sequence",
    )

    def __init__(self, aead: type, fixed_iv_length: int, read: tuple[bytes, bytes], write: tuple[bytes, bytes],
                 write_sequence: int) -> None:
        self._aead = aead
        self._fixed_iv_length = fixed_iv_length
        self._read_key, self._read_iv = read
        self._write_key, self._write_iv = write
        self.write_sequence = write_sequence  # the next epoch-1 sequence number we send
        self._max_sequence = -1
        self._window = 0  # bit i: sequence number _max_sequence - i was received

    @classmethod
    def from_connection(cls, conn, is_client: bool, write_sequence: int) -> RecordProtection | None:
        """The protection of an established pyOpenSSL DTLS connection; None for a suite not handled here."""
        suite = AEAD_SUITES.get((conn.get_cipher_name() or "").upper())
        if suite is None:
            return None
        aead, key_length, iv_length, digest = suite
        block = prf(conn.master_key(), b"key expansion", conn.server_random() + conn.client_random(),
                    2 * (key_length + iv_length), digest)
        client_key, server_key = block[:key_length], block[key_length : 2 * key_length]
        ivs = block[2 * key_length :]
        client = (client_key, ivs[:iv_length])
        server = (server_key, ivs[iv_length:])
        read, write = (server, client) if is_client else (client, server)
        return cls(aead, iv_length, read, write, write_sequence)

    def __repr__(self) -> str:
        return f"RecordProtection({self._aead.__name__}, keys=<hidden>)"

    # -- records -----------------------------------------------------------------

    def seal(self, content_type: int, plaintext: bytes) -> bytes:
        """One epoch-1 record carrying ``plaintext``, numbered with the next sequence number."""
        sequence = self.write_sequence
        self.write_sequence += 1
        return self._seal(content_type, plaintext, sequence, self._write_key, self._write_iv)

    def open(self, record: bytes) -> tuple[int, bytes] | None:
        """``(content type, plaintext)`` of an authentic, fresh epoch-1 record from the peer, else None."""
        sequence = self._check(record)
        if sequence is None:
            return None
        plaintext = self._open(record, self._read_key, self._read_iv)
        if plaintext is None:
            return None
        self._accept(sequence)
        return record[0], plaintext

    def open_own(self, record: bytes) -> bytes | None:
        """The plaintext of an epoch-1 record we sent (to check the keys and to retransmit it)."""
        if len(record) < RECORD_HEADER_LENGTH or record_epoch(record) != EPOCH_1:
            return None
        return self._open(record, self._write_key, self._write_iv)

    def _nonce(self, iv: bytes, seq_bytes: bytes, fragment: bytes) -> tuple[bytes, bytes] | None:
        """(nonce, ciphertext and tag) of a record fragment."""
        if self._fixed_iv_length == 4:  # RFC 5288 section 3
            if len(fragment) < _GCM_EXPLICIT_NONCE + _TAG:
                return None
            return iv + fragment[:_GCM_EXPLICIT_NONCE], fragment[_GCM_EXPLICIT_NONCE:]
        if len(fragment) < _TAG:  # RFC 7905 section 2
            return None
        padded = bytes(4) + seq_bytes
        return bytes(a ^ b for a, b in zip(iv, padded)), fragment

    def _seal(self, content_type: int, plaintext: bytes, sequence: int, key: bytes, iv: bytes) -> bytes:
        seq_bytes = EPOCH_1.to_bytes(2, "big") + sequence.to_bytes(6, "big")
        aad = seq_bytes + bytes([content_type]) + DTLS1_2_VERSION_BYTES + len(plaintext).to_bytes(2, "big")
        if self._fixed_iv_length == 4:
            sealed = seq_bytes + self._aead(key).encrypt(iv + seq_bytes, plaintext, aad)
        else:
            padded = bytes(4) + seq_bytes
            sealed = self._aead(key).encrypt(bytes(a ^ b for a, b in zip(iv, padded)), plaintext, aad)
        return bytes([content_type]) + DTLS1_2_VERSION_BYTES + seq_bytes + len(sealed).to_bytes(2, "big") + sealed

    def _open(self, record: bytes, key: bytes, iv: bytes) -> bytes | None:
        seq_bytes = record[3:11]
        parts = self._nonce(iv, seq_bytes, record[RECORD_HEADER_LENGTH:])
        if parts is None or record[1:3] != DTLS1_2_VERSION_BYTES:
            return None
        nonce, sealed = parts
        aad = seq_bytes + record[:1] + DTLS1_2_VERSION_BYTES + (len(sealed) - _TAG).to_bytes(2, "big")
        try:
            return self._aead(key).decrypt(nonce, sealed, aad)
        except InvalidTag:
            return None

    # -- anti-replay (RFC 6347 section 4.1.2.6) ---------------------------------------

    def _check(self, record: bytes) -> int | None:
        if len(record) < RECORD_HEADER_LENGTH or record_epoch(record) != EPOCH_1:
            return None
        sequence = record_sequence(record)
        if sequence > self._max_sequence:
            return sequence
        offset = self._max_sequence - sequence
        if offset >= REPLAY_WINDOW or self._window >> offset & 1:
            return None
        return sequence

    def _accept(self, sequence: int) -> None:
        if sequence > self._max_sequence:
            shift = sequence - self._max_sequence
            self._window = ((self._window << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self._max_sequence = sequence
        else:
            self._window |= 1 << (self._max_sequence - sequence)
