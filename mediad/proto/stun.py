"""The AGW's ICE-lite responder toward access (ICE-1, ICE-2).

Implements the STUN server side an ICE-lite agent needs: RFC 8445 sections 2.5
(lite implementations), 7.3 (responding to connectivity checks) and 8.2
(nomination by the controlling agent), on RFC 5389 Binding messages with
short-term credentials (section 10.1), and RFC 7675 consent freshness.  STUN
encoding, MESSAGE-INTEGRITY and FINGERPRINT come from ``aioice.stun``.

Theory of operation
-------------------
:meth:`IceLiteResponder.handle` takes one datagram (already classified as STUN,
RFC 7983) and its source address, and returns the bytes to send back to that
address, or ``None``:

* a Binding request whose USERNAME is ``<local ufrag>:<remote ufrag>`` and whose
  MESSAGE-INTEGRITY checks with the local password gets a success response with
  XOR-MAPPED-ADDRESS (the source address), MESSAGE-INTEGRITY and FINGERPRINT;
* a request without USERNAME or MESSAGE-INTEGRITY gets 400 (Bad Request), a
  wrong USERNAME or integrity 401 (Unauthorized), both unsigned (RFC 5389
  section 10.1.2); these are counted in ``rejected``;
* Binding indications (keepalives) are absorbed silently;
* anything else (garbage, responses, other methods) is dropped and counted in
  ``dropped``.  Nothing raises.

A lite agent is always controlled; a peer that also claims the controlled role
is answered all the same (RFC 8445 section 6.1.1 makes a full agent controlling
toward a lite one, so there is nothing a lite agent could repair).

Selection.  A valid check with USE-CANDIDATE nominates its source address
(``selected_address``, ``nominated`` set); before any nomination the first
valid check's address is used, so media can flow with aggressive or missing
nomination.

Consent (RFC 7675).  Consent for the selected address is refreshed by every
valid check from that address.  A full agent sends consent checks about every
5 s; this responder reads "consent expired" as "no valid check from the
selected address for ``consent_timeout`` seconds" (RFC 7675 section 5.1 uses
30 s).  Before the first valid check there is no consent and nothing expires:
:meth:`consent_expired` is False and :meth:`has_consent` is False.
"""

from __future__ import annotations

import base64
import logging
import secrets
import string
import struct

from aioice import stun

logger = logging.getLogger("mediad.stun")

ICE_CHARS = string.ascii_letters + string.digits + "+/"  # RFC 8445 section 15.1 ice-char
STUN_MAGIC_COOKIE = stun.COOKIE


def random_ice_credentials() -> tuple[str, str]:
    """A fresh ``(ufrag, pwd)``: 8 and 24 ice-chars (RFC 8445 section 5.3: >= 24 and 128 bits).

    The base64 alphabet is exactly the 64 ice-chars, so base64 of random bytes is
    a uniform choice of 6 bits per character: 48 bits of ufrag, 144 of pwd (one
    ``urandom`` call instead of one per character: this runs on every reserve).
    """
    text = base64.b64encode(secrets.token_bytes(24)).decode("ascii")
    return text[:8], text[8:]


class IceLiteResponder:
    """Answers the STUN connectivity checks of one access termination."""

    def __init__(
        self,
        local_ufrag: str,
        local_pwd: str,
        remote_ufrag: str | None = None,
        remote_pwd: str | None = None,
        consent_timeout: float = 30.0,
    ) -> None:
        self.local_ufrag = local_ufrag
        self._local_key = local_pwd.encode("utf-8")
        self.remote_ufrag = remote_ufrag
        self._remote_pwd = remote_pwd
        self.consent_timeout = consent_timeout
        self.selected_address: tuple[str, int] | None = None
        self.nominated = False
        self.last_consent: float | None = None
        self.dropped = 0
        self.rejected = 0
        self.answered = 0

    def set_remote_credentials(self, ufrag: str | None, pwd: str | None) -> None:
        """The peer's ice-ufrag / ice-pwd, once its SDP is known."""
        self.remote_ufrag = ufrag
        self._remote_pwd = pwd

    def handle(self, datagram: bytes, addr: tuple[str, int], now: float) -> bytes | None:
        """Answer one STUN datagram from ``addr``; None when nothing is to be sent."""
        if len(datagram) < stun.HEADER_LENGTH or datagram[0] > 3:
            return self._drop("not STUN")
        try:
            message = stun.parse_message(datagram)
        except (ValueError, struct.error, IndexError) as exc:
            return self._drop(f"malformed STUN: {exc}")
        if int.from_bytes(datagram[4:8], "big") != STUN_MAGIC_COOKIE:
            return self._drop("no magic cookie (RFC 3489 STUN)")
        if message.message_method != stun.Method.BINDING:
            return self._drop(f"STUN method {message.message_method.name}")
        if message.message_class == stun.Class.INDICATION:
            return None
        if message.message_class != stun.Class.REQUEST:
            return self._drop("STUN response to an ICE-lite agent")
        return self._answer_request(message, addr, now)

    def forget(self, addr: tuple[str, int]) -> None:
        """The candidate pair at ``addr`` is gone (a closed ICE-TCP connection): deselect it.

        The next valid check selects again, as before the first one.
        """
        if self.selected_address == addr:
            self.selected_address = None
            self.nominated = False
            self.last_consent = None

    def consent_expired(self, now: float) -> bool:
        """True when the selected address sent no valid check for ``consent_timeout`` seconds."""
        return self.last_consent is not None and now - self.last_consent >= self.consent_timeout

    def has_consent(self, now: float) -> bool:
        """Whether media may be sent to ``selected_address`` now (RFC 7675 section 5.1)."""
        return self.last_consent is not None and not self.consent_expired(now)

    def __repr__(self) -> str:
        return f"IceLiteResponder(ufrag={self.local_ufrag!r}, selected={self.selected_address})"

    def _answer_request(self, request: stun.Message, addr: tuple[str, int], now: float) -> bytes:
        username = request.attributes.get("USERNAME")
        if username is None or "MESSAGE-INTEGRITY" not in request.attributes:
            return self._error(request, 400, "Bad Request")
        local, sep, remote = username.partition(":")
        if not sep or local != self.local_ufrag or (self.remote_ufrag is not None and remote != self.remote_ufrag):
            return self._error(request, 401, "Unauthorized")
        if not request.check_message_integrity(self._local_key):
            return self._error(request, 401, "Unauthorized")
        self._valid_check(addr, "USE-CANDIDATE" in request.attributes, now)
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        response.add_message_integrity(self._local_key)
        self.answered += 1
        return bytes(response)

    def _valid_check(self, addr: tuple[str, int], use_candidate: bool, now: float) -> None:
        if use_candidate and (addr != self.selected_address or not self.nominated):
            logger.debug("ICE-lite %s: nominated %s", self.local_ufrag, addr)
            self.selected_address = addr
            self.nominated = True
            self.last_consent = now
        elif self.selected_address is None:
            self.selected_address = addr
        if addr == self.selected_address:
            self.last_consent = now

    def _error(self, request: stun.Message, code: int, reason: str) -> bytes:
        self.rejected += 1
        logger.debug("ICE-lite %s: answering %d %s", self.local_ufrag, code, reason)
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.ERROR,
            transaction_id=request.transaction_id,
        )
        response.attributes["ERROR-CODE"] = (code, reason)
        response.add_fingerprint()
        return bytes(response)

    def _drop(self, why: str) -> None:
        self.dropped += 1
        logger.debug("ICE-lite %s: dropped a datagram: %s", self.local_ufrag, why)
        return None
