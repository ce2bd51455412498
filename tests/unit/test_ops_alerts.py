"""The alert rules and scrape configuration in deploy/prometheus, checked by Prometheus' promtool:
the rules parse, the configuration is valid, and every alert's unit tests pass, each alert
having at least one case where it fires and one where it stays quiet."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import REPO

PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS / "e2ae-alerts.yml"
RULE_TESTS = PROMETHEUS / "e2ae-alerts.test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: Debian's prometheus package (deploy/e2ae setup installs it)")
    return subprocess.run([exe, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)


def alert_names() -> list[str]:
    return re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M)


def test_rules_and_configuration_are_valid():
    rules = promtool("check", "rules", RULES.name)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in rules.stdout
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_has_unit_tests_that_fire_and_stay_quiet():
    fires, quiet = set(), set()
    for match in re.finditer(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", RULE_TESTS.read_text()):
        (quiet if match.group(2) else fires).add(match.group(1))
    names = set(alert_names())
    assert len(names) == 7
    assert names == fires, f"alerts never seen firing: {names - fires}"
    assert names == quiet, f"alerts never seen quiet: {names - quiet}"


def test_alert_unit_tests_pass():
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_runbook_and_a_severity():
    text = RULES.read_text()
    blocks = re.split(r"^\s+- alert: ", text, flags=re.M)[1:]
    for block in blocks:
        name = block.split("\n", 1)[0]
        assert re.search(r"severity: (critical|warning)", block), name
        assert re.search(r"runbook: \|\n\s+1\. ", block), name
        assert "summary:" in block and "description:" in block, name
