"""The SCTP/DCEP fuzz target's harness: an established association, fed one packet per input.

Two :class:`mediad.core.sctp.SctpAssociation` objects (``wic`` plays the browser,
``agw`` is mediad's) are connected in memory, as the unit tests connect them,
with a negotiated channel on SCTP stream 3 (``a=dcmap:3``).  For each input
a fresh pair is set up (the association is stateful: a finding must replay
from its one input), then the input, as the chunks of one SCTP packet, goes
to ``agw.receive()`` behind a common header this harness writes: source and
destination port 5000, the association's verification tag and a correct
CRC32c (RFC 4960 section 3.1), so that the fuzzer reaches the chunk handling
rather than the checksum.  A first byte with the low bit set asks for a
verification tag of zero (an INIT's, section 8.5.1).

aiortc's verification tags and initial TSNs come from ``random32``; the
harness replaces it with a counter, so tags and TSNs are the same on every
run and the seeds (:mod:`fuzz.seeds`) can carry valid TSNs.

What is checked is mediad's glue (:mod:`mediad.core.sctp`): whatever the packet,
nothing escapes ``receive()``, the association's reader task survives while
the association is not closed, and while it is not, a channel the ALG did not
negotiate (one opened by DCEP, RFC 8832) does not stay open.
"""

from __future__ import annotations

import asyncio
import itertools
import struct

from google_crc32c import value as crc32c

import aiortc.rtcsctptransport as rtcsctptransport

from mediad.core.sctp import CLOSED, ESTABLISHED, SctpAssociation
from iq import DcMap, Role

SCTP_PORT = 5000
NEGOTIATED_STREAM = 3
FIRST_RANDOM = 0x1000


class SctpHarness:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.resets: list[int] = []
        self.states: list[str] = []

    def _pair(self) -> tuple[SctpAssociation, SctpAssociation]:
        counter = itertools.count(FIRST_RANDOM)
        rtcsctptransport.random32 = lambda: next(counter)  # deterministic tags and TSNs
        loop = self.loop
        holder: dict[str, SctpAssociation] = {}

        def pipe(to: str):
            return lambda packet: loop.call_soon(holder[to].receive, packet)

        self.resets, self.states = [], []
        wic = SctpAssociation(pipe("agw"), on_reset=lambda ids: None, on_state=lambda s: None)
        agw = SctpAssociation(pipe("wic"), on_reset=self.resets.extend, on_state=self.states.append)
        holder.update(wic=wic, agw=agw)
        dcmap = DcMap(stream_id=NEGOTIATED_STREAM, label="t140", subprotocol="t140")
        wic.open_channel(dcmap)
        agw.open_channel(dcmap)
        agw.start(Role.SERVER, remote_port=SCTP_PORT, remote_max_message_size=None, initiate=False)
        wic.start(Role.CLIENT, remote_port=SCTP_PORT, remote_max_message_size=65536, initiate=True)
        for _ in range(200):
            if agw.state == wic.state == ESTABLISHED and agw.channels[NEGOTIATED_STREAM].readyState == "open":
                break
            self._spin()
        else:
            raise RuntimeError("the in-memory SCTP association did not come up")
        return wic, agw

    def _spin(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            self.loop.run_until_complete(asyncio.sleep(0))

    def _close(self, *associations: SctpAssociation) -> None:
        for association in associations:
            association.close()
        self._spin(3)
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self._spin(2)

    def packet(self, data: bytes, agw: SctpAssociation) -> bytes:
        tag = 0 if data[:1] and data[0] & 1 else agw.transport._local_verification_tag
        header = struct.pack("!HHL", SCTP_PORT, SCTP_PORT, tag)
        chunks = data[1:]
        return header + struct.pack("<L", crc32c(header + b"\x00\x00\x00\x00" + chunks)) + chunks

    def one(self, data: bytes) -> None:
        wic, agw = self._pair()
        try:
            agw.receive(self.packet(data, agw))
            for _ in range(20):
                self._spin()
                if agw.inbound.empty():
                    break
            self._spin(4)
            if agw.state != CLOSED:
                if agw.reader is None or agw.reader.done():
                    raise AssertionError("the SCTP reader stopped while the association is not closed")
                # (Once closed, aiortc's table may still hold a channel whose opening a SHUTDOWN
                # in the same packet cut short: nothing can flow on it.)
                for stream_id, channel in agw.transport._data_channels.items():
                    if stream_id != NEGOTIATED_STREAM and channel.readyState == "open":
                        raise AssertionError(f"a DCEP channel on stream {stream_id} stayed open")
        finally:
            self._close(wic, agw)
