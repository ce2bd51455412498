"""Core media only from the core: source filtering and the SSRC cap, on both packet paths.

A real mediad and a real DTLS-SRTP peer (pyOpenSSL) on the access side; on the
core side the core's own socket at the address its SDP names, and senders that
are not the core.  What the access peer decrypts is what mediad relayed.
"""

from __future__ import annotations

import socket
import time

import pytest

from iq import Command, Role, Side, StreamSpec, TerminationSpec
from tests.integration.dtls_peer import DtlsPeer, rtp_packet

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CORE = "127.0.0.3"


def udp(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


def drops(mediad, reason: str) -> float:
    return mediad.metric("e2ae_mediad_drops_total", reason=reason)


def received(peer: DtlsPeer, timeout: float = 0.5) -> list[bytes]:
    out = []
    while (packet := peer.recv_media(timeout=timeout)) is not None:
        out.append(packet)
    return out


class Call:
    """One established DTLS-SRTP stream; the core's SDP names ``core_sdp``."""

    def __init__(self, mediad, core_sdp: tuple[str, int], dialog: str = "call") -> None:
        self.mediad = mediad
        self.peer = DtlsPeer("client", srtp=True)
        access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=True, tls_role=Role.SERVER,
                                 remote_fingerprints=[self.peer.fingerprint("sha-256")],
                                 local_fingerprint_request=True)
        core = TerminationSpec(Side.CORE, "RTP/AVP", remote_address=core_sdp[0], remote_port=core_sdp[1],
                               rtcp_mux=True)
        reply = mediad.client().request(mediad.iq(Command.RESERVE, dialog, [StreamSpec(1, "srtp", access, core)]))
        assert reply.error is None, reply
        stream = reply.stream(1)
        self.core_port = (stream.core.local_address, stream.core.local_port)
        assert self.peer.handshake((stream.access.local_address, stream.access.local_port))
        self.peer.send_rtp(rtp_packet(0))  # the peer's first SRTP: mediad's destination toward access

    def close(self) -> None:
        self.peer.close()


@pytest.mark.parametrize("packet_path", ["native", "python"])
def test_core_media_only_from_the_core_sdp_address_and_ssrcs_capped(mediad_factory, packet_path):
    mediad = mediad_factory(packet_path=packet_path, max_ssrcs="4")
    core, intruder = udp(CORE), udp("127.0.0.9")
    call = Call(mediad, core.getsockname())
    try:
        time.sleep(0.2)
        sent = [rtp_packet(i, ssrc=0x0BADCAFE) for i in range(1, 11)]
        for i, packet in enumerate(sent):
            core.sendto(packet, call.core_port)
            intruder.sendto(rtp_packet(100 + i, ssrc=0x0BADCAFE), call.core_port)  # a stranger: never relayed
        assert received(call.peer) == sent
        assert drops(mediad, "wrong_source") == 10
        # The core's address from another port (the core may send from elsewhere than it listens): taken.
        other_port = udp(CORE)
        packet = rtp_packet(11, ssrc=0x0BADCAFE)
        other_port.sendto(packet, call.core_port)
        assert received(call.peer) == [packet]
        # Random SSRCs from the core's address: the first max_ssrcs (the one in use included) get a
        # libsrtp stream, the rest are dropped and counted.
        for ssrc in range(1, 21):
            core.sendto(rtp_packet(200 + ssrc, ssrc=ssrc), call.core_port)
        got = received(call.peer)
        assert [int.from_bytes(p[8:12], "big") for p in got] == [1, 2, 3]
        assert drops(mediad, "too_many_ssrcs") == 17
        # Admitted SSRCs keep flowing (on the native path without Python now).
        native = mediad.metric("e2ae_mediad_native_packets_total")
        for i in range(20):
            core.sendto(rtp_packet(300 + i, ssrc=2), call.core_port)
        assert len(received(call.peer)) == 20
        if packet_path == "native":
            assert mediad.metric("e2ae_mediad_native_packets_total") - native >= 20
        assert mediad.client().request(mediad.iq(Command.RELEASE, "call")).error is None
        other_port.close()
    finally:
        call.close()
        core.close()
        intruder.close()


@pytest.mark.parametrize("packet_path", ["native", "python"])
def test_latching_for_a_core_behind_nat(mediad_factory, packet_path):
    """core_source = latch: the first core media fixes the source; media toward the core goes there."""
    mediad = mediad_factory(packet_path=packet_path, core_source="latch")
    behind_nat = udp("127.0.0.4")  # what the core's packets come from, not what its SDP says
    intruder = udp("127.0.0.9")
    call = Call(mediad, (CORE, 4000))
    try:
        time.sleep(0.2)
        first = rtp_packet(1, ssrc=7)
        behind_nat.sendto(first, call.core_port)
        assert received(call.peer) == [first]
        toward_core = rtp_packet(50)
        call.peer.send_rtp(toward_core)
        behind_nat.settimeout(2)
        assert behind_nat.recvfrom(4096)[0] == toward_core  # toward the latched source, not the SDP's
        sent = [rtp_packet(2 + i, ssrc=7) for i in range(5)]
        for i, packet in enumerate(sent):
            intruder.sendto(rtp_packet(60 + i, ssrc=7), call.core_port)
            behind_nat.sendto(packet, call.core_port)
        assert received(call.peer) == sent
        assert drops(mediad, "wrong_source") == 5
    finally:
        call.close()
        behind_nat.close()
        intruder.close()
