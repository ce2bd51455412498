"""DTLS-SRTP client load: many pyOpenSSL DTLS clients on one UDP socket.

Theory of operation
-------------------
Each :class:`Peer` is one pyOpenSSL ``Connection`` on memory BIOs, in the DTLS
client role, offering only SRTP_AES128_CM_SHA1_80 (RFC 5764).  All peers share
one UDP socket (the address mediad will later send SRTP to, or that the
generator later sends from); a datagram is handed to the peer whose server
address it came from.  :func:`handshake_all` keeps ``window`` handshakes in
flight, drives the DTLS retransmission timers, and returns, per server
address, the SRTP master keys from the RFC 5764 section 4.2 exporter: the
client's write key (to protect what the generator sends) and the server's
write key (to verify what mediad sends).  The elapsed time gives the
handshakes per second completed against that client load.

The client certificate is a throw-away ECDSA P-256 one; its SHA-256
fingerprint goes into the Iq request as the "Remote certificate fingerprint"
IE, so mediad verifies it exactly as it verifies a WebRTC client.
"""

from __future__ import annotations

import datetime
import select
import socket
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

SRTP_PROFILE = b"SRTP_AES128_CM_SHA1_80"
EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"
KEY_LEN, SALT_LEN = 16, 14


class HandshakeError(RuntimeError):
    """Some handshakes did not complete in time."""


def client_identity():
    """(certificate, private key, 'sha-256' fingerprint text) of a fresh client."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "e2ae-bench")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7)).sign(key, hashes.SHA256()))
    digest = cert.fingerprint(hashes.SHA256())
    return cert, key, ":".join(f"{b:02X}" for b in digest)


def _context(cert, key) -> SSL.Context:
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU)
    ctx.use_certificate(cert)
    ctx.use_privatekey(key)
    ctx.set_verify(SSL.VERIFY_PEER, lambda *args: True)  # mediad's certificate is self-signed
    ctx.set_tlsext_use_srtp(SRTP_PROFILE)
    return ctx


@dataclass
class SrtpMaterial:
    client_write: bytes  # key + salt the client protects with
    server_write: bytes  # key + salt the server protects with


class Peer:
    def __init__(self, ctx: SSL.Context, server: tuple[str, int]) -> None:
        self.server = server
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_ciphertext_mtu(1200)
        self.conn.set_connect_state()
        self.done = False
        self.material: SrtpMaterial | None = None
        self.next_timer: float | None = None

    def step(self, sock: socket.socket, now: float) -> None:
        if not self.done:
            try:
                self.conn.do_handshake()
                self.done = True
                m = self.conn.export_keying_material(EXPORTER_LABEL, 2 * (KEY_LEN + SALT_LEN))
                ck, sk = m[:KEY_LEN], m[KEY_LEN:2 * KEY_LEN]
                cs, ss = m[2 * KEY_LEN:2 * KEY_LEN + SALT_LEN], m[2 * KEY_LEN + SALT_LEN:]
                self.material = SrtpMaterial(ck + cs, sk + ss)
            except SSL.WantReadError:
                pass
        self.flush(sock)
        timeout = None if self.done else self.conn.DTLSv1_get_timeout()
        self.next_timer = None if timeout is None else now + timeout

    def flush(self, sock: socket.socket) -> None:
        while True:
            try:
                data = self.conn.bio_read(65535)
            except SSL.WantReadError:
                return
            if not data:
                return
            sock.sendto(data, self.server)

    def receive(self, data: bytes, sock: socket.socket, now: float) -> None:
        self.conn.bio_write(data)
        self.step(sock, now)

    def on_timer(self, sock: socket.socket, now: float) -> None:
        self.conn.DTLSv1_handle_timeout()
        self.step(sock, now)


def handshake_all(local: tuple[str, int], servers: list[tuple[str, int]], cert, key, *,
                  window: int = 64, timeout: float = 60.0) -> tuple[dict[tuple[str, int], SrtpMaterial], float]:
    """Handshake with every server from one socket bound to ``local``; (keys, seconds)."""
    ctx = _context(cert, key)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(local)
    sock.setblocking(False)
    pending = list(reversed(servers))
    active: dict[tuple[str, int], Peer] = {}
    results: dict[tuple[str, int], SrtpMaterial] = {}
    started = time.monotonic()
    deadline = started + timeout
    try:
        while pending or active:
            now = time.monotonic()
            if now > deadline:
                raise HandshakeError(f"{len(pending) + len(active)} of {len(servers)} DTLS handshakes "
                                     f"did not complete within {timeout:.0f}s")
            while pending and len(active) < window:
                peer = Peer(ctx, pending.pop())
                active[peer.server] = peer
                peer.step(sock, now)
            timers = [p.next_timer for p in active.values() if p.next_timer is not None]
            wait = max(0.0, min(timers) - now) if timers else 0.05
            readable, _, _ = select.select([sock], [], [], min(wait, 0.05))
            now = time.monotonic()
            if readable:
                for _ in range(256):
                    try:
                        data, addr = sock.recvfrom(65535)
                    except BlockingIOError:
                        break
                    peer = active.get(addr)
                    if peer is not None:
                        peer.receive(data, sock, now)
            for server, peer in list(active.items()):
                if peer.done:
                    assert peer.material is not None
                    results[server] = peer.material
                    del active[server]
                elif peer.next_timer is not None and peer.next_timer <= now:
                    peer.on_timer(sock, now)
    finally:
        sock.close()
    return results, time.monotonic() - started
