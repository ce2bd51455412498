"""A call leaves no Python object behind in mediad (the short, bounded form of ``make soak``).

mediad's :class:`~mediad.daemon.Daemon` runs in the test's event loop against a
real Redis; calls go over its real control channel as the plugin sends them
(the SDP rules plan the WIC's offer and the core's answer, then RELEASE).
After a warm-up that fills every bounded cache, more calls must not grow the
number of live Python objects.
"""

from __future__ import annotations

import asyncio
import gc
import random
import secrets

from mediad import daemon as daemon_module
from mediad.io.client import AsyncIqClient
from mediad.config import parse_config
from mediad.daemon import Daemon
from sdp_rules import DialogState, Kind, Side, process
from iq import Command, IqRequest
from bench.soak import ANSWER, OFFER
from tests.conftest import free_port


async def call(client: AsyncIqClient, serial: int) -> None:
    dialog = f"mem-{serial}"
    state = DialogState()
    for n, (sdp, origin, kind) in enumerate(((OFFER.format(port=9), Side.ACCESS, Kind.OFFER),
                                             (ANSWER.format(port=4000), Side.CORE, Kind.ANSWER))):
        plan = process(sdp, origin=origin, kind=kind, state=state, dialog=dialog, transaction=f"t{n}")
        reply = await client.request(plan.iq)
        assert reply.error_code is None, reply
        state = plan.finish(reply).state
    assert (await client.request(IqRequest(Command.RELEASE, dialog, "release"))).error_code is None


def test_calls_leave_no_python_objects_behind(redis_url, monkeypatch):
    monkeypatch.setattr(daemon_module, "RECENT_REPLIES", 50)  # the one bounded cache a release fills
    first = random.randrange(20000, 28000, 2)
    control = free_port()
    secret = secrets.token_hex(16)
    config = parse_config("\n".join([
        "[mediad]", f"control = 127.0.0.1:{control}", f"control_secret = {secret}",
        "access_address = 127.0.0.1", "core_address = 127.0.0.2", f"access_ports = {first}-{first + 199}",
        f"core_ports = {first}-{first + 199}", "metrics = off", "[redis]", f"url = {redis_url}"]))

    async def scenario() -> list[int]:
        daemon = Daemon(config)
        await daemon.start()
        client = AsyncIqClient(("127.0.0.1", control), secret)
        counts = []
        try:
            serial = 0
            for _ in range(3):  # warm-up, then two measured rounds
                for _ in range(150):
                    await call(client, serial)
                    serial += 1
                await daemon.flush()
                # Past the longest timer a call arms (the client's and redis-py's 2 s read
                # timeouts): a cancelled timer stays in the loop's heap, with its context,
                # until its time comes, and how many are there depends on how the writer's
                # batches fell, not on what calls leave behind.
                await asyncio.sleep(2.2)
                gc.collect()
                counts.append(len(gc.get_objects()))
            assert daemon.dialogs == {} and len(daemon.recent) == 50
        finally:
            await daemon.stop()
        return counts

    counts = asyncio.run(scenario())
    # 150 calls per round: not one object per call stays (a few from the loop's own churn are noise).
    assert counts[2] - counts[1] < 50, counts
