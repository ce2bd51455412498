"""A mediad of the pool killed mid-call, its core addresses not movable: the core is re-INVITEd.

``[pool] takeover = reinvite``: real processes as in test_edge_takeover.py (three
mediads on three loopback "hosts", Kamailio with the plugin, Redis, WebRTC calls
from aiortc, a core answering PCMU), but each node's core side is on an address
of its own host only.  After a SIGKILL the survivor binds the dead node's access
address (it floats), holds the core sides on new ports of its own core address
and publishes ``media_moved``; the edge re-INVITEs the core of each call inside
its dialog, the core answers and moves its RTP there.  Measured: calls lost,
the media gap per call each way, DTLS handshakes (none: the access side did not
move), re-INVITEs sent and answered.  Each call then ends with the WIC's BYE,
which reaches the core above the re-INVITE's CSeq.
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time

import pytest

from deploy.demo_call import PCMU, PTIME, SAMPLES, _media_address, _ulaw, loopback_only
from tests.integration.conftest import Mediad
from tests.integration.edge_harness import CONTROL_SECRET
from tests.integration.test_edge_pool import HEARTBEAT, HOSTS, WEIGHTS, Pool
from tests.integration.test_edge_takeover import CACHE, Core, Wic, gap, handshakes, running_pool

pytestmark = pytest.mark.integration

CALLS = 6


class MovingCore(Core):
    """The core of test_edge_takeover.py, which also follows a re-INVITE: its RTP goes to the
    offer's new address (same SSRC, sequence numbers and timestamps going on), and it counts
    the re-INVITEs and the CSeqs it saw per call."""

    def __init__(self, sip) -> None:
        super().__init__(sip)
        self.remote: dict[str, tuple[str, int]] = {}
        self.reinvites: list[str] = []
        self.cseqs: dict[str, list[tuple[int, str]]] = {}

    async def _serve(self) -> None:
        while True:
            msg = await self.proto.queue.get()
            if msg.status:
                continue
            call_id = msg.get("call-id")
            number, _, method = (msg.get("cseq") or "0 X").partition(" ")
            self.cseqs.setdefault(call_id, []).append((int(number), method.strip()))
            if msg.method == "INVITE":
                known = call_id in self.calls
                self.invites += 1
                call = await self._leg(call_id)
                remote = _media_address(msg.body)
                if remote:
                    self.remote[call_id] = remote
                if known:
                    self.reinvites.append(call_id)
                if call["sender"] is None and remote:
                    call["sender"] = asyncio.ensure_future(self._rtp(call["transport"], call_id))
                answer = (f"v=0\r\no=core 1 {2 if known else 1} IN IP4 {self.media_host}\r\ns=-\r\n"
                          f"c=IN IP4 {self.media_host}\r\nt=0 0\r\nm=audio {call['port']} RTP/AVP 0\r\n"
                          "a=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n")
                mid = re.search(r"^a=mid:(\S+)", msg.body, re.M)
                answer += f"a=mid:{mid.group(1)}\r\n" if mid else ""
                self._send(msg, self._response(msg, "200 OK", answer, call["tag"]))
            elif msg.method == "BYE":
                self.byes.add(call_id)
                call = self.calls.get(call_id)
                if call and call["sender"]:
                    call["sender"].cancel()
                self._send(msg, self._response(msg, "200 OK"))
            elif msg.method != "ACK":
                self._send(msg, self._response(msg, "200 OK"))

    async def _rtp(self, transport, call_id: str) -> None:
        ssrc, ts, seq = random.getrandbits(32), random.getrandbits(32), random.getrandbits(16)
        payload = bytes(_ulaw(int(8000 * (1 if (i // 10) % 2 else -1))) for i in range(SAMPLES))
        start, n = time.monotonic(), 0
        while True:
            transport.sendto(bytes([0x80, PCMU]) + (seq & 0xFFFF).to_bytes(2, "big") + (ts & 0xFFFFFFFF).to_bytes(
                4, "big") + ssrc.to_bytes(4, "big") + payload, self.remote[call_id])
            n, seq, ts = n + 1, seq + 1, ts + SAMPLES
            await asyncio.sleep(max(0.0, start + n * PTIME - time.monotonic()))


def start_node(tmp_path, redis_url: str, name: str) -> Mediad:
    n = HOSTS[name]
    node = Mediad(tmp_path, redis_url, control_host=f"127.0.0.{n}", access_address=f"127.0.0.{n}",
                  core_address=f"127.0.1.{n}", control_secret=CONTROL_SECRET, node_id=name,
                  weight=str(WEIGHTS[name]), heartbeat=str(HEARTBEAT), dtls_handshake_timeout="30")
    node.secret = CONTROL_SECRET
    with open(node.config_path, "a") as conf:
        conf.write("[pool]\ntakeover = reinvite\n")
    node.start()
    return node


@pytest.fixture
def pool(redis_server, tmp_path):
    with running_pool(redis_server, tmp_path, start_node, "takeover = reinvite\n") as running:
        yield running


def test_a_killed_nodes_calls_go_on_after_a_reinvite_to_the_core(pool):
    loopback_only()
    asyncio.run(_killed_node(pool))


async def _killed_node(pool: Pool) -> None:
    core = MovingCore(pool.edge.next_hop)
    await core.open()
    wics = [Wic(pool.edge.access) for _ in range(CALLS)]
    try:
        ids = [await wic.start() for wic in wics]
        held = {name: pool.held(name) for name in HOSTS}
        victim = max(held, key=lambda name: len(held[name]))
        dead_dialogs = set(held[victim])
        assert dead_dialogs, held
        survivors = [name for name in HOSTS if name != victim]
        before = {name: handshakes(pool.nodes[name]) for name in survivors}
        await asyncio.sleep(1.0)
        victim_host = f"127.0.0.{HOSTS[victim]}"
        on_victim = [i for i, wic in enumerate(wics) if re.search(rf"c=IN IP4 {re.escape(victim_host)}\b", wic.answer)]
        assert len(on_victim) == len(dead_dialogs), (on_victim, dead_dialogs)

        killed = time.monotonic()
        pool.nodes[victim].kill()
        deadline = killed + 15
        while time.monotonic() < deadline and len(set(core.reinvites)) < len(on_victim):
            await asyncio.sleep(0.05)
        answered_in = time.monotonic() - killed
        assert sorted(set(core.reinvites)) == sorted(ids[i] for i in on_victim), core.reinvites
        await asyncio.sleep(2.0)  # media on the survivor's new core ports

        gaps_wic, gaps_core = [], []
        for i in on_victim:
            g_wic, n_wic = gap(wics[i].times, killed)
            g_core, n_core = gap(core.calls[ids[i]]["times"], killed)
            assert n_wic > 20 and n_core > 20, (i, n_wic, n_core)
            gaps_wic.append(g_wic)
            gaps_core.append(g_core)
            new_remote = core.remote[ids[i]]
            assert new_remote[0] != f"127.0.1.{HOSTS[victim]}", new_remote  # the survivor's own core address
        after = {name: handshakes(pool.nodes[name]) for name in survivors}
        deadline = time.monotonic() + 10  # the last 200 is counted when the reply route has run
        while True:
            metrics = pool.edge.plugin_metrics()
            answered = re.search(r'e2ae_plugin_reinvites_total\{result="answered",side="core"\} (\S+)', metrics)
            if (answered and float(answered.group(1)) == len(on_victim)) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        sent = re.search(r'e2ae_plugin_reinvites_total\{result="sent",side="core"\} (\S+)', metrics)
        answered = re.search(r'e2ae_plugin_reinvites_total\{result="answered",side="core"\} (\S+)', metrics)
        print(f"\nkilled node {victim} with {len(on_victim)} of {CALLS} calls; every core re-INVITEd "
              f"{answered_in * 1000:.0f} ms after the kill; re-INVITEs sent {sent and sent.group(1)}, "
              f"answered {answered and answered.group(1)}")
        for label, gaps in (("toward the WIC", gaps_wic), ("toward the core", gaps_core)):
            print(f"media gap {label}, ms: min {min(gaps):.0f} p50 {statistics.median(gaps):.0f} "
                  f"max {max(gaps):.0f}")
        print(f"DTLS handshakes on the survivors during the takeover: {after} (before {before})")
        assert after == before  # the access side did not move: no new handshake
        assert answered and float(answered.group(1)) == len(on_victim), metrics

        await asyncio.sleep(CACHE)
        for i, wic in enumerate(wics):  # every call ends with the WIC's BYE
            assert (await wic.uac.bye()).status == 200, i
        for i in on_victim:  # the BYE reached the core above the edge's re-INVITE (RFC 3261 12.2.2)
            seen = core.cseqs[ids[i]]
            reinvite = max(n for n, m in seen if m == "INVITE")
            bye = [n for n, m in seen if m == "BYE"]
            assert bye and bye[0] > reinvite, seen
    finally:
        for wic in wics:
            await wic.close()
        core.close()
    assert await asyncio.to_thread(pool.edge.wait_no_dialogs, 10) == [], "state left in Redis"
