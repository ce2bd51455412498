"""The web phone's pages over HTTPS: ``web/build`` (bundled by ``deploy/e2ae setup``) and
``config.json``, which tells the page the edge's WebSocket URL and whom to call.

The server uses the edge's TLS certificate (:mod:`deploy.sip_tls`), so a browser
that accepts it for the page accepts it for the ``wss://`` socket too (same host,
same certificate).  ``getUserMedia`` needs a secure context: HTTPS, or plain HTTP
on 127.0.0.1.
"""

from __future__ import annotations

import functools
import http.server
import json
import ssl
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEB_BUILD = ROOT / "web" / "build"


class _Handler(http.server.SimpleHTTPRequestHandler):
    config_json = b"{}"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.split("?", 1)[0] == "/config.json":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.config_json)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(self.config_json)
            return
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


def page_config(config, domain: str, user: str = "alice", target: str = "tone") -> dict:
    """What the page fills its form with: the first wss:// (else ws://) URL of the edge."""
    server = ""
    for option, scheme in (("edge_access_wss", "wss"), ("edge_access_ws", "ws")):
        sock = getattr(config, option)
        if sock is not None:
            server = f"{scheme}://{sock.public.host}:{sock.public.port}"
            break
    return {"server": server, "uri": f"sip:{user}@{domain}", "target": f"sip:{target}@{domain}"}


class WebPhoneServer:
    """``web/build`` and ``config.json`` on ``address``: HTTPS with ``certificate``/``key``, else HTTP."""

    def __init__(self, address: tuple[str, int], settings: dict, *, certificate: Path | None = None,
                 key: Path | None = None, directory: Path = WEB_BUILD) -> None:
        if not (directory / "index.html").exists():
            raise FileNotFoundError(f"{directory}/index.html: the web phone is not built (deploy/e2ae setup)")
        handler = type("Handler", (_Handler,), {"config_json": json.dumps(settings).encode()})
        self.httpd = http.server.ThreadingHTTPServer(address, functools.partial(handler, directory=str(directory)))
        self.scheme = "http"
        if certificate is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(certificate), str(key))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="web-phone", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{self.scheme}://{host}:{port}/"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


__all__ = ["WebPhoneServer", "page_config", "WEB_BUILD"]
