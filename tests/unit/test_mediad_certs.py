"""mediad.proto.certs: the AGW's self-signed ECDSA certificate and RFC 8122 fingerprints."""

from __future__ import annotations

import datetime

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mediad.proto.certs import Certificate, certificate_fingerprint
from mediad.proto.dtls import DtlsSession, HandshakeComplete
from iq import Fingerprint, Role

OPENSSL_DIGESTS = {"sha-1": "sha1", "sha-224": "sha224", "sha-256": "sha256", "sha-384": "sha384", "sha-512": "sha512"}


@pytest.fixture(scope="module")
def cert() -> Certificate:
    return Certificate.generate("agw.test", days=10)


def test_generated_certificate_is_self_signed_p256(cert):
    x509 = cert.x509.to_cryptography()
    assert x509.issuer == x509.subject
    assert x509.subject.rfc4514_string() == "CN=agw.test"
    assert isinstance(x509.public_key(), ec.EllipticCurvePublicKey)
    assert x509.public_key().curve.name == "secp256r1"
    assert isinstance(x509.signature_hash_algorithm, hashes.SHA256)
    x509.verify_directly_issued_by(x509)
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    assert x509.not_valid_before_utc < now < x509.not_valid_after_utc
    assert x509.not_valid_after_utc - now < datetime.timedelta(days=10, minutes=1)


@pytest.mark.req("T38-9")
@pytest.mark.parametrize("hash_func", list(OPENSSL_DIGESTS))
def test_fingerprints_match_openssl_digest(cert, hash_func):
    fp = cert.fingerprint(hash_func)
    assert fp.hash_func == hash_func
    assert fp.value == cert.x509.digest(OPENSSL_DIGESTS[hash_func]).decode()
    assert Fingerprint.parse(str(fp)) == fp  # a valid a=fingerprint value
    der = cert.x509.to_cryptography().public_bytes(serialization.Encoding.DER)
    for form in (cert.x509, cert.x509.to_cryptography(), der):
        assert certificate_fingerprint(form, hash_func.upper()) == fp


def test_default_fingerprint_and_uniqueness(cert):
    assert cert.fingerprint() == cert.fingerprint("sha-256")
    assert Certificate.generate().fingerprint() != cert.fingerprint()
    with pytest.raises(ValueError):
        certificate_fingerprint(cert.x509, "md5")
    with pytest.raises(TypeError):
        certificate_fingerprint("not a certificate", "sha-256")


@pytest.mark.req("T38-9")
def test_pem_round_trip_keeps_identity_and_serves_dtls(cert):
    cert_pem, key_pem = cert.to_pem()
    assert cert_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    again = Certificate.from_pem(cert_pem, key_pem)
    assert again.fingerprint("sha-512") == cert.fingerprint("sha-512")
    assert repr(again) == repr(cert) and "PRIVATE" not in repr(again)
    # The reloaded certificate authenticates a handshake under the old fingerprint.
    peer = Certificate.generate()
    client = DtlsSession(peer, Role.CLIENT, srtp=False, remote_fingerprints=[cert.fingerprint()])
    server = DtlsSession(again, Role.SERVER, srtp=False, remote_fingerprints=[peer.fingerprint()])
    client.start(0.0)
    for _ in range(6):
        for src, dst in ((client, server), (server, client)):
            for datagram in src.datagrams_to_send():
                dst.receive(datagram, 0.0)
    event = client.next_event()
    assert isinstance(event, HandshakeComplete) and event.peer_fingerprint == cert.fingerprint()


def test_from_pem_rejects_a_foreign_key(cert):
    cert_pem, _ = cert.to_pem()
    _, other_key = Certificate.generate().to_pem()
    with pytest.raises(ValueError):
        Certificate.from_pem(cert_pem, other_key)
