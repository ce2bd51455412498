"""Helpers for the SDP-rule tests: a deterministic fake AGW reply, tls-id generators, SDP text.

The AGW is not under test here: :func:`agw_reply` answers an
:class:`~iq.IqRequest` with plain :class:`~iq.IqReply`
data derived only from the stream ids, so the SDP the rules render can be
written out in full in the tests:

* access termination of stream *n*: ``203.0.113.10`` port ``40000 + 2n``,
  RTCP on ``40001 + 2n`` unless the request muxes RTCP (or the stream is T.38),
  fingerprint :data:`AGW_FP`, ICE ufrag ``agwu<n>`` and pwd
  ``agwpwd<n>`` padded to 24 characters;
* core termination of stream *n*: ``198.51.100.10`` port ``30000 + 2n``,
  RTCP on ``30001 + 2n`` unless muxed or T.38;
* BUNDLE transport *t* (``[policy] bundle = on``, the default): what stream *t*'s
  access termination would get (port ``40000 + 2t``, fingerprint, ICE ``agwu<t>``),
  and a stream on it repeats the transport's address and port, as mediad answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import sdp_rules
from sdp_rules import DialogState, Kind, Policy, Side
from iq import Fingerprint, IqReply, IqRequest, StreamReply, TerminationReply, TransportReply
from sdp_rules.plan import ActpassPolicy, BundlePolicy, Plan, Result

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sdp"

AGW_ACCESS_ADDRESS = "203.0.113.10"
AGW_CORE_ADDRESS = "198.51.100.10"
AGW_FP = Fingerprint("sha-256", ":".join(f"{b:02X}" for b in range(0xA0, 0xC0)))
AGW_FP_TEXT = "sha-256 " + ":".join(f"{b:02X}" for b in range(0xA0, 0xC0))
# A second certificate, for "the AGW picked another fingerprint" cases.
AGW_FP2 = Fingerprint("sha-256", ":".join(f"{b:02X}" for b in range(0x10, 0x30)))

DIALOG = "dlg-1"


def fixture(name: str) -> str:
    """A captured SDP body from tests/fixtures/sdp, byte for byte (CRLF kept)."""
    with open(FIXTURES / name, encoding="ascii", newline="") as f:
        return f.read()


def sdp(text: str) -> str:
    """An SDP body from an indented triple-quoted block: one line each, CRLF endings."""
    lines = [line.strip() for line in text.strip().splitlines()]
    return "\r\n".join(line for line in lines if line) + "\r\n"


def access_port(sid: int) -> int:
    return 40000 + 2 * sid


def core_port(sid: int) -> int:
    return 30000 + 2 * sid


def ice_ufrag(sid: int) -> str:
    return f"agwu{sid}"


def ice_pwd(sid: int) -> str:
    return f"agwpwd{sid}".ljust(24, "x")


def agw_reply(request: IqRequest, *, fingerprint: Fingerprint = AGW_FP) -> IqReply:
    """The fake AGW's answer to ``request`` (see the module docstring)."""
    transports = [TransportReply(t.transport_id, AGW_ACCESS_ADDRESS, access_port(t.transport_id),
                                 local_fingerprint=fingerprint if t.local_fingerprint_request else None,
                                 ice_ufrag=ice_ufrag(t.transport_id), ice_pwd=ice_pwd(t.transport_id))
                  for t in request.transports]
    streams = []
    for spec in request.streams:
        sid = spec.stream_id
        rtp = spec.kind in ("srtp", "srtp_tcp")
        access = core = None
        if spec.access is not None and spec.transport_id is not None:
            access = TerminationReply(local_address=AGW_ACCESS_ADDRESS, local_port=access_port(spec.transport_id))
        elif spec.access is not None:
            port = access_port(sid)
            access = TerminationReply(
                local_address=AGW_ACCESS_ADDRESS,
                local_port=port,
                local_rtcp_port=port + 1 if rtp and not spec.access.rtcp_mux else None,
                local_fingerprint=fingerprint if spec.access.local_fingerprint_request else None,
                ice_ufrag=ice_ufrag(sid),
                ice_pwd=ice_pwd(sid),
            )
        if spec.core is not None:
            port = core_port(sid)
            core = TerminationReply(
                local_address=AGW_CORE_ADDRESS,
                local_port=port,
                local_rtcp_port=port + 1 if rtp and not spec.core.rtcp_mux else None,
            )
        streams.append(StreamReply(sid, access, core))
    return IqReply(request.dialog, request.transaction, streams, transports=transports)


class TlsIds:
    """A deterministic ``Policy.new_tls_id``: ``e2aeTlsId00000000001``, ``...02``, ..."""

    def __init__(self, prefix: str = "e2aeTlsId") -> None:
        self.prefix = prefix
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count:011d}"

    def nth(self, n: int) -> str:
        """The value the n-th call returns (1-based)."""
        return f"{self.prefix}{n:011d}"


def policy(actpass: ActpassPolicy = ActpassPolicy.ACTIVE, **kwargs) -> Policy:
    return Policy(actpass=actpass, new_tls_id=kwargs.pop("new_tls_id", TlsIds()), **kwargs)


def unbundled(actpass: ActpassPolicy = ActpassPolicy.ACTIVE, **kwargs) -> Policy:
    """``policy()`` with ``[policy] bundle = off``: one transport per m-line.

    For the tests whose subject is an m-line's own access termination (its Iq
    DTLS and ICE fields, its port); the same offers bundled, with the fields on
    the transport, are the subject of ``test_rules_bundle.py``.
    """
    return policy(actpass, bundle=BundlePolicy.OFF, **kwargs)


def plan(body: str, origin: Side, kind: Kind, state: DialogState, pol: Policy,
         transaction: str = "t1") -> Plan:
    return sdp_rules.process(body, origin=origin, kind=kind, state=state, dialog=DIALOG,
                             transaction=transaction, policy=pol)


def run(body: str, origin: Side, kind: Kind, state: DialogState, pol: Policy,
        transaction: str = "t1",
        reply: Callable[[IqRequest], IqReply] = agw_reply) -> tuple[Plan, Result]:
    """Plan one SDP, let the fake AGW answer (if asked), finish."""
    p = plan(body, origin, kind, state, pol, transaction)
    return p, p.finish(reply(p.iq) if p.iq is not None else None)


def lines(body: str) -> list[str]:
    return body.split("\r\n")[:-1]


def attrs_of(body: str, index: int) -> list[str]:
    """The lines of media section ``index`` (m= line first)."""
    out: list[list[str]] = []
    for line in lines(body):
        if line.startswith("m="):
            out.append([])
        if out:
            out[-1].append(line)
    return out[index]


def without(body: str, prefixes: Iterable[str]) -> str:
    """``body`` without the lines starting with any of ``prefixes``."""
    keep = [line for line in lines(body) if not any(line.startswith(p) for p in prefixes)]
    return "\r\n".join(keep) + "\r\n"
