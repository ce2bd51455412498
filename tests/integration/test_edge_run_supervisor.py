"""``deploy/e2ae run`` supervises the edge: a process killed mid-call is restarted, the
others keep running (same pids), and the call goes on.

One run command for the module; in each test an aiortc WIC calls a plain RTP core
endpoint through it (``deploy.demo_call.run_call``), and after 1.5 s of media one
process is killed with SIGKILL.  The media gap is the longest silence between two
packets carrying the other side's tone, at the core (WIC -> core) and at the WIC
(core -> WIC), from just before the kill to the end of the call; it is printed
(``-s``) and only bounded here (figures are not asserted).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from deploy.demo_call import run_call
from deploy.run_edge import STOP_TIMEOUT
from tests.integration.edge_harness import RunCommand, sip_ping

pytestmark = pytest.mark.integration

MEDIA_S = 1.5  # media before the kill, and again once the killed process answers


@pytest.fixture(scope="module")
def run():
    command = RunCommand()
    try:
        command.start()
        yield command
        pids = command.pids()
        started = time.monotonic()
        status = command.stop(sig=signal.SIGTERM)
        took = time.monotonic() - started
    finally:
        text = command.text()
        command.cleanup()
    # SIGTERM stops the edge cleanly, in a bounded time, children included (the
    # restarted ones: their last pids).
    assert status == 0, text[-4000:]
    assert "[e2ae] stopped" in text and took < 3 * STOP_TIMEOUT
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids.values()), pids


def _gap_ms(times: list[float], since: float) -> float:
    window = [t for t in times if t >= since - 0.5]
    return 1000 * max((b - a for a, b in zip(window, window[1:])), default=float("inf"))


def _call_killing(run: RunCommand, kill, restarted: str, then=None):
    """A call during which ``kill()`` kills one process and, once the run command said
    ``restarted``, ``then()`` runs; returns the call's result and when each happened."""
    marks: dict[str, float | int] = {}

    async def during():
        before = len(run.lines)
        marks["kill"] = time.monotonic()
        kill()
        loop = asyncio.get_running_loop()
        marks["line"] = await loop.run_in_executor(None, lambda: run.wait_line(restarted, 30, after=before))
        marks["ready"] = time.monotonic()
        if then is not None:
            await loop.run_in_executor(None, then)

    result = asyncio.run(asyncio.wait_for(
        run_call(run.access, run.next_hop, MEDIA_S, log=lambda *_: None, during=during), 90))
    return result, marks


def _assert_media_resumed(result, marks, name: str) -> tuple[float, float]:
    assert result.status == 200 and result.dtls_state == "connected", result.notes
    # Tone on both sides after the killed process answered again: media resumed.
    after_core = [t for t in result.core_tone_times if t > marks["ready"]]
    after_wic = [t for t in result.wic_tone_times if t > marks["ready"]]
    assert len(after_core) >= 25 and len(after_wic) >= 25, (name, len(after_core), len(after_wic))
    core_gap, wic_gap = _gap_ms(result.core_tone_times, marks["kill"]), _gap_ms(result.wic_tone_times, marks["kill"])
    print(f"\nkill -9 {name}: restarted after {1000 * (marks['ready'] - marks['kill']):.0f} ms; media gap "
          f"WIC->core {core_gap:.0f} ms, core->WIC {wic_gap:.0f} ms")
    return core_gap, wic_gap


def _wait_gone(run: RunCommand, prefix: str, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (keys := [k for k in run.edge_keys() if k.startswith(prefix)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return keys


def _assert_released(run: RunCommand, result) -> None:
    assert result.bye_status == 200 and result.core_bye, result.notes
    assert _wait_gone(run, "e2ae:") == []
    assert run.mediad_dialogs() == []


def test_mediad_killed_mid_call_is_restarted_and_media_resumes(run):
    pids = run.pids()
    kamailio = run.kamailio_pids()
    result, marks = _call_killing(run, lambda: os.kill(pids["mediad"], signal.SIGKILL), "mediad restarted")
    new = run.pids()
    assert new["mediad"] != pids["mediad"]
    assert new["redis"] == pids["redis"] and run.kamailio_pids() == kamailio
    core_gap, wic_gap = _assert_media_resumed(result, marks, "mediad")
    # Restored from Redis, no new call: the gap is the restart, not a new handshake's wait.
    assert core_gap < 15000 and wic_gap < 15000
    _assert_released(run, result)


def test_kamailio_worker_killed_mid_call_restarts_kamailio_only(run):
    pids = run.pids()
    main = pids["kamailio"]
    worker = max(run.kamailio_pids() - {main})
    result, marks = _call_killing(run, lambda: os.kill(worker, signal.SIGKILL), "kamailio restarted")
    new = run.pids()
    assert new["kamailio"] != main and not os.path.exists(f"/proc/{worker}")
    assert new["mediad"] == pids["mediad"] and new["redis"] == pids["redis"]
    assert sip_ping(*run.access)
    core_gap, wic_gap = _assert_media_resumed(result, marks, "a Kamailio worker")
    # Media never went through Kamailio: it kept flowing.
    assert core_gap < 1000 and wic_gap < 1000
    # The BYE, routed by the restarted Kamailio from its Route headers, still releases the call.
    _assert_released(run, result)


def _call_killing_redis(run: RunCommand):
    pids = run.pids()
    kamailio = run.kamailio_pids()
    seen: dict[str, list[str]] = {}

    def kill():
        seen["before"] = run.edge_keys()
        os.kill(pids["redis"], signal.SIGKILL)

    result, marks = _call_killing(run, kill, "redis restarted", then=lambda: seen.setdefault("after", run.edge_keys()))
    new = run.pids()
    assert new["redis"] != pids["redis"]
    assert new["mediad"] == pids["mediad"] and run.kamailio_pids() == kamailio
    return result, marks, seen


def test_redis_killed_mid_call_is_restarted_with_its_data(run):
    result, marks, seen = _call_killing_redis(run)
    core_gap, wic_gap = _assert_media_resumed(result, marks, "Redis")
    assert core_gap < 1000 and wic_gap < 1000
    # The call's records (the plugin's and mediad's) came back with Redis ...
    assert any(k.startswith("e2ae:alg:dialog:") for k in seen["before"]), seen
    assert any(k.startswith("e2ae:agw:dialog:") for k in seen["before"]), seen
    assert seen["after"] == seen["before"]
    # ... and its BYE released it: the plugin's record is gone, mediad holds nothing.
    assert result.bye_status == 200 and result.core_bye, result.notes
    assert _wait_gone(run, "e2ae:alg:") == []
    assert run.mediad_dialogs() == []


def test_after_a_redis_restart_a_released_call_leaves_nothing_in_redis(run):
    result, _, _ = _call_killing_redis(run)
    assert result.bye_status == 200
    assert _wait_gone(run, "e2ae:") == []


def test_a_process_that_keeps_dying_stops_the_edge_at_the_start_limit():
    # One restart allowed per minute: the second kill of mediad is the start limit
    # (systemd's start-limit-hit): the edge stops, exit status 1, nothing left running.
    run = RunCommand("--restart-burst", "1", "--restart-interval", "60")
    try:
        run.start()
        first = run.pids()
        os.kill(first["mediad"], signal.SIGKILL)
        run.wait_line("mediad restarted", 30)
        second = run.pids()
        assert second["mediad"] != first["mediad"] and second["kamailio"] == first["kamailio"]
        os.kill(second["mediad"], signal.SIGKILL)
        run.wait_line("restarted 1 times within 60 s already: stopping the edge", 30)
        status = run.proc.wait(3 * STOP_TIMEOUT)
        assert status == 1, run.text()[-3000:]
        assert "[e2ae] stopped" in run.text()
        assert not any(os.path.exists(f"/proc/{pid}") for pid in second.values())
    finally:
        run.cleanup()
