"""The plugin's Iq client against a real mediad and Redis."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import pytest

from mediad.config import load_config
from plugin.edge import Edge, LazyIqClient, Message
from plugin.metrics import Metrics
from plugin.state import DialogStore, dialog_id
from iq import Command, IqRequest, Side

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sdp"

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


def _core_port(body: str) -> int:
    return int(next(line for line in body.splitlines() if line.startswith("m=audio ")).split()[1])


@pytest.mark.req("SRTP-4")
def test_an_initial_invite_saved_without_a_claim_leaves_mediad_as_its_body_says(mediad, redis_url,
                                                                                metrics_registry):
    """The initial INVITE's RESERVE comes before its conditional save.  Seen again (past
    Kamailio's transaction), its RESERVE is answered from mediad's cache and nothing is
    released; when a worker holds the dialog's lock, the RESERVE is released and made
    again under the lock.  Either way the core port in the body is the one mediad holds."""
    store = DialogStore(redis_url, ttl=60)
    client = LazyIqClient(load_config(mediad.config_path))
    edge = Edge(store, client, Metrics(metrics_registry), agent="127.0.0.1:5060")
    offer = (FIXTURES / "chromium_offer_audio.sdp").read_text()

    def invite(call_id: str) -> str:
        out = edge.handle(Message(request=True, method="INVITE", call_id=call_id, from_tag="ftag", to_tag="",
                                  cseq=1, side=Side.ACCESS, body=offer, content_type="application/sdp"))
        assert not out.failed, out.warning
        return out.body

    def releases() -> float:
        return mediad.metric("e2ae_mediad_control_requests_total", command="release", result="ok")

    def dialogs() -> list[str]:
        return client.request(IqRequest(Command.LIST, "probe", secrets.token_hex(4))).data["dialogs"]

    try:
        first = invite("call-a")
        ident = dialog_id("call-a", "ftag")
        assert dialogs() == [ident] and ("127.0.0.2", _core_port(first)) in mediad.sockets()
        assert invite("call-a") == first
        assert dialogs() == [ident] and ("127.0.0.2", _core_port(first)) in mediad.sockets()
        assert releases() == 0

        ident_b = dialog_id("call-b", "ftag")
        holder = store.lock(ident_b).__enter__()
        threading.Timer(0.2, holder.__exit__).start()
        body = invite("call-b")
        assert sorted(dialogs()) == sorted([ident, ident_b])
        query = client.request(IqRequest(Command.QUERY, ident_b, secrets.token_hex(4)))
        (stream,) = query.data["streams"]
        assert stream["core"]["ports"]["rtp"] == _core_port(body)
        assert ("127.0.0.2", _core_port(body)) in mediad.sockets()
        assert store.get(ident_b).rules.data.get("agw")
        assert releases() == 1  # the RESERVE made before the save found the lock
    finally:
        client.close()
        store.close()
