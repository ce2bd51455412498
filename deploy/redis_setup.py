"""The Redis that ``deploy/e2ae run`` starts: its command line, TLS files and ACL file.

* :func:`redis_command`: ``redis-server`` on loopback, persistent (append-only
  file), with either a password for the ``default`` user (``requirepass``) or
  an ACL file; with TLS, the plain port is closed (``--port 0``) and
  ``tls-port`` opened with a certificate of this machine's own CA.
* :func:`ensure_tls`: the CA and the server's certificate and key (ECDSA
  P-256, SHA-256), made once under the run directory, keys mode 0600: clients
  check the server against the CA (``[redis] ca_file``).  A client
  certificate is not asked for (``tls-auth-clients no``): clients prove who
  they are with their ACL user's password, over the TLS channel.
* :func:`acl_file`: one ACL user per component (:data:`mediad.redis_keys.ACL_RULES`:
  only the commands and key patterns each needs), passwords stored as their
  SHA-256 (``#<hex>``, never in clear), and the ``default`` user off.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import shutil
from pathlib import Path

from mediad.redis_keys import ACL_RULES, Component

CA_NAME = "redis-ca.pem"
CA_KEY_NAME = "redis-ca.key"
CERT_NAME = "redis-server.pem"
KEY_NAME = "redis-server.key"
ACL_NAME = "users.acl"
# The ACL user of each component when the configuration names none.
DEFAULT_USERS = {Component.PLUGIN: "e2ae-plugin", Component.MEDIAD: "e2ae-mediad", Component.CTL: "e2ae-ctl"}


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)


def ensure_tls(directory: Path, host: str, days: int = 365) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) under ``directory``, made once.

    The server's certificate names ``host`` (an IP address or a DNS name).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca_path, cert_path, key_path = directory / CA_NAME, directory / CERT_NAME, directory / KEY_NAME
    if ca_path.exists() and cert_path.exists() and key_path.exists() and _names(cert_path, host):
        return ca_path, cert_path, key_path
    now = datetime.datetime.now(datetime.timezone.utc)
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "e2ae edge Redis CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "e2ae edge Redis")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    private = serialization.PrivateFormat.PKCS8
    _write_private(directory / CA_KEY_NAME, ca_key.private_bytes(pem, private, serialization.NoEncryption()))
    _write_private(key_path, key.private_bytes(pem, private, serialization.NoEncryption()))
    _write_private(ca_path, ca.public_bytes(pem))
    _write_private(cert_path, cert.public_bytes(pem))
    return ca_path, cert_path, key_path


def _names(cert_path: Path, host: str) -> bool:
    """Whether the certificate names ``host`` and is valid for a day more."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.not_valid_after_utc < datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1):
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
    return host in names


def acl_line(username: str, password: str, rules: str) -> str:
    """One ``user`` line of an ACL file: on, the password's SHA-256, nothing but ``rules``."""
    if not username or any(c.isspace() for c in username):
        raise ValueError(f"an ACL user name without spaces is needed, got {username!r}")
    digest = hashlib.sha256(password.encode()).hexdigest()
    return f"user {username} on #{digest} resetkeys resetchannels -@all {rules}"


def acl_file(users: dict[Component, tuple[str, str]]) -> str:
    """The ACL file: ``default`` off, one user per component (``users``: name, password)."""
    lines = ["user default off resetkeys resetchannels -@all"]
    lines += [acl_line(name, password, ACL_RULES[component]) for component, (name, password) in users.items()]
    return "\n".join(lines) + "\n"


def write_acl_file(path: Path, users: dict[Component, tuple[str, str]]) -> Path:
    _write_private(path, acl_file(users).encode())
    return path


def redis_command(host: str, port: int, password: str, directory: Path, *, acl: Path | None = None,
                  tls: tuple[Path, Path, Path] | None = None, appendonly: bool = True) -> list[str]:
    """redis-server on ``host`` with a password (or ``acl``), an append-only file in ``directory``,
    and with ``tls`` (CA, certificate, key) TLS only on ``port``."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    cmd = [exe, "--bind", host, "--protected-mode", "yes", "--save", "", "--dir", str(directory)]
    cmd += ["--appendonly", "yes", "--appendfsync", "everysec"] if appendonly else ["--appendonly", "no"]
    if tls is not None:
        ca, cert, key = tls
        cmd += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
    else:
        cmd += ["--port", str(port)]
    if acl is not None:
        cmd += ["--aclfile", str(acl)]
    else:
        cmd += ["--requirepass", password]
    return cmd


__all__ = ["DEFAULT_USERS", "acl_file", "acl_line", "ensure_tls", "redis_command", "write_acl_file"]
