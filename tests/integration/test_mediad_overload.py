"""Overload degrades, never silences a call: flood one session, then check it still relays.

A sender floods one established DTLS-SRTP stream, in each direction, for about
two seconds, faster than mediad relays on a small machine (the kernel drops
what the port's receive buffer cannot hold).  Then packets at an ordinary
rate, on another SSRC, must relay again on the same session and ports: no
port is abandoned, no association torn down, and the counters kept counting.
"""

from __future__ import annotations

import socket
import time

import pytest

from iq import Command, Role, Side, StreamSpec, TerminationSpec
from tests.integration.dtls_peer import DtlsPeer, rtp_packet

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
CORE_PEER = "127.0.0.3"
FLOOD_SECONDS = 2.0
FLOOD_SSRC = 0x55667788
CALL_SSRC = 0x11223344
PAYLOAD = b"\x55" * 160


def drain(sock: socket.socket, quiet: float = 0.3, limit: float = 5.0) -> int:
    """Read until nothing arrived for ``quiet`` seconds (bounded by ``limit``); how many were read."""
    count = 0
    deadline = time.monotonic() + limit
    sock.settimeout(quiet)
    while time.monotonic() < deadline:
        try:
            sock.recv(65536)
            count += 1
        except socket.timeout:
            break
    return count


def test_flood_then_normal_rate_relays_again_on_the_same_session(mediad):
    core = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    core.bind((CORE_PEER, 0))
    peer = DtlsPeer("client", srtp=True)
    access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=True, tls_role=Role.SERVER,
                             remote_fingerprints=[peer.fingerprint()])
    core_spec = TerminationSpec(Side.CORE, "RTP/AVP", remote_address=CORE_PEER,
                                remote_port=core.getsockname()[1], rtcp_mux=True)
    reply = mediad.client().request(mediad.iq(Command.RESERVE, "flood", [StreamSpec(1, "srtp", access, core_spec)]))
    assert reply.error is None, reply
    stream = reply.stream(1)
    access_addr = (stream.access.local_address, stream.access.local_port)
    core_addr = (stream.core.local_address, stream.core.local_port)
    assert peer.handshake(access_addr)
    sockets_before = mediad.sockets()
    out_access = {"side": "access", "direction": "out", "kind": "rtp"}
    out_core = {"side": "core", "direction": "out", "kind": "rtp"}

    # Flood core -> access (plain RTP, mediad protects), then access -> core (SRTP, mediad unprotects).
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.bind((CORE_PEER, 0))
    sent_down = 0
    deadline = time.monotonic() + FLOOD_SECONDS
    while time.monotonic() < deadline:
        for _ in range(256):
            flood.sendto(rtp_packet(sent_down & 0xFFFF, FLOOD_SSRC, PAYLOAD), core_addr)
            sent_down += 1
    drain(peer.sock)
    relayed_down = mediad.metric("e2ae_mediad_packets_total", **out_access)
    sent_up = 0
    deadline = time.monotonic() + FLOOD_SECONDS
    while time.monotonic() < deadline:
        for _ in range(256):
            peer.send_rtp(rtp_packet(sent_up & 0xFFFF, FLOOD_SSRC, PAYLOAD))
            sent_up += 1
    drain(core)
    relayed_up = mediad.metric("e2ae_mediad_packets_total", **out_core)
    flood.close()
    print(f"\nflood core->access: {sent_down} sent, {relayed_down:.0f} relayed; "
          f"access->core: {sent_up} sent, {relayed_up:.0f} relayed")
    assert relayed_down > 0 and relayed_up > 0

    # Normal rate on the same session: every packet relays, both ways.
    core.settimeout(2.0)
    for seq in range(1, 51):
        core.sendto(rtp_packet(seq, CALL_SSRC, PAYLOAD), core_addr)
        plain = peer.recv_media(timeout=2.0)
        assert plain is not None and plain[8:12] == CALL_SSRC.to_bytes(4, "big"), f"packet {seq} toward access"
        peer.send_rtp(rtp_packet(seq, CALL_SSRC, PAYLOAD))
        data = core.recv(65536)
        assert data[8:12] == CALL_SSRC.to_bytes(4, "big") and data[12:] == PAYLOAD, f"packet {seq} toward core"
        time.sleep(0.002)
    assert mediad.sockets() == sockets_before
    assert mediad.metric("e2ae_mediad_packets_total", **out_access) == relayed_down + 50
    assert mediad.metric("e2ae_mediad_packets_total", **out_core) == relayed_up + 50
    query = mediad.client().request(mediad.iq(Command.QUERY, "flood")).data
    assert query["streams"][0]["access"]["channels"]["rtp"]["state"] == "established"
    peer.close()
    core.close()
