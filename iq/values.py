"""The Iq contract's values: sides, roles, commands, transports, fingerprints, dcmaps, events.

Plain values shared by both ends of the Iq interface (3GPP TS 23.334 / TS 29.334):
what the IMS-ALG (``plugin`` + ``sdp_rules``) and the IMS-AGW (``mediad``) say
to each other, without any behaviour.  Fingerprints follow RFC 8122 section 5,
data-channel maps RFC 8864 section 5.1.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

class Side(str, Enum):
    ACCESS = "access"
    CORE = "core"


class Role(str, Enum):
    """The IMS-AGW's DTLS role on an access termination."""

    CLIENT = "client"
    SERVER = "server"


class Command(str, Enum):
    RESERVE = "reserve"  # H.248 ADD: new terminations/streams
    MODIFY = "modify"  # H.248 MOD: change existing ones (remote address, fingerprints, ...)
    RELEASE = "release"  # H.248 SUBTRACT: the whole dialog, or listed streams
    QUERY = "query"  # read a dialog's state
    LIST = "list"  # list dialogs


# Transport protocols on the Iq interface (TS 23.334 clause 5.11.2 / 5.20.2.2).
TRANSPORT_UDP = "UDP"
TRANSPORT_TCP = "TCP"
TRANSPORT_UDP_DTLS = "UDP/DTLS"
TRANSPORT_UDP_DTLS_SCTP = "UDP/DTLS/SCTP"
TRANSPORT_TCP_DTLS_SCTP = "TCP/DTLS/SCTP"

# RFC 8122 section 5 / IANA "Hash Function Textual Names".
HASH_FUNCTIONS = ("sha-1", "sha-224", "sha-256", "sha-384", "sha-512", "md5", "md2")
_HEX_PAIRS = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2})+$")
_DIGEST_BYTES = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64, "md5": 16, "md2": 16}


@dataclass(frozen=True)
class Fingerprint:
    """An RFC 8122 certificate fingerprint, normalised (hash lower case, hex upper case)."""

    hash_func: str
    value: str

    @classmethod
    def parse(cls, text: str) -> "Fingerprint":
        """Parse the value of an ``a=fingerprint`` attribute; ValueError names what is wrong."""
        parts = text.strip().split(" ")
        if len(parts) != 2:
            raise ValueError(f"a=fingerprint must be '<hash-func> <fingerprint>': {text!r}")
        hash_func = parts[0].lower()
        value = parts[1].upper()
        if hash_func not in _DIGEST_BYTES:
            raise ValueError(f"a=fingerprint uses an unknown hash function {parts[0]!r}")
        if hash_func in ("md5", "md2"):
            raise ValueError(f"a=fingerprint hash function {parts[0]!r} is not allowed (RFC 8122 5)")
        if not _HEX_PAIRS.match(value) or len(value.split(":")) != _DIGEST_BYTES[hash_func]:
            raise ValueError(f"a=fingerprint value is not a {hash_func} digest: {parts[1]!r}")
        return cls(hash_func, value)

    def __str__(self) -> str:
        return f"{self.hash_func} {self.value}"

    def to_dict(self) -> dict[str, Any]:
        return {"hash_func": self.hash_func, "value": self.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Fingerprint":
        return cls(data["hash_func"], data["value"])


@dataclass
class DcMap:
    """An ``a=dcmap`` (RFC 8864 section 5.1): one data channel."""

    stream_id: int
    label: str = ""
    subprotocol: str | None = None
    max_retr: int | None = None
    max_time: int | None = None
    ordered: bool | None = None
    priority: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DcMap":
        return cls(**data)



# Events from the AGW to the ALG (published on Redis channel "e2ae:events").
EVENT_DTLS_ESTABLISHED = "dtls_established"
EVENT_DTLS_FAILED = "dtls_failed"  # reason: fingerprint_mismatch | timeout | protocol_error
EVENT_SCTP_STREAM_RESET = "sctp_stream_reset"
EVENT_CONSENT_EXPIRED = "consent_expired"
