"""The native packet path of a BUNDLE transport against the Python one, on real loopback sockets.

``bench.python_path.Wiring`` builds one transport with an audio and a video
stream (MID header extension negotiated) on either path; the same packets go
through both, and what reaches the core and the WIC must be the same bytes
(after SRTP), with the native path carrying the packets of learnt SSRCs and
leaving the rest -- a MID naming another m-line, a core packet with a header
extension of its own, RTCP -- to Python, which decides as it always did.
"""

from __future__ import annotations

import struct

import pytest
from pylibsrtp import Policy, Session

from bench.python_path import MID_EXT, Wiring, rtp
from mediad.io import fastpath
from mediad.proto.bundle_demux import MidStamp

pytestmark = pytest.mark.skipif(not fastpath.available(), reason="the native path is not built")


def relay(path: str, feed) -> tuple[Wiring, list[bytes], list[bytes]]:
    w = Wiring(bundle=True, path=path, sockets=True)
    w.keep = True
    peer_rx = Session(Policy(key=w.keys.local_key + w.keys.local_salt, ssrc_type=Policy.SSRC_ANY_INBOUND))
    feed(w)
    at_peer = [peer_rx.unprotect(p) if not 191 < p[1] < 224 else peer_rx.unprotect_rtcp(p) for p in w.at_peer]
    return w, at_peer, list(w.at_core)


def both(feed):
    native, python = relay("native", feed), relay("python", feed)
    try:
        # (the order across the two core ports depends on which is read first: compared as sets of bytes)
        assert sorted(native[1]) == sorted(python[1]) and sorted(native[2]) == sorted(python[2])
        return native
    finally:
        native[0].close()
        python[0].close()


def test_learnt_ssrcs_go_native_both_ways_and_carry_the_mid_toward_the_wic():
    def feed(w):
        w.warm_up()
        w.run([w.from_wic(seq, n) for seq in range(1, 41) for n in (0, 1)], "access")
        w.run([w.from_core(seq, n) for seq in range(1, 41) for n in (0, 1)], "core")

    w, at_peer, at_core = both(feed)
    assert len(at_core) == 82 and len(at_peer) == 82
    assert {p[1] for p in at_core} == {0, 96}
    for packet in at_peer:  # plain RTP of the core, with its m-line's MID element added (RFC 9143 15.2)
        n = packet[8:12][-1] - 0x88
        assert packet == MidStamp(MID_EXT, w.mids[n]).apply(w.from_core(struct.unpack("!H", packet[2:4])[0], n))
    assert w.engine.fast_packets >= 160  # all but the first packet of each SSRC each way


def test_what_the_table_does_not_settle_is_left_to_python():
    def feed(w):
        w.warm_up()
        fast = w.engine.fast_packets if w.engine is not None else 0
        # The audio SSRC with the video MID (RFC 9143 9.2: the MID rebinds it), a core packet with an
        # extension of its own (the MID element is merged into it), an unknown payload type.
        moved = rtp(1, 0x11223344, 96)
        w.run([w.peer_tx.protect(MidStamp(MID_EXT, "1").apply(moved))], "access")
        own = bytearray(rtp(2, 0x55667788, 0))
        own[0] |= 0x10
        own = bytes(own[:12]) + b"\xbe\xde\x00\x01" + b"\x50\xaa\x00\x00" + bytes(own[12:])
        w.run([own], "core")
        w.run([w.peer_tx.protect(rtp(3, 0x11223345, 8))], "access")
        # The video SSRC with the audio MID and a video payload type: rebound to audio (RFC 9143 9.2), and
        # dropped there (not an audio payload type); then one with an audio payload type: relayed to audio,
        # natively (the table learnt the new binding).
        w.run([w.peer_tx.protect(MidStamp(MID_EXT, "0").apply(rtp(4, 0x11223345, 96)))], "access")
        w.run([w.peer_tx.protect(MidStamp(MID_EXT, "0").apply(rtp(5, 0x11223345, 0)))], "access")
        # Toward the WIC, the video port sending the SSRC the audio port sends (RFC 9143 9.1: refused),
        # after one more audio packet on the audio port.
        w.run([w.from_core(3, 0), rtp(3, 0x55667788, 96)], "core")
        if w.engine is not None:
            assert w.engine.fast_packets == fast + 2  # the last from the WIC, the audio one from the core

    w, at_peer, at_core = both(feed)
    assert len(at_core) == 2 + 2
    assert at_core[2][1] == 96 and at_core[2][8:12] == b"\x11\x22\x33\x44"  # moved to video
    assert at_core[3][1] == 0 and at_core[3][8:12] == b"\x11\x22\x33\x45"  # moved to audio
    assert len(at_peer) == 2 + 1 + 1  # warm-up's two, the merged one, the audio packet; not the collision  # warm-up's two, then the moved SSRC on video
    merged = [p for p in at_peer if p[2:4] == b"\x00\x02"]
    assert merged[0][12:20] == b"\xbe\xde\x00\x01\x50\xaa\x10\x30"  # the core's element and the MID ("0")


def test_wraps_and_srtcp_blocks_are_noted_for_the_daemon():
    def feed(w):
        w.warm_up()
        w.run([w.from_wic(seq, 0) for seq in range(65530, 65536)], "access")
        assert w.engine.noted() is not None
        w.run([w.from_wic(seq, 0) for seq in range(0, 4)], "access")
        noted = w.engine.noted()
        assert noted == [w.access]

    w = Wiring(bundle=True, path="native", sockets=True)
    try:
        feed(w)
        assert w.engine.noted() == []  # nothing since
    finally:
        w.close()


def test_a_retired_ssrc_that_resumes_is_admitted_again_natively():
    """Hold and resume on a bundle: the SSRC retired after a BYE keeps its route and stream; its next
    packets are admitted and relayed by C, its old ones stay replays."""
    w = Wiring(bundle=True, path="native", sockets=True)
    try:
        w.keep = True
        w.warm_up()
        held = [w.from_wic(seq, 0) for seq in range(1, 11)]
        w.run(held, "access")
        srtp, ssrc = w.access.srtp, 0x11223344
        assert srtp.retire(ssrc) and srtp.kept_ssrcs() == [ssrc] and ssrc not in srtp.inbound_ssrcs()
        w.at_core.clear()
        fast = w.engine.fast_packets
        w.run([w.from_wic(seq, 0) for seq in range(11, 21)], "access")
        assert len(w.at_core) == 10 and w.engine.fast_packets - fast == 10
        assert ssrc in srtp.inbound_ssrcs() and srtp.kept_ssrcs() == []
        w.run(held[:3], "access")
        assert len(w.at_core) == 10 and w.engine.drops("replay") == 3
    finally:
        w.close()


def test_native_admission_past_the_kept_streams_removes_the_oldest_retired():
    """On a stream of its own a new SSRC is admitted by C: past max_kept streams the oldest retired
    one's libsrtp stream is removed and its SSRC refused (``retired_ssrc``)."""
    w = Wiring(bundle=False, path="native", sockets=True)
    try:
        w.keep = True
        srtp = w.access.srtp
        srtp.max_inbound = srtp.ptr.max_rx = 1  # ([mediad] max_ssrcs = 1: two streams kept)
        srtp.max_kept = srtp.ptr.max_kept = 2

        def send(ssrc: int, seq: int) -> None:
            w.run([w.peer_tx.protect(rtp(seq, ssrc))], "access")

        fast = w.engine.fast_packets
        send(1, 1)
        assert srtp.retire(1)
        send(2, 1)
        assert srtp.retire(2)
        send(3, 1)  # admitted by C: three streams, so 1's goes
        assert w.engine.fast_packets - fast == 3 and srtp.inbound_ssrcs() == [3] and srtp.kept_ssrcs() == [2]
        assert srtp.is_retired(1) and streams_of(srtp, (1, 2, 3)) == [2, 3]
        send(1, 2)
        assert w.engine.drops("retired_ssrc") == 1
        send(2, 2)  # kept, but no slot
        assert w.engine.drops("inbound_ssrc_cap") == 1
        assert srtp.retire(3)
        send(2, 3)
        assert srtp.inbound_ssrcs() == [2] and srtp.kept_ssrcs() == [3] and len(w.at_core) == 4
    finally:
        w.close()


def streams_of(srtp, ssrcs) -> list[int]:
    from mediad.proto import srtp_roc

    return [ssrc for ssrc in ssrcs if srtp_roc.get_stream_roc(srtp._rx, ssrc) is not None]
