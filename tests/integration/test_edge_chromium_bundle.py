"""Real Chromium bundling audio and video through the edge (Kamailio + mediad), RFC 9143.

Headless Chromium (``chromium_peer``) offers audio, video and a data channel with
``bundlePolicy`` ``max-bundle`` or ``balanced``; a small SIP UA sends the
offer, unmodified, to the edge's access socket (``[policy] bundle = on``, or
``off`` for the figures before BUNDLE).  The core (``ReflectingCore``, a SIP
UAS on the next hop) answers opus and VP8 on one RTP port per m-line, as cores
do, and sends every RTP packet back under another SSRC: Chromium then decodes
its own audio and video, which crossed mediad twice (access → core, core →
access).  Checked: Chromium's ``getStats`` (packets and decoded video frames
grow on the inbound side, about nothing lost), each core port receives its
m-line's payload type only (mediad demultiplexed the shared transport), a
message Chromium sends on the data channel (SDP-negotiated, RFC 8864: the
test adds its ``a=dcmap`` to the offer it sends) reaches the core as MSRP over
TCP (RFC 8873), and mediad's own count of DTLS handshakes and held access ports for the call: one
and one with BUNDLE, one per m-line without.

Loopback only, in a network namespace of its own (``private_loopback_netns``,
root), as the other Chromium tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import struct
import time

import pytest

from deploy.demo_call import CoreEndpoint, SipUac
from tests.conftest import RedisServer
from tests.integration.chromium_peer import CHROMIUM, ChromiumPeer, interfaces, private_loopback_netns
from tests.integration.edge_harness import Edge, assert_no_state_left, running_edge

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (Debian package chromium)"),
]

MEDIA_SECONDS = 4.0

OFFER_JS = r"""
(async (policy) => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  window.bpc = new RTCPeerConnection({bundlePolicy: policy});
  for (const track of stream.getTracks()) bpc.addTrack(track, stream);
  // An SDP-negotiated channel (RFC 8864): its a=dcmap is added to the offer sent (MUNGE below).
  window.dc = bpc.createDataChannel("chat", {negotiated: true, id: 0, protocol: "msrp"});
  window.sinks = [];
  bpc.ontrack = (event) => {  // decoded frames are counted for a track that plays somewhere
    const element = document.createElement(event.track.kind);
    element.muted = true;
    element.srcObject = new MediaStream([event.track]);
    element.play().catch(() => {});
    document.body.appendChild(element);
    sinks.push(element);
  };
  await bpc.setLocalDescription(await bpc.createOffer());
  if (bpc.iceGatheringState !== "complete") {
    await new Promise((resolve) => bpc.addEventListener("icegatheringstatechange", () => {
      if (bpc.iceGatheringState === "complete") resolve();
    }));
  }
  return bpc.localDescription.sdp;
})
"""

ANSWER_JS = r"""
(async (sdp) => {
  await bpc.setRemoteDescription({type: "answer", sdp});
  const end = Date.now() + 10000;
  while (!["connected", "failed", "closed"].includes(bpc.connectionState) && Date.now() < end) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {state: bpc.connectionState,
          transports: new Set(bpc.getTransceivers().map((t) => t.sender.transport)).size};
})
"""

SEND_JS = r"""
(async (message) => {
  const end = Date.now() + 10000;
  while (dc.readyState !== "open" && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  if (dc.readyState !== "open") return dc.readyState;
  dc.send(message);
  return "sent";
})
"""

# The a=dcmap/a=dcsa lines of the channel Chromium opened with negotiated: true, id 0 (RFC 8864, RFC 8873).
DCMAP = ('a=dcmap:0 label="chat";subprotocol="msrp"\r\na=dcsa:0 msrp-cema\r\na=dcsa:0 accept-types:text/plain\r\n'
         'a=dcsa:0 path:msrp://chromium.invalid:9/wic1;dc\r\n')
MSRP = ("MSRP a786hjs2 SEND\r\nTo-Path: msrp://127.0.0.3:9/core1;tcp\r\nFrom-Path: msrp://chromium.invalid:9/wic1;dc\r\n"
        "Message-ID: 87652\r\nByte-Range: 1-5/5\r\nContent-Type: text/plain\r\n\r\nhello\r\n-------a786hjs2$\r\n")

STATS_JS = r"""
(async () => {
  const report = await bpc.getStats();
  const out = {inbound: {}, outbound: {}, transports: 0};
  report.forEach((s) => {
    if (s.type === "inbound-rtp") out.inbound[s.kind] = {packetsReceived: s.packetsReceived,
      packetsLost: s.packetsLost, framesDecoded: s.framesDecoded || 0};
    if (s.type === "outbound-rtp" && !s.rid) out.outbound[s.kind] = {packetsSent: s.packetsSent};
    if (s.type === "transport") out.transports += 1;
  });
  return out;
})()
"""


class ReflectingCore(CoreEndpoint):
    """The core: answers opus and VP8, one RTP port per m-line (rtcp-mux), and reflects the RTP."""

    async def open(self) -> None:
        await super().open()
        loop = asyncio.get_running_loop()
        self.reflectors = []
        for _ in range(2):
            _, reflector = await loop.create_datagram_endpoint(Reflector, local_addr=(self.media_host, 0))
            self.reflectors.append(reflector)

    def close(self) -> None:
        super().close()
        for reflector in getattr(self, "reflectors", []):
            reflector.transport.close()
        if getattr(self, "msrp_writer", None) is not None:
            self.msrp_reader.cancel()
            self.msrp_writer.close()

    async def _send_rtp(self) -> None:
        """Nothing of its own: it reflects."""

    async def connect_msrp(self) -> None:
        """As the answerer of a passive MSRP offer (RFC 4145, RFC 6135): connect to the AGW's port."""
        offer = self.offer.body
        message = re.search(r"^m=message (\d+) TCP/MSRP", offer, re.M)
        host = re.findall(r"^c=IN IP4 (\S+)", offer, re.M)[-1]
        self.msrp = bytearray()
        reader, self.msrp_writer = await asyncio.open_connection(host, int(message.group(1)))

        async def read() -> None:
            while data := await reader.read(65536):
                self.msrp += data

        self.msrp_reader = asyncio.ensure_future(read())

    def _answer(self) -> str:
        offer = self.offer.body if self.offer else ""
        lines = ["v=0", f"o=core 1 1 IN IP4 {self.media_host}", "s=-", f"c=IN IP4 {self.media_host}", "t=0 0"]
        for section, reflector in zip(re.split(r"\r\nm=", offer)[1:], self.reflectors + [None]):
            kind = section.split(" ", 1)[0]
            if kind == "message":
                lines += ["m=message 9 TCP/MSRP *", "a=accept-types:text/plain", "a=msrp-cema", "a=setup:active",
                          f"a=path:msrp://{self.media_host}:9/core1;tcp", "a=sendrecv"]
                continue
            codec = "opus/48000/2" if kind == "audio" else "VP8/90000"
            pt = re.search(rf"^a=rtpmap:(\d+) {re.escape(codec)}", section, re.M | re.I).group(1)
            reflector.payload_type = int(pt)
            lines += [f"m={kind} {reflector.port} RTP/AVPF {pt}", f"a=rtpmap:{pt} {codec}"]
            lines += [f"a=rtcp-fb:{v}" for v in re.findall(rf"^a=rtcp-fb:({pt} .*?)\r?$", section, re.M)]
            fmtp = re.search(rf"^a=fmtp:{pt} (.*?)\r?$", section, re.M)
            if fmtp:
                lines.append(f"a=fmtp:{pt} {fmtp.group(1)}")
            mid = re.search(r"^a=mid:(\S+)", section, re.M)
            lines += ["a=sendrecv", "a=rtcp-mux"] + ([f"a=mid:{mid.group(1)}"] if mid else [])
        return "\r\n".join(lines) + "\r\n"


MIRROR = 0x5A5A5A5A  # what the reflector XORs every SSRC with: Chromium's stream X comes back as X ^ MIRROR


def mirror_rtcp(data: bytes) -> bytes:
    """An RTCP compound as the reflected stream's sender would send it: every SSRC XORed with
    :data:`MIRROR`, so that reports and feedback about the reflected stream (X ^ MIRROR) reach
    Chromium as being about the stream it sends (X): a NACK gets its packets sent again, a PLI or
    FIR a key frame (RFC 4585 6.2.1, 6.3.1; RFC 5104 4.3.1), as through a core that forwards
    feedback.  SR, RR, RTPFB and PSFB packets are kept (report blocks and FIR entries mapped too);
    SDES, BYE, APP, XR and REMB are left out."""
    out = bytearray()
    at = 0
    while at + 8 <= len(data):
        pt, fmt, length = data[at + 1], data[at] & 0x1F, 4 * (struct.unpack_from("!H", data, at + 2)[0] + 1)
        packet = bytearray(data[at:at + length])
        at += length
        if len(packet) != length:
            break
        if pt in (200, 201):  # SR, RR: the sender, then each report block's source (24 bytes each)
            first = 28 if pt == 200 else 8
            offsets = [4] + [first + 24 * i for i in range(fmt)]
        elif pt == 205 or (pt == 206 and fmt in (1, 4)):  # generic NACK, PLI, FIR
            offsets = [4, 8] + ([12 + 8 * i for i in range((length - 12) // 8)] if pt == 206 and fmt == 4 else [])
        else:
            continue
        for offset in offsets:
            if offset + 4 <= length:
                struct.pack_into("!I", packet, offset, struct.unpack_from("!I", packet, offset)[0] ^ MIRROR)
        out += packet
    return bytes(out)


class Reflector(asyncio.DatagramProtocol):
    """One core m-line's RTP port: counts payload types, sends RTP back under another SSRC, and
    the RTCP that goes with it (:func:`mirror_rtcp`): Chromium's receiver asks its own sender for
    what it lost, as through a real core; without it one lost packet of a video frame stalls the
    decoder for good (no retransmission, no key frame)."""

    def __init__(self) -> None:
        self.payload_types: dict[int, int] = {}
        self.rtcp = 0
        self.payload_type = None
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    @property
    def port(self) -> int:
        return self.transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        if 192 <= data[1] <= 223:
            self.rtcp += 1
            mirrored = mirror_rtcp(data)
            if mirrored:
                self.transport.sendto(mirrored, addr)
            return
        pt = data[1] & 0x7F
        self.payload_types[pt] = self.payload_types.get(pt, 0) + 1
        ssrc = struct.unpack_from("!I", data, 8)[0] ^ MIRROR
        self.transport.sendto(data[:8] + struct.pack("!I", ssrc) + data[12:], addr)


def mediad_metrics(edge: Edge) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{edge.conf.mediad_metrics_port}/metrics", timeout=2).read()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def handshakes(metrics) -> float:
    return sum(v for (name, labels), v in metrics.items()
               if name == "e2ae_mediad_dtls_handshakes_total" and ("result", "ok") in labels)


def access_ports_held(metrics) -> float:
    side = (("side", "access"),)
    return metrics[("e2ae_mediad_ports", side)] - metrics[("e2ae_mediad_ports_free", side)]


async def bundled_call(edge: Edge, policy: str) -> dict:
    out: dict = {}
    peer = ChromiumPeer()
    core = ReflectingCore(edge.next_hop, "127.0.0.3")
    uac = SipUac("127.0.0.1", edge.access)
    try:
        await core.open()
        await uac.open()
        await peer.start()
        out["offer"] = await peer.evaluate(OFFER_JS + f"({json.dumps(policy)})")
        reply = await uac.invite(out["offer"].replace("a=sctp-port:5000\r\n", "a=sctp-port:5000\r\n" + DCMAP))
        out["status"] = reply.status
        if reply.status != 200:
            return out
        out["answer"] = reply.body
        out["core_offer"] = core.offer.body if core.offer else ""
        await core.connect_msrp()
        out["applied"] = await peer.evaluate(ANSWER_JS + f"({json.dumps(reply.body)})")
        if out["applied"]["state"] == "connected":
            out["dc"] = await peer.evaluate(SEND_JS + f"({json.dumps(MSRP)})")
            deadline = time.monotonic() + 5
            while MSRP.encode() not in core.msrp and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            out["msrp"] = bytes(core.msrp)
            await asyncio.sleep(1.0)
            out["first"] = await peer.evaluate(STATS_JS)
            await asyncio.sleep(MEDIA_SECONDS)
            out["second"] = await peer.evaluate(STATS_JS)
        out["metrics"] = mediad_metrics(edge)
        out["core"] = [(r.payload_type, dict(r.payload_types), r.rtcp) for r in core.reflectors]
        await peer.evaluate("bpc.close()")
        out["bye"] = (await uac.bye()).status
        return out
    finally:
        await peer.close()
        peer.stop()
        uac.close()
        core.close()


@pytest.fixture
def netns():
    with private_loopback_netns():
        redis = RedisServer()
        try:
            redis.start()
            yield redis
        finally:
            redis.stop()


@pytest.mark.req("DC-12", "MUX-1")
@pytest.mark.timeout(90)
@pytest.mark.parametrize("policy, bundle", [("max-bundle", "on"), ("balanced", "on"), ("balanced", "off")])
def test_chromium_audio_and_video_both_ways_through_the_edge(netns, policy, bundle):
    assert interfaces() == ["lo"]
    with running_edge(netns, policy_extra=f"bundle = {bundle}") as edge:
        before = mediad_metrics(edge)
        call = asyncio.run(asyncio.wait_for(bundled_call(edge, policy), 70))
        assert call["status"] == 200, (call.get("status"), edge.kamailio_log_text()[-3000:])
        assert call["applied"]["state"] == "connected", call["applied"]
        answer_ports = {int(m) for m in re.findall(r"^m=\w+ (\d+) ", call["answer"], re.M) if m != "0"}
        first, second = call["first"], call["second"]
        # Both ways: what Chromium sent came back through the core and was decoded, nothing lost.
        for kind in ("audio", "video"):
            grown = second["inbound"][kind]["packetsReceived"] - first["inbound"][kind]["packetsReceived"]
            assert grown >= (100 if kind == "audio" else 40), (kind, first, second)
            assert second["inbound"][kind]["packetsLost"] <= 2, second
        assert second["inbound"]["video"]["framesDecoded"] > first["inbound"]["video"]["framesDecoded"] + 20
        # Each core port got its own m-line's media only.
        (audio_pt, audio, audio_rtcp), (video_pt, video, video_rtcp) = call["core"]
        assert set(audio) == {audio_pt} and set(video) == {video_pt}, (call["core"], call["core_offer"])
        assert audio_rtcp and video_rtcp
        # The data channel's message reached the core as MSRP over TCP, unchanged (RFC 8873).
        assert call["dc"] == "sent" and MSRP.encode() in call["msrp"], (call.get("dc"), call.get("msrp"))
        # The transport: handshakes and access ports of the call, counted by mediad.
        done = handshakes(call["metrics"]) - handshakes(before)
        ports = access_ports_held(call["metrics"]) - access_ports_held(before)
        print(f"policy {policy}, bundle {bundle}: {done:.0f} DTLS handshake(s), {ports:.0f} access port(s), "
              f"answer ports {sorted(answer_ports)}")
        if bundle == "on":
            assert "a=group:BUNDLE" in call["answer"] and len(answer_ports) == 1
            assert call["applied"]["transports"] == 1 and second["transports"] == 1
            assert (done, ports) == (1, 1)
        else:  # audio, video and the data channel: one transport each
            assert "a=group:BUNDLE" not in call["answer"] and len(answer_ports) == 3
            assert (done, ports) == (3, 3)
        assert call["bye"] == 200
        assert_no_state_left(edge)


CORE_OFFER = (
    "v=0\r\no=core 1 1 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
    "m=audio {audio} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\na=rtcp-mux\r\n"
    "m=video {video} RTP/AVPF 96\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n"
    "a=sendrecv\r\na=rtcp-mux\r\n"
)

ANSWER_OFFER_JS = r"""
(async (sdp) => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  window.bpc = new RTCPeerConnection();
  window.sinks = [];
  bpc.ontrack = (event) => {
    const element = document.createElement(event.track.kind);
    element.muted = true;
    element.srcObject = new MediaStream([event.track]);
    element.play().catch(() => {});
    document.body.appendChild(element);
    sinks.push(element);
  };
  await bpc.setRemoteDescription({type: "offer", sdp});
  for (const track of stream.getTracks()) bpc.addTrack(track, stream);
  await bpc.setLocalDescription(await bpc.createAnswer());
  if (bpc.iceGatheringState !== "complete") {
    await new Promise((resolve) => bpc.addEventListener("icegatheringstatechange", () => {
      if (bpc.iceGatheringState === "complete") resolve();
    }));
  }
  return bpc.localDescription.sdp;
})
"""

WAIT_JS = r"""
(async () => {
  const end = Date.now() + 10000;
  while (!["connected", "failed", "closed"].includes(bpc.connectionState) && Date.now() < end) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return bpc.connectionState;
})()
"""


def test_chromium_answers_a_core_originated_bundled_offer_and_media_flows(tmp_path):
    """The core offers audio + video; the edge offers Chromium one bundle (the video line bundle-only);
    Chromium answers bundled, connects to mediad's one port, and its media comes back decoded."""
    from sdp_rules import BundlePolicy, DialogState, Kind, Policy, Side, process
    from tests.integration.conftest import Mediad

    async def scenario(mediad: Mediad) -> dict:
        loop = asyncio.get_running_loop()
        reflectors = []
        for _ in range(2):
            _, reflector = await loop.create_datagram_endpoint(Reflector, local_addr=("127.0.0.3", 0))
            reflectors.append(reflector)
        policy, state, out = Policy(bundle=BundlePolicy.ON), DialogState(), {}
        client = mediad.aclient()
        peer = ChromiumPeer()
        try:
            plan = process(CORE_OFFER.format(audio=reflectors[0].port, video=reflectors[1].port), origin=Side.CORE,
                           kind=Kind.OFFER, state=state, dialog="core-bundle", transaction="1", policy=policy)
            result = plan.finish(await client.request(plan.iq))
            out["offer"], out["reserve"] = result.sdp, plan.iq
            await peer.start()
            answer = await peer.evaluate(ANSWER_OFFER_JS + f"({json.dumps(result.sdp)})")
            out["answer"] = answer
            plan = process(answer, origin=Side.ACCESS, kind=Kind.ANSWER, state=result.state, dialog="core-bundle",
                           transaction="2", policy=policy)
            reply = await client.request(plan.iq)
            assert reply.error is None, reply
            plan.finish(reply)
            out["state"] = await peer.evaluate(WAIT_JS)
            if out["state"] == "connected":
                await asyncio.sleep(1.0)
                out["first"] = await peer.evaluate(STATS_JS)
                await asyncio.sleep(MEDIA_SECONDS)
                out["second"] = await peer.evaluate(STATS_JS)
            out["core"] = [dict(r.payload_types) for r in reflectors]
            out["metrics"] = mediad.metrics()
            await client.request(mediad.iq(Command.RELEASE, "core-bundle"))
            return out
        finally:
            await peer.close()
            peer.stop()
            for reflector in reflectors:
                reflector.transport.close()

    from iq import Command

    with private_loopback_netns():
        redis = RedisServer()
        redis.start()
        mediad = Mediad(tmp_path, redis.url)
        try:
            mediad.start()
            out = asyncio.run(asyncio.wait_for(scenario(mediad), 60))
        finally:
            mediad.stop()
            redis.stop()
    assert len(out["reserve"].transports) == 1 and "bundle-only" in out["offer"]
    assert re.search(r"^a=group:BUNDLE 0 1\r?$", out["answer"], re.M), out["answer"]
    assert out["state"] == "connected", out
    first, second = out["first"], out["second"]
    for kind in ("audio", "video"):
        grown = second["inbound"][kind]["packetsReceived"] - first["inbound"][kind]["packetsReceived"]
        assert grown >= (100 if kind == "audio" else 40), (kind, first, second)
    assert second["inbound"]["video"]["framesDecoded"] > first["inbound"]["video"]["framesDecoded"] + 20
    assert set(out["core"][0]) == {0} and set(out["core"][1]) == {96}, out["core"]
    assert handshakes(out["metrics"]) == 1 and access_ports_held(out["metrics"]) == 1
