"""SRTP/SRTCP protection keyed from DTLS-SRTP (RFC 3711, RFC 5764, RFC 7714).

Theory of operation
-------------------
A DTLS-SRTP handshake (RFC 5764 section 4.1.2) negotiates one *protection
profile*; the keying material exported with the label ``EXTRACTOR-dtls_srtp``
is laid out as RFC 5764 section 4.2 says::

    client_write_SRTP_master_key[key_len]
    server_write_SRTP_master_key[key_len]
    client_write_SRTP_master_salt[salt_len]
    server_write_SRTP_master_salt[salt_len]

:meth:`SrtpKeys.from_exporter` cuts it up and assigns the halves by DTLS role:
the side that writes with the client key is the DTLS client.  ``local_*`` keys
protect what we send, ``remote_*`` keys check what we receive.

:class:`SrtpTransformer` holds two libsrtp sessions (through pylibsrtp): one
outbound (any SSRC, local key) and one inbound (any SSRC, remote key), each for
RTP and RTCP.  Outbound repeats are allowed (a relay may forward a duplicate it
received); the inbound replay window is 1024 packets.  libsrtp errors are
translated at this boundary into :class:`SrtpError` whose ``reason`` is one of
``auth_fail``, ``replay``, ``bad_packet``.

Rollover counters (RFC 3711 section 3.3.1): a restored session would start
every stream at ROC 0, which breaks any stream that wrapped its sequence
number before.  :meth:`SrtpTransformer.refresh_rocs` reads the ROC of each
SSRC the caller knows (``mediad.proto.srtp_roc``), :meth:`SrtpTransformer.rocs`
is what is stored, and :meth:`SrtpTransformer.restore_rocs` creates each
stored SSRC's stream and sets its ROC, which the stream's next packet takes
exactly.  A stored ROC never goes backwards: a restored stream reads 0 until
its first packet, and the stored value stands until then.

SRTCP index (RFC 3711 section 3.4): a restored sender must not send an index
it sent before under the same master key (section 9.2: keystream reuse; and
the peer's replay list drops it).  Storing it on every packet would cost a
write per RTCP packet; instead :meth:`SrtpTransformer.srtcp_indices` is stored
with the document, each SSRC's packets *note* (below) every
:data:`SRTCP_BLOCK` indices, and :meth:`SrtpTransformer.restore_srtcp` jumps
each stored stream :data:`SRTCP_MARGIN` = 2 × :data:`SRTCP_BLOCK` past its
stored index.  Why that margin is enough: let L be the last index sent before
the process died and M the multiple of the block at or below it.  The note at
M (or, if it was lost in the write window, the one at M - block) was stored,
so the stored index is at least M - block > L - 2 × block.  The first index
after the restore is above L unless two notes in a row were lost: 1,024 RTCP
packets of one SSRC inside one write window (under a second).  An SSRC the
document does not name (admitted after its last write, so below the first
block) may have sent up to 1,023 indices too: on a restored session every SSRC
admitted toward the peer starts at the margin (:meth:`SrtpTransformer.admit`).

Notes: a restarted process must know the ROCs and indices of the moment it
died, but reading every stream of every call to find the few that changed is
what the daemon must not do.  So the packets say when: a stream's ROC
advances when its sequence number wraps, so every RTP packet with a sequence
number below 256 (one byte compared per packet; a wrap is missed only if the
256 packets after it are all lost) and every protected SRTCP packet whose
index is a multiple of :data:`SRTCP_BLOCK` call :attr:`SrtpTransformer.note`
(the daemon collects the noted contexts, a set, and reads only those).  The
native path (``mediad/io/fastpath.c``) notes the exact sign of a wrap instead,
a sequence number whose top bit clears after one with it set (per SSRC and
direction), and the same SRTCP blocks.

Inbound SSRCs: the inbound session is keyed for any SSRC, and libsrtp gives
each new SSRC whose packet authenticates a stream of its own (about 1 KiB)
that lives as long as the session.  A peer that holds the keys could grow
that without bound by sending under ever-new SSRCs, so the transformer
admits at most ``max_inbound`` of them (SRTP SSRCs and SRTCP sender SSRCs,
RFC 3550 sections 5.1 and 6.4.1; both header fields are in clear, RFC 3711
sections 3.1 and 3.4): the SSRC of a packet is looked up *before* libsrtp is
called; a known one goes on; a new one is tried only while fewer than
``max_inbound`` are admitted, and takes a slot once its packet
authenticated (so forged packets of an off-path sender take none); past
that it is refused (``inbound_ssrc_cap``) without calling libsrtp.  The
admitted set is the set of libsrtp's inbound streams, no more: a restored
session admits the SSRCs whose stream :meth:`SrtpTransformer.restore_rocs`
created, and the others again at their first packet.
:meth:`SrtpTransformer.retire` frees a slot (an RTCP BYE, RFC 3550 section
6.6) and removes the SSRC's libsrtp stream; since a new stream would take
old packets of that SSRC again (a fresh replay window, RFC 3711 section
3.3.2), the last :data:`MAX_INBOUND_SSRCS` retired SSRCs are refused
(``retired_ssrc``).  The native path keeps the same two lists in C, on the
same session (``mediad.io.fastpath.FastSrtp``).

Keys are secrets: :class:`SrtpKeys` never shows them in ``repr`` and no error
message carries them.
"""

from __future__ import annotations

import base64
import binascii
import enum
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pylibsrtp
from pylibsrtp import Policy, Session

from mediad.proto import srtp_roc
from sdp_rules.errors import E2aeError

# IANA "DTLS-SRTP Protection Profiles" names, as OpenSSL spells them.
AES_CM_128_HMAC_SHA1_80 = "SRTP_AES128_CM_SHA1_80"  # RFC 5764 4.1.2
AES_CM_128_HMAC_SHA1_32 = "SRTP_AES128_CM_SHA1_32"  # RFC 5764 4.1.2
AEAD_AES_128_GCM = "SRTP_AEAD_AES_128_GCM"  # RFC 7714 14.2

SRTP_REASONS = ("auth_fail", "replay", "bad_packet", "inbound_ssrc_cap", "retired_ssrc")
MAX_INBOUND_SSRCS = 64  # the most a session admits, and retired SSRCs remembered (fastpath.c E2AE_MAX_SSRCS)
MAX_ROC = 0xFFFFFFFF  # RFC 3711 section 3.2.1: a 32-bit unsigned counter
_SSRC = struct.Struct("!I").unpack_from  # RTP header bytes 8-11, RTCP bytes 4-7 (RFC 3550 5.1, 6.4.1)
SRTCP_BLOCK = 1024  # an SRTCP index that is a multiple of this is stored (see the module docstring)
SRTCP_MARGIN = 2 * SRTCP_BLOCK  # how far past its stored index a restored sender starts


class Direction(enum.StrEnum):
    """A session of the association; the value is the key in a stored document."""

    TX = "tx"  # what we protect (toward the peer)
    RX = "rx"  # what we unprotect (from the peer)


@dataclass(frozen=True)
class SrtpProfile:
    """One protection profile: its OpenSSL name, libsrtp id and key sizes."""

    name: str
    libsrtp_profile: int
    key_length: int
    salt_length: int
    auth_tag_length: int
    srtcp_index_at: int  # bytes from the end of a protected SRTCP packet to its E flag and index word


def _supported_profiles() -> dict[str, SrtpProfile]:
    candidates = [
        # SRTCP: RFC 7714 section 9.4 (AEAD: the tag is in the ciphertext, the index last); RFC 3711
        # section 3.4 (index, then the tag: 80 bits for SRTCP with both HMAC-SHA1 profiles, RFC 5764 4.1.2).
        SrtpProfile(AEAD_AES_128_GCM, Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12, 16, 4),
        SrtpProfile(AES_CM_128_HMAC_SHA1_80, Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14, 10, 14),
        SrtpProfile(AES_CM_128_HMAC_SHA1_32, Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 16, 14, 4, 14),
    ]
    supported = {}
    for profile in candidates:
        try:  # libsrtp may be built without AES-GCM
            Policy(srtp_profile=profile.libsrtp_profile)
        except pylibsrtp.Error:  # pragma: no cover - depends on the libsrtp build
            continue
        supported[profile.name] = profile
    return supported


# Supported profiles, in our order of preference (a DTLS server picks by its own order).
PROFILES: dict[str, SrtpProfile] = _supported_profiles()


class SrtpError(E2aeError):
    """A packet could not be protected or unprotected; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def exporter_length(profile: str) -> int:
    """How many bytes of ``EXTRACTOR-dtls_srtp`` keying material ``profile`` needs."""
    spec = _profile(profile)
    return 2 * (spec.key_length + spec.salt_length)


def _profile(name: str) -> SrtpProfile:
    spec = PROFILES.get(name)
    if spec is None:
        raise ValueError(f"unsupported SRTP protection profile {name!r}")
    return spec


@dataclass(repr=False)
class SrtpKeys:
    """The master keys and salts of one DTLS-SRTP association, seen from our side."""

    profile: str
    local_key: bytes
    local_salt: bytes
    remote_key: bytes
    remote_salt: bytes

    def __post_init__(self) -> None:
        spec = _profile(self.profile)
        for name, value, length in (
            ("local_key", self.local_key, spec.key_length),
            ("local_salt", self.local_salt, spec.salt_length),
            ("remote_key", self.remote_key, spec.key_length),
            ("remote_salt", self.remote_salt, spec.salt_length),
        ):
            if not isinstance(value, bytes) or len(value) != length:
                raise ValueError(f"{name} must be {length} bytes for {self.profile}")

    def __repr__(self) -> str:
        return f"SrtpKeys(profile={self.profile!r}, keys=<hidden>)"

    @classmethod
    def from_exporter(cls, material: bytes, profile: str, is_client: bool) -> "SrtpKeys":
        """Split RFC 5764 section 4.2 keying material; ``is_client``: our DTLS role."""
        spec = _profile(profile)
        k, s = spec.key_length, spec.salt_length
        if len(material) != 2 * (k + s):
            raise ValueError(f"{profile} needs {2 * (k + s)} bytes of keying material")
        client_key, server_key = material[:k], material[k : 2 * k]
        client_salt, server_salt = material[2 * k : 2 * k + s], material[2 * k + s :]
        if is_client:
            return cls(profile, client_key, client_salt, server_key, server_salt)
        return cls(profile, server_key, server_salt, client_key, client_salt)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (base64 text); secret: store it, never log it."""
        out: dict[str, Any] = {"profile": self.profile}
        for name in ("local_key", "local_salt", "remote_key", "remote_salt"):
            out[name] = base64.b64encode(getattr(self, name)).decode("ascii")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SrtpKeys":
        """The inverse of :meth:`to_dict`; ``ValueError`` if anything is missing or malformed."""
        try:
            values = {
                name: base64.b64decode(data[name], validate=True)
                for name in ("local_key", "local_salt", "remote_key", "remote_salt")
            }
            return cls(profile=str(data["profile"]), **values)
        except (KeyError, TypeError, binascii.Error) as exc:
            raise ValueError(f"malformed SRTP keys: {type(exc).__name__}") from None


def _reason(exc: Exception) -> str:
    text = str(exc)
    if text == "authentication failure":
        return "auth_fail"
    if text.startswith("replay check failed"):
        return "replay"
    return "bad_packet"


class SrtpTransformer:
    """Protects what we send and unprotects what we receive, for one association."""

    def __init__(self, keys: SrtpKeys, max_inbound: int = MAX_INBOUND_SSRCS) -> None:
        if not 1 <= max_inbound <= MAX_INBOUND_SSRCS:
            raise ValueError(f"max_inbound must be 1 to {MAX_INBOUND_SSRCS}")
        spec = _profile(keys.profile)
        self.profile = keys.profile
        self._tx = Session(self._policy(spec, keys.local_key + keys.local_salt, Policy.SSRC_ANY_OUTBOUND))
        self._rx = Session(self._policy(spec, keys.remote_key + keys.remote_salt, Policy.SSRC_ANY_INBOUND))
        self._spec = spec
        self._keys = keys
        self._rocs: dict[Direction, dict[int, int]] = {Direction.TX: {}, Direction.RX: {}}
        self._srtcp: dict[int, int] = {}  # SSRC -> the SRTCP index last read or restored (what we send)
        self._restored = False  # restored from a document: a new SSRC may have sent SRTCP before
        self._index_at = spec.srtcp_index_at
        # Called when a packet shows that a ROC advanced or an SRTCP index is to be stored.
        self.note: Callable[[], None] | None = None
        self.max_inbound = max_inbound
        self._inbound: set[int] = set()  # SSRCs with an inbound libsrtp stream (see the module docstring)
        self._retired: list[int] = []  # the last MAX_INBOUND_SSRCS retired, oldest first

    @staticmethod
    def _policy(spec: SrtpProfile, key: bytes, ssrc_type: int, ssrc: int = 0) -> Policy:
        policy = Policy(key=key, ssrc_type=ssrc_type, ssrc_value=ssrc, srtp_profile=spec.libsrtp_profile)
        policy.allow_repeat_tx = True
        policy.window_size = 1024
        return policy

    def _session(self, direction: Direction) -> Session:
        return self._tx if direction is Direction.TX else self._rx

    # -- rollover counters (RFC 3711 section 3.3.1) ---------------------------------------
    def refresh_rocs(self, tx_ssrcs: Iterable[int], rx_ssrcs: Iterable[int]) -> bool:
        """Read the ROC of each known SSRC's stream; True if one advanced since the last call."""
        changed = False
        for direction, ssrcs in ((Direction.TX, tx_ssrcs), (Direction.RX, rx_ssrcs)):
            session, known = self._session(direction), self._rocs[direction]
            for ssrc in ssrcs:
                roc = srtp_roc.get_stream_roc(session, ssrc)
                if roc is not None and roc > known.get(ssrc, 0):
                    known[ssrc] = roc
                    changed = True
        return changed

    def rocs(self) -> dict[str, dict[str, int]]:
        """The non-zero ROCs as last read or restored, by direction and SSRC (plain JSON)."""
        return {direction.value: {str(ssrc): roc for ssrc, roc in known.items() if roc}
                for direction, known in self._rocs.items()}

    def _stream(self, direction: Direction, ssrc: int) -> Session:
        """The session of ``direction``, with a stream for ``ssrc`` (created if there is none yet)."""
        session = self._session(direction)
        if srtp_roc.get_stream_roc(session, ssrc) is None:
            keys = self._keys
            key = keys.local_key + keys.local_salt if direction is Direction.TX else \
                keys.remote_key + keys.remote_salt
            session.add_stream(self._policy(self._spec, key, Policy.SSRC_SPECIFIC, ssrc))
        return session

    # -- SRTCP indices (RFC 3711 section 3.4) ------------------------------------------------
    def refresh_srtcp(self, tx_ssrcs: Iterable[int]) -> bool:
        """Read the SRTCP index of each SSRC we send; True if one reached a new :data:`SRTCP_BLOCK`
        since the last call (what must be stored; an index below the first block need not be:
        :meth:`admit` covers it)."""
        changed = False
        known = self._srtcp
        for ssrc in tx_ssrcs:
            index = srtp_roc.get_srtcp_index(self._tx, ssrc)
            if index is None:
                index = 0  # no packet yet
            last = known.get(ssrc)
            if last is None or index > last:
                known[ssrc] = index
                changed |= index // SRTCP_BLOCK > (last or 0) // SRTCP_BLOCK
        return changed

    def srtcp_indices(self) -> dict[str, int]:
        """The SRTCP index of each SSRC we send, as last read or restored (plain JSON)."""
        return {str(ssrc): index for ssrc, index in self._srtcp.items()}

    def restore_srtcp(self, stored: dict[str, Any] | None) -> None:
        """Start each stored SSRC's SRTCP index :data:`SRTCP_MARGIN` past its stored value.

        ``ValueError`` if ``stored`` is malformed.  Without libsrtp support
        (``srtp_roc.SRTCP_INDEX`` false) the indices restart at 1, as they did.
        """
        try:
            parsed = [(int(ssrc), int(index)) for ssrc, index in (stored or {}).items()]
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed SRTCP indices: {exc}") from None
        for ssrc, index in parsed:
            if not (0 <= ssrc <= 0xFFFFFFFF and 0 <= index <= srtp_roc.MAX_SRTCP_INDEX):
                raise ValueError(f"malformed SRTCP indices: SSRC {ssrc} or index {index} out of range")
        self._restored = True
        if not srtp_roc.SRTCP_INDEX:
            return
        for ssrc, index in parsed:
            start = min(index + SRTCP_MARGIN, srtp_roc.MAX_SRTCP_INDEX - 1)
            srtp_roc.set_srtcp_index(self._stream(Direction.TX, ssrc), ssrc, start)
            self._srtcp[ssrc] = start

    def admit(self, ssrc: int) -> None:
        """A new SSRC toward the peer (before its first packet): on a restored session, whose document
        may not name it, its SRTCP index starts past the margin."""
        if self._restored and ssrc not in self._srtcp and srtp_roc.SRTCP_INDEX:
            srtp_roc.set_srtcp_index(self._stream(Direction.TX, ssrc), ssrc, SRTCP_MARGIN)
            self._srtcp[ssrc] = SRTCP_MARGIN

    def restore_rocs(self, stored: dict[str, Any] | None) -> None:
        """Continue each stored stream at its ROC; ``ValueError`` if ``stored`` is malformed.

        Called on a fresh transformer, before its first packet: each SSRC's stream
        is created (it would otherwise be cloned from the template at its first
        packet, with ROC 0) and given its ROC.
        """
        parsed: list[tuple[Direction, int, int]] = []
        try:
            for name, known in (stored or {}).items():
                direction = Direction(name)
                for ssrc, roc in known.items():
                    ssrc, roc = int(ssrc), int(roc)
                    if not (0 <= ssrc <= 0xFFFFFFFF and 0 <= roc <= MAX_ROC):
                        raise ValueError(f"SSRC {ssrc} or ROC {roc} out of range")
                    parsed.append((direction, ssrc, roc))
        except (AttributeError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: JSON's 1e999
            raise ValueError(f"malformed SRTP rollover counters: {exc}") from None
        for direction, ssrc, roc in parsed:
            if not roc:
                continue
            if direction is Direction.RX:
                if not self.inbound_known(ssrc) and self.inbound_count() >= self.max_inbound:
                    continue  # (a document written under a larger max_ssrcs: its first packet decides)
                self.inbound_add(ssrc)
            srtp_roc.set_stream_roc(self._stream(direction, ssrc), ssrc, roc)  # the stream exists
            self._rocs[direction][ssrc] = roc

    # -- inbound SSRCs (see the module docstring) ------------------------------------------
    # The storage: a set and a list here, the session's C block in FastSrtp (shared with C).
    def inbound_known(self, ssrc: int) -> bool:
        return ssrc in self._inbound

    def inbound_count(self) -> int:
        return len(self._inbound)

    def inbound_add(self, ssrc: int) -> None:
        self._inbound.add(ssrc)

    def inbound_remove(self, ssrc: int) -> None:
        self._inbound.discard(ssrc)

    def is_retired(self, ssrc: int) -> bool:
        return ssrc in self._retired

    def add_retired(self, ssrc: int) -> None:
        retired = self._retired
        retired.append(ssrc)
        if len(retired) > MAX_INBOUND_SSRCS:
            del retired[0]

    def inbound_ssrcs(self) -> list[int]:
        """The admitted inbound SSRCs (each has a libsrtp stream)."""
        return sorted(self._inbound)

    def _gate(self, ssrc: int) -> bool:
        """Before libsrtp: True for a new SSRC that may be tried; SrtpError past the cap or retired."""
        if self.inbound_known(ssrc):
            return False
        if self.is_retired(ssrc):
            raise SrtpError("retired_ssrc")
        if self.inbound_count() >= self.max_inbound:
            raise SrtpError("inbound_ssrc_cap")
        return True

    def retire(self, ssrc: int) -> bool:
        """The peer ended ``ssrc`` (RTCP BYE): its slot and libsrtp stream are freed; False if not admitted."""
        if not self.inbound_known(ssrc):
            return False
        self.inbound_remove(ssrc)
        self.add_retired(ssrc)
        self._rocs[Direction.RX].pop(ssrc, None)
        try:
            self._rx.remove_stream(ssrc)
        except pylibsrtp.Error:  # no stream (never for an admitted SSRC): nothing to free
            pass
        return True

    # -- packets ---------------------------------------------------------------------------
    def protect_rtp(self, rtp: bytes) -> bytes:
        try:
            out = self._tx.protect(rtp)
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise SrtpError(_reason(exc)) from None
        if not rtp[2] and self.note is not None:  # a sequence number below 256: maybe just wrapped
            self.note()
        return out

    def unprotect_rtp(self, srtp: bytes) -> bytes:
        if len(srtp) < 12:
            raise SrtpError("bad_packet")
        ssrc = _SSRC(srtp, 8)[0]
        new = self._gate(ssrc)
        try:
            plain = self._rx.unprotect(srtp)
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise SrtpError(_reason(exc)) from None
        if new:
            self.inbound_add(ssrc)
        if not plain[2] and self.note is not None:
            self.note()
        return plain

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        try:
            out = self._tx.protect_rtcp(rtcp)
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise SrtpError(_reason(exc)) from None
        at = len(out) - self._index_at
        if not int.from_bytes(out[at:at + 4], "big") & (SRTCP_BLOCK - 1) and self.note is not None:
            self.note()  # the index is a multiple of the block: store it
        return out

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        if len(srtcp) < 8:
            raise SrtpError("bad_packet")
        ssrc = _SSRC(srtcp, 4)[0]
        new = self._gate(ssrc)
        try:
            plain = self._rx.unprotect_rtcp(srtcp)
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise SrtpError(_reason(exc)) from None
        if new:
            self.inbound_add(ssrc)
        return plain

    def __repr__(self) -> str:
        return f"SrtpTransformer(profile={self.profile!r})"
