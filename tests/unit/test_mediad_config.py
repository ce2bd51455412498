"""mediad.config: the one configuration file, its defaults and its errors."""

from __future__ import annotations

import re

import pytest

from dataclasses import replace

from mediad.config import (
    Config, ConfigError, HostPort, PortRange, SipSocket, load_config, option_names, parse_config,
    parse_host_port, sip_sockets,
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


# What the shipped file turns on beyond the defaults: the sockets the web phone, TCP/TLS
# clients and large requests toward the core need (every other line is the default).
SHIPPED_SOCKETS = {
    "edge_access_tcp": SipSocket("127.0.0.1", 5060), "edge_access_tls": SipSocket("127.0.0.1", 5061),
    "edge_access_ws": SipSocket("127.0.0.1", 8080), "edge_access_wss": SipSocket("127.0.0.1", 8443),
    "edge_core_tcp": SipSocket("127.0.0.2", 5060),
}


def test_shipped_file_documents_every_option_with_its_default():
    text = SHIPPED.read_text()
    assert parse_config(text, source=str(SHIPPED)) == replace(Config(), **SHIPPED_SOCKETS)
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


def test_sip_sockets_each_transport_with_an_advertised_address():
    config = parse_config("[edge]\naccess_sip = off\naccess_wss = 10.0.0.5:8443 advertise 203.0.113.7\n"
                          "core_sip = 10.1.0.5:5060\ncore_tcp = 10.1.0.5:5060 advertise 198.51.100.2:5070\n")
    assert config.edge_access_sip is None
    assert config.edge_access_wss == SipSocket("10.0.0.5", 8443, HostPort("203.0.113.7", 8443))
    assert config.edge_access_wss.listen("tls") == "tls:10.0.0.5:8443 advertise 203.0.113.7:8443"
    assert config.edge_core_tcp.public == HostPort("198.51.100.2", 5070)
    assert [(o, p) for o, p, _ in sip_sockets(config)] == [("access_wss", "tls"), ("core_sip", "udp"),
                                                          ("core_tcp", "tcp")]


@pytest.mark.parametrize("text, message", [
    ("[edge]\naccess_sip = off\n", "no access socket"),
    ("[edge]\ncore_sip = off\n", "no core socket"),
    ("[edge]\naccess_ws = 127.0.0.1:8080\naccess_tcp = 127.0.0.1:8080\n", "same tcp socket"),
    ("[edge]\naccess_ws = 127.0.0.1:8080 via 1.2.3.4\n", "advertise"),
    ("[edge]\naccess_tls = 127.0.0.1:5061\ntls_certificate = /x.pem\n", "go together"),
    ("[mediad]\naccess_advertise = public\n", "IP address"),
    ("[policy]\ncore_rtp_profile = savp\n", "one of"),
])
def test_bad_sip_sockets_are_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


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
