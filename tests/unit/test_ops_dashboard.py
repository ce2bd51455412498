"""The Grafana dashboard (deploy/grafana/e2ae-edge.json): importable as is, the datasource a
variable, the panels the operators need, and queries only on metrics the edge exports."""

from __future__ import annotations

import json
import re

from prometheus_client import CollectorRegistry

from tests.conftest import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "e2ae-edge.json"


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def exported_names() -> set[str]:
    """Every sample name the plugin and mediad export (their metrics modules, fresh registries)."""
    from mediad.metrics import Metrics as MediadMetrics
    from plugin.metrics import Metrics as PluginMetrics

    names = {"up", "ALERTS", "e2ae_plugin_dialogs"}
    for make in (MediadMetrics, PluginMetrics):
        registry = CollectorRegistry()
        metrics = make(registry)
        if make is PluginMetrics:  # children appear once labelled
            for counter in (metrics.rewrites, metrics.sip_errors, metrics.releases, metrics.dtls_failures,
                            metrics.call_attempts, metrics.call_outcomes):
                counter.labels(*["x"] * len(counter._labelnames))
            for histogram in (metrics.iq_latency, metrics.sdp_seconds):
                histogram.labels("x").observe(0.001)
        else:
            metrics.handshake_seconds.labels("client").observe(0.1)
            metrics.control("reserve", "ok", 0.001)
            metrics.ports.labels("access").set(1)
            metrics.ports_free.labels("access").set(1)
        for family in registry.collect():
            names.update(sample.name for sample in family.samples)
    return names


def test_the_datasource_is_a_variable_and_nothing_names_a_datasource_instance():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["mediad"]["includeAll"] and variables["mediad"]["allValue"] == ".*"
    assert board["uid"] and board["title"] and "__inputs" not in board
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_the_panels_the_operators_asked_for_are_there():
    titles = " | ".join(p["title"] for p in panels()).lower()
    for words in ("calls and media sessions active", "call attempts and outcomes by sip status",
                  "sdp rewrites by direction and result", "iq latency", "dtls handshakes by result and role",
                  "fingerprint mismatches", "handshake time", "packets relayed per side", "bytes relayed per side",
                  "drops by reason", "native / python packet path share", "ports free per pool",
                  "load per mediad", "redis"):
        assert words in titles, words


def test_panels_do_not_overlap_and_ids_are_unique():
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in board["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))


def test_every_query_reads_metrics_the_edge_exports():
    names = exported_names()
    for panel in panels():
        for target in panel["targets"]:
            for metric in re.findall(r"\b(e2ae_\w+|up|ALERTS)\b(?=\{|\[|\))", target["expr"]):
                assert metric in names, (panel["title"], metric)
            # mediad's metrics follow the dashboard's mediad selector
            for selector in re.findall(r"e2ae_mediad_\w+\{([^}]*)\}", target["expr"]):
                assert 'mediad=~"$mediad"' in selector, (panel["title"], target["expr"])
