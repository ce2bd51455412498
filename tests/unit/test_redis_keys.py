"""Key names and hash tags (mediad.redis_keys), and the [redis] settings (mediad.redis_client)."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from mediad.config import ConfigError, HostPort, parse_config
from mediad.redis_client import client_kwargs, settings
from mediad.redis_keys import AGW_DIALOG, ALG_DIALOG, Component, dialog_of, pattern, tagged
from mediad.state import dialog_key as agw_key
from plugin.state import dialog_id, dialog_key, lock_key, tombstone_key

EDGE = "[edge]\naccess_sip = 127.0.0.1:5060\ncore_sip = 127.0.0.2:5060\n"


def test_every_key_of_one_call_id_shares_one_slot():
    """The plugin's scripts take the keys of the caller's and the callee's dialog ids at once,
    and mediad's document goes with them: one hash slot (Redis Cluster: no CROSSSLOT)."""
    for call_id in ("a84b4c76e66710@pc33.atlanta.example.com", "x", "ü-call", "{odd}call"):
        ids = [dialog_id(call_id, tag) for tag in ("1928301774", "a6c85cf", "")]
        keys = [k for i in ids for k in (dialog_key(i), lock_key(i), tombstone_key(i), agw_key(i))]
        assert len({key_slot(k.encode()) for k in keys}) == 1, call_id
    # and two Call-IDs spread (the tag is the Call-ID's own digest)
    slots = {key_slot(dialog_key(dialog_id(f"call-{n}", "t")).encode()) for n in range(200)}
    assert len(slots) > 150


def test_dialog_ids_stay_distinct_per_tag():
    assert dialog_id("c", "a") != dialog_id("c", "b")
    assert dialog_id("c", "a")[:16] == dialog_id("c", "b")[:16]
    assert len(dialog_id("c", "a")) == 32


def test_tagged_keys_spell_the_id_and_read_back():
    ident = dialog_id("call", "tag")
    key = dialog_key(ident)
    assert key == f"{ALG_DIALOG}{{{ident[:16]}}}{ident[16:]}"
    assert dialog_of(ALG_DIALOG, key) == ident
    assert dialog_of(AGW_DIALOG, agw_key("call-1").encode()) == "call-1"
    assert agw_key("call-1") == "e2ae:agw:dialog:{call-1}"
    with pytest.raises(ValueError):
        dialog_of(ALG_DIALOG, ALG_DIALOG + ident)  # an old, untagged name


def test_scan_pattern_skips_old_untagged_names():
    import fnmatch

    assert fnmatch.fnmatchcase(tagged(AGW_DIALOG, "abc"), pattern(AGW_DIALOG))
    assert not fnmatch.fnmatchcase(AGW_DIALOG + "abc", pattern(AGW_DIALOG))


def test_each_component_gets_its_own_user_else_the_shared_one():
    config = parse_config(EDGE + "[redis]\nurl = rediss://10.0.0.5:6380/2\nusername = shared\npassword = s3cret\n"
                          "mediad_username = media\nmediad_password = m3dia\nca_file = /etc/ca.pem\n")
    media = settings(config, Component.MEDIAD)
    plugin = settings(config, Component.PLUGIN)
    assert (media.username, media.password) == ("media", "m3dia")
    assert (plugin.username, plugin.password) == ("shared", "s3cret")
    kwargs = client_kwargs(media, 0.5)
    assert kwargs["ssl"] is True and kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert kwargs["ssl_cert_reqs"] == "required"
    assert (kwargs["username"], kwargs["password"], kwargs["socket_timeout"]) == ("media", "m3dia", 0.5)


def test_url_credentials_are_used_when_no_option_gives_any():
    config = parse_config(EDGE + "[redis]\nurl = redis://bob:p%40ss@127.0.0.1:6379/0\n")
    kwargs = client_kwargs(settings(config, Component.CTL), 2.0)
    assert (kwargs["username"], kwargs["password"]) == ("bob", "p@ss")
    assert "ssl" not in kwargs


def test_sentinel_and_cluster_options():
    config = parse_config(EDGE + "[redis]\nsentinels = 127.0.0.1:26379, 127.0.0.1:26380\nmaster_name = m\n"
                          "sentinel_password = x\n")
    s = settings(config, Component.PLUGIN)
    assert s.sentinels == (HostPort("127.0.0.1", 26379), HostPort("127.0.0.1", 26380)) and s.kind == "sentinel"
    config = parse_config(EDGE + "[redis]\ncluster = on\ncluster_nodes = 127.0.0.1:7000\n")
    assert settings(config, Component.MEDIAD).kind == "cluster"


@pytest.mark.parametrize("text, why", [
    ("cluster = on\nsentinels = 127.0.0.1:26379\n", "choose one"),
    ("url = http://127.0.0.1/\n", "expected redis://"),
    ("certificate_file = /c.pem\nurl = rediss://127.0.0.1:6379/0\n", "go together"),
    ("ca_file = /ca.pem\n", "must be rediss://"),
    ("sentinels = localhost:26379\n", "IP address"),
    ("cluster = yes\n", "expected one of off, on"),
    ("sentinels = 127.0.0.1:26379\nmaster_name =\n", "need master_name"),
])
def test_bad_redis_options_are_refused_with_the_reason(text, why):
    with pytest.raises(ConfigError, match=why):
        parse_config(EDGE + "[redis]\n" + text)
