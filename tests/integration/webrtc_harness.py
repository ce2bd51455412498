"""Real browsers against the edge: Chromium (playwright-core), the core registrar, a core UA.

* :class:`~deploy.demo_core.CoreRegistrar` and :class:`~deploy.demo_core.CoreUa`:
  the core (a registrar with Path, a plain RTP user agent), shared with the demo.
* :class:`Browser`: Debian's Chromium driven by ``web/driver.mjs`` (playwright-core,
  never a downloaded browser), headless, on the web phone's pages from
  ``web/build`` served on 127.0.0.1; :meth:`Browser.eval` runs JS in the page.

Everything is started by the test inside the loopback-only network namespace of
``chromium_peer.private_loopback_netns``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from deploy.demo_core import CORE_UA_HOST, DOMAIN, CoreRegistrar, CoreUa, RtpCount
from tests.conftest import REPO
from tests.integration.chromium_peer import CHROMIUM, CHROMIUM_FLAGS
from tests.integration.edge_harness import stop_process

WEB = REPO / "web"
WEB_BUILD = WEB / "build"


def web_ready() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is not installed (Debian package chromium)"
    if not shutil.which("node"):
        return "node is not installed"
    if not (WEB / "node_modules" / "playwright-core").is_dir() or not (WEB_BUILD / "jssip_phone.js").exists():
        return "the web phone is not built (deploy/e2ae setup)"
    return None


# ---------------------------------------------------------------------------
# The core: a registrar with Path, and a user agent
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# Chromium with playwright-core
# ---------------------------------------------------------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class PageServer:
    """``web/build`` over HTTP on 127.0.0.1 (a secure context: getUserMedia works)."""

    def __init__(self, directory: Path = WEB_BUILD) -> None:
        handler = functools.partial(_Quiet, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, name="web-phone-pages", daemon=True).start()

    def url(self, page: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{page}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium (``web/driver.mjs``) on one page; :meth:`eval` runs JS there."""

    def __init__(self, url: str, *, spki: str | None = None, extra_args: list[str] | None = None) -> None:
        args = [a for a in CHROMIUM_FLAGS if a != "--headless"]
        if spki:
            args.append(f"--ignore-certificate-errors-spki-list={spki}")
        args += extra_args or []
        options = {"executablePath": CHROMIUM, "args": args, "url": url}
        self.dir = Path(tempfile.mkdtemp(prefix="e2ae-browser-"))
        self.stderr = open(self.dir / "driver.log", "wb")
        self.proc = subprocess.Popen(["node", str(WEB / "driver.mjs"), json.dumps(options)], cwd=WEB,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     start_new_session=True)
        self._ids = 0
        self.lock = threading.Lock()
        first = self._readline(60)
        if not first.get("ready"):
            raise BrowserError(f"the browser did not start: {first} {self.log()}")

    def _readline(self, timeout: float) -> dict:
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            raise BrowserError(f"no answer from the browser in {timeout:.0f} s: {self.log()}")
        return json.loads(result[0])

    def command(self, timeout: float = 60, **cmd) -> object:
        with self.lock:
            self._ids += 1
            cmd["id"] = self._ids
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
            while True:
                answer = self._readline(timeout)
                if answer.get("id") == cmd["id"]:
                    break
        if "error" in answer:
            raise BrowserError(answer["error"])
        return answer.get("value")

    def eval(self, expression: str, timeout: float = 60) -> object:
        return self.command(timeout, eval=expression)

    def screenshot(self, path: str) -> str:
        return self.command(screenshot=path)

    def console(self) -> list[str]:
        return self.command(console=True)

    def log(self) -> str:
        try:
            return (self.dir / "driver.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_process(self.proc)
        try:
            os.killpg(self.proc.pid, 9)  # Chromium's helpers share the driver's process group
        except (ProcessLookupError, PermissionError):
            pass
        self.stderr.close()
        if not os.environ.get("E2AE_KEEP_LOGS"):
            shutil.rmtree(self.dir, ignore_errors=True)


__all__ = ["Browser", "BrowserError", "CoreRegistrar", "CoreUa", "DOMAIN", "PageServer", "RtpCount",
           "CORE_UA_HOST", "NamedNetns", "web_ready"]


# ---------------------------------------------------------------------------
# Named network namespaces (a NAT between a client and the edge)
# ---------------------------------------------------------------------------

CLONE_NEWNET = 0x40000000


class NamedNetns:
    """``ip netns add NAME`` (removed by :meth:`delete`); :meth:`enter` moves the calling
    thread into it for a ``with`` block (threads and processes started there stay there)."""

    def __init__(self, name: str) -> None:
        self.name = name
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.run("ip", "link", "set", "lo", "up")

    def run(self, *argv: str) -> str:
        out = subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True, timeout=20)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {self.name}: {out.stderr.strip()}")
        return out.stdout

    @contextlib.contextmanager
    def enter(self):
        libc = ctypes.CDLL(None, use_errno=True)
        previous = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self.name}")
            try:
                yield self
            finally:
                if libc.setns(previous, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back")
        finally:
            os.close(target)
            os.close(previous)

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=20)
