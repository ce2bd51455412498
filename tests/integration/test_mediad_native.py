"""The native packet path (mediad.io.fastpath) against the Python one, through a real mediad.

Each test runs twice, ``packet_path = native`` and ``packet_path = python``: the
bytes relayed, the counters and the drops must be the same, and only the native
run may count packets in ``e2ae_mediad_native_packets_total``.  The peer is a
pyOpenSSL DTLS-SRTP UE (no ICE, no rtcp-mux), the core a plain UDP socket.
"""

from __future__ import annotations

import socket

import pytest

from iq import Command
from tests.integration.dtls_peer import rtp_packet
from tests.integration.test_mediad_udp_peer import NoMuxCall, check_media, recv_all

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
PATHS = ["native", "python"]


def established(mediad_factory, packet_path: str, dialog: str) -> tuple:
    mediad = mediad_factory(packet_path=packet_path)
    call = NoMuxCall(mediad, dialog)
    call.open()
    call.establish([call.rtp_peer.fingerprint()])
    assert call.rtp_peer.handshake(None) and call.rtcp_peer.handshake(None)
    return mediad, call


def packets(mediad, side: str, direction: str, kind: str) -> float:
    return mediad.metric("e2ae_mediad_packets_total", side=side, direction=direction, kind=kind)


@pytest.mark.req("SRTP-8", "MUX-1")
@pytest.mark.parametrize("packet_path", PATHS)
def test_both_paths_relay_the_same_bytes_and_counts(mediad_factory, packet_path):
    mediad, call = established(mediad_factory, packet_path, f"same-{packet_path}")
    try:
        check_media(call)  # 20 RTP and 1 RTCP each way, byte-exact, separate RTCP ports
        check_media(call, seq0=1000)
        native = mediad.metric("e2ae_mediad_native_packets_total")
        assert packets(mediad, "access", "in", "rtp") == 40 and packets(mediad, "core", "out", "rtp") == 40
        assert packets(mediad, "core", "in", "rtp") == 40 and packets(mediad, "access", "out", "rtp") == 40
        assert packets(mediad, "access", "in", "rtcp") == 2 and packets(mediad, "core", "out", "rtcp") == 2
        assert packets(mediad, "core", "in", "rtcp") == 2 and packets(mediad, "access", "out", "rtcp") == 2
        if packet_path == "native":
            # The first round may reach mediad in the same batch as the last DTLS flight (those
            # take Python, in order); once the routes are cached, every packet is native.
            assert native >= 42, native
        else:
            assert native == 0
    finally:
        call.close()


@pytest.mark.req("SRTP-8")
@pytest.mark.parametrize("packet_path", PATHS)
def test_replay_tampering_and_bad_core_rtcp_are_dropped_and_counted(mediad_factory, packet_path):
    mediad, call = established(mediad_factory, packet_path, f"drops-{packet_path}")
    try:
        check_media(call)
        peer = call.rtp_peer
        first = rtp_packet(500)
        protected = peer.tx.protect(first)
        peer.sock.sendto(protected, call.access_rtp)
        peer.sock.sendto(protected, call.access_rtp)  # the same packet again: a replay
        tampered = bytearray(peer.tx.protect(rtp_packet(501)))
        tampered[20] ^= 0xFF
        peer.sock.sendto(bytes(tampered), call.access_rtp)
        # Plain RTCP from the core whose length field does not add up (RFC 3550 A.2).
        bad_rtcp = bytearray(b"\x81\xc9\x00\x07" + bytes(28))
        bad_rtcp[3] = 3
        call.core_rtcp.sendto(bytes(bad_rtcp), call.core_rtcp_addr)
        assert recv_all(call.core_rtp, 2, timeout=1.0) == [first]
        assert call.rtcp_peer.recv_media(timeout=0.5, rtcp=True) is None
        assert mediad.metric("e2ae_mediad_drops_total", reason="replay") == 1
        assert mediad.metric("e2ae_mediad_drops_total", reason="auth_fail") == 1
        assert mediad.metric("e2ae_mediad_drops_total", reason="malformed") == 1
        check_media(call, seq0=600)  # and media still flows both ways
    finally:
        call.close()


@pytest.mark.req("SRTP-8")
@pytest.mark.parametrize("packet_path", PATHS)
def test_new_source_is_latched_after_authentication(mediad_factory, packet_path):
    """NAT rebinding: SRTP from a new address moves the destination toward access."""
    mediad, call = established(mediad_factory, packet_path, f"latch-{packet_path}")
    moved = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    moved.bind(("127.0.0.1", 0))
    moved.settimeout(2.0)
    try:
        check_media(call)
        peer = call.rtp_peer
        # Garbage from the new address moves nothing (it does not authenticate).
        moved.sendto(rtp_packet(700) + bytes(10), call.access_rtp)
        probe = rtp_packet(800)
        call.core_rtp.sendto(probe, call.core_rtp_addr)
        assert peer.recv_media() == probe
        latched = rtp_packet(701)
        moved.sendto(peer.tx.protect(latched), call.access_rtp)
        assert recv_all(call.core_rtp, 1) == [latched]
        back = [rtp_packet(seq) for seq in range(801, 811)]
        for packet in back:
            call.core_rtp.sendto(packet, call.core_rtp_addr)
        assert [peer.rx.unprotect(moved.recvfrom(4096)[0]) for _ in back] == back
        assert mediad.metric("e2ae_mediad_drops_total", reason="auth_fail") == 1
    finally:
        moved.close()
        call.close()


@pytest.mark.req("SRTP-8")
def test_released_stream_leaves_nothing_behind_and_reused_descriptors_carry_the_new_call(mediad_factory):
    """A released stream's sockets are out of the native path before they close, so a new call whose
    sockets get the same descriptor numbers relays its own media, and only its own."""
    mediad = mediad_factory(packet_path="native")
    first = NoMuxCall(mediad, "first")
    first.open()
    first.establish([first.rtp_peer.fingerprint()])
    assert first.rtp_peer.handshake(None) and first.rtcp_peer.handshake(None)
    check_media(first)
    before = mediad.sockets()
    assert mediad.client().request(mediad.iq(Command.RELEASE, "first")).error is None
    released = {first.access_rtp, first.access_rtcp, first.core_rtp_addr, first.core_rtcp_addr}
    assert not released & mediad.sockets()
    assert before - mediad.sockets() == released
    second = NoMuxCall(mediad, "second")
    try:
        second.open()
        second.establish([second.rtp_peer.fingerprint()])
        assert second.rtp_peer.handshake(None) and second.rtcp_peer.handshake(None)
        check_media(second)
        check_media(second, seq0=300)
        # The first call's peer still sending: nothing reaches either core.
        first.rtp_peer.send_rtp(rtp_packet(900))
        assert recv_all(first.core_rtp, 1, timeout=0.5) == [] and recv_all(second.core_rtp, 1, timeout=0.5) == []
        assert mediad.metric("e2ae_mediad_native_packets_total") >= 42
    finally:
        first.close()
        second.close()
