"""Process helpers of the benchmark: free ports, CPU pinning, RSS, clean stops."""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import time
from typing import Sequence


# The relays' media port ranges in the benchmark (rtpengine 46000-53999, mediad's access and
# core pools 54000-59999): a port handed out for anything else must not be in them, or a
# relay allocating its media ports may take it between the pick and its use.
MEDIA_PORTS = (46000, 59999)


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port free now on ``host``, outside the relays' media ranges (MEDIA_PORTS)."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if not MEDIA_PORTS[0] <= port <= MEDIA_PORTS[1]:
            return port
    raise RuntimeError("no free UDP port outside the media ranges")


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port free now on ``host`` (mediad's control endpoint), outside the relays' media ranges."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if not MEDIA_PORTS[0] <= port <= MEDIA_PORTS[1]:
            return port
    raise RuntimeError("no free TCP port outside the media ranges")


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def pinned(cpu: int | None):
    """A ``preexec_fn`` pinning the child (and its future threads) to ``cpu``."""
    if cpu is None or cpu >= os.cpu_count():
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def start(argv: Sequence[str], cpu: int | None, log_path: str | None = None, **kwargs) -> subprocess.Popen:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=pinned(cpu), **kwargs)
    finally:
        if log_path:
            out.close()


def stop(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``: only the process we started."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of all threads of ``pid``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_time(pid: int) -> float | None:
    """CPU seconds of all threads of ``pid``, to the nanosecond (``/proc/PID/task/*/schedstat``).

    :func:`cpu_seconds` counts clock ticks (10 ms): too coarse for a few calls.
    Falls back to it where schedstat is missing.  Only live threads count: one
    that exits between two readings takes its time with it (the processes
    measured with it, Kamailio's, mediad and Redis, keep their threads).
    """
    total, seen = 0, False
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
                seen = True
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9 if seen else cpu_seconds(pid)


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
