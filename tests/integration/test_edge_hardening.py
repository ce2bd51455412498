"""Bad input and bad moments against the real edge: Kamailio + plugin, mediad, Redis, SIPp.

Each test sends what once hurt the edge (issue 12) and checks that every request
gets a clear answer (a status and a Warning saying why), that every call the
edge ends gets its BYE both ways, and that nothing is left behind in Redis or
mediad.  Messages that SIPp cannot write (bytes that are not UTF-8, a NUL, a
broken Content-Length) are sent from a raw UDP socket.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import RedisServer
from tests.integration.edge_harness import CONTROL_SECRET, Edge, Sipp, assert_no_state_left, running_edge

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sdp"
# The log lines of the crash that failed answers caused (Kamailio 5.6's dialog module).
CRASH_FAMILY = ("bogus ref", "tlsf_malloc", "signal 6", "invalid unref", "terminating non-confirmed",
                "inconsistent dlg timer")


def _metric(edge: Edge, series: str) -> float:
    for line in edge.plugin_metrics().splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


# ---------------------------------------------------------------------------
# A raw SIP client and core (bytes SIPp cannot send)
# ---------------------------------------------------------------------------

def _head(text: str) -> str:
    return text.split("\r\n\r\n", 1)[0]


def header(text: str, name: str) -> list[str]:
    out = []
    for line in _head(text).split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            out.append(value.strip())
    return out


class RawUac:
    """Sends one request from 127.0.0.1 over UDP and collects what comes back."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.call_id = "raw-%x@127.0.0.1" % random.getrandbits(48)
        self.tag = "raw%x" % random.getrandbits(32)

    def close(self) -> None:
        self.sock.close()

    def message(self, body: bytes = b"", *, method: str = "INVITE", content_type: str = "application/sdp",
                length: str | list[str] | None = None) -> bytes:
        host, port = self.edge.access
        self.branch = "z9hG4bK%x" % random.getrandbits(48)
        lengths = [str(len(body))] if length is None else [length] if isinstance(length, str) else length
        head = [f"{method} sip:callee@{host}:{port} SIP/2.0",
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={self.branch};rport",
                "Max-Forwards: 70", f"From: <sip:wic@127.0.0.1>;tag={self.tag}", f"To: <sip:callee@{host}>",
                f"Call-ID: {self.call_id}", f"CSeq: 1 {method}", f"Contact: <sip:wic@127.0.0.1:{self.port}>"]
        if body:
            head.append(f"Content-Type: {content_type}")
        head += [f"Content-Length: {value}" for value in lengths]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    def send(self, data: bytes, timeout: float = 4.0) -> list[str]:
        """Send ``data``; the replies until a final one (ACKed) or ``timeout``."""
        self.sock.sendto(data, self.edge.access)
        replies = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                text = self.sock.recv(65535).decode("utf-8", "replace")
            except socket.timeout:
                break
            replies.append(text)
            status = int(text.split(" ", 2)[1])
            if status >= 200:
                if data.startswith(b"INVITE"):
                    self._ack(text)
                break
        return replies

    def _ack(self, final: str) -> None:
        host, port = self.edge.access
        to = header(final, "To")[0]
        ack = [f"ACK sip:callee@{host}:{port} SIP/2.0",
               f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={self.branch};rport", "Max-Forwards: 70",
               f"From: <sip:wic@127.0.0.1>;tag={self.tag}", f"To: {to}", f"Call-ID: {self.call_id}",
               "CSeq: 1 ACK", "Content-Length: 0"]
        self.sock.sendto(("\r\n".join(ack) + "\r\n\r\n").encode(), self.edge.access)


def _core_listener(edge: Edge):
    """A UDP socket on the core next hop: what reaches the core."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(edge.next_hop)
    s.settimeout(0.05)
    return s


def _received(sock, seconds: float) -> list[bytes]:
    got = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(65535))
        except socket.timeout:
            pass
    return got


def refused(edge: Edge, body: bytes, status: int, words: str, **kw) -> str:
    """Send an INVITE with ``body``: answered ``status`` with a Warning containing
    ``words``, nothing reaches the core, nothing is left in Redis or mediad."""
    reserves = _metric(edge, 'e2ae_plugin_iq_latency_seconds_count{command="reserve"}')
    uac, core = RawUac(edge), _core_listener(edge)
    try:
        replies = uac.send(uac.message(body, **kw))
        leaked = _received(core, 0.3)
    finally:
        uac.close()
        core.close()
    assert replies, "no answer"
    final = replies[-1]
    assert final.startswith(f"SIP/2.0 {status} "), final
    (warning,) = header(final, "Warning")
    assert re.fullmatch(r'399 127\.0\.0\.1:\d+ "[^"]*"', warning) and words in warning, warning
    assert leaked == [], "the request reached the core"
    assert _metric(edge, 'e2ae_plugin_iq_latency_seconds_count{command="reserve"}') == reserves
    assert_no_state_left(edge)
    return final


WIC_OFFER = (FIXTURES / "chromium_offer_audio.sdp").read_bytes()


# ---------------------------------------------------------------------------
# 1. Failed answers, hundreds at once: no abort, BYE both ways, nothing left
# ---------------------------------------------------------------------------

FAILED_ANSWER_CALLS = 300


def test_hundreds_of_concurrent_failed_answers_end_every_call(edge, sipps):
    """300 calls at 20/s, 200 at a time, whose 200 OK the rules reject: every call gets its
    BYE both ways from the dialog module (sent by the rtimer process once the dialog is
    confirmed), Kamailio stays up, none of the crash's log lines appear, nothing is left."""
    log_before = len(edge.kamailio_log_text())
    ends = _metric(edge, 'e2ae_plugin_call_ends_total{result="bye"}')
    failed = _metric(edge, 'e2ae_plugin_releases_total{reason="answer_failed"}')
    uas = Sipp("core_uas_bad_answer.xml", "127.0.0.3", calls=FAILED_ANSWER_CALLS, timeout=60)
    uas.port = edge.conf.next_hop_port
    uac = Sipp("wic_call_uac_recv_bye.xml", "127.0.0.1", remote=edge.access, calls=FAILED_ANSWER_CALLS,
               rate=20, limit=200, timeout=60, extra=["-s", "callee"])
    sipps += [uas, uac]
    uas.start()
    time.sleep(0.2)
    rc_uac, rc_uas = uac.run(), uas.wait(30)
    log = edge.kamailio_log_text()[log_before:]
    assert edge.kamailio.poll() is None, "Kamailio died"
    assert {line: log.count(line) for line in CRASH_FAMILY} == dict.fromkeys(CRASH_FAMILY, 0)
    assert len(uas.received("INVITE ")) == FAILED_ANSWER_CALLS
    assert len(uac.received("BYE ")) == FAILED_ANSWER_CALLS, uac.diagnostics()
    assert len(uas.received("BYE ")) == FAILED_ANSWER_CALLS, uas.diagnostics()
    assert rc_uac == 0 and rc_uas == 0
    assert _metric(edge, 'e2ae_plugin_call_ends_total{result="bye"}') - ends == FAILED_ANSWER_CALLS
    assert _metric(edge, 'e2ae_plugin_releases_total{reason="answer_failed"}') - failed == FAILED_ANSWER_CALLS
    assert_no_state_left(edge, 10)


# ---------------------------------------------------------------------------
# 2, 3. Bytes that are not UTF-8, a NUL
# ---------------------------------------------------------------------------

def test_an_offer_that_is_not_utf8_is_488_with_a_warning(edge):
    refused(edge, WIC_OFFER.replace(b"s=-", b"s=\xff\xfe"), 488, "not UTF-8")


def test_an_offer_with_a_nul_is_488_with_a_warning_and_leaks_nothing(edge):
    refused(edge, WIC_OFFER.replace(b"s=-", b"s=a\x00b"), 488, "NUL character")


class RawCore(threading.Thread):
    """The core next hop over UDP: answers the INVITE 200 with ``answer`` (bytes), takes
    the ACK, answers the BYE."""

    def __init__(self, edge: Edge, answer: bytes) -> None:
        super().__init__(daemon=True)
        self.sock = _core_listener(edge)
        self.answer = answer
        self.got: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + 20
        invite = None
        while time.monotonic() < deadline:
            try:
                data, peer = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            text = data.decode("utf-8", "replace")
            method = text.split(" ", 1)[0]
            self.got.append(method)
            if method == "INVITE" and invite is None:
                invite = text
                self._reply(peer, text, "200 OK", self.answer)
            elif method == "BYE":
                self._reply(peer, text, "200 OK", b"")
                break
        self.sock.close()

    def _reply(self, peer, request: str, status: str, body: bytes) -> None:
        head = [f"SIP/2.0 {status}"]
        for name in ("Via", "Record-Route", "From"):
            head += [f"{name}: {v}" for v in header(request, name)]
        to = header(request, "To")[0]
        head.append(f"To: {to}" if ";tag=" in to else f"To: {to};tag=rawcore")
        head += [f"Call-ID: {header(request, 'Call-ID')[0]}", f"CSeq: {header(request, 'CSeq')[0]}",
                 f"Contact: <sip:core@{self.sock.getsockname()[0]}:{self.sock.getsockname()[1]}>"]
        if body:
            head.append("Content-Type: application/sdp")
        head.append(f"Content-Length: {len(body)}")
        self.sock.sendto(("\r\n".join(head) + "\r\n\r\n").encode() + body, peer)


CORE_ANSWER = (b"v=0\r\no=core 1 1 IN IP4 127.0.0.3\r\ns=\xff\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
               b"m=audio 49170 RTP/AVPF 0 126\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:126 telephone-event/8000\r\n")


def test_a_200_whose_answer_is_not_utf8_ends_the_call(edge, sipps):
    """A reply cannot be refused: the 200 reaches the WIC with a Warning, the call is
    released and gets its BYE both ways."""
    failed = _metric(edge, 'e2ae_plugin_releases_total{reason="answer_failed"}')
    core = RawCore(edge, CORE_ANSWER)
    core.start()
    uac = Sipp("wic_call_uac_recv_bye.xml", "127.0.0.1", remote=edge.access, extra=["-s", "callee"])
    sipps.append(uac)
    assert uac.run() == 0, uac.diagnostics()
    core.join(10)
    (ok,) = uac.received("SIP/2.0 200")
    (warning,) = ok.header("Warning")
    assert "not UTF-8" in warning
    assert core.got.count("BYE") == 1 and len(uac.received("BYE ")) == 1
    assert _metric(edge, 'e2ae_plugin_releases_total{reason="answer_failed"}') - failed == 1
    assert_no_state_left(edge)


# ---------------------------------------------------------------------------
# 4, 5. Limits; TCP toward the core for a request over 1300 bytes
# ---------------------------------------------------------------------------

def _with_m_lines(count: int) -> bytes:
    minimal = b"m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 127.0.0.1\r\n"
    return WIC_OFFER + minimal * (count - 1)


def test_an_sdp_with_43_m_lines_is_488_before_mediad_is_asked(edge):
    refused(edge, _with_m_lines(43), 488, "more than 32 m-lines")


def test_a_64_kib_attribute_is_413_before_mediad_is_asked(edge):
    """As large as one UDP datagram to the edge can be."""
    refused(edge, WIC_OFFER + b"a=x-big:" + b"y" * 61000 + b"\r\n", 413, "over the edge's limit")


def test_an_invite_over_1300_bytes_reaches_a_udp_core_over_tcp(edge):
    """RFC 3261 18.1.1: Chromium's audio+video+data offer (6.4 KB) leaves the core socket
    over TCP, and the call completes (the core endpoint takes SIP over UDP and TCP)."""
    from deploy.demo_call import CoreEndpoint, SipUac

    sdp = (FIXTURES / "chromium_offer_audio_video_data.sdp").read_text()

    async def call():
        core = CoreEndpoint(edge.next_hop, "127.0.0.3")
        uac = SipUac("127.0.0.1", edge.access)
        await core.open()
        await uac.open()
        try:
            answer = await uac.invite(sdp)
            bye = await uac.bye()
            await asyncio.wait_for(core.bye_received.wait(), 5)
            return core.offer, answer, bye
        finally:
            uac.close()
            core.close()

    offer, answer, bye = asyncio.run(asyncio.wait_for(call(), 30))
    assert offer is not None and offer.stream is not None, "the INVITE did not come over TCP"
    assert len(offer.body.encode()) > 1300 and "a=fingerprint" not in offer.body
    assert answer.status == 200 and bye.status == 200
    assert_no_state_left(edge)


# ---------------------------------------------------------------------------
# 7. Bad Content-Length
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("length", ["abc", "-5", "99999999999", "10", ["0", "0"]], ids=str)
@pytest.mark.parametrize("method", ["OPTIONS", "INVITE"])
def test_a_bad_content_length_is_answered_400_with_a_warning(edge, method, length):
    """RFC 3261 18.3.  Kamailio 5.6 drops none of these before the request route; the
    sanity checks catch them all.  But Kamailio cannot build a reply to a request with a
    Content-Length it cannot parse (abc, -5, 99999999999, two of them): its reply builder
    parses every header first.  The plugin then writes the 400 itself (plugin.sipreply)."""
    uac, core = RawUac(edge), _core_listener(edge)
    body = WIC_OFFER[:40] if method == "INVITE" else b""
    try:
        replies = uac.send(uac.message(body, method=method, length=length), timeout=2)
        leaked = _received(core, 0.2)
    finally:
        uac.close()
        core.close()
    assert leaked == []
    assert replies and replies[-1].startswith("SIP/2.0 400 "), replies
    final = replies[-1]
    (warning,) = header(final, "Warning")
    assert "Content-Length" in warning, warning
    assert header(final, "Call-ID") == [uac.call_id] and header(final, "CSeq") == [f"1 {method}"]
    assert header(final, "Via")[0].startswith(f"SIP/2.0/UDP 127.0.0.1:{uac.port};branch={uac.branch}")
    assert re.search(r";tag=\w+", header(final, "To")[0])
    assert_no_state_left(edge)


# ---------------------------------------------------------------------------
# 8. Port counts, offers under another label
# ---------------------------------------------------------------------------

def test_a_port_count_is_488_and_never_reaches_the_core(edge):
    port = WIC_OFFER.split(b"m=audio ", 1)[1].split(b" ", 1)[0]
    body = WIC_OFFER.replace(b"m=audio " + port + b" ", b"m=audio " + port + b"/99999999999999999 ", 1)
    refused(edge, body, 488, "port count")


def test_a_webrtc_offer_labelled_text_plain_is_415_with_accept(edge):
    final = refused(edge, WIC_OFFER, 415, "must be SDP", content_type="text/plain")
    (accept,) = header(final, "Accept")
    assert "application/sdp" in accept


# ---------------------------------------------------------------------------
# 9. A defect in mediad's reply is ours: 500 with a Warning, not 488
# ---------------------------------------------------------------------------

def test_mediad_refusing_the_reserve_is_500_not_blamed_on_the_client(edge):
    """mediad refuses a RESERVE for streams a dialog id already holds (its error 400):
    the client is not at fault."""
    import sdp_rules
    from mediad.io.client import IqClient
    from plugin.state import dialog_id
    from iq import Command, IqRequest, Side
    from sdp_rules.plan import DialogState, Kind, Policy

    uac = RawUac(edge)
    uac.close()
    dialog = dialog_id(uac.call_id, uac.tag)
    client = IqClient(("127.0.0.1", edge.conf.control_port), CONTROL_SECRET, timeout=2.0)
    # The RESERVE the plugin itself would send for this offer, sent first by the test.
    plan = sdp_rules.process(WIC_OFFER.decode(), origin=Side.ACCESS, kind=Kind.OFFER, state=DialogState(),
                             dialog=dialog, transaction="pre-1", policy=Policy())
    try:
        assert not client.request(plan.iq).error
        again = RawUac(edge)
        again.call_id, again.tag = uac.call_id, uac.tag
        try:
            reserves = _metric(edge, 'e2ae_plugin_iq_latency_seconds_count{command="reserve"}')
            replies = again.send(again.message(WIC_OFFER))
        finally:
            again.close()
        assert _metric(edge, 'e2ae_plugin_iq_latency_seconds_count{command="reserve"}') == reserves + 1
        final = replies[-1]
        assert final.startswith("SIP/2.0 500 "), final
        (warning,) = header(final, "Warning")
        assert "mediad refused the request (error 400)" in warning
    finally:
        client.request(IqRequest(Command.RELEASE, dialog, "pre-2"))
        client.close()
    assert_no_state_left(edge)


# ---------------------------------------------------------------------------
# 6. Redis stalls: a BYE's release is retried, a 503'd INVITE leaves nothing
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stalling():
    """An edge on a Redis of its own, which the tests stop (SIGSTOP) and resume.  Calls
    without a DTLS peer stay up when mediad's handshake times out (policy "keep"): only
    the BYE ends them."""
    server = RedisServer()
    server.start()
    try:
        with running_edge(server, dtls_failure="keep") as e:
            yield e
    finally:
        server.stop()


def _stall(edge: Edge, after: float, seconds: float) -> threading.Thread:
    pid = edge.redis_server.proc.pid

    def run():
        time.sleep(after)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_bye_during_a_redis_stall_is_released_when_redis_is_back(stalling, sipps):
    edge = stalling
    done = _metric(edge, 'e2ae_plugin_release_retries_total{result="done"}')
    byes = _metric(edge, 'e2ae_plugin_releases_total{reason="bye"}')
    uas = Sipp("core_uas.xml", "127.0.0.3")
    uas.port = edge.conf.next_hop_port
    uac = Sipp("wic_call_uac.xml", "127.0.0.1", remote=edge.access, extra=["-s", "callee", "-d", "2500"])
    sipps += [uas, uac]
    uas.start()
    time.sleep(0.2)
    # The BYE comes at about 2.8 s, its retransmissions up to 1.5 s later: every release
    # the BYE tries fails.
    stall = _stall(edge, after=1.8, seconds=4.0)
    uac.start()
    assert uac.wait(30) == 0, uac.diagnostics()
    assert uas.wait(15) == 0, uas.diagnostics()
    stall.join()
    assert_no_state_left(edge, 15)
    assert "release (bye) failed, to be retried" in edge.kamailio_log_text()
    # The queue's retry released it (not another path that found it first).
    assert _metric(edge, 'e2ae_plugin_release_retries_total{result="done"}') - done == 1
    assert _metric(edge, 'e2ae_plugin_releases_total{reason="bye"}') - byes == 1


def test_an_invite_answered_503_during_a_redis_stall_leaves_nothing(stalling):
    edge = stalling
    stall = _stall(edge, after=0.0, seconds=2.0)
    time.sleep(0.1)
    uac = RawUac(edge)
    try:
        replies = uac.send(uac.message(WIC_OFFER), timeout=6)
    finally:
        uac.close()
    stall.join()
    final = replies[-1]
    assert final.startswith("SIP/2.0 503 ") and header(final, "Retry-After"), final
    time.sleep(0.5)  # Redis has run what it received during the stall
    assert_no_state_left(edge)
