"""``[pool] takeover = reinvite`` in mediad.takeover: the mixed home and the media_moved event."""

from __future__ import annotations

from dataclasses import replace

from mediad.config import Config, parse_config
from mediad.takeover import EVENT_MEDIA_MOVED, Home, moved_event


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
