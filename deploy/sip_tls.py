"""The certificate of the edge's TLS and WSS SIP sockets, and Kamailio's ``tls.cfg`` for it.

``[edge] tls_certificate`` / ``tls_private_key`` name a PEM certificate (chain)
and its key; when both are empty, :func:`ensure_certificate` makes a
self-signed one for the loopback demo (ECDSA P-256, SHA-256, valid one year,
subjectAltName: every address the configuration's sockets bind or advertise)
under the run directory, never in the repository.  :func:`spki_sha256` is what
Chromium's ``--ignore-certificate-errors-spki-list`` pins.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mediad.config import sip_sockets

CERT_NAME = "edge-tls.pem"
KEY_NAME = "edge-tls.key"
TLS_CFG_NAME = "tls.cfg"


def tls_names(config) -> list[str]:
    """Every address the SIP sockets bind or advertise (the self-signed certificate's SANs)."""
    names: list[str] = []
    for _, _, sock in sip_sockets(config):
        for host in (sock.host, sock.public.host):
            if host not in names:
                names.append(host)
    return names or ["127.0.0.1"]


def make_self_signed(names: list[str], cert_path: Path, key_path: Path, days: int = 365) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "e2ae edge (self-signed)")])
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_certificate(config, directory: Path) -> tuple[Path, Path]:
    """The configured certificate and key, else a self-signed pair under ``directory`` (made once)."""
    if config.edge_tls_certificate:
        return Path(config.edge_tls_certificate), Path(config.edge_tls_private_key)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / CERT_NAME, directory / KEY_NAME
    names = tls_names(config)
    if not (cert.exists() and key.exists() and _covers(cert, names)):
        make_self_signed(names, cert, key)
    return cert, key


def _covers(cert_path: Path, names: list[str]) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.not_valid_after_utc < datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
    return set(names) <= have


def write_tls_cfg(cert: Path, key: Path, path: Path) -> Path:
    """Kamailio's tls module configuration: this certificate for every server socket; as a
    client (TLS toward the core) the peer's certificate is not verified (no CA configured)."""
    path.write_text(
        "[server:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = no\n"
        "require_certificate = no\n"
        f"certificate = {cert}\n"
        f"private_key = {key}\n"
        "\n[client:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = no\n"
        "require_certificate = no\n")
    return path


def spki_sha256(cert_path: Path) -> str:
    """Base64 SHA-256 of the certificate's SubjectPublicKeyInfo (Chromium's SPKI pin)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


__all__ = ["ensure_certificate", "make_self_signed", "spki_sha256", "tls_names", "write_tls_cfg"]
