"""Clients of mediad's control endpoint (the Iq interface, see ``mediad.io.control``).

:class:`IqClient` is blocking, for the Kamailio plugin whose worker processes
have no event loop.  It keeps one connection (opened on first use, and again
in a forked child: a connection is never shared between processes), runs the
handshake of ``mediad.proto.controlwire`` on it once, then sends one request at a
time and reads its reply.  No request waits longer than ``timeout`` in all
(connecting and the handshake included); on timeout the connection is closed
(a late reply must not answer the next request) and
:class:`~sdp_rules.errors.UnavailableError` is raised.  A kept connection
that fails under a request is replaced once and the request sent again on
the new one, within the same time (mediad answers a
request it already served from its idempotency cache): that is also how a
connection mediad closed (a restart) is found and replaced, at no cost to
the requests that find their connection alive.  A refused handshake
(the secrets differ) answers an :class:`IqReply` with ``error_code`` 401, so
the caller may read the secret again.  Unreachable: ``UnavailableError``.

:meth:`IqClient.send` sends a request without waiting for its reply (the
release at a dialog's end: the worker goes on at once).  Its reply is read
with the next request's, or before the next send; the caller gets back, from
:meth:`IqClient.take_failed`, the ``context`` of every such request that
mediad refused (an error other than 404, "nothing held") or whose connection
was lost before its reply came (it may or may not have been served: the
caller sends it again, and a release is idempotent).  At most
``MAX_UNANSWERED`` are in flight: one more waits for the oldest replies.  A
connection mediad closed is found before the send (a read that does not
wait), so a request is not written into a dead connection.

:class:`AsyncIqClient` does the same on asyncio for tests and tools, with one
connection per request.  Both only accept the reply whose dialog and
transaction match the request (or an error reply with no dialog).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

from sdp_rules.errors import UnavailableError
from iq import IqReply, IqRequest

from mediad.proto.iqcodec import E_BAD_MAC, E_UNKNOWN_DIALOG, decode_reply, encode_request
from mediad.proto.controlwire import MAX_PAYLOAD, Authenticated, ClientConnection, Message, ProtocolError, Refused

RECV_SIZE = 65536  # one read (a reply larger than this takes several)
MAX_UNANSWERED = 64  # requests sent without waiting whose replies have not come yet


_NONE = object()


def _address(address) -> tuple[str, int]:
    if isinstance(address, str):
        host, _, port = address.rpartition(":")
        return (host.strip("[]"), int(port))
    if hasattr(address, "as_tuple"):
        return address.as_tuple()
    return (address[0], int(address[1]))


def _secret(secret: bytes | str) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def _matches(reply: IqReply, request: IqRequest) -> bool:
    if reply.dialog == request.dialog and reply.transaction == request.transaction:
        return True
    return reply.error_code is not None and reply.dialog == ""


def _refused(request: IqRequest, event: Refused) -> IqReply:
    """A refusal as the reply the caller gets: 401 for a secret mismatch, else unavailable."""
    if event.code == E_BAD_MAC:
        return IqReply(request.dialog, request.transaction, error=f"control channel refused: {event.reason}",
                       error_code=E_BAD_MAC)
    raise UnavailableError(f"mediad refused the control connection: {event.code} {event.reason}")


class SecretRefused(UnavailableError):
    """:meth:`IqClient.send`: mediad refused the connection's proof of the control secret (401)."""


class _Lost(Exception):
    """The connection closed or broke before the reply came."""


class _Late(Exception):
    """The deadline passed."""


class _RefusedError(Exception):
    """mediad refused the connection (an ERROR frame), or did not prove the secret."""

    def __init__(self, event: Refused) -> None:
        super().__init__(event.reason)
        self.event = event


class IqClient:
    """Blocking client; one TCP connection, opened lazily (safe to create before a fork)."""

    def __init__(self, address, secret: bytes | str, timeout: float = 0.5, retry_after: int = 5) -> None:
        self.address = _address(address)
        self.secret = _secret(secret)
        self.timeout = timeout
        self.retry_after = retry_after
        self._sock: socket.socket | None = None
        self._wire: ClientConnection | None = None
        self._pid = 0
        self._buffer: bytearray | None = None  # reads land here (no large allocation per read)
        # Requests sent without waiting: (dialog, transaction) -> the caller's context; and
        # the contexts of those refused or lost, for take_failed.
        self._unanswered: dict[tuple[str, str], object] = {}
        self._failed: list = []

    @classmethod
    def from_config(cls, config, component=None) -> "IqClient":
        """Client for ``config`` (a mediad.config.Config); an empty secret is read from Redis
        as ``component`` (a mediad.redis_keys.Component; default: the plugin)."""
        from mediad.redis_client import settings
        from mediad.redis_keys import Component
        from mediad.state import read_control_secret_sync

        secret = config.mediad_control_secret or read_control_secret_sync(
            settings(config, component or Component.PLUGIN))
        return cls(config.mediad_control, secret, config.plugin_iq_timeout_ms / 1000.0, config.plugin_retry_after)

    def request(self, iq: IqRequest) -> IqReply:
        def transfer(payload: bytes, deadline: float, fresh: bool) -> IqReply:
            sock, wire = self._connection()
            sock.sendall(wire.send(payload))
            return self._reply(iq, deadline)

        return self._exchange(iq, transfer, _refused)

    def send(self, iq: IqRequest, context: object) -> None:
        """Send ``iq`` and return without its reply (module docstring); ``context`` comes
        back from :meth:`take_failed` if mediad refuses it or its connection is lost.
        UnavailableError (nothing sent) when mediad cannot be reached."""
        def transfer(payload: bytes, deadline: float, fresh: bool) -> None:
            if not fresh:
                self._poll()
            while len(self._unanswered) >= MAX_UNANSWERED:
                self._settle(self._receive(deadline))
            sock, wire = self._connection()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Late()
            sock.settimeout(remaining)
            sock.sendall(wire.send(payload))
            self._unanswered[(iq.dialog, iq.transaction)] = context

        def refused(iq: IqRequest, event) -> None:
            _refused(iq, event)  # raises UnavailableError but for a 401
            raise SecretRefused("mediad refused the control secret", self.retry_after) from None

        self._exchange(iq, transfer, refused)

    def _exchange(self, iq: IqRequest, transfer, refused):
        """``transfer`` of ``iq``'s frame on the kept connection (a new one when there is
        none, or once more when a kept one broke under it), the failures mapped to the
        edge's errors; ``refused`` answers mediad's refusal of the connection."""
        payload = encode_request(iq)
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"an Iq request of {len(payload)} bytes is over the limit of {MAX_PAYLOAD}")
        deadline = time.monotonic() + self.timeout
        for attempt in (1, 2):
            fresh = self._sock is None or self._pid != os.getpid()
            try:
                if fresh:
                    self._connect(deadline)
                return transfer(payload, deadline, fresh)
            except _RefusedError as exc:
                self.close()
                return refused(iq, exc.event)
            except (_Late, socket.timeout):
                self.close()
                raise UnavailableError(f"mediad did not answer within {self.timeout:.3f}s", self.retry_after) from None
            except (_Lost, OSError) as exc:
                self.close()
                if fresh or attempt == 2 or time.monotonic() >= deadline:
                    reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or "connection lost"
                    raise UnavailableError(f"mediad unreachable: {reason}", self.retry_after) from None
                # a kept connection broke under the request: once more on a new one
        raise AssertionError("unreachable")  # pragma: no cover

    def take_failed(self) -> list:
        """The contexts of the requests sent without waiting that were refused or lost (and forget them)."""
        failed, self._failed = self._failed, []
        return failed

    @property
    def unanswered(self) -> int:
        """Requests sent without waiting whose replies have not been read yet."""
        return len(self._unanswered)

    def _poll(self) -> None:
        """Read what mediad has sent already, without waiting: replies to requests sent
        without waiting, or the end of a connection mediad closed (_Lost)."""
        sock, _ = self._connection()
        buffer = self._recv_buffer()
        sock.settimeout(0.0)
        while True:
            try:
                size = sock.recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                return
            if not size:
                raise _Lost("mediad closed the connection")
            self._settle(self._events(size))

    def _settle(self, events: list) -> None:
        """Take the replies to requests sent without waiting out of ``events``."""
        for event in events:
            if type(event) is Message:
                try:
                    reply = decode_reply(event.payload)
                except ValueError as exc:
                    raise _Lost(str(exc)) from None
                self._answered(reply)

    def _answered(self, reply: IqReply) -> bool:
        """Whether ``reply`` answers a request sent without waiting (noting it if refused)."""
        context = self._unanswered.pop((reply.dialog, reply.transaction), _NONE)
        if context is _NONE:
            return False
        if reply.error_code not in (None, E_UNKNOWN_DIALOG):
            self._failed.append(context)
        return True

    def _connect(self, deadline: float) -> None:
        self.close()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Late()
        sock = socket.create_connection(self.address, timeout=remaining)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            wire = ClientConnection(self.secret)
            self._sock, self._wire, self._pid = sock, wire, os.getpid()
            sock.sendall(wire.hello())
            while True:
                for event in self._receive(deadline):
                    if type(event) is Authenticated:
                        return
        except BaseException:
            self.close()
            raise

    def _receive(self, deadline: float) -> list:
        """The events of the next bytes mediad sends; raises _Late, _Lost, _RefusedError."""
        sock, _ = self._connection()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Late()
        sock.settimeout(remaining)
        size = sock.recv_into(self._recv_buffer())
        if not size:
            raise _Lost("mediad closed the connection")
        return self._events(size)

    def _events(self, size: int) -> list:
        _, wire = self._connection()
        events = wire.receive_data(bytes(memoryview(self._recv_buffer())[:size]))
        for event in events:
            if type(event) is Refused:
                raise _RefusedError(event)
            if type(event) is ProtocolError:
                raise _Lost(f"control protocol error: {event.message}")
        return events

    def _connection(self) -> tuple[socket.socket, ClientConnection]:
        """The kept connection and its wire; _Lost when there is none (closed meanwhile)."""
        if self._sock is None or self._wire is None:
            raise _Lost("no connection")
        return self._sock, self._wire

    def _recv_buffer(self) -> bytearray:
        """Where reads land: one buffer per client, made at its first read."""
        if self._buffer is None:
            self._buffer = bytearray(RECV_SIZE)
        return self._buffer

    def _reply(self, iq: IqRequest, deadline: float) -> IqReply:
        while True:
            events = self._receive(deadline)
            for i, event in enumerate(events):
                if type(event) is Message:
                    try:
                        reply = decode_reply(event.payload)
                    except ValueError as exc:
                        raise _Lost(str(exc)) from None
                    if _matches(reply, iq):
                        self._settle(events[i + 1:])  # replies read with it
                        return reply
                    self._answered(reply)

    def close(self) -> None:
        if self._unanswered:  # their replies are lost with the connection
            self._failed.extend(self._unanswered.values())
            self._unanswered.clear()
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._wire = None


class AsyncIqClient:
    """asyncio client with the same behaviour as :class:`IqClient`, one connection per request."""

    def __init__(self, address, secret: bytes | str, timeout: float = 2.0) -> None:
        self.address = _address(address)
        self.secret = _secret(secret)
        self.timeout = timeout

    async def request(self, iq: IqRequest) -> IqReply:
        try:
            return await asyncio.wait_for(self._request(iq), self.timeout)
        except asyncio.TimeoutError:
            raise UnavailableError(f"mediad did not answer within {self.timeout:.3f}s") from None
        except (OSError, _Lost) as exc:
            raise UnavailableError(f"mediad unreachable: {exc}") from None

    async def _request(self, iq: IqRequest) -> IqReply:
        reader, writer = await asyncio.open_connection(*self.address)
        try:
            wire = ClientConnection(self.secret)
            writer.write(wire.hello())
            sent = False
            while True:
                data = await reader.read(RECV_SIZE)
                if not data:
                    raise _Lost("mediad closed the connection")
                for event in wire.receive_data(data):
                    if type(event) is Refused:
                        return _refused(iq, event)
                    if type(event) is ProtocolError:
                        raise _Lost(event.message)
                    if type(event) is Authenticated and not sent:
                        writer.write(wire.send(encode_request(iq)))
                        sent = True
                    elif type(event) is Message:
                        reply = decode_reply(event.payload)
                        if _matches(reply, iq):
                            return reply
        finally:
            writer.close()
