"""``python -m bench.rules``: the SDP rules' CPU for one call, from the sources and from the mypyc build.

Theory of operation
-------------------
One call's rules as the plugin runs them: the WIC's WebRTC audio offer
(``bench.soak``'s, the SIPp scenario's shape) planned toward the core, the
core's plain answer planned back, each plan finished with the reply of the
simulated AGW (``sdp_rules.simulated_agw``: the rules' work, no I/O), the
state carried as the plugin carries it (``owned``).  Each variant runs in a
fresh process (the sources, with ``E2AE_COMPILED=0``; the build of
``deploy/compiled.py``, with ``E2AE_COMPILED=1``), warms up, then times
``--calls`` calls ``--rounds`` times with the process's CPU clock and prints
the median and spread of µs per call.  Figures are printed, nothing asserted;
see docs/performance.rst.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _measure(calls: int, rounds: int) -> dict[str, object]:
    from bench.soak import ANSWER, OFFER
    from sdp_rules import DialogState, Kind, Side, process
    from sdp_rules.simulated_agw import SimulatedAgw

    agw = SimulatedAgw()
    offer, answer = OFFER.format(port=50000), ANSWER.format(port=40000)

    def one(n: int) -> None:
        state = DialogState()
        dialog = f"bench-{n}"
        for t, (sdp, origin, kind) in enumerate(((offer, Side.ACCESS, Kind.OFFER), (answer, Side.CORE, Kind.ANSWER))):
            plan = process(sdp, origin=origin, kind=kind, state=state, dialog=dialog, transaction=f"t{t}",
                           owned=True)
            reply = agw.answer(plan.iq) if plan.iq is not None else None
            state = plan.finish(reply).state

    for n in range(max(200, calls // 5)):
        one(n)
    per_call = []
    for r in range(rounds):
        started = time.process_time()
        for n in range(calls):
            one(n)
        per_call.append((time.process_time() - started) / calls * 1e6)
    import sdp_rules.rules

    return {"module": sdp_rules.rules.__file__, "us_per_call": per_call}


def _run(compiled: bool, calls: int, rounds: int) -> dict:
    env = dict(os.environ, E2AE_COMPILED="1" if compiled else "0", PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, "-m", "bench.rules", "--child", "--calls", str(calls),
                          "--rounds", str(rounds)], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        if os.environ.get("E2AE_COMPILED") == "1":
            from deploy import compiled

            why = compiled.stale()
            if why is not None:
                raise SystemExit(f"bench.rules: {why}")
            compiled.use()
        print(json.dumps(_measure(args.calls, args.rounds)))
        return 0
    from deploy import compiled

    variants = [("sources", False)] + ([("compiled", True)] if compiled.stale() is None else [])
    if len(variants) == 1:
        print(f"bench.rules: compiled build not measured: {compiled.stale()}")
    for name, flag in variants:
        got = _run(flag, args.calls, args.rounds)
        us = list(got["us_per_call"])
        print(f"rules, one call (offer + answer, plan + finish), {name}: median {statistics.median(us):.1f} µs, "
              f"rounds {min(us):.1f}-{max(us):.1f} µs ({got['module']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
