"""mediad.config: the one configuration file, its defaults and its errors."""

from __future__ import annotations

import re

import pytest

from mediad.config import (
    Config, ConfigError, HostPort, PortRange, load_config, option_names, parse_config, parse_host_port,
)
from tests.conftest import REPO

SHIPPED = REPO / "deploy" / "e2ae.conf"


def test_defaults_work_on_loopback():
    config = Config()
    assert config.mediad_control == HostPort("127.0.0.1", 2223)
    assert config.mediad_access_address == "127.0.0.1" and config.mediad_core_address == "127.0.0.2"
    assert config.mediad_access_ports == PortRange(30000, 34999)
    assert config.mediad_core_ports == PortRange(40000, 44999)
    assert config.mediad_metrics == HostPort("127.0.0.1", 9810)
    assert config.redis_dialog_ttl == 7200 and config.policy_actpass == "active"
    assert config.plugin_iq_timeout_ms == 500 and config.plugin_retry_after == 5


def test_shipped_file_documents_every_option_with_its_default():
    text = SHIPPED.read_text()
    assert parse_config(text, source=str(SHIPPED)) == Config()
    documented = set()
    section = None
    for line in text.splitlines():
        if m := re.match(r"^\[(\w+)\]", line):
            section = m.group(1)
        elif m := re.match(r"^(\w+)\s*=", line):
            documented.add(f"{section}.{m.group(1)}")
    assert documented == set(option_names())


def test_path_from_argument_then_environment(tmp_path):
    path = tmp_path / "e2ae.conf"
    path.write_text("[mediad]\naccess_ports = 20000-20099\n[redis]\ndialog_ttl = 60\n")
    assert load_config(path).mediad_access_ports == PortRange(20000, 20099)
    assert load_config(env={"E2AE_CONFIG": str(path)}).redis_dialog_ttl == 60
    assert load_config(env={}) == Config()


def test_redis_password_goes_into_the_url():
    config = parse_config("[redis]\nurl = redis://127.0.0.1:6380/2\npassword = s3cret\n")
    assert config.redis_url_with_password == "redis://:s3cret@127.0.0.1:6380/2"
    config = parse_config("[redis]\nurl = redis://:inurl@127.0.0.1:6380/2\npassword = other\n")
    assert config.redis_url_with_password == "redis://:inurl@127.0.0.1:6380/2"


def test_redis_password_goes_into_an_ipv6_url_with_its_brackets():
    import redis

    config = parse_config("[redis]\nurl = redis://[::1]:6380/2\npassword = p@ss\n")
    assert config.redis_url_with_password == "redis://:p%40ss@[::1]:6380/2"
    pool = redis.ConnectionPool.from_url(config.redis_url_with_password)
    assert (pool.connection_kwargs["host"], pool.connection_kwargs["port"],
            pool.connection_kwargs["password"]) == ("::1", 6380, "p@ss")


@pytest.mark.parametrize("text, message", [
    ("[mediad]\ncontrol = localhost\n", "host:port"),
    ("[mediad]\ncontrol = 127.0.0.1:70000\n", "out of range"),
    ("[mediad]\naccess_ports = 5000\n", "first-last"),
    ("[mediad]\naccess_ports = 5000-5001\n", "fewer than four"),
    ("[mediad]\naccess_address = nowhere\n", "IP address"),
    ("[mediad]\nconsent_timeout = -1\n", "positive"),
    ("[mediad]\nacess_ports = 1-2\n", "unknown option"),
    ("[mediadd]\n", "unknown section"),
    ("[policy]\nactpass = both\n", "one of"),
    ("[mediad]\naccess_address = 127.0.0.1\ncore_address = 127.0.0.1\naccess_ports = 30000-30100\n"
     "core_ports = 30050-30200\n", "overlap"),
    ("no section\n", "section"),
])
def test_bad_values_name_section_and_option(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_metrics_can_be_switched_off():
    assert parse_config("[mediad]\nmetrics = off\n").mediad_metrics is None


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.conf")


def test_host_port_round_trip():
    assert str(parse_host_port("127.0.0.5:1234")) == "127.0.0.5:1234"
