"""mediad.io.tcp sans-IO parts: the admission gate of an access TCP connection (RFC 6544, RFC 4571), and friends."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from aioice import stun

from mediad.proto import demux
from mediad.daemon import Daemon
from mediad.proto.framing import Deframer, frame
from mediad.metrics import TCP_ERRORS, Metrics
from mediad.proto.stun import IceLiteResponder
from mediad.io.tcp import ACCEPTED, CHECK, CLOSE, CLOSED, MAX_CHECK_FRAME, PASS, UNCHECKED, TcpGate, TcpPeer, wants_tcp
from iq import Fingerprint, Side, StreamSpec, TerminationSpec

STUN_REQUEST = bytes(stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST))
RTP = bytes([0x80, 0]) + os.urandom(170)
FP = Fingerprint("sha-256", ":".join(["AB"] * 32))


def gate() -> TcpGate:
    return TcpGate(now=100.0, check_timeout=5.0, idle_timeout=30.0)


@pytest.mark.req("TCP-1")
def test_a_valid_first_check_accepts_and_media_passes_after_it():
    g = gate()
    frames = g.receive(frame(STUN_REQUEST) + frame(RTP), 100.1)
    assert [k for k, _ in frames] == [demux.STUN, demux.RTP]
    assert g.frame(frames[0][0]) == CHECK
    g.checked(True)
    assert g.state == ACCEPTED
    assert g.frame(frames[1][0]) == PASS
    assert g.frame(demux.DTLS) == PASS and g.frame(demux.STUN) == PASS and g.frame(demux.RTCP) == PASS


@pytest.mark.req("TCP-1")
def test_a_failed_check_closes_and_later_frames_are_not_processed():
    g = gate()
    frames = g.receive(frame(STUN_REQUEST) + frame(RTP), 100.1)
    assert g.frame(frames[0][0]) == CHECK
    g.checked(False)
    assert (g.state, g.reason) == (CLOSED, "unauthenticated")
    assert g.frame(frames[1][0]) == CLOSE


@pytest.mark.parametrize("first", [RTP, b"\x16\xfe\xfd" + bytes(40), b"\x50" + bytes(30), b"junk"])
def test_anything_but_stun_first_closes_as_not_stun(first):
    g = gate()
    ((kind, _),) = g.receive(frame(first), 100.0)
    assert g.frame(kind) == CLOSE and (g.state, g.reason) == (CLOSED, "not_stun")


def test_an_oversized_first_frame_closes_before_it_is_buffered():
    g = gate()
    assert g.receive(b"\xff\xff" + bytes(10), 100.0) == []
    assert (g.state, g.reason) == (CLOSED, "oversized")
    g = gate()
    assert g.receive(frame(b"\x00\x01" + bytes(MAX_CHECK_FRAME)), 100.0) == []
    assert g.reason == "oversized"
    g = gate()  # after acceptance a 64 KiB frame is fine (RFC 4571)
    g.receive(frame(STUN_REQUEST), 100.0)
    g.checked(True)
    assert g.receive(b"\xff\xff" + bytes(10), 100.0) == [] and g.state == ACCEPTED


def test_unknown_frames_after_acceptance_close_as_framing_lost():
    g = gate()
    g.receive(frame(STUN_REQUEST), 100.0)
    g.checked(True)
    ((kind, _),) = g.receive(frame(b"\x50" + bytes(30)), 101.0)
    assert g.frame(kind) == CLOSE and g.reason == "unknown_frame"


def test_deadlines_unchecked_then_idle():
    g = gate()
    assert g.deadline() == 105.0
    assert not g.expire(104.9) and g.state == UNCHECKED
    assert g.expire(105.0) and (g.state, g.reason) == (CLOSED, "idle_timeout")
    assert g.deadline() is None
    g = gate()
    g.receive(frame(STUN_REQUEST), 101.0)
    g.checked(True)
    assert g.deadline() == 131.0
    g.receive(frame(RTP), 120.0)
    assert not g.expire(131.0) and g.deadline() == 150.0
    assert g.expire(150.0) and g.reason == "idle_timeout"


def test_closed_gate_ignores_input():
    g = gate()
    g.close()
    assert g.receive(frame(STUN_REQUEST), 100.0) == [] and g.frame(demux.STUN) == CLOSE and g.reason is None


def test_split_frames_are_reassembled_and_next_length_peeks():
    deframer = Deframer()
    data = frame(RTP)
    assert deframer.next_length is None
    assert deframer.feed(data[:1]) == [] and deframer.next_length is None
    assert deframer.feed(data[1:10]) == [] and deframer.next_length == len(RTP)
    assert deframer.feed(data[10:]) == [RTP] and deframer.next_length is None


@pytest.mark.req("TCP-1")
def test_which_streams_listen_on_tcp():
    tcp = "1 1 tcp 2128609535 127.0.0.1 9 typ host tcptype active"
    udp = "2 1 udp 2122260223 127.0.0.1 50906 typ host"
    assert wants_tcp("srtp_tcp", TerminationSpec(Side.ACCESS, "TCP/DTLS/RTP/SAVPF"))
    assert wants_tcp("srtp", TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=True,
                                             remote_candidates=[udp, tcp]))
    assert not wants_tcp("srtp", TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=False,
                                                 remote_candidates=[tcp]))  # RTCP needs its own UDP port
    assert not wants_tcp("srtp", TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=True,
                                                 remote_candidates=[udp]))
    assert not wants_tcp("t38", TerminationSpec(Side.ACCESS, "UDP/DTLS/UDPTL", remote_candidates=[tcp]))


def test_tcp_peer_is_a_pair_told_apart_by_type():
    peer = TcpPeer(("127.0.0.1", 5000, 0, 0))
    assert peer == ("127.0.0.1", 5000) and type(peer) is TcpPeer and type(("127.0.0.1", 5000)) is not TcpPeer


def test_responder_forgets_a_closed_pair_and_selects_again():
    responder = IceLiteResponder("agw1", "p" * 24)
    responder._valid_check(TcpPeer(("127.0.0.1", 4000)), True, 1.0)
    responder.forget(("127.0.0.1", 4001))
    assert responder.selected_address == ("127.0.0.1", 4000)
    responder.forget(TcpPeer(("127.0.0.1", 4000)))
    assert responder.selected_address is None and not responder.nominated and not responder.has_consent(2.0)
    responder._valid_check(("127.0.0.1", 4002), False, 3.0)
    assert responder.selected_address == ("127.0.0.1", 4002)


def _stream(remote_tls_id=None, fingerprints=()):
    spec = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", remote_fingerprints=list(fingerprints))
    return SimpleNamespace(access=SimpleNamespace(spec=spec), remote_tls_id=remote_tls_id)


def _modify(remote_tls_id=None, reuse=False, access=True):
    return StreamSpec(1, "srtp", access=TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF") if access else None,
                      remote_tls_id=remote_tls_id, reuse_association=reuse)


@pytest.mark.req("SRTP-9")
def test_new_association_on_modify():
    new = Daemon._new_association
    # tls-id peers: a new remote tls-id, unless reused.
    assert new(_stream("a", [FP]), _modify("b"))
    assert not new(_stream("a", [FP]), _modify("a"))
    assert not new(_stream("a", [FP]), _modify("b", reuse=True))
    # Peers without tls-id: an access modify without reuse once fingerprints were known.
    assert new(_stream(None, [FP]), _modify())
    assert not new(_stream(None, [FP]), _modify(reuse=True))
    assert not new(_stream(None, [FP]), _modify(access=False))  # a core-side modify
    assert not new(_stream(None, []), _modify())  # no fingerprint yet: an early ClientHello stays held


def test_tcp_metrics_are_prebound(metrics_registry):
    metrics = Metrics(metrics_registry)
    for reason in TCP_ERRORS:
        assert metrics_registry.get_sample_value("e2ae_mediad_tcp_errors_total", {"reason": reason}) == 0
    metrics.tcp_result["accepted"].inc()
    assert metrics_registry.get_sample_value("e2ae_mediad_tcp_connections_total", {"result": "accepted"}) == 1
