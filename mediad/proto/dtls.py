"""A sans-IO DTLS 1.2 session for DTLS-SRTP and UDPTL/SCTP over DTLS.

Implements the AGW side of RFC 6347 (DTLS 1.2) as used by RFC 5763 / RFC 5764
(DTLS-SRTP, ``use_srtp`` extension, section 4.1.2; key export, section 4.2),
RFC 7345 (UDPTL over DTLS) and RFC 8261 (SCTP over DTLS), with certificates
authenticated by SDP fingerprints (RFC 8122 section 5).  OpenSSL (through
pyOpenSSL, with memory BIOs) does the protocol; this module drives it.

Theory of operation
-------------------
Like h11, a :class:`DtlsSession` never touches a socket or a clock.  The caller
feeds it each received UDP datagram with :meth:`~DtlsSession.receive`, sends
whatever :meth:`~DtlsSession.datagrams_to_send` returns, reads events with
:meth:`~DtlsSession.next_event` until it returns ``None``, and calls
:meth:`~DtlsSession.handle_timeout` when the time given by
:meth:`~DtlsSession.timeout` has come.  Every call that may change state takes
``now``, the caller's clock in seconds.

Roles (T38-8).  As DTLS client the session sends its ClientHello on
:meth:`~DtlsSession.start`; as server it waits for one (``start`` does nothing)
and the handshake begins with the first datagram that starts with a ClientHello
(anything else reaching a fresh server, such as a stale retransmission from an
earlier association, is dropped).

Records and datagrams.  OpenSSL writes records into a memory BIO, which does not
keep datagram boundaries; the session reads the BIO after each step, splits it
into records (RFC 6347 section 4.1 headers) and packs whole records into
datagrams of at most ``mtu`` bytes (several records per datagram are allowed,
section 4.1.1).  OpenSSL is told the MTU, so it fragments handshake messages to
fit.

Authentication.  The peer's certificate is self-signed; OpenSSL's chain check is
ignored and the certificate is checked against the remote fingerprints instead,
as RFC 8122 section 5 says: among the fingerprints whose hash function we
support (sha-1, sha-224, sha-256, sha-384, sha-512) take those of the strongest
hash function and require the certificate to match one of them.  When the
fingerprints are known during the handshake the check runs in OpenSSL's verify
callback, so a mismatch aborts the handshake with a fatal ``bad_certificate``
alert (T38-10, SRTP-10).

Early ClientHello (SRTP-9).  The handshake is never held back on the wire: if
the remote fingerprints are not known yet, the verify callback lets the
handshake run to its end and the session enters state ``held``: nothing is
reported, no key is exported, and application data that arrives is kept
(bounded) instead of being delivered.  :meth:`~DtlsSession.set_remote_fingerprints`
then concludes it: on a match the session becomes ``established`` and reports
:class:`HandshakeComplete` followed by the kept data; on a mismatch it sends a
``close_notify`` alert, reports :class:`HandshakeFailed` and drops the data.

Timers.  OpenSSL's retransmission timer (RFC 6347 section 4.2.4) runs on its
own clock; the session maps its remaining time onto the caller's clock each
time it is called.  On top of it, the whole handshake (including ``held``) must
end within ``handshake_timeout`` seconds, counted from ``start`` (client) or
from the first handshake datagram (server): a server that never hears a
ClientHello does not time out, the daemon's ICE consent covers that case.

States, as a table (:data:`TRANSITIONS`)::

    new --start / first ClientHello--> handshaking --handshake done--> held
    handshaking | held --verified--> established
    new | handshaking | held | established --fail--> failed
    new | handshaking | held | established --close--> closed
    (a peer's close_notify or fatal alert: established -> closed, held -> failed)

Compaction.  An OpenSSL connection keeps about 80 KiB after its handshake
(record buffers, the state DTLS keeps to retransmit flights, the session).  A
DTLS-SRTP session (``srtp=True``, ``compact`` left on) drops it once
established and handles the rare later records with
:class:`mediad.proto.dtls_record.RecordProtection`, derived from the connection's
master secret (AEAD suites only; with any other suite, or if the derived keys
fail to open the records of the handshake, the connection stays).  What it
does then is what OpenSSL does (the tests compare both): application data in
and out; a peer's close_notify is answered with ours; a fatal alert closes
silently; no_renegotiation or a malformed alert, five warnings in a row, a
record of an unknown type or an unexpected handshake message close with a
fatal alert; a renegotiation attempt is refused with a no_renegotiation
warning; a repeated Finished (the peer lost our last flight, RFC 6347 section
4.2.4) makes us resend that flight, renumbered, at most 12 times; records of
another epoch, with a bad tag or replayed are dropped silently.

SRTP profiles offered (and, as server, chosen in this order): the ones in
:data:`mediad.proto.srtp.PROFILES` (AEAD_AES_128_GCM when libsrtp has it, then
AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32).  Keys never reach a log.
"""

from __future__ import annotations

import logging
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Sequence, Union

from OpenSSL import SSL

from mediad.proto.certs import Certificate, certificate_fingerprint
from mediad.proto.dtls_record import (
    RecordProtection,
    record_epoch,
    record_sequence,
    with_sequence,
)
from mediad.proto.srtp import PROFILES, SrtpKeys, exporter_length
from sdp_rules.errors import UsageError
from iq import Fingerprint, Role

logger = logging.getLogger("mediad.dtls")

DTLS1_2_VERSION = 0xFEFD
EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"  # RFC 5764 section 4.2
# Our certificate is ECDSA, so as server only the ECDSA suites can be chosen; as
# client the RSA suites are offered too, for peers with RSA certificates
# (baresip and many SIP UEs), which otherwise answer "no shared cipher".
CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:"
    b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:"
    b"ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"
)
# RFC 6347 section 4.1: content types 20..25 (ccs, alert, handshake, application data, heartbeat, tls12_cid).
RECORD_HEADER_LENGTH = 13
CONTENT_TYPE_CHANGE_CIPHER_SPEC = 20
CONTENT_TYPE_ALERT = 21
CONTENT_TYPE_HANDSHAKE = 22
CONTENT_TYPE_APPLICATION_DATA = 23
HANDSHAKE_HELLO_REQUEST = 0
HANDSHAKE_CLIENT_HELLO = 1
HANDSHAKE_FINISHED = 20
# RFC 5246 section 7.2: alert levels and the descriptions the compact association uses.
ALERT_WARNING, ALERT_FATAL = 1, 2
ALERT_CLOSE_NOTIFY, ALERT_UNEXPECTED_MESSAGE, ALERT_HANDSHAKE_FAILURE, ALERT_NO_RENEGOTIATION = 0, 10, 40, 100
CLOSE_NOTIFY = b"\x01\x00"  # RFC 5246 section 7.2: warning(1), close_notify(0)
MAX_PLAINTEXT_LENGTH = 16384  # RFC 5246 section 6.2.1
DTLS1_TMO_ALERT_COUNT = 12  # OpenSSL: retransmissions of our last flight it grants the peer
MAX_WARN_ALERT_COUNT = 5  # OpenSSL: consecutive warning alerts it accepts
_CONTENT_TYPES = range(20, 26)
# RFC 8122 section 5: the strongest hash function offered is the one checked.
HASH_PREFERENCE = ("sha-512", "sha-384", "sha-256", "sha-224", "sha-1")
MAX_HELD_RECORDS = 64
BIO_READ_SIZE = 65536

FAIL_FINGERPRINT_MISMATCH = "fingerprint_mismatch"
FAIL_TIMEOUT = "timeout"
FAIL_PROTOCOL_ERROR = "protocol_error"


@dataclass
class HandshakeComplete:
    """The peer is authenticated; ``srtp_keys`` is set for DTLS-SRTP sessions."""

    profile: str | None
    srtp_keys: SrtpKeys | None
    peer_fingerprint: Fingerprint


@dataclass
class HandshakeFailed:
    """The session failed; ``reason``: fingerprint_mismatch, timeout or protocol_error."""

    reason: str
    detail: str = ""


@dataclass
class ApplicationData:
    """One DTLS application-data record's payload (UDPTL, SCTP)."""

    data: bytes


@dataclass
class Closed:
    """The peer closed the association (close_notify or a fatal alert after the handshake)."""


Event = Union[HandshakeComplete, HandshakeFailed, ApplicationData, Closed]

_LIVE = ("new", "handshaking", "held", "established")
TRANSITIONS: dict[tuple[str, str], str] = {
    ("new", "start"): "handshaking",
    ("handshaking", "handshake_done"): "held",
    ("handshaking", "verified"): "established",
    ("held", "verified"): "established",
    **{(state, "fail"): "failed" for state in _LIVE},
    **{(state, "close"): "closed" for state in _LIVE},
}


def match_fingerprint(certificate: object, fingerprints: Iterable[Fingerprint]) -> Fingerprint | None:
    """The certificate's fingerprint if it matches ``fingerprints`` by RFC 8122 section 5, else None."""
    usable = [fp for fp in fingerprints if fp.hash_func.lower() in HASH_PREFERENCE]
    if not usable:
        return None
    best = min((fp.hash_func.lower() for fp in usable), key=HASH_PREFERENCE.index)
    ours = certificate_fingerprint(certificate, best)
    for fp in usable:
        if fp.hash_func.lower() == best and fp.value.upper() == ours.value:
            return ours
    return None


def split_records(data: bytes) -> list[bytes] | None:
    """Split bytes into whole DTLS records; None if the framing is broken."""
    records = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < RECORD_HEADER_LENGTH:
            return None
        if data[pos] not in _CONTENT_TYPES or data[pos + 1] != 0xFE:
            return None
        end = pos + RECORD_HEADER_LENGTH + int.from_bytes(data[pos + 11 : pos + 13], "big")
        if end > len(data):
            return None
        records.append(data[pos:end])
        pos = end
    return records


def _is_client_hello(record: bytes) -> bool:
    """An epoch-0 handshake record whose message is a ClientHello (RFC 6347 4.1, 4.2.2)."""
    return (
        record[0] == CONTENT_TYPE_HANDSHAKE
        and record[3:5] == b"\x00\x00"
        and len(record) > RECORD_HEADER_LENGTH
        and record[RECORD_HEADER_LENGTH] == HANDSHAKE_CLIENT_HELLO
    )


def pack_records(records: Sequence[bytes], mtu: int) -> list[bytes]:
    """Pack whole records into datagrams of at most ``mtu`` bytes (a bigger record goes alone)."""
    datagrams = []
    current = b""
    for record in records:
        if current and len(current) + len(record) > mtu:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams


_contexts: "weakref.WeakKeyDictionary[Certificate, dict[tuple[str, ...], SSL.Context]]" = (
    weakref.WeakKeyDictionary()
)


def _verify(conn: SSL.Connection, x509: object, errno: int, depth: int, ok: int) -> bool:
    """The contexts' verify callback: the session's check (its app data is a weak reference to it).

    One callback for every connection, set on the shared context: a callback of each
    connection's own costs a new C callback per session; the weak reference spares a
    reference cycle through OpenSSL.
    """
    ref = conn.get_app_data()
    session = ref() if ref is not None else None
    return session is not None and session._verify(conn, x509, errno, depth, ok)


def ssl_context(certificate: Certificate, srtp_profiles: Sequence[str]) -> SSL.Context:
    """The (shared) OpenSSL context of ``certificate`` offering ``srtp_profiles``."""
    per_cert = _contexts.setdefault(certificate, {})
    key = tuple(srtp_profiles)
    ctx = per_cert.get(key)
    if ctx is None:
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU | SSL.OP_NO_RENEGOTIATION)
        ctx.set_min_proto_version(DTLS1_2_VERSION)
        ctx.set_max_proto_version(DTLS1_2_VERSION)
        ctx.use_certificate(certificate.x509.to_cryptography())
        ctx.use_privatekey(certificate.key.to_cryptography_key())
        ctx.check_privatekey()
        ctx.set_cipher_list(CIPHERS)
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify)
        if key:
            ctx.set_tlsext_use_srtp(":".join(key).encode("ascii"))
        per_cert[key] = ctx
    return ctx


class DtlsSession:
    """One DTLS association, client or server, driven without I/O."""

    def __init__(
        self,
        certificate: Certificate,
        role: Role,
        *,
        srtp: bool,
        remote_fingerprints: list[Fingerprint] | None = None,
        mtu: int = 1200,
        handshake_timeout: float = 30.0,
        now: float = 0.0,
        srtp_profiles: Sequence[str] | None = None,
        compact: bool = True,
    ) -> None:
        self.certificate = certificate
        self.role = Role(role)
        self.srtp = srtp
        self.mtu = mtu
        self.handshake_timeout = handshake_timeout
        self.created_at = now
        self.state = "new"
        self.dropped = 0
        self.peer_fingerprint: Fingerprint | None = None
        self._remote_fingerprints = list(remote_fingerprints) if remote_fingerprints else None
        self._events: deque[Event] = deque()
        self._outgoing: list[bytes] = []
        self._held: list[bytes] = []
        self._rejected = False
        self._deadline: float | None = None
        self._retransmit_at: float | None = None
        # Compaction (see the module docstring): what is needed to drop the OpenSSL connection.
        self._compact = compact and srtp
        self._protection: RecordProtection | None = None
        self._next_sequence = [0, 0]  # the next sequence number we send in epoch 0 and epoch 1
        self._last_flight: list[bytes] = []  # our last handshake flight, as records
        self._peer_records: deque[bytes] = deque(maxlen=4)  # the peer's latest epoch-1 records
        self._finished_retransmits = 0
        self._warning_alerts = 0
        self._close_notify_sent = False
        profiles = list(PROFILES) if srtp_profiles is None else list(srtp_profiles)
        unknown = [p for p in profiles if p not in PROFILES]
        if unknown or (srtp and not profiles):
            raise UsageError(f"unsupported SRTP profiles {unknown or profiles}")
        self._ssl = SSL.Connection(ssl_context(certificate, profiles if srtp else ()), None)
        self._ssl.set_app_data(weakref.ref(self))  # for the context's verify callback, _verify
        self._ssl.set_ciphertext_mtu(mtu)
        if self.role is Role.CLIENT:
            self._ssl.set_connect_state()
        else:
            self._ssl.set_accept_state()

    # -- the caller's interface -------------------------------------------------

    def set_remote_fingerprints(self, fingerprints: list[Fingerprint], now: float) -> None:
        """Give (or replace) the peer's SDP fingerprints; concludes a ``held`` handshake.

        An empty list leaves them unknown.  Once the session is established,
        failed or closed this has no effect on it.
        """
        if self.state not in ("new", "handshaking", "held"):
            return
        self._remote_fingerprints = list(fingerprints) or None
        if self.state == "held" and self._remote_fingerprints:
            self._conclude()
            self._flush()
        self._update_timer(now)
        self._compact_if_done()

    def start(self, now: float) -> None:
        """Client: send the ClientHello.  Server: nothing (it waits for one)."""
        if self.role is Role.CLIENT and self.state == "new":
            self._begin(now)
            self._step(now)

    def receive(self, datagram: bytes, now: float) -> None:
        """Process one UDP datagram of DTLS records; bad input is counted in ``dropped``."""
        records = split_records(datagram) if datagram else None
        if not records or self.state in ("failed", "closed"):
            self._drop("not DTLS records" if not records else f"state {self.state}")
            return
        if self.state == "new":
            if self.role is Role.CLIENT or not _is_client_hello(records[0]):
                self._drop("only a ClientHello starts a handshake")
                return
            self._begin(now)
        if self._protection is not None:
            self._receive_compact(records)
            return
        if self._compact:
            self._peer_records.extend(r for r in records if record_epoch(r) == 1)
        try:
            self._ssl.bio_write(datagram)
        except SSL.Error:
            self._drop("BIO refused the datagram")
            return
        self._step(now)

    def send_application_data(self, data: bytes) -> None:
        """Send one record of application data; only once ``established``."""
        if self.state != "established":
            raise UsageError(f"DTLS application data in state {self.state}")
        if self._protection is not None:
            if len(data) > MAX_PLAINTEXT_LENGTH:
                raise UsageError(f"DTLS refused {len(data)} bytes of application data: too long")
            self._outgoing.append(self._protection.seal(CONTENT_TYPE_APPLICATION_DATA, data))
            return
        try:
            self._ssl.send(data)
        except SSL.Error as exc:
            raise UsageError(f"DTLS refused {len(data)} bytes of application data: {exc}") from None
        self._flush()

    def datagrams_to_send(self) -> list[bytes]:
        """The datagrams to send to the peer, in order (the list is drained)."""
        out, self._outgoing = self._outgoing, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def timeout(self) -> float | None:
        """When :meth:`handle_timeout` must be called (caller's clock), or None."""
        times = [t for t in (self._retransmit_at, self._deadline) if t is not None]
        return min(times) if times else None

    def handle_timeout(self, now: float) -> None:
        """Retransmit a lost flight, or fail the handshake if its time is over."""
        if self.state not in ("handshaking", "held", "established"):
            return
        if self._deadline is not None and now >= self._deadline:
            self._fail(FAIL_TIMEOUT, f"no handshake within {self.handshake_timeout:g} s")
            self._shutdown()
            return
        if self._ssl is None:
            return
        try:
            self._ssl.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self._fail(FAIL_TIMEOUT, f"retransmissions exhausted: {exc}")
        self._flush()
        self._update_timer(now)

    def close(self) -> None:
        """Send close_notify (if a handshake began) and stop; emits no event."""
        if self.state not in _LIVE:
            return
        began = self.state != "new"
        self._transition("close")
        if began:
            self._shutdown()
        self._held.clear()

    @property
    def compacted(self) -> bool:
        """True once the OpenSSL connection was dropped for the compact record protection."""
        return self._protection is not None

    def __repr__(self) -> str:
        return f"DtlsSession(role={self.role.value}, state={self.state})"

    # -- internals ---------------------------------------------------------------

    def _transition(self, action: str) -> None:
        new_state = TRANSITIONS.get((self.state, action))
        if new_state is None:
            raise UsageError(f"DTLS session: no transition for {action!r} in state {self.state!r}")
        logger.debug("DTLS %s: %s --%s--> %s", self.role.value, self.state, action, new_state)
        self.state = new_state
        if new_state in ("established", "failed", "closed"):
            self._deadline = None
            self._retransmit_at = None

    def _begin(self, now: float) -> None:
        self._transition("start")
        self._deadline = now + self.handshake_timeout

    def _step(self, now: float) -> None:
        if self.state == "handshaking":
            try:
                self._ssl.do_handshake()
            except SSL.WantReadError:
                pass
            except SSL.Error as exc:
                if self._rejected:
                    self._fail(FAIL_FINGERPRINT_MISMATCH, "peer certificate does not match its SDP fingerprint")
                else:
                    self._fail(FAIL_PROTOCOL_ERROR, _describe(exc))
            else:
                self._handshake_done()
        if self.state in ("held", "established"):
            self._read_records()
        self._flush()
        self._update_timer(now)
        self._compact_if_done()

    def _verify(self, conn: SSL.Connection, x509: object, errno: int, depth: int, ok: int) -> bool:
        if depth != 0 or self._remote_fingerprints is None:
            return True
        if match_fingerprint(x509, self._remote_fingerprints) is None:
            self._rejected = True
            return False
        return True

    def _handshake_done(self) -> None:
        if self._remote_fingerprints is None:
            self._transition("handshake_done")
            logger.debug("DTLS %s: handshake held until the remote fingerprints are known", self.role.value)
            return
        self._conclude()

    def _conclude(self) -> None:
        peer = self._ssl.get_peer_certificate(as_cryptography=True)
        if peer is None:
            self._fail(FAIL_PROTOCOL_ERROR, "the peer sent no certificate")
            self._shutdown()
            return
        fingerprint = match_fingerprint(peer, self._remote_fingerprints or [])
        if fingerprint is None:
            self._fail(FAIL_FINGERPRINT_MISMATCH, "peer certificate does not match its SDP fingerprint")
            self._shutdown()
            return
        profile = None
        keys = None
        if self.srtp:
            profile = self._ssl.get_selected_srtp_profile().decode("ascii")
            if profile not in PROFILES:
                self._fail(FAIL_PROTOCOL_ERROR, "no SRTP protection profile negotiated")
                self._shutdown()
                return
            material = self._ssl.export_keying_material(EXPORTER_LABEL, exporter_length(profile))
            keys = SrtpKeys.from_exporter(material, profile, is_client=self.role is Role.CLIENT)
        self.peer_fingerprint = fingerprint
        self._transition("verified")
        self._events.append(HandshakeComplete(profile, keys, fingerprint))
        self._events.extend(ApplicationData(data) for data in self._held)
        self._held.clear()

    def _read_records(self) -> None:
        while self.state in ("held", "established"):
            try:
                data = self._ssl.recv(65536)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                self._peer_closed("close_notify")
                return
            except SSL.Error as exc:
                if self.state == "held":
                    self._fail(FAIL_PROTOCOL_ERROR, _describe(exc))
                else:
                    self._peer_closed(_describe(exc))
                return
            if self.state == "established":
                self._events.append(ApplicationData(data))
            elif len(self._held) < MAX_HELD_RECORDS:
                self._held.append(data)
            else:
                self._drop("too much application data before verification")

    def _peer_closed(self, why: str) -> None:
        logger.debug("DTLS %s: closed by the peer (%s)", self.role.value, why)
        if self.state == "held":
            self._fail(FAIL_PROTOCOL_ERROR, f"peer closed before verification: {why}")
        else:
            self._transition("close")
            self._events.append(Closed())
        self._shutdown()

    def _fail(self, reason: str, detail: str) -> None:
        logger.info("DTLS %s: handshake failed: %s (%s)", self.role.value, reason, detail)
        self._transition("fail")
        self._held.clear()
        self._events.append(HandshakeFailed(reason, detail))

    def _shutdown(self) -> None:
        if self._protection is not None:
            if not self._close_notify_sent:
                self._close_notify_sent = True
                self._outgoing.append(self._protection.seal(CONTENT_TYPE_ALERT, CLOSE_NOTIFY))
            return
        try:
            self._ssl.shutdown()
        except SSL.Error:
            pass
        self._flush()

    def _flush(self) -> None:
        chunks = []
        while True:
            try:
                chunk = self._ssl.bio_read(BIO_READ_SIZE)
            except SSL.Error:
                break
            chunks.append(chunk)
            if len(chunk) < BIO_READ_SIZE:
                break  # a memory BIO gives all it holds up to the size asked: it is empty now
        if not chunks:
            return
        data = b"".join(chunks)
        records = split_records(data)
        if records is None:  # not expected from OpenSSL: send it as it is
            self._outgoing.append(data)
            return
        self._outgoing.extend(pack_records(records, self.mtu))
        if self._compact:
            self._note_sent(records)

    # -- compaction: the established association without the OpenSSL connection ----------

    def _note_sent(self, records: list[bytes]) -> None:
        """Follow our sequence numbers, and keep our latest handshake flight (to retransmit it)."""
        for record in records:
            epoch = record_epoch(record)
            if epoch <= 1:
                self._next_sequence[epoch] = max(self._next_sequence[epoch], record_sequence(record) + 1)
        if self._ssl is not None and any(r[0] in (CONTENT_TYPE_CHANGE_CIPHER_SPEC, CONTENT_TYPE_HANDSHAKE)
                                         for r in records):
            self._last_flight = records

    def _compact_if_done(self) -> None:
        """Once established, replace the OpenSSL connection by :class:`RecordProtection` when it checks out."""
        ssl = self._ssl
        if not self._compact or self.state != "established" or ssl is None or ssl.DTLSv1_get_timeout() is not None:
            return
        self._compact = False  # one attempt: on any doubt the connection stays
        protection = RecordProtection.from_connection(ssl, self.role is Role.CLIENT, self._next_sequence[1])
        if protection is None:
            return
        flight: list[bytes | tuple[int, bytes]] = []
        for record in self._last_flight:
            if record_epoch(record) == 0:
                flight.append(record)
                continue
            plaintext = protection.open_own(record)
            if plaintext is None:
                return
            flight.append((record[0], plaintext))
        peer_records = [protection.open(record) for record in self._peer_records]
        if not any(peer_records) or not any(isinstance(item, tuple) for item in flight):
            return
        self._protection = protection
        self._last_flight = flight  # type: ignore[assignment]
        self._peer_records.clear()
        self._ssl = None

    def _receive_compact(self, records: list[bytes]) -> None:
        """What OpenSSL does with the records of an established association."""
        protection = self._established_protection()
        for record in records:
            opened = protection.open(record)
            if opened is None:
                continue  # another epoch, a bad tag or a replay: dropped silently (RFC 6347 4.1.2.7)
            content_type, plaintext = opened
            if content_type != CONTENT_TYPE_ALERT and plaintext:
                self._warning_alerts = 0  # an empty record does not count (as in OpenSSL)
            if content_type == CONTENT_TYPE_APPLICATION_DATA:
                if plaintext:
                    self._events.append(ApplicationData(plaintext))
            elif content_type == CONTENT_TYPE_ALERT:
                self._alert_received(plaintext)
            elif content_type == CONTENT_TYPE_HANDSHAKE:
                self._handshake_received(plaintext)
            elif content_type != CONTENT_TYPE_CHANGE_CIPHER_SPEC:
                self._fatal(ALERT_UNEXPECTED_MESSAGE, f"unexpected record type {content_type}")
            if self.state != "established":
                return

    def _alert_received(self, alert: bytes) -> None:
        if len(alert) != 2:
            self._fatal(ALERT_UNEXPECTED_MESSAGE, "malformed alert")
        elif alert[1] == ALERT_CLOSE_NOTIFY:
            self._peer_closed("close_notify")  # answered with our close_notify
        elif alert[0] == ALERT_FATAL:
            self._close_notify_sent = True  # nothing is sent after a fatal alert
            self._peer_closed(f"fatal alert {alert[1]}")
        elif alert[1] == ALERT_NO_RENEGOTIATION:
            self._fatal(ALERT_HANDSHAKE_FAILURE, "no_renegotiation")
        else:
            self._warning_alerts += 1
            if self._warning_alerts >= MAX_WARN_ALERT_COUNT:
                self._fatal(ALERT_UNEXPECTED_MESSAGE, "too many warning alerts")

    def _handshake_received(self, message: bytes) -> None:
        kind = message[0] if message else None
        if kind == HANDSHAKE_FINISHED:  # the peer did not get our last flight
            self._finished_retransmits += 1
            if self._finished_retransmits > DTLS1_TMO_ALERT_COUNT:
                self._close_notify_sent = True
                self._peer_closed("read timeout expired")
            else:
                self._retransmit_last_flight()
        elif (kind == HANDSHAKE_CLIENT_HELLO and self.role is Role.SERVER) or (
                kind == HANDSHAKE_HELLO_REQUEST and self.role is Role.CLIENT):
            self._send_alert(ALERT_WARNING, ALERT_NO_RENEGOTIATION)  # OP_NO_RENEGOTIATION
        else:
            self._fatal(ALERT_UNEXPECTED_MESSAGE, f"handshake message {kind} after the handshake")

    def _send_alert(self, level: int, description: int) -> None:
        self._outgoing.append(self._established_protection().seal(CONTENT_TYPE_ALERT, bytes([level, description])))

    def _fatal(self, description: int, why: str) -> None:
        self._send_alert(ALERT_FATAL, description)
        self._close_notify_sent = True
        self._peer_closed(why)

    def _established_protection(self) -> "RecordProtection":
        """The record protection of the established association (a defect to ask before it)."""
        if self._protection is None:
            raise UsageError("DTLS record protection asked for before the handshake gave keys")
        return self._protection

    def _retransmit_last_flight(self) -> None:
        protection = self._established_protection()
        records = []
        for item in self._last_flight:
            if isinstance(item, bytes):
                records.append(with_sequence(item, self._next_sequence[0]))
                self._next_sequence[0] += 1
            else:
                records.append(protection.seal(*item))
        self._outgoing.extend(pack_records(records, self.mtu))

    def _update_timer(self, now: float) -> None:
        if self.state not in ("handshaking", "held", "established") or self._ssl is None:
            self._retransmit_at = None
            return
        remaining = self._ssl.DTLSv1_get_timeout()
        self._retransmit_at = None if remaining is None else now + remaining

    def _drop(self, why: str) -> None:
        self.dropped += 1
        logger.debug("DTLS %s: dropped a datagram: %s", self.role.value, why)


def _describe(exc: SSL.Error) -> str:
    """OpenSSL's error reasons, without library and function names."""
    parts = []
    for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
        if isinstance(item, tuple) and len(item) == 3:
            parts.append(str(item[2]))
    return "; ".join(parts) or exc.__class__.__name__
