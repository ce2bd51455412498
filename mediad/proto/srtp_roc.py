"""The SRTP rollover counter of a libsrtp stream (RFC 3711 section 3.3.1), read and set.

A restored SRTP session (a restarted mediad, or a survivor taking over a dead
node's dialogs) must continue each stream at the packet index it had reached:
the index is ROC * 65536 + SEQ, and a stream that wrapped its sequence number
before the restart has ROC >= 1.  libsrtp 2.x keeps the ROC per stream and
exports ``srtp_get_stream_roc`` and ``srtp_set_stream_roc`` (RFC 4771's use
case), but pylibsrtp's cffi module does not declare them.  This module
declares the two functions against the very shared object pylibsrtp loaded
(``dlopen`` of an already loaded file returns the same handle), so they act on
the ``srtp_t`` of pylibsrtp's sessions; no second libsrtp is involved.

Their semantics in libsrtp 2.7 (``srtp/srtp.c``): ``srtp_get_stream_roc`` is the
ROC of the stream's RTP replay database (0 until its first packet);
``srtp_set_stream_roc`` only records a *pending* ROC: the stream's next RTP
packet, in either direction, takes exactly that ROC with its own sequence
number (no ROC-1/ROC+1 guess), resets the replay window there and clears the
pending value.  Both fail with ``srtp_err_status_bad_param`` when the session
has no stream for the SSRC yet: create it first (``Session.add_stream`` with an
``SSRC_SPECIFIC`` policy).
"""

from __future__ import annotations

import cffi
import pylibsrtp._binding as _binding

_ffi = cffi.FFI()
_ffi.cdef("""
int srtp_get_stream_roc(void *session, uint32_t ssrc, uint32_t *roc);
int srtp_set_stream_roc(void *session, uint32_t ssrc, uint32_t roc);
""")
_lib = _ffi.dlopen(_binding.__file__)
_SRTP_OK = 0


def _handle(session) -> object:
    """The ``srtp_t`` of a pylibsrtp ``Session``, as this module's cffi sees it."""
    return _ffi.cast("void *", int(_binding.ffi.cast("uintptr_t", session._srtp[0])))


def get_stream_roc(session, ssrc: int) -> int | None:
    """The stream's ROC, or None if ``session`` has no stream for ``ssrc``."""
    out = _ffi.new("uint32_t *")
    if _lib.srtp_get_stream_roc(_handle(session), ssrc, out) != _SRTP_OK:
        return None
    return int(out[0])


def set_stream_roc(session, ssrc: int, roc: int) -> bool:
    """Make the stream's next packet use ``roc``; False if ``session`` has no stream for ``ssrc``."""
    return _lib.srtp_set_stream_roc(_handle(session), ssrc, roc) == _SRTP_OK
