"""mediad's operational metrics against real processes: Redis reachability and port pools."""

from __future__ import annotations

import os
import time

import pytest

from tests.conftest import RedisServer
from tests.integration.conftest import Mediad

pytestmark = pytest.mark.integration


def _wait_metric(daemon: Mediad, name: str, value: float, timeout: float, **labels: str) -> float:
    deadline = time.monotonic() + timeout
    got = daemon.metric(name, **labels)
    while got != value and time.monotonic() < deadline:
        time.sleep(0.2)
        got = daemon.metric(name, **labels)
    return got


def test_redis_up_follows_a_redis_that_goes_away_and_comes_back(tmp_path):
    server = RedisServer()  # its own: this test stops it
    server.start()
    daemon = Mediad(tmp_path, server.url)
    try:
        daemon.start()
        assert daemon.metric("e2ae_mediad_redis_up") == 1
        size = daemon.access_range[1] - daemon.access_range[0] + 1
        assert daemon.metric("e2ae_mediad_ports", side="access") == size
        assert daemon.metric("e2ae_mediad_ports_free", side="access") == size
        server.stop()
        assert _wait_metric(daemon, "e2ae_mediad_redis_up", 0, 15) == 0
        assert "Redis unreachable" in daemon.log()
        os.makedirs(server.dir, exist_ok=True)  # stop() removed it
        server.start()  # on the same port
        assert _wait_metric(daemon, "e2ae_mediad_redis_up", 1, 15) == 1
        assert "Redis reachable again" in daemon.log()
    finally:
        daemon.stop()
        server.stop()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("packet_path", ["native", "python"])
def test_query_reports_the_packets_each_stream_relayed_each_way(mediad_factory, packet_path):
    from iq import Command
    from tests.integration.test_mediad_native import established
    from tests.integration.test_mediad_udp_peer import check_media

    mediad, call = established(mediad_factory, packet_path, f"packets-{packet_path}")
    try:
        check_media(call)  # 20 RTP and 1 RTCP each way
        check_media(call, seq0=1000)
        reply = mediad.client().request(mediad.iq(Command.QUERY, call.dialog))
        (stream,) = reply.data["streams"]
        assert stream["packets"] == {"from_access": 42, "from_core": 42}
        native = mediad.metric("e2ae_mediad_native_packets_total")
        assert (native > 0) == (packet_path == "native")
    finally:
        call.close()
