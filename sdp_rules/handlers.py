"""What every media handler gets and returns (see :mod:`sdp_rules.rules`).

A *group* is one or more m-lines of the incoming SDP handled together: a DTLS
media line alone, or -- for a core offer -- every MSRP/T.140 line that goes into
one data-channel m-line toward access.  For an offer the handler returns an
:class:`OfferPart`; for an answer, an :class:`AnswerPart`.  Both carry the Iq
streams to ask for and a ``finish(reply)`` that renders the outgoing m-lines
once the AGW has replied and records the streams' state in ``ctx.streams``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from iq import IqReply, Side, StreamReply, StreamSpec
from sdp_rules.plan import Kind, Policy
from sdp_rules.sdp import MediaSection, SessionDescription

Finish = Callable[[IqReply | None], list[MediaSection]]


@dataclass
class Context:
    """What a handler may read (and, for ``streams``, write) while planning."""

    origin: Side
    kind: Kind
    policy: Policy
    sdp: SessionDescription
    # Stored per-stream state, keyed by str(stream_id); handlers update it in finish().
    streams: dict[str, dict[str, Any]]
    # Every tls-id this dialog has used, ours and the peers' (for uniqueness checks).
    used_tls_ids: set[str] = field(default_factory=set)
    # Stored BUNDLE transports, keyed by str(transport_id) (see :mod:`sdp_rules.bundle`).
    transports: dict[str, dict[str, Any]] = field(default_factory=dict)

    def new_tls_id(self) -> str:
        """A fresh tls-id, unique in this dialog and (by randomness) everywhere (T38-7)."""
        for _ in range(16):
            value = self.policy.new_tls_id()
            if value not in self.used_tls_ids:
                self.used_tls_ids.add(value)
                return value
        raise RuntimeError("tls-id generator keeps repeating itself")


@dataclass
class OfferPart:
    streams: list[StreamSpec]
    finish: Finish
    # JSON data kept in the dialog state until the answer comes back.
    pending: dict[str, Any]
    # Slot keys of the m-lines this group stands for on the other side: for an
    # offer from access, one key per forwarded core m-line (in finish() order);
    # for an offer from the core, one key per input core m-line.
    keys: list[str] = field(default_factory=lambda: ["m"])


@dataclass
class AnswerPart:
    streams: list[StreamSpec]
    finish: Finish
    release: list[int] = field(default_factory=list)


def stream_reply(reply: IqReply | None, stream_id: int) -> StreamReply:
    """The AGW's reply for one stream, or a ValueError naming what is missing."""
    if reply is None:
        raise ValueError(f"no AGW reply for stream {stream_id}")
    try:
        return reply.stream(stream_id)
    except KeyError:
        raise ValueError(f"AGW reply lacks stream {stream_id}") from None
