"""The control channel's wire protocol (sans-IO): frames, handshake, session keys, sequence numbers.

The Iq interface runs over one TCP connection per client (a Kamailio worker
keeps one).  This module turns bytes into events and messages into bytes; it
never touches a socket (h11's shape): :class:`ServerConnection` for mediad,
:class:`ClientConnection` for the plugin.  ``docs/mediad.md`` says why this
design (and not UDP datagrams, or TLS).

Framing::

    frame = length:u32 (big-endian, 1..limit) | body
    body  = type:u8 | fields of the type

    HELLO      0x01  client -> server  version:u8 | client_nonce[16]
    CHALLENGE  0x02  server -> client  version:u8 | server_nonce[16] | server_proof[32]
    AUTH       0x03  client -> server  client_proof[32]
    DATA       0x04  both ways         seq:u64 | AES-256-GCM ciphertext | tag[16]
    ERROR      0x05  server -> client  code:u16 | reason (UTF-8, at most 200 bytes)

Before authentication a frame is at most ``MAX_HANDSHAKE_FRAME`` bytes;
after it, ``MAX_FRAME`` (1 MiB of payload, about 600 media streams of one
dialog, or an SDP attribute of several hundred kB).

Handshake and keys: both nonces are fresh random bytes; HKDF-SHA256 (RFC
5869) of the shared secret, salted with a fixed label and bound to both
nonces, gives 128 bytes: the server's proof, the client's proof, the
client-to-server key and the server-to-client key.  The server proves it
knows the secret in CHALLENGE, the client in AUTH (sent together with its
first request); a wrong proof ends the connection (the server answers ERROR
401 first).  Each DATA frame is sealed with AES-256-GCM (NIST SP 800-38D)
under its direction's key, the nonce being its sequence number, the frame's
type and sequence number authenticated as associated data.  A receiver
accepts only the next sequence number (TCP keeps order): a frame recorded on
this connection and sent again fails the sequence check (``replay``); on any
other connection, or after a restart, it fails authentication (other nonces,
other keys: ``bad_mac``), and a recorded handshake fails the proof check.
Any such failure closes the connection.

State machines (h2's shape: whatever is not in the table closes the
connection with ``unexpected``)::

    server  (AWAIT_HELLO, HELLO) -> send CHALLENGE, AWAIT_AUTH
            (AWAIT_AUTH,  AUTH)  -> check proof: OPEN | send ERROR 401, CLOSED
            (OPEN,        DATA)  -> Message
    client  (AWAIT_CHALLENGE, CHALLENGE) -> check proof: OPEN (AUTH goes with the first DATA) | Refused 401
            (AWAIT_CHALLENGE, ERROR)     -> Refused
            (OPEN,            DATA)      -> Message
            (OPEN,            ERROR)     -> Refused

:func:`encode` and :func:`decode` are the pure frame codec (the fuzzing
harness drives them); the payload of DATA frames (JSON) is ``mediad.io.control``'s.
"""

from __future__ import annotations

import hmac
import os
import struct
from dataclasses import dataclass
from enum import Enum, IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sdp_rules.errors import E2aeError, UsageError

VERSION = 2
NONCE_SIZE = 16
PROOF_SIZE = 32
KEY_SIZE = 32
TAG_SIZE = 16
SEQ_SIZE = 8
MAX_PAYLOAD = 1 << 20  # 1 MiB of JSON per message
MAX_FRAME = 1 + SEQ_SIZE + MAX_PAYLOAD + TAG_SIZE
MAX_HANDSHAKE_FRAME = 64  # HELLO, CHALLENGE, AUTH, ERROR all fit
MAX_REASON = 200
HKDF_SALT = b"e2ae control channel v2"

_LENGTH = struct.Struct("!I")
_SEQ = struct.Struct("!Q")
_CODE = struct.Struct("!H")
_NONCE_PAD = b"\x00\x00\x00\x00"  # + seq: the 96-bit GCM nonce


class FrameType(IntEnum):
    HELLO = 1
    CHALLENGE = 2
    AUTH = 3
    DATA = 4
    ERROR = 5


class State(Enum):
    AWAIT_HELLO = "await_hello"
    AWAIT_CHALLENGE = "await_challenge"
    AWAIT_AUTH = "await_auth"
    OPEN = "open"
    CLOSED = "closed"


class Reason(str, Enum):
    """Why a connection was closed by the protocol (a bounded set: metric labels)."""

    MALFORMED = "malformed"  # a frame that does not parse (length, type, fields)
    TOO_LARGE = "too_large"  # a length over the state's limit
    VERSION = "version"  # a HELLO of another protocol version
    UNEXPECTED = "unexpected"  # a frame type the state does not take
    BAD_PROOF = "bad_proof"  # the other end does not know the secret (or replays a handshake)
    BAD_MAC = "bad_mac"  # a DATA frame that does not authenticate (forged, or from another connection)
    REPLAY = "replay"  # an authentic DATA frame out of sequence (recorded on this connection)
    REFUSED = "refused"  # the server answered ERROR


class WireError(E2aeError, ValueError):
    """Bytes that are not a frame of this protocol; ``reason`` is a :class:`Reason`."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Frame:
    kind: FrameType
    body: bytes  # the fields after the type byte


# -- the pure codec ---------------------------------------------------------------------

def encode(frame: Frame) -> bytes:
    """One frame on the wire: length, type, fields."""
    return _LENGTH.pack(1 + len(frame.body)) + bytes((frame.kind,)) + frame.body


def decode(buffer: bytes | bytearray | memoryview, limit: int = MAX_FRAME) -> tuple[list[Frame], int]:
    """The complete frames at the start of ``buffer`` and how many bytes they take.

    A partial frame at the end is left (not counted).  Raises :class:`WireError`
    for a length of 0 or over ``limit``, or an unknown type.
    """
    frames: list[Frame] = []
    view = memoryview(buffer)
    offset = 0
    while True:
        frame, end = decode_one(view, offset, limit)
        if frame is None:
            return frames, offset
        frames.append(frame)
        offset = end


def decode_one(view: memoryview, offset: int, limit: int) -> tuple[Frame | None, int]:
    """The frame starting at ``offset`` and where it ends; (None, offset) if it is not all there."""
    size = len(view)
    if size - offset < 4:
        return None, offset
    (length,) = _LENGTH.unpack_from(view, offset)
    if length == 0:
        raise WireError(Reason.MALFORMED, "empty frame")
    if length > limit:
        raise WireError(Reason.TOO_LARGE, f"frame of {length} bytes over the limit of {limit}")
    end = offset + 4 + length
    if end > size:
        return None, offset
    try:
        kind = FrameType(view[offset + 4])
    except ValueError:
        raise WireError(Reason.MALFORMED, f"unknown frame type {view[offset + 4]}") from None
    return Frame(kind, bytes(view[offset + 5:end])), end


def hello_body(nonce: bytes) -> bytes:
    return bytes((VERSION,)) + nonce


def parse_hello(body: bytes) -> bytes:
    """The client nonce of a HELLO body."""
    if len(body) != 1 + NONCE_SIZE:
        raise WireError(Reason.MALFORMED, f"HELLO of {len(body)} bytes")
    if body[0] != VERSION:
        raise WireError(Reason.VERSION, f"HELLO of version {body[0]}, this is version {VERSION}")
    return body[1:]


def challenge_body(nonce: bytes, proof: bytes) -> bytes:
    return bytes((VERSION,)) + nonce + proof


def parse_challenge(body: bytes) -> tuple[bytes, bytes]:
    """(server nonce, server proof) of a CHALLENGE body."""
    if len(body) != 1 + NONCE_SIZE + PROOF_SIZE:
        raise WireError(Reason.MALFORMED, f"CHALLENGE of {len(body)} bytes")
    if body[0] != VERSION:
        raise WireError(Reason.VERSION, f"CHALLENGE of version {body[0]}, this is version {VERSION}")
    return body[1:1 + NONCE_SIZE], body[1 + NONCE_SIZE:]


def parse_auth(body: bytes) -> bytes:
    if len(body) != PROOF_SIZE:
        raise WireError(Reason.MALFORMED, f"AUTH of {len(body)} bytes")
    return body


def error_body(code: int, reason: str) -> bytes:
    return _CODE.pack(code) + reason.encode()[:MAX_REASON]


def parse_error(body: bytes) -> tuple[int, str]:
    if len(body) < 2 or len(body) > 2 + MAX_REASON:
        raise WireError(Reason.MALFORMED, f"ERROR of {len(body)} bytes")
    return _CODE.unpack_from(body)[0], body[2:].decode("utf-8", "replace")


# -- keys ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Keys:
    """What one connection's handshake derives from the secret and both nonces."""

    server_proof: bytes
    client_proof: bytes
    client_to_server: bytes
    server_to_client: bytes


def derive(secret: bytes, client_nonce: bytes, server_nonce: bytes) -> Keys:
    """HKDF-SHA256 (RFC 5869): salt a fixed label, info both nonces, 128 bytes out."""
    okm = HKDF(algorithm=hashes.SHA256(), length=2 * PROOF_SIZE + 2 * KEY_SIZE, salt=HKDF_SALT,
               info=client_nonce + server_nonce).derive(secret)
    p, k = PROOF_SIZE, KEY_SIZE
    return Keys(okm[:p], okm[p:2 * p], okm[2 * p:2 * p + k], okm[2 * p + k:])


_DATA = FrameType.DATA.value
_DATA_BYTE = bytes((_DATA,))
_DATA_MIN = 1 + SEQ_SIZE + TAG_SIZE


class _Sealer:
    """One direction's AEAD and sequence number."""

    __slots__ = ("aead", "seq")

    def __init__(self, key: bytes) -> None:
        self.aead = AESGCM(key)
        self.seq = 0

    def seal(self, payload: bytes) -> bytes:
        """The whole DATA frame (length included) of the next sequence number."""
        self.seq += 1
        seq = _SEQ.pack(self.seq)
        header = _DATA_BYTE + seq
        sealed = self.aead.encrypt(_NONCE_PAD + seq, payload, header)
        return _LENGTH.pack(len(header) + len(sealed)) + header + sealed

    def open(self, data: bytes, start: int, end: int) -> bytes:
        """The payload of the DATA frame ``data[start:end]`` (from its type byte); BAD_MAC or REPLAY."""
        if end - start < _DATA_MIN:
            raise WireError(Reason.MALFORMED, f"DATA of {end - start} bytes")
        header = data[start:start + 1 + SEQ_SIZE]  # type and seq: the associated data
        try:
            payload = self.aead.decrypt(_NONCE_PAD + header[1:], memoryview(data)[start + 1 + SEQ_SIZE:end], header)
        except InvalidTag:
            raise WireError(Reason.BAD_MAC, "a DATA frame that does not authenticate") from None
        number = _SEQ.unpack_from(header, 1)[0]
        if number != self.seq + 1:
            raise WireError(Reason.REPLAY, f"DATA frame {number} where {self.seq + 1} was due")
        self.seq = number
        return payload


# -- events ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Authenticated:
    """The other end proved it knows the secret."""


@dataclass(slots=True)
class Message:
    payload: bytes


@dataclass(frozen=True)
class Refused:
    """Client side: the server refused us (ERROR frame), or could not prove the secret (401)."""

    code: int
    reason: str


@dataclass(frozen=True)
class ProtocolError:
    """The other end broke the protocol; the connection is closed (after data_to_send)."""

    reason: Reason
    message: str


Event = Authenticated | Message | Refused | ProtocolError


class _Connection:
    """What both ends share: the receive buffer, the output, the frame loop."""

    def __init__(self, secret: bytes, state: State) -> None:
        if not secret:
            raise ValueError("the control secret is empty")
        self.secret = secret
        self.state = state
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._rx: _Sealer | None = None
        self._tx: _Sealer | None = None

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def buffered(self) -> int:
        """Bytes of a frame received only in part."""
        return len(self._buffer)

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the socket; the events they complete."""
        if self.state is State.CLOSED:
            return []
        if self._buffer:
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        offset, size = 0, len(data)
        events: list[Event] = []
        try:
            while size - offset >= 4:
                state = self.state
                if state is State.OPEN:  # the common case, inline: a DATA frame
                    (length,) = _LENGTH.unpack_from(data, offset)
                    end = offset + 4 + length
                    if 0 < length <= MAX_FRAME and (size - offset == 4 or data[offset + 4] == _DATA):
                        if end > size:  # the frame is not all there (perhaps only its length)
                            break
                        rx = self._rx
                        if rx is None:  # OPEN is entered with the keys: a defect of this machine
                            raise UsageError("control connection open without its receiving keys")
                        events.append(Message(rx.open(data, offset + 4, end)))
                        offset = end
                        continue
                elif state is State.CLOSED:
                    break
                # one frame at a time: the limit follows the state
                limit = MAX_FRAME if state is State.OPEN else MAX_HANDSHAKE_FRAME
                frame, end = decode_one(memoryview(data), offset, limit)
                if frame is None:
                    break
                offset = end
                event = self._handle(frame)
                if event is not None:
                    events.append(event)
        except WireError as exc:
            events.append(self._fail(exc.reason, str(exc)))
        if self.state is not State.CLOSED and offset < size:
            self._buffer += memoryview(data)[offset:]
        return events

    def _handle(self, frame: Frame) -> Event | None:
        raise NotImplementedError

    def _fail(self, reason: Reason, message: str) -> ProtocolError:
        self.state = State.CLOSED
        self._buffer.clear()
        return ProtocolError(reason, message)


class ServerConnection(_Connection):
    """mediad's end of one control connection."""

    def __init__(self, secret: bytes, nonce: bytes | None = None) -> None:
        super().__init__(secret, State.AWAIT_HELLO)
        self.nonce = nonce or os.urandom(NONCE_SIZE)
        self._keys: Keys | None = None

    def _handle(self, frame: Frame) -> Event | None:
        state, kind = self.state, frame.kind
        if state is State.AWAIT_HELLO and kind is FrameType.HELLO:
            self._keys = derive(self.secret, parse_hello(frame.body), self.nonce)
            self._out.append(encode(Frame(FrameType.CHALLENGE, challenge_body(self.nonce, self._keys.server_proof))))
            self.state = State.AWAIT_AUTH
            return None
        if state is State.AWAIT_AUTH and kind is FrameType.AUTH:
            keys = self._keys
            if keys is None:  # AWAIT_AUTH is entered with the keys: a defect of this machine
                raise UsageError("control connection awaiting AUTH without its keys")
            if not hmac.compare_digest(parse_auth(frame.body), keys.client_proof):
                raise WireError(Reason.BAD_PROOF, "the client does not prove the control secret")
            self._rx = _Sealer(keys.client_to_server)
            self._tx = _Sealer(keys.server_to_client)
            self._keys = None
            self.state = State.OPEN
            return Authenticated()
        raise WireError(Reason.UNEXPECTED, f"{kind.name} frame in state {state.value}")

    def _fail(self, reason: Reason, message: str) -> ProtocolError:
        """Tell the client why (ERROR 401 for a bad proof, else 400), then close."""
        self.refuse(401 if reason is Reason.BAD_PROOF else 400, message)
        return super()._fail(reason, message)

    def send(self, payload: bytes) -> bytes:
        """A DATA frame carrying ``payload`` (the caller writes it)."""
        if self._tx is None or self.state is not State.OPEN:
            raise ValueError(f"cannot send in state {self.state.value}")
        return self._tx.seal(payload)

    def refuse(self, code: int, reason: str) -> None:
        """Queue an ERROR frame (in plain text: it only informs) and close."""
        if self.state is not State.CLOSED:
            self._out.append(encode(Frame(FrameType.ERROR, error_body(code, reason))))
            self.state = State.CLOSED
            self._buffer.clear()


class ClientConnection(_Connection):
    """The plugin's end of one control connection.

    ``hello()`` first; once :class:`Authenticated` came, ``send`` (the first DATA
    carries the AUTH frame in front of it).
    """

    def __init__(self, secret: bytes, nonce: bytes | None = None) -> None:
        super().__init__(secret, State.AWAIT_CHALLENGE)
        self.nonce = nonce or os.urandom(NONCE_SIZE)
        self._auth: bytes | None = None

    def hello(self) -> bytes:
        return encode(Frame(FrameType.HELLO, hello_body(self.nonce)))

    def _handle(self, frame: Frame) -> Event | None:
        state, kind = self.state, frame.kind
        if kind is FrameType.ERROR and state in (State.AWAIT_CHALLENGE, State.OPEN):
            code, reason = parse_error(frame.body)
            self.state = State.CLOSED
            return Refused(code, reason)
        if state is State.AWAIT_CHALLENGE and kind is FrameType.CHALLENGE:
            server_nonce, proof = parse_challenge(frame.body)
            keys = derive(self.secret, self.nonce, server_nonce)
            if not hmac.compare_digest(proof, keys.server_proof):
                self.state = State.CLOSED
                return Refused(401, "mediad does not prove the control secret")
            self._auth = encode(Frame(FrameType.AUTH, keys.client_proof))
            self._tx = _Sealer(keys.client_to_server)
            self._rx = _Sealer(keys.server_to_client)
            self.state = State.OPEN
            return Authenticated()
        return self._fail(Reason.UNEXPECTED, f"{kind.name} frame in state {state.value}")

    def send(self, payload: bytes) -> bytes:
        """A DATA frame carrying ``payload``, after the AUTH frame the first time."""
        if self._tx is None or self.state is not State.OPEN:
            raise ValueError(f"cannot send in state {self.state.value}")
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"a message of {len(payload)} bytes is over the limit of {MAX_PAYLOAD}")
        frame = self._tx.seal(payload)
        if self._auth is not None:
            frame, self._auth = self._auth + frame, None
        return frame


__all__ = [
    "Authenticated", "ClientConnection", "Event", "Frame", "FrameType", "MAX_FRAME", "MAX_PAYLOAD", "Message",
    "ProtocolError", "Reason", "Refused", "ServerConnection", "State", "WireError", "decode", "derive", "encode",
]
