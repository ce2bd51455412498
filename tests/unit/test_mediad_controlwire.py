"""mediad.proto.controlwire: the control channel's frames, handshake and sealed messages, in memory."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from mediad.proto import controlwire
from mediad.proto.controlwire import (
    MAX_FRAME, MAX_PAYLOAD, Authenticated, ClientConnection, Frame, FrameType, Message, ProtocolError, Reason,
    Refused, ServerConnection, State, WireError, decode, encode,
)

SECRET = b"s" * 32


def pair(client_secret: bytes = SECRET, server_secret: bytes = SECRET):
    server, client = ServerConnection(server_secret), ClientConnection(client_secret)
    assert server.receive_data(client.hello()) == []
    events = client.receive_data(server.data_to_send())
    return server, client, events


def connected():
    server, client, events = pair()
    assert events == [Authenticated()] and client.state is State.OPEN
    return server, client


def test_a_handshake_then_messages_both_ways():
    server, client = connected()
    first = client.send(b'{"n": 1}')
    assert server.receive_data(first) == [Authenticated(), Message(b'{"n": 1}')]
    assert server.state is State.OPEN
    assert server.receive_data(client.send(b"two") + client.send(b"three")) == [Message(b"two"), Message(b"three")]
    assert client.receive_data(server.send(b"reply")) == [Message(b"reply")]
    assert server.data_to_send() == b""  # nothing else was queued


def test_bytes_split_anywhere_give_the_same_events():
    server, client = ServerConnection(SECRET), ClientConnection(SECRET)
    hello = client.hello()
    for i in range(len(hello)):
        assert server.receive_data(hello[i:i + 1]) == []
    challenge = server.data_to_send()
    events = []
    for i in range(len(challenge)):
        events += client.receive_data(challenge[i:i + 1])
    assert events == [Authenticated()]
    data = client.send(b"x" * 1000) + client.send(b"y")
    events = []
    for i in range(0, len(data), 7):
        events += server.receive_data(data[i:i + 7])
    assert events == [Authenticated(), Message(b"x" * 1000), Message(b"y")]
    assert server.buffered == 0


def test_a_message_cut_at_any_byte_after_the_handshake_is_received_whole():
    # TCP may deliver a frame's length alone (an IndexError the control fuzz target found).
    server, client = connected()
    assert server.receive_data(client.send(b"first")) == [Authenticated(), Message(b"first")]
    size = len(encode(Frame(FrameType.DATA, bytes(controlwire.SEQ_SIZE + 4 + controlwire.TAG_SIZE))))
    for cut in range(size + 1):
        payload = b"m-%02d" % cut
        frame = client.send(payload)
        assert len(frame) == size
        assert server.receive_data(frame[:cut]) + server.receive_data(frame[cut:]) == [Message(payload)]
    assert server.buffered == 0 and server.state is State.OPEN


def test_the_payload_is_encrypted_on_the_wire():
    _, client = connected()
    assert b"ice_pwd-secret-value" not in client.send(b'{"ice_pwd": "ice_pwd-secret-value"}')


def test_a_client_with_another_secret_is_refused_401_and_counted_as_bad_proof():
    server, client, events = pair(client_secret=b"wrong")
    assert events == [Refused(401, "mediad does not prove the control secret")]
    # A client that goes on anyway with its own proof is refused by the server.
    server = ServerConnection(SECRET)
    intruder = ClientConnection(b"wrong")
    server.receive_data(intruder.hello())
    nonce, _ = controlwire.parse_challenge(decode(server.data_to_send())[0][0].body)
    keys = controlwire.derive(b"wrong", intruder.nonce, nonce)
    (event,) = server.receive_data(encode(Frame(FrameType.AUTH, keys.client_proof)))
    assert isinstance(event, ProtocolError) and event.reason is Reason.BAD_PROOF
    assert server.closed
    (error,), _ = decode(server.data_to_send(), limit=64)
    assert error.kind is FrameType.ERROR and controlwire.parse_error(error.body)[0] == 401


def test_a_frame_replayed_on_its_connection_fails_the_sequence_check():
    server, client = connected()
    server.receive_data(client.send(b"RESERVE"))
    recorded = client.send(b"RELEASE")
    assert server.receive_data(recorded) == [Message(b"RELEASE")]
    (event,) = server.receive_data(recorded)
    assert isinstance(event, ProtocolError) and event.reason is Reason.REPLAY
    assert server.closed and server.receive_data(client.send(b"more")) == []


def test_a_frame_of_another_connection_does_not_authenticate():
    server_a, client_a = connected()
    recorded = client_a.send(b"RESERVE")  # AUTH + DATA of connection a
    data_only = recorded[4 + 1 + 32:]
    server_b, client_b = connected()
    server_b.receive_data(client_b.send(b"first"))
    (event,) = server_b.receive_data(data_only)
    assert isinstance(event, ProtocolError) and event.reason is Reason.BAD_MAC


def test_a_recorded_handshake_does_not_authenticate_on_a_new_connection():
    server, client = connected()
    recorded = client.hello() + client.send(b"RESERVE")  # all the client sent
    replayed = ServerConnection(SECRET)  # a new connection, a new server nonce
    events = replayed.receive_data(recorded)
    assert [type(e) for e in events] == [ProtocolError] and events[0].reason is Reason.BAD_PROOF


def test_a_tampered_frame_does_not_authenticate():
    server, client = connected()
    server.receive_data(client.send(b"one"))
    frame = bytearray(client.send(b'{"command": "release"}'))
    frame[-20] ^= 1
    (event,) = server.receive_data(bytes(frame))
    assert event.reason is Reason.BAD_MAC


@pytest.mark.parametrize("data, reason", [
    (b"\x00\x00\x00\x00", Reason.MALFORMED),  # empty frame
    (b'{"iq": {"command": "release"}, "mac": "00"}', Reason.TOO_LARGE),  # the old JSON datagram
    (struct.pack("!I", 65) + b"\x01" * 65, Reason.TOO_LARGE),  # over the handshake limit
    (struct.pack("!I", 2) + b"\x09\x00", Reason.MALFORMED),  # unknown type
    (struct.pack("!I", 3) + b"\x01\x02\x00", Reason.MALFORMED),  # HELLO too short
    (encode(Frame(FrameType.HELLO, bytes((1,)) + b"n" * 16)), Reason.VERSION),
    (encode(Frame(FrameType.DATA, b"\x00" * 30)), Reason.UNEXPECTED),  # DATA before authentication
    (encode(Frame(FrameType.AUTH, b"p" * 32)), Reason.UNEXPECTED),  # AUTH before HELLO
])
def test_garbage_closes_the_connection_with_an_error_frame(data, reason):
    server = ServerConnection(SECRET)
    (event,) = server.receive_data(data)
    assert isinstance(event, ProtocolError) and event.reason is reason
    assert server.closed
    (error,), _ = decode(server.data_to_send(), limit=64)
    assert error.kind is FrameType.ERROR and controlwire.parse_error(error.body)[0] == 400


def test_the_largest_message_fits_and_one_byte_more_does_not():
    server, client = connected()
    events = server.receive_data(client.send(b"a" * MAX_PAYLOAD))
    assert events[-1] == Message(b"a" * MAX_PAYLOAD)
    with pytest.raises(ValueError):
        client.send(b"a" * (MAX_PAYLOAD + 1))
    (event,) = server.receive_data(struct.pack("!I", MAX_FRAME + 1) + b"\x04")
    assert event.reason is Reason.TOO_LARGE


def test_the_client_takes_an_error_frame_as_a_refusal():
    client = ClientConnection(SECRET)
    client.hello()
    assert client.receive_data(encode(Frame(FrameType.ERROR, controlwire.error_body(503, "busy")))) == [
        Refused(503, "busy")]
    assert client.closed


def test_sending_before_the_handshake_is_a_usage_error():
    with pytest.raises(ValueError):
        ClientConnection(SECRET).send(b"x")
    with pytest.raises(ValueError):
        ServerConnection(SECRET).send(b"x")
    with pytest.raises(ValueError):
        ServerConnection(b"")


_frames = st.builds(Frame, st.sampled_from(list(FrameType)), st.binary(max_size=80))


@settings(max_examples=200)
@given(st.lists(_frames, max_size=6), st.binary(max_size=3))
def test_encode_then_decode_is_the_identity(frames, tail):
    data = b"".join(encode(f) for f in frames)
    decoded, used = decode(data + tail[:3], limit=200)
    assert decoded == frames and used == len(data)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_decode_of_any_bytes_returns_frames_or_raises_wire_error(data):
    try:
        frames, used = decode(data, limit=64)
    except WireError as exc:
        assert isinstance(exc.reason, Reason)
        return
    assert b"".join(encode(f) for f in frames) == data[:used]


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_a_server_fed_any_bytes_never_raises(data):
    server = ServerConnection(SECRET)
    for event in server.receive_data(data):
        assert isinstance(event, ProtocolError)
