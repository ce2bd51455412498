/* e2ae mediad: the native packet path for established DTLS-SRTP streams over UDP.
 *
 * Why native: the Python relay spends ~2 us of interpreter work per packet on
 * top of the kernel's UDP path and pylibsrtp's per-packet allocations; on a
 * 2-core box that is the difference between trailing and beating a C relay.
 * This file is the smallest piece that removes it: one call per readable
 * socket drains it with recvmmsg(2), and each datagram that is established
 * RTP/RTCP of a known peer is transformed in place with libsrtp and sent on.
 *
 * libsrtp is pylibsrtp's own copy (OpenSSL crypto): mediad creates the sessions
 * with pylibsrtp as before and hands their srtp_t and the addresses of
 * srtp_protect & co. to e2ae_bind(), so one session serves both paths and this
 * file needs no libsrtp headers.  (Debian's libsrtp2 is built on NSS, whose
 * per-call locking costs more than the whole relay.)
 * Everything else -- STUN, DTLS, a new source address, latching, a stream that
 * is not (or no longer) established, a destination not yet known -- is left
 * for Python ("slow" packets), which runs the same code as without this file.
 *
 * State: one e2ae_stream per media stream, written only by Python (mediad's
 * fastpath.py, on every change of keys, destinations, peers or ports) and read
 * here.  One thread calls in at a time (the daemon's event loop); the receive
 * buffers are per thread.  Counters are plain integers in a block owned by the
 * daemon's metrics (indices below).
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* libsrtp 2.x ABI: srtp_err_status_t values and the transform signature */
#define SRTP_OK 0
#define SRTP_AUTH_FAIL 7
#define SRTP_REPLAY_FAIL 9
#define SRTP_REPLAY_OLD 10
#define SRTP_MAX_TRAILER 160 /* >= SRTP_MAX_SRTCP_TRAILER_LEN (16 tag + 128 MKI + 4 index) */
typedef int (*srtp_transform)(void *ctx, void *hdr, int *len);
static srtp_transform srtp_protect, srtp_unprotect, srtp_protect_rtcp, srtp_unprotect_rtcp;

#define E2AE_BATCH 32
#define E2AE_MAX_RECV 4096 /* larger datagrams are dropped as malformed (media over UDP stays under the MTU) */
#define E2AE_BUFSZ (E2AE_MAX_RECV + SRTP_MAX_TRAILER)

/* which channel of a stream a socket belongs to */
enum { E2AE_A_RTP = 0, E2AE_A_RTCP = 1, E2AE_C_RTP = 2, E2AE_C_RTCP = 3 };

/* counter block: [side*8 + direction*4 + kind*2 + (0 packets | 1 bytes)], then drops */
enum {
    E2AE_SIDE_ACCESS = 0, E2AE_SIDE_CORE = 8, E2AE_IN = 0, E2AE_OUT = 4, E2AE_RTP = 0, E2AE_RTCP = 2,
    E2AE_DROP_AUTH_FAIL = 16, E2AE_DROP_REPLAY = 17, E2AE_DROP_BAD_PACKET = 18, E2AE_DROP_MALFORMED = 19,
    E2AE_DROP_SEND_ERROR = 20, E2AE_FAST_PACKETS = 21, E2AE_DROP_WRONG_SOURCE = 22, E2AE_DROP_SSRCS = 23,
    E2AE_COUNTERS = 24
};

#define E2AE_MAX_SSRCS 64 /* [mediad] max_ssrcs is at most this */

typedef struct {
    int ok;
    socklen_t len;
    struct sockaddr_storage sa;
} e2ae_addr;

typedef struct {
    void *tx; /* srtp_t of pylibsrtp's outbound session */
    void *rx; /* srtp_t of its inbound session */
} e2ae_srtp;

typedef struct {
    int fd[4];            /* -1: no such channel (RTCP muxed) */
    e2ae_srtp *srtp[2];   /* per access channel; NULL: not established, Python decides */
    e2ae_addr dest[4];    /* toward access per access channel; toward the core for RTP / RTCP */
    e2ae_addr peer[2];    /* the access channel's authenticated source, when check_peer */
    int check_peer;       /* not ICE-lite: a new source is latched by Python */
    int core_latching;    /* no core termination on this path: Python decides */
    e2ae_addr core_src[2]; /* the source the core's RTP / RTCP port takes media from; ok 0: Python decides */
    int core_src_port;    /* 1: address and port must match (latched); 0: the address only (the SDP's) */
    int nssrc[2];         /* per access channel: the SSRCs its SRTP session protects (Python admits new ones) */
    uint32_t ssrc[2][E2AE_MAX_SSRCS];
    int nheard[2];        /* per access channel: the SSRCs of RTP authenticated from the peer, for Python */
    uint32_t heard[2][E2AE_MAX_SSRCS]; /* to read their rollover counters (RFC 3711 3.3.1); C appends */
    uint64_t access_rx;   /* authenticated access packets relayed here (the dialog's expiry) */
    uint64_t *counters;
    uint64_t relayed[2];  /* packets taken in for relay from access, from the core (this stream) */
} e2ae_stream;

typedef struct {
    int len;
    int family;
    int port;
    unsigned char ip[16];
    unsigned char *data;
} e2ae_pkt;

static __thread unsigned char bufs[E2AE_BATCH][E2AE_BUFSZ];
static __thread struct sockaddr_storage srcs[E2AE_BATCH];

void e2ae_bind(uintptr_t protect, uintptr_t unprotect, uintptr_t protect_rtcp, uintptr_t unprotect_rtcp) {
    srtp_protect = (srtp_transform)protect;
    srtp_unprotect = (srtp_transform)unprotect;
    srtp_protect_rtcp = (srtp_transform)protect_rtcp;
    srtp_unprotect_rtcp = (srtp_transform)unprotect_rtcp;
}

void e2ae_set_addr(e2ae_addr *a, int family, const unsigned char *ip, int port) {
    memset(a, 0, sizeof(*a));
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&a->sa;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        memcpy(&in->sin_addr, ip, 4);
        a->len = sizeof(*in);
        a->ok = 1;
    } else if (family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->sa;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        memcpy(&in6->sin6_addr, ip, 16);
        a->len = sizeof(*in6);
        a->ok = 1;
    }
}

static int same_host(const struct sockaddr_storage *src, const e2ae_addr *a) {
    if (!a->ok || src->ss_family != a->sa.ss_family)
        return 0;
    if (src->ss_family == AF_INET)
        return ((const struct sockaddr_in *)src)->sin_addr.s_addr == ((const struct sockaddr_in *)&a->sa)->sin_addr.s_addr;
    return memcmp(&((const struct sockaddr_in6 *)src)->sin6_addr, &((const struct sockaddr_in6 *)&a->sa)->sin6_addr, 16) == 0;
}

static int known_ssrc(const e2ae_stream *s, int target, const unsigned char *p) {
    uint32_t ssrc = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    int i;
    for (i = 0; i < s->nssrc[target]; i++)
        if (s->ssrc[target][i] == ssrc)
            return 1;
    return 0;
}

/* Remember an authenticated RTP packet's SSRC (the first E2AE_MAX_SSRCS of a session). */
static void hear_ssrc(e2ae_stream *s, int which, const unsigned char *p) {
    uint32_t ssrc = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    int i, n = s->nheard[which];
    for (i = 0; i < n; i++)
        if (s->heard[which][i] == ssrc)
            return;
    if (n < E2AE_MAX_SSRCS) {
        s->heard[which][n] = ssrc;
        s->nheard[which] = n + 1;
    }
}

static int same_addr(const struct sockaddr_storage *src, const e2ae_addr *a) {
    if (!a->ok || src->ss_family != a->sa.ss_family)
        return 0;
    if (src->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)src, *y = (const struct sockaddr_in *)&a->sa;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)src, *y = (const struct sockaddr_in6 *)&a->sa;
    return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

/* RFC 3550 appendix A.2 header validity of a compound RTCP datagram (as mediad.proto.demux.rtcp_is_valid) */
static int rtcp_is_valid(const unsigned char *p, int size) {
    int offset = 0;
    if (size < 8 || size % 4)
        return 0;
    while (offset < size) {
        int padded;
        if (size - offset < 4 || p[offset] >> 6 != 2)
            return 0;
        padded = p[offset] & 0x20;
        offset += (((int)p[offset + 2] << 8 | p[offset + 3]) + 1) * 4;
        if (padded && offset != size)
            return 0;
    }
    return offset == size;
}

static void count_drop(uint64_t *c, int st) {
    if (st == SRTP_AUTH_FAIL)
        c[E2AE_DROP_AUTH_FAIL]++;
    else if (st == SRTP_REPLAY_FAIL || st == SRTP_REPLAY_OLD)
        c[E2AE_DROP_REPLAY]++;
    else
        c[E2AE_DROP_BAD_PACKET]++;
}

static void send_on(uint64_t *c, int fd, const e2ae_addr *dest, unsigned char *buf, int len, int counter) {
    if (sendto(fd, buf, (size_t)len, MSG_DONTWAIT, (const struct sockaddr *)&dest->sa, dest->len) < 0) {
        c[E2AE_DROP_SEND_ERROR]++;
        return;
    }
    c[counter]++;
    c[counter + 1] += (uint64_t)len;
}

/* 1: handled here (relayed or dropped and counted); 0: Python takes it */
static int from_access(e2ae_stream *s, int which, unsigned char *buf, int len, const struct sockaddr_storage *src) {
    uint64_t *c = s->counters;
    int is_rtcp, fd, n, kind;
    const e2ae_addr *dest;
    e2ae_srtp *srtp = s->srtp[which];
    int st;
    if (srtp == NULL || len < 12 || buf[0] < 128 || buf[0] > 191)
        return 0;
    is_rtcp = buf[1] >= 192 && buf[1] <= 223;
    if (which == E2AE_A_RTCP && !is_rtcp)
        return 0;
    if (s->check_peer && !same_addr(src, &s->peer[which]))
        return 0;
    if (is_rtcp) {
        fd = s->fd[E2AE_C_RTCP] >= 0 ? s->fd[E2AE_C_RTCP] : s->fd[E2AE_C_RTP];
        dest = &s->dest[E2AE_C_RTCP];
    } else {
        fd = s->fd[E2AE_C_RTP];
        dest = &s->dest[E2AE_C_RTP];
    }
    if (fd < 0 || !dest->ok)
        return 0;
    n = len;
    st = is_rtcp ? srtp_unprotect_rtcp(srtp->rx, buf, &n) : srtp_unprotect(srtp->rx, buf, &n);
    if (st != SRTP_OK) {
        count_drop(c, st);
        return 1;
    }
    if (!is_rtcp)
        hear_ssrc(s, which, buf + 8);
    kind = is_rtcp ? E2AE_RTCP : E2AE_RTP;
    s->access_rx++;
    c[E2AE_SIDE_ACCESS + E2AE_IN + kind]++;
    c[E2AE_SIDE_ACCESS + E2AE_IN + kind + 1] += (uint64_t)len;
    c[E2AE_FAST_PACKETS]++;
    s->relayed[0]++;
    send_on(c, fd, dest, buf, n, E2AE_SIDE_CORE + E2AE_OUT + kind);
    return 1;
}

static int from_core(e2ae_stream *s, int which, unsigned char *buf, int len, const struct sockaddr_storage *src) {
    uint64_t *c = s->counters;
    int is_rtp, target, n, kind;
    const e2ae_addr *from = &s->core_src[which - E2AE_C_RTP];
    e2ae_srtp *srtp;
    int st;
    if (s->core_latching || !from->ok || len < 12 || buf[0] < 128 || buf[0] > 191)
        return 0;
    is_rtp = which == E2AE_C_RTP && !(buf[1] >= 192 && buf[1] <= 223);
    target = (is_rtp || s->fd[E2AE_A_RTCP] < 0) ? E2AE_A_RTP : E2AE_A_RTCP;
    srtp = s->srtp[target];
    if (srtp == NULL || s->fd[target] < 0 || !s->dest[target].ok)
        return 0;
    if (!is_rtp && !rtcp_is_valid(buf, len)) {
        c[E2AE_DROP_MALFORMED]++; /* plain RTCP is unauthenticated: check its form */
        return 1;
    }
    if (!(s->core_src_port ? same_addr(src, from) : same_host(src, from))) {
        c[E2AE_DROP_WRONG_SOURCE]++; /* not the core's address (nor the latched source) */
        return 1;
    }
    if (!known_ssrc(s, target, buf + (is_rtp ? 8 : 4)))
        return 0; /* a new SSRC: Python admits it (up to max_ssrcs) or drops it */
    kind = is_rtp ? E2AE_RTP : E2AE_RTCP;
    c[E2AE_SIDE_CORE + E2AE_IN + kind]++;
    c[E2AE_SIDE_CORE + E2AE_IN + kind + 1] += (uint64_t)len;
    s->relayed[1]++;
    n = len;
    st = is_rtp ? srtp_protect(srtp->tx, buf, &n) : srtp_protect_rtcp(srtp->tx, buf, &n);
    if (st != SRTP_OK) {
        count_drop(c, st);
        return 1;
    }
    c[E2AE_FAST_PACKETS]++;
    send_on(c, s->fd[target], &s->dest[target], buf, n, E2AE_SIDE_ACCESS + E2AE_OUT + kind);
    return 1;
}

static void describe(e2ae_pkt *p, unsigned char *data, int len, const struct sockaddr_storage *src) {
    p->data = data;
    p->len = len;
    p->family = src->ss_family;
    if (src->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)src;
        p->port = ntohs(in->sin_port);
        memcpy(p->ip, &in->sin_addr, 4);
    } else if (src->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)src;
        p->port = ntohs(in6->sin6_port);
        memcpy(p->ip, &in6->sin6_addr, 16);
    } else {
        p->port = 0;
    }
}

/* Drain up to E2AE_BATCH datagrams from the channel's socket (one recvmmsg).  Datagrams
 * for Python are described in slow[0..return value); their data stays valid until the
 * next call on this thread.  Returns the number of slow datagrams, or -errno. */
int e2ae_pump(e2ae_stream *s, int which, e2ae_pkt *slow) {
    struct mmsghdr msgs[E2AE_BATCH];
    struct iovec iov[E2AE_BATCH];
    int fd = s->fd[which], n, i, nslow = 0, attempts = 0;
    if (fd < 0)
        return -EBADF;
    for (i = 0; i < E2AE_BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = E2AE_MAX_RECV;
        memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &srcs[i];
        msgs[i].msg_hdr.msg_namelen = sizeof(srcs[i]);
    }
    do { /* a pending ICMP error is reported once by the call that clears it */
        n = recvmmsg(fd, msgs, E2AE_BATCH, MSG_DONTWAIT, NULL);
    } while (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EBADF && ++attempts < 4);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
    for (i = 0; i < n; i++) {
        int len = (int)msgs[i].msg_len, handled;
        if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
            s->counters[E2AE_DROP_MALFORMED]++;
            handled = 1;
        } else if (which <= E2AE_A_RTCP) {
            handled = from_access(s, which, bufs[i], len, &srcs[i]);
        } else {
            handled = from_core(s, which, bufs[i], len, &srcs[i]);
        }
        if (!handled)
            describe(&slow[nslow++], bufs[i], len, &srcs[i]);
    }
    return nslow;
}
