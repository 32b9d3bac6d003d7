/*
 * Node-to-node transport for Raft messages.
 *
 * Happy path: transport_send encodes the message into a frame on the peer's
 * queue. The first send to an idle peer dials it (socket bound to our own
 * listen IP, TCP_NODELAY), writes our hello and waits for the peer's hello;
 * once it matches, the peer is CONNECTED. A uv_prepare handle flushes every
 * peer's queue once per loop iteration as one uv_write of up to
 * WRITE_BUFS_MAX frames; each send's callback runs from that write's
 * callback. On the accepting side a connection reads the peer's hello,
 * checks it, answers with its own, and from then on decodes frames and hands
 * each message to recv_cb. Connections are one-way: outbound ones only
 * write (after the hello), inbound ones only read.
 *
 * Failure modes:
 *   - Sends that cannot be queued (unknown peer, peer in backoff, queue over
 *     queue_bytes_max, frame over frame_bytes_max, no memory) go on the done
 *     list with their status and complete from the prepare callback, so a
 *     callback never runs inside transport_send.
 *   - Connect failure, handshake mismatch, connect/handshake timeout
 *     (checked by the tick timer), write error, EOF or unexpected bytes on an
 *     outbound connection: the connection closes, queued sends fail with
 *     KAPPA_ETRANSPORT, frames being written fail with it from their write
 *     callback (UV_ECANCELED), and the peer waits backoff_ms (doubling up to
 *     backoff_max_ms, reset by a good handshake) before the next send dials
 *     again. Sends during backoff fail fast.
 *   - Malformed input on an inbound connection (bad frame length, bad
 *     hello, undecodable message, sender id differing from the handshake):
 *     a rate-limited warning and the connection closes; other connections
 *     are untouched. Out of memory while decoding drops that one message.
 *   - transport_close: pending sends complete with KAPPA_ECANCELED, every
 *     connection and handle closes, and close_cb runs after the last close
 *     callback, when everything is freed. A connection is only ever freed in
 *     its close callback, never inside its own read or write callback.
 *
 * Handshake frame (same framing as messages: u32 big-endian body length,
 * then one msgpack value of at most HELLO_BYTES_MAX bytes), sent by the
 * dialing side first and answered by the accepting side:
 *
 *   array(5) [magic uint (HELLO_MAGIC, "KRFT"), version uint
 *             (TRANSPORT_VERSION), cluster_id uint64, node_id uint64 > 0,
 *             address str (the sender's "host:port")]
 *
 * A version other than ours is rejected before the rest is read, so a later
 * version may change the remaining fields. Message frames follow, each body
 * as written out in rmsg.c.
 */
#include "transport.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "common/endian.h"
#include "common/err.h"
#include "common/log.h"
#include "common/mp.h"
#include "common/wire.h"

#define HELLO_MAGIC     0x4b524654u /* "KRFT" */
#define HELLO_BYTES_MAX 512
#define WRITE_BUFS_MAX  64
/* Bytes offered to each read: bounds the frames handled per read callback. */
#define READ_CHUNK_BYTES ((size_t)64 * 1024)
/* An idle read buffer bigger than this is freed. */
#define READ_KEEP_BYTES ((size_t)256 * 1024)
#define TICK_MS         50
#define LISTEN_BACKLOG  128
#define LOG_HEX_BYTES   16

enum peer_state { PEER_IDLE, PEER_CONNECTING, PEER_CONNECTED, PEER_BACKOFF };

enum conn_state {
    CONN_DIALING, /* outbound TCP connect in progress */
    CONN_HELLO,   /* waiting for the other side's hello */
    CONN_OPEN,
    CONN_CLOSING,
};

struct transport_peer {
    struct transport_peer *next;
    uint64_t id;
    char address[TRANSPORT_ADDRESS_SIZE];
    struct sockaddr_in sa;
    enum peer_state state;
    struct transport_conn *conn;       /* outbound connection, if any */
    struct transport_send *queue_head; /* encoded, not yet written */
    struct transport_send *queue_tail;
    size_t queued_bytes; /* queue plus frames being written */
    unsigned backoff_ms;
    uint64_t retry_at_ms;
};

struct transport_conn {
    struct transport_conn *prev;
    struct transport_conn *next;
    struct transport *t;
    struct transport_peer *peer; /* outbound and still attached, else NULL */
    int is_outbound;
    enum conn_state state;
    uint64_t deadline_ms; /* for DIALING and HELLO */
    uint64_t peer_id;     /* from the hello (outbound: the dialed id) */
    char peer_address[TRANSPORT_ADDRESS_SIZE]; /* for logs */
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t hello_write;
    struct buf hello;
    uv_write_t write;
    int is_writing;
    uv_buf_t wbufs[WRITE_BUFS_MAX];
    struct transport_send *inflight_head;
    struct transport_send *inflight_tail;
    size_t inflight_bytes;
    struct buf rbuf; /* bytes read; [rpos, len) not yet handled */
    size_t rpos;
    char msg_address[RMSG_ADDRESS_BYTES_MAX + 1];
};

static void prepare_cb(uv_prepare_t *h);
static void conn_close(struct transport_conn *c);

/* Legal moves: IDLE -> CONNECTING (a send dials), CONNECTING -> CONNECTED
 * (the hello matched), IDLE/CONNECTING/CONNECTED -> BACKOFF (a failure),
 * and anything -> IDLE (backoff over, or a new address). */
static void peer_set_state(struct transport_peer *p, enum peer_state s)
{
    KAPPA_ASSERT(s == PEER_IDLE ||
                 (s == PEER_CONNECTING && p->state == PEER_IDLE) ||
                 (s == PEER_CONNECTED && p->state == PEER_CONNECTING) ||
                 (s == PEER_BACKOFF && p->state != PEER_BACKOFF));
    p->state = s;
}

/* Legal moves: DIALING -> HELLO (TCP connected), HELLO -> OPEN (the hello
 * matched), and anything -> CLOSING, once. */
static void conn_set_state(struct transport_conn *c, enum conn_state s)
{
    KAPPA_ASSERT(c->state != CONN_CLOSING);
    KAPPA_ASSERT(s == CONN_CLOSING ||
                 (s == CONN_HELLO && c->state == CONN_DIALING) ||
                 (s == CONN_OPEN && c->state == CONN_HELLO));
    c->state = s;
}

/* Logging: peer problems are rate limited per transport. */

static int log_allowed(struct transport *t)
{
    uint64_t now = uv_now(t->loop);
    if (now - t->log_window_ms >= 1000) {
        if (t->log_suppressed > 0) {
            kappa_log_write(KAPPA_LOG_WARN, "transport",
                            "self=%llu suppressed=%u log lines",
                            (unsigned long long)t->node_id, t->log_suppressed);
        }
        t->log_window_ms = now;
        t->log_lines = 0;
        t->log_suppressed = 0;
    }
    if (t->log_lines >= t->limits.log_lines_per_s) {
        t->log_suppressed++;
        return 0;
    }
    t->log_lines++;
    return 1;
}

#define TLOG(t, level, ...)                                                    \
    do {                                                                       \
        if ((level) >= kappa_log_level_current && log_allowed(t)) {            \
            kappa_log_write((level), "transport", __VA_ARGS__);                \
        }                                                                      \
    } while (0)

#define SELF(t) ((unsigned long long)(t)->node_id)

/* Sanitised hex of the first bytes of a bad frame. */
static void hex_prefix(const uint8_t *p, size_t n, char *out, size_t cap)
{
    size_t k = n < LOG_HEX_BYTES ? n : LOG_HEX_BYTES;
    out[0] = '\0';
    for (size_t i = 0; i < k && 2 * i + 3 <= cap; i++) {
        (void)snprintf(out + 2 * i, 3, "%02x", p[i]);
    }
}

/* Parses "a.b.c.d:port" (IPv4 literal). */
static int parse_addr(const char *s, struct sockaddr_in *sa)
{
    char host[16];
    const char *colon;
    char *end;
    unsigned long port;
    size_t host_len;

    if (s == NULL || strlen(s) >= TRANSPORT_ADDRESS_SIZE) {
        return KAPPA_EINVAL;
    }
    colon = strrchr(s, ':');
    if (colon == NULL || colon[1] == '\0') {
        return KAPPA_EINVAL;
    }
    host_len = (size_t)(colon - s);
    if (host_len == 0 || host_len >= sizeof host) {
        return KAPPA_EINVAL;
    }
    memcpy(host, s, host_len);
    host[host_len] = '\0';
    if (colon[1] < '0' || colon[1] > '9') {
        return KAPPA_EINVAL;
    }
    port = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || port > 65535) {
        return KAPPA_EINVAL;
    }
    if (uv_ip4_addr(host, (int)port, sa) != 0) {
        return KAPPA_EINVAL;
    }
    return 0;
}

static void sa_format(const struct sockaddr_in *sa, char *out)
{
    char host[16] = "?";
    (void)uv_ip4_name(sa, host, sizeof host);
    (void)snprintf(out, TRANSPORT_ADDRESS_SIZE, "%s:%u", host,
                   (unsigned)ntohs(sa->sin_port));
}

/* Send completion. */

static void send_fire(struct transport *t, struct transport_send *req,
                      int status)
{
    transport_send_cb cb = req->cb;
    buf_free(&req->frame);
    req->next = NULL;
    if (status == 0) {
        t->stats.frames_sent++;
    } else {
        t->stats.sends_failed++;
    }
    cb(req, status);
}

/* Completes req with status from the prepare callback. */
static void send_fail_later(struct transport *t, struct transport_send *req,
                            int status)
{
    buf_free(&req->frame);
    req->status = status;
    req->next = NULL;
    if (t->done_tail != NULL) {
        t->done_tail->next = req;
    } else {
        t->done_head = req;
    }
    t->done_tail = req;
    (void)uv_prepare_start(&t->prepare, prepare_cb);
}

static void done_drain(struct transport *t)
{
    struct transport_send *req = t->done_head;
    t->done_head = NULL;
    t->done_tail = NULL;
    while (req != NULL) {
        struct transport_send *next = req->next;
        send_fire(t, req, req->status);
        req = next;
    }
}

/* Peers. */

static struct transport_peer *peer_find(const struct transport *t, uint64_t id)
{
    struct transport_peer *p;
    for (p = t->peers; p != NULL; p = p->next) {
        if (p->id == id) {
            return p;
        }
    }
    return NULL;
}

static void peer_fail_queue(struct transport *t, struct transport_peer *p,
                            int status)
{
    struct transport_send *req = p->queue_head;
    p->queue_head = NULL;
    p->queue_tail = NULL;
    while (req != NULL) {
        struct transport_send *next = req->next;
        p->queued_bytes -= req->frame.len;
        send_fail_later(t, req, status);
        req = next;
    }
}

/* The peer's connection is gone: fail what is queued and back off. */
static void peer_lost_conn(struct transport *t, struct transport_peer *p)
{
    p->conn = NULL;
    peer_fail_queue(t, p, t->is_closing ? KAPPA_ECANCELED : KAPPA_ETRANSPORT);
    p->queued_bytes = 0; /* frames being written no longer count */
    peer_set_state(p, PEER_BACKOFF);
    p->retry_at_ms = uv_now(t->loop) + p->backoff_ms;
    p->backoff_ms = p->backoff_ms * 2 < t->limits.backoff_max_ms
                        ? p->backoff_ms * 2
                        : t->limits.backoff_max_ms;
}

/* Detaches and closes the peer's connection without backoff, failing its
 * queue with status. */
static void peer_drop_conn(struct transport *t, struct transport_peer *p,
                           int status)
{
    struct transport_conn *c = p->conn;
    peer_fail_queue(t, p, status);
    p->queued_bytes = 0;
    p->conn = NULL;
    if (c != NULL) {
        c->peer = NULL;
        conn_close(c);
    }
}

/* Connections. */

static struct transport_conn *conn_new(struct transport *t,
                                       enum conn_state initial)
{
    struct transport_conn *c = kappa_calloc(1, sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    if (uv_tcp_init(t->loop, &c->tcp) != 0) {
        kappa_free(c);
        return NULL;
    }
    c->t = t;
    c->state = initial;
    c->tcp.data = c;
    c->connect.data = c;
    c->write.data = c;
    c->hello_write.data = c;
    c->next = t->conns;
    if (t->conns != NULL) {
        t->conns->prev = c;
    }
    t->conns = c;
    t->n_conns++;
    return c;
}

static void maybe_finish_close(struct transport *t);

static void conn_close_cb(uv_handle_t *h)
{
    struct transport_conn *c = h->data;
    struct transport *t = c->t;

    KAPPA_ASSERT(c->inflight_head == NULL);
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        t->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    if (!c->is_outbound) {
        t->n_conns_in--;
    }
    t->n_conns--;
    buf_free(&c->rbuf);
    buf_free(&c->hello);
    kappa_free(c);
    maybe_finish_close(t);
}

/* Closes c once; its frames being written complete from the write callback
 * with UV_ECANCELED before conn_close_cb frees it. */
static void conn_close(struct transport_conn *c)
{
    if (c->state == CONN_CLOSING) {
        return;
    }
    conn_set_state(c, CONN_CLOSING);
    if (c->peer != NULL) {
        struct transport_peer *p = c->peer;
        c->peer = NULL;
        peer_lost_conn(c->t, p);
    }
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

static void proto_error(struct transport_conn *c, int rv, const char *what,
                        const uint8_t *p, size_t n)
{
    struct transport *t = c->t;
    char hex[2 * LOG_HEX_BYTES + 1];

    t->stats.proto_errors++;
    hex_prefix(p, n, hex, sizeof hex);
    TLOG(t, KAPPA_LOG_WARN,
         "self=%llu peer=%llu addr=%s %s: %s, closing (bytes=%zu head=%s)",
         SELF(t), (unsigned long long)c->peer_id, c->peer_address, what,
         kappa_err_str(rv), n, hex);
    conn_close(c);
}

/* Writing. */

static void write_cb(uv_write_t *w, int status)
{
    struct transport_conn *c = w->data;
    struct transport *t = c->t;
    struct transport_send *req = c->inflight_head;
    int st = 0;

    if (status != 0) {
        st = t->is_closing ? KAPPA_ECANCELED : KAPPA_ETRANSPORT;
    }
    if (c->peer != NULL) {
        c->peer->queued_bytes -= c->inflight_bytes;
    }
    c->inflight_head = NULL;
    c->inflight_tail = NULL;
    c->inflight_bytes = 0;
    c->is_writing = 0;
    if (status != 0 && status != UV_ECANCELED) {
        TLOG(t, KAPPA_LOG_WARN, "self=%llu peer=%llu addr=%s write: %s",
             SELF(t), (unsigned long long)c->peer_id, c->peer_address,
             uv_strerror(status));
        conn_close(c);
    }
    while (req != NULL) {
        struct transport_send *next = req->next;
        send_fire(t, req, st);
        req = next;
    }
    /* Callbacks may have closed c or the transport. */
    if (c->state == CONN_OPEN && c->peer != NULL &&
        c->peer->queue_head != NULL) {
        (void)uv_prepare_start(&t->prepare, prepare_cb);
    }
}

/* Writes up to WRITE_BUFS_MAX queued frames of c's peer as one write. */
static void conn_flush(struct transport_conn *c)
{
    struct transport_peer *p = c->peer;
    unsigned n = 0;
    int rv;

    KAPPA_ASSERT(p != NULL);
    KAPPA_ASSERT(!c->is_writing);
    while (p->queue_head != NULL && n < WRITE_BUFS_MAX) {
        struct transport_send *req = p->queue_head;
        p->queue_head = req->next;
        req->next = NULL;
        if (c->inflight_tail != NULL) {
            c->inflight_tail->next = req;
        } else {
            c->inflight_head = req;
        }
        c->inflight_tail = req;
        c->inflight_bytes += req->frame.len;
        c->wbufs[n++] =
            uv_buf_init((char *)req->frame.data, (unsigned)req->frame.len);
    }
    if (p->queue_head == NULL) {
        p->queue_tail = NULL;
    }
    if (n == 0) {
        return;
    }
    c->is_writing = 1;
    rv = uv_write(&c->write, (uv_stream_t *)&c->tcp, c->wbufs, n, write_cb);
    if (rv != 0) {
        /* The write never started, so no write callback: fail the frames
         * here (asynchronously) and drop the connection. */
        struct transport_send *req = c->inflight_head;
        c->is_writing = 0;
        p->queued_bytes -= c->inflight_bytes;
        c->inflight_head = NULL;
        c->inflight_tail = NULL;
        c->inflight_bytes = 0;
        while (req != NULL) {
            struct transport_send *next = req->next;
            send_fail_later(c->t, req, KAPPA_ETRANSPORT);
            req = next;
        }
        TLOG(c->t, KAPPA_LOG_WARN, "self=%llu peer=%llu write: %s", SELF(c->t),
             (unsigned long long)p->id, uv_strerror(rv));
        conn_close(c);
    }
}

static void prepare_cb(uv_prepare_t *h)
{
    struct transport *t = h->data;
    struct transport_peer *p;

    done_drain(t);
    for (p = t->peers; p != NULL; p = p->next) {
        struct transport_conn *c = p->conn;
        if (p->state == PEER_CONNECTED && c != NULL && !c->is_writing &&
            p->queue_head != NULL) {
            conn_flush(c);
        }
    }
    if (t->done_head == NULL) {
        uv_prepare_stop(h);
    }
}

static void hello_write_cb(uv_write_t *w, int status)
{
    struct transport_conn *c = w->data;
    buf_free(&c->hello);
    if (status != 0 && status != UV_ECANCELED) {
        TLOG(c->t, KAPPA_LOG_WARN, "self=%llu addr=%s write hello: %s",
             SELF(c->t), c->peer_address, uv_strerror(status));
        conn_close(c);
    }
}

static int hello_send(struct transport_conn *c)
{
    struct transport *t = c->t;
    struct mp_writer w;
    uv_buf_t b;
    size_t start;

    buf_init(&c->hello);
    mp_writer_init(&w, &c->hello);
    start = wire_frame_begin(&c->hello);
    mp_put_array(&w, 5);
    mp_put_uint(&w, HELLO_MAGIC);
    mp_put_uint(&w, TRANSPORT_VERSION);
    mp_put_uint(&w, t->cluster_id);
    mp_put_uint(&w, t->node_id);
    mp_put_str(&w, t->address);
    wire_frame_end(&c->hello, start);
    if (w.err != 0 || c->hello.len < WIRE_FRAME_HEADER_BYTES) {
        buf_free(&c->hello);
        return KAPPA_ENOMEM;
    }
    b = uv_buf_init((char *)c->hello.data, (unsigned)c->hello.len);
    if (uv_write(&c->hello_write, (uv_stream_t *)&c->tcp, &b, 1,
                 hello_write_cb) != 0) {
        buf_free(&c->hello);
        return KAPPA_ETRANSPORT;
    }
    return 0;
}

/* Reading. */

struct hello {
    uint64_t magic;
    uint64_t version;
    uint64_t cluster_id;
    uint64_t node_id;
    char address[TRANSPORT_ADDRESS_SIZE];
};

static int hello_decode(const uint8_t *p, size_t n, struct hello *h)
{
    struct mp_reader r;
    uint32_t n_values;

    memset(h, 0, sizeof *h);
    mp_reader_init(&r, p, n);
    if (mp_read_array(&r, &n_values) != 0 || n_values < 2 ||
        mp_read_uint(&r, &h->magic) != 0 || h->magic != HELLO_MAGIC ||
        mp_read_uint(&r, &h->version) != 0) {
        return KAPPA_EPROTO;
    }
    if (h->version != TRANSPORT_VERSION) {
        return KAPPA_EVERSION;
    }
    if (n_values != 5 || mp_read_uint(&r, &h->cluster_id) != 0 ||
        mp_read_uint(&r, &h->node_id) != 0 ||
        mp_read_cstr(&r, h->address, sizeof h->address) != 0 || r.p != r.end) {
        return KAPPA_EPROTO;
    }
    return 0;
}

static void conn_reject(struct transport_conn *c, const char *why,
                        const struct hello *h)
{
    struct transport *t = c->t;
    t->stats.conns_rejected++;
    TLOG(t, KAPPA_LOG_WARN,
         "self=%llu addr=%s handshake rejected: %s (node=%llu cluster=%llu "
         "version=%llu)",
         SELF(t), c->peer_address, why, (unsigned long long)h->node_id,
         (unsigned long long)h->cluster_id, (unsigned long long)h->version);
    conn_close(c);
}

static void on_hello(struct transport_conn *c, const uint8_t *p, size_t n)
{
    struct transport *t = c->t;
    struct hello h;
    int rv = hello_decode(p, n, &h);

    if (rv == KAPPA_EPROTO) {
        proto_error(c, rv, "hello", p, n);
        return;
    }
    if (rv == KAPPA_EVERSION) {
        conn_reject(c, "protocol version mismatch", &h);
        return;
    }
    if (h.cluster_id != t->cluster_id) {
        conn_reject(c, "cluster id mismatch", &h);
        return;
    }
    if (h.node_id == 0 || h.node_id == t->node_id) {
        conn_reject(c, "bad node id", &h);
        return;
    }
    if (c->is_outbound) {
        struct transport_peer *peer = c->peer;
        if (peer == NULL || h.node_id != peer->id) {
            conn_reject(c, "dialed node id differs", &h);
            return;
        }
        conn_set_state(c, CONN_OPEN);
        peer_set_state(peer, PEER_CONNECTED);
        peer->backoff_ms = t->limits.backoff_min_ms;
        t->stats.conns_connected++;
        kappa_log(KAPPA_LOG_INFO, "transport",
                  "self=%llu peer=%llu addr=%s connected", SELF(t),
                  (unsigned long long)peer->id, c->peer_address);
        if (peer->queue_head != NULL) {
            (void)uv_prepare_start(&t->prepare, prepare_cb);
        }
        return;
    }
    c->peer_id = h.node_id;
    memcpy(c->peer_address, h.address, sizeof c->peer_address);
    if (hello_send(c) != 0) {
        conn_close(c);
        return;
    }
    conn_set_state(c, CONN_OPEN);
    t->stats.conns_accepted++;
    kappa_log(KAPPA_LOG_INFO, "transport",
              "self=%llu peer=%llu addr=%s accepted", SELF(t),
              (unsigned long long)c->peer_id, c->peer_address);
}

static void on_message(struct transport_conn *c, const uint8_t *p, size_t n)
{
    struct transport *t = c->t;
    struct raft_message m;
    uint64_t group_id;
    const uint8_t *payload;
    size_t payload_len;
    int rv;

    rv = rmsg_decode_app(p, n, &group_id, &payload, &payload_len);
    if (rv == 1) {
        /* group_id holds the sender's id here. */
        if (group_id != c->peer_id) {
            proto_error(c, KAPPA_EPROTO, "sender id differs from handshake", p,
                        n);
            return;
        }
        t->stats.frames_received++;
        if (t->app_cb != NULL) {
            t->app_cb(t, group_id, payload, payload_len, t->data);
        }
        return;
    }
    if (rv != 0) {
        proto_error(c, rv, "decode message", p, n);
        return;
    }
    rv = rmsg_decode(p, n, &t->limits.rmsg, &group_id, &m, c->msg_address);
    if (rv == KAPPA_ENOMEM) {
        /* Raft tolerates a lost message; the connection stays. */
        TLOG(t, KAPPA_LOG_WARN, "self=%llu peer=%llu dropped message: %s",
             SELF(t), (unsigned long long)c->peer_id, kappa_err_str(rv));
        return;
    }
    if (rv != 0) {
        proto_error(c, rv, "decode message", p, n);
        return;
    }
    if (m.server_id != c->peer_id) {
        rmsg_release(&m);
        proto_error(c, KAPPA_EPROTO, "sender id differs from handshake", p, n);
        return;
    }
    t->stats.frames_received++;
    t->recv_cb(t, group_id, &m, t->data);
}

static uint32_t conn_frame_max(const struct transport_conn *c)
{
    return c->state == CONN_OPEN ? c->t->limits.frame_bytes_max
                                 : HELLO_BYTES_MAX;
}

/* Handles every complete frame in the read buffer; stops when c closes. */
static void conn_process(struct transport_conn *c)
{
    while (c->state == CONN_HELLO || c->state == CONN_OPEN) {
        const uint8_t *p = c->rbuf.data + c->rpos;
        size_t avail = c->rbuf.len - c->rpos;
        uint32_t body_bytes;
        int rv = wire_frame_peek(p, avail, conn_frame_max(c), &body_bytes);

        if (rv == 1) {
            return;
        }
        if (rv != 0) {
            proto_error(c, rv, "frame header", p, avail);
            return;
        }
        c->rpos += WIRE_FRAME_HEADER_BYTES + body_bytes;
        p += WIRE_FRAME_HEADER_BYTES;
        if (c->state == CONN_HELLO) {
            on_hello(c, p, body_bytes);
        } else if (c->is_outbound) {
            proto_error(c, KAPPA_EPROTO, "unexpected data", p, body_bytes);
        } else {
            on_message(c, p, body_bytes);
        }
    }
}

/* Offers at least READ_CHUNK_BYTES, or the rest of a frame whose header has
 * arrived, so a big frame is read in place. Unhandled bytes are moved to the
 * front only when the tail has no room for what is expected. */
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    struct transport_conn *c = h->data;
    struct buf *b = &c->rbuf;
    size_t avail = b->len - c->rpos;
    size_t want = READ_CHUNK_BYTES;
    size_t room;

    (void)suggested;
    if (avail >= WIRE_FRAME_HEADER_BYTES) {
        size_t need = WIRE_FRAME_HEADER_BYTES + be32_get(b->data + c->rpos);
        if (need <= WIRE_FRAME_HEADER_BYTES + (size_t)conn_frame_max(c) &&
            need > avail && need - avail > want) {
            want = need - avail;
        }
    }
    if (c->rpos > 0 && b->cap - b->len < want) {
        memmove(b->data, b->data + c->rpos, avail);
        b->len = avail;
        c->rpos = 0;
    }
    if (buf_reserve(b, want) != 0) {
        *out = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
        return;
    }
    /* Offer only what is wanted, even if the buffer has more room, so one
     * read callback handles at most about READ_CHUNK_BYTES of frames. */
    room = b->cap - b->len < want ? b->cap - b->len : want;
    *out = uv_buf_init((char *)b->data + b->len,
                       room < UINT32_MAX ? (unsigned)room : UINT32_MAX);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct transport_conn *c = s->data;
    struct transport *t = c->t;

    (void)b;
    if (nread == 0) {
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF) {
            TLOG(t, KAPPA_LOG_WARN, "self=%llu peer=%llu addr=%s read: %s",
                 SELF(t), (unsigned long long)c->peer_id, c->peer_address,
                 uv_strerror((int)nread));
        } else {
            kappa_log(KAPPA_LOG_DEBUG, "transport",
                      "self=%llu peer=%llu addr=%s closed by peer", SELF(t),
                      (unsigned long long)c->peer_id, c->peer_address);
        }
        conn_close(c);
        return;
    }
    c->rbuf.len += (size_t)nread;
    conn_process(c);
    if (c->state != CONN_CLOSING && c->rpos == c->rbuf.len) {
        c->rpos = 0;
        c->rbuf.len = 0;
        if (c->rbuf.cap > READ_KEEP_BYTES) {
            buf_free(&c->rbuf);
        }
    }
}

/* Outbound. */

static void connect_cb(uv_connect_t *req, int status)
{
    struct transport_conn *c = req->data;
    struct transport *t = c->t;
    int rv;

    if (status == UV_ECANCELED || c->state == CONN_CLOSING) {
        return; /* closing; conn_close_cb frees c */
    }
    if (status != 0) {
        TLOG(t, KAPPA_LOG_WARN, "self=%llu peer=%llu addr=%s connect: %s",
             SELF(t), (unsigned long long)c->peer_id, c->peer_address,
             uv_strerror(status));
        conn_close(c);
        return;
    }
    rv = hello_send(c);
    if (rv == 0) {
        rv = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    }
    if (rv != 0) {
        conn_close(c);
        return;
    }
    conn_set_state(c, CONN_HELLO);
}

/* Dials p; failures close the new connection, which puts p in backoff and
 * fails its queue asynchronously. */
static void peer_connect(struct transport *t, struct transport_peer *p)
{
    struct sockaddr_in src = t->listen_sa;
    struct transport_conn *c = conn_new(t, CONN_DIALING);

    if (c == NULL) {
        peer_lost_conn(t, p);
        return;
    }
    c->is_outbound = 1;
    c->peer = p;
    c->peer_id = p->id;
    c->deadline_ms = uv_now(t->loop) + t->limits.connect_timeout_ms;
    memcpy(c->peer_address, p->address, sizeof c->peer_address);
    p->conn = c;
    peer_set_state(p, PEER_CONNECTING);
    /* Bind to our own IP so that peers (and partitioning tests) see the
     * node's address as the source. */
    src.sin_port = 0;
    if (uv_tcp_bind(&c->tcp, (const struct sockaddr *)&src, 0) != 0 ||
        uv_tcp_nodelay(&c->tcp, 1) != 0 ||
        uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&p->sa,
                       connect_cb) != 0) {
        TLOG(t, KAPPA_LOG_WARN, "self=%llu peer=%llu addr=%s dial failed",
             SELF(t), (unsigned long long)p->id, p->address);
        conn_close(c);
    }
}

/* Inbound. */

static void listen_cb(uv_stream_t *server, int status)
{
    struct transport *t = server->data;
    struct transport_conn *c;
    struct sockaddr_storage ss;
    int len = sizeof ss;

    if (status < 0) {
        TLOG(t, KAPPA_LOG_WARN, "self=%llu accept: %s", SELF(t),
             uv_strerror(status));
        return;
    }
    c = conn_new(t, CONN_HELLO);
    if (c == NULL) {
        TLOG(t, KAPPA_LOG_ERROR, "self=%llu accept: out of memory", SELF(t));
        return;
    }
    t->n_conns_in++;
    c->deadline_ms = uv_now(t->loop) + t->limits.connect_timeout_ms;
    memcpy(c->peer_address, "?", 2);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0 &&
        ss.ss_family == AF_INET) {
        sa_format((const struct sockaddr_in *)&ss, c->peer_address);
    }
    if (t->n_conns_in > t->limits.conns_in_max) {
        t->stats.conns_rejected++;
        TLOG(t, KAPPA_LOG_WARN, "self=%llu addr=%s rejected: conns_in_max=%u",
             SELF(t), c->peer_address, t->limits.conns_in_max);
        conn_close(c);
        return;
    }
    if (uv_tcp_nodelay(&c->tcp, 1) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0) {
        conn_close(c);
    }
}

/* Timers: backoff expiry and connect/handshake deadlines. */

static void tick_cb(uv_timer_t *h)
{
    struct transport *t = h->data;
    uint64_t now = uv_now(t->loop);
    struct transport_peer *p;
    struct transport_conn *c;

    for (p = t->peers; p != NULL; p = p->next) {
        if (p->state == PEER_BACKOFF && now >= p->retry_at_ms) {
            peer_set_state(p, PEER_IDLE);
        }
    }
    for (c = t->conns; c != NULL; c = c->next) {
        if ((c->state == CONN_DIALING || c->state == CONN_HELLO) &&
            now >= c->deadline_ms) {
            TLOG(t, KAPPA_LOG_WARN, "self=%llu peer=%llu addr=%s %s timed out",
                 SELF(t), (unsigned long long)c->peer_id, c->peer_address,
                 c->state == CONN_DIALING ? "connect" : "handshake");
            conn_close(c);
        }
    }
}

/* Public API. */

void transport_limits_default(struct transport_limits *l)
{
    l->frame_bytes_max = TRANSPORT_FRAME_BYTES_MAX_DEFAULT;
    l->queue_bytes_max = TRANSPORT_QUEUE_BYTES_MAX_DEFAULT;
    l->peers_max = TRANSPORT_PEERS_MAX_DEFAULT;
    l->conns_in_max = TRANSPORT_CONNS_IN_MAX_DEFAULT;
    l->connect_timeout_ms = TRANSPORT_CONNECT_TIMEOUT_MS;
    l->backoff_min_ms = TRANSPORT_BACKOFF_MIN_MS_DEFAULT;
    l->backoff_max_ms = TRANSPORT_BACKOFF_MAX_MS_DEFAULT;
    l->log_lines_per_s = TRANSPORT_LOG_LINES_PER_S_DEFAULT;
    rmsg_limits_default(&l->rmsg);
}

int transport_init(struct transport *t, uv_loop_t *loop, uint64_t node_id,
                   uint64_t cluster_id, const char *listen_addr,
                   transport_recv_cb recv_cb, void *data)
{
    int rv;

    memset(t, 0, sizeof *t);
    if (loop == NULL || node_id == 0 || recv_cb == NULL) {
        return KAPPA_EINVAL;
    }
    if (parse_addr(listen_addr, &t->listen_sa) != 0 ||
        t->listen_sa.sin_addr.s_addr == htonl(INADDR_ANY)) {
        return KAPPA_ECONFIG;
    }
    t->data = data;
    t->loop = loop;
    t->node_id = node_id;
    t->cluster_id = cluster_id;
    t->recv_cb = recv_cb;
    transport_limits_default(&t->limits);
    t->log_window_ms = uv_now(loop);
    /* None of these fail for a valid loop. */
    rv = uv_tcp_init(loop, &t->listener);
    KAPPA_ASSERT(rv == 0);
    rv = uv_prepare_init(loop, &t->prepare);
    KAPPA_ASSERT(rv == 0);
    rv = uv_timer_init(loop, &t->tick);
    KAPPA_ASSERT(rv == 0);
    t->listener.data = t;
    t->prepare.data = t;
    t->tick.data = t;
    t->n_handles = 3;
    rv = uv_timer_start(&t->tick, tick_cb, TICK_MS, TICK_MS);
    KAPPA_ASSERT(rv == 0);
    /* The tick alone must not keep the loop alive. */
    uv_unref((uv_handle_t *)&t->tick);
    return 0;
}

int transport_set_limits(struct transport *t, const struct transport_limits *l)
{
    if (t->is_started || t->is_closing || l->frame_bytes_max < 1024 ||
        l->queue_bytes_max < (size_t)l->frame_bytes_max + 4 ||
        l->peers_max == 0 || l->conns_in_max == 0 ||
        l->connect_timeout_ms == 0 || l->backoff_min_ms == 0 ||
        l->backoff_max_ms < l->backoff_min_ms || l->log_lines_per_s == 0 ||
        l->rmsg.entries_max == 0) {
        return KAPPA_EINVAL;
    }
    t->limits = *l;
    return 0;
}

int transport_start(struct transport *t)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    int rv;

    if (t->is_started || t->is_closing) {
        return KAPPA_EINVAL;
    }
    rv = uv_tcp_bind(&t->listener, (const struct sockaddr *)&t->listen_sa, 0);
    if (rv == 0) {
        rv = uv_listen((uv_stream_t *)&t->listener, LISTEN_BACKLOG, listen_cb);
    }
    if (rv == 0) {
        rv = uv_tcp_getsockname(&t->listener, (struct sockaddr *)&ss, &len);
    }
    if (rv != 0) {
        kappa_log(KAPPA_LOG_ERROR, "transport", "self=%llu listen: %s", SELF(t),
                  uv_strerror(rv));
        return KAPPA_ETRANSPORT;
    }
    t->listen_sa.sin_port = ((const struct sockaddr_in *)&ss)->sin_port;
    sa_format(&t->listen_sa, t->address);
    t->is_started = 1;
    kappa_log(KAPPA_LOG_INFO, "transport", "self=%llu listening addr=%s",
              SELF(t), t->address);
    return 0;
}

const char *transport_address(const struct transport *t)
{
    return t->address;
}

int transport_set_peer(struct transport *t, uint64_t node_id, const char *addr)
{
    struct transport_peer *p;
    struct sockaddr_in sa;

    if (t->is_closing || node_id == 0 || node_id == t->node_id ||
        parse_addr(addr, &sa) != 0) {
        return KAPPA_EINVAL;
    }
    p = peer_find(t, node_id);
    if (p != NULL) {
        if (strcmp(p->address, addr) == 0) {
            return 0;
        }
        peer_drop_conn(t, p, KAPPA_ETRANSPORT);
    } else {
        if (t->n_peers >= t->limits.peers_max) {
            return KAPPA_EBUSY;
        }
        p = kappa_calloc(1, sizeof *p);
        if (p == NULL) {
            return KAPPA_ENOMEM;
        }
        p->id = node_id;
        p->next = t->peers;
        t->peers = p;
        t->n_peers++;
    }
    (void)snprintf(p->address, sizeof p->address, "%s", addr);
    p->sa = sa;
    peer_set_state(p, PEER_IDLE);
    p->backoff_ms = t->limits.backoff_min_ms;
    return 0;
}

void transport_remove_peer(struct transport *t, uint64_t node_id)
{
    struct transport_peer **pp;

    for (pp = &t->peers; *pp != NULL; pp = &(*pp)->next) {
        struct transport_peer *p = *pp;
        if (p->id == node_id) {
            *pp = p->next;
            t->n_peers--;
            peer_drop_conn(t, p, KAPPA_ECANCELED);
            kappa_free(p);
            return;
        }
    }
}

/* Encodes m as a frame into req->frame, with us as the sender. */
static int send_encode(struct transport *t, struct transport_send *req,
                       uint64_t group_id, const struct raft_message *m,
                       size_t bytes_max)
{
    struct raft_message copy = *m;
    size_t start;
    int rv;

    copy.server_id = t->node_id;
    copy.server_address = t->address;
    if (buf_reserve(&req->frame, WIRE_FRAME_HEADER_BYTES + bytes_max) != 0) {
        return KAPPA_ENOMEM;
    }
    start = wire_frame_begin(&req->frame);
    rv = rmsg_encode(&req->frame, group_id, &copy);
    if (rv != 0) {
        return rv;
    }
    wire_frame_end(&req->frame, start);
    return req->frame.len - WIRE_FRAME_HEADER_BYTES > t->limits.frame_bytes_max
               ? KAPPA_ETOOBIG
               : 0;
}

/* Queues an encoded frame on its peer and makes sure it gets written. */
static void enqueue(struct transport *t, struct transport_peer *p,
                    struct transport_send *req)
{
    if (p->queue_tail != NULL) {
        p->queue_tail->next = req;
    } else {
        p->queue_head = req;
    }
    p->queue_tail = req;
    p->queued_bytes += req->frame.len;
    if (p->state == PEER_IDLE) {
        peer_connect(t, p);
    } else if (p->state == PEER_CONNECTED) {
        (void)uv_prepare_start(&t->prepare, prepare_cb);
    }
}

int transport_send(struct transport *t, struct transport_send *req,
                   uint64_t peer_id, uint64_t group_id,
                   const struct raft_message *m, transport_send_cb cb)
{
    struct transport_peer *p;
    size_t bytes_max;
    int rv;

    if (t == NULL || req == NULL || m == NULL || cb == NULL) {
        return KAPPA_EINVAL;
    }
    if (t->is_closing) {
        return KAPPA_ESHUTDOWN;
    }
    req->cb = cb;
    req->next = NULL;
    req->status = 0;
    buf_init(&req->frame);
    p = peer_find(t, peer_id);
    if (p == NULL || p->state == PEER_BACKOFF) {
        send_fail_later(t, req, KAPPA_ETRANSPORT);
        return 0;
    }
    /* Limits are checked on the upper bound, before copying anything; the
     * exact frame size is checked after encoding. The bound overestimates
     * per-entry overheads, hence the slack for the early ETOOBIG. */
    bytes_max = rmsg_encoded_bytes_max(m) + sizeof t->address;
    if (bytes_max > (size_t)t->limits.frame_bytes_max +
                        t->limits.frame_bytes_max / 4 + 4096) {
        send_fail_later(t, req, KAPPA_ETOOBIG);
        return 0;
    }
    if (p->queued_bytes + WIRE_FRAME_HEADER_BYTES + bytes_max >
        t->limits.queue_bytes_max) {
        send_fail_later(t, req, KAPPA_EBUSY);
        return 0;
    }
    rv = send_encode(t, req, group_id, m, bytes_max);
    if (rv == KAPPA_EINVAL) {
        buf_free(&req->frame);
        return rv;
    }
    if (rv != 0) {
        send_fail_later(t, req, rv);
        return 0;
    }
    enqueue(t, p, req);
    return 0;
}

void transport_set_app_cb(struct transport *t, transport_app_cb cb)
{
    t->app_cb = cb;
}

int transport_send_app(struct transport *t, struct transport_send *req,
                       uint64_t peer_id, const void *payload, size_t len,
                       transport_send_cb cb)
{
    struct transport_peer *p;
    size_t start;
    int rv;

    if (t == NULL || req == NULL || cb == NULL ||
        (payload == NULL && len > 0) || len > RMSG_APP_BYTES_MAX) {
        return KAPPA_EINVAL;
    }
    if (t->is_closing) {
        return KAPPA_ESHUTDOWN;
    }
    req->cb = cb;
    req->next = NULL;
    req->status = 0;
    buf_init(&req->frame);
    p = peer_find(t, peer_id);
    if (p == NULL || p->state == PEER_BACKOFF) {
        send_fail_later(t, req, KAPPA_ETRANSPORT);
        return 0;
    }
    if (p->queued_bytes + WIRE_FRAME_HEADER_BYTES + len + 64 +
            sizeof t->address >
        t->limits.queue_bytes_max) {
        send_fail_later(t, req, KAPPA_EBUSY);
        return 0;
    }
    start = wire_frame_begin(&req->frame);
    rv = req->frame.len < start + WIRE_FRAME_HEADER_BYTES ? KAPPA_ENOMEM : 0;
    if (rv == 0) {
        rv = rmsg_encode_app(&req->frame, t->node_id, t->address, payload, len);
    }
    if (rv == 0) {
        wire_frame_end(&req->frame, start);
        if (req->frame.len - WIRE_FRAME_HEADER_BYTES >
            t->limits.frame_bytes_max) {
            rv = KAPPA_ETOOBIG;
        }
    }
    if (rv != 0) {
        send_fail_later(t, req, rv);
        return 0;
    }
    enqueue(t, p, req);
    return 0;
}

static void prepare_close_cb(uv_handle_t *h)
{
    struct transport *t = h->data;
    t->n_handles--;
    KAPPA_ASSERT(t->n_handles == 0);
    if (t->close_cb != NULL) {
        t->close_cb(t);
    }
}

/* Completes the close once connections and the other handles are gone:
 * the remaining failed sends get their callbacks, then the prepare handle
 * closes last. */
static void maybe_finish_close(struct transport *t)
{
    if (!t->is_closing || t->n_conns > 0 || t->n_handles != 1 ||
        uv_is_closing((uv_handle_t *)&t->prepare)) {
        return;
    }
    while (t->done_head != NULL) {
        done_drain(t);
    }
    uv_close((uv_handle_t *)&t->prepare, prepare_close_cb);
}

static void handle_close_cb(uv_handle_t *h)
{
    struct transport *t = h->data;
    t->n_handles--;
    maybe_finish_close(t);
}

void transport_close(struct transport *t, transport_close_cb cb)
{
    struct transport_conn *c;

    if (t->is_closing) {
        return;
    }
    t->is_closing = 1;
    t->close_cb = cb;
    uv_close((uv_handle_t *)&t->listener, handle_close_cb);
    uv_close((uv_handle_t *)&t->tick, handle_close_cb);
    while (t->peers != NULL) {
        struct transport_peer *p = t->peers;
        t->peers = p->next;
        peer_drop_conn(t, p, KAPPA_ECANCELED);
        kappa_free(p);
    }
    t->n_peers = 0;
    for (c = t->conns; c != NULL; c = c->next) {
        conn_close(c);
    }
    kappa_log(KAPPA_LOG_INFO, "transport", "self=%llu closing", SELF(t));
}

const struct transport_stats *transport_stats(const struct transport *t)
{
    return &t->stats;
}

int transport_is_connected(const struct transport *t, uint64_t peer_id)
{
    const struct transport_peer *p = peer_find(t, peer_id);
    return p != NULL && p->state == PEER_CONNECTED;
}
