"""The Iq interface between the IMS-ALG and the IMS-AGW (3GPP TS 23.334, TS 29.334).

The contract both ends import: ``plugin`` and ``sdp_rules`` (the ALG) build
requests and read replies, ``mediad`` (the AGW) reads requests and builds
replies.  It holds data and its JSON form only, no behaviour and no I/O:

* :mod:`iq.values` -- sides, DTLS roles, commands, Iq transport names,
  RFC 8122 fingerprints, RFC 8864 dcmaps, the names of the AGW's events;
* :mod:`iq.messages` -- requests (:class:`IqRequest`: streams and their
  terminations, and the access transports that several streams share under
  BUNDLE) and replies (:class:`IqReply`).

``docs/iq.md`` describes every message, old and new, with examples.
"""

from iq.messages import (
    IqReply,
    IqRequest,
    StreamReply,
    StreamSpec,
    TerminationReply,
    TerminationSpec,
    TransportReply,
    TransportSpec,
)
from iq.values import (
    EVENT_CONSENT_EXPIRED,
    EVENT_DTLS_ESTABLISHED,
    EVENT_DTLS_FAILED,
    EVENT_SCTP_STREAM_RESET,
    HASH_FUNCTIONS,
    TRANSPORT_TCP,
    TRANSPORT_TCP_DTLS_SCTP,
    TRANSPORT_UDP,
    TRANSPORT_UDP_DTLS,
    TRANSPORT_UDP_DTLS_SCTP,
    Command,
    DcMap,
    Fingerprint,
    Role,
    Side,
)

__all__ = [
    "EVENT_CONSENT_EXPIRED", "EVENT_DTLS_ESTABLISHED", "EVENT_DTLS_FAILED", "EVENT_SCTP_STREAM_RESET",
    "HASH_FUNCTIONS", "TRANSPORT_TCP", "TRANSPORT_TCP_DTLS_SCTP", "TRANSPORT_UDP", "TRANSPORT_UDP_DTLS",
    "TRANSPORT_UDP_DTLS_SCTP", "Command", "DcMap", "Fingerprint", "IqReply", "IqRequest", "Role", "Side",
    "StreamReply", "StreamSpec", "TerminationReply", "TerminationSpec", "TransportReply", "TransportSpec",
]
