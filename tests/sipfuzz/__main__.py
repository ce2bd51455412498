"""``make fuzz-sip``: the SIP-level fuzz against a real edge started here (Redis, mediad, Kamailio).

    .venv/bin/python -m tests.sipfuzz [--cases 3000] [--seed S] [--concurrency 8]
        [--batch 100] [--flows invite,ok,...] [--case N ...] [--replay FILE ...] [--save DIR]

Prints the seed, the messages sent, the final answers by status, the violations by kind
(the first of each with its case) and what was left over; exit status 1 when any
invariant was violated.  ``--case`` replays cases of a seed by index; ``--replay`` runs
fixtures of ``tests/fixtures/sip/``; ``--save`` writes the first case of each violation
kind there as a fixture.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from pathlib import Path

from tests.sipfuzz.harness import EDGE_EXTRA, Fuzz, replay_case, report
from tests.sipfuzz.mutate import FLOWS


def main(argv: list[str] | None = None) -> int:
    from tests.conftest import RedisServer
    from tests.integration.edge_harness import Edge

    parser = argparse.ArgumentParser(prog="python -m tests.sipfuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=3000, help="cases to run (default 3000)")
    parser.add_argument("--seed", default=None, help="the run's seed (default: a random one, printed)")
    parser.add_argument("--concurrency", type=int, default=8, help="cases at a time (default 8)")
    parser.add_argument("--batch", type=int, default=100, help="cases between checks of the processes (default 100)")
    parser.add_argument("--flows", default=",".join(FLOWS), help="flows to draw from (default: all)")
    parser.add_argument("--case", type=int, action="append", help="run only this case of the seed (repeatable)")
    parser.add_argument("--replay", type=Path, action="append", help="run this fixture (repeatable)")
    parser.add_argument("--save", type=Path, help="write the first case of each violation kind here")
    parser.add_argument("--answer-timeout", type=float, default=3.0, help="bounded wait for a final answer (s)")
    parser.add_argument("--no-warm-up", action="store_true",
                        help="no warm-up calls (and so no check of the fds at the end)")
    parser.add_argument("--trace", action="store_true", help="print every datagram sent and received")
    parser.add_argument("--unmutated", action="store_true", help="no mutation: the flows as they are (a control run)")
    args = parser.parse_args(argv)
    seed = args.seed or secrets.token_hex(4)
    flows = tuple(f for f in args.flows.split(",") if f)
    unknown = set(flows) - set(FLOWS)
    if unknown:
        parser.error(f"unknown flows: {', '.join(sorted(unknown))}")
    unmutated = 1.0 if args.unmutated else 0.05
    print(f"sipfuzz: seed {seed}", flush=True)
    redis_server = RedisServer()
    redis_server.start()
    edge = Edge(redis_server, edge_extra=EDGE_EXTRA)
    started = time.monotonic()
    try:
        edge.start()
        fuzz = Fuzz(edge, seed, concurrency=args.concurrency, answer_timeout=args.answer_timeout, save_dir=args.save,
                    log=lambda text: print(text, flush=True), trace=args.trace)

        async def go():
            await fuzz.open()  # the sinks' ports, which the cases' bodies name
            if args.replay:
                cases = [replay_case(path, fuzz.sides) for path in args.replay]
                for i, case in enumerate(cases):
                    case.index = i
            elif args.case:
                cases = [fuzz.make_cases(1, i, flows, unmutated)[0] for i in args.case]
            else:
                cases = fuzz.make_cases(args.cases, 0, flows, unmutated)
            return await fuzz.run(cases, batch=args.batch, warm=not args.no_warm_up)

        stats = asyncio.run(go())
    finally:
        edge.stop()
        redis_server.stop()
        if os.environ.get("E2AE_KEEP_LOGS"):
            print(f"sipfuzz: mediad's and Kamailio's logs kept in {edge.dir}")
    report(stats, seed, time.monotonic() - started)
    return 1 if stats.violations else 0


if __name__ == "__main__":
    sys.exit(main())
