"""T.38 over UDPTL/DTLS through mediad, against a pyOpenSSL DTLS peer (T38-8..11)."""

from __future__ import annotations

import os
import socket

import pytest

from iq import Command, Role, Side, StreamSpec, TerminationSpec, TRANSPORT_UDP, TRANSPORT_UDP_DTLS
from tests.integration.dtls_peer import DtlsPeer, fingerprint_of

CORE_PEER = "127.0.0.3"


def core_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((CORE_PEER, 0))
    sock.settimeout(2.0)
    return sock


def t38_stream(peer: DtlsPeer, core: socket.socket, role: Role, fingerprints=None) -> StreamSpec:
    host, port = peer.address
    return StreamSpec(1, "t38", access=TerminationSpec(
        Side.ACCESS, TRANSPORT_UDP_DTLS, remote_address=host, remote_port=port,
        remote_fingerprints=fingerprints if fingerprints is not None else [peer.fingerprint()],
        local_fingerprint_request=True, tls_role=role, establish_tls=role is Role.CLIENT,
        notify_tls_failure=True,
    ), core=TerminationSpec(Side.CORE, TRANSPORT_UDP, remote_address=CORE_PEER, remote_port=core.getsockname()[1]))


def udptl(seq: int) -> bytes:
    """A UDPTL packet (T.38 Annex: seq number, primary IFP, redundancy) with random IFP bytes."""
    ifp = os.urandom(40)
    return seq.to_bytes(2, "big") + bytes([len(ifp)]) + ifp + b"\x00\x00"


@pytest.mark.req("T38-8", "T38-9", "T38-11")
@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_udptl_byte_identical_both_ways(mediad, role):
    peer = DtlsPeer("client" if role is Role.SERVER else "server")
    core = core_socket()
    try:
        reply = mediad.client().request(mediad.iq(Command.RESERVE, "fax-1", [t38_stream(peer, core, role)]))
        assert reply.error is None, reply
        access = reply.stream(1).access
        # T38-9: the AGW returns its certificate's fingerprint, one association per stream.
        assert access.local_fingerprint.hash_func == "sha-256"
        assert access.local_rtcp_port is None
        assert peer.handshake((access.local_address, access.local_port))
        # The AGW's certificate is the one it announced.
        assert fingerprint_of(peer.conn.get_peer_certificate(as_cryptography=True)) == access.local_fingerprint
        core_addr = (reply.stream(1).core.local_address, reply.stream(1).core.local_port)
        sent = [udptl(i) for i in range(20)]
        for packet in sent:
            peer.send_data(packet)
        received = [core.recvfrom(2048)[0] for _ in sent]
        assert received == sent
        back = [udptl(100 + i) for i in range(20)]
        for packet in back:
            core.sendto(packet, core_addr)
        assert [peer.recv_data() for _ in back] == back
        role_label = role.value
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role=role_label, result="ok") == 1
        assert mediad.metric("e2ae_mediad_packets_total", side="core", direction="out", kind="udptl") == 20
        assert mediad.client().request(mediad.iq(Command.RELEASE, "fax-1")).error is None
    finally:
        peer.close()
        core.close()


@pytest.mark.req("T38-10")
@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_fingerprint_mismatch_tears_down(mediad, redis_server, role):
    peer = DtlsPeer("client" if role is Role.SERVER else "server")
    core = core_socket()
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe("e2ae:events")
    try:
        wrong = fingerprint_of(DtlsPeer("client").cert, "sha-256")
        reply = mediad.client().request(
            mediad.iq(Command.RESERVE, "fax-2", [t38_stream(peer, core, role, fingerprints=[wrong])]))
        access = reply.stream(1).access
        assert not peer.handshake((access.local_address, access.local_port), timeout=3)
        # Nothing is relayed: the core hears nothing, the peer gets nothing back.
        core_addr = (reply.stream(1).core.local_address, reply.stream(1).core.local_port)
        core.sendto(udptl(1), core_addr)
        core.settimeout(0.5)
        with pytest.raises(socket.timeout):
            core.recvfrom(2048)
        events = []
        for _ in range(40):
            message = pubsub.get_message(timeout=0.1)
            if message and message["type"] == "message":
                events.append(message["data"])
            if events:
                break
        assert events and b'"dtls_failed"' in events[0] and b"fingerprint_mismatch" in events[0]
        state = mediad.client().request(mediad.iq(Command.QUERY, "fax-2")).data
        assert state["events"][-1]["reason"] == "fingerprint_mismatch"
        assert state["streams"][0]["access"]["channels"]["rtp"]["state"] == "failed"
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role=role.value,
                             result="fingerprint_mismatch") == 1
        assert mediad.metric("e2ae_mediad_packets_total", side="core", direction="out", kind="udptl") == 0
        assert mediad.client().request(mediad.iq(Command.RELEASE, "fax-2")).error is None
    finally:
        pubsub.close()
        peer.close()
        core.close()


@pytest.mark.req("T38-8", "T38-11")
def test_new_tls_id_means_new_association_and_reuse_keeps_it(mediad):
    first = DtlsPeer("client")
    second = DtlsPeer("client")
    core = core_socket()
    try:
        spec = t38_stream(first, core, Role.SERVER)
        spec.local_tls_id, spec.remote_tls_id = "agw-1", "ue-1"
        reply = mediad.client().request(mediad.iq(Command.RESERVE, "fax-3", [spec])).stream(1)
        agw = (reply.access.local_address, reply.access.local_port)
        core_addr = (reply.core.local_address, reply.core.local_port)
        assert first.handshake(agw)
        packet = udptl(1)
        first.send_data(packet)
        assert core.recvfrom(2048)[0] == packet
        # Re-INVITE reusing the association (same tls-id): still relaying, no new handshake.
        keep = t38_stream(first, core, Role.SERVER)
        keep.remote_tls_id, keep.reuse_association = "ue-1", True
        assert mediad.client().request(mediad.iq(Command.MODIFY, "fax-3", [keep])).error is None
        packet = udptl(2)
        first.send_data(packet)
        assert core.recvfrom(2048)[0] == packet
        # Re-INVITE with a new tls-id from a UE with a new certificate: a new handshake.
        new = t38_stream(second, core, Role.SERVER)
        new.local_tls_id, new.remote_tls_id = "agw-2", "ue-2"
        assert mediad.client().request(mediad.iq(Command.MODIFY, "fax-3", [new])).error is None
        assert second.handshake(agw)
        packet = udptl(3)
        second.send_data(packet)
        assert core.recvfrom(2048)[0] == packet
        packet = udptl(4)
        core.sendto(packet, core_addr)
        assert second.recv_data() == packet
        assert mediad.metric("e2ae_mediad_dtls_handshakes_total", role="server", result="ok") == 2
        assert mediad.client().request(mediad.iq(Command.RELEASE, "fax-3")).error is None
    finally:
        first.close()
        second.close()
        core.close()
