"""The project's exception tree.

``E2aeError`` is the root.  ``PeerError`` means the other side sent something
we cannot accept (it carries the SIP status and a reason for the ``Warning``
header); ``UsageError`` means the project itself was misused (a bug or a bad
configuration); ``UnavailableError`` means a part we depend on (mediad, Redis)
cannot be reached and the request may be retried later (503 + Retry-After);
``AgwError`` means mediad (the AGW) answered with an error or with a reply the
ALG cannot use: a defect on our side, never the peer's (500 + Warning).
"""

from __future__ import annotations


class E2aeError(Exception):
    """Root of every error raised by e2ae edge."""


class PeerError(E2aeError):
    """The peer sent something we cannot accept; answer with ``sip_status``."""

    sip_status = 488

    def __init__(self, reason: str, sip_status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if sip_status is not None:
            self.sip_status = sip_status


class SdpParseError(PeerError, ValueError):
    """Malformed SDP: names the line number and the offending token."""

    def __init__(self, lineno: int, token: str, message: str) -> None:
        self.lineno = lineno
        self.token = token
        super().__init__(f"SDP line {lineno}: {message} (at {token!r})", 488)


class SdpPolicyError(PeerError):
    """Well-formed SDP that the e2ae rules cannot accept (488 by default)."""


class UsageError(E2aeError):
    """We were misused: a bug, or an impossible configuration."""


class AgwError(E2aeError):
    """mediad answered with an error, or with a reply the ALG cannot use (500)."""

    sip_status = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnavailableError(E2aeError):
    """mediad or Redis is unreachable or timed out: answer 503 with Retry-After."""

    sip_status = 503

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
