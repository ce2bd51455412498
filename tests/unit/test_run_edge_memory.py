"""Kamailio's memory sizes as the run command passes them (``deploy.run_edge``), and the sizing formula."""

from __future__ import annotations

import pytest

from bench.callsetup import shm_mb_for
from deploy import run_edge
from mediad.config import parse_config


def _value(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_kamailio_gets_the_sized_shared_memory_unless_told_otherwise():
    config = parse_config("")
    cmd = run_edge.kamailio_command("k.cfg", "/tmp/run", config)
    assert (_value(cmd, "-m"), _value(cmd, "-M")) == (str(run_edge.SHM_MB), str(run_edge.PKG_MB))
    assert _value(run_edge.kamailio_command("k.cfg", "/tmp/run", config, shm_mb=1024), "-m") == "1024"


def test_the_default_holds_the_benchmarks_load_and_a_held_load_by_the_documented_formula():
    # 1.5 x (3 MB + rate x 168 KiB + held calls x 1.4 KB)
    assert shm_mb_for(2000, 0) == 497  # the benchmark's top rate, calls not held
    assert shm_mb_for(1000, 60_000) == 371  # 1,000 calls/s of 60 s each
    assert max(shm_mb_for(2000, 0), shm_mb_for(1000, 60_000)) <= run_edge.SHM_MB
    # What the issue ran with, 64 MB, is short of 400 calls/s.
    assert shm_mb_for(400, 0) > 64


def test_the_run_command_refuses_a_shared_memory_too_small_to_start():
    with pytest.raises(SystemExit) as stop:
        run_edge.main(["--shm-mb", "8"])
    assert stop.value.code == 2
