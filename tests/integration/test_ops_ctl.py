"""e2ae-ctl against a real edge with live calls: an aiortc WebRTC call (DTLS-SRTP, media
both ways) and a core-originated SIPp call, listed, shown and ended through Kamailio's dialog module.

The edge runs with ``[policy] dtls_failure = keep`` so that the SIPp call, whose client
does no DTLS, stays up until e2ae-ctl ends it.  What e2ae-ctl prints is checked against
every secret of the calls in play (ice-pwd values, SRTP keys in Redis, the private key).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest

from tests.conftest import REPO
from tests.integration.edge_harness import CONTROL_SECRET, Edge, Sipp
from tests.integration.live_call import LiveCall, secrets_in_play

pytestmark = pytest.mark.integration
EDGE_OPTIONS = {"dtls_failure": "keep"}

CTL = REPO / ".venv" / "bin" / "e2ae-ctl"


async def ctl(edge: Edge, *args: str) -> subprocess.CompletedProcess:
    """Run the installed console script, as an operator would (the call's peers keep running)."""
    return await asyncio.to_thread(
        subprocess.run, [str(CTL), "--config", str(edge.config_path), *args],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def _metric(edge: Edge, series: str) -> float:
    for line in edge.plugin_metrics().splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


async def wait_calls(edge: Edge, count: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        result = await ctl(edge, "--json", "calls")
        assert result.returncode == 0, result.stderr
        calls = json.loads(result.stdout)["calls"]
        if len(calls) >= count or time.monotonic() > deadline:
            return calls
        await asyncio.sleep(0.3)


def test_calls_call_and_end_with_live_aiortc_and_sipp_calls(edge):
    # The SIPp call comes from the core (the aiortc call's core endpoint holds the next hop).
    uas = Sipp("wic_uas.xml", "127.0.0.1", timeout=40, extra=["-recv_timeout", "30000"])
    uac = Sipp("core_call_uac_recv_bye.xml", "127.0.0.3", remote=edge.core, timeout=40,
               keys={"wic_uri": f"sip:wic@127.0.0.1:{uas.port}"}, extra=["-recv_timeout", "30000"])

    async def scenario() -> None:
        live = LiveCall(edge.access, edge.next_hop)
        try:
            await live.start()
            assert live.status == 200 and live.dtls_state == "connected"
            uas.start()
            await asyncio.sleep(0.2)
            uac.start()
            await asyncio.sleep(1.5)  # media flows both ways meanwhile
            calls = await wait_calls(edge, 2)
            assert len(calls) == 2, calls
            by_id = {c["call_id"]: c for c in calls}
            web = by_id.pop(live.call_id)
            (sipp_call_id, sipp_call), = by_id.items()
            mediad = f"127.0.0.1:{edge.conf.control_port}"
            assert web["mediad"] == mediad and sipp_call["mediad"] == mediad
            assert web["caller_side"] == "access" and sipp_call["caller_side"] == "core"
            assert 0 <= web["age_s"] < 30
            (stream,) = web["streams"]
            assert stream["kind"] == "srtp" and stream["dtls"] == "established"
            assert stream["packets_from_access"] > 20 and stream["packets_from_core"] > 20
            (sipp_stream,) = sipp_call["streams"]
            assert sipp_stream["dtls"] != "established"  # SIPp does no DTLS

            text = await ctl(edge, "calls")
            assert text.returncode == 0 and live.call_id in text.stdout and sipp_call_id in text.stdout
            assert "2 call(s)" in text.stdout and "established" in text.stdout

            shown = await ctl(edge, "--json", "call", live.call_id)
            assert shown.returncode == 0, shown.stderr
            detail = json.loads(shown.stdout)
            assert detail["sip"]["callee_tag"] and detail["sip"]["caller_tag"]
            channel = detail["media"]["streams"][0]["access"]["channels"]["rtp"]
            assert channel["state"] == "established" and channel["srtp"] is True
            shown_text = await ctl(edge, "call", live.call_id)
            assert shown_text.returncode == 0 and "DTLS established" in shown_text.stdout

            # Nothing e2ae-ctl printed holds a secret of the calls in play.
            client = edge.redis()
            try:
                secrets = secrets_in_play(client, [live.pc.localDescription.sdp, live.answer])
            finally:
                client.close()
            secrets["control secret (configuration)"] = CONTROL_SECRET
            assert any(name.endswith("base64") for name in secrets) and any("ice-pwd" in n for n in secrets)
            printed = text.stdout + shown.stdout + shown_text.stdout + json.dumps(calls)
            leaked = [name for name, value in secrets.items() if value in printed]
            assert leaked == [], leaked

            # end: BYE to both sides through the dialog module, everything released.
            ended = await ctl(edge, "end", live.call_id)
            assert ended.returncode == 0, ended.stdout + ended.stderr
            assert "media and state released" in ended.stdout
            released_by = ["e2ae-ctl" if "(by e2ae-ctl" in ended.stdout else "kamailio"]
            await asyncio.wait_for(live.bye_received.wait(), 5)
            try:
                await asyncio.wait_for(live.core.bye_received.wait(), 5)
            except asyncio.TimeoutError:
                raise AssertionError("the core got no BYE: " + edge.kamailio_log_text()[-4000:]) from None
            ended = await ctl(edge, "--json", "end", sipp_call_id)
            assert ended.returncode == 0, (ended.stdout + ended.stderr + uac.diagnostics() + uas.diagnostics()
                                           + edge.kamailio_log_text()[-3000:])
            result = json.loads(ended.stdout)
            assert result["released"] is True and result["released_by"] in ("kamailio", "e2ae-ctl")
            released_by.append(result["released_by"])
            # The dialog module's end of a call e2ae-ctl ended counts as the operator's release.
            assert "kamailio" in released_by, released_by
            assert _metric(edge, 'e2ae_plugin_releases_total{reason="operator"}') == released_by.count("kamailio")
            assert _metric(edge, 'e2ae_plugin_releases_total{reason="timeout"}') == 0
            gone = await ctl(edge, "call", live.call_id)
            assert gone.returncode == 1 and "no call with Call-ID" in gone.stderr
            empty = await ctl(edge, "calls")
            assert empty.stdout.endswith("0 call(s)\n")
        finally:
            await live.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 90))
        # SIPp's client and server each received the edge's BYE and answered it.
        assert uac.wait(20) == 0, uac.diagnostics()
        assert uas.wait(20) == 0, uas.diagnostics()
        assert len(uac.received("BYE ")) == 1 and len(uas.received("BYE ")) == 1
    finally:
        uac.stop()
        uas.stop()
    assert edge.wait_no_dialogs() == [] and edge.mediad_dialogs() == []


def test_errors_are_clear(edge):
    async def scenario():
        unknown = await ctl(edge, "end", "no-such-call@127.0.0.1")
        assert unknown.returncode == 1 and "no call with Call-ID 'no-such-call@127.0.0.1'" in unknown.stderr
        usage = await ctl(edge, "frobnicate")
        assert usage.returncode == 2

    asyncio.run(scenario())
