"""``copy_state`` is ``copy.deepcopy`` for dialog states, only faster."""

from __future__ import annotations

import copy
import enum

from hypothesis import given
from hypothesis import strategies as st

from sdp_rules.rules import copy_state

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=30,
)


@given(JSON)
def test_copy_state_equals_deepcopy_and_shares_nothing(value):
    out = copy_state(value)
    assert out == copy.deepcopy(value)
    assert repr(out) == repr(value)  # same key order, same types

    def containers(x):
        if isinstance(x, dict):
            yield x
            for v in x.values():
                yield from containers(v)
        elif isinstance(x, list):
            yield x
            for v in x:
                yield from containers(v)

    originals = {id(c) for c in containers(value)}
    assert not any(id(c) in originals for c in containers(out))


class Colour(enum.Enum):
    RED = "red"


def test_copy_state_keeps_sharing_and_other_types_as_deepcopy_does():
    shared = [1, 2]
    value = {"a": shared, "b": shared, "t": (shared, "x"), "e": Colour.RED, "s": {3}}
    out = copy_state(value)
    ref = copy.deepcopy(value)
    assert out == ref
    assert out["a"] is out["b"] and out["a"] is not shared
    assert out["t"][0] is out["a"]  # the tuple went to deepcopy with the same memo
    assert out["e"] is Colour.RED and out["s"] == {3} and out["s"] is not value["s"]
    loop: list = []
    loop.append(loop)
    copied = copy_state(loop)
    assert copied[0] is copied and copied is not loop
