"""plugin.ctl (e2ae-ctl): what is shown about a call, and what never is."""

from __future__ import annotations

import io
import json

import pytest

from plugin import ctl
from plugin.state import DialogRecord

KEYS = {"profile": "SRTP_AES128_CM_SHA1_80", "local_key": "bG9jYWxrZXlsb2NhbGtleQ==",
        "local_salt": "c2FsdHNhbHRzYWx0cw==", "remote_key": "cmVtb3Rla2V5cmVtb3Rla2V5",
        "remote_salt": "cmVtb3Rlc2FsdHJlbW90ZQ=="}


def view(with_secrets: bool = False) -> dict:
    """A QUERY answer as mediad gives it (with_secrets: as a broken mediad might)."""
    channel = {"port": 20000, "state": "established", "failure": None, "role": "client",
               "peer": ["127.0.0.1", 5000], "srtp_keys": KEYS if with_secrets else True}
    access = {"ice_ufrag": "ufrg", "channels": {"rtp": channel},
              "spec": {"side": "access", "transport": "UDP/TLS/RTP/SAVPF", "remote_address": "127.0.0.1",
                       "remote_port": 5000, "remote_fingerprints": [{"hash_func": "sha-256", "value": "AA:BB"}],
                       "remote_ice_ufrag": "peer"}}
    if with_secrets:
        access["ice_pwd"] = "mediad-ice-password-1234"
        access["spec"]["remote_ice_pwd"] = "peer-ice-password-5678"
    return {"dialog": "d1", "version": 3, "events": [
        {"dialog": "d1", "stream_id": 0, "event": "dtls_established", "reason": None, "component": "rtp"}],
        "streams": [{"stream_id": 0, "kind": "srtp", "local_tls_id": None, "remote_tls_id": None,
                     "packets": {"from_access": 120, "from_core": 118}, "access": access,
                     "core": {"spec": {"side": "core", "transport": "RTP/AVP"}, "ports": {"rtp": 30000},
                              "latched": {}}}]}


def record() -> DialogRecord:
    return DialogRecord(id="d1", call_id="abc@127.0.0.1", caller_tag="ft", caller_side="access",
                        callee_tag="tt", created=1000.0)


def test_summary_has_call_id_age_mediad_dtls_state_and_packets_each_way():
    line = ctl.summary(record(), "d1", "127.0.0.1:2223", view(), now=1042.0)
    assert line["call_id"] == "abc@127.0.0.1" and line["age_s"] == 42.0 and line["mediad"] == "127.0.0.1:2223"
    assert line["streams"] == [{"stream": 0, "kind": "srtp", "dtls": "established",
                                "packets_from_access": 120, "packets_from_core": 118}]
    text = ctl.render_calls([line])
    assert "abc@127.0.0.1" in text and "42s" in text and "0 srtp" in text and "120" in text and "118" in text
    assert text.endswith("1 call(s)\n")


def test_dtls_state_names_each_channel_when_rtcp_is_not_muxed():
    stream = view()["streams"][0]
    stream["access"]["channels"]["rtcp"] = {"state": "failed", "failure": "fingerprint_mismatch"}
    assert ctl.dtls_state(stream) == "rtp:established rtcp:failed (fingerprint_mismatch)"


def bundled_view(with_secrets: bool = False) -> dict:
    """A QUERY answer for a stream on a BUNDLE transport: the DTLS channel is the transport's."""
    out = view(with_secrets)
    stream = out["streams"][0]
    channel = stream["access"].pop("channels")["rtp"]
    stream["transport_id"], stream["mid"] = 0, "0"
    out["transports"] = [{"transport_id": 0, "spec": {"transport": "UDP/DTLS"}, "ice_ufrag": "ufrg",
                          "learnt": {}, **channel}]
    return out


def test_a_stream_on_a_bundle_transport_shows_the_transports_dtls_state_and_port():
    line = ctl.summary(record(), "d1", "m", bundled_view(), now=1042.0)
    assert line["streams"][0]["dtls"] == "established"
    out = ctl.detail(record(), "d1", "m", bundled_view(with_secrets=True), now=1042.0)
    channel = out["media"]["streams"][0]["access"]["channels"]["rtp"]
    assert (channel["port"], channel["state"], channel["srtp"]) == (20000, "established", True)
    text = json.dumps(out) + ctl.render_call(out)
    assert "DTLS established" in text and "port 20000" in text
    assert KEYS["local_key"] not in text and KEYS["remote_salt"] not in text


def test_detail_never_shows_a_key_or_an_ice_pwd_even_when_mediad_sends_one():
    out = ctl.detail(record(), "d1", "127.0.0.1:2223", view(with_secrets=True), now=1042.0)
    text = json.dumps(out) + ctl.render_call(out)
    for secret in list(KEYS.values())[1:] + ["mediad-ice-password-1234", "peer-ice-password-5678"]:
        assert secret not in text
    channel = out["media"]["streams"][0]["access"]["channels"]["rtp"]
    assert channel["srtp"] is True and channel["state"] == "established"
    assert out["sip"]["callee_tag"] == "tt"
    assert "AA:BB" in ctl.render_call(out)  # fingerprints are public


def test_redact_drops_secret_fields_at_any_depth():
    doc = {"a": [{"ice_pwd": "x", "b": {"remote_key": "y", "c": 1}}], "password": "p"}
    assert ctl.redact(doc) == {"a": [{"b": {"c": 1}}]}


class FakeEdge:
    """In place of the running edge for the command line's own logic (output, exit codes)."""

    def __init__(self, calls=(), missing=False):
        self._calls = list(calls)
        self.missing = missing

    def calls(self, now):
        return self._calls

    def call(self, call_id, now):
        if self.missing:
            raise ctl.CtlError(f"no call with Call-ID {call_id!r}")
        return [ctl.detail(record(), "d1", "m", view(), now)]

    def end(self, call_id, wait):
        return {"call_id": call_id, "dialogs": ["d1"], "bye_sent": True, "released": not self.missing,
                "still_held": ["d1"] if self.missing else []}

    def close(self):
        pass


def test_command_line_json_and_exit_codes(capsys):
    out = io.StringIO()
    line = ctl.summary(record(), "d1", "m", view(), 1042.0)
    assert ctl.main(["--json", "calls"], out, FakeEdge([line])) == 0
    assert json.loads(out.getvalue()) == {"calls": [line]}
    out = io.StringIO()
    assert ctl.main(["call", "abc@127.0.0.1"], out, FakeEdge()) == 0
    assert "Call-ID      abc@127.0.0.1" in out.getvalue()
    assert ctl.main(["call", "nope"], io.StringIO(), FakeEdge(missing=True)) == 1
    assert "no call with Call-ID 'nope'" in capsys.readouterr().err
    out = io.StringIO()
    assert ctl.main(["end", "abc@127.0.0.1", "--wait", "0"], out, FakeEdge(missing=True)) == 1
    assert "still held" in out.getvalue()
    with pytest.raises(SystemExit):
        ctl.main(["bogus"], io.StringIO(), FakeEdge())


def test_nodes_drain_and_undrain_against_redis(redis_url):
    import json as _json
    from dataclasses import replace

    import redis

    from mediad.config import Config
    from mediad.pool import DRAINING_KEY, NODES_KEY, Node, node_key

    client = redis.Redis.from_url(redis_url)
    config = replace(Config(), redis_url=redis_url, pool_nodes="a@127.0.0.11:2223 1, b@127.0.0.12:2223 2")
    edge = ctl.Edge(client, [], None, config)
    try:
        client.set(node_key("b"), _json.dumps(Node("b", "127.0.0.12", 2223, 5, 10, 4).to_dict()), px=3000)
        client.sadd(NODES_KEY, "b")
        out = io.StringIO()
        assert ctl.main(["drain", "a"], out, edge) == 0
        assert "a: draining: no new calls, its calls go on (no live record of it now)" in out.getvalue()
        assert client.smembers(DRAINING_KEY) == {b"a"}
        out = io.StringIO()
        assert ctl.main(["--json", "nodes"], out, edge) == 0
        assert _json.loads(out.getvalue())["nodes"] == [
            {"id": "a", "control": "127.0.0.11:2223", "weight": 1, "load": 0, "capacity": 0, "registered": False,
             "state": "draining"},
            {"id": "b", "control": "127.0.0.12:2223", "weight": 2, "load": 4, "capacity": 10, "registered": True,
             "state": "active"}]
        assert ctl.main(["undrain", "a"], io.StringIO(), edge) == 0
        assert client.smembers(DRAINING_KEY) == set()
        assert ctl.main(["drain", "no/such"], io.StringIO(), edge) == 1
    finally:
        client.close()


class RecordingRpc:
    """In place of Kamailio's RPC socket: what e2ae-ctl asks, in order."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple] = []
        self.fail = fail

    def call(self, method: str, *params, missing_ok: bool = False):
        self.calls.append((method, *params))
        if method == self.fail:
            raise ctl.CtlError(f"Kamailio RPC {method}: refused")


def ending_edge(rpc: RecordingRpc) -> ctl.Edge:
    edge = ctl.Edge(None, [], rpc)
    edge.find = lambda call_id: [record()]
    edge._held = lambda dialogs: []
    return edge


def test_end_marks_the_call_while_the_dialog_module_sends_both_byes():
    """Kamailio 5.6 drops the second BYE when the first one's reply deleted the dialog
    already; the reply route holds that reply while the Call-ID is marked."""
    rpc = RecordingRpc()
    result = ending_edge(rpc).end("abc@127.0.0.1", wait=1.0)
    assert rpc.calls == [("htable.sets", "e2ae_operator", "abc@127.0.0.1", "1"),
                         ("htable.seti", "e2ae_bye", "abc@127.0.0.1", 1),
                         ("dlg.terminate_dlg", "abc@127.0.0.1", "ft", "tt"),
                         ("htable.delete", "e2ae_bye", "abc@127.0.0.1")]
    assert result["released"] is True and result["released_by"] == "kamailio"


def test_end_takes_the_mark_away_when_the_dialog_module_refuses():
    rpc = RecordingRpc(fail="dlg.terminate_dlg")
    with pytest.raises(ctl.CtlError):
        ending_edge(rpc).end("abc@127.0.0.1", wait=1.0)
    assert rpc.calls[-1] == ("htable.delete", "e2ae_bye", "abc@127.0.0.1")
