"""The RTP profile of offers sent to the core: ``[policy] core_rtp_profile``.

TS 23.334 (SRTP-1) maps ``UDP/TLS/RTP/SAVPF`` toward access to ``RTP/AVPF``
toward the core, and the rules do so.  Some cores and plain SIP user agents
only know ``RTP/AVP`` (RFC 3551) and refuse an AVPF offer with 488.  RFC 4585
section 3.5 lets an AVPF endpoint talk to an AVP one: AVPF's extra feedback is
simply not sent.  So the policy is one of :class:`CoreRtpProfile`:

* ``avpf``: the spec's mapping, nothing else;
* ``avp``: every offer toward the core says ``RTP/AVP`` (and carries no
  ``a=rtcp-fb``, meaningless under AVP);
* ``auto``: ``RTP/AVPF`` first; when the core answers the initial INVITE with
  488, the same offer goes again as ``RTP/AVP`` in a new branch of the same
  INVITE transaction (the caller sees only the final answer), once.

The access side is not touched: it keeps ``UDP/TLS/RTP/SAVPF`` and its
feedback, which mediad terminates.
"""

from __future__ import annotations

from enum import Enum

from sdp_rules import sdp as sdp_model

AVPF = "RTP/AVPF"
AVP = "RTP/AVP"
# RFC 3261 21.4.26: the core refused the session description.
NOT_ACCEPTABLE_HERE = 488


class CoreRtpProfile(str, Enum):
    AVPF = "avpf"
    AVP = "avp"
    AUTO = "auto"


def as_avp(body: str) -> str | None:
    """``body`` with every ``RTP/AVPF`` media line as ``RTP/AVP`` and its ``a=rtcp-fb``
    lines removed; every other line as it was.  None when no line is ``RTP/AVPF``."""
    description = sdp_model.parse(body)
    changed = False
    for section in description.media:
        if section.proto.upper() == AVPF and not section.rejected:
            section.proto = AVP
            section.remove_attributes("rtcp-fb")
            changed = True
    return str(description) if changed else None


def offer_now(profile: CoreRtpProfile, body: str) -> str | None:
    """The offer to send to the core instead of ``body`` under ``profile`` (None: as is)."""
    return as_avp(body) if profile is CoreRtpProfile.AVP else None


def retry_as_avp(profile: CoreRtpProfile, status: int, retried: bool) -> bool:
    """Whether a final ``status`` to the initial INVITE's AVPF offer is retried as AVP."""
    return profile is CoreRtpProfile.AUTO and status == NOT_ACCEPTABLE_HERE and not retried


__all__ = ["AVP", "AVPF", "CoreRtpProfile", "as_avp", "offer_now", "retry_as_avp"]
