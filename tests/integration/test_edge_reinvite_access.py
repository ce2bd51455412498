"""The edge's own re-INVITE toward the WIC, the caller, when the call's access media moved.

Real Kamailio with the plugin, mediad, Redis, SIPp on both sides: a WIC-originated
call (BUNDLE) is up; a ``media_moved`` event for the access side (what a survivor
mediad publishes once it gave the WIC new terminations: port, ICE credentials,
certificate) reaches the plugin.  The WIC must get a re-INVITE inside the dialog
speaking as the callee (From: the core's tag, To: the WIC's, a CSeq in the core's
space, the core's Contact) whose offer names the new transport with
``a=setup:actpass``, a new tls-id and the survivor's fingerprint; tm ACKs the
WIC's 200.  Then the core's BYE (its own CSeq 1) must reach the WIC raised above
the re-INVITE (RFC 3261 12.2.2: else the WIC answers 500), and the WIC's 200 must
reach the core with the core's own CSeq.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from mediad.redis_keys import EVENTS_CHANNEL
from mediad.takeover import EVENT_MEDIA_MOVED
from plugin.state import dialog_id, dialog_key
from tests.integration.edge_harness import Edge, Sipp
from tests.integration.test_edge_reinvite import _cseq, _header, _log_tail, _tag, _wait

pytestmark = pytest.mark.integration

NEW_PORT = 41236
NEW_FINGERPRINT = "sha-256 " + ":".join(["5A"] * 32)


@pytest.fixture(scope="module")
def edge(redis_server):
    e = Edge(redis_server, policy_extra="bundle = on\n\n[pool]\ntakeover = reinvite")
    try:
        e.start()
        yield e
    finally:
        e.stop()


@pytest.fixture(autouse=True)
def _clean(edge):
    yield
    leftover = edge.wait_no_dialogs()
    assert leftover == [], f"state left in Redis: {leftover}"
    assert edge.mediad_dialogs() == []


@pytest.fixture
def sipps():
    started: list[Sipp] = []
    yield started
    for s in started:
        s.stop()


def test_the_wic_gets_a_reinvite_as_from_the_callee_and_the_cores_later_bye_is_renumbered(edge, sipps):
    uas = Sipp("core_uas_sends_bye_late.xml", "127.0.0.3")
    uas.port = edge.conf.next_hop_port
    uac = Sipp("wic_call_uac_reinvited.xml", "127.0.0.1", remote=edge.access, extra=["-s", "callee"])
    sipps += [uas, uac]
    uas.start()
    time.sleep(0.2)
    uac.start()
    invite = _wait(lambda: next(iter(uas.received("INVITE ")), None), 10, "the core's INVITE")
    _wait(lambda: uas.received("ACK "), 10, "the core's ACK")
    ident = dialog_id(_header(invite, "Call-ID").strip(), _tag(_header(invite, "From")))
    client = edge.redis()
    try:
        record = json.loads(client.get(dialog_key(ident)))
        (tid,) = record["rules"]["data"]["transports"]
        client.publish(EVENTS_CHANNEL, json.dumps({
            "event": EVENT_MEDIA_MOVED, "dialog": ident, "side": "access", "address": "127.0.0.1",
            "fingerprint": NEW_FINGERPRINT, "streams": [],
            "transports": [{"transport_id": int(tid), "port": NEW_PORT, "ice_ufrag": "NewU",
                            "ice_pwd": "newpasswordnewpassword1"}]}))
    finally:
        client.close()
    assert uac.wait(30) == 0, _log_tail(edge) + uac.diagnostics() + "\n" + uas.diagnostics()
    assert uas.wait(15) == 0, _log_tail(edge) + uas.diagnostics()

    wic_invites = uac.received("INVITE ")
    assert len(wic_invites) == 1, uac.diagnostics()
    reinvite = wic_invites[0]
    wic_ok = next((m for m in uac.messages() if m.direction == "sent" and m.first_line.startswith("SIP/2.0 200")
                   and _cseq(m) == (1, "INVITE")), None)
    core_ok = next(m for m in uas.messages() if m.direction == "sent" and m.first_line.startswith("SIP/2.0 200"))
    # Inside the dialog, spoken as the callee: From/To swapped, the core's Contact.
    assert _header(reinvite, "Call-ID") == _header(invite, "Call-ID")
    assert _tag(_header(reinvite, "From")) == _tag(_header(core_ok, "To"))
    assert _tag(_header(reinvite, "To")) == _tag(_header(invite, "From"))
    assert _header(reinvite, "Contact") == _header(core_ok, "Contact")
    # The core's space: it has sent no request yet (the dialog module shows 0 for it).
    assert _cseq(reinvite) == (1, "INVITE")
    assert reinvite.first_line.startswith("INVITE sip:wic@127.0.0.1:")  # the WIC's Contact
    # The offer: the new transport, an ICE restart, a new association with the survivor's certificate.
    body = reinvite.body
    assert f"m=audio {NEW_PORT} UDP/TLS/RTP/SAVPF" in body and "a=ice-ufrag:NewU" in body
    assert f"a=fingerprint:{NEW_FINGERPRINT}" in body and "a=setup:actpass" in body
    answered = next(m for m in uac.received("SIP/2.0 200") if _cseq(m) == (1, "INVITE"))
    old_tls = re.search(r"^a=tls-id:(\S+)", answered.body, re.M)
    new_tls = re.search(r"^a=tls-id:(\S+)", body, re.M)
    assert new_tls and old_tls and new_tls.group(1) != old_tls.group(1)
    assert wic_ok is not None
    # tm ACKs the WIC's 2xx itself, with the re-INVITE's number.
    assert [_cseq(a) for a in uac.received("ACK ")] == [(1, "ACK")]
    # The core's BYE (its CSeq 1) reaches the WIC above the re-INVITE (1 + 2); the 200 goes back as 1.
    (bye,) = uac.received("BYE ")
    assert _cseq(bye) == (3, "BYE")
    assert [_cseq(m) for m in uas.received("SIP/2.0 200")] == [(1, "BYE")], _log_tail(edge) + uas.diagnostics()
    metrics = edge.plugin_metrics()
    assert re.search(r'e2ae_plugin_reinvites_total\{result="answered",side="access"\} 1\.0', metrics), metrics
