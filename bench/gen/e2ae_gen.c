/*
 * e2ae_gen: RTP/SRTP load generator and sink for the relay benchmarks.
 *
 * Theory of operation
 * -------------------
 * One process, two threads, meant to be pinned to one core:
 *
 *   sender  N streams, round robin, paced to a target packet rate with
 *           sendmmsg(2) batches from one UDP socket; each stream has its own
 *           destination (the relay's port for that stream) and SSRC
 *           (ssrc_base + stream index).  With a key per stream it protects
 *           every packet on the fly with libsrtp (AES_CM_128_HMAC_SHA1_80),
 *           so sequence numbers always increase and the relay's replay window
 *           accepts them.
 *   sink    one UDP socket, recvmmsg(2); the relay sends its output for all
 *           streams to it.  A packet is attributed to its stream by SSRC.
 *
 * Latency without decrypting: the RTP timestamp of every packet carries the
 * send time in microseconds (CLOCK_REALTIME, modulo 2^32), compared with the
 * kernel's receive timestamp of the packet (SO_TIMESTAMPNS, the same clock),
 * so the sink's own scheduling does not count: the sink drains its socket with
 * non-blocking recvmmsg and sleeps 200 us when it is empty, which batches
 * reads and keeps the generator's core for sending.  The RTP header is
 * in the clear in SRTP (RFC 3711 section 3.1) and the relays under test do
 * not rewrite it, so the sink reads it from plain RTP and from SRTP alike.
 * The payload also carries a magic, the stream index, the 64-bit sequence
 * number and the send time in nanoseconds, for inspection with tshark.
 * When a receive key is given (file column 4 of stream 0), the sink also
 * unprotects every packet of stream 0 and counts failures, which proves the
 * relay really produced valid SRTP; for plain output the sink counts the
 * packets whose payload starts with the magic, which proves the relay really
 * decrypted the generator's SRTP.
 *
 * The rate ramp runs inside this one process (so SRTP sequence numbers and
 * libsrtp's rollover counter stay continuous): for each rate the sender runs
 * for step_seconds, then waits drain_ms, then the step's counters are closed.
 * A step fails when loss > max_loss or p99 latency > max_p99_us; with
 * --stop-on-fail the ramp ends at the first failed step.  With --relay-pid the
 * relay's CPU time (utime + stime of all its threads, /proc/PID/stat) is read
 * at the start and at the end of each step.
 *
 * Which libsrtp: the program is linked with Debian's libsrtp2 (2.5.0), which is
 * built on NSS, and NSS caps the generator: every srtp_protect goes through
 * NSS's PKCS#11 token layer, with its locks and per-call allocations (in a
 * profile of the generator on one core, that layer, its locks and the
 * allocator take over half of the time, AES and SHA-1 themselves under a
 * tenth), so it tops out near 100k SRTP packets/s, below what the relays under
 * test take.  With --libsrtp PATH it uses instead the libsrtp 2.x built on
 * OpenSSL that pylibsrtp bundles in its extension module (PATH is that
 * module's .so), the same library mediad's native packet path calls, and
 * sends over twice as many SRTP packets/s: load_libsrtp() opens it and
 * resolves the few srtp_* functions used here into srtp_api, through which
 * the sender protects and the sink verifies.  When PATH cannot be loaded, or
 * no PATH is given, the linked libsrtp2 is used.  "srtp_lib" in the output
 * names the library in use (its srtp_get_version_string()), "srtp_lib_file"
 * the file it came from, "srtp_lib_error" why PATH was not used.
 *
 * Output: one JSON object on stdout.  Every loop is bounded by the rates and
 * durations given on the command line.
 *
 * Streams file: one line per stream, "IP PORT TXKEY RXKEY", the keys being
 * 60 hex digits (16-byte master key + 14-byte salt) or "-" for plain RTP.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <srtp2/srtp.h>

#define MAX_STREAMS 20000
#define MAX_STEPS 64
#define MAX_BATCH 64
#define RTP_HEADER 12
#define PKT_CAP 1500
#define SRTP_KEY_LEN 30
#define HIST_US_PER_BUCKET 10
#define HIST_BUCKETS 100000 /* 10 us buckets up to 1 s, then one overflow bucket */
#define RX_BATCH 64
#define MAGIC "E2AEBNCH"
#define SINK_IDLE_NS 200000 /* the sink reads in batches: sleep 200 us when drained */

struct stream {
    struct sockaddr_in dst;
    uint32_t ssrc;
    uint64_t seq;
    srtp_t tx;
    int has_tx;
};

struct step {
    double rate;
    uint64_t sent;
    uint64_t received;
    uint64_t foreign;
    uint64_t verify_ok;
    uint64_t verify_fail;
    uint64_t payload_ok;
    double send_seconds;
    double wall_seconds;
    double relay_cpu_seconds;
    double gen_cpu_seconds;
    double p50_us, p99_us, max_us;
    int passed;
};

static struct stream *streams;
static int nstreams;
static uint32_t ssrc_base = 0x0e2a0000u;
static uint16_t payload_size = 160;
static struct sockaddr_in rx_addr, tx_addr;
static int rx_fd = -1, tx_fd = -1;
static srtp_t verify_ctx;
static int has_verify;

/* counters written by the sink thread, read by the sender between steps */
static _Atomic uint64_t rx_count, rx_foreign, rx_verify_ok, rx_verify_fail, rx_payload_ok;
static _Atomic int sink_stop;
static uint32_t hist[HIST_BUCKETS + 1];
static pthread_mutex_t hist_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t max_latency_us;

static void die(const char *what)
{
    fprintf(stderr, "e2ae_gen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void usage_error(const char *msg)
{
    fprintf(stderr, "e2ae_gen: %s\n", msg);
    exit(2);
}

/* ---- libsrtp: the linked one, or the one given with --libsrtp ------------------ */

/*
 * Every libsrtp call goes through srtp_api: the linked libsrtp2 by default,
 * the functions of the --libsrtp library once load_libsrtp() succeeded.
 *
 * The policy given to srtp_create is laid out by Debian's 2.5.0 header and
 * read by the loaded library, 2.7.0 in pylibsrtp 1.0.  srtp_policy_t is the
 * same in both: ssrc {type, value}, rtp and rtcp (srtp_crypto_policy_t, six
 * 32-bit fields each), key, keys, num_master_keys, deprecated_ekt,
 * window_size, allow_repeat_tx, enc_xtn_hdr, enc_xtn_hdr_count, next; on
 * x86-64 128 bytes, ssrc at 0, rtp at 8, rtcp at 32, key at 56, window_size at
 * 88, allow_repeat_tx at 96 (offsetof with the 2.5.0 header; the same figures
 * from pylibsrtp's binding, whose cffi compiled them from the 2.7.0 header).
 * Every field set here other than next is among those, and the rest of the
 * 128 bytes is zeroed (next = NULL, keys = NULL: the single key is used).  The
 * crypto policies are filled in by the loaded library itself
 * (srtp_crypto_policy_set_*_default), with its own cipher and auth
 * identifiers.  The srtp_ssrc_type_t values, srtp_err_status_ok (0) and the
 * prototypes used here are the same in 2.x; libsrtp 3 changes them (an opaque
 * policy, new protect/unprotect signatures), hence the version check in
 * load_libsrtp().
 */
struct srtp_api {
    srtp_err_status_t (*init)(void);
    srtp_err_status_t (*create)(srtp_t *session, const srtp_policy_t *policy);
    srtp_err_status_t (*protect)(srtp_t ctx, void *rtp_hdr, int *len_ptr);
    srtp_err_status_t (*unprotect)(srtp_t ctx, void *srtp_hdr, int *len_ptr);
    void (*rtp_default)(srtp_crypto_policy_t *p);
    void (*rtcp_default)(srtp_crypto_policy_t *p);
    const char *(*version)(void);
};

static struct srtp_api srtp_api = {
    srtp_init, srtp_create, srtp_protect, srtp_unprotect,
    srtp_crypto_policy_set_rtp_default, srtp_crypto_policy_set_rtcp_default, srtp_get_version_string,
};
static char srtp_lib_error[512];

/*
 * pylibsrtp's module is a CPython extension: besides libc it needs these
 * CPython symbols, used only by its Python-facing code (PyInit__binding and
 * the wrappers), never by libsrtp.  The generator does not initialise the
 * module nor embed Python, so it defines them itself, exported (gcc
 * -Wl,--export-dynamic-symbol, see bench/run.py) for the loader to resolve
 * against: the functions abort if ever called.  That needs no libpython,
 * which the benchmark's interpreter does not have to ship as a shared
 * library.  A module that needs one more such symbol fails to load (RTLD_NOW)
 * and the linked libsrtp2 is used, with the missing name in srtp_lib_error.
 */
extern char _Py_NoneStruct[64];
char _Py_NoneStruct[64];
#define PY_STUB(name)                                                              \
    void name(void);                                                               \
    void name(void)                                                                \
    {                                                                              \
        fprintf(stderr, "e2ae_gen: CPython's %s called inside libsrtp\n", #name); \
        abort();                                                                   \
    }
PY_STUB(PyArg_UnpackTuple)
PY_STUB(PyErr_Occurred)
PY_STUB(PyEval_RestoreThread)
PY_STUB(PyEval_SaveThread)
PY_STUB(PyImport_ImportModule)
PY_STUB(PyLong_FromLong)
PY_STUB(PyLong_FromVoidPtr)
PY_STUB(PyObject_CallMethod)
PY_STUB(PyObject_Free)
PY_STUB(PyObject_Malloc)
PY_STUB(_Py_Dealloc)

/*
 * Open the libsrtp at path and switch srtp_api to it; 0 on success, else -1
 * with the reason in srtp_lib_error (srtp_api is then left unchanged).
 *
 * RTLD_DEEPBIND is required: that library calls its own exported functions
 * through the PLT (srtp_protect -> srtp_protect_mki -> srtp_cipher_encrypt ...,
 * srtp_crypto_kernel_*), and without it those calls would bind to the
 * libsrtp2 linked into this program, found first in the global scope, so
 * the loaded library's entry points would run Debian's NSS-based internals.
 * With it, its own definitions come first; only the CPython symbols above
 * come from the program.  RTLD_LOCAL keeps its symbols (libsrtp's and the
 * OpenSSL it embeds) out of everyone else's way.
 */
static int load_libsrtp(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!h) {
        snprintf(srtp_lib_error, sizeof srtp_lib_error, "dlopen: %s", dlerror());
        return -1;
    }
    struct srtp_api api;
    const char *missing = NULL;
#define RESOLVE(field, name)                                 \
    if (!missing && !(api.field = dlsym(h, name)))           \
        missing = name;
    RESOLVE(init, "srtp_init")
    RESOLVE(create, "srtp_create")
    RESOLVE(protect, "srtp_protect")
    RESOLVE(unprotect, "srtp_unprotect")
    RESOLVE(rtp_default, "srtp_crypto_policy_set_rtp_default")
    RESOLVE(rtcp_default, "srtp_crypto_policy_set_rtcp_default")
    RESOLVE(version, "srtp_get_version_string")
#undef RESOLVE
    if (missing) {
        snprintf(srtp_lib_error, sizeof srtp_lib_error, "%s: no %s", path, missing);
        return -1;
    }
    const char *version = api.version();
    if (strncmp(version, "libsrtp2 2.", 11) != 0) { /* the 2.x API and layout only */
        snprintf(srtp_lib_error, sizeof srtp_lib_error, "%s: %s is not libsrtp 2.x", path, version);
        return -1;
    }
    if (api.init() != srtp_err_status_ok) {
        snprintf(srtp_lib_error, sizeof srtp_lib_error, "%s: srtp_init failed", path);
        return -1;
    }
    srtp_api = api;
    return 0;
}

static const char *srtp_lib_file(void)
{
    Dl_info info;
    if (dladdr((void *)srtp_api.protect, &info) && info.dli_fname)
        return info.dli_fname;
    return "";
}

static void print_json_string(const char *key, const char *value, int comma)
{
    printf("\"%s\": \"", key);
    for (const unsigned char *c = (const unsigned char *)value; *c; c++) {
        if (*c == '"' || *c == '\\')
            printf("\\%c", *c);
        else if (*c < 0x20)
            printf("\\u%04x", *c);
        else
            putchar(*c);
    }
    printf("\"%s", comma ? ", " : "");
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int parse_hostport(const char *text, struct sockaddr_in *out)
{
    char host[64];
    const char *colon = strrchr(text, ':');
    if (!colon || (size_t)(colon - text) >= sizeof host)
        return -1;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = 0;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)atoi(colon + 1));
    return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

static int parse_key(const char *hex, unsigned char *key)
{
    if (strlen(hex) != SRTP_KEY_LEN * 2)
        return -1;
    for (int i = 0; i < SRTP_KEY_LEN; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return -1;
        key[i] = (unsigned char)v;
    }
    return 0;
}

static int make_ctx(srtp_t *ctx, const unsigned char *key, uint32_t ssrc, int inbound)
{
    srtp_policy_t policy;
    memset(&policy, 0, sizeof policy);
    srtp_api.rtp_default(&policy.rtp);
    srtp_api.rtcp_default(&policy.rtcp);
    if (inbound) {
        policy.ssrc.type = ssrc_any_inbound;
    } else {
        policy.ssrc.type = ssrc_specific;
        policy.ssrc.value = ssrc;
    }
    policy.key = (unsigned char *)key;
    policy.window_size = 1024;
    policy.next = NULL;
    return srtp_api.create(ctx, &policy) == srtp_err_status_ok ? 0 : -1;
}

static void load_streams(const char *path, uint64_t seq_start)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die(path);
    streams = calloc(MAX_STREAMS, sizeof *streams);
    char line[512], ip[64], txk[128], rxk[128];
    int port;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (nstreams >= MAX_STREAMS)
            usage_error("too many streams");
        if (sscanf(line, "%63s %d %127s %127s", ip, &port, txk, rxk) != 4)
            usage_error("streams file: expected 'IP PORT TXKEY RXKEY' per line");
        struct stream *s = &streams[nstreams];
        memset(&s->dst, 0, sizeof s->dst);
        s->dst.sin_family = AF_INET;
        s->dst.sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, ip, &s->dst.sin_addr) != 1)
            usage_error("streams file: bad IPv4 address");
        s->ssrc = ssrc_base + (uint32_t)nstreams;
        s->seq = seq_start;
        if (strcmp(txk, "-") != 0) {
            unsigned char key[SRTP_KEY_LEN];
            if (parse_key(txk, key) || make_ctx(&s->tx, key, s->ssrc, 0))
                usage_error("streams file: bad transmit key");
            s->has_tx = 1;
        }
        if (nstreams == 0 && strcmp(rxk, "-") != 0) {
            unsigned char key[SRTP_KEY_LEN];
            if (parse_key(rxk, key) || make_ctx(&verify_ctx, key, 0, 1))
                usage_error("streams file: bad receive key");
            has_verify = 1;
        }
        nstreams++;
    }
    fclose(f);
    if (nstreams == 0)
        usage_error("streams file is empty");
}

static double relay_cpu(int pid)
{
    if (pid <= 0)
        return 0.0;
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return NAN;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* comm may contain spaces */
    if (!p)
        return NAN;
    unsigned long utime = 0, stime = 0;
    /* fields after ')': state(3) ... utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return NAN;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* ---- sink ---------------------------------------------------------------------- */

static void *sink_main(void *arg)
{
    (void)arg;
    static unsigned char bufs[RX_BATCH][PKT_CAP];
    static char ctrl[RX_BATCH][CMSG_SPACE(sizeof(struct timespec))];
    struct mmsghdr msgs[RX_BATCH];
    struct iovec iov[RX_BATCH];
    unsigned char scratch[PKT_CAP];
    const struct timespec idle = {0, SINK_IDLE_NS};
    while (!atomic_load_explicit(&sink_stop, memory_order_relaxed)) {
        for (int i = 0; i < RX_BATCH; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = PKT_CAP;
            memset(&msgs[i], 0, sizeof msgs[i]);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = ctrl[i];
            msgs[i].msg_hdr.msg_controllen = sizeof ctrl[i];
        }
        int n = recvmmsg(rx_fd, msgs, RX_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            nanosleep(&idle, NULL); /* drained: let packets gather, then read a batch */
            continue;
        }
        uint32_t fallback_us = (uint32_t)(wall_ns() / 1000u);
        uint64_t ok = 0, foreign = 0, vok = 0, vfail = 0, pok = 0;
        pthread_mutex_lock(&hist_lock);
        for (int i = 0; i < n; i++) {
            unsigned char *p = bufs[i];
            unsigned len = msgs[i].msg_len;
            if (len < RTP_HEADER || (p[0] & 0xc0) != 0x80) {
                foreign++;
                continue;
            }
            uint32_t ts = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
            uint32_t ssrc = (uint32_t)p[8] << 24 | (uint32_t)p[9] << 16 | (uint32_t)p[10] << 8 | p[11];
            uint32_t idx = ssrc - ssrc_base;
            if (idx >= (uint32_t)nstreams) {
                foreign++;
                continue;
            }
            uint32_t now_us = fallback_us;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                    struct timespec kt;
                    memcpy(&kt, CMSG_DATA(c), sizeof kt);
                    now_us = (uint32_t)(((uint64_t)kt.tv_sec * 1000000000ull + (uint64_t)kt.tv_nsec) / 1000u);
                }
            }
            uint32_t lat = now_us - ts;
            uint32_t bucket = lat / HIST_US_PER_BUCKET;
            hist[bucket < HIST_BUCKETS ? bucket : HIST_BUCKETS]++;
            if (lat > max_latency_us && lat < 0x80000000u)
                max_latency_us = lat;
            ok++;
            if (len >= RTP_HEADER + 8 && memcmp(p + RTP_HEADER, MAGIC, 8) == 0)
                pok++; /* plain payload: the relay decrypted (or never encrypted) it */
            if (idx == 0 && has_verify) {
                int l = (int)len;
                memcpy(scratch, p, len);
                if (srtp_api.unprotect(verify_ctx, scratch, &l) == srtp_err_status_ok)
                    vok++;
                else
                    vfail++;
            }
        }
        pthread_mutex_unlock(&hist_lock);
        atomic_fetch_add(&rx_count, ok);
        atomic_fetch_add(&rx_foreign, foreign);
        atomic_fetch_add(&rx_verify_ok, vok);
        atomic_fetch_add(&rx_verify_fail, vfail);
        atomic_fetch_add(&rx_payload_ok, pok);
    }
    return NULL;
}

static double percentile(const uint32_t *h, uint64_t total, double q)
{
    if (total == 0)
        return NAN;
    uint64_t want = (uint64_t)ceil(q * (double)total), acc = 0;
    if (want == 0)
        want = 1;
    for (int b = 0; b <= HIST_BUCKETS; b++) {
        acc += h[b];
        if (acc >= want)
            return (double)(b + 1) * HIST_US_PER_BUCKET; /* upper edge of the bucket */
    }
    return (double)HIST_BUCKETS * HIST_US_PER_BUCKET;
}

/* ---- sender -------------------------------------------------------------------- */

static void fill_packet(unsigned char *p, struct stream *s, int idx, uint64_t now_ns)
{
    uint16_t seq16 = (uint16_t)s->seq;
    uint32_t ts = (uint32_t)(now_ns / 1000u);
    p[0] = 0x80;
    p[1] = 0; /* PCMU */
    p[2] = (unsigned char)(seq16 >> 8);
    p[3] = (unsigned char)seq16;
    p[4] = (unsigned char)(ts >> 24);
    p[5] = (unsigned char)(ts >> 16);
    p[6] = (unsigned char)(ts >> 8);
    p[7] = (unsigned char)ts;
    p[8] = (unsigned char)(s->ssrc >> 24);
    p[9] = (unsigned char)(s->ssrc >> 16);
    p[10] = (unsigned char)(s->ssrc >> 8);
    p[11] = (unsigned char)s->ssrc;
    unsigned char *body = p + RTP_HEADER;
    memset(body, 0xff, payload_size); /* G.711 mu-law silence */
    if (payload_size >= 28) {
        uint32_t i32 = htonl((uint32_t)idx);
        memcpy(body, MAGIC, 8);
        memcpy(body + 8, &i32, 4);
        for (int k = 0; k < 8; k++) {
            body[12 + k] = (unsigned char)(s->seq >> (56 - 8 * k));
            body[20 + k] = (unsigned char)(now_ns >> (56 - 8 * k));
        }
    }
    s->seq++;
}

static uint64_t send_step(double rate, double seconds, int *cursor, double *elapsed)
{
    static unsigned char bufs[MAX_BATCH][PKT_CAP];
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    int batch = (int)(rate / 5000.0);
    if (batch < 1)
        batch = 1;
    if (batch > MAX_BATCH)
        batch = MAX_BATCH;
    uint64_t total = (uint64_t)(rate * seconds + 0.5), sent = 0;
    double t0 = mono_now();
    double deadline = t0 + seconds * 1.5 + 1.0; /* a generator that cannot keep up still stops */
    while (sent < total) {
        double due = t0 + (double)(sent + (uint64_t)batch) / rate;
        double now = mono_now();
        if (now > deadline)
            break;
        if (due > now) {
            struct timespec ts;
            double wait = due - now;
            ts.tv_sec = (time_t)wait;
            ts.tv_nsec = (long)((wait - (double)ts.tv_sec) * 1e9);
            nanosleep(&ts, NULL);
        }
        int n = batch;
        if ((uint64_t)n > total - sent)
            n = (int)(total - sent);
        uint64_t now_ns = wall_ns();
        for (int i = 0; i < n; i++) {
            int idx = *cursor;
            *cursor = (idx + 1) % nstreams;
            struct stream *s = &streams[idx];
            fill_packet(bufs[i], s, idx, now_ns);
            int len = RTP_HEADER + payload_size;
            if (s->has_tx && srtp_api.protect(s->tx, bufs[i], &len) != srtp_err_status_ok)
                usage_error("srtp_protect failed");
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = (size_t)len;
            memset(&msgs[i], 0, sizeof msgs[i]);
            msgs[i].msg_hdr.msg_name = &s->dst;
            msgs[i].msg_hdr.msg_namelen = sizeof s->dst;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int done = 0;
        while (done < n) {
            int r = sendmmsg(tx_fd, msgs + done, (unsigned)(n - done), 0);
            if (r < 0) {
                if (errno == EINTR || errno == EAGAIN || errno == ENOBUFS || errno == ECONNREFUSED)
                    continue;
                die("sendmmsg");
            }
            done += r;
        }
        sent += (uint64_t)n;
    }
    *elapsed = mono_now() - t0;
    return sent;
}

static int open_socket(const struct sockaddr_in *bind_to, int rx)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        die("socket");
    int one = 1, size = 16 << 20;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int opt = rx ? SO_RCVBUFFORCE : SO_SNDBUFFORCE;
    if (setsockopt(fd, SOL_SOCKET, opt, &size, sizeof size) < 0)
        setsockopt(fd, SOL_SOCKET, rx ? SO_RCVBUF : SO_SNDBUF, &size, sizeof size);
    if (rx && setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) < 0)
        die("SO_TIMESTAMPNS");
    if (bind(fd, (const struct sockaddr *)bind_to, sizeof *bind_to) < 0)
        die("bind");
    return fd;
}

static int parse_rates(const char *text, double *rates)
{
    int n = 0;
    char *copy = strdup(text), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && n < MAX_STEPS; tok = strtok_r(NULL, ",", &save)) {
        rates[n] = atof(tok);
        if (rates[n] <= 0)
            usage_error("rates must be positive");
        n++;
    }
    free(copy);
    return n;
}

static void print_number(const char *key, double v, int comma)
{
    if (isnan(v) || isinf(v))
        printf("\"%s\": null%s", key, comma ? ", " : "");
    else
        printf("\"%s\": %.3f%s", key, v, comma ? ", " : "");
}

int main(int argc, char **argv)
{
    const char *streams_path = NULL, *rates_text = NULL, *libsrtp_path = NULL;
    double step_seconds = 3.0, max_loss = 0.001, max_p99_us = 20000;
    int drain_ms = 300, stop_on_fail = 0, relay_pid = 0;
    uint64_t seq_start = 1;
    parse_hostport("127.0.0.1:0", &tx_addr);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define TAKE() (v ? (i++, v) : (usage_error("missing value"), ""))
        if (!strcmp(a, "--streams")) streams_path = TAKE();
        else if (!strcmp(a, "--rates")) rates_text = TAKE();
        else if (!strcmp(a, "--rx")) { if (parse_hostport(TAKE(), &rx_addr)) usage_error("bad --rx"); }
        else if (!strcmp(a, "--tx")) { if (parse_hostport(TAKE(), &tx_addr)) usage_error("bad --tx"); }
        else if (!strcmp(a, "--step-seconds")) step_seconds = atof(TAKE());
        else if (!strcmp(a, "--drain-ms")) drain_ms = atoi(TAKE());
        else if (!strcmp(a, "--max-loss")) max_loss = atof(TAKE());
        else if (!strcmp(a, "--max-p99-us")) max_p99_us = atof(TAKE());
        else if (!strcmp(a, "--stop-on-fail")) stop_on_fail = 1;
        else if (!strcmp(a, "--relay-pid")) relay_pid = atoi(TAKE());
        else if (!strcmp(a, "--ssrc-base")) ssrc_base = (uint32_t)strtoul(TAKE(), NULL, 0);
        else if (!strcmp(a, "--seq-start")) seq_start = strtoull(TAKE(), NULL, 0);
        else if (!strcmp(a, "--payload")) payload_size = (uint16_t)atoi(TAKE());
        else if (!strcmp(a, "--libsrtp")) libsrtp_path = TAKE();
        else usage_error("unknown option (see the comment at the top of e2ae_gen.c)");
#undef TAKE
    }
    if (!streams_path || !rates_text || rx_addr.sin_port == 0)
        usage_error("usage: e2ae_gen --streams FILE --rates R1,R2,... --rx IP:PORT [options]");
    if (step_seconds <= 0 || step_seconds > 600 || drain_ms < 0 || drain_ms > 10000)
        usage_error("step-seconds must be in (0, 600], drain-ms in [0, 10000]");
    if (payload_size < 1 || payload_size > 1200)
        usage_error("payload must be 1..1200 bytes");
    if (libsrtp_path && load_libsrtp(libsrtp_path) != 0) {
        fprintf(stderr, "e2ae_gen: --libsrtp not used, falling back to the linked libsrtp2: %s\n", srtp_lib_error);
        libsrtp_path = NULL;
    }
    if (!libsrtp_path && srtp_api.init() != srtp_err_status_ok)
        usage_error("srtp_init failed");
    double rates[MAX_STEPS];
    int nrates = parse_rates(rates_text, rates);
    load_streams(streams_path, seq_start);
    rx_fd = open_socket(&rx_addr, 1);
    tx_fd = open_socket(&tx_addr, 0);

    pthread_t sink;
    if (pthread_create(&sink, NULL, sink_main, NULL))
        die("pthread_create");

    static struct step steps[MAX_STEPS];
    static uint32_t snap[HIST_BUCKETS + 1];
    int cursor = 0, nsteps = 0;
    for (int k = 0; k < nrates; k++) {
        struct step *st = &steps[nsteps++];
        st->rate = rates[k];
        pthread_mutex_lock(&hist_lock);
        memset(hist, 0, sizeof hist);
        max_latency_us = 0;
        pthread_mutex_unlock(&hist_lock);
        uint64_t rx0 = atomic_exchange(&rx_count, 0);
        (void)rx0; /* late packets of the previous step are discarded here */
        atomic_store(&rx_foreign, 0);
        atomic_store(&rx_verify_ok, 0);
        atomic_store(&rx_verify_fail, 0);
        atomic_store(&rx_payload_ok, 0);
        double cpu0 = relay_cpu(relay_pid), gen0 = self_cpu(), w0 = mono_now();
        st->sent = send_step(rates[k], step_seconds, &cursor, &st->send_seconds);
        struct timespec drain = {drain_ms / 1000, (long)(drain_ms % 1000) * 1000000L};
        nanosleep(&drain, NULL);
        st->wall_seconds = mono_now() - w0;
        st->relay_cpu_seconds = relay_cpu(relay_pid) - cpu0;
        st->gen_cpu_seconds = self_cpu() - gen0;
        st->received = atomic_exchange(&rx_count, 0);
        st->foreign = atomic_load(&rx_foreign);
        st->verify_ok = atomic_load(&rx_verify_ok);
        st->verify_fail = atomic_load(&rx_verify_fail);
        st->payload_ok = atomic_load(&rx_payload_ok);
        pthread_mutex_lock(&hist_lock);
        memcpy(snap, hist, sizeof snap);
        st->max_us = max_latency_us;
        pthread_mutex_unlock(&hist_lock);
        uint64_t total = 0;
        for (int b = 0; b <= HIST_BUCKETS; b++)
            total += snap[b];
        st->p50_us = percentile(snap, total, 0.50);
        st->p99_us = percentile(snap, total, 0.99);
        double loss = st->sent ? 1.0 - (double)st->received / (double)st->sent : 1.0;
        st->passed = st->received > 0 && loss <= max_loss && st->p99_us <= max_p99_us;
        fprintf(stderr, "e2ae_gen: rate %.0f sent %" PRIu64 " received %" PRIu64 " loss %.5f p99 %.0f us %s\n",
                st->rate, st->sent, st->received, loss, st->p99_us, st->passed ? "ok" : "FAIL");
        if (!st->passed && stop_on_fail)
            break;
    }
    atomic_store(&sink_stop, 1);
    pthread_join(sink, NULL);

    uint64_t next_seq = 0;
    for (int i = 0; i < nstreams; i++)
        if (streams[i].seq > next_seq)
            next_seq = streams[i].seq;
    printf("{");
    print_json_string("srtp_lib", srtp_api.version(), 1);
    print_json_string("srtp_lib_file", srtp_lib_file(), 1);
    if (srtp_lib_error[0])
        print_json_string("srtp_lib_error", srtp_lib_error, 1);
    printf("\"streams\": %d, \"payload\": %u, \"srtp_tx\": %s, \"srtp_verify\": %s, \"next_seq\": %" PRIu64
           ", \"max_loss\": %g, \"max_p99_us\": %g, \"steps\": [",
           nstreams, payload_size, streams[0].has_tx ? "true" : "false", has_verify ? "true" : "false", next_seq,
           max_loss, max_p99_us);
    for (int k = 0; k < nsteps; k++) {
        struct step *st = &steps[k];
        double loss = st->sent ? 1.0 - (double)st->received / (double)st->sent : 1.0;
        printf("%s{\"rate\": %.0f, \"sent\": %" PRIu64 ", \"received\": %" PRIu64 ", \"foreign\": %" PRIu64
               ", \"verify_ok\": %" PRIu64 ", \"verify_fail\": %" PRIu64 ", \"payload_ok\": %" PRIu64 ", ",
               k ? ", " : "", st->rate, st->sent, st->received, st->foreign, st->verify_ok, st->verify_fail,
               st->payload_ok);
        print_number("loss", loss, 1);
        print_number("tx_pps", st->sent / st->send_seconds, 1);
        print_number("rx_pps", st->received / st->send_seconds, 1);
        print_number("send_seconds", st->send_seconds, 1);
        print_number("wall_seconds", st->wall_seconds, 1);
        print_number("relay_cpu_seconds", relay_pid > 0 ? st->relay_cpu_seconds : NAN, 1);
        print_number("gen_cpu_seconds", st->gen_cpu_seconds, 1);
        print_number("p50_us", st->p50_us, 1);
        print_number("p99_us", st->p99_us, 1);
        print_number("max_us", st->max_us, 1);
        printf("\"passed\": %s}", st->passed ? "true" : "false");
    }
    printf("]}\n");
    fflush(stdout);
    close(rx_fd);
    close(tx_fd);
    return 0;
}
