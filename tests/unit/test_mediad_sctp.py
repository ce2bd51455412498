"""The SCTP association over an in-memory link (mediad.sctp): no DTLS, no sockets.

Two :class:`SctpAssociation` objects send each other their SCTP packets
through the event loop, as two DTLS application-data pipes would.
"""

from __future__ import annotations

import asyncio

import pytest

from mediad.sctp import CLOSED, ESTABLISHED, SctpAssociation
from sdp_rules.iq import DcMap, Role


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
