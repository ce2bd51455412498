"""rtpengine, the reference relay, run in userspace on loopback and driven over NG.

Theory of operation
-------------------
:class:`Rtpengine` starts ``rtpengine`` in the foreground with no
configuration file, no kernel forwarding (``--table=-1``), one interface on
127.0.0.1 (or the logical interfaces it is given, ``NAME/ADDRESS``), the NG control protocol on a free UDP port, timeouts long enough
that no call ends during a run, and ``--delete-delay=0`` so deleted calls free
their ports at once.  Thread count is rtpengine's default.

:class:`NgClient` speaks the NG protocol: ``cookie SP bencoded-dict`` per UDP
datagram, the reply echoing the cookie (bencode codec in ``bench.bencode``).

A benchmark stream is one call with two sides: side A is the generator (it
sends to the port rtpengine answered to A), side B is the sink (rtpengine
sends to the address in B's SDP).  The SRTP side uses SDES (RFC 4568):

* ``srtp_rtp``: A offers RTP/SAVP with ``a=crypto`` (the generator's key),
  rtpengine offers plain RTP/AVP to B; rtpengine decrypts A's SRTP.
* ``rtp_srtp``: A offers RTP/AVP, rtpengine offers RTP/SAVP with its keys to
  B, B answers with the AES_CM_128_HMAC_SHA1_80 suite; rtpengine encrypts
  toward B with the key of its offer, which the sink uses to verify.

After an overload rtpengine stops reading a socket until its call is deleted,
so the runner re-creates the calls before every ramp (:meth:`create_streams`
after :meth:`delete_streams`).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass

from bench import bencode, procs

SUITE = "AES_CM_128_HMAC_SHA1_80"
DIRECTIONS = ("srtp_rtp", "rtp_srtp")
_CRYPTO = re.compile(r"^a=crypto:(\d+) (\S+) inline:([A-Za-z0-9+/=]+)", re.M)
_MEDIA = re.compile(r"^m=audio (\d+) ", re.M)
_CONN = re.compile(r"^c=IN IP4 (\S+)", re.M)


class NgError(RuntimeError):
    """rtpengine answered an NG command with an error, or did not answer."""


def binary() -> str | None:
    return shutil.which("rtpengine") or (os.path.exists("/usr/bin/rtpengine") and "/usr/bin/rtpengine") or None


def version() -> str:
    exe = binary()
    if exe is None:
        return "not installed"
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rtpengine-daemon"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    return out or "unknown"


class NgClient:
    def __init__(self, address: tuple[str, int], timeout: float = 2.0) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(address)
        self.timeout = timeout

    def request(self, command: dict) -> dict:
        cookie = secrets.token_hex(6)
        data = cookie.encode() + b" " + bencode.encode(command)
        for _ in range(3):
            self.sock.send(data)
            self.sock.settimeout(self.timeout)
            try:
                while True:
                    raw = self.sock.recv(65535)
                    head, _, body = raw.partition(b" ")
                    if head.decode(errors="replace") == cookie:
                        break
            except socket.timeout:
                continue
            except OSError as exc:
                raise NgError(f"rtpengine NG unreachable: {exc}") from None
            reply = bencode.decode(body)
            if reply.get("result") not in ("ok", "pong"):
                raise NgError(f"rtpengine {command.get('command')}: {reply.get('error-reason', reply)}")
            return reply
        raise NgError(f"rtpengine did not answer {command.get('command')!r}")

    def close(self) -> None:
        self.sock.close()


@dataclass
class RelayStream:
    call_id: str
    from_tag: str
    dst: tuple[str, int]  # where the generator sends
    tx_key: str | None  # hex key+salt the generator protects with (srtp_rtp)
    rx_key: str | None  # hex key+salt the sink verifies with (rtp_srtp)


def _sdp(address: str, port: int, proto: str, crypto: str | None = None) -> str:
    lines = [
        "v=0", f"o=- {secrets.randbelow(10**9)} 1 IN IP4 {address}", "s=e2ae-bench", f"c=IN IP4 {address}",
        "t=0 0", f"m=audio {port} {proto} 0", "a=rtpmap:0 PCMU/8000", "a=sendrecv",
    ]
    if crypto:
        lines.append(crypto)
    return "\r\n".join(lines) + "\r\n"


def _media(sdp: str) -> tuple[str, int]:
    conn, media = _CONN.search(sdp), _MEDIA.search(sdp)
    if not conn or not media:
        raise NgError("rtpengine SDP without c= or m=audio")
    return conn.group(1), int(media.group(1))


def _key_hex(inline: str) -> str:
    raw = base64.b64decode(inline.split("|")[0])
    if len(raw) != 30:
        raise NgError(f"unexpected SDES key length {len(raw)}")
    return raw.hex()


class Rtpengine:
    """One rtpengine process (userspace only) and its NG client."""

    def __init__(self, workdir: str, cpu: int | None, port_min: int = 46000, port_max: int = 53999,
                 interfaces: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.workdir = workdir
        self.interfaces = interfaces
        self.cpu = cpu
        self.port_min, self.port_max = port_min, port_max
        self.ng_port = procs.free_udp_port()
        self.proc: subprocess.Popen | None = None
        self.ng: NgClient | None = None
        self.log_path = os.path.join(workdir, "rtpengine.log")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        exe = binary()
        if exe is None:
            raise NgError("rtpengine is not installed (Debian package rtpengine-daemon)")
        return [
            exe, "--config-file=none", "--foreground", "--log-stderr", "--log-level=4",
            "--table=-1", *(f"--interface={i}" for i in self.interfaces), f"--listen-ng=127.0.0.1:{self.ng_port}",
            f"--port-min={self.port_min}", f"--port-max={self.port_max}",
            "--timeout=3600", "--silent-timeout=3600", "--offer-timeout=3600", "--final-timeout=0",
            "--delete-delay=0",
        ]

    def start(self, timeout: float = 10.0) -> None:
        self.proc = procs.start(self.argv(), self.cpu, self.log_path)
        self.ng = NgClient(("127.0.0.1", self.ng_port), timeout=0.5)
        ok = procs.wait_until(self._ping, timeout, 0.1)
        if not ok:
            self.stop()
            raise NgError(f"rtpengine did not start; see {self.log_path}")
        self.ng.timeout = 2.0

    def _ping(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return True  # reported by the caller's check below
        try:
            return self.ng.request({"command": "ping"}).get("result") == "pong"  # type: ignore[union-attr]
        except NgError:
            return False

    def stop(self) -> None:
        if self.ng is not None:
            self.ng.close()
            self.ng = None
        procs.stop(self.proc)

    # -- calls -------------------------------------------------------------------
    def create_stream(self, direction: str, gen: tuple[str, int], sink: tuple[str, int]) -> RelayStream:
        assert self.ng is not None
        call_id, from_tag, to_tag = (secrets.token_hex(8) for _ in range(3))
        tx_key = rx_key = None
        if direction == "srtp_rtp":
            raw = secrets.token_bytes(30)
            tx_key = raw.hex()
            crypto = f"a=crypto:1 {SUITE} inline:{base64.b64encode(raw).decode()}"
            offer_sdp, want = _sdp(gen[0], gen[1], "RTP/SAVP", crypto), "RTP/AVP"
        elif direction == "rtp_srtp":
            offer_sdp, want = _sdp(gen[0], gen[1], "RTP/AVP"), "RTP/SAVP"
        else:
            raise ValueError(f"unknown direction {direction!r}")
        offer = self.ng.request({
            "command": "offer", "call-id": call_id, "from-tag": from_tag, "sdp": offer_sdp,
            "transport-protocol": want, "ICE": "remove", "DTLS": "off", "flags": ["no-rtcp-attribute"],
        })
        answer_proto, answer_crypto = "RTP/AVP", None
        if direction == "rtp_srtp":
            for tag, suite, inline in _CRYPTO.findall(offer["sdp"]):
                if suite == SUITE:
                    rx_key = _key_hex(inline)
                    own = base64.b64encode(secrets.token_bytes(30)).decode()
                    answer_proto, answer_crypto = "RTP/SAVP", f"a=crypto:{tag} {SUITE} inline:{own}"
                    break
            else:
                raise NgError(f"rtpengine offered no {SUITE}")
        answer = self.ng.request({
            "command": "answer", "call-id": call_id, "from-tag": from_tag, "to-tag": to_tag,
            "sdp": _sdp(sink[0], sink[1], answer_proto, answer_crypto), "ICE": "remove", "DTLS": "off",
        })
        return RelayStream(call_id, from_tag, _media(answer["sdp"]), tx_key, rx_key)

    def create_streams(self, n: int, direction: str, gen: tuple[str, int],
                       sink: tuple[str, int]) -> list[RelayStream]:
        return [self.create_stream(direction, gen, sink) for _ in range(n)]

    def delete_streams(self, streams: list[RelayStream]) -> None:
        assert self.ng is not None
        for s in streams:
            try:
                self.ng.request({"command": "delete", "call-id": s.call_id, "from-tag": s.from_tag})
            except NgError:
                pass  # already gone
