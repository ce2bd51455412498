"""Real Chromium and the edge's BUNDLE SDP (RFC 9143), without media.

The SDP rules run with ``[policy] bundle = on`` against the simulated AGW
(``sdp_rules.simulated_agw``, as ``e2ae-sdp`` does); headless Chromium
(``tests/integration/chromium_peer.py``) takes the other end of the SDP:

* Chromium offers audio + video + a data channel with ``bundlePolicy``
  ``max-bundle`` and ``balanced``; the edge forwards the offer to a core that
  answers opus and VP8 (and refuses the DCEP-only data channel); Chromium
  applies the edge's bundled answer: every transceiver is kept, and all of
  them share one ``RTCDtlsTransport`` (one ICE agent, one DTLS association).
* The core offers audio + video; the edge's bundled offer (the video line
  ``bundle-only``) is applied by Chromium, whose answer keeps both m-lines in
  one group; the edge takes the transport's DTLS role and fingerprint from it
  and answers the core plain RTP.

No media flows here (the simulated AGW has no sockets); that is for the
integration tests of mediad.  Loopback only, in a network namespace of its own
(``private_loopback_netns``, root).
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from iq import Role
from sdp_rules import BundlePolicy, DialogState, Kind, Policy, Side, process
from sdp_rules.bundle import groups
from sdp_rules.plan import Plan
from sdp_rules.sdp import parse
from sdp_rules.simulated_agw import FINGERPRINT, SimulatedAgw
from tests.integration.chromium_peer import CHROMIUM, ChromiumPeer, private_loopback_netns

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (Debian package chromium)"),
]

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "sdp")

# The page's own RTCPeerConnection is ``pc`` (chromium_peer.PAGE_SCRIPT); these use ``bpc``.
OFFER_JS = r"""
(async (policy) => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  window.bpc = new RTCPeerConnection({bundlePolicy: policy});
  for (const track of stream.getTracks()) bpc.addTrack(track, stream);
  bpc.createDataChannel("chat");
  await bpc.setLocalDescription(await bpc.createOffer());
  if (bpc.iceGatheringState !== "complete") {
    await new Promise((resolve) => bpc.addEventListener("icegatheringstatechange", () => {
      if (bpc.iceGatheringState === "complete") resolve();
    }));
  }
  return bpc.localDescription.sdp;
})
"""

APPLY_ANSWER_JS = r"""
(async (sdp) => {
  await bpc.setRemoteDescription({type: "answer", sdp});
  const transceivers = bpc.getTransceivers();
  return {
    signalingState: bpc.signalingState,
    transceivers: transceivers.map((t) => ({mid: t.mid, stopped: t.stopped, direction: t.currentDirection})),
    transports: new Set(transceivers.map((t) => t.sender.transport)).size,
    sctp: bpc.sctp === null ? null : bpc.sctp.state,
  };
})
"""

ANSWER_OFFER_JS = r"""
(async (sdp) => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  window.bpc = new RTCPeerConnection();
  await bpc.setRemoteDescription({type: "offer", sdp});
  for (const track of stream.getTracks()) bpc.addTrack(track, stream);
  await bpc.setLocalDescription(await bpc.createAnswer());
  if (bpc.iceGatheringState !== "complete") {
    await new Promise((resolve) => bpc.addEventListener("icegatheringstatechange", () => {
      if (bpc.iceGatheringState === "complete") resolve();
    }));
  }
  const transceivers = bpc.getTransceivers();
  return {sdp: bpc.localDescription.sdp,
          transports: new Set(transceivers.map((t) => t.receiver.transport)).size,
          stopped: transceivers.filter((t) => t.stopped).length};
})
"""


class Call:
    """One dialog through the rules with BUNDLE on and the simulated AGW."""

    def __init__(self) -> None:
        self.policy = Policy(bundle=BundlePolicy.ON)
        self.agw = SimulatedAgw()
        self.state = DialogState()
        self.count = 0

    def step(self, body: str, origin: Side, kind: Kind) -> tuple[Plan, str]:
        self.count += 1
        plan = process(body, origin=origin, kind=kind, state=self.state, dialog="chromium-bundle",
                       transaction=str(self.count), policy=self.policy)
        result = plan.finish(self.agw.answer(plan.iq) if plan.iq is not None else None)
        self.state = result.state
        return plan, result.sdp


def core_answer(offer: str) -> str:
    """A plain core's answer to the forwarded offer: opus, VP8 (with its rtx), nothing else."""
    sdp = parse(offer)
    lines = ["v=0", "o=core 1 1 IN IP4 127.0.0.3", "s=-", "c=IN IP4 127.0.0.3", "t=0 0"]
    for n, m in enumerate(sdp.media):
        maps = {v.split(" ", 1)[0]: v.split(" ", 1)[1].lower() for v in m.attributes("rtpmap") if v}
        if m.media == "audio":
            pts = [next(pt for pt in m.fmts if maps.get(pt, "").startswith("opus/"))]
        elif m.media == "video":
            vp8 = next(pt for pt in m.fmts if maps.get(pt, "").startswith("vp8/"))
            rtx = [pt for pt in m.fmts if f"fmtp:{pt} apt={vp8}" in [f"fmtp:{v}" for v in m.attributes("fmtp")]]
            pts = [vp8, *rtx[:1]]
        else:
            lines.append(f"m={m.media} 0 {m.proto} {' '.join(m.fmts)}")
            continue
        lines.append(f"m={m.media} {16000 + 2 * n} {m.proto} {' '.join(pts)}")
        lines += [f"a=rtpmap:{pt} {maps[pt]}" for pt in pts]
        lines += [f"a=fmtp:{v}" for v in m.attributes("fmtp") if v and v.split(" ")[0] in pts]
        lines += [f"a=rtcp-fb:{v}" for v in m.attributes("rtcp-fb") if v and v.split(" ")[0] in pts]
        lines += ["a=sendrecv", "a=rtcp-mux"]
    return "\r\n".join(lines) + "\r\n"


def chromium(coro):
    """Run ``coro(peer)`` against a fresh Chromium in a loopback-only network namespace."""
    async def run():
        peer = await ChromiumPeer().start()
        try:
            return await coro(peer)
        finally:
            await peer.close()

    with private_loopback_netns():
        return asyncio.run(run())


@pytest.mark.parametrize("policy", ["max-bundle", "balanced"])
def test_chromium_applies_the_bundled_answer_to_its_offer(policy):
    async def scenario(peer):
        offer = await peer.evaluate(OFFER_JS + f"({json.dumps(policy)})")
        call = Call()
        offer_plan, forwarded = call.step(offer, Side.ACCESS, Kind.OFFER)
        _, answer = call.step(core_answer(forwarded), Side.CORE, Kind.ANSWER)
        applied = await peer.evaluate(APPLY_ANSWER_JS + f"({json.dumps(answer)})")
        return offer, offer_plan, forwarded, answer, applied

    offer, offer_plan, forwarded, answer, applied = chromium(scenario)
    # One transport asked of the AGW for audio and video; the core gets no group.
    assert len(offer_plan.iq.transports) == 1 and offer_plan.iq.transports[0].tls_role is Role.CLIENT
    assert [s.transport_id for s in offer_plan.iq.streams] == [0, 0]
    assert groups(parse(forwarded)) == []
    out = parse(answer)
    assert groups(out) == [["0", "1"]]
    assert out.media[0].port == out.media[1].port != 0 and out.media[2].port == 0
    assert sum(len(m.attributes("fingerprint")) for m in out.media) == 1
    assert sum(len(m.attributes("tls-id")) for m in out.media) == 1
    assert applied["signalingState"] == "stable"
    assert [(t["mid"], t["stopped"]) for t in applied["transceivers"]] == [("0", False), ("1", False)]
    assert applied["transports"] == 1
    assert applied["sctp"] is None  # the DCEP-only data channel is refused (port 0)


def test_chromium_answers_the_edges_bundled_offer_bundled():
    with open(os.path.join(FIXTURES, "core_audio_video_offer.sdp"), newline="") as f:
        core_offer = f.read()
    call = Call()
    _, to_access = call.step(core_offer, Side.CORE, Kind.OFFER)

    async def scenario(peer):
        return await peer.evaluate(ANSWER_OFFER_JS + f"({json.dumps(to_access)})")

    answered = chromium(scenario)
    assert answered["stopped"] == 0 and answered["transports"] == 1
    answer = parse(answered["sdp"])
    assert groups(answer) == [["0", "1"]]
    plan, to_core = call.step(answered["sdp"], Side.ACCESS, Kind.ANSWER)
    transport = plan.iq.transports[0]
    assert transport.tls_role is Role.SERVER and not transport.establish_tls  # Chromium answers active
    assert transport.remote_fingerprints and transport.remote_fingerprints[0].hash_func == "sha-256"
    assert all(s.transport_id == 0 for s in plan.iq.streams)
    core = parse(to_core)
    assert [m.proto for m in core.media] == ["RTP/AVP", "RTP/AVPF"]
    assert groups(core) == [] and not any(m.has_attribute("mid") for m in core.media)
    assert str(FINGERPRINT) in to_access
