"""The edge's own re-INVITE toward the core when a call's media moved (``[pool] takeover = reinvite``).

Real Kamailio with the plugin, mediad, Redis, SIPp on both sides: a WIC-originated
call is up; a ``media_moved`` event (what a survivor mediad publishes once it holds
the dialog's media on its own addresses) names new core-side ports.  The core
must get a re-INVITE inside the dialog (the caller's tag, the callee's, a CSeq
above the caller's, the caller's Contact, the new c=/m=, the o= version one
higher), answer it, get its ACK; the caller's later BYE must reach the core
renumbered above the re-INVITE and its 200 come back to the caller with the
caller's own CSeq (the dialog module's ``track_cseq_updates``).  A core that
refuses the re-INVITE gets the call ended with a BYE each way.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from mediad.redis_keys import EVENTS_CHANNEL
from mediad.takeover import EVENT_MEDIA_MOVED
from plugin.state import dialog_id
from tests.integration.edge_harness import Edge, Sipp

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_state_left")]
# SIPp does no DTLS: "keep" leaves its calls up past mediad's 5 s handshake timeout, which would otherwise
# end a call whose re-INVITE exchange is still going on (a dtls_failed BYE, not the one the test looks at).
EDGE_OPTIONS = {"policy_extra": "bundle = off\n\n[pool]\ntakeover = reinvite", "dtls_failure": "keep"}

NEW_CORE_PORT = 41234


def _header(message, name: str) -> str:
    values = message.header(name)
    assert values, f"no {name} in {message.first_line}"
    return values[0]


def _tag(value: str) -> str:
    match = re.search(r";tag=([^;>\s]+)", value)
    assert match, value
    return match.group(1)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _moved_call(edge: Edge, sipps: list, uas_scenario: str, hold_ms: int):
    """Start a WIC call, publish media_moved for its core side once the core has the ACK."""
    uas = Sipp(uas_scenario, "127.0.0.3")
    uas.port = edge.conf.next_hop_port
    uac = Sipp("wic_call_uac.xml", "127.0.0.1", remote=edge.access, extra=["-s", "callee", "-d", str(hold_ms)])
    sipps += [uas, uac]
    uas.start()
    time.sleep(0.2)
    uac.start()
    invite = _wait(lambda: next(iter(uas.received("INVITE ")), None), 10, "the core's INVITE")
    _wait(lambda: uas.received("ACK "), 10, "the core's ACK")
    call_id = _header(invite, "Call-ID").strip()
    ident = dialog_id(call_id, _tag(_header(invite, "From")))
    client = edge.redis()
    try:
        client.publish(EVENTS_CHANNEL, json.dumps({"event": EVENT_MEDIA_MOVED, "dialog": ident, "side": "core",
                                                   "address": "127.0.0.2", "ports": [NEW_CORE_PORT]}))
    finally:
        client.close()
    assert uac.wait(30) == 0, _log_tail(edge) + uac.diagnostics() + "\n" + uas.diagnostics()
    assert uas.wait(15) == 0, _log_tail(edge) + uas.diagnostics()
    return uas, uac, invite


def _log_tail(edge: Edge) -> str:
    lines = [line for line in edge.kamailio_log_text().splitlines()
             if "e2ae" in line or "ERROR" in line or "WARNING" in line]
    return "\n".join(lines[-30:]) + "\n"


def _sample(metrics: str, sample: str) -> float:
    found = re.search(rf"^{re.escape(sample)} (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else 0.0


def _cseq(message) -> tuple[int, str]:
    number, method = _header(message, "CSeq").split()
    return int(number), method


def test_the_core_gets_a_reinvite_with_the_new_ports_and_later_cseqs_are_renumbered(edge, sipps):
    uas, uac, invite = _moved_call(edge, sipps, "core_uas_moved.xml", 3000)
    invites = uas.received("INVITE ")
    assert len(invites) == 2, uas.diagnostics()
    reinvite = invites[1]
    # Inside the dialog: its Call-ID, the caller's tag as From, the core's as To.
    assert _header(reinvite, "Call-ID") == _header(invite, "Call-ID")
    assert _tag(_header(reinvite, "From")) == _tag(_header(invite, "From"))
    ok = next(m for m in uas.messages() if m.direction == "sent" and m.first_line.startswith("SIP/2.0 200"))
    assert _tag(_header(reinvite, "To")) == _tag(_header(ok, "To"))
    assert _cseq(reinvite) == (2, "INVITE")  # above the caller's INVITE (1)
    assert _header(reinvite, "Contact") == _header(invite, "Contact")  # no target refresh
    assert not reinvite.header("P-K-CSeq-Refresh")
    # The new ports, the o= version one higher, the rest of the offer as before.
    assert f"m=audio {NEW_CORE_PORT} " in reinvite.body
    assert "c=IN IP4 127.0.0.2" in reinvite.body
    old_o = re.search(r"^o=(.*)$", invite.body, re.M).group(1).split()
    new_o = re.search(r"^o=(.*)$", reinvite.body, re.M).group(1).split()
    assert new_o[:2] == old_o[:2] and int(new_o[2]) == int(old_o[2]) + 1
    # tm ACKs the 2xx; the caller's BYE (CSeq 2 at the caller) reaches the core as 3.
    acks = uas.received("ACK ")
    assert [_cseq(a) for a in acks] == [(1, "ACK"), (2, "ACK")]
    bye = uas.received("BYE ")[0]
    assert _cseq(bye) == (3, "BYE")
    bye_ok = [m for m in uac.received("SIP/2.0 200") if _cseq(m)[1] == "BYE"]
    assert bye_ok and _cseq(bye_ok[0]) == (2, "BYE"), uac.diagnostics()
    metrics = edge.plugin_metrics()
    assert re.search(r'e2ae_plugin_reinvites_total\{result="answered",side="core"\} 1\.0', metrics), metrics


def test_a_core_that_refuses_the_reinvite_gets_the_call_ended_both_ways(edge, sipps):
    uas = Sipp("core_uas_moved_refused.xml", "127.0.0.3")
    uas.port = edge.conf.next_hop_port
    uac = Sipp("wic_call_uac_recv_bye.xml", "127.0.0.1", remote=edge.access, extra=["-s", "callee"])
    sipps += [uas, uac]
    uas.start()
    time.sleep(0.2)
    uac.start()
    invite = _wait(lambda: next(iter(uas.received("INVITE ")), None), 10, "the core's INVITE")
    _wait(lambda: uas.received("ACK "), 10, "the core's ACK")
    ident = dialog_id(_header(invite, "Call-ID").strip(), _tag(_header(invite, "From")))
    client = edge.redis()
    try:
        client.publish(EVENTS_CHANNEL, json.dumps({"event": EVENT_MEDIA_MOVED, "dialog": ident, "side": "core",
                                                   "address": "127.0.0.2", "ports": [NEW_CORE_PORT]}))
    finally:
        client.close()
    assert uac.wait(30) == 0, _log_tail(edge) + uac.diagnostics() + "\n" + uas.diagnostics()
    assert uas.wait(15) == 0, uas.diagnostics()
    reinvite = uas.received("INVITE ")[1]
    bye = uas.received("BYE ")[0]
    # The edge's BYE to the core comes after the re-INVITE the core refused: its CSeq is above
    # it (RFC 3261 12.2.2; the dialog module alone would number it from the caller's 1).
    assert _cseq(bye)[0] > _cseq(reinvite)[0]
    metrics = edge.plugin_metrics()
    assert re.search(r'e2ae_plugin_reinvites_total\{result="failed",side="core"\} 1\.0', metrics), metrics
    assert re.search(r'e2ae_plugin_releases_total\{reason="media_lost"\} 1\.0', metrics), metrics


@pytest.mark.parametrize("mline, why", [
    ("m=audio x RTP/AVPF 0", "not a usable SDP"),
    ("a=sendrecv", "0 m-line"),
    ("m=video 40000 RTP/AVPF 96", "m-line 0 is video"),
], ids=["malformed", "its-m-line-dropped", "another-media"])
def test_stray_and_unusable_replies_to_the_reinvite_end_the_call_cleanly(edge, sipps, mline, why):
    """The core answers the edge's re-INVITE with a 200 naming another method in its CSeq (no answer
    to the re-INVITE: the plugin leaves it alone), then a 200 whose SDP the edge cannot use: tm ACKs
    it and the edge ends the call with a BYE each way (RFC 3261 13.2.2.4: ACK, then BYE); that 200
    again after the call ended is ACKed again and changes nothing.  No traceback, no key in Redis,
    no dialog in mediad (no_state_left)."""
    before = edge.plugin_metrics()
    uas = Sipp("core_uas_moved_hostile.xml", "127.0.0.3", keys={"mline": mline})
    uas.port = edge.conf.next_hop_port
    uac = Sipp("wic_call_uac_recv_bye.xml", "127.0.0.1", remote=edge.access, extra=["-s", "callee"])
    sipps += [uas, uac]
    uas.start()
    time.sleep(0.2)
    uac.start()
    invite = _wait(lambda: next(iter(uas.received("INVITE ")), None), 10, "the core's INVITE")
    _wait(lambda: uas.received("ACK "), 10, "the core's ACK")
    ident = dialog_id(_header(invite, "Call-ID").strip(), _tag(_header(invite, "From")))
    client = edge.redis()
    try:
        client.publish(EVENTS_CHANNEL, json.dumps({"event": EVENT_MEDIA_MOVED, "dialog": ident, "side": "core",
                                                   "address": "127.0.0.2", "ports": [NEW_CORE_PORT]}))
    finally:
        client.close()
    assert uac.wait(30) == 0, _log_tail(edge) + uac.diagnostics() + "\n" + uas.diagnostics()
    assert uas.wait(15) == 0, _log_tail(edge) + uas.diagnostics()
    reinvite = uas.received("INVITE ")[1]
    acks = [_cseq(a) for a in uas.received("ACK ")]
    # tm ACKs the unusable 200 and that 200 again after the call ended (RFC 3261 13.2.2.4).
    assert acks == [(1, "ACK"), (_cseq(reinvite)[0], "ACK"), (_cseq(reinvite)[0], "ACK")], acks
    bye = uas.received("BYE ")[0]
    assert _cseq(bye)[0] > _cseq(reinvite)[0]
    metrics = edge.plugin_metrics()  # the edge serves the module's tests: what this one added
    for sample, added in (('e2ae_plugin_reinvites_total{result="failed",side="core"}', 1),
                          ('e2ae_plugin_reinvites_total{result="answered",side="core"}', 0),
                          ('e2ae_plugin_releases_total{reason="media_lost"}', 1)):
        assert _sample(metrics, sample) - _sample(before, sample) == added, (sample, metrics)
    log = edge.kamailio_log_text()
    assert "Traceback" not in log, _log_tail(edge)
    assert re.search(rf"answer to the re-INVITE \(CSeq \d+\) cannot be applied: .*{why}", log), _log_tail(edge)
    print(f"\nACKs the core got: {acks}")
