"""Golden pairs for BUNDLE (``tests/fixtures/sdp/golden``): real Chromium SDP in, the whole SDP out.

Each case runs one call through the rules with ``[policy] bundle = on`` and the
simulated AGW, and compares both SDP bodies the edge sends with the expected
files, placeholders for what the AGW chooses (``tests/golden.py``).  The
placeholders must then be what the simulated AGW gave: one access port for the
bundle, its fingerprint and ICE credentials, one tls-id.
"""

from __future__ import annotations

import pytest

from sdp_rules import BundlePolicy, DialogState, Kind, Policy, Side, process
from sdp_rules.simulated_agw import ACCESS_ADDRESS, ACCESS_FIRST_PORT, CORE_ADDRESS, CORE_FIRST_PORT, FINGERPRINT, \
    ICE_PWD, ICE_UFRAG, SimulatedAgw
from sdp_rules.cli import main as cli_main
from tests.golden import match_sdp, read
from tests.unit.rules_helpers import FIXTURES, fixture

GOLDEN = FIXTURES / "golden"
AGW = {"access_address": ACCESS_ADDRESS, "core_address": CORE_ADDRESS, "agw_fingerprint": FINGERPRINT.value,
       "agw_ufrag": ICE_UFRAG, "agw_pwd": ICE_PWD, "bundle_port": str(ACCESS_FIRST_PORT),
       "core_audio_port": str(CORE_FIRST_PORT), "core_video_port": str(CORE_FIRST_PORT + 2)}

CASES = [
    # (offer, from, answer, golden prefix)
    ("chromium_offer_max_bundle.sdp", Side.ACCESS, "golden/chromium_core_answer.sdp", "chromium_max_bundle"),
    ("chromium_offer_audio_video_data.sdp", Side.ACCESS, "golden/chromium_core_answer.sdp", "chromium_balanced"),
    ("chromium_offer_audio.sdp", Side.ACCESS, "golden/chromium_audio_core_answer.sdp", "chromium_audio"),
    ("core_audio_video_offer.sdp", Side.CORE, "chromium_answer_bundled.sdp", "core_audio_video"),
]


@pytest.mark.parametrize("offer, origin, answer, name", CASES, ids=[c[3] for c in CASES])
def test_golden_pair(offer, origin, answer, name):
    policy = Policy(bundle=BundlePolicy.ON)
    agw = SimulatedAgw()
    state = DialogState()
    out = {}
    other = Side.CORE if origin is Side.ACCESS else Side.ACCESS
    steps = ((fixture(offer), origin, Kind.OFFER), (fixture(answer), other, Kind.ANSWER))
    for n, (body, side, kind) in enumerate(steps):
        plan = process(body, origin=side, kind=kind, state=state, dialog="golden", transaction=str(n), policy=policy)
        result = plan.finish(agw.answer(plan.iq) if plan.iq is not None else None)
        state = result.state
        out[plan.forward_to] = result.sdp
    values = match_sdp(out[Side.ACCESS], read(GOLDEN / f"{name}.to_access.sdp"), AGW)
    values = match_sdp(out[Side.CORE], read(GOLDEN / f"{name}.to_core.sdp"), values)
    transport = state.data["transports"]["0"]
    assert values["agw_tls_id"] == transport["local_tls_id"]


@pytest.mark.parametrize("offer, origin, answer, name", CASES, ids=[c[3] for c in CASES])
def test_e2ae_sdp_shows_the_golden_pair_by_default(offer, origin, answer, name, capsys):
    """``e2ae-sdp call`` without ``--bundle``: bundling is the default ([policy] bundle = on), same bodies."""
    assert cli_main(["call", "--from", origin.value, str(FIXTURES / offer), str(FIXTURES / answer)]) == 0
    out = capsys.readouterr().out
    other = Side.CORE if origin is Side.ACCESS else Side.ACCESS
    offer_header, answer_header = f"# offer forwarded to {other.value}\n", f"# answer returned to {origin.value}\n"
    assert out.startswith(offer_header) and answer_header in out
    forwarded, returned = out[len(offer_header):].split(answer_header)
    bodies = {other: forwarded, origin: returned}
    values = match_sdp(bodies[Side.ACCESS], read(GOLDEN / f"{name}.to_access.sdp"), AGW)
    match_sdp(bodies[Side.CORE], read(GOLDEN / f"{name}.to_core.sdp"), values)
