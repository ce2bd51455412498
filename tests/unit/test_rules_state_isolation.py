"""Attribute look-ups by name, and the dialog state a plan takes in and gives back.

``Section``'s look-ups match names without going through the ``Line``
properties: they must agree with ``Line.attribute_name`` for any name asked
(prefixes of other names, names with a colon, the empty name).  ``finish``
builds the new state without copying what it replaces: the state keeps its key
order, and neither the input state nor a result shares anything the plan may
change again.
"""

from __future__ import annotations

import copy
import json

from hypothesis import given
from hypothesis import strategies as st

from sdp_rules import DialogState, Kind, Side
from sdp_rules.sdp import Line, Section

from tests.unit.rules_helpers import DIALOG, agw_reply, fixture, policy, run

_NAMES = ["", "rtcp", "rtcp-mux", "rtcp-mux-only", "r", "rtcp:", "a:b", ":", "x"]
_VALUES = st.one_of(
    st.sampled_from(_NAMES),
    st.builds(lambda n, v: f"{n}:{v}", st.sampled_from(_NAMES), st.sampled_from(["", "1", ":", "a b", "x:y"])),
)
_LINES = st.lists(
    st.one_of(st.builds(Line, st.just("a"), _VALUES), st.builds(Line, st.sampled_from("bc"), _VALUES)),
    max_size=8,
)


@given(_LINES, st.sampled_from(_NAMES))
def test_attribute_lookups_agree_with_the_line_properties(lines, name):
    section = Section(list(lines))
    expected = [line for line in lines if line.is_attribute and line.attribute_name == name]
    found = section.attribute_lines(name)
    assert len(found) == len(expected) and all(a is b for a, b in zip(found, expected))
    assert section.attribute_lines() == [line for line in lines if line.is_attribute]
    assert section.attributes(name) == [line.attribute_value for line in expected]
    assert section.attribute(name) == (expected[0].attribute_value if expected else None)
    assert section.has_attribute(name) == bool(expected)
    assert section.remove_attributes(name, "unused") == len(expected)
    assert section.lines == [line for line in lines if not (line.is_attribute and line.attribute_name == name)]


def test_attribute_lookups_follow_a_changed_value():
    section = Section([Line("a", "rtcp-mux"), Line("a", "rtcp:9 IN IP4 0.0.0.0")])
    section.lines[0].value = "rtcp:5001"
    assert section.attribute("rtcp") == "5001"
    assert not section.has_attribute("rtcp-mux")
    section.set_attribute("rtcp", "7")
    assert [str(line) for line in section.lines] == ["a=rtcp:7"]


def _offer():
    pol = policy()
    plan, result = run(fixture("chromium_offer_audio.sdp"), Side.ACCESS, Kind.OFFER, DialogState(), pol)
    return pol, plan, result


def test_new_state_keeps_its_key_order_and_the_input_state_is_left_alone():
    pol, _plan, offer = _offer()
    # Chromium's offer has a=group:BUNDLE 0: with [policy] bundle = on (the default) the
    # state also holds its transport (sdp_rules.bundle).
    assert list(offer.state.data) == ["streams", "map", "next_transport", "core_mlines", "pending", "tls_ids",
                                      "transports", "agw"]
    before = copy.deepcopy(offer.state.data)
    text = json.dumps(offer.state.data)
    _answer_plan, answer = run(fixture("core_rtp_offer.sdp"), Side.CORE, Kind.ANSWER, offer.state, pol,
                               transaction="t2")
    assert offer.state.data == before and json.dumps(offer.state.data) == text
    assert list(answer.state.data) == list(offer.state.data)
    assert answer.state.version == offer.state.version + 1


def test_a_result_shares_nothing_the_plan_changes_again():
    _pol, plan, _ = _offer()
    reply = agw_reply(plan.iq)
    first = plan.finish(reply)
    reference = json.dumps(first.state.data)
    first.state.data["pending"]["groups"][0]["core"]["m"] = 99
    first.state.data["map"]["0"]["handler"] = "changed"
    first.state.data["tls_ids"].append("changed")
    first.state.data["core_mlines"]["0"] = "changed"
    second = plan.finish(reply)
    assert json.dumps(second.state.data) == reference
    assert second.sdp == first.sdp


def test_a_state_handed_over_plans_the_same_as_a_copy_and_is_not_copied():
    """``owned``: the caller gives its state up (the plugin's record read for one
    message); the plan and its result are the same as from a copy, and the state
    handed over is the one worked on (its streams are the result's)."""
    import sdp_rules

    pol, _plan, offer = _offer()
    body = fixture("core_rtp_offer.sdp")
    copied = run(body, Side.CORE, Kind.ANSWER, offer.state, pol, transaction="t2")
    handed = DialogState(offer.state.version, copy.deepcopy(offer.state.data))
    plan = sdp_rules.process(body, origin=Side.CORE, kind=Kind.ANSWER, state=handed, dialog=DIALOG,
                             transaction="t2", policy=pol, owned=True)
    result = plan.finish(agw_reply(plan.iq) if plan.iq is not None else None)
    assert (plan.iq, result.sdp, json.dumps(result.state.data)) == (
        copied[0].iq, copied[1].sdp, json.dumps(copied[1].state.data))
    assert result.state.data["streams"] is handed.data["streams"]
    assert copied[1].state.data["streams"] is not offer.state.data["streams"]
