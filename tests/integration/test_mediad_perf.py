"""Rough figures for mediad in one process: handshake time, relay rate, memory per session.

Bounded and loose (they run beside other suites on small machines); the
figures are printed (``pytest -s``) for the release notes.
"""

from __future__ import annotations

import socket
import statistics
import time
from pathlib import Path

import pytest

from iq import Command, Role, Side, StreamSpec, TerminationSpec
from tests.integration.dtls_peer import DtlsPeer, rtp_packet

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
CORE_PEER = "127.0.0.3"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def stream(peer: DtlsPeer | None, core_port: int) -> StreamSpec:
    access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=True, tls_role=Role.SERVER,
                             remote_fingerprints=[peer.fingerprint()] if peer else [])
    core = TerminationSpec(Side.CORE, "RTP/AVP", remote_address=CORE_PEER, remote_port=core_port, rtcp_mux=True)
    return StreamSpec(1, "srtp", access=access, core=core)


def test_handshake_time_relay_rate_and_memory(mediad_factory):
    first = 20000 + (time.monotonic_ns() // 1000 % 4000) * 2
    mediad = mediad_factory(access_ports=f"{first}-{first + 1199}", core_ports=f"{first + 1200}-{first + 2399}")
    client = mediad.client()
    core = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    core.bind((CORE_PEER, 0))
    core.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    core_port = core.getsockname()[1]

    # Handshake time: DTLS-SRTP, mediad server, pyOpenSSL client, loopback.
    times = []
    peers = []
    for i in range(8):
        peer = DtlsPeer("client", srtp=True)
        peers.append(peer)
        access = client.request(mediad.iq(Command.RESERVE, f"hs-{i}", [stream(peer, core_port)])).stream(1).access
        started = time.perf_counter()
        assert peer.handshake((access.local_address, access.local_port))
        times.append(time.perf_counter() - started)
    handshake_ms = statistics.median(times) * 1000

    # Relay rate: core RTP -> SRTP toward the peer, windows of 100 packets, bounded.
    peer = peers[0]
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    core_addr = None
    reply = client.request(mediad.iq(Command.QUERY, "hs-0")).data
    core_addr = ("127.0.0.2", reply["streams"][0]["core"]["ports"]["rtp"])
    packets = [rtp_packet(i) for i in range(100)]
    received = 0
    started = time.perf_counter()
    deadline = started + 5.0
    peer.sock.settimeout(0.2)
    for _ in range(200):
        for packet in packets:
            core.sendto(packet, core_addr)
        for _ in range(len(packets)):
            try:
                peer.sock.recv(2048)
                received += 1
            except socket.timeout:
                break
        if time.perf_counter() > deadline:
            break
    rate = received / (time.perf_counter() - started)
    # And access SRTP -> core RTP (unprotect), the same way.
    core.settimeout(0.2)
    received_up = 0
    seq = 0
    started = time.perf_counter()
    deadline = started + 5.0
    for _ in range(200):
        for _ in range(100):
            seq += 1
            peer.send_rtp(rtp_packet(seq, payload=b"x" * 160))
        for _ in range(100):
            try:
                core.recv(2048)
                received_up += 1
            except socket.timeout:
                break
        if time.perf_counter() > deadline:
            break
    rate_up = received_up / (time.perf_counter() - started)

    # Memory per idle session: RSS growth over N reserved sessions (4 ports each not muxed: 2 here).
    for i, p in enumerate(peers):
        client.request(mediad.iq(Command.RELEASE, f"hs-{i}"))
        p.close()
    n = 500
    base = rss_kib(mediad.proc.pid)
    for i in range(n):
        assert client.request(mediad.iq(Command.RESERVE, f"idle-{i}", [stream(None, core_port)])).error is None
    grown = rss_kib(mediad.proc.pid)
    per_session = (grown - base) / n
    for i in range(n):
        client.request(mediad.iq(Command.RELEASE, f"idle-{i}"))
    core.close()
    print(f"\nDTLS-SRTP handshake (loopback, median of {len(times)}): {handshake_ms:.1f} ms; "
          f"relay core->access (protect): {rate:.0f} packets/s ({received} packets), "
          f"access->core (unprotect): {rate_up:.0f} packets/s ({received_up} packets); "
          f"RSS per idle session: {per_session:.1f} KiB over {n} sessions")
    assert handshake_ms < 1000
    assert rate > 500 and rate_up > 500
    assert per_session < 512
