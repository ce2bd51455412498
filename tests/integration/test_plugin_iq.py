"""The plugin's Iq client against a real mediad and Redis."""

from __future__ import annotations

import time

from mediad.config import load_config
from plugin.edge import LazyIqClient
from sdp_rules.iq import Command, IqRequest

SECRET_KEY = "e2ae:control_secret"


def test_a_secret_regenerated_by_mediad_is_read_again(mediad_factory, redis_server):
    """Redis lost the control secret and mediad made a new one: the next request still works."""
    daemon = mediad_factory(control_secret="")
    redis = redis_server.client()
    first_secret = redis.get(SECRET_KEY)
    assert first_secret
    client = LazyIqClient(load_config(daemon.config_path))
    try:
        assert client.request(IqRequest(Command.LIST, "probe", "t1")).error is None
        daemon.stop()
        redis.delete(SECRET_KEY)
        daemon.start()
        deadline = time.monotonic() + 10  # the restarted mediad stores its new secret
        while redis.get(SECRET_KEY) in (None, first_secret) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert redis.get(SECRET_KEY) not in (None, first_secret)
        while daemon.log().count("mediad ready") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # and then serves its control socket
        reply = client.request(IqRequest(Command.LIST, "probe", "t2"))
        assert (reply.error, reply.error_code) == (None, None)
        assert reply.data["count"] == 0
    finally:
        client.close()
        redis.close()
