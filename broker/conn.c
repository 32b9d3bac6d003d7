/* Client connections.
 *
 * Happy path: conn_accept sets TCP_NODELAY and starts reading. alloc_cb
 * offers free space at the end of rbuf, at least the rest of the frame being
 * received (its length was checked against frame.max.bytes first), so a
 * large produce arrives in few reads and is never copied again. read_cb
 * handles up to CONN_FRAMES_PER_PASS whole frames in place; handlers append
 * reply frames to `out` and put the connection on the server's flush list;
 * the server's prepare callback (once per loop iteration) hands `out` to
 * uv_write as one buffer (swapped with `wbuf`), so many replies share one
 * write syscall.
 *
 * Failure modes: broken framing gets one error reply, then the connection
 * closes after that reply is written (CLOSE_AFTER_REPLY). Reading stops
 * while the replies queued or the async requests in flight pass their caps,
 * and resumes when the write callback drains them; frames left in rbuf are
 * then handled from the server's backlog pass. A read or write error, or
 * EOF, closes the connection: async requests are abandoned (they finish
 * without replying) and memory is freed in the close callback, never inside
 * the connection's own callback chain. */
#include "conn.h"

#include <string.h>

#include "broker/dispatch.h"
#include "broker/server.h"
#include "common/alloc.h"
#include "common/assert.h"
#include "common/err.h"
#include "common/log.h"
#include "common/wire.h"

#define COMPONENT "conn"
/* Keep read buffers up to this size between frames. */
#define CONN_RBUF_KEEP_BYTES (4u * 1024 * 1024)
/* Bytes of a bad frame shown in the log. */
#define CONN_LOG_BYTES_MAX 64

static void close_cb(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct server *s = c->server;
    list_remove(&c->link);
    s->n_conns--;
    buf_free(&c->rbuf);
    buf_free(&c->out);
    buf_free(&c->wbuf);
    kappa_free(c);
    server_poke(s);
}

void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSING) {
        return;
    }
    c->state = CONN_CLOSING;
    list_remove(&c->flush_link);
    list_remove(&c->backlog_link);
    while (!list_is_empty(&c->reqs)) {
        struct req *r = list_entry(c->reqs.next, struct req, link);
        list_remove(&r->link);
        r->conn = NULL;
        c->n_reqs--;
        r->abandon_cb(r);
    }
    kappa_log(KAPPA_LOG_DEBUG, COMPONENT, "closing id=%llu peer=%s",
              (unsigned long long)c->id, c->peer);
    uv_close((uv_handle_t *)&c->tcp, close_cb);
}

static int can_dispatch(const struct conn *c)
{
    return c->state == CONN_OPEN && c->server->state == SERVER_RUNNING &&
           c->n_reqs < CONN_REQS_MAX &&
           c->out.len + c->wbuf.len < CONN_OUT_HIGH_BYTES;
}

/* 0 when a whole frame is buffered, 1 when more bytes are needed, or the
 * framing error. */
static int peek_frame(const struct conn *c, uint32_t *body_bytes)
{
    return wire_frame_peek(c->rbuf.data + c->rpos, c->rbuf.len - c->rpos,
                           c->server->cfg->frame_max_bytes, body_bytes);
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b);

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct conn *c = h->data;
    size_t have = c->rbuf.len - c->rpos;
    size_t need = CONN_READ_BYTES_MIN;
    uint32_t body_bytes;

    (void)suggested;
    /* The whole rest of the frame in one buffer: limits were checked by the
     * peek, before any reservation. */
    if (peek_frame(c, &body_bytes) == 1 && have >= WIRE_FRAME_HEADER_BYTES) {
        size_t rest = WIRE_FRAME_HEADER_BYTES + (size_t)body_bytes - have;
        need = rest > need ? rest : need;
    }
    if (c->rpos > 0 && c->rbuf.cap - c->rbuf.len < need) {
        memmove(c->rbuf.data, c->rbuf.data + c->rpos, have);
        c->rbuf.len = have;
        c->rpos = 0;
    }
    if (buf_reserve(&c->rbuf, need) != 0) {
        *b = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
        return;
    }
    *b = uv_buf_init((char *)c->rbuf.data + c->rbuf.len,
                     (unsigned)(c->rbuf.cap - c->rbuf.len > UINT32_MAX
                                    ? UINT32_MAX
                                    : c->rbuf.cap - c->rbuf.len));
}

void conn_update_reading(struct conn *c)
{
    struct server *s = c->server;
    int want = can_dispatch(c);
    uint32_t body_bytes;

    if (c->state == CONN_CLOSING) {
        return;
    }
    if (want && !c->is_reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0) {
            conn_close(c);
            return;
        }
        c->is_reading = 1;
    } else if (!want && c->is_reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->is_reading = 0;
    }
    if (want && peek_frame(c, &body_bytes) != 1) {
        if (!list_is_linked(&c->backlog_link)) {
            list_push_back(&s->backlog_list, &c->backlog_link);
        }
        server_backlog_wake(s);
    } else {
        list_remove(&c->backlog_link);
    }
}

/* Metrics: one count per frame by api key (a header decode, no
 * allocation); a malformed envelope counts as "unknown". */
static void count_request(struct server *s, const uint8_t *body, size_t n)
{
    struct wire_request_header h = {0, 0, 0};
    struct mp_reader args;
    int ok = wire_request_decode(body, n, &h, &args) == 0;
    metrics_count_request(
        &s->stats, ok && h.api_key < WIRE_API_COUNT ? (int)h.api_key : -1);
}

void conn_process(struct conn *c)
{
    uint32_t body_bytes;
    int n = 0;
    int rv;

    while (n < CONN_FRAMES_PER_PASS && can_dispatch(c)) {
        uint8_t *frame = c->rbuf.data + c->rpos;
        rv = peek_frame(c, &body_bytes);
        if (rv == 1) {
            break;
        }
        if (rv != 0) {
            size_t have = c->rbuf.len - c->rpos;
            conn_protocol_error(c, 0, rv,
                                rv == KAPPA_ETOOBIG
                                    ? "frame exceeds frame.max.bytes"
                                    : "empty frame",
                                frame, have);
            break;
        }
        c->rpos += WIRE_FRAME_HEADER_BYTES + (size_t)body_bytes;
        count_request(c->server, frame + WIRE_FRAME_HEADER_BYTES, body_bytes);
        dispatch_frame(c, frame + WIRE_FRAME_HEADER_BYTES, body_bytes);
        n++;
    }
    if (c->rpos == c->rbuf.len) {
        c->rpos = 0;
        c->rbuf.len = 0;
        if (c->rbuf.cap > CONN_RBUF_KEEP_BYTES) {
            buf_free(&c->rbuf);
        }
    }
    conn_update_reading(c);
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = stream->data;
    (void)b;
    if (nread < 0) {
        if (nread != UV_EOF) {
            kappa_log(KAPPA_LOG_INFO, COMPONENT, "read error peer=%s: %s",
                      c->peer, uv_strerror((int)nread));
        }
        conn_close(c);
        return;
    }
    c->rbuf.len += (size_t)nread;
    c->server->stats.bytes_in += (uint64_t)nread;
    conn_process(c);
}

static void write_cb(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    struct server *s = c->server;
    c->is_writing = 0;
    c->wbuf.len = 0;
    if (c->wbuf.cap > CONN_OUT_KEEP_BYTES) {
        buf_free(&c->wbuf);
    }
    if (c->state == CONN_CLOSING) {
        return; /* UV_ECANCELED from uv_close; close_cb frees */
    }
    if (status < 0) {
        kappa_log(KAPPA_LOG_INFO, COMPONENT, "write error peer=%s: %s", c->peer,
                  uv_strerror(status));
        conn_close(c);
        return;
    }
    if (c->out.len > 0) {
        conn_flush(c);
    } else if (c->state == CONN_CLOSE_AFTER_REPLY) {
        conn_close(c);
        return;
    }
    conn_update_reading(c);
    server_poke(s);
}

void conn_flush(struct conn *c)
{
    struct buf tmp;
    uv_buf_t b;
    int rv;

    list_remove(&c->flush_link);
    if (c->is_writing || c->out.len == 0 || c->state == CONN_CLOSING) {
        return;
    }
    KAPPA_ASSERT(c->wbuf.len == 0);
    tmp = c->wbuf;
    c->wbuf = c->out;
    c->out = tmp;
    b = uv_buf_init((char *)c->wbuf.data, (unsigned)c->wbuf.len);
    c->write_req.data = c;
    rv = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, write_cb);
    if (rv != 0) {
        c->wbuf.len = 0;
        conn_close(c);
        return;
    }
    c->is_writing = 1;
    c->server->stats.bytes_out += c->wbuf.len;
}

static void mark_dirty(struct conn *c)
{
    if (!list_is_linked(&c->flush_link) && c->state != CONN_CLOSING) {
        list_push_back(&c->server->flush_list, &c->flush_link);
    }
}

void conn_req_add(struct conn *c, struct req *r, uint32_t correlation_id,
                  void (*abandon_cb)(struct req *r))
{
    r->conn = c;
    r->correlation_id = correlation_id;
    r->abandon_cb = abandon_cb;
    list_push_back(&c->reqs, &r->link);
    c->n_reqs++;
}

void conn_req_done(struct req *r)
{
    struct conn *c = r->conn;
    if (c == NULL) {
        return;
    }
    list_remove(&r->link);
    c->n_reqs--;
    /* Reading resumes in the flush/write path once replies drain. */
    if (c->n_reqs + 1 == CONN_REQS_MAX) {
        conn_update_reading(c);
    }
}

void reply_begin(struct reply *r, struct conn *c, uint32_t correlation_id)
{
    r->conn = c;
    r->correlation_id = correlation_id;
    r->start = wire_frame_begin(&c->out);
    mp_writer_init(&r->w, &c->out);
    wire_response_begin(&r->w, correlation_id, 0, NULL);
}

void reply_abort(struct reply *r)
{
    r->conn->out.len = r->start;
}

void reply_end(struct reply *r)
{
    struct conn *c = r->conn;
    if (r->w.err != 0 || c->out.len < r->start + WIRE_FRAME_HEADER_BYTES) {
        c->out.len = r->start;
        conn_reply_error(c, r->correlation_id, KAPPA_ENOMEM,
                         "reply too large for memory");
        return;
    }
    wire_frame_end(&c->out, r->start);
    mark_dirty(c);
}

void conn_reply_error(struct conn *c, uint32_t correlation_id, int code,
                      const char *message)
{
    struct mp_writer w;
    size_t start = wire_frame_begin(&c->out);
    mp_writer_init(&w, &c->out);
    wire_response_begin(&w, correlation_id, code,
                        message != NULL ? message : kappa_err_str(code));
    mp_put_nil(&w);
    if (w.err != 0 || c->out.len < start + WIRE_FRAME_HEADER_BYTES) {
        c->out.len = start;
        kappa_log(KAPPA_LOG_ERROR, COMPONENT, "out of memory replying peer=%s",
                  c->peer);
        conn_close(c);
        return;
    }
    wire_frame_end(&c->out, start);
    mark_dirty(c);
}

/* Escapes up to CONN_LOG_BYTES_MAX bytes as printable ASCII. */
static void sanitise(const uint8_t *p, size_t n, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (n > CONN_LOG_BYTES_MAX) {
        n = CONN_LOG_BYTES_MAX;
    }
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\') {
            out[o++] = (char)p[i];
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[p[i] >> 4];
            out[o++] = hex[p[i] & 15];
        }
    }
    out[o] = '\0';
}

void conn_protocol_error(struct conn *c, uint32_t correlation_id, int code,
                         const char *reason, const uint8_t *bytes, size_t n)
{
    char shown[CONN_LOG_BYTES_MAX * 4 + 8];
    uint64_t suppressed;
    if (server_protocol_log_allowed(c->server, &suppressed)) {
        sanitise(bytes, n, shown, sizeof shown);
        kappa_log(KAPPA_LOG_WARN, COMPONENT,
                  "protocol error peer=%s code=%s reason=\"%s\" bytes=\"%s\" "
                  "suppressed=%llu",
                  c->peer, kappa_err_name(code), reason, shown,
                  (unsigned long long)suppressed);
    }
    conn_reply_error(c, correlation_id, code, reason);
    if (c->state == CONN_OPEN) {
        c->state = CONN_CLOSE_AFTER_REPLY;
    }
    conn_update_reading(c);
}

static void peer_name(struct conn *c)
{
    struct sockaddr_storage ss;
    char host[48] = "?";
    int len = sizeof ss;
    int port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, host, sizeof host);
            port = ntohs(a->sin6_port);
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            uv_ip4_name(a, host, sizeof host);
            port = ntohs(a->sin_port);
        }
    }
    snprintf(c->peer, sizeof c->peer, "%s:%d", host, port);
}

static void reject_close_cb(uv_handle_t *h)
{
    kappa_free(h);
}

/* Accepts and drops a connection over connections.max. */
static void reject(struct server *s)
{
    uint64_t suppressed;
    uv_tcp_t *t = kappa_malloc(sizeof *t);
    if (t == NULL || uv_tcp_init(s->loop, t) != 0) {
        kappa_free(t);
        return;
    }
    (void)uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)t);
    uv_close((uv_handle_t *)t, reject_close_cb);
    if (server_protocol_log_allowed(s, &suppressed)) {
        kappa_log(KAPPA_LOG_WARN, "server",
                  "connection refused: connections.max=%u reached",
                  s->cfg->connections_max);
    }
}

int conn_accept(struct server *s)
{
    struct conn *c;
    if (s->n_conns >= s->cfg->connections_max) {
        reject(s);
        return KAPPA_EBUSY;
    }
    c = kappa_calloc(1, sizeof *c);
    if (c == NULL) {
        reject(s);
        return KAPPA_ENOMEM;
    }
    if (uv_tcp_init(s->loop, &c->tcp) != 0) {
        kappa_free(c);
        reject(s);
        return KAPPA_EIO;
    }
    c->server = s;
    c->id = ++s->next_conn_id;
    c->tcp.data = c;
    list_init(&c->flush_link);
    list_init(&c->backlog_link);
    list_init(&c->reqs);
    list_push_back(&s->conns, &c->link);
    s->n_conns++;
    if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return KAPPA_EIO;
    }
    (void)uv_tcp_nodelay(&c->tcp, 1);
    peer_name(c);
    kappa_log(KAPPA_LOG_DEBUG, COMPONENT, "accepted id=%llu peer=%s",
              (unsigned long long)c->id, c->peer);
    conn_update_reading(c);
    return 0;
}
