/* Unit tests for consensus/rio: real raft 0.15 instances on rio and the
 * segment store, in temporary directories, on one loop. One voter (apply,
 * restart, what load returns), three voters over an in-process loopback
 * sender (replication, byte-identical stores, restarts, leader loss),
 * snapshots and InstallSnapshot, torn or corrupt term/vote files, and the
 * truncation of a divergent tail. Every wait runs the loop under a deadline;
 * nothing sleeps. */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <raft.h>
#include <uv.h>

#include "broker/store/log.h"
#include "common/batch.h"
#include "common/endian.h"
#include "common/err.h"
#include "common/log.h"
#include "consensus/rio.h"
#include "consensus/rio_meta.h"

#define GROUP        7
#define NODES_MAX    3
#define WAIT_MS      15000
#define EXPECT_MAX   2048
#define FSM_SNAP_LEN 12

/* ---- A loopback sender: deep copies, delivered on the next loop turn ---- */

struct node;

struct lb_msg {
    struct lb_msg *next;
    raft_id from;
    raft_id to;
    struct raft_message m;
    struct raft_io_send *req;
    raft_io_send_cb cb;
};

struct lb_net {
    uv_timer_t timer;
    struct lb_msg *head;
    struct lb_msg *tail;
    struct node *nodes[NODES_MAX + 1]; /* by id; NULL while down */
    bool drop[NODES_MAX + 1][NODES_MAX + 1];
    unsigned n_snapshots; /* InstallSnapshot messages delivered */
};

struct lb_endpoint {
    struct lb_net *net;
    raft_id id;
};

/* ---- Test FSM: counts commands; its snapshot is 12 bytes ---------------- */

struct tfsm {
    uint64_t n_commands;
    unsigned n_restores;
    bool is_wrapped; /* commands are arbitrary bytes (metadata group) */
};

struct node {
    raft_id id;
    char address[16];
    char dir[256];
    char log_dir[256];
    struct log *log;
    struct raft_io io;
    struct raft raft;
    struct raft_fsm fsm;
    struct tfsm state;
    struct lb_endpoint ep;
    bool is_up;
    bool is_closed;
};

struct world {
    uv_loop_t loop;
    uv_timer_t guard;
    char root[128];
    struct rio_syncer syncer;
    struct lb_net net;
    struct node nodes[NODES_MAX];
    unsigned n_nodes;
    struct raft_configuration conf;
    bool is_wrapped;
    unsigned snapshot_threshold;
    unsigned snapshot_trailing;
    unsigned n_closed_handles;
};

/* What a test submitted, in log order, to check stores and load against. */
struct expect {
    bool is_barrier[EXPECT_MAX];
    uint8_t *bytes[EXPECT_MAX];
    size_t len[EXPECT_MAX];
    unsigned n;
};

struct tally {
    unsigned n_done;
    unsigned n_ok;
    int last_status;
};

static void lb_release(struct raft_message *m)
{
    if (m->type == RAFT_IO_APPEND_ENTRIES && m->append_entries.entries) {
        raft_free(m->append_entries.entries[0].batch);
        raft_free(m->append_entries.entries);
    } else if (m->type == RAFT_IO_INSTALL_SNAPSHOT) {
        raft_configuration_close(&m->install_snapshot.conf);
        raft_free(m->install_snapshot.data.base);
    }
}

/* Copies what raft's recv path takes ownership of: entries in one batch
 * (entry.batch set), a decoded configuration and the snapshot data. */
static void lb_copy(const struct raft_message *src, struct raft_message *dst)
{
    *dst = *src;
    if (src->type == RAFT_IO_APPEND_ENTRIES &&
        src->append_entries.n_entries > 0) {
        const struct raft_append_entries *a = &src->append_entries;
        size_t total = 0;
        uint8_t *batch;
        uint8_t *cursor;
        struct raft_entry *e;
        for (unsigned i = 0; i < a->n_entries; i++) {
            total += a->entries[i].buf.len;
        }
        batch = raft_malloc(total + 1);
        e = raft_malloc(a->n_entries * sizeof *e);
        assert_non_null(batch);
        assert_non_null(e);
        cursor = batch;
        for (unsigned i = 0; i < a->n_entries; i++) {
            e[i] = a->entries[i];
            e[i].buf.base = cursor;
            e[i].batch = batch;
            memcpy(cursor, a->entries[i].buf.base, a->entries[i].buf.len);
            cursor += a->entries[i].buf.len;
        }
        dst->append_entries.entries = e;
    } else if (src->type == RAFT_IO_APPEND_ENTRIES) {
        dst->append_entries.entries = NULL;
    } else if (src->type == RAFT_IO_INSTALL_SNAPSHOT) {
        const struct raft_install_snapshot *s = &src->install_snapshot;
        raft_configuration_init(&dst->install_snapshot.conf);
        for (unsigned i = 0; i < s->conf.n; i++) {
            assert_int_equal(raft_configuration_add(&dst->install_snapshot.conf,
                                                    s->conf.servers[i].id,
                                                    s->conf.servers[i].address,
                                                    s->conf.servers[i].role),
                             0);
        }
        dst->install_snapshot.data.base = raft_malloc(s->data.len + 1);
        assert_non_null(dst->install_snapshot.data.base);
        memcpy(dst->install_snapshot.data.base, s->data.base, s->data.len);
    }
}

static void lb_flush(uv_timer_t *t)
{
    struct lb_net *net = t->data;
    struct lb_msg *msg = net->head;

    net->head = NULL;
    net->tail = NULL;
    while (msg != NULL) {
        struct lb_msg *next = msg->next;
        struct node *to = net->nodes[msg->to];
        msg->cb(msg->req, 0);
        if (to != NULL && !net->drop[msg->from][msg->to]) {
            struct node *from = net->nodes[msg->from];
            msg->m.server_id = msg->from;
            msg->m.server_address = from != NULL ? from->address : "gone";
            if (msg->m.type == RAFT_IO_INSTALL_SNAPSHOT) {
                net->n_snapshots++;
            }
            rio_deliver(&to->io, &msg->m);
        } else {
            lb_release(&msg->m);
        }
        free(msg);
        msg = next;
    }
}

static int lb_send(void *data, uint64_t group_id, struct raft_io_send *req,
                   const struct raft_message *m, raft_io_send_cb cb)
{
    struct lb_endpoint *ep = data;
    struct lb_net *net = ep->net;
    struct lb_msg *msg = calloc(1, sizeof *msg);

    assert_int_equal(group_id, GROUP);
    assert_non_null(msg);
    assert_true(m->server_id >= 1 && m->server_id <= NODES_MAX);
    msg->from = ep->id;
    msg->to = m->server_id;
    msg->req = req;
    msg->cb = cb;
    lb_copy(m, &msg->m);
    if (net->tail == NULL) {
        net->head = msg;
    } else {
        net->tail->next = msg;
    }
    net->tail = msg;
    if (!uv_is_active((uv_handle_t *)&net->timer)) {
        uv_timer_start(&net->timer, lb_flush, 0, 0);
    }
    return 0;
}

/* ---- FSM ------------------------------------------------------------------
 */

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf,
                     void **result)
{
    struct tfsm *t = fsm->data;
    struct batch_header h;

    /* A partition group's command is one whole record batch; a wrapped
     * group's is what was applied ("cmd ..."). */
    if (t->is_wrapped) {
        assert_true(buf->len >= 4);
        assert_memory_equal(buf->base, "cmd ", 4);
    } else {
        assert_int_equal(batch_verify(buf->base, buf->len, &h), 0);
        assert_int_equal(h.batch_bytes, buf->len);
    }
    t->n_commands++;
    *result = NULL;
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                        unsigned *n_bufs)
{
    struct tfsm *t = fsm->data;
    uint8_t *p = raft_malloc(FSM_SNAP_LEN);

    *bufs = raft_malloc(sizeof **bufs);
    assert_non_null(p);
    assert_non_null(*bufs);
    memcpy(p, "TFSM", 4);
    le64_put(p + 4, t->n_commands);
    (*bufs)[0].base = p;
    (*bufs)[0].len = FSM_SNAP_LEN;
    *n_bufs = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct tfsm *t = fsm->data;

    /* Exactly what fsm_snapshot produced: rio's header is gone. */
    assert_int_equal(buf->len, FSM_SNAP_LEN);
    assert_memory_equal(buf->base, "TFSM", 4);
    t->n_commands = le64_get((const uint8_t *)buf->base + 4);
    t->n_restores++;
    raft_free(buf->base);
    return 0;
}

/* ---- World: loop, syncer, network, nodes ----------------------------------
 */

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void guard_fired(uv_timer_t *t)
{
    (void)t;
}

static void world_init(struct world *w, unsigned n_nodes)
{
    memset(w, 0, sizeof *w);
    assert_int_equal(uv_loop_init(&w->loop), 0);
    assert_int_equal(uv_timer_init(&w->loop, &w->guard), 0);
    assert_int_equal(uv_timer_init(&w->loop, &w->net.timer), 0);
    w->net.timer.data = &w->net;
    assert_int_equal(rio_syncer_init(&w->syncer, &w->loop), 0);
    strcpy(w->root, "/tmp/kappa-test-rio-XXXXXX");
    assert_non_null(mkdtemp(w->root));
    w->n_nodes = n_nodes;
    w->snapshot_threshold = 1u << 20;
    w->snapshot_trailing = 1u << 20;
    raft_configuration_init(&w->conf);
    for (unsigned i = 0; i < n_nodes; i++) {
        struct node *n = &w->nodes[i];
        n->id = i + 1;
        snprintf(n->address, sizeof n->address, "n%u", i + 1);
        snprintf(n->dir, sizeof n->dir, "%s/%u", w->root, i + 1);
        snprintf(n->log_dir, sizeof n->log_dir, "%s/%u/log", w->root, i + 1);
        assert_int_equal(mkdir(n->dir, 0755), 0);
        n->ep.net = &w->net;
        n->ep.id = n->id;
        assert_int_equal(
            raft_configuration_add(&w->conf, n->id, n->address, RAFT_VOTER), 0);
    }
}

static bool run_until(struct world *w, bool (*cond)(struct world *w, void *arg),
                      void *arg, int timeout_ms)
{
    uint64_t deadline;

    uv_update_time(&w->loop);
    deadline = uv_now(&w->loop) + (uint64_t)timeout_ms;
    uv_timer_start(&w->guard, guard_fired, (uint64_t)timeout_ms, 0);
    while (!cond(w, arg)) {
        uv_update_time(&w->loop);
        if (uv_now(&w->loop) >= deadline) {
            break;
        }
        uv_run(&w->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&w->guard);
    return cond(w, arg);
}

static void must(struct world *w, bool (*cond)(struct world *w, void *arg),
                 void *arg, const char *what)
{
    if (!run_until(w, cond, arg, WAIT_MS)) {
        fail_msg("timed out waiting for %s", what);
    }
}

static void handle_closed(uv_handle_t *h)
{
    struct world *w = h->data;

    w->n_closed_handles++;
}

static void syncer_closed(struct rio_syncer *s)
{
    (void)s;
}

static bool handles_closed(struct world *w, void *arg)
{
    (void)arg;
    return w->n_closed_handles == 2 && w->syncer.is_prepare_closed;
}

static void node_close(struct world *w, struct node *n);

static void world_close(struct world *w)
{
    for (unsigned i = 0; i < w->n_nodes; i++) {
        if (w->nodes[i].is_up) {
            node_close(w, &w->nodes[i]);
        }
    }
    /* Messages still queued go nowhere. */
    lb_flush(&w->net.timer);
    w->guard.data = w;
    w->net.timer.data = w;
    uv_close((uv_handle_t *)&w->guard, handle_closed);
    uv_close((uv_handle_t *)&w->net.timer, handle_closed);
    rio_syncer_close(&w->syncer, syncer_closed);
    while (!handles_closed(w, NULL)) {
        uv_run(&w->loop, UV_RUN_ONCE);
    }
    assert_int_equal(uv_run(&w->loop, UV_RUN_NOWAIT), 0);
    assert_int_equal(uv_loop_close(&w->loop), 0);
    raft_configuration_close(&w->conf);
    nftw(w->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void log_open_or_fail(struct node *n)
{
    char errmsg[KAPPA_ERRMSG_SIZE] = "";
    struct log_config cfg;
    int rv;

    log_config_default(&cfg);
    cfg.segment_bytes = 32 * 1024; /* several segments per test */
    rv = log_open(n->log_dir, &cfg, 0, &n->log, errmsg);
    if (rv != 0) {
        fail_msg("log_open %s: %d %s", n->log_dir, rv, errmsg);
    }
}

static void rio_open(struct world *w, struct node *n)
{
    struct rio_config rc = {
        .dir = n->dir,
        .log = n->log,
        .group_id = GROUP,
        .is_wrapped = w->is_wrapped,
        .syncer = &w->syncer,
        .sender = {.data = &n->ep, .send = lb_send},
    };

    assert_int_equal(rio_init(&n->io, &w->loop, &rc), 0);
}

static void node_open(struct world *w, struct node *n, bool bootstrap)
{
    int rv;

    log_open_or_fail(n);
    rio_open(w, n);
    memset(&n->state, 0, sizeof n->state);
    n->state.is_wrapped = w->is_wrapped;
    n->fsm = (struct raft_fsm){
        .version = 1,
        .data = &n->state,
        .apply = fsm_apply,
        .snapshot = fsm_snapshot,
        .restore = fsm_restore,
    };
    assert_int_equal(raft_init(&n->raft, &n->io, &n->fsm, n->id, n->address),
                     0);
    n->raft.data = n;
    raft_set_election_timeout(&n->raft, 300);
    raft_set_heartbeat_timeout(&n->raft, 30);
    raft_set_pre_vote(&n->raft, true);
    raft_set_snapshot_threshold(&n->raft, w->snapshot_threshold);
    raft_set_snapshot_trailing(&n->raft, w->snapshot_trailing);
    if (bootstrap) {
        assert_int_equal(raft_bootstrap(&n->raft, &w->conf), 0);
    }
    rv = raft_start(&n->raft);
    if (rv != 0) {
        fail_msg("raft_start %llu: %d %s", (unsigned long long)n->id, rv,
                 raft_errmsg(&n->raft));
    }
    w->net.nodes[n->id] = n;
    n->is_up = true;
}

static void raft_closed(struct raft *r)
{
    struct node *n = r->data;

    n->is_closed = true;
}

static bool is_node_closed(struct world *w, void *arg)
{
    (void)w;
    return ((struct node *)arg)->is_closed;
}

static void node_close(struct world *w, struct node *n)
{
    w->net.nodes[n->id] = NULL;
    n->is_closed = false;
    raft_close(&n->raft, raft_closed);
    must(w, is_node_closed, n, "raft_close");
    rio_close(&n->io);
    log_close(n->log);
    n->log = NULL;
    n->is_up = false;
}

/* ---- Submitting batches -----------------------------------------------------
 */

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct tally *t = req->data;

    (void)result;
    t->n_done++;
    if (status == 0) {
        t->n_ok++;
    } else {
        t->last_status = status;
    }
    free(req);
}

static void barrier_cb(struct raft_barrier *req, int status)
{
    struct tally *t = req->data;

    t->n_done++;
    if (status == 0) {
        t->n_ok++;
    } else {
        t->last_status = status;
    }
    free(req);
}

/* Builds batch number seq (1 to 3 records), numbers it as the leader does
 * and raft_applies it. Records it in ex when given. */
static void submit(struct node *leader, unsigned seq, struct tally *t,
                   struct expect *ex)
{
    struct batch_builder b;
    struct raft_apply *req = calloc(1, sizeof *req);
    struct raft_buffer buf;
    char value[64];
    int rv;

    assert_non_null(req);
    batch_builder_init(&b);
    for (unsigned i = 0; i <= seq % 3; i++) {
        int len = snprintf(value, sizeof value, "value %u.%u", seq, i);
        assert_int_equal(batch_builder_add(&b, "k", 1, value, (uint32_t)len,
                                           NULL, 0, 1700000000000 + seq),
                         0);
    }
    assert_int_equal(
        batch_builder_finish(&b, KAPPA_COMPRESSION_NONE, -1, -1, -1), 0);
    batch_set_base_offset(b.buf.data, rio_next_offset(&leader->io));
    batch_set_term(b.buf.data, leader->raft.current_term);
    buf.len = b.buf.len;
    buf.base = raft_malloc(buf.len);
    assert_non_null(buf.base);
    memcpy(buf.base, b.buf.data, buf.len);
    if (ex != NULL) {
        assert_true(ex->n < EXPECT_MAX);
        ex->is_barrier[ex->n] = false;
        ex->bytes[ex->n] = malloc(buf.len);
        memcpy(ex->bytes[ex->n], buf.base, buf.len);
        ex->len[ex->n] = buf.len;
        ex->n++;
    }
    batch_builder_free(&b);
    req->data = t;
    rv = raft_apply(&leader->raft, req, &buf, 1, apply_cb);
    if (rv != 0) {
        fail_msg("raft_apply: %d %s", rv, raft_errmsg(&leader->raft));
    }
}

static void submit_barrier(struct node *leader, struct tally *t,
                           struct expect *ex)
{
    struct raft_barrier *req = calloc(1, sizeof *req);

    assert_non_null(req);
    req->data = t;
    assert_int_equal(raft_barrier(&leader->raft, req, barrier_cb), 0);
    ex->is_barrier[ex->n] = true;
    ex->bytes[ex->n] = NULL;
    ex->n++;
}

static void expect_free(struct expect *ex)
{
    for (unsigned i = 0; i < ex->n; i++) {
        free(ex->bytes[i]);
    }
    ex->n = 0;
}

struct tally_wait {
    struct tally *t;
    unsigned n;
};

static bool is_tally_done(struct world *w, void *arg)
{
    struct tally_wait *tw = arg;

    (void)w;
    return tw->t->n_done >= tw->n;
}

static void wait_tally(struct world *w, struct tally *t, unsigned n)
{
    struct tally_wait tw = {t, n};

    must(w, is_tally_done, &tw, "apply callbacks");
    if (t->n_ok != n) {
        fail_msg("%u of %u applies failed, last status %d", n - t->n_ok, n,
                 t->last_status);
    }
}

/* ---- Conditions ---------------------------------------------------------- */

static struct node *leader_of(struct world *w)
{
    struct node *leader = NULL;

    for (unsigned i = 0; i < w->n_nodes; i++) {
        struct node *n = &w->nodes[i];
        if (n->is_up && raft_state(&n->raft) == RAFT_LEADER) {
            if (leader != NULL) {
                return NULL; /* two leaders (of different terms) */
            }
            leader = n;
        }
    }
    return leader;
}

static bool has_leader(struct world *w, void *arg)
{
    struct node *not = arg;
    struct node *leader = leader_of(w);

    return leader != NULL && leader != not ;
}

static struct node *elect(struct world *w, struct node * not )
{
    must(w, has_leader, not, "a leader");
    return leader_of(w);
}

/* Every up node holds and has applied what the leader holds, and the
 * stores have the same end. */
static bool is_converged(struct world *w, void *arg)
{
    struct node *leader = leader_of(w);

    (void)arg;
    if (leader == NULL) {
        return false;
    }
    for (unsigned i = 0; i < w->n_nodes; i++) {
        struct node *n = &w->nodes[i];
        if (!n->is_up) {
            continue;
        }
        if (raft_last_index(&n->raft) != raft_last_index(&leader->raft) ||
            raft_last_applied(&n->raft) != raft_last_index(&leader->raft) ||
            log_end_offset(n->log) != log_end_offset(leader->log) ||
            log_flushed_offset(n->log) != log_end_offset(n->log)) {
            return false;
        }
    }
    return true;
}

/* The store's bytes from offset from to its end (malloc'd). */
static uint8_t *store_bytes(struct log *l, int64_t from, size_t *len)
{
    size_t cap = 1u << 20;
    uint8_t *p = malloc(cap);
    int64_t offset = from;

    *len = 0;
    for (;;) {
        size_t n = 0;
        size_t pos = 0;
        int rv;
        if (cap - *len < 256 * 1024) {
            cap *= 2;
            p = realloc(p, cap);
            assert_non_null(p);
        }
        rv = log_read(l, offset, INT64_MAX, cap - *len, p + *len, cap - *len,
                      &n);
        assert_int_equal(rv, 0);
        if (n == 0) {
            break;
        }
        while (pos < n) {
            struct batch_header h;
            assert_int_equal(batch_header_decode(p + *len + pos, n - pos, &h),
                             0);
            offset = h.base_offset + (int64_t)h.record_count;
            pos += h.batch_bytes;
        }
        *len += n;
    }
    assert_int_equal(offset, log_end_offset(l));
    return p;
}

/* Every up node's store is byte-identical to the leader's from offset
 * from (its own start when later). */
static void assert_stores_identical(struct world *w, struct node *leader)
{
    for (unsigned i = 0; i < w->n_nodes; i++) {
        struct node *n = &w->nodes[i];
        int64_t from;
        size_t a_len, b_len;
        uint8_t *a, *b;
        if (!n->is_up || n == leader) {
            continue;
        }
        from = log_start_offset(n->log);
        assert_true(from >= log_start_offset(leader->log));
        a = store_bytes(leader->log, from, &a_len);
        b = store_bytes(n->log, from, &b_len);
        assert_int_equal(a_len, b_len);
        assert_memory_equal(a, b, a_len);
        free(a);
        free(b);
    }
}

static void converge(struct world *w)
{
    must(w, is_converged, NULL, "replicas to converge");
    assert_stores_identical(w, leader_of(w));
}

/* ---- (a) one voter ---------------------------------------------------------
 */

/* Checks one stored batch against what was expected at that position. */
static void check_stored(const uint8_t *p, const struct batch_header *h,
                         const struct expect *ex, unsigned i)
{
    if (ex->is_barrier[i]) {
        assert_int_equal(h->attributes, KAPPA_BATCH_ATTR_CONTROL);
        assert_int_equal(h->record_count, 1);
        assert_int_equal(h->first_timestamp_ms, 0);
        /* The record: length 7, attributes, timestamp delta, offset delta,
         * key length 1 (zigzag 2), key = the type, value length 0, no
         * headers. */
        assert_int_equal(p[KAPPA_BATCH_HEADER_BYTES], 7);
        assert_int_equal(p[KAPPA_BATCH_HEADER_BYTES + 4], 2);
        assert_int_equal(p[KAPPA_BATCH_HEADER_BYTES + 5], RAFT_BARRIER);
        assert_int_equal(p[KAPPA_BATCH_HEADER_BYTES + 6], 0);
        assert_int_equal(p[KAPPA_BATCH_HEADER_BYTES + 7], 0);
    } else {
        assert_int_equal(h->batch_bytes, ex->len[i]);
        assert_memory_equal(p, ex->bytes[i], ex->len[i]);
    }
}

/* The whole store: the bootstrap configuration at 0, then ex in order. */
static void check_store(struct log *l, const struct expect *ex)
{
    size_t len;
    uint8_t *p = store_bytes(l, 0, &len);
    size_t pos = 0;
    struct batch_header h;

    assert_int_equal(batch_verify(p, len, &h), 0);
    assert_int_equal(h.base_offset, 0);
    assert_int_equal(h.term, 1);
    assert_int_equal(h.attributes, KAPPA_BATCH_ATTR_CONTROL);
    assert_int_equal(p[KAPPA_BATCH_HEADER_BYTES + 5], RAFT_CHANGE);
    pos = h.batch_bytes;
    for (unsigned i = 0; i < ex->n; i++) {
        assert_true(pos < len);
        assert_int_equal(batch_verify(p + pos, len - pos, &h), 0);
        check_stored(p + pos, &h, ex, i);
        pos += h.batch_bytes;
    }
    assert_int_equal(pos, len);
    free(p);
}

static void io_closed(struct raft_io *io)
{
    *(bool *)io->data = true;
}

static bool is_flag_set(struct world *w, void *arg)
{
    (void)w;
    return *(bool *)arg;
}

/* Opens a node's rio without raft and runs io->init (what raft_init does). */
static int raw_open(struct world *w, struct node *n)
{
    log_open_or_fail(n);
    rio_open(w, n);
    return n->io.init(&n->io, n->id, n->address);
}

static void raw_close(struct world *w, struct node *n)
{
    bool closed = false;

    n->io.data = &closed;
    n->io.close(&n->io, io_closed);
    must(w, is_flag_set, &closed, "io close");
    rio_close(&n->io);
    log_close(n->log);
    n->log = NULL;
}

static void free_loaded(struct raft_snapshot *s, struct raft_entry *entries,
                        size_t n)
{
    void *batch = NULL;

    for (size_t i = 0; i < n; i++) {
        if (entries[i].batch != batch) {
            batch = entries[i].batch;
            raft_free(batch);
        }
    }
    raft_free(entries);
    if (s != NULL) {
        raft_configuration_close(&s->configuration);
        raft_free(s->bufs[0].base);
        raft_free(s->bufs);
        raft_free(s);
    }
}

/* What io->load returns after the run of test_single_voter. */
static void check_load(struct world *w, struct node *n, raft_term term,
                       raft_id vote, raft_index last_index,
                       const struct expect *ex)
{
    struct raft_snapshot *s = NULL;
    struct raft_entry *entries = NULL;
    raft_index start_index = 0;
    raft_term t = 0;
    raft_id v = 0;
    size_t n_entries = 0;

    assert_int_equal(raw_open(w, n), 0);
    assert_int_equal(
        n->io.load(&n->io, &t, &v, &s, &start_index, &entries, &n_entries), 0);
    assert_int_equal(t, term);
    assert_int_equal(v, vote);
    assert_null(s);
    assert_int_equal(start_index, 1);
    assert_int_equal(n_entries, last_index);
    assert_int_equal(entries[0].type, RAFT_CHANGE);
    assert_int_equal(entries[0].term, 1);
    for (unsigned i = 0; i < ex->n; i++) {
        const struct raft_entry *e = &entries[i + 1];
        assert_non_null(e->batch);
        if (ex->is_barrier[i]) {
            assert_int_equal(e->type, RAFT_BARRIER);
            assert_int_equal(e->buf.len, 0);
        } else {
            assert_int_equal(e->type, RAFT_COMMAND);
            assert_int_equal(e->buf.len, ex->len[i]);
            assert_memory_equal(e->buf.base, ex->bytes[i], ex->len[i]);
            assert_int_equal(e->term, le64_get(ex->bytes[i] + 16));
        }
    }
    assert_int_equal(rio_next_offset(&n->io), log_end_offset(n->log));
    free_loaded(s, entries, n_entries);
    raw_close(w, n);
}

static void test_single_voter(void **state)
{
    struct world *w = *state;
    struct node *n = &w->nodes[0];
    struct expect *ex = calloc(1, sizeof *ex);
    struct tally t = {0};
    struct tally t2 = {0};
    raft_term term;
    raft_index last_index;
    uint64_t appends;

    assert_non_null(ex);
    world_init(w, 1);
    node_open(w, n, true);
    assert_true(elect(w, NULL) == n);
    for (unsigned round = 0; round < 10; round++) {
        for (unsigned i = 0; i < 100; i++) {
            submit(n, round * 100 + i, &t, ex);
        }
        if (round == 4) {
            submit_barrier(n, &t, ex);
        }
        uv_run(&w->loop, UV_RUN_NOWAIT);
    }
    wait_tally(w, &t, 1001);
    appends = 1001;
    /* Group commit: far fewer fdatasync rounds than appends. */
    assert_true(w->syncer.n_rounds < appends / 4);
    assert_int_equal(rio_next_offset(&n->io), log_end_offset(n->log));
    assert_int_equal(log_flushed_offset(n->log), log_end_offset(n->log));
    assert_true(log_segment_count(n->log) > 1);
    check_store(n->log, ex);
    term = n->raft.current_term;
    last_index = raft_last_index(&n->raft);
    assert_int_equal(last_index, 1 + 1001);
    /* raft 0.15 makes a lone voter leader without a new term or a vote. */
    assert_int_equal(term, 1);
    assert_int_equal(n->raft.voted_for, 0);
    node_close(w, n);

    /* load returns exactly what was stored. */
    check_load(w, n, term, 0, last_index, ex);

    /* Restart: leader again, the log intact, and applies continue; the FSM
     * replays the old commands once something commits. */
    node_open(w, n, false);
    assert_true(elect(w, NULL) == n);
    assert_int_equal(n->raft.current_term, term);
    assert_int_equal(raft_last_index(&n->raft), last_index);
    for (unsigned i = 0; i < 10; i++) {
        submit(n, 5000 + i, &t2, ex);
    }
    wait_tally(w, &t2, 10);
    assert_int_equal(n->state.n_commands, 1010);
    check_store(n->log, ex);
    expect_free(ex);
    free(ex);
    world_close(w);
}

/* ---- (b) three voters -------------------------------------------------------
 */

static void submit_n(struct world *w, struct node *leader, unsigned first,
                     unsigned n)
{
    struct tally t = {0};

    for (unsigned i = 0; i < n; i++) {
        submit(leader, first + i, &t, NULL);
    }
    wait_tally(w, &t, n);
}

static struct node *a_follower(struct world *w, struct node *leader)
{
    for (unsigned i = 0; i < w->n_nodes; i++) {
        if (&w->nodes[i] != leader && w->nodes[i].is_up) {
            return &w->nodes[i];
        }
    }
    fail_msg("no follower");
    return NULL;
}

static void open_all(struct world *w)
{
    for (unsigned i = 0; i < w->n_nodes; i++) {
        node_open(w, &w->nodes[i], true);
    }
}

static void test_three_voters(void **state)
{
    struct world *w = *state;
    struct node *leader;
    struct node *f;

    world_init(w, 3);
    open_all(w);
    leader = elect(w, NULL);
    submit_n(w, leader, 0, 100);
    converge(w);

    /* A follower misses 100 entries, comes back and catches up. */
    f = a_follower(w, leader);
    node_close(w, f);
    submit_n(w, leader, 100, 100);
    node_open(w, f, false);
    converge(w);
    assert_int_equal(f->state.n_commands, 200);

    /* The leader goes away: a new one takes over and applies continue. */
    node_close(w, leader);
    f = elect(w, leader);
    submit_n(w, f, 200, 50);
    converge(w);
    node_open(w, leader, false);
    converge(w);
    for (unsigned i = 0; i < w->n_nodes; i++) {
        assert_int_equal(w->nodes[i].state.n_commands, 250);
    }
    world_close(w);
}

/* ---- (c) snapshots and InstallSnapshot -------------------------------------
 */

static unsigned count_snapshots(const struct node *n)
{
    DIR *d = opendir(n->dir);
    struct dirent *de;
    unsigned count = 0;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        count += strncmp(de->d_name, "snap-", 5) == 0 &&
                 strstr(de->d_name, ".tmp") == NULL;
    }
    closedir(d);
    return count;
}

static bool has_two_snapshots(struct world *w, void *arg)
{
    (void)w;
    return count_snapshots(arg) == 2;
}

static void test_snapshots(void **state)
{
    struct world *w = *state;
    struct node *leader;
    struct node *f;
    int64_t start;

    world_init(w, 3);
    w->snapshot_threshold = 16;
    w->snapshot_trailing = 8;
    open_all(w);
    leader = elect(w, NULL);
    submit_n(w, leader, 0, 20);
    converge(w);
    f = a_follower(w, leader);
    node_close(w, f);
    /* In waves, so that the leader snapshots several times. */
    for (unsigned k = 0; k < 5; k++) {
        submit_n(w, leader, 20 + 20 * k, 20);
    }
    /* rio keeps the newest two manifests. */
    must(w, has_two_snapshots, leader, "two snapshots");
    node_open(w, f, false);
    converge(w);
    /* The follower got InstallSnapshot: its store was reset to begin at
     * the manifest's end offset, and it follows from there. */
    assert_true(w->net.n_snapshots >= 1);
    assert_true(f->state.n_restores >= 1);
    start = log_start_offset(f->log);
    assert_true(start > 0);
    assert_int_equal(f->state.n_commands, 120);
    submit_n(w, leader, 120, 30);
    converge(w);
    /* A follower that falls more than `trailing` entries behind again (a
     * slow machine) gets another InstallSnapshot: the start only moves up. */
    assert_true(log_start_offset(f->log) >= start);
    assert_int_equal(f->state.n_commands, 150);
    /* And it restarts from its manifest and reset store. */
    node_close(w, f);
    node_open(w, f, false);
    assert_true(f->state.n_restores >= 1);
    submit_n(w, leader, 150, 5);
    converge(w);
    assert_int_equal(f->state.n_commands, 155);
    world_close(w);
}

/* ---- (d) term and vote files ------------------------------------------------
 */

static void flip_byte(const char *path, off_t pos)
{
    int fd = open(path, O_RDWR);
    uint8_t c;

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &c, 1, pos), 1);
    c ^= 0x40;
    assert_int_equal(pwrite(fd, &c, 1, pos), 1);
    close(fd);
}

static void load_term_vote(struct world *w, struct node *n, raft_term term,
                           raft_id vote)
{
    struct raft_snapshot *s = NULL;
    struct raft_entry *entries = NULL;
    raft_index start_index;
    size_t n_entries = 0;
    raft_term t;
    raft_id v;

    assert_int_equal(raw_open(w, n), 0);
    assert_int_equal(
        n->io.load(&n->io, &t, &v, &s, &start_index, &entries, &n_entries), 0);
    assert_int_equal(t, term);
    assert_int_equal(v, vote);
    free_loaded(s, entries, n_entries);
}

static void test_meta_files(void **state)
{
    struct world *w = *state;
    struct node *n = &w->nodes[0];
    char one[512];
    char two[512];
    struct rio_meta m = {.version = 7, .term = 9, .vote = 3};
    struct rio_meta back;
    uint8_t p[RIO_META_BYTES];

    rio_meta_encode(&m, p);
    assert_int_equal(rio_meta_decode(p, &back), 0);
    assert_int_equal(back.version, 7);
    assert_int_equal(back.term, 9);
    assert_int_equal(back.vote, 3);
    p[20] ^= 1;
    assert_int_equal(rio_meta_decode(p, &back), KAPPA_ECORRUPT);

    world_init(w, 1);
    snprintf(one, sizeof one, "%s/raft.meta.1", n->dir);
    snprintf(two, sizeof two, "%s/raft.meta.2", n->dir);
    assert_int_equal(raw_open(w, n), 0);
    assert_int_equal(n->io.set_term(&n->io, 5), 0); /* v1 in .1 */
    assert_int_equal(n->io.set_vote(&n->io, 2), 0); /* v2 in .2 */
    assert_int_equal(n->io.set_term(&n->io, 6), 0); /* v3 in .1 */
    raw_close(w, n);

    /* The newest copy is corrupt: the other one is used. */
    flip_byte(one, 20);
    load_term_vote(w, n, 5, 2);
    assert_int_equal(n->io.set_term(&n->io, 9), 0); /* v3 in .1 again */
    raw_close(w, n);
    load_term_vote(w, n, 9, 0);
    raw_close(w, n);

    /* The newest copy is torn (short): the other one is used. */
    assert_int_equal(raw_open(w, n), 0);
    assert_int_equal(n->io.set_vote(&n->io, 3), 0); /* v4 in .2 */
    raw_close(w, n);
    assert_int_equal(truncate(two, 10), 0);
    load_term_vote(w, n, 9, 0);
    raw_close(w, n);

    /* Both damaged: refused. */
    flip_byte(one, 9);
    assert_int_equal(raw_open(w, n), RAFT_CORRUPT);
    rio_close(&n->io);
    log_close(n->log);
    n->log = NULL;
    world_close(w);
}

/* ---- (e) a divergent uncommitted tail is truncated --------------------------
 */

static void partition(struct world *w, struct node *n, bool on)
{
    for (unsigned i = 1; i <= w->n_nodes; i++) {
        if (i != n->id) {
            w->net.drop[n->id][i] = on;
            w->net.drop[i][n->id] = on;
        }
    }
}

static bool is_follower(struct world *w, void *arg)
{
    (void)w;
    return raft_state(&((struct node *)arg)->raft) != RAFT_LEADER;
}

static void test_truncate_divergent(void **state)
{
    struct world *w = *state;
    struct node *old;
    struct node *leader;
    struct tally lost = {0};
    int64_t end_before;

    world_init(w, 3);
    open_all(w);
    old = elect(w, NULL);
    submit_n(w, old, 0, 10);
    converge(w);

    /* The leader is cut off and appends a tail nobody else gets. */
    partition(w, old, true);
    end_before = log_end_offset(old->log);
    for (unsigned i = 0; i < 5; i++) {
        submit(old, 1000 + i, &lost, NULL);
    }
    assert_true(log_end_offset(old->log) > end_before);

    /* The others elect a leader and commit different entries at the same
     * offsets; the old leader steps down (check-quorum). */
    leader = elect(w, old);
    submit_n(w, leader, 2000, 7);
    must(w, is_follower, old, "the old leader to step down");

    /* Healed, the old leader truncates its tail and converges. */
    partition(w, old, false);
    converge(w);
    assert_int_equal(lost.n_ok, 0);
    for (unsigned i = 0; i < w->n_nodes; i++) {
        assert_int_equal(w->nodes[i].state.n_commands, 17);
    }
    world_close(w);
}

/* ---- wrapped mode (metadata group) ------------------------------------------
 */

static void test_wrapped(void **state)
{
    struct world *w = *state;
    struct node *n = &w->nodes[0];
    struct raft_snapshot *s = NULL;
    struct raft_entry *entries = NULL;
    raft_index start_index;
    size_t n_entries = 0;
    struct tally t = {0};
    raft_term term;
    raft_id vote;
    size_t len;
    uint8_t *p;
    size_t pos;

    world_init(w, 1);
    w->is_wrapped = true;
    node_open(w, n, true);
    assert_true(elect(w, NULL) == n);
    for (unsigned i = 0; i < 50; i++) {
        struct raft_apply *req = calloc(1, sizeof *req);
        struct raft_buffer buf;
        assert_non_null(req);
        buf.base = raft_malloc(32);
        assert_non_null(buf.base);
        buf.len = (size_t)snprintf(buf.base, 32, "cmd %u", i);
        req->data = &t;
        assert_int_equal(raft_apply(&n->raft, req, &buf, 1, apply_cb), 0);
    }
    wait_tally(w, &t, 50);
    assert_int_equal(n->state.n_commands, 50);
    /* Each command is a one-record batch (null key, value = payload) at
     * the next offset, after the configuration at 0. */
    p = store_bytes(n->log, 0, &len);
    pos = batch_bytes(p);
    for (unsigned i = 0; i < 50; i++) {
        struct batch_reader r;
        struct record_view v;
        char want[32];
        int want_len = snprintf(want, sizeof want, "cmd %u", i);
        batch_reader_init(&r);
        assert_int_equal(batch_reader_open(&r, p + pos, len - pos), 0);
        assert_int_equal(r.header.base_offset, 1 + i);
        assert_int_equal(r.header.attributes, 0);
        assert_int_equal(batch_reader_next(&r, &v), 1);
        assert_null(v.key);
        assert_int_equal(v.value_len, want_len);
        assert_memory_equal(v.value, want, (size_t)want_len);
        pos += r.header.batch_bytes;
        batch_reader_free(&r);
    }
    assert_int_equal(pos, len);
    free(p);
    node_close(w, n);

    /* load unwraps them. */
    assert_int_equal(raw_open(w, n), 0);
    assert_int_equal(n->io.load(&n->io, &term, &vote, &s, &start_index,
                                &entries, &n_entries),
                     0);
    assert_int_equal(n_entries, 51);
    assert_int_equal(entries[0].type, RAFT_CHANGE);
    for (unsigned i = 0; i < 50; i++) {
        char want[32];
        int want_len = snprintf(want, sizeof want, "cmd %u", i);
        assert_int_equal(entries[1 + i].type, RAFT_COMMAND);
        assert_int_equal(entries[1 + i].buf.len, want_len);
        assert_memory_equal(entries[1 + i].buf.base, want, (size_t)want_len);
    }
    free_loaded(s, entries, n_entries);
    raw_close(w, n);
    world_close(w);
}

static int setup(void **state)
{
    struct world *w = calloc(1, sizeof *w);

    assert_non_null(w);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    free(*state);
    return 0;
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_single_voter), T(test_three_voters),       T(test_snapshots),
        T(test_meta_files),   T(test_truncate_divergent), T(test_wrapped),
    };
    kappa_log_set_level(KAPPA_LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
