"""The run command's Redis configuration: TLS files, the ACL file, the runtime [redis] lines."""

from __future__ import annotations

import configparser

from deploy.redis_setup import acl_file, ensure_tls, redis_command
from deploy.run_edge import Runner
from mediad.config import load_config
from mediad.redis_keys import ACL_RULES, Component


def test_tls_and_acl_users_are_set_up_from_the_configuration(tmp_path):
    source = tmp_path / "e2ae.conf"
    source.write_text("[redis]\nurl = rediss://127.0.0.1:6390/0\nmediad_username = media\n"
                      "mediad_password = given\n")
    runner = Runner(source, tmp_path / "run")
    path, config, _ = runner.runtime_config()
    assert path.stat().st_mode & 0o077 == 0
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    redis = parser["redis"]
    assert redis["mediad_username"] == "media" and redis["mediad_password"] == "given"
    assert redis["plugin_username"] == "e2ae-plugin" and len(redis["plugin_password"]) >= 24
    assert redis["ctl_username"] == "e2ae-ctl" and redis["ctl_password"] != redis["plugin_password"]
    assert "password" not in redis  # no shared password: each has its own user
    ca, cert, key = runner.redis_tls
    assert redis["ca_file"] == str(ca) and config.redis_ca_file == str(ca)
    for private in (key, tmp_path / "run" / "redis-tls" / "redis-ca.key"):
        assert private.stat().st_mode & 0o077 == 0
    cmd = redis_command("127.0.0.1", 6390, "", tmp_path, acl=tmp_path / "users.acl", tls=runner.redis_tls)
    options = dict(zip(cmd[1::2], cmd[2::2]))
    assert options["--port"] == "0" and options["--tls-port"] == "6390"  # TLS only
    assert options["--aclfile"] == str(tmp_path / "users.acl") and "--requirepass" not in options
    assert load_config(path).redis_plugin_username == "e2ae-plugin"


def test_a_plain_url_keeps_one_password(tmp_path):
    source = tmp_path / "e2ae.conf"
    source.write_text("[redis]\nurl = redis://127.0.0.1:1/0\n")
    runner = Runner(source, tmp_path / "run")
    path, config, password = runner.runtime_config()
    assert runner.redis_acl is None and runner.redis_tls is None
    assert config.redis_password == password and len(password) >= 24


def test_the_acl_file_turns_default_off_and_stores_no_password():
    text = acl_file({Component.PLUGIN: ("p", "secret-1"), Component.MEDIAD: ("m", "secret-2")})
    lines = text.splitlines()
    assert lines[0].startswith("user default off")
    assert "secret-1" not in text and "secret-2" not in text
    plugin = lines[1]
    assert plugin.startswith("user p on #") and "-@all" in plugin and plugin.endswith(ACL_RULES[Component.PLUGIN])
    assert "+@all" not in text and "~*" not in text and "allkeys" not in text


def test_the_server_certificate_names_the_host_and_is_made_once(tmp_path):
    first = [p.read_bytes() for p in ensure_tls(tmp_path, "127.0.0.1")]
    assert [p.read_bytes() for p in ensure_tls(tmp_path, "127.0.0.1")] == first
    other = ensure_tls(tmp_path, "127.0.0.9")  # another address: a new certificate
    assert other[1].read_bytes() != first[1]
