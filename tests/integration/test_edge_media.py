"""Full calls with media through the edge: real Kamailio + plugin, mediad, Redis, and real
DTLS-SRTP clients on the access side (aiortc; baresip), a plain RTP endpoint on the core side.

The core endpoint (``deploy.demo_call.CoreEndpoint``) answers PCMU over RTP/AVPF and
sends a 330 Hz tone; the clients send a 440 Hz tone.  "Audio flows" means packets that
are not silence arrive on each side.  After the BYE nothing is left in Redis or mediad.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import struct
import subprocess
import tempfile
import wave
from pathlib import Path

import pytest

from deploy.demo_call import CoreEndpoint, run_call
from tests.integration.edge_harness import assert_no_state_left, running_edge

pytestmark = pytest.mark.integration


@pytest.mark.req("SRTP-1", "SRTP-4", "SRTP-5", "SRTP-8", "ICE-1", "MUX-1")
def test_aiortc_call_dtls_srtp_audio_both_ways(edge):
    result = asyncio.run(asyncio.wait_for(run_call(edge.access, edge.next_hop, 2.0, log=lambda *_: None), 60))
    assert result.status == 200, result.notes
    assert result.dtls_state == "connected"
    # 2 s of 20 ms packets is 100 each way; allow for start-up and jitter-buffer delay.
    assert result.core_tone_packets >= 50, result
    assert result.wic_tone_frames >= 50, result
    assert result.core_rtp_in <= result.wic_rtp_out
    assert result.bye_status == 200 and result.core_bye
    assert "a=setup:active" in result.access_answer and "a=ice-lite" in result.access_answer
    assert "RTP/AVPF" in result.core_offer and "fingerprint" not in result.core_offer
    assert_no_state_left(edge)


# ---------------------------------------------------------------------------
# baresip
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["active", "passive"])
def baresip_edge(request, redis_server):
    # baresip offers a=setup:actpass: with [policy] actpass = active (the default) the AGW is
    # the DTLS client against baresip's RSA-certificate server; with passive, the DTLS server.
    with running_edge(redis_server, actpass=request.param) as e:
        yield e


def _tone_wav(path: Path, seconds: int = 10, frequency: float = 440.0) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * frequency * i / 8000)))
                               for i in range(8000 * seconds)))


def _loud_frames(path: Path) -> int:
    with wave.open(str(path), "rb") as w:
        data = w.readframes(w.getnframes())
    samples = struct.unpack("<%dh" % (len(data) // 2), data[: len(data) // 2 * 2])
    return sum(1 for i in range(0, len(samples), 160) if max(map(abs, samples[i:i + 160]), default=0) > 1000)


@pytest.mark.req("SRTP-1", "SRTP-8")
def test_baresip_call_through_the_edge(baresip_edge):
    edge = baresip_edge
    work = Path(tempfile.mkdtemp(prefix="e2ae-baresip-"))
    try:
        _tone_wav(work / "tone.wav")
        (work / "accounts").write_text("<sip:a@127.0.0.1>;regint=0;mediaenc=dtls_srtp;audio_codecs=PCMU\n")
        (work / "config").write_text(
            "sip_listen 127.0.0.1:0\nnet_interface 127.0.0.1\n"
            "audio_player aubridge,sink\naudio_alert aubridge,sink\n"
            f"audio_source aufile,{work / 'tone.wav'}\n"
            "module_path /usr/lib/baresip/modules\n"
            "module stdio.so\nmodule g711.so\nmodule aufile.so\nmodule aubridge.so\n"
            "module sndfile.so\nmodule dtls_srtp.so\nmodule_app account.so\nmodule_app menu.so\n"
            f"snd_path {work}\n"
        )

        async def call():
            core = CoreEndpoint(edge.next_hop, "127.0.0.3")
            await core.open()
            try:
                with open(work / "baresip.log", "wb") as out:
                    proc = await asyncio.create_subprocess_exec(
                        "baresip", "-f", str(work), "-e", f"/dial sip:demo@127.0.0.1:{edge.conf.access_port}",
                        "-t", "5", stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
                    try:
                        await asyncio.wait_for(proc.wait(), 20)
                    finally:
                        if proc.returncode is None:
                            proc.kill()
                            await proc.wait()
                await asyncio.wait_for(core.bye_received.wait(), 5)
                return core
            finally:
                core.close()

        core = asyncio.run(call())
        log = (work / "baresip.log").read_text(errors="replace")
        assert "verified sha-256 fingerprint OK" in log, log[-3000:]
        assert "DTLS-SRTP complete" in log, log[-3000:]
        assert core.offer is not None and "RTP/AVP" in core.offer.body
        assert core.rtp_in_tone >= 100, (core.rtp_in, core.rtp_in_tone)
        decoded = list(work.glob("dump-*-dec.wav"))
        assert decoded and _loud_frames(decoded[0]) >= 100
        assert core.bye_received.is_set()
        assert_no_state_left(edge)
    finally:
        shutil.rmtree(work, ignore_errors=True)
