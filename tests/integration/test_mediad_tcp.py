"""DTLS-SRTP over TCP through mediad: ICE-TCP, RFC 4571 framing, both DTLS roles, garbage, release.

A WIC over TCP (``tests.integration.tcp_peer``) connects to mediad's passive
candidate on 127.0.0.1, checks it with framed STUN, runs DTLS over the frames
and exchanges SRTP/SRTCP; the core is plain UDP sockets on 127.0.0.3.
Real mediad process, real redis-server.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from mediad.proto.framing import frame
from mediad.state import dialog_key
from iq import Command, IqRequest, Role, Side, StreamSpec, TerminationSpec, TransportSpec
from tests.integration.dtls_peer import make_certificate, rtcp_rr, rtp_packet
from tests.integration.tcp_peer import TcpWic

CORE_PEER = "127.0.0.3"
WIC_UFRAG, WIC_PWD = "wicU", "wicpasswordwicpassword12"
TCP_CANDIDATE = "1 1 tcp 2128609535 127.0.0.1 9 typ host tcptype active"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def core_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((CORE_PEER, 0))
    return sock


def recv_all(sock: socket.socket, count: int, timeout: float = 2.0) -> list[bytes]:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            out.append(sock.recvfrom(4096)[0])
        except socket.timeout:
            break
    return out


def tcp_listeners(mediad) -> set[tuple[str, int]]:
    """The TCP sockets the process listens on: (address, port) from /proc/net/tcp (state 0A)."""
    inodes = set()
    for fd in Path(f"/proc/{mediad.proc.pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for line in Path(f"/proc/{mediad.proc.pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:
            hex_addr, hex_port = fields[1].split(":")
            out.add((".".join(str(b) for b in reversed(bytes.fromhex(hex_addr))), int(hex_port, 16)))
    return out


def access_spec(wic: TcpWic | None, mediad_role: Role, *, kind: str = "srtp_tcp", fingerprints=None,
                candidates=(TCP_CANDIDATE,)) -> TerminationSpec:
    if fingerprints is None:
        fingerprints = [wic.fingerprint()] if wic is not None else []
    return TerminationSpec(
        Side.ACCESS, "TCP/DTLS/RTP/SAVPF" if kind == "srtp_tcp" else "UDP/TLS/RTP/SAVPF",
        remote_address="127.0.0.1", remote_port=9, rtcp_mux=True, remote_fingerprints=fingerprints,
        local_fingerprint_request=True, tls_role=mediad_role, establish_tls=mediad_role is Role.CLIENT,
        notify_tls_failure=True, ice_lite=True, remote_ice_ufrag=WIC_UFRAG, remote_ice_pwd=WIC_PWD,
        remote_candidates=list(candidates))


class TcpCall:
    """One srtp_tcp stream: the WIC over TCP on access, RTP and RTCP on their own UDP ports toward the core."""

    def __init__(self, mediad, dialog: str, wic_role: str = "client", fingerprints=None, kind: str = "srtp_tcp") -> None:
        self.mediad = mediad
        self.dialog = dialog
        self.wic = TcpWic(wic_role)
        self.mediad_role = Role.SERVER if wic_role == "client" else Role.CLIENT
        self.core_rtp, self.core_rtcp = core_socket(), core_socket()
        core = TerminationSpec(Side.CORE, "RTP/AVPF", remote_address=CORE_PEER,
                               remote_port=self.core_rtp.getsockname()[1],
                               remote_rtcp_port=self.core_rtcp.getsockname()[1])
        access = access_spec(self.wic, self.mediad_role, fingerprints=fingerprints, kind=kind)
        reply = mediad.client().request(mediad.iq(
            Command.RESERVE, dialog, [StreamSpec(1, kind, access=access, core=core)]))
        assert reply.error is None, reply
        self.reply = reply.stream(1)
        assert self.reply.access.local_rtcp_port is None  # RFC 7850: RTCP is muxed over TCP

    @property
    def access(self) -> tuple[str, int]:
        return (self.reply.access.local_address, self.reply.access.local_port)

    @property
    def core_rtp_addr(self) -> tuple[str, int]:
        return (self.reply.core.local_address, self.reply.core.local_port)

    @property
    def core_rtcp_addr(self) -> tuple[str, int]:
        return (self.reply.core.local_address, self.reply.core.local_rtcp_port)

    def connect(self, wic: TcpWic | None = None):
        wic = wic or self.wic
        wic.connect(self.access)
        return wic.stun_check(WIC_UFRAG, self.reply.access.ice_ufrag, self.reply.access.ice_pwd)

    def close(self) -> None:
        self.wic.close()
        self.core_rtp.close()
        self.core_rtcp.close()


def check_media(call: TcpCall, wic: TcpWic | None = None, seq0: int = 0) -> None:
    """SRTP over TCP -> RTP over UDP and back, byte-identical; RTCP both ways (TCP-4)."""
    wic = wic or call.wic
    sent = [rtp_packet(seq0 + i) for i in range(20)]
    for packet in sent:
        wic.send_rtp(packet)
    assert recv_all(call.core_rtp, len(sent)) == sent
    back = [rtp_packet(seq0 + 100 + i, ssrc=0x0BADCAFE) for i in range(20)]
    for packet in back:
        call.core_rtp.sendto(packet, call.core_rtp_addr)
    assert [wic.recv_media() for _ in back] == back
    report = rtcp_rr()
    wic.send_rtcp(report)
    assert recv_all(call.core_rtcp, 1) == [report]
    report = rtcp_rr(0x0BADCAFE)
    call.core_rtcp.sendto(report, call.core_rtcp_addr)
    assert wic.recv_media(rtcp=True) == report


def stored_keys(redis_server, dialog: str) -> bool:
    raw = redis_server.client().get(dialog_key(dialog))
    channels = json.loads(raw)["streams"][0]["access"]["channels"] if raw else {}
    return bool(channels.get("rtp", {}).get("srtp_keys"))


def events(mediad, dialog: str) -> list[dict]:
    return mediad.client().request(mediad.iq(Command.QUERY, dialog)).data["events"]


@pytest.mark.req("TCP-1", "TCP-2", "TCP-4")
@pytest.mark.parametrize("wic_role", ["client", "server"])
def test_srtp_over_tcp_both_ways_in_both_dtls_roles(mediad, wic_role):
    call = TcpCall(mediad, f"tcp-{wic_role}", wic_role)
    try:
        # A plain UDP srtp stream of the same mediad: same certificate, same fingerprint (TCP-2).
        udp = mediad.client().request(mediad.iq(Command.RESERVE, f"udp-{wic_role}", [StreamSpec(
            1, "srtp", access=access_spec(None, Role.SERVER, kind="srtp", candidates=()))]))
        assert udp.stream(1).access.local_fingerprint == call.reply.access.local_fingerprint
        listeners = tcp_listeners(mediad)
        assert call.access in listeners and (udp.stream(1).access.local_address,
                                             udp.stream(1).access.local_port) not in listeners
        assert call.access in mediad.sockets()  # the UDP port of the same number stays bound

        started = time.perf_counter()
        answer = call.connect()
        assert answer is not None and answer.message_class.name == "RESPONSE"
        assert answer.attributes["XOR-MAPPED-ADDRESS"] == call.wic.sock.getsockname()
        assert call.wic.handshake()
        elapsed = time.perf_counter() - started
        print(f"\nICE check + DTLS handshake over TCP, mediad {call.mediad_role.value}: {elapsed * 1000:.1f} ms")
        assert call.wic.peer_fingerprint() == call.reply.access.local_fingerprint  # TCP-2
        check_media(call)

        role = call.mediad_role.value
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role=role, result="ok") == 1
        assert mediad.metric("e2ae_mediad_tcp_connections_total", result="accepted") == 1
        assert mediad.metric("e2ae_mediad_tcp_connections_active") == 1
        assert mediad.metric("e2ae_mediad_packets_total", side="access", direction="in", kind="rtp") == 20
        assert [e["event"] for e in events(mediad, call.dialog)] == ["dtls_established"]
    finally:
        call.close()


@pytest.mark.req("TCP-1", "TCP-4")
def test_a_udp_stream_whose_wic_offered_tcp_relays_over_the_tcp_connection(mediad):
    """An ``srtp`` m-line with TCP candidates, checked over TCP: media goes framed on the connection (RFC 6544)."""
    call = TcpCall(mediad, "udp-over-tcp", "client", kind="srtp")
    try:
        assert call.connect() is not None and call.wic.handshake()
        check_media(call)
        check_media(call, seq0=1000)  # once the SSRCs are known (the native path's own packets)
    finally:
        call.close()


@pytest.mark.req("TCP-1", "SRTP-10")
def test_fingerprint_mismatch_over_tcp_relays_nothing(mediad):
    other_cert = TcpWic("client").fingerprint()
    call = TcpCall(mediad, "tcp-mismatch", "client", fingerprints=[other_cert])
    try:
        assert call.connect() is not None
        assert not call.wic.handshake(timeout=2.0)
        deadline = time.monotonic() + 2
        while not events(mediad, call.dialog) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(e["event"], e["reason"]) for e in events(mediad, call.dialog)] == [
            ("dtls_failed", "fingerprint_mismatch")]
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role="server",
                             result="fingerprint_mismatch") == 1
        for i in range(5):  # SRTP-looking frames: nothing reaches the core
            call.wic.send_frame(rtp_packet(i))
        assert recv_all(call.core_rtp, 1, timeout=0.5) == []
        assert mediad.metric("e2ae_mediad_drops_total", reason="dtls_failed") >= 5
    finally:
        call.close()


@pytest.mark.req("TCP-1", "SRTP-9")
def test_early_client_hello_over_tcp_is_held_until_the_fingerprint_arrives(mediad):
    """No fingerprint yet (ALG still waiting for the answer): the handshake completes once a modify brings it."""
    call = TcpCall(mediad, "tcp-early", "client", fingerprints=[])
    try:
        assert call.connect() is not None
        assert call.wic.handshake()  # done on the wire; mediad holds its verdict (no keys yet)
        call.wic.send_rtp(rtp_packet(1))
        assert recv_all(call.core_rtp, 1, timeout=0.3) == []
        access = TerminationSpec(Side.ACCESS, "TCP/DTLS/RTP/SAVPF", rtcp_mux=True,
                                 remote_fingerprints=[call.wic.fingerprint()])
        reply = mediad.client().request(mediad.iq(Command.MODIFY, call.dialog, [
            StreamSpec(1, "srtp_tcp", access=access, reuse_association=False)]))
        assert reply.error is None, reply
        check_media(call, seq0=10)
        assert [e["event"] for e in events(mediad, call.dialog)] == ["dtls_established"]
    finally:
        call.close()


def test_modify_without_tls_id_and_without_reuse_starts_a_new_association(mediad):
    """A peer without tls-id (Chrome) re-offers with a new certificate: the old keys stop, a new handshake works."""
    call = TcpCall(mediad, "tcp-renew", "client")
    try:
        assert call.connect() is not None and call.wic.handshake()
        check_media(call)
        renewed = TcpWic("client", certificate=make_certificate())
        access = access_spec(renewed, Role.SERVER)
        reply = mediad.client().request(mediad.iq(Command.MODIFY, call.dialog, [
            StreamSpec(1, "srtp_tcp", access=access, reuse_association=False)]))
        assert reply.error is None, reply
        call.wic.send_rtp(rtp_packet(500))  # old keys: no longer relayed
        assert recv_all(call.core_rtp, 1, timeout=0.3) == []
        renewed.take_connection(call.wic)
        assert renewed.handshake()
        check_media(call, renewed, seq0=1000)
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role="server", result="ok") == 2
        renewed.close()
    finally:
        call.close()


@pytest.mark.req("TCP-1")
def test_garbage_on_tcp_is_closed_counted_and_the_stream_keeps_serving(mediad_factory):
    mediad = mediad_factory(dtls_handshake_timeout="1")
    call = TcpCall(mediad, "tcp-garbage", "client")
    attempts = {
        "not_stun": frame(rtp_packet(1)),  # media before any check
        "oversized": b"\xff\xff" + os.urandom(100),  # a 65535-byte first frame announced
        "unauthenticated": frame(bytes(call.wic.stun_request(WIC_UFRAG, call.reply.access.ice_ufrag, "wrong"))),
        "idle_timeout": b"",  # connects, says nothing
    }
    try:
        for reason, data in attempts.items():
            intruder = TcpWic("client")
            intruder.connect(call.access)
            if data:
                intruder.sock.sendall(data)
            assert intruder.closed_by_peer(timeout=3.0), reason
            intruder.close()
            assert mediad.metric("e2ae_mediad_tcp_errors_total", reason=reason) == 1, reason
        intruder = TcpWic("client")  # random bytes: closed one way or another
        intruder.connect(call.access)
        intruder.sock.sendall(os.urandom(3000))
        assert intruder.closed_by_peer(timeout=3.0)
        intruder.close()
        # An authenticated connection that loses its framing.
        lost = TcpWic("client")
        assert call.connect(lost) is not None
        lost.send_frame(b"\x50" + os.urandom(40))
        assert lost.closed_by_peer()
        lost.close()
        assert mediad.metric("e2ae_mediad_tcp_errors_total", reason="unknown_frame") == 1
        assert mediad.metric("e2ae_mediad_tcp_connections_total", result="rejected") >= 5

        # Still serving: the real WIC connects, a second checked connection is refused as busy.
        assert call.connect() is not None and call.wic.handshake()
        second = TcpWic("client")
        call.connect(second)
        assert second.closed_by_peer()
        second.close()
        assert mediad.metric("e2ae_mediad_tcp_errors_total", reason="busy") == 1
        check_media(call)
        assert mediad.metric("e2ae_mediad_tcp_connections_total", result="accepted") == 2
        assert mediad.proc.poll() is None
    finally:
        call.close()


@pytest.mark.req("TCP-1")
def test_tcp_listeners_follow_the_streams_and_release_closes_them(mediad):
    wic = TcpWic("client")
    core = TerminationSpec(Side.CORE, "RTP/AVP", rtcp_mux=True)
    streams = [
        StreamSpec(1, "srtp_tcp", access=access_spec(wic, Role.SERVER), core=core),
        # UDP m-line whose WIC offered TCP candidates too: a passive TCP candidate on the same port.
        StreamSpec(2, "srtp", access=access_spec(wic, Role.SERVER, kind="srtp"), core=core),
        StreamSpec(3, "srtp", access=access_spec(wic, Role.SERVER, kind="srtp", candidates=()), core=core),
    ]
    before = tcp_listeners(mediad)
    reply = mediad.client().request(mediad.iq(Command.RESERVE, "tcp-release", streams))
    assert reply.error is None, reply
    ports = {s.stream_id: (s.access.local_address, s.access.local_port) for s in reply.streams}
    assert tcp_listeners(mediad) - before == {ports[1], ports[2]}
    wic.connect(ports[2])
    assert wic.stun_check(WIC_UFRAG, reply.stream(2).access.ice_ufrag, reply.stream(2).access.ice_pwd)
    assert mediad.client().request(mediad.iq(Command.RELEASE, "tcp-release")).error is None
    assert wic.closed_by_peer()
    wic.close()
    assert tcp_listeners(mediad) == before
    deadline = time.monotonic() + 2
    while mediad.metric("e2ae_mediad_tcp_connections_active") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mediad.metric("e2ae_mediad_tcp_connections_active") == 0


def test_relay_burst_over_tcp(mediad):
    """Measured figure: SRTP over TCP <-> RTP over UDP, a bounded burst each way."""
    call = TcpCall(mediad, "tcp-burst", "client")
    count, window = 2000, 100
    try:
        assert call.connect() is not None and call.wic.handshake()
        rates = {}
        packets = [rtp_packet(i) for i in range(count)]
        started = time.perf_counter()
        got = 0
        for i in range(0, count, window):
            for packet in packets[i:i + window]:
                call.wic.send_rtp(packet)
            got += len(recv_all(call.core_rtp, window, timeout=2.0))
        rates["access->core"] = got / (time.perf_counter() - started)
        assert got == count
        back = [rtp_packet(5000 + i, ssrc=0x0BADCAFE) for i in range(count)]
        started = time.perf_counter()
        got = 0
        for i in range(0, count, window):
            for packet in back[i:i + window]:
                call.core_rtp.sendto(packet, call.core_rtp_addr)
            got += sum(1 for _ in range(window) if call.wic.recv_media(timeout=2.0) is not None)
        rates["core->access"] = got / (time.perf_counter() - started)
        assert got == count
        print("\nrelay over TCP: " + ", ".join(f"{k} {v:.0f} packets/s" for k, v in rates.items()))
    finally:
        call.close()


def test_restart_drops_the_connection_and_the_wic_reconnects_to_the_same_port(mediad, redis_server):
    """The TCP connection dies with the process; mediad listens again, same ICE credentials and SRTP keys."""
    call = TcpCall(mediad, "tcp-restart", "client")
    try:
        assert call.connect() is not None and call.wic.handshake()
        deadline = time.monotonic() + 5  # the keys reach Redis on the next loop turn
        while not stored_keys(redis_server, "tcp-restart") and time.monotonic() < deadline:
            time.sleep(0.02)
        check_media(call)
        mediad.stop()
        assert call.wic.closed_by_peer()
        call.wic.close()
        mediad.start()
        assert mediad.metric("e2ae_mediad_restored_sessions_total") == 1
        assert call.access in tcp_listeners(mediad)
        reconnected = TcpWic("client")
        reconnected.srtp = call.wic.srtp  # the WIC's DTLS association (over ICE) and its keys go on
        assert call.connect(reconnected) is not None
        # RTP both ways (a restarted SRTCP index starts again at 1: the WIC's replay check drops
        # mediad's SRTCP until it passes the old index, as over UDP; see docs/mediad.md).
        sent = [rtp_packet(2000 + i) for i in range(20)]
        for packet in sent:
            reconnected.send_rtp(packet)
        assert recv_all(call.core_rtp, len(sent)) == sent
        back = [rtp_packet(3000 + i, ssrc=0x0BADCAFE) for i in range(20)]
        for packet in back:
            call.core_rtp.sendto(packet, call.core_rtp_addr)
        assert [reconnected.recv_media() for _ in back] == back
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role="server", result="ok") == 0
        reconnected.close()
    finally:
        call.close()


class TcpBundle:
    """A BUNDLE transport (RFC 9143) carrying audio and video, its WIC over ICE-TCP; two core ports."""

    SSRCS = {"a": 0x1111AAAA, "v": 0x2222BBBB}

    def __init__(self, mediad, dialog: str, candidates=(TCP_CANDIDATE,)) -> None:
        self.mediad = mediad
        self.dialog = dialog
        self.wic = TcpWic("client")
        self.core = {mid: core_socket() for mid in self.SSRCS}
        transport = TransportSpec(
            0, remote_address="127.0.0.1", remote_port=9, ice_lite=True, remote_ice_ufrag=WIC_UFRAG,
            remote_ice_pwd=WIC_PWD, remote_candidates=list(candidates), remote_fingerprints=[self.wic.fingerprint()],
            local_fingerprint_request=True, tls_role=Role.SERVER, notify_tls_failure=True,
            local_tls_id="agwTlsIdTcpBundle0000000")
        streams = [StreamSpec(
            n, "srtp", transport_id=0, mid=mid,
            access=TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=True, payload_types=[n],
                                   ssrcs=[self.SSRCS[mid]]),
            core=TerminationSpec(Side.CORE, "RTP/AVPF", remote_address=CORE_PEER, rtcp_mux=True,
                                 remote_port=self.core[mid].getsockname()[1], payload_types=[n]))
            for n, mid in enumerate(self.SSRCS)]
        reply = mediad.client().request(IqRequest(Command.RESERVE, dialog, "t1", streams, transports=[transport]))
        assert reply.error is None, reply
        self.reply = reply
        self.access = (reply.transports[0].local_address, reply.transports[0].local_port)
        self.core_addr = {mid: (reply.stream(n).core.local_address, reply.stream(n).core.local_port)
                          for n, mid in enumerate(self.SSRCS)}

    def connect(self, wic: TcpWic | None = None):
        wic = wic or self.wic
        wic.connect(self.access)
        return wic.stun_check(WIC_UFRAG, self.reply.transports[0].ice_ufrag, self.reply.transports[0].ice_pwd)

    def check_media(self, wic: TcpWic, seq0: int) -> None:
        """Each stream's SRTP over the one TCP connection reaches its own core port, and back."""
        for n, (mid, ssrc) in enumerate(self.SSRCS.items()):
            sent = [rtp_packet(seq0 + i, ssrc=ssrc, pt=n) for i in range(10)]
            for packet in sent:
                wic.send_rtp(packet)
            assert recv_all(self.core[mid], len(sent)) == sent, mid
            back = [rtp_packet(seq0 + 100 + i, ssrc=ssrc ^ 0xFFFF, pt=n) for i in range(10)]
            for packet in back:
                self.core[mid].sendto(packet, self.core_addr[mid])
            assert [wic.recv_media() for _ in back] == back, mid

    def close(self) -> None:
        self.wic.close()
        for sock in self.core.values():
            sock.close()


@pytest.mark.req("TCP-1", "TCP-4", "MUX-1")
def test_a_bundle_transport_serves_ice_tcp_and_keeps_it_across_a_restart(mediad, redis_server):
    """RFC 6544 on an RFC 9143 transport: the passive candidate on its port, both streams over one connection."""
    plain = TcpBundle(mediad, "bundle-udp-only", candidates=())
    call = TcpBundle(mediad, "bundle-tcp")
    try:
        listeners = tcp_listeners(mediad)
        assert call.access in listeners and plain.access not in listeners
        assert call.connect() is not None and call.wic.handshake()
        call.check_media(call.wic, 0)
        deadline = time.monotonic() + 5  # the keys reach Redis with the write-behind
        while time.monotonic() < deadline:
            raw = redis_server.client().get(dialog_key("bundle-tcp"))
            if raw and json.loads(raw)["transports"][0].get("srtp_keys"):
                break
            time.sleep(0.02)
        mediad.stop()
        assert call.wic.closed_by_peer()
        call.wic.close()
        mediad.start()
        assert call.access in tcp_listeners(mediad) and plain.access not in tcp_listeners(mediad)
        reconnected = TcpWic("client")
        reconnected.srtp = call.wic.srtp  # the association and its keys go on (RFC 6544: a new connection)
        assert call.connect(reconnected) is not None
        call.check_media(reconnected, 1000)
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role="server", result="ok") == 0
        reconnected.close()
        for dialog in ("bundle-tcp", "bundle-udp-only"):
            assert mediad.client().request(mediad.iq(Command.RELEASE, dialog)).error is None
        assert call.access not in tcp_listeners(mediad)
    finally:
        call.close()
        plain.close()
