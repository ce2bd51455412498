"""``[pool] takeover = reinvite`` in mediad.takeover: the mixed home, the renewed access spec, the media_moved events."""

from __future__ import annotations

from dataclasses import replace

from iq import Fingerprint, Role, Side, TerminationSpec, TransportSpec
from mediad.config import Config, parse_config
from mediad.takeover import EVENT_MEDIA_MOVED, Home, fresh_access_spec, moved_access_event, moved_event

FP = Fingerprint("sha-256", ":".join(["AB"] * 32))


def test_the_access_side_keeps_the_dead_nodes_address_the_core_side_takes_this_nodes():
    config = replace(Config(), mediad_access_address="127.0.0.12", mediad_core_address="127.0.1.12",
                     mediad_core_advertise="198.51.100.12")
    dead = Home("127.0.0.11", "127.0.1.11", "203.0.113.11", "127.0.1.11")
    assert dead.with_own_core(config) == Home("127.0.0.11", "127.0.1.12", "203.0.113.11", "198.51.100.12")


def test_the_event_names_the_dialog_the_side_the_address_and_each_streams_port():
    event = moved_event("d1", "127.0.1.12", [30000, 30002])
    assert {k: v for k, v in event.items() if k != "time"} == {
        "dialog": "d1", "stream_id": None, "event": EVENT_MEDIA_MOVED, "side": "core", "address": "127.0.1.12",
        "ports": [30000, 30002]}


def test_the_mode_is_a_configuration_choice():
    assert parse_config("[pool]\ntakeover = reinvite\n").pool_takeover == "reinvite"


def test_a_dead_nodes_access_address_that_did_not_move_is_replaced_by_this_nodes():
    config = replace(Config(), mediad_access_address="127.0.0.12", mediad_access_advertise="203.0.113.12",
                     mediad_core_address="127.0.1.12")
    dead = Home("127.0.0.11", "127.0.1.11", "203.0.113.11", "127.0.1.11")
    assert dead.with_own_core(config).with_own_access(config) == Home("127.0.0.12", "127.0.1.12", "203.0.113.12",
                                                                      "127.0.1.12")


def test_a_renewed_access_termination_waits_for_the_wics_new_ice_and_handshake_as_server():
    old = TransportSpec(1, remote_address="192.0.2.1", remote_port=5000, ice_lite=True, remote_ice_ufrag="u",
                        remote_ice_pwd="p" * 22, remote_candidates=["1 1 udp 1 192.0.2.1 5000 typ host"],
                        remote_fingerprints=[FP], establish_tls=True, tls_role=Role.CLIENT, local_tls_id="a",
                        remote_tls_id="b", reuse_association=True, ice_restart=True, mid_extension_id=3)
    new = fresh_access_spec(old)
    assert (new.remote_ice_ufrag, new.remote_ice_pwd, new.remote_candidates) == (None, None, [])
    assert (new.tls_role, new.establish_tls, new.reuse_association, new.ice_restart) == (Role.SERVER, False, False,
                                                                                          False)
    assert (new.local_tls_id, new.remote_tls_id) == (None, None)
    # What the new association does not change stays: the WIC's certificate, the bundle's MID id.
    assert (new.remote_fingerprints, new.mid_extension_id, new.remote_address) == ([FP], 3, "192.0.2.1")
    assert old.tls_role is Role.CLIENT  # a copy
    term = fresh_access_spec(TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVP", remote_ice_ufrag="u",
                                             tls_role=Role.CLIENT, establish_tls=True))
    assert (term.remote_ice_ufrag, term.tls_role, term.establish_tls) == (None, Role.SERVER, False)


def test_the_access_event_names_the_new_terminations_and_the_certificate():
    event = moved_access_event("d1", "127.0.0.12", str(FP), [{"transport_id": 1, "port": 20000, "ice_ufrag": "u",
                                                             "ice_pwd": "p"}], [])
    assert {k: v for k, v in event.items() if k != "time"} == {
        "dialog": "d1", "stream_id": None, "event": EVENT_MEDIA_MOVED, "side": "access", "address": "127.0.0.12",
        "fingerprint": str(FP), "transports": [{"transport_id": 1, "port": 20000, "ice_ufrag": "u", "ice_pwd": "p"}],
        "streams": []}
