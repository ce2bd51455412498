"""The SCTP association over an in-memory link (mediad.core.sctp): no DTLS, no sockets.

Two :class:`SctpAssociation` objects send each other their SCTP packets
through the event loop, as two DTLS application-data pipes would.
"""

from __future__ import annotations

import asyncio

import pytest

import struct

from google_crc32c import value as crc32c

from mediad.core.sctp import CLOSED, ESTABLISHED, SctpAssociation, zero_length_parameter
from iq import DcMap, Role


class Pair:
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.resets: dict[str, list[int]] = {"a": [], "b": []}
        self.states: dict[str, list[str]] = {"a": [], "b": []}
        self.packets = 0

        def pipe(to: str):
            def send(packet: bytes) -> None:
                self.packets += 1
                loop.call_soon(getattr(self, to).receive, packet)
            return send

        self.a = SctpAssociation(pipe("b"), on_reset=self.resets["a"].extend, on_state=self.states["a"].append)
        self.b = SctpAssociation(pipe("a"), on_reset=self.resets["b"].extend, on_state=self.states["b"].append)

    async def wait(self, predicate, timeout: float = 3.0) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        return predicate()


@pytest.mark.parametrize("b_initiates", [False, True], ids=["passive-server", "simultaneous-open"])
def test_negotiated_channel_messages_and_stream_reset(b_initiates):
    async def scenario() -> None:
        pair = Pair()
        dcmap = DcMap(stream_id=3, label="t140", subprotocol="t140")
        got: list = []
        channel_a = pair.a.open_channel(dcmap)
        channel_b = pair.b.open_channel(dcmap)
        channel_b.on("message", got.append)
        pair.b.start(Role.SERVER, remote_port=5000, remote_max_message_size=None, initiate=b_initiates)
        pair.a.start(Role.CLIENT, remote_port=5000, remote_max_message_size=65536, initiate=True)
        assert await pair.wait(lambda: pair.a.state == pair.b.state == ESTABLISHED)
        assert await pair.wait(lambda: channel_a.readyState == channel_b.readyState == "open")
        channel_a.send("hello")
        channel_a.send(b"\x00\x01")
        assert await pair.wait(lambda: len(got) == 2)
        assert got == ["hello", b"\x00\x01"]
        # A closes its channel: B answers the reset by itself and reports the stream id.
        pair.a.close_channel(3)
        assert await pair.wait(lambda: pair.resets["b"] == [3])
        assert await pair.wait(lambda: channel_a.readyState == "closed")
        assert pair.resets["a"] == []
        pair.a.close()
        assert await pair.wait(lambda: pair.b.state == CLOSED)
        assert pair.states["a"] == ["connecting", "established", "closed"]
        pair.b.close()

    asyncio.run(scenario())


def test_packets_before_start_are_dropped_and_close_is_idempotent():
    async def scenario() -> None:
        pair = Pair()
        pair.a.receive(b"\x00" * 12)
        assert pair.a.dropped == 1
        pair.a.close()
        pair.a.close()
        assert pair.a.state == CLOSED
        pair.b.close()

    asyncio.run(scenario())


def test_a_zero_length_parameter_is_dropped_before_aiortc_and_the_association_lives():
    # aiortc's parameter decoder never ends on a parameter of length 0 (RFC 4960 3.2.1:
    # at least 4): the packet is dropped and counted, the association keeps working.
    async def scenario() -> None:
        pair = Pair()
        dcmap = DcMap(stream_id=3, label="t140", subprotocol="t140")
        got: list = []
        channel_a = pair.a.open_channel(dcmap)
        pair.b.open_channel(dcmap).on("message", got.append)
        pair.b.start(Role.SERVER, remote_port=5000, remote_max_message_size=None, initiate=False)
        pair.a.start(Role.CLIENT, remote_port=5000, remote_max_message_size=65536, initiate=True)
        assert await pair.wait(lambda: channel_a.readyState == "open")
        tag = pair.b.transport._local_verification_tag
        header = struct.pack("!HHL", 5000, 5000, tag)
        for chunks in (
            bytes.fromhex("04000010") + bytes.fromhex("00010008") + b"beat" + bytes.fromhex("00020000"),
            bytes.fromhex("82000008") + bytes.fromhex("000d0000"),  # RE-CONFIG
        ):
            packet = header + struct.pack("<L", crc32c(header + bytes(4) + chunks)) + chunks
            assert zero_length_parameter(packet)
            pair.b.receive(packet)
        assert pair.b.dropped == 2
        channel_a.send("still here")
        assert await pair.wait(lambda: got == ["still here"], timeout=3.0)
        pair.a.close()
        pair.b.close()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_zero_length_parameter_walks_chunks_and_parameters_as_aiortc_does():
    header = bytes(12)
    heartbeat_ok = bytes.fromhex("0400000c") + bytes.fromhex("00010008") + b"beat"
    init_with_zero = bytes.fromhex("01000018") + bytes(16) + bytes.fromhex("00080000")
    data_with_zeros = bytes.fromhex("00030014") + bytes(16)  # DATA carries no parameters
    assert not zero_length_parameter(header + heartbeat_ok)
    assert not zero_length_parameter(header + data_with_zeros + heartbeat_ok)
    assert zero_length_parameter(header + init_with_zero)
    assert zero_length_parameter(header + data_with_zeros + bytes.fromhex("06000008") + bytes(4))  # ABORT
    assert not zero_length_parameter(header + bytes.fromhex("0400ffff") + bytes(8))  # chunk too long: aiortc refuses
