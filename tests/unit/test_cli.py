"""``e2ae-sdp`` and the simulated AGW, on the real SDP fixtures.

The console script is run as a subprocess (the installed ``e2ae-sdp``) and
in-process through ``main(argv)``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sdp_rules.cli import main
from iq import Command, IqRequest, Side, StreamSpec, TerminationSpec
from sdp_rules.sdp import parse
from sdp_rules.simulated_agw import FINGERPRINT, ICE_PWD, ICE_UFRAG, SimulatedAgw

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sdp"
SCRIPT = Path(sys.executable).parent / "e2ae-sdp"

CORE_AUDIO_ANSWER = (
    "v=0\r\no=core 1 1 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
    "m=audio 20000 RTP/AVPF 0 126\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:126 telephone-event/8000\r\n"
    "a=rtcp-mux\r\na=sendrecv\r\n"
)
CORE_T38_ANSWER = (
    "v=0\r\no=core 1 1 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
    "m=image 20000 udptl t38\r\na=T38FaxVersion:0\r\na=T38MaxBitRate:14400\r\n"
    "a=T38FaxRateManagement:transferredTCF\r\na=T38FaxUdpEC:t38UDPRedundancy\r\n"
)
DTLS_ICE_ATTRIBUTES = re.compile(r"^a=(fingerprint|setup|tls-id|ice-[a-z]+|candidate|end-of-candidates)\b", re.M)


def fixture(name: str) -> str:
    return str(FIXTURES / name)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    with open(path, "w", newline="") as f:
        f.write(text)
    return str(path)


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    exe = str(SCRIPT) if SCRIPT.exists() else shutil.which("e2ae-sdp")
    if exe is None:
        pytest.fail("the e2ae-sdp console script is not installed (pip install -e .)")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def run_json(capsys, *args: str) -> dict:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# -- bad input -----------------------------------------------------------

def test_malformed_offer_exits_2_with_one_line_naming_the_line(tmp_path: Path):
    bad = write(tmp_path, "bad.sdp", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9x RTP/AVP 0\r\n")
    proc = run_script("offer", "--from", "access", bad)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("e2ae-sdp: ")
    assert "bad.sdp" in lines[0] and "SDP line 5" in lines[0] and "'9x'" in lines[0]


def test_malformed_answer_in_call_names_the_answer_file_and_line(tmp_path: Path, capsys):
    answer = write(tmp_path, "answer.sdp", CORE_AUDIO_ANSWER.replace("c=IN IP4 127.0.0.3", "c=IN IP4"))
    code = main(["call", "--from", "access", fixture("chromium_offer_audio.sdp"), answer])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "answer.sdp" in captured.err and "SDP line 4" in captured.err


@pytest.mark.parametrize("body, expect", [
    (b"\xff\xfe not text", "not UTF-8"),
    (b"v=0\r\ns=-\r\nt=0 0\r\n", "SDP line 1"),
    (b"", "SDP line 1"),
], ids=["binary", "no-origin", "empty"])
def test_unreadable_or_empty_input_is_one_line_exit_2(tmp_path: Path, capsys, body: bytes, expect: str):
    path = tmp_path / "in.sdp"
    path.write_bytes(body)
    assert main(["offer", "--from", "core", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err


def test_missing_file_is_exit_2(tmp_path: Path, capsys):
    assert main(["offer", "--from", "access", str(tmp_path / "nope.sdp")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.sdp" in err


def test_bad_arguments_exit_2():
    proc = run_script("offer", "--from", "nowhere", fixture("core_rtp_offer.sdp"))
    assert proc.returncode == 2
    assert "--from" in proc.stderr


def test_help_documents_the_simulated_agw():
    proc = run_script("call", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for fact in ("127.0.0.1", "127.0.0.2", "30000", "40000", FINGERPRINT.value, ICE_UFRAG, ICE_PWD,
                 "5000", "262144", "tls-id", "--actpass"):
        assert fact in text, fact


# -- what the edge does ----------------------------------------------------

def test_chromium_offer_toward_core_is_plain_rtp_avpf(capsys):
    assert main(["offer", "--from", "access", fixture("chromium_offer_audio.sdp")]) == 0
    forwarded = capsys.readouterr().out
    sdp = parse(forwarded)
    assert [m.proto for m in sdp.media] == ["RTP/AVPF"]
    assert DTLS_ICE_ATTRIBUTES.search(forwarded) is None
    assert "a=ice-options" not in forwarded
    assert sdp.connection_for(sdp.media[0]).address == "127.0.0.2"
    assert sdp.media[0].port == 40000
    # What the rules do not rewrite comes through unchanged.
    original = open(fixture("chromium_offer_audio.sdp"), newline="").read()
    for line in ("a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1", "a=rtcp-rsize"):
        assert line in original and line in forwarded


def test_chromium_audio_video_offer_rtp_lines_lose_dtls_and_ice(capsys):
    assert main(["offer", "--from", "access", fixture("chromium_offer_audio_video_data.sdp")]) == 0
    sdp = parse(capsys.readouterr().out)
    rtp = [m for m in sdp.media if m.media in ("audio", "video")]
    assert [m.proto for m in rtp] == ["RTP/AVPF", "RTP/AVPF"]
    assert [m.port for m in rtp] == [40000, 40002]
    for m in rtp:
        assert DTLS_ICE_ATTRIBUTES.search("\r\n".join(str(line) for line in m.lines)) is None
    assert not sdp.session.has_attribute("fingerprint") and not sdp.session.has_attribute("ice-options")


def test_json_offer_has_forwarded_offer_and_plans(capsys):
    out = run_json(capsys, "offer", "--from", "access", fixture("chromium_offer_audio.sdp"))
    assert set(out) == {"forwarded_offer", "plans"}
    assert out["forwarded_offer"].startswith("v=0\r\n")
    (plan,) = out["plans"]
    assert (plan["sdp"], plan["origin"], plan["forward_to"]) == ("offer", "access", "core")
    assert plan["iq"]["command"] == "reserve"
    request = IqRequest.from_dict(plan["iq"])
    offered = parse(open(fixture("chromium_offer_audio.sdp"), newline="").read())
    # Chromium's a=group:BUNDLE 0 is accepted ([policy] bundle = on, the default): the DTLS
    # and ICE values are the transport's (RFC 9143 section 7.1.3), the stream names it.
    (transport,) = request.transports
    assert request.streams[0].transport_id == transport.transport_id
    assert [str(fp) for fp in transport.remote_fingerprints] == [offered.media[0].attribute("fingerprint")]
    (transport_reply,) = plan["reply"]["transports"]
    reply = plan["reply"]["streams"][0]
    assert reply["access"]["local_port"] == transport_reply["local_port"] == 30000
    assert reply["core"]["local_port"] == 40000
    assert transport_reply["local_fingerprint"]["value"] == FINGERPRINT.value


def test_json_call_has_both_sdps_and_two_plans(tmp_path: Path, capsys):
    answer = write(tmp_path, "answer.sdp", CORE_AUDIO_ANSWER)
    out = run_json(capsys, "call", "--from", "access", fixture("chromium_offer_audio.sdp"), answer)
    assert set(out) == {"forwarded_offer", "returned_answer", "plans"}
    assert [(p["sdp"], p["origin"]) for p in out["plans"]] == [("offer", "access"), ("answer", "core")]
    returned = parse(out["returned_answer"])
    m = returned.media[0]
    assert m.proto == "UDP/TLS/RTP/SAVPF"
    assert m.port == 30000
    assert m.attribute("ice-ufrag") == ICE_UFRAG and m.attribute("ice-pwd") == ICE_PWD
    assert returned.attribute_for(m, "fingerprint") == str(FINGERPRINT)
    assert returned.attribute_for(m, "setup") == "active"


def test_text_call_prints_both_sdps_under_headers(tmp_path: Path):
    answer = write(tmp_path, "answer.sdp", CORE_AUDIO_ANSWER)
    proc = run_script("call", "--from", "access", fixture("chromium_offer_audio.sdp"), answer)
    assert proc.returncode == 0, proc.stderr
    first, rest = proc.stdout.split("# offer forwarded to core\n", 1)[1].split("# answer returned to access\n")
    assert parse(first).media[0].proto == "RTP/AVPF"
    assert parse(rest).media[0].proto == "UDP/TLS/RTP/SAVPF"


def test_output_is_deterministic_except_tls_id(tmp_path: Path):
    answer = write(tmp_path, "answer.sdp", CORE_T38_ANSWER)
    args = ("call", "--from", "access", fixture("t38_offer_udptl_dtls.sdp"), answer, "--json")
    first, second = run_script(*args), run_script(*args)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    tls_ids = [re.findall(r"a=tls-id:([A-Za-z0-9+/_-]+)", p.stdout) for p in (first, second)]
    assert tls_ids[0] and tls_ids[1] and set(tls_ids[0]).isdisjoint(tls_ids[1])
    masked = [p.stdout for p in (first, second)]
    for ids, i in zip(tls_ids, range(2)):
        for value in set(ids):
            masked[i] = masked[i].replace(value, "TLS-ID")
    assert masked[0] == masked[1]


@pytest.mark.req("T38-2")
@pytest.mark.parametrize("offered, actpass, answered, role", [
    ("actpass", "active", "active", "client"),
    ("actpass", "passive", "passive", "server"),
    ("active", "active", "passive", "server"),
    ("passive", "passive", "active", "client"),
])
def test_t38_dtls_role_follows_the_offer_and_the_actpass_policy(
    tmp_path: Path, capsys, offered: str, actpass: str, answered: str, role: str
):
    original = open(fixture("t38_offer_udptl_dtls.sdp"), newline="").read()
    offer = write(tmp_path, "offer.sdp", original.replace("a=setup:actpass", f"a=setup:{offered}"))
    answer = write(tmp_path, "answer.sdp", CORE_T38_ANSWER)
    out = run_json(capsys, "call", "--from", "access", offer, answer, "--actpass", actpass)
    access = out["plans"][0]["iq"]["streams"][0]["access"]
    assert access["tls_role"] == role
    assert access["establish_tls"] is (role == "client")
    returned = parse(out["returned_answer"])
    assert returned.attribute_for(returned.media[0], "setup") == answered


def test_core_offer_toward_access_gets_dtls_ice_and_agw_values(capsys):
    out = run_json(capsys, "offer", "--from", "core", fixture("core_rtp_offer.sdp"))
    sdp = parse(out["forwarded_offer"])
    m = sdp.media[0]
    assert m.proto == "UDP/TLS/RTP/SAVP"
    assert m.port == 30000
    assert sdp.connection_for(m).address == "127.0.0.1"
    assert sdp.attribute_for(m, "setup") == "actpass"
    assert sdp.attribute_for(m, "fingerprint") == str(FINGERPRINT)
    assert sdp.attribute_for(m, "tls-id")


# -- the simulated AGW on its own ------------------------------------------

def _request(command: Command, *streams: StreamSpec, transaction: str = "1") -> IqRequest:
    return IqRequest(command, "d1", transaction, list(streams))


def _srtp(stream_id: int, access_mux: bool, core_mux: bool) -> StreamSpec:
    return StreamSpec(
        stream_id, "srtp",
        access=TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=access_mux,
                               local_fingerprint_request=True),
        core=TerminationSpec(Side.CORE, "RTP/AVP", rtcp_mux=core_mux),
    )


def test_simulated_agw_counts_even_ports_and_places_rtcp():
    agw = SimulatedAgw()
    reply = agw.answer(_request(Command.RESERVE, _srtp(0, True, False), _srtp(1, False, True)))
    first, second = reply.stream(0), reply.stream(1)
    assert (first.access.local_port, first.access.local_rtcp_port) == (30000, None)
    assert (first.core.local_port, first.core.local_rtcp_port) == (40000, 40001)
    assert (second.access.local_port, second.access.local_rtcp_port) == (30002, 30003)
    assert (second.core.local_port, second.core.local_rtcp_port) == (40002, None)
    assert first.access.local_address == "127.0.0.1" and first.core.local_address == "127.0.0.2"
    assert first.access.local_fingerprint == FINGERPRINT and first.core.local_fingerprint is None
    assert (first.access.ice_ufrag, first.access.ice_pwd) == (ICE_UFRAG, ICE_PWD)


def test_simulated_agw_repeats_itself_on_modify_and_forgets_on_release():
    agw = SimulatedAgw()
    reserved = agw.answer(_request(Command.RESERVE, _srtp(0, True, True)))
    modified = agw.answer(_request(Command.MODIFY, _srtp(0, True, True), transaction="2"))
    assert modified.stream(0) == reserved.stream(0)
    assert modified.transaction == "2"
    agw.answer(IqRequest(Command.RELEASE, "d1", "3"))
    again = agw.answer(_request(Command.RESERVE, _srtp(0, True, True), transaction="4"))
    assert again.stream(0).access.local_port == 30002


def test_simulated_agw_gives_sctp_values_and_shares_the_association():
    agw = SimulatedAgw()
    sctp = StreamSpec(0, "sctp", access=TerminationSpec(Side.ACCESS, "UDP/DTLS/SCTP"))
    channel = StreamSpec(
        1, "dc_channel", group=0,
        access=TerminationSpec(Side.ACCESS, "UDP/DTLS/SCTP"), core=TerminationSpec(Side.CORE, "TCP"),
    )
    reply = agw.answer(_request(Command.RESERVE, sctp, channel))
    assert (reply.stream(0).access.local_sctp_port, reply.stream(0).access.local_max_message_size) == (
        5000, 262144)
    assert reply.stream(1).access == reply.stream(0).access
    assert (reply.stream(1).core.local_port, reply.stream(1).core.local_rtcp_port) == (40000, None)
