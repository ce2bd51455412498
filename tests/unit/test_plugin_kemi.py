"""The KEMI routes with a stand-in ``KSR`` module: what each route asks of the edge."""

from __future__ import annotations

import importlib
import os
import sys
import types

import pytest


class FakeHtable:
    """Kamailio's htable: named tables of str/int values, iterated in insertion order."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, object]] = {}
        self._its: dict[str, list] = {}

    def sht_sets(self, table, key, value):
        self.tables.setdefault(table, {})[key] = value
        return 1

    sht_seti = sht_sets

    def sht_get(self, table, key):
        return self.tables.get(table, {}).get(key)

    def sht_rm(self, table, key):
        self.tables.get(table, {}).pop(key, None)
        return 1

    def sht_iterator_start(self, name, table):
        self._its[name] = [list(self.tables.get(table, {}).items()), -1]
        return 1

    def sht_iterator_next(self, name):
        it = self._its[name]
        it[1] += 1
        return 1 if it[1] < len(it[0]) else -1

    def sht_iterator_end(self, name):
        self._its.pop(name, None)
        return 1

    def current(self, name):
        items, index = self._its[name]
        return items[index]


class FakeKsr(types.ModuleType):
    """Just enough of Kamailio's KSR for the routes; loose_route runs the dialog module's end event."""

    def __init__(self, pvs: dict[str, str]) -> None:
        super().__init__("KSR")
        self.pvs = pvs
        self.on_loose_route = lambda: None
        self.htable = FakeHtable()
        self.pv = types.SimpleNamespace(get=self._get, sets=lambda name, value: pvs.__setitem__(name, value))
        self.maxfwd = types.SimpleNamespace(process_maxfwd=lambda n: 1)
        self.sanity = types.SimpleNamespace(sanity_check=lambda checks, uris: 1)
        self.siputils = types.SimpleNamespace(has_totag=lambda: 1)
        self.rr = types.SimpleNamespace(loose_route=self._loose_route)
        self.replies: list[tuple[int, str, list[str]]] = []
        self.headers: list[str] = []
        self.hdr = types.SimpleNamespace(append_to_reply=self.headers.append, append=self.headers.append)
        self.tm = types.SimpleNamespace(t_newtran=lambda: 1, t_on_reply=lambda name: 1, t_relay=lambda: 1,
                                        t_set_disable_internal_reply=lambda on: 1, t_reply=self._reply)
        self.corex = types.SimpleNamespace(set_send_socket=lambda sock: 1)
        self.nathelper = types.SimpleNamespace(add_contact_alias=lambda: 1, handle_ruri_alias=lambda: -1)
        self.force_rport = lambda: 1
        self.set_forward_no_connect = lambda: 1
        self.sl = types.SimpleNamespace(sl_send_reply=self._reply, sl_reply_error=lambda: 1)
        self.logged: list[str] = []
        for level in ("err", "warn", "info", "dbg"):
            setattr(self, level, self.logged.append)

    def _get(self, name):
        if name.startswith("$shtitkey(") or name.startswith("$shtitval("):
            key, value = self.htable.current(name[10:-1])
            return key if name.startswith("$shtitkey(") else value
        return self.pvs.get(name)

    def _reply(self, code, reason):
        self.replies.append((code, reason, list(self.headers)))
        self.headers.clear()
        return 1

    def _loose_route(self):
        self.on_loose_route()
        return 1


def counter(child):
    """A counter's value now (the plugin's metrics are process-wide files under Kamailio's
    multiprocess mode, so tests compare values before and after)."""
    return child._value.get()


class RecordingEdge:
    def __init__(self, released: bool = False) -> None:
        from plugin.metrics import Metrics
        from prometheus_client import CollectorRegistry

        self.released = released
        self.releases = []
        self.refreshes = []
        self.handled = []
        self.outbox = []
        self.retry_after = 5
        self.metrics = Metrics(CollectorRegistry())
        from plugin.lifecycle import Lifecycle

        self.lifecycle = Lifecycle(self.metrics)

    def take_outbox(self):
        out, self.outbox = self.outbox, []
        return out

    def warning(self, reason):
        return f'399 127.0.0.1:5060 "{reason}"'

    def handle(self, msg):
        from plugin.edge import Outcome

        self.handled.append(msg)
        return Outcome()

    def refuse(self, msg, exc):
        from plugin.edge import Outcome

        return Outcome(status=exc.sip_status, reason="Refused", warning=self.warning(exc.reason))

    def release(self, call_id, tags, reason):
        self.releases.append((call_id, tags, reason))
        return self.released and len(self.releases) == 1

    def refresh(self, call_id, tags, method=""):
        self.refreshes.append((call_id, tags, method))
        return True


@pytest.fixture
def kemi(monkeypatch, tmp_path):
    pvs = {"$pr": "udp", "$Ri": "127.0.0.1", "$Rp": "5060", "$rm": "BYE", "$ci": "call-1", "$ft": "ftag", "$tt": "ttag"}
    ksr = FakeKsr(pvs)
    monkeypatch.setitem(sys.modules, "KSR", ksr)
    monkeypatch.delenv("E2AE_CONFIG", raising=False)
    monkeypatch.setenv("E2AE_METRICS_DIR", str(tmp_path))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # the import sets it; restored after
    # The import puts the compiled build on the path as Kamailio's would: only in a compiled run.
    monkeypatch.setenv("E2AE_COMPILED", os.environ.get("E2AE_COMPILED", "0"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    sys.modules.pop("plugin.kemi", None)
    module = importlib.import_module("plugin.kemi")
    yield module, ksr
    sys.modules.pop("plugin.kemi", None)


@pytest.mark.parametrize("event_released", [True, False])
def test_bye_released_by_the_dialog_end_event_is_not_released_again(kemi, event_released):
    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge(event_released)
    pvs = dict(ksr.pvs, **{"$dlg(callid)": "call-1", "$dlg(from_tag)": "ftag", "$dlg(to_tag)": "ttag"})
    ksr.on_loose_route = lambda: (ksr.pvs.update(pvs), script.ksr_dialog_event("dialog:end"))
    assert script.ksr_request_route(None) == 1
    # The dialog module's end event released the dialog during loose_route(); a second
    # release would only cost a Redis round trip to find nothing.  When the event found
    # nothing (or Redis failed), the BYE still releases.
    expected = 1 if event_released else 2
    assert [r[2] for r in edge.releases] == ["bye"] * expected
    # The next BYE (another call) is released by its route when no event did it.
    edge.releases.clear()
    ksr.on_loose_route = lambda: None
    ksr.pvs["$ci"] = "call-2"
    assert script.ksr_request_route(None) == 1
    assert edge.releases == [("call-2", ("ftag", "ttag"), "bye")]


def test_an_in_dialog_ack_refreshes_nothing_other_requests_do(kemi):
    """The ACK's 2xx refreshed the record (plugin.edge: TTL); an UPDATE, INFO... refresh it."""
    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge()
    ksr.pvs["$rm"] = "ACK"
    assert script.ksr_request_route(None) == 1
    assert edge.refreshes == []
    ksr.pvs["$rm"] = "UPDATE"
    assert script.ksr_request_route(None) == 1
    assert edge.refreshes == [("call-1", ("ftag", "ttag"), "UPDATE")]


def test_bodyless_messages_reach_the_edge_only_when_they_change_the_record(kemi):
    """An ACK, an 18x or a 200 to UPDATE without a body costs no call into the edge; an
    initial INVITE (it clears a tombstone) and a 2xx to an INVITE (it names the callee) do."""
    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge()

    def seen():
        return [(m.method, m.request, m.status) for m in edge.handled]

    ksr.pvs["$rm"] = "ACK"
    assert script.ksr_request_route(None) == 1
    assert seen() == []
    ksr.pvs["$rb"] = "v=0\r\n"
    assert script.ksr_request_route(None) == 1
    assert seen() == [("ACK", True, 0)]
    del ksr.pvs["$rb"]
    for method, status, reaches in (("INVITE", 180, False), ("UPDATE", 200, False), ("INVITE", 200, True)):
        edge.handled.clear()
        ksr.pvs.update({"$rm": method, "$rs": str(status)})
        assert script.ksr_onreply_edge(None) == 1
        assert seen() == ([(method, False, status)] if reaches else []), (method, status)
    edge.handled.clear()
    del ksr.pvs["$tt"]
    ksr.pvs["$rm"] = "INVITE"
    ksr.siputils.has_totag = lambda: -1
    ksr.rr.record_route = lambda: 1
    ksr.dialog = types.SimpleNamespace(dlg_manage=lambda: 1)
    ksr.tm.t_on_failure = lambda name: 1
    ksr.setdsturi = lambda uri: 1
    assert script.ksr_request_route(None) == 1
    assert seen() == [("INVITE", True, 0)]


@pytest.mark.parametrize("method, armed", [("BYE", False), ("INFO", False), ("UPDATE", True), ("INVITE", True)])
def test_only_replies_that_may_carry_sdp_come_back_to_the_plugin(kemi, method, armed):
    module, ksr = kemi
    script = module.kamailio()
    script._edge = RecordingEdge()
    routes = []
    ksr.tm.t_on_reply = routes.append
    ksr.pvs["$rm"] = method
    assert script.ksr_request_route(None) == 1
    assert routes == (["ksr_onreply_edge"] if armed else [])


@pytest.mark.parametrize("method, status, ends", [("INVITE", 183, False), ("INVITE", 200, True),
                                                  ("PRACK", 200, True), ("UPDATE", 200, True),
                                                  ("ACK", 0, True)])
def test_only_a_final_answer_that_cannot_be_converted_ends_the_call(kemi, method, status, ends):
    """An 18x's answer may be followed by a good 2xx: it is forwarded with the Warning and
    logged.  A 2xx or
    an ACK that goes on unconverted leaves a call without media: the edge releases it, a
    2xx carries the Warning, and the call's BYEs are queued in shared memory for the rtimer
    process; nothing is asked of the dialog module from the reply route."""
    from plugin.edge import Outcome
    from plugin.lifecycle import CallEvent, EndRequest

    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge()
    failed = []
    edge.handle = lambda msg: Outcome(status=488, reason="Not Acceptable Here",
                                      warning='399 127.0.0.1:5060 "answer has 2 m-lines"')

    def answer_failed(call_id, tags):
        failed.append((call_id, tags))
        edge.outbox.append(EndRequest(call_id, tags[0], tags[1], CallEvent.ANSWER_FAILED, 100.0))
        return True

    edge.answer_failed = answer_failed
    ksr.dialog = types.SimpleNamespace()  # no dlg_set_timeout, no $dlg_var: the module is not touched
    ksr.textops = types.SimpleNamespace(set_body=lambda *a: pytest.fail("an unconverted body was set"))
    ksr.pvs.update({"$rm": method, "$rs": str(status), "$rb": "v=0\r\n"})
    if status:
        assert script.ksr_onreply_edge(None) == 1
    else:
        assert script.ksr_request_route(None) == 1
    assert failed == ([("call-1", ("ftag", "ttag"))] if ends else [])
    assert ksr.headers == (['Warning: 399 127.0.0.1:5060 "answer has 2 m-lines"\r\n'] if status else [])
    queued = ksr.htable.tables.get(module.END_TABLE, {})
    assert list(queued) == (["call-1\tftag"] if ends else [])
    if ends:
        assert EndRequest.from_value(queued["call-1\tftag"]) == EndRequest(
            "call-1", "ftag", "ttag", CallEvent.ANSWER_FAILED, 100.0)


class FakeDialogs:
    """The dialog module's KEMI functions over a table of dialogs: Call-ID -> state."""

    def __init__(self, ksr, states: dict[str, int]) -> None:
        self.ksr = ksr
        self.states = states
        self.byes: list[tuple[str, object]] = []
        self.current = None

    def dlg_get(self, call_id, from_tag, to_tag):
        if call_id not in self.states:
            return -1
        self.current = call_id
        self.ksr.pvs["$dlg(state)"] = self.states[call_id]
        return 1

    def dlg_bye(self, side):
        # What the reply route would see while the dialog module sends the two BYEs.
        self.byes.append((self.current, self.ksr.htable.sht_get("e2ae_bye", self.current)))
        return 1


def test_the_rtimer_process_sends_the_byes_once_the_dialog_is_confirmed(kemi, monkeypatch):
    """Each tick: a dialog still waiting for its ACK waits (up to 64*T1), a confirmed one
    gets its BYEs (marked as being sent, so that their replies wait), one the dialog
    module no longer has is gone; each outcome is counted."""
    from plugin.lifecycle import ACK_WAIT_S, CallEvent, EndRequest

    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge()
    edge.retry = lambda pending: pytest.fail("no release queued")
    script._subscription = lambda: types.SimpleNamespace(get_message=lambda **kw: None)
    ksr.dialog = dialogs = FakeDialogs(ksr, {"waits": 3, "confirmed": 4, "late-ack": 3})
    before = {r: counter(edge.metrics.call_ends.labels(r)) for r in ("bye", "gone", "error")}
    now = 1000.0
    monkeypatch.setattr(module.time, "time", lambda: now)
    for call_id, queued in (("waits", now - 1), ("confirmed", now - 1), ("late-ack", now - ACK_WAIT_S - 1),
                            ("gone", now - 1)):
        request = EndRequest(call_id, "a", "b", CallEvent.ANSWER_FAILED, queued)
        ksr.htable.sht_sets(module.END_TABLE, request.key, request.to_value())
    assert script.ksr_rtimer_events() == 1
    assert dialogs.byes == [("confirmed", 1), ("late-ack", 1)]
    assert list(ksr.htable.tables[module.END_TABLE]) == ["waits\ta"]
    assert ksr.htable.tables["e2ae_bye"] == {}

    def ends(result):
        return counter(edge.metrics.call_ends.labels(result)) - before[result]

    assert (ends("bye"), ends("gone"), ends("error")) == (2, 1, 0)
    dialogs.states["waits"] = 4
    assert script.ksr_rtimer_events() == 1
    assert dialogs.byes[-1] == ("waits", 1) and ksr.htable.tables[module.END_TABLE] == {}


def test_a_byes_reply_waits_while_the_byes_of_its_dialog_are_sent(kemi, monkeypatch):
    """The core reply route holds a BYE's reply back while its Call-ID is marked, at most
    BYE_HOLD_S; other replies and unmarked dialogs pass at once."""
    from plugin.lifecycle import BYE_HOLD_S

    module, ksr = kemi
    script = module.kamailio()
    clock = [0.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        clock[0] += seconds
        if len(sleeps) == 3 and ksr.htable.sht_get("e2ae_bye", "marked-once"):
            ksr.htable.sht_rm("e2ae_bye", "marked-once")

    monkeypatch.setattr(module.time, "sleep", sleep)
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    ksr.pvs.update({"$rm": "BYE", "$ci": "unmarked"})
    assert script.ksr_reply_route(None) == 1 and sleeps == []
    ksr.htable.sht_seti("e2ae_bye", "marked-once", 1)
    ksr.pvs["$ci"] = "marked-once"
    assert script.ksr_reply_route(None) == 1 and len(sleeps) == 3
    sleeps.clear()
    ksr.htable.sht_seti("e2ae_bye", "stuck", 1)
    ksr.pvs["$ci"] = "stuck"
    assert script.ksr_reply_route(None) == 1
    assert BYE_HOLD_S <= clock[0] - 0.0015 <= BYE_HOLD_S + 0.002
    sleeps.clear()
    ksr.pvs["$rm"] = "INVITE"
    assert script.ksr_reply_route(None) == 1 and sleeps == []


def test_queued_releases_are_retried_until_done_and_stop_at_the_first_failure(kemi, monkeypatch):
    from sdp_rules.errors import UnavailableError
    from plugin.lifecycle import RELEASE_ATTEMPTS, CallEvent, PendingRelease

    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge()
    script._subscription = lambda: types.SimpleNamespace(get_message=lambda **kw: None)
    now = 500.0
    monkeypatch.setattr(module.time, "time", lambda: now)
    outcomes = {"ok": None, "down": "raise", "later": "never"}
    before = {r: counter(edge.metrics.release_retries.labels(r)) for r in ("done", "failed", "abandoned")}
    tried = []

    def retry(pending):
        tried.append(pending.call_id)
        if outcomes[pending.call_id] == "raise":
            raise UnavailableError("redis: TimeoutError")
        return outcomes[pending.call_id], True

    edge.retry = retry
    for call_id, next_at in (("later", now + 5), ("ok", now - 1), ("down", now - 1)):
        pending = PendingRelease(call_id, ("t",), CallEvent.BYE, attempts=1, next_at=next_at)
        ksr.htable.sht_sets(module.RELEASE_TABLE, pending.key, pending.to_value())
    assert script.ksr_rtimer_events() == 1
    assert tried == ["ok", "down"]
    left = {k: PendingRelease.from_value(v) for k, v in ksr.htable.tables[module.RELEASE_TABLE].items()}
    assert sorted(left) == ["down\tt", "later\tt"]
    assert left["down\tt"].attempts == 2 and left["down\tt"].next_at > now

    def retries(result):
        return counter(edge.metrics.release_retries.labels(result)) - before[result]

    assert (retries("done"), retries("failed"), retries("abandoned")) == (1, 1, 0)
    # The last try: given up, counted, logged.
    ksr.htable.tables[module.RELEASE_TABLE] = {}
    last = PendingRelease("down", ("t",), CallEvent.BYE, attempts=RELEASE_ATTEMPTS - 1, next_at=now)
    ksr.htable.sht_sets(module.RELEASE_TABLE, last.key, last.to_value())
    assert script.ksr_rtimer_events() == 1
    assert ksr.htable.tables[module.RELEASE_TABLE] == {} and retries("abandoned") == 1
    assert any("abandoned" in line for line in ksr.logged)


def test_a_full_release_queue_drops_and_counts(kemi):
    from plugin.lifecycle import CallEvent, PendingRelease

    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge()
    ksr.htable.sht_seti(module.META_TABLE, "releases", module.RELEASE_QUEUE_MAX)
    dropped = counter(edge.metrics.release_retries.labels("dropped"))
    edge.outbox.append(PendingRelease("c", ("t",), CallEvent.BYE))
    script._flush()
    assert module.RELEASE_TABLE not in ksr.htable.tables
    assert counter(edge.metrics.release_retries.labels("dropped")) == dropped + 1


def test_a_failed_sanity_check_is_answered_400_with_a_warning_naming_it(kemi):
    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge()
    ksr.sanity.sanity_check = lambda checks, uris: -1 if checks & 128 else 1
    bad_acks = counter(edge.metrics.drops.labels("bad_ack"))
    ksr.pvs["$rm"] = "INVITE"
    assert script.ksr_request_route(None) == 1
    (code, reason, headers), = ksr.replies
    assert (code, reason) == (400, "Bad Request")
    assert headers == ['Warning: 399 127.0.0.1:5060 "the Content-Length does not match the body (RFC 3261 18.3)"'
                       '\r\n']
    assert edge.handled == [] and edge.releases == []
    ksr.pvs["$rm"] = "ACK"  # never answered: counted
    assert script.ksr_request_route(None) == 1 and len(ksr.replies) == 1
    assert counter(edge.metrics.drops.labels("bad_ack")) == bad_acks + 1


def test_a_reply_kamailio_cannot_build_is_built_from_the_readable_headers(kemi):
    """A Content-Length Kamailio cannot parse makes sl_send_reply fail: the 400 is written
    from the headers before it and sent from the socket the request came in on."""
    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge()
    ksr.sanity.sanity_check = lambda checks, uris: -1 if checks & 128 else 1
    ksr.sl.sl_send_reply = lambda code, reason: -1
    answered = counter(edge.metrics.sip_errors.labels("400"))
    unanswerable = counter(edge.metrics.drops.labels("unanswerable"))
    sent = []
    ksr.corex.sendx = lambda uri, sock, data: sent.append((uri, sock, data)) or 1
    raw = ("OPTIONS sip:b@y SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKx\r\nFrom: <sip:a@x>;tag=f\r\n"
           "To: <sip:b@y>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: abc\r\n\r\n")
    ksr.pvs.update({"$rm": "OPTIONS", "$mb": raw, "$si": "10.0.0.9", "$sp": "40000", "$Ri": "127.0.0.1"})
    assert script.ksr_request_route(None) == 1
    ((uri, sock, data),) = sent
    assert uri == "sip:10.0.0.9:5070" and sock == "udp:127.0.0.1:5060"
    assert data.startswith("SIP/2.0 400 Bad Request\r\nVia: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKx\r\n")
    assert 'Warning: 399 127.0.0.1:5060 "the Content-Length does not match the body' in data
    assert counter(edge.metrics.sip_errors.labels("400")) == answered + 1
    # Not even the headers a response needs: left unanswered, counted.
    ksr.pvs["$mb"] = raw.replace("Call-ID: c1\r\n", "")
    assert script.ksr_request_route(None) == 1 and len(sent) == 1
    assert counter(edge.metrics.drops.labels("unanswerable")) == unanswerable + 1


def test_a_body_that_is_not_utf8_reaches_the_edge_as_bytes(kemi):
    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge()
    raw = b"v=0\r\ns=\xff\r\n"

    def get(name):
        if name == "$rb":
            raise UnicodeDecodeError("utf-8", raw, 8, 9, "invalid start byte")
        if name == "$(rb{s.encode.hexa})":
            return raw.hex()
        return ksr.pvs.get(name)

    ksr.pv.get = get
    ksr.pvs["$rm"] = "UPDATE"
    assert script.ksr_request_route(None) == 1
    assert [m.body for m in edge.handled] == [raw]


@pytest.mark.parametrize("failure", ["set_body", "relay"])
def test_a_rewritten_request_that_cannot_go_on_is_undone(kemi, failure):
    """The edge applied the offer (mediad, Redis): when its new body cannot be set (an
    embedded NUL) or the relay fails, the dialog is released and the request answered
    with a Warning (500; a transport error is a 503, RFC 3261 16.9)."""
    from plugin.edge import Outcome

    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge()
    edge.handle = lambda msg: Outcome(body="v=0\r\nrewritten\r\n", dialog="d1")

    def set_body(body, ctype):
        if failure == "set_body":
            raise ValueError("embedded null character")
        return 1

    ksr.textops = types.SimpleNamespace(set_body=set_body)
    ksr.tm.t_relay = lambda: -1 if failure == "relay" else 1
    ksr.pvs.update({"$rm": "UPDATE", "$rb": "v=0\r\n"})
    assert script.ksr_request_route(None) == 1
    assert edge.releases == [("call-1", ("ftag", "ttag"), "refused")]
    (code, _, headers), = ksr.replies
    assert code == (500 if failure == "set_body" else 503)
    assert headers[0].startswith("Warning: 399 ")
    assert headers[1:] == ([] if failure == "set_body" else ["Retry-After: 5\r\n"])


def test_sipreply_copies_what_the_request_said_and_picks_the_rfc3581_port():
    from plugin import sipreply

    text = sipreply.response(400, "Bad Request", ["SIP/2.0/UDP h:1;branch=b1", "SIP/2.0/UDP p:2;branch=b2"],
                             "<sip:a@x>;tag=f", "<sip:b@y>", "c1", "7 INVITE", '399 e "why"')
    lines = text.split("\r\n")
    assert lines[:3] == ["SIP/2.0 400 Bad Request", "Via: SIP/2.0/UDP h:1;branch=b1", "Via: SIP/2.0/UDP p:2;branch=b2"]
    assert lines[4].startswith("To: <sip:b@y>;tag=") and "Call-ID: c1" in lines and "CSeq: 7 INVITE" in lines
    assert text.endswith('Warning: 399 e "why"\r\nContent-Length: 0\r\n\r\n')
    assert "To: <sip:b@y>;tag=t\r\n" in sipreply.response(400, "B", ["v"], "f", "<sip:b@y>;tag=t", "c", "1 X")
    with pytest.raises(ValueError):
        sipreply.response(400, "B", [], "f", "t", "c", "1 X")
    assert sipreply.destination("SIP/2.0/UDP h:5070;branch=b;rport", ("1.2.3.4", 9)) == ("1.2.3.4", 9)
    found = sipreply.needed_headers("INVITE x SIP/2.0\r\nVia: a;branch=1, b;branch=2\r\nv: c\r\nf: F\r\n"
                                    "To: T\r\n ;tag=x\r\ni: C\r\nCSeq: 2 INVITE\r\nbroken\r\n\r\nbody: no")
    assert found == {"via": ["a;branch=1", "b;branch=2", "c"], "from": ["F"], "to": ["T ;tag=x"],
                     "call-id": ["C"], "cseq": ["2 INVITE"]}
    assert sipreply.destination("SIP/2.0/UDP h:5070;branch=b", ("1.2.3.4", 9)) == ("1.2.3.4", 5070)
    assert sipreply.destination("SIP/2.0/UDP h;branch=b", ("1.2.3.4", 9)) == ("1.2.3.4", 5060)


def test_sipreply_reads_the_framing_and_a_missing_cseq():
    from plugin import sipreply

    head = "SIP/2.0 200 OK\r\nCall-ID: c\r\n"
    assert sipreply.framing_error(head + "Content-Length: 5\r\n\r\nv=0\r\n") is None
    assert sipreply.framing_error(head + "\r\nv=0\r\n") is None  # framed by the datagram
    assert "not a number" in sipreply.framing_error(head + "Content-Length: abc\r\n\r\nv=0\r\n")
    assert "not a number" in sipreply.framing_error(head + "l: -5\r\n\r\nv=0\r\n")
    assert "larger than the body" in sipreply.framing_error(head + "Content-Length: 6\r\n\r\nv=0\r\n")
    assert "2 Content-Length" in sipreply.framing_error(head + "l: 5\r\nContent-Length: 5\r\n\r\nv=0\r\n")
    request = "INVITE sip:b@y SIP/2.0\r\nCall-ID: c\r\n\r\n"
    assert sipreply.cseq_of(request, sipreply.needed_headers(request)) == "0 INVITE"
    assert sipreply.cseq_of(request, {"cseq": ["7 INVITE"]}) == "7 INVITE"
    assert sipreply.cseq_of("\x00bad line\r\n\r\n", {"cseq": []}) == ""


def test_an_initial_invite_without_a_from_tag_is_refused_400(kemi):
    """RFC 3261 8.1.1.3: without a From tag the dialog cannot be named."""
    module, ksr = kemi
    script = module.kamailio()
    script.access = types.SimpleNamespace(host="127.0.0.1", port=5060)
    edge = script._edge = RecordingEdge()
    ksr.siputils.has_totag = lambda: -1
    ksr.pvs.update({"$rm": "INVITE", "$ft": "", "$tt": ""})
    assert script.ksr_request_route(None) == 1
    (code, reason, headers), = ksr.replies
    assert (code, reason) == (400, "Bad Request") and "no tag" in headers[0]
    assert edge.handled == []


def test_a_reply_whose_content_length_does_not_frame_it_is_discarded(kemi):
    """RFC 3261 18.3: Kamailio reads no body from it but would relay its bytes: it is
    dropped and counted; nothing is released (a good retransmission may follow)."""
    module, ksr = kemi
    script = module.kamailio()
    script.access = types.SimpleNamespace(host="127.0.0.1", port=5060)
    edge = script._edge = RecordingEdge()
    dropped = []
    ksr.set_drop = lambda: dropped.append(1)
    bad = counter(edge.metrics.drops.labels("bad_reply"))
    ksr.pvs.update({"$rm": "INVITE", "$rs": "200", "$rb": "",
                    "$mb": "SIP/2.0 200 OK\r\nContent-Length: abc\r\n\r\nv=0\r\n"})
    assert script.ksr_reply_route(None) == 1
    assert dropped == [1] and edge.handled == [] and edge.releases == []
    assert counter(edge.metrics.drops.labels("bad_reply")) == bad + 1
    ksr.pvs["$mb"] = "SIP/2.0 200 OK\r\n\r\n"  # no body at all: goes on
    assert script.ksr_reply_route(None) == 1
    assert dropped == [1]
    ksr.pvs["$tt"] = ""  # RFC 3261 12.1.1: a 2xx without a To tag starts no dialog
    assert script.ksr_reply_route(None) == 1
    assert dropped == [1, 1]
    ksr.pvs["$rs"] = "180"  # a provisional reply may lack it
    assert script.ksr_reply_route(None) == 1
    assert dropped == [1, 1]


def test_a_reply_whose_cseq_number_is_no_number_is_discarded_and_raises_nothing(kemi):
    """RFC 3261 20.16: CSeq = 1*DIGIT LWS Method.  A reply whose number is not one (the
    SIP-level fuzz sent ``CSeq: abc INVITE``) made the reply route raise ValueError (a
    traceback, the reply relayed unconverted): it is dropped and counted, and the
    message the edge reads from it never raises."""
    from iq import Side

    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge()
    dropped = []
    ksr.set_drop = lambda: dropped.append(1)
    bad = counter(edge.metrics.drops.labels("bad_reply"))
    ksr.pvs.update({"$rm": "INVITE", "$rs": "200", "$cs": "abc", "$rb": "v=0\r\n"})
    assert script.ksr_reply_route(None) == 1
    assert dropped == [1] and counter(edge.metrics.drops.labels("bad_reply")) == bad + 1
    assert script._message(Side.CORE, False, "v=0\r\n").cseq == 0
    for good in ("1", "4294967296"):
        ksr.pvs["$cs"] = good
        assert script.ksr_reply_route(None) == 1
        assert dropped == [1] and script._message(Side.CORE, False, "v=0\r\n").cseq == int(good)


def test_a_header_kamailio_refuses_does_not_stop_the_reply(kemi):
    """append_to_reply raising (text Kamailio cannot take) leaves the request answered."""
    from plugin.edge import Outcome

    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge()
    edge.handle = lambda msg: Outcome(status=488, reason="Not Acceptable Here", warning="399 x \"why\"")

    def refuse(text):
        raise ValueError("embedded null character")

    ksr.hdr.append_to_reply = refuse
    ksr.pvs.update({"$rm": "UPDATE", "$rb": "v=0\r\n"})
    assert script.ksr_request_route(None) == 1
    assert [(code, reason) for code, reason, _ in ksr.replies] == [(488, "Not Acceptable Here")]
    assert any("Warning header could not be added" in line for line in ksr.logged)


def test_call_attempts_and_outcomes_are_counted(kemi):
    """An initial INVITE is an attempt; its outcome is the dialog's confirmation (200), the
    final error relayed (failure route) or the error the plugin answered itself."""
    from plugin.edge import Outcome

    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge()
    ksr.siputils.has_totag = lambda: -1
    ksr.rr.record_route = lambda: 1
    ksr.dialog = types.SimpleNamespace(dlg_manage=lambda: 1)
    ksr.tm.t_on_failure = lambda name: 1
    ksr.setdsturi = lambda uri: 1
    ksr.pvs.update({"$rm": "INVITE", "$tt": "", "$rb": ""})
    metrics = edge.metrics
    attempts, ok = metrics.call_attempts.labels("access"), metrics.call_outcomes.labels("200")
    busy, refused = metrics.call_outcomes.labels("486"), metrics.call_outcomes.labels("488")
    before = [counter(c) for c in (attempts, ok, busy, refused)]
    assert script.ksr_request_route(None) == 1
    assert counter(attempts) == before[0] + 1
    script.ksr_dialog_event("dialog:start")
    assert counter(ok) == before[1] + 1
    ksr.pvs["$T_reply_code"] = "486"
    script.ksr_failure_edge(None)
    assert counter(busy) == before[2] + 1
    # An offer the plugin refuses: 488 answered, counted as that INVITE's outcome.
    ksr.pvs["$rb"] = "garbage"
    edge.handle = lambda msg: Outcome(status=488, reason="Not Acceptable Here", warning="bad")
    assert script.ksr_request_route(None) == 1
    assert [code for code, _, _ in ksr.replies][-1] == 488
    assert counter(attempts) == before[0] + 2
    assert counter(refused) == before[3] + 1


AVPF_OFFER = ("v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
              "m=audio 40000 RTP/AVPF 0\r\na=rtcp-fb:* nack\r\n")


def _initial_invite(ksr):
    ksr.siputils.has_totag = lambda: -1
    ksr.rr.record_route = lambda: 1
    ksr.dialog = types.SimpleNamespace(dlg_manage=lambda: 1)
    ksr.tm.t_on_failure = lambda name: 1
    ksr.setdsturi = lambda uri: 1
    ksr.textops = types.SimpleNamespace(set_body=lambda body, ctype: ksr.bodies.append(body) or 1)
    ksr.bodies = []
    ksr.pvs.update({"$rm": "INVITE", "$tt": "", "$rb": "v=0\r\n"})


def test_a_488_retried_as_avp_neither_releases_nor_counts_only_the_final_failure_does(kemi):
    """core_rtp_profile = auto: the core's 488 to the AVPF offer sends the offer again as
    RTP/AVP; that 488 is not the call's outcome, so the lifecycle is not stepped (no
    release) and no outcome is counted.  The retry's own 488 is the final failure."""
    from plugin.edge import Outcome

    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge()
    _initial_invite(ksr)
    edge.handle = lambda msg: Outcome(body=AVPF_OFFER, dialog="d1")
    relayed = []
    ksr.tm.t_relay = lambda: relayed.append(ksr.bodies[-1]) or 1
    refused = edge.metrics.call_outcomes.labels("488")
    before = counter(refused)
    ksr.pvs["$T_reply_code"] = "488"
    assert script.ksr_failure_edge(None) == 1
    assert edge.releases == [] and counter(refused) == before
    assert len(relayed) == 1 and "m=audio 40000 RTP/AVP 0\r\n" in relayed[0] and "rtcp-fb" not in relayed[0]
    assert ksr.pvs[module.AVP_RETRIED] == "1"
    # The retry is refused too: now the call fails, released once and counted once.
    assert script.ksr_failure_edge(None) == 1
    assert edge.releases == [("call-1", ("ftag",), "failure")] and counter(refused) == before + 1
    assert len(relayed) == 1 and ksr.replies == []


def test_an_avp_retry_that_cannot_be_sent_is_answered_counted_and_released(kemi):
    from plugin.edge import Outcome

    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge()
    _initial_invite(ksr)
    edge.handle = lambda msg: Outcome(body=AVPF_OFFER, dialog="d1")
    ksr.tm.t_relay = lambda: -1
    unavailable = edge.metrics.call_outcomes.labels("503")
    before = counter(unavailable)
    ksr.pvs["$T_reply_code"] = "488"
    assert script.ksr_failure_edge(None) == 1
    (code, _, headers), = ksr.replies
    assert code == 503 and headers[0].startswith("Warning: 399 ") and "the core is unreachable" in headers[0]
    assert headers[1] == "Retry-After: %d\r\n" % edge.retry_after  # as every 503 of the edge
    assert edge.releases == [("call-1", ("ftag",), "failure")] and counter(unavailable) == before + 1


def test_an_initial_request_with_no_way_to_the_client_is_answered_and_undone(kemi):
    """From the core toward a browser's ``*.invalid`` Contact with no flow: never sent,
    480 with a Warning, and the offer the edge applied for it released (plugin.routing)."""
    from plugin.edge import Outcome

    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge()
    _initial_invite(ksr)
    ksr.pvs.update({"$Ri": "127.0.0.2", "$ru": "sip:bob@abcdef.invalid;transport=ws", "$du": ""})
    edge.handle = lambda msg: Outcome(body="v=0\r\nrewritten\r\n", dialog="d1")
    ksr.tm.t_relay = lambda: pytest.fail("relayed toward a .invalid host")
    assert script.ksr_request_route(None) == 1
    (code, _, headers), = ksr.replies
    assert code == 480 and "no flow to the client" in headers[0]
    assert edge.releases == [("call-1", ("ftag", ""), "refused")]


def test_exposition_carries_the_dialog_module_counts(tmp_path):
    from plugin.metrics import exposition

    text = exposition(str(tmp_path), {"active": 3.0, "early": 1.0}).decode()
    assert 'e2ae_plugin_dialogs{state="active"} 3.0' in text
    assert 'e2ae_plugin_dialogs{state="early"} 1.0' in text
    assert "e2ae_plugin_dialogs" not in exposition(str(tmp_path)).decode()


class EventEdge(RecordingEdge):
    """The rtimer's view of the edge: a real Redis client for mediad's event channel."""

    def __init__(self, client, fail_on=()) -> None:
        super().__init__()
        self.store = types.SimpleNamespace(redis=client)
        self.events = []
        self.fail_on = set(fail_on)

    def on_event(self, event):
        if event.get("dialog") in self.fail_on:
            raise RuntimeError("a defect")
        self.events.append(event["dialog"])
        return False


def _tick(script, times=1):
    for _ in range(times):
        assert script.ksr_rtimer_events() == 1


def _tick_until(script, expected, timeout=2.0):
    """Ticks (a published event reaches the subscriber's socket a moment later)."""
    import time

    deadline = time.monotonic() + timeout
    while script._edge.events != expected and time.monotonic() < deadline:
        _tick(script)
        time.sleep(0.02)


def test_the_rtimer_keeps_one_event_subscription_through_bad_events_defects_and_lost_connections(kemi, redis_url):
    import json

    import redis

    module, ksr = kemi
    client, admin = redis.Redis.from_url(redis_url), redis.Redis.from_url(redis_url)
    script = module.kamailio()
    script._edge = EventEdge(client, fail_on={"d-defect"})
    try:
        _tick(script)  # subscribes
        for data in ("not json", "[1]", "7", json.dumps({"event": "x", "dialog": "d-defect"}),
                     json.dumps({"event": "x", "dialog": "d-1"})):
            admin.publish(module.EVENTS_CHANNEL, data)
        _tick_until(script, ["d-1"])
        # Garbage and a defect lose one event each, not the subscription.
        assert script._edge.events == ["d-1"]
        assert len(admin.client_list(_type="pubsub")) == 1
        # A subscription whose connection is lost is closed and made again: still one.
        admin.client_kill_filter(_type="pubsub")
        _tick(script, 3)
        admin.publish(module.EVENTS_CHANNEL, json.dumps({"event": "x", "dialog": "d-2"}))
        _tick_until(script, ["d-1", "d-2"])
        assert script._edge.events == ["d-1", "d-2"]
        assert len(admin.client_list(_type="pubsub")) == 1
    finally:
        script._drop_subscription()
        client.close()
        admin.close()


@pytest.mark.parametrize("marked, method, reason", [
    (True, "", "operator"),  # e2ae-ctl end: the dialog module's end, outside any request
    (True, "BYE", "operator"),  # ... in the context of its BYE's reply
    (False, "BYE", "bye"),
    (False, "", "timeout"),
])
def test_the_end_of_a_dialog_the_operator_ended_is_released_as_operator(kemi, marked, method, reason):
    module, ksr = kemi
    script = module.kamailio()
    edge = script._edge = RecordingEdge(released=True)
    ksr.pvs.update({"$rm": method, "$dlg(callid)": "call-9", "$dlg(from_tag)": "f9", "$dlg(to_tag)": "t9"})
    if marked:  # what e2ae-ctl sets over RPC (htable.sets) before dlg.terminate_dlg
        ksr.htable.sht_sets(module.OPERATOR_TABLE, "call-9", "1")
    assert script.ksr_dialog_event("dialog:end") == 1
    assert edge.releases == [("call-9", ("f9", "t9"), reason)]
    assert ksr.htable.sht_get(module.OPERATOR_TABLE, "call-9") is None  # used once


def test_the_plugins_log_lines_reach_kamailio_without_a_thread_process_or_source_lookup(kemi):
    """mod_init routes the plugin's loggers into Kamailio's log; its formats name no thread,
    process or source line, so no record looks them up (a third of a line's cost)."""
    import logging

    module, ksr = kemi
    saved = (logging.logThreads, logging.logProcesses, logging.logMultiprocessing, logging._srcfile)
    loggers = [logging.getLogger(name) for name in ("e2ae", "mediad")]
    before = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    try:
        module.mod_init()
        import sdp_rules

        assert ksr.logged == [f"e2ae: INFO running the rules from {os.path.dirname(sdp_rules.__file__)}\n"]
        ksr.logged.clear()
        loggers[0].addHandler(Keep())
        logging.getLogger("e2ae.plugin").info("Call-ID %s: dialog %s: %d stream(s) reserved on mediad", "c1", "d1", 1)
        assert ksr.logged == ["e2ae: INFO Call-ID c1: dialog d1: 1 stream(s) reserved on mediad\n"]
        record, = records
        assert (record.threadName, record.processName, record.process) == (None, None, None)
        assert record.funcName == "(unknown function)" and record.lineno == 0
    finally:
        logging.logThreads, logging.logProcesses, logging.logMultiprocessing, logging._srcfile = saved
        for lg, (handlers, level, propagate) in zip(loggers, before):
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate
