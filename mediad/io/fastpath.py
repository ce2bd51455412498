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
ones Python already knows.

Counters: C adds to a per-daemon block of integers (:class:`Engine`), which
``mediad.metrics`` adds to the Python counts at scrape time; the block has the
same (side, direction, kind) packet/byte counts and drop reasons.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

from pylibsrtp._binding import ffi as _srtp_ffi, lib as _srtp_lib

from mediad.proto.srtp import SrtpKeys, SrtpTransformer

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
              "wrong_source": 22, "too_many_ssrcs": 23}
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
    """

    def __init__(self, keys: SrtpKeys) -> None:
        super().__init__(keys)
        self.ptr = ffi.new("e2ae_srtp *")
        self.ptr.tx = ffi.cast("void *", int(_srtp_ffi.cast("uintptr_t", self._tx._srtp[0])))
        self.ptr.rx = ffi.cast("void *", int(_srtp_ffi.cast("uintptr_t", self._rx._srtp[0])))

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
        self.fds: list[int] = [-1, -1, -1, -1]
        self.srtp: list[Any] = [None, None]  # keeps installed contexts alive while C holds them
        self.addrs: list[Any] = [None] * 8  # dest[0..3], peer[0..1], core_src[0..1] as last written
        self.ssrcs: list[Any] = [None, None]  # the SSRC sets as last written (identity and size)
        self.channels: list["Channel | None"] = [None, None, None, None]

    def new_srtp(self, keys: SrtpKeys) -> FastSrtp:
        return FastSrtp(keys)

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
            self._addr(which, channel.dest if live and srtp is not None else None)
            self._addr(4 + which, channel.peer if live else None)
            ssrcs = channel.ssrcs if live and srtp is not None else None
            if new_session or ssrcs is None or self.ssrcs[which] != (id(ssrcs), len(ssrcs)):
                self._ssrcs(which, ssrcs)
        ctx.check_peer = int(access is not None and not access.spec.ice_lite)
        core_live = core is not None and any(c is not None and c.leg is core for c in self.channels[2:])
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

    def _ssrcs(self, which: int, ssrcs: set[int] | None) -> None:
        """Write the SSRCs the access channel's session protects (C hands a new one to Python)."""
        count = 0
        if ssrcs is not None:
            for count, ssrc in enumerate(ssrcs, 1):
                self.ctx.ssrc[which][count - 1] = ssrc
        self.ctx.nssrc[which] = count
        self.ssrcs[which] = (id(ssrcs), len(ssrcs)) if ssrcs is not None else None

    def _addr(self, slot: int, addr) -> None:
        if addr == self.addrs[slot]:
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
        for data, addr in packets:
            receive(data, addr)  # never raises (the channel catches and counts); its changes sync C

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
