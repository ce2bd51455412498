"""Clients of mediad's control endpoint (the Iq interface, see ``mediad.control``).

:class:`IqClient` is blocking, for the Kamailio plugin whose worker processes
have no event loop: it sends the request, waits half the timeout, retransmits
once (mediad answers a retransmission from its idempotency cache), waits the
rest, and raises :class:`~sdp_rules.errors.UnavailableError` on timeout or
when the port is closed (ICMP port unreachable).  :class:`AsyncIqClient` does
the same on asyncio, for tests and tools.  Both only accept the reply whose
dialog and transaction match the request (or an error reply with no dialog).
"""

from __future__ import annotations

import asyncio
import socket
import time

from sdp_rules.errors import UnavailableError
from sdp_rules.iq import IqReply, IqRequest

from mediad.control import decode_reply, encode_request

RECV_SIZE = 65535


def _address(address) -> tuple[str, int]:
    if isinstance(address, str):
        host, _, port = address.rpartition(":")
        return (host, int(port))
    if hasattr(address, "as_tuple"):
        return address.as_tuple()
    return (address[0], int(address[1]))


def _secret(secret: bytes | str) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def _matches(reply: IqReply, request: IqRequest) -> bool:
    if reply.dialog == request.dialog and reply.transaction == request.transaction:
        return True
    return reply.error_code is not None and reply.dialog == ""


class IqClient:
    """Blocking client; one UDP socket, opened lazily (safe to create before a fork)."""

    def __init__(self, address, secret: bytes | str, timeout: float = 0.5, retry_after: int = 5) -> None:
        self.address = _address(address)
        self.secret = _secret(secret)
        self.timeout = timeout
        self.retry_after = retry_after
        self._sock: socket.socket | None = None

    @classmethod
    def from_config(cls, config) -> "IqClient":
        """Client for ``config`` (a mediad.config.Config); an empty secret is read from Redis."""
        from mediad.state import read_control_secret_sync

        secret = config.mediad_control_secret or read_control_secret_sync(config.redis_url_with_password)
        return cls(config.mediad_control, secret, config.plugin_iq_timeout_ms / 1000.0, config.plugin_retry_after)

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect(self.address)
            self._sock = sock
        return self._sock

    def request(self, iq: IqRequest) -> IqReply:
        data = encode_request(self.secret, iq)
        sock = self._socket()
        deadline = time.monotonic() + self.timeout
        retransmit_at = time.monotonic() + self.timeout / 2
        retransmitted = False
        try:
            sock.send(data)
            while True:
                now = time.monotonic()
                if not retransmitted and now >= retransmit_at:
                    sock.send(data)
                    retransmitted = True
                wait = (deadline if retransmitted else retransmit_at) - now
                if wait <= 0:
                    break
                sock.settimeout(wait)
                try:
                    raw = sock.recv(RECV_SIZE)
                except socket.timeout:
                    continue
                try:
                    reply = decode_reply(raw)
                except ValueError:
                    continue
                if _matches(reply, iq):
                    return reply
        except OSError as exc:  # ECONNREFUSED from an ICMP port unreachable, ...
            self.close()
            raise UnavailableError(f"mediad unreachable: {exc.strerror or exc}", self.retry_after) from None
        raise UnavailableError(f"mediad did not answer within {self.timeout:.3f}s", self.retry_after)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _ReplyProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue()

    def datagram_received(self, data, addr) -> None:  # type: ignore[override]
        self.queue.put_nowait(data)

    def error_received(self, exc) -> None:  # type: ignore[override]
        self.queue.put_nowait(exc)


class AsyncIqClient:
    """asyncio client with the same behaviour as :class:`IqClient`."""

    def __init__(self, address, secret: bytes | str, timeout: float = 2.0) -> None:
        self.address = _address(address)
        self.secret = _secret(secret)
        self.timeout = timeout

    async def request(self, iq: IqRequest) -> IqReply:
        return await self.request_raw(encode_request(self.secret, iq), iq)

    async def request_raw(self, data: bytes, iq: IqRequest | None = None) -> IqReply:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(_ReplyProtocol, remote_addr=self.address)
        try:
            deadline = loop.time() + self.timeout
            for attempt in range(2):
                transport.sendto(data)
                until = deadline if attempt else loop.time() + self.timeout / 2
                while True:
                    wait = until - loop.time()
                    if wait <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(protocol.queue.get(), wait)
                    except asyncio.TimeoutError:
                        break
                    if isinstance(item, Exception):
                        raise UnavailableError(f"mediad unreachable: {item}")
                    try:
                        reply = decode_reply(item)
                    except ValueError:
                        continue
                    if iq is None or _matches(reply, iq):
                        return reply
        finally:
            transport.close()
        raise UnavailableError(f"mediad did not answer within {self.timeout:.3f}s")
