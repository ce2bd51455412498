"""The README's metrics table against what mediad and the plugin export.

Every metric is defined in one module per component (``mediad.metrics``,
``plugin.metrics``); the README lists them under "Metrics".  A metric added
without a line there, or a line left after its metric went, fails here.
"""

from __future__ import annotations

import ast
import re

from prometheus_client import CollectorRegistry

import mediad.metrics
import plugin.metrics
from tests.conftest import REPO

METRIC_CLASSES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum",
                  "CounterMetricFamily", "GaugeMetricFamily", "HistogramMetricFamily", "SummaryMetricFamily"}


def exported(registry: CollectorRegistry) -> set[str]:
    """The names a scrape shows, as the README writes them (counters with ``_total``)."""
    return {family.name + "_total" if family.type == "counter" else family.name for family in registry.collect()}


def mediad_names() -> set[str]:
    registry = CollectorRegistry()
    mediad.metrics.Metrics(registry)
    return exported(registry)


def plugin_names() -> set[str]:
    registry = CollectorRegistry()
    plugin.metrics.Metrics(registry)
    registry.register(plugin.metrics._DialogsCollector({"active": 0, "early": 0}))
    return exported(registry)


def documented(prefix: str) -> set[str]:
    text = (REPO / "README.rst").read_text()
    section = text.split("\nMetrics\n-------\n", 1)[1].split("\nOperating the edge\n", 1)[0]
    return set(re.findall(rf"``({prefix}[a-z0-9_]+)", section))


def test_every_mediad_metric_is_in_the_readme_and_nothing_else():
    assert mediad_names() == documented("e2ae_mediad_")


def test_every_plugin_metric_is_in_the_readme_and_nothing_else():
    assert plugin_names() == documented("e2ae_plugin_")


def test_no_metric_is_defined_outside_the_metrics_modules():
    """A metric made elsewhere would be missing from the comparison above."""
    misplaced = []
    for package in ("mediad", "plugin", "iq", "sdp_rules", "deploy"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path.name == "metrics.py" and path.parent.name in ("mediad", "plugin"):
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prometheus_client"):
                    made = {alias.name for alias in node.names} & METRIC_CLASSES
                    if made:
                        misplaced.append(f"{path.relative_to(REPO)}: {sorted(made)}")
    assert misplaced == []
