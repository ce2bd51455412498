"""mediad.control payload codec and mediad.ports pool: pure parts of the control endpoint and allocation."""

from __future__ import annotations

import dataclasses
import json
import socket

import pytest

from mediad.config import PortRange
from mediad.control import ControlError, decode_reply, decode_request, encode_reply, encode_request
from mediad.ports import NoPortsError, PortPool
from sdp_rules.iq import (
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
