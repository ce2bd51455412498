"""DTLS-SRTP through mediad with a pyOpenSSL peer: RTCP on its own port, consent, garbage.

The peer plays a SIP UE like baresip: no ICE, no rtcp-mux, so RTCP has its own
port and its own DTLS handshake (RFC 5764 section 4.1), and mediad, told to
establish, starts both handshakes toward the SDP addresses.  Another peer does
ICE checks to test consent freshness (RFC 7675).
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from iq import Command, Role, Side, StreamSpec, TerminationSpec
from tests.integration.dtls_peer import DtlsPeer, rtcp_rr, rtp_packet

CORE_PEER = "127.0.0.3"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def core_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((CORE_PEER, 0))
    sock.settimeout(2.0)
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


class NoMuxCall:
    """mediad as DTLS client toward a UE with separate RTP and RTCP ports, no ICE."""

    def __init__(self, mediad, dialog: str = "nomux") -> None:
        self.mediad = mediad
        self.dialog = dialog
        self.rtp_peer = DtlsPeer("server", srtp=True)
        # One certificate for both components: the SDP has one fingerprint per m-line.
        self.rtcp_peer = DtlsPeer("server", srtp=True, certificate=(self.rtp_peer.cert, self.rtp_peer.key))
        self.core_rtp, self.core_rtcp = core_socket(), core_socket()

    def open(self) -> None:
        host, port = self.rtp_peer.address
        access = TerminationSpec(
            Side.ACCESS, "UDP/TLS/RTP/SAVP", remote_address=host, remote_port=port,
            remote_rtcp_port=self.rtcp_peer.address[1], rtcp_mux=False,
            tls_role=Role.CLIENT, establish_tls=False, local_fingerprint_request=True)
        core = TerminationSpec(Side.CORE, "RTP/AVP", remote_address=CORE_PEER,
                               remote_port=self.core_rtp.getsockname()[1],
                               remote_rtcp_port=self.core_rtcp.getsockname()[1])
        reply = self.mediad.client().request(self.mediad.iq(
            Command.RESERVE, self.dialog, [StreamSpec(1, "srtp", access=access, core=core)]))
        assert reply.error is None, reply
        self.reply = reply.stream(1)
        assert self.reply.access.local_rtcp_port is not None and self.reply.core.local_rtcp_port is not None
        assert self.reply.core.local_port % 2 == 0 and self.reply.core.local_rtcp_port == self.reply.core.local_port + 1

    def establish(self, fingerprints) -> None:
        """The UE's answer: its fingerprints, and Establish (D)TLS session (mediad is client)."""
        access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVP", rtcp_mux=False,
                                 remote_fingerprints=fingerprints, tls_role=Role.CLIENT, establish_tls=True)
        reply = self.mediad.client().request(self.mediad.iq(
            Command.MODIFY, self.dialog, [StreamSpec(1, "srtp", access=access)]))
        assert reply.error is None, reply

    @property
    def access_rtp(self):
        return (self.reply.access.local_address, self.reply.access.local_port)

    @property
    def access_rtcp(self):
        return (self.reply.access.local_address, self.reply.access.local_rtcp_port)

    @property
    def core_rtp_addr(self):
        return (self.reply.core.local_address, self.reply.core.local_port)

    @property
    def core_rtcp_addr(self):
        return (self.reply.core.local_address, self.reply.core.local_rtcp_port)

    def close(self) -> None:
        for peer in (self.rtp_peer, self.rtcp_peer):
            peer.close()
        self.core_rtp.close()
        self.core_rtcp.close()


def check_media(call: NoMuxCall, seq0: int = 0) -> None:
    sent = [rtp_packet(seq0 + i) for i in range(20)]
    for packet in sent:
        call.rtp_peer.send_rtp(packet)
    assert recv_all(call.core_rtp, len(sent)) == sent
    back = [rtp_packet(seq0 + 100 + i, ssrc=0x0BADCAFE) for i in range(20)]
    for packet in back:
        call.core_rtp.sendto(packet, call.core_rtp_addr)
    assert [call.rtp_peer.recv_media() for _ in back] == back
    report = rtcp_rr()
    call.rtcp_peer.send_rtcp(report)
    assert recv_all(call.core_rtcp, 1) == [report]
    report = rtcp_rr(0x0BADCAFE)
    call.core_rtcp.sendto(report, call.core_rtcp_addr)
    assert call.rtcp_peer.recv_media(rtcp=True) == report


@pytest.mark.req("SRTP-8", "SRTP-2", "T38-8", "MUX-1")
@pytest.mark.parametrize("hash_func", ["sha-1", "sha-512"])
def test_rtcp_on_its_own_port_with_its_own_handshake(mediad, hash_func):
    call = NoMuxCall(mediad)
    try:
        call.open()
        call.establish([call.rtp_peer.fingerprint(hash_func)])
        assert call.rtp_peer.handshake(None)
        assert call.rtcp_peer.handshake(None)
        assert call.rtp_peer.remote == call.access_rtp and call.rtcp_peer.remote == call.access_rtcp
        check_media(call)
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role="client", result="ok") == 2
        # The UE moves to rtcp-mux (re-INVITE): mediad drops its access RTCP port.
        before = mediad.sockets()
        reply = mediad.client().request(mediad.iq(Command.MODIFY, call.dialog, [StreamSpec(
            1, "srtp", access=TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVP", rtcp_mux=True),
            reuse_association=True)]))
        assert reply.stream(1).access.local_rtcp_port is None
        assert before - mediad.sockets() == {call.access_rtcp}
        # RTCP now muxed on the RTP association (same keys), to the core's RTCP port.
        report = rtcp_rr()
        call.rtp_peer.send_rtcp(report)
        assert recv_all(call.core_rtcp, 1) == [report]
        assert mediad.client().request(mediad.iq(Command.RELEASE, call.dialog)).error is None
    finally:
        call.close()


def garbage_datagrams() -> list[bytes]:
    stun_header = bytes([0, 1, 0, 8]) + (0x2112A442).to_bytes(4, "big") + os.urandom(12)
    dtls_header = bytes([22, 0xFE, 0xFD]) + bytes(8) + (200).to_bytes(2, "big") + b"\x01\x00"
    rtp = rtp_packet(7, ssrc=0xDEADBEEF)
    fake_srtp = rtp + os.urandom(10)  # wrong SSRC, no valid tag
    out = [os.urandom(n) for n in (1, 3, 17, 100, 1400)]
    out += [stun_header[:10], stun_header, dtls_header, dtls_header[:8], rtp[:5], rtp, fake_srtp, b""]
    out += [bytes([0x81, 200]) + os.urandom(30)]
    return out


@pytest.mark.req("SRTP-8")
def test_garbage_to_every_port_is_dropped_and_counted(mediad):
    call = NoMuxCall(mediad, "garbage")
    try:
        call.open()
        call.establish([call.rtp_peer.fingerprint("sha-256")])
        assert call.rtp_peer.handshake(None) and call.rtcp_peer.handshake(None)
        check_media(call)
        drops_before = sum(v for (name, _), v in mediad.metrics().items() if name == "e2ae_mediad_drops_total")
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.bind(("127.0.0.1", 0))
        control = mediad.control
        for port_addr in (call.access_rtp, call.access_rtcp):
            for data in garbage_datagrams():
                sender.sendto(data, port_addr)
        # Replayed SRTP (a copy of a packet mediad already accepted) and garbage on the control port.
        replay = call.rtp_peer.tx.protect(rtp_packet(500))
        call.rtp_peer.sock.sendto(replay, call.access_rtp)
        call.rtp_peer.sock.sendto(replay, call.access_rtp)
        for data in garbage_datagrams()[:6] + [b"{}", b'{"iq": {}, "mac": "00"}', b"[1,2]"]:
            with socket.create_connection(control, timeout=2) as garbage:
                garbage.sendall(data)
        core_sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        core_sender.bind((CORE_PEER, 0))
        for port_addr in (call.core_rtp_addr, call.core_rtcp_addr):
            for data in [os.urandom(3), os.urandom(11), b"\x00" * 40]:
                core_sender.sendto(data, port_addr)
        # Poll (bounded) until mediad has counted what it was sent: a loaded machine may lag.
        deadline = time.monotonic() + 5.0
        while True:
            metrics = mediad.metrics()
            drops = {dict(labels)["reason"]: v for (name, labels), v in metrics.items()
                     if name == "e2ae_mediad_drops_total" and v}
            control_rejected = sum(v for (name, _), v in metrics.items()
                                   if name == "e2ae_mediad_control_rejected_total")
            if (sum(drops.values()) - drops_before >= 20 and drops.get("replay", 0) >= 1
                    and drops.get("auth_fail", 0) >= 1 and drops.get("unknown_kind", 0) >= 1
                    and drops.get("malformed", 0) >= 1 and control_rejected >= 1):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert sum(drops.values()) - drops_before >= 20
        assert drops.get("auth_fail", 0) >= 1 and drops.get("replay", 0) >= 1
        assert drops.get("unknown_kind", 0) >= 1 and drops.get("malformed", 0) >= 1
        assert control_rejected >= 1
        time.sleep(0.3)  # let whatever mediad still relays (the first copy of the replay) arrive
        # Still serving: control answers, media still flows both ways.
        assert mediad.client().request(mediad.iq(Command.LIST, "x")).data["count"] == 1
        call.core_rtp.settimeout(0.2)
        recv_all(call.core_rtp, 100, timeout=0.3)
        recv_all(call.core_rtcp, 100, timeout=0.1)
        check_media(call, seq0=1000)
        assert mediad.proc.poll() is None
        sender.close()
        core_sender.close()
        assert mediad.client().request(mediad.iq(Command.RELEASE, call.dialog)).error is None
    finally:
        call.close()


@pytest.mark.req("ICE-1", "ICE-2")
def test_consent_freshness(mediad_factory, redis_server):
    mediad = mediad_factory(consent_timeout="1.5")
    peer = DtlsPeer("client", srtp=True)
    core = core_socket()
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe("e2ae:events")
    try:
        ufrag = "peerufrag"
        access = TerminationSpec(
            Side.ACCESS, "UDP/TLS/RTP/SAVPF", remote_address="127.0.0.1", remote_port=9,  # SDP address unused
            rtcp_mux=True, remote_fingerprints=[peer.fingerprint()], tls_role=Role.SERVER, ice_lite=True,
            remote_ice_ufrag=ufrag, remote_ice_pwd="peerpasswordpeerpassword")
        core_spec = TerminationSpec(Side.CORE, "RTP/AVP", remote_address=CORE_PEER,
                                    remote_port=core.getsockname()[1], rtcp_mux=True)
        reply = mediad.client().request(mediad.iq(
            Command.RESERVE, "consent", [StreamSpec(1, "srtp", access=access, core=core_spec)])).stream(1)
        agw = (reply.access.local_address, reply.access.local_port)
        core_addr = (reply.core.local_address, reply.core.local_port)
        assert reply.core.local_rtcp_port is None
        # ICE-1: a check with the wrong password is refused; the right one is answered.
        bad = peer.stun_check(agw, ufrag, reply.access.ice_ufrag, "wrongpasswordwrongpasswo")
        assert bad is not None and bad.message_class.name == "ERROR"
        good = peer.stun_check(agw, ufrag, reply.access.ice_ufrag, reply.access.ice_pwd)
        assert good is not None and good.message_class.name == "RESPONSE"
        assert good.attributes["XOR-MAPPED-ADDRESS"] == peer.address
        assert good.check_message_integrity(reply.access.ice_pwd.encode())
        assert peer.handshake(agw)
        packet = rtp_packet(2)
        core.sendto(packet, core_addr)
        assert peer.recv_media() == packet
        # ICE-2: no more checks -> consent expires -> nothing is sent toward the peer.
        time.sleep(1.8)
        core.sendto(rtp_packet(3), core_addr)
        assert peer.recv_media(timeout=0.5) is None
        assert mediad.metric("e2ae_mediad_drops_total", reason="consent_expired") >= 1
        events = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not any(b"consent_expired" in e for e in events):
            message = pubsub.get_message(timeout=0.1)
            if message and message["type"] == "message":
                events.append(message["data"])
        assert any(b"consent_expired" in e for e in events)
        # A fresh check restores consent and media flows again.
        assert peer.stun_check(agw, ufrag, reply.access.ice_ufrag, reply.access.ice_pwd) is not None
        packet = rtp_packet(4)
        core.sendto(packet, core_addr)
        assert peer.recv_media() == packet
        assert mediad.client().request(mediad.iq(Command.RELEASE, "consent")).error is None
    finally:
        pubsub.close()
        peer.close()
        core.close()


@pytest.mark.req("SRTP-9", "SRTP-10")
def test_held_handshake_times_out_without_fingerprint(mediad_factory, redis_server):
    mediad = mediad_factory(dtls_handshake_timeout="1")
    peer = DtlsPeer("client", srtp=True)
    core = core_socket()
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe("e2ae:events")
    try:
        access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVP", rtcp_mux=True, tls_role=Role.SERVER)
        core_spec = TerminationSpec(Side.CORE, "RTP/AVP", remote_address=CORE_PEER,
                                    remote_port=core.getsockname()[1], rtcp_mux=True)
        reply = mediad.client().request(mediad.iq(
            Command.RESERVE, "held", [StreamSpec(1, "srtp", access=access, core=core_spec)])).stream(1)
        agw = (reply.access.local_address, reply.access.local_port)
        # The early ClientHello is answered (the handshake runs) but mediad holds the result.
        assert peer.handshake(agw, timeout=3)
        peer.send_rtp(rtp_packet(1))
        assert recv_all(core, 1, timeout=0.5) == []
        events = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not events:
            message = pubsub.get_message(timeout=0.1)
            if message and message["type"] == "message":
                events.append(message["data"])
        assert events and b'"timeout"' in events[0] and b"dtls_failed" in events[0]
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role="server", result="timeout") == 1
        # The fingerprint arriving too late does not revive the association.
        mediad.client().request(mediad.iq(Command.MODIFY, "held", [StreamSpec(1, "srtp", access=TerminationSpec(
            Side.ACCESS, "UDP/TLS/RTP/SAVP", rtcp_mux=True, tls_role=Role.SERVER,
            remote_fingerprints=[peer.fingerprint()]))]))
        peer.send_rtp(rtp_packet(2))
        assert recv_all(core, 1, timeout=0.5) == []
        assert mediad.client().request(mediad.iq(Command.RELEASE, "held")).error is None
    finally:
        pubsub.close()
        peer.close()
        core.close()
