"""A blocking WIC over ICE-TCP for mediad tests: RFC 4571 frames, STUN, DTLS-SRTP (RFC 6544, 7850, 5764).

It plays the WebRTC client's active TCP candidate: one TCP connection from
127.0.0.1 to mediad's passive candidate, STUN Binding requests with short-term
credentials (aioice), DTLS 1.2 in either role on pyOpenSSL with memory BIOs
(each RFC 4571 frame carries what one BIO read gives, one DTLS "datagram"),
and SRTP keyed from the RFC 5764 exporter with ``mediad.proto.srtp``.  Every wait is
bounded.
"""

from __future__ import annotations

import socket
import time

from aioice import stun
from OpenSSL import SSL

from mediad.proto.framing import Deframer, frame
from mediad.proto.srtp import AES_CM_128_HMAC_SHA1_80, SrtpKeys, SrtpTransformer, exporter_length
from tests.integration.dtls_peer import PROFILE, fingerprint_of, make_certificate


class TcpWic:
    def __init__(self, role: str, *, certificate=None) -> None:
        self.role = role
        self.cert, self.key = certificate or make_certificate()
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.use_certificate(self.cert)
        ctx.use_privatekey(self.key)
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
        ctx.set_tlsext_use_srtp(PROFILE)
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_ciphertext_mtu(1200)
        if role == "client":
            self.conn.set_connect_state()
        else:
            self.conn.set_accept_state()
        self.sock: socket.socket | None = None
        self.deframer = Deframer()
        self.frames: list[bytes] = []
        self.eof = False
        self.srtp: SrtpTransformer | None = None
        self.alerted = False

    def fingerprint(self, hash_func: str = "sha-256"):
        return fingerprint_of(self.cert, hash_func)

    # -- TCP and RFC 4571 ---------------------------------------------------------------
    def connect(self, addr: tuple[str, int], timeout: float = 2.0) -> None:
        self.sock = socket.create_connection(addr, timeout=timeout, source_address=("127.0.0.1", 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send_frame(self, packet: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(frame(packet))

    def recv_frame(self, timeout: float = 2.0) -> bytes | None:
        """The next frame, None on timeout or end of stream."""
        assert self.sock is not None
        deadline = time.monotonic() + timeout
        while not self.frames and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            except OSError:
                data = b""
            if not data:
                self.eof = True
                break
            self.frames += self.deframer.feed(data)
        return self.frames.pop(0) if self.frames else None

    def closed_by_peer(self, timeout: float = 3.0) -> bool:
        """True once mediad closed the connection (frames before it are skipped)."""
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self.recv_frame(max(deadline - time.monotonic(), 0.01))
        return self.eof

    # -- ICE (the full agent's side toward an ICE-lite mediad) -----------------------------
    def stun_request(self, local_ufrag: str, remote_ufrag: str, remote_pwd: str,
                     use_candidate: bool = True) -> stun.Message:
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{remote_ufrag}:{local_ufrag}"
        request.attributes["PRIORITY"] = 1853824767
        request.attributes["ICE-CONTROLLING"] = 12345
        if use_candidate:
            request.attributes["USE-CANDIDATE"] = None
        request.add_message_integrity(remote_pwd.encode())
        request.add_fingerprint()
        return request

    def stun_check(self, local_ufrag: str, remote_ufrag: str, remote_pwd: str,
                   timeout: float = 2.0) -> stun.Message | None:
        request = self.stun_request(local_ufrag, remote_ufrag, remote_pwd)
        self.send_frame(bytes(request))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.recv_frame(max(deadline - time.monotonic(), 0.01))
            if data is None:
                return None
            if data[0] < 4:
                message = stun.parse_message(data)
                if message.transaction_id == request.transaction_id:
                    return message
        return None

    # -- DTLS over frames ------------------------------------------------------------------
    def _flush(self) -> None:
        while True:
            try:
                data = self.conn.bio_read(65536)
            except SSL.Error:
                return
            self.send_frame(data)

    def _step(self) -> bool:
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return False
        self._flush()
        return True

    def handshake(self, timeout: float = 5.0) -> bool:
        """Run the handshake over the connection; True when done (SRTP keyed)."""
        deadline = time.monotonic() + timeout
        if self.role == "client" and self._step():
            return self._done()
        while time.monotonic() < deadline:
            data = self.recv_frame(min(0.2, max(deadline - time.monotonic(), 0.01)))
            if data is None:
                if self.eof:
                    return False
                try:
                    self.conn.DTLSv1_handle_timeout()
                except SSL.Error:
                    return False
                self._flush()
                continue
            if not 20 <= data[0] <= 63:
                continue  # STUN answers
            self.conn.bio_write(data)
            try:
                if self._step():
                    return self._done()
            except SSL.Error:
                self.alerted = True
                return False
        return False

    def _done(self) -> bool:
        profile = self.conn.get_selected_srtp_profile().decode()
        assert profile == AES_CM_128_HMAC_SHA1_80
        material = self.conn.export_keying_material(b"EXTRACTOR-dtls_srtp", exporter_length(profile))
        self.srtp = SrtpTransformer(SrtpKeys.from_exporter(material, profile, self.role == "client"))
        return True

    def peer_fingerprint(self, hash_func: str = "sha-256"):
        """The fingerprint of the certificate mediad presented."""
        return fingerprint_of(self.conn.get_peer_certificate().to_cryptography(), hash_func)

    def take_connection(self, other: "TcpWic") -> None:
        """Continue on ``other``'s TCP connection (a new DTLS association over the same pair)."""
        self.sock, self.deframer, self.frames, self.eof = other.sock, other.deframer, other.frames, other.eof
        other.sock = None

    # -- SRTP over frames ------------------------------------------------------------------
    def send_rtp(self, packet: bytes) -> None:
        assert self.srtp is not None
        self.send_frame(self.srtp.protect_rtp(packet))

    def send_rtcp(self, packet: bytes) -> None:
        assert self.srtp is not None
        self.send_frame(self.srtp.protect_rtcp(packet))

    def recv_media(self, timeout: float = 2.0, rtcp: bool = False) -> bytes | None:
        """The next SRTP (or SRTCP) packet, decrypted; None on timeout."""
        assert self.srtp is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.recv_frame(max(deadline - time.monotonic(), 0.01))
            if data is None:
                return None
            if not 128 <= data[0] <= 191 or (192 <= data[1] <= 223) != rtcp:
                continue
            return self.srtp.unprotect_rtcp(data) if rtcp else self.srtp.unprotect_rtp(data)
        return None
