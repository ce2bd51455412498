"""mediad.proto.iqcodec payload codec and mediad.io.ports pool: pure parts of the control endpoint and allocation."""

from __future__ import annotations

import dataclasses
import json
import socket

import pytest

from mediad.config import PortRange
from mediad.proto.iqcodec import ControlError, decode_reply, decode_request, encode_reply, encode_request
from mediad.io.ports import NoPortsError, PortPool
from iq import (
    Command, Fingerprint, IqReply, IqRequest, Role, Side, StreamReply, StreamSpec, TerminationReply, TerminationSpec,
)
from tests.conftest import free_port


def request() -> IqRequest:
    return IqRequest(Command.RESERVE, "dialog-1", "tx-1",
                     [StreamSpec(1, "srtp", access=TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF"))])


def test_request_and_reply_payloads_round_trip():
    assert decode_request(encode_request(request())) == request()
    reply = IqReply("dialog-1", "tx-1", data={"count": 0})
    assert decode_reply(encode_reply(reply)) == reply
    assert decode_reply(encode_reply(reply.to_dict())) == reply


@pytest.mark.parametrize("data", [
    b"\xff\xfe", b"[]", b'{"iq": 3}', b"{}", b"not json", b'{"command": "explode", "dialog": "d", "transaction": "t"}',
    b'{"command": "list", "dialog": "", "transaction": "t"}',
])
def test_a_payload_that_is_no_iq_request_is_400(data):
    with pytest.raises(ControlError) as info:
        decode_request(data)
    assert info.value.code == 400


def test_a_deeply_nested_payload_is_400_not_a_recursion_error():
    for data in (b"[" * 100_000 + b"]" * 100_000, b'{"command": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001):
        with pytest.raises(ControlError) as info:
            decode_request(data)
        assert info.value.code == 400
    with pytest.raises(ValueError):
        decode_reply(b"[" * 100_000)


def test_schema_errors_are_400_and_name_the_transaction():
    iq = {"command": "reserve", "dialog": "d", "transaction": "t", "streams": [{"stream_id": 1}]}
    with pytest.raises(ControlError) as info:
        decode_request(json.dumps(iq).encode())
    assert info.value.code == 400 and info.value.reply().transaction == "t"


def test_port_pool_hands_out_even_pairs_and_skips_busy_ports():
    first = free_port() & ~1
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        busy.bind(("127.0.0.1", first))
    except OSError:
        pytest.skip("port taken meanwhile")
    pool = PortPool("127.0.0.1", PortRange(first, first + 5))
    pool._next = first
    try:
        socks = pool.allocate(2, even=True)
        ports = [s.getsockname()[1] for s in socks]
        assert ports[0] % 2 == 0 and ports[1] == ports[0] + 1 and first not in ports
        with pytest.raises(NoPortsError):
            pool.claim(ports[0])
        for s in socks:
            s.close()
            pool.release(ports[socks.index(s)])
        assert pool.in_use == set()
    finally:
        busy.close()


def test_port_pool_exhaustion_is_no_ports_error():
    first = free_port()
    pool = PortPool("127.0.0.1", PortRange(first, first + 3))
    held = []
    try:
        with pytest.raises(NoPortsError):
            for _ in range(5):
                held += pool.allocate(1)
        assert len(held) <= 4
    finally:
        for s in held:
            s.close()


def test_messages_serialise_every_field_in_declaration_order():
    fp = Fingerprint("sha-256", ":".join(["AB"] * 32))
    spec = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=True, remote_fingerprints=[fp],
                           tls_role=Role.CLIENT, remote_candidates=["c1"])
    data = spec.to_dict()
    assert list(data) == [f.name for f in dataclasses.fields(TerminationSpec)]
    assert data["side"] == "access" and data["tls_role"] == "client"
    assert data["remote_fingerprints"] == [fp.to_dict()] and data["remote_candidates"] == ["c1"]
    assert data["remote_candidates"] is not spec.remote_candidates
    assert TerminationSpec.from_dict(json.loads(json.dumps(data))) == spec
    term = TerminationReply("127.0.0.1", 30000, None, fp, "ufrag", "p" * 24)
    assert list(term.to_dict()) == [f.name for f in dataclasses.fields(TerminationReply)]
    assert term.to_dict()["local_fingerprint"] == fp.to_dict()
    reply = IqReply("d", "t", [StreamReply(1, access=term)])
    assert IqReply.from_dict(json.loads(json.dumps(reply.to_dict()))) == reply
    with pytest.raises(ValueError, match="unknown fields"):
        TerminationSpec.from_dict(dict(data, bogus=1))


@pytest.mark.parametrize("data", [
    b"[" * 5000,
    b'{"iq":' * 3000 + b"1" + b"}" * 3000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
])
def test_json_nested_too_deep_is_malformed_not_an_internal_error(data):
    with pytest.raises(ControlError) as caught:
        decode_request(data)
    assert caught.value.code == 400


def _full_request() -> IqRequest:
    from iq import DcMap

    access = TerminationSpec(
        Side.ACCESS, "UDP/DTLS/SCTP", remote_address="192.0.2.1", remote_port=4000, remote_rtcp_port=4001,
        remote_fingerprints=[Fingerprint("sha-256", ":".join(["AB"] * 32))], local_fingerprint_request=True,
        establish_tls=True, tls_role=Role.CLIENT, notify_tls_failure=True, ice_lite=True, remote_ice_ufrag="u",
        remote_ice_pwd="p" * 22, remote_candidates=["1 1 udp 1 192.0.2.1 4000 typ host"], remote_sctp_port=5000,
        remote_max_message_size=65536, dcmap=DcMap(stream_id=3, label="chat", subprotocol="msrp", ordered=False),
        remote_dcsa=["accept-types:text/plain"],
    )
    core = TerminationSpec(Side.CORE, "RTP/AVP", remote_address="192.0.2.9", remote_port=6000, rtcp_mux=True)
    return IqRequest(Command.MODIFY, "dialog-9", "tx-9",
                     [StreamSpec(7, "dc_channel", access=access, core=core, group=1, local_tls_id="a" * 20,
                                 remote_tls_id="b" * 20, reuse_association=True),
                      StreamSpec(8, "srtp", core=core)],
                     release_streams=[3, 4])


def _full_reply() -> IqReply:
    access = TerminationReply("203.0.113.1", 40000, 40001, Fingerprint("sha-256", ":".join(["CD"] * 32)),
                              "ufrag", "p" * 24, 5000, 262144)
    return IqReply("dialog-9", "tx-9", [StreamReply(7, access=access, core=TerminationReply("198.51.100.1", 30000)),
                                        StreamReply(8, core=TerminationReply("198.51.100.1", 30002))],
                   error="no ports left", error_code=503, data={"streams": [7, 8]})


def test_every_iq_field_round_trips_under_its_wire_name():
    from iq import messages

    messages._FIELD_NAMES.clear()  # the field-name cache is rebuilt as it is used
    request, reply = _full_request(), _full_reply()
    wire = json.loads(json.dumps(request.to_dict()))
    assert set(wire) == {"command", "dialog", "transaction", "streams", "release_streams", "transports",
                         "release_transports"}
    assert wire["release_streams"] == [3, 4]
    assert set(wire["streams"][1]) >= {"stream_id", "kind", "access", "core"} and wire["streams"][1]["access"] is None
    assert wire["streams"][0]["access"]["tls_role"] == "client"
    assert wire["streams"][0]["access"]["dcmap"]["label"] == "chat"
    assert IqRequest.from_dict(wire) == request
    assert IqRequest.from_dict(wire).streams[0].access.tls_role is Role.CLIENT  # the enum, not its text
    assert decode_request(encode_request(request)) == request
    wire = json.loads(json.dumps(reply.to_dict()))
    assert set(wire) == {"dialog", "transaction", "streams", "error", "error_code", "data", "transports"}
    assert (wire["error"], wire["error_code"], wire["data"]) == ("no ports left", 503, {"streams": [7, 8]})
    assert set(wire["streams"][0]) == {"stream_id", "access", "core"} and wire["streams"][1]["access"] is None
    assert IqReply.from_dict(wire) == reply
    assert reply.stream(8).core.local_port == 30002


def test_iq_messages_without_their_optional_lists_decode():
    assert IqRequest.from_dict({"command": "release", "dialog": "d", "transaction": "t"}) == IqRequest(
        Command.RELEASE, "d", "t")
    assert IqReply.from_dict({"dialog": "d", "transaction": "t"}) == IqReply("d", "t")
    spec = TerminationSpec.from_dict({"side": "access", "transport": "UDP/TLS/RTP/SAVP"})
    assert (spec.remote_fingerprints, spec.tls_role, spec.dcmap) == ([], None, None)


def test_malformed_iq_messages_say_what_they_are():
    with pytest.raises(ValueError, match="^malformed Iq request: "):
        IqRequest.from_dict({"command": "explode", "dialog": "d", "transaction": "t"})
    with pytest.raises(ValueError, match="^malformed Iq reply: "):
        IqReply.from_dict({"dialog": "d"})
    with pytest.raises(KeyError, match="no reply for stream 9"):
        _full_reply().stream(9)


@pytest.mark.parametrize(("text", "message"), [
    ("sha-256", "a=fingerprint must be '<hash-func> <fingerprint>': 'sha-256'"),
    ("sha-256  AB:CD", "a=fingerprint must be '<hash-func> <fingerprint>': 'sha-256  AB:CD'"),
    ("sha-3 AB:CD", "a=fingerprint uses an unknown hash function 'sha-3'"),
    ("md5 " + ":".join(["AB"] * 16), "a=fingerprint hash function 'md5' is not allowed (RFC 8122 5)"),
    ("MD2 " + ":".join(["AB"] * 16), "a=fingerprint hash function 'MD2' is not allowed (RFC 8122 5)"),
])
def test_fingerprint_parse_errors_name_the_problem(text, message):
    with pytest.raises(ValueError) as caught:
        Fingerprint.parse(text)
    assert str(caught.value) == message
