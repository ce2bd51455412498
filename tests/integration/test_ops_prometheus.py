"""The dashboard and alerts against a real Prometheus scraping a running edge.

Debian's ``prometheus`` runs with ``deploy/prometheus/prometheus.yml`` and its alert rules,
the targets pointed at this test's edge (Kamailio + plugin, mediad, Redis) and the scrape
and evaluation intervals cut to one second.  While it scrapes, SIPp places calls through
the edge, an aiortc WebRTC client places one good call and one whose offer carries the
wrong certificate fingerprint (its DTLS fails in mediad and the edge ends it), and a SIPp
client sends a malformed offer (488).  Then every query of every dashboard panel, with
Grafana's variables filled in, is run against Prometheus' HTTP API and must return series.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port
from tests.integration.edge_harness import Edge, Sipp, running_edge, stop_process
from tests.integration.live_call import LiveCall

pytestmark = pytest.mark.integration

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "e2ae-edge.json"
# Grafana's variables as the test fills them in: every mediad, windows covering the whole run.
VARIABLES = {"$__rate_interval": "2m", "$__range": "10m", "$mediad": ".*"}


class Prometheus:
    """A real prometheus on a free loopback port, scraping ``edge`` every second."""

    def __init__(self, edge: Edge) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="e2ae-prometheus-"))
        self.port = free_port(socket.SOCK_STREAM)
        config = (PROMETHEUS_DIR / "prometheus.yml").read_text()
        for shipped, ours in (("15s", "1s"), ("127.0.0.1:9811", f"127.0.0.1:{edge.conf.plugin_metrics_port}"),
                              ("127.0.0.1:9810", f"127.0.0.1:{edge.conf.mediad_metrics_port}")):
            assert shipped in config, shipped
            config = config.replace(shipped, ours)
        (self.dir / "prometheus.yml").write_text(config)
        shutil.copy(PROMETHEUS_DIR / "e2ae-alerts.yml", self.dir)
        self.log = self.dir / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = shutil.which("prometheus")
        if exe is None:
            pytest.fail("prometheus is missing: Debian's prometheus package (deploy/e2ae setup installs it)")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [exe, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                cwd=self.dir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        if not self._ready(30):
            raise RuntimeError("prometheus did not start\n" + self.log.read_text(errors="replace")[-3000:])
        # Target discovery hands the targets to the scrapers after a few seconds: wait for two
        # scrapes of each job, so that nothing the test does happens before the first.
        for job in ("e2ae-plugin", "e2ae-mediad"):
            if not self.wait(f'count_over_time(up{{job="{job}"}}[1m]) >= 2', 30):
                raise RuntimeError(f"prometheus does not scrape {job}\n" + self.log.read_text()[-3000:])

    def _ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc = json.loads(resp.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def wait(self, expr: str, timeout: float = 20.0) -> list[dict]:
        """The result of ``expr`` once it returns series (the last, empty, result on timeout)."""
        deadline = time.monotonic() + timeout
        result = self.query(expr)
        while not result and time.monotonic() < deadline:
            time.sleep(0.5)
            result = self.query(expr)
        return result


def panel_queries() -> list[tuple[str, str, str]]:
    """(panel title, legend, PromQL with Grafana's variables filled in) of every dashboard query."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, expr
            out.append((panel["title"], target.get("legendFormat", ""), expr))
    return out


@pytest.fixture(scope="module")
def edge(redis_server):
    # bundle = off: the native-path panel needs the aiortc call's packets on the native path,
    # which carries no BUNDLE transport (docs/mediad.md, "The native packet path").
    with running_edge(redis_server, policy_extra="bundle = off") as e:
        yield e


@pytest.fixture(scope="module")
def prometheus(edge):
    p = Prometheus(edge)
    try:
        p.start()
        yield p
    finally:
        p.stop()


def sipp_calls(edge: Edge, calls: int) -> None:
    uas = Sipp("core_uas.xml", "127.0.0.3", calls=calls, timeout=30)
    uas.port = edge.conf.next_hop_port
    uac = Sipp("wic_call_uac.xml", "127.0.0.1", remote=edge.access, calls=calls, rate=10, limit=10, timeout=30,
               extra=["-s", "callee", "-d", "500"])
    malformed = Sipp("wic_malformed_uac.xml", "127.0.0.1", remote=edge.access, extra=["-s", "callee"])
    try:
        uas.start()
        time.sleep(0.2)
        assert uac.run() == 0, uac.diagnostics()
        assert uas.wait(15) == 0, uas.diagnostics()
        assert malformed.run() == 0, malformed.diagnostics()
    finally:
        for sipp in (uas, uac, malformed):
            sipp.stop()


async def aiortc_calls(edge: Edge) -> tuple[LiveCall, LiveCall]:
    good = LiveCall(edge.access, edge.next_hop)
    try:
        await good.start()
        await asyncio.sleep(2.0)
        assert (await good.hang_up()) == 200
    finally:
        await good.close()
    bad = LiveCall(edge.access, edge.next_hop, wrong_fingerprint=True)
    try:
        await bad.start()
        # mediad refuses the WIC's certificate; the edge ends the call: BYE to the WIC.
        await asyncio.wait_for(bad.bye_received.wait(), 15)
    finally:
        await bad.close()
    return good, bad


def snapshot(prometheus: Prometheus, start: float, path: Path) -> None:
    """Every panel's series over the test, as ``tools/dashboard_snapshot.py`` draws them."""
    board = json.loads(DASHBOARD.read_text())
    end = time.time()
    start = end - int(end - start)  # the last point at the end: it sees every sample
    panels = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            panels.append({"title": panel["title"], "type": "row"})
            continue
        targets = []
        for target in panel["targets"]:
            expr = target["expr"].replace("$__range", f"{int(end - start) + 1}s")
            expr = expr.replace("$__rate_interval", "15s").replace("$mediad", ".*")
            data = prometheus.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step="1")
            targets.append({"legend": target.get("legendFormat", ""), "expr": expr, "series": data["result"]})
        panels.append({"title": panel["title"], "type": panel["type"], "gridPos": panel["gridPos"],
                       "unit": panel["fieldConfig"]["defaults"].get("unit", "short"), "targets": targets})
    path.write_text(json.dumps({"title": board["title"], "start": start, "end": end, "panels": panels}))


def test_every_dashboard_panel_returns_series_from_a_real_prometheus(edge, prometheus):
    started = time.time()
    sipp_calls(edge, 5)
    good, bad = asyncio.run(asyncio.wait_for(aiortc_calls(edge), 60))
    assert good.status == 200 and good.dtls_state == "connected"
    assert bad.status == 200 and bad.bye_received.is_set()
    assert edge.wait_no_dialogs(10) == [] and edge.mediad_dialogs() == []
    # The last call's counts scraped (scrapes run every second), then two scrapes more.
    assert prometheus.wait('e2ae_mediad_dtls_handshakes_total{result="fingerprint_mismatch"} >= 1')
    assert prometheus.wait('e2ae_plugin_dtls_failures_total{reason="fingerprint_mismatch"} >= 1')
    assert prometheus.wait('e2ae_plugin_releases_total{reason="dtls_failed"} >= 1')
    assert prometheus.wait("e2ae_mediad_sessions_active == 0")
    time.sleep(2.5)
    assert prometheus.wait('ALERTS{alertname="E2aeFingerprintMismatch", alertstate="firing"}'), prometheus.api("alerts")

    queries = panel_queries()
    empty = [(title, legend, expr) for title, legend, expr in queries if not prometheus.query(expr)]
    assert empty == [], "panel queries without series:\n" + "\n".join(map(str, empty))
    assert len(queries) >= 32

    def value(expr: str) -> float:
        (sample,) = prometheus.query(expr)
        return float(sample["value"][1])

    # The values behind the panels say what happened.
    assert value('sum(increase(e2ae_mediad_dtls_handshakes_total{result="fingerprint_mismatch"}[10m]))') >= 1
    assert value('sum(increase(e2ae_plugin_call_attempts_total{side="access"}[10m]))') >= 8
    assert value('sum(increase(e2ae_plugin_call_outcomes_total{status="200"}[10m]))') >= 7
    assert value('sum(increase(e2ae_plugin_call_outcomes_total{status="488"}[10m]))') >= 1
    assert value('sum(increase(e2ae_plugin_dtls_failures_total{reason="fingerprint_mismatch"}[10m]))') >= 1
    assert value('sum(increase(e2ae_mediad_packets_total{side="core",direction="out",kind="rtp"}[10m]))') >= 50
    assert value('min(e2ae_mediad_redis_up)') == 1
    # The first handshake is seen (the histogram's children are there from the start).
    assert 0 < value('histogram_quantile(0.5, sum by (le) (rate(e2ae_mediad_dtls_handshake_seconds_bucket'
                     '{role="client"}[2m])))') < 5
    assert value('sum(e2ae_mediad_ports_free) / sum(e2ae_mediad_ports)') == 1
    if os.environ.get("E2AE_PACKET_PATH", "auto") != "python":
        assert value('sum(increase(e2ae_mediad_native_packets_total[10m]))') > 0

    # The mediad variable's values, and the fingerprint alert firing (it has no "for").
    assert prometheus.api("label/mediad/values", **{"match[]": "e2ae_mediad_sessions_active"}) == ["mediad-1"]
    alerts = {(a["labels"]["alertname"], a["state"]) for a in prometheus.api("alerts")["alerts"]}
    assert ("E2aeFingerprintMismatch", "firing") in alerts, alerts
    assert not {name for name, _ in alerts} - {"E2aeFingerprintMismatch", "E2aeDtlsFailureRatioHigh"}, alerts
    rules = [r["name"] for g in prometheus.api("rules")["groups"] for r in g["rules"]]
    assert len(rules) == 7 and all(r.startswith("E2ae") for r in rules)
    if os.environ.get("E2AE_DASHBOARD_SNAPSHOT"):  # the data behind the README's picture
        snapshot(prometheus, started - 10, Path(os.environ["E2AE_DASHBOARD_SNAPSHOT"]))
