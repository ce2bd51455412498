"""Kamailio's plugin on the mypyc build of the rules (deploy/compiled.py), and without one.

A fresh build is what Kamailio runs (its extensions are mapped into Kamailio's
process); with no build the plugin runs the sources and says why in one WARNING
line at start.  A WebRTC call goes through either way.
"""

from __future__ import annotations

import pytest

from deploy import compiled
from tests.integration.edge_harness import Edge
from tests.integration.test_edge_sipp import UNBUNDLED, core_uas, run_pair, wic_uac

pytestmark = pytest.mark.integration

FALLBACK = "running the rules from their sources"


def mapped_extensions(pid: int, build_dir: str) -> set[str]:
    """The files of ``build_dir`` mapped into process ``pid`` (the extensions it imported)."""
    with open(f"/proc/{pid}/maps") as f:
        return {line.split()[-1] for line in f if build_dir in line}


@pytest.mark.parametrize("build", ["fresh", "absent"])
def test_the_plugin_runs_the_build_when_fresh_else_the_sources_with_one_warning(redis_server, tmp_path, build,
                                                                               monkeypatch):
    monkeypatch.delenv(compiled.ENV, raising=False)
    if build == "fresh":
        assert compiled.stale() is None, "no fresh compiled build: run deploy/e2ae setup"
    edge = Edge(redis_server, policy_extra=UNBUNDLED)
    if build == "absent":
        edge.env[compiled.ENV + "_DIR"] = str(tmp_path / "no-build")
    try:
        edge.start()
        mapped = mapped_extensions(edge.kamailio.pid, compiled.BUILD_DIR)
        run_pair(core_uas(edge), wic_uac(edge))
        log = edge.kamailio_log_text()
        assert edge.wait_no_dialogs() == []
    finally:
        edge.stop()
    if build == "fresh":
        assert FALLBACK not in log
        # mypyc puts every compiled module's code in one library, the modules' own files being
        # shims that load it
        assert any("__mypyc." in path for path in mapped), mapped
    else:
        assert log.count(FALLBACK) == 1, log[-3000:]
        assert "WARNING" in next(line for line in log.splitlines() if FALLBACK in line)
        assert "no compiled build" in log and not mapped
