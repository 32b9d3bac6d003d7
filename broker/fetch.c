/* Fetch with long polling.
 *
 * Happy path: the args are checked and copied into one allocation (topic
 * names included, since the read buffer is reused while a fetch is
 * parked). fetch_try builds the reply straight into the connection's output
 * buffer: for each part it reserves room, preads whole batches into it with
 * log_read (records below the high watermark only) and then writes the
 * 5-byte bin32 header in front (0xc6 + big-endian length), so the bytes are
 * copied once, from the page cache into the reply. If the reply holds at
 * least min_bytes of records (or has an error, or max_wait_ms is 0) it is
 * sent; otherwise it is dropped, the request parks on every partition it
 * reads (partition_watch) and on the server's deadline-ordered list, and is
 * retried when one of them gets new durable data, or sent as is when its
 * deadline passes (one uv_timer serves every parked fetch).
 *
 * Failure modes: per-part errors (unknown topic or partition, offset out of
 * range, read errors) are reported in the part and answer the fetch at
 * once. A deleted topic wakes its watchers, which then see
 * EUNKNOWN_TOPIC. If the connection closes, a parked fetch is freed at
 * once. On shutdown every parked fetch is answered with what is there. */
#include <inttypes.h>
#include <string.h>

#include "broker/dispatch.h"
#include "broker/partition.h"
#include "broker/server.h"
#include "broker/topics.h"
#include "common/alloc.h"
#include "common/batch.h"
#include "common/endian.h"
#include "common/err.h"
#include "common/log.h"

#define COMPONENT                    "fetch"
#define FETCH_PART_MAX_BYTES_DEFAULT (1u << 20)
#define FETCH_MAX_BYTES_DEFAULT      (50u << 20)
#define BIN32_HEADER_BYTES           5
/* Segment boundaries crossed by one part of one fetch. */
#define FETCH_SEGMENT_READS_MAX 8

struct fetch_part {
    struct partition_watch watch;
    struct fetch_req *req;
    const char *topic;
    uint32_t topic_len;
    int64_t partition;
    int64_t offset;
    uint64_t max_bytes;
    /* Metrics: what the reply being built holds for this part, counted
     * only when the reply is sent. */
    struct partition *sent_p;
    uint64_t sent_records;
    uint64_t sent_bytes;
};

struct fetch_req {
    struct req base;
    struct server *server;
    struct list park_link; /* in server->parked_fetches */
    uint64_t deadline_ms;
    int64_t max_wait_ms;
    int64_t min_bytes;
    uint64_t max_bytes;
    uint32_t n_parts;
    struct fetch_part parts[];
};

struct fetch_args {
    int64_t max_wait_ms;
    int64_t min_bytes;
    int64_t max_bytes;
    uint32_t n_parts;
    struct mp_reader parts;
    size_t names_bytes;
};

static int read_part(struct mp_reader *r, struct fetch_part *fp, char *errmsg)
{
    const char *key;
    uint32_t n, key_len;
    int64_t max_bytes = FETCH_PART_MAX_BYTES_DEFAULT;
    int has_topic = 0, has_partition = 0, has_offset = 0;
    int rv = args_map(r, "parts", &n, errmsg);

    for (uint32_t i = 0; rv == 0 && i < n; i++) {
        rv = args_key(r, &key, &key_len, errmsg);
        if (rv != 0) {
            break;
        }
        if (mp_key_is(key, key_len, "topic")) {
            rv = args_str(r, "topic", &fp->topic, &fp->topic_len, errmsg);
            has_topic = 1;
        } else if (mp_key_is(key, key_len, "partition")) {
            rv = args_int(r, "partition", INT32_MIN, INT32_MAX, &fp->partition,
                          errmsg);
            has_partition = 1;
        } else if (mp_key_is(key, key_len, "offset")) {
            rv = args_int(r, "offset", INT64_MIN, INT64_MAX, &fp->offset,
                          errmsg);
            has_offset = 1;
        } else if (mp_key_is(key, key_len, "max_bytes") && !args_nil(r)) {
            rv = args_int(r, "max_bytes", 0, INT32_MAX, &max_bytes, errmsg);
        } else if (!mp_key_is(key, key_len, "max_bytes")) {
            (void)mp_skip(r);
        }
    }
    if (rv == 0 && !(has_topic && has_partition && has_offset)) {
        kappa_errmsg_printf(errmsg, "parts: need topic, partition, offset");
        rv = KAPPA_EINVAL;
    }
    fp->max_bytes = (uint64_t)max_bytes;
    return rv;
}

static int read_parts(struct fetch_args *a, struct mp_reader *r, char *errmsg)
{
    struct fetch_part fp = {.partition = 0};
    int rv = args_array(r, "parts", DISPATCH_PARTS_MAX, &a->n_parts, errmsg);
    a->parts = *r;
    for (uint32_t i = 0; rv == 0 && i < a->n_parts; i++) {
        rv = read_part(r, &fp, errmsg);
        a->names_bytes += rv == 0 ? fp.topic_len : 0;
    }
    return rv;
}

static int read_optional_int(struct mp_reader *r, const char *field, int64_t hi,
                             int64_t *v, char *errmsg)
{
    return args_nil(r) ? 0 : args_int(r, field, 0, hi, v, errmsg);
}

static int read_args(struct fetch_args *a, struct mp_reader *r, char *errmsg)
{
    const char *key;
    uint32_t n, key_len;
    int has_parts = 0;
    int rv = args_map(r, "args", &n, errmsg);

    memset(a, 0, sizeof *a);
    a->min_bytes = 1;
    a->max_bytes = FETCH_MAX_BYTES_DEFAULT;
    for (uint32_t i = 0; rv == 0 && i < n; i++) {
        rv = args_key(r, &key, &key_len, errmsg);
        if (rv != 0) {
            break;
        }
        if (mp_key_is(key, key_len, "max_wait_ms")) {
            rv = read_optional_int(r, "max_wait_ms", INT64_MAX, &a->max_wait_ms,
                                   errmsg);
        } else if (mp_key_is(key, key_len, "min_bytes")) {
            rv = read_optional_int(r, "min_bytes", INT64_MAX, &a->min_bytes,
                                   errmsg);
        } else if (mp_key_is(key, key_len, "max_bytes")) {
            rv = read_optional_int(r, "max_bytes", INT64_MAX, &a->max_bytes,
                                   errmsg);
        } else if (mp_key_is(key, key_len, "parts")) {
            rv = read_parts(a, r, errmsg);
            has_parts = 1;
        } else {
            (void)mp_skip(r);
        }
    }
    if (rv == 0 && !has_parts) {
        kappa_errmsg_printf(errmsg, "parts: required");
        rv = KAPPA_EINVAL;
    }
    return rv;
}

/* The offset after the last whole batch in p[0..n). */
static int64_t next_offset_after(const uint8_t *p, size_t n)
{
    struct batch_header h;
    int64_t next = -1;
    size_t pos = 0;
    while (pos < n && batch_header_decode(p + pos, n - pos, &h) == 0 &&
           h.batch_bytes <= n - pos) {
        next = h.base_offset + (int64_t)h.record_count;
        pos += h.batch_bytes;
    }
    return next;
}

/* Records of the non-control batches in p[0..n) (metrics). */
static uint64_t count_records(const uint8_t *p, size_t n)
{
    struct batch_header h;
    uint64_t records = 0;
    size_t pos = 0;
    while (pos < n && batch_header_decode(p + pos, n - pos, &h) == 0 &&
           h.batch_bytes <= n - pos) {
        if ((h.attributes & KAPPA_BATCH_ATTR_CONTROL) == 0) {
            records += h.record_count;
        }
        pos += h.batch_bytes;
    }
    return records;
}

/* The first read of a part: whole batches from offset, the first one whole
 * even when it is larger than the budget. */
static int read_first(struct buf *out, struct partition *p, int64_t offset,
                      int64_t hwm, uint64_t budget, size_t *n_read)
{
    uint32_t first_batch_bytes;
    size_t cap = (size_t)budget;
    int rv;
    if (buf_reserve(out, BIN32_HEADER_BYTES + cap) != 0) {
        return KAPPA_ENOMEM;
    }
    rv = log_read(p->log, offset, hwm, (size_t)budget,
                  out->data + out->len + BIN32_HEADER_BYTES, cap, n_read);
    if (rv != KAPPA_ETOOBIG) {
        return rv;
    }
    /* The first batch is larger than the budget: it is sent whole anyway,
     * so a consumer never gets stuck behind it. */
    rv = log_batch_bytes_at(p->log, offset, &first_batch_bytes);
    if (rv != 0) {
        return rv;
    }
    cap = first_batch_bytes;
    if (buf_reserve(out, BIN32_HEADER_BYTES + cap) != 0) {
        return KAPPA_ENOMEM;
    }
    return log_read(p->log, offset, hwm, cap,
                    out->data + out->len + BIN32_HEADER_BYTES, cap, n_read);
}

/* Reads records for one part into out (after room for a bin32 header).
 * A log read stops at a segment end, so reading continues from the next
 * offset until the budget or the high watermark is reached. Returns the
 * part's error; *n_read gets the record bytes written. */
static int read_records(struct buf *out, struct partition *p, int64_t offset,
                        int64_t hwm, uint64_t budget, size_t *n_read)
{
    uint8_t *dst;
    size_t got;
    int64_t next;
    int rv;

    *n_read = 0;
    if (offset >= hwm) {
        return 0;
    }
    rv = read_first(out, p, offset, hwm, budget, n_read);
    dst = out->data + out->len + BIN32_HEADER_BYTES;
    for (int i = 0; rv == 0 && i < FETCH_SEGMENT_READS_MAX; i++) {
        if (*n_read == 0 || *n_read >= budget) {
            break;
        }
        next = next_offset_after(dst, *n_read);
        if (next < 0 || next >= hwm) {
            break;
        }
        /* Room for the whole budget was reserved by read_first. */
        got = 0;
        if (log_read(p->log, next, hwm, (size_t)budget - *n_read, dst + *n_read,
                     (size_t)budget - *n_read, &got) != 0 ||
            got == 0) {
            break; /* a batch that does not fit waits for the next fetch */
        }
        *n_read += got;
    }
    return rv;
}

static void put_records(struct buf *out, size_t n_read)
{
    /* Room was reserved by read_records (or n_read is 0). */
    if (buf_reserve(out, BIN32_HEADER_BYTES) != 0) {
        return;
    }
    out->data[out->len] = 0xc6;
    be32_put(out->data + out->len + 1, (uint32_t)n_read);
    out->len += BIN32_HEADER_BYTES + n_read;
}

/* Writes one part's entry. Keys are written in an order that lets the
 * records go in before the error code is known. */
static int put_part(struct mp_writer *w, struct fetch_req *req,
                    struct fetch_part *fp, uint64_t *budget, uint64_t *total)
{
    struct server *s = req->server;
    struct partition *p;
    size_t n_read = 0;
    int64_t hwm = -1, start = -1;
    int err = 0;

    p = server_partition(s, fp->topic, fp->topic_len, fp->partition, &err,
                         NULL);
    if (p != NULL) {
        hwm = partition_high_watermark(p);
        start = log_start_offset(p->log);
        if (fp->offset < start || fp->offset > hwm) {
            err = KAPPA_EOFFSET_RANGE;
        }
    }
    mp_put_map(w, 6);
    mp_put_str(w, "topic");
    mp_put_strn(w, fp->topic, fp->topic_len);
    mp_put_str(w, "partition");
    mp_put_int(w, fp->partition);
    mp_put_str(w, "high_watermark");
    mp_put_int(w, hwm);
    mp_put_str(w, "log_start");
    mp_put_int(w, start);
    mp_put_str(w, "records");
    if (p != NULL && err == 0 && *budget > 0 && w->err == 0) {
        uint64_t part_budget =
            fp->max_bytes < *budget ? fp->max_bytes : *budget;
        err = read_records(w->out, p, fp->offset, hwm, part_budget, &n_read);
        if (err != 0) {
            n_read = 0;
        }
    }
    put_records(w->out, n_read);
    fp->sent_p = p;
    fp->sent_bytes = n_read;
    fp->sent_records =
        n_read > 0 && w->out->len >= n_read
            ? count_records(w->out->data + w->out->len - n_read, n_read)
            : 0;
    *total += n_read;
    *budget -= n_read < *budget ? n_read : *budget;
    mp_put_str(w, "error");
    mp_put_int(w, err);
    return err;
}

static void park_remove(struct fetch_req *req)
{
    list_remove(&req->park_link);
    for (uint32_t i = 0; i < req->n_parts; i++) {
        partition_unwatch(&req->parts[i].watch);
    }
}

static void fetch_free(struct fetch_req *req)
{
    struct server *s = req->server;
    park_remove(req);
    s->n_reqs--;
    kappa_free(req);
    server_poke(s);
}

static void abandon_cb(struct req *r)
{
    fetch_free((struct fetch_req *)(void *)r);
}

/* Adds what a sent reply held to each partition's counters. The
 * partitions were resolved during this same build_reply call. */
static void count_sent(struct fetch_req *req)
{
    for (uint32_t i = 0; i < req->n_parts; i++) {
        struct fetch_part *fp = &req->parts[i];
        if (fp->sent_p != NULL) {
            fp->sent_p->stats.fetch_records += fp->sent_records;
            fp->sent_p->stats.fetch_bytes += fp->sent_bytes;
        }
    }
}

/* Builds the reply; sends it when force, on any error or with min_bytes of
 * records, else drops it. Returns 1 when sent (the caller frees). */
static int build_reply(struct conn *c, struct fetch_req *req, int force)
{
    struct reply r;
    uint64_t budget = req->max_bytes;
    uint64_t total = 0;
    int any_error = 0;

    reply_begin(&r, c, req->base.correlation_id);
    mp_put_map(&r.w, 1);
    mp_put_str(&r.w, "parts");
    mp_put_array(&r.w, req->n_parts);
    for (uint32_t i = 0; i < req->n_parts; i++) {
        any_error |= put_part(&r.w, req, &req->parts[i], &budget, &total);
    }
    if (force || any_error || r.w.err != 0 ||
        total >= (uint64_t)req->min_bytes) {
        reply_end(&r);
        count_sent(req);
        return 1;
    }
    reply_abort(&r);
    return 0;
}

/* Tries to answer; returns 1 when the request was answered and freed. The
 * request is off the connection's list while the reply is built, so an
 * out-of-memory close cannot free it underneath. */
static int fetch_try(struct fetch_req *req, int force)
{
    struct conn *c = req->base.conn;
    uint32_t corr = req->base.correlation_id;
    if (c == NULL) {
        fetch_free(req);
        return 1;
    }
    conn_req_done(&req->base);
    req->base.conn = NULL;
    if (build_reply(c, req, force) || c->state == CONN_CLOSING) {
        fetch_free(req);
        return 1;
    }
    conn_req_add(c, &req->base, corr, abandon_cb);
    return 0;
}

static void timer_cb(uv_timer_t *t);

static void arm_timer(struct server *s)
{
    struct fetch_req *head;
    uint64_t now = server_now_ms(s);
    if (list_is_empty(&s->parked_fetches)) {
        uv_timer_stop(&s->fetch_timer);
        return;
    }
    head = list_entry(s->parked_fetches.next, struct fetch_req, park_link);
    uv_timer_start(&s->fetch_timer, timer_cb,
                   head->deadline_ms > now ? head->deadline_ms - now : 0, 0);
}

static void timer_cb(uv_timer_t *t)
{
    struct server *s = t->data;
    uint64_t now = server_now_ms(s);
    while (!list_is_empty(&s->parked_fetches)) {
        struct fetch_req *req =
            list_entry(s->parked_fetches.next, struct fetch_req, park_link);
        if (req->deadline_ms > now) {
            break;
        }
        list_remove(&req->park_link);
        (void)fetch_try(req, 1);
    }
    arm_timer(s);
}

static void watch_cb(struct partition_watch *w)
{
    struct fetch_part *fp = (struct fetch_part *)(void *)w;
    (void)fetch_try(fp->req, 0);
}

/* Parks on the deadline list (kept ordered; most fetches share one
 * max_wait_ms, so the scan from the tail is short) and on each partition. */
static void park(struct fetch_req *req)
{
    struct server *s = req->server;
    struct list *pos = s->parked_fetches.prev;
    int err;

    req->deadline_ms = server_now_ms(s) + (uint64_t)req->max_wait_ms;
    while (pos != &s->parked_fetches &&
           list_entry(pos, struct fetch_req, park_link)->deadline_ms >
               req->deadline_ms) {
        pos = pos->prev;
    }
    list_push_back(pos->next, &req->park_link);
    for (uint32_t i = 0; i < req->n_parts; i++) {
        struct fetch_part *fp = &req->parts[i];
        struct partition *p = server_partition(s, fp->topic, fp->topic_len,
                                               fp->partition, &err, NULL);
        if (p != NULL) {
            partition_watch(p, &fp->watch, watch_cb);
        }
    }
    if (s->parked_fetches.next == &req->park_link) {
        arm_timer(s);
    }
}

static struct fetch_req *new_req(struct server *s, const struct fetch_args *a)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct mp_reader parts = a->parts;
    struct fetch_req *req;
    char *names;
    uint64_t cap = s->cfg->frame_max_bytes - CONFIG_FRAME_OVERHEAD_BYTES;

    req = kappa_malloc(sizeof *req + a->n_parts * sizeof req->parts[0] +
                       a->names_bytes + 1);
    if (req == NULL) {
        return NULL;
    }
    req->server = s;
    list_init(&req->park_link);
    list_init(&req->base.link);
    req->base.conn = NULL;
    req->max_wait_ms = a->max_wait_ms < s->cfg->fetch_max_wait_ms
                           ? a->max_wait_ms
                           : s->cfg->fetch_max_wait_ms;
    req->min_bytes = a->min_bytes;
    /* Replies must fit in a frame a client accepts. */
    req->max_bytes =
        (uint64_t)a->max_bytes < cap ? (uint64_t)a->max_bytes : cap;
    req->n_parts = a->n_parts;
    names = (char *)&req->parts[a->n_parts];
    for (uint32_t i = 0; i < a->n_parts; i++) {
        struct fetch_part *fp = &req->parts[i];
        (void)read_part(&parts, fp, errmsg);
        memcpy(names, fp->topic, fp->topic_len);
        fp->topic = names;
        names += fp->topic_len;
        fp->req = req;
        list_init(&fp->watch.link);
    }
    s->n_reqs++;
    return req;
}

void api_fetch(struct conn *c, uint32_t corr, struct mp_reader *args)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct server *s = c->server;
    struct fetch_args a;
    struct fetch_req *req;
    int rv = read_args(&a, args, errmsg);

    if (rv != 0) {
        conn_reply_error(c, corr, rv, errmsg);
        return;
    }
    req = new_req(s, &a);
    if (req == NULL) {
        conn_reply_error(c, corr, KAPPA_ENOMEM, NULL);
        return;
    }
    req->base.correlation_id = corr;
    if (build_reply(c, req, req->max_wait_ms == 0)) {
        fetch_free(req);
        return;
    }
    if (c->state == CONN_CLOSING) {
        fetch_free(req);
        return;
    }
    conn_req_add(c, &req->base, corr, abandon_cb);
    park(req);
}

void fetch_answer_all(struct server *s)
{
    while (!list_is_empty(&s->parked_fetches)) {
        struct fetch_req *req =
            list_entry(s->parked_fetches.next, struct fetch_req, park_link);
        list_remove(&req->park_link);
        (void)fetch_try(req, 1);
    }
    uv_timer_stop(&s->fetch_timer);
}
