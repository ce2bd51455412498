"""Bandwidth modifiers across the e2ae boundary (TS 23.334 5.11.2.3.1, requirement G-2).

The ALG adds the security overhead to a bandwidth value received from the core
before sending it to access, and subtracts it from a value received from
access before sending it to the core.

Derivation
----------
Only per-packet overhead matters: the DTLS handshake and the STUN consent
checks are a few packets per minute.  Per packet, the access side carries

* DTLS-SRTP over UDP (RFC 3711 section 3.1, RFC 5764): the SRTP authentication
  tag, ``T = 10`` bytes for the mandatory-to-implement profile
  SRTP_AES128_CM_HMAC_SHA1_80 (no MKI).  The profile is negotiated later, in
  the handshake, so SDP time assumes the mandatory profile.
* DTLS-SRTP over TCP (RFC 4571, RFC 6544): the tag, plus the 2-byte RFC 4571
  length, plus the TCP header's 12 bytes beyond the UDP header's 8:
  ``T = 10 + 2 + 12 = 24``.
* UDPTL over DTLS (RFC 7345): one DTLS 1.2 record per datagram, 13-byte record
  header + 8-byte explicit nonce + 16-byte AES-GCM tag: ``T = 37``.

The packet rate ``R`` (packets/s) is ``1000 / ptime`` with ``a=ptime`` of the
section (RFC 4566), 20 ms when absent.  For media without a packet time
(video), ``R`` is estimated from the value itself assuming 1,000-byte packets:
``R = ceil(value_bps / 8000)``.

* ``b=AS`` (kbit/s, RFC 8866 5.8, includes IP/UDP/RTP headers):
  ``overhead = ceil(8 * T * R / 1000)`` kbit/s.
* ``b=RS`` / ``b=RR`` (bit/s of RTCP, RFC 3556): SRTCP adds a 4-byte
  E-flag+index and the 10-byte tag to every compound packet (RFC 3711 3.4).
  RTCP's rate is derived from its bandwidth and average packet size, so the
  overhead is proportional, with 100 bytes as the average plain compound RTCP
  packet of a one-to-one call (114 bytes once protected): a core value gains
  ``ceil(value * 14 / 100)``; an access value, which already includes the
  overhead, loses ``ceil(value * 14 / 114)``.  The two are exact inverses.
* ``b=TIAS`` (RFC 3890 6.2) is transport independent by definition: it counts
  neither IP/UDP nor RTP header or trailer, so SRTP's tag is not in it and the
  value is passed unchanged.  So is ``b=CT`` (session level only, RFC 8866
  5.8).

Adding rounds up and subtracting rounds the overhead up too (so the core is
never told more than access can carry), floored at zero; a value of zero (no
RTCP, RFC 3556 section 2) stays zero.  Where the packet rate comes from
``a=ptime`` (audio, fax) adding then subtracting gives the value back.

Only media-level modifiers are rewritten: a session-level ``b=`` line is
passed unchanged (it covers non-e2ae streams as well).
"""

from __future__ import annotations

import math

from sdp_rules.sdp import MediaSection

SRTP_TAG_BYTES = 10  # SRTP_AES128_CM_HMAC_SHA1_80 (RFC 3711 section 5.2, RFC 5764 4.1.2)
SRTCP_EXTRA_BYTES = 4 + 10  # E flag + SRTCP index, plus the tag (RFC 3711 section 3.4)
RFC4571_LENGTH_BYTES = 2
TCP_OVER_UDP_HEADER_BYTES = 20 - 8
DTLS_RECORD_OVERHEAD_BYTES = 13 + 8 + 16  # DTLS 1.2 header + explicit nonce + GCM tag
AVERAGE_RTCP_PACKET_BYTES = 100
DEFAULT_PTIME_MS = 20
ASSUMED_VIDEO_PACKET_BYTES = 1000

PER_PACKET_OVERHEAD = {
    "srtp": SRTP_TAG_BYTES,
    "srtp_tcp": SRTP_TAG_BYTES + RFC4571_LENGTH_BYTES + TCP_OVER_UDP_HEADER_BYTES,
    "t38": DTLS_RECORD_OVERHEAD_BYTES,
}


def packet_rate(m: MediaSection, value_bps: int) -> int:
    """Packets per second of a stream, from a=ptime, else estimated (see module doc)."""
    ptime = m.attribute("ptime")
    if ptime:
        try:
            ms = float(ptime.strip())
        except ValueError:
            ms = 0.0
        if ms > 0:
            return math.ceil(1000 / ms)
    if m.media in ("audio", "image"):
        return 1000 // DEFAULT_PTIME_MS
    return max(1, math.ceil(value_bps / (8 * ASSUMED_VIDEO_PACKET_BYTES)))


def as_overhead_kbps(kind: str, m: MediaSection, value_kbps: int) -> int:
    """Security overhead of a ``b=AS`` value (kbit/s)."""
    per_packet = PER_PACKET_OVERHEAD[kind]
    rate = packet_rate(m, value_kbps * 1000)
    return math.ceil(8 * per_packet * rate / 1000)


def rtcp_overhead_bps(value_bps: int, *, protected: bool = False) -> int:
    """Security overhead of a ``b=RS``/``b=RR`` value (bit/s).

    ``protected``: the value is the access side's, overhead included.
    """
    size = AVERAGE_RTCP_PACKET_BYTES + (SRTCP_EXTRA_BYTES if protected else 0)
    return -(-value_bps * SRTCP_EXTRA_BYTES // size)


def adjust(m: MediaSection, kind: str, *, add: bool) -> None:
    """Rewrite the ``b=`` lines of an e2ae media section in place (G-2)."""
    if kind not in PER_PACKET_OVERHEAD:
        return
    sign = 1 if add else -1
    for line in m.lines_of("b"):
        bwtype, _, text = line.value.partition(":")
        value = int(text)
        upper = bwtype.upper()
        if upper == "AS":
            new = value + sign * as_overhead_kbps(kind, m, value)
        elif upper in ("RS", "RR") and kind != "t38":
            new = value + sign * rtcp_overhead_bps(value, protected=not add)
        else:
            continue
        line.value = f"{bwtype}:{max(0, new)}"
