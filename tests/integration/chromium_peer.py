"""Headless Chromium as a WebRTC client, driven over the DevTools protocol (CDP).

:class:`ChromiumPeer` starts ``/usr/bin/chromium --headless --remote-debugging-port=0``
with a fresh ``--user-data-dir`` and the fake media devices, reads the DevTools
port from ``DevToolsActivePort``, and loads a tiny page served from 127.0.0.1 by
an ``http.server`` thread (``getUserMedia`` needs a secure context: an
``http://127.0.0.1`` page is one, ``about:blank`` is not).  The page defines the
WebRTC steps (:data:`PAGE_SCRIPT`); Python calls them with ``Runtime.evaluate``
(``awaitPromise``) over the page's CDP WebSocket (the ``websockets`` library).

:func:`private_loopback_netns` moves the calling thread into a new network
namespace whose only interface is ``lo`` (127.0.0.0/8 up, IPv6 off); sockets the
thread opens and processes it starts from then on live there, so Chromium can
gather no address but 127.0.0.1.  Needs CAP_SYS_ADMIN (root).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"

# NOTES' flags for a headless WebRTC client on loopback.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
]

CLONE_NEWNET = 0x40000000


# ---------------------------------------------------------------------------
# A network namespace with only lo
# ---------------------------------------------------------------------------

def _set_lo_up() -> None:
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = fcntl.ioctl(s, siocgifflags, struct.pack("16sh", b"lo", 0))
        flags = struct.unpack("16sh", ifreq[:18])[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


@contextlib.contextmanager
def private_loopback_netns() -> Iterator[None]:
    """Run the block in a fresh network namespace with only ``lo`` (IPv4 127.0.0.0/8).

    ``unshare(CLONE_NEWNET)`` applies to the calling thread only; processes and
    threads it starts inherit the namespace.  On exit the thread returns to its
    previous namespace; the new one disappears with the last process in it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    previous = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)} (needs CAP_SYS_ADMIN)")
        try:
            _set_lo_up()
            # Without IPv6 Chromium cannot gather ::1: every candidate is 127.0.0.1.
            with contextlib.suppress(FileNotFoundError):
                Path("/proc/sys/net/ipv6/conf/lo/disable_ipv6").write_text("1")
            yield
        finally:
            if libc.setns(previous, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns back to the original network namespace: {os.strerror(err)}")
    finally:
        os.close(previous)


def interfaces() -> list[str]:
    """Names of the network interfaces the calling thread sees."""
    return sorted(name for _, name in socket.if_nameindex())


# ---------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------

PAGE_SCRIPT = r"""
let pc = null;
let remoteAudio = null;

async function makeOffer() {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: false});
  pc = new RTCPeerConnection();  // default configuration: no ICE servers, bundlePolicy "balanced"
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  pc.ontrack = (event) => {
    // Audio stats show a level only once the remote track plays somewhere.
    remoteAudio = new Audio();
    remoteAudio.srcObject = event.streams[0] || new MediaStream([event.track]);
    remoteAudio.play().catch(() => {});
  };
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== "complete") {
    await new Promise((resolve) => pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    }));
  }
  return pc.localDescription.sdp;
}

async function acceptAnswer(sdp) {
  await pc.setRemoteDescription({type: "answer", sdp: sdp});
  return pc.signalingState;
}

async function waitConnection(timeoutMs) {
  const end = Date.now() + timeoutMs;
  while (!["connected", "failed", "closed"].includes(pc.connectionState) && Date.now() < end) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return pc.connectionState;
}

async function rtpStats() {
  const report = await pc.getStats();
  const out = {connectionState: pc.connectionState, inbound: null, outbound: null, transport: null,
               pair: null, local: null, remote: null, remoteCertificate: null, codecs: {}};
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") out.inbound = s;
    if (s.type === "outbound-rtp" && s.kind === "audio") out.outbound = s;
    if (s.type === "transport") out.transport = s;
    if (s.type === "codec") out.codecs[s.id] = s;
  });
  if (out.transport && out.transport.selectedCandidatePairId) {
    out.pair = report.get(out.transport.selectedCandidatePairId);
    out.local = report.get(out.pair.localCandidateId);
    out.remote = report.get(out.pair.remoteCandidateId);
  }
  if (out.transport && out.transport.remoteCertificateId) {
    out.remoteCertificate = report.get(out.transport.remoteCertificateId);
  }
  return JSON.parse(JSON.stringify(out));
}

function hangUp() {
  if (pc) pc.close();
  return pc ? pc.signalingState : "none";
}
"""

PAGE = ("<!doctype html><meta charset='utf-8'><title>e2ae chromium peer</title>"
        f"<script>{PAGE_SCRIPT}</script>").encode()


class _PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args) -> None:
        pass


# ---------------------------------------------------------------------------
# Chromium over CDP
# ---------------------------------------------------------------------------

class CdpError(RuntimeError):
    pass


class ChromiumPeer:
    """One headless Chromium with one page; :meth:`evaluate` runs JS there and returns its value."""

    def __init__(self, executable: str = CHROMIUM) -> None:
        self.executable = executable
        self.dir = Path(tempfile.mkdtemp(prefix="e2ae-chromium-"))
        self.profile = self.dir / "profile"
        self.log_path = self.dir / "chromium.log"
        self.proc: subprocess.Popen | None = None
        self.httpd: http.server.ThreadingHTTPServer | None = None
        self.ws = None
        self._ids = 0
        self.started_in = 0.0

    async def start(self, timeout: float = 20.0) -> ChromiumPeer:
        t0 = time.monotonic()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
        threading.Thread(target=self.httpd.serve_forever, name="chromium-page", daemon=True).start()
        url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                 "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        port = await self._devtools_port(deadline)
        page = await self._page_target(port, deadline)
        import websockets

        self.ws = await websockets.connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        await self.call("Page.navigate", url=url)
        while await self.evaluate("document.readyState + ' ' + location.href") != f"complete {url}":
            if time.monotonic() > deadline:
                raise CdpError(f"the page {url} did not load")
            await asyncio.sleep(0.05)
        self.started_in = time.monotonic() - t0
        return self

    async def _devtools_port(self, deadline: float) -> int:
        path = self.profile / "DevToolsActivePort"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise CdpError(f"chromium exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                return int(path.read_text().split()[0])
            await asyncio.sleep(0.05)
        raise CdpError(f"no DevToolsActivePort after start: {self.log_tail()}")

    async def _page_target(self, port: int, deadline: float) -> dict:
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/json/list")
                targets = json.loads(conn.getresponse().read())
            except (OSError, ValueError):
                targets = []
            finally:
                conn.close()
            pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
            if pages:
                return pages[0]
            await asyncio.sleep(0.05)
        raise CdpError("no page target")

    async def call(self, method: str, **params: Any) -> dict:
        assert self.ws is not None
        self._ids += 1
        ident = self._ids
        await self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(await self.ws.recv())
            if message.get("id") != ident:
                continue  # an event
            if "error" in message:
                raise CdpError(f"{method}: {message['error']}")
            return message["result"]

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` (a promise is awaited); a JS exception raises CdpError with its text."""
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                                 returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"{expression[:60]}: {text}")
        return result["result"].get("value")

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)
            self.ws = None
        self.stop()

    def stop(self) -> None:
        """Kill Chromium's process group, stop the page server and remove the profile (idempotent)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            # Chromium's helpers (zygote, renderer, GPU, network) share its process group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        if not os.environ.get("E2AE_KEEP_LOGS"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except FileNotFoundError:
            return ""


__all__ = ["CHROMIUM", "CHROMIUM_FLAGS", "CdpError", "ChromiumPeer", "interfaces", "private_loopback_netns"]
