/* Broker connections: one TCP stream per broker, length-prefixed msgpack
 * frames, correlation ids and pipelining.
 *
 * Happy path: conn_send() queues a request on `pending`; when the socket is
 * connected it is written at once (uv_write tries the socket synchronously)
 * and moves to `sent`. Responses may arrive in any order and are matched by
 * correlation id; the request's callback runs and the request is freed once
 * its write has also completed. A Hello is queued first on every new
 * connection so the client learns which broker a bootstrap address is.
 *
 * Failure modes: a refused or reset connection, a write error, EOF or a
 * malformed frame fail every pending and sent request with
 * KAPPA_ETRANSPORT and close the socket; requests queued meanwhile wait and
 * reconnect after KCLIENT_RECONNECT_BACKOFF_MS. A request past its deadline
 * fails alone with KAPPA_ETIMEDOUT (a late response is dropped). Shutdown
 * fails everything with KAPPA_ECANCELED. */
#include <netdb.h>
#include <stdio.h>
#include <string.h>

#include "client_int.h"
#include "common/alloc.h"
#include "common/assert.h"
#include "common/endian.h"
#include "common/log.h"

/* Receive buffer growth step when no large frame is announced. */
#define CONN_READ_CHUNK (64u * 1024)

static void conn_connect(struct kconn *conn);

static void conn_set_state(struct kconn *conn, enum kconn_state next)
{
    switch (next) {
    case KCONN_CONNECTING:
        KAPPA_ASSERT(conn->state == KCONN_DISCONNECTED);
        break;
    case KCONN_READY:
        KAPPA_ASSERT(conn->state == KCONN_CONNECTING);
        break;
    case KCONN_CLOSING:
        KAPPA_ASSERT(conn->state == KCONN_CONNECTING ||
                     conn->state == KCONN_READY);
        break;
    case KCONN_DISCONNECTED:
        KAPPA_ASSERT(conn->state == KCONN_CLOSING);
        break;
    }
    conn->state = next;
}

struct kreq *kreq_new(struct kappa_client *c, int api, kreq_done_cb cb,
                      void *arg)
{
    struct kreq *req = kappa_calloc(1, sizeof *req);
    if (req == NULL) {
        return NULL;
    }
    req->c = c;
    req->api = api;
    req->cb = cb;
    req->arg = arg;
    req->expects_response = 1;
    req->correlation_id = c->next_correlation_id++;
    req->deadline_ms = client_now_ms() + (uint64_t)c->conf.request_timeout_ms;
    buf_init(&req->head);
    mp_writer_init(&req->w, &req->head);
    (void)wire_frame_begin(&req->head);
    wire_request_begin(&req->w, (uint32_t)api, 0, req->correlation_id);
    return req;
}

static void kreq_free(struct kreq *req)
{
    buf_free(&req->head);
    kappa_free(req->iov);
    kappa_free(req);
}

void kreq_discard(struct kreq *req)
{
    kreq_free(req);
}

/* Lists: pending and sent are doubly linked so a timed-out request leaves in
 * O(1). */
static void list_push(struct kreq **head, struct kreq **tail, struct kreq *r)
{
    r->next = NULL;
    r->prev = *tail;
    if (*tail != NULL) {
        (*tail)->next = r;
    } else {
        *head = r;
    }
    *tail = r;
}

static void list_remove(struct kreq **head, struct kreq **tail, struct kreq *r)
{
    if (r->prev != NULL) {
        r->prev->next = r->next;
    } else {
        *head = r->next;
    }
    if (r->next != NULL) {
        r->next->prev = r->prev;
    } else {
        *tail = r->prev;
    }
    r->prev = r->next = NULL;
}

/* Runs the callback once; the request is freed when its write is done. */
static void kreq_finish(struct kreq *req, int rv, struct kresp *resp)
{
    struct kconn *conn = req->conn;
    KAPPA_ASSERT(!req->is_finished);
    req->is_finished = 1;
    if (req->api == WIRE_API_PRODUCE && conn->n_produce_in_flight > 0) {
        conn->n_produce_in_flight--;
    }
    if (req->api == WIRE_API_FETCH && conn->n_fetch_in_flight > 0) {
        conn->n_fetch_in_flight--;
    }
    req->cb(req, rv, resp);
    if (!req->is_writing) {
        kreq_free(req);
    }
}

static void fail_list(struct kreq **head, struct kreq **tail, int rv)
{
    while (*head != NULL) {
        struct kreq *req = *head;
        list_remove(head, tail, req);
        kreq_finish(req, rv, NULL);
    }
}

static void on_close(uv_handle_t *h)
{
    struct kconn *conn = h->data;
    struct kappa_client *c = conn->c;
    c->n_handles_open--;
    conn_set_state(conn, KCONN_DISCONNECTED);
    buf_free(&conn->rbuf);
    if (c->is_closing) {
        kappa_free(conn);
        return;
    }
    conn->next_connect_ms = client_now_ms() + KCLIENT_RECONNECT_BACKOFF_MS;
}

void conn_fail(struct kconn *conn, int rv, const char *why)
{
    struct kappa_client *c = conn->c;
    if (conn->state == KCONN_CONNECTING || conn->state == KCONN_READY) {
        kappa_errmsg_printf(conn->errmsg, "broker %s:%d: %s", conn->host,
                            conn->port, why);
        kappa_log(KAPPA_LOG_DEBUG, "client", "%s", conn->errmsg);
        conn_set_state(conn, KCONN_CLOSING);
        uv_close((uv_handle_t *)&conn->tcp, on_close);
    }
    /* Requests queued from inside these callbacks stay pending and go out
     * after a reconnect; only those present now fail. */
    struct kreq *pend = conn->pending_head, *pend_tail = conn->pending_tail;
    conn->pending_head = conn->pending_tail = NULL;
    fail_list(&conn->sent_head, &conn->sent_tail, rv);
    fail_list(&pend, &pend_tail, rv);
    (void)c;
}

static void on_write(uv_write_t *w, int status)
{
    struct kreq *req = w->data;
    struct kconn *conn = req->conn;
    req->is_writing = 0;
    if (req->is_finished) {
        kreq_free(req);
        return;
    }
    if (status != 0) {
        conn_fail(conn,
                  status == UV_ECANCELED ? KAPPA_ECANCELED : KAPPA_ETRANSPORT,
                  uv_strerror(status));
        return;
    }
    if (!req->expects_response) {
        list_remove(&conn->sent_head, &conn->sent_tail, req);
        kreq_finish(req, 0, NULL);
    }
}

/* Writes one request; on failure the connection fails (and req with it). */
static void conn_write(struct kconn *conn, struct kreq *req)
{
    uv_buf_t one;
    const uv_buf_t *bufs = &one;
    unsigned n = 1;
    int rv;

    if (req->iov != NULL) {
        bufs = req->iov;
        n = req->n_iov;
    } else {
        one = uv_buf_init((char *)req->head.data, (unsigned)req->head.len);
    }
    list_push(&conn->sent_head, &conn->sent_tail, req);
    req->write.data = req;
    req->is_writing = 1;
    rv = uv_write(&req->write, (uv_stream_t *)&conn->tcp, bufs, n, on_write);
    if (rv != 0) {
        req->is_writing = 0;
        conn_fail(conn, KAPPA_ETRANSPORT, uv_strerror(rv));
    }
}

static void flush_pending(struct kconn *conn)
{
    while (conn->state == KCONN_READY && conn->pending_head != NULL) {
        struct kreq *req = conn->pending_head;
        list_remove(&conn->pending_head, &conn->pending_tail, req);
        conn_write(conn, req);
    }
}

/* Hello: tells the broker who we are and tells us the broker's id. */
static void on_hello(struct kreq *req, int rv, struct kresp *resp)
{
    struct kconn *conn = req->conn;
    uint32_t n;
    if (rv != 0 || resp->h.error_code != 0 ||
        mp_read_map(&resp->result, &n) != 0) {
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *key;
        uint32_t key_len;
        int64_t id;
        if (mp_read_str(&resp->result, &key, &key_len) != 0) {
            return;
        }
        if (mp_key_is(key, key_len, "node_id")) {
            if (mp_read_int(&resp->result, &id) == 0 && id >= 0 &&
                id <= INT32_MAX) {
                metadata_conn_identified(req->c, conn, (int32_t)id);
            }
            return;
        }
        if (mp_skip(&resp->result) != 0) {
            return;
        }
    }
}

static int queue_hello(struct kconn *conn)
{
    struct kreq *req = kreq_new(conn->c, WIRE_API_HELLO, on_hello, NULL);
    if (req == NULL) {
        return KAPPA_ENOMEM;
    }
    mp_put_map(&req->w, 1);
    mp_put_str(&req->w, "client");
    mp_put_str(&req->w, conn->c->conf.client_id);
    wire_frame_end(&req->head, 0);
    if (req->w.err != 0) {
        kreq_free(req);
        return KAPPA_ENOMEM;
    }
    req->conn = conn;
    /* Hello goes first, ahead of what triggered the connect. */
    req->prev = NULL;
    req->next = conn->pending_head;
    if (conn->pending_head != NULL) {
        conn->pending_head->prev = req;
    } else {
        conn->pending_tail = req;
    }
    conn->pending_head = req;
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    struct kconn *conn = h->data;
    struct buf *b = &conn->rbuf;
    size_t want = CONN_READ_CHUNK;
    (void)suggested;
    /* A large announced frame is read exactly to its end, so it lands alone
     * in the buffer and a fetch response can be kept without a copy. */
    if (b->len >= WIRE_FRAME_HEADER_BYTES) {
        size_t total = WIRE_FRAME_HEADER_BYTES + (size_t)be32_get(b->data);
        if (total > b->len && total - b->len > CONN_READ_CHUNK &&
            total <= (size_t)conn->c->frame_max_bytes + 4) {
            want = total - b->len;
        }
    }
    if (buf_reserve(b, want) != 0) {
        *out = uv_buf_init(NULL, 0);
        return;
    }
    *out = uv_buf_init((char *)b->data + b->len, (unsigned)want);
}

static struct kreq *find_sent(struct kconn *conn, uint32_t id)
{
    for (struct kreq *r = conn->sent_head; r != NULL; r = r->next) {
        if (r->correlation_id == id && r->expects_response) {
            return r;
        }
    }
    return NULL;
}

/* Hands one response frame to its request. */
static int dispatch_frame(struct kconn *conn, size_t pos, uint32_t body_bytes)
{
    struct kresp resp;
    struct kreq *req;
    const uint8_t *body = conn->rbuf.data + pos + WIRE_FRAME_HEADER_BYTES;

    if (wire_response_decode(body, body_bytes, &resp.h, &resp.result) != 0) {
        return KAPPA_EPROTO;
    }
    req = find_sent(conn, resp.h.correlation_id);
    if (req == NULL) {
        return 0; /* its request timed out: drop the late answer */
    }
    list_remove(&conn->sent_head, &conn->sent_tail, req);
    resp.frame = &conn->rbuf;
    resp.frame_is_whole =
        pos == 0 &&
        conn->rbuf.len == WIRE_FRAME_HEADER_BYTES + (size_t)body_bytes;
    kreq_finish(req, 0, &resp);
    return 0;
}

static void process_frames(struct kconn *conn)
{
    size_t pos = 0;
    while (conn->state == KCONN_READY && conn->rbuf.data != NULL) {
        uint32_t body_bytes;
        int rv = wire_frame_peek(conn->rbuf.data + pos, conn->rbuf.len - pos,
                                 conn->c->frame_max_bytes, &body_bytes);
        if (rv == 1) {
            break;
        }
        if (rv == 0) {
            rv = dispatch_frame(conn, pos, body_bytes);
        }
        if (rv != 0) {
            conn_fail(conn, KAPPA_ETRANSPORT,
                      rv == KAPPA_ETOOBIG ? "response frame too large"
                                          : "malformed response");
            return;
        }
        if (conn->rbuf.data == NULL) {
            return; /* a handler kept the whole buffer */
        }
        pos += WIRE_FRAME_HEADER_BYTES + body_bytes;
    }
    if (conn->rbuf.data != NULL) {
        buf_consume(&conn->rbuf, pos);
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct kconn *conn = s->data;
    (void)b;
    if (nread < 0) {
        conn_fail(conn, KAPPA_ETRANSPORT,
                  nread == UV_EOF ? "connection closed by broker"
                                  : uv_strerror((int)nread));
        return;
    }
    if (nread == 0) {
        if (b->base == NULL) {
            conn_fail(conn, KAPPA_ENOMEM, "out of memory for receive buffer");
        }
        return;
    }
    conn->rbuf.len += (size_t)nread;
    process_frames(conn);
}

static void on_connect(uv_connect_t *cr, int status)
{
    struct kconn *conn = cr->data;
    int rv;
    if (conn->state != KCONN_CONNECTING) {
        return; /* closed meanwhile */
    }
    if (status != 0) {
        conn_fail(conn, KAPPA_ETRANSPORT, uv_strerror(status));
        return;
    }
    conn_set_state(conn, KCONN_READY);
    (void)uv_tcp_nodelay(&conn->tcp, 1);
    rv = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
    if (rv != 0) {
        conn_fail(conn, KAPPA_ETRANSPORT, uv_strerror(rv));
        return;
    }
    flush_pending(conn);
}

static int resolve(struct kconn *conn, struct sockaddr_storage *sa)
{
    struct addrinfo hints, *res = NULL;
    char port[16];
    int rv;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%d", conn->port);
    rv = getaddrinfo(conn->host, port, &hints, &res);
    if (rv != 0 || res == NULL) {
        kappa_errmsg_printf(conn->errmsg, "broker %s:%d: resolve: %s",
                            conn->host, conn->port, gai_strerror(rv));
        return KAPPA_ETRANSPORT;
    }
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static void conn_connect(struct kconn *conn)
{
    struct kappa_client *c = conn->c;
    struct sockaddr_storage sa;
    int rv;

    if (resolve(conn, &sa) != 0) {
        struct kreq *pend = conn->pending_head, *tail = conn->pending_tail;
        conn->pending_head = conn->pending_tail = NULL;
        conn->next_connect_ms = client_now_ms() + KCLIENT_RECONNECT_BACKOFF_MS;
        fail_list(&pend, &tail, KAPPA_ETRANSPORT);
        return;
    }
    KAPPA_ASSERT(uv_tcp_init(&c->loop, &conn->tcp) == 0);
    c->n_handles_open++;
    conn->tcp.data = conn;
    conn->connect_req.data = conn;
    conn_set_state(conn, KCONN_CONNECTING);
    if (queue_hello(conn) != 0) {
        conn_fail(conn, KAPPA_ENOMEM, "out of memory");
        return;
    }
    rv = uv_tcp_connect(&conn->connect_req, &conn->tcp,
                        (const struct sockaddr *)&sa, on_connect);
    if (rv != 0) {
        conn_fail(conn, KAPPA_ETRANSPORT, uv_strerror(rv));
    }
}

int conn_send(struct kconn *conn, struct kreq *req)
{
    if (req->w.err != 0) {
        kreq_free(req);
        return KAPPA_ENOMEM;
    }
    req->conn = conn;
    if (req->api == WIRE_API_PRODUCE) {
        conn->n_produce_in_flight++;
    }
    if (req->api == WIRE_API_FETCH) {
        conn->n_fetch_in_flight++;
    }
    if (conn->state == KCONN_READY && conn->pending_head == NULL) {
        conn_write(conn, req);
        return 0;
    }
    list_push(&conn->pending_head, &conn->pending_tail, req);
    if (conn->state == KCONN_DISCONNECTED &&
        client_now_ms() >= conn->next_connect_ms) {
        conn_connect(conn);
    }
    return 0;
}

struct kconn *conn_new(struct kappa_client *c, int32_t broker_id,
                       const char *host, int port)
{
    struct kconn *conn;
    if (c->n_conns == KCLIENT_CONNS_MAX) {
        return NULL;
    }
    conn = kappa_calloc(1, sizeof *conn);
    if (conn == NULL) {
        return NULL;
    }
    conn->c = c;
    conn->broker_id = broker_id;
    snprintf(conn->host, sizeof conn->host, "%s", host);
    conn->port = port;
    conn->state = KCONN_DISCONNECTED;
    buf_init(&conn->rbuf);
    c->conns[c->n_conns++] = conn;
    return conn;
}

static void expire_list(struct kconn *conn, struct kreq **head,
                        struct kreq **tail, uint64_t now_ms)
{
    struct kreq *r = *head;
    while (r != NULL) {
        struct kreq *next = r->next;
        if (now_ms >= r->deadline_ms) {
            list_remove(head, tail, r);
            kappa_errmsg_printf(conn->errmsg,
                                "broker %s:%d: %s request timed out",
                                conn->host, conn->port, wire_api_name(r->api));
            kreq_finish(r, KAPPA_ETIMEDOUT, NULL);
        }
        r = next;
    }
}

void conn_tick(struct kconn *conn, uint64_t now_ms)
{
    expire_list(conn, &conn->sent_head, &conn->sent_tail, now_ms);
    expire_list(conn, &conn->pending_head, &conn->pending_tail, now_ms);
    if (conn->state == KCONN_DISCONNECTED && conn->pending_head != NULL &&
        now_ms >= conn->next_connect_ms) {
        conn_connect(conn);
    }
}

void conn_close(struct kconn *conn)
{
    conn_fail(conn, KAPPA_ECANCELED, "client closing");
    if (conn->state == KCONN_DISCONNECTED) {
        buf_free(&conn->rbuf);
        kappa_free(conn);
    }
}
