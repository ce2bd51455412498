"""``python -m bench.soak``: mediad's memory over many calls (``make soak``).

Theory of operation
-------------------
Calls are driven into mediad as the plugin drives them: for each call the SDP
rules (``sdp_rules.process``) plan the WIC's offer (a WebRTC audio offer with
ICE, ``a=setup:actpass``: mediad is the DTLS client) and the core's answer, the
plans' Iq requests go to mediad over its control channel
(``mediad.io.client.IqClient``, a worker's client), and the call ends with a
RELEASE ``--hold`` seconds after its answer (so about rate x hold calls are
up at once), ``--rate`` calls a second, ``--round`` calls a round, ``--calls``
in all.  No media flows (SIPp calls carry none either).

Two modes:

* default: mediad runs as its own process (``bench.mediad_side``, native packet
  path, pinned to the relay CPU), and its RSS is read after each round once
  nothing is active.  Printed per round: calls so far, RSS, live dialogs; then
  the spread of RSS over the second half of the rounds, (max - min) / min,
  which the issue wants within 5 %.
* ``--tracemalloc``: mediad's :class:`~mediad.daemon.Daemon` runs in this
  process, in a thread with its own event loop, with ``tracemalloc`` on; after
  each round the allocations still alive are compared with the previous
  round's and the lines that grew most are printed (with the number of live
  Python objects), to find what a call leaves behind.

Figures are printed, nothing is asserted; see docs/performance.rst.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import secrets
import sys
import tempfile
import threading
import time
import tracemalloc

from bench import procs

OFFER = """v=0\r
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0\r
a=msid-semantic: WMS wicstream\r
m=audio {port} UDP/TLS/RTP/SAVPF 111 0\r
c=IN IP4 127.0.0.1\r
a=rtcp:9 IN IP4 0.0.0.0\r
a=candidate:1467250027 1 udp 2122260223 127.0.0.1 {port} typ host generation 0\r
a=ice-ufrag:8hhY\r
a=ice-pwd:asd88fgpdd777uzjYhagZg0mq\r
a=fingerprint:sha-256 D1:2C:BE:AD:C4:F6:64:5C:25:16:11:9C:AF:E7:0F:73:79:36:4E:9C:1E:15:54:39:0C:06:8B:ED:96:86:00:39\r
a=setup:actpass\r
a=mid:0\r
a=sendrecv\r
a=rtcp-mux\r
a=rtpmap:111 opus/48000/2\r
a=rtpmap:0 PCMU/8000\r
"""

ANSWER = """v=0\r
o=core 1 1 IN IP4 127.0.0.3\r
s=-\r
c=IN IP4 127.0.0.3\r
t=0 0\r
m=audio {port} RTP/AVP 0\r
a=rtpmap:0 PCMU/8000\r
a=sendrecv\r
"""


def one_call(client, serial: int, wic_port: int, core_port: int) -> str:
    """The offer and answer of one call, planned by the SDP rules as the plugin plans them; its dialog."""
    from sdp_rules import DialogState, Kind, Side, process
    from iq import Command, IqRequest

    dialog = f"soak-{serial}-{secrets.token_hex(4)}"
    state = DialogState()
    for n, (sdp, origin, kind) in enumerate(((OFFER.format(port=wic_port), Side.ACCESS, Kind.OFFER),
                                             (ANSWER.format(port=core_port), Side.CORE, Kind.ANSWER))):
        plan = process(sdp, origin=origin, kind=kind, state=state, dialog=dialog, transaction=f"t{n}")
        reply = client.request(plan.iq) if plan.iq is not None else None
        if reply is not None and reply.error_code is not None:
            raise RuntimeError(f"{plan.iq.command.value}: {reply.error_code} {reply.error}")
        state = plan.finish(reply).state
    return dialog


def release(client, dialog: str) -> None:
    from iq import Command, IqRequest

    reply = client.request(IqRequest(Command.RELEASE, dialog, "release"))
    if reply.error_code is not None:
        raise RuntimeError(f"release: {reply.error_code} {reply.error}")


def drive(client, count: int, rate: float, first: int, sinks: tuple[int, int], hold: float = 0.0) -> None:
    """``count`` calls at ``rate``, each released ``hold`` seconds after its answer; all released on return."""
    started = time.monotonic()
    held: list[tuple[float, str]] = []  # (release time, dialog), in order
    for i in range(count):
        due = started + i / rate
        while held and held[0][0] <= time.monotonic():
            release(client, held.pop(0)[1])
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        held.append((time.monotonic() + hold, one_call(client, first + i, *sinks)))
    for until, dialog in held:
        delay = until - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        release(client, dialog)


def _sinks() -> tuple[list, tuple[int, int]]:
    """Sockets standing for the WIC's media port and the core's (what mediad sends is dropped there)."""
    import socket

    wic = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wic.bind(("127.0.0.1", 0))
    core = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    core.bind(("127.0.0.3", 0))
    return [wic, core], (wic.getsockname()[1], core.getsockname()[1])


def soak_process(calls: int, rate: float, per_round: int, hold: float) -> dict:
    from bench.mediad_side import MediadUnderTest
    from iq import Command, IqRequest

    socks, ports = _sinks()
    rows = []
    with tempfile.TemporaryDirectory(prefix="e2ae-soak-") as workdir:
        cpu = 1 if procs.cpu_count() > 1 else None
        mediad = MediadUnderTest(workdir, cpu)
        mediad.start()
        if cpu is not None:
            os.sched_setaffinity(0, {0})
        try:
            client = mediad.client
            client.timeout = 5.0
            rows.append({"calls": 0, "rss_kib": procs.rss_kib(mediad.pid), "dialogs": 0})
            done = 0
            while done < calls:
                n = min(per_round, calls - done)
                drive(client, n, rate, done, ports, hold)
                done += n
                time.sleep(0.5)  # let the writer and the event loop settle
                listing = client.request(IqRequest(Command.LIST, "soak", f"list-{done}"))
                rows.append({"calls": done, "rss_kib": procs.rss_kib(mediad.pid),
                             "dialogs": listing.data["count"]})
                print(f"  {done:>7} calls  RSS {rows[-1]['rss_kib'] / 1024:7.1f} MiB  dialogs {rows[-1]['dialogs']}",
                      flush=True)
        finally:
            mediad.stop()
            for sock in socks:
                sock.close()
    second_half = [r["rss_kib"] for r in rows[1:]][len(rows[1:]) // 2:]
    spread = (max(second_half) - min(second_half)) / min(second_half) if second_half else None
    return {"rounds": rows, "second_half_spread": spread}


def soak_tracemalloc(calls: int, rate: float, per_round: int, hold: float, top: int = 12) -> None:
    from mediad.io.client import IqClient
    from mediad.config import parse_config
    from mediad.daemon import Daemon

    redis_port = procs.free_tcp_port()
    control_port = procs.free_tcp_port()
    first = random.randrange(20000, 28000, 2)
    secret = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="e2ae-soak-") as workdir:
        redis = procs.start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], None, os.path.join(workdir, "redis.log"))
        config = parse_config("\n".join([
            "[mediad]", f"control = 127.0.0.1:{control_port}", f"control_secret = {secret}",
            "access_address = 127.0.0.1", "core_address = 127.0.0.2", f"access_ports = {first}-{first + 999}",
            f"core_ports = {first}-{first + 999}", "metrics = off", "log_level = WARNING",
            "[redis]", f"url = redis://127.0.0.1:{redis_port}/0"]))
        loop = asyncio.new_event_loop()
        daemon = Daemon(config)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(daemon.start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, daemon=True)
        time.sleep(0.3)
        tracemalloc.start(8)
        thread.start()
        socks, ports = _sinks()
        try:
            if not ready.wait(20):
                raise RuntimeError("mediad did not start")
            client = IqClient(("127.0.0.1", control_port), secret, timeout=5.0)
            drive(client, min(per_round, 500), rate, 10_000_000, ports, hold)  # warm-up: caches, pools
            time.sleep(0.5)
            gc.collect()
            previous = tracemalloc.take_snapshot()
            done = 0
            while done < calls:
                n = min(per_round, calls - done)
                drive(client, n, rate, done, ports, hold)
                done += n
                time.sleep(0.5)
                gc.collect()
                snapshot = tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(False, tracemalloc.__file__)])
                stats = snapshot.compare_to(previous, "lineno")
                grown = sum(s.size_diff for s in stats)
                print(f"after {done} calls: {len(daemon.dialogs)} dialogs, traced {grown / 1024:+.1f} KiB since "
                      f"the last round, {len(gc.get_objects())} Python objects, RSS {procs.rss_kib(os.getpid())} KiB")
                for stat in stats[:top]:
                    if stat.size_diff:
                        frame = stat.traceback[0]
                        print(f"    {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d}  "
                              f"{frame.filename}:{frame.lineno}")
                previous = snapshot
        finally:
            asyncio.run_coroutine_threadsafe(daemon.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            procs.stop(redis)
            for sock in socks:
                sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=100.0, help="calls per second")
    parser.add_argument("--round", type=int, default=2000, help="calls per round (one RSS reading each)")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds from a call's answer to its release")
    parser.add_argument("--tracemalloc", action="store_true", help="mediad in this process: what grows, by line")
    args = parser.parse_args(argv)
    if args.tracemalloc:
        soak_tracemalloc(args.calls, args.rate, args.round, args.hold)
        return 0
    print(f"mediad soak: {args.calls} calls at {args.rate:g}/s held {args.hold:g} s, RSS after every {args.round}")
    result = soak_process(args.calls, args.rate, args.round, args.hold)
    rows = result["rounds"]
    print(f"RSS at start {rows[0]['rss_kib'] / 1024:.1f} MiB, after the first round {rows[1]['rss_kib'] / 1024:.1f} "
          f"MiB, at the end {rows[-1]['rss_kib'] / 1024:.1f} MiB")
    if result["second_half_spread"] is not None:
        print(f"second half: RSS spread {result['second_half_spread'] * 100:.1f} % (flat: within 5 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
