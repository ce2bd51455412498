"""The fuzz targets: every parser that takes bytes from outside, with its contract.

Each :class:`Target` turns one input (bytes) into a call of the parser and
checks what the parser promises:

* it raises nothing but the errors it documents (``ValueError`` subclasses and
  the project's :class:`~sdp_rules.errors.E2aeError` tree, per parser below);
  anything else propagates and is a finding;
* its invariants hold where it has some (round trips, prefix properties);
  a broken one raises :class:`InvariantBroken`, a finding too.

A per-input time limit (hangs) is the fuzzer's business (``python -m fuzz``
passes it to libFuzzer).  The functions here run the same way under atheris,
in the test suite's replay of seeds and saved crashes, and by hand.

Imports of the parsers happen in :meth:`Target.build`, after the worker has
asked atheris to instrument them (coverage guidance).
"""

from __future__ import annotations

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
    build: Callable[[], Callable[[bytes], None]]
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


def build_sdp_model() -> Callable[[bytes], None]:
    from sdp_rules.errors import SdpParseError
    from sdp_rules.sdp import parse

    def one(data: bytes) -> None:
        text = _text(data)
        try:
            description = parse(text)
        except SdpParseError:
            return
        out = str(description)
        _require(out == _crlf_lines(text), "str(parse(x)) differs from x with CRLF line ends")
        _require(str(parse(out)) == out, "parse(str(parse(x))) does not round-trip")
        _require(str(description.copy()) == out, "copy() differs from the original")
        for section in description.media:
            section.connection  # each c= parses (checked when read)
            section.bandwidths()

    return one


# ---------------------------------------------------------------------------
# SDP: the rules, both sides, offer and answer, against the simulated AGW
# ---------------------------------------------------------------------------

def build_sdp_rules() -> Callable[[bytes], None]:
    from sdp_rules import ActpassPolicy, DialogState, Kind, Policy, Side, process
    from sdp_rules.errors import PeerError
    from iq import IqRequest
    from sdp_rules.sdp import parse
    from sdp_rules.simulated_agw import SimulatedAgw

    counter = iter(range(1 << 62))

    def tls_id() -> str:
        return f"fuzzTlsId{next(counter):016d}"

    def one(data: bytes) -> None:
        if not data:
            return
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
            except PeerError:
                return
            reply = None
            if plan.iq is not None:
                wire = json.loads(json.dumps(plan.iq.to_dict()))
                _require(IqRequest.from_dict(wire) == plan.iq, "the Iq request does not round-trip")
                reply = agw.answer(plan.iq)
            try:
                result = plan.finish(reply)
            except PeerError:
                return
            parse(result.sdp)  # what the rules forward is well-formed SDP
            _require(DialogState.from_json(result.state.to_json()) == result.state,
                     "the dialog state does not round-trip through JSON")
            state = result.state

    return one


# ---------------------------------------------------------------------------
# The multipart scanner
# ---------------------------------------------------------------------------

def build_multipart() -> Callable[[bytes], None]:
    from plugin.body import MultipartError, find_sdp

    def one(data: bytes) -> None:
        head, _, body = _text(data).partition("\n")
        try:
            part = find_sdp(head, body)
        except MultipartError:
            return
        if part is not None:
            _require(part.before + part.sdp + part.after == body, "the parts do not add up to the body")
        if part is not None and part.sdp.strip():  # an empty SDP is refused (488), never rebuilt
            rebuilt = part.rebuild("v=0\r\n")
            again = find_sdp(head, rebuilt)
            _require(again is not None and again.sdp == "v=0\r\n" and again.after == part.after,
                     "a rebuilt body does not give its SDP back")

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
)}
