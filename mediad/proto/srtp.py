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

Keys are secrets: :class:`SrtpKeys` never shows them in ``repr`` and no error
message carries them.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import pylibsrtp
from pylibsrtp import Policy, Session

from sdp_rules.errors import E2aeError

# IANA "DTLS-SRTP Protection Profiles" names, as OpenSSL spells them.
AES_CM_128_HMAC_SHA1_80 = "SRTP_AES128_CM_SHA1_80"  # RFC 5764 4.1.2
AES_CM_128_HMAC_SHA1_32 = "SRTP_AES128_CM_SHA1_32"  # RFC 5764 4.1.2
AEAD_AES_128_GCM = "SRTP_AEAD_AES_128_GCM"  # RFC 7714 14.2

SRTP_REASONS = ("auth_fail", "replay", "bad_packet")


@dataclass(frozen=True)
class SrtpProfile:
    """One protection profile: its OpenSSL name, libsrtp id and key sizes."""

    name: str
    libsrtp_profile: int
    key_length: int
    salt_length: int
    auth_tag_length: int


def _supported_profiles() -> dict[str, SrtpProfile]:
    candidates = [
        SrtpProfile(AEAD_AES_128_GCM, Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12, 16),
        SrtpProfile(AES_CM_128_HMAC_SHA1_80, Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14, 10),
        SrtpProfile(AES_CM_128_HMAC_SHA1_32, Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 16, 14, 4),
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

    def __init__(self, keys: SrtpKeys) -> None:
        spec = _profile(keys.profile)
        self.profile = keys.profile
        self._tx = Session(self._policy(spec, keys.local_key + keys.local_salt, Policy.SSRC_ANY_OUTBOUND))
        self._rx = Session(self._policy(spec, keys.remote_key + keys.remote_salt, Policy.SSRC_ANY_INBOUND))

    @staticmethod
    def _policy(spec: SrtpProfile, key: bytes, ssrc_type: int) -> Policy:
        policy = Policy(key=key, ssrc_type=ssrc_type, srtp_profile=spec.libsrtp_profile)
        policy.allow_repeat_tx = True
        policy.window_size = 1024
        return policy

    def protect_rtp(self, rtp: bytes) -> bytes:
        try:
            return self._tx.protect(rtp)
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise SrtpError(_reason(exc)) from None

    def unprotect_rtp(self, srtp: bytes) -> bytes:
        try:
            return self._rx.unprotect(srtp)
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise SrtpError(_reason(exc)) from None

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        try:
            return self._tx.protect_rtcp(rtcp)
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise SrtpError(_reason(exc)) from None

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        try:
            return self._rx.unprotect_rtcp(srtcp)
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise SrtpError(_reason(exc)) from None

    def __repr__(self) -> str:
        return f"SrtpTransformer(profile={self.profile!r})"
