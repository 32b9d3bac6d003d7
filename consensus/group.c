/* Raft groups of one node on one loop.
 *
 * Happy path: group_host_init starts the node transport (its recv callback
 * hands each message to the group named by the frame's group id through
 * rio_deliver), the rio syncer and a uv_check handle. group_open opens the
 * store, the rio and the FSM, then raft_init / raft_bootstrap (only when
 * pristine) / raft_start. Every loop turn the check handle compares each
 * group's raft_state, raft_leader and term with what it saw last: on
 * becoming leader it issues raft_barrier at once (the check runs in the
 * same loop iteration as the vote that made it leader), and the group is
 * ready when that barrier applies in the same term. It also reports commit
 * advances (partition: commit offset; metadata: applied index) and
 * resizes the snapshot threshold from the average entry size, so raft holds
 * about GROUP_SNAPSHOT_BUDGET_BYTES per group.
 *
 * Proposals: the leader checks producer sequences against the applied
 * state plus its pending proposals, numbers the batch (rio_next_offset and
 * the current term, rewritten in a raft_malloc'd copy) and raft_applies one
 * entry per batch (raft 0.15 calls back after the first of n entries only).
 *
 * Failure modes: raft statuses RAFT_NOTLEADER / RAFT_LEADERSHIPLOST /
 * RAFT_CANCELED / RAFT_SHUTDOWN become KAPPA_ENOT_LEADER (outcome unknown,
 * retriable). Any RAFT_IOERR (rio fails every later write once one failed)
 * raises GROUP_EVENT_FAILED and the owner closes and reopens the group from
 * disk. Messages for unknown or closing groups are released and dropped
 * (raft retries). group_close frees the group only in raft_close's
 * callback, after every pending callback ran. */
#include "group.h"

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "common/batch.h"
#include "common/err.h"
#include "common/log.h"
#include "consensus/meta_fsm.h"
#include "consensus/partition_fsm.h"
#include "consensus/producer_state.h"
#include "consensus/rmsg.h"

#define COMPONENT              "group"
#define HOST_BUCKETS           1024
#define SNAPSHOT_THRESHOLD_MIN 64
#define SNAPSHOT_THRESHOLD_MAX 65536
#define RESIZE_EVERY_BATCHES   256

struct group {
    struct group_host *host;
    struct group *next;        /* in host->groups */
    struct group *bucket_next; /* in host->buckets */
    uint64_t id;
    enum group_kind kind;
    void *data;
    char dir[GROUP_DIR_BYTES_MAX];
    struct log *log;
    struct raft_io io;
    struct raft raft;
    struct partition_fsm *pfsm;
    struct meta_fsm *mfsm;
    bool is_io_init;   /* rio_init succeeded */
    bool is_raft_init; /* raft_init succeeded */
    bool is_closing;
    bool is_destroy;
    bool is_failed;
    /* What the check handle saw last. */
    int last_state;
    uint64_t last_leader;
    uint64_t last_term;
    uint64_t n_leader_changes; /* known leader changed (metrics) */
    bool is_ready;
    int64_t last_commit;  /* commit offset or applied index */
    uint64_t last_resize; /* batches applied at the last resize */
    /* Leadership barrier. */
    struct raft_barrier barrier;
    bool is_barrier_pending;
    uint64_t barrier_term;
    /* raft_transfer keeps using the request after its callback (0.15):
     * it lives as long as the group. */
    struct raft_transfer transfer;
    bool is_transfer_pending;
    struct group_propose *pending_head, *pending_tail;
    unsigned n_pending;
};

/* ---- Host index -------------------------------------------------------- */

static unsigned bucket_of(const struct group_host *h, uint64_t id)
{
    return (unsigned)((id * 0x9E3779B97F4A7C15ull) >> 40) % h->n_buckets;
}

struct group *group_find(struct group_host *h, uint64_t id)
{
    struct group *g;
    if (h->buckets == NULL) {
        return NULL;
    }
    for (g = h->buckets[bucket_of(h, id)]; g != NULL; g = g->bucket_next) {
        if (g->id == id) {
            return g;
        }
    }
    return NULL;
}

static void index_add(struct group_host *h, struct group *g)
{
    unsigned b = bucket_of(h, g->id);
    g->bucket_next = h->buckets[b];
    h->buckets[b] = g;
    g->next = h->groups;
    h->groups = g;
    h->n_groups++;
}

static void index_remove(struct group_host *h, struct group *g)
{
    struct group **pp = &h->buckets[bucket_of(h, g->id)];
    while (*pp != NULL && *pp != g) {
        pp = &(*pp)->bucket_next;
    }
    if (*pp == g) {
        *pp = g->bucket_next;
    }
    pp = &h->groups;
    while (*pp != NULL && *pp != g) {
        pp = &(*pp)->next;
    }
    if (*pp == g) {
        *pp = g->next;
        h->n_groups--;
    }
}

/* ---- Sending and receiving --------------------------------------------- */

struct host_send {
    struct transport_send ts;
    struct raft_io_send *req;
    raft_io_send_cb cb;
};

static void host_send_cb(struct transport_send *ts, int status)
{
    struct host_send *s = ts->data;
    int rv = status == 0                 ? 0
             : status == KAPPA_ENOMEM    ? RAFT_NOMEM
             : status == KAPPA_ECANCELED ? RAFT_CANCELED
                                         : RAFT_NOCONNECTION;
    if (s->cb != NULL) {
        s->cb(s->req, rv);
    }
    kappa_free(s);
}

static int host_send(void *data, uint64_t group_id, struct raft_io_send *req,
                     const struct raft_message *m, raft_io_send_cb cb)
{
    struct group_host *h = data;
    struct host_send *s;
    int rv;

    /* raft's destination is the node id and its cluster address. */
    if (transport_set_peer(&h->transport, m->server_id, m->server_address) !=
        0) {
        return RAFT_NOCONNECTION;
    }
    s = kappa_malloc(sizeof *s);
    if (s == NULL) {
        return RAFT_NOMEM;
    }
    s->ts.data = s;
    s->req = req;
    s->cb = cb;
    rv = transport_send(&h->transport, &s->ts, m->server_id, group_id, m,
                        host_send_cb);
    if (rv != 0) {
        kappa_free(s);
        return rv == KAPPA_ESHUTDOWN ? RAFT_CANCELED : RAFT_NOCONNECTION;
    }
    return 0;
}

static void host_recv(struct transport *t, uint64_t group_id,
                      struct raft_message *m, void *data)
{
    struct group_host *h = data;
    struct group *g = group_find(h, group_id);
    (void)t;
    if (g == NULL || g->is_closing || g->is_failed) {
        rmsg_release(m);
        return;
    }
    rio_deliver(&g->io, m);
}

static void host_app(struct transport *t, uint64_t from_id,
                     const uint8_t *payload, size_t len, void *data)
{
    struct group_host *h = data;
    if (h->cfg.app_cb != NULL && !h->is_closing) {
        h->cfg.app_cb(t, from_id, payload, len, h->cfg.data);
    }
}

/* ---- Leadership and commit polling ------------------------------------- */

static void emit(struct group *g, enum group_event ev)
{
    struct group_host *h = g->host;
    if (h->cfg.event_cb != NULL) {
        h->cfg.event_cb(g, ev, h->cfg.data);
    }
}

static void group_fail(struct group *g, const char *what)
{
    if (g->is_failed || g->is_closing) {
        return;
    }
    kappa_log(KAPPA_LOG_ERROR, COMPONENT,
              "group=%" PRIu64 " %s: i/o error (%s); reopening", g->id, what,
              raft_errmsg(&g->raft));
    g->is_failed = true;
    g->is_ready = false;
    emit(g, GROUP_EVENT_FAILED);
}

static void barrier_cb(struct raft_barrier *req, int status)
{
    struct group *g = req->data;
    g->is_barrier_pending = false;
    if (status == RAFT_IOERR) {
        group_fail(g, "barrier");
        return;
    }
    if (status == 0 && !g->is_closing && raft_state(&g->raft) == RAFT_LEADER &&
        g->raft.current_term == g->barrier_term) {
        g->is_ready = true;
        kappa_log(KAPPA_LOG_INFO, COMPONENT,
                  "group=%" PRIu64 " leader ready term=%" PRIu64, g->id,
                  g->barrier_term);
        emit(g, GROUP_EVENT_LEADER);
    }
}

static void issue_barrier(struct group *g)
{
    int rv;
    if (g->is_barrier_pending) {
        return; /* the check handle retries once it completes */
    }
    g->barrier.data = g;
    g->barrier_term = g->raft.current_term;
    rv = raft_barrier(&g->raft, &g->barrier, barrier_cb);
    if (rv == 0) {
        g->is_barrier_pending = true;
    } else if (rv == RAFT_IOERR) {
        group_fail(g, "barrier");
    }
}

/* raft 0.15 keeps every entry since the last snapshot in memory: size the
 * threshold so that is about GROUP_SNAPSHOT_BUDGET_BYTES. */
static void resize_snapshot_threshold(struct group *g)
{
    uint64_t n = partition_fsm_n_batches(g->pfsm);
    uint64_t avg, threshold;
    if (n < g->last_resize + RESIZE_EVERY_BATCHES) {
        return;
    }
    g->last_resize = n;
    avg = log_size_bytes(g->log) / (n > 0 ? n : 1);
    threshold = GROUP_SNAPSHOT_BUDGET_BYTES / (avg > 0 ? avg : 1);
    if (threshold < SNAPSHOT_THRESHOLD_MIN) {
        threshold = SNAPSHOT_THRESHOLD_MIN;
    }
    if (threshold > SNAPSHOT_THRESHOLD_MAX) {
        threshold = SNAPSHOT_THRESHOLD_MAX;
    }
    raft_set_snapshot_threshold(&g->raft, (unsigned)threshold);
    raft_set_snapshot_trailing(&g->raft, (unsigned)(threshold / 2));
}

static void poll_group(struct group *g)
{
    int state = raft_state(&g->raft);
    uint64_t term = g->raft.current_term;
    raft_id leader = 0;
    const char *address = NULL;
    int64_t commit;
    bool changed = false;

    raft_leader(&g->raft, &leader, &address);
    if (state == RAFT_LEADER &&
        (g->last_state != RAFT_LEADER || term != g->last_term)) {
        g->is_ready = false;
        changed = true;
    }
    if (state == RAFT_LEADER && !g->is_ready && !g->is_barrier_pending) {
        issue_barrier(g);
    }
    if (state != RAFT_LEADER && g->is_ready) {
        g->is_ready = false;
        changed = true;
    }
    changed |= leader != g->last_leader || state != g->last_state;
    if (leader != g->last_leader && leader != 0) {
        g->n_leader_changes++;
    }
    g->last_state = state;
    g->last_leader = leader;
    g->last_term = term;
    if (changed) {
        emit(g, GROUP_EVENT_LEADER);
    }
    commit = g->kind == GROUP_PARTITION ? partition_fsm_commit_offset(g->pfsm)
                                        : (int64_t)raft_last_applied(&g->raft);
    if (commit != g->last_commit) {
        g->last_commit = commit;
        if (g->kind == GROUP_PARTITION) {
            resize_snapshot_threshold(g);
        }
        emit(g, GROUP_EVENT_COMMIT);
    }
}

static void check_cb(uv_check_t *handle)
{
    struct group_host *h = handle->data;
    struct group *g = h->groups;
    while (g != NULL) {
        /* An event callback may close g (never another group). */
        struct group *next = g->next;
        if (!g->is_closing && !g->is_failed) {
            poll_group(g);
        }
        g = next;
    }
}

/* ---- Host lifecycle ---------------------------------------------------- */

int group_host_init(struct group_host *h, uv_loop_t *loop,
                    const struct group_host_config *cfg, char *errmsg)
{
    int rv;
    memset(h, 0, sizeof *h);
    h->loop = loop;
    h->cfg = *cfg;
    h->is_transport_closed = h->is_syncer_closed = h->is_check_closed = true;
    h->n_buckets = HOST_BUCKETS;
    h->buckets = kappa_calloc(h->n_buckets, sizeof *h->buckets);
    if (h->buckets == NULL) {
        return KAPPA_ENOMEM;
    }
    rv = transport_init(&h->transport, loop, cfg->node_id, cfg->cluster_id,
                        cfg->listen_addr, host_recv, h);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "cluster.listen %s: bad address",
                            cfg->listen_addr);
        return rv;
    }
    h->is_transport_closed = false;
    transport_set_app_cb(&h->transport, host_app);
    rv = transport_start(&h->transport);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "cluster.listen %s: cannot listen",
                            cfg->listen_addr);
        return rv;
    }
    rv = rio_syncer_init(&h->syncer, loop);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "rio syncer: %s", kappa_err_str(rv));
        return rv;
    }
    h->is_syncer_closed = false;
    if (uv_check_init(loop, &h->check) != 0) {
        kappa_errmsg_printf(errmsg, "uv_check_init failed");
        return KAPPA_EIO;
    }
    h->is_check_closed = false;
    h->check.data = h;
    (void)uv_check_start(&h->check, check_cb);
    return 0;
}

const char *group_host_address(const struct group_host *h)
{
    return transport_address(&h->transport);
}

static void host_maybe_finish(struct group_host *h);

static void host_transport_closed(struct transport *t)
{
    struct group_host *h = t->data;
    h->is_transport_closed = true;
    host_maybe_finish(h);
}

static void host_syncer_closed(struct rio_syncer *s)
{
    struct group_host *h =
        (struct group_host *)(void *)((char *)s -
                                      offsetof(struct group_host, syncer));
    h->is_syncer_closed = true;
    host_maybe_finish(h);
}

static void host_check_closed(uv_handle_t *handle)
{
    struct group_host *h = handle->data;
    h->is_check_closed = true;
    host_maybe_finish(h);
}

/* Groups first (rio needs the syncer and the transport until raft_close's
 * callback), then the rest; the callback once all of it is closed. */
static void host_maybe_finish(struct group_host *h)
{
    if (!h->is_closing || h->n_closing > 0 || h->n_groups > 0) {
        return;
    }
    if (!h->is_transport_closed && !h->transport.is_closing) {
        transport_close(&h->transport, host_transport_closed);
    }
    if (!h->is_syncer_closed && !h->syncer.is_closing) {
        rio_syncer_close(&h->syncer, host_syncer_closed);
    }
    if (!h->is_check_closed && !uv_is_closing((uv_handle_t *)&h->check)) {
        uv_close((uv_handle_t *)&h->check, host_check_closed);
    }
    if (h->is_transport_closed && h->is_syncer_closed && h->is_check_closed &&
        h->close_cb != NULL) {
        group_host_close_cb cb = h->close_cb;
        h->close_cb = NULL;
        kappa_free(h->buckets);
        h->buckets = NULL;
        cb(h);
    }
}

void group_host_close(struct group_host *h, group_host_close_cb cb)
{
    if (h->is_closing) {
        return;
    }
    h->is_closing = true;
    h->close_cb = cb;
    while (h->groups != NULL) {
        group_close(h->groups, false);
    }
    host_maybe_finish(h);
}

/* ---- Groups ------------------------------------------------------------ */

static int64_t wall_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void group_free(struct group *g)
{
    struct group_host *h = g->host;
    if (g->is_io_init) {
        rio_close(&g->io);
    }
    log_close(g->log);
    if (g->is_destroy) {
        (void)nftw(g->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    partition_fsm_free(g->pfsm);
    meta_fsm_free(g->mfsm);
    kappa_free(g);
    host_maybe_finish(h);
}

static void group_raft_closed(struct raft *r)
{
    struct group *g = r->data;
    g->host->n_closing--;
    group_free(g);
}

static int open_store(struct group *g, const struct group_options *o,
                      char *errmsg)
{
    char path[GROUP_DIR_BYTES_MAX + 8];
    if (mkdir(g->dir, 0755) != 0 && errno != EEXIST) {
        kappa_errmsg_printf(errmsg, "mkdir %s: %s", g->dir, strerror(errno));
        return KAPPA_EIO;
    }
    snprintf(path, sizeof path, "%s/log", g->dir);
    return log_open(path, o->log_cfg, wall_now_ms(), &g->log, errmsg);
}

static int init_raft(struct group *g, const struct group_options *o,
                     char *errmsg)
{
    struct group_host *h = g->host;
    struct rio_config rc = {
        .dir = g->dir,
        .log = g->log,
        .group_id = g->id,
        .is_wrapped = o->kind == GROUP_META,
        .syncer = &h->syncer,
        .sender = {.data = h, .send = host_send},
    };
    struct raft_fsm *fsm;
    int rv = rio_init(&g->io, h->loop, &rc);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "rio: %s", kappa_err_str(rv));
        return rv;
    }
    g->is_io_init = true;
    if (o->kind == GROUP_PARTITION) {
        g->pfsm = partition_fsm_new(NULL);
        fsm = g->pfsm != NULL ? partition_fsm_raft(g->pfsm) : NULL;
    } else {
        g->mfsm = meta_fsm_new();
        fsm = g->mfsm != NULL ? meta_fsm_raft(g->mfsm) : NULL;
    }
    if (fsm == NULL) {
        return KAPPA_ENOMEM;
    }
    rv =
        raft_init(&g->raft, &g->io, fsm, h->cfg.node_id, group_host_address(h));
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "raft_init: %s", raft_errmsg(&g->raft));
        return KAPPA_EIO;
    }
    g->is_raft_init = true;
    g->raft.data = g;
    if (g->mfsm != NULL) {
        meta_fsm_attach(g->mfsm, &g->raft);
    }
    raft_set_election_timeout(&g->raft, h->cfg.election_timeout_ms);
    raft_set_heartbeat_timeout(&g->raft, h->cfg.heartbeat_timeout_ms);
    raft_set_pre_vote(&g->raft, true);
    raft_set_snapshot_threshold(&g->raft, g->kind == GROUP_META ? 1024 : 4096);
    raft_set_snapshot_trailing(&g->raft, g->kind == GROUP_META ? 128 : 2048);
    return 0;
}

static int start_raft(struct group *g, const struct group_options *o,
                      char *errmsg)
{
    int rv;
    if (o->bootstrap != NULL) {
        rv = raft_bootstrap(&g->raft, o->bootstrap);
        if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) {
            kappa_errmsg_printf(errmsg, "raft_bootstrap: %s",
                                raft_errmsg(&g->raft));
            return KAPPA_EIO;
        }
        if (rv == 0) {
            kappa_log(KAPPA_LOG_INFO, COMPONENT,
                      "group=%" PRIu64 " bootstrapped voters=%u", g->id,
                      o->bootstrap->n);
        }
    }
    rv = raft_start(&g->raft);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "raft_start: %s", raft_errmsg(&g->raft));
        return KAPPA_EIO;
    }
    return 0;
}

int group_open(struct group_host *h, const struct group_options *o,
               struct group **out, char *errmsg)
{
    struct group *g;
    int rv;

    if (h->is_closing || group_find(h, o->id) != NULL ||
        strlen(o->dir) >= GROUP_DIR_BYTES_MAX - 8) {
        kappa_errmsg_printf(errmsg, "group %" PRIu64 ": cannot open", o->id);
        return KAPPA_EINVAL;
    }
    g = kappa_calloc(1, sizeof *g);
    if (g == NULL) {
        return KAPPA_ENOMEM;
    }
    g->host = h;
    g->id = o->id;
    g->kind = o->kind;
    g->data = o->data;
    g->last_commit = -1;
    snprintf(g->dir, sizeof g->dir, "%s", o->dir);
    rv = open_store(g, o, errmsg);
    if (rv == 0) {
        rv = init_raft(g, o, errmsg);
    }
    if (rv == 0) {
        rv = start_raft(g, o, errmsg);
    }
    if (rv != 0) {
        kappa_errmsg_wrap(errmsg, "group %" PRIu64, o->id);
        if (g->is_raft_init) {
            /* raft owns the io now: free after its close. */
            g->is_closing = true;
            h->n_closing++;
            raft_close(&g->raft, group_raft_closed);
        } else {
            group_free(g);
        }
        return rv;
    }
    index_add(h, g);
    *out = g;
    return 0;
}

void group_close(struct group *g, bool destroy)
{
    struct group_host *h = g->host;
    if (g->is_closing) {
        return;
    }
    g->is_closing = true;
    g->is_ready = false;
    g->is_destroy = destroy;
    index_remove(h, g);
    h->n_closing++;
    raft_close(&g->raft, group_raft_closed);
}

uint64_t group_id(const struct group *g)
{
    return g->id;
}

void *group_data(const struct group *g)
{
    return g->data;
}

enum group_kind group_kind(const struct group *g)
{
    return g->kind;
}

uint64_t group_leader(const struct group *g)
{
    return g->last_leader;
}

uint64_t group_leader_changes(const struct group *g)
{
    return g->n_leader_changes;
}

uint64_t group_term(const struct group *g)
{
    return g->raft.current_term;
}

bool group_is_leader(const struct group *g)
{
    return !g->is_closing && g->raft.state == RAFT_LEADER;
}

bool group_is_ready(const struct group *g)
{
    return g->is_ready && !g->is_closing && !g->is_failed &&
           g->raft.state == RAFT_LEADER;
}

struct log *group_log(const struct group *g)
{
    return g->log;
}

int64_t group_commit_offset(const struct group *g)
{
    return g->pfsm != NULL ? partition_fsm_commit_offset(g->pfsm) : 0;
}

const struct meta_fsm *group_meta(const struct group *g)
{
    return g->mfsm;
}

void group_status_get(struct group *g, struct group_status *out)
{
    struct raft *r = &g->raft;
    memset(out, 0, sizeof *out);
    out->state = r->state;
    out->term = r->current_term;
    out->leader = g->last_leader;
    out->commit_index = r->commit_index;
    out->last_applied = r->last_applied;
    out->last_index = raft_last_index(r);
    out->is_ready = group_is_ready(g);
    if (r->state != RAFT_LEADER || r->leader_state.progress == NULL) {
        return;
    }
    for (unsigned i = 0;
         i < r->configuration.n && out->n_peers < GROUP_STATUS_PEERS_MAX; i++) {
        const struct raft_server *srv = &r->configuration.servers[i];
        const struct raft_progress *p = &r->leader_state.progress[i];
        struct group_peer_status *ps;
        if (srv->id == r->id) {
            continue;
        }
        ps = &out->peers[out->n_peers++];
        ps->id = srv->id;
        ps->match_index = p->match_index;
        ps->is_voter = srv->role == RAFT_VOTER;
        ps->is_recent = p->recent_recv;
    }
}

struct host_find {
    struct group_host *host;
};

static void host_find_walk(uv_handle_t *handle, void *arg)
{
    struct host_find *f = arg;
    struct group_host *h = handle->data;
    /* group_host_init sets check.data to the host itself. */
    if (f->host == NULL && handle->type == UV_CHECK && h != NULL &&
        (uv_handle_t *)&h->check == handle && !h->is_closing &&
        !uv_is_closing(handle)) {
        f->host = h;
    }
}

struct group_host *group_host_of_loop(uv_loop_t *loop)
{
    struct host_find f = {NULL};
    uv_walk(loop, host_find_walk, &f);
    return f.host;
}

/* ---- Proposals --------------------------------------------------------- */

static void pending_add(struct group *g, struct group_propose *req)
{
    req->prev = g->pending_tail;
    req->next = NULL;
    if (g->pending_tail != NULL) {
        g->pending_tail->next = req;
    } else {
        g->pending_head = req;
    }
    g->pending_tail = req;
    g->n_pending++;
}

static void pending_remove(struct group *g, struct group_propose *req)
{
    if (req->prev != NULL) {
        req->prev->next = req->next;
    } else {
        g->pending_head = req->next;
    }
    if (req->next != NULL) {
        req->next->prev = req->prev;
    } else {
        g->pending_tail = req->prev;
    }
    g->n_pending--;
}

static int map_raft_status(int status)
{
    switch (status) {
    case 0:
        return 0;
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST:
    case RAFT_CANCELED:
    case RAFT_SHUTDOWN:
        return KAPPA_ENOT_LEADER;
    case RAFT_NOMEM:
        return KAPPA_ENOMEM;
    default:
        return KAPPA_EIO;
    }
}

static void apply_cb(struct raft_apply *apply, int status, void *result)
{
    struct group_propose *req = apply->data;
    struct group *g = req->g;
    int64_t value = -1;
    int rv = map_raft_status(status);

    pending_remove(g, req);
    if (rv == 0 && g->kind == GROUP_PARTITION) {
        rv = partition_fsm_result(result, &value);
    } else if (rv == 0) {
        rv = meta_fsm_result(result, &value);
    }
    if (status == RAFT_IOERR) {
        group_fail(g, "append");
    }
    req->cb(req, rv, value);
}

/* The newest pending proposal of producer_id, or NULL. */
static struct group_propose *pending_of(struct group *g, int64_t producer_id)
{
    for (struct group_propose *p = g->pending_tail; p != NULL; p = p->prev) {
        if (p->producer_id == producer_id) {
            return p;
        }
    }
    return NULL;
}

/* Kafka's rules against the applied state plus the pending proposals. */
static int check_sequence(struct group *g, const struct batch_header *bh,
                          int64_t *dup_offset)
{
    struct group_propose *p;
    int32_t last;
    if (bh->producer_id == PRODUCER_ID_NONE) {
        return 0;
    }
    p = pending_of(g, bh->producer_id);
    if (p == NULL || p->epoch != bh->producer_epoch) {
        return producer_state_check(partition_fsm_producers(g->pfsm),
                                    bh->producer_id, bh->producer_epoch,
                                    bh->base_sequence, bh->record_count,
                                    dup_offset);
    }
    last =
        producer_sequence_add(bh->base_sequence, (int32_t)bh->record_count - 1);
    for (struct group_propose *q = p; q != NULL; q = q->prev) {
        if (q->producer_id == bh->producer_id &&
            q->first_sequence == bh->base_sequence &&
            q->last_sequence == last) {
            return KAPPA_EBUSY; /* a duplicate still in flight */
        }
    }
    return bh->base_sequence == producer_sequence_add(p->last_sequence, 1)
               ? 0
               : KAPPA_ESEQUENCE;
}

static int propose_common(struct group *g, struct group_propose *req,
                          group_propose_cb cb)
{
    if (!group_is_ready(g)) {
        return KAPPA_ENOT_LEADER;
    }
    if (g->n_pending >= GROUP_INFLIGHT_MAX) {
        return KAPPA_EBUSY;
    }
    req->g = g;
    req->cb = cb;
    req->apply.data = req;
    req->producer_id = PRODUCER_ID_NONE;
    return 0;
}

static int do_apply(struct group *g, struct group_propose *req,
                    struct raft_buffer *buf)
{
    int rv = raft_apply(&g->raft, &req->apply, buf, 1, apply_cb);
    if (rv != 0) {
        raft_free(buf->base);
        if (rv == RAFT_IOERR) {
            group_fail(g, "apply");
        }
        return map_raft_status(rv == RAFT_INVALID ? RAFT_IOERR : rv);
    }
    pending_add(g, req);
    return 0;
}

int group_propose_batch(struct group *g, struct group_propose *req,
                        const uint8_t *batch, size_t len, int64_t *dup_offset,
                        group_propose_cb cb)
{
    struct batch_header bh;
    struct raft_buffer buf;
    int rv = propose_common(g, req, cb);

    if (rv != 0) {
        return rv;
    }
    if (g->kind != GROUP_PARTITION ||
        batch_header_decode(batch, len, &bh) != 0 || bh.batch_bytes != len) {
        return KAPPA_EINVAL;
    }
    rv = check_sequence(g, &bh, dup_offset);
    if (rv != 0) {
        return rv;
    }
    buf.len = len;
    buf.base = raft_malloc(len);
    if (buf.base == NULL) {
        return KAPPA_ENOMEM;
    }
    memcpy(buf.base, batch, len);
    req->base_offset = rio_next_offset(&g->io);
    batch_set_base_offset(buf.base, req->base_offset);
    batch_set_term(buf.base, g->raft.current_term);
    req->producer_id = bh.producer_id;
    req->epoch = bh.producer_epoch;
    req->first_sequence = bh.base_sequence;
    req->last_sequence =
        bh.producer_id == PRODUCER_ID_NONE
            ? 0
            : producer_sequence_add(bh.base_sequence,
                                    (int32_t)bh.record_count - 1);
    return do_apply(g, req, &buf);
}

int group_propose_cmd(struct group *g, struct group_propose *req,
                      const void *cmd, size_t len, group_propose_cb cb)
{
    struct raft_buffer buf;
    int rv = propose_common(g, req, cb);
    if (rv != 0) {
        return rv;
    }
    if (g->kind != GROUP_META || len == 0) {
        return KAPPA_EINVAL;
    }
    buf.len = len;
    buf.base = raft_malloc(len);
    if (buf.base == NULL) {
        return KAPPA_ENOMEM;
    }
    memcpy(buf.base, cmd, len);
    return do_apply(g, req, &buf);
}

static void transfer_cb(struct raft_transfer *req)
{
    struct group *g = req->data;
    g->is_transfer_pending = false;
}

int group_transfer(struct group *g, uint64_t target)
{
    int rv;
    if (g->is_transfer_pending) {
        return KAPPA_EBUSY;
    }
    if (!group_is_leader(g)) {
        return KAPPA_ENOT_LEADER;
    }
    g->transfer.data = g;
    rv = raft_transfer(&g->raft, &g->transfer, target, transfer_cb);
    if (rv != 0) {
        return rv == RAFT_NOTLEADER ? KAPPA_ENOT_LEADER : KAPPA_EBUSY;
    }
    g->is_transfer_pending = true;
    return 0;
}
