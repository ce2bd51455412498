"""Seed inputs for each fuzz target, from the test fixtures and the RFC test vectors.

SDP seeds are the files of ``tests/fixtures/sdp/``; the rules' seeds pair
each offer with an answer made by running the rules themselves (the
forwarded offer, answered as the far side would: same m-lines, its own
transport).  Binary formats are written from the RFC examples the unit tests
use: RFC 5769 (STUN), RFC 3550 / RFC 5761 / RFC 7983 (RTP, RTCP,
demultiplexing), RFC 6347 (DTLS records), RFC 4571 (framing), RFC 4960 /
RFC 8832 (SCTP chunks, DCEP), RFC 4975 (MSRP), RFC 4103 / RFC 2198 (T.140,
RED), and the control codec's own requests.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterator

from fuzz.targets import (
    RULES_SEPARATOR,
    STUN_LOCAL_UFRAG,
    STUN_PASSWORD,
    STUN_REMOTE_UFRAG,
    control_codec,
)

REPO = Path(__file__).resolve().parent.parent
SDP_FIXTURES = REPO / "tests" / "fixtures" / "sdp"

# RFC 5769 section 2.1: sample request.
RFC5769_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)
# RFC 5769 section 2.2: sample IPv4 response.
RFC5769_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)
RTP = bytes.fromhex("800f1234decafbadcafebabe") + bytes.fromhex("ab" * 100)  # the SRTP unit tests' packet
RTCP_SR = bytes.fromhex("80c80006cafebabe") + bytes(range(20))
RTCP_RR = bytes.fromhex("81c90007deadbeef") + bytes(24)
RTCP_RR_EMPTY = bytes([0x80, 201, 0, 1]) + bytes(4)
RTCP_SDES = bytes([0x81, 202, 0, 2]) + bytes(4) + bytes([1, 2, 0x61, 0x62])
CLIENT_HELLO_RECORD = bytes.fromhex("16fefd000000000000000000") + bytes([0x0c, 1]) + bytes(11)


def sdp_files() -> list[Path]:
    return sorted(SDP_FIXTURES.glob("*.sdp"))


def sdp_model() -> Iterator[bytes]:
    for path in sdp_files():
        data = path.read_bytes()
        yield data
        yield data.replace(b"\r\n", b"\n")


def _rules_pairs() -> Iterator[tuple[int, bytes, bytes]]:
    """(flags, offer, answer) for every offer fixture, the answer made by the rules' own output."""
    from sdp_rules import DialogState, Kind, Policy, Side, process
    from sdp_rules.errors import PeerError
    from sdp_rules.simulated_agw import SimulatedAgw

    for path in sdp_files():
        if "answer" in path.name:
            continue
        text = path.read_text(encoding="utf-8")
        origin = Side.CORE if path.name.startswith("core_") else Side.ACCESS
        try:
            plan = process(text, origin=origin, kind=Kind.OFFER, state=DialogState(), dialog="seed",
                           transaction="1", policy=Policy())
            result = plan.finish(SimulatedAgw().answer(plan.iq) if plan.iq else None)
        except PeerError:
            continue
        answer = result.sdp
        if origin is Side.CORE:
            answer = answer.replace("a=setup:actpass", "a=setup:active")
        yield (1 if origin is Side.CORE else 0), text.encode(), answer.encode()


def sdp_rules() -> Iterator[bytes]:
    for flags, offer, answer in _rules_pairs():
        yield bytes([flags]) + offer
        yield bytes([flags]) + offer + RULES_SEPARATOR + answer
        # the same offer again on the dialog: a re-offer keeping every association
        yield bytes([flags]) + RULES_SEPARATOR.join([offer, answer, offer, answer])
    for path in sdp_files():
        yield b"\x00" + path.read_bytes()
        yield b"\x01" + path.read_bytes()


SDP = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
PIDF = ('<?xml version="1.0" encoding="UTF-8"?>\r\n<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'entity="pres:wic@example.com">\r\n  <tuple id="t1"><status/></tuple>\r\n</presence>')


def multipart() -> Iterator[bytes]:
    emergency = "\r\n".join([
        "--b0undary", "Content-Type: application/sdp", "", SDP.rstrip("\r\n"),
        "--b0undary  ", "Content-Type: application/pidf+xml", "Content-ID: <wic@example.com>", "", PIDF,
        "--b0undary--",
    ])
    nested = ("--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
              "--inner\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
              "--inner\r\nc: application/SDP\r\n\r\n" + SDP + "--inner--\r\n"
              "--outer\r\nContent-Type: application/isup\r\n\r\n\x01\x02\r\n--outer--\r\n")
    yield ("multipart/mixed; boundary=b0undary\n" + emergency).encode()
    yield ("multipart/mixed; boundary=b0undary\n" + emergency.replace("\r\n", "\n")).encode()
    yield ('multipart/mixed; boundary="outer"\n' + "preamble\r\n" + nested + "epilogue").encode()
    yield ("multipart/related; type=application/sdp; boundary=x\n--x\r\n\r\nno headers\r\n--x--\r\n").encode()
    yield ("multipart/mixed; boundary=b\n--b\r\nContent-Type: application/sdp\r\n\r\n" + SDP
           + "\r\n--b\r\nContent-Type: application/sdp\r\n\r\n" + SDP + "\r\n--b--\r\n").encode()


def stun() -> Iterator[bytes]:
    from aioice import stun as aioice_stun

    yield RFC5769_REQUEST
    yield RFC5769_RESPONSE
    username = f"{STUN_LOCAL_UFRAG}:{STUN_REMOTE_UFRAG}"
    for use_candidate in (False, True):
        message = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
        message.attributes["USERNAME"] = username
        message.attributes["PRIORITY"] = 1853824767
        message.attributes["ICE-CONTROLLING"] = 0x1234
        if use_candidate:
            message.attributes["USE-CANDIDATE"] = None
        message.add_message_integrity(STUN_PASSWORD.encode())
        yield bytes(message)
    indication = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.INDICATION)
    indication.add_fingerprint()
    yield bytes(indication)
    unsigned = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    unsigned.attributes["USERNAME"] = username
    unsigned.add_fingerprint()
    yield bytes(unsigned)
    yield bytes.fromhex("000100002112a442") + bytes(12)


def dtls_record() -> Iterator[bytes]:
    alert = bytes.fromhex("15fefd0001000000000005001a") + bytes(26)
    app = bytes.fromhex("17fefd000100000000000a0020") + bytes(32)
    yield CLIENT_HELLO_RECORD
    yield CLIENT_HELLO_RECORD + alert + app
    yield bytes.fromhex("14fefd0000000000000003000101")  # ChangeCipherSpec
    yield app


def demux() -> Iterator[bytes]:
    yield from (RTP, RTCP_SR, RTCP_RR, RTCP_RR_EMPTY, RTCP_SDES, RTCP_RR_EMPTY + RTCP_SDES, CLIENT_HELLO_RECORD,
                RFC5769_REQUEST, bytes([0x40, 0, 0, 4, 1, 2, 3, 4]), bytes([0x10]) + bytes(11),
                bytes([0xA0, 201, 0, 1]) + bytes(3) + b"\x04", bytes([0x80, 201, 0, 0]))


def srtp() -> Iterator[bytes]:
    yield from (RTP, RTCP_SR, RTCP_RR)
    from mediad.proto.srtp import AES_CM_128_HMAC_SHA1_80, SrtpKeys, SrtpTransformer

    keys = SrtpKeys(AES_CM_128_HMAC_SHA1_80, bytes(range(16, 32)), bytes(range(14, 28)),
                    bytes(range(16)), bytes(range(14)))
    sender = SrtpTransformer(keys)
    yield sender.protect_rtp(RTP)
    yield sender.protect_rtcp(RTCP_SR)


def framing() -> Iterator[bytes]:
    from mediad.proto.framing import frame

    stream = frame(RTP) + frame(b"") + frame(CLIENT_HELLO_RECORD) + frame(RFC5769_REQUEST)
    for step in (0, 1, 7, 255):
        yield bytes([step]) + stream
    yield b"\x03" + stream[:-5]


def _chunk(kind: int, flags: int, body: bytes) -> bytes:
    length = 4 + len(body)
    return struct.pack("!BBH", kind, flags, length) + body + bytes(-length % 4)


def sctp() -> Iterator[bytes]:
    from fuzz.sctp_peer import FIRST_RANDOM, NEGOTIATED_STREAM

    # aiortc draws the tags and the initial TSNs from the harness's counter in this order:
    # wic tag, wic TSN, agw tag, agw TSN.  The agw expects the wic's DATA from the wic's
    # initial TSN on, and its RE-CONFIG requests numbered from it too (RFC 6525 section 5.1).
    wic_tsn = FIRST_RANDOM + 1

    def data(stream: int, ppid: int, payload: bytes, ssn: int = 0, flags: int = 0x03, tsn: int = wic_tsn) -> bytes:
        return _chunk(0, flags, struct.pack("!LHHL", tsn, stream, ssn, ppid) + payload)

    dcep_open = struct.pack("!BBHLHH", 3, 0, 0, 0, 4, 4) + b"chat" + b"msrp"
    yield b"\x00" + data(NEGOTIATED_STREAM, 51, b"hello")  # WebRTC String
    yield b"\x00" + data(NEGOTIATED_STREAM, 53, b"\x00\x01")  # WebRTC Binary
    yield b"\x00" + data(1, 50, dcep_open)  # DCEP DATA_CHANNEL_OPEN (RFC 8832 5.1)
    yield b"\x00" + data(NEGOTIATED_STREAM, 50, dcep_open)
    yield b"\x00" + data(5, 50, b"\x02")  # DCEP ACK for no channel
    yield b"\x00" + data(NEGOTIATED_STREAM, 51, b"frag", flags=0x02) + data(NEGOTIATED_STREAM, 51, b"ment", flags=0x01,
                                                                                   tsn=wic_tsn + 1)
    # RE-CONFIG: outgoing SSN reset request for the negotiated stream (RFC 6525 4.1)
    reset = struct.pack("!HHLLL", 13, 18, wic_tsn, FIRST_RANDOM + 3, wic_tsn - 1) + struct.pack("!H", NEGOTIATED_STREAM) + b"\x00\x00"
    yield b"\x00" + _chunk(130, 0, reset)
    yield b"\x00" + _chunk(6, 0, b"")  # ABORT
    yield b"\x00" + _chunk(7, 0, struct.pack("!L", wic_tsn))  # SHUTDOWN
    yield b"\x00" + _chunk(4, 0, struct.pack("!HH", 1, 8) + b"beat")  # HEARTBEAT
    yield b"\x00" + _chunk(3, 0, struct.pack("!LLHH", FIRST_RANDOM + 3, 65536, 0, 0))  # SACK
    yield b"\x00" + _chunk(192, 0, struct.pack("!LHH", wic_tsn + 5, NEGOTIATED_STREAM, 2))  # FORWARD-TSN
    yield b"\x01" + _chunk(1, 0, struct.pack("!LLHHL", 7, 65536, 16, 16, 99))  # INIT


RFC4975_SEND = (
    b"MSRP a786hjs2 SEND\r\n"
    b"To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n"
    b"From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n"
    b"Message-ID: 87652491\r\n"
    b"Byte-Range: 1-25/25\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Hey Bob, are you there?\r\n"
    b"-------a786hjs2$\r\n"
)
RFC4975_OK = (
    b"MSRP a786hjs2 200 OK\r\n"
    b"To-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n"
    b"From-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n"
    b"-------a786hjs2$\r\n"
)


def msrp() -> Iterator[bytes]:
    for step in (0, 3, 64, 255):
        yield bytes([step]) + RFC4975_SEND + RFC4975_OK
    yield b"\x05" + RFC4975_SEND.replace(b"$\r\n", b"+\r\n") + RFC4975_SEND[:40]


def t140() -> Iterator[bytes]:
    header = struct.pack("!BBHII", 0x80, 98, 1, 1000, 1)
    yield header + "hello é ✓".encode()
    # RFC 2198 RED: two redundant generations, then the primary (payload type 100)
    red = (struct.pack("!I", (0x80 | 98) << 24 | 300 << 10 | 1) + struct.pack("!I", (0x80 | 98) << 24 | 150 << 10 | 2)
           + bytes([98]) + b"a" + b"bc" + b"def")
    yield struct.pack("!BBHII", 0x80, 100, 2, 1000, 1) + red
    yield struct.pack("!BBHII", 0x90, 98, 3, 1000, 1) + struct.pack("!HH", 0xBEDE, 1) + bytes(4) + b"x"
    yield struct.pack("!BBHII", 0xA0, 98, 4, 1000, 1) + b"pad" + bytes([0, 2])


def control() -> Iterator[bytes]:
    from iq import Command, Fingerprint, IqRequest, Role, Side, StreamSpec, TerminationSpec

    _decode, _authentic, encode, _errors = control_codec()
    access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", remote_address="192.0.2.1", remote_port=4000,
                             remote_fingerprints=[Fingerprint("sha-256", ":".join(["AB"] * 32))],
                             tls_role=Role.CLIENT, ice_lite=True, remote_ice_ufrag="abcd")
    core = TerminationSpec(Side.CORE, "RTP/AVPF", rtcp_mux=False)
    requests = [
        IqRequest(Command.RESERVE, "dialog-1", "tx-1", [StreamSpec(0, "srtp", access=access, core=core)]),
        IqRequest(Command.MODIFY, "dialog-1", "tx-2", [StreamSpec(0, "srtp", core=core)], [1]),
        IqRequest(Command.RELEASE, "dialog-1", "tx-3"),
    ]
    for request in requests:
        yield b"\x00" + encode(request)
        body = json.dumps(request.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        yield b"\x01" + body
    first = encode(requests[0])
    data = first[22 + 37:]  # after HELLO (22 bytes) and AUTH (37): the request's DATA frame
    yield b"\x00" + first + data  # the DATA frame again: a replay
    yield b"\x02" + data
    yield b"\x00" + json.dumps({"iq": requests[0].to_dict(), "mac": "00"}).encode()  # the old datagram


def _record(tag: int, data: bytes) -> bytes:
    """One record of the bundle, stamp and termination inputs: tag, length, bytes (``fuzz.targets._records``)."""
    return bytes([tag, len(data)]) + data


def _rtp(pt: int, seq: int, ssrc: int, payload: bytes = b"\xab" * 20, first: int = 0x80, extension: bytes = b"",
         csrcs: tuple[int, ...] = ()) -> bytes:
    first |= len(csrcs) | (0x10 if extension else 0)
    return (struct.pack("!BBHII", first, pt, seq, 1000, ssrc) + b"".join(struct.pack("!I", c) for c in csrcs)
            + extension + payload)


def _one_byte_block(*elements: tuple[int, bytes]) -> bytes:
    body = b"".join(bytes([i << 4 | len(v) - 1]) + v for i, v in elements)
    body += bytes(-len(body) % 4)
    return struct.pack("!HH", 0xBEDE, len(body) // 4) + body


def _two_byte_block(*elements: tuple[int, bytes]) -> bytes:
    body = b"".join(bytes([i, len(v)]) + v for i, v in elements)
    body += bytes(-len(body) % 4)
    return struct.pack("!HH", 0x1000, len(body) // 4) + body


def _bundle_rtcp() -> list[bytes]:
    """RTCP about the bundle's SSRCs (``fuzz.targets.BUNDLE_STREAMS``): SR, RR, SDES MID, BYE, feedback."""
    wic, agw = 0x11111111, 0xBBBBBBBB
    block = struct.pack("!I", agw) + bytes(20)
    sr = struct.pack("!BBHI", 0x81, 200, 12, wic) + bytes(20) + block
    rr = struct.pack("!BBHI", 0x81, 201, 7, 0x22222222) + block
    mid = b"video2"
    item = bytes([15, len(mid)]) + mid + b"\x00"
    item += bytes(-(len(item) + 4) % 4)
    sdes = struct.pack("!BBHI", 0x81, 202, len(item) // 4 + 1, 0x33333333) + item
    bye = struct.pack("!BBHI", 0x81, 203, 1, wic)
    pli = struct.pack("!BBHII", 0x81, 206, 2, wic, agw)
    nack = struct.pack("!BBHIIHH", 0x81, 205, 3, wic, agw, 1, 0)
    remb = struct.pack("!BBHII", 0x8F, 206, 5, wic, 0) + REMB_FCI + struct.pack("!BBHI", 1, 0, 0, agw)
    # An SDES MID item that runs past its packet into the next, whose first byte (A9: version 2, padding,
    # count 9) would complete the MID "\u00e9" (RFC 3550 6.5: the item must not be read there).
    over = struct.pack("!BBHI", 0x81, 202, 3, 0x99999999) + b"\x01\x03xyz" + b"\x0f\x02\xc3"
    app = struct.pack("!BBHI", 0xA9, 204, 2, wic) + b"name"
    return [sr + sdes, rr + bye, sr + pli + nack, rr + remb, sr, over + app]


REMB_FCI = b"REMB"


def bundle_demux() -> Iterator[bytes]:
    mid_one = _one_byte_block((3, b"1"))
    mid_two = _two_byte_block((200, b"video2"))
    rtps = [_rtp(0, 1, 0x11111111), _rtp(96, 2, 0x44444444, extension=mid_one), _rtp(98, 3, 0x55555555),
            _rtp(111, 4, 0x66666666), _rtp(98, 5, 0x77777777, extension=mid_two),
            _rtp(100, 6, 0x88888888, first=0xA0, payload=b"\x01\x02\x03\x03")]
    rtcps = _bundle_rtcp()
    for ext_index in (2, 7, 0):  # MID extension id 3, 200, none (MID_EXTENSION_IDS)
        records = b"".join(_record(0, p) for p in rtps) + b"".join(_record(0, p) for p in rtcps)
        yield bytes([ext_index]) + records
        yield bytes([ext_index]) + b"".join(_record(6 + i, rtps[0]) for i in range(3)) + _record(0xA9, b"") \
            + _record(10, struct.pack("!BI", 1, 0xAAAAAAAA)) + _record(11, b"\x00") + _record(12, rtcps[1])


def mid_stamp() -> Iterator[bytes]:
    for ext, mid in ((3, b"0"), (14, b"video-sixteen-ch"), (200, b"1"), (5, b"a" * 17)):
        head = bytes([ext, len(mid)]) + mid
        yield head + _rtp(111, 1, 0x11111111)
        yield head + _rtp(111, 2, 0x11111111, extension=_one_byte_block((1, b"\x30"), (2, b"ab")))
        yield head + _rtp(111, 3, 0x11111111, extension=_two_byte_block((1, b""), (17, b"xyz")))
        yield head + _rtp(96, 4, 0x11111111, csrcs=(1, 2, 3), first=0xA0, payload=b"pay\x00\x00\x03")
        yield head + _rtp(96, 5, 0x11111111, extension=struct.pack("!HH", 0xABAC, 1) + b"\x01\x02\x03\x04")


def termination() -> Iterator[bytes]:
    from fuzz.targets import TERMINATION_KEYS  # noqa: F401 (the keys the target's peer protects with)

    check = _record(3, b"\x01" + bytes(range(12)))
    stranger_check = _record(0x83, b"\x01" + bytes(range(12, 24)))
    rtp = _record(1, _rtp(0, 1, 0x11111111)[:60])
    rtcp = _record(2, bytes.fromhex("80c80006cafebabe") + bytes(20))
    out = _record(5, _rtp(0, 7, 0x55667788)) + _record(6, RTCP_SR)
    tick = _record(4, b"\x0b\xb8\x00")  # 30 s, the DTLS timer
    consent = _record(4, b"\x0f\xa0\x02\x01")  # 40 s, the consent timer
    for setup in range(32):
        yield bytes([setup]) + check + rtp + rtcp + out + _record(0, CLIENT_HELLO_RECORD) + tick
    yield bytes([3]) + check + out + consent + out + stranger_check + out + _record(9, b"") + _record(8, b"")
    yield bytes([0]) + _record(0, RFC5769_REQUEST) + _record(0, RTP) + _record(7, b"data") + _record(11, b"") \
        + _record(10, b"")
    yield bytes([6]) + tick + tick + _record(4, b"\x00\x01\x01\x01")


def takeover() -> Iterator[bytes]:
    from mediad.proto.srtp import AES_CM_128_HMAC_SHA1_80, SrtpKeys

    keys = SrtpKeys(AES_CM_128_HMAC_SHA1_80, bytes(range(16)), bytes(range(14)), bytes(range(16, 32)),
                    bytes(range(14, 28))).to_dict()
    home = {"access": "127.0.0.21", "core": "127.0.0.22", "access_sdp": "192.0.2.1", "core_sdp": "127.0.0.22"}
    spec = {"side": "access", "transport": "UDP/TLS/RTP/SAVPF", "remote_address": "192.0.2.9", "remote_port": 4000}
    channel = {"port": 31000, "state": "established", "role": "server", "peer": ["192.0.2.9", 4000],
               "srtp_keys": keys, "srtp_rocs": {"tx": {"2864434397": 1}, "rx": {"287454020": 2}}}
    document = {
        "dialog": "d1", "version": 3, "node": "dead", "home": home, "replies": {}, "events": [],
        "transports": [{"transport_id": 0, "spec": {"transport_id": 0, "mid_extension_id": 3}, "ice_ufrag": "u",
                        "ice_pwd": "p" * 22, "port": 31002, "state": "established", "role": "client",
                        "peer": ["192.0.2.9", 4002], "srtp_keys": keys, "srtp_rocs": {"rx": {"1": 1}},
                        "learnt": {"287454020": 0}}],
        "streams": [
            {"stream_id": 0, "kind": "srtp", "access": {"spec": spec, "ice_ufrag": "u", "ice_pwd": "p" * 22,
                                                        "channels": {"rtp": channel}},
             "core": {"spec": {"side": "core", "transport": "RTP/AVP"}, "ports": {"rtp": 32000, "rtcp": 32001},
                      "latched": {}}},
            {"stream_id": 1, "kind": "srtp", "transport_id": 0, "mid": "0", "access": {"spec": spec}},
        ],
    }
    yield b"\x00" + json.dumps(document).encode()
    yield b"\x00" + json.dumps({**document, "streams": [{"stream_id": 2, "kind": "sctp"}]}).encode()
    yield b"\x00" + json.dumps({**document, "home": None}).encode()
    yield b"\x01" + json.dumps([[1.5, "b@127.0.0.1:9"], [0.5, "a@127.0.0.1:9"]]).encode()
    yield b"\x01" + b"[[1, 2, 3]]"
    yield b"\x02" + json.dumps({"srtp_rocs": channel["srtp_rocs"]}).encode()
    yield b"\x02" + b'{"srtp_rocs": {"tx": {"1": -1}}}'
