"""The whole edge against a Redis that speaks TLS only, with one ACL user per component.

Redis is configured by the run command's own code (deploy/redis_setup.py: its
CA and certificate, its ACL file with ``default`` off); Kamailio's plugin,
mediad and e2ae-ctl each connect as their own user (``[redis]
<component>_username``) and check the server's certificate against the CA.
A SIPp call goes through (INVITE, 200, ACK, re-INVITE, BYE) and leaves nothing;
each user is refused what it has no need of, so the ACL is real.
"""

from __future__ import annotations

import json
import time

import pytest
import redis

from iq import Command, Role, Side, StreamSpec, TerminationSpec
from mediad.config import load_config
from mediad.pool import NODES_KEY, lock_key
from mediad.redis_client import connect, settings
from mediad.redis_keys import Component
from mediad.state import dialog_key as agw_key
from mediad.takeover import MOVED_KEY
from plugin.pool import Pool
from plugin.state import dialog_key
from tests.integration.conftest import Mediad
from tests.integration.dtls_peer import DtlsPeer, rtp_packet
from tests.integration.edge_harness import Sipp, running_edge
from tests.integration.redis_ha import SecureRedis
from tests.integration.test_mediad_pool import node_options
from tests.integration.test_mediad_t38 import core_socket

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secure_redis():
    server = SecureRedis().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def edge(secure_redis):
    with running_edge(secure_redis, redis_extra=secure_redis.redis_extra) as e:
        yield e


def test_a_call_through_a_tls_redis_with_acl_users(edge, secure_redis):
    seen: list[str] = []
    uas = Sipp("core_uas_reinvite.xml", "127.0.0.3")
    uas.port = edge.conf.next_hop_port
    uac = Sipp("wic_reinvite_uac.xml", "127.0.0.1", remote=edge.access, extra=["-s", "callee", "-d", "1500"],
               keys={"reinvite_tls_id": "6ba1e1b4d7c5a3f2e0d9c8b7a6f5e4d3"})
    admin = secure_redis.client()
    try:
        uas.start()
        time.sleep(0.2)
        uac.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(k.startswith("e2ae:agw:dialog:") for k in seen):
            seen = [k.decode() for k in admin.keys("e2ae:*")]
            time.sleep(0.05)
        assert uac.wait() == 0, uac.diagnostics() + "\n" + uas.diagnostics()
        assert uas.wait(15) == 0, uas.diagnostics()
        assert len(uas.received("INVITE ")) == 2 and len(uas.received("BYE ")) == 1
    finally:
        uas.stop()
        uac.stop()
    # the plugin's record and mediad's document of the call, hash-tagged alike
    records = [k for k in seen if k.startswith("e2ae:alg:dialog:{")]
    documents = [k for k in seen if k.startswith("e2ae:agw:dialog:{")]
    assert len(records) == 1 and len(documents) == 1, seen
    assert records[0].split(":", 3)[3] == documents[0].split(":", 3)[3]
    assert edge.wait_no_dialogs() == [] and edge.mediad_dialogs() == []
    # no password reached a log line
    logs = edge.kamailio_log_text() + edge.mediad_log.read_text(errors="replace")
    for _, password in secure_redis.users.values():
        assert password not in logs


def test_each_component_is_refused_what_it_does_not_need(edge, secure_redis):
    config = load_config(edge.config_path)
    plugin = connect(settings(config, Component.PLUGIN), 2.0)
    media = connect(settings(config, Component.MEDIAD), 2.0)
    ctl = connect(settings(config, Component.CTL), 2.0)
    try:
        assert plugin.ping() and media.ping() and ctl.ping()
        assert media.get("e2ae:agw:certificate")  # mediad's own
        refused = [
            (plugin, ("GET", "e2ae:agw:certificate")),  # mediad's certificate and key
            (plugin, ("GET", agw_key("x"))),  # mediad's documents (SRTP keys)
            (plugin, ("SET", "e2ae:control_secret", "mine")),  # the secret is read-only to it
            (plugin, ("PUBLISH", "e2ae:events", "{}")),  # only mediad publishes events
            (plugin, ("KEYS", "*")),
            (plugin, ("FLUSHALL",)),
            (plugin, ("CONFIG", "GET", "*")),
            (plugin, ("EVAL", "return 1", "0")),  # only the registered scripts, by SHA
            (media, ("GET", dialog_key("x"))),  # the plugin's records
            (media, ("EVAL", "return 1", "0")),  # its fence script only, by SHA (mediad.fence)
            (media, ("SUBSCRIBE", "e2ae:events")),
            (media, ("ACL", "LIST")),
            (ctl, ("GET", "e2ae:agw:certificate")),
            (ctl, ("PUBLISH", "e2ae:events", "{}")),
            (ctl, ("SET", "e2ae:control_secret", "mine")),
        ]
        for client, command in refused:
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
        # a script cannot reach past its user's keys either
        sha = plugin.script_load("return redis.call('get', KEYS[1])")
        with pytest.raises(redis.exceptions.ResponseError, match="(?i)permission|acl|no permissions"):
            plugin.evalsha(sha, 1, "e2ae:agw:certificate")
    finally:
        for client in (plugin, media, ctl):
            client.close()


def test_no_way_in_without_tls_or_without_a_user(secure_redis):
    from redis import Redis

    with pytest.raises(redis.exceptions.ConnectionError):  # TLS only: a plain client gets nowhere
        Redis(host="127.0.0.1", port=secure_redis.port, socket_timeout=1, socket_connect_timeout=1).ping()
    anonymous = Redis(host="127.0.0.1", port=secure_redis.port, ssl=True, ssl_ca_certs=str(secure_redis.ca),
                      socket_timeout=1)
    with pytest.raises(redis.exceptions.AuthenticationError):  # "default" is off
        anonymous.ping()
    anonymous.close()
    stranger = Redis(host="127.0.0.1", port=secure_redis.port, ssl=True, ssl_cert_reqs="required",
                     socket_timeout=1)  # no CA given: the server's certificate is not trusted
    with pytest.raises(redis.exceptions.ConnectionError):
        stranger.ping()
    stranger.close()


def test_the_run_commands_tls_files_are_private(secure_redis):
    for path in (secure_redis.key, secure_redis.dir / "tls" / "redis-ca.key", secure_redis.acl):
        assert path.stat().st_mode & 0o077 == 0, path
    text = secure_redis.acl.read_text()
    for _, password in secure_redis.users.values():
        assert password not in text  # stored as its SHA-256
    assert "user default off" in text


def _node(tmp_path, secure_redis, name: str, n: int) -> Mediad:
    """A pool node on its own loopback "host", reaching the TLS Redis as mediad's ACL user."""
    node = Mediad(tmp_path, secure_redis.url, **node_options(name, n))
    user, password = secure_redis.users[Component.MEDIAD]
    with open(node.config_path, "a") as conf:  # [redis] is the file's last section
        conf.write(f"ca_file = {secure_redis.ca}\nmediad_username = {user}\nmediad_password = {password}\n")
    node.start()
    return node


def _media_both_ways(peer: DtlsPeer, core, core_address, first: int) -> None:
    for seq in range(first, first + 5):
        peer.send_rtp(rtp_packet(seq))
        assert core.recvfrom(2048)[0][2:4] == seq.to_bytes(2, "big")
        core.sendto(rtp_packet(seq, ssrc=0x5555), core_address)
        assert peer.recv_media()[2:4] == seq.to_bytes(2, "big")


def test_a_takeover_under_the_acl_users(secure_redis, tmp_path):
    """A killed node's call taken over through a TLS Redis as mediad's ACL user (the takeover
    lock, the dead node's documents read and rewritten under the fence, the moved hash), and
    the plugin's user reads where it went; Redis refused nobody anything (its ACL log)."""
    admin = secure_redis.client()
    admin.execute_command("ACL", "LOG", "RESET")
    peer = DtlsPeer("client", srtp=True)
    core = core_socket()
    nodes: list[Mediad] = []
    try:
        x = _node(tmp_path, secure_redis, "x", 11)
        nodes.append(x)
        y = _node(tmp_path, secure_redis, "y", 12)
        nodes.append(y)
        access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=True, tls_role=Role.SERVER,
                                 remote_fingerprints=[peer.fingerprint("sha-256")], local_fingerprint_request=True)
        host, port = core.getsockname()
        spec = StreamSpec(1, "srtp", access, TerminationSpec(Side.CORE, "RTP/AVP", remote_address=host,
                                                             remote_port=port, rtcp_mux=True))
        reply = x.client().request(x.iq(Command.RESERVE, "acl-call", [spec]))
        assert reply.error is None, reply
        stream = reply.stream(1)
        assert peer.handshake((stream.access.local_address, stream.access.local_port))
        core_address = (stream.core.local_address, stream.core.local_port)
        _media_both_ways(peer, core, core_address, 0)
        assert x.written()
        created = time.time()
        x_ref = f"x@127.0.0.11:{x.control_port}"

        x.kill()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and admin.hget(MOVED_KEY, "x") is None:
            time.sleep(0.05)
        document = json.loads(admin.get(agw_key("acl-call")))
        assert (document["node"], document["epoch"]) == ("y", 1), y.log()
        assert y.metric("e2ae_mediad_takeover_dialogs_total", result="taken") == 1
        assert admin.get(lock_key("x")) is None and admin.smembers(NODES_KEY) == {b"y"}
        _media_both_ways(peer, core, core_address, 100)  # through y, with the stored keys

        conf = tmp_path / "plugin.conf"
        conf.write_text(f"[redis]\nurl = {secure_redis.url}\n{secure_redis.redis_extra}\n[pool]\nregistry = on\n")
        config = load_config(conf)
        client = connect(settings(config, Component.PLUGIN), 2.0)
        try:
            pool = Pool(config, lambda: client)
            assert pool.route(x_ref, created) == f"y@127.0.0.12:{y.control_port}"
            assert [node.id for node in pool.nodes()] == ["y"]
        finally:
            client.close()
        assert y.client().request(y.iq(Command.RELEASE, "acl-call")).error is None
        assert y.written() and admin.exists(agw_key("acl-call")) == 0
        assert admin.execute_command("ACL", "LOG") == []  # no command of mediad or the plugin was refused
    finally:
        for node in nodes:
            node.stop()
        peer.close()
        core.close()
        keys = admin.keys("e2ae:pool:*") + admin.keys("e2ae:agw:dialog:*")
        if keys:
            admin.delete(*keys)
        admin.close()
