"""The plugin's SIP logic without Kamailio: offer/answer tracking, idempotency, errors.

Real Redis (the session's redis-server); the AGW is a small in-process stand-in that
answers every stream with fixed ports, so the SIP-side rules can be checked alone (the
real mediad is exercised by tests/integration/test_edge_*.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sdp_rules.errors import UnavailableError
from sdp_rules.iq import Command, Fingerprint, IqReply, Side, StreamReply, TerminationReply

from plugin.edge import Edge, Message
from plugin.metrics import Metrics
from plugin.state import DIALOG_PREFIX, DialogStore

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sdp"
AGW_FP = Fingerprint("sha-256", ":".join(["AB"] * 32))

PLAIN_OFFER = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
PLAIN_ANSWER = "v=0\r\no=- 2 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
CORE_ANSWER = "v=0\r\no=core 1 1 IN IP4 10.0.0.3\r\ns=-\r\nc=IN IP4 10.0.0.3\r\nt=0 0\r\nm=audio 6000 RTP/AVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"


class Agw:
    """Answers every request like mediad would, and remembers what it was asked."""

    def __init__(self, error: tuple[int, str] | None = None) -> None:
        self.requests = []
        self.error = error

    def request(self, iq):
        self.requests.append(iq)
        if self.error:
            return IqReply(iq.dialog, iq.transaction, error=self.error[1], error_code=self.error[0])
        if iq.command is Command.RELEASE:
            return IqReply(iq.dialog, iq.transaction)
        streams = [StreamReply(s.stream_id,
                               access=TerminationReply("127.0.0.1", 30000 + s.stream_id, local_fingerprint=AGW_FP,
                                                       ice_ufrag="ufrag", ice_pwd="p" * 24),
                               core=TerminationReply("127.0.0.2", 40000 + 2 * s.stream_id, 40001 + 2 * s.stream_id))
                   for s in iq.streams]
        return IqReply(iq.dialog, iq.transaction, streams)


@pytest.fixture
def store(redis_url):
    s = DialogStore(redis_url, ttl=60)
    yield s
    s.close()


def make_edge(store, metrics_registry, agw=None) -> Edge:
    return Edge(store, agw or Agw(), Metrics(metrics_registry), agent="127.0.0.1:5060")


def msg(body="", *, request=True, method="INVITE", side=Side.ACCESS, to_tag="", status=0, cseq=1) -> Message:
    return Message(request=request, method=method, call_id="call-1", from_tag="ftag", to_tag=to_tag,
                   cseq=cseq, side=side, body=body, content_type="application/sdp" if body else "", status=status)


def rewrites(registry, direction, kind, result) -> float:
    return registry.get_sample_value("e2ae_plugin_sdp_rewrites_total",
                                     {"direction": direction, "kind": kind, "result": result}) or 0.0


def test_no_body_is_left_alone(store, metrics_registry):
    edge = make_edge(store, metrics_registry)
    assert edge.handle(msg()).body is None
    assert store.redis.keys(DIALOG_PREFIX + "*") == []


def test_answer_in_183_and_200_renders_the_same_bytes(store, metrics_registry):
    agw = Agw()
    edge = make_edge(store, metrics_registry, agw)
    offer = (FIXTURES / "chromium_offer_audio.sdp").read_text()
    out = edge.handle(msg(offer))
    assert out.body and "RTP/AVPF" in out.body and not out.failed
    early = edge.handle(msg(CORE_ANSWER, request=False, side=Side.CORE, to_tag="t1", status=183))
    final = edge.handle(msg(CORE_ANSWER, request=False, side=Side.CORE, to_tag="t1", status=200))
    assert early.body == final.body and "a=fingerprint:sha-256 " + AGW_FP.value in final.body
    assert [r.command for r in agw.requests] == [Command.RESERVE, Command.MODIFY]
    assert rewrites(metrics_registry, "core_to_access", "answer", "rewritten") == 1
    assert rewrites(metrics_registry, "core_to_access", "answer", "cached") == 1


def test_retransmitted_offer_is_not_planned_twice(store, metrics_registry):
    agw = Agw()
    edge = make_edge(store, metrics_registry, agw)
    offer = (FIXTURES / "chromium_offer_audio.sdp").read_text()
    first, second = edge.handle(msg(offer)), edge.handle(msg(offer))
    assert first.body == second.body
    assert len(agw.requests) == 1


def test_late_offer_in_200_answered_in_ack(store, metrics_registry):
    edge = make_edge(store, metrics_registry)
    assert edge.handle(msg()).body is None  # INVITE without SDP
    offer = edge.handle(msg(PLAIN_OFFER, request=False, side=Side.CORE, to_tag="t1", status=200))
    assert "UDP/TLS/RTP/SAVP " in offer.body and "a=setup:actpass" in offer.body
    assert rewrites(metrics_registry, "core_to_access", "offer", "rewritten") == 1
    wic_answer = (FIXTURES / "chromium_answer_audio.sdp").read_text().replace("RTP/SAVPF", "RTP/SAVP")
    answer = edge.handle(msg(wic_answer, method="ACK", to_tag="t1"))
    assert answer.body is not None and not answer.failed and "a=setup" not in answer.body
    assert rewrites(metrics_registry, "access_to_core", "answer", "rewritten") == 1


def test_reinvite_from_the_callee_finds_the_dialog_by_to_tag(store, metrics_registry):
    edge = make_edge(store, metrics_registry)
    edge.handle(msg(PLAIN_OFFER))
    edge.handle(msg(PLAIN_ANSWER, request=False, side=Side.CORE, to_tag="t1", status=200))
    # A re-INVITE from the core: From and To are swapped.
    reinvite = Message(request=True, method="INVITE", call_id="call-1", from_tag="t1", to_tag="ftag", cseq=7,
                       side=Side.CORE, body=PLAIN_ANSWER, content_type="application/sdp")
    assert edge.handle(reinvite).body is not None
    assert len(store.redis.keys(DIALOG_PREFIX + "*")) == 1
    assert rewrites(metrics_registry, "core_to_access", "offer", "passthrough") == 1


def test_malformed_offer_is_488_with_a_warning(store, metrics_registry):
    edge = make_edge(store, metrics_registry)
    out = edge.handle(msg("v=0\r\nthis is not sdp\r\n"))
    assert out.status == 488 and out.reason == "Not Acceptable Here"
    assert re.fullmatch(r'399 127\.0\.0\.1:5060 "[^"]+"', out.warning)
    assert metrics_registry.get_sample_value("e2ae_plugin_sip_errors_total", {"status": "488"}) == 1


@pytest.mark.parametrize("code, status", [(503, 503), (400, 488), (500, 500)])
def test_agw_errors_map_to_sip_statuses(store, metrics_registry, code, status):
    edge = make_edge(store, metrics_registry, Agw(error=(code, "no")))
    out = edge.handle(msg((FIXTURES / "chromium_offer_audio.sdp").read_text()))
    assert out.status == status
    assert (out.retry_after is not None) == (status == 503)
    assert store.redis.keys(DIALOG_PREFIX + "*") == []


def test_unreachable_agw_is_503_with_retry_after(store, metrics_registry):
    class Down:
        def request(self, iq):
            raise UnavailableError("mediad did not answer within 0.500s", 9)

    out = make_edge(store, metrics_registry, Down()).handle(msg((FIXTURES / "chromium_offer_audio.sdp").read_text()))
    assert out.status == 503 and out.retry_after == 9 and "mediad" in out.warning


def test_unreachable_redis_is_503(metrics_registry):
    from tests.conftest import free_port

    store = DialogStore(f"redis://127.0.0.1:{free_port()}/0", ttl=60, timeout=0.2)
    out = make_edge(store, metrics_registry).handle(msg(PLAIN_OFFER))
    assert out.status == 503 and out.retry_after == 5


def test_release_sends_release_and_deletes_the_state(store, metrics_registry):
    agw = Agw()
    edge = make_edge(store, metrics_registry, agw)
    edge.handle(msg((FIXTURES / "chromium_offer_audio.sdp").read_text()))
    assert edge.release("call-1", ("ftag",), "bye") is True
    assert agw.requests[-1].command is Command.RELEASE
    assert store.redis.keys(DIALOG_PREFIX + "*") == []
    assert edge.release("call-1", ("ftag",), "bye") is False
    assert metrics_registry.get_sample_value("e2ae_plugin_releases_total", {"reason": "bye"}) == 1


def test_forked_answers_are_each_applied_and_the_200_reapplies_its_own(store, metrics_registry):
    agw = Agw()
    edge = make_edge(store, metrics_registry, agw)
    edge.handle(msg((FIXTURES / "chromium_offer_audio.sdp").read_text()))
    fork_b = CORE_ANSWER.replace("10.0.0.3", "10.0.0.4").replace("6000", "6100")
    a1 = edge.handle(msg(CORE_ANSWER, request=False, side=Side.CORE, to_tag="A", status=183))
    b1 = edge.handle(msg(fork_b, request=False, side=Side.CORE, to_tag="B", status=183))
    a2 = edge.handle(msg(CORE_ANSWER, request=False, side=Side.CORE, to_tag="A", status=200))
    assert a1.body == a2.body and b1.body is not None
    modifies = [r for r in agw.requests if r.command is Command.MODIFY]
    assert [m.streams[0].core.remote_address for m in modifies] == ["10.0.0.3", "10.0.0.4", "10.0.0.3"]
    assert len({m.transaction for m in modifies}) == 3
    # A retransmitted 200 changes nothing more.
    edge.handle(msg(CORE_ANSWER, request=False, side=Side.CORE, to_tag="A", status=200))
    assert len([r for r in agw.requests if r.command is Command.MODIFY]) == 3


@pytest.mark.req("SRTP-10", "T38-10")
@pytest.mark.parametrize("policy", ["bye", "keep"])
def test_dtls_failure_event_follows_the_configured_policy(store, metrics_registry, policy):
    """[policy] dtls_failure: "bye" hands the dialog back to be ended, "keep" only logs and counts."""
    edge = Edge(store, Agw(), Metrics(metrics_registry), agent="127.0.0.1:5060", dtls_failure=policy)
    outcome = edge.handle(msg((FIXTURES / "chromium_offer_audio.sdp").read_text()))
    assert outcome.dialog
    record = edge.on_event({"event": "dtls_failed", "reason": "fingerprint_mismatch",
                            "dialog": outcome.dialog, "stream_id": 0})
    assert (record is not None) == (policy == "bye")
    if record is not None:
        assert record.call_id == "call-1"
    assert metrics_registry.get_sample_value(
        "e2ae_plugin_dtls_failures_total", {"reason": "fingerprint_mismatch"}) == 1
    assert edge.on_event({"event": "dtls_established", "dialog": outcome.dialog}) is None
