"""The control endpoint: the Iq interface over authenticated TCP connections.

Each connection runs the wire protocol of ``mediad.proto.controlwire`` (frames,
handshake, per-connection keys, sequence numbers); each DATA message carries
one JSON Iq request or reply, read and written by the pure codec of
``mediad.proto.iqcodec`` (which holds the error codes too).

Theory of operation: :class:`ControlEndpoint` is
the asyncio shell: it listens on the configured address, gives each
connection a :class:`ControlConnection` (an ``asyncio.Protocol`` around a
``controlwire.ServerConnection``) and closes connections that do not
authenticate within ``HANDSHAKE_TIMEOUT`` or leave a frame half sent for
``FRAME_TIMEOUT``.  Every authenticated request becomes a task that awaits
the handler (the daemon's session manager) and writes the reply on its
connection; a client that goes away does not cancel it (a request is applied
whole or not at all).  Beyond ``MAX_PENDING`` requests in progress a request
is answered 503 at once; beyond ``MAX_CONNECTIONS`` a connection is refused
(ERROR 503).  What the protocol refuses (garbage, a wrong secret, a replayed
or forged frame) is counted by reason and logged at info level, never with a
traceback.  Idempotency (same dialog + transaction → same answer) is the
handler's business, because the cache lives with the dialog's state.  The
handler serves the requests of one dialog one at a time, in their order of
arrival, with :class:`DialogLocks` (requests of different dialogs go on
concurrently): a request resent on a new connection after its first one was
lost waits for its original and then finds the answer in the cache.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any, Awaitable, Callable

from iq import IqReply, IqRequest

from mediad.proto import controlwire
from mediad.proto.controlwire import Authenticated, Message, ProtocolError, ServerConnection
from mediad.proto.iqcodec import E_INTERNAL, E_MALFORMED, E_NO_RESOURCES, ControlError, decode_request, encode_reply

log = logging.getLogger("mediad.control")

MAX_PENDING = 1024  # requests being served at once; more are answered 503
MAX_CONNECTIONS = 1024  # open control connections; more are refused
HANDSHAKE_TIMEOUT = 3.0  # seconds from accept to an authenticated connection
FRAME_TIMEOUT = 5.0  # seconds a frame may stay half received
SWEEP_PERIOD = 1.0

# The handler answers an IqReply, or its to_dict() when it has made that already (the daemon
# caches it): the reply is then serialised once.
Handler = Callable[[IqRequest], Awaitable["IqReply | dict[str, Any]"]]


class DialogLocks:
    """One FIFO lock per dialog id, kept only while a request holds or awaits it.

    ``async with locks.hold(dialog): ...``
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def hold(self, dialog: str) -> "_Entry":
        entry = self._entries.get(dialog)
        if entry is None:
            entry = self._entries[dialog] = _Entry(self._entries, dialog)
        return entry


class _Entry:
    __slots__ = ("entries", "dialog", "lock", "users")

    def __init__(self, entries: dict[str, "_Entry"], dialog: str) -> None:
        self.entries = entries
        self.dialog = dialog
        self.lock = asyncio.Lock()
        self.users = 0

    async def __aenter__(self) -> None:
        self.users += 1
        try:
            await self.lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc) -> None:
        self.lock.release()
        self._leave()

    def _leave(self) -> None:
        self.users -= 1
        if self.users == 0 and self.entries.get(self.dialog) is self:
            del self.entries[self.dialog]


class ControlEndpoint:
    """The listening side: connections, limits, timeouts, the handler."""

    def __init__(self, secret: bytes, handler: Handler, metrics) -> None:
        self.secret = secret
        self.handler = handler
        self.metrics = metrics
        self.connections: set[ControlConnection] = set()
        self.tasks: set[asyncio.Task] = set()
        self.server: asyncio.AbstractServer | None = None
        self.sweeper: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def listen(self, host: str, port: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.server = await self.loop.create_server(lambda: ControlConnection(self), host, port,
                                                    reuse_address=True, backlog=512)
        self.sweeper = self.loop.call_later(SWEEP_PERIOD, self._sweep)

    def _sweep(self) -> None:
        """Close connections that do not authenticate in time, or stall inside a frame."""
        now = asyncio.get_running_loop().time()  # a callback of the loop that start() took
        for connection in list(self.connections):
            connection.check(now)
        self.sweeper = self.loop.call_later(SWEEP_PERIOD, self._sweep)

    def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        if self.server is not None:
            self.server.close()
            self.server = None
        for connection in list(self.connections):
            connection.abort()
        for task in list(self.tasks):
            task.cancel()

    def rejected(self, reason: str, message: str, peer) -> None:
        self.metrics.control_rejected(reason)
        log.info("control connection from %s closed: %s (%s)", peer, reason, message[:200])


class ControlConnection(asyncio.Protocol):
    """One control connection: bytes in, requests to the handler, replies out."""

    def __init__(self, endpoint: ControlEndpoint) -> None:
        self.endpoint = endpoint
        self.wire = ServerConnection(endpoint.secret)
        self.transport: asyncio.Transport | None = None
        self.peer = None
        self.opened_at = 0.0
        self.partial_since: float | None = None  # when a frame began to arrive only in part

    def connection_made(self, transport) -> None:  # type: ignore[override]
        endpoint = self.endpoint
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        self.opened_at = endpoint.loop.time() if endpoint.loop else 0.0
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:
                pass
        if len(endpoint.connections) >= MAX_CONNECTIONS:
            self.wire.refuse(E_NO_RESOURCES, "too many control connections")
            self._flush()
            endpoint.rejected("busy", "too many control connections", self.peer)
            return
        endpoint.connections.add(self)
        endpoint.metrics.control_connections.set(len(endpoint.connections))

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        endpoint = self.endpoint
        endpoint.connections.discard(self)
        endpoint.metrics.control_connections.set(len(endpoint.connections))
        self.transport = None

    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        wire = self.wire
        for event in wire.receive_data(data):
            if type(event) is Message:
                self._request(event.payload)
            elif type(event) is ProtocolError:
                self.endpoint.rejected(event.reason.value, event.message, self.peer)
            elif type(event) is Authenticated:
                log.debug("control connection from %s authenticated", self.peer)
        if wire.buffered:
            if self.partial_since is None and self.endpoint.loop is not None:
                self.partial_since = self.endpoint.loop.time()
        else:
            self.partial_since = None
        self._flush()

    def eof_received(self) -> bool:  # type: ignore[override]
        return False  # close our side too

    def check(self, now: float) -> None:
        """The sweeper's visit: a handshake or a frame that takes too long closes the connection."""
        wire = self.wire
        if wire.closed:
            return
        if wire.state is not controlwire.State.OPEN and now - self.opened_at > HANDSHAKE_TIMEOUT:
            reason, message = "handshake_timeout", "not authenticated in time"
        elif self.partial_since is not None and now - self.partial_since > FRAME_TIMEOUT:
            reason, message = "stalled", "a frame left half sent"
        else:
            return
        wire.refuse(E_MALFORMED, message)
        self._flush()
        self.endpoint.rejected(reason, message, self.peer)

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        out = self.wire.data_to_send()
        if out:
            transport.write(out)
        if self.wire.closed:
            transport.close()
            self.endpoint.connections.discard(self)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _request(self, payload: bytes) -> None:
        endpoint = self.endpoint
        if len(endpoint.tasks) >= MAX_PENDING:
            # Named, so that a client with several requests in flight knows which one it was.
            try:
                request = decode_request(payload)
                command, names = request.command.value, (request.dialog, request.transaction)
            except ControlError as exc:
                command, names = "unknown", (exc.dialog, exc.transaction)
            endpoint.metrics.control(command, "503", 0.0)
            self._reply(IqReply(*names, error="mediad busy", error_code=E_NO_RESOURCES))
            return
        task = asyncio.get_running_loop().create_task(self._serve(payload))
        endpoint.tasks.add(task)
        task.add_done_callback(endpoint.tasks.discard)

    async def _serve(self, payload: bytes) -> None:
        started = time.perf_counter()
        command = "unknown"
        metrics = self.endpoint.metrics
        request: IqRequest | None = None
        try:
            request = decode_request(payload)
            command = request.command.value
            reply = await self.endpoint.handler(request)
        except ControlError as exc:
            if exc.code == E_MALFORMED:
                log.info("control request refused (%s): %s", exc.code, exc.message)
            reply = exc.reply()
        except Exception:  # the endpoint must answer and survive whatever happens
            log.exception("control request failed")
            dialog, transaction = (request.dialog, request.transaction) if request is not None else ("", "")
            reply = IqReply(dialog, transaction, error="internal error", error_code=E_INTERNAL)
        code = reply["error_code"] if isinstance(reply, dict) else reply.error_code
        metrics.control(command, "ok" if code is None else str(code), time.perf_counter() - started)
        self._reply(reply)

    def _reply(self, reply: IqReply | dict[str, Any]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.wire.closed:
            return  # the client went away: the request was served, the answer is lost
        transport.write(self.wire.send(encode_reply(reply)))
