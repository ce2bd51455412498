"""``e2ae-sdp``: show what the edge would do to a call's SDP.

Runs the SDP rules (:func:`sdp_rules.process`) against a simulated AGW
(:mod:`sdp_rules.simulated_agw`), so nothing but this process is involved.

    e2ae-sdp offer --from access OFFER.sdp
    e2ae-sdp call  --from access OFFER.sdp ANSWER.sdp [--json] [--actpass passive] [--bundle on]

Exit status: 0 on success, 2 on bad input (malformed or unacceptable SDP, an
unreadable file, bad arguments) with one line on stderr naming the problem.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from sdp_rules import ActpassPolicy, BundlePolicy, DialogState, Kind, Policy, Side, process
from sdp_rules.errors import PeerError
from sdp_rules.simulated_agw import DESCRIPTION, SimulatedAgw

PROG = "e2ae-sdp"
DIALOG = "e2ae-sdp"
EXIT_BAD_INPUT = 2


class BadInput(Exception):
    """One line for stderr; exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Show what the e2ae edge would do to a call's SDP.",
        epilog=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{offer,call}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--from", dest="origin", choices=[s.value for s in Side], required=True,
                       help="where the offer comes from: access (the WIC/UE) or core (the IMS core)")
        p.add_argument("--json", action="store_true",
                       help="print one JSON object: forwarded_offer, returned_answer (call), plans")
        p.add_argument("--actpass", choices=[a.value for a in ActpassPolicy],
                       default=ActpassPolicy.ACTIVE.value,
                       help="the AGW's setup when access offers a=setup:actpass (default: %(default)s)")
        p.add_argument("--bundle", choices=[b.value for b in BundlePolicy], default=BundlePolicy.ON.value,
                       help="BUNDLE toward access, RFC 9143: the m-lines of a group on one transport "
                            "([policy] bundle; default: %(default)s)")

    offer = sub.add_parser(
        "offer", help="print the offer as forwarded to the other side",
        description="Print OFFER as the edge forwards it (--from access: toward the core; "
                    "--from core: toward access).",
        epilog=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(offer)
    offer.add_argument("offer", type=Path, metavar="OFFER.sdp")

    call = sub.add_parser(
        "call", help="print the forwarded offer and the answer as returned",
        description="Print OFFER as forwarded and ANSWER as returned to the offerer. ANSWER is "
                    "the far side's answer to the forwarded offer, matched to it m-line by m-line.",
        epilog=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(call)
    call.add_argument("offer", type=Path, metavar="OFFER.sdp")
    call.add_argument("answer", type=Path, metavar="ANSWER.sdp")
    return parser


def _read(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise BadInput(f"{path}: {exc.strerror or exc}") from exc


class _Run:
    """One dialog through the rules and the simulated AGW."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.agw = SimulatedAgw()
        self.state = DialogState()
        self.plans: list[dict[str, Any]] = []
        self.transactions = 0

    def step(self, path: Path, origin: Side, kind: Kind) -> str:
        sdp = _read(path)
        self.transactions += 1
        try:
            plan = process(sdp, origin=origin, kind=kind, state=self.state, dialog=DIALOG,
                           transaction=str(self.transactions), policy=self.policy)
            reply = self.agw.answer(plan.iq) if plan.iq is not None else None
            result = plan.finish(reply)
        except PeerError as exc:
            raise BadInput(f"{path}: {exc}") from exc
        self.state = result.state
        self.plans.append({
            "sdp": kind.value,
            "origin": origin.value,
            "forward_to": plan.forward_to.value,
            "streams": [d.to_dict() for d in plan.streams],
            "iq": plan.iq.to_dict() if plan.iq is not None else None,
            "reply": reply.to_dict() if reply is not None else None,
        })
        return result.sdp


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the command; return the JSON object (also the source of the text output)."""
    origin = Side(args.origin)
    other = Side.CORE if origin is Side.ACCESS else Side.ACCESS
    session = _Run(Policy(actpass=ActpassPolicy(args.actpass), bundle=BundlePolicy(args.bundle)))
    out: dict[str, Any] = {"forwarded_offer": session.step(args.offer, origin, Kind.OFFER)}
    if args.command == "call":
        out["returned_answer"] = session.step(args.answer, other, Kind.ANSWER)
    out["plans"] = session.plans
    return out


def _print_text(out: dict[str, Any], origin: Side) -> None:
    other = Side.CORE if origin is Side.ACCESS else Side.ACCESS
    if "returned_answer" not in out:
        sys.stdout.write(out["forwarded_offer"])
        return
    sys.stdout.write(f"# offer forwarded to {other.value}\n")
    sys.stdout.write(out["forwarded_offer"])
    sys.stdout.write(f"# answer returned to {origin.value}\n")
    sys.stdout.write(out["returned_answer"])


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        out = run(args)
    except BadInput as exc:
        message = str(exc).replace("\r", " ").replace("\n", " ")
        print(f"{PROG}: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        if args.json:
            json.dump(out, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            _print_text(out, Side(args.origin))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``| head``): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
