"""The fuzz targets: every parser that takes bytes from outside, with its contract.

Each :class:`Target` turns one input (bytes) into a call of the parser and
checks what the parser promises:

* it raises nothing but the errors it documents (``ValueError`` subclasses and
  the project's :class:`~sdp_rules.errors.E2aeError` tree, per parser below);
  anything else propagates and is a finding;
* its invariants hold where it has some (round trips, prefix properties);
  a broken one raises :class:`InvariantBroken`, a finding too.

The targets of the code compiled with mypyc (``sdp_model``, ``sdp_rules``,
``multipart``) return what they saw (the error each step was refused with,
the SDP it forwarded): ``python -m fuzz.differential`` compares that on the
sources and on the build, input by input.

A per-input time limit (hangs) is the fuzzer's business (``python -m fuzz``
passes it to libFuzzer).  The functions here run the same way under atheris,
in the test suite's replay of seeds and saved crashes, and by hand.

Imports of the parsers happen in :meth:`Target.build`, after the worker has
asked atheris to instrument them (coverage guidance).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Callable, Iterable

PEER = ("192.0.2.1", 32853)
# RFC 5769 section 2.1: USERNAME "evtj:h6vY", password below.
STUN_LOCAL_UFRAG = "evtj"
STUN_REMOTE_UFRAG = "h6vY"
STUN_PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
CONTROL_SECRET = b"fuzz-control-secret-32-bytes-long"
# Parts of one rules input: offer, answer, re-offer, answer to the re-offer.
RULES_SEPARATOR = b"\n##\n"


class InvariantBroken(AssertionError):
    """A parser returned without error but broke one of its promises."""


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise InvariantBroken(what)


def _text(data: bytes) -> str:
    """Bytes as the text a parser sees: UTF-8, undecodable bytes kept as lone surrogates."""
    return data.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    modules: tuple[str, ...]  # instrumented for coverage
    build: Callable[[], Callable[[bytes], str | None]]  # the outcome: see fuzz.differential
    seeds: Callable[[], Iterable[bytes]]
    max_len: int = 0  # libFuzzer's -max_len; 0: its own guess from the seeds


# ---------------------------------------------------------------------------
# SDP: the lossless model
# ---------------------------------------------------------------------------

def _crlf_lines(text: str) -> str:
    """``text`` with every line ended by CRLF, as the model writes it (independent of the parser)."""
    body = text.replace("\r\n", "\n") if "\r\n" in text else text
    lines = body.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return "".join(line + "\r\n" for line in lines)


def refused(error: Exception) -> str:
    """One refusal as an outcome: the error's class, SIP status and message."""
    return f"{type(error).__name__} {getattr(error, 'sip_status', '-')} {error}"


def build_sdp_model() -> Callable[[bytes], str | None]:
    from sdp_rules.errors import SdpParseError
    from sdp_rules.sdp import parse

    def one(data: bytes) -> str | None:
        text = _text(data)
        try:
            description = parse(text)
        except SdpParseError as error:
            return refused(error)
        out = str(description)
        _require(out == _crlf_lines(text), "str(parse(x)) differs from x with CRLF line ends")
        _require(str(parse(out)) == out, "parse(str(parse(x))) does not round-trip")
        _require(str(description.copy()) == out, "copy() differs from the original")
        seen = [out]
        for section in description.media:
            seen.append(repr(section.connection))  # each c= parses (checked when read)
            seen.append(repr(section.bandwidths()))
        return "\n".join(seen)

    return one


# ---------------------------------------------------------------------------
# SDP: the rules, both sides, offer and answer, against the simulated AGW
# ---------------------------------------------------------------------------

def build_sdp_rules() -> Callable[[bytes], str | None]:
    from sdp_rules import ActpassPolicy, DialogState, Kind, Policy, Side, process
    from sdp_rules.errors import PeerError
    from iq import IqRequest
    from sdp_rules.sdp import parse
    from sdp_rules.simulated_agw import SimulatedAgw

    counter = iter(range(1 << 62))

    def tls_id() -> str:
        return f"fuzzTlsId{next(counter):016d}"

    def one(data: bytes) -> str | None:
        if not data:
            return None
        seen: list[str] = []
        flags, parts = data[0], data[1:].split(RULES_SEPARATOR)[:4]
        origin = Side.CORE if flags & 1 else Side.ACCESS
        policy = Policy(actpass=ActpassPolicy.PASSIVE if flags & 2 else ActpassPolicy.ACTIVE, new_tls_id=tls_id)
        agw = SimulatedAgw()
        state = DialogState()
        for step, part in enumerate(parts):
            kind = Kind.OFFER if step % 2 == 0 else Kind.ANSWER
            if step == 2 and flags & 4:  # the re-offer comes from the other side
                origin = Side.CORE if origin is Side.ACCESS else Side.ACCESS
            sender = origin if kind is Kind.OFFER else (Side.CORE if origin is Side.ACCESS else Side.ACCESS)
            try:
                plan = process(_text(part), origin=sender, kind=kind, state=state, dialog="fuzz",
                               transaction=str(step), policy=policy)
            except PeerError as error:
                seen.append(refused(error))
                return "\n".join(seen)
            reply = None
            if plan.iq is not None:
                wire = json.loads(json.dumps(plan.iq.to_dict()))
                _require(IqRequest.from_dict(wire) == plan.iq, "the Iq request does not round-trip")
                reply = agw.answer(plan.iq)
            try:
                result = plan.finish(reply)
            except PeerError as error:
                seen.append(refused(error))
                return "\n".join(seen)
            seen.append(result.sdp)
            parse(result.sdp)  # what the rules forward is well-formed SDP
            _require(DialogState.from_json(result.state.to_json()) == result.state,
                     "the dialog state does not round-trip through JSON")
            state = result.state
        return "\n".join(seen)

    return one


# ---------------------------------------------------------------------------
# The multipart scanner
# ---------------------------------------------------------------------------

def build_multipart() -> Callable[[bytes], str | None]:
    from plugin.body import MultipartError, find_sdp

    def one(data: bytes) -> str | None:
        head, _, body = _text(data).partition("\n")
        try:
            part = find_sdp(head, body)
        except MultipartError as error:
            return refused(error)
        if part is not None:
            _require(part.before + part.sdp + part.after == body, "the parts do not add up to the body")
        if part is not None and part.sdp.strip():  # an empty SDP is refused (488), never rebuilt
            rebuilt = part.rebuild("v=0\r\n")
            again = find_sdp(head, rebuilt)
            _require(again is not None and again.sdp == "v=0\r\n" and again.after == part.after,
                     "a rebuilt body does not give its SDP back")
        return None if part is None else repr((part.before, part.sdp, part.after))

    return one


# ---------------------------------------------------------------------------
# STUN (ICE-lite responder)
# ---------------------------------------------------------------------------

def build_stun() -> Callable[[bytes], None]:
    from aioice import stun as aioice_stun

    from mediad.proto.stun import IceLiteResponder

    def one(data: bytes) -> None:
        for remote in (STUN_REMOTE_UFRAG, None):
            responder = IceLiteResponder(STUN_LOCAL_UFRAG, STUN_PASSWORD, remote_ufrag=remote)
            answer = responder.handle(data, PEER, now=1.0)  # documented: never raises
            if answer is not None:
                response = aioice_stun.parse_message(answer)
                _require(response.transaction_id == data[8:20], "the response has another transaction id")
                _require(response.message_class != aioice_stun.Class.REQUEST, "a request answered by a request")
            _require(responder.answered + responder.rejected + responder.dropped <= 1, "one datagram counted twice")
            if responder.selected_address is not None:
                _require(responder.selected_address == PEER and responder.answered == 1,
                         "an address selected without a valid check")

    return one


# ---------------------------------------------------------------------------
# DTLS record splitting and the compact record layer
# ---------------------------------------------------------------------------

def build_dtls_record() -> Callable[[bytes], None]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    from mediad.proto.dtls import RECORD_HEADER_LENGTH, pack_records, split_records
    from mediad.proto.dtls_record import RecordProtection

    key16, key32, iv4, iv12 = bytes(range(16)), bytes(range(32)), b"\x01\x02\x03\x04", bytes(range(12))

    def pair(gcm: bool) -> tuple[RecordProtection, RecordProtection]:
        a = (key16, iv4) if gcm else (key32, iv12)
        b = (key16[::-1], iv4[::-1]) if gcm else (key32[::-1], iv12[::-1])
        aead, iv_len = (AESGCM, 4) if gcm else (ChaCha20Poly1305, 12)
        return RecordProtection(aead, iv_len, a, b, 0), RecordProtection(aead, iv_len, b, a, 0)

    def one(data: bytes) -> None:
        records = split_records(data)
        if records is not None:
            _require(b"".join(records) == data, "the records do not add up to the datagram")
            for record in records:
                _require(len(record) == RECORD_HEADER_LENGTH + int.from_bytes(record[11:13], "big"),
                         "a record's length field does not match it")
            for mtu in (1, 200, 1200):
                datagrams = pack_records(records, mtu)
                _require(b"".join(datagrams) == data, "packed datagrams lose bytes")
                _require(all(split_records(d) is not None for d in datagrams), "a packed datagram cuts a record")
        for gcm in (True, False):
            ours, theirs = pair(gcm)
            opened = ours.open(data)  # documented: None, never raises
            _require(opened is None or isinstance(opened, tuple), "open() returned something else")
            sealed = theirs.seal(23, data[:2048])
            _require(ours.open(sealed) == (23, data[:2048]), "seal/open does not round-trip")
            _require(ours.open(sealed) is None, "a replayed record was accepted")

    return one


# ---------------------------------------------------------------------------
# RTP/RTCP checks (RFC 7983 / RFC 5761 demultiplexing, RFC 3550 A.2 validity)
# ---------------------------------------------------------------------------

def build_demux() -> Callable[[bytes], None]:
    from mediad.proto import demux

    def one(data: bytes) -> None:
        kind = demux.classify(data)
        _require(isinstance(kind, demux.Kind), "classify returned no Kind")
        if kind is not demux.UNKNOWN:
            _require(len(data) >= demux.MIN_LENGTH[kind], "a datagram shorter than its kind's header")
        valid = demux.rtcp_is_valid(data)
        if valid:
            _require(len(data) >= 8 and len(data) % 4 == 0 and data[0] >> 6 == 2, "invalid RTCP accepted")

    return one


# ---------------------------------------------------------------------------
# SRTP/SRTCP checks (libsrtp through pylibsrtp)
# ---------------------------------------------------------------------------

def build_srtp() -> Callable[[bytes], None]:
    from mediad.proto.srtp import AES_CM_128_HMAC_SHA1_80, SrtpError, SrtpKeys, SrtpTransformer

    keys = SrtpKeys(AES_CM_128_HMAC_SHA1_80, bytes(range(16)), bytes(range(14)),
                    bytes(range(16, 32)), bytes(range(14, 28)))
    mirror = SrtpKeys(AES_CM_128_HMAC_SHA1_80, keys.remote_key, keys.remote_salt, keys.local_key, keys.local_salt)

    def one(data: bytes) -> None:
        ours, theirs = SrtpTransformer(keys), SrtpTransformer(mirror)
        for call in (ours.unprotect_rtp, ours.unprotect_rtcp, ours.protect_rtp, ours.protect_rtcp):
            try:
                call(data)
            except SrtpError:
                pass
        try:
            protected = theirs.protect_rtp(data)
        except SrtpError:
            return
        _require(SrtpTransformer(keys).unprotect_rtp(protected) == data, "SRTP does not round-trip")

    return one


# ---------------------------------------------------------------------------
# RFC 4571 framing
# ---------------------------------------------------------------------------

def build_framing() -> Callable[[bytes], None]:
    from mediad.proto.framing import Deframer, frame

    def one(data: bytes) -> None:
        if not data:
            return
        step, stream = data[0] + 1, data[1:]
        whole = Deframer()
        packets = whole.feed(stream)
        pieces = Deframer()
        split = [p for i in range(0, len(stream), step) for p in pieces.feed(stream[i:i + step])]
        _require(split == packets, "frames depend on how the stream was cut")
        _require(whole.pending == pieces.pending, "different leftovers")
        consumed = len(stream) - whole.pending
        if whole.empty_frames == 0:
            _require(b"".join(frame(p) for p in packets) == stream[:consumed],
                     "re-framing the packets does not give the stream back")
        _require(Deframer().feed(b"".join(frame(p) for p in packets)) == packets, "frame/deframe round trip")

    return one


# ---------------------------------------------------------------------------
# SCTP and DCEP (aiortc's stack under mediad.core.sctp's glue)
# ---------------------------------------------------------------------------

def build_sctp() -> Callable[[bytes], None]:
    from fuzz.sctp_peer import SctpHarness

    harness = SctpHarness()
    return harness.one


# ---------------------------------------------------------------------------
# MSRP message boundaries
# ---------------------------------------------------------------------------

def build_msrp() -> Callable[[bytes], None]:
    from mediad.proto.msrp import MsrpFramer, MsrpFramingError

    def feed_all(stream: bytes, step: int) -> tuple[list[bytes], bool]:
        framer = MsrpFramer(max_message=4096)
        out: list[bytes] = []
        try:
            for i in range(0, len(stream), step):
                out += framer.feed(stream[i:i + step])
        except MsrpFramingError:
            return out, True
        return out, False

    def one(data: bytes) -> None:
        if not data:
            return
        step, stream = data[0] + 1, data[1:]
        whole, whole_failed = feed_all(stream, max(1, len(stream)))
        split, split_failed = feed_all(stream, step)
        for messages in (whole, split):
            _require(stream.startswith(b"".join(messages)), "the messages are not the stream's first bytes")
        if not whole_failed and not split_failed:
            _require(whole == split, "messages depend on how the stream was cut")

    return one


# ---------------------------------------------------------------------------
# T.140 in RTP (RFC 4103, RFC 2198)
# ---------------------------------------------------------------------------

def build_t140() -> Callable[[bytes], None]:
    from mediad.proto.t140 import MAX_BLOCK, T140Depacketizer, T140Packetizer, parse_red, parse_rtp, split_utf8

    def one(data: bytes) -> None:
        receiver = T140Depacketizer(pt=98, red_pt=100)
        for packet in (data, data):  # the second is a duplicate
            text = receiver.receive(packet)  # documented: never raises
            _require(text is None or isinstance(text, bytes), "receive returned something else")
        for parser in (parse_rtp, parse_red):
            try:
                parser(data)
            except ValueError:
                pass
        try:
            pieces = split_utf8(data)
        except ValueError:
            pieces = None
        if pieces is not None:
            _require(b"".join(pieces) == data and all(len(p) <= MAX_BLOCK for p in pieces), "split_utf8 loses bytes")
        text = data.decode("utf-8", "ignore").encode("utf-8")
        packets = T140Packetizer(ssrc=1, seq=65535).packetize(text, now=0.0)
        back = T140Depacketizer(pt=98)
        _require(b"".join(back.receive(p) or b"" for p in packets) == text, "T.140 does not round-trip")

    return one


# ---------------------------------------------------------------------------
# The control codec
# ---------------------------------------------------------------------------

# The handshake of the control target: fixed nonces, so one secret gives the same keys on every run.
CONTROL_CLIENT_NONCE = bytes(range(16))
CONTROL_SERVER_NONCE = bytes(range(16, 32))


def control_codec():
    """(decode(wire bytes), authentic(payload) -> wire bytes, encode(request) -> wire bytes, errors).

    The one place that knows the control channel's wire format: when it changes,
    point these at the new codec and the target follows.  The wire bytes are
    what a client sends on a new connection (``mediad.proto.controlwire``: HELLO, AUTH,
    then DATA frames); ``decode`` feeds them to mediad's end of a connection whose
    nonce is fixed, so that ``authentic`` can seal a payload under the keys that
    connection derives, and decodes the one message's payload
    (``mediad.proto.iqcodec.decode_request``).
    """
    from mediad.proto import controlwire, iqcodec

    def client() -> controlwire.ClientConnection:
        peer = controlwire.ClientConnection(CONTROL_SECRET, CONTROL_CLIENT_NONCE)
        server = controlwire.ServerConnection(CONTROL_SECRET, CONTROL_SERVER_NONCE)
        server.receive_data(peer.hello())
        _require(isinstance(peer.receive_data(server.data_to_send())[0], controlwire.Authenticated),
                 "the handshake of a known secret fails")
        return peer

    def authentic(payload: bytes) -> bytes:
        peer = client()
        return peer.hello() + peer.send(payload)

    def decode(wire: bytes):
        server = controlwire.ServerConnection(CONTROL_SECRET, CONTROL_SERVER_NONCE)
        payloads = []
        for event in server.receive_data(wire):
            if isinstance(event, controlwire.ProtocolError):
                frames, _ = controlwire.decode(server.data_to_send())
                _require(server.closed and bool(frames) and frames[-1].kind is controlwire.FrameType.ERROR,
                         "a protocol error leaves the connection open or unanswered")
                raise controlwire.WireError(event.reason, event.message)
            if isinstance(event, controlwire.Message):
                payloads.append(event.payload)
        if len(payloads) != 1:
            raise controlwire.WireError(controlwire.Reason.MALFORMED, f"{len(payloads)} messages, not one")
        return iqcodec.decode_request(payloads[0])

    return (decode, authentic, lambda request: authentic(iqcodec.encode_request(request)),
            (iqcodec.ControlError, controlwire.WireError))


def build_control() -> Callable[[bytes], None]:
    """Input: mode byte, then bytes.  Mode 0: the bytes as sent on a new connection;
    1: the bytes as the payload of an authentic message; 2: the bytes after an
    authentic handshake (frames in the open state)."""
    from mediad.proto import controlwire

    decode, authentic, encode, errors = control_codec()
    keys = controlwire.derive(CONTROL_SECRET, CONTROL_CLIENT_NONCE, CONTROL_SERVER_NONCE)
    handshake = (controlwire.ClientConnection(CONTROL_SECRET, CONTROL_CLIENT_NONCE).hello()
                 + controlwire.encode(controlwire.Frame(controlwire.FrameType.AUTH, keys.client_proof)))

    def one(data: bytes) -> None:
        if not data:
            return
        mode, rest = data[0] % 3, data[1:]
        wire = authentic(rest) if mode == 1 else handshake + rest if mode == 2 else rest
        try:
            frames, used = controlwire.decode(wire)
        except controlwire.WireError:
            pass
        else:
            _require(b"".join(map(controlwire.encode, frames)) == wire[:used], "a decoded frame does not round-trip")
        try:
            request = decode(wire)
        except errors:
            return
        _require(decode(encode(request)) == request, "a decoded request does not round-trip")

    return one



# ---------------------------------------------------------------------------
# BUNDLE: the demultiplexer (RFC 9143 section 9.2) and the RTCP split per stream
# ---------------------------------------------------------------------------

# The bundle of the demux target: stream key, MID, payload types the WIC sends, its a=ssrc, the core's
# a=ssrc.  Payload type 111 is on two m-lines: never a routing key (RFC 9143 section 9.2).
BUNDLE_STREAMS = (
    (0, "0", (111, 0, 8, 126), (0x11111111,), (0xAAAAAAAA,)),
    (1, "1", (96, 97, 111), (0x22222222, 0x22222223), (0xBBBBBBBB,)),
    (2, "video2", (98, 99), (), ()),
    (3, None, (100,), (), ()),
    (4, "\u00e9", (101,), (), ()),  # UTF-8 C3 A9: A9 also starts an RTCP packet (an SDES item must not read it)
)
# The MID extension ids the demux and stamp targets try: none, one-byte ids, two-byte-only ids.
MID_EXTENSION_IDS = (None, 1, 3, 9, 14, 15, 16, 200, 255)


def _records(data: bytes) -> Iterable[tuple[int, bytes]]:
    """An input as a list of ``(tag, datagram)``: tag byte, length byte, that many bytes (the last one cut)."""
    i = 0
    while i + 2 <= len(data):
        tag, length = data[i], data[i + 1]
        yield tag, data[i + 2:i + 2 + length]
        i += 2 + length


def build_bundle_demux() -> Callable[[bytes], None]:
    from mediad.core.transport import split_rtcp
    from mediad.proto.bundle_demux import BundleDemux, BundleStream, Drop, MidStamp

    streams = [BundleStream(key, mid, frozenset(pts), ssrcs, sending)
               for key, mid, pts, ssrcs, sending in BUNDLE_STREAMS]
    keys = {s.key for s in streams}
    pts = {s.key: s.payload_types for s in streams}
    announced = sum(len(s.ssrcs) for s in streams)
    MAX_LEARNT = 4  # small, so that inputs reach the bound

    def check_rtp(demux: BundleDemux, packet: bytes) -> None:
        before = sum(demux.drops)
        key = demux.route_rtp(packet)
        dropped = sum(demux.drops) - before
        if key is None:
            _require(dropped == 1, "an RTP packet dropped without being counted once")
        else:
            _require(dropped == 0 and key in keys, "an RTP packet routed to no stream of the bundle, or counted")
            _require(packet[1] & 0x7F in pts[key], "an RTP packet routed to a stream without its payload type")
            ssrc = int.from_bytes(packet[8:12], "big")
            _require(demux.incoming.get(ssrc) == key or ssrc not in demux.incoming
                     and len(demux.incoming) >= demux.limit, "a routed SSRC is not bound to its stream")

    def check_rtcp(demux: BundleDemux, packet: bytes, now: float) -> None:
        before = demux.drops[Drop.MALFORMED]
        alone = copy.deepcopy(demux)  # each packet of the compound routed on its own must teach the same
        routed = demux.route_rtcp(packet, now)
        for start, end, _ in routed:
            alone.route_rtcp(packet[start:end], now)
        if routed:
            _require(alone.incoming == demux.incoming and alone._byes == demux._byes,
                     "an RTCP packet of a compound read another packet's bytes (RFC 3550 6.5)")
        if not routed:
            _require(demux.drops[Drop.MALFORMED] == before + 1 or not packet, "malformed RTCP not counted")
        else:
            _require(routed[0][0] == 0 and routed[-1][1] == len(packet)
                     and all(a[1] == b[0] for a, b in zip(routed, routed[1:])), "RTCP packets do not tile the compound")
            for _, _, named in routed:
                _require(set(named) <= keys and len(set(named)) == len(named), "RTCP routed to unknown streams")
        parts = split_rtcp(demux, packet, now) if routed else []
        _require(len({k for k, _ in parts}) == len(parts), "a stream gets two parts of one compound")
        if len(parts) == 1:
            _require(parts[0][1] == packet, "a compound for one stream is not passed on whole")
        pieces = {packet[s:e] for s, e, _ in routed}
        for _, part in parts:
            _require(len(part) >= 8 and part in packet or all(p in pieces for p in _split(part)),
                     "a part is not made of the compound's packets")

    def one(data: bytes) -> None:
        if len(data) < 2:
            return
        ext = MID_EXTENSION_IDS[data[0] % len(MID_EXTENSION_IDS)]
        demux = BundleDemux(streams, ext, max_learnt=MAX_LEARNT)
        now = 0.0
        for tag, packet in _records(data[1:]):
            now += (tag >> 4) * 0.5
            action = tag & 0x0F
            if action < 6:  # RTP or RTCP as the transport tells them apart (RFC 5761 section 4)
                if len(packet) >= 2 and 191 < packet[1] < 224:
                    check_rtcp(demux, packet, now)
                else:
                    check_rtp(demux, packet)
            elif action < 9 and ext is not None and len(packet) >= 12:  # stamped with a stream's MID
                stream = streams[action - 6]
                stamped = MidStamp(ext, stream.mid).apply(packet)
                fresh = BundleDemux(streams, ext)
                key = fresh.route_rtp(stamped)
                if stamped != packet and packet[0] >> 6 == 2:
                    _require(key == stream.key or key is None and fresh.drops[Drop.PAYLOAD_TYPE] == 1,
                             "a packet stamped with a MID is routed elsewhere")
                check_rtp(demux, stamped)
            elif action == 9:
                demux.expire(now)
                when = demux.timeout()
                _require(when is None or when > now, "expire left an expired BYE")
            elif action == 10 and len(packet) >= 4:
                key = packet[0] % (len(streams) + 1)
                demux.sent(key, int.from_bytes(packet[:4], "big"))
            elif action == 11:
                demux.update(streams[:1 + (len(packet) % len(streams))], ext)  # a re-offer drops m-lines
                keys_now = {s.key for s in streams[:1 + (len(packet) % len(streams))]}
                _require(set(demux.incoming.values()) <= keys_now and set(demux.outgoing.values()) <= keys_now,
                         "a dropped m-line keeps SSRCs")
                demux.update(streams, ext)
            else:
                check_rtcp(demux, packet, now)
            _require(len(demux.incoming) <= announced + MAX_LEARNT, "the demultiplexer learnt SSRCs past its bound")
            _require(set(demux._byes) <= set(demux.incoming) and set(demux._mid_seq) <= set(demux.incoming),
                     "a BYE or MID update remembered for an SSRC the tables do not know")

    return one


def _split(compound: bytes) -> list[bytes]:
    """The RTCP packets of a compound by their length fields (RFC 3550 section 6.4)."""
    out, i = [], 0
    while i + 4 <= len(compound):
        end = i + 4 * (int.from_bytes(compound[i + 2:i + 4], "big") + 1)
        out.append(compound[i:end])
        i = end
    return out


# ---------------------------------------------------------------------------
# BUNDLE: the MID header extension written toward the WIC (RFC 9143 15.2, RFC 8285 4)
# ---------------------------------------------------------------------------

def _extension_elements(profile: int, value: bytes) -> list[tuple[int, bytes]] | None:
    """aiortc's reading of an extension block (RFC 8285 section 4); None for a profile it does not know."""
    from aiortc.rtp import unpack_header_extensions

    if profile == 0xBEDE:
        return unpack_header_extensions(0xBEDE, value)
    if profile & 0xFFF0 == 0x1000:
        return unpack_header_extensions(0x1000, value)
    return None


def _rtp_view(packet: bytes):
    """``(aiortc RtpPacket, profile, elements)`` of an RTP packet, or None when aiortc refuses it."""
    from aiortc.rtp import RtpPacket

    try:
        parsed = RtpPacket.parse(packet)
    except ValueError:
        return None
    if not packet[0] & 0x10:
        return parsed, None, []
    start = 12 + 4 * (packet[0] & 0x0F)
    profile, words = int.from_bytes(packet[start:start + 2], "big"), int.from_bytes(packet[start + 2:start + 4], "big")
    try:
        elements = _extension_elements(profile, packet[start + 4:start + 4 + 4 * words])
    except ValueError:
        return None
    return parsed, profile, elements


def build_mid_stamp() -> Callable[[bytes], None]:
    """Input: extension id byte, MID length byte, the MID, then one RTP packet.

    The packet is what a core port passes to the stamp: 12 bytes or more, version 2
    (``CoreChannel.datagram_received``); the rest of it is the fuzzer's.  The padding
    (RFC 3550 5.1) is not the stamp's business: a packet whose padding aiortc refuses is
    stamped exactly as the same packet without the P bit.
    """
    from mediad.proto.bundle_demux import BundleDemux, BundleStream, MidStamp

    def one(data: bytes) -> None:
        if len(data) < 2:
            return
        ext, mid = data[0] or 1, _text(data[2:2 + data[1] % 32]).encode("ascii", "replace").decode()
        packet = data[2 + data[1] % 32:]
        if len(packet) < 12:
            return
        packet = bytes([0x80 | packet[0] & 0x3F]) + packet[1:]
        stamp = MidStamp(ext, mid)
        out = stamp.apply(packet)
        before = _rtp_view(packet)
        if before is None and packet[0] & 0x20:
            unpadded = bytes([packet[0] & ~0x20]) + packet[1:]
            if _rtp_view(unpadded) is not None:
                again = stamp.apply(unpadded)
                _require(out[1:] == again[1:] and out[0] | 0x20 == again[0] | 0x20,
                         "the padding bit changes how a packet is stamped")
                return
        if out == packet:  # refused: malformed, the id there already, or a block the element cannot join
            if before is None:
                return
            _, profile, elements = before
            _require(elements is None or any(i == ext for i, _ in elements)
                     or profile == 0xBEDE and (not stamp.one_byte or any(i == 15 for i, _ in elements)),
                     "a well-formed RTP packet left without its MID")
            return
        _require(before is not None, "a malformed packet was stamped")
        after = _rtp_view(out)
        _require(after is not None, "a stamped packet does not parse as RTP")
        (p, profile, elements), (q, profile_out, elements_out) = before, after
        for name in ("version", "marker", "payload_type", "sequence_number", "timestamp", "ssrc", "csrc",
                     "payload", "padding_size"):
            _require(getattr(p, name) == getattr(q, name), f"stamping changed the packet's {name}")
        _require(profile is None or profile_out == profile, "stamping changed the extension profile")
        _require(elements_out == [*elements, (ext, mid.encode())], "the elements are not the packet's and the MID")
        demux = BundleDemux([BundleStream(7, mid, frozenset({p.payload_type}))], ext)
        if mid:
            _require(demux.route_rtp(out) == 7, "the demultiplexer does not read the MID stamped")

    return one


# ---------------------------------------------------------------------------
# The access termination, sans-IO (mediad.core.termination), in each state
# ---------------------------------------------------------------------------

TERMINATION_PEER = ("192.0.2.1", 40000)
TERMINATION_OTHER = ("198.51.100.7", 40001)
TERMINATION_SDP = ("192.0.2.1", 40000)
TERMINATION_KEYS = (bytes(range(16)), bytes(range(14)), bytes(range(16, 32)), bytes(range(14, 28)))


class _TerminationShell:
    """The termination's interface, kept: sends, timers, reports."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.timers: dict = {}
        self.reports: list = []

    def send(self, data, addr) -> None:
        self.sent.append((data, addr))

    def set_timer(self, timer, when) -> None:
        if when is None:
            self.timers.pop(timer, None)
        else:
            self.timers[timer] = when

    def report(self, name, reason) -> None:
        self.reports.append((name, reason))

    def route_changed(self) -> None:
        pass

    def changed(self) -> None:
        pass

    def new_srtp(self, keys):
        from mediad.proto.srtp import SrtpTransformer

        return SrtpTransformer(keys)

    def handle_event(self, event) -> None:
        pass


def build_termination() -> Callable[[bytes], None]:
    """Input: a setup byte (ICE or not, the starting state, the stored role, the component), then
    records (:func:`_records`): datagrams from the peer or a stranger (raw, or SRTP/SRTCP the
    peer protected, or a STUN check with the right credentials), timer expiries, packets toward
    the peer, resets and closes.  Contract: no input raises (a TerminationError is a table
    the packets could break), and after each step the lifecycle table's invariants hold."""
    import types

    from aioice import stun as aioice_stun
    from prometheus_client import CollectorRegistry

    from iq import Fingerprint, Role, Side, TerminationSpec
    from mediad.core.termination import TRANSITIONS, AccessTermination, State, Timer
    from mediad.metrics import Metrics
    from mediad.proto import demux
    from mediad.proto.certs import Certificate
    from mediad.proto.srtp import AES_CM_128_HMAC_SHA1_80, SrtpError, SrtpKeys, SrtpTransformer

    certificate = Certificate.generate()
    metrics = Metrics(CollectorRegistry())
    lk, ls, rk, rs = TERMINATION_KEYS
    keys = SrtpKeys(AES_CM_128_HMAC_SHA1_80, lk, ls, rk, rs)
    peer_keys = SrtpKeys(AES_CM_128_HMAC_SHA1_80, rk, rs, lk, ls)
    reachable = {}
    for (state, _), new in TRANSITIONS.items():
        reachable.setdefault(state, set()).add(new)
    timers = list(Timer)
    max_ssrcs = 4

    class Recorded(AccessTermination):
        def _transition(self, event) -> None:
            old = self.state
            super()._transition(event)
            _require(self.state in reachable[old], "a transition outside the table")

    def check(term, shell, ice_lite: bool, checked: set) -> None:
        _require(isinstance(term.state, State), "the state is no State")
        if term.srtp is not None:
            _require(term.state in (State.ESTABLISHED, State.CLOSED) and term.keys is not None,
                     "SRTP contexts outside an established association")
        if term.state is State.FAILED:
            _require(term.srtp is None and term.failure is not None, "a failed association still relays")
            _require(Timer.DTLS not in shell.timers and Timer.ICE not in shell.timers, "a failed one keeps timers")
        _require(len(term.ssrcs) <= max_ssrcs and len(term.heard) <= max_ssrcs, "more SSRCs than the cap")
        for datagram, addr in shell.sent:
            if ice_lite and demux.classify(datagram) is not demux.STUN:
                _require(addr in checked, "sent toward an address no check came from (RFC 8445, RFC 7675)")
        shell.sent.clear()

    def one(data: bytes) -> None:
        if not data:
            return
        setup = data[0]
        ice_lite, start, stored_role, rtcp = bool(setup & 1), (setup >> 1) & 3, setup & 8, setup & 16
        spec = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", remote_address=TERMINATION_SDP[0],
                               remote_port=TERMINATION_SDP[1], rtcp_mux=True,
                               remote_fingerprints=[Fingerprint("sha-256", ":".join(["AB"] * 32))],
                               ice_lite=ice_lite, remote_ice_ufrag="peer", remote_ice_pwd="p" * 22)
        leg = types.SimpleNamespace(spec=spec, ice_ufrag="mine", ice_pwd="m" * 22, over_tcp=False, dtls_srtp=True)
        shell = _TerminationShell()
        term = Recorded(shell, leg, "rtcp" if rtcp else "rtp", certificate=certificate, metrics=metrics,
                        consent_timeout=30.0, handshake_timeout=10.0, max_ssrcs=max_ssrcs)
        now = 100.0
        checked = {TERMINATION_SDP}  # where an ICE-lite termination may send (the SDP address until a check)
        peer = SrtpTransformer(peer_keys)
        if start == 1:
            term.role = Role.CLIENT if stored_role else Role.SERVER
            term.restore(keys, TERMINATION_PEER, None)
        elif start == 2:
            term.restore_failure("timeout")
        elif start == 3:
            term.role = Role.CLIENT
            term.start_client(now)
        check(term, shell, ice_lite, checked)
        closed = False
        for tag, payload in _records(data[1:]):
            action, stranger = (tag & 0x7F) % 12, tag & 0x80
            addr = TERMINATION_OTHER if stranger else TERMINATION_PEER
            if action == 0:  # a datagram as the access port classifies it (RFC 7983)
                if closed:
                    continue
                relaying = term.state is State.ESTABLISHED and term.srtp is not None
                kind = demux.classify(payload)
                if len(payload) >= 12 and 127 < payload[0] < 192:
                    kind = demux.RTCP if 191 < payload[1] < 224 else demux.RTP
                if kind is demux.RTP or kind is demux.RTCP:
                    term.unprotect(payload, addr, kind is demux.RTP)
                elif kind is demux.STUN:
                    term.receive_stun(payload, addr, now)
                elif kind is demux.DTLS:
                    term.receive_dtls(payload, addr, now)
                # The target's associations are restored, never handshaken here: nothing the fuzzer sends is
                # authenticated DTLS, so nothing it sends may end one (a forged ClientHello or alert).
                _require(not relaying or term.srtp is not None, "an unauthenticated datagram ended the SRTP")
            elif action in (1, 2) and not closed and len(payload) >= 12:  # SRTP / SRTCP the peer protected
                plain = bytes([0x80 | payload[0] & 0x3F]) + payload[1:]
                if action == 2:
                    plain = bytes([plain[0], 200 + plain[1] % 8]) + plain[2:]
                    plain = plain[:len(plain) // 4 * 4]
                    plain = plain[:2] + (len(plain) // 4 - 1).to_bytes(2, "big") + plain[4:]
                try:
                    wire = peer.protect_rtp(plain) if action == 1 else peer.protect_rtcp(plain)
                except SrtpError:
                    continue
                got = term.unprotect(wire, addr, action == 1)
                _require(got is None or got == plain, "unprotect gave another packet")
            elif action == 3 and not closed:  # a check with the right credentials (RFC 8445 7.2.2)
                message = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST,
                                              transaction_id=(payload + bytes(12))[:12])
                message.attributes["USERNAME"] = "mine:peer"
                message.attributes["PRIORITY"] = 1853824767
                message.attributes["ICE-CONTROLLING"] = 1
                if payload[:1] != b"\x00":
                    message.attributes["USE-CANDIDATE"] = None
                message.add_message_integrity(b"m" * 22)
                message.add_fingerprint()
                term.receive_stun(bytes(message), addr, now)
                checked.add(addr)
            elif action == 4:  # time passes, a timer fires
                now += int.from_bytes(payload[:2] or b"\x01", "big") / 100
                timer = timers[payload[2] % len(timers)] if len(payload) > 2 else Timer.DTLS
                if not closed and (timer in shell.timers or payload[3:4] == b"\x01"):  # or a stale expiry
                    shell.timers.pop(timer, None)  # a timer that fired is no longer armed
                    term.timer_expired(timer, now)
            elif action in (5, 6) and not closed:  # plain RTP / RTCP from the core toward the peer
                is_rtp = action == 5
                if is_rtp and len(payload) >= 12 or not is_rtp and demux.rtcp_is_valid(payload):
                    out = term.protect(payload, is_rtp, now)
                    if out is not None:
                        _require(term.dest is not None, "protected with nowhere to send")
                        if ice_lite:
                            _require(term.dest in checked, "SRTP toward an address no check came from")
            elif action == 7 and not closed:
                term.send_application_data(payload, now)
            elif action == 8 and not closed and term.may_start():
                term.start_client(now)
            elif action == 9 and not closed:
                term.reset()
            elif action == 10 and not closed:
                term.close()
                closed = True
            elif action == 11 and not closed:
                term.set_remote_fingerprints([certificate.fingerprint("sha-256")], now)
            check(term, shell, ice_lite, checked)

    return one


# ---------------------------------------------------------------------------
# The takeover's reading of Redis: dialog documents, the moved hash, srtp_rocs
# ---------------------------------------------------------------------------

def build_takeover() -> Callable[[bytes], None]:
    """Input: a mode byte, then the text of what Redis holds.

    Mode 0: a dialog document (JSON, as ``StateStore.load_all`` reads it): ``plan`` and
    ``unmovable`` never raise (a survivor reads every dead node's document: one it cannot read
    is ended, not a failed takeover), and the restore of a dialog it takes raises only what
    ``Daemon.adopt`` refuses a document with.  Mode 1: an entry of the ``moved`` hash.
    Mode 2: a channel's ``srtp_rocs``.
    """
    import types

    from iq import Role, StreamSpec, TerminationSpec, TransportSpec
    from mediad import takeover
    from mediad.core.session import stored_keys, stored_rocs
    from mediad.proto.srtp import SrtpTransformer
    from mediad.state import decode_document
    from sdp_rules.errors import E2aeError

    adopt_refuses = (E2aeError, KeyError, TypeError, ValueError, OverflowError)  # what Daemon.adopt catches
    config = types.SimpleNamespace(mediad_access_address="127.0.0.1", mediad_core_address="127.0.0.2",
                                   mediad_access_advertise=None, mediad_core_advertise=None)

    def channel(cdoc) -> None:
        if not isinstance(cdoc, dict):
            raise TypeError("channel")
        int(cdoc["port"])
        Role(cdoc["role"]) if cdoc.get("role") else None
        tuple(cdoc["peer"]) if cdoc.get("peer") else None
        keys = stored_keys(cdoc)
        if keys is not None:
            SrtpTransformer(keys).restore_rocs(stored_rocs(cdoc))

    def restore(document) -> None:
        """The parsing steps of ``Daemon._restore_dialog`` on a document, without ports."""
        str(document["dialog"])
        int(document.get("version", 0))
        dict(document.get("replies") or {})
        list(document.get("events") or [])
        for tdoc in document.get("transports") or []:
            TransportSpec.from_dict(tdoc["spec"])
            (tdoc["ice_ufrag"], tdoc["ice_pwd"])
            channel({**tdoc, "role": tdoc.get("role")})
            for ssrc, key in (tdoc.get("learnt") or {}).items():
                int(ssrc), int(key)
        for sdoc in document["streams"]:
            StreamSpec(int(sdoc["stream_id"]), str(sdoc["kind"]), local_tls_id=sdoc.get("local_tls_id"),
                       remote_tls_id=sdoc.get("remote_tls_id"), transport_id=sdoc.get("transport_id"),
                       mid=sdoc.get("mid"))
            if sdoc.get("access"):
                TerminationSpec.from_dict(sdoc["access"]["spec"])
                for cdoc in (sdoc["access"].get("channels") or {}).values():
                    channel(cdoc)
            if sdoc.get("core"):
                TerminationSpec.from_dict(sdoc["core"]["spec"])
                for port in sdoc["core"]["ports"].values():
                    int(port)

    def one(data: bytes) -> None:
        if not data:
            return
        mode, raw = data[0] % 3, data[1:]
        if mode == 1:
            moves = takeover.parse_moves({b"dead": raw})
            history = moves.get("dead", [])
            takeover.resolve("dead@127.0.0.1:1", 0.0, moves)
            _require(len(takeover.add_move(history, 1.0, "me@127.0.0.1:2")) <= takeover.MOVES_KEPT,
                     "the moves of a node grow past MOVES_KEPT")
            return
        document = decode_document(raw)
        if document is None:
            return
        _require(isinstance(document, dict), "a document that is not a JSON object was read")
        if mode == 2:
            try:
                SrtpTransformer(_fuzz_keys()).restore_rocs(document.get("srtp_rocs"))
            except ValueError:
                pass
            return
        take, end = takeover.plan([document], None)  # documented: never raises
        _require(len(take) + len(end) == 1, "plan lost or doubled a document")
        if take:
            takeover.Home.from_dict(document["home"])  # what plan takes has a home it can read
            try:
                takeover.Home.of(document, config)
                restore(document)
            except adopt_refuses:
                pass

    return one


def _fuzz_keys():
    from mediad.proto.srtp import AES_CM_128_HMAC_SHA1_80, SrtpKeys

    return SrtpKeys(AES_CM_128_HMAC_SHA1_80, *TERMINATION_KEYS)


# ---------------------------------------------------------------------------

def _seeds(name: str) -> Callable[[], Iterable[bytes]]:
    def seeds() -> Iterable[bytes]:
        from fuzz import seeds as module

        return getattr(module, name)()

    return seeds


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("sdp_model", "SDP model: parse, str round trip (lossless)", ("sdp_rules.sdp",),
           build_sdp_model, _seeds("sdp_model")),
    Target("sdp_rules", "SDP rules: offer and answer from both sides, simulated AGW",
           ("sdp_rules",), build_sdp_rules, _seeds("sdp_rules")),
    Target("multipart", "multipart body scanner (RFC 2046 5.1.1)", ("plugin.body",),
           build_multipart, _seeds("multipart"), max_len=8192),
    Target("stun", "ICE-lite STUN responder (RFC 5389, RFC 8445)", ("mediad.proto.stun", "aioice.stun"),
           build_stun, _seeds("stun")),
    Target("dtls_record", "DTLS record splitting and AEAD records (RFC 6347 4.1)",
           ("mediad.proto.dtls", "mediad.proto.dtls_record"), build_dtls_record, _seeds("dtls_record")),
    Target("demux", "RTP/RTCP/STUN/DTLS demultiplexing, RTCP validity (RFC 7983, 5761, 3550 A.2)",
           ("mediad.proto.demux",), build_demux, _seeds("demux")),
    Target("srtp", "SRTP/SRTCP checks (RFC 3711)", ("mediad.proto.srtp",), build_srtp, _seeds("srtp")),
    Target("framing", "RFC 4571 framing", ("mediad.proto.framing",), build_framing, _seeds("framing")),
    Target("sctp", "SCTP packets and DCEP on an established association (RFC 4960, 8832)",
           ("mediad.core.sctp", "aiortc.rtcsctptransport", "aiortc.rtcdatachannel"), build_sctp, _seeds("sctp")),
    Target("msrp", "MSRP message boundaries (RFC 4975 7.1)", ("mediad.proto.msrp",), build_msrp, _seeds("msrp")),
    Target("t140", "T.140 in RTP and RED (RFC 4103, RFC 2198)", ("mediad.proto.t140",), build_t140, _seeds("t140")),
    Target("control", "control channel: frames, handshake, sequence, Iq payload",
           ("mediad.proto.iqcodec", "mediad.proto.controlwire", "iq"),
           build_control, _seeds("control"), max_len=16384),
    Target("bundle_demux", "BUNDLE demultiplexing of RTP and RTCP by MID, SSRC, payload type (RFC 9143 9.2)",
           ("mediad.proto.bundle_demux", "mediad.core.transport"), build_bundle_demux, _seeds("bundle_demux"),
           max_len=4096),
    Target("mid_stamp", "the MID header extension added toward the WIC (RFC 9143 15.2, RFC 8285 4)",
           ("mediad.proto.bundle_demux",), build_mid_stamp, _seeds("mid_stamp"), max_len=2048),
    Target("termination", "the access termination fed datagrams and timers in each state (RFC 8445, 7675, 5764)",
           ("mediad.core.termination", "mediad.proto.stun"), build_termination, _seeds("termination"),
           max_len=4096),
    Target("takeover", "the takeover's reading of dialog documents, moved entries and srtp_rocs",
           ("mediad.takeover", "mediad.state", "mediad.proto.srtp", "iq"), build_takeover, _seeds("takeover"),
           max_len=16384),
)}
