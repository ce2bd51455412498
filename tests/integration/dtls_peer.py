"""A blocking DTLS peer on pyOpenSSL, for mediad tests (T.38, SRTP without rtcp-mux).

It plays the UE: its own self-signed ECDSA certificate, DTLS 1.2 in either
role over one UDP socket on 127.0.0.1, optional DTLS-SRTP key export
(RFC 5764 section 4.2) into pylibsrtp sessions, and a minimal ICE client
(STUN Binding requests with short-term credentials, aioice's STUN code).
Every wait is bounded.
"""

from __future__ import annotations

import datetime
import os
import socket
import time

import pylibsrtp
from aioice import stun
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

from iq import Fingerprint

PROFILE = b"SRTP_AES128_CM_SHA1_80"


def make_certificate() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test-ue")])
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(int.from_bytes(os.urandom(8), "big")).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2)).sign(key, hashes.SHA256()))
    return cert, key


def fingerprint_of(cert: x509.Certificate, hash_func: str = "sha-256") -> Fingerprint:
    algorithm = {"sha-1": hashes.SHA1, "sha-256": hashes.SHA256, "sha-384": hashes.SHA384,
                 "sha-512": hashes.SHA512}[hash_func]
    digest = hashes.Hash(algorithm())
    digest.update(cert.public_bytes(serialization.Encoding.DER))
    value = digest.finalize().hex().upper()
    return Fingerprint(hash_func, ":".join(value[i:i + 2] for i in range(0, len(value), 2)))


class DtlsPeer:
    def __init__(self, role: str, *, srtp: bool = False, host: str = "127.0.0.1", certificate=None) -> None:
        self.role = role
        self.cert, self.key = certificate or make_certificate()
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.use_certificate(self.cert)
        ctx.use_privatekey(self.key)
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
        if srtp:
            ctx.set_tlsext_use_srtp(PROFILE)
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_ciphertext_mtu(1200)
        if role == "client":
            self.conn.set_connect_state()
        else:
            self.conn.set_accept_state()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.remote: tuple[str, int] | None = None
        self.tx: pylibsrtp.Session | None = None
        self.rx: pylibsrtp.Session | None = None
        self.established = False
        self.alerted = False

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def fingerprint(self, hash_func: str = "sha-256") -> Fingerprint:
        return fingerprint_of(self.cert, hash_func)

    def close(self) -> None:
        self.sock.close()

    # -- DTLS ---------------------------------------------------------------------
    def _flush(self) -> None:
        while True:
            try:
                data = self.conn.bio_read(65536)
            except SSL.Error:
                return
            if self.remote is not None:
                self.sock.sendto(data, self.remote)

    def _step(self) -> bool:
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return False
        self._flush()
        return True

    def handshake(self, remote: tuple[str, int] | None, timeout: float = 5.0) -> bool:
        """Run the handshake; True when done, False on failure or timeout."""
        self.remote = remote
        deadline = time.monotonic() + timeout
        if self.role == "client":
            if self._step():
                return self._done()
        while time.monotonic() < deadline:
            wait = self.conn.DTLSv1_get_timeout()
            wait = min(wait if wait is not None else 0.2, 0.2, max(deadline - time.monotonic(), 0.01))
            self.sock.settimeout(wait)
            try:
                data, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                try:
                    self.conn.DTLSv1_handle_timeout()
                except SSL.Error:
                    return False
                self._flush()
                continue
            if data[0] < 20 or data[0] > 63:
                continue  # STUN answers, early SRTP
            if self.remote is None:
                self.remote = addr
            self.conn.bio_write(data)
            try:
                if self._step():
                    return self._done()
            except SSL.Error:
                self.alerted = True
                return False
        return False

    def _done(self) -> bool:
        self.established = True
        profile = self.conn.get_selected_srtp_profile()
        if profile:
            material = self.conn.export_keying_material(b"EXTRACTOR-dtls_srtp", 60)
            ck, sk, cs, ss = material[:16], material[16:32], material[32:46], material[46:60]
            local, remote = (ck + cs, sk + ss) if self.role == "client" else (sk + ss, ck + cs)
            self.tx = pylibsrtp.Session(pylibsrtp.Policy(
                key=local, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
            self.rx = pylibsrtp.Session(pylibsrtp.Policy(
                key=remote, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
        return True

    def send_data(self, data: bytes) -> None:
        self.conn.send(data)
        self._flush()

    def recv_data(self, timeout: float = 2.0) -> bytes | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data, _ = self.sock.recvfrom(65536)
            except socket.timeout:
                return None
            if not 20 <= data[0] <= 63:
                continue
            self.conn.bio_write(data)
            try:
                return self.conn.recv(65536)
            except SSL.WantReadError:
                self._flush()
                continue
            except (SSL.ZeroReturnError, SSL.Error):
                self.alerted = True
                return None
        return None

    # -- SRTP ---------------------------------------------------------------------
    def send_rtp(self, packet: bytes) -> None:
        assert self.tx is not None and self.remote is not None
        self.sock.sendto(self.tx.protect(packet), self.remote)

    def send_rtcp(self, packet: bytes) -> None:
        assert self.tx is not None and self.remote is not None
        self.sock.sendto(self.tx.protect_rtcp(packet), self.remote)

    def recv_media(self, timeout: float = 2.0, rtcp: bool = False) -> bytes | None:
        """The next SRTP (or SRTCP) packet, decrypted; None on timeout."""
        assert self.rx is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data, _ = self.sock.recvfrom(65536)
            except socket.timeout:
                return None
            if not 128 <= data[0] <= 191:
                continue
            is_rtcp = 192 <= data[1] <= 223
            if is_rtcp != rtcp:
                continue
            return self.rx.unprotect_rtcp(data) if rtcp else self.rx.unprotect(data)
        return None

    # -- ICE (the full agent's side toward an ICE-lite mediad) ----------------------
    def stun_check(self, remote: tuple[str, int], local_ufrag: str, remote_ufrag: str, remote_pwd: str,
                   use_candidate: bool = True, timeout: float = 1.0) -> stun.Message | None:
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{remote_ufrag}:{local_ufrag}"
        request.attributes["PRIORITY"] = 1853824767
        request.attributes["ICE-CONTROLLING"] = 12345
        if use_candidate:
            request.attributes["USE-CANDIDATE"] = None
        request.add_message_integrity(remote_pwd.encode())
        request.add_fingerprint()
        self.sock.sendto(bytes(request), remote)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data, _ = self.sock.recvfrom(65536)
            except socket.timeout:
                return None
            if data[0] < 4:
                message = stun.parse_message(data)
                if message.transaction_id == request.transaction_id:
                    return message
        return None


def rtp_packet(seq: int, ssrc: int = 0x11223344, payload: bytes | None = None, pt: int = 0) -> bytes:
    payload = os.urandom(160) if payload is None else payload
    return bytes([0x80, pt & 0x7F]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big") + \
        ssrc.to_bytes(4, "big") + payload


def rtcp_rr(ssrc: int = 0x11223344) -> bytes:
    """An RTCP receiver report with no report block (RFC 3550 6.4.2) plus random padding-free APP tail."""
    rr = bytes([0x80, 201]) + (1).to_bytes(2, "big") + ssrc.to_bytes(4, "big")
    app = bytes([0x80, 204]) + (3).to_bytes(2, "big") + ssrc.to_bytes(4, "big") + b"TEST" + os.urandom(4)
    return rr + app
