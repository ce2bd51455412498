"""A killed node whose access address cannot move: the survivor gives the WIC a new termination.

``[pool] takeover = reinvite`` with a ``takeover_hook`` that fails (the dead node's
access address stays where it is): two real mediads on two loopback "hosts"
(127.0.0.11 and .12, core media on 127.0.1.11 and .12) sharing the session's Redis,
driven over their control endpoints; a pyOpenSSL DTLS-SRTP peer plays the WIC on a
BUNDLE transport, a UDP socket the core.  After the SIGKILL the survivor publishes
``media_moved`` for both sides; the WIC (same certificate, as a WebRTC peer
connection keeps it) checks the new port with the new ICE credentials and makes a
new DTLS handshake, as it would after the edge's re-offer (RFC 8839 section
4.4.1.1.1, RFC 8842 section 5); media then flows both ways through the survivor.
"""

from __future__ import annotations

import json
import time

import pytest

from iq import Command, Role, Side, StreamSpec, TerminationSpec, TransportSpec
from mediad.state import dialog_key
from mediad.takeover import EVENT_MEDIA_MOVED
from tests.integration.dtls_peer import DtlsPeer, fingerprint_of, rtp_packet
from tests.integration.test_mediad_pool import node_options
from tests.integration.test_mediad_t38 import core_socket

pytestmark = pytest.mark.integration

WIC_UFRAG, WIC_PWD = "wic1", "w" * 24


def bundle_call(peer: DtlsPeer, core) -> tuple[TransportSpec, StreamSpec]:
    host, port = peer.address
    transport = TransportSpec(1, remote_address=host, remote_port=port, ice_lite=True, remote_ice_ufrag=WIC_UFRAG,
                              remote_ice_pwd=WIC_PWD, remote_fingerprints=[peer.fingerprint()],
                              local_fingerprint_request=True, tls_role=Role.SERVER, notify_tls_failure=True,
                              local_tls_id="edge-tls-1", remote_tls_id="wic-tls-1")
    core_host, core_port = core.getsockname()
    stream = StreamSpec(1, "srtp", transport_id=1, mid="0",
                        access=TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=True, payload_types=[0]),
                        core=TerminationSpec(Side.CORE, "RTP/AVP", remote_address=core_host, remote_port=core_port,
                                             rtcp_mux=True))
    return transport, stream


def both_ways(peer: DtlsPeer, core, core_addr, first: int, ssrc: int = 0x11223344) -> None:
    """Ten packets each way; the core answers under its own SSRC (the demultiplexer learnt the WIC's)."""
    for seq in range(first, first + 10):
        peer.send_rtp(rtp_packet(seq, ssrc))
        data, _ = core.recvfrom(2048)
        assert data[8:12] == ssrc.to_bytes(4, "big")
    for seq in range(first, first + 10):
        core.sendto(rtp_packet(seq, 0x55667788), core_addr)
        media = peer.recv_media()
        assert media is not None and media[8:12] == (0x55667788).to_bytes(4, "big")


def moved_events(pubsub, count: int, timeout: float) -> dict[str, dict]:
    out: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(out) < count:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            event = json.loads(message["data"])
            if event["event"] == EVENT_MEDIA_MOVED:
                out[event["side"]] = event
    return out


def handshakes(node) -> float:
    return sum(v for (name, _), v in node.metrics().items() if name == "e2ae_mediad_dtls_handshakes_total")


def test_a_killed_nodes_wic_gets_a_new_port_credentials_and_handshake_on_the_survivor(
        mediad_factory, redis_server, tmp_path):
    redis = redis_server.client()
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe("e2ae:events")
    peer = DtlsPeer("client", srtp=True)
    core = core_socket()
    again = None
    try:
        extra = {"takeover": "reinvite", "takeover_hook": "/bin/false {address}"}
        nodes = []
        for name, n in (("x", 11), ("y", 12)):
            node = mediad_factory(**node_options(name, n))
            node.stop()
            with open(node.config_path, "a") as conf:
                conf.write("[pool]\n" + "".join(f"{k} = {v}\n" for k, v in extra.items()))
            node.start()
            nodes.append(node)
        x, y = nodes
        transport, stream = bundle_call(peer, core)
        reply = x.client().request(x.iq(Command.RESERVE, "d", [stream], transports=[transport]))
        assert reply.error is None, reply
        old = reply.transport(1)
        assert old.local_address == "127.0.0.11"
        answer = peer.stun_check((old.local_address, old.local_port), WIC_UFRAG, old.ice_ufrag, old.ice_pwd)
        assert answer is not None and answer.message_class.name == "RESPONSE"
        assert peer.handshake((old.local_address, old.local_port))
        core_addr = (reply.stream(1).core.local_address, reply.stream(1).core.local_port)
        both_ways(peer, core, core_addr, 0)
        assert x.written()

        x.kill()
        moved = moved_events(pubsub, 2, 10)
        assert set(moved) == {"core", "access"}, y.log()
        access = moved["access"]
        assert access["dialog"] == "d" and access["address"] == "127.0.0.12" and access["streams"] == []
        (new,) = access["transports"]
        assert new["transport_id"] == 1 and new["port"] != old.local_port
        assert (new["ice_ufrag"], new["ice_pwd"]) != (old.ice_ufrag, old.ice_pwd)
        # Not the pool's certificate: libwebrtc starts a new DTLS association only on a new fingerprint.
        assert access["fingerprint"] != str(old.local_fingerprint)
        document = json.loads(redis.get(dialog_key("d")))
        assert document["node"] == "y" and document["home"]["access"] == "127.0.0.12"
        assert document["transports"][0]["srtp_keys"] is None  # no association until the new handshake
        assert handshakes(y) == 0

        # The WIC after the edge's re-offer: a restarted ICE agent, the same certificate.
        again = DtlsPeer("client", srtp=True, certificate=(peer.cert, peer.key))
        target = ("127.0.0.12", new["port"])
        stale = again.stun_check(target, "wic2", old.ice_ufrag, old.ice_pwd)
        assert stale is None or stale.message_class.name != "RESPONSE"  # the old credentials are gone
        answer = again.stun_check(target, "wic2", new["ice_ufrag"], new["ice_pwd"])
        assert answer is not None and answer.message_class.name == "RESPONSE"
        assert again.handshake(target)
        assert str(fingerprint_of(again.conn.get_peer_certificate().to_cryptography())) == access["fingerprint"]
        (new_core_port,) = moved["core"]["ports"]
        both_ways(again, core, (moved["core"]["address"], new_core_port), 100)
        assert handshakes(y) == 1
        assert y.metric("e2ae_mediad_takeover_dialogs_total", result="taken") == 1
    finally:
        pubsub.close()
        redis.close()
        peer.close()
        if again is not None:
            again.close()
        core.close()

