/* Unit tests for consensus/transport on 127.0.0.1 with ephemeral ports: three
 * transports on one loop exchange thousands of messages for several groups
 * in order; a restarted peer is reconnected; garbage, bad handshakes and
 * impostors get their connection closed while others keep working; queue,
 * frame and peer limits; callbacks are never synchronous; close cancels
 * pending sends. Every wait is a bounded loop run; every loop closes
 * cleanly (uv_loop_close == 0). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/endian.h"
#include "common/err.h"
#include "common/log.h"
#include "common/mp.h"
#include "common/wire.h"
#include "consensus/rmsg.h"
#include "consensus/transport.h"

#define CLUSTER   0xC1u
#define N_NODES   3
#define N_GROUPS  4
#define WAIT_MS   20000
#define HELLO_MAG 0x4b524654u

struct node {
    struct transport t;
    uint64_t id;
    int is_open;
    int is_closed; /* close callback ran */
    uint64_t next_seq[N_NODES + 2][N_GROUPS];
    uint64_t n_received;
    uint64_t n_bad;
    uint64_t last_seq; /* highest seq seen from anyone, any group */
};

struct send_req {
    struct transport_send req;
    struct node *from;
};

static struct {
    uv_loop_t loop;
    uv_timer_t timer;
    int timed_out;
    int in_send; /* set around transport_send: callbacks must not run */
    uint64_t n_ok;
    uint64_t n_failed;
    uint64_t by_status[8];
} h;

static int status_slot(int status)
{
    switch (status) {
    case 0:
        return 0;
    case KAPPA_ETRANSPORT:
        return 1;
    case KAPPA_EBUSY:
        return 2;
    case KAPPA_ETOOBIG:
        return 3;
    case KAPPA_ECANCELED:
        return 4;
    case KAPPA_ENOMEM:
        return 5;
    default:
        return 7;
    }
}

static void send_cb(struct transport_send *req, int status)
{
    struct send_req *s = req->data;
    assert_false(h.in_send);
    if (status == 0) {
        h.n_ok++;
    } else {
        h.n_failed++;
    }
    h.by_status[status_slot(status)]++;
    free(s);
}

/* Payload bytes of message seq. */
static uint8_t pattern(uint64_t seq, size_t i)
{
    return (uint8_t)(seq * 7 + i);
}

static void recv_cb(struct transport *t, uint64_t group_id,
                    struct raft_message *m, void *data)
{
    struct node *n = data;
    const struct raft_append_entries *ae = &m->append_entries;
    uint64_t seq;

    assert_ptr_equal(&n->t, t);
    if (m->type != RAFT_IO_APPEND_ENTRIES || group_id >= N_GROUPS ||
        m->server_id == 0 || m->server_id > N_NODES + 1 || ae->n_entries != 1) {
        n->n_bad++;
        rmsg_release(m);
        return;
    }
    seq = ae->prev_log_index;
    /* In order per (sender, group); gaps only where sends failed. */
    if (seq < n->next_seq[m->server_id][group_id]) {
        n->n_bad++;
    }
    n->next_seq[m->server_id][group_id] = seq + 1;
    if (seq > n->last_seq) {
        n->last_seq = seq;
    }
    for (size_t i = 0; i < ae->entries[0].buf.len; i++) {
        if (((uint8_t *)ae->entries[0].buf.base)[i] != pattern(seq, i)) {
            n->n_bad++;
            break;
        }
    }
    n->n_received++;
    rmsg_release(m); /* we own the entries, as raft would */
}

static void timer_cb(uv_timer_t *timer)
{
    (void)timer;
    h.timed_out = 1;
}

/* Runs the loop until cond(arg) holds or timeout_ms pass. Returns cond. */
static int run_until(int (*cond)(void *), void *arg, unsigned timeout_ms)
{
    h.timed_out = 0;
    uv_timer_start(&h.timer, timer_cb, timeout_ms, 0);
    while (!cond(arg) && !h.timed_out) {
        uv_run(&h.loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&h.timer);
    return cond(arg);
}

static void node_close_cb(struct transport *t)
{
    struct node *n = t->data;
    n->is_closed = 1;
}

static int node_is_closed(void *arg)
{
    return ((struct node *)arg)->is_closed;
}

static void node_start(struct node *n, uint64_t id, const char *addr,
                       const struct transport_limits *l)
{
    memset(n, 0, sizeof *n);
    n->id = id;
    assert_int_equal(
        transport_init(&n->t, &h.loop, id, CLUSTER, addr, recv_cb, n), 0);
    if (l != NULL) {
        assert_int_equal(transport_set_limits(&n->t, l), 0);
    }
    assert_int_equal(transport_start(&n->t), 0);
    n->is_open = 1;
}

static void node_stop(struct node *n)
{
    if (!n->is_open) {
        return;
    }
    transport_close(&n->t, node_close_cb);
    assert_true(run_until(node_is_closed, n, WAIT_MS));
    n->is_open = 0;
}

static void connect_all(struct node *nodes, unsigned count)
{
    for (unsigned i = 0; i < count; i++) {
        for (unsigned j = 0; j < count; j++) {
            if (i != j) {
                assert_int_equal(
                    transport_set_peer(&nodes[i].t, nodes[j].id,
                                       transport_address(&nodes[j].t)),
                    0);
            }
        }
    }
}

/* Sends an AppendEntries carrying seq (as prev_log_index) and a payload of
 * len pattern bytes. Returns transport_send's result. */
static int send_seq(struct node *from, uint64_t to, uint64_t group,
                    uint64_t seq, size_t len)
{
    struct send_req *s = malloc(sizeof *s);
    struct raft_message m;
    struct raft_entry e;
    uint8_t *payload = malloc(len + 1);
    int rv;

    assert_non_null(s);
    assert_non_null(payload);
    for (size_t i = 0; i < len; i++) {
        payload[i] = pattern(seq, i);
    }
    memset(&m, 0, sizeof m);
    m.type = RAFT_IO_APPEND_ENTRIES;
    m.server_id = to; /* raft sets the destination; the transport ignores */
    m.server_address = "ignored";
    m.append_entries.term = 1;
    m.append_entries.prev_log_index = seq;
    e.term = 1;
    e.type = RAFT_COMMAND;
    e.buf.base = payload;
    e.buf.len = len;
    e.batch = NULL;
    m.append_entries.entries = &e;
    m.append_entries.n_entries = 1;
    s->req.data = s;
    s->from = from;
    h.in_send = 1;
    rv = transport_send(&from->t, &s->req, to, group, &m, send_cb);
    h.in_send = 0;
    /* The message and its payload are ours again at once. */
    memset(payload, 0xEE, len);
    free(payload);
    if (rv != 0) {
        free(s);
    }
    return rv;
}

static uint64_t pending_target;

static int all_done(void *arg)
{
    (void)arg;
    return h.n_ok + h.n_failed >= pending_target;
}

static void reset_counts(void)
{
    h.n_ok = 0;
    h.n_failed = 0;
    memset(h.by_status, 0, sizeof h.by_status);
}

static int setup(void **state)
{
    (void)state;
    memset(&h, 0, sizeof h);
    assert_int_equal(uv_loop_init(&h.loop), 0);
    assert_int_equal(uv_timer_init(&h.loop, &h.timer), 0);
    kappa_log_set_level(getenv("KAPPA_TEST_LOG") ? KAPPA_LOG_DEBUG
                                                 : KAPPA_LOG_ERROR);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    uv_close((uv_handle_t *)&h.timer, NULL);
    assert_int_equal(uv_run(&h.loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&h.loop), 0);
    return 0;
}

struct received_goal {
    struct node *nodes;
    unsigned count;
    uint64_t each;
};

static int all_received(void *arg)
{
    struct received_goal *g = arg;
    for (unsigned i = 0; i < g->count; i++) {
        if (g->nodes[i].n_received < g->each) {
            return 0;
        }
    }
    return h.n_ok + h.n_failed >= pending_target;
}

/* Three nodes, four groups, every node sends K messages per group to each
 * other node, all at once (queued while connecting) and then in rounds. */
static void test_exchange(void **state)
{
    enum { K = 600 };
    struct node nodes[N_NODES];
    struct received_goal goal = {nodes, N_NODES, 0};
    (void)state;

    for (unsigned i = 0; i < N_NODES; i++) {
        node_start(&nodes[i], i + 1, "127.0.0.1:0", NULL);
        assert_string_not_equal(transport_address(&nodes[i].t), "127.0.0.1:0");
    }
    connect_all(nodes, N_NODES);
    reset_counts();
    for (unsigned round = 0; round < 2; round++) {
        for (uint64_t seq = (uint64_t)round * K;
             seq < (uint64_t)(round + 1) * K; seq++) {
            for (unsigned i = 0; i < N_NODES; i++) {
                for (unsigned j = 0; j < N_NODES; j++) {
                    for (uint64_t g = 0; g < N_GROUPS && i != j; g++) {
                        size_t len = seq % 97 == 0 ? 100000 : seq % 300;
                        if (g == 0 && seq % 211 == 0) {
                            len = (size_t)1024 * 1024;
                        }
                        assert_int_equal(
                            send_seq(&nodes[i], j + 1, g, seq, len), 0);
                    }
                }
            }
            /* Second round: let the loop turn now and then. */
            if (round == 1 && seq % 50 == 0) {
                uv_run(&h.loop, UV_RUN_NOWAIT);
            }
        }
    }
    pending_target = 2ull * K * N_NODES * (N_NODES - 1) * N_GROUPS;
    goal.each = 2ull * K * (N_NODES - 1) * N_GROUPS;
    assert_true(run_until(all_received, &goal, WAIT_MS));
    assert_int_equal(h.n_failed, 0);
    for (unsigned i = 0; i < N_NODES; i++) {
        const struct transport_stats *st = transport_stats(&nodes[i].t);
        assert_int_equal(nodes[i].n_bad, 0);
        assert_int_equal(nodes[i].n_received, goal.each);
        for (unsigned j = 0; j < N_NODES; j++) {
            for (unsigned g = 0; g < N_GROUPS && i != j; g++) {
                assert_int_equal(nodes[i].next_seq[j + 1][g], 2 * K);
            }
        }
        assert_int_equal(st->frames_received, goal.each);
        assert_int_equal(st->conns_connected, N_NODES - 1);
        assert_int_equal(st->conns_accepted, N_NODES - 1);
        assert_int_equal(st->proto_errors, 0);
        assert_true(transport_is_connected(&nodes[i].t, (i + 1) % N_NODES + 1));
    }
    for (unsigned i = 0; i < N_NODES; i++) {
        node_stop(&nodes[i]);
    }
}

/* A pump sends one message from a to b every tick while it runs. */
struct pump {
    uv_timer_t timer;
    struct node *from;
    uint64_t to;
    uint64_t seq;
};

static void pump_cb(uv_timer_t *timer)
{
    struct pump *p = timer->data;
    assert_int_equal(send_seq(p->from, p->to, 0, p->seq++, 64), 0);
}

struct recv_goal {
    struct node *node;
    uint64_t at_least;
};

static int received_at_least(void *arg)
{
    struct recv_goal *g = arg;
    return g->node->n_received >= g->at_least;
}

static int failed_at_least_one(void *arg)
{
    (void)arg;
    return h.n_failed > 0;
}

static void test_peer_restart(void **state)
{
    struct node a, b;
    struct pump pump;
    struct recv_goal goal;
    char b_addr[TRANSPORT_ADDRESS_SIZE];
    uint64_t seq_before;
    (void)state;

    node_start(&a, 1, "127.0.0.1:0", NULL);
    node_start(&b, 2, "127.0.0.1:0", NULL);
    (void)snprintf(b_addr, sizeof b_addr, "%s", transport_address(&b.t));
    assert_int_equal(transport_set_peer(&a.t, 2, b_addr), 0);
    reset_counts();
    pump.from = &a;
    pump.to = 2;
    pump.seq = 0;
    pump.timer.data = &pump;
    assert_int_equal(uv_timer_init(&h.loop, &pump.timer), 0);
    assert_int_equal(uv_timer_start(&pump.timer, pump_cb, 5, 5), 0);

    goal.node = &b;
    goal.at_least = 20;
    assert_true(run_until(received_at_least, &goal, WAIT_MS));
    assert_true(transport_is_connected(&a.t, 2));

    /* Stop b: a's sends start failing and a leaves the connected state. */
    node_stop(&b);
    reset_counts();
    assert_true(run_until(failed_at_least_one, NULL, WAIT_MS));
    assert_false(transport_is_connected(&a.t, 2));
    seq_before = pump.seq;

    /* Restart b on the same address: delivery resumes, in order. */
    node_start(&b, 2, b_addr, NULL);
    goal.at_least = 20;
    assert_true(run_until(received_at_least, &goal, WAIT_MS));
    assert_true(transport_is_connected(&a.t, 2));
    assert_int_equal(b.n_bad, 0);
    assert_true(b.last_seq >= seq_before);
    assert_true(transport_stats(&a.t)->conns_connected >= 2);

    uv_close((uv_handle_t *)&pump.timer, NULL);
    node_stop(&a);
    node_stop(&b);
}

/* Raw client connections that misbehave. */
struct raw {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    struct buf out;
    int is_connected;
    int is_eof;
    int is_closed;
    size_t n_read;
};

static void raw_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *b)
{
    static char space[4096];
    (void)hd;
    (void)suggested;
    *b = uv_buf_init(space, sizeof space);
}

static void raw_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct raw *r = s->data;
    (void)b;
    if (nread < 0) {
        r->is_eof = 1;
        uv_read_stop(s);
    } else {
        r->n_read += (size_t)nread;
    }
}

static void raw_write_cb(uv_write_t *w, int status)
{
    (void)w;
    (void)status; /* the server may already have closed */
}

static void raw_connect_cb(uv_connect_t *c, int status)
{
    struct raw *r = c->data;
    uv_buf_t b;
    assert_int_equal(status, 0);
    r->is_connected = 1;
    assert_int_equal(uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read),
                     0);
    b = uv_buf_init((char *)r->out.data, (unsigned)r->out.len);
    assert_int_equal(
        uv_write(&r->write, (uv_stream_t *)&r->tcp, &b, 1, raw_write_cb), 0);
}

static void raw_close_cb(uv_handle_t *hd)
{
    struct raw *r = hd->data;
    r->is_closed = 1;
}

static int raw_is_eof(void *arg)
{
    return ((struct raw *)arg)->is_eof;
}

static int raw_is_closed(void *arg)
{
    return ((struct raw *)arg)->is_closed;
}

/* Connects to addr, writes bytes, and waits until the server closes. */
static void raw_expect_closed(const char *addr, const struct buf *bytes)
{
    struct raw r;
    struct sockaddr_in sa;
    char host[16];
    int port;

    memset(&r, 0, sizeof r);
    assert_int_equal(sscanf(addr, "%15[^:]:%d", host, &port), 2);
    assert_int_equal(uv_ip4_addr(host, port, &sa), 0);
    buf_init(&r.out);
    assert_int_equal(buf_append(&r.out, bytes->data, bytes->len), 0);
    r.tcp.data = &r;
    r.connect.data = &r;
    assert_int_equal(uv_tcp_init(&h.loop, &r.tcp), 0);
    assert_int_equal(uv_tcp_connect(&r.connect, &r.tcp,
                                    (const struct sockaddr *)&sa,
                                    raw_connect_cb),
                     0);
    assert_true(run_until(raw_is_eof, &r, WAIT_MS));
    uv_close((uv_handle_t *)&r.tcp, raw_close_cb);
    assert_true(run_until(raw_is_closed, &r, WAIT_MS));
    buf_free(&r.out);
}

static void put_hello(struct buf *b, uint64_t magic, uint64_t version,
                      uint64_t cluster, uint64_t node)
{
    struct mp_writer w;
    size_t start = wire_frame_begin(b);
    mp_writer_init(&w, b);
    mp_put_array(&w, 5);
    mp_put_uint(&w, magic);
    mp_put_uint(&w, version);
    mp_put_uint(&w, cluster);
    mp_put_uint(&w, node);
    mp_put_str(&w, "127.0.0.1:1");
    wire_frame_end(b, start);
    assert_int_equal(w.err, 0);
}

static void put_frame(struct buf *b, const void *body, size_t n)
{
    uint8_t hdr[4];
    be32_put(hdr, (uint32_t)n);
    assert_int_equal(buf_append(b, hdr, 4), 0);
    assert_int_equal(buf_append(b, body, n), 0);
}

/* A valid TimeoutNow message frame from `sender`. */
static void put_message(struct buf *b, uint64_t sender)
{
    struct raft_message m;
    size_t start = wire_frame_begin(b);
    memset(&m, 0, sizeof m);
    m.type = RAFT_IO_TIMEOUT_NOW;
    m.server_id = sender;
    m.server_address = "127.0.0.1:1";
    assert_int_equal(rmsg_encode(b, 0, &m), 0);
    wire_frame_end(b, start);
}

static void test_bad_peers_closed(void **state)
{
    struct node a, b;
    struct recv_goal goal;
    struct buf bytes;
    uint64_t seq = 0;
    uint8_t huge[4];
    (void)state;

    node_start(&a, 1, "127.0.0.1:0", NULL);
    node_start(&b, 2, "127.0.0.1:0", NULL);
    assert_int_equal(transport_set_peer(&b.t, 1, transport_address(&a.t)), 0);
    reset_counts();
    goal.node = &a;
    for (int k = 0; k < 10; k++) {
        assert_int_equal(send_seq(&b, 1, 1, seq++, 10), 0);
    }
    goal.at_least = 10;
    assert_true(run_until(received_at_least, &goal, WAIT_MS));

#define EXPECT_CLOSED(...)                                                     \
    do {                                                                       \
        buf_init(&bytes);                                                      \
        __VA_ARGS__;                                                           \
        raw_expect_closed(transport_address(&a.t), &bytes);                    \
        buf_free(&bytes);                                                      \
        /* The good connection still works. */                                 \
        assert_int_equal(send_seq(&b, 1, 1, seq++, 10), 0);                    \
        goal.at_least++;                                                       \
        assert_true(run_until(received_at_least, &goal, WAIT_MS));             \
    } while (0)

    /* Not a frame at all, an oversized hello, a zero length. */
    EXPECT_CLOSED(buf_append(&bytes, "GET / HTTP/1.1\r\n\r\n", 18));
    be32_put(huge, 1u << 30);
    EXPECT_CLOSED(buf_append(&bytes, huge, 4));
    EXPECT_CLOSED(buf_append(&bytes, "\0\0\0\0", 4));
    /* Hello: bad magic, other version, other cluster, node 0, ourselves. */
    EXPECT_CLOSED(put_hello(&bytes, 1, TRANSPORT_VERSION, CLUSTER, 9));
    EXPECT_CLOSED(put_hello(&bytes, HELLO_MAG, 99, CLUSTER, 9));
    EXPECT_CLOSED(put_hello(&bytes, HELLO_MAG, TRANSPORT_VERSION, 7, 9));
    EXPECT_CLOSED(put_hello(&bytes, HELLO_MAG, TRANSPORT_VERSION, CLUSTER, 0));
    EXPECT_CLOSED(put_hello(&bytes, HELLO_MAG, TRANSPORT_VERSION, CLUSTER, 1));
    /* A good hello, then garbage, an impostor sender, an oversized frame. */
    EXPECT_CLOSED(put_hello(&bytes, HELLO_MAG, TRANSPORT_VERSION, CLUSTER, 9);
                  put_frame(&bytes, "\x93\x01\x02", 3));
    EXPECT_CLOSED(put_hello(&bytes, HELLO_MAG, TRANSPORT_VERSION, CLUSTER, 9);
                  put_message(&bytes, 9); put_message(&bytes, 2));
    EXPECT_CLOSED(put_hello(&bytes, HELLO_MAG, TRANSPORT_VERSION, CLUSTER, 9);
                  be32_put(huge, TRANSPORT_FRAME_BYTES_MAX_DEFAULT + 1);
                  buf_append(&bytes, huge, 4));
#undef EXPECT_CLOSED

    {
        const struct transport_stats *st = transport_stats(&a.t);
        assert_true(st->proto_errors >= 7);
        assert_true(st->conns_rejected >= 4);
        assert_int_equal(st->conns_accepted, 1 + 3);
        /* The impostor's first, valid message was delivered. */
        assert_int_equal(a.n_bad, 1);
    }
    assert_int_equal(h.n_failed, 0);
    node_stop(&a);
    node_stop(&b);
}

/* Outbound handshake checks: a transport of another cluster is refused,
 * and so is a node answering with an id other than the one dialed. */
static void test_handshake_mismatch(void **state)
{
    struct node a, b, other;
    (void)state;

    node_start(&a, 1, "127.0.0.1:0", NULL);
    node_start(&b, 2, "127.0.0.1:0", NULL);
    memset(&other, 0, sizeof other);
    other.id = 3;
    assert_int_equal(transport_init(&other.t, &h.loop, 3, CLUSTER + 1,
                                    "127.0.0.1:0", recv_cb, &other),
                     0);
    assert_int_equal(transport_start(&other.t), 0);
    other.is_open = 1;

    /* a believes node 5 lives at b's address. */
    assert_int_equal(transport_set_peer(&a.t, 5, transport_address(&b.t)), 0);
    assert_int_equal(transport_set_peer(&other.t, 2, transport_address(&b.t)),
                     0);
    reset_counts();
    assert_int_equal(send_seq(&a, 5, 0, 0, 1), 0);
    assert_int_equal(send_seq(&other, 2, 0, 0, 1), 0);
    pending_target = 2;
    assert_true(run_until(all_done, NULL, WAIT_MS));
    assert_int_equal(h.by_status[1], 2); /* ETRANSPORT */
    assert_int_equal(b.n_received, 0);
    assert_true(transport_stats(&a.t)->conns_rejected >= 1);
    assert_true(transport_stats(&b.t)->conns_rejected >= 1);
    /* In backoff now: further sends fail fast, never synchronously. */
    reset_counts();
    assert_int_equal(send_seq(&a, 5, 0, 1, 1), 0);
    pending_target = 1;
    assert_true(run_until(all_done, NULL, WAIT_MS));
    assert_int_equal(h.by_status[1], 1);
    node_stop(&a);
    node_stop(&b);
    node_stop(&other);
}

static int b_connected(void *arg)
{
    return transport_is_connected(arg, 2);
}

static void test_limits(void **state)
{
    struct transport_limits l;
    struct node a, b;
    struct recv_goal goal;
    uint64_t accepted;
    (void)state;

    transport_limits_default(&l);
    l.frame_bytes_max = 32 * 1024;
    l.queue_bytes_max = (size_t)64 * 1024;
    l.peers_max = 2;
    node_start(&a, 1, "127.0.0.1:0", &l);
    node_start(&b, 2, "127.0.0.1:0", NULL);
    /* Bad limits and late limits are refused. */
    assert_int_equal(transport_set_limits(&a.t, &l), KAPPA_EINVAL);
    /* Peer table: bad ids and addresses, then full. */
    assert_int_equal(transport_set_peer(&a.t, 0, "127.0.0.1:1"), KAPPA_EINVAL);
    assert_int_equal(transport_set_peer(&a.t, 1, "127.0.0.1:1"), KAPPA_EINVAL);
    assert_int_equal(transport_set_peer(&a.t, 2, "localhost:1"), KAPPA_EINVAL);
    assert_int_equal(transport_set_peer(&a.t, 2, "127.0.0.1:99999"),
                     KAPPA_EINVAL);
    assert_int_equal(transport_set_peer(&a.t, 2, "127.0.0.1:"), KAPPA_EINVAL);
    assert_int_equal(transport_set_peer(&a.t, 2, transport_address(&b.t)), 0);
    assert_int_equal(transport_set_peer(&a.t, 3, "127.0.0.1:1"), 0);
    assert_int_equal(transport_set_peer(&a.t, 4, "127.0.0.1:1"), KAPPA_EBUSY);
    transport_remove_peer(&a.t, 3);
    transport_remove_peer(&a.t, 3); /* unknown: ignored */
    assert_int_equal(transport_set_peer(&a.t, 4, "127.0.0.1:1"), 0);

    /* 200 x 1 KiB in one burst: the queue takes about 60, the rest get
     * EBUSY; what was accepted is delivered. */
    reset_counts();
    for (uint64_t seq = 0; seq < 200; seq++) {
        assert_int_equal(send_seq(&a, 2, 0, seq, 1024), 0);
    }
    pending_target = 200;
    assert_true(run_until(all_done, NULL, WAIT_MS));
    accepted = h.n_ok;
    assert_true(h.by_status[2] > 0); /* EBUSY */
    assert_true(accepted > 30);
    assert_int_equal(h.by_status[0] + h.by_status[2], 200);
    goal.node = &b;
    goal.at_least = accepted;
    assert_true(run_until(received_at_least, &goal, WAIT_MS));
    assert_int_equal(b.n_bad, 0);

    /* Once connected the queue drains every loop turn: no EBUSY. */
    assert_true(run_until(b_connected, &a.t, WAIT_MS));
    reset_counts();
    for (uint64_t seq = 200; seq < 400; seq++) {
        assert_int_equal(send_seq(&a, 2, 0, seq, 1024), 0);
        uv_run(&h.loop, UV_RUN_NOWAIT);
    }
    pending_target = 200;
    assert_true(run_until(all_done, NULL, WAIT_MS));
    goal.at_least = accepted + h.n_ok;

    /* Too big for a frame, unknown peer, peer refusing connections. */
    reset_counts();
    assert_int_equal(send_seq(&a, 2, 0, 400, (size_t)40 * 1024), 0);
    assert_int_equal(send_seq(&a, 9, 0, 401, 1), 0);
    assert_int_equal(send_seq(&a, 4, 0, 402, 1), 0);
    pending_target = 3;
    assert_true(run_until(all_done, NULL, WAIT_MS));
    assert_int_equal(h.by_status[3], 1); /* ETOOBIG */
    assert_int_equal(h.by_status[1], 2); /* ETRANSPORT */
    assert_true(run_until(received_at_least, &goal, WAIT_MS));
    assert_int_equal(b.n_received, goal.at_least);

    /* Out of memory while encoding: reported through the callback. */
    reset_counts();
    kappa_alloc_fail_after(1);
    assert_int_equal(send_seq(&a, 2, 0, 403, 10), 0);
    kappa_alloc_fail_after(0);
    pending_target = 1;
    assert_true(run_until(all_done, NULL, WAIT_MS));
    assert_int_equal(h.by_status[5], 1); /* ENOMEM */

    /* Bad arguments: the callback never runs. */
    assert_int_equal(transport_send(&a.t, NULL, 2, 0, NULL, send_cb),
                     KAPPA_EINVAL);
    node_stop(&a);
    node_stop(&b);
}

/* Sends queued on a connecting peer are cancelled by close, and sends after
 * close are refused at once. */
static void test_close_cancels(void **state)
{
    struct node a, b;
    struct send_req s;
    struct raft_message m;
    (void)state;

    node_start(&a, 1, "127.0.0.1:0", NULL);
    node_start(&b, 2, "127.0.0.1:0", NULL);
    /* Removing a peer cancels what is queued for it. */
    assert_int_equal(transport_set_peer(&a.t, 3, transport_address(&b.t)), 0);
    reset_counts();
    for (uint64_t seq = 0; seq < 10; seq++) {
        assert_int_equal(send_seq(&a, 3, 0, seq, 100), 0);
    }
    transport_remove_peer(&a.t, 3);
    pending_target = 10;
    assert_true(run_until(all_done, NULL, WAIT_MS));
    assert_int_equal(h.by_status[4], 10); /* ECANCELED */

    assert_int_equal(transport_set_peer(&a.t, 2, transport_address(&b.t)), 0);
    reset_counts();
    for (uint64_t seq = 0; seq < 50; seq++) {
        assert_int_equal(send_seq(&a, 2, seq % N_GROUPS, seq, 100), 0);
    }
    transport_close(&a.t, node_close_cb);
    memset(&m, 0, sizeof m);
    m.type = RAFT_IO_TIMEOUT_NOW;
    assert_int_equal(transport_send(&a.t, &s.req, 2, 0, &m, send_cb),
                     KAPPA_ESHUTDOWN);
    transport_close(&a.t, node_close_cb); /* second close: no-op */
    assert_int_equal(h.n_ok + h.n_failed, 0);
    assert_true(run_until(node_is_closed, &a, WAIT_MS));
    a.is_open = 0;
    assert_int_equal(h.by_status[4], 50); /* ECANCELED */
    node_stop(&b);
}

static int plain_closed;

static void plain_close_cb(struct transport *t)
{
    (void)t;
    plain_closed = 1;
}

static int plain_is_closed(void *arg)
{
    (void)arg;
    return plain_closed;
}

/* Application messages travel on the same connections, in order with the
 * Raft frames, and reach the app callback with the sender's id. */
static uint64_t app_next[N_NODES + 2];
static uint64_t app_bad;

static void app_cb(struct transport *t, uint64_t from_id,
                   const uint8_t *payload, size_t len, void *data)
{
    char expect[32];
    int n;
    (void)t;
    (void)data;
    if (from_id == 0 || from_id > N_NODES + 1) {
        app_bad++;
        return;
    }
    n = snprintf(expect, sizeof expect, "app-%llu",
                 (unsigned long long)app_next[from_id]);
    if ((size_t)n != len || memcmp(expect, payload, len) != 0) {
        app_bad++;
    }
    app_next[from_id]++;
}

static int apps_received(void *arg)
{
    uint64_t k = *(uint64_t *)arg;
    return app_next[1] >= k && app_next[2] >= k &&
           h.n_ok + h.n_failed >= pending_target;
}

static int send_app(struct node *from, uint64_t to, uint64_t i)
{
    struct send_req *s = malloc(sizeof *s);
    char payload[32];
    int n =
        snprintf(payload, sizeof payload, "app-%llu", (unsigned long long)i);
    int rv;
    assert_non_null(s);
    s->req.data = s;
    s->from = from;
    h.in_send = 1;
    rv = transport_send_app(&from->t, &s->req, to, payload, (size_t)n, send_cb);
    h.in_send = 0;
    if (rv != 0) {
        free(s);
    }
    return rv;
}

static void test_app_messages(void **state)
{
    enum { K = 300 };
    struct node nodes[2];
    struct transport_send req;
    uint64_t k = K;
    (void)state;

    memset(app_next, 0, sizeof app_next);
    app_bad = 0;
    for (unsigned i = 0; i < 2; i++) {
        node_start(&nodes[i], i + 1, "127.0.0.1:0", NULL);
        transport_set_app_cb(&nodes[i].t, app_cb);
    }
    connect_all(nodes, 2);
    reset_counts();
    for (uint64_t i = 0; i < K; i++) {
        assert_int_equal(send_app(&nodes[0], 2, i), 0);
        assert_int_equal(send_seq(&nodes[0], 2, 1, i, 10), 0);
        assert_int_equal(send_app(&nodes[1], 1, i), 0);
    }
    pending_target = 3 * K;
    assert_true(run_until(apps_received, &k, WAIT_MS));
    assert_int_equal(app_bad, 0);
    assert_int_equal(h.n_failed, 0);
    assert_int_equal(nodes[1].n_received, K);
    assert_int_equal(nodes[1].n_bad, 0);
    /* Oversized payloads are refused synchronously; no callback runs. */
    assert_int_equal(transport_send_app(&nodes[0].t, &req, 2, "x",
                                        RMSG_APP_BYTES_MAX + 1, send_cb),
                     KAPPA_EINVAL);
    for (unsigned i = 0; i < 2; i++) {
        node_stop(&nodes[i]);
    }
}

static void test_init_errors(void **state)
{
    struct transport t;
    struct node a;
    (void)state;

    assert_int_equal(
        transport_init(&t, &h.loop, 0, CLUSTER, "127.0.0.1:0", recv_cb, NULL),
        KAPPA_EINVAL);
    assert_int_equal(
        transport_init(&t, &h.loop, 1, CLUSTER, "0.0.0.0:0", recv_cb, NULL),
        KAPPA_ECONFIG);
    assert_int_equal(
        transport_init(&t, &h.loop, 1, CLUSTER, "nohost", recv_cb, NULL),
        KAPPA_ECONFIG);
    /* Address in use. */
    node_start(&a, 1, "127.0.0.1:0", NULL);
    assert_int_equal(transport_init(&t, &h.loop, 2, CLUSTER,
                                    transport_address(&a.t), recv_cb, NULL),
                     0);
    assert_int_equal(transport_start(&t), KAPPA_ETRANSPORT);
    plain_closed = 0;
    transport_close(&t, plain_close_cb);
    assert_true(run_until(plain_is_closed, NULL, WAIT_MS));
    node_stop(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exchange, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_peers_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handshake_mismatch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_cancels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_app_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
