"""Builds mediad's native packet path (``mediad/io/_fastpath*.so``) with cffi.

Run ``python -m mediad.io.fastpath_build`` (``deploy/e2ae setup`` does): it needs
gcc and the Python headers; libsrtp is pylibsrtp's own copy, bound at run time.  The C source is
``mediad/io/fastpath.c``; ``mediad.io.fastpath`` explains what it does and why.
"""

from __future__ import annotations

import os
import sys

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))

CDEF = """
typedef struct { int ok; ...; } e2ae_addr;
typedef struct {
    void *tx; void *rx; int srtcp_index_at;
    int max_rx; int nrx; uint32_t rx_ssrc[64]; int nretired; uint32_t retired[64];
} e2ae_srtp;
typedef struct { void *stream; int which; } e2ae_note;
typedef struct { uint64_t head; e2ae_note notes[256]; } e2ae_ring;
typedef struct { uint32_t ssrc; int member; int mid_seq; uint8_t top; } e2ae_route;
typedef struct {
    int mid_ext;
    int nmember;
    void *member[32];
    unsigned char mid[32][32];
    int mid_len[32];
    uint8_t pts[32][16];
    int nroute;
    e2ae_route route[64];
} e2ae_bundle;
typedef struct {
    int fd[4];
    e2ae_srtp *srtp[2];
    e2ae_addr dest[4];
    e2ae_addr peer[2];
    int check_peer;
    int core_latching;
    e2ae_addr core_src[2];
    int core_src_port;
    int nssrc[2];
    uint32_t ssrc[2][64];
    int nheard[2];
    uint32_t heard[2][64];
    uint8_t heard_top[2][64];
    uint8_t ssrc_top[2][64];
    e2ae_ring *ring;
    e2ae_bundle *bundle;
    void *via;
    int nsent;
    uint32_t sent[64];
    int stamp_len;
    unsigned char stamp[264];
    uint64_t access_rx;
    uint64_t *counters;
    uint64_t relayed[2];
} e2ae_stream;
typedef struct {
    int len;
    int family;
    int port;
    unsigned char ip[16];
    unsigned char *data;
} e2ae_pkt;
void e2ae_bind(uintptr_t protect, uintptr_t unprotect, uintptr_t protect_rtcp, uintptr_t unprotect_rtcp);
void e2ae_set_addr(e2ae_addr *a, int family, const unsigned char *ip, int port);
int e2ae_pump(e2ae_stream *s, int which, e2ae_pkt *slow);
#define E2AE_BATCH 32
#define E2AE_COUNTERS 26
#define E2AE_RING 256
#define E2AE_MAX_MEMBERS 32
#define E2AE_MAX_SSRCS 64
#define E2AE_MAX_MID 32
#define E2AE_MAX_STAMP 264
"""


def builder() -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    with open(os.path.join(HERE, "fastpath.c"), encoding="utf-8") as source:
        ffi.set_source(
            "mediad.io._fastpath", source.read(),
            extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
        )
    return ffi


def build() -> str:
    """Compile in place; returns the path of the extension module."""
    parent = os.path.dirname(os.path.dirname(HERE))
    tmpdir = os.path.join(HERE, "__pycache__", "fastpath_build")
    os.makedirs(tmpdir, exist_ok=True)
    built = builder().compile(tmpdir=tmpdir, verbose=False)
    target = os.path.join(HERE, os.path.basename(built))
    os.replace(built, target)
    return os.path.relpath(target, parent)


if __name__ == "__main__":
    print(f"built {build()}", file=sys.stderr)
