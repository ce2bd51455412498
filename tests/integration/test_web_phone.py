"""The README's web phone: ``deploy/e2ae run`` (its Python part) prints an HTTPS URL;
Chromium opens it, registers over WSS, calls the demo tone and reads the page's status.

Everything runs in a loopback-only network namespace of its own (so the run command's
shipped ports, 5060, 8080, 8443, 8088, cannot meet another test's): Redis, mediad,
Kamailio with the shipped ``deploy/e2ae.conf`` sockets, the demo core (a registrar
with Path on the core next hop, the tone behind it), the web phone's HTTPS pages, and
headless Chromium (playwright-core) pinning the printed certificate.  The test clicks
the page's own buttons and reads its own status table, as a person would, and takes
the README's screenshot mid-call (``E2AE_SCREENSHOT=path``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.chromium_peer import private_loopback_netns
from tests.integration.webrtc_harness import Browser, web_ready

pytestmark = [pytest.mark.integration, pytest.mark.skipif(web_ready() is not None, reason=str(web_ready()))]

PYTHON = str(REPO / ".venv" / "bin" / "python")


def _status(browser: Browser) -> dict:
    return browser.eval("Object.fromEntries([...document.querySelectorAll('#status tr')].map("
                        "r => [r.querySelector('th').textContent, r.querySelector('td').textContent]))")


def _wait_status(browser: Browser, key: str, pattern: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    status = _status(browser)
    while not re.search(pattern, status[key]) and time.monotonic() < deadline:
        time.sleep(0.2)
        status = _status(browser)
    assert re.search(pattern, status[key]), status
    return status


@pytest.mark.timeout(150)
def test_run_prints_the_web_phone_url_and_chromium_calls_the_tone_from_it():
    work = Path(tempfile.mkdtemp(prefix="e2ae-webphone-"))
    out: list[str] = []
    with private_loopback_netns():
        proc = subprocess.Popen([PYTHON, "-m", "deploy.run_edge", "--rundir", str(work / "run")], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, E2AE_CONFIG=str(REPO / "deploy" / "e2ae.conf")))
        reader = threading.Thread(target=lambda: out.extend(l.decode(errors="replace") for l in proc.stdout),
                                  daemon=True)
        reader.start()
        browser = None
        try:
            deadline = time.monotonic() + 90
            while not any("Ctrl-C stops everything" in line for line in out) and time.monotonic() < deadline:
                assert proc.poll() is None, "".join(out)
                time.sleep(0.1)
            text = "".join(out)
            # "edge ready" names every ws:// and wss:// URL, and the page.
            assert "ws://127.0.0.1:8080" in text and "wss://127.0.0.1:8443" in text, text
            assert "tcp:127.0.0.1:5060" in text and "tls:127.0.0.1:5061" in text, text
            url = re.search(r"web phone\s+(https://\S+)", text).group(1)
            spki = re.search(r"--ignore-certificate-errors-spki-list=(\S+) ", text).group(1)
            browser = Browser(url, spki=spki)
            # The page fills its form from config.json; a person only clicks.
            browser.eval("new Promise(r => setTimeout(r, 300))")
            form = browser.eval("[server.value, uri.value, target.value]")
            assert form == ["wss://127.0.0.1:8443", "sip:alice@e2ae.test", "sip:tone@e2ae.test"], form
            browser.eval("document.getElementById('register').click()")
            status = _wait_status(browser, "Registration", r"^registered \(\d+ ms\)")
            browser.eval("document.getElementById('call').click()")
            status = _wait_status(browser, "Call", r"^established \(\d+ ms\)")
            status = _wait_status(browser, "Packets received", r"^([5-9]\d|\d{3,})$")
            status = _wait_status(browser, "Audio level", r"^0\.(0[5-9]|[1-9])")
            assert status["DTLS"].startswith("connected"), status
            assert status["ICE"] == "connected", status
            assert int(status["Packets sent"]) >= 50, status
            print("web phone:", status)
            if os.environ.get("E2AE_SCREENSHOT"):
                browser.screenshot(os.environ["E2AE_SCREENSHOT"])
            browser.eval("document.getElementById('hangup').click()")
            _wait_status(browser, "Call", r"^ended")
        finally:
            if browser is not None:
                browser.close()
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                status_code = proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                status_code = None
            reader.join(5)
    text = "".join(out)
    assert status_code == 0, text[-4000:]
    assert "[e2ae] stopped" in text
