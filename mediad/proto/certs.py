"""The AGW's DTLS certificate and certificate fingerprints.

RFC 8827 section 6.5 / RFC 5763 section 5: each DTLS endpoint uses a
self-signed certificate, authenticated only by the fingerprint carried in SDP.
Here the certificate is ECDSA on P-256 (the key WebRTC stacks generate), signed
with SHA-256, and its fingerprint is computed as RFC 8122 section 5 says: the
hash of the DER encoding, upper-case hex pairs joined by colons.

One :class:`Certificate` may serve any number of DTLS sessions (TS 23.334:
the AGW may reuse a certificate; the ALG keeps tls-id values unique, T38-9).
The private key never leaves this object except through :meth:`to_pem`, which
the daemon uses to keep the certificate across restarts.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import crypto

from iq import Fingerprint

# RFC 8122 section 5 hash function textual names accepted for fingerprints.
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha-1": hashes.SHA1,
    "sha-224": hashes.SHA224,
    "sha-256": hashes.SHA256,
    "sha-384": hashes.SHA384,
    "sha-512": hashes.SHA512,
}
FINGERPRINT_HASHES = tuple(_HASHES)


def certificate_fingerprint(x509_or_der: Any, hash_func: str) -> Fingerprint:
    """The RFC 8122 fingerprint of a certificate.

    ``x509_or_der`` is an ``OpenSSL.crypto.X509``, a ``cryptography``
    certificate, or the DER bytes; ``hash_func`` one of sha-1, sha-224,
    sha-256, sha-384, sha-512 (case-insensitive).  Raises ``ValueError`` for
    any other hash function.
    """
    name = hash_func.lower()
    algorithm = _HASHES.get(name)
    if algorithm is None:
        raise ValueError(f"unsupported fingerprint hash function {hash_func!r}")
    digest = hashes.Hash(algorithm())
    digest.update(_der(x509_or_der))
    value = digest.finalize().hex().upper()
    return Fingerprint(name, ":".join(value[i : i + 2] for i in range(0, len(value), 2)))


def _der(x509_or_der: Any) -> bytes:
    if isinstance(x509_or_der, (bytes, bytearray, memoryview)):
        return bytes(x509_or_der)
    if isinstance(x509_or_der, crypto.X509):
        x509_or_der = x509_or_der.to_cryptography()
    if isinstance(x509_or_der, x509.Certificate):
        return x509_or_der.public_bytes(serialization.Encoding.DER)
    raise TypeError(f"not a certificate: {type(x509_or_der).__name__}")


class Certificate:
    """A self-signed ECDSA P-256 certificate and its private key."""

    def __init__(self, x509_cert: crypto.X509, key: crypto.PKey) -> None:
        self.x509 = x509_cert
        self.key = key
        self._fingerprints: dict[str, Fingerprint] = {}

    @classmethod
    def generate(cls, common_name: str = "e2ae-edge", days: int = 30) -> "Certificate":
        """A fresh key and a certificate valid from one day ago for ``days`` days."""
        private_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(tz=datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private_key.public_key())
            .serial_number(int.from_bytes(os.urandom(16), "big") >> 1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(private_key, hashes.SHA256())
        )
        return cls(crypto.X509.from_cryptography(cert), crypto.PKey.from_cryptography_key(private_key))

    def fingerprint(self, hash_func: str = "sha-256") -> Fingerprint:
        """The certificate's RFC 8122 fingerprint with ``hash_func``."""
        name = hash_func.lower()
        cached = self._fingerprints.get(name)
        if cached is None:
            cached = self._fingerprints[name] = certificate_fingerprint(self.x509, name)
        return cached

    def to_pem(self) -> tuple[bytes, bytes]:
        """``(cert_pem, key_pem)``; the key in unencrypted PKCS#8 (keep it secret)."""
        cert_pem = self.x509.to_cryptography().public_bytes(serialization.Encoding.PEM)
        key_pem = self.key.to_cryptography_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert_pem, key_pem

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> "Certificate":
        """Load what :meth:`to_pem` wrote; ``ValueError`` if the two do not belong together."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        private_key = serialization.load_pem_private_key(key_pem, password=None)
        public_der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if cert.public_key().public_bytes(*public_der) != private_key.public_key().public_bytes(*public_der):
            raise ValueError("the private key does not match the certificate")
        return cls(crypto.X509.from_cryptography(cert), crypto.PKey.from_cryptography_key(private_key))

    def __repr__(self) -> str:
        return f"Certificate({self.fingerprint()})"
