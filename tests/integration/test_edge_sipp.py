"""End to end through the edge: SIPp on both sides, real Kamailio + plugin, mediad, Redis.

Each test runs one pair of scenarios from ``sipp_scenarios/`` (the far side
logs what it received with ``-trace_msg``) and checks the SDP the far side got,
line by line, against the expected rewrite.  Placeholders ``{name}`` stand for
values chosen at run time (mediad's ports, ICE credentials, tls-id); a name
used twice must match the same value, and a few are checked against what they
must be (mediad's certificate fingerprint, the tls-id of an earlier answer).
After every call nothing of it may be left in Redis or in mediad.
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from tests.integration.edge_harness import CONTROL_SECRET, Edge, Sipp

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_state_left")]

PLACEHOLDER = re.compile(r"\{(\w+)\}")
TOKEN = r"[^ ]+"


# The scenarios play a WIC and a UE whose SDP is written out here line by line with one transport
# per m-line; [policy] bundle = off keeps that rewrite (RFC 5761 RTCP fallback port included).  The
# bundled rewrite is test_rules_bundle*.py's and the Chromium tests' subject.
UNBUNDLED = "bundle = off"
EDGE_OPTIONS = {"policy_extra": UNBUNDLED}


def agw_fingerprint(edge: Edge) -> str:
    match = re.findall(r"fingerprint sha-256 ([0-9A-F:]+)", edge.mediad_log.read_text())
    assert match, "mediad logged no fingerprint"
    return match[-1]


def match_lines(got: list[str], expected: str) -> dict[str, str]:
    """Compare SDP lines with an expected text, line by line; return the placeholders' values."""
    want = [line.strip() for line in expected.strip().splitlines()]
    assert len(got) == len(want), "line count differs:\n" + "\n".join(got)
    values: dict[str, str] = {}
    for n, (line, pattern) in enumerate(zip(got, want)):
        names = PLACEHOLDER.findall(pattern)
        regex = "".join(
            f"({TOKEN})" if i % 2 else re.escape(part)
            for i, part in enumerate(PLACEHOLDER.split(pattern))
        )
        m = re.fullmatch(regex, line)
        assert m, f"line {n + 1}: {line!r} does not match {pattern!r}"
        for name, value in zip(names, m.groups()):
            assert values.setdefault(name, value) == value, f"{{{name}}} is {values[name]} and {value}"
    return values


def run_pair(uas: Sipp, uac: Sipp) -> None:
    uas.start()
    time.sleep(0.2)
    rc_uac = uac.run()
    rc_uas = uas.wait(15)
    assert rc_uac == 0, uac.diagnostics() + "\n" + uas.diagnostics()
    assert rc_uas == 0, uas.diagnostics()


def core_uas(edge: Edge, scenario: str = "core_uas.xml", tcp: bool = False) -> Sipp:
    s = Sipp(scenario, "127.0.0.3", extra=["-t", "t1"] if tcp else [])
    s.port = edge.conf.next_hop_port
    return s


def wic_uac(edge: Edge, scenario: str = "wic_call_uac.xml", **keys: str) -> Sipp:
    return Sipp(scenario, "127.0.0.1", remote=edge.access, keys=keys, extra=["-s", "callee", "-d", "100"])


CORE_OFFER = """
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=msid-semantic: WMS wicstream
m=audio {core_port} RTP/AVPF 111 0 8 126
c=IN IP4 127.0.0.2
b=AS:60
a=mid:0
a=sendrecv
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:126 telephone-event/8000
a=ptime:20
a=ssrc:3570614608 cname:4TOk42mSjXCkVIa6
"""

ACCESS_ANSWER = """
v=0
o=core 1 1 IN IP4 127.0.0.3
s=-
c=IN IP4 127.0.0.1
t=0 0
a=ice-lite
m=audio {port} UDP/TLS/RTP/SAVPF 0 126
b=AS:68
a=rtpmap:0 PCMU/8000
a=rtpmap:126 telephone-event/8000
a=ptime:20
a=sendrecv
a=rtcp-mux
a=ice-ufrag:{ufrag}
a=ice-pwd:{pwd}
a=candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host
a=end-of-candidates
a=fingerprint:sha-256 {fp}
a=setup:active
a=tls-id:{tls_id}
"""

OFFER_TLS_ID = "6ba1e1b4d7c5a3f2e0d9c8b7a6f5e4d3"


def _wic_call(edge, sipps, scenario="wic_call_uac.xml", uas_scenario="core_uas.xml", tcp=False, **keys):
    uas, uac = core_uas(edge, uas_scenario, tcp), wic_uac(edge, scenario, **keys)
    sipps += [uas, uac]
    run_pair(uas, uac)
    return uas, uac


@pytest.mark.req("SRTP-1", "SRTP-3", "SRTP-4", "SRTP-5", "ICE-1", "MUX-1", "G-2")
def test_wic_originated_call(edge, sipps):
    uas, uac = _wic_call(edge, sipps)
    invites = uas.received("INVITE ")
    assert len(invites) == 1
    offer = invites[0]
    assert offer.header("Content-Type") == ["application/sdp"]
    core = match_lines(offer.body_lines, CORE_OFFER)
    assert 1024 <= int(core["core_port"]) < 65536
    oks = uac.received("SIP/2.0 200")
    answer = [m for m in oks if m.header("CSeq") == ["1 INVITE"]][0]
    values = match_lines(answer.body_lines, ACCESS_ANSWER)
    assert values["fp"] == agw_fingerprint(edge)
    assert values["tls_id"] != OFFER_TLS_ID and len(values["tls_id"]) >= 16
    ringing = uac.received("SIP/2.0 180")
    assert ringing and ringing[0].body == ""
    assert [m.first_line.split()[0] for m in uas.received()] == ["INVITE", "ACK", "BYE"]
    metrics = edge.plugin_metrics()
    assert re.search(r'e2ae_plugin_sdp_rewrites_total\{direction="access_to_core",kind="offer",result="rewritten"\} [1-9]', metrics)
    assert re.search(r'e2ae_plugin_sdp_rewrites_total\{direction="core_to_access",kind="answer",result="rewritten"\} [1-9]', metrics)
    assert re.search(r'e2ae_plugin_iq_latency_seconds_count\{command="reserve"\} [1-9]', metrics)
    assert re.search(r'e2ae_plugin_releases_total\{reason="bye"\} [1-9]', metrics)


@pytest.mark.req("SRTP-1", "SRTP-4")
def test_wic_call_with_a_multipart_offer_keeps_its_location(edge, sipps):
    """An emergency-style INVITE (RFC 6442): the SDP part is rewritten, the PIDF-LO part and
    the multipart Content-Type (its boundary) reach the core as they were sent.  The INVITE
    is over 1300 bytes: it reaches the core over TCP (RFC 3261 18.1.1)."""
    uas, uac = _wic_call(edge, sipps, "wic_multipart_uac.xml", tcp=True)
    sent = [m for m in uac.messages() if m.direction == "sent" and m.first_line.startswith("INVITE ")][0]
    offer = uas.received("INVITE ")[0]
    ctype = 'multipart/mixed; boundary="e2ae-b0undary"'
    assert sent.header("Content-Type") == offer.header("Content-Type") == [ctype]
    parts = offer.body.split("--e2ae-b0undary")
    assert parts[0] == "" and parts[-1].strip() == "--" and len(parts) == 4
    sdp_part, location = parts[1], parts[2]
    assert location == sent.body.split("--e2ae-b0undary")[2]  # the location, as the WIC sent it
    assert "application/pidf+xml" in location and "e2ae test location" in location
    sdp_head, sdp = sdp_part.split("\n\n", 1)
    assert sdp_head.strip() == "Content-Type: application/sdp"
    core = match_lines([line for line in sdp.split("\n") if line], CORE_OFFER)
    assert 1024 <= int(core["core_port"]) < 65536
    # The plain answer from the core comes back to the WIC as a DTLS-SRTP answer.
    answer = [m for m in uac.received("SIP/2.0 200") if m.header("CSeq") == ["1 INVITE"]][0]
    assert answer.header("Content-Type") == ["application/sdp"]
    assert match_lines(answer.body_lines, ACCESS_ANSWER)["fp"] == agw_fingerprint(edge)
    assert edge.wait_no_dialogs() == [] and edge.mediad_dialogs() == []


ACCESS_OFFER_FROM_CORE = """
v=0
o=core 53655765 2353687637 IN IP4 127.0.0.3
s=-
c=IN IP4 127.0.0.1
t=0 0
a=ice-lite
m=audio {port} UDP/TLS/RTP/SAVP 0 8 101
b=AS:68
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
a=rtcp-mux
a=ice-ufrag:{ufrag}
a=ice-pwd:{pwd}
a=candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host
a=candidate:1 2 udp 2130706430 127.0.0.1 {rtcp_port} typ host
a=end-of-candidates
a=fingerprint:sha-256 {fp}
a=setup:actpass
a=tls-id:{tls_id}
"""

CORE_ANSWER_FROM_WIC = """
v=0
o=- 7352906127482119214 2 IN IP4 127.0.0.1
s=-
t=0 0
a=msid-semantic: WMS wicanswer
m=audio {port} RTP/AVP 0 101
c=IN IP4 127.0.0.2
b=AS:64
a=mid:0
a=sendrecv
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=ptime:20
"""


@pytest.mark.req("SRTP-1", "SRTP-3", "SRTP-6", "SRTP-7", "ICE-1", "G-2")
def test_core_originated_call(edge, sipps):
    wic = Sipp("wic_uas.xml", "127.0.0.1")
    core = Sipp("core_call_uac.xml", "127.0.0.3", remote=edge.core,
                keys={"wic_uri": ""}, extra=["-d", "100"])
    core.keys["wic_uri"] = f"sip:wic@127.0.0.1:{wic.port}"
    sipps += [wic, core]
    run_pair(wic, core)
    offer = wic.received("INVITE ")[0]
    values = match_lines(offer.body_lines, ACCESS_OFFER_FROM_CORE)
    assert values["fp"] == agw_fingerprint(edge)
    # rtcp-mux offered, not mux-only: an RTCP candidate on the next port as a fallback (RFC 5761 5.1.3)
    assert int(values["rtcp_port"]) == int(values["port"]) + 1
    ok = [m for m in core.received("SIP/2.0 200") if m.header("CSeq") == ["1 INVITE"]][0]
    lines = ok.body_lines
    # The core offered no rtcp-mux: RTCP toward the core stays on port + 1 (MUX-1).
    match_lines(lines, CORE_ANSWER_FROM_WIC)
    for line in lines:
        assert not line.startswith(("a=setup", "a=fingerprint", "a=tls-id", "a=ice-", "a=candidate")), line
    assert [m.first_line.split()[0] for m in wic.received()] == ["INVITE", "ACK", "BYE"]


def _answers(uac: Sipp) -> list[dict[str, str]]:
    out = []
    for m in uac.received("SIP/2.0 200"):
        if m.header("CSeq")[0].endswith("INVITE"):
            out.append(match_lines(m.body_lines, ACCESS_ANSWER))
    return out


@pytest.mark.req("SRTP-3")
def test_reinvite_same_tls_id_keeps_association(edge, sipps):
    uas, uac = _wic_call(edge, sipps, "wic_reinvite_uac.xml", "core_uas_reinvite.xml",
                         reinvite_tls_id=OFFER_TLS_ID)
    first, second = _answers(uac)
    # RFC 8842 5.2: the same tls-id from the offerer keeps the association, so the
    # answer keeps its tls-id, fingerprint and transport.
    assert second["tls_id"] == first["tls_id"]
    assert second["port"] == first["port"]
    assert second["fp"] == first["fp"] == agw_fingerprint(edge)
    reoffer = uas.received("INVITE ")[1]
    core = match_lines(reoffer.body_lines, CORE_OFFER.replace(" 2 IN IP4", " 3 IN IP4"))
    first_core = match_lines(uas.received("INVITE ")[0].body_lines, CORE_OFFER)
    assert core["core_port"] == first_core["core_port"]


@pytest.mark.req("SRTP-3")
def test_reinvite_new_tls_id_new_association(edge, sipps):
    uas, uac = _wic_call(edge, sipps, "wic_reinvite_uac.xml", "core_uas_reinvite.xml",
                         reinvite_tls_id="9f8e7d6c5b4a39281706f5e4d3c2b1a0")
    first, second = _answers(uac)
    assert second["tls_id"] != first["tls_id"]
    assert second["tls_id"] not in (OFFER_TLS_ID, "9f8e7d6c5b4a39281706f5e4d3c2b1a0")
    assert second["fp"] == agw_fingerprint(edge)


CORE_T38_OFFER = """
v=0
o=- 4611731400430051336 3 IN IP4 127.0.0.1
s=-
t=0 0
m=image {port} {udptl} t38
c=IN IP4 127.0.0.2
a=ptime:20
a=T38FaxVersion:0
a=T38MaxBitRate:14400
a=T38FaxRateManagement:transferredTCF
a=T38FaxMaxBuffer:262
a=T38FaxMaxDatagram:176
a=T38FaxUdpEC:t38UDPRedundancy
"""

ACCESS_T38_ANSWER = """
v=0
o=core 1 2 IN IP4 127.0.0.3
s=-
c=IN IP4 127.0.0.1
t=0 0
m=image {port} UDP/TLS/UDPTL t38
a=ptime:20
a=T38FaxVersion:0
a=T38MaxBitRate:14400
a=T38FaxRateManagement:transferredTCF
a=T38FaxMaxBuffer:262
a=T38FaxMaxDatagram:176
a=T38FaxUdpEC:t38UDPRedundancy
a=fingerprint:sha-256 {fp}
a=setup:active
a=tls-id:{tls_id}
"""


@pytest.mark.req("T38-1", "T38-2", "T38-4", "T38-5")
def test_audio_switched_to_t38(edge, sipps):
    uas, uac = _wic_call(edge, sipps, "wic_t38_uac.xml", "core_uas_t38.xml")
    reoffer = uas.received("INVITE ")[1]
    core = match_lines(reoffer.body_lines, CORE_T38_OFFER)
    assert core["udptl"].upper() == "UDPTL"  # the registered token is "udptl" (RFC 3362)
    answer = [m for m in uac.received("SIP/2.0 200") if m.header("CSeq") == ["2 INVITE"]][0]
    values = match_lines(answer.body_lines, ACCESS_T38_ANSWER)
    assert values["fp"] == agw_fingerprint(edge)
    assert values["tls_id"] != "0f5ee9d2b1a0c8e7f6d5c4b3a2918071"


def test_cancel_releases_everything(edge, sipps):
    failures = _metric(edge, 'e2ae_plugin_releases_total{reason="failure"}')
    uas, uac = core_uas(edge, "core_uas_cancel.xml"), wic_uac(edge, "wic_cancel_uac.xml")
    sipps += [uas, uac]
    run_pair(uas, uac)
    assert [m.first_line.split()[0] for m in uas.received()] == ["INVITE", "CANCEL", "ACK"]
    assert re.search(r'e2ae_plugin_releases_total\{reason="(cancel|failure)"\} [1-9]', edge.plugin_metrics())
    # The CANCEL itself releases nothing (a 200 may cross it): the 487 does.
    assert edge.wait_no_dialogs() == []
    assert _released(edge, "failure", failures) == 1
    assert _metric(edge, 'e2ae_plugin_releases_total{reason="cancel"}') == 0


def test_bye_from_core(edge, sipps):
    uas, uac = core_uas(edge, "core_uas_sends_bye.xml"), wic_uac(edge, "wic_call_uac_recv_bye.xml")
    sipps += [uas, uac]
    run_pair(uas, uac)
    byes = uac.received("BYE ")
    assert len(byes) == 1 and byes[0].header("Call-ID")


@pytest.mark.req("SRTP-5")
@pytest.mark.parametrize("uac_scenario, uas_scenario, cseq", [
    ("wic_call_uac_recv_bye.xml", "core_uas_bad_answer.xml", "1 INVITE"),
    ("wic_reinvite_uac_recv_bye.xml", "core_uas_reinvite_bad_answer.xml", "2 INVITE"),
])
def test_a_core_answer_that_cannot_be_converted_ends_the_call(edge, sipps, uac_scenario, uas_scenario, cseq):
    """A proxy cannot refuse a 2xx: the core's answer (one m-line too many) to the INVITE
    or to a re-INVITE reaches the WIC unchanged with a Warning saying why, and the call,
    which has no media, is ended at once with a BYE to each side and released, counted
    as answer_failed."""
    failed = _metric(edge, 'e2ae_plugin_releases_total{reason="answer_failed"}')
    uas = core_uas(edge, uas_scenario)
    uac = wic_uac(edge, uac_scenario, **({"reinvite_tls_id": OFFER_TLS_ID} if cseq == "2 INVITE" else {}))
    sipps += [uas, uac]
    started = time.monotonic()
    run_pair(uas, uac)
    (ok,) = [m for m in uac.received("SIP/2.0 200") if m.header("CSeq") == [cseq]]
    assert "m=video" in ok.body and "a=fingerprint" not in ok.body
    (warning,) = ok.header("Warning")
    assert re.fullmatch(r'399 127\.0\.0\.1:\d+ "[^"]*m-lines[^"]*"', warning), warning
    assert len(uac.received("BYE ")) == 1 and len(uas.received("BYE ")) == 1
    assert time.monotonic() - started < 8
    assert edge.wait_no_dialogs() == []
    assert _released(edge, "answer_failed", failed) == 1


def test_bye_from_wic(edge, sipps):
    uas, uac = _wic_call(edge, sipps)
    assert uas.received("BYE ")[0].header("CSeq") == ["2 BYE"]


def _nothing_arrives(port: int, seconds: float) -> list[bytes]:
    got = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.3", port))
        s.settimeout(0.1)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                got.append(s.recv(65535))
            except socket.timeout:
                pass
    return got


def test_malformed_offer_488_with_warning(edge, sipps):
    uac = wic_uac(edge, "wic_malformed_uac.xml")
    sipps.append(uac)
    uac.start()
    leaked = _nothing_arrives(edge.conf.next_hop_port, 1.5)
    assert uac.wait(20) == 0, uac.diagnostics()
    assert leaked == [], "the malformed offer reached the core"
    reply = uac.received("SIP/2.0 488")[0]
    (warning,) = reply.header("Warning")
    assert re.fullmatch(r'399 127\.0\.0\.1:\d+ "[^"]*fingerprint[^"]*"', warning), warning
    assert re.search(r'e2ae_plugin_sip_errors_total\{status="488"\} [1-9]', edge.plugin_metrics())


def test_mediad_stopped_503_with_retry_after(edge, sipps):
    edge.stop_mediad()
    try:
        uac = wic_uac(edge, "wic_unavailable_uac.xml")
        sipps.append(uac)
        started = time.monotonic()
        uac.start()
        leaked = _nothing_arrives(edge.conf.next_hop_port, 1.5)
        assert uac.wait(20) == 0, uac.diagnostics()
        assert leaked == []
        reply = uac.received("SIP/2.0 503")[0]
        assert reply.header("Retry-After") == ["7"]
        assert reply.header("Warning") and "mediad" in reply.header("Warning")[0]
        assert time.monotonic() - started < 10
    finally:
        edge.start_mediad()
    assert re.search(r'e2ae_plugin_sip_errors_total\{status="503"\} [1-9]', edge.plugin_metrics())


@pytest.mark.req("SRTP-10")
def test_dtls_failure_ends_the_call_with_bye_to_both_sides(edge, sipps):
    # Nobody answers DTLS at the WIC's address: mediad (DTLS client, actpass policy
    # "active") times out after dtls_handshake_timeout, reports the failure, and the
    # plugin ends the call with a BYE to each side.
    uas, uac = core_uas(edge), wic_uac(edge, "wic_call_uac_recv_bye.xml")
    sipps += [uas, uac]
    run_pair(uas, uac)
    assert len(uac.received("BYE ")) == 1
    assert len(uas.received("BYE ")) == 1
    metrics = edge.plugin_metrics()
    assert re.search(r'e2ae_plugin_dtls_failures_total\{reason="timeout"\} [1-9]', metrics)
    assert re.search(r'e2ae_plugin_releases_total\{reason="dtls_failed"\} [1-9]', metrics)
    call_id = uac.received("BYE ")[0].header("Call-ID")[0]
    assert f"Call-ID {call_id}: DTLS failed" in edge.kamailio_log_text()


def _query(edge: Edge, dialog: str) -> dict:
    from mediad.io.client import IqClient
    from iq import Command, IqRequest

    client = IqClient(("127.0.0.1", edge.conf.control_port), CONTROL_SECRET, timeout=1.0)
    try:
        reply = client.request(IqRequest(Command.QUERY, dialog, "q-%f" % time.monotonic()))
    finally:
        client.close()
    return reply.data or {}


def test_forked_early_answers_then_200_from_the_first_fork(edge, sipps):
    uas = core_uas(edge, "core_uas_forked.xml")
    uac = Sipp("wic_forked_uac.xml", "127.0.0.1", remote=edge.access, extra=["-s", "callee", "-d", "1500"])
    sipps += [uas, uac]
    modifies_before = _metric(edge, 'e2ae_plugin_iq_latency_seconds_count{command="modify"}')
    uas.start()
    time.sleep(0.2)
    uac.start()
    core_ports_seen = []
    deadline = time.monotonic() + 10
    while uac.proc.poll() is None and time.monotonic() < deadline:
        for dialog in edge.mediad_dialogs():
            streams = _query(edge, dialog).get("streams", [])
            if streams and streams[0].get("core"):
                core_ports_seen.append(streams[0]["core"]["spec"].get("remote_port"))
        time.sleep(0.05)
    assert uac.wait(20) == 0, uac.diagnostics() + uas.diagnostics()
    assert uas.wait(15) == 0, uas.diagnostics()
    early = uac.received("SIP/2.0 183")
    final = [m for m in uac.received("SIP/2.0 200") if m.header("CSeq") == ["1 INVITE"]][0]
    a, b = (match_lines(m.body_lines, ACCESS_ANSWER.replace("o=core 1 1", "o=core {o} 1")) for m in early)
    f = match_lines(final.body_lines, ACCESS_ANSWER)
    # One access termination for every fork: same port, fingerprint and tls-id toward the WIC.
    assert a["port"] == b["port"] == f["port"] and a["tls_id"] == b["tls_id"] == f["tls_id"]
    assert final.body == early[0].body
    # Fork B's answer moved the core media to its port; the 200 from fork A moved it back.
    assert 49300 in core_ports_seen
    assert core_ports_seen[-1] == uas.media_port
    assert _metric(edge, 'e2ae_plugin_iq_latency_seconds_count{command="modify"}') - modifies_before == 3


def _metric(edge: Edge, series: str) -> float:
    for line in edge.plugin_metrics().splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def _released(edge: Edge, reason: str, before: float, timeout: float = 5.0) -> float:
    """Releases counted under ``reason`` since ``before``, once at least one is.  The
    record leaves Redis before its release is counted (mediad's RELEASE comes between)."""
    series = f'e2ae_plugin_releases_total{{reason="{reason}"}}'
    deadline = time.monotonic() + timeout
    while (count := _metric(edge, series) - before) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


@pytest.fixture(scope="module")
def short_dialog_edge(redis_server):
    # [redis] dialog_ttl = 2 s, under mediad's 5 s DTLS handshake timeout: the dialog
    # module's timeout ends the call first.
    e = Edge(redis_server, dialog_ttl=2, policy_extra=UNBUNDLED)
    try:
        e.start()
        yield e
    finally:
        e.stop()


def test_dialog_timeout_ends_the_call_and_releases_everything(short_dialog_edge, sipps):
    edge = short_dialog_edge
    uas, uac = core_uas(edge), wic_uac(edge, "wic_call_uac_recv_bye.xml")
    sipps += [uas, uac]
    started = time.monotonic()
    try:
        run_pair(uas, uac)
    except AssertionError as exc:  # keep Kamailio's side of the story with the failure
        raise AssertionError(f"{exc}\n--- kamailio log ---\n{edge.kamailio_log_text()[-4000:]}") from None
    assert time.monotonic() - started < 8
    assert len(uac.received("BYE ")) == 1 and len(uas.received("BYE ")) == 1
    assert edge.wait_no_dialogs() == [] and edge.mediad_dialogs() == []
    assert _released(edge, "timeout", 0.0) == 1
    assert not re.search(r"dtls_failures_total\{[^}]*\} [1-9]", edge.plugin_metrics())


def test_one_hundred_calls_at_twenty_per_second_leave_nothing_behind(edge, sipps):
    uas = Sipp("core_uas.xml", "127.0.0.3", calls=100, timeout=40)
    uas.port = edge.conf.next_hop_port
    uac = Sipp("wic_call_uac.xml", "127.0.0.1", remote=edge.access, calls=100, rate=20, limit=20, timeout=40,
               extra=["-s", "callee", "-d", "100"])
    sipps += [uas, uac]
    run_pair(uas, uac)
    assert len(uas.received("INVITE ")) == 100
    assert all("RTP/AVPF" in m.body and "fingerprint" not in m.body for m in uas.received("INVITE "))
    assert edge.wait_no_dialogs(10) == []


@pytest.mark.req("T38-6", "SRTP-3")
def test_core_switches_to_t38(edge, sipps):
    wic = Sipp("wic_uas_t38.xml", "127.0.0.1")
    core = Sipp("core_t38_uac.xml", "127.0.0.3", remote=edge.core, extra=["-d", "100"])
    core.keys["wic_uri"] = f"sip:wic@127.0.0.1:{wic.port}"
    sipps += [wic, core]
    run_pair(wic, core)
    first, reoffer = wic.received("INVITE ")
    audio = match_lines(first.body_lines, ACCESS_OFFER_FROM_CORE)
    fax = match_lines(reoffer.body_lines, ACCESS_T38_OFFER_FROM_CORE)
    assert fax["fp"] == agw_fingerprint(edge)
    assert fax["tls_id"] != audio["tls_id"]  # every offer toward the WIC: a new tls-id
    ok = [m for m in core.received("SIP/2.0 200") if m.header("CSeq") == ["2 INVITE"]][0]
    core_answer = match_lines(ok.body_lines, CORE_T38_ANSWER_FROM_WIC)
    assert core_answer["udptl"].upper() == "UDPTL"


ACCESS_T38_OFFER_FROM_CORE = """
v=0
o=core 53655765 2353687638 IN IP4 127.0.0.3
s=-
c=IN IP4 127.0.0.1
t=0 0
a=ice-lite
m=image {port} UDP/TLS/UDPTL t38
a=ptime:20
a=T38FaxVersion:0
a=T38MaxBitRate:14400
a=T38FaxRateManagement:transferredTCF
a=T38FaxMaxBuffer:262
a=T38FaxMaxDatagram:176
a=T38FaxUdpEC:t38UDPRedundancy
a=ice-ufrag:{ufrag}
a=ice-pwd:{pwd}
a=candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host
a=end-of-candidates
a=fingerprint:sha-256 {fp}
a=setup:actpass
a=tls-id:{tls_id}
"""

CORE_T38_ANSWER_FROM_WIC = """
v=0
o=- 7352906127482119214 3 IN IP4 127.0.0.1
s=-
t=0 0
m=image {port} {udptl} t38
c=IN IP4 127.0.0.2
a=ptime:20
a=T38FaxVersion:0
a=T38MaxBitRate:14400
a=T38FaxRateManagement:transferredTCF
a=T38FaxMaxBuffer:262
a=T38FaxMaxDatagram:176
a=T38FaxUdpEC:t38UDPRedundancy
"""


def _headers(text: str, name: str) -> list[str]:
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    return [line for line in head if line.split(":", 1)[0].strip().lower() == name.lower()]


def _core_answers_across_cancel(port: int, got: list[str], timeout: float = 15.0) -> None:
    """A core UAS (raw UDP) whose 200 crosses the CANCEL: 180; on the CANCEL, 200 to it and
    then 200 (with SDP) to the INVITE, not 487; ACK; 200 to the BYE."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.3", port))
        s.settimeout(0.2)
        deadline = time.monotonic() + timeout
        invite = None
        while time.monotonic() < deadline:
            try:
                data, peer = s.recvfrom(65535)
            except socket.timeout:
                continue
            text = data.decode(errors="replace")
            method = text.split(" ", 1)[0]
            got.append(method)
            if method == "INVITE" and invite is None:
                invite = text
                _send_reply(s, peer, invite, "180 Ringing", tag=True)
            elif method == "CANCEL":
                _send_reply(s, peer, text, "200 OK")
                sdp = ("v=0\r\no=core 1 1 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
                       "m=audio 49170 RTP/AVPF 0 126\r\nb=AS:64\r\na=rtpmap:0 PCMU/8000\r\n"
                       "a=rtpmap:126 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n")
                _send_reply(s, peer, invite, "200 OK", tag=True, body=sdp)
            elif method == "BYE":
                _send_reply(s, peer, text, "200 OK")
                return


def _send_reply(s: socket.socket, peer, request: str, status: str, tag: bool = False, body: str = "") -> None:
    lines = [f"SIP/2.0 {status}"] + _headers(request, "Via") + _headers(request, "Record-Route")
    lines += _headers(request, "From")
    to = _headers(request, "To")[0]
    lines.append(to + ";tag=corex1" if tag and ";tag=" not in to else to)
    lines += _headers(request, "Call-ID") + _headers(request, "CSeq")
    lines.append(f"Contact: <sip:core@127.0.0.3:{s.getsockname()[1]}>")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    s.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), peer)


def test_200_crossing_the_cancel_is_an_answer_and_the_call_is_released_by_bye(edge, sipps):
    import threading

    reserves = _metric(edge, 'e2ae_plugin_iq_latency_seconds_count{command="reserve"}')
    byes = _metric(edge, 'e2ae_plugin_releases_total{reason="bye"}')
    got: list[str] = []
    core = threading.Thread(target=_core_answers_across_cancel, args=(edge.conf.next_hop_port, got))
    core.start()
    time.sleep(0.1)
    uac = wic_uac(edge, "wic_cancel_crossed_uac.xml")
    sipps.append(uac)
    rc = uac.run()
    core.join(20)
    assert rc == 0, uac.diagnostics()
    assert [m for m in got if m != "CANCEL"] == ["INVITE", "ACK", "BYE"], got
    ok = [m for m in uac.received("SIP/2.0 200") if m.header("CSeq") == ["1 INVITE"]][0]
    # The core's answer to the WIC's offer: setup:active, not a new offer (actpass).
    values = match_lines(ok.body_lines, ACCESS_ANSWER)
    assert values["fp"] == agw_fingerprint(edge)
    assert _metric(edge, 'e2ae_plugin_iq_latency_seconds_count{command="reserve"}') - reserves == 1
    assert _released(edge, "bye", byes) == 1
