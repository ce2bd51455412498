"""mediad.core.transport in memory: a BUNDLE transport's packet path with Chromium's captured packets.

The transport, its channel and two streams (audio, video) with their core legs
are built from the Iq request the SDP rules make of Chromium's max-bundle offer
(``tests/fixtures/rtp``, the same capture as ``test_mediad_bundle_demux``);
the sockets are fake transports and the clock a fake loop (as in
``test_mediad_relay``).  The captured packets are protected with the peer's
SRTP keys and fed to the transport's port: each must come out of its own
m-line's core port, decrypted; RTCP compound packets are split per m-line.
"""

from __future__ import annotations

import os
import struct
import types

import pytest
from prometheus_client import CollectorRegistry
from pylibsrtp import Policy, Session

from iq import Side, TerminationSpec
from mediad.io import fastpath
from mediad.proto.bundle_demux import Drop
from mediad.config import Config
from mediad.metrics import Metrics
from mediad.core.relay import CoreChannel
from mediad.core.session import CoreLeg, Dialog, Stream
from mediad.proto.srtp import AES_CM_128_HMAC_SHA1_80, PROFILES, SrtpKeys, SrtpTransformer
from mediad.core.transport import BundledLeg, Transport, TransportChannel, split_rtcp
from tests.unit.test_mediad_bundle_demux import Capture, elements, parts, ssrc_of
from tests.unit.test_mediad_relay import FakeLoop, FakeTransport

PEER = ("127.0.0.1", 40000)
CORE_HOST = "127.0.0.3"


def wire(codec: str = "vp8"):
    capture = Capture(codec)
    loop = FakeLoop()
    events: list = []
    owner = types.SimpleNamespace(
        metrics=Metrics(CollectorRegistry()), loop=loop, changed=lambda dialog: None, note_srtp=lambda channel: None, certificate=None,
        config=Config(), event=lambda stream, name, reason, component, **extra: events.append((name, extra)),
    )
    dialog = Dialog(owner, "d")
    transport = Transport(dialog, capture.iq.transports[0])
    dialog.transports[0] = transport
    channel = transport.rtp = TransportChannel(transport, 50000, "rtp")
    channel.connection_made(FakeTransport())
    cores = {}
    for n, spec in enumerate(capture.iq.streams):
        stream = Stream(dialog, spec)
        core = TerminationSpec(Side.CORE, "RTP/AVP", remote_address=CORE_HOST, remote_port=41000 + 2 * n,
                               rtcp_mux=True)
        stream.core = CoreLeg(stream, core)
        stream.core.rtp = CoreChannel(stream.core, 51000 + 2 * n, "rtp")
        stream.core.rtp.connection_made(FakeTransport())
        stream.access = BundledLeg(stream, transport, spec.access)
        transport.attach(stream.access)
        dialog.streams[spec.stream_id] = stream
        cores[spec.stream_id] = stream.core.rtp
    keys = SrtpKeys(AES_CM_128_HMAC_SHA1_80, os.urandom(16), os.urandom(14), os.urandom(16), os.urandom(14))
    channel.restore(keys, PEER)
    peer_tx = Session(Policy(key=keys.remote_key + keys.remote_salt, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    peer_rx = Session(Policy(key=keys.local_key + keys.local_salt, ssrc_type=Policy.SSRC_ANY_INBOUND))
    return types.SimpleNamespace(capture=capture, loop=loop, events=events, owner=owner, dialog=dialog,
                                 transport=transport, channel=channel, cores=cores, peer_tx=peer_tx,
                                 peer_rx=peer_rx)


def bundle_drops(owner, reason: Drop) -> float:
    return owner.metrics.registry.get_sample_value("e2ae_mediad_bundle_demux_dropped_total",
                                                   {"reason": reason.name.lower()})


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_captured_rtp_leaves_by_its_m_lines_core_port_decrypted(codec):
    w = wire(codec)
    for packet in w.capture.rtp():
        w.channel.datagram_received(w.peer_tx.protect(packet), PEER)
    for key, core in w.cores.items():
        want = [p for p in w.capture.rtp() if w.capture.wic_ssrc[ssrc_of(p)] == key]
        assert want and [data for data, _ in core.transport.sent] == want
        assert {addr for _, addr in core.transport.sent} == {(CORE_HOST, 41000 + 2 * list(w.cores).index(key))}
    assert w.owner.metrics.drop_counts == dict.fromkeys(w.owner.metrics.drop_counts, 0)
    assert w.channel.received == len(w.capture.rtp())


def test_captured_rtcp_goes_whole_to_the_one_m_line_each_compound_is_about():
    """Chromium sends one compound per m-line (its RR blocks, NACK, REMB, SDES name one): passed on whole."""
    w = wire()
    for ssrc, key in w.capture.peer_ssrc.items():  # what the AGW sends on each m-line (learnt from the core)
        assert w.transport.demux.sent(key, ssrc)
    seen = set()
    for packet in w.capture.rtcp():
        routed = w.transport.demux.route_rtcp(packet)
        keys = {key for _, _, named in routed for key in named}
        assert len(keys) == 1, packet.hex()
        assert split_rtcp(w.transport.demux, packet, 0.0) == [(keys.pop(), packet)]
        seen.add(routed[0][2])
    assert len(seen) == 2  # both m-lines


def test_a_compound_about_two_m_lines_is_cut_in_two_compounds():
    """An RR about the audio the AGW sends, a PLI about its video, an SDES of the WIC's audio: two parts,
    each led by the RR (RFC 3550 6.1), the PLI only in the video part, the SDES only in the audio one."""
    w = wire()
    for ssrc, key in w.capture.peer_ssrc.items():
        w.transport.demux.sent(key, ssrc)
    audio_key, video_key = w.capture.key_of_mid["0"], w.capture.key_of_mid["1"]
    peer_audio = next(s for s, k in w.capture.peer_ssrc.items() if k == audio_key)
    peer_video = next(s for s, k in w.capture.peer_ssrc.items() if k == video_key)
    wic_audio = next(s for s, k in w.capture.wic_ssrc.items() if k == audio_key)
    rr = struct.pack("!BBHI", 0x81, 201, 7, wic_audio) + struct.pack("!I", peer_audio) + bytes(20)
    pli = struct.pack("!BBHII", 0x81, 206, 2, wic_audio, peer_video)
    sdes = struct.pack("!BBHI", 0x81, 202, 3, wic_audio) + b"\x01\x02ab\x00\x00\x00\x00"
    split = dict(split_rtcp(w.transport.demux, rr + pli + sdes, 0.0))
    assert split == {audio_key: rr + sdes, video_key: rr + pli}


def test_captured_rtcp_reaches_the_core_ports_it_concerns():
    """Once media went both ways (the SSRCs of each m-line learnt), every compound reaches a core port."""
    w = wire()
    for n, (ssrc, key) in enumerate(w.capture.peer_ssrc.items()):
        core = w.cores[key]
        core.datagram_received(struct.pack("!BBHII", 0x80, 0, n, 0, ssrc) + bytes(20), (CORE_HOST, core.port))
    for packet in w.capture.rtp():
        w.channel.datagram_received(w.peer_tx.protect(packet), PEER)
    for core in w.cores.values():
        core.transport.sent.clear()
    for packet in w.capture.rtcp():
        w.channel.datagram_received(w.peer_tx.protect_rtcp(packet), PEER)
    for key, core in w.cores.items():
        got = [data for data, _ in core.transport.sent]
        assert got and all(parts(d)[0][0] in (200, 201) for d in got)
    total = sum(len(core.transport.sent) for core in w.cores.values())
    assert total >= len(w.capture.rtcp())
    assert bundle_drops(w.owner, Drop.RTCP_NO_ROUTE) == 0


def test_a_payload_type_of_no_m_line_is_dropped_and_counted_by_reason():
    w = wire()
    packet = bytearray(w.capture.rtp()[-1])
    packet[1] = (packet[1] & 0x80) | 33
    packet[8:12] = struct.pack("!I", 0x0BADCAFE)  # unknown SSRC, no MID (it is a late packet)
    w.channel.datagram_received(w.peer_tx.protect(bytes(packet)), PEER)
    assert all(not core.transport.sent for core in w.cores.values())
    assert bundle_drops(w.owner, Drop.NO_ROUTE) == 1
    assert bundle_drops(w.owner, Drop.UNKNOWN_MID) == 0


def test_core_to_access_one_port_one_context_and_an_ssrc_on_two_m_lines_is_refused():
    """RFC 9143 9.1: the AGW may not send one SSRC on two bundled m-lines; the second is dropped."""
    w = wire()
    (audio_key, audio_core), (video_key, video_core) = w.cores.items()
    rtp_audio = struct.pack("!BBHII", 0x80, 0, 1, 0, 0xA0A0A0A0) + bytes(160)
    rtp_video = struct.pack("!BBHII", 0x80, 96, 1, 0, 0xB0B0B0B0) + bytes(1200)
    audio_core.datagram_received(rtp_audio, (CORE_HOST, 41000))
    video_core.datagram_received(rtp_video, (CORE_HOST, 41002))
    sent = w.channel.transport.sent
    assert [addr for _, addr in sent] == [PEER, PEER]  # both from the transport's one port
    # Each with its m-line's MID in the negotiated header extension (RFC 9143 9.2, 15.2).
    ext = w.transport.spec.mid_extension_id
    assert ext is not None
    received = [w.peer_rx.unprotect(data) for data, _ in sent]
    assert [elements(p) for p in received] == [(0xBEDE, [(ext, b"0")], rtp_audio[12:]),
                                               (0xBEDE, [(ext, b"1")], rtp_video[12:])]
    assert [p[1:12] for p in received] == [rtp_audio[1:12], rtp_video[1:12]]
    assert w.transport.demux.outgoing == {0xA0A0A0A0: audio_key, 0xB0B0B0B0: video_key}
    clash = struct.pack("!BBHII", 0x80, 96, 2, 0, 0xA0A0A0A0) + bytes(100)
    video_core.datagram_received(clash, (CORE_HOST, 41002))
    assert len(sent) == 2 and bundle_drops(w.owner, Drop.SSRC_COLLISION) == 1


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("impl", [SrtpTransformer] + ([fastpath.FastSrtp] if fastpath.available() else []),
                         ids=lambda cls: cls.__name__)
def test_a_video_packet_of_the_path_mtu_passes_srtp_both_ways(profile, impl):
    """A 1200-byte payload with Chromium's header extensions (the largest VP8 packets it sends are
    ~1000 bytes) plus the tag fits pylibsrtp's 1500-byte buffer and the native path's."""
    spec = PROFILES[profile]
    a_key, a_salt, b_key, b_salt = (os.urandom(n) for n in (spec.key_length, spec.salt_length) * 2)
    a = impl(SrtpKeys(profile, a_key, a_salt, b_key, b_salt))
    b = impl(SrtpKeys(profile, b_key, b_salt, a_key, a_salt))
    extension = b"\xbe\xde\x00\x03" + b"\x10\x31" + bytes(10)
    packet = struct.pack("!BBHII", 0x90, 96, 7, 0, 0x1234) + extension + os.urandom(1200)
    protected = a.protect_rtp(packet)
    assert len(protected) == len(packet) + spec.auth_tag_length
    assert b.unprotect_rtp(protected) == packet


def test_the_transports_state_is_its_dtls_sessions():
    """No second machine: restored keys read as established, a new association as new (then DTLS's)."""
    w = wire()
    assert w.channel.state == "established" and w.channel.dtls is None
    w.transport.reset_association()
    assert w.channel.state == "new" and w.channel.srtp is None
    w.channel.datagram_received(w.peer_tx.protect(w.capture.rtp()[0]), PEER)
    assert w.owner.metrics.drop_counts["not_established"] == 1


def test_events_of_the_transport_name_it_and_its_streams():
    w = wire()
    w.transport.report("consent_expired", None, "rtp")
    assert w.events == [("consent_expired", {"transport_id": 0, "stream_ids": sorted(w.cores)})]


def test_a_released_stream_leaves_the_demux_and_its_packets_are_dropped():
    w = wire()
    video_key = list(w.cores)[1]
    stream = w.dialog.streams.pop(video_key)
    stream.access.release()
    assert sorted(w.transport.streams) == [list(w.cores)[0]]
    for packet in w.capture.rtp():
        w.channel.datagram_received(w.peer_tx.protect(packet), PEER)
    assert not w.cores[video_key].transport.sent
    assert bundle_drops(w.owner, Drop.UNKNOWN_MID) + bundle_drops(w.owner, Drop.NO_ROUTE) > 0


def _with_seq(packet: bytes, seq: int) -> bytes:
    return packet[:2] + seq.to_bytes(2, "big") + packet[4:]


def test_a_transport_stores_its_streams_rollover_counters_and_a_restore_continues_them():
    """RFC 3711 3.3.1 on a BUNDLE transport: the ROCs of the demultiplexer's SSRCs and those sent, restored."""
    w = wire()
    wic = w.capture.rtp()[0]
    key = w.capture.wic_ssrc[ssrc_of(wic)]
    core = w.cores[key]
    toward_wic = bytes([0x80, 0]) + bytes(2) + bytes(4) + (0xB2).to_bytes(4, "big") + bytes(160)
    for seq in (65534, 65535, 0):
        w.channel.datagram_received(w.peer_tx.protect(_with_seq(wic, seq)), PEER)
        core.datagram_received(_with_seq(toward_wic, seq), (CORE_HOST, 41000 + 2 * list(w.cores).index(key)))
    assert w.channel.rocs_advanced() is True
    doc = w.transport.document()
    assert doc["srtp_rocs"]["tx"] == {str(0xB2): 1}
    assert doc["srtp_rocs"]["rx"] == {str(ssrc_of(wic)): 1}
    after = wire()  # a restarted process
    after.transport.restore(doc)
    after.channel.datagram_received(w.peer_tx.protect(_with_seq(wic, 1)), PEER)
    assert after.cores[key].transport.sent[-1][0] == _with_seq(wic, 1)  # authenticated at ROC 1
    sent = len(after.channel.transport.sent)
    after.cores[key].datagram_received(_with_seq(toward_wic, 1), (CORE_HOST, 41000 + 2 * list(w.cores).index(key)))
    protected = after.channel.transport.sent[sent][0]
    peer_rx = Session(Policy(key=w.channel.keys.local_key + w.channel.keys.local_salt,
                             ssrc_type=Policy.SSRC_ANY_INBOUND))
    for seq in (65534, 65535, 0):  # the WIC's receiver, at ROC 1 like the WIC's
        peer_rx.unprotect(w.channel.srtp.protect_rtp(_with_seq(toward_wic, seq)))
    plain = peer_rx.unprotect(protected)  # authenticated at ROC 1 (the MID element added, RFC 9143)
    assert plain[2:4] == (1).to_bytes(2, "big") and plain[8:12] == (0xB2).to_bytes(4, "big")


def test_an_rtcp_bye_frees_an_inbound_ssrc_slot_after_its_grace():
    """The SRTP session admits max_ssrcs inbound SSRCs; a BYE from the WIC (authenticated) has the
    demultiplexer forget its SSRC after BYE_GRACE (RFC 3550 6.2.1) and the session free its slot and
    libsrtp stream: a new SSRC then passes; the BYE'd SSRC's old packets do not."""
    from mediad.proto.bundle_demux import BYE_GRACE

    w = wire()
    cap = w.owner.config.mediad_max_ssrcs
    stream = w.capture.iq.streams[0]
    pt, core = min(stream.access.payload_types), w.cores[stream.stream_id]
    srtp = w.channel.srtp

    def send(ssrc: int, seq: int = 1) -> bytes:
        packet = struct.pack("!BBHII", 0x80, pt, seq, 0, ssrc) + bytes(40)
        protected = w.peer_tx.protect(packet)
        w.channel.datagram_received(protected, PEER)
        return protected

    first = None
    for ssrc in range(1, cap + 1):
        protected = send(ssrc)
        first = first or protected
    assert len(srtp.inbound_ssrcs()) == cap
    core.transport.sent.clear()
    send(1000)
    assert w.owner.metrics.drop_counts["inbound_ssrc_cap"] == 1 and core.transport.sent == []
    rr_bye = struct.pack("!BBHI", 0x80, 201, 1, 2) + struct.pack("!BBHI", 0x81, 203, 1, 1)
    w.channel.datagram_received(w.peer_tx.protect_rtcp(rr_bye), PEER)
    w.loop.advance(BYE_GRACE - 1)
    send(1000, 2)
    assert w.owner.metrics.drop_counts["inbound_ssrc_cap"] == 2  # within the grace: still held
    w.loop.advance(1)
    assert 1 not in w.transport.demux.incoming and 1 not in srtp.inbound_ssrcs()
    core.transport.sent.clear()
    send(1000, 3)
    assert [data[8:12] for data, _ in core.transport.sent] == [struct.pack("!I", 1000)]
    w.channel.datagram_received(first, PEER)  # the BYE'd SSRC's old packet, sent again
    assert w.owner.metrics.drop_counts["retired_ssrc"] == 1 and len(core.transport.sent) == 1
