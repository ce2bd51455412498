"""mediad.metrics: names, bounded labels, prebound children, against an injected registry."""

from __future__ import annotations

from mediad.metrics import CONTROL_RESULTS, Metrics


def test_every_metric_is_prefixed_and_counters_end_in_total(metrics_registry):
    Metrics(metrics_registry)
    names = set()
    for family in metrics_registry.collect():
        for sample in family.samples:
            names.add(sample.name)
            assert sample.name.startswith("e2ae_mediad_")
            assert "dialog" not in sample.labels and "call_id" not in sample.labels
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
    assert "e2ae_mediad_packets_total" in names and "e2ae_mediad_dtls_handshakes_total" in names


def test_prebound_children_count_packets_and_bytes(metrics_registry):
    metrics = Metrics(metrics_registry)
    metrics.traffic[("access", "in", "rtp")].count(172)
    metrics.traffic[("access", "in", "rtp")].count(100)
    labels = {"side": "access", "direction": "in", "kind": "rtp"}
    assert metrics_registry.get_sample_value("e2ae_mediad_packets_total", labels) == 2
    assert metrics_registry.get_sample_value("e2ae_mediad_bytes_total", labels) == 272


def test_unknown_drop_reasons_and_commands_stay_bounded(metrics_registry):
    metrics = Metrics(metrics_registry)
    metrics.dropped("something new")
    metrics.control("no-such-command", "400", 0.001)
    assert metrics_registry.get_sample_value("e2ae_mediad_drops_total", {"reason": "unexpected"}) == 1
    assert metrics_registry.get_sample_value(
        "e2ae_mediad_control_requests_total", {"command": "unknown", "result": "400"}) == 1
    assert "503" in CONTROL_RESULTS


def test_control_requests_and_latency_are_counted_as_a_counter_and_a_histogram(metrics_registry):
    metrics = Metrics(metrics_registry)
    for seconds in (0.0001, 0.0004, 0.003, 2.0):
        metrics.control("reserve", "ok", seconds)
    metrics.control("release", "404", 0.0002)
    value = metrics_registry.get_sample_value
    assert value("e2ae_mediad_control_requests_total", {"command": "reserve", "result": "ok"}) == 4
    assert value("e2ae_mediad_control_requests_total", {"command": "release", "result": "404"}) == 1
    assert value("e2ae_mediad_control_request_seconds_bucket", {"command": "reserve", "le": "0.0005"}) == 2
    assert value("e2ae_mediad_control_request_seconds_bucket", {"command": "reserve", "le": "0.005"}) == 3
    assert value("e2ae_mediad_control_request_seconds_bucket", {"command": "reserve", "le": "+Inf"}) == 4
    assert value("e2ae_mediad_control_request_seconds_count", {"command": "reserve"}) == 4
    assert abs(value("e2ae_mediad_control_request_seconds_sum", {"command": "reserve"}) - 2.0035) < 1e-9
    assert value("e2ae_mediad_control_requests_created", {"command": "reserve", "result": "ok"}) is not None
def test_ports_free_follows_the_pool(metrics_registry):
    from mediad.config import PortRange
    from mediad.io.ports import PortPool

    metrics = Metrics(metrics_registry)
    pool = PortPool("127.0.0.1", PortRange(20000, 20009))
    metrics.watch_pool("access", pool)
    assert metrics_registry.get_sample_value("e2ae_mediad_ports", {"side": "access"}) == 10
    assert metrics_registry.get_sample_value("e2ae_mediad_ports_free", {"side": "access"}) == 10
    pool.in_use.update({20000, 20001, 20002})
    assert metrics_registry.get_sample_value("e2ae_mediad_ports_free", {"side": "access"}) == 7
    pool.release(20001)
    assert metrics_registry.get_sample_value("e2ae_mediad_ports_free", {"side": "access"}) == 8
