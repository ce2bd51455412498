"""A libsrtp stream's packet indices: the SRTP rollover counter and the SRTCP index (RFC 3711 3.3.1, 3.4).

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

The SRTCP index (RFC 3711 section 3.4) has no such functions: libsrtp keeps
the index of the last SRTCP packet a stream protected in its ``rtcp_rdb``
(``srtp_rdb_t.window_start``; ``srtp_protect_rtcp`` increments it and sends the
new value, so the first packet carries 1) and exports no getter or setter.  A
restored sender that starts again at 1 under the same master key reuses
keystream (section 9.2 forbids it) and the peer's replay list drops it.  This
module reaches the field through libsrtp's exported ``srtp_get_stream`` and the
layout of ``srtp_stream_ctx_t`` of libsrtp 2.7 (``include/srtp_priv.h``),
declared below.  The layout is checked once at import against what libsrtp
does (:func:`_check_layout`: a stream that protected three SRTCP packets must
read 3 there, and its next packet must carry the index written there); if it
does not hold, :data:`SRTCP_INDEX` is False and both functions do nothing
(the index then restarts at 1 after a restore, as before).
"""

from __future__ import annotations

import os
import sys

import cffi
import pylibsrtp._binding as _binding

_ffi = cffi.FFI()
_ffi.cdef("""
int srtp_get_stream_roc(void *session, uint32_t ssrc, uint32_t *roc);
int srtp_set_stream_roc(void *session, uint32_t ssrc, uint32_t roc);
const char *srtp_get_version_string(void);
void *srtp_get_stream(void *session, uint32_t ssrc_network_order);

/* libsrtp 2.7: crypto/include/rdbx.h, rdb.h, datatypes.h; include/srtp_priv.h (the head of it) */
typedef struct { uint64_t index; struct { uint32_t length; uint32_t *word; } bitmask; } e2ae_rdbx_t;
typedef union { uint8_t v8[16]; uint16_t v16[8]; uint32_t v32[4]; uint64_t v64[2]; } e2ae_v128_t;
typedef struct { uint32_t window_start; e2ae_v128_t bitmask; } e2ae_rdb_t;
typedef struct {
    uint32_t ssrc;
    void *session_keys;
    unsigned int num_master_keys;
    e2ae_rdbx_t rtp_rdbx;
    int rtp_services;
    e2ae_rdb_t rtcp_rdb;
} e2ae_stream_head_t;
""")
_lib = _ffi.dlopen(_binding.__file__)
_SRTP_OK = 0
MAX_SRTCP_INDEX = 0x7FFFFFFF  # RFC 3711 3.4: 31 bits (libsrtp refuses to protect past it: key expired)


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


def _htonl(value: int) -> int:
    """``value`` as a uint32 in network byte order (how libsrtp keeps a stream's SSRC)."""
    return int.from_bytes(value.to_bytes(4, "big"), sys.byteorder)


def _stream_head(session, ssrc: int):
    """libsrtp's stream of ``ssrc`` in ``session`` (its head, as declared above), or None."""
    stream = _lib.srtp_get_stream(_handle(session), _htonl(ssrc))
    if stream == _ffi.NULL:
        return None
    return _ffi.cast("e2ae_stream_head_t *", stream)


def _get_srtcp_index(session, ssrc: int) -> int | None:
    head = _stream_head(session, ssrc)
    return None if head is None else int(head.rtcp_rdb.window_start)


def _check_layout() -> bool:
    """Does the declared layout hold for the libsrtp pylibsrtp loaded (see the module docstring)?"""
    from pylibsrtp import Policy, Session

    if not _ffi.string(_lib.srtp_get_version_string()).startswith(b"libsrtp2 2."):
        return False
    ssrc = 0x5EC0DE01
    key = os.urandom(30)
    tx = Session(Policy(key=key, ssrc_type=Policy.SSRC_SPECIFIC, ssrc_value=ssrc))
    rx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    rtcp = bytes([0x80, 201, 0, 1]) + ssrc.to_bytes(4, "big")
    for _ in range(3):
        rx.unprotect_rtcp(tx.protect_rtcp(rtcp))
    head = _stream_head(tx, ssrc)
    if head is None or head.ssrc != _htonl(ssrc) or head.rtcp_rdb.window_start != 3:
        return False
    head.rtcp_rdb.window_start = 1000
    packet = tx.protect_rtcp(rtcp)
    index = int.from_bytes(packet[len(rtcp):len(rtcp) + 4], "big") & MAX_SRTCP_INDEX  # AES-CM: E|index, then tag
    try:
        rx.unprotect_rtcp(packet)
    except Exception:
        return False
    return index == 1001 and _get_srtcp_index(tx, ssrc) == 1001


try:
    SRTCP_INDEX = _check_layout()
except Exception:  # pragma: no cover - another libsrtp than the one pylibsrtp 1.0 bundles
    SRTCP_INDEX = False


def layout_warning() -> str | None:
    """What an operator must be told when the SRTCP index cannot be read or set here, else None."""
    if SRTCP_INDEX:
        return None
    return ("the loaded libsrtp is not the one whose stream layout mediad declares: after a restart or a "
            "takeover, SRTCP indices restart at 1 under the same keys (RFC 3711 9.2 forbids it; the WIC "
            "drops the RTCP as replayed); install the pinned pylibsrtp")


def get_srtcp_index(session, ssrc: int) -> int | None:
    """The SRTCP index of the last packet the stream protected (0: none yet); None: no such stream."""
    return _get_srtcp_index(session, ssrc) if SRTCP_INDEX else None


def set_srtcp_index(session, ssrc: int, index: int) -> bool:
    """Make the stream's next SRTCP packet carry ``index + 1``; False: no such stream (or unsupported)."""
    if not SRTCP_INDEX or not 0 <= index < MAX_SRTCP_INDEX:
        return False
    head = _stream_head(session, ssrc)
    if head is None:
        return False
    head.rtcp_rdb.window_start = index
    return True
