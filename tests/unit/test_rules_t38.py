"""T.38 fax over UDPTL/DTLS: TS 23.334 5.11.2.3.2 and 6.2.10.4.2 (RFC 7345, RFC 8842), ALG side."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdp_rules import DialogState, Kind, Policy, Side
from iq import Command, Fingerprint, IqRequest, Role, StreamSpec, TerminationSpec
from sdp_rules.plan import ActpassPolicy

from tests.conftest import property_examples
from tests.unit.rules_helpers import AGW_FP_TEXT, DIALOG, TlsIds, fixture, policy, run, sdp

UE_TLS_ID = "dfa2f6b2b31e5f8b9c1a47c53a6f7d12"
UE_FP = Fingerprint(
    "sha-256", "D6:00:20:5D:63:4E:97:C0:63:C2:2F:48:FC:FF:08:4F:55:CE:79:FD:B9:FB:29:55:9F:3B:47:3B:DF:96:BB:E3"
)
T38_ATTRIBUTES = """
    a=T38FaxVersion:0
    a=T38MaxBitRate:14400
    a=T38FaxRateManagement:transferredTCF
    a=T38FaxMaxBuffer:262
    a=T38FaxMaxDatagram:176
    a=T38FaxUdpEC:t38UDPRedundancy
"""
CORE_ANSWER = sdp(f"""
    v=0
    o=core 5 5 IN IP4 192.0.2.60
    s=-
    c=IN IP4 192.0.2.60
    t=0 0
    m=image 7000 udptl t38
    {T38_ATTRIBUTES}
""")
TLS_ID_RE = re.compile(r"^[A-Za-z0-9+/\-_]{20,255}$")  # RFC 8842 section 4


def _ue_offer(setup: str = "actpass") -> str:
    return fixture("t38_offer_udptl_dtls.sdp").replace("a=setup:actpass", f"a=setup:{setup}")


@pytest.mark.req("T38-1", "T38-3", "T38-4")
def test_ue_offer_reserves_udp_dtls_access_and_udp_core():
    ids = TlsIds()
    plan, result = run(_ue_offer(), Side.ACCESS, Kind.OFFER, DialogState(), policy(new_tls_id=ids))
    assert plan.iq == IqRequest(Command.RESERVE, DIALOG, "t1", [StreamSpec(
        stream_id=0,
        kind="t38",
        access=TerminationSpec(
            side=Side.ACCESS,
            transport="UDP/DTLS",
            remote_address="127.0.0.1",
            remote_port=54111,
            remote_fingerprints=[UE_FP],
            local_fingerprint_request=True,
            establish_tls=True,
            tls_role=Role.CLIENT,
            notify_tls_failure=True,
            ice_lite=False,
        ),
        core=TerminationSpec(side=Side.CORE, transport="UDP"),
        local_tls_id=ids.nth(1),
        remote_tls_id=UE_TLS_ID,
    )])
    # Toward the core: UDPTL (IANA spelling "udptl"), no setup/fingerprint/tls-id.
    assert result.sdp == sdp(f"""
        v=0
        o=- 2465159184 2 IN IP4 127.0.0.1
        s=-
        c=IN IP4 198.51.100.10
        t=0 0
        m=image 30000 udptl t38
        {T38_ATTRIBUTES}
    """)
    assert [(d.kind, d.reason) for d in plan.streams] == [("t38", "")]


@pytest.mark.req("T38-2", "T38-3", "T38-5")
@pytest.mark.parametrize(("setup", "actpass", "role", "answer_setup"), [
    ("active", ActpassPolicy.ACTIVE, Role.SERVER, "passive"),
    ("active", ActpassPolicy.PASSIVE, Role.SERVER, "passive"),
    ("passive", ActpassPolicy.ACTIVE, Role.CLIENT, "active"),
    ("passive", ActpassPolicy.PASSIVE, Role.CLIENT, "active"),
    ("actpass", ActpassPolicy.ACTIVE, Role.CLIENT, "active"),
    ("actpass", ActpassPolicy.PASSIVE, Role.SERVER, "passive"),
])
def test_dtls_role_from_setup_and_policy(setup, actpass, role, answer_setup):
    ids = TlsIds()
    pol = policy(actpass=actpass, new_tls_id=ids)
    plan, offered = run(_ue_offer(setup), Side.ACCESS, Kind.OFFER, DialogState(), pol)
    access = plan.iq.streams[0].access
    assert (access.tls_role, access.establish_tls) == (role, role is Role.CLIENT)
    plan, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert plan.iq == IqRequest(Command.MODIFY, DIALOG, "t1", [StreamSpec(
        stream_id=0, kind="t38",
        core=TerminationSpec(side=Side.CORE, transport="UDP", remote_address="192.0.2.60", remote_port=7000),
        local_tls_id=ids.nth(1), remote_tls_id=UE_TLS_ID, reuse_association=True,
    )])
    assert answered.sdp == sdp(f"""
        v=0
        o=core 5 5 IN IP4 192.0.2.60
        s=-
        c=IN IP4 203.0.113.10
        t=0 0
        m=image 40000 UDP/TLS/UDPTL t38
        {T38_ATTRIBUTES}
        a=fingerprint:{AGW_FP_TEXT}
        a=setup:{answer_setup}
        a=tls-id:{ids.nth(1)}
    """)


@pytest.mark.req("T38-5", "T38-7")
def test_answer_tls_id_is_new_and_not_the_ues():
    values = iter([UE_TLS_ID, "agwSideTlsIdCCCCCCCCCCCC"])
    pol = policy(new_tls_id=lambda: next(values))
    _, offered = run(_ue_offer(), Side.ACCESS, Kind.OFFER, DialogState(), pol)
    _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
    assert [line for line in answered.sdp.split("\r\n") if line.startswith("a=tls-id")] == [
        "a=tls-id:agwSideTlsIdCCCCCCCCCCCC"]


CORE_T38_OFFER = sdp("""
    v=0
    o=core 9 9 IN IP4 192.0.2.60
    s=-
    c=IN IP4 192.0.2.60
    t=0 0
    m=image 7000 udptl t38
    a=T38FaxVersion:0
    a=T38MaxBitRate:14400
    a=T38FaxRateManagement:transferredTCF
    a=T38FaxUdpEC:t38UDPRedundancy
""")


@pytest.mark.req("T38-6", "T38-4")
def test_core_t38_offer_goes_to_the_ue_with_new_tls_id_fingerprint_actpass():
    ids = TlsIds()
    plan, result = run(CORE_T38_OFFER, Side.CORE, Kind.OFFER, DialogState(), policy(new_tls_id=ids))
    assert plan.iq == IqRequest(Command.RESERVE, DIALOG, "t1", [StreamSpec(
        stream_id=0,
        kind="t38",
        access=TerminationSpec(
            side=Side.ACCESS, transport="UDP/DTLS", local_fingerprint_request=True, notify_tls_failure=True,
            ice_lite=True,
        ),
        core=TerminationSpec(side=Side.CORE, transport="UDP", remote_address="192.0.2.60", remote_port=7000),
        local_tls_id=ids.nth(1),
    )])
    assert result.sdp == sdp(f"""
        v=0
        o=core 9 9 IN IP4 192.0.2.60
        s=-
        c=IN IP4 203.0.113.10
        t=0 0
        a=ice-lite
        m=image 40000 UDP/TLS/UDPTL t38
        a=T38FaxVersion:0
        a=T38MaxBitRate:14400
        a=T38FaxRateManagement:transferredTCF
        a=T38FaxUdpEC:t38UDPRedundancy
        a=ice-ufrag:agwu0
        a=ice-pwd:agwpwd0xxxxxxxxxxxxxxxxx
        a=candidate:1 1 udp 2130706431 203.0.113.10 40000 typ host
        a=end-of-candidates
        a=fingerprint:{AGW_FP_TEXT}
        a=setup:actpass
        a=tls-id:{ids.nth(1)}
    """)


@pytest.mark.req("T38-2", "T38-4")
def test_ue_answer_to_core_t38_offer():
    pol = policy()
    _, offered = run(CORE_T38_OFFER, Side.CORE, Kind.OFFER, DialogState(), pol)
    answer = sdp(f"""
        v=0
        o=- 77 1 IN IP4 127.0.0.1
        s=-
        c=IN IP4 127.0.0.1
        t=0 0
        m=image 54111 UDP/TLS/UDPTL t38
        a=setup:passive
        a=fingerprint:sha-256 {UE_FP.value}
        a=tls-id:{UE_TLS_ID}
        a=T38FaxVersion:0
        a=T38MaxBitRate:14400
        a=T38FaxRateManagement:transferredTCF
        a=T38FaxUdpEC:t38UDPRedundancy
    """)
    plan, result = run(answer, Side.ACCESS, Kind.ANSWER, offered.state, pol)
    assert plan.iq.streams[0].access == TerminationSpec(
        side=Side.ACCESS, transport="UDP/DTLS", remote_address="127.0.0.1", remote_port=54111,
        remote_fingerprints=[UE_FP], establish_tls=True, tls_role=Role.CLIENT, ice_lite=False,
    )
    assert result.sdp == sdp("""
        v=0
        o=- 77 1 IN IP4 127.0.0.1
        s=-
        c=IN IP4 198.51.100.10
        t=0 0
        m=image 30000 udptl t38
        a=T38FaxVersion:0
        a=T38MaxBitRate:14400
        a=T38FaxRateManagement:transferredTCF
        a=T38FaxUdpEC:t38UDPRedundancy
    """)


@pytest.mark.req("T38-7")
def test_tls_ids_unique_across_dialogs_with_the_same_agw_fingerprint():
    """NOTE 2: the AGW reuses one certificate; every association still gets its own tls-id."""
    pol = Policy()  # the production generator
    seen = []
    for n in range(300):
        body = _ue_offer() if n % 2 else CORE_T38_OFFER
        origin = Side.ACCESS if n % 2 else Side.CORE
        plan, _ = run(body, origin, Kind.OFFER, DialogState(), pol, transaction=f"t{n}")
        seen.append(plan.iq.streams[0].local_tls_id)
    assert len(set(seen)) == len(seen)
    assert all(TLS_ID_RE.match(value) for value in seen)
    assert UE_TLS_ID not in seen


TLS_ID_TEXT = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_", min_size=20, max_size=40,
)


@pytest.mark.req("T38-7", "T38-5")
@settings(max_examples=property_examples(80), deadline=None)
@given(st.lists(st.one_of(st.none(), TLS_ID_TEXT), min_size=1, max_size=6))
def test_tls_id_follows_the_ues_association_property(ue_ids):
    """UE re-offers of one T.38 stream: each tls-id the UE gives (None: it repeats the
    last one) keeps our tls-id when unchanged, and yields a value never used before
    in the dialog when it changes -- never one of the UE's own values either."""
    pol = Policy()
    state = DialogState()
    current_ue = None
    ours = None
    used = set()
    for ue_id in ue_ids:
        changed = ue_id is not None and ue_id != current_ue
        current_ue = ue_id if ue_id is not None else (current_ue or UE_TLS_ID)
        offer = _ue_offer().replace(UE_TLS_ID, current_ue)
        plan, offered = run(offer, Side.ACCESS, Kind.OFFER, state, pol)
        _, answered = run(CORE_ANSWER, Side.CORE, Kind.ANSWER, offered.state, pol)
        state = answered.state
        local = plan.iq.streams[0].local_tls_id
        if ours is not None and not changed:
            assert local == ours
            assert plan.iq.streams[0].reuse_association
        else:
            assert local not in used
        assert TLS_ID_RE.match(local)
        assert f"a=tls-id:{local}\r\n" in answered.sdp
        used.update({local, current_ue})
        ours = local
    assert set(ue_ids) - {None} <= used
