"""The IMS-ALG's SDP rules for e2ae security (3GPP TS 23.334 5.11.2, 5.20.2.2, 6.2.10).

Pure functions, no I/O: see :mod:`sdp_rules.plan` for the API and
:mod:`sdp_rules.rules` for the rules themselves.
"""

from iq import Side
from sdp_rules.errors import E2aeError, PeerError, SdpParseError, SdpPolicyError, UnavailableError
from sdp_rules.plan import ActpassPolicy, BundlePolicy, DialogState, Kind, Plan, Policy, Result, StreamDecision

__all__ = [
    "ActpassPolicy", "BundlePolicy", "DialogState", "E2aeError", "Kind", "PeerError", "Plan", "Policy",
    "Result", "SdpParseError", "SdpPolicyError", "Side", "StreamDecision", "UnavailableError",
    "process",
]


def process(sdp, *, origin, kind, state, dialog, transaction, policy=None, owned=False):
    """Plan what to do with one SDP body (see :func:`sdp_rules.rules.process`)."""
    return _process(
        sdp, origin=origin, kind=kind, state=state, dialog=dialog, transaction=transaction,
        policy=policy if policy is not None else Policy(), owned=owned,
    )


# Last: the rules import this package's modules (imported once, not on every call).
from sdp_rules.rules import process as _process  # noqa: E402
