"""The rules' API: a *plan* for one SDP, computed without I/O.

The plugin calls :func:`sdp_rules.process` with an SDP body, where it came
from, whether it is an offer or an answer, and the dialog's stored state.  It
gets a :class:`Plan`:

* ``plan.iq`` -- the Iq request to send to the AGW, or ``None`` when nothing is
  to be asked of the AGW (no e2ae stream in this SDP);
* ``plan.finish(reply)`` -- given the AGW's :class:`~iq.IqReply`
  (or ``None`` when ``plan.iq`` is ``None``), returns a :class:`Result`: the SDP
  to forward and the dialog's new state;
* ``plan.streams`` -- one :class:`StreamDecision` per m-line of the input,
  saying what was decided for it (e2ae kind, or pass-through and why).

Nothing here touches a socket, a clock or Redis; fresh ``a=tls-id`` values
come from the injected ``Policy.new_tls_id``.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

from iq import IqReply, IqRequest, Role, Side


class Kind(str, Enum):
    OFFER = "offer"
    ANSWER = "answer"


class ActpassPolicy(str, Enum):
    """What the AGW becomes when the access side offers ``a=setup:actpass``.

    ``active`` (the default): the AGW answers ``a=setup:active`` and is the DTLS
    client, as RFC 5763 section 5 recommends for the answerer, so the handshake
    starts as soon as the AGW has the peer's address and no extra round trip is
    spent waiting for the ClientHello.  ``passive``: the AGW answers
    ``a=setup:passive`` and waits for the peer's ClientHello.
    """

    ACTIVE = "active"
    PASSIVE = "passive"


class BundlePolicy(str, Enum):
    """Whether the edge bundles media toward access (RFC 9143).

    ``on`` (the default): the m-lines of a BUNDLE group share one transport
    (one ICE-lite agent, one DTLS association, one port) and the edge's own
    offers toward access propose one; it needs an AGW that implements Iq
    transports (``docs/iq.md``).  ``off``: every access m-line gets a transport
    of its own and ``a=group:BUNDLE`` is declined (RFC 9143 section 7.3: an
    answerer may leave the group out).
    """

    OFF = "off"
    ON = "on"


def random_tls_id() -> str:
    """A fresh RFC 8842 tls-id: 16 random bytes (128 bits), base64url without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")


@dataclass
class Policy:
    """Configurable decisions of the ALG (documented defaults)."""

    actpass: ActpassPolicy = ActpassPolicy.ACTIVE
    # Fresh, unique tls-id values (T38-7): injectable for tests and for the
    # plugin's Redis-checked generator.
    new_tls_id: Callable[[], str] = random_tls_id
    # Toward access the AGW offers RTP/RTCP multiplexing (RFC 5761/8035).
    offer_rtcp_mux_to_access: bool = True
    # Local max-message-size the AGW reports for data channels when it is not asked.
    default_max_message_size: int = 262144
    # BUNDLE toward access (RFC 9143); on by default, as browsers and rtpengine, Janus and Asterisk expect.
    bundle: BundlePolicy = BundlePolicy.ON


@dataclass
class StreamDecision:
    """What the rules decided for one m-line of the input SDP."""

    index: int  # m-line index in the input
    media: str
    proto: str
    kind: str  # "srtp", "srtp_tcp", "t38", "datachannel", "msrp", "t140", or "passthrough"
    reason: str = ""  # why (especially for pass-through)
    stream_ids: list[int] = field(default_factory=list)  # Iq stream ids it maps to

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "media": self.media,
            "proto": self.proto,
            "kind": self.kind,
            "reason": self.reason,
            "stream_ids": list(self.stream_ids),
        }


@dataclass
class DialogState:
    """What the ALG remembers of a dialog between messages (stored in Redis as JSON).

    ``data`` is owned by the rules; the plugin stores and returns it unchanged.
    ``version`` increases with each change (optimistic concurrency in Redis).
    """

    version: int = 0
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "data": self.data}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes | None) -> "DialogState":
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(version=int(raw.get("version", 0)), data=dict(raw.get("data", {})))


@dataclass
class Result:
    """The outcome of a plan: the SDP to forward and the dialog's new state."""

    sdp: str
    state: DialogState


@dataclass
class Plan:
    """The rules' answer for one SDP (see the module docstring)."""

    origin: Side
    kind: Kind
    iq: IqRequest | None
    streams: list[StreamDecision]
    _finish: Callable[[IqReply | None], Result] = field(repr=False, default=None)  # type: ignore[assignment]

    def finish(self, reply: IqReply | None) -> Result:
        return self._finish(reply)

    @property
    def forward_to(self) -> Side:
        return Side.CORE if self.origin is Side.ACCESS else Side.ACCESS


__all__ = [
    "ActpassPolicy",
    "BundlePolicy",
    "DialogState",
    "Kind",
    "Plan",
    "Policy",
    "Result",
    "Role",
    "StreamDecision",
    "random_tls_id",
]
