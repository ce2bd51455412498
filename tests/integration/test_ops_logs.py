"""Logs of real calls at DEBUG level: one JSON line per call event, and never a secret.

The edge runs with ``log_level = DEBUG`` (mediad and the plugin) and ``log_format = json``.  An aiortc WebRTC call completes DTLS-SRTP and carries media,
a second one offers the wrong certificate fingerprint (its DTLS fails and the edge ends
it), and SIPp sends a malformed offer.  While the calls are up the test reads from Redis
the SRTP master keys and salts mediad derived, the ice-pwd values of every SDP, and the
certificate's private key; then it greps every log (Kamailio's, mediad's) for each.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.integration.edge_harness import CONTROL_SECRET, Sipp
from tests.integration.live_call import LiveCall, secrets_in_play

pytestmark = pytest.mark.integration
EDGE_OPTIONS = {"log_level": "DEBUG", "log_format": "json"}


def _json_lines(text: str, start: str = "") -> list[dict]:
    out = []
    for line in text.splitlines():
        at = line.find("{", line.find(start) if start else 0)
        if at < 0 or (start and start not in line):
            continue
        try:
            out.append(json.loads(line[at:]))
        except ValueError:
            continue
    return out


def test_call_logs_at_debug_level_hold_no_key_no_ice_pwd_no_private_key(edge):
    secrets: dict[str, str] = {"control secret (configuration)": CONTROL_SECRET}

    def collect(sdps: list[str]) -> None:
        client = edge.redis()
        try:
            secrets.update(secrets_in_play(client, sdps))
        finally:
            client.close()

    async def calls() -> tuple[LiveCall, LiveCall]:
        good = LiveCall(edge.access, edge.next_hop)
        try:
            await good.start()
            await asyncio.sleep(1.5)
            collect([good.pc.localDescription.sdp, good.answer])  # while mediad holds the keys
            assert (await good.hang_up()) == 200
        finally:
            await good.close()
        bad = LiveCall(edge.access, edge.next_hop, wrong_fingerprint=True)
        try:
            await bad.start()
            collect([bad.pc.localDescription.sdp, bad.answer])
            await asyncio.wait_for(bad.bye_received.wait(), 15)
        finally:
            await bad.close()
        return good, bad

    good, bad = asyncio.run(asyncio.wait_for(calls(), 60))
    assert good.dtls_state == "connected" and bad.bye_received.is_set()
    malformed = Sipp("wic_malformed_uac.xml", "127.0.0.1", remote=edge.access, extra=["-s", "callee"])
    try:
        assert malformed.run() == 0, malformed.diagnostics()
    finally:
        malformed.stop()
    left = edge.wait_no_dialogs()
    assert left == [], (left, [line for line in edge.mediad_log.read_text(errors="replace").splitlines()
                               if any(key.rsplit("}", 1)[-1] in line for key in left)][-40:])
    assert edge.mediad_dialogs() == []

    # What there was to leak: keys of the established call, both ice-pwd of both calls, the key.
    assert sum(name.endswith(" base64") for name in secrets) >= 4, sorted(secrets)
    assert sum(name.startswith("ice-pwd") for name in secrets) >= 4, sorted(secrets)
    assert any(name.startswith("private key") for name in secrets)

    kamailio, mediad = edge.kamailio_log_text(), edge.mediad_log.read_text(errors="replace")
    for name, text in (("kamailio", kamailio), ("mediad", mediad)):
        leaked = [secret for secret, value in secrets.items() if value in text]
        assert leaked == [], f"{name}'s log shows {leaked}"

    # The logs are the DEBUG ones, and call events are JSON lines with their context.
    events = _json_lines(mediad)
    assert any(e["level"] == "DEBUG" for e in events), mediad[-2000:]
    established = [e for e in events if e.get("event") == "dtls_established"]
    assert established and all({"dialog", "stream", "leg", "component"} <= set(e) for e in established)
    failed = [e for e in events if e.get("event") == "dtls_failed"]
    assert failed and failed[0]["reason"] == "fingerprint_mismatch"
    plugin = _json_lines(kamailio, "e2ae: ")
    assert any(e["level"] == "DEBUG" and e.get("call_id") == good.call_id for e in plugin), kamailio[-2000:]
    released = {e["call_id"] for e in plugin if e.get("event") == "released"}
    assert {good.call_id, bad.call_id} <= released
    reserved = [e for e in plugin if e.get("event") == "reserved"]
    assert {good.call_id, bad.call_id} <= {e["call_id"] for e in reserved}
    assert all(e["dialog"] for e in reserved)
    assert any(e.get("event") == "dtls_failed" and e["call_id"] == bad.call_id and e["stream"] is not None
               for e in plugin)
