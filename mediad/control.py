"""The control endpoint: the Iq interface carried over UDP on loopback.

Wire format (one JSON object per datagram, UTF-8):

* request: ``{"iq": IqRequest.to_dict(), "mac": hex(HMAC-SHA256(secret, canonical(iq)))}``
  where ``canonical`` is ``json.dumps(iq, sort_keys=True, separators=(",", ":"))``;
* reply: ``IqReply.to_dict()``; on failure ``error`` and ``error_code`` are set:
  400 malformed, 401 bad MAC, 404 unknown dialog, 501 unsupported stream kind,
  503 no ports left, 500 internal error.

Theory of operation: :func:`decode_request` checks size, JSON, MAC (constant
time) and the Iq schema, raising :class:`ControlError` with the code to
answer.  A datagram framed as :func:`encode_request` frames it (the canonical
iq as sent, then the MAC) is checked on those bytes as they are, without
parsing and re-serialising the whole request; any other framing, or a MAC
that does not check, takes the general path (parse, ``canonical``, compare),
so every error is answered as before.  :class:`ControlProtocol` is the asyncio shell: every datagram becomes
a task that awaits the handler (the daemon's session manager) and sends the
reply back to the source address.  A datagram from a non-loopback address is
ignored, and so is a request beyond ``MAX_PENDING`` in progress.  Idempotency (same dialog + transaction → same answer) is the
handler's business, because the cache lives with the dialog's state.  The
handler serves the requests of one dialog one at a time, in their order of
arrival, with :class:`DialogLocks` (requests of different dialogs go on
concurrently): a retransmission waits for its original and then finds the
answer in the cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import time
from typing import Any, Awaitable, Callable

from sdp_rules.errors import E2aeError
from sdp_rules.iq import IqReply, IqRequest

log = logging.getLogger("mediad.control")

MAX_DATAGRAM = 65507
MAX_PENDING = 1024  # requests being served at once; more are dropped (the client retransmits)

E_MALFORMED = 400
E_BAD_MAC = 401
E_UNKNOWN_DIALOG = 404
E_INTERNAL = 500
E_UNSUPPORTED = 501
E_NO_RESOURCES = 503


class ControlError(E2aeError):
    """A control request that gets an error reply with ``code``."""

    def __init__(self, code: int, message: str, dialog: str = "", transaction: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.dialog = dialog
        self.transaction = transaction

    def reply(self) -> IqReply:
        return IqReply(self.dialog, self.transaction, error=self.message, error_code=self.code)


# Made once: json.dumps with options builds an encoder on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def canonical(iq: dict[str, Any]) -> bytes:
    return _CANONICAL.encode(iq).encode()


def sign(secret: bytes, iq: dict[str, Any]) -> str:
    return hmac.new(secret, canonical(iq), hashlib.sha256).hexdigest()


_IQ_HEAD = b'{"iq":'
_MAC_HEAD = b',"mac":"'
_MAC_TAIL = b'"}'
_MAC_HEX = 2 * hashlib.sha256().digest_size


def encode_request(secret: bytes, request: IqRequest) -> bytes:
    # The canonical form is itself the iq's JSON: serialised once, signed and sent as is.
    body = canonical(request.to_dict())
    mac = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return _IQ_HEAD + body + _MAC_HEAD + mac.encode() + _MAC_TAIL


def encode_reply(reply: IqReply | dict[str, Any]) -> bytes:
    """The reply datagram, from an :class:`IqReply` or its ``to_dict()`` already made."""
    data = reply if isinstance(reply, dict) else reply.to_dict()
    return _COMPACT.encode(data).encode()


def decode_reply(data: bytes) -> IqReply:
    try:
        return IqReply.from_dict(json.loads(data))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed Iq reply: {exc}") from None


def decode_request(secret: bytes, data: bytes) -> IqRequest:
    """Check and parse one request datagram; raise ControlError (400/401)."""
    iq = _signed_as_sent(secret, data)
    if iq is None:
        iq = _signed_canonical(secret, data)
    return _request(iq)


def _signed_as_sent(secret: bytes, data: bytes) -> dict[str, Any] | None:
    """The iq of a datagram framed as encode_request frames it, if its MAC checks on the bytes sent.

    Those bytes are what the sender signed: the canonical iq.  None sends the
    datagram down the general path (other framing, bad MAC, not an object).
    """
    mac_at = len(data) - len(_MAC_TAIL) - _MAC_HEX
    body_end = mac_at - len(_MAC_HEAD)
    if (body_end <= len(_IQ_HEAD) or not data.startswith(_IQ_HEAD) or not data.endswith(_MAC_TAIL)
            or data[body_end:mac_at] != _MAC_HEAD):
        return None
    body = data[len(_IQ_HEAD):body_end]
    if not hmac.compare_digest(data[mac_at:-len(_MAC_TAIL)], hmac.new(secret, body, hashlib.sha256).hexdigest().encode()):
        return None
    try:
        iq = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
        return None
    return iq if isinstance(iq, dict) else None


def _signed_canonical(secret: bytes, data: bytes) -> dict[str, Any]:
    """The general path: parse the request, check the MAC over the re-serialised canonical iq."""
    try:
        outer = json.loads(data)
    except (ValueError, RecursionError):
        raise ControlError(E_MALFORMED, "request is not JSON") from None
    if not isinstance(outer, dict) or not isinstance(outer.get("iq"), dict):
        raise ControlError(E_MALFORMED, "request must be an object with an 'iq' object")
    iq = outer["iq"]
    mac = outer.get("mac")
    if not isinstance(mac, str) or not hmac.compare_digest(mac.encode(), sign(secret, iq).encode()):
        raise ControlError(E_BAD_MAC, "missing or bad mac", *_names(iq))
    return iq


def _names(iq: dict[str, Any]) -> tuple[str, str]:
    """(dialog, transaction) to answer an error with."""
    return str(iq.get("dialog", ""))[:256], str(iq.get("transaction", ""))[:256]


def _request(iq: dict[str, Any]) -> IqRequest:
    """The IqRequest of an authenticated iq; ControlError 400 when it breaks the schema."""
    dialog, transaction = _names(iq)
    try:
        request = IqRequest.from_dict(iq)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ControlError(E_MALFORMED, str(exc)[:300], dialog, transaction) from None
    if not request.dialog or not request.transaction:
        raise ControlError(E_MALFORMED, "dialog and transaction must not be empty", dialog, transaction)
    return request


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


class ControlProtocol(asyncio.DatagramProtocol):
    """asyncio shell of the control endpoint."""

    def __init__(self, secret: bytes, handler: Handler, metrics) -> None:
        self.secret = secret
        self.handler = handler
        self.metrics = metrics
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task] = set()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        host = addr[0]
        if not host.startswith("127."):  # the kernel writes IPv4 dotted quads: 127/8 is loopback
            try:
                if not ipaddress.ip_address(host).is_loopback:
                    self.metrics.control("unknown", "401", 0.0)
                    return
            except ValueError:
                return
        if len(self.tasks) >= MAX_PENDING:
            self.metrics.control("unknown", "503", 0.0)
            return
        task = asyncio.get_running_loop().create_task(self._serve(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(self, data: bytes, addr) -> None:
        started = time.perf_counter()
        command = "unknown"
        try:
            if len(data) > MAX_DATAGRAM:
                raise ControlError(E_MALFORMED, "request too large")
            request = decode_request(self.secret, data)
            command = request.command.value
            reply = await self.handler(request)
        except ControlError as exc:
            reply = exc.reply()
        except Exception:  # the endpoint must answer and survive whatever happens
            log.exception("control request failed")
            reply = IqReply("", "", error="internal error", error_code=E_INTERNAL)
        code = reply["error_code"] if isinstance(reply, dict) else reply.error_code
        self.metrics.control(command, "ok" if code is None else str(code), time.perf_counter() - started)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(encode_reply(reply), addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        for task in list(self.tasks):
            task.cancel()
