/*
 * fastgen: the benchmark's load generator for the `stream` and `many`
 * scenarios, in C, so that the figures measure the server and not the
 * generator (bench/loadgen.py, one Python process, saturates its CPU at
 * 1,000 followers).
 *
 *   fastgen --scenario stream --url http://127.0.0.1:PORT/bench/x.bin
 *           --followers N --size S --count C [--rate R] [--stalled K]
 *           [--follow-url URL ...] [--timeout SEC] [--transport ws|events]
 *   fastgen --scenario many --url http://127.0.0.1:PORT/bench/x.bin
 *           --resources R --followers N --size S --count C [--rate R]
 *   fastgen --selftest
 *
 * One process, one epoll loop (edge-triggered), non-blocking sockets.
 * Prints exactly one JSON line on stdout (the keys of loadgen.py's `stream`
 * and `many` results, plus connect_seconds and handshakes_per_s), and
 * progress lines on stderr: "fastgen: event connect|start|end" when the
 * followers start connecting, when the measured window starts and when it
 * ends, so a driver can read the server's CPU at those moments.
 *
 * Records are those of loadgen.py: SIZE bytes, an 8-byte big-endian
 * sequence number, an 8-byte big-endian send time (CLOCK_MONOTONIC in ns,
 * Python's time.monotonic_ns) and 'x' filler.  Followers cut their byte
 * stream into SIZE-byte records whatever the message boundaries and check
 * every sequence number arrives once and in order, every record's filler,
 * the final count, that nothing is left over and the close code (1000).
 *
 * --transport events: the followers (and stalled followers) read the event
 * stream (docs/PROTOCOL.md section 15: a GET with Accept:
 * text/event-stream, a chunked body of `id:`/`data:` events) instead of a
 * WebSocket.  The records are then text, so that they survive the UTF-8
 * decoding: the sequence number and the send time as 16 lowercase hex
 * digits each, then the filler.  Each follower undoes the chunked framing,
 * parses the events, decodes each `data:` JSON string and checks the
 * records as above, that every `id` is the offset just past the bytes
 * decoded so far, and the `end` event (code 1000, complete, the size).
 *
 * Plain C11 + POSIX/Linux: cc -std=c11 -O2 -Wall -Wextra -o fastgen fastgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_URLS 64
#define MAX_ERRORS 10      /* error strings reported */
#define CHECKER_ERRORS 5   /* sequence errors kept per follower, as loadgen */
#define HEADER 16          /* sequence number + send time, binary */
#define TEXT_HEADER 32     /* the same in hex, for --transport events */
#define FILL_CHUNK (256u << 10)  /* full speed: frames built per refill */
#define MAX_EVENTS 1024
#define TIMER_ID UINT64_MAX

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    /* xorshift64*, seeded from getrandom() */
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void rng_seed(void)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
        seed = (uint64_t)mono_ns() ^ ((uint64_t)getpid() << 32);
    rng_state = seed ? seed : 0x9E3779B97F4A7C15ULL;
}

/* A random, non-zero masking key. */
static void mask_key(uint8_t key[4])
{
    uint32_t k;
    do
        k = (uint32_t)(rng_next() >> 32);
    while (k == 0);
    memcpy(key, &k, 4);
}

/*
 * dst[i] = src[i] ^ key[i % 4], eight bytes at a time; src[0] is at
 * masking position 0 (callers keep offsets multiple of 4).
 */
static void mask_copy(uint8_t *dst, const uint8_t *src, size_t n,
                      const uint8_t key[4])
{
    uint8_t kb[8];
    uint64_t k64, w;
    size_t i = 0;
    memcpy(kb, key, 4);
    memcpy(kb + 4, key, 4);
    memcpy(&k64, kb, 8);
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, src + i, 8);
        w ^= k64;
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ key[i & 3];
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

/* Writes a client frame header (FIN, opcode, masked) and the key; returns
 * its length (at most 14). */
static size_t frame_header(uint8_t *h, unsigned op, uint64_t len,
                           const uint8_t key[4])
{
    size_t n = 0;
    h[n++] = (uint8_t)(0x80 | op);
    if (len < 126) {
        h[n++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        h[n++] = 0x80 | 126;
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    } else {
        h[n++] = 0x80 | 127;
        put_be64(h + n, len);
        n += 8;
    }
    memcpy(h + n, key, 4);
    return n + 4;
}

static void base64(char *out, const uint8_t *in, size_t n)
{
    static const char abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0, o = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = abc[v >> 6 & 63];
        out[o++] = abc[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = abc[v >> 6 & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
}

/* ------------------------------------------------------------------ */
/* Errors: the first MAX_ERRORS strings, and how many there were.      */

static char errors[MAX_ERRORS][256];
static int errors_kept;
static long errors_total;

static void add_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void add_error(const char *fmt, ...)
{
    errors_total++;
    if (errors_kept >= MAX_ERRORS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errors[errors_kept++], sizeof errors[0], fmt, ap);
    va_end(ap);
}

/* "timed out" goes first, whatever came before it. */
static void add_error_first(const char *msg)
{
    errors_total++;
    if (errors_kept < MAX_ERRORS)
        errors_kept++;
    memmove(errors[1], errors[0], sizeof errors[0] * (size_t)(errors_kept - 1));
    snprintf(errors[0], sizeof errors[0], "%s", msg);
}

static void reset_errors(void)
{
    errors_kept = 0;
    errors_total = 0;
}

/* ------------------------------------------------------------------ */
/* Configuration and state                                             */

typedef struct {
    struct sockaddr_in addr;
    char host[80];   /* the Host header */
    char path[1024]; /* path and query */
} target_t;

enum { K_APPENDER, K_FOLLOWER, K_STALLED };
enum { S_IDLE, S_CONNECTING, S_HANDSHAKE, S_OPEN, S_DONE };

struct app;
struct sse;

typedef struct conn {
    /* The data path first: frame parser and record checker. */
    uint64_t left;     /* payload bytes left in the current frame */
    uint64_t expected; /* next sequence number */
    uint32_t pos;      /* position within the current record */
    uint8_t in_frame, opcode, in_msg, corrupt;
    uint8_t kind, state, got_close, close_sent;
    uint8_t nerr, fhlen, ctllen, hs_match;
    uint8_t rec[TEXT_HEADER]; /* the current record's header */
    uint8_t fh[14];      /* a frame header split over reads */
    uint16_t close_code;
    uint16_t outlen;
    uint16_t req_off, req_len;
    uint8_t status_len, status_done, failed;
    int fd;
    uint32_t id;
    const target_t *t;
    struct app *app;
    struct sse *sse;         /* --transport events: the body's parser */
    uint8_t ctl[125];        /* control frame payload */
    uint8_t out[160];        /* pending pong / close (followers) */
    char key[32];            /* Sec-WebSocket-Key */
    char status[72];         /* the response's status line */
} conn_t;

typedef struct app {
    conn_t *c;
    uint64_t seq, due;
    uint8_t *buf;
    size_t off, len, cap;
    int sending_done, answered;
    int64_t t_sent, t_answered;
} app_t;

static struct {
    /* options */
    const char *scenario;
    const char *url;
    const char *follow_urls[MAX_URLS];
    int nfollow_urls;
    long followers, size, count, stalled, resources, inflight_max;
    double rate, timeout;
    size_t recv_size;
    int many;

    /* derived */
    uint64_t sample;
    long per_tick;
    int64_t interval_ns;
    uint8_t *filler;    /* size - hlen bytes of 'x' */
    size_t hlen;        /* a record's header: HEADER, or TEXT_HEADER */
    int sse;            /* --transport events */
    uint8_t *scratch;   /* one receive buffer for everyone */

    /* connections: appenders, followers, stalled */
    target_t *targets;
    int ntargets;
    conn_t *conns;
    size_t napp, nfol, nstall, nconns;
    app_t *apps;
    int ep, timer;

    /* progress */
    enum { PH_APPENDERS, PH_FOLLOWERS, PH_STALLED, PH_RUN, PH_DONE } phase;
    size_t app_resolved, app_done, fol_next, fol_resolved, fol_open, fol_done;
    size_t stall_next, stall_resolved, inflight;
    int abort_run, timed_out;
    int64_t t_connect0, t_last101, t0, t1, deadline;
    double cpu0, cpu1, cpu_connect0, cpu_connected;

    /* latency samples (ns) */
    int64_t *lat;
    size_t nlat, caplat;
} G;

/* ------------------------------------------------------------------ */
/* The record checker                                                  */

static const char *kind_name(const conn_t *c)
{
    return c->kind == K_APPENDER ? "appender"
           : c->kind == K_FOLLOWER ? "follower" : "stalled follower";
}

/* 16 lowercase hex digits; -1 if they are not. */
static int hex64(const uint8_t *p, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < 16; i++) {
        uint8_t ch = p[i];
        unsigned d;
        if (ch >= '0' && ch <= '9')
            d = ch - '0';
        else if (ch >= 'a' && ch <= 'f')
            d = ch - 'a' + 10;
        else
            return -1;
        x = x << 4 | d;
    }
    *v = x;
    return 0;
}

static void put_hex64(uint8_t *p, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, v >>= 4)
        p[i] = (uint8_t)digits[v & 15];
}

/* A record's header as --transport says: binary, or text. */
static void put_record_header(uint8_t *p, uint64_t seq, int64_t now)
{
    if (G.sse) {
        put_hex64(p, seq);
        put_hex64(p + 16, (uint64_t)now);
    } else {
        put_be64(p, seq);
        put_be64(p + 8, (uint64_t)now);
    }
}

static void record_header(conn_t *c, int64_t now)
{
    uint64_t seq, sent_u;
    if (G.sse) {
        if (hex64(c->rec, &seq) || hex64(c->rec + 16, &sent_u)) {
            /* Not a record's start: count it as the next one, corrupt. */
            seq = c->expected;
            sent_u = (uint64_t)now;
            add_error("follower %u: record %" PRIu64 " has no hex header",
                      c->id, c->expected);
        }
    } else {
        seq = be64(c->rec);
        sent_u = be64(c->rec + 8);
    }
    int64_t sent = (int64_t)sent_u;
    if (seq != c->expected) {
        if (c->nerr < CHECKER_ERRORS) {
            c->nerr++;
            add_error("follower %u: expected %" PRIu64 ", got %" PRIu64,
                      c->id, c->expected, seq);
        }
        c->expected = seq;
    }
    c->expected++;
    c->corrupt = 0;
    if (seq % G.sample == 0 && G.nlat < G.caplat)
        G.lat[G.nlat++] = now - sent;
}

/* Cuts a follower's bytes into records and checks each. */
static void check_bytes(conn_t *c, const uint8_t *p, size_t n, int64_t now)
{
    const uint32_t size = (uint32_t)G.size, hlen = (uint32_t)G.hlen;
    while (n) {
        if (c->pos < hlen) {
            if (c->pos == 0 && n >= size) {
                /* Whole records: the common case. */
                memcpy(c->rec, p, hlen);
                record_header(c, now);
                if (memcmp(p + hlen, G.filler, size - hlen) != 0)
                    add_error("follower %u: corrupt record %" PRIu64, c->id,
                              c->expected - 1);
                p += size;
                n -= size;
                continue;
            }
            size_t k = hlen - c->pos;
            if (k > n)
                k = n;
            memcpy(c->rec + c->pos, p, k);
            c->pos += (uint32_t)k;
            p += k;
            n -= k;
            if (c->pos < hlen)
                return;
            record_header(c, now);
            if (c->pos == size) {
                c->pos = 0;
                continue;
            }
        }
        size_t k = size - c->pos;
        if (k > n)
            k = n;
        if (!c->corrupt && memcmp(p, G.filler, k) != 0) {
            c->corrupt = 1;
            add_error("follower %u: corrupt record %" PRIu64, c->id,
                      c->expected - 1);
        }
        c->pos += (uint32_t)k;
        p += k;
        n -= k;
        if (c->pos == size)
            c->pos = 0;
    }
}

/* ------------------------------------------------------------------ */
/* Sending                                                             */

static void conn_end(conn_t *c, int64_t now);

static void conn_fail(conn_t *c, int64_t now, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void conn_fail(conn_t *c, int64_t now, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->failed = 1;
    if (c->kind == K_FOLLOWER && c->state >= S_OPEN)
        add_error("%s %u: %s (after %" PRIu64 " of %ld messages)", kind_name(c),
                  c->id, msg, c->expected, G.count);
    else
        add_error("%s %u: %s", kind_name(c), c->id, msg);
    conn_end(c, now);
}

static int app_reserve(app_t *a, size_t need)
{
    if (a->cap - a->len >= need)
        return 0;
    if (a->off) {
        memmove(a->buf, a->buf + a->off, a->len - a->off);
        a->len -= a->off;
        a->off = 0;
        if (a->cap - a->len >= need)
            return 0;
    }
    size_t cap = a->cap ? a->cap : 65536;
    while (cap - a->len < need)
        cap *= 2;
    uint8_t *buf = realloc(a->buf, cap);
    if (!buf)
        return -1;
    a->buf = buf;
    a->cap = cap;
    return 0;
}

/* Appends one record's frame, stamped now, to the appender's buffer. */
static int app_add_record(app_t *a, int64_t now)
{
    uint8_t key[4], hdr[TEXT_HEADER];
    size_t size = (size_t)G.size, hlen = G.hlen;
    if (app_reserve(a, 14 + size))
        return -1;
    uint8_t *p = a->buf + a->len;
    mask_key(key);
    size_t h = frame_header(p, 2, size, key);
    put_record_header(hdr, a->seq, now);
    /* (hlen is a multiple of 4: the filler's masking stays aligned) */
    mask_copy(p + h, hdr, hlen, key);
    mask_copy(p + h + hlen, G.filler, size - hlen, key);
    a->len += h + size;
    a->seq++;
    return 0;
}

/* A masked control frame (pong, close) to send on c. */
static int conn_queue_control(conn_t *c, unsigned op, const uint8_t *payload,
                              size_t n)
{
    uint8_t frame[6 + 125], key[4];
    mask_key(key);
    size_t h = frame_header(frame, op, n, key);
    mask_copy(frame + h, payload, n, key);
    if (c->app) {
        if (app_reserve(c->app, h + n))
            return -1;
        memcpy(c->app->buf + c->app->len, frame, h + n);
        c->app->len += h + n;
        return 0;
    }
    if (c->outlen + h + n > sizeof c->out)
        return -1;
    memcpy(c->out + c->outlen, frame, h + n);
    c->outlen += (uint16_t)(h + n);
    return 0;
}

/* Sends a follower's pending control frames; 0, or -1 on error. */
static int conn_flush_small(conn_t *c, int64_t now)
{
    while (c->outlen && c->fd >= 0) {
        ssize_t w = send(c->fd, c->out, c->outlen, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0; /* EPOLLOUT will come */
            conn_fail(c, now, "send: %s", strerror(errno));
            return -1;
        }
        memmove(c->out, c->out + w, c->outlen - (size_t)w);
        c->outlen -= (uint16_t)w;
    }
    return 0;
}

/* Sends what the appender has buffered: 1 when all of it went, 0 when the
 * socket is full (EPOLLOUT will come), -1 when the connection failed. */
static int app_flush(app_t *a, int64_t now)
{
    conn_t *c = a->c;
    if (c->state != S_OPEN)
        return -1;
    while (a->off < a->len) {
        ssize_t w = send(c->fd, a->buf + a->off, a->len - a->off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            conn_fail(c, now, "send: %s", strerror(errno));
            return -1;
        }
        a->off += (size_t)w;
        if (a->off < a->len)
            return 0; /* a short write: the socket is full */
    }
    a->off = a->len = 0;
    return 1;
}

/* After the last record: Close 1000. */
static int app_maybe_close(app_t *a)
{
    static const uint8_t normal[2] = {0x03, 0xe8};
    if (a->sending_done || a->seq < (uint64_t)G.count)
        return 0;
    a->sending_done = 1;
    a->t_sent = mono_ns();
    a->c->close_sent = 1;
    return conn_queue_control(a->c, 8, normal, 2);
}

/*
 * The appender: builds the records that are due (at a rate: those the
 * clock says; at full speed: a chunk whenever its buffer is empty, so each
 * is stamped just before it is handed to the socket), then the Close after
 * the last, and sends what the socket takes.
 */
static void app_pump(app_t *a, int64_t now)
{
    if (a->c->state != S_OPEN)
        return;
    if (G.phase != PH_RUN || a->sending_done) {
        app_flush(a, now);
        return;
    }
    if (G.rate > 0) {
        while (a->seq < a->due)
            if (app_add_record(a, now))
                goto oom;
        if (app_maybe_close(a))
            goto oom;
        app_flush(a, now);
        return;
    }
    while (app_flush(a, now) > 0 && !a->sending_done) {
        int64_t t = mono_ns();
        while ((uint64_t)G.count > a->seq && a->len < FILL_CHUNK)
            if (app_add_record(a, t))
                goto oom;
        if (app_maybe_close(a))
            goto oom;
    }
    return;
oom:
    conn_fail(a->c, now, "out of memory for the send buffer");
}

/* ------------------------------------------------------------------ */
/* Receiving: frames                                                   */

static void on_control(conn_t *c, int64_t now)
{
    if (c->opcode == 9) { /* ping: answer with a pong */
        if (conn_queue_control(c, 10, c->ctl, c->ctllen)) {
            conn_fail(c, now, "pongs piling up");
            return;
        }
    } else if (c->opcode == 8) { /* close */
        c->got_close = 1;
        c->close_code = c->ctllen >= 2 ? (uint16_t)(c->ctl[0] << 8 | c->ctl[1]) : 1005;
        if (c->kind == K_APPENDER) {
            if (!c->close_sent) {
                char reason[124] = "";
                if (c->ctllen > 2)
                    snprintf(reason, sizeof reason, "%.*s", c->ctllen - 2,
                             (const char *)c->ctl + 2);
                add_error("appender %u: closed by the server with %u %s", c->id,
                          c->close_code, reason);
            } else {
                c->app->answered = 1;
                c->app->t_answered = now;
            }
            conn_end(c, now);
            return;
        }
        if (!c->close_sent) {
            c->close_sent = 1;
            if (conn_queue_control(c, 8, c->ctl, c->ctllen >= 2 ? 2 : 0) == 0)
                conn_flush_small(c, now);
        }
        conn_end(c, now);
        return;
    }
    /* a pong: nothing to do */
}

static size_t header_length(uint8_t b1)
{
    size_t n = 2 + ((b1 & 0x80) ? 4 : 0);
    uint8_t len = b1 & 0x7f;
    return n + (len == 126 ? 2 : len == 127 ? 8 : 0);
}

/* Starts the frame whose complete header is h; 0, or -1 (failed). */
static int frame_start(conn_t *c, const uint8_t *h, int64_t now)
{
    unsigned fin = h[0] & 0x80, op = h[0] & 0x0f;
    uint64_t len = h[1] & 0x7f;
    if (h[0] & 0x70) {
        conn_fail(c, now, "protocol error: reserved bits set");
        return -1;
    }
    if (h[1] & 0x80) {
        conn_fail(c, now, "protocol error: masked frame from the server");
        return -1;
    }
    if (len == 126)
        len = (uint64_t)h[2] << 8 | h[3];
    else if (len == 127) {
        len = be64(h + 2);
        if (len >> 63) {
            conn_fail(c, now, "protocol error: frame length");
            return -1;
        }
    }
    if (op >= 8) {
        if (op > 10 || !fin || len > 125) {
            conn_fail(c, now, "protocol error: bad control frame (opcode %u)", op);
            return -1;
        }
        c->ctllen = 0;
    } else if (op == 0) {
        if (!c->in_msg) {
            conn_fail(c, now, "protocol error: continuation without a message");
            return -1;
        }
        c->in_msg = !fin;
    } else if (op == 1 || op == 2) {
        if (c->in_msg) {
            conn_fail(c, now, "protocol error: new message inside a fragmented one");
            return -1;
        }
        c->in_msg = !fin;
    } else {
        conn_fail(c, now, "protocol error: reserved opcode %u", op);
        return -1;
    }
    c->opcode = (uint8_t)op;
    c->left = len;
    c->in_frame = 1;
    if (len == 0) {
        c->in_frame = 0;
        if (op >= 8)
            on_control(c, now);
    }
    return 0;
}

/* Feeds bytes received on an open WebSocket to the frame parser. */
static void ws_feed(conn_t *c, const uint8_t *p, size_t n, int64_t now)
{
    while (n && c->state == S_OPEN) {
        if (!c->in_frame) {
            if (c->fhlen == 0 && n >= 2 && n >= header_length(p[1])) {
                size_t h = header_length(p[1]);
                const uint8_t *hp = p;
                p += h;
                n -= h;
                if (frame_start(c, hp, now))
                    return;
                continue;
            }
            if (c->fhlen < 2) {
                c->fh[c->fhlen++] = *p++;
                n--;
                continue;
            }
            size_t need = header_length(c->fh[1]) - c->fhlen;
            size_t k = need < n ? need : n;
            memcpy(c->fh + c->fhlen, p, k);
            c->fhlen += (uint8_t)k;
            p += k;
            n -= k;
            if (k == need) {
                c->fhlen = 0;
                if (frame_start(c, c->fh, now))
                    return;
            }
            continue;
        }
        size_t k = c->left < n ? (size_t)c->left : n;
        if (c->opcode >= 8) {
            memcpy(c->ctl + c->ctllen, p, k);
            c->ctllen += (uint8_t)k;
        } else if (c->kind == K_FOLLOWER) {
            check_bytes(c, p, k, now);
        }
        p += k;
        n -= k;
        c->left -= k;
        if (c->left == 0) {
            c->in_frame = 0;
            if (c->opcode >= 8)
                on_control(c, now);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Receiving: the event stream (--transport events)                    */

/*
 * Three layers, each a state machine fed any split of the bytes: the
 * chunked transfer coding, the event stream's lines (as the server writes
 * them: LF-terminated; `id`, `event` and `data` fields, `:` comments), and
 * a `data:` line's JSON string, whose decoded bytes go to check_bytes.
 */
enum { CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF,
       CH_TRAILER_LF, CH_DONE };
enum { LN_START, LN_FIELD, LN_SPACE, LN_VALUE, LN_SKIP };
enum { F_OTHER, F_ID, F_EVENT, F_DATA };
enum { J_NONE, J_STR, J_ESC, J_U, J_AFTER, J_OBJ };

typedef struct sse {
    uint64_t chunk;      /* chunk size being read, then bytes left of it */
    uint64_t offset;     /* bytes decoded from data strings so far */
    uint64_t id;         /* the current event's id */
    uint32_t ucode;      /* a \uXXXX escape being read */
    uint8_t ch, ln, field, js, udigits, flen, has_id, has_data, got_end;
    uint8_t elen, olen;
    char fname[8];
    char event[16];
    char obj[200];       /* the end event's data */
    long comments;
} sse_t;

static void sse_dispatch(conn_t *c, int64_t now)
{
    sse_t *e = c->sse;
    if (e->elen == 3 && memcmp(e->event, "end", 3) == 0) {
        e->obj[e->olen] = '\0';
        const char *code = strstr(e->obj, "\"code\": ");
        const char *size = strstr(e->obj, "\"size\": ");
        const char *complete = strstr(e->obj, "\"complete\": ");
        if (!code || !size || !complete) {
            conn_fail(c, now, "an end event without code, size or complete: %.80s",
                      e->obj);
            return;
        }
        c->got_close = 1;
        c->close_code = (uint16_t)strtoul(code + 8, NULL, 10);
        uint64_t n = strtoull(size + 8, NULL, 10);
        int yes = strncmp(complete + 12, "true", 4) == 0;
        if (c->close_code == 1000 && !yes)
            add_error("follower %u: end code 1000 but not complete", c->id);
        if (c->close_code == 1000 && n != e->offset)
            add_error("follower %u: end size %" PRIu64 ", %" PRIu64 " bytes decoded",
                      c->id, n, e->offset);
        e->got_end = 1;
    } else if (e->elen) {
        conn_fail(c, now, "an unknown event %.*s", e->elen, e->event);
        return;
    } else if (e->has_data) {
        if (!e->has_id)
            add_error("follower %u: an event without an id", c->id);
        else if (e->id != e->offset)
            add_error("follower %u: id %" PRIu64 " after %" PRIu64 " bytes", c->id,
                      e->id, e->offset);
    } else if (e->has_id) {
        add_error("follower %u: an id without data", c->id);
    }
    e->has_id = e->has_data = 0;
    e->elen = e->olen = 0;
}

/* One decoded byte of a data string: to the checker, in runs. */
static void sse_decoded(conn_t *c, const uint8_t *p, size_t n, int64_t now)
{
    c->sse->offset += n;
    check_bytes(c, p, n, now);
}

/* A \uXXXX escape's code point, as UTF-8. */
static void sse_code_point(conn_t *c, uint32_t u, int64_t now)
{
    uint8_t b[3];
    size_t n;
    if (u < 0x80) {
        b[0] = (uint8_t)u;
        n = 1;
    } else if (u < 0x800) {
        b[0] = (uint8_t)(0xc0 | u >> 6);
        b[1] = (uint8_t)(0x80 | (u & 0x3f));
        n = 2;
    } else if (u < 0xd800 || u > 0xdfff) {
        b[0] = (uint8_t)(0xe0 | u >> 12);
        b[1] = (uint8_t)(0x80 | (u >> 6 & 0x3f));
        b[2] = (uint8_t)(0x80 | (u & 0x3f));
        n = 3;
    } else {
        conn_fail(c, now, "a surrogate escape in a data string");
        return;
    }
    sse_decoded(c, b, n, now);
}

/* The body's bytes (chunked coding undone): lines, fields, JSON. */
static void sse_lines(conn_t *c, const uint8_t *p, size_t n, int64_t now)
{
    sse_t *e = c->sse;
    while (n && c->state == S_OPEN) {
        uint8_t b = *p;
        if (e->ln == LN_VALUE && e->field == F_DATA && e->js == J_STR) {
            /* The bulk: a run of plain string bytes. */
            size_t k = 0;
            while (k < n && p[k] != '"' && p[k] != '\\' && p[k] != '\n' &&
                   p[k] >= 0x20)
                k++;
            if (k) {
                sse_decoded(c, p, k, now);
                p += k;
                n -= k;
                continue;
            }
        }
        p++;
        n--;
        switch (e->ln) {
        case LN_START:
            if (b == '\n')
                sse_dispatch(c, now);
            else if (b == ':')
                e->ln = LN_SKIP, e->comments++;
            else {
                e->fname[0] = (char)b;
                e->flen = 1;
                e->ln = LN_FIELD;
            }
            break;
        case LN_FIELD:
            if (b == ':' || b == '\n') {
                e->field = e->flen == 2 && memcmp(e->fname, "id", 2) == 0     ? F_ID
                           : e->flen == 5 && memcmp(e->fname, "event", 5) == 0 ? F_EVENT
                           : e->flen == 4 && memcmp(e->fname, "data", 4) == 0  ? F_DATA
                                                                               : F_OTHER;
                if (e->field == F_ID) {
                    e->id = 0;
                    e->udigits = 0;
                }
                if (e->field == F_EVENT)
                    e->elen = 0;
                if (e->field == F_DATA)
                    e->js = J_NONE;
                if (b == '\n') {
                    conn_fail(c, now, "a field without a value");
                    return;
                }
                e->ln = LN_SPACE;
            } else if (e->flen < sizeof e->fname) {
                e->fname[e->flen++] = (char)b;
            } else {
                e->flen = sizeof e->fname + 1; /* too long: F_OTHER */
            }
            break;
        case LN_SPACE:
            e->ln = LN_VALUE;
            if (b == ' ')
                break;
            __attribute__((fallthrough)); /* b is the value's first byte */
        case LN_VALUE:
            if (e->field == F_ID) {
                if (b == '\n') {
                    if (!e->udigits) {
                        conn_fail(c, now, "an empty id");
                        return;
                    }
                    e->has_id = 1;
                    e->ln = LN_START;
                } else if (b >= '0' && b <= '9' && e->udigits < 19) {
                    e->id = e->id * 10 + (b - '0');
                    e->udigits++;
                } else {
                    conn_fail(c, now, "an id that is not a byte offset");
                    return;
                }
            } else if (e->field == F_EVENT) {
                if (b == '\n')
                    e->ln = LN_START;
                else if (e->elen < sizeof e->event)
                    e->event[e->elen++] = (char)b;
            } else if (e->field == F_DATA) {
                if (e->js == J_NONE) {
                    if (b == '"') {
                        e->js = J_STR;
                        e->has_data = 1;
                    } else if (b == '{') {
                        e->js = J_OBJ;
                        e->obj[e->olen++] = (char)b;
                    } else {
                        conn_fail(c, now, "data that is neither a string nor an object");
                        return;
                    }
                } else if (e->js == J_OBJ) {
                    if (b == '\n')
                        e->ln = LN_START;
                    else if (e->olen < sizeof e->obj - 1)
                        e->obj[e->olen++] = (char)b;
                } else if (e->js == J_STR) {
                    if (b == '"')
                        e->js = J_AFTER;
                    else if (b == '\\')
                        e->js = J_ESC;
                    else {
                        conn_fail(c, now, "a raw control character in a data string");
                        return;
                    }
                } else if (e->js == J_ESC) {
                    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
                    const char *at = b ? strchr(from, b) : NULL;
                    if (b == 'u') {
                        e->js = J_U;
                        e->ucode = 0;
                        e->udigits = 0;
                    } else if (at) {
                        uint8_t out = (uint8_t)to[at - from];
                        sse_decoded(c, &out, 1, now);
                        e->js = J_STR;
                    } else {
                        conn_fail(c, now, "a bad escape in a data string");
                        return;
                    }
                } else if (e->js == J_U) {
                    int d = b >= '0' && b <= '9'   ? b - '0'
                            : b >= 'a' && b <= 'f' ? b - 'a' + 10
                            : b >= 'A' && b <= 'F' ? b - 'A' + 10
                                                   : -1;
                    if (d < 0) {
                        conn_fail(c, now, "a bad \\u escape in a data string");
                        return;
                    }
                    e->ucode = e->ucode << 4 | (uint32_t)d;
                    if (++e->udigits == 4) {
                        e->js = J_STR;
                        sse_code_point(c, e->ucode, now);
                    }
                } else if (e->js == J_AFTER) {
                    if (b != '\n') {
                        conn_fail(c, now, "bytes after a data string");
                        return;
                    }
                    e->ln = LN_START;
                }
            } else if (b == '\n') {
                e->ln = LN_START;
            }
            break;
        case LN_SKIP:
            if (b == '\n')
                e->ln = LN_START;
            break;
        }
    }
}

/* Bytes of the response body: the chunked coding undone. */
static void sse_feed(conn_t *c, const uint8_t *p, size_t n, int64_t now)
{
    sse_t *e = c->sse;
    while (n && c->state == S_OPEN) {
        if (e->ch == CH_DATA) {
            size_t k = e->chunk < n ? (size_t)e->chunk : n;
            sse_lines(c, p, k, now);
            p += k;
            n -= k;
            e->chunk -= k;
            if (e->chunk == 0)
                e->ch = CH_DATA_CR;
            continue;
        }
        uint8_t b = *p++;
        n--;
        int hex = b >= '0' && b <= '9'   ? b - '0'
                  : b >= 'a' && b <= 'f' ? b - 'a' + 10
                  : b >= 'A' && b <= 'F' ? b - 'A' + 10
                                         : -1;
        switch (e->ch) {
        case CH_SIZE:
            if (hex >= 0 && e->chunk < (UINT64_C(1) << 40))
                e->chunk = e->chunk << 4 | (uint64_t)hex;
            else if (b == ';')
                e->ch = CH_EXT;
            else if (b == '\r')
                e->ch = CH_SIZE_LF;
            else
                goto bad;
            break;
        case CH_EXT:
            if (b == '\r')
                e->ch = CH_SIZE_LF;
            break;
        case CH_SIZE_LF:
            if (b != '\n')
                goto bad;
            e->ch = e->chunk ? CH_DATA : CH_TRAILER_LF;
            break;
        case CH_DATA_CR:
            if (b != '\r')
                goto bad;
            e->ch = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (b != '\n')
                goto bad;
            e->ch = CH_SIZE;
            e->chunk = 0;
            break;
        case CH_TRAILER_LF:
            /* The last chunk's empty trailer: "\r\n". */
            if (b == '\r')
                break;
            if (b != '\n')
                goto bad;
            e->ch = CH_DONE;
            if (!e->got_end) {
                conn_fail(c, now, "the body ended without an end event");
                return;
            }
            conn_end(c, now);
            return;
        default:
            goto bad;
        }
    }
    return;
bad:
    conn_fail(c, now, "bad chunked coding");
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */

static void conn_opened(conn_t *c, int64_t now)
{
    c->state = S_OPEN;
    if (c->kind == K_APPENDER) {
        G.app_resolved++;
    } else if (c->kind == K_FOLLOWER) {
        G.fol_resolved++;
        G.fol_open++;
        G.inflight--;
        G.t_last101 = now;
    } else {
        G.stall_resolved++;
    }
}

static void conn_end(conn_t *c, int64_t now)
{
    if (c->state == S_DONE)
        return;
    int was_open = c->state == S_OPEN;
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    if (!was_open) { /* failed to connect */
        if (c->kind == K_APPENDER) {
            G.app_resolved++;
            G.abort_run = 1;
        } else if (c->kind == K_FOLLOWER) {
            G.fol_resolved++;
            G.inflight--;
        } else {
            G.stall_resolved++;
        }
    }
    c->state = S_DONE;
    if (c->kind == K_FOLLOWER)
        G.fol_done++;
    else if (c->kind == K_APPENDER)
        G.app_done++;
    (void)now;
}

static int build_request(const conn_t *c, char *buf, size_t cap)
{
    if (c->sse)
        return snprintf(buf, cap,
                        "GET %s HTTP/1.1\r\n"
                        "Host: %s\r\n"
                        "Accept: text/event-stream\r\n"
                        "\r\n",
                        c->t->path, c->t->host);
    return snprintf(buf, cap,
                    "GET %s HTTP/1.1\r\n"
                    "Host: %s\r\n"
                    "Upgrade: websocket\r\n"
                    "Connection: Upgrade\r\n"
                    "Sec-WebSocket-Key: %s\r\n"
                    "Sec-WebSocket-Version: 13\r\n"
                    "X-Verb: %s\r\n"
                    "\r\n",
                    c->t->path, c->t->host, c->key,
                    c->kind == K_APPENDER ? "APPEND" : "FOLLOW");
}

/* Sends (the rest of) the opening handshake. */
static void hs_send(conn_t *c, int64_t now)
{
    char req[1400];
    int len = build_request(c, req, sizeof req);
    while (c->req_off < len) {
        ssize_t w = send(c->fd, req + c->req_off, (size_t)(len - c->req_off),
                         MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN)
                return; /* still connecting: EPOLLOUT will come */
            conn_fail(c, now, "connect: %s", strerror(errno));
            return;
        }
        c->req_off += (uint16_t)w;
    }
    c->state = S_HANDSHAKE;
}

static void conn_start(conn_t *c, int64_t now)
{
    uint8_t raw[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rng_next();
        memcpy(raw + i, &r, 8);
    }
    base64(c->key, raw, 16);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->state = S_CONNECTING;
    if (c->fd < 0) {
        conn_fail(c, now, "socket: %s", strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
        .data.u64 = (uint64_t)(c - G.conns),
    };
    if (epoll_ctl(G.ep, EPOLL_CTL_ADD, c->fd, &ev)) {
        conn_fail(c, now, "epoll_ctl: %s", strerror(errno));
        return;
    }
    if (connect(c->fd, (const struct sockaddr *)&c->t->addr, sizeof c->t->addr) &&
        errno != EINPROGRESS) {
        conn_fail(c, now, "connect: %s", strerror(errno));
        return;
    }
    hs_send(c, now); /* on loopback the connection is usually there already */
}

/* The response head, byte by byte (it is small); returns how many bytes of
 * p it took, with c->state S_OPEN once it is complete and a 101. */
static size_t hs_parse(conn_t *c, const uint8_t *p, size_t n, int64_t now)
{
    static const char end[] = "\r\n\r\n";
    size_t i = 0;
    while (i < n) {
        uint8_t b = p[i++];
        if (!c->status_done) {
            if (b == '\r' || b == '\n')
                c->status_done = 1;
            else if (c->status_len < sizeof c->status - 1)
                c->status[c->status_len++] = (char)b;
        }
        if (b == (uint8_t)end[c->hs_match])
            c->hs_match++;
        else
            c->hs_match = b == '\r' ? 1 : 0;
        if (c->hs_match == 4) {
            c->status[c->status_len] = '\0';
            /* An event stream is a 200; a WebSocket a 101. */
            const char *code = c->sse ? "200" : "101";
            if ((strncmp(c->status, "HTTP/1.1 ", 9) != 0 &&
                 strncmp(c->status, "HTTP/1.0 ", 9) != 0) ||
                strncmp(c->status + 9, code, 3) != 0) {
                conn_fail(c, now, "handshake answered \"%s\"", c->status);
                return n;
            }
            conn_opened(c, now);
            return i;
        }
    }
    return i;
}

/* Reads what is there (edge-triggered: until a short read). */
static void conn_read(conn_t *c, int64_t now)
{
    for (;;) {
        ssize_t r = recv(c->fd, G.scratch, G.recv_size, 0);
        if (r > 0) {
            int64_t t = mono_ns();
            const uint8_t *p = G.scratch;
            size_t n = (size_t)r;
            if (c->state == S_HANDSHAKE) {
                size_t k = hs_parse(c, p, n, t);
                p += k;
                n -= k;
                if (c->state == S_OPEN && c->kind == K_STALLED) {
                    /* From now on it never reads. */
                    epoll_ctl(G.ep, EPOLL_CTL_DEL, c->fd, NULL);
                    return;
                }
            }
            if (c->state == S_OPEN && c->sse)
                sse_feed(c, p, n, t);
            else if (c->state == S_OPEN)
                ws_feed(c, p, n, t);
            if (c->state == S_DONE)
                return;
            if (c->outlen)
                conn_flush_small(c, t);
            else if (c->app && c->app->len > c->app->off)
                app_pump(c->app, t);
            if (c->state == S_DONE || (size_t)r < G.recv_size)
                return;
            continue;
        }
        if (r == 0) {
            conn_fail(c, now, "connection closed by the server without a Close");
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            conn_fail(c, now, "recv: %s", strerror(errno));
        return;
    }
}

static void on_event(conn_t *c, uint32_t ev, int64_t now)
{
    if (c->state == S_CONNECTING) {
        hs_send(c, now);
        if (c->state != S_HANDSHAKE)
            return;
    }
    if (c->state == S_HANDSHAKE) {
        if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            conn_read(c, now);
        return;
    }
    if (c->state != S_OPEN || c->kind == K_STALLED)
        return;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        conn_read(c, now);
    if (c->state == S_OPEN && (ev & EPOLLOUT)) {
        if (c->app)
            app_pump(c->app, now);
        else if (c->outlen)
            conn_flush_small(c, now);
    }
}

/* ------------------------------------------------------------------ */
/* The run                                                             */

static void event_line(const char *name)
{
    fprintf(stderr, "fastgen: event %s\n", name);
    fflush(stderr);
}

static void on_timer(int64_t now)
{
    uint64_t expirations;
    if (read(G.timer, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
        add_error("timerfd: %s", strerror(errno));
    /* Due by the clock: missed ticks are caught up, never drift. */
    uint64_t ticks = (uint64_t)((now - G.t0) / G.interval_ns) + 1;
    uint64_t due = ticks * (uint64_t)G.per_tick;
    if (due > (uint64_t)G.count)
        due = (uint64_t)G.count;
    int all = 1;
    for (size_t i = 0; i < G.napp; i++) {
        app_t *a = &G.apps[i];
        if (a->c->state != S_OPEN || a->sending_done)
            continue;
        a->due = due;
        app_pump(a, now);
        all &= a->sending_done;
    }
    if (all) {
        struct itimerspec off = {{0, 0}, {0, 0}};
        timerfd_settime(G.timer, 0, &off, NULL);
    }
}

static void begin_run(void)
{
    G.phase = PH_RUN;
    event_line("start");
    G.cpu0 = cpu_seconds();
    G.t0 = mono_ns();
    if (G.rate > 0) {
        int64_t first = G.t0 + G.interval_ns;
        struct itimerspec its = {
            .it_interval = {G.interval_ns / 1000000000, G.interval_ns % 1000000000},
            .it_value = {first / 1000000000, first % 1000000000},
        };
        if (timerfd_settime(G.timer, TFD_TIMER_ABSTIME, &its, NULL))
            add_error("timerfd_settime: %s", strerror(errno));
        for (size_t i = 0; i < G.napp; i++)
            G.apps[i].due = (uint64_t)(G.per_tick < G.count ? G.per_tick : G.count);
    }
    for (size_t i = 0; i < G.napp; i++)
        if (G.apps[i].c->state == S_OPEN)
            app_pump(&G.apps[i], G.t0);
}

/* Moves from one phase to the next when the current one is over. */
static void advance(int64_t now)
{
    for (;;) {
        if (G.abort_run && G.phase < PH_RUN) {
            G.phase = PH_DONE;
            return;
        }
        switch (G.phase) {
        case PH_APPENDERS:
            if (G.app_resolved < G.napp)
                return;
            G.phase = PH_FOLLOWERS;
            event_line("connect");
            G.cpu_connect0 = cpu_seconds();
            G.t_connect0 = mono_ns();
            continue;
        case PH_FOLLOWERS:
            while (G.inflight < (size_t)G.inflight_max && G.fol_next < G.nfol) {
                conn_t *c = &G.conns[G.napp + G.fol_next++];
                G.inflight++;
                conn_start(c, now);
            }
            if (G.fol_resolved < G.nfol)
                return;
            G.cpu_connected = cpu_seconds();
            G.phase = PH_STALLED;
            while (G.stall_next < G.nstall)
                conn_start(&G.conns[G.napp + G.nfol + G.stall_next++], now);
            continue;
        case PH_STALLED:
            if (G.stall_resolved < G.nstall)
                return;
            begin_run();
            continue;
        case PH_RUN:
            if (G.app_done < G.napp || G.fol_done < G.nfol)
                return;
            G.t1 = mono_ns();
            G.cpu1 = cpu_seconds();
            G.phase = PH_DONE;
            event_line("end");
            return;
        case PH_DONE:
            return;
        }
    }
}

static void loop(void)
{
    struct epoll_event evs[MAX_EVENTS];
    for (size_t i = 0; i < G.napp; i++)
        conn_start(&G.conns[i], mono_ns());
    advance(mono_ns());
    while (G.phase != PH_DONE) {
        int64_t now = mono_ns();
        if (now >= G.deadline) {
            G.timed_out = 1;
            return;
        }
        int64_t wait = (G.deadline - now) / 1000000 + 1;
        int n = epoll_wait(G.ep, evs, MAX_EVENTS, wait > 1000 ? 1000 : (int)wait);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            add_error("epoll_wait: %s", strerror(errno));
            return;
        }
        now = mono_ns();
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == TIMER_ID)
                on_timer(now);
            else
                on_event(&G.conns[evs[i].data.u64], evs[i].events, now);
        }
        advance(now);
    }
}

/* ------------------------------------------------------------------ */
/* Results                                                             */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* As loadgen's percentile: sorted, index min(len - 1, int(len * p)), ms. */
static double percentile(const int64_t *v, size_t n, double p)
{
    if (!n)
        return 0.0;
    size_t i = (size_t)((double)n * p);
    if (i > n - 1)
        i = n - 1;
    return (double)v[i] / 1e6;
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void json_number(FILE *f, const char *key, double v)
{
    if (isfinite(v))
        fprintf(f, ", \"%s\": %.6f", key, v);
    else
        fprintf(f, ", \"%s\": null", key);
}

/* Every follower's verdict, then the JSON line. */
static void report(void)
{
    if (G.timed_out)
        add_error_first("timed out");
    for (size_t i = 0; i < G.nfol; i++) {
        conn_t *c = &G.conns[G.napp + i];
        if (c->failed || c->state < S_OPEN)
            continue; /* reported when it failed, or never connected */
        if (!c->got_close) {
            add_error("follower %u: not closed (got %" PRIu64 " of %ld messages)",
                      c->id, c->expected, G.count);
            continue;
        }
        if (c->close_code != 1000)
            add_error("follower %u: closed %u", c->id, c->close_code);
        if (c->expected != (uint64_t)G.count || c->pos != 0)
            add_error("follower %u: got %" PRIu64 " of %ld messages%s", c->id,
                      c->expected, G.count, c->pos ? " and a partial record" : "");
    }
    for (size_t i = 0; i < G.napp; i++) {
        conn_t *c = G.apps[i].c;
        if (G.t0 && !G.apps[i].answered && !c->failed && !c->got_close)
            add_error("appender %zu: its Close was not answered", i);
    }

    /* The rates only for a window that ended (not timed out, not aborted);
     * otherwise null, as the byte_exact false and the errors say why. */
    int complete = G.t0 && G.phase == PH_DONE && !G.timed_out;
    double elapsed = complete ? (double)(G.t1 - G.t0) / 1e9 : NAN;
    double send_s = complete ? 0 : NAN, append_s = complete ? 0 : NAN;
    for (size_t i = 0; complete && i < G.napp; i++) {
        app_t *a = &G.apps[i];
        if (!a->sending_done || !a->answered) {
            send_s = append_s = NAN;
            break;
        }
        if ((double)(a->t_sent - G.t0) / 1e9 > send_s)
            send_s = (double)(a->t_sent - G.t0) / 1e9;
        if ((double)(a->t_answered - G.t0) / 1e9 > append_s)
            append_s = (double)(a->t_answered - G.t0) / 1e9;
    }
    double connect_s = G.fol_open ? (double)(G.t_last101 - G.t_connect0) / 1e9 : NAN;

    qsort(G.lat, G.nlat, sizeof G.lat[0], cmp_i64);
    double total = (double)G.size * (double)G.count;
    double appended = total * (double)G.napp;
    double delivered = 0; /* bytes of the records the followers checked */
    for (size_t i = 0; i < G.nfol; i++)
        delivered += (double)G.conns[G.napp + i].expected * (double)G.size;

    FILE *f = stdout;
    fprintf(f, "{\"generator\": \"fastgen\"");
    fprintf(f, ", \"messages\": %ld", G.count);
    fprintf(f, ", \"bytes_appended\": %.0f", appended);
    if (G.many)
        fprintf(f, ", \"followers_total\": %zu", G.nfol);
    json_number(f, "send_seconds", send_s);
    json_number(f, "append_seconds", append_s);
    json_number(f, "seconds", elapsed);
    json_number(f, "append_MBps", appended / append_s / 1e6);
    json_number(f, "delivered_MBps", delivered / elapsed / 1e6);
    json_number(f, "messages_per_s", (double)G.count / elapsed);
    /* No followers, no latency: null rather than 0. */
    double none = G.nlat ? 0.0 : NAN;
    json_number(f, "p50_ms", percentile(G.lat, G.nlat, 0.50) + none);
    json_number(f, "p99_ms", percentile(G.lat, G.nlat, 0.99) + none);
    json_number(f, "max_ms", percentile(G.lat, G.nlat, 1.0) + none);
    fprintf(f, ", \"latency_samples\": %zu", G.nlat);
    fprintf(f, ", \"byte_exact\": %s", errors_total ? "false" : "true");
    fprintf(f, ", \"errors\": [");
    for (int i = 0; i < errors_kept; i++) {
        if (i)
            fputs(", ", f);
        json_string(f, errors[i]);
    }
    fprintf(f, "], \"errors_total\": %ld", errors_total);
    json_number(f, "loadgen_cpu", (G.cpu1 - G.cpu0) / elapsed);
    fprintf(f, ", \"followers_connected\": %zu", G.fol_open);
    json_number(f, "connect_seconds", connect_s);
    json_number(f, "handshakes_per_s", (double)G.fol_open / connect_s);
    /* The generator's own CPU share while they connected. */
    json_number(f, "loadgen_connect_cpu", (G.cpu_connected - G.cpu_connect0) / connect_s);
    fprintf(f, "}\n");
    fflush(f);
}

/* ------------------------------------------------------------------ */
/* Set-up                                                              */

static int parse_url(const char *url, target_t *t, const char *suffix)
{
    const char *p = url;
    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    else if (strncmp(p, "ws://", 5) == 0)
        p += 5;
    else
        return -1;
    const char *slash = strchr(p, '/');
    size_t hostlen = slash ? (size_t)(slash - p) : strlen(p);
    if (hostlen == 0 || hostlen >= sizeof t->host)
        return -1;
    memcpy(t->host, p, hostlen);
    t->host[hostlen] = '\0';
    char name[80];
    long port = 80;
    const char *colon = strrchr(t->host, ':');
    size_t namelen = colon ? (size_t)(colon - t->host) : hostlen;
    memcpy(name, t->host, namelen);
    name[namelen] = '\0';
    if (colon) {
        char *endp;
        port = strtol(colon + 1, &endp, 10);
        if (*endp || port <= 0 || port > 65535)
            return -1;
    }
    if (strcmp(name, "localhost") == 0)
        strcpy(name, "127.0.0.1");
    memset(&t->addr, 0, sizeof t->addr);
    t->addr.sin_family = AF_INET;
    t->addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, name, &t->addr.sin_addr) != 1)
        return -1;
    /* Only loopback: this is a local benchmark. */
    if ((ntohl(t->addr.sin_addr.s_addr) >> 24) != 127)
        return -1;
    int n = snprintf(t->path, sizeof t->path, "%s%s", slash ? slash : "/", suffix);
    return n < (int)sizeof t->path ? 0 : -1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: fastgen --scenario stream|many --url URL --followers N --size S\n"
            "               --count C [--rate R] [--stalled K] [--resources R]\n"
            "               [--follow-url URL ...] [--timeout SEC] [--inflight N]\n"
            "               [--recv-size BYTES] [--transport ws|events]\n"
            "       fastgen --selftest\n");
    exit(2);
}

static long num(const char *name, const char *v, long lo, long hi)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || x < lo || x > hi) {
        fprintf(stderr, "fastgen: bad %s: %s\n", name, v);
        exit(2);
    }
    return x;
}

static double real(const char *name, const char *v)
{
    char *end;
    double x = strtod(v, &end);
    if (*end || !isfinite(x) || x < 0) {
        fprintf(stderr, "fastgen: bad %s: %s\n", name, v);
        exit(2);
    }
    return x;
}

static int selftest(void);

static void parse_args(int argc, char **argv)
{
    G.scenario = "stream";
    G.followers = 1;
    G.size = 1024;
    G.count = 1000;
    G.resources = 1;
    G.timeout = 300;
    G.inflight_max = 1000;
    G.recv_size = 256u << 10;
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i], *val = NULL, name[64];
        if (strncmp(arg, "--", 2) != 0)
            usage();
        char *eq = strchr(arg, '=');
        if (eq) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - arg), arg);
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", arg);
        }
        if (strcmp(name, "--selftest") == 0)
            exit(selftest());
        if (strcmp(name, "--help") == 0)
            usage();
        if (!val) {
            if (i + 1 >= argc)
                usage();
            val = argv[++i];
        }
        if (strcmp(name, "--scenario") == 0)
            G.scenario = val;
        else if (strcmp(name, "--url") == 0)
            G.url = val;
        else if (strcmp(name, "--follow-url") == 0) {
            if (G.nfollow_urls >= MAX_URLS)
                usage();
            G.follow_urls[G.nfollow_urls++] = val;
        } else if (strcmp(name, "--followers") == 0)
            G.followers = num(name, val, 0, 1000000);
        else if (strcmp(name, "--size") == 0)
            G.size = num(name, val, HEADER + 1, 64L << 20);
        else if (strcmp(name, "--count") == 0)
            G.count = num(name, val, 1, LONG_MAX / 2);
        else if (strcmp(name, "--stalled") == 0)
            G.stalled = num(name, val, 0, 100000);
        else if (strcmp(name, "--resources") == 0)
            G.resources = num(name, val, 1, 100000);
        else if (strcmp(name, "--inflight") == 0)
            G.inflight_max = num(name, val, 1, 1000000);
        else if (strcmp(name, "--recv-size") == 0)
            G.recv_size = (size_t)num(name, val, 4096, 64L << 20);
        else if (strcmp(name, "--rate") == 0)
            G.rate = real(name, val);
        else if (strcmp(name, "--timeout") == 0)
            G.timeout = real(name, val);
        else if (strcmp(name, "--transport") == 0) {
            if (strcmp(val, "events") == 0)
                G.sse = 1;
            else if (strcmp(val, "ws") != 0) {
                fprintf(stderr, "fastgen: --transport must be ws or events\n");
                exit(2);
            }
        }
        else {
            fprintf(stderr, "fastgen: unknown option %s\n", name);
            usage();
        }
    }
    if (!G.url)
        usage();
    G.hlen = G.sse ? TEXT_HEADER : HEADER;
    if ((size_t)G.size <= G.hlen) {
        fprintf(stderr, "fastgen: --size must be over %zu\n", G.hlen);
        exit(2);
    }
    if (strcmp(G.scenario, "many") == 0)
        G.many = 1;
    else if (strcmp(G.scenario, "stream") != 0) {
        fprintf(stderr, "fastgen: scenario must be stream or many\n");
        exit(2);
    }
}

static void setup(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    G.napp = G.many ? (size_t)G.resources : 1;
    G.nfol = (size_t)G.followers * (G.many ? (size_t)G.resources : 1);
    G.nstall = G.many ? 0 : (size_t)G.stalled;
    G.nconns = G.napp + G.nfol + G.nstall;

    /* Targets: one per appender (resource), then the follow URLs. */
    G.ntargets = (int)G.napp + G.nfollow_urls;
    G.targets = calloc((size_t)G.ntargets, sizeof *G.targets);
    G.conns = calloc(G.nconns ? G.nconns : 1, sizeof *G.conns);
    G.apps = calloc(G.napp, sizeof *G.apps);
    if (!G.targets || !G.conns || !G.apps) {
        fprintf(stderr, "fastgen: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < G.napp; i++) {
        char suffix[32] = "";
        if (G.many)
            snprintf(suffix, sizeof suffix, "-%zu", i);
        if (parse_url(G.url, &G.targets[i], suffix)) {
            fprintf(stderr, "fastgen: need an http://127.x.x.x:PORT/path URL: %s\n", G.url);
            exit(2);
        }
    }
    for (int i = 0; i < G.nfollow_urls; i++)
        if (parse_url(G.follow_urls[i], &G.targets[G.napp + (size_t)i], "")) {
            fprintf(stderr, "fastgen: bad --follow-url %s\n", G.follow_urls[i]);
            exit(2);
        }

    for (size_t i = 0; i < G.nconns; i++) {
        conn_t *c = &G.conns[i];
        c->fd = -1;
        if (i < G.napp) {
            c->kind = K_APPENDER;
            c->id = (uint32_t)i;
            c->t = &G.targets[i];
            c->app = &G.apps[i];
            G.apps[i].c = c;
        } else if (i < G.napp + G.nfol) {
            size_t k = i - G.napp;
            c->kind = K_FOLLOWER;
            c->id = (uint32_t)k;
            if (G.many)
                c->t = &G.targets[k / (size_t)G.followers];
            else if (G.nfollow_urls)
                c->t = &G.targets[G.napp + k % (size_t)G.nfollow_urls];
            else
                c->t = &G.targets[0];
        } else {
            c->kind = K_STALLED;
            c->id = (uint32_t)(i - G.napp - G.nfol);
            c->t = &G.targets[0];
        }
        if (G.sse && c->kind != K_APPENDER) {
            c->sse = calloc(1, sizeof *c->sse);
            if (!c->sse) {
                fprintf(stderr, "fastgen: out of memory\n");
                exit(1);
            }
        }
    }

    /* As loadgen: about 200,000 latency samples at most. */
    G.sample = (uint64_t)G.count * G.nfol / 200000;
    if (G.sample < 1)
        G.sample = 1;
    G.caplat = G.nfol * ((size_t)G.count / G.sample + 1) + 1;
    G.lat = malloc(G.caplat * sizeof *G.lat);
    G.filler = malloc((size_t)G.size);
    G.scratch = malloc(G.recv_size);
    if (!G.lat || !G.filler || !G.scratch) {
        fprintf(stderr, "fastgen: out of memory\n");
        exit(1);
    }
    memset(G.filler, 'x', (size_t)G.size);

    if (G.rate > 0) {
        G.per_tick = (long)(G.rate / 100);
        if (G.per_tick < 1)
            G.per_tick = 1;
        G.interval_ns = (int64_t)((double)G.per_tick / G.rate * 1e9);
        if (G.interval_ns < 1)
            G.interval_ns = 1;
    }
    G.ep = epoll_create1(EPOLL_CLOEXEC);
    G.timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (G.ep < 0 || G.timer < 0) {
        fprintf(stderr, "fastgen: epoll/timerfd: %s\n", strerror(errno));
        exit(1);
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TIMER_ID};
    epoll_ctl(G.ep, EPOLL_CTL_ADD, G.timer, &ev);
}

/* Stalled followers are aborted (RST) at the end. */
static void abort_stalled(void)
{
    struct linger lg = {1, 0};
    for (size_t i = G.napp + G.nfol; i < G.nconns; i++) {
        conn_t *c = &G.conns[i];
        if (c->fd >= 0) {
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(c->fd);
            c->fd = -1;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Self-test: the checker and the frame parser must catch defects.     */

static int st_failures;

static void st_expect(int ok, const char *what)
{
    fprintf(stderr, "selftest: %-58s %s\n", what, ok ? "ok" : "FAILED");
    if (!ok)
        st_failures++;
}

static int st_has_error(const char *needle)
{
    for (int i = 0; i < errors_kept; i++)
        if (strstr(errors[i], needle))
            return 1;
    return 0;
}

/* n records of G.size bytes, sequence numbers from seqs[]. */
static size_t st_records(uint8_t *buf, const uint64_t *seqs, size_t n)
{
    size_t size = (size_t)G.size;
    for (size_t i = 0; i < n; i++) {
        put_be64(buf + i * size, seqs[i]);
        put_be64(buf + i * size + 8, (uint64_t)mono_ns());
        memset(buf + i * size + HEADER, 'x', size - HEADER);
    }
    return n * size;
}

/* Server-style (unmasked) frame header. */
static size_t st_server_header(uint8_t *h, unsigned b0, uint64_t len)
{
    size_t n = 0;
    h[n++] = (uint8_t)b0;
    if (len < 126) {
        h[n++] = (uint8_t)len;
    } else if (len < 65536) {
        h[n++] = 126;
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    } else {
        h[n++] = 127;
        put_be64(h + n, len);
        n += 8;
    }
    return n;
}

static void st_reset(conn_t *c)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->kind = K_FOLLOWER;
    c->state = S_OPEN;
    reset_errors();
    G.nlat = 0;
    G.phase = PH_RUN;
}

/* Feeds the stream in pieces of 1, 2, 3, ... bytes (cycling). */
static void st_feed_split(conn_t *c, const uint8_t *p, size_t n, size_t step0)
{
    size_t step = step0;
    while (n && c->state == S_OPEN) {
        size_t k = step < n ? step : n;
        ws_feed(c, p, k, mono_ns());
        p += k;
        n -= k;
        step = step % 37 + 1;
    }
}

/* Checks the checker alone: the verdict report() would give. */
static int st_verdict_ok(const conn_t *c)
{
    return errors_total == 0 && c->expected == (uint64_t)G.count && c->pos == 0;
}

/*
 * The event stream of n text records (G.size each, sequence numbers from
 * 0) as the server sends it: events of `per` bytes at most (0: one per
 * record), each with its id; a comment after the first; `end` with code
 * and size; the chunked coding (chunks of at most `chunk` bytes) and the
 * last chunk.  Every fourth filler 'x' of the first record goes as \u0078
 * and one as \/ would not be an 'x': only escapes that decode to 'x'.
 * Returns the length written to out.
 */
static size_t st_events(uint8_t *out, size_t n, size_t per, size_t chunk,
                        unsigned code, long bad_id_at, int no_end)
{
    size_t size = (size_t)G.size, total = n * size;
    uint8_t *text = malloc(total);
    for (size_t i = 0; i < n; i++) {
        put_record_header(text + i * size, i, mono_ns());
        memset(text + i * size + G.hlen, 'x', size - G.hlen);
    }
    /* The body, unchunked. */
    size_t cap = total * 50 + 4096, len = 0; /* an event per byte at most */
    char *body = malloc(cap);
    long events = 0;
    for (size_t off = 0; off < total; events++) {
        size_t k = per ? per : size;
        if (k > total - off)
            k = total - off;
        uint64_t id = off + k + (events == bad_id_at ? 1 : 0);
        len += (size_t)sprintf(body + len, "id: %" PRIu64 "\ndata: \"", id);
        for (size_t i = 0; i < k; i++) {
            size_t at = off + i;
            if (at < size && at >= G.hlen && at % 4 == 0)
                len += (size_t)sprintf(body + len, "\\u0078");
            else
                body[len++] = (char)text[at];
        }
        len += (size_t)sprintf(body + len, "\"\n\n");
        if (events == 0)
            len += (size_t)sprintf(body + len, ": keep-alive\n\n");
        off += k;
    }
    if (!no_end)
        len += (size_t)sprintf(body + len,
                               "event: end\ndata: {\"complete\": %s, \"code\": %u,"
                               " \"size\": %zu}\n\n",
                               code == 1000 ? "true" : "false", code, total);
    /* Chunked. */
    size_t w = 0;
    for (size_t off = 0; off < len;) {
        size_t k = chunk < len - off ? chunk : len - off;
        w += (size_t)sprintf((char *)out + w, "%zx\r\n", k);
        memcpy(out + w, body + off, k);
        w += k;
        memcpy(out + w, "\r\n", 2);
        w += 2;
        off += k;
    }
    memcpy(out + w, "0\r\n\r\n", 5);
    w += 5;
    free(body);
    free(text);
    return w;
}

static void st_sse_reset(conn_t *c, sse_t *e)
{
    st_reset(c);
    memset(e, 0, sizeof *e);
    c->sse = e;
}

/* Feeds an event stream in pieces of 1, 2, 3, ... bytes (cycling). */
static void st_sse_split(conn_t *c, const uint8_t *p, size_t n, size_t step0)
{
    size_t step = step0;
    while (n && c->state == S_OPEN) {
        size_t k = step < n ? step : n;
        sse_feed(c, p, k, mono_ns());
        p += k;
        n -= k;
        step = step % 37 + 1;
    }
}

/* The event stream's parser: what it must accept and what it must catch. */
static void st_sse(void)
{
    G.sse = 1;
    G.hlen = TEXT_HEADER;
    G.size = 100;
    G.count = 30;
    size_t n = (size_t)G.count;
    static uint8_t body[1 << 20];
    conn_t c;
    sse_t e;
    int all_ok = 1;
    size_t pers[] = {0, 1, 7, 100, 250, 3000};
    for (size_t i = 0; i < sizeof pers / sizeof pers[0]; i++) {
        size_t len = st_events(body, n, pers[i], 1 + 97 * i, 1000, -1, 0);
        for (size_t step = 1; step <= 37; step += 6) {
            st_sse_reset(&c, &e);
            st_sse_split(&c, body, len, step);
            all_ok &= st_verdict_ok(&c) && c.got_close && c.close_code == 1000 &&
                      c.state == S_DONE && e.offset == n * (size_t)G.size &&
                      e.comments == 1 && G.nlat == n;
        }
    }
    st_expect(all_ok, "events: ids, escapes, comment, end, any split, pass");

    size_t len = st_events(body, n, 250, 4096, 1000, 3, 0);
    st_sse_reset(&c, &e);
    sse_feed(&c, body, len, mono_ns());
    st_expect(st_has_error("id 1001 after 1000 bytes"), "events: a wrong id is caught");

    len = st_events(body, n, 250, 4096, 4000, -1, 0);
    st_sse_reset(&c, &e);
    sse_feed(&c, body, len, mono_ns());
    st_expect(c.got_close && c.close_code == 4000, "events: the end's code 4000 is seen");

    len = st_events(body, n, 250, 4096, 1000, -1, 1);
    st_sse_reset(&c, &e);
    sse_feed(&c, body, len, mono_ns());
    st_expect(c.state == S_DONE && st_has_error("without an end event"),
              "events: a body without the end event is caught");

    len = st_events(body, n - 1, 0, 4096, 1000, -1, 0);
    st_sse_reset(&c, &e);
    sse_feed(&c, body, len, mono_ns());
    st_expect(!st_verdict_ok(&c), "events: a missing record is caught");

    static const uint8_t bad_escape[] = "11\r\nid: 1\ndata: \"\\q\"\n\r\n";
    st_sse_reset(&c, &e);
    sse_feed(&c, bad_escape, sizeof bad_escape - 1, mono_ns());
    st_expect(c.state == S_DONE && st_has_error("bad escape"),
              "events: a bad escape is refused");
    static const uint8_t bad_chunk[] = "zz\r\n";
    st_sse_reset(&c, &e);
    sse_feed(&c, bad_chunk, sizeof bad_chunk - 1, mono_ns());
    st_expect(c.state == S_DONE && st_has_error("chunked"),
              "events: bad chunked coding is refused");
    G.sse = 0;
    G.hlen = HEADER;
    c.sse = NULL;
}

static int selftest(void)
{
    rng_seed();
    G.hlen = HEADER;
    G.size = 100;
    G.count = 50;
    G.sample = 1;
    G.caplat = 1 << 16;
    G.lat = malloc(G.caplat * sizeof *G.lat);
    G.filler = malloc((size_t)G.size);
    memset(G.filler, 'x', (size_t)G.size);
    size_t size = (size_t)G.size, count = (size_t)G.count;
    uint8_t *buf = malloc(size * (count + 2));
    uint64_t seqs[64];
    conn_t c;

    /* 1. A good stream, cut at every boundary. */
    for (size_t i = 0; i < count; i++)
        seqs[i] = i;
    size_t n = st_records(buf, seqs, count);
    int all_ok = 1;
    for (size_t step = 1; step <= 37; step += 4) {
        st_reset(&c);
        for (size_t off = 0; off < n;) {
            size_t k = step < n - off ? step : n - off;
            check_bytes(&c, buf + off, k, mono_ns());
            off += k;
        }
        all_ok &= st_verdict_ok(&c) && G.nlat == count;
    }
    st_expect(all_ok, "good records, any split, pass");

    /* 2. A duplicated record. */
    for (size_t i = 0; i < count; i++)
        seqs[i] = i;
    seqs[count] = 0;
    memmove(seqs + 21, seqs + 20, sizeof seqs[0] * (count - 20));
    n = st_records(buf, seqs, count + 1);
    st_reset(&c);
    check_bytes(&c, buf, n, mono_ns());
    st_expect(!st_verdict_ok(&c) && st_has_error("expected 21, got 20"),
              "a duplicated record is caught");

    /* 3. A missing record. */
    for (size_t i = 0, j = 0; i < count; i++)
        if (i != 7)
            seqs[j++] = i;
    n = st_records(buf, seqs, count - 1);
    st_reset(&c);
    check_bytes(&c, buf, n, mono_ns());
    st_expect(!st_verdict_ok(&c) && st_has_error("expected 7, got 8"),
              "a missing record is caught");

    /* 4. Two records swapped. */
    for (size_t i = 0; i < count; i++)
        seqs[i] = i;
    seqs[30] = 31;
    seqs[31] = 30;
    n = st_records(buf, seqs, count);
    st_reset(&c);
    check_bytes(&c, buf, n, mono_ns());
    st_expect(!st_verdict_ok(&c) && st_has_error("expected 30, got 31"),
              "two records swapped are caught");

    /* 5. One corrupt filler byte, in a whole record and in a split one. */
    for (size_t i = 0; i < count; i++)
        seqs[i] = i;
    n = st_records(buf, seqs, count);
    buf[12 * size + 57] = 'y';
    st_reset(&c);
    check_bytes(&c, buf, n, mono_ns());
    st_expect(!st_verdict_ok(&c) && st_has_error("corrupt record 12"),
              "a corrupt byte (whole records) is caught");
    st_reset(&c);
    for (size_t off = 0; off < n; off += 7)
        check_bytes(&c, buf + off, n - off < 7 ? n - off : 7, mono_ns());
    st_expect(!st_verdict_ok(&c) && st_has_error("corrupt record 12"),
              "a corrupt byte (split records) is caught");
    buf[12 * size + 57] = 'x';
    buf[(count - 1) * size + size - 1] = 0;
    st_reset(&c);
    check_bytes(&c, buf, n, mono_ns());
    st_expect(!st_verdict_ok(&c) && st_has_error("corrupt record 49"),
              "a corrupt last byte is caught");
    buf[(count - 1) * size + size - 1] = 'x';

    /* 6. A truncated stream (a partial record left over). */
    st_reset(&c);
    check_bytes(&c, buf, n - 10, mono_ns());
    st_expect(!st_verdict_ok(&c), "a partial last record is caught");

    /* 7. Frames: the records in messages of many sizes (7-, 16- and 64-bit
     * lengths), one fragmented with a ping between its fragments, then a
     * Close 1000; fed in pieces of every size. */
    static uint8_t frames[1 << 20];
    size_t f = 0, off = 0;
    size_t cuts[] = {1, 99, 125, 126, 300, 1000, 1200};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0] && off < n; k++) {
        size_t len = cuts[k] < n - off ? cuts[k] : n - off;
        f += st_server_header(frames + f, 0x82, len);
        memcpy(frames + f, buf + off, len);
        f += len;
        off += len;
    }
    size_t rest = n - off, a = rest / 3, b = rest / 3;
    f += st_server_header(frames + f, 0x02, a); /* first fragment */
    memcpy(frames + f, buf + off, a);
    f += a;
    off += a;
    f += st_server_header(frames + f, 0x89, 5); /* ping between fragments */
    memcpy(frames + f, "hello", 5);
    f += 5;
    f += st_server_header(frames + f, 0x00, b); /* continuation */
    memcpy(frames + f, buf + off, b);
    f += b;
    off += b;
    f += st_server_header(frames + f, 0x80, n - off); /* final continuation */
    memcpy(frames + f, buf + off, n - off);
    f += n - off;
    frames[f++] = 0x88; /* Close 1000 */
    frames[f++] = 2;
    frames[f++] = 0x03;
    frames[f++] = 0xe8;
    size_t good_frames = f;
    all_ok = 1;
    for (size_t step = 1; step <= 37; step++) {
        st_reset(&c);
        st_feed_split(&c, frames, good_frames, step);
        int ok = st_verdict_ok(&c) && c.got_close && c.close_code == 1000 &&
                 c.state == S_DONE;
        /* The pong: masked, "hello" once unmasked; then our Close 1000. */
        uint8_t plain[8];
        ok &= c.outlen == 2 + 4 + 5 + 2 + 4 + 2;
        ok &= c.out[0] == 0x8a && c.out[1] == (0x80 | 5);
        ok &= memcmp(c.out + 2, "\0\0\0\0", 4) != 0;
        mask_copy(plain, c.out + 6, 5, c.out + 2);
        ok &= memcmp(plain, "hello", 5) == 0;
        ok &= c.out[11] == 0x88 && c.out[12] == (0x80 | 2);
        mask_copy(plain, c.out + 17, 2, c.out + 13);
        ok &= plain[0] == 0x03 && plain[1] == 0xe8;
        all_ok &= ok;
    }
    st_expect(all_ok, "frames, fragments, ping, Close 1000, any split, pass");

    /* 8. Defects in the framing. */
    st_reset(&c);
    f = st_server_header(frames, 0x82, 100);
    memcpy(frames + f, buf, 100);
    f += 100;
    memcpy(frames + f, "\x88\x02\x0f\xa0", 4); /* Close 4000 */
    f += 4;
    ws_feed(&c, frames, f, mono_ns());
    /* report()'s checks: */
    st_expect(c.close_code == 4000 && c.expected != (uint64_t)G.count,
              "a Close 4000 and a short stream are seen");
    st_reset(&c);
    static const uint8_t masked[] = {0x82, 0x81, 1, 2, 3, 4, 5};
    ws_feed(&c, masked, sizeof masked, mono_ns());
    st_expect(c.state == S_DONE && st_has_error("masked frame"),
              "a masked server frame is refused");
    st_reset(&c);
    static const uint8_t cont[] = {0x80, 0x01, 'x'};
    ws_feed(&c, cont, sizeof cont, mono_ns());
    st_expect(c.state == S_DONE && st_has_error("continuation"),
              "a stray continuation is refused");
    st_reset(&c);
    static const uint8_t bigping[] = {0x89, 126, 0, 200};
    ws_feed(&c, bigping, sizeof bigping, mono_ns());
    st_expect(c.state == S_DONE && st_has_error("control"),
              "a control frame over 125 bytes is refused");
    st_reset(&c);
    static const uint8_t rsv[] = {0xc2, 0x00};
    ws_feed(&c, rsv, sizeof rsv, mono_ns());
    st_expect(c.state == S_DONE && st_has_error("reserved"),
              "reserved bits are refused");

    /* 9. The appender's frames: masked with a non-zero key, and they
     * unmask to the records the checker accepts. */
    app_t ap;
    memset(&ap, 0, sizeof ap);
    conn_t ac;
    memset(&ac, 0, sizeof ac);
    ap.c = &ac;
    ac.app = &ap;
    G.size = 70000; /* 64-bit length */
    free(G.filler);
    G.filler = malloc((size_t)G.size);
    memset(G.filler, 'x', (size_t)G.size);
    G.count = 3;
    all_ok = 1;
    for (int i = 0; i < 3; i++)
        all_ok &= app_add_record(&ap, mono_ns()) == 0;
    st_reset(&c);
    for (size_t p = 0; p < ap.len && all_ok;) {
        uint8_t *h = ap.buf + p;
        all_ok &= h[0] == 0x82 && (h[1] & 0x80) && (h[1] & 0x7f) == 127;
        uint64_t len = be64(h + 2);
        all_ok &= len == (uint64_t)G.size;
        uint8_t *key = h + 10;
        all_ok &= memcmp(key, "\0\0\0\0", 4) != 0;
        uint8_t *plain = malloc(len);
        mask_copy(plain, h + 14, len, key);
        all_ok &= memcmp(h + 14 + HEADER, G.filler, len - HEADER) != 0;
        check_bytes(&c, plain, len, mono_ns());
        free(plain);
        p += 14 + len;
    }
    st_expect(all_ok && st_verdict_ok(&c), "the appender's frames are masked and exact");

    /* 10. The event stream (--transport events). */
    st_sse();

    /* 11. mask_copy against a byte-by-byte reference. */
    uint8_t src[300], dst[300], key[4];
    all_ok = 1;
    for (size_t len = 0; len < sizeof src; len++) {
        mask_key(key);
        for (size_t i = 0; i < len; i++)
            src[i] = (uint8_t)rng_next();
        mask_copy(dst, src, len, key);
        for (size_t i = 0; i < len; i++)
            all_ok &= dst[i] == (src[i] ^ key[i % 4]);
    }
    st_expect(all_ok, "masking, 64 bits at a time, matches the definition");

    free(ap.buf);
    free(buf);
    fprintf(stderr, "selftest: %s\n", st_failures ? "FAILED" : "all defects caught");
    return st_failures ? 1 : 0;
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    parse_args(argc, argv);
    rng_seed();
    setup();
    G.deadline = mono_ns() + (int64_t)(G.timeout * 1e9);
    loop();
    if (G.phase == PH_DONE)
        abort_stalled();
    report();
    abort_stalled();
    return 0;
}
