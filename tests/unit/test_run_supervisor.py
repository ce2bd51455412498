"""The run command's restart policy (``deploy.run_edge.Restarts``): the systemd units'
``Restart=on-failure`` with a start limit, decided without processes or clocks."""

from __future__ import annotations

import signal

import pytest

from deploy.run_edge import Restarts, RestartPolicy, Verdict, describe_exit, redis_command


def test_a_crash_or_a_kill_is_restarted():
    restarts = Restarts(RestartPolicy(burst=5, interval=60))
    assert restarts.verdict(1, now=0.0) is Verdict.RESTART
    assert restarts.verdict(-signal.SIGKILL, now=1.0) is Verdict.RESTART
    assert restarts.verdict(-signal.SIGSEGV, now=2.0) is Verdict.RESTART
    assert restarts.verdict(-signal.SIGABRT, now=3.0) is Verdict.RESTART
    assert restarts.recent == 4


@pytest.mark.parametrize("returncode", [0, -signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP, -signal.SIGPIPE])
def test_a_clean_exit_is_not_restarted_and_not_counted(returncode):
    # systemd.service(5): on-failure restarts neither a status 0 nor these four signals.
    restarts = Restarts(RestartPolicy())
    assert restarts.verdict(returncode, now=0.0) is Verdict.CLEAN_EXIT
    assert restarts.recent == 0


def test_the_start_limit_gives_up_on_the_burst_plus_one_failure_within_the_interval():
    restarts = Restarts(RestartPolicy(burst=3, interval=10))
    assert [restarts.verdict(-9, now=t) for t in (0.0, 1.0, 2.0)] == [Verdict.RESTART] * 3
    assert restarts.verdict(-9, now=9.9) is Verdict.GIVE_UP


def test_failures_older_than_the_interval_no_longer_count():
    restarts = Restarts(RestartPolicy(burst=3, interval=10))
    for t in (0.0, 1.0, 2.0):
        restarts.verdict(-9, now=t)
    # The first failure left the window at t=10: one more restart is allowed, not two.
    assert restarts.verdict(-9, now=10.0) is Verdict.RESTART
    assert restarts.verdict(-9, now=10.5) is Verdict.GIVE_UP
    assert restarts.recent == 3


def test_exits_are_described_by_signal_name_or_status():
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(1) == "exited with status 1"


def test_redis_persists_to_an_append_only_file_synced_every_second(tmp_path):
    cmd = redis_command("127.0.0.1", 6399, "pw", tmp_path)
    options = dict(zip(cmd[1::2], cmd[2::2]))
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "everysec"
    assert options["--save"] == "" and options["--dir"] == str(tmp_path)
    assert options["--bind"] == "127.0.0.1" and options["--requirepass"] == "pw"
