"""The KEMI routes with a stand-in ``KSR`` module: what each route asks of the edge."""

from __future__ import annotations

import importlib
import sys
import types

import pytest


class FakeKsr(types.ModuleType):
    """Just enough of Kamailio's KSR for an in-dialog BYE; loose_route runs the dialog module's end event."""

    def __init__(self, pvs: dict[str, str]) -> None:
        super().__init__("KSR")
        self.pvs = pvs
        self.on_loose_route = lambda: None
        self.pv = types.SimpleNamespace(get=lambda name: self.pvs.get(name))
        self.maxfwd = types.SimpleNamespace(process_maxfwd=lambda n: 1)
        self.siputils = types.SimpleNamespace(has_totag=lambda: 1)
        self.rr = types.SimpleNamespace(loose_route=self._loose_route)
        self.tm = types.SimpleNamespace(t_newtran=lambda: 1, t_on_reply=lambda name: 1, t_relay=lambda: 1)
        self.corex = types.SimpleNamespace(set_send_socket=lambda sock: 1)
        self.nathelper = types.SimpleNamespace(add_contact_alias=lambda: 1, handle_ruri_alias=lambda: -1)
        self.force_rport = lambda: 1
        self.set_forward_no_connect = lambda: 1
        self.sl = types.SimpleNamespace(sl_send_reply=lambda code, reason: 1, sl_reply_error=lambda: 1)
        for level in ("err", "warn", "info", "dbg"):
            setattr(self, level, lambda text: None)

    def _loose_route(self):
        self.on_loose_route()
        return 1


class RecordingEdge:
    def __init__(self, released: bool = False) -> None:
        self.released = released
        self.releases = []
        self.refreshes = []
        self.handled = []

    def handle(self, msg):
        from plugin.edge import Outcome

        self.handled.append(msg)
        return Outcome()

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
    sys.modules.pop("plugin.kemi", None)
    module = importlib.import_module("plugin.kemi")
    yield module, ksr
    sys.modules.pop("plugin.kemi", None)


@pytest.mark.parametrize("event_released", [True, False])
def test_bye_released_by_the_dialog_end_event_is_not_released_again(kemi, event_released):
    module, ksr = kemi
    script = module.kamailio()
    script.access = types.SimpleNamespace(host="127.0.0.1", port=5060)
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
    script.access = types.SimpleNamespace(host="127.0.0.1", port=5060)
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
    script.access = types.SimpleNamespace(host="127.0.0.1", port=5060)
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
    script.access = types.SimpleNamespace(host="127.0.0.1", port=5060)
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
    """An 18x's answer may be followed by a good 2xx: it is forwarded and logged.  A 2xx or
    an ACK that goes on unconverted leaves a call without media: it is released, a 2xx
    carries the Warning, and the dialog module ends the call a second later: at once for
    an UPDATE's 2xx or an ACK, from the INVITE's ACK for an INVITE's or a PRACK's 2xx
    (whose dialog the dialog module has not confirmed yet)."""
    from plugin.edge import Outcome

    module, ksr = kemi
    script = module.kamailio()
    script.access = types.SimpleNamespace(host="127.0.0.1", port=5060)
    edge = script._edge = RecordingEdge()
    failed, timeouts, appended = [], [], []
    edge.handle = lambda msg: Outcome(status=488, reason="Not Acceptable Here",
                                      warning='399 127.0.0.1:5060 "answer has 2 m-lines"')
    edge.answer_failed = lambda call_id, tags: failed.append((call_id, tags)) or True
    ksr.dialog = types.SimpleNamespace(dlg_set_timeout=lambda seconds: timeouts.append(seconds) or 1)
    ksr.hdr = types.SimpleNamespace(append=lambda text: appended.append(text) or 1)
    ksr.pv.sets = lambda name, value: ksr.pvs.__setitem__(name, value)
    ksr.textops = types.SimpleNamespace(set_body=lambda *a: pytest.fail("an unconverted body was set"))
    ksr.pvs.update({"$rm": method, "$rs": str(status), "$rb": "v=0\r\n"})
    if status:
        assert script.ksr_onreply_edge(None) == 1
    else:
        assert script.ksr_request_route(None) == 1
    assert failed == ([("call-1", ("ftag", "ttag"))] if ends else [])
    assert appended == (['Warning: 399 127.0.0.1:5060 "answer has 2 m-lines"\r\n'] if status and ends else [])
    deferred = method in ("INVITE", "PRACK") and ends
    assert timeouts == ([module.END_AFTER_S] if ends and not deferred else [])
    assert ksr.pvs.get(module.END_AT_ACK) == ("ack" if deferred else "set" if ends else None)
    # The ACK (no body): the INVITE's dialog is ended now; any other ACK ends nothing.
    timeouts.clear()
    ksr.pvs.update({"$rm": "ACK", "$rs": "0"})
    del ksr.pvs["$rb"]
    assert script.ksr_request_route(None) == 1
    assert timeouts == ([module.END_AFTER_S] if deferred else [])
    if ends:
        # A retransmitted 2xx and its ACK: released once, the timer set once.
        timeouts.clear()
        failed.clear()
        ksr.pvs.update({"$rm": method, "$rs": str(status), "$rb": "v=0\r\n"})
        if status:
            assert script.ksr_onreply_edge(None) == 1
        else:
            assert script.ksr_request_route(None) == 1
        ksr.pvs.update({"$rm": "ACK", "$rs": "0"})
        del ksr.pvs["$rb"]
        assert script.ksr_request_route(None) == 1
        assert failed == [] and timeouts == []
