"""mediad under benchmark: a private Redis, one mediad process, sessions over its Iq endpoint.

Theory of operation
-------------------
:class:`MediadUnderTest` starts ``redis-server`` (no persistence, a free
loopback port) and ``python -m mediad --config FILE`` with a configuration
written for the run: control on a free loopback port with a random
secret, access and core ports in ranges of their own, metrics off.  Sessions
go through the production path only: a RESERVE per dialog on the control
endpoint (``mediad.io.client.IqClient``), then a real DTLS handshake per access
port from ``bench.dtls_peer`` whose certificate fingerprint was given in the
request; the SRTP keys come out of those handshakes.  There is no
benchmark-only key path in mediad.

* ``srtp_rtp``: the DTLS client handshakes from the generator's address; the
  generator protects with the client write key and sends to the access port;
  mediad relays plain RTP to the core remote address, the sink.
* ``rtp_srtp``: the DTLS client handshakes from the sink's address (that is
  where mediad sends SRTP: the learned access peer); the generator sends plain
  RTP to the core port; the sink verifies with the server write key.

With ``bundle`` (``python -m bench.run --bundle``) each dialog is a BUNDLE
transport (RFC 9143) carrying two streams, as a WebRTC call's audio and video:
one access port and one handshake per dialog, two core ports, and the
generator's two streams of the dialog share the access port and the SRTP key
under their own SSRCs, which the reserve announces (``a=ssrc``) so that the
transport routes them from the first packet.  The MID header extension is
not negotiated (the sink checks the packets' bytes; with it mediad would add
the MID element toward the WIC).

:func:`available` says whether the parts this needs exist in the tree, so the
runner reports mediad as "not measured" instead of failing when they do not.
"""

from __future__ import annotations

import importlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from bench import procs
from bench.dtls_peer import client_identity, handshake_all

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN_SSRC_BASE = 0x0E2A0000  # bench/gen/e2ae_gen.c: stream i sends SSRC ssrc_base + i
ACCESS_PORTS = (54000, 56999)
CORE_PORTS = (57000, 59999)


def available() -> str | None:
    """None when mediad can be benchmarked, else the reason it cannot."""
    for module in ("mediad.__main__", "mediad.io.client", "iq"):
        try:
            importlib.import_module(module)
        except Exception as exc:  # a module being written may fail in any way
            return f"{module} does not import: {exc.__class__.__name__}: {exc}"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    return None


@dataclass
class MediadStream:
    dialog: str
    dst: tuple[str, int]
    tx_key: str | None
    rx_key: str | None


class MediadUnderTest:
    def __init__(self, workdir: str, cpu: int | None, packet_path: str = "native", bundle: bool = False) -> None:
        self.workdir = workdir
        self.packet_path = packet_path
        self.bundle = bundle
        self.cpu = cpu
        self.redis_port = procs.free_udp_port()
        self.control_port = procs.free_tcp_port()
        self.secret = secrets.token_hex(16)
        self.redis: subprocess.Popen | None = None
        self.proc: subprocess.Popen | None = None
        self.client = None
        self.log_path = os.path.join(workdir, "mediad.log")
        self.config_path = os.path.join(workdir, "mediad-bench.conf")
        self.cert, self.key, self.fingerprint = client_identity()
        self.serial = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> None:
        from mediad.io.client import IqClient

        self.redis = procs.start(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no"], None, os.path.join(self.workdir, "redis.log"))
        with open(self.config_path, "w") as f:
            f.write("\n".join([
                "[mediad]", f"control = 127.0.0.1:{self.control_port}", f"control_secret = {self.secret}",
                "access_address = 127.0.0.1", "core_address = 127.0.0.1",
                f"access_ports = {ACCESS_PORTS[0]}-{ACCESS_PORTS[1]}", f"core_ports = {CORE_PORTS[0]}-{CORE_PORTS[1]}",
                "metrics = off", "log_level = WARNING", "dtls_handshake_timeout = 60",
                f"packet_path = {self.packet_path}",
                "[redis]", f"url = redis://127.0.0.1:{self.redis_port}/0",
            ]) + "\n")
        env = dict(os.environ, PYTHONPATH=REPO)
        self.proc = procs.start([sys.executable, "-m", "mediad", "--config", self.config_path], self.cpu,
                                self.log_path, cwd=REPO, env=env)
        self.client = IqClient(("127.0.0.1", self.control_port), self.secret, timeout=2.0)
        if not procs.wait_until(self._ready, timeout, 0.2):
            self.stop()
            raise RuntimeError(f"mediad did not start; see {self.log_path}")

    def _ready(self) -> bool:
        from sdp_rules.errors import UnavailableError
        from iq import Command, IqRequest

        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"mediad exited; see {self.log_path}")
        try:
            self.client.request(IqRequest(Command.LIST, "bench", "ping"))  # type: ignore[union-attr]
            return True
        except UnavailableError:
            return False

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        procs.stop(self.proc)
        procs.stop(self.redis)

    def _request(self, iq):
        reply = self.client.request(iq)  # type: ignore[union-attr]
        if reply.error_code is not None:
            raise RuntimeError(f"mediad {iq.command.value}: {reply.error_code} {reply.error}")
        return reply

    def reserve(self, peer: tuple[str, int], core_remote: tuple[str, int]) -> tuple[str, tuple[str, int], tuple[str, int]]:
        """One dialog, one audio stream; (dialog, access address, core address)."""
        from iq import Command, Fingerprint, IqRequest, Role, Side, StreamSpec, TerminationSpec

        self.serial += 1
        dialog = f"bench-{self.serial}-{secrets.token_hex(4)}"
        access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", remote_address=peer[0], remote_port=peer[1],
                                 rtcp_mux=True, remote_fingerprints=[Fingerprint("sha-256", self.fingerprint)],
                                 local_fingerprint_request=True, tls_role=Role.SERVER, notify_tls_failure=True)
        core = TerminationSpec(Side.CORE, "RTP/AVP", remote_address=core_remote[0], remote_port=core_remote[1],
                               rtcp_mux=True)
        reply = self._request(IqRequest(Command.RESERVE, dialog, "t1", [StreamSpec(1, "srtp", access, core)]))
        stream = reply.stream(1)
        return (dialog, (stream.access.local_address, stream.access.local_port),
                (stream.core.local_address, stream.core.local_port))

    def reserve_bundle(self, peer: tuple[str, int], core_remote: tuple[str, int],
                       ssrcs: tuple[int, int]) -> tuple[str, tuple[str, int], list[tuple[str, int]]]:
        """One dialog, one transport with two streams (the WIC's SSRCs announced); (dialog, access, cores)."""
        from iq import Command, Fingerprint, IqRequest, Role, Side, StreamSpec, TerminationSpec, TransportSpec

        self.serial += 1
        dialog = f"bench-{self.serial}-{secrets.token_hex(4)}"
        transport = TransportSpec(0, remote_address=peer[0], remote_port=peer[1],
                                  remote_fingerprints=[Fingerprint("sha-256", self.fingerprint)],
                                  local_fingerprint_request=True, tls_role=Role.SERVER, notify_tls_failure=True)
        streams = []
        for n, ssrc in enumerate(ssrcs):
            access = TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=True, payload_types=[0],
                                     ssrcs=[ssrc])
            core = TerminationSpec(Side.CORE, "RTP/AVP", remote_address=core_remote[0], remote_port=core_remote[1],
                                   rtcp_mux=True)
            streams.append(StreamSpec(n, "srtp", access, core, transport_id=0, mid=str(n)))
        reply = self._request(IqRequest(Command.RESERVE, dialog, "t1", streams, transports=[transport]))
        port = reply.transport(0)
        cores = [(reply.stream(n).core.local_address, reply.stream(n).core.local_port) for n in range(len(ssrcs))]
        return dialog, (port.local_address, port.local_port), cores

    def release(self, dialogs: list[str]) -> None:
        from iq import Command, IqRequest

        for dialog in dialogs:
            try:
                self._request(IqRequest(Command.RELEASE, dialog, "t-release"))
            except Exception:
                pass  # already gone; the next start has a clean Redis anyway

    def create_streams(self, n: int, direction: str, gen: tuple[str, int],
                       sink: tuple[str, int], on_reserved=None) -> tuple[list[MediadStream], dict]:
        """Reserve ``n`` dialogs, handshake each; (streams, handshake stats).

        ``on_reserved`` (no arguments) runs once every dialog is reserved and
        before any handshake: the memory figure of reserved sessions.
        """
        peer = gen if direction == "srtp_rtp" else sink
        if self.bundle:
            return self._create_bundles(n, direction, peer, sink, on_reserved)
        reserved = [self.reserve(peer, sink) for _ in range(n)]
        if on_reserved is not None:
            on_reserved()
        keys, seconds = handshake_all(peer, [access for _, access, _ in reserved], self.cert, self.key)
        streams = []
        for dialog, access, core in reserved:
            material = keys[access]
            if direction == "srtp_rtp":
                streams.append(MediadStream(dialog, access, material.client_write.hex(), None))
            else:
                streams.append(MediadStream(dialog, core, None, material.server_write.hex()))
        time.sleep(0.2)  # let mediad settle the established associations (events, Redis writes)
        return streams, {"handshakes": n, "seconds": seconds, "per_second": n / seconds if seconds else None}

    def _create_bundles(self, n: int, direction: str, peer, sink, on_reserved) -> tuple[list[MediadStream], dict]:
        """``n`` generator streams as ``n // 2`` dialogs of two bundled streams (the generator's SSRC of
        stream i is its ``--ssrc-base`` + i)."""
        dialogs = [self.reserve_bundle(peer, sink, (GEN_SSRC_BASE + 2 * d, GEN_SSRC_BASE + 2 * d + 1))
                   for d in range(n // 2)]
        if on_reserved is not None:
            on_reserved()
        keys, seconds = handshake_all(peer, [access for _, access, _ in dialogs], self.cert, self.key)
        streams = []
        for dialog, access, cores in dialogs:
            material = keys[access]
            for core in cores:
                if direction == "srtp_rtp":
                    streams.append(MediadStream(dialog, access, material.client_write.hex(), None))
                else:
                    streams.append(MediadStream(dialog, core, None, material.server_write.hex()))
        time.sleep(0.2)
        return streams, {"handshakes": len(dialogs), "seconds": seconds,
                         "per_second": len(dialogs) / seconds if seconds else None}

    def delete_streams(self, streams: list[MediadStream]) -> None:
        self.release(list(dict.fromkeys(s.dialog for s in streams)))
