"""The control payload: Iq messages as JSON, and the error codes of a reply.

Each DATA message of the control channel (``mediad.proto.controlwire``)
carries one JSON object: a request is ``IqRequest.to_dict()``, a reply
``IqReply.to_dict()``, with ``error`` and ``error_code`` set on failure (the
codes are in ``docs/mediad.md``, "Error codes": who is wrong, and what the
plugin answers).  Pure functions, no I/O: a payload that is not an Iq request
raises :class:`ControlError` 400, whatever its nesting.  The endpoint that
serves them is ``mediad.io.control``, the client ``mediad.io.client``.
"""

from __future__ import annotations

import json
from typing import Any

from sdp_rules.errors import E2aeError
from iq import IqReply, IqRequest

# The error codes of a reply (docs/mediad.md, "Error codes"): who is wrong decides the SIP answer.
E_MALFORMED = 400  # the request breaks the Iq schema: the ALG's defect (500)
E_BAD_MAC = 401  # not authenticated: the secrets differ (the client reads it again; else 503)
E_UNKNOWN_DIALOG = 404  # no such dialog here (released, expired, lost)
E_PEER = 488  # the peer's media description asks for what mediad cannot do (488)
E_INTERNAL = 500  # mediad's own defect (500)
E_UNSUPPORTED = 501  # a stream kind this mediad does not implement: plugin and mediad differ (500)
E_NO_RESOURCES = 503  # no free ports, or too busy now (503 with Retry-After)


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
_COMPACT = json.JSONEncoder(separators=(",", ":"))
_loads = json.loads


def encode_request(request: IqRequest) -> bytes:
    """The payload of a request message."""
    return _COMPACT.encode(request.to_dict()).encode()


def decode_request(payload: bytes) -> IqRequest:
    """The IqRequest of a request payload; ControlError 400 (with its names when it has them)."""
    try:
        iq = _loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ControlError(E_MALFORMED, "request is not JSON") from None
    except RecursionError:
        raise ControlError(E_MALFORMED, "request is nested too deeply") from None
    if not isinstance(iq, dict):
        raise ControlError(E_MALFORMED, "request must be a JSON object")
    return _request(iq)


def encode_reply(reply: IqReply | dict[str, Any]) -> bytes:
    """The payload of a reply, from an :class:`IqReply` or its ``to_dict()`` already made."""
    data = reply if isinstance(reply, dict) else reply.to_dict()
    return _COMPACT.encode(data).encode()


def decode_reply(payload: bytes) -> IqReply:
    try:
        data = _loads(payload)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return IqReply.from_dict(data)
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise ValueError(f"malformed Iq reply: {exc}") from None


def _names(iq: dict[str, Any]) -> tuple[str, str]:
    """(dialog, transaction) to answer an error with."""
    return str(iq.get("dialog", ""))[:256], str(iq.get("transaction", ""))[:256]


def _request(iq: dict[str, Any]) -> IqRequest:
    """The IqRequest of a decoded iq; ControlError 400 when it breaks the schema."""
    dialog, transaction = _names(iq)
    try:
        request = IqRequest.from_dict(iq)
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as exc:
        raise ControlError(E_MALFORMED, str(exc)[:300], dialog, transaction) from None
    if not request.dialog or not request.transaction:
        raise ControlError(E_MALFORMED, "dialog and transaction must not be empty", dialog, transaction)
    return request
