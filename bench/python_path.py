"""``python -m bench.python_path``: CPU microseconds per packet of mediad's Python packet path, in process.

Theory of operation
-------------------
One ``srtp`` stream (access and core channel, established from stored SRTP
keys, rtcp-mux) is wired to in-memory transports whose ``sendto`` keeps
nothing, so what is measured is the relay's own Python work plus libsrtp,
without the kernel's UDP path or the event loop: the part the native path
(``mediad.io.fastpath``) removes.  Two directions are driven through
``datagram_received``:

* access → core: real SRTP packets (pylibsrtp, AES_CM_128_HMAC_SHA1_80, 160
  bytes of payload) unprotected and handed to the core channel;
* core → access: plain RTP protected toward the learnt peer.

Each direction runs ``--packets`` packets ``--rounds`` times and the best
round's process CPU time per packet is printed (the least disturbed by other
work on the machine).  No sockets, no timers.
"""

from __future__ import annotations

import argparse
import os
import time
import types

from prometheus_client import CollectorRegistry
from pylibsrtp import Policy, Session

from iq import Side, StreamSpec, TerminationSpec
from mediad.config import Config
from mediad.core.relay import AccessChannel, CoreChannel
from mediad.core.session import AccessLeg, CoreLeg, Dialog, Stream
from mediad.metrics import Metrics
from mediad.proto.srtp import AES_CM_128_HMAC_SHA1_80, SrtpKeys

PEER = ("127.0.0.1", 40000)
CORE = ("127.0.0.3", 40002)


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


def wire():
    owner = types.SimpleNamespace(
        metrics=Metrics(CollectorRegistry()), loop=_Loop(), changed=lambda dialog: None, certificate=None,
        config=Config(), event=lambda *args, **kwargs: None,
    )
    dialog = Dialog(owner, "bench")
    access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", remote_address=PEER[0], remote_port=PEER[1],
                             rtcp_mux=True)
    core = TerminationSpec(Side.CORE, "RTP/AVP", remote_address=CORE[0], remote_port=CORE[1], rtcp_mux=True)
    stream = Stream(dialog, StreamSpec(1, "srtp", access, core))
    stream.access, stream.core = AccessLeg(stream, access), CoreLeg(stream, core)
    a = stream.access.rtp = AccessChannel(stream.access, 50000, "rtp")
    c = stream.core.rtp = CoreChannel(stream.core, 50002, "rtp")
    a.connection_made(_Sink())
    c.connection_made(_Sink())
    keys = SrtpKeys(AES_CM_128_HMAC_SHA1_80, os.urandom(16), os.urandom(14), os.urandom(16), os.urandom(14))
    a.restore(keys, PEER)
    peer_tx = Session(Policy(key=keys.remote_key + keys.remote_salt, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    return a, c, peer_tx


def rtp(seq: int, ssrc: int = 0x11223344) -> bytes:
    return bytes([0x80, 0]) + (seq & 0xFFFF).to_bytes(2, "big") + (seq * 160).to_bytes(4, "big") \
        + ssrc.to_bytes(4, "big") + bytes(160)


def measure(packets: int, rounds: int) -> dict[str, float]:
    best = {"access_to_core": float("inf"), "core_to_access": float("inf")}
    seq = 0
    for _ in range(rounds):
        a, c, peer_tx = wire()
        srtp_in = [peer_tx.protect(rtp(seq + i)) for i in range(packets)]
        plain = [rtp(seq + i, 0x55667788) for i in range(packets)]
        seq += packets
        receive = a.datagram_received
        start = time.process_time()
        for data in srtp_in:
            receive(data, PEER)
        best["access_to_core"] = min(best["access_to_core"], (time.process_time() - start) / packets * 1e6)
        receive = c.datagram_received
        start = time.process_time()
        for data in plain:
            receive(data, CORE)
        best["core_to_access"] = min(best["core_to_access"], (time.process_time() - start) / packets * 1e6)
        if a.stream.from_access != packets or a.stream.from_core != packets:
            raise SystemExit(f"bench: packets lost: {a.stream.from_access}, {a.stream.from_core} of {packets}")
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packets", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    for name, value in measure(args.packets, args.rounds).items():
        print(f"{name:16s} {value:6.2f} CPU-µs/packet (best of {args.rounds} x {args.packets})")


if __name__ == "__main__":
    main()
