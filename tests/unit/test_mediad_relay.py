"""mediad.core.relay's packet path in memory: cached destinations, consent deadline, integer counters.

Channels are wired to a fake transport and a fake loop whose clock and timers
the test drives, so RFC 7675 consent expiry is checked without sleeping.
"""

from __future__ import annotations

import os
import types

from prometheus_client import CollectorRegistry
from pylibsrtp import Policy, Session

from mediad.proto.certs import Certificate
from mediad.config import Config
from mediad.metrics import Metrics
from mediad.core.relay import AccessChannel, CoreChannel
from mediad.core.session import AccessLeg, CoreLeg, Dialog, Stream
from mediad.proto.srtp import AES_CM_128_HMAC_SHA1_80, SrtpKeys
from iq import Role, Side, StreamSpec, TerminationSpec

PEER = ("127.0.0.1", 40000)
CORE = ("127.0.0.3", 40002)


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr) -> None:
        self.sent.append((data, addr))

    def close(self) -> None:
        pass


class FakeTimer:
    def __init__(self, when: float, callback) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_soon(self, callback) -> FakeTimer:
        return self.call_at(self.now, callback)  # runs on the next advance()

    def call_at(self, when: float, callback) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for timer in [t for t in self.timers if t.when <= self.now and not t.cancelled]:
            self.timers.remove(timer)
            timer.callback()


def rtp(seq: int, ssrc: int = 0x11223344) -> bytes:
    return bytes([0x80, 0]) + seq.to_bytes(2, "big") + bytes(4) + ssrc.to_bytes(4, "big") + bytes(160)


def wire(ice_lite: bool, consent_timeout: float = 30.0, core_source: str = "sdp", max_ssrcs: int = 16):
    loop = FakeLoop()
    events: list[str] = []
    owner = types.SimpleNamespace(
        metrics=Metrics(CollectorRegistry()), loop=loop, changed=lambda dialog: None, note_srtp=lambda channel: None, certificate=None,
        config=Config(mediad_consent_timeout=consent_timeout, mediad_core_source=core_source,
                      mediad_max_ssrcs=max_ssrcs),
        event=lambda stream, name, reason, component: events.append(name),
    )
    dialog = Dialog(owner, "d")
    access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", remote_address="127.0.0.1", remote_port=9,
                             rtcp_mux=True, ice_lite=ice_lite)
    core = TerminationSpec(Side.CORE, "RTP/AVP", remote_address=CORE[0], remote_port=CORE[1], rtcp_mux=True)
    stream = Stream(dialog, StreamSpec(1, "srtp", access, core))
    stream.access, stream.core = AccessLeg(stream, access), CoreLeg(stream, core)
    a = stream.access.rtp = AccessChannel(stream.access, 50000, "rtp")
    c = stream.core.rtp = CoreChannel(stream.core, 50002, "rtp")
    a.connection_made(FakeTransport())
    c.connection_made(FakeTransport())
    keys = SrtpKeys(AES_CM_128_HMAC_SHA1_80, os.urandom(16), os.urandom(14), os.urandom(16), os.urandom(14))
    a.restore(keys, None)
    peer_tx = Session(Policy(key=keys.remote_key + keys.remote_salt, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    return types.SimpleNamespace(loop=loop, events=events, owner=owner, access=a, core=c, peer_tx=peer_tx)


def test_media_both_ways_counts_integers_and_follows_the_latched_peer():
    w = wire(ice_lite=False)
    w.core.datagram_received(rtp(1), CORE)
    assert w.access.transport.sent[-1][1] == ("127.0.0.1", 9)  # the SDP address: no peer yet
    w.access.datagram_received(w.peer_tx.protect(rtp(1)), PEER)
    assert w.core.transport.sent[-1] == (rtp(1), CORE)
    w.core.datagram_received(rtp(2), CORE)
    assert w.access.transport.sent[-1][1] == PEER  # authenticated SRTP moved the destination
    traffic = w.owner.metrics.traffic
    assert traffic[("access", "in", "rtp")].packets == 1 and traffic[("access", "in", "rtp")].bytes == 182
    assert traffic[("core", "out", "rtp")].packets == 1 and traffic[("core", "out", "rtp")].bytes == 172
    assert traffic[("core", "in", "rtp")].packets == 2 and traffic[("access", "out", "rtp")].packets == 2
    w.access.datagram_received(b"\x80\x00" + bytes(20), PEER)  # fails authentication: dropped, counted
    w.access.datagram_received(b"\x80", PEER)  # too short for any kind
    assert w.owner.metrics.drop_counts["auth_fail"] == 1 and w.owner.metrics.drop_counts["unknown_kind"] == 1
    assert traffic[("access", "in", "rtp")].packets == 1


def test_consent_expiry_without_a_clock_read_per_packet():
    w = wire(ice_lite=True, consent_timeout=30.0)
    responder = w.access.responder
    responder.selected_address, responder.last_consent = PEER, w.loop.now  # a valid check selected PEER
    w.access.peer = PEER
    w.core.datagram_received(rtp(1), CORE)
    assert w.access.transport.sent[-1][1] == PEER and w.access.dest == PEER
    w.loop.advance(20)
    responder.last_consent = w.loop.now  # a consent check refreshed it
    w.loop.advance(15)  # the first deadline passes: re-armed, still cached
    assert w.access.dest == PEER
    w.core.datagram_received(rtp(2), CORE)
    assert len(w.access.transport.sent) == 2
    w.loop.advance(16)  # no check for 31 s: expired
    w.core.datagram_received(rtp(3), CORE)
    w.core.datagram_received(rtp(4), CORE)
    assert len(w.access.transport.sent) == 2
    assert w.owner.metrics.drop_counts["consent_expired"] == 2
    assert w.events == ["consent_expired"]  # reported once
    responder.last_consent = w.loop.now  # a fresh check restores consent
    w.core.datagram_received(rtp(5), CORE)
    assert len(w.access.transport.sent) == 3


def test_scrape_exports_the_integer_counters_under_the_counter_names():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    counters = metrics.traffic[("core", "out", "rtcp")]
    counters.packets += 3
    counters.bytes += 300
    metrics.dropped("replay")
    labels = {"side": "core", "direction": "out", "kind": "rtcp"}
    assert registry.get_sample_value("e2ae_mediad_packets_total", labels) == 3
    assert registry.get_sample_value("e2ae_mediad_bytes_total", labels) == 300
    assert registry.get_sample_value("e2ae_mediad_drops_total", {"reason": "replay"}) == 1
    assert registry.get_sample_value("e2ae_mediad_packets_created", labels) is not None


def test_core_media_is_taken_only_from_the_address_the_core_sdp_names():
    w = wire(ice_lite=False)
    w.access.peer = PEER
    w.core.datagram_received(rtp(1), (CORE[0], 7777))  # the core's address, another port: taken
    w.core.datagram_received(rtp(2), ("127.0.0.9", CORE[1]))  # anyone else: dropped, counted
    w.core.datagram_received(bytes([0x80, 201, 0, 1]) + b"\x11\x22\x33\x44", ("127.0.0.9", 9))
    assert len(w.access.transport.sent) == 1
    assert w.owner.metrics.drop_counts["wrong_source"] == 2
    leg = w.core.leg
    leg.spec.remote_address = leg.spec.remote_port = None  # before the core's SDP: nothing is taken
    leg.refresh()
    w.core.datagram_received(rtp(3), CORE)
    assert len(w.access.transport.sent) == 1 and w.owner.metrics.drop_counts["wrong_source"] == 3
    w.access.datagram_received(w.peer_tx.protect(rtp(1)), PEER)
    assert w.core.transport.sent == [] and w.owner.metrics.drop_counts["no_peer"] == 1


def test_latching_takes_the_first_media_source_and_then_only_it():
    """core_source = latch (a core behind NAT): whoever sends media first is the core, until its SDP changes."""
    w = wire(ice_lite=False, core_source="latch")
    w.access.peer = PEER
    nat = ("127.0.0.7", 6000)
    w.core.datagram_received(bytes(40), ("127.0.0.9", 9999))  # garbage latches nothing
    w.core.datagram_received(rtp(1), nat)  # the first media: latched
    w.core.datagram_received(rtp(2), ("127.0.0.9", 9999))
    w.core.datagram_received(rtp(3), (nat[0], nat[1] + 2))  # same host, other port: not the latched source
    assert len(w.access.transport.sent) == 1
    assert w.owner.metrics.drop_counts["wrong_source"] == 2 and w.owner.metrics.drop_counts["malformed"] == 1
    w.access.datagram_received(w.peer_tx.protect(rtp(1)), PEER)
    assert w.core.transport.sent == [(rtp(1), nat)]  # media toward the core goes to the latched source
    moved = TerminationSpec(Side.CORE, "RTP/AVP", remote_address="127.0.0.5", remote_port=5000, rtcp_mux=True)
    w.core.leg.apply(moved)  # a new SDP from the core: latch again
    w.core.datagram_received(rtp(4), ("127.0.0.8", 8000))
    assert len(w.access.transport.sent) == 2
    w.access.datagram_received(w.peer_tx.protect(rtp(2)), PEER)
    assert w.core.transport.sent[-1] == (rtp(2), ("127.0.0.8", 8000))


def test_ssrcs_toward_access_are_capped_per_session():
    w = wire(ice_lite=False, max_ssrcs=3)
    w.access.peer = PEER
    for ssrc in (1, 2, 3, 4, 5, 1, 3):
        w.core.datagram_received(rtp(ssrc, ssrc=ssrc), CORE)
    sent = [data for data, _ in w.access.transport.sent]
    assert len(sent) == 5  # 1, 2, 3, then 1 and 3 again; 4 and 5 dropped
    assert w.owner.metrics.drop_counts["too_many_ssrcs"] == 2
    assert w.access.ssrcs == {1, 2, 3}
    report = bytes([0x80, 201, 0, 1]) + (9).to_bytes(4, "big")  # RTCP of a fourth sender SSRC: capped too
    w.core.datagram_received(report, CORE)
    assert w.owner.metrics.drop_counts["too_many_ssrcs"] == 3
    keys = SrtpKeys(AES_CM_128_HMAC_SHA1_80, os.urandom(16), os.urandom(14), os.urandom(16), os.urandom(14))
    w.access.restore(keys, PEER)  # a new association: a new session, no SSRCs yet
    w.core.datagram_received(rtp(9, ssrc=4), CORE)
    assert w.access.ssrcs == {4} and len(w.access.transport.sent) == 6


def test_core_rtcp_that_is_not_rtcp_is_dropped_not_protected():
    """Plain RTCP has no authentication: a datagram that fails RFC 3550 A.2 is dropped and counted."""
    w = wire(ice_lite=False)
    w.access.peer = PEER
    report = bytes([0x80, 201, 0, 1]) + b"\x11\x22\x33\x44"
    w.core.datagram_received(bytes([0x8C, 200]) + bytes(9), CORE)  # looks like RTCP, is not
    assert w.access.transport.sent == []
    assert w.owner.metrics.drop_counts["malformed"] == 1
    w.core.datagram_received(report, CORE)
    assert len(w.access.transport.sent) == 1


def client_channel(ice_lite: bool = False, events: list | None = None):
    """A fresh access channel told to establish DTLS as client (RESERVE with setup:actpass)."""
    loop = FakeLoop()
    events = [] if events is None else events
    owner = types.SimpleNamespace(
        metrics=Metrics(CollectorRegistry()), loop=loop, changed=lambda dialog: None, note_srtp=lambda channel: None,
        config=Config(mediad_consent_timeout=30.0, mediad_dtls_handshake_timeout=30.0),
        event=lambda stream, name, reason, component: events.append((name, reason)),
        certificate=Certificate.generate(),
    )
    access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", remote_address="127.0.0.1", remote_port=9,
                             rtcp_mux=True, tls_role=Role.CLIENT, establish_tls=True, ice_lite=ice_lite,
                             remote_ice_ufrag="peer", remote_ice_pwd="p" * 22)
    stream = Stream(Dialog(owner, "d"), StreamSpec(1, "srtp", access, None))
    stream.access = AccessLeg(stream, access)
    channel = stream.access.rtp = AccessChannel(stream.access, 50000, "rtp")
    channel.connection_made(FakeTransport())
    return loop, stream.access, channel


def test_client_hello_goes_out_on_the_next_loop_turn_after_the_answer():
    loop, leg, channel = client_channel()
    leg.configure()
    assert channel.transport.sent == [] and channel.dtls is None  # the Iq answer is not held up by it
    leg.configure()  # a second configure in the same turn schedules nothing more
    loop.advance(0)
    hellos = [data for data, addr in channel.transport.sent if data[0] == 22]
    assert len(hellos) == 1 and hellos[0][13] == 1 and channel.transport.sent[0][1] == ("127.0.0.1", 9)
    assert channel.state == "handshaking" and channel.role is Role.CLIENT


def test_a_channel_closed_before_its_deferred_start_sends_nothing():
    loop, leg, channel = client_channel()
    leg.configure()
    transport = channel.transport
    channel.close()
    loop.advance(0)
    assert transport.sent == [] and channel.dtls is None


def test_an_ice_lite_client_waits_for_a_check_and_fails_in_time_without_one():
    events: list = []
    loop, leg, channel = client_channel(ice_lite=True, events=events)
    leg.configure()
    loop.advance(0)
    assert channel.transport.sent == [] and channel.dtls is None and channel.pending_start
    loop.advance(29)
    assert channel.state == "new" and events == []
    loop.advance(2)  # dtls_handshake_timeout without a valid check: the handshake failed
    assert channel.state == "failed" and events == [("dtls_failed", "timeout")]
    assert channel.transport.sent == []
    assert channel.metrics.registry.get_sample_value(
        "e2ae_mediad_dtls_handshakes_total", {"role": "client", "result": "timeout"}) == 1


def test_an_ice_lite_client_starts_at_the_first_valid_check():
    from aioice import stun

    loop, leg, channel = client_channel(ice_lite=True)
    leg.configure()
    loop.advance(0)
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{leg.ice_ufrag}:peer"
    request.attributes["PRIORITY"] = 1
    request.attributes["ICE-CONTROLLING"] = 1
    request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(leg.ice_pwd.encode())
    request.add_fingerprint()
    channel.datagram_received(bytes(request), ("127.0.0.1", 40404))
    hellos = [addr for data, addr in channel.transport.sent if data[0] == 22]
    assert hellos == [("127.0.0.1", 40404)]  # to the checked address, not the SDP's port 9
    assert channel.ice_timer is None and channel.state == "handshaking"


def _wrap_both_ways(w, ssrc_in: int = 0xA1, ssrc_out: int = 0xB2) -> None:
    """Media across a sequence-number wrap (65534, 65535, 0) from the peer and from the core."""
    w.access.peer = PEER
    for seq in (65534, 65535, 0):
        w.access.datagram_received(w.peer_tx.protect(rtp(seq, ssrc=ssrc_in)), PEER)
        w.core.datagram_received(rtp(seq, ssrc=ssrc_out), CORE)


def test_the_document_keeps_each_streams_rollover_counter_and_a_restore_continues_it():
    """RFC 3711 3.3.1 on the Python packet path: the ROCs of heard and sent SSRCs, stored and restored."""
    w = wire(ice_lite=False)
    _wrap_both_ways(w)
    assert w.access.rocs_advanced() is True and w.access.rocs_advanced() is False
    channel_doc = w.access.leg.document()["channels"]["rtp"]
    assert channel_doc["srtp_rocs"] == {"tx": {str(0xB2): 1}, "rx": {str(0xA1): 1}}
    sent_before = len(w.access.transport.sent)
    after = wire(ice_lite=False)  # a restarted process: the same keys, the stored ROCs
    after.access.restore(w.access.keys, PEER, channel_doc["srtp_rocs"])
    after.access.datagram_received(w.peer_tx.protect(rtp(1, ssrc=0xA1)), PEER)
    assert after.core.transport.sent[-1] == (rtp(1, ssrc=0xA1), CORE)  # authenticated with ROC 1
    after.core.datagram_received(rtp(1, ssrc=0xB2), CORE)
    w.core.datagram_received(rtp(1, ssrc=0xB2), CORE)  # what the process before would have sent
    assert after.access.transport.sent[-1][0] == w.access.transport.sent[sent_before][0]


def test_a_document_without_rollover_counters_restores_roc_0():
    w = wire(ice_lite=False)
    channel_doc = w.access.leg.document()["channels"]["rtp"]
    assert channel_doc["srtp_rocs"] == {"tx": {}, "rx": {}}
    _wrap_both_ways(w)
    after = wire(ice_lite=False)
    after.access.restore(w.access.keys, PEER, None)  # a document written before ROCs were stored
    after.access.datagram_received(w.peer_tx.protect(rtp(1, ssrc=0xA1)), PEER)
    assert after.owner.metrics.drop_counts["auth_fail"] == 1  # ROC 0: what such a document can give
    fresh = Session(Policy(key=w.access.keys.remote_key + w.access.keys.remote_salt,
                           ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    after.access.datagram_received(fresh.protect(rtp(5, ssrc=0xC3)), PEER)  # a stream that never wrapped
    assert after.core.transport.sent[-1] == (rtp(5, ssrc=0xC3), CORE)
