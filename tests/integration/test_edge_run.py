"""The README's two commands: ``deploy/e2ae run`` (here its Python part, ``python -m
deploy.run_edge``, on free ports) and the demo call against it; then Ctrl-C stops all."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port
from tests.integration.edge_harness import sip_ping

pytestmark = pytest.mark.integration

PYTHON = str(REPO / ".venv" / "bin" / "python")


def _config(path: Path) -> dict[str, int]:
    ports = {
        "access": free_port(host="127.0.0.1"), "core": free_port(host="127.0.0.2"),
        "next_hop": free_port(host="127.0.0.3"), "control": free_port(),
        "redis": free_port(socket.SOCK_STREAM), "mediad_metrics": free_port(socket.SOCK_STREAM),
        "plugin_metrics": free_port(socket.SOCK_STREAM),
    }
    path.write_text(f"""[edge]
access_sip = 127.0.0.1:{ports['access']}
core_sip = 127.0.0.2:{ports['core']}
core_next_hop = sip:127.0.0.3:{ports['next_hop']}
[mediad]
control = 127.0.0.1:{ports['control']}
access_ports = 36000-36199
core_ports = 46000-46199
metrics = 127.0.0.1:{ports['mediad_metrics']}
[redis]
url = redis://127.0.0.1:{ports['redis']}/0
[plugin]
metrics = 127.0.0.1:{ports['plugin_metrics']}
""")
    return ports


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def test_run_command_then_demo_call_then_ctrl_c():
    work = Path(tempfile.mkdtemp(prefix="e2ae-run-"))
    conf = work / "e2ae.conf"
    ports = _config(conf)
    out: list[str] = []
    # Without the demo core and the web phone (their fixed loopback ports are tested in a
    # namespace of their own: test_web_phone.py): the next hop is the demo call's own.
    proc = subprocess.Popen([PYTHON, "-m", "deploy.run_edge", "--config", str(conf), "--rundir", str(work / "run"),
                             "--no-demo", "--web", "off"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    reader = threading.Thread(target=lambda: out.extend(l.decode(errors="replace") for l in proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any("Ctrl-C stops everything" in l for l in out) and time.monotonic() < deadline:
            assert proc.poll() is None, "".join(out)
            time.sleep(0.1)
        text = "".join(out)
        assert "edge ready" in text, text
        assert f"udp:127.0.0.1:{ports['access']}" in text and f"udp:127.0.0.2:{ports['core']}" in text
        assert f"http://127.0.0.1:{ports['plugin_metrics']}/metrics" in text
        assert f"127.0.0.1:{ports['redis']}" in text
        # Redis was started with a password: no unauthenticated access.
        with socket.create_connection(("127.0.0.1", ports["redis"]), timeout=1) as s:
            s.sendall(b"PING\r\n")
            assert s.recv(100).startswith(b"-NOAUTH")
        demo = subprocess.run([PYTHON, "-m", "deploy.demo_call", "--config", str(conf), "--seconds", "1.5"],
                              cwd=REPO, capture_output=True, text=True, timeout=90)
        assert demo.returncode == 0, demo.stdout + demo.stderr + "".join(out)[-4000:]
        assert "demo call: OK" in demo.stdout
        assert re.search(r"WIC -> core: \d+ SRTP packets sent by the WIC, \d+ RTP packets received by the core",
                         demo.stdout)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the foreground command
        try:
            status = proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = None
        reader.join(5)
    text = "".join(out)
    assert status == 0, text[-4000:]
    assert "[e2ae] stopped" in text
    # Everything it started is gone.
    assert not _port_open(ports["redis"])
    assert not sip_ping("127.0.0.1", ports["access"])
    assert not _port_open(ports["plugin_metrics"])
    shutil.rmtree(work, ignore_errors=True)
