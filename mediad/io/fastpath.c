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
 *
 * Notes (RFC 3711 3.3.1, 3.4): a restarted mediad must continue each SRTP
 * stream at its rollover counter and past its SRTCP index, so Python stores
 * them; rather than have Python read every stream to find the few that moved,
 * a packet that shows a move writes (stream, channel) into a ring Python
 * reads (mediad.proto.srtp explains the two signs: a sequence number whose
 * top bit clears, per SSRC; an SRTCP index that is a multiple of
 * E2AE_SRTCP_BLOCK).  One compare per packet; nothing when nothing moved.
 *
 * Inbound SSRCs (mediad.proto.srtp explains the cap): each session's block
 * lists the SSRCs whose libsrtp inbound stream exists; an access packet's
 * SSRC (RTP bytes 8-11, SRTCP 4-7, in clear) is looked up there before
 * libsrtp runs, a new one is tried only under max_rx and listed once it
 * authenticated, a retired one (RTCP BYE) is refused; both paths write the
 * one list, on the session.
 *
 * BUNDLE (RFC 9143): a transport is an e2ae_stream too, with only its access
 * socket (A_RTP, RTCP muxed) and an e2ae_bundle: the m-lines it carries
 * (member streams, their MIDs and payload types) and the incoming SSRC ->
 * member table Python's BundleDemux has learnt.  Access -> core: an SRTP
 * packet whose SSRC the table knows, with one of the member's payload types
 * and no MID header extension naming another member (the header extension is
 * in clear, RFC 3711 3.1: checked before the packet is unprotected), goes out
 * of the member's core port; anything else, SRTCP included (split per stream
 * by Python), is Python's.  Core -> access: a member stream's core sockets
 * are its own e2ae_stream whose "via" is the transport: an SSRC the member
 * already sends (BundledLeg.sent) is stamped with the member's MID element
 * when the packet has no header extension yet (mediad.proto.bundle_demux.MidStamp),
 * protected with the transport's session and sent from the transport's port;
 * a packet with an extension of its own goes to Python, which merges it.
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
#define E2AE_MAX_STAMP 264 /* a MID element's extension block: 4 + 2 + 255 bytes, padded */
#define E2AE_BUFSZ (E2AE_MAX_RECV + E2AE_MAX_STAMP + SRTP_MAX_TRAILER)

/* which channel of a stream a socket belongs to */
enum { E2AE_A_RTP = 0, E2AE_A_RTCP = 1, E2AE_C_RTP = 2, E2AE_C_RTCP = 3 };

/* counter block: [side*8 + direction*4 + kind*2 + (0 packets | 1 bytes)], then drops */
enum {
    E2AE_SIDE_ACCESS = 0, E2AE_SIDE_CORE = 8, E2AE_IN = 0, E2AE_OUT = 4, E2AE_RTP = 0, E2AE_RTCP = 2,
    E2AE_DROP_AUTH_FAIL = 16, E2AE_DROP_REPLAY = 17, E2AE_DROP_BAD_PACKET = 18, E2AE_DROP_MALFORMED = 19,
    E2AE_DROP_SEND_ERROR = 20, E2AE_FAST_PACKETS = 21, E2AE_DROP_WRONG_SOURCE = 22, E2AE_DROP_SSRCS = 23,
    E2AE_DROP_INBOUND_CAP = 24, E2AE_DROP_RETIRED = 25, E2AE_COUNTERS = 26
};

#define E2AE_MAX_SSRCS 64 /* [mediad] max_ssrcs is at most this */
#define E2AE_RING 256     /* notes Python reads per period; more: Python reads every stream */
#define E2AE_SRTCP_BLOCK 1024 /* mediad.proto.srtp.SRTCP_BLOCK */

typedef struct {
    void *stream; /* the e2ae_stream */
    int which;    /* its access channel */
} e2ae_note;

typedef struct {
    uint64_t head; /* notes written so far; Python keeps how many it read */
    e2ae_note notes[E2AE_RING];
} e2ae_ring;

#define E2AE_MAX_MEMBERS 32 /* m-lines of one transport carried here; more: Python routes the rest */
#define E2AE_MAX_MID 32     /* longer MIDs: Python */

typedef struct {
    uint32_t ssrc;
    int member;      /* index into e2ae_bundle.member */
    int mid_seq;     /* sequence number of the last MID element seen for this SSRC here; -1: none */
    uint8_t top;     /* the top bit of its last sequence number (wraps) */
} e2ae_route;

typedef struct {
    int mid_ext;     /* the MID header extension's id (RFC 9143 15.2); 0: not negotiated */
    int nmember;
    void *member[E2AE_MAX_MEMBERS];           /* the member stream's e2ae_stream (its core sockets) */
    unsigned char mid[E2AE_MAX_MEMBERS][E2AE_MAX_MID];
    int mid_len[E2AE_MAX_MEMBERS];            /* 0: no MID */
    uint8_t pts[E2AE_MAX_MEMBERS][16];        /* payload types the WIC sends on it, a bit each */
    int nroute;
    e2ae_route route[E2AE_MAX_SSRCS];
} e2ae_bundle;

typedef struct {
    int ok;
    socklen_t len;
    struct sockaddr_storage sa;
} e2ae_addr;

typedef struct {
    void *tx; /* srtp_t of pylibsrtp's outbound session */
    void *rx; /* srtp_t of its inbound session */
    int srtcp_index_at; /* bytes from the end of a protected SRTCP packet to its E flag and index */
    int max_rx;         /* inbound SSRCs the session admits ([mediad] max_ssrcs) */
    int nrx;            /* those admitted (each has a libsrtp stream): C and Python append */
    uint32_t rx_ssrc[E2AE_MAX_SSRCS];
    int nretired;       /* SSRCs retired (RTCP BYE) so far; the last E2AE_MAX_SSRCS are refused */
    uint32_t retired[E2AE_MAX_SSRCS];
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
    uint8_t heard_top[2][E2AE_MAX_SSRCS]; /* the top bit of each heard SSRC's last sequence number */
    uint8_t ssrc_top[2][E2AE_MAX_SSRCS];  /* the same for the SSRCs sent (Python keeps them on a rewrite) */
    e2ae_ring *ring;
    e2ae_bundle *bundle;  /* a BUNDLE transport: its streams (NULL: a stream of its own) */
    void *via;            /* a stream on a transport: the transport's e2ae_stream (its access side) */
    int nsent;            /* a stream on a transport: the SSRCs it already sends toward the WIC */
    uint32_t sent[E2AE_MAX_SSRCS];
    int stamp_len;        /* its MID element as a whole extension block (0: none) */
    unsigned char stamp[E2AE_MAX_STAMP];
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

/* The index of the SSRC at p among those the channel's session protects; -1: not admitted. */
static int known_ssrc(const e2ae_stream *s, int target, const unsigned char *p) {
    uint32_t ssrc = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    int i;
    for (i = 0; i < s->nssrc[target]; i++)
        if (s->ssrc[target][i] == ssrc)
            return i;
    return -1;
}

static void note(e2ae_stream *s, int which) {
    e2ae_ring *r = s->ring;
    e2ae_note *n = &r->notes[r->head % E2AE_RING];
    n->stream = s;
    n->which = which;
    r->head++;
}

/* A sequence number's top bit, against the SSRC's last one: clearing is a wrap (the ROC moved). */
static void watch_seq(e2ae_stream *s, int which, uint8_t *top, const unsigned char *rtp) {
    uint8_t now = rtp[2] >> 7;
    if (*top != now) {
        *top = now;
        if (!now)
            note(s, which);
    }
}

/* Remember an authenticated RTP packet's SSRC (the first E2AE_MAX_SSRCS of a session); watch its wraps. */
static void hear_ssrc(e2ae_stream *s, int which, const unsigned char *rtp) {
    const unsigned char *p = rtp + 8;
    uint32_t ssrc = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    int i, n = s->nheard[which];
    for (i = 0; i < n; i++)
        if (s->heard[which][i] == ssrc) {
            watch_seq(s, which, &s->heard_top[which][i], rtp);
            return;
        }
    if (n < E2AE_MAX_SSRCS) {
        s->heard[which][n] = ssrc;
        s->heard_top[which][n] = 2; /* unknown: the first packet in the lower half is noted */
        s->nheard[which] = n + 1;
        watch_seq(s, which, &s->heard_top[which][n], rtp);
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

/* Before libsrtp (mediad.proto.srtp: inbound SSRCs): 0 the SSRC is admitted, 1 a new one to try
 * (admit_rx after it authenticated), -1 refused and counted (past the cap, or retired). */
static int gate_rx(const e2ae_srtp *srtp, uint64_t *c, uint32_t ssrc) {
    int i, n;
    for (i = 0; i < srtp->nrx; i++)
        if (srtp->rx_ssrc[i] == ssrc)
            return 0;
    n = srtp->nretired < E2AE_MAX_SSRCS ? srtp->nretired : E2AE_MAX_SSRCS;
    for (i = 0; i < n; i++)
        if (srtp->retired[i] == ssrc) {
            c[E2AE_DROP_RETIRED]++;
            return -1;
        }
    if (srtp->nrx >= srtp->max_rx) {
        c[E2AE_DROP_INBOUND_CAP]++;
        return -1;
    }
    return 1;
}

static void admit_rx(e2ae_srtp *srtp, uint32_t ssrc) {
    if (srtp->nrx < E2AE_MAX_SSRCS)
        srtp->rx_ssrc[srtp->nrx++] = ssrc;
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

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The member named by the MID element of an RTP packet's header extension (RFC 8285 4, RFC 9143 15.2):
 * >= 0 a member, -1 no MID element, -2 anything else (malformed, unknown, an id of 15): Python decides. */
static int mid_member(const e2ae_bundle *b, const unsigned char *p, int len) {
    int start = 12 + 4 * (p[0] & 0x0F), i, end, profile, k;
    const unsigned char *mid = NULL;
    int mid_len = 0;
    if (start + 4 > len)
        return -2;
    profile = p[start] << 8 | p[start + 1];
    end = start + 4 + 4 * (p[start + 2] << 8 | p[start + 3]);
    if (end > len)
        return -2;
    i = start + 4;
    if (profile == 0xBEDE) {
        while (i < end) {
            int ident, n;
            if (p[i] == 0) {
                i++;
                continue;
            }
            ident = p[i] >> 4;
            n = (p[i] & 0x0F) + 1;
            if (ident == 15 || i + 1 + n > end)
                return -2;
            if (ident == b->mid_ext) {
                mid = p + i + 1;
                mid_len = n;
                break;
            }
            i += 1 + n;
        }
    } else if ((profile & 0xFFF0) == 0x1000) {
        while (i < end) {
            int n;
            if (p[i] == 0) {
                i++;
                continue;
            }
            if (i + 2 > end || i + 2 + p[i + 1] > end)
                return -2;
            n = p[i + 1];
            if (p[i] == b->mid_ext) {
                mid = p + i + 2;
                mid_len = n;
                break;
            }
            i += 2 + n;
        }
    }
    if (mid == NULL)
        return -1;
    for (k = 0; k < b->nmember; k++)
        if (b->mid_len[k] == mid_len && memcmp(b->mid[k], mid, (size_t)mid_len) == 0)
            return k;
    return -2;
}

/* An SRTP packet on a BUNDLE transport (see the top of the file); 1: handled, 0: Python's. */
static int from_access_bundle(e2ae_stream *s, unsigned char *buf, int len, const struct sockaddr_storage *src) {
    e2ae_bundle *b = s->bundle;
    e2ae_srtp *srtp = s->srtp[E2AE_A_RTP];
    uint64_t *c = s->counters;
    e2ae_route *r = NULL;
    e2ae_stream *m;
    uint32_t ssrc;
    int i, pt, mid = -1, n, st, seq, gate;
    if (srtp == NULL || len < 12 || buf[0] < 128 || buf[0] > 191 || (buf[1] >= 192 && buf[1] <= 223))
        return 0;
    if (s->check_peer && !same_addr(src, &s->peer[E2AE_A_RTP]))
        return 0;
    ssrc = be32(buf + 8);
    for (i = 0; i < b->nroute; i++)
        if (b->route[i].ssrc == ssrc) {
            r = &b->route[i];
            break;
        }
    if (r == NULL)
        return 0; /* not learnt yet: Python's BundleDemux (MID, payload type) */
    pt = buf[1] & 0x7F;
    if (!(b->pts[r->member][pt >> 3] & (1 << (pt & 7))))
        return 0;
    if ((buf[0] & 0x10) && b->mid_ext) {
        mid = mid_member(b, buf, len);
        if (mid == -2 || (mid >= 0 && mid != r->member))
            return 0;
    }
    m = (e2ae_stream *)b->member[r->member];
    if (m->fd[E2AE_C_RTP] < 0 || !m->dest[E2AE_C_RTP].ok)
        return 0;
    if ((gate = gate_rx(srtp, c, ssrc)) < 0)
        return 1;
    seq = buf[2] << 8 | buf[3];
    n = len;
    st = srtp_unprotect(srtp->rx, buf, &n);
    if (st != SRTP_OK) {
        count_drop(c, st);
        return 1;
    }
    if (gate)
        admit_rx(srtp, ssrc);
    if (mid >= 0 && (r->mid_seq < 0 || ((seq - r->mid_seq) & 0xFFFF) < 0x8000))
        r->mid_seq = seq; /* RFC 7941 4.2.6: BundleDemux reads it before its next MID update */
    watch_seq(s, E2AE_A_RTP, &r->top, buf);
    s->access_rx++;
    c[E2AE_SIDE_ACCESS + E2AE_IN + E2AE_RTP]++;
    c[E2AE_SIDE_ACCESS + E2AE_IN + E2AE_RTP + 1] += (uint64_t)len;
    c[E2AE_FAST_PACKETS]++;
    m->relayed[0]++;
    send_on(c, m->fd[E2AE_C_RTP], &m->dest[E2AE_C_RTP], buf, n, E2AE_SIDE_CORE + E2AE_OUT + E2AE_RTP);
    return 1;
}

/* 1: handled here (relayed or dropped and counted); 0: Python takes it */
static int from_access(e2ae_stream *s, int which, unsigned char *buf, int len, const struct sockaddr_storage *src) {
    uint64_t *c = s->counters;
    int is_rtcp, fd, n, kind;
    const e2ae_addr *dest;
    e2ae_srtp *srtp = s->srtp[which];
    uint32_t ssrc;
    int st, gate;
    if (s->bundle != NULL)
        return from_access_bundle(s, buf, len, src);
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
    ssrc = be32(buf + (is_rtcp ? 4 : 8)); /* in clear: RFC 3711 3.1, 3.4 */
    if ((gate = gate_rx(srtp, c, ssrc)) < 0)
        return 1;
    n = len;
    st = is_rtcp ? srtp_unprotect_rtcp(srtp->rx, buf, &n) : srtp_unprotect(srtp->rx, buf, &n);
    if (st != SRTP_OK) {
        count_drop(c, st);
        return 1;
    }
    if (gate)
        admit_rx(srtp, ssrc);
    if (!is_rtcp)
        hear_ssrc(s, which, buf);
    kind = is_rtcp ? E2AE_RTCP : E2AE_RTP;
    s->access_rx++;
    c[E2AE_SIDE_ACCESS + E2AE_IN + kind]++;
    c[E2AE_SIDE_ACCESS + E2AE_IN + kind + 1] += (uint64_t)len;
    c[E2AE_FAST_PACKETS]++;
    s->relayed[0]++;
    send_on(c, fd, dest, buf, n, E2AE_SIDE_CORE + E2AE_OUT + kind);
    return 1;
}

/* Is the SSRC at p one the stream on a transport already sends (RFC 9143 9.1: Python admits a new one)? */
static int sends(const e2ae_stream *s, const unsigned char *p) {
    uint32_t ssrc = be32(p);
    int i;
    for (i = 0; i < s->nsent; i++)
        if (s->sent[i] == ssrc)
            return 1;
    return 0;
}

/* Insert the stream's MID block into an RTP packet without a header extension; the new length, or -1. */
static int stamp_mid(const e2ae_stream *s, unsigned char *buf, int len) {
    int start = 12 + 4 * (buf[0] & 0x0F);
    if (buf[0] & 0x10 || start > len)
        return -1; /* an extension of its own: Python merges the element into it */
    memmove(buf + start + s->stamp_len, buf + start, (size_t)(len - start));
    memcpy(buf + start, s->stamp, (size_t)s->stamp_len);
    buf[0] |= 0x10;
    return len + s->stamp_len;
}

static int from_core(e2ae_stream *s, int which, unsigned char *buf, int len, const struct sockaddr_storage *src) {
    uint64_t *c = s->counters;
    int is_rtp, target, n, kind, known, size = len;
    const e2ae_addr *from = &s->core_src[which - E2AE_C_RTP];
    e2ae_stream *a = s->via != NULL ? (e2ae_stream *)s->via : s; /* whose access side: a transport's, or its own */
    e2ae_srtp *srtp;
    int st;
    if (s->core_latching || !from->ok || len < 12 || buf[0] < 128 || buf[0] > 191)
        return 0;
    is_rtp = which == E2AE_C_RTP && !(buf[1] >= 192 && buf[1] <= 223);
    target = (is_rtp || a->fd[E2AE_A_RTCP] < 0) ? E2AE_A_RTP : E2AE_A_RTCP;
    srtp = a->srtp[target];
    if (srtp == NULL || a->fd[target] < 0 || !a->dest[target].ok)
        return 0;
    if (!is_rtp && !rtcp_is_valid(buf, len)) {
        c[E2AE_DROP_MALFORMED]++; /* plain RTCP is unauthenticated: check its form */
        return 1;
    }
    if (!(s->core_src_port ? same_addr(src, from) : same_host(src, from))) {
        c[E2AE_DROP_WRONG_SOURCE]++; /* not the core's address (nor the latched source) */
        return 1;
    }
    known = known_ssrc(a, target, buf + (is_rtp ? 8 : 4));
    if (known < 0)
        return 0; /* a new SSRC: Python admits it (up to max_ssrcs) or drops it */
    if (s->via != NULL && is_rtp) {
        if (!sends(s, buf + 8))
            return 0;
        if (s->stamp_len > 0 && (len = stamp_mid(s, buf, len)) < 0)
            return 0;
    }
    kind = is_rtp ? E2AE_RTP : E2AE_RTCP;
    c[E2AE_SIDE_CORE + E2AE_IN + kind]++;
    c[E2AE_SIDE_CORE + E2AE_IN + kind + 1] += (uint64_t)size;
    s->relayed[1]++;
    n = len;
    st = is_rtp ? srtp_protect(srtp->tx, buf, &n) : srtp_protect_rtcp(srtp->tx, buf, &n);
    if (st != SRTP_OK) {
        count_drop(c, st);
        return 1;
    }
    if (is_rtp) {
        watch_seq(a, target, &a->ssrc_top[target][known], buf);
    } else if (srtp->srtcp_index_at > 0 && n >= srtp->srtcp_index_at) {
        const unsigned char *q = buf + n - srtp->srtcp_index_at;
        if (!(((uint32_t)q[2] << 8 | q[3]) & (E2AE_SRTCP_BLOCK - 1)))
            note(a, target); /* store this SRTCP index */
    }
    c[E2AE_FAST_PACKETS]++;
    send_on(c, a->fd[target], &a->dest[target], buf, n, E2AE_SIDE_ACCESS + E2AE_OUT + kind);
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
