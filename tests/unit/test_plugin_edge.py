"""The plugin's SIP logic without Kamailio: offer/answer tracking, idempotency, errors.

Real Redis (the session's redis-server); the AGW is a small in-process stand-in that
answers every stream with fixed ports, so the SIP-side rules can be checked alone (the
real mediad is exercised by tests/integration/test_edge_*.py).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from sdp_rules.errors import UnavailableError
from iq import Command, Fingerprint, IqReply, Side, StreamReply, TerminationReply, TransportReply

import plugin.edge
from plugin.edge import REFRESH_INTERVAL, Edge, Message
from plugin.lifecycle import CallEvent, CallState, EndRequest
from plugin.metrics import Metrics
from plugin.state import (DIALOG_PREFIX, LOCK_PREFIX, Claim, DialogStore, dialog_id, dialog_key,
                          tombstone_key)

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
        # A BUNDLE transport (RFC 9143) gets the port, fingerprint and ICE credentials; a stream
        # on it repeats the transport's address and port, as mediad answers.
        transports = [TransportReply(t.transport_id, "127.0.0.1", 31000 + 2 * t.transport_id, AGW_FP,
                                     ice_ufrag="ufrag", ice_pwd="p" * 24) for t in iq.transports]
        streams = [StreamReply(s.stream_id,
                               access=TerminationReply("127.0.0.1", 31000 + 2 * s.transport_id)
                               if s.transport_id is not None else
                               TerminationReply("127.0.0.1", 30000 + s.stream_id, local_fingerprint=AGW_FP,
                                                ice_ufrag="ufrag", ice_pwd="p" * 24),
                               core=TerminationReply("127.0.0.2", 40000 + 2 * s.stream_id, 40001 + 2 * s.stream_id))
                   for s in iq.streams]
        return IqReply(iq.dialog, iq.transaction, streams, transports=transports)


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
    reoffer = msg(offer, cseq=2, to_tag="t1")
    first, second = edge.handle(reoffer), edge.handle(reoffer)
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


@pytest.mark.parametrize("code, status", [(503, 503), (488, 488), (400, 500), (404, 500), (501, 500), (500, 500)])
def test_agw_errors_map_to_sip_statuses(store, metrics_registry, code, status):
    """mediad overloaded: 503; the peer's SDP asking what mediad cannot do (its 488): 488;
    any other error of mediad's is a defect on our side, a 500 with a Warning saying so,
    never a 488 blamed on the peer."""
    edge = make_edge(store, metrics_registry, Agw(error=(code, "no")))
    out = edge.handle(msg((FIXTURES / "chromium_offer_audio.sdp").read_text()))
    assert out.status == status
    assert (out.retry_after is not None) == (status == 503)
    assert out.warning and ("media: no" if status == 488 else "mediad") in out.warning
    assert store.redis.keys(DIALOG_PREFIX + "*") == []


def test_an_unusable_agw_reply_is_500_and_undone(store, metrics_registry):
    """mediad answered, but without what the rules need (no core termination): our defect
    (500), and the reservation it made is released."""
    class Broken(Agw):
        def request(self, iq):
            reply = super().request(iq)
            for stream in reply.streams:
                stream.core = None
            return reply

    agw = Broken()
    out = make_edge(store, metrics_registry, agw).handle(msg((FIXTURES / "chromium_offer_audio.sdp").read_text()))
    assert out.status == 500 and "core termination" in out.warning
    assert [r.command for r in agw.requests] == [Command.RESERVE, Command.RELEASE]
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
    """[policy] dtls_failure: "bye" releases the call and queues its BYEs (once a 2xx named
    the callee), "keep" only logs and counts."""
    edge = Edge(store, Agw(), Metrics(metrics_registry), agent="127.0.0.1:5060", dtls_failure=policy)
    outcome = edge.handle(msg((FIXTURES / "chromium_offer_audio.sdp").read_text()))
    assert outcome.dialog
    edge.handle(msg(CORE_ANSWER, request=False, side=Side.CORE, to_tag="callee", status=200))
    released = edge.on_event({"event": "dtls_failed", "reason": "fingerprint_mismatch",
                              "dialog": outcome.dialog, "stream_id": 0})
    assert released == (policy == "bye")
    ends = [item for item in edge.take_outbox() if isinstance(item, EndRequest)]
    if policy == "bye":
        assert [(e.call_id, e.from_tag, e.to_tag, e.event) for e in ends] == [
            ("call-1", "ftag", "callee", CallEvent.DTLS_FAILED)]
        assert store.get(outcome.dialog) is None
    else:
        assert ends == [] and store.get(outcome.dialog).state is CallState.ANSWERED
    assert metrics_registry.get_sample_value(
        "e2ae_plugin_dtls_failures_total", {"reason": "fingerprint_mismatch"}) == 1
    assert edge.on_event({"event": "dtls_established", "dialog": outcome.dialog}) is False


# -- robustness: dialog matching, releases, leaks ------------------------------------

WIC_OFFER_FILE = "chromium_offer_audio.sdp"


class CachingAgw(Agw):
    """Like mediad: a repeated (dialog, transaction) is answered from a cache, and does nothing.

    As in mediad, the replies of a dialog's RESERVE and MODIFY live as long as the
    dialog: a RELEASE forgets them.  ``asked`` has every request, ``requests`` those
    not answered from the cache.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cache = {}
        self.asked = []
        self.released = []
        self.reserved = set()

    def request(self, iq):
        self.asked.append(iq)
        key = (iq.dialog, iq.transaction)
        if key in self.cache:
            return self.cache[key]
        reply = super().request(iq)
        if iq.command is Command.RELEASE:
            self.cache = {k: v for k, v in self.cache.items() if k[0] != iq.dialog}
            if iq.dialog in self.reserved:
                self.reserved.discard(iq.dialog)
                self.released.append(iq.dialog)
        elif iq.command is Command.RESERVE:
            self.reserved.add(iq.dialog)
        self.cache[key] = reply
        return reply


def test_reply_to_a_callee_reinvite_is_its_answer_not_a_new_dialog(store, metrics_registry):
    agw = Agw()
    edge = make_edge(store, metrics_registry, agw)
    edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))
    edge.handle(msg(CORE_ANSWER, request=False, side=Side.CORE, to_tag="t1", status=200))
    # The core re-offers: From is the callee (t1), To the WIC (ftag).
    reoffer = Message(request=True, method="INVITE", call_id="call-1", from_tag="t1", to_tag="ftag", cseq=5,
                      side=Side.CORE, body=CORE_ANSWER.replace("6000", "6002"), content_type="application/sdp")
    out = edge.handle(reoffer)
    assert out.body and "a=fingerprint" in out.body and not out.failed
    wic_answer = (FIXTURES / "chromium_answer_audio.sdp").read_text().replace("a=setup:active", "a=setup:passive")
    reply = Message(request=False, method="INVITE", call_id="call-1", from_tag="t1", to_tag="ftag", cseq=5,
                    side=Side.ACCESS, body=wic_answer, content_type="application/sdp", status=200)
    answer = edge.handle(reply)
    assert not answer.failed and answer.dialog == out.dialog
    assert "a=fingerprint" not in answer.body and "a=setup" not in answer.body  # an answer toward the core
    assert [r.command for r in agw.requests].count(Command.RESERVE) == 1
    assert len(store.redis.keys(DIALOG_PREFIX + "*")) == 1
    assert rewrites(metrics_registry, "access_to_core", "answer", "rewritten") == 1


def test_a_reply_never_creates_a_record_except_an_invites_18x_2xx(store, metrics_registry):
    agw = Agw()
    edge = make_edge(store, metrics_registry, agw)
    update_ok = msg(PLAIN_ANSWER, request=False, method="UPDATE", side=Side.CORE, to_tag="t1", status=200, cseq=3)
    assert edge.handle(update_ok).body is None
    assert agw.requests == [] and store.redis.keys(DIALOG_PREFIX + "*") == []


@pytest.mark.parametrize("method", ["OPTIONS", "MESSAGE", "INFO"])
def test_sdp_in_other_methods_is_left_alone(store, metrics_registry, method):
    agw = Agw()
    edge = make_edge(store, metrics_registry, agw)
    body = (FIXTURES / WIC_OFFER_FILE).read_text()
    assert edge.handle(msg(body, method=method)).body is None
    assert edge.handle(msg(body, request=False, method=method, side=Side.CORE, to_tag="t1", status=200)).body is None
    assert agw.requests == [] and store.redis.keys(DIALOG_PREFIX + "*") == []


def test_a_second_release_of_the_same_dialog_id_releases_again(store, metrics_registry):
    # INVITE -> 407 (failure release); the INVITE retried with the same Call-ID and From
    # tag (same dialog id) -> 486 (failure release again): mediad must release both.
    agw = CachingAgw()
    edge = make_edge(store, metrics_registry, agw)
    offer = (FIXTURES / WIC_OFFER_FILE).read_text()
    edge.handle(msg(offer))
    assert edge.release("call-1", ("ftag",), "failure") is True
    assert not edge.handle(msg(offer, cseq=2)).failed
    assert edge.release("call-1", ("ftag",), "failure") is True
    assert len(agw.released) == 2 and agw.reserved == set()
    releases = [r.transaction for r in agw.requests if r.command is Command.RELEASE]
    assert len(set(releases)) == 2


class TimesOutAfterReserving(CachingAgw):
    def request(self, iq):
        reply = super().request(iq)
        if iq.command is Command.RESERVE:
            raise UnavailableError("mediad did not answer within 0.500s", 5)
        return reply


def test_reserve_that_times_out_after_mediad_did_it_is_released(store, metrics_registry):
    agw = TimesOutAfterReserving()
    edge = make_edge(store, metrics_registry, agw)
    out = edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))
    assert out.status == 503
    assert agw.reserved == set() and len(agw.released) == 1
    assert store.redis.keys(DIALOG_PREFIX + "*") == []


@pytest.mark.parametrize("save", ["create", "commit"])
def test_reserve_whose_save_fails_is_released_and_a_retry_works(store, metrics_registry, monkeypatch, save):
    agw = CachingAgw()
    edge = make_edge(store, metrics_registry, agw)
    offer = (FIXTURES / WIC_OFFER_FILE).read_text()

    def broken_save(self, record):
        raise UnavailableError("redis: TimeoutError")

    with monkeypatch.context() as m:
        m.setattr(DialogStore if save == "create" else Claim, save, broken_save)
        if save == "commit":  # the claimed path: an INVITE whose dialog has a lock holder
            m.setattr(DialogStore, "create", lambda self, record: (False, None))
        assert edge.handle(msg(offer)).status == 503
    # Claimed: the RESERVE made before the conditional save is undone first.
    assert agw.reserved == set() and len(agw.released) == (1 if save == "create" else 2)
    retry = edge.handle(msg(offer))
    assert not retry.failed and retry.body
    assert store.get(dialog_id("call-1", "ftag")).rules.data.get("agw")


@pytest.mark.req("SRTP-4")
def test_a_retransmitted_initial_invite_gets_the_same_bytes_and_keeps_its_reservation(store, metrics_registry,
                                                                                      sent_commands):
    """Saved without a claim, the initial INVITE's twin (past Kamailio's transaction) finds
    the record on saving: its RESERVE was the same request (mediad's cache answered it),
    so nothing is released, and the claimed path answers from the record's cache."""
    agw = CachingAgw()
    edge = make_edge(store, metrics_registry, agw)
    offer = (FIXTURES / WIC_OFFER_FILE).read_text()
    first = edge.handle(msg(offer))
    record = store.get(dialog_id("call-1", "ftag"))
    second = edge.handle(msg(offer))
    assert not first.failed and second.body == first.body
    assert [r.command for r in agw.asked] == [Command.RESERVE, Command.RESERVE]
    assert agw.asked[0].transaction == agw.asked[1].transaction and len(agw.requests) == 1
    assert agw.released == [] and agw.reserved == {record.id}
    assert store.get(record.id).to_json() == record.to_json()
    assert rewrites(metrics_registry, "access_to_core", "offer", "cached") == 1


@pytest.mark.req("SRTP-4")
def test_an_initial_invite_whose_dialog_is_held_undoes_its_reserve_and_waits_for_the_lock(store, metrics_registry,
                                                                                         monkeypatch):
    """A record without media, or a worker holding the lock: the RESERVE made before the
    conditional save is new, so it is released, and the INVITE goes the claimed way."""
    import threading

    agw = CachingAgw()
    edge = make_edge(store, metrics_registry, agw)
    ident = dialog_id("call-1", "ftag")
    holder = store.lock(ident).__enter__()
    create, saves = store.create, []

    def refused_then_freed(record):
        # The holder lets go 0.2 s after the INVITE's first save was refused (not on a
        # clock started before it: on a busy machine that could free the lock too early).
        result = create(record)
        saves.append(result[0])
        if len(saves) == 1:
            threading.Timer(0.2, holder.__exit__).start()
        return result

    monkeypatch.setattr(store, "create", refused_then_freed)
    out = edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))
    assert not out.failed and "RTP/AVPF" in out.body
    assert saves[0] is False  # the lock was held: the conditional save refused
    assert [r.command for r in agw.requests] == [Command.RESERVE, Command.RELEASE, Command.RESERVE]
    assert agw.released == [ident] and agw.reserved == {ident}
    saved = store.get(ident)
    assert saved.rules.data.get("agw") and saved.rendered
    # A plain-RTP dialog (no media at mediad) under the same id, then a WIC INVITE for it.
    store.redis.delete(dialog_key(ident))
    agw.reserved.clear()
    agw.requests.clear()
    edge.handle(msg(PLAIN_OFFER, cseq=1))
    assert agw.requests == [] and not store.get(ident).rules.data.get("agw")
    out = edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text(), cseq=2))
    assert not out.failed
    assert [r.command for r in agw.requests] == [Command.RESERVE, Command.RELEASE, Command.RESERVE]
    assert agw.reserved == {ident} and store.get(ident).rules.data.get("agw")


def test_refused_reserve_sends_no_release(store, metrics_registry):
    agw = Agw(error=(400, "no"))
    edge = make_edge(store, metrics_registry, agw)
    assert edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text())).status == 500
    assert [r.command for r in agw.requests] == [Command.RESERVE]


def test_release_waits_for_the_dialog_lock_and_a_late_reply_cannot_recreate(store, metrics_registry):
    agw = CachingAgw()
    edge = make_edge(store, metrics_registry, agw)
    edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))
    record = store.find("call-1", "ftag")
    # Another worker holds the lock while it applies a 2xx: the release waits for it.
    with store.lock(record.id):
        import threading

        done = threading.Event()
        worker = threading.Thread(target=lambda: (edge.release("call-1", ("ftag",), "bye"), done.set()))
        worker.start()
        assert not done.wait(0.2)
        fresh = store.get(record.id)
        fresh.callee_tag = "t1"
        store.save(fresh)
    worker.join(5)
    assert done.is_set() and agw.released == [record.id]
    assert store.redis.keys(DIALOG_PREFIX + "*") == []
    # The 200 that crossed the BYE arrives now: no record, no RESERVE.
    late = edge.handle(msg(CORE_ANSWER, request=False, side=Side.CORE, to_tag="t1", status=200))
    assert late.status == 481
    assert store.redis.keys(DIALOG_PREFIX + "*") == []
    assert [r.command for r in agw.requests].count(Command.RESERVE) == 1
    # A stale copy read before the release is not saved back either.
    stale = edge.handle(Message(request=True, method="UPDATE", call_id="call-1", from_tag="ftag", to_tag="t1",
                                cseq=9, side=Side.ACCESS, body=PLAIN_OFFER, content_type="application/sdp"))
    assert stale.status == 481 and store.redis.keys(DIALOG_PREFIX + "*") == []
    # The tombstone expires by itself; a new initial INVITE (a retry) is not refused.
    assert 0 < store.redis.ttl(tombstone_key(record.id)) <= 32
    assert not edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text(), cseq=2)).failed


def test_in_dialog_requests_without_sdp_refresh_the_record(store, metrics_registry):
    edge = make_edge(store, metrics_registry)
    edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))
    edge.handle(msg(CORE_ANSWER, request=False, side=Side.CORE, to_tag="t1", status=200))
    (key,) = store.redis.keys(DIALOG_PREFIX + "*")
    for n, (method, from_tag, to_tag, ctype) in enumerate([("UPDATE", "t1", "ftag", ""),
                                                         ("OPTIONS", "ftag", "t1", ""),
                                                         ("INFO", "t1", "ftag", "application/dtmf-relay")]):
        store.redis.expire(key, 5)
        # What kemi does for every in-dialog request but BYE, with or without a body.
        request = Message(request=True, method=method, call_id="call-1", from_tag=from_tag, to_tag=to_tag,
                          cseq=10 + n, side=Side.CORE, body="Signal=1\r\n" if ctype else "", content_type=ctype)
        assert edge.handle(request).body is None
        # Each later than REFRESH_INTERVAL after the one before (this worker skips sooner ones).
        assert edge.refresh(request.call_id, (request.from_tag, request.to_tag), method,
                            now=n * REFRESH_INTERVAL) is True
        assert store.redis.ttl(key) > 50, method
    assert edge.refresh("call-1", ("nope", "none")) is False


def test_callee_tag_is_the_2xx_fork_with_or_without_body(store, metrics_registry):
    edge = make_edge(store, metrics_registry)
    edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))
    edge.handle(msg(CORE_ANSWER, request=False, side=Side.CORE, to_tag="A", status=183))
    assert store.find("call-1", "ftag").callee_tag == "A"
    edge.handle(msg(request=False, side=Side.CORE, to_tag="B", status=200))  # fork B's 200, no body
    assert store.find("call-1", "ftag").callee_tag == "B"
    fork_c = CORE_ANSWER.replace("10.0.0.3", "10.0.0.5")
    edge.handle(msg(fork_c, request=False, side=Side.CORE, to_tag="C", status=200))
    assert store.find("call-1", "ftag").callee_tag == "C"


@pytest.fixture
def sent_commands(monkeypatch):
    """Every command sent to Redis from now on (a pipeline counts once: one round trip)."""
    import redis.connection

    sent = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return sent


def test_redis_round_trips_per_message_of_a_basic_call(store, metrics_registry, sent_commands):
    """INVITE 1 (create), 200 2 (claim, commit), ACK 0, BYE 1 (take): 4 (7, then 5 before).

    In-dialog requests cost one round trip whichever side sent them, and none when
    this worker refreshed the dialog less than REFRESH_INTERVAL ago.
    """
    edge = make_edge(store, metrics_registry)
    store.load_scripts()  # Redis knows the scripts: what follows counts only the work
    sent_commands.clear()
    trips = {}

    def count(kind, outcome):
        trips[kind] = len(sent_commands)
        sent_commands.clear()
        return outcome

    assert not count("INVITE", edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))).failed
    assert not count("200", edge.handle(msg(CORE_ANSWER, request=False, side=Side.CORE, to_tag="t1",
                                            status=200))).failed
    # What kemi does for the ACK: handle it (no SDP), relay it, refresh nothing.
    ack = msg(method="ACK", to_tag="t1")
    count("ACK", (edge.handle(ack), edge.refresh(ack.call_id, (ack.from_tag, ack.to_tag), "ACK")))
    # An in-dialog request from the callee (its tag first), then one more within the interval.
    assert count("UPDATE from the callee", edge.refresh("call-1", ("t1", "ftag"), "UPDATE", now=1000.0))
    assert count("INFO within the interval", edge.refresh("call-1", ("ftag", "t1"), "INFO", now=1001.0))
    assert count("BYE", edge.release("call-1", ("ftag", "t1"), "bye"))
    # The dialog module's end event, after the BYE: finds nothing.
    assert not count("second release", edge.release("call-1", ("ftag", "t1"), "bye"))
    assert trips == {"INVITE": 1, "200": 2, "ACK": 0, "UPDATE from the callee": 1,
                     "INFO within the interval": 0, "BYE": 1, "second release": 1}
    assert store.redis.keys(DIALOG_PREFIX + "*") == []
    assert store.redis.exists(tombstone_key(dialog_id("call-1", "ftag")))


def test_a_2xx_answered_from_the_cache_refreshes_the_record(store, metrics_registry):
    """The 200 repeating its 183's answer writes nothing, yet its ACK may rely on it for the TTL."""
    edge = make_edge(store, metrics_registry)
    edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))
    edge.handle(msg(CORE_ANSWER, request=False, side=Side.CORE, to_tag="t1", status=183))
    (key,) = store.redis.keys(DIALOG_PREFIX + "*")
    store.redis.expire(key, 5)
    edge.handle(msg(CORE_ANSWER, request=False, side=Side.CORE, to_tag="t1", status=200))
    assert rewrites(metrics_registry, "core_to_access", "answer", "cached") == 1
    assert store.redis.ttl(key) > 50


def test_refresh_is_sent_again_after_the_interval_and_the_cache_is_bounded(store, metrics_registry,
                                                                           sent_commands, monkeypatch):
    monkeypatch.setattr(plugin.edge, "REFRESH_CACHE_SIZE", 2)
    edge = make_edge(store, metrics_registry)
    for call_id in ("c1", "c2", "c3"):
        store.redis.set(dialog_key(dialog_id(call_id, "a")), "{}", ex=5)
    store.load_scripts()
    sent_commands.clear()
    assert edge.refresh("c1", ("a", "b"), "OPTIONS", now=0.0)
    assert edge.refresh("c1", ("b", "a"), "OPTIONS", now=REFRESH_INTERVAL - 1)  # either direction
    assert len(sent_commands) == 1
    assert edge.refresh("c1", ("a", "b"), "OPTIONS", now=REFRESH_INTERVAL)
    assert len(sent_commands) == 2
    assert store.redis.ttl(dialog_key(dialog_id("c1", "a"))) > 50
    sent_commands.clear()
    # A failed refresh is not remembered: the next request tries again.
    assert not edge.refresh("c9", ("a", "b"), "OPTIONS", now=REFRESH_INTERVAL)
    assert not edge.refresh("c9", ("a", "b"), "OPTIONS", now=REFRESH_INTERVAL)
    assert len(sent_commands) == 2
    # At most REFRESH_CACHE_SIZE dialogs remembered: the oldest is forgotten first.
    edge.refresh("c2", ("a", "b"), "OPTIONS", now=REFRESH_INTERVAL)
    edge.refresh("c3", ("a", "b"), "OPTIONS", now=REFRESH_INTERVAL)
    sent_commands.clear()
    assert edge.refresh("c1", ("a", "b"), "OPTIONS", now=REFRESH_INTERVAL + 1)
    assert len(sent_commands) == 1


def test_dtls_failure_release_is_counted_under_its_reason(store, metrics_registry):
    agw = CachingAgw()
    edge = make_edge(store, metrics_registry, agw)
    outcome = edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))
    assert edge.on_event({"event": "dtls_failed", "reason": "timeout", "dialog": outcome.dialog,
                          "stream_id": 0}) is True
    # The BYE that the dialog module then relays finds the call released: nothing more.
    assert edge.release("call-1", ("ftag",), "bye") is False
    assert agw.released == [outcome.dialog]
    assert metrics_registry.get_sample_value("e2ae_plugin_releases_total", {"reason": "dtls_failed"}) == 1
    assert not metrics_registry.get_sample_value("e2ae_plugin_releases_total", {"reason": "bye"})  # 0 or absent
    assert store.redis.exists(tombstone_key(outcome.dialog))


def test_scripts_run_again_after_redis_forgot_them(store, metrics_registry):
    """A Redis that lost its scripts (SCRIPT FLUSH, a restart) gets them again: no error."""
    edge = make_edge(store, metrics_registry)
    store.load_scripts()
    store.redis.script_flush()
    assert not edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text())).failed
    assert store.find("call-1", "ftag") is not None


def test_a_broken_script_connection_is_reopened_once(store, metrics_registry):
    """Redis closed the worker's connection (restart, client kill): the next message still works."""
    edge = make_edge(store, metrics_registry)
    store.load_scripts()
    killed = store.redis.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    assert not edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text())).failed
    assert store.find("call-1", "ftag") is not None


def test_threads_sharing_a_store_each_read_their_own_replies(store):
    """A store used from several threads (a lock released by a timer, an embedding
    application): each thread's scripts get their own replies, never another's."""
    import gc
    import threading

    from plugin.state import DialogRecord

    idents = [dialog_id(f"call-{n}", "ftag") for n in range(4)]
    for n, ident in enumerate(idents):
        store.save(DialogRecord(id=ident, call_id=f"call-{n}", caller_tag="ftag", caller_side="access"))
    errors: list[str] = []
    start = threading.Barrier(len(idents))

    def worker(ident: str) -> None:
        start.wait()
        try:
            for _ in range(300):
                with store.claim_id(ident) as claim:
                    if claim.record is None or claim.record.id != ident:
                        errors.append(f"{ident} read {claim.record and claim.record.id}")
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(f"{ident}: {exc!r}")

    clients = len(store.redis.client_list())
    threads = [threading.Thread(target=worker, args=(ident,)) for ident in idents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert all(store.get(ident) is not None for ident in idents)
    assert not store.redis.keys(LOCK_PREFIX + "*")
    # A thread's connection goes with it: none is left open per thread that ran.
    gc.collect()
    deadline = time.monotonic() + 2.0  # Redis sees a closed connection on its next loop
    while len(store.redis.client_list()) != clients and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(store.redis.client_list()) == clients


def test_unreachable_redis_is_unavailable_without_retrying_the_timeout():
    """Nothing listens: the script raises UnavailableError (503 upstream), at once."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = DialogStore(f"redis://127.0.0.1:{port}/0", ttl=60, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(UnavailableError):
        store.script("touch", [DIALOG_PREFIX + "x"], 60)
    assert time.monotonic() - started < 1.0
    store.close()


@pytest.mark.req("SRTP-4")
def test_the_sdp_part_of_a_multipart_offer_is_rewritten_and_the_other_parts_kept(store, metrics_registry):
    """An emergency call's INVITE (RFC 6442): SDP and a PIDF-LO location in one multipart body."""
    ctype = 'multipart/mixed; boundary="loc-b0undary"'
    pidf = '<?xml version="1.0"?>\r\n<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:wic@x"/>'
    offer = (FIXTURES / WIC_OFFER_FILE).read_text()
    body = ("--loc-b0undary\r\nContent-Type: application/sdp\r\n\r\n" + offer
            + "\r\n--loc-b0undary\r\nContent-Type: application/pidf+xml\r\nContent-ID: <wic@x>\r\n\r\n"
            + pidf + "\r\n--loc-b0undary--\r\n")
    edge = make_edge(store, metrics_registry)
    request = msg(body)
    request.content_type = ctype
    out = edge.handle(request)
    assert not out.failed and out.content_type == ctype
    head, sdp_and_rest = out.body.split("\r\n\r\n", 1)
    assert head == "--loc-b0undary\r\nContent-Type: application/sdp"
    sdp, rest = sdp_and_rest.split("\r\n--loc-b0undary\r\n", 1)
    # The same SDP the bare offer gets toward the core, and the location part byte for byte.
    from prometheus_client import CollectorRegistry

    alone = Message(request=True, method="INVITE", call_id="call-2", from_tag="ftag", to_tag="", cseq=1,
                    side=Side.ACCESS, body=offer, content_type="application/sdp")
    bare = make_edge(store, CollectorRegistry()).handle(alone).body
    assert "RTP/AVPF" in sdp and "fingerprint" not in sdp and sdp == bare
    assert rest == "Content-Type: application/pidf+xml\r\nContent-ID: <wic@x>\r\n\r\n" + pidf + "\r\n--loc-b0undary--\r\n"
    # Malformed multipart: 400, and two SDP parts: 488, each with a Warning saying why.
    broken = msg(body.replace("--loc-b0undary--", "--other--"), cseq=3)
    broken.content_type = ctype
    out = edge.handle(broken)
    assert out.status == 400 and "closing boundary" in out.warning
    twice = msg(body.replace("application/pidf+xml", "application/sdp"), cseq=4)
    twice.content_type = ctype
    out = edge.handle(twice)
    assert out.status == 488 and "2 SDP parts" in out.warning


# -- an INVITE's 18x/2xx without a claim (the shared record cache) --------------------

def cached_edges(store, metrics_registry, agw):
    """Two workers sharing one record cache, as Kamailio's workers share an htable."""
    cache = plugin.edge.DictCache()
    return (Edge(store, agw, Metrics(metrics_registry), agent="127.0.0.1:5060", cache=cache),
            Edge(store, agw, Metrics(None), agent="127.0.0.1:5060", cache=cache), cache)


class Mediad(CachingAgw):
    """As mediad: a MODIFY of a dialog it does not hold (released) is refused, 404."""

    def request(self, iq):
        if iq.command is Command.MODIFY and iq.dialog not in self.reserved:
            self.asked.append(iq)
            return IqReply(iq.dialog, iq.transaction, error="unknown dialog", error_code=404)
        return super().request(iq)


def answer_200(status=200, body=CORE_ANSWER, to_tag="t1"):
    return msg(body, request=False, side=Side.CORE, to_tag=to_tag, status=status)


def test_commit_if_saves_only_the_record_it_read_unlocked(store):
    """The conditional commit's script against Redis: saved when the record is the one
    read and no one holds the lock; else nothing changes (0 changed or gone, -1 locked)."""
    from plugin.state import TAKEN, DialogRecord, record_digest

    record = DialogRecord(id="d1", call_id="c", caller_tag="f", caller_side="access")
    assert store.create(record) == (True, None)
    read = record.raw
    assert record_digest(read) == store.redis.execute_command("EVAL", "return redis.sha1hex(ARGV[1])", 0, read).decode()
    first = DialogRecord.from_json(read)
    first.callee_tag = "t1"
    assert store.commit_if(first, read) == 1 and store.get("d1").callee_tag == "t1"
    assert first.raw == store.redis.get(dialog_key("d1")).decode()
    second = DialogRecord.from_json(read)  # read before the first commit: stale now
    second.callee_tag = "t2"
    assert store.commit_if(second, read) == 0 and store.get("d1").callee_tag == "t1"
    with store.lock("d1"):
        third = DialogRecord.from_json(first.raw)
        third.callee_tag = "t3"
        assert store.commit_if(third, first.raw) == -1
    assert store.get("d1").callee_tag == "t1"
    assert store.take_id("d1")[0] is TAKEN
    assert store.commit_if(third, first.raw) == 0
    assert store.redis.get(dialog_key("d1")) is None  # a released dialog is not re-created


def test_update_keeps_a_change_made_between_its_read_and_its_write(store):
    """Two writers: the edge's own change (update) and a message's claimed commit landing
    between update's read and its write.  Both changes survive: update reads again."""
    from plugin.state import DialogRecord

    store.create(DialogRecord(id="u1", call_id="c", caller_tag="f", caller_side="access"))
    calls = []

    def change(record):
        calls.append(record.callee_tag)
        record.rules.data["moved"] = len(calls)
        if len(calls) == 1:  # another worker commits the dialog now
            with store.claim_id("u1") as claim:
                claim.record.callee_tag = "t-other"
                claim.commit(claim.record)

    saved = store.update("u1", change)
    assert calls == ["", "t-other"]
    stored = store.get("u1")
    assert stored.callee_tag == "t-other" and stored.rules.data["moved"] == 2 and saved.raw == stored.raw


def test_update_never_recreates_a_dialog_released_between_its_read_and_its_write(store):
    """A release (take: the record deleted, the tombstone written) between update's read
    and its write: nothing is written, the record stays gone, the tombstone stays."""
    from plugin.state import DialogRecord, tombstone_key

    store.create(DialogRecord(id="u2", call_id="c", caller_tag="f", caller_side="access"))

    def change(record):
        record.callee_tag = "late"
        assert store.take_id("u2")[0] == "taken"

    assert store.update("u2", change) is None
    assert store.redis.get(dialog_key("u2")) is None
    assert store.redis.exists(tombstone_key("u2")) == 1
    assert store.update("u2", change) is None  # and after it, nothing to change


def test_update_waits_for_a_claim_and_changes_what_it_committed(store):
    """A worker holds the dialog's lock: update writes nothing while it is held, then
    applies its change to the record the worker committed."""
    import threading

    from plugin.state import DialogRecord

    store.create(DialogRecord(id="u3", call_id="c", caller_tag="f", caller_side="access"))
    claim = store.claim_id("u3")
    seen = []

    def change(record):
        seen.append(record.callee_tag)
        record.rules.data["moved"] = True

    done = threading.Thread(target=lambda: seen.append(store.update("u3", change)))
    done.start()
    time.sleep(0.1)
    assert "moved" not in store.get("u3").rules.data
    claim.record.callee_tag = "t-claimed"
    claim.commit(claim.record)
    done.join(timeout=5)
    stored = store.get("u3")
    assert stored.callee_tag == "t-claimed" and stored.rules.data["moved"] is True
    assert seen[-2] == "t-claimed" and seen[-1].raw == stored.raw


def test_commit_if_after_its_deadline_writes_nothing(store, monkeypatch):
    from plugin.state import DialogRecord

    record = DialogRecord(id="d2", call_id="c", caller_tag="f", caller_side="access")
    store.create(record)
    changed = DialogRecord.from_json(record.raw)
    changed.callee_tag = "late"
    monkeypatch.setattr(store, "timeout", -1.0)  # the deadline is already past when Redis runs it
    with pytest.raises(UnavailableError):
        store.commit_if(changed, record.raw)
    assert store.get("d2").callee_tag == ""


def test_a_200_from_the_shared_cache_is_one_round_trip(store, metrics_registry, sent_commands):
    """INVITE 1 (create), 200 1 (conditional commit, on another worker), BYE 1 (take)."""
    agw = Mediad()
    invite_worker, reply_worker, cache = cached_edges(store, metrics_registry, agw)
    store.load_scripts()
    sent_commands.clear()
    trips = []
    out = invite_worker.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))
    trips.append(len(sent_commands))
    ident = dialog_id("call-1", "ftag")
    assert cache.get(ident) == store.redis.get(dialog_key(ident)).decode()
    sent_commands.clear()
    answer = reply_worker.handle(answer_200())
    trips.append(len(sent_commands))
    sent_commands.clear()
    assert reply_worker.release("call-1", ("ftag", "t1"), "bye")
    trips.append(len(sent_commands))
    assert trips == [1, 1, 1] and not out.failed and not answer.failed
    assert "a=fingerprint:sha-256 " + AGW_FP.value in answer.body
    assert [r.command for r in agw.asked] == [Command.RESERVE, Command.MODIFY, Command.RELEASE]
    assert cache.get(ident) is None and store.redis.keys(DIALOG_PREFIX + "*") == []


@pytest.mark.parametrize("forked", [False, True])
def test_the_cached_answer_is_the_one_a_claim_gives(store, metrics_registry, forked):
    """The same call, with and without the cache: the same bytes, the same record, the
    same requests to mediad (a 183 and a 200 of one callee, or of two forks)."""
    results = []
    early_answer = CORE_ANSWER.replace("10.0.0.3", "10.0.0.33") if forked else CORE_ANSWER
    random_ids = re.compile(r"a=tls-id:\S+")  # a new one per dialog
    for cached in (False, True):
        store.redis.flushdb()
        agw = Mediad()
        invite_worker, reply_worker, _ = cached_edges(store, None, agw)
        if not cached:
            invite_worker.cache = reply_worker.cache = plugin.edge.NO_CACHE
        invite_worker.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))
        early = reply_worker.handle(answer_200(183, early_answer, to_tag="B" if forked else "t1"))
        final = invite_worker.handle(answer_200(200))
        record = store.find("call-1", "ftag")
        results.append((random_ids.sub("", early.body), random_ids.sub("", final.body), record.callee_tag,
                        record.state, record.applied, record.rules.version, sorted(record.rendered),
                        [(r.command, r.transaction) for r in agw.asked[1:]]))
    assert results[0] == results[1]
    assert results[1][3] is CallState.ANSWERED and results[1][2] == "t1"


def test_a_cached_record_changed_by_another_worker_is_handled_again_under_a_claim(store, metrics_registry):
    """A 183 and a 200 with other answers (forks) both start from the INVITE's cached
    record: the second to commit finds the record changed and applies its answer again."""
    agw = Mediad()
    invite_worker, reply_worker, cache = cached_edges(store, metrics_registry, agw)
    invite_worker.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))
    ident = dialog_id("call-1", "ftag")
    read = cache.get(ident)
    fork_b = CORE_ANSWER.replace("10.0.0.3", "10.0.0.33")
    invite_worker.handle(answer_200(183, fork_b, to_tag="B"))  # commits: the cached copy was read before
    cache.put(ident, read)  # the second worker still sees the INVITE's record
    final = reply_worker.handle(answer_200(200))
    assert not final.failed and "a=fingerprint" in final.body
    record = store.find("call-1", "ftag")
    assert record.callee_tag == "t1" and record.state is CallState.ANSWERED
    modifies = [r for r in agw.asked if r.command is Command.MODIFY]
    # B's, the 200's from the stale copy, then the 200's again on the fresh record: mediad's
    # last applied answer is the 200's, and the record says so.
    assert len(modifies) == 3 and modifies[-1].transaction != modifies[-2].transaction
    assert record.applied.startswith("1 INVITE|core|") and record.applied in record.rendered
    assert cache.get(ident) is None


def test_a_cached_record_of_a_locked_dialog_waits_for_the_lock(store, metrics_registry):
    """A worker holds the dialog (a message under a claim): the commit without a claim is
    refused, and the 200 is handled again once the lock is free, on the holder's record."""
    import threading

    agw = Mediad()
    invite_worker, reply_worker, cache = cached_edges(store, metrics_registry, agw)
    invite_worker.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))
    ident = dialog_id("call-1", "ftag")
    holder = store.lock(ident).__enter__()
    threading.Timer(0.3, holder.__exit__).start()
    started = time.monotonic()
    final = reply_worker.handle(answer_200(200))
    assert time.monotonic() - started >= 0.25  # it waited for the holder
    assert not final.failed and store.find("call-1", "ftag").callee_tag == "t1"


def test_a_cached_record_of_a_released_dialog_cannot_recreate_it(store, metrics_registry):
    """A CANCEL's release crossed the 200, the cache still has the record (another
    Kamailio's, or dropped late): the 200 gets 481, nothing is saved, nothing reserved."""
    agw = Mediad()
    invite_worker, reply_worker, cache = cached_edges(store, metrics_registry, agw)
    invite_worker.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))
    ident = dialog_id("call-1", "ftag")
    read = cache.get(ident)
    assert invite_worker.release("call-1", ("ftag",), "failure")
    cache.put(ident, read)
    late = reply_worker.handle(answer_200(200))
    assert late.status == 481
    assert store.redis.keys(DIALOG_PREFIX + "*") == [] and agw.reserved == set()
    assert cache.get(ident) is None


# -- the release not waited for ---------------------------------------------------------

class SendingAgw(CachingAgw):
    """An Iq client that can send without waiting (mediad.io.client.IqClient.send): the
    request is served at once, and a refusal's context kept for take_failed."""

    def __init__(self, refuse_release: bool = False, down: bool = False) -> None:
        super().__init__()
        self.refuse_release = refuse_release
        self.down = down
        self.sent = []
        self.failed = []

    def send(self, iq, context):
        if self.down:
            raise UnavailableError("mediad unreachable: connection refused")
        self.sent.append(iq)
        reply = IqReply(iq.dialog, iq.transaction, error="no", error_code=500) if self.refuse_release \
            else self.request(iq)
        if reply.error_code not in (None, 404):
            self.failed.append(context)

    def take_failed(self):
        failed, self.failed = self.failed, []
        return failed


def test_the_release_is_sent_without_waiting_and_a_refusal_is_queued_for_retry(store, metrics_registry):
    from plugin.lifecycle import PendingRelease

    agw = SendingAgw()
    edge = make_edge(store, metrics_registry, agw)
    edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))
    edge.handle(answer_200())
    assert edge.release("call-1", ("ftag", "t1"), "bye")
    assert [r.command for r in agw.sent] == [Command.RELEASE] and agw.released == [dialog_id("call-1", "ftag")]
    assert edge.take_outbox() == []
    # mediad refuses it (its answer read later): the release comes back for the retry queue.
    agw = SendingAgw(refuse_release=True)
    edge = make_edge(store, None, agw)
    edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text(), cseq=3))
    assert edge.release("call-1", ("ftag",), "failure")
    (pending,) = edge.take_outbox()
    assert isinstance(pending, PendingRelease) and pending.dialog == dialog_id("call-1", "ftag")
    assert pending.event is CallEvent.FAILURE and pending.next_at > time.time()
    # The retry waits for the answer: done once mediad takes it.
    agw.refuse_release = False
    sent = len(agw.sent)
    assert edge.retry(pending) == (None, True)
    assert agw.released == [dialog_id("call-1", "ftag")]
    assert len(agw.sent) == sent and agw.requests[-1].command is Command.RELEASE  # asked, not sent blind


def test_a_release_mediad_cannot_be_sent_is_queued_for_retry(store, metrics_registry):
    agw = SendingAgw()
    edge = make_edge(store, metrics_registry, agw)
    edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))
    agw.down = True
    assert edge.release("call-1", ("ftag",), "failure")
    (pending,) = edge.take_outbox()
    assert pending.dialog == dialog_id("call-1", "ftag") and store.redis.keys(DIALOG_PREFIX + "*") == []
    agw.down = False
    assert edge.retry(pending) == (None, True) and agw.reserved == set()


def test_a_queued_release_of_a_dialog_still_in_redis_waits_for_mediad(store, metrics_registry):
    """A release queued before its dialog was taken (Redis was down) is retried whole,
    and its RELEASE waited for: the retry knows whether it is done."""
    from plugin.lifecycle import PendingRelease

    agw = SendingAgw()
    edge = make_edge(store, metrics_registry, agw)
    edge.handle(msg((FIXTURES / WIC_OFFER_FILE).read_text()))
    pending = PendingRelease("call-1", ("ftag",), CallEvent.FAILURE)
    assert edge.retry(pending) == (None, True)
    assert agw.sent == [] and agw.released == [dialog_id("call-1", "ftag")]
    assert store.redis.keys(DIALOG_PREFIX + "*") == []
