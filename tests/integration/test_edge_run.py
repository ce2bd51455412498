"""The README's two commands: ``deploy/e2ae run`` (here its Python part, ``python -m
deploy.run_edge``, on free ports) and the demo call against it; then Ctrl-C stops all."""

from __future__ import annotations

import re
import socket
import subprocess

import pytest

from tests.conftest import REPO
from tests.integration.edge_harness import RunCommand, sip_ping

pytestmark = pytest.mark.integration

PYTHON = str(REPO / ".venv" / "bin" / "python")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def test_run_command_then_demo_call_then_ctrl_c():
    run = RunCommand()  # without the demo core: the next hop is the demo call's own
    ports = run.ports
    try:
        run.start()
        text = run.text()
        assert "edge ready" in text, text
        assert f"udp:127.0.0.1:{ports['access']}" in text and f"udp:127.0.0.2:{ports['core']}" in text
        assert f"http://127.0.0.1:{ports['plugin_metrics']}/metrics" in text
        assert f"127.0.0.1:{ports['redis']}" in text
        # Redis was started with a password: no unauthenticated access.
        with socket.create_connection(("127.0.0.1", ports["redis"]), timeout=1) as s:
            s.sendall(b"PING\r\n")
            assert s.recv(100).startswith(b"-NOAUTH")
        # Its append-only file (it holds SRTP keys) is readable by its owner only.
        assert (run.rundir / "redis").stat().st_mode & 0o077 == 0
        demo = subprocess.run([PYTHON, "-m", "deploy.demo_call", "--config", str(run.config_path), "--seconds", "1.5"],
                              cwd=REPO, capture_output=True, text=True, timeout=90)
        assert demo.returncode == 0, demo.stdout + demo.stderr + run.text()[-4000:]
        assert "demo call: OK" in demo.stdout
        assert re.search(r"WIC -> core: \d+ SRTP packets sent by the WIC, \d+ RTP packets received by the core",
                         demo.stdout)
        # e2ae-ctl with the runtime configuration it printed: Redis, mediad and Kamailio's RPC socket.
        assert (run.rundir / "kamailio" / "kamailio_rpc.sock").exists()
        ctl = subprocess.run([str(REPO / ".venv" / "bin" / "e2ae-ctl"), "--config", str(run.rundir / "e2ae.conf"),
                              "calls"], capture_output=True, text=True, timeout=30)
        assert ctl.returncode == 0 and ctl.stdout.endswith("0 call(s)\n"), ctl.stdout + ctl.stderr
        status = run.stop()
        text = run.text()
        assert status == 0, text[-4000:]
        assert "[e2ae] stopped" in text
        # Everything it started is gone.
        assert not _port_open(ports["redis"])
        assert not sip_ping("127.0.0.1", ports["access"])
        assert not _port_open(ports["plugin_metrics"])
    finally:
        run.cleanup()
