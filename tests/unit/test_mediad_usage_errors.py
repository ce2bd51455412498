"""mediad's runtime invariants raise UsageError (our defect, said as such), not ``assert``.

Each leg answers a reply, a document or a restore only once its port is open; asked
before, it is mediad's own misuse, whatever ``python -O`` does to asserts.
"""

from __future__ import annotations

import asyncio
import types

import pytest
from prometheus_client import CollectorRegistry

from iq import Side, StreamSpec, TerminationSpec, TransportSpec
from mediad.config import Config
from mediad.core.datachannel import MsrpCoreLeg, T140CoreLeg
from mediad.core.session import AccessLeg, CoreLeg, Dialog, Stream
from mediad.core.transport import BundledLeg, BundledSctpLeg, Transport
from mediad.io.tcp import listen
from mediad.metrics import Metrics
from sdp_rules.errors import UsageError


ACCESS = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", remote_address="127.0.0.1", remote_port=9)
CORE = TerminationSpec(Side.CORE, "RTP/AVP", remote_address="127.0.0.3", remote_port=9)


def stream(kind: str = "srtp") -> Stream:
    owner = types.SimpleNamespace(metrics=Metrics(CollectorRegistry()), loop=None, changed=lambda dialog: None,
                                  certificate=None, config=Config(), event=lambda *a, **k: None)
    return Stream(Dialog(owner, "d"), StreamSpec(1, kind, ACCESS, CORE))


def test_session_legs_before_their_ports():
    s = stream()
    access, core = AccessLeg(s, ACCESS), CoreLeg(s, CORE)
    with pytest.raises(UsageError, match="access leg"):
        access.reply("127.0.0.1")
    with pytest.raises(UsageError, match="access leg"):
        access.rtcp_channel
    with pytest.raises(UsageError, match="core leg"):
        core.reply("127.0.0.2")


def test_data_channel_core_legs_before_their_ports():
    s = stream("dc_channel")
    with pytest.raises(UsageError, match="datachannel"):
        T140CoreLeg(s, CORE).reply("127.0.0.2")
    with pytest.raises(UsageError, match="datachannel"):
        MsrpCoreLeg(s, CORE).reply("127.0.0.2")


def test_a_transport_and_its_legs_before_its_port():
    s = stream()
    transport = Transport(s.dialog, TransportSpec(0))
    for call in (lambda: transport.reply("127.0.0.1"), transport.document, lambda: transport.restore({})):
        with pytest.raises(UsageError, match="transport"):
            call()
    with pytest.raises(UsageError, match="bundled leg"):
        BundledLeg(s, transport, ACCESS).reply("127.0.0.1")
    sctp = stream("sctp")

    async def sctp_reply() -> None:  # (aiortc's SCTP transport wants a running loop)
        BundledSctpLeg(sctp, transport, ACCESS).reply("127.0.0.1")

    with pytest.raises(UsageError, match="bundled SCTP leg"):
        asyncio.run(sctp_reply())


def test_ice_tcp_listened_for_before_the_udp_socket():
    channel = types.SimpleNamespace(transport=None, port=40000)
    with pytest.raises(UsageError, match="before its UDP socket"):
        asyncio.run(listen(channel, None))
