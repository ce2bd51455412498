"""The plugin's dialog record (plugin/record.py): its JSON and what the store's scripts answer about it."""

from __future__ import annotations

import json

from sdp_rules.plan import DialogState

from plugin.lifecycle import CallState
from plugin.record import (ABSENT, BUSY, CACHE_SIZE, LATE, TAKEN, DialogRecord, candidate_keys, dialog_id,
                           dialog_keys, is_late, read_claim, read_create, read_take)


def record(**kw) -> DialogRecord:
    return DialogRecord(id="d1", call_id="c@x", caller_tag="f", caller_side="access", **kw)


def test_a_record_survives_its_json_and_keeps_the_json_it_was_read_from():
    first = record(callee_tag="t", rules=DialogState(3, {"m": [1, 2]}), offer={"tx": "1 INVITE", "side": "access"},
                   applied="k", created=12.5, state=CallState.ANSWERED, mediad="n1@127.0.0.1:1")
    first.remember("k", "v=0\r\n")
    raw = first.to_json()
    again = DialogRecord.from_json(raw.encode())
    assert again == first and again.raw == raw
    assert again.rules.version == 3 and again.rules.data == {"m": [1, 2]} and again.state is CallState.ANSWERED
    assert "mediad" not in json.loads(record().to_json())  # only in a pool


def test_an_old_record_without_the_later_fields_reads_with_their_defaults():
    old = DialogRecord.from_json(json.dumps({"id": "d1", "call_id": "c@x", "caller_tag": "f",
                                             "caller_side": "core"}))
    assert (old.callee_tag, old.rules.version, old.rendered, old.state, old.mediad) == ("", 0, {}, CallState.OFFERED,
                                                                                       "")


def test_the_rendered_cache_keeps_the_last_bodies_only():
    r = record()
    for i in range(CACHE_SIZE + 3):
        r.remember(f"k{i}", f"b{i}")
    assert list(r.rendered) == [f"k{i}" for i in range(3, CACHE_SIZE + 3)]


def test_the_keys_of_the_candidates_in_the_scripts_order():
    a, b = dialog_id("c@x", "f"), dialog_id("c@x", "t")
    assert a[:16] == b[:16] and a != b and len(a) == 32
    assert candidate_keys([a, b]) == dialog_keys(a) + dialog_keys(b)
    assert [k.split(":")[2] for k in dialog_keys(a)] == ["dialog", "lock", "released"]


def test_each_script_reply_read():
    raw = record(callee_tag="t").to_json()
    assert read_take([1, 2, raw.encode()]) == (TAKEN, record(callee_tag="t"))
    assert read_take([-1, 1]) == (BUSY, None) and read_take([0]) == (ABSENT, None)
    assert read_create([1]) == (True, None)
    assert read_create([0, raw.encode()]) == (False, record(callee_tag="t")) and read_create([0, None]) == (False, None)
    claimed = read_claim([1, 2, raw.encode(), 1, 0])
    assert (claimed.status, claimed.index, claimed.record, claimed.released, claimed.existed) == (
        1, 1, record(callee_tag="t"), True, False)
    fresh = read_claim([1, 1, None, 0, 0])
    assert fresh.record is None and not fresh.released
    busy = read_claim([-1, 2, 1])
    assert (busy.status, busy.index, busy.existed) == (-1, 1, True) and read_claim([0]).status == 0


def test_a_late_reply_is_told_from_the_others():
    assert is_late(LATE) and is_late([LATE]) and not is_late([]) and not is_late(1) and not is_late([1, 1])
