"""The native packet path of established DTLS-SRTP streams over UDP.

Theory of operation
-------------------
Why native: measured on the 2-core benchmark box, the Python relay
(``mediad.core.relay``) costs ~17 CPU-µs per relayed packet, of which ~2 µs are
interpreter work of the relay itself, ~1-2 µs pylibsrtp's per-packet
allocations and the rest the kernel's UDP path and the event loop.  rtpengine
in userspace costs 13-19.  ``fastpath.c`` (~300 lines, cffi) is the smallest
piece that removes the Python part: each readable media socket is drained
with one ``recvmmsg`` per wake-up, and a datagram that is established RTP/RTCP
from a known peer toward a known destination is transformed in place and sent
on, without entering Python.  The transform is pylibsrtp's own libsrtp (built
on OpenSSL), called through function pointers on the very sessions pylibsrtp
created: Debian's libsrtp2 is built on NSS, whose per-call locking alone cost
more than the relay (measured with perf).

Everything else stays in Python and runs exactly the code it runs without this
module: STUN (ICE-lite, consent), DTLS, a datagram from a new source address
(latching), the core side before its address is known or latched, a new SSRC
toward access (Python admits it up to ``max_ssrcs``), a stream not (or no
longer) established, a destination not computed yet, RTCP shorter than 12
bytes.  Core media from a source other than the one Python allows (the
SDP's address, or the latched address and port) is dropped and counted here.  Such "slow" datagrams are handed back and fed to the channel's
``datagram_received``.  So there is one source of truth for every decision:
Python decides, C repeats the decision Python wrote down.

:class:`StreamPath` is that written-down decision for one stream: the
sockets of its four channels, the libsrtp contexts of its two access channels,
the destinations toward access (only while Python has one cached: the consent
timer clears it, and the next packet then goes through Python's consent
check), the core destinations, the latched access peers, the source the core's
media must come from, and the SSRCs each access session protects.  :meth:`StreamPath.sync` recomputes it from the stream's
Python objects and is called whenever one of them changes (keys, route, peer,
spec, a channel opened or closed).  The SRTP contexts (:class:`FastSrtp`) are
used both by C and, for the rare slow packet, by Python, so the replay window
and rollover counter are never split between two copies.

Lifetimes: a channel's socket is closed only after it has been removed from
the C state (``Channel.close`` calls :meth:`StreamPath.detach`), so a reused
descriptor number never receives another stream's media; a libsrtp context
installed in C is referenced by the :class:`StreamPath` until it is replaced,
so it cannot be freed under C.

Rollover counters: C appends the SSRC of each RTP packet it authenticates from
access to a per-channel list (``heard``, up to ``E2AE_MAX_SSRCS``: one compare
per SSRC already heard, a packet carries one); Python reads it to know whose
ROC to keep (``mediad.proto.srtp``).  Toward access the SSRCs are the admitted
ones Python already knows.  When a packet shows that a ROC advanced (its
sequence number's top bit cleared) or that an SRTCP index is to be stored (a
multiple of ``SRTCP_BLOCK``), C writes (stream, channel) into the engine's
ring; :meth:`Engine.noted` reads what was written since its last call, so the
daemon reads the SRTP state of those channels only (``mediad.proto.srtp``
explains both signs).

BUNDLE (RFC 9143): :class:`BundlePath` is the written-down decision of a
transport -- its access socket and SRTP contexts, and the table of its
m-lines (each stream's core sockets, MID, payload types; the SSRCs the
demultiplexer learnt) -- and each stream on it has a :class:`StreamPath` for
its core sockets whose ``via`` is the transport's (``fastpath.c`` says what
C decides with them).

Counters: C adds to a per-daemon block of integers (:class:`Engine`), which
``mediad.metrics`` adds to the Python counts at scrape time; the block has the
same (side, direction, kind) packet/byte counts and drop reasons.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import weakref
from typing import TYPE_CHECKING, Any

from pylibsrtp._binding import ffi as _srtp_ffi, lib as _srtp_lib

from mediad.io.tcp import TcpPeer
from mediad.proto.srtp import MAX_INBOUND_SSRCS, SrtpKeys, SrtpTransformer

if TYPE_CHECKING:
    from mediad.core.relay import Channel
    from mediad.core.session import Stream

log = logging.getLogger("mediad.fastpath")

try:  # built by ``python -m mediad.io.fastpath_build``
    from mediad.io._fastpath import ffi, lib
except ImportError:  # pragma: no cover - depends on the build
    ffi = lib = None
else:  # C calls pylibsrtp's libsrtp (OpenSSL crypto), the copy that created the sessions
    lib.e2ae_bind(*(int(_srtp_ffi.cast("uintptr_t", _srtp_ffi.addressof(_srtp_lib, name)))
                    for name in ("srtp_protect", "srtp_unprotect", "srtp_protect_rtcp", "srtp_unprotect_rtcp")))

A_RTP, A_RTCP, C_RTP, C_RTCP = 0, 1, 2, 3
TRAFFIC_INDEX = {
    (side, direction, kind): s * 8 + d * 4 + k * 2
    for s, side in enumerate(("access", "core"))
    for d, direction in enumerate(("in", "out"))
    for k, kind in enumerate(("rtp", "rtcp"))
}
DROP_INDEX = {"auth_fail": 16, "replay": 17, "bad_packet": 18, "malformed": 19, "send_error": 20,
              "wrong_source": 22, "too_many_ssrcs": 23, "inbound_ssrc_cap": 24, "retired_ssrc": 25}
FAST_PACKETS = 21


def available() -> bool:
    return lib is not None


class Engine:
    """Per daemon: the counter block and the buffer describing slow datagrams."""

    def __init__(self) -> None:
        if lib is None:
            raise RuntimeError("the native packet path is not built (python -m mediad.io.fastpath_build)")
        self.counters = ffi.new("uint64_t[]", lib.E2AE_COUNTERS)
        self.slow = ffi.new("e2ae_pkt[]", lib.E2AE_BATCH)
        self.ring = ffi.new("e2ae_ring *")
        self.read = 0  # notes of the ring read so far
        self.paths: weakref.WeakValueDictionary[int, StreamPath] = weakref.WeakValueDictionary()

    def noted(self) -> "list[Channel] | None":
        """The access channels C noted since the last call (a wrap, an SRTCP block); None: the ring overflowed."""
        head = int(self.ring.head)
        read, self.read = self.read, head
        if head == read:
            return []
        if head - read > lib.E2AE_RING:
            return None
        channels = []
        notes, paths = self.ring.notes, self.paths
        for i in range(read, head):
            entry = notes[i % lib.E2AE_RING]
            path = paths.get(int(ffi.cast("uintptr_t", entry.stream)))
            if path is not None:
                channel = path.channels[entry.which]
                if channel is not None:
                    channels.append(channel)
        return channels

    def traffic(self, key: tuple[str, str, str]) -> tuple[int, int]:
        index = TRAFFIC_INDEX.get(key)
        if index is None:
            return 0, 0
        return int(self.counters[index]), int(self.counters[index + 1])

    def drops(self, reason: str) -> int:
        index = DROP_INDEX.get(reason)
        return 0 if index is None else int(self.counters[index])

    @property
    def fast_packets(self) -> int:
        return int(self.counters[FAST_PACKETS])


class FastSrtp(SrtpTransformer):
    """An association's pylibsrtp sessions, also handed to C (one replay window, one ROC).

    Python's slow path uses the inherited methods; C calls the same sessions'
    ``srtp_t`` through the function pointers bound at import (``e2ae_bind``).
    The admitted and retired inbound SSRCs live in the C block (both paths
    admit; ``mediad.proto.srtp`` says why there is a cap).
    """

    def __init__(self, keys: SrtpKeys, max_inbound: int = MAX_INBOUND_SSRCS) -> None:
        self.ptr = ffi.new("e2ae_srtp *")
        super().__init__(keys, max_inbound)
        self.ptr.tx = ffi.cast("void *", int(_srtp_ffi.cast("uintptr_t", self._tx._srtp[0])))
        self.ptr.rx = ffi.cast("void *", int(_srtp_ffi.cast("uintptr_t", self._rx._srtp[0])))
        self.ptr.srtcp_index_at = self._index_at
        self.ptr.max_rx = max_inbound

    def inbound_known(self, ssrc: int) -> bool:
        ptr = self.ptr
        return ssrc in ptr.rx_ssrc[0:ptr.nrx]

    def inbound_count(self) -> int:
        return int(self.ptr.nrx)

    def inbound_add(self, ssrc: int) -> None:
        ptr = self.ptr
        if ptr.nrx < lib.E2AE_MAX_SSRCS:
            ptr.rx_ssrc[ptr.nrx] = ssrc
            ptr.nrx += 1

    def inbound_remove(self, ssrc: int) -> None:
        ptr = self.ptr
        kept = [known for known in ptr.rx_ssrc[0:ptr.nrx] if known != ssrc]
        for i, known in enumerate(kept):
            ptr.rx_ssrc[i] = known
        ptr.nrx = len(kept)

    def inbound_ssrcs(self) -> list[int]:
        ptr = self.ptr
        return sorted(ptr.rx_ssrc[0:ptr.nrx])

    def is_retired(self, ssrc: int) -> bool:
        ptr = self.ptr
        return ssrc in ptr.retired[0:min(ptr.nretired, lib.E2AE_MAX_SSRCS)]

    def add_retired(self, ssrc: int) -> None:
        ptr = self.ptr
        ptr.retired[ptr.nretired % lib.E2AE_MAX_SSRCS] = ssrc
        ptr.nretired += 1

    def __repr__(self) -> str:
        return f"FastSrtp(profile={self.profile!r})"


def _packed(addr) -> tuple[int, bytes, int] | None:
    """(family, address bytes, port) of an address tuple; None if it is not a literal IP."""
    if not addr:
        return None
    host, port = addr[0], addr[1]
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return family, socket.inet_pton(family, host), int(port)
        except (OSError, TypeError, ValueError):
            continue
    return None


class StreamPath:
    """The C state of one ``srtp`` stream, kept equal to its Python objects by :meth:`sync`."""

    def __init__(self, engine: Engine, stream: "Stream") -> None:
        self.engine = engine
        self.stream = stream
        self.ctx = ffi.new("e2ae_stream *")
        for i in range(4):
            self.ctx.fd[i] = -1
        self.ctx.counters = engine.counters
        self.ctx.ring = engine.ring
        engine.paths[int(ffi.cast("uintptr_t", self.ctx))] = self
        self.fds: list[int] = [-1, -1, -1, -1]
        self.srtp: list[Any] = [None, None]  # keeps installed contexts alive while C holds them
        self.addrs: list[Any] = [None] * 8  # dest[0..3], peer[0..1], core_src[0..1] as last written
        self.ssrcs: list[Any] = [None, None]  # the SSRC sets as last written (identity and size)
        self.channels: list["Channel | None"] = [None, None, None, None]
        # On a BUNDLE transport: the transport's path (C reads its access side), and what was written of
        # the stream's leg on it: the SSRCs it sends (identity and size) and its MID element.
        self.via: "BundlePath | None" = None
        self.sent: Any = None
        self.stamp: Any = None

    def new_srtp(self, keys: SrtpKeys, max_inbound: int = MAX_INBOUND_SSRCS) -> FastSrtp:
        return FastSrtp(keys, max_inbound)

    def access_received(self) -> int:
        """Authenticated access packets the native path relayed (the dialog's expiry)."""
        return int(self.ctx.access_rx)
    def relayed(self) -> tuple[int, int]:
        """Packets C took in for relay from access and from the core (this stream)."""
        return int(self.ctx.relayed[0]), int(self.ctx.relayed[1])

    def heard(self, channel: "Channel") -> list[int]:
        """The SSRCs of RTP this path authenticated from the channel's peer in its SRTP session."""
        for which in (A_RTP, A_RTCP):
            if self.channels[which] is channel:
                return list(self.ctx.heard[which][0:self.ctx.nheard[which]])
        return []

    # -- Python -> C ------------------------------------------------------------------
    def before_slow(self) -> None:
        """Before Python takes the datagrams C left it: what C learnt that Python's decision depends on."""

    def after_slow(self) -> None:
        """After: what Python learnt from them that C repeats (a stream on a transport: an SSRC it sends)."""
        if self.via is not None:
            self._sync_via()

    def attach(self, which: int, channel: "Channel", sock: socket.socket) -> None:
        self.channels[which] = channel
        self.fds[which] = sock.fileno()
        self.sync()

    def detach(self, channel: "Channel") -> None:
        """Before the channel's socket closes: C forgets it (and everything it implied)."""
        for which, known in enumerate(self.channels):
            if known is channel:
                self.channels[which] = None
                self.fds[which] = -1
                self.ctx.fd[which] = -1
        self.sync()

    def sync(self) -> None:
        """Write down in C what Python would decide for an RTP/RTCP datagram now."""
        ctx, stream = self.ctx, self.stream
        for which in range(4):
            channel = self.channels[which]
            ctx.fd[which] = self.fds[which] if channel is not None and channel.transport is not None else -1
        access, core = stream.access, stream.core
        self._sync_access(access)
        core_live = core is not None and any(c is not None and c.leg is core for c in self.channels[2:])
        self._sync_core(core, core_live)
        self._sync_via()

    def _sync_access(self, access) -> None:
        """The access channels' SRTP sessions, destinations, peers and admitted SSRCs."""
        ctx = self.ctx
        for which in (A_RTP, A_RTCP):
            channel = self.channels[which]
            live = channel is not None and access is not None and channel.leg is access
            srtp = channel.srtp if live else None
            if not isinstance(srtp, FastSrtp):
                srtp = None
            new_session = srtp is not self.srtp[which]
            if new_session:
                ctx.srtp[which] = srtp.ptr if srtp is not None else ffi.NULL
                ctx.nheard[which] = 0  # a new session has heard no SSRC yet
                self.srtp[which] = srtp
            dest = channel.dest if live and srtp is not None else None
            # A peer over ICE-TCP gets RFC 4571 frames on its connection: Python's (io/tcp.py).
            self._addr(which, None if isinstance(dest, TcpPeer) else dest)
            self._addr(4 + which, channel.peer if live else None)
            ssrcs = channel.ssrcs if live and srtp is not None else None
            if new_session or ssrcs is None or self.ssrcs[which] != (id(ssrcs), len(ssrcs)):
                self._ssrcs(which, ssrcs)
        ctx.check_peer = int(access is not None and not access.spec.ice_lite)

    def _sync_core(self, core, core_live: bool) -> None:
        ctx = self.ctx
        ctx.core_latching = int(not core_live)
        self._addr(C_RTP, core.dest_rtp if core_live else None)
        self._addr(C_RTCP, core.dest_rtcp if core_live else None)
        if core_live and core.latch_mode:  # address and port of the latched source (none yet: Python)
            ctx.core_src_port = 1
            self._addr(6, core.latched.get("rtp"))
            self._addr(7, core.latched.get("rtcp"))
        else:  # the SDP's address, any port (none yet: Python drops)
            ctx.core_src_port = 0
            host = core.expected_host if core_live else None
            self._addr(6, (host, 0) if host else None)
            self._addr(7, (host, 0) if host else None)

    def _sync_via(self) -> None:
        """A stream on a BUNDLE transport: the transport's access side, the SSRCs it sends, its MID element."""
        access = self.stream.access
        transport = getattr(access, "transport", None)
        path = getattr(transport, "path", None)
        via = path if isinstance(path, BundlePath) and hasattr(access, "sent") else None
        ctx = self.ctx
        if via is not self.via:
            old, self.via = self.via, via
            ctx.via = via.ctx if via is not None else ffi.NULL
            self.sent = self.stamp = None
            ctx.nsent = ctx.stamp_len = 0
            if old is not None:
                old.sync_table()
            if via is not None:
                via.sync_table()
        if via is None:
            return
        sent = access.sent
        if self.sent != (id(sent), len(sent)):
            values = list(sent)[:lib.E2AE_MAX_SSRCS]  # (capped at max_ssrcs: never more)
            for i, ssrc in enumerate(values):
                ctx.sent[i] = ssrc
            ctx.nsent = len(values)
            self.sent = (id(sent), len(sent))
        stamp = access.stamp
        if stamp is not self.stamp:
            self.stamp = stamp
            block = stamp.block if stamp is not None else b""
            ffi.memmove(ctx.stamp, block, len(block))  # (at most E2AE_MAX_STAMP: a MID is at most 255 bytes)
            ctx.stamp_len = len(block)

    def _ssrcs(self, which: int, ssrcs: set[int] | None) -> None:
        """Write the SSRCs the access channel's session protects (C hands a new one to Python).

        Each kept SSRC keeps the top bit of its last sequence number (a wrap is seen
        across the rewrite); a new one starts unknown (2: its first packet in the
        lower half is noted).
        """
        ctx = self.ctx
        tops = {ctx.ssrc[which][i]: ctx.ssrc_top[which][i] for i in range(ctx.nssrc[which])}
        count = 0
        if ssrcs is not None:
            for count, ssrc in enumerate(ssrcs, 1):
                ctx.ssrc[which][count - 1] = ssrc
                ctx.ssrc_top[which][count - 1] = tops.get(ssrc, 2)
        ctx.nssrc[which] = count
        self.ssrcs[which] = (id(ssrcs), len(ssrcs)) if ssrcs is not None else None

    def _addr(self, slot: int, addr) -> None:
        if addr == self.addrs[slot] and type(addr) is type(self.addrs[slot]):  # noqa: E721 (TcpPeer is a tuple)
            return
        self.addrs[slot] = addr
        if slot < 4:
            target = self.ctx.dest[slot]
        elif slot < 6:
            target = self.ctx.peer[slot - 4]
        else:
            target = self.ctx.core_src[slot - 6]
        packed = _packed(addr)
        if packed is None:
            target.ok = 0
        else:
            lib.e2ae_set_addr(ffi.addressof(target), packed[0], packed[1], packed[2])


class BundlePath(StreamPath):
    """The C state of a BUNDLE transport: its access socket and SRTP session, and its streams' table.

    The table (``e2ae_bundle``) is what ``BundleDemux`` knows, for the streams
    whose core sockets are on the native path: their MIDs, the payload types the
    WIC sends on each, and the incoming SSRC -> stream entries it has learnt.
    :meth:`sync_table` writes it again whenever one of them changed (the
    transport rebuilt, a stream joined or left, Python learnt an SSRC from a
    slow packet); an SSRC keeps the wrap state and MID sequence number C has for it.
    """

    def __init__(self, engine: Engine, transport) -> None:
        super().__init__(engine, None)
        self.transport = transport
        self.bundle = ffi.new("e2ae_bundle *")
        self.ctx.bundle = self.bundle
        self.ctx.core_latching = 1
        self.written: Any = None  # the table as last written
        self.members: list[StreamPath] = []  # referenced by C (kept alive while it is)

    def sync(self) -> None:
        ctx = self.ctx
        channel = self.channels[A_RTP]
        ctx.fd[A_RTP] = self.fds[A_RTP] if channel is not None and channel.transport is not None else -1
        self._sync_access(self.transport)
        self.sync_table()

    def sync_members(self) -> None:
        """The transport rebuilt (streams, MIDs, payload types): its streams' paths and the table."""
        for leg in list(self.transport.legs.values()):
            path = leg.stream.path
            if path is not None:
                path.sync()
        self.sync_table()

    def sync_table(self) -> None:
        transport = self.transport
        demux = transport.demux
        keys: dict[int, int] = {}
        members = []
        for key, leg in transport.legs.items():
            path = leg.stream.path
            if path is None or path.via is not self or len(members) == lib.E2AE_MAX_MEMBERS:
                continue
            mid = (leg.stream.mid or "").encode()
            if len(mid) > lib.E2AE_MAX_MID:
                continue  # its packets stay Python's
            keys[key] = len(members)
            members.append((path, mid, demux.payload_types.get(key, frozenset())))
        routes = [(ssrc, keys[key]) for ssrc, key in demux.incoming.items() if key in keys][:lib.E2AE_MAX_SSRCS]
        ext = transport.spec.mid_extension_id
        state = ([(id(p), mid, pts) for p, mid, pts in members], routes, ext)
        if state == self.written:
            return
        self.written = state
        b = self.bundle
        kept = {b.route[i].ssrc: (b.route[i].top, b.route[i].mid_seq) for i in range(b.nroute)}
        b.nroute = 0  # (C reads nothing half written: one thread)
        b.mid_ext = ext or 0
        for k, (path, mid, pts) in enumerate(members):
            b.member[k] = path.ctx
            ffi.memmove(b.mid[k], mid, len(mid))
            b.mid_len[k] = len(mid)
            bits = bytearray(16)
            for pt in pts:
                bits[pt >> 3] |= 1 << (pt & 7)
            ffi.memmove(b.pts[k], bytes(bits), 16)
        b.nmember = len(members)
        self.members = [path for path, _, _ in members]
        for i, (ssrc, member) in enumerate(routes):
            top, mid_seq = kept.get(ssrc, (2, -1))
            route = b.route[i]
            route.ssrc, route.member, route.top, route.mid_seq = ssrc, member, top, mid_seq
        b.nroute = len(routes)

    def before_slow(self) -> None:
        """The MID sequence numbers C saw (RFC 7941 4.2.6), for the demultiplexer's next MID update."""
        b = self.bundle
        for i in range(b.nroute):
            route = b.route[i]
            if route.mid_seq >= 0:
                self.transport.demux.saw_mid(route.ssrc, route.mid_seq)

    def after_slow(self) -> None:
        self.sync_table()  # the demultiplexer may have learnt an SSRC

    def access_received(self) -> int:
        return int(self.ctx.access_rx)


def _address(pkt) -> tuple:
    if pkt.family == socket.AF_INET:
        return (socket.inet_ntop(socket.AF_INET, bytes(ffi.buffer(pkt.ip, 4))), pkt.port)
    if pkt.family == socket.AF_INET6:
        return (socket.inet_ntop(socket.AF_INET6, bytes(ffi.buffer(pkt.ip, 16))), pkt.port, 0, 0)
    return ("", 0)


class FastTransport(asyncio.DatagramTransport):
    """The datagram transport of a channel on the native path: reading is ``e2ae_pump``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, path: StreamPath, which: int,
                 channel: "Channel", sock: socket.socket) -> None:
        super().__init__()
        self._loop = loop
        self._path = path
        self._which = which
        self._channel = channel
        self._sock = sock
        self._fd = sock.fileno()
        self._closing = False
        sock.setblocking(False)
        self._sendto = sock.sendto
        channel.connection_made(self)
        path.attach(which, channel, sock)
        loop.add_reader(self._fd, self._ready, path.ctx, which, path.engine.slow)

    def _ready(self, ctx, which, slow, _pump=lib.e2ae_pump if lib else None) -> None:
        n = _pump(ctx, which, slow)
        if n:
            self._slow(n, slow)

    def _slow(self, n: int, slow) -> None:
        if n < 0:
            log.debug("port %d: receive failed: errno %d", self._channel.port, -n)
            return
        # Copy first: the buffers are reused by the next pump.
        packets = [(ffi.buffer(slow[i].data, slow[i].len)[:], _address(slow[i])) for i in range(n)]
        receive = self._channel.datagram_received
        path = self._path
        path.before_slow()
        for data, addr in packets:
            receive(data, addr)  # never raises (the channel catches and counts); its changes sync C
        path.after_slow()

    # -- asyncio.DatagramTransport -------------------------------------------------------
    def sendto(self, data, addr=None) -> None:
        if self._closing:
            return
        try:
            self._sendto(data, addr)
        except OSError as exc:  # EAGAIN/ENOBUFS under overload, ICMP errors: the datagram is lost
            self._channel.metrics.dropped("send_error")
            self._channel.error_received(exc)

    def get_extra_info(self, name, default=None):
        if name == "socket":
            return self._sock
        if name == "sockname":
            return self._sock.getsockname()
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._path.detach(self._channel)
        self._loop.remove_reader(self._fd)
        self._sock.close()

    def abort(self) -> None:
        self.close()
