"""The systemd unit of the edge starts Kamailio as the run command does
(``deploy.run_edge.kamailio_command``) for the configuration its comment names."""

from __future__ import annotations

import re
import shlex

from deploy import run_edge
from mediad.config import parse_config
from tests.conftest import REPO

UNIT = REPO / "deploy" / "systemd" / "e2ae-edge.service"
# What the unit is written for: UDP and TCP on each side, the shipped metrics and RPC socket.
CONFIG = """[edge]
access_sip = 127.0.0.1:5060
access_tcp = 127.0.0.1:5060
core_sip = 127.0.0.2:5060
core_tcp = 127.0.0.2:5060
[redis]
dialog_ttl = 7200
[plugin]
metrics = 127.0.0.1:9811
rpc_socket = /run/e2ae-edge/kamailio_rpc.sock
"""


def _exec_start() -> list[str]:
    text = UNIT.read_text().replace("\\\n", " ")
    line = next(l for l in text.splitlines() if l.startswith("ExecStart="))
    return shlex.split(line[len("ExecStart="):])


def _split(cmd: list[str]) -> tuple[list[str], set[str]]:
    """The options other than -A, in order, and the set of -A defines."""
    options, defines = [], set()
    args = iter(cmd[1:])
    for arg in args:
        if arg == "-A":
            defines.add(next(args))
        else:
            options.append(arg)
    return options, defines


def test_the_edge_unit_runs_kamailio_as_the_run_command_does():
    config = parse_config(CONFIG)
    expected = run_edge.kamailio_command("/opt/e2ae-edge/deploy/kamailio.cfg", "/run/e2ae-edge", config,
                                         plugin="/opt/e2ae-edge/plugin/kemi.py",
                                         rpc_socket=config.plugin_rpc_socket)
    unit = _exec_start()
    assert _split(unit) == _split(expected)
    assert unit[unit.index("-m") + 1] == str(run_edge.SHM_MB)


def test_every_define_of_the_edge_unit_is_one_kamailio_cfg_reads():
    cfg = (REPO / "deploy" / "kamailio.cfg").read_text()
    read = set(re.findall(r"^#!ifn?def (\w+)", cfg, re.M)) | set(re.findall(r"\b(E2AE_\w+)\b", cfg.split(
        "####### Global parameters")[1]))
    _, defines = _split(_exec_start())
    names = {d.split("=", 1)[0] for d in defines}
    assert names <= read, names - read
