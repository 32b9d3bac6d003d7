/* Produce.
 *
 * Happy path: the args are walked twice. The first pass checks the shape of
 * every part (types, sizes) and sums the topic name bytes, so a malformed
 * request is rejected before anything is appended. The second pass
 * validates each part's batches with batch_validate_all and appends them
 * with one log_append (one write syscall), rewriting the batch headers in
 * place in the connection's read buffer: no copy. acks=1 is answered right
 * away; acks=-1 parks one partition_waiter per part and is answered when
 * the last of its parts is durable (group commit, see partition.c). acks=0
 * is never answered.
 *
 * Failure modes: per-part errors (unknown topic or partition, bad batch,
 * append error, fdatasync error) are reported in that part's entry and do
 * not stop the other parts. If the connection closes while parts wait, the
 * request is abandoned and freed without a reply when the last part
 * finishes. */
#include <inttypes.h>
#include <string.h>

#include "broker/dispatch.h"
#include "broker/partition.h"
#include "broker/server.h"
#include "broker/topics.h"
#include "common/alloc.h"
#include "common/batch.h"
#include "common/err.h"
#include "common/log.h"
#include "consensus/group.h"

#define COMPONENT "produce"

struct produce_part {
    struct partition_waiter waiter;
    struct produce_req *req;
    const char *topic; /* in the request's name storage */
    uint32_t topic_len;
    int64_t partition;
    int error;
    int64_t base_offset;
    char *message;       /* error detail or NULL */
    struct partition *p; /* while waiting for durability (metrics) */
};

struct produce_req {
    struct req base;
    struct server *server;
    int acks;
    uint32_t n_parts;
    uint32_t n_waiting;
    uint64_t arrival_ns; /* uv_hrtime at dispatch (latency metric) */
    struct produce_part parts[];
};

/* Whether validated batches include a control batch (Raft bookkeeping that
 * only the broker may write). */
static int has_control_batch(const uint8_t *p, size_t n)
{
    size_t pos = 0;
    while (pos < n) {
        struct batch_header h;
        if (batch_header_decode(p + pos, n - pos, &h) != 0) {
            return 1; /* cannot happen after batch_validate_all */
        }
        if ((h.attributes & KAPPA_BATCH_ATTR_CONTROL) != 0) {
            return 1;
        }
        pos += h.batch_bytes;
    }
    return 0;
}

/* One part as read from the wire; records borrow the read buffer. */
struct part_args {
    const char *topic;
    uint32_t topic_len;
    int64_t partition;
    uint8_t *records;
    uint32_t records_len;
};

static int read_part(struct mp_reader *r, struct part_args *pa, char *errmsg)
{
    const char *key;
    const uint8_t *bin = NULL;
    uint32_t n, key_len;
    int has_topic = 0, has_partition = 0;
    int rv = args_map(r, "parts", &n, errmsg);

    pa->records_len = 0;
    for (uint32_t i = 0; rv == 0 && i < n; i++) {
        rv = args_key(r, &key, &key_len, errmsg);
        if (rv != 0) {
            break;
        }
        if (mp_key_is(key, key_len, "topic")) {
            rv = args_str(r, "topic", &pa->topic, &pa->topic_len, errmsg);
            has_topic = 1;
        } else if (mp_key_is(key, key_len, "partition")) {
            rv = args_int(r, "partition", INT32_MIN, INT32_MAX, &pa->partition,
                          errmsg);
            has_partition = 1;
        } else if (mp_key_is(key, key_len, "records")) {
            rv = args_bin(r, "records", &bin, &pa->records_len, errmsg);
        } else {
            (void)mp_skip(r);
        }
    }
    if (rv == 0 && (!has_topic || !has_partition || bin == NULL)) {
        rv = KAPPA_EINVAL;
        kappa_errmsg_printf(errmsg, "parts: need topic, partition, records");
    }
    /* The frame lives in the connection's writable read buffer; the reader
     * only hands out const pointers. */
    pa->records = (uint8_t *)(uintptr_t)bin;
    return rv;
}

struct produce_args {
    int64_t acks;
    int has_acks;
    uint32_t n_parts;
    struct mp_reader parts; /* first part */
    size_t names_bytes;
};

static int read_parts(struct produce_args *a, struct mp_reader *r, char *errmsg)
{
    struct part_args pa = {0};
    int rv = args_array(r, "parts", DISPATCH_PARTS_MAX, &a->n_parts, errmsg);
    a->parts = *r;
    for (uint32_t i = 0; rv == 0 && i < a->n_parts; i++) {
        rv = read_part(r, &pa, errmsg);
        a->names_bytes += rv == 0 ? pa.topic_len : 0;
    }
    return rv;
}

static int read_args(struct produce_args *a, struct mp_reader *r, char *errmsg)
{
    const char *key;
    uint32_t n, key_len;
    int64_t ignored;
    int has_parts = 0;
    int rv = args_map(r, "args", &n, errmsg);

    memset(a, 0, sizeof *a);
    for (uint32_t i = 0; rv == 0 && i < n; i++) {
        rv = args_key(r, &key, &key_len, errmsg);
        if (rv != 0) {
            break;
        }
        if (mp_key_is(key, key_len, "acks")) {
            rv = args_int(r, "acks", -1, 1, &a->acks, errmsg);
            a->has_acks = rv == 0;
        } else if (mp_key_is(key, key_len, "timeout_ms")) {
            /* One node: the fdatasync cannot be abandoned midway. */
            rv = args_nil(r) ? 0
                             : args_int(r, "timeout_ms", 0, INT64_MAX, &ignored,
                                        errmsg);
        } else if (mp_key_is(key, key_len, "parts")) {
            rv = read_parts(a, r, errmsg);
            has_parts = 1;
        } else {
            (void)mp_skip(r);
        }
    }
    if (rv == 0 && (!a->has_acks || !has_parts)) {
        rv = KAPPA_EINVAL;
        kappa_errmsg_printf(errmsg, "%s: required",
                            a->has_acks ? "parts" : "acks");
    }
    return rv;
}

static void part_fail(struct produce_part *part, int code, const char *msg)
{
    part->error = code;
    part->base_offset = -1;
    if (msg != NULL && msg[0] != '\0' && part->message == NULL) {
        part->message = kappa_strdup(msg);
    }
}

static void reply_parts(struct conn *c, struct produce_req *req)
{
    struct reply r;
    reply_begin(&r, c, req->base.correlation_id);
    mp_put_map(&r.w, 1);
    mp_put_str(&r.w, "parts");
    mp_put_array(&r.w, req->n_parts);
    for (uint32_t i = 0; i < req->n_parts; i++) {
        const struct produce_part *part = &req->parts[i];
        mp_put_map(&r.w, part->message != NULL ? 5 : 4);
        mp_put_str(&r.w, "topic");
        mp_put_strn(&r.w, part->topic, part->topic_len);
        mp_put_str(&r.w, "partition");
        mp_put_int(&r.w, part->partition);
        mp_put_str(&r.w, "error");
        mp_put_int(&r.w, part->error);
        if (part->message != NULL) {
            mp_put_str(&r.w, "message");
            mp_put_str(&r.w, part->message);
        }
        mp_put_str(&r.w, "base_offset");
        mp_put_int(&r.w, part->error == 0 ? part->base_offset : -1);
    }
    reply_end(&r);
}

static void free_req(struct produce_req *req)
{
    for (uint32_t i = 0; i < req->n_parts; i++) {
        kappa_free(req->parts[i].message);
    }
    req->server->n_reqs--;
    kappa_free(req);
}

/* Last part durable: replies (unless acks=0 or abandoned) and frees. */
static void finish(struct produce_req *req)
{
    struct server *s = req->server;
    struct conn *c = req->base.conn;
    conn_req_done(&req->base);
    if (c != NULL && req->acks != 0) {
        reply_parts(c, req);
    }
    free_req(req);
    server_poke(s);
}

static void durable_cb(struct partition_waiter *w, int status)
{
    struct produce_part *part = (struct produce_part *)(void *)w;
    struct produce_req *req = part->req;
    if (status != 0) {
        part_fail(part, status, "fdatasync failed");
    } else {
        metrics_observe_latency(&part->p->stats, uv_hrtime() - req->arrival_ns);
    }
    if (--req->n_waiting == 0) {
        finish(req);
    }
}

static void abandon_cb(struct req *r)
{
    (void)r; /* parts still wait for their fdatasync; finish frees */
}

/* Cluster mode: one raft_apply per batch of a part. */
struct produce_prop {
    struct group_propose gp;
    struct produce_part *part;
    uint32_t index; /* of the batch within its part */
    /* Metrics, counted on commit: the view stays valid while the group
     * can still commit (group_close fails pending proposals first). */
    struct partition *p;
    uint32_t n_records;
    uint32_t n_bytes;
    bool is_last; /* the part's last batch: commit order ends the part */
};

static void prop_result(struct produce_part *part, uint32_t index, int status,
                        int64_t value)
{
    if (status != 0) {
        if (part->error == 0) {
            part_fail(part, status,
                      status == KAPPA_ENOT_LEADER
                          ? "leadership lost before commit; outcome unknown"
                          : NULL);
        }
    } else if (index == 0 && part->error == 0) {
        part->base_offset = value;
    }
}

static void prop_done(struct group_propose *gp, int status, int64_t value)
{
    struct produce_prop *pp = gp->data;
    struct produce_part *part = pp->part;
    struct produce_req *req = part->req;
    if (status == 0) {
        pp->p->stats.produce_records += pp->n_records;
        pp->p->stats.produce_bytes += pp->n_bytes;
        if (pp->is_last) {
            metrics_observe_latency(&pp->p->stats,
                                    uv_hrtime() - req->arrival_ns);
        }
    }
    prop_result(part, pp->index, status, value);
    kappa_free(pp);
    if (--req->n_waiting == 0) {
        finish(req);
    }
}

/* Proposes every batch of a validated part to the partition's Raft group;
 * the part is answered when all of them committed (acks=1 and acks=all
 * alike in cluster mode: docs/guarantees.md). */
static void produce_part_cluster(struct produce_req *req,
                                 struct produce_part *part,
                                 const struct part_args *pa,
                                 struct partition *p)
{
    size_t pos = 0;
    uint32_t index = 0;
    while (pos < pa->records_len && part->error == 0) {
        struct batch_header h;
        struct produce_prop *pp;
        int64_t dup = -1;
        int rv;
        if (batch_header_decode(pa->records + pos, pa->records_len - pos, &h) !=
            0) {
            part_fail(part, KAPPA_ECORRUPT, NULL); /* validated before */
            return;
        }
        pp = kappa_malloc(sizeof *pp);
        if (pp == NULL) {
            part_fail(part, KAPPA_ENOMEM, NULL);
            return;
        }
        pp->part = part;
        pp->index = index;
        pp->p = p;
        pp->n_records = h.record_count;
        pp->n_bytes = h.batch_bytes;
        pp->is_last = pos + h.batch_bytes >= pa->records_len;
        pp->gp.data = pp;
        rv = group_propose_batch(p->group, &pp->gp, pa->records + pos,
                                 h.batch_bytes, &dup, prop_done);
        if (rv == 0) {
            req->n_waiting++;
        } else {
            kappa_free(pp);
            prop_result(part, index, rv == KAPPA_EDUPLICATE ? 0 : rv, dup);
        }
        pos += h.batch_bytes;
        index++;
    }
}

/* Validates and appends one part; for acks=-1 parks it until durable. */
static void produce_part(struct produce_req *req, struct produce_part *part,
                         struct part_args *pa)
{
    char errmsg[KAPPA_ERRMSG_SIZE] = "";
    struct server *s = req->server;
    struct partition *p;
    uint32_t n_batches;
    uint64_t n_records;
    int64_t end = 0;
    int err = 0;
    int rv;

    p = server_partition(s, pa->topic, pa->topic_len, pa->partition, &err,
                         errmsg);
    if (p == NULL) {
        part_fail(part, err, errmsg);
        return;
    }
    if (pa->records_len == 0) {
        part_fail(part, KAPPA_EINVAL, "records: empty");
        return;
    }
    rv = batch_validate_all(pa->records, pa->records_len,
                            s->cfg->message_max_bytes, &n_batches, &n_records,
                            errmsg);
    if (rv == 0 && has_control_batch(pa->records, pa->records_len)) {
        kappa_errmsg_printf(errmsg, "control batches are written by the "
                                    "broker, not producers");
        rv = KAPPA_EINVAL;
    }
    if (rv == 0 && p->group != NULL) {
        part->base_offset = -1;
        produce_part_cluster(req, part, pa, p);
        return;
    }
    if (rv == 0) {
        rv = partition_append(p, pa->records, pa->records_len,
                              &part->base_offset, &end, errmsg);
    }
    if (rv != 0) {
        kappa_log(KAPPA_LOG_DEBUG, COMPONENT,
                  "part rejected topic=%.*s partition=%" PRId64 " rv=%s: %s",
                  (int)pa->topic_len, pa->topic, pa->partition,
                  kappa_err_name(rv), errmsg);
        part_fail(part, rv, errmsg);
        return;
    }
    p->stats.produce_records += n_records;
    p->stats.produce_bytes += pa->records_len;
    if (req->acks != -1 || end <= partition_high_watermark(p)) {
        metrics_observe_latency(&p->stats, uv_hrtime() - req->arrival_ns);
        return;
    }
    if (!partition_is_syncing(p) && !partition_is_dirty(p)) {
        /* The group commit could not start (logged by the partition). */
        part_fail(part, KAPPA_EIO, "fdatasync could not start");
        return;
    }
    part->req = req;
    part->p = p;
    req->n_waiting++;
    partition_wait(p, &part->waiter, end, durable_cb);
}

void api_produce(struct conn *c, uint32_t corr, struct mp_reader *args)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct server *s = c->server;
    struct produce_args a;
    struct produce_req *req;
    struct part_args pa = {0};
    char *names;
    int rv = read_args(&a, args, errmsg);

    if (rv != 0 && a.has_acks && a.acks == 0) {
        /* The client waits for no reply, even to a malformed request. */
        kappa_log(KAPPA_LOG_DEBUG, COMPONENT, "acks=0 request dropped: %s",
                  errmsg);
        return;
    }
    if (rv != 0) {
        conn_reply_error(c, corr, rv, errmsg);
        return;
    }
    req = kappa_malloc(sizeof *req + a.n_parts * sizeof req->parts[0] +
                       a.names_bytes + 1);
    if (req == NULL) {
        conn_reply_error(c, corr, KAPPA_ENOMEM, NULL);
        return;
    }
    req->server = s;
    req->arrival_ns = uv_hrtime();
    req->acks = (int)a.acks;
    req->n_parts = a.n_parts;
    req->n_waiting = 1; /* held until every part is started */
    s->n_reqs++;
    names = (char *)&req->parts[a.n_parts];
    for (uint32_t i = 0; i < a.n_parts; i++) {
        struct produce_part *part = &req->parts[i];
        (void)read_part(&a.parts, &pa, errmsg);
        memcpy(names, pa.topic, pa.topic_len);
        *part = (struct produce_part){.req = req,
                                      .topic = names,
                                      .topic_len = pa.topic_len,
                                      .partition = pa.partition};
        names += pa.topic_len;
        list_init(&part->waiter.link);
        produce_part(req, part, &pa);
    }
    req->base.correlation_id = corr;
    if (--req->n_waiting == 0) {
        /* Every part is done already (acks 0 or 1, or all failed). */
        if (req->acks != 0) {
            reply_parts(c, req);
        }
        free_req(req);
        return;
    }
    conn_req_add(c, &req->base, corr, abandon_cb);
}
