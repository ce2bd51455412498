"""mediad.control codec and mediad.ports pool: pure parts of the control endpoint and allocation."""

from __future__ import annotations

import json
import socket

import pytest

from mediad.config import PortRange
from mediad.control import ControlError, canonical, decode_request, encode_request, sign
from mediad.ports import NoPortsError, PortPool
from sdp_rules.iq import Command, IqRequest, Side, StreamSpec, TerminationSpec
from tests.conftest import free_port

SECRET = b"k" * 32


def request() -> IqRequest:
    return IqRequest(Command.RESERVE, "dialog-1", "tx-1",
                     [StreamSpec(1, "srtp", access=TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF"))])


def test_request_round_trips_with_its_mac():
    assert decode_request(SECRET, encode_request(SECRET, request())) == request()


def test_mac_is_over_canonical_json_whatever_the_key_order():
    iq = request().to_dict()
    shuffled = dict(reversed(list(iq.items())))
    assert canonical(iq) == canonical(shuffled)
    data = json.dumps({"mac": sign(SECRET, iq), "iq": shuffled}).encode()
    assert decode_request(SECRET, data) == request()


@pytest.mark.parametrize("data, code", [
    (b"\xff\xfe", 400), (b"[]", 400), (b'{"iq": 3}', 400), (b"{}", 400),
])
def test_malformed_is_400(data, code):
    with pytest.raises(ControlError) as info:
        decode_request(SECRET, data)
    assert info.value.code == code


def test_bad_or_missing_mac_is_401_and_names_the_transaction():
    iq = request().to_dict()
    for mac in (None, "00" * 32, sign(b"other", iq)):
        with pytest.raises(ControlError) as info:
            decode_request(SECRET, json.dumps({"iq": iq, "mac": mac}).encode())
        assert info.value.code == 401
        assert info.value.reply().transaction == "tx-1"


def test_schema_errors_after_a_good_mac_are_400():
    iq = {"command": "reserve", "dialog": "d", "transaction": "t", "streams": [{"stream_id": 1}]}
    with pytest.raises(ControlError) as info:
        decode_request(SECRET, json.dumps({"iq": iq, "mac": sign(SECRET, iq)}).encode())
    assert info.value.code == 400


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
