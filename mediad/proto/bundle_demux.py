"""Which m-line a packet of a BUNDLE transport belongs to (RFC 9143 section 9.2).

Theory of operation
-------------------
Several m-lines share one transport; after SRTP/SRTCP is removed (or from the
header fields alone) each RTP and RTCP packet must be given to its m-line's
stream.  :class:`BundleDemux` keeps the four tables of RFC 9143 section 9.2,
built from the Iq contract (``iq.StreamSpec``: ``mid``, the access
termination's ``payload_types`` and ``ssrcs``; ``iq.TransportSpec``:
``mid_extension_id``) and updated from the packets:

* MID -> stream;
* incoming SSRC -> stream (the WIC's SSRCs: announced with ``a=ssrc``, or
  learnt from the MID header extension, an RTCP SDES MID item or the payload
  type);
* outgoing SSRC -> stream (what the AGW sends toward the WIC on each m-line,
  from the core's ``a=ssrc`` and from :meth:`BundleDemux.sent`: the reverse
  direction, core -> access, whose packets arrive on per-m-line core ports);
* payload type -> stream, for the types that only one m-line receives.

An RTP packet (:meth:`~BundleDemux.route_rtp`) carrying the MID header
extension (RFC 9143 section 15.2, in the one-byte or two-byte form of RFC 8285
section 4) binds its SSRC to that MID's stream, unless an earlier sequence
number than the last MID update (RFC 7941 section 4.2.6); then the SSRC table
decides, the payload type having to be one of the stream's; then the payload
type table (which binds the SSRC); otherwise the packet is not for decoding.
An RTCP packet (:meth:`~BundleDemux.route_rtcp`) is taken apart into its
packets, each routed by its type as section 9.2 lists: SR by sender and report
blocks, RR and XR by report blocks, SDES and BYE by chunk, feedback by media
source or by the SSRCs of its FCI (FIR, TSTR, VBCM, LRR, TMMBR, REMB:
requests about what the AGW sends; TSTN, TMMBN: notifications about what the
WIC sends).  A BYE's SSRCs are forgotten :data:`BYE_GRACE` seconds later
(RFC 3550 section 6.2.1), which :meth:`~BundleDemux.expire` does with the
shell's clock (the transport then frees the SSRC's slot in its SRTP session,
``mediad.proto.srtp``).  What is learnt is bounded: the incoming table takes
a new SSRC from a packet only while it holds fewer than the announced ones
plus ``max_learnt`` (an SDES chunk may name any SSRC; the RTP SSRCs are
already bounded by the SRTP session's inbound cap), and a BYE is remembered
only for an SSRC the table knows.  An SDES item is read within its own RTCP
packet (RFC 3550 section 6.5; RFC 8843 section 15.1): one whose length runs
past the packet ends the chunk list.

The other way, toward the WIC: RFC 9143 section 9.2 has both ends of a
bundle put the MID of the m-line into what they send (the header extension
of section 15.2), since the receiver may route by nothing else -- Chromium,
once the MID extension is negotiated on every m-line of a kind, routes
neither by payload type nor by an SSRC it was not told.  The core sends
plain RTP; :class:`MidStamp` adds the element to each of its packets
(RFC 8285 section 4: into the packet's one-byte or two-byte extension block,
or as a new block), unless the packet already carries one with that id.

No I/O and no clock: time is an argument.  The RTP path does one dict look-up
by SSRC for packets without the MID extension; drops are counted per reason in
:attr:`BundleDemux.drops` (a list indexed by :class:`Drop`).  Written here
rather than taken from aiortc, whose ``RtpRouter`` routes by SSRC and payload
type only and knows neither the MID extension nor the outgoing SSRC table.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Iterable

MID_SDES_ITEM = 15  # RFC 9143 section 15.1
MAX_LEARNT = 64  # SSRCs learnt from packets beyond those announced (the SRTP session's inbound cap bounds RTP)
BYE_GRACE = 5.0  # seconds a BYE'd SSRC keeps its stream, for straggler packets (RFC 3550 6.2.1)

# RTCP packet types (RFC 3550, 3611, 4585) and feedback message types (FMT).
SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR = 200, 201, 202, 203, 204, 205, 206, 207
RTPFB_TMMBR, RTPFB_TMMBN = 3, 4  # RFC 5104
PSFB_FIR, PSFB_TSTR, PSFB_TSTN, PSFB_VBCM, PSFB_LRR, PSFB_AFB = 4, 5, 6, 7, 10, 15
REMB = b"REMB"  # draft-alvestrand-rmcat-remb: an AFB message

_U16 = struct.Struct("!H").unpack_from
_U32 = struct.Struct("!I").unpack_from


class MidStamp:
    """The MID header extension element of one m-line, added to RTP packets (RFC 9143 15.2, RFC 8285 4).

    ``extension_id`` is the negotiated ``a=extmap`` id of the MID extension,
    ``mid`` the m-line's ``a=mid``.  The one-byte form (ids 1-14, 1-16 bytes of
    value) is used where it fits, else the two-byte form.  A packet with an
    extension block of another profile, or of the one-byte profile when only
    the two-byte form fits, is left as it is, as is a malformed one.
    """

    def __init__(self, extension_id: int, mid: str) -> None:
        value = mid.encode()
        self.extension_id = extension_id
        self.one_byte = 1 <= extension_id <= 14 and 1 <= len(value) <= 16
        if self.one_byte:
            self.element = bytes([extension_id << 4 | (len(value) - 1)]) + value
            self.profile = 0xBEDE
        else:
            self.element = bytes([extension_id, len(value)]) + value
            self.profile = 0x1000
        self.block = self._block(b"")

    def _block(self, elements: bytes) -> bytes:
        """An extension block (profile, length in words, elements zero-padded to 32 bits)."""
        body = elements + self.element
        body += bytes(-len(body) % 4)
        return struct.pack("!HH", self.profile, len(body) // 4) + body

    def apply(self, packet: bytes) -> bytes:
        """``packet`` with the MID element in its header extension."""
        size = len(packet)
        first = packet[0]
        start = 12 + 4 * (first & 0x0F)
        if size < start:
            return packet
        if not first & 0x10:
            return bytes([first | 0x10]) + packet[1:start] + self.block + packet[start:]
        if start + 4 > size:
            return packet
        profile, words = _U16(packet, start)[0], _U16(packet, start + 2)[0]
        end = start + 4 + 4 * words
        if end > size:
            return packet
        if profile == 0xBEDE:
            if not self.one_byte:
                return packet
            elements = _strip_padding(packet[start + 4:end], one_byte=True, wanted=self.extension_id)
        elif profile & 0xFFF0 == 0x1000:
            elements = _strip_padding(packet[start + 4:end], one_byte=False, wanted=self.extension_id)
        else:
            return packet
        if elements is None:  # malformed, or the id is there already
            return packet
        head = packet[:start]
        if profile != self.profile:  # a two-byte block takes the element in the two-byte form
            element = bytes([self.extension_id, len(self.element) - 1]) + self.element[1:] if self.one_byte \
                else self.element
            body = elements + element
            body += bytes(-len(body) % 4)
            return head + struct.pack("!HH", profile, len(body) // 4) + body + packet[end:]
        return head + self._block(elements) + packet[end:]


def _strip_padding(body: bytes, *, one_byte: bool, wanted: int) -> bytes | None:
    """The elements of an extension block without trailing padding; None if malformed or ``wanted`` is in it."""
    i, last, size = 0, 0, len(body)
    while i < size:
        if body[i] == 0:
            i += 1
            continue
        if one_byte:
            ident, length = body[i] >> 4, (body[i] & 0x0F) + 1
            if ident == 15:  # reserved: stop parsing (RFC 8285 section 4.2)
                return None
            i += 1
        else:
            if i + 2 > size:
                return None
            ident, length = body[i], body[i + 1]
            i += 2
        if ident == wanted or i + length > size:
            return None
        i += length
        last = i
    return body[:last]


class Drop(enum.IntEnum):
    """Why a packet went to no m-line."""

    MALFORMED = 0  # too short, not version 2, a length past the end
    UNKNOWN_MID = 1  # its MID names no m-line of the bundle
    PAYLOAD_TYPE = 2  # its SSRC's m-line does not receive that payload type
    NO_ROUTE = 3  # no MID, unknown SSRC, and a payload type of no or several m-lines
    RTCP_NO_ROUTE = 4  # an RTCP packet about no SSRC the tables know
    SSRC_COLLISION = 5  # the AGW would send one SSRC on two m-lines (RFC 9143 section 9.1)


@dataclass(frozen=True)
class BundleStream:
    """One m-line of the bundle, as the Iq contract describes it."""

    key: int  # the Iq stream id
    mid: str | None
    payload_types: frozenset[int]  # what the WIC sends on it
    ssrcs: tuple[int, ...] = ()  # what the WIC announced for it (a=ssrc)
    sending: tuple[int, ...] = ()  # what the AGW sends on it toward the WIC (the core's a=ssrc)


class BundleDemux:
    """The routing tables of one BUNDLE transport (see the module docstring)."""

    def __init__(self, streams: Iterable[BundleStream], mid_extension_id: int | None,
                 max_learnt: int = MAX_LEARNT) -> None:
        self.max_learnt = max_learnt
        self.limit = max_learnt  # entries of ``incoming`` past which no new SSRC is learnt
        self.incoming: dict[int, int] = {}  # SSRC -> stream key
        self.outgoing: dict[int, int] = {}
        self.drops = [0] * len(Drop)
        self._mid_seq: dict[int, int] = {}  # SSRC -> sequence number of its last MID update
        self._byes: dict[int, float] = {}  # SSRC -> when to forget it
        self.update(streams, mid_extension_id)

    # -- configuration -------------------------------------------------------------
    def update(self, streams: Iterable[BundleStream], mid_extension_id: int | None) -> None:
        """New m-lines (an offer/answer): rebuild the tables, keep what was learnt of kept streams."""
        streams = list(streams)
        keys = {s.key for s in streams}
        self.mid_extension_id = mid_extension_id
        self.by_mid = {s.mid.encode(): s.key for s in streams if s.mid is not None}
        self.payload_types = {s.key: s.payload_types for s in streams}
        seen: dict[int, int] = {}
        for s in streams:
            for pt in s.payload_types:
                seen[pt] = -1 if pt in seen else s.key  # RFC 9143 9.2: not a key of two m-lines
        self.by_pt = {pt: key for pt, key in seen.items() if key != -1}
        self.incoming = {ssrc: key for ssrc, key in self.incoming.items() if key in keys}
        self.outgoing = {ssrc: key for ssrc, key in self.outgoing.items() if key in keys}
        self._mid_seq = {ssrc: seq for ssrc, seq in self._mid_seq.items() if ssrc in self.incoming}
        self._byes = {ssrc: at for ssrc, at in self._byes.items() if ssrc in self.incoming}
        announced = 0
        for s in streams:
            announced += len(s.ssrcs)
            for ssrc in s.ssrcs:
                self.incoming.setdefault(ssrc, s.key)
            for ssrc in s.sending:
                self.outgoing.setdefault(ssrc, s.key)
        self.limit = announced + self.max_learnt

    def _learn(self, ssrc: int, key: int) -> None:
        """Bind ``ssrc`` to stream ``key``; a new SSRC only while the table is under :attr:`limit`."""
        incoming = self.incoming
        if ssrc in incoming or len(incoming) < self.limit:
            incoming[ssrc] = key

    # -- RTP ---------------------------------------------------------------------------
    def route_rtp(self, packet: bytes) -> int | None:
        """The stream key of one (decrypted or still protected) RTP packet, or None (counted)."""
        size = len(packet)
        if size < 12 or packet[0] >> 6 != 2:
            self.drops[Drop.MALFORMED] += 1
            return None
        ssrc = _U32(packet, 8)[0]
        key = None
        if packet[0] & 0x10 and self.mid_extension_id is not None:
            mid = self._mid_of(packet, size)
            if mid is not None:
                key = self.by_mid.get(mid)
                if key is None:
                    self.drops[Drop.UNKNOWN_MID if mid else Drop.MALFORMED] += 1
                    return None
                seq = _U16(packet, 2)[0]
                last = self._mid_seq.get(ssrc)
                if last is None or (seq - last) & 0xFFFF < 0x8000:
                    self._learn(ssrc, key)
                    if ssrc in self.incoming:
                        self._mid_seq[ssrc] = seq
        key = self.incoming.get(ssrc, key)  # (a MID the full table could not learn still routes its packet)
        pt = packet[1] & 0x7F
        if key is not None:
            if pt in self.payload_types[key]:
                return key
            self.drops[Drop.PAYLOAD_TYPE] += 1
            return None
        key = self.by_pt.get(pt)
        if key is None:
            self.drops[Drop.NO_ROUTE] += 1
            return None
        self._learn(ssrc, key)
        return key

    def _mid_of(self, packet: bytes, size: int) -> bytes | None:
        """The MID in the packet's header extension (RFC 8285 section 4), b"" when malformed."""
        start = 12 + 4 * (packet[0] & 0x0F)
        if start + 4 > size:
            return b""
        profile, words = _U16(packet, start)[0], _U16(packet, start + 2)[0]
        i, end = start + 4, start + 4 + 4 * words
        if end > size:
            return b""
        wanted = self.mid_extension_id
        if profile == 0xBEDE:  # one-byte header: ID (4 bits), L (4 bits) = length - 1
            while i < end:
                byte = packet[i]
                if byte == 0:
                    i += 1
                    continue
                ident, length = byte >> 4, (byte & 0x0F) + 1
                if ident == 15:
                    return None
                if i + 1 + length > end:
                    return b""
                if ident == wanted:
                    return packet[i + 1:i + 1 + length]
                i += 1 + length
        elif profile & 0xFFF0 == 0x1000:  # two-byte header: ID (8 bits), length (8 bits)
            while i < end:
                ident = packet[i]
                if ident == 0:
                    i += 1
                    continue
                if i + 2 > end:
                    return b""
                length = packet[i + 1]
                if i + 2 + length > end:
                    return b""
                if ident == wanted:
                    return packet[i + 2:i + 2 + length]
                i += 2 + length
        return None

    def saw_mid(self, ssrc: int, seq: int) -> None:
        """A MID element for ``ssrc`` at ``seq`` that agreed with its stream, seen by the native path.

        Kept as :meth:`route_rtp` keeps its own (RFC 7941 section 4.2.6): a later
        MID update for the SSRC must not be older than it.
        """
        last = self._mid_seq.get(ssrc)
        if ssrc in self.incoming and (last is None or (seq - last) & 0xFFFF < 0x8000):
            self._mid_seq[ssrc] = seq

    # -- the reverse direction -------------------------------------------------------
    def sent(self, key: int, ssrc: int) -> bool:
        """The AGW sends ``ssrc`` toward the WIC on stream ``key``; False (counted) if another m-line has it."""
        known = self.outgoing.setdefault(ssrc, key)
        if known != key:
            self.drops[Drop.SSRC_COLLISION] += 1
            return False
        return True

    def outgoing_ssrcs(self, key: int) -> list[int]:
        """The SSRCs the WIC is to expect on stream ``key`` (what its RTCP will name)."""
        return sorted(ssrc for ssrc, k in self.outgoing.items() if k == key)

    # -- RTCP --------------------------------------------------------------------------
    def route_rtcp(self, packet: bytes, now: float = 0.0) -> list[tuple[int, int, tuple[int, ...]]]:
        """Each packet of a compound RTCP packet: ``(start, end, stream keys)``; [] when malformed.

        ``now`` times the forgetting of a BYE's SSRCs (:meth:`expire`).
        """
        size = len(packet)
        out: list[tuple[int, int, tuple[int, ...]]] = []
        offset = 0
        while offset < size:
            if size - offset < 8 or packet[offset] >> 6 != 2:
                self.drops[Drop.MALFORMED] += 1
                return []
            end = offset + 4 * (_U16(packet, offset + 2)[0] + 1)
            if end > size:
                self.drops[Drop.MALFORMED] += 1
                return []
            keys = self._rtcp_targets(packet, offset, end, now)
            if not keys:
                self.drops[Drop.RTCP_NO_ROUTE] += 1
            out.append((offset, end, keys))
            offset = end
        return out

    def _rtcp_targets(self, p: bytes, start: int, end: int, now: float) -> tuple[int, ...]:
        kind, count = p[start + 1], p[start] & 0x1F
        keys: list[int] = []

        def add(table: dict[int, int], at: int) -> None:
            if at + 4 <= end:
                key = table.get(_U32(p, at)[0])
                if key is not None and key not in keys:
                    keys.append(key)

        if kind == SR or kind == RR:
            blocks = start + (28 if kind == SR else 8)
            if kind == SR:
                add(self.incoming, start + 4)
            for n in range(count):
                add(self.outgoing, blocks + 24 * n)
        elif kind == SDES:
            self._sdes(p, start + 4, end, count, keys)
        elif kind == BYE:
            for n in range(count):
                at = start + 4 + 4 * n
                add(self.incoming, at)
                if at + 4 <= end and _U32(p, at)[0] in self.incoming:  # (only what is known: bounded)
                    self._byes[_U32(p, at)[0]] = now + BYE_GRACE
        elif kind == RTPFB or kind == PSFB:
            if kind == RTPFB and count == RTPFB_TMMBN or kind == PSFB and count == PSFB_TSTN:
                for at in range(start + 12, end - 7, 8):  # notifications: about what the WIC sends
                    add(self.incoming, at)
            elif kind == RTPFB and count == RTPFB_TMMBR or kind == PSFB and count in (PSFB_FIR, PSFB_TSTR, PSFB_LRR):
                for at in range(start + 12, end - 7, 8):  # requests: about what the AGW sends
                    add(self.outgoing, at)
            elif kind == PSFB and count == PSFB_VBCM:
                add(self.outgoing, start + 12)
            elif kind == PSFB and count == PSFB_AFB and p[start + 12:start + 16] == REMB:
                for n in range(p[start + 16] if start + 16 < end else 0):
                    add(self.outgoing, start + 20 + 4 * n)
            else:  # NACK, PLI, SLI, RPSI, ...: the media source
                add(self.outgoing, start + 8)
        elif kind == XR:
            add(self.incoming, start + 4)
            self._xr(p, start + 8, end, add)
        return tuple(keys)

    def _sdes(self, p: bytes, at: int, end: int, chunks: int, keys: list[int]) -> None:
        for _ in range(chunks):
            if at + 4 > end:
                return
            ssrc = _U32(p, at)[0]
            at += 4
            while at < end and p[at] != 0:
                if at + 2 > end:
                    return
                item, length = p[at], p[at + 1]
                if at + 2 + length > end:  # an item past its packet (RFC 3550 6.5): not the next packet's bytes
                    return
                if item == MID_SDES_ITEM:
                    key = self.by_mid.get(bytes(p[at + 2:at + 2 + length]))
                    if key is not None:
                        self._learn(ssrc, key)
                at += 2 + length
            at = (at + 4) & ~3  # the null item and the padding to the next 32-bit boundary
            key = self.incoming.get(ssrc)
            if key is not None and key not in keys:
                keys.append(key)

    def _xr(self, p: bytes, at: int, end: int, add) -> None:
        while at + 4 <= end:
            block_type = p[at]
            block_end = at + 4 + 4 * _U16(p, at + 2)[0]
            if block_type in (1, 2, 3, 6, 7):  # RFC 3611: blocks about one source
                add(self.outgoing, at + 4)
            elif block_type == 5:  # DLRR: sub-blocks of (SSRC, LRR, DLRR)
                for sub in range(at + 4, min(block_end, end) - 11, 12):
                    add(self.outgoing, sub)
            at = block_end

    # -- time --------------------------------------------------------------------------
    def expire(self, now: float) -> list[int]:
        """Forget the SSRCs whose BYE is older than :data:`BYE_GRACE`; returns them."""
        if not self._byes:
            return []
        gone = [s for s, at in self._byes.items() if at <= now]
        for ssrc in gone:
            del self._byes[ssrc]
            self.incoming.pop(ssrc, None)
            self._mid_seq.pop(ssrc, None)
        return gone

    def timeout(self) -> float | None:
        """When :meth:`expire` has something to do, or None."""
        return min(self._byes.values()) if self._byes else None
