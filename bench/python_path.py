"""``python -m bench.python_path``: CPU microseconds per packet of mediad's packet paths, in process.

Theory of operation
-------------------
A call's media is wired to the relay's own objects, established from stored
SRTP keys (AES_CM_128_HMAC_SHA1_80, 160 bytes of payload), and driven in two
directions:

* access → core: real SRTP packets (pylibsrtp) unprotected and handed to the
  core channel;
* core → access: plain RTP protected toward the learnt peer.

Two shapes: one ``srtp`` stream on its own ports (rtcp-mux), or
(``--bundle``) a BUNDLE transport carrying an audio and a video stream
(RFC 9143: one access port and SRTP session, the MID header extension on
every packet from the WIC, the MID stamped on every packet toward it; the
packets alternate between the two streams).

Without ``--sockets`` (the default) the datagrams are handed to
``datagram_received`` and sent into transports that keep nothing: what is
measured is the Python relay's own work plus libsrtp, without the kernel's UDP
path or the event loop -- the part the native path (``mediad.io.fastpath``)
removes.  With ``--sockets`` the relay reads and writes real UDP sockets on
127.0.0.1 and the timed part is what mediad does per datagram: for
``--path python`` a ``recvfrom`` and ``datagram_received`` (whose ``sendto``
is real), for ``--path native`` the native path's ``e2ae_pump`` (``recvmmsg``,
SRTP, ``sendto``); the peers' sends and reads are outside the timed part.
That makes the two paths comparable, kernel included, without an event loop.

Each direction runs ``--packets`` packets ``--rounds`` times and the best
round's process CPU time per packet is printed (the least disturbed by other
work on the machine), with how many packets the native path carried.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
import types

from prometheus_client import CollectorRegistry
from pylibsrtp import Policy, Session

from iq import Side, StreamSpec, TerminationSpec, TransportSpec
from mediad.config import Config
from mediad.core.relay import AccessChannel, CoreChannel
from mediad.core.session import AccessLeg, CoreLeg, Dialog, Stream
from mediad.core.transport import BundledLeg, Transport, TransportChannel
from mediad.io import fastpath
from mediad.metrics import Metrics
from mediad.proto.bundle_demux import MidStamp
from mediad.proto.srtp import AES_CM_128_HMAC_SHA1_80, SrtpKeys

PEER = ("127.0.0.1", 40000)
CORE = ("127.0.0.3", 40002)
MID_EXT = 1
BATCH = 32  # datagrams queued before each timed read (the native path reads up to 32 per call)


class _Sink:
    def sendto(self, data, addr) -> None:
        pass

    def close(self) -> None:
        pass


class _Loop:
    def time(self) -> float:
        return 100.0

    def call_at(self, when, callback):
        return types.SimpleNamespace(cancel=lambda: None)

    call_soon = call_at


class _Socket(asyncio.DatagramTransport):
    """The Python path's transport on a real socket (what asyncio's would do, without its loop)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.sendto = sock.sendto

    def close(self) -> None:
        self.sock.close()


def _udp(address: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((address, 0))
    sock.setblocking(False)
    return sock


class Wiring:
    """One call (a stream, or a transport with two), its peers, and how to feed each side."""

    def __init__(self, bundle: bool, path: str, sockets: bool) -> None:
        self.sockets = sockets
        self.keep = False  # keep what the peers receive (at_peer: SRTP toward the WIC, at_core: plain RTP)
        self.at_peer: list[bytes] = []
        self.at_core: list[bytes] = []
        self.native = path == "native"
        self.loop = asyncio.new_event_loop() if self.native else _Loop()  # native: add_reader only, never run
        self.engine = fastpath.Engine() if self.native else None
        self.owner = types.SimpleNamespace(
            metrics=Metrics(CollectorRegistry()), loop=self.loop, changed=lambda dialog: None,
            note_srtp=lambda channel: None, certificate=None, config=Config(), event=lambda *a, **k: None,
        )
        if self.engine is not None:
            self.owner.metrics.add_native(self.engine)
        self.dialog = Dialog(self.owner, "bench")
        self.keys = SrtpKeys(AES_CM_128_HMAC_SHA1_80, os.urandom(16), os.urandom(14), os.urandom(16),
                             os.urandom(14))
        self.peer_tx = Session(Policy(key=self.keys.remote_key + self.keys.remote_salt,
                                      ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        self.peer_sock = _udp() if sockets else None
        self.core_sock = _udp("127.0.0.3") if sockets else None
        self.peer = self.peer_sock.getsockname() if sockets else PEER
        core_addr = self.core_sock.getsockname() if sockets else CORE
        self.mids: list[str | None] = []
        self.cores: list[CoreChannel] = []
        if bundle:
            self._bundle(core_addr)
        else:
            self._single(core_addr)

    # -- wiring ------------------------------------------------------------------------
    def _open(self, channel, path, which: int) -> None:
        if not self.sockets:
            channel.connection_made(_Sink())
            return
        sock = _udp("127.0.0.3" if which >= fastpath.C_RTP else "127.0.0.1")
        channel.port = sock.getsockname()[1]
        if self.native:
            fastpath.FastTransport(self.loop, path, which, channel, sock)
        else:
            channel.connection_made(_Socket(sock))

    def _core(self, stream: Stream, core_addr, n: int) -> None:
        spec = TerminationSpec(Side.CORE, "RTP/AVP", remote_address=core_addr[0], remote_port=core_addr[1],
                               rtcp_mux=True)
        stream.core = CoreLeg(stream, spec)
        channel = stream.core.rtp = CoreChannel(stream.core, 50002 + 2 * n, "rtp")
        if self.native:
            stream.path = fastpath.StreamPath(self.engine, stream)
        self._open(channel, stream.path, fastpath.C_RTP)
        self.cores.append(channel)

    def _single(self, core_addr) -> None:
        access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", remote_address=self.peer[0],
                                 remote_port=self.peer[1], rtcp_mux=True)
        stream = Stream(self.dialog, StreamSpec(1, "srtp", access, None))
        stream.access = AccessLeg(stream, access)
        self._core(stream, core_addr, 0)
        channel = stream.access.rtp = AccessChannel(stream.access, 50000, "rtp")
        self._open(channel, stream.path, fastpath.A_RTP)
        channel.restore(self.keys, self.peer)
        self.access = channel
        self.mids = [None]
        self.pts = [0]

    def _bundle(self, core_addr) -> None:
        spec = TransportSpec(0, remote_address=self.peer[0], remote_port=self.peer[1],
                             mid_extension_id=MID_EXT)
        transport = Transport(self.dialog, spec)
        self.dialog.transports[0] = transport
        channel = transport.rtp = TransportChannel(transport, 50000, "rtp")
        if self.native:
            transport.path = fastpath.BundlePath(self.engine, transport)
        self._open(channel, transport.path, fastpath.A_RTP)
        self.mids, self.pts = ["0", "1"], [0, 96]
        for n, (mid, pt) in enumerate(zip(self.mids, self.pts)):
            access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", payload_types=[pt], rtcp_mux=True)
            stream = Stream(self.dialog, StreamSpec(n, "srtp", access, None, transport_id=0, mid=mid))
            self._core(stream, core_addr, n)
            stream.access = BundledLeg(stream, transport, access)
            transport.attach(stream.access)
            self.dialog.streams[n] = stream
        channel.restore(self.keys, self.peer)
        self.access = channel

    # -- packets -----------------------------------------------------------------------
    def from_wic(self, seq: int, n: int) -> bytes:
        """SRTP from the WIC on stream ``n`` (with its MID element on a bundle)."""
        packet = rtp(seq, 0x11223344 + n, self.pts[n])
        if self.mids[n] is not None:
            packet = MidStamp(MID_EXT, self.mids[n]).apply(packet)
        return self.peer_tx.protect(packet)

    def from_core(self, seq: int, n: int) -> bytes:
        return rtp(seq, 0x55667788 + n, self.pts[n])

    def relayed(self) -> tuple[int, int]:
        streams = self.dialog.streams.values() if self.dialog.streams else [self.access.stream]
        counts = [s.packets() for s in streams]
        return sum(c["from_access"] for c in counts), sum(c["from_core"] for c in counts)

    def warm_up(self) -> None:
        """One packet each way per stream, so that every SSRC is learnt and admitted (Python's part)."""
        self.run([self.from_wic(0, n) for n in range(len(self.mids))], "access")
        self.run([self.from_core(0, n) for n in range(len(self.mids))], "core")

    def run(self, packets: list[tuple[bytes, int]] | list[bytes], side: str) -> float:
        """Feed ``packets`` to mediad's ``side``; returns the CPU seconds of mediad's part."""
        streams = len(self.mids)
        if not self.sockets:
            start = time.process_time()
            if side == "access":
                receive = self.access.datagram_received
                for data in packets:
                    receive(data, self.peer)
            else:
                for i, data in enumerate(packets):
                    self.cores[i % streams].datagram_received(data, CORE)
            return time.process_time() - start
        spent = 0.0
        for offset in range(0, len(packets), BATCH):
            batch = packets[offset:offset + BATCH]
            targets = [self.access] * len(batch) if side == "access" else \
                [self.cores[(offset + i) % streams] for i in range(len(batch))]
            sender = self.peer_sock if side == "access" else self.core_sock
            for data, channel in zip(batch, targets):
                sender.sendto(data, ("127.0.0.3" if channel in self.cores else "127.0.0.1", channel.port))
            spent += self._read(set(targets))
            self._drain()
        return spent

    def _read(self, channels) -> float:
        start = time.process_time()
        for channel in channels:
            transport = channel.transport
            if self.native:
                transport._ready(transport._path.ctx, transport._which, self.engine.slow)
                continue
            sock, receive = transport.sock, channel.datagram_received
            while True:
                try:
                    data, addr = sock.recvfrom(4096)
                except BlockingIOError:
                    break
                receive(data, addr)
        return time.process_time() - start

    def _drain(self) -> None:
        for sock, into in ((self.peer_sock, self.at_peer), (self.core_sock, self.at_core)):
            while True:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    break
                if self.keep:
                    into.append(data)

    def close(self) -> None:
        for channel in [self.access, *self.cores]:
            channel.close()
        for sock in (self.peer_sock, self.core_sock):
            if sock is not None:
                sock.close()
        if self.native:
            self.loop.close()


def rtp(seq: int, ssrc: int = 0x11223344, pt: int = 0) -> bytes:
    return bytes([0x80, pt]) + (seq & 0xFFFF).to_bytes(2, "big") + (seq * 160).to_bytes(4, "big") \
        + ssrc.to_bytes(4, "big") + bytes(160)


def measure(packets: int, rounds: int, bundle: bool = False, path: str = "python",
            sockets: bool = False) -> dict[str, float]:
    best = {"access_to_core": float("inf"), "core_to_access": float("inf")}
    native = 0
    for _ in range(rounds):
        w = Wiring(bundle, path, sockets)
        try:
            w.warm_up()
            streams = len(w.mids)
            srtp_in = [w.from_wic(1 + i // streams, i % streams) for i in range(packets)]
            plain = [w.from_core(1 + i // streams, i % streams) for i in range(packets)]
            before = w.relayed()
            fast = w.engine.fast_packets if w.engine is not None else 0
            best["access_to_core"] = min(best["access_to_core"], w.run(srtp_in, "access") / packets * 1e6)
            best["core_to_access"] = min(best["core_to_access"], w.run(plain, "core") / packets * 1e6)
            after = w.relayed()
            if (after[0] - before[0], after[1] - before[1]) != (packets, packets):
                raise SystemExit(f"bench: packets lost: {after[0] - before[0]}, {after[1] - before[1]} of {packets}")
            native = (w.engine.fast_packets - fast) if w.engine is not None else 0
        finally:
            w.close()
    best["native_share"] = native / (2 * packets)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packets", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--bundle", action="store_true", help="a BUNDLE transport with an audio and a video stream")
    p.add_argument("--path", choices=("python", "native"), default="python")
    p.add_argument("--sockets", action="store_true", help="real UDP sockets on 127.0.0.1 (needed for --path native)")
    args = p.parse_args()
    if args.path == "native" and not (args.sockets and fastpath.available()):
        p.error("--path native needs --sockets and the native path built (python -m mediad.io.fastpath_build)")
    result = measure(args.packets, args.rounds, args.bundle, args.path, args.sockets)
    shape = "bundle (audio + video)" if args.bundle else "one stream"
    where = "sockets" if args.sockets else "in memory"
    for name in ("access_to_core", "core_to_access"):
        print(f"{name:16s} {result[name]:6.2f} CPU-µs/packet (best of {args.rounds} x {args.packets}; {shape}; "
              f"{args.path} path, {where})")
    print(f"native share     {result['native_share'] * 100:5.1f} % of the packets of the last round")


if __name__ == "__main__":
    main()
