/* The producer: records are copied once into a per-partition batch
 * (common/batch.c), batches are sealed when full or after linger.ms, and
 * ready batches of every partition led by the same broker travel together
 * in one Produce request, with up to max.in.flight requests per broker.
 *
 * Happy path: kappa_produce picks the partition (murmur2 of the key, as
 * Kafka's default partitioner, or a sticky partition per batch for keyless
 * records), appends to the open batch and seals it when it reaches
 * batch.size, sending at once when a request slot is free. The Produce
 * request is written with scatter I/O: envelope pieces from one buffer and
 * the batches' own buffers, so batch bytes are never copied again. The
 * answer gives each part's base offset; delivery reports then run per
 * record, in produce order per partition, because a partition's batches
 * leave its queue only from the head and only once finished.
 *
 * Failure modes: a retriable error (transport, timeout, not leader, ...)
 * puts the batch back to READY with exponential backoff (retry.backoff.ms
 * doubled per attempt) up to `retries` times, and asks for fresh metadata;
 * other errors, exhausted retries and message.timeout.ms fail the batch's
 * records. Without idempotence (next milestone) a retry after a lost
 * response may write the batch twice, and with max.in.flight > 1 a retried
 * batch may land after a later one; reports still arrive in produce order.
 * Memory is bounded by queue.buffering.max.bytes (KAPPA_EBUSY). */
#include <string.h>

#include "client_int.h"
#include "common/alloc.h"
#include "common/assert.h"
#include "common/endian.h"

/* Per-record overhead bound inside a batch: length, attributes, timestamp
 * and offset deltas, key/value lengths and header count as varints. */
#define RECORD_OVERHEAD_MAX 36
#define HEADER_OVERHEAD_MAX 15
#define RECORD_HEADERS_MAX  64
#define BACKOFF_SHIFT_MAX   10

enum pbatch_state {
    PBATCH_OPEN = 0,
    PBATCH_READY,
    PBATCH_IN_FLIGHT,
    PBATCH_DONE,
};

struct pbatch {
    struct pbatch *next; /* in the partition's queue or the pool */
    struct pbatch *open_prev, *open_next;
    struct kpart *part;
    struct batch_builder b;
    void **opaques; /* one per record, reused with the batch */
    uint32_t opaques_cap;
    uint32_t n_records;
    size_t bytes; /* accounted in c->outq_bytes */
    uint64_t created_ms;
    uint64_t retry_at_ms;
    int attempts;
    enum pbatch_state state;
    int err;
    int64_t base_offset;
};

/* One part of a Produce request: consecutive batches of one partition. */
struct preq_part {
    struct kpart *p;
    struct pbatch *first;
    uint32_t n_batches;
    size_t bytes;
    size_t head_end; /* end of this part's envelope piece in req->head */
};

struct preq {
    uint32_t n_parts;
    struct preq_part parts[];
};

/* ---- Partitioner -------------------------------------------------------- */

/* Kafka's murmur2 (seed 0x9747b28c), as in its Utils.murmur2, so keyed
 * records land on the same partition as with Kafka clients. */
static uint32_t murmur2(const uint8_t *data, size_t len)
{
    const uint32_t m = 0x5bd1e995;
    uint32_t h = 0x9747b28c ^ (uint32_t)len;
    size_t n4 = len / 4;
    for (size_t i = 0; i < n4; i++) {
        uint32_t k = le32_get(data + 4 * i);
        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    const uint8_t *tail = data + 4 * n4;
    switch (len & 3) {
    case 3:
        h ^= (uint32_t)tail[2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)tail[1] << 8;
        /* fall through */
    case 1:
        h ^= tail[0];
        h *= m;
        break;
    default:
        break;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

static uint32_t rng_next(struct kappa_client *c)
{
    uint32_t x = c->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    c->rng = x;
    return x;
}

static int32_t pick_partition(struct kappa_client *c, struct ktopic *t,
                              const struct kappa_msg *m)
{
    if (m->key != NULL) {
        return (int32_t)((murmur2(m->key, m->key_len) & 0x7fffffff) %
                         (uint32_t)t->n_parts);
    }
    if (t->sticky < 0 || t->sticky >= t->n_parts) {
        t->sticky = (int32_t)(rng_next(c) % (uint32_t)t->n_parts);
    }
    return t->sticky;
}

/* ---- Batches ------------------------------------------------------------ */

/* Memory a batch holds, for the pool's limit. */
static size_t batch_mem(const struct pbatch *b)
{
    return b->b.buf.cap + b->b.spare.cap +
           (size_t)b->opaques_cap * sizeof *b->opaques;
}

static void batch_destroy(struct pbatch *b)
{
    batch_builder_free(&b->b);
    kappa_free(b->opaques);
    kappa_free(b);
}

/* Opaque slots a new batch starts with: one per 64 bytes of batch.size, so
 * records of 64 B or more (framing included) never grow the array. */
static uint32_t opaques_initial(const struct kappa_client *c)
{
    size_t n = c->conf.batch_bytes / 64;
    return n < 1024 ? 1024 : (uint32_t)n; /* batch.size <= 64 MiB */
}

/* Sizes a batch taken from the pool or newly made: the buffer to batch.size
 * and the opaques to opaques_initial, so records never grow them in the
 * common case (a full batch is at most batch.size bytes). */
static int batch_presize(struct kappa_client *c, struct pbatch *b)
{
    uint32_t n = opaques_initial(c);
    if (buf_reserve(&b->b.buf, c->conf.batch_bytes) != 0) {
        return KAPPA_ENOMEM;
    }
    if (b->opaques_cap < n) {
        void **a = kappa_realloc(b->opaques, n * sizeof *a);
        if (a == NULL) {
            return KAPPA_ENOMEM;
        }
        b->opaques = a;
        b->opaques_cap = n;
    }
    return 0;
}

static struct pbatch *batch_get(struct kappa_client *c, struct kpart *p)
{
    struct pbatch *b = c->batch_pool;
    if (b != NULL) {
        c->batch_pool = b->next;
        c->n_batch_pool--;
        c->batch_pool_bytes -= batch_mem(b);
        if (c->n_batch_pool < c->batch_pool_low) {
            c->batch_pool_low = c->n_batch_pool;
        }
    } else {
        b = kappa_calloc(1, sizeof *b);
        if (b == NULL) {
            return NULL;
        }
        batch_builder_init(&b->b);
    }
    batch_builder_reset(&b->b);
    if (batch_presize(c, b) != 0) {
        batch_destroy(b);
        return NULL;
    }
    b->next = b->open_prev = b->open_next = NULL;
    b->part = p;
    b->n_records = 0;
    b->bytes = 0;
    b->created_ms = client_now_ms();
    b->retry_at_ms = 0;
    b->attempts = 0;
    b->state = PBATCH_OPEN;
    b->err = 0;
    b->base_offset = -1;
    return b;
}

/* Keeps a finished batch for reuse, within the pool's limits. The pool
 * only holds batches that were in use at the same time, so it never holds
 * more memory than the queue's peak. */
static void batch_put(struct kappa_client *c, struct pbatch *b)
{
    size_t mem = batch_mem(b);
    if (c->is_closing || c->n_batch_pool >= KCLIENT_BATCH_POOL_MAX ||
        c->batch_pool_bytes + mem > c->conf.queue_max_bytes) {
        batch_destroy(b);
        return;
    }
    b->next = c->batch_pool;
    c->batch_pool = b;
    c->n_batch_pool++;
    c->batch_pool_bytes += mem;
}

/* Frees the batches nobody took out of the pool since the last trim: the
 * pool never went below batch_pool_low, so that many sat idle. */
static void batch_pool_trim(struct kappa_client *c, uint64_t now)
{
    if (now < c->batch_pool_trim_ms) {
        return;
    }
    KAPPA_ASSERT(c->batch_pool_low <= c->n_batch_pool);
    for (unsigned n = c->batch_pool_low; n > 0; n--) {
        struct pbatch *b = c->batch_pool;
        c->batch_pool = b->next;
        c->n_batch_pool--;
        c->batch_pool_bytes -= batch_mem(b);
        batch_destroy(b);
    }
    c->batch_pool_low = c->n_batch_pool;
    c->batch_pool_trim_ms = now + KCLIENT_BATCH_POOL_TRIM_MS;
}

static void open_list_remove(struct kappa_client *c, struct pbatch *b)
{
    if (b->open_prev != NULL) {
        b->open_prev->open_next = b->open_next;
    } else {
        c->open_head = b->open_next;
    }
    if (b->open_next != NULL) {
        b->open_next->open_prev = b->open_prev;
    } else {
        c->open_tail = b->open_prev;
    }
    b->open_prev = b->open_next = NULL;
}

static void open_list_push(struct kappa_client *c, struct pbatch *b)
{
    b->open_prev = c->open_tail;
    b->open_next = NULL;
    if (c->open_tail != NULL) {
        c->open_tail->open_next = b;
    } else {
        c->open_head = b;
    }
    c->open_tail = b;
}

static void ready_list_add(struct kappa_client *c, struct kpart *p)
{
    if (!p->is_ready_listed) {
        p->is_ready_listed = 1;
        p->ready_next = c->ready_parts;
        c->ready_parts = p;
    }
}

static void done_list_add(struct kappa_client *c, struct kpart *p)
{
    if (!p->is_done_listed) {
        p->is_done_listed = 1;
        p->done_next = c->done_parts;
        c->done_parts = p;
    }
}

static void batch_finish(struct kappa_client *c, struct pbatch *b, int err,
                         int64_t base_offset)
{
    b->state = PBATCH_DONE;
    b->err = err;
    b->base_offset = base_offset;
    if (b == b->part->q_head) {
        done_list_add(c, b->part);
    }
}

/* Seals the open batch of p and queues it for sending. */
static void part_seal(struct kappa_client *c, struct kpart *p)
{
    struct pbatch *b = p->open;
    int rv;
    if (b == NULL) {
        return;
    }
    p->open = NULL;
    open_list_remove(c, b);
    if (p->t->sticky == p->id && p->t->n_parts > 1) {
        p->t->sticky = (p->id + 1) % p->t->n_parts;
    }
    if (p->q_tail != NULL) {
        p->q_tail->next = b;
    } else {
        p->q_head = b;
    }
    p->q_tail = b;
    rv = batch_builder_finish(&b->b, c->conf.compression, -1, -1, -1);
    if (rv != 0) {
        batch_finish(c, b, rv, -1);
        return;
    }
    b->state = PBATCH_READY;
    ready_list_add(c, p);
}

static int opaques_reserve(struct pbatch *b)
{
    void **a;
    uint32_t cap;
    if (b->n_records < b->opaques_cap) {
        return 0;
    }
    cap = b->opaques_cap == 0 ? 1024 : b->opaques_cap * 2;
    a = kappa_realloc(b->opaques, cap * sizeof *a);
    if (a == NULL) {
        return KAPPA_ENOMEM;
    }
    b->opaques = a;
    b->opaques_cap = cap;
    return 0;
}

/* ---- kappa_produce ------------------------------------------------------ */

static int convert_headers(const struct kappa_msg *m, struct record_header *h,
                           size_t *bytes)
{
    *bytes = 0;
    if (m->n_headers > RECORD_HEADERS_MAX ||
        (m->n_headers > 0 && m->headers == NULL)) {
        return KAPPA_EINVAL;
    }
    for (size_t i = 0; i < m->n_headers; i++) {
        const struct kappa_header *in = &m->headers[i];
        if (in->key == NULL || in->value_len > UINT32_MAX) {
            return KAPPA_EINVAL;
        }
        h[i].key = (const uint8_t *)in->key;
        h[i].key_len = (uint32_t)strlen(in->key);
        h[i].value = in->value;
        h[i].value_len = in->value != NULL ? (uint32_t)in->value_len : 0;
        *bytes += h[i].key_len + h[i].value_len + HEADER_OVERHEAD_MAX;
    }
    return 0;
}

static int produce_check(struct kappa_client *c, const struct kappa_msg *m)
{
    if (m == NULL || m->topic == NULL) {
        return client_error(c, KAPPA_EINVAL, "produce: no topic");
    }
    if ((m->key == NULL && m->key_len != 0) ||
        (m->value == NULL && m->value_len != 0) || m->key_len > UINT32_MAX ||
        m->value_len > UINT32_MAX) {
        return client_error(c, KAPPA_EINVAL, "produce %s: bad key or value",
                            m->topic);
    }
    return 0;
}

/* Appends m to the open batch of p; *est is the bytes it may take. */
static int part_append(struct kappa_client *c, struct kpart *p,
                       const struct kappa_msg *m,
                       const struct record_header *hdrs, size_t est)
{
    struct pbatch *b = p->open;
    int64_t ts = m->timestamp_ms != 0 ? m->timestamp_ms : client_record_ms(c);
    int rv;

    if (b != NULL && batch_builder_bytes(&b->b) + est > c->conf.batch_bytes) {
        part_seal(c, p);
        producer_send(c);
        b = NULL;
    }
    if (b == NULL) {
        b = batch_get(c, p);
        if (b == NULL) {
            return KAPPA_ENOMEM;
        }
        p->open = b;
        open_list_push(c, b);
        client_linger_arm(c, (uint64_t)c->conf.linger_ms);
    }
    if (opaques_reserve(b) != 0) {
        return KAPPA_ENOMEM;
    }
    rv = batch_builder_add(&b->b, m->key, (uint32_t)m->key_len, m->value,
                           (uint32_t)m->value_len, hdrs, (uint32_t)m->n_headers,
                           ts);
    if (rv != 0) {
        return rv;
    }
    b->opaques[b->n_records++] = m->opaque;
    b->bytes += est;
    c->outq_bytes += est;
    c->outq_records++;
    return 0;
}

/* Whether s is t's name (name_len bytes long). Inline and stopping at the
 * first difference, so it never reads past the end of s: a pointer compare
 * would not do, since an application may reuse a buffer for another name. */
static int topic_name_is(const struct ktopic *t, size_t name_len, const char *s)
{
    for (size_t i = 0; i < name_len; i++) {
        if (s[i] != t->name[i]) {
            return 0;
        }
    }
    return s[name_len] == '\0';
}

static int produce_one(struct kappa_client *c, const struct kappa_msg *m,
                       struct kpart **out)
{
    struct record_header hdrs[RECORD_HEADERS_MAX];
    struct ktopic *t = c->produce_topic;
    size_t hdr_bytes, est;
    int32_t part;
    int rv;

    client_begin(c);
    if ((rv = produce_check(c, m)) != 0) {
        return rv;
    }
    if (t == NULL || !t->is_known ||
        !topic_name_is(t, c->produce_topic_len, m->topic)) {
        rv = metadata_topic_get(c, m->topic, &t);
        if (rv != 0) {
            return client_error(c, rv, "produce %.64s", m->topic);
        }
        c->produce_topic = t;
        c->produce_topic_len = strlen(t->name);
    }
    if (convert_headers(m, hdrs, &hdr_bytes) != 0) {
        return client_error(c, KAPPA_EINVAL, "produce %s: bad headers",
                            m->topic);
    }
    est = m->key_len + m->value_len + hdr_bytes + RECORD_OVERHEAD_MAX;
    if (est + KAPPA_BATCH_HEADER_BYTES > c->conf.batch_bytes) {
        return client_error(c, KAPPA_ETOOBIG,
                            "produce %s: record of %zu bytes over batch.size",
                            m->topic, est);
    }
    if (c->outq_bytes + est > c->conf.queue_max_bytes) {
        return client_error(c, KAPPA_EBUSY, "produce %s: queue full", m->topic);
    }
    part = m->partition == KAPPA_PARTITION_ANY ? pick_partition(c, t, m)
                                               : m->partition;
    if (part < 0 || part >= t->n_parts) {
        return client_error(c, KAPPA_EBAD_PARTITION, "produce %s/%d", m->topic,
                            part);
    }
    rv = part_append(c, t->parts[part], m, hdrs, est);
    if (rv != 0) {
        return client_error(c, rv, "produce %s/%d", m->topic, part);
    }
    if (batch_builder_bytes(&t->parts[part]->open->b) >= c->conf.batch_bytes) {
        part_seal(c, t->parts[part]);
        producer_send(c);
    }
    *out = t->parts[part];
    return 0;
}

int kappa_produce(struct kappa_client *c, const struct kappa_msg *m)
{
    struct kpart *p = NULL;
    return produce_one(c, m, &p);
}

void kappa_set_delivery_cb(struct kappa_client *c, kappa_delivery_cb cb,
                           void *arg)
{
    c->delivery_cb = cb;
    c->delivery_arg = arg;
}

size_t kappa_outq_len(const struct kappa_client *c)
{
    return c->outq_records;
}

/* ---- Sending ------------------------------------------------------------ */

/* Finds the run of READY batches of p that may go now. */
static int part_sendable(struct kpart *p, uint64_t now, size_t room,
                         struct preq_part *out)
{
    struct pbatch *b = p->q_head;
    while (b != NULL && b->state != PBATCH_READY) {
        b = b->next;
    }
    if (b == NULL || b->retry_at_ms > now) {
        return 0;
    }
    out->p = p;
    out->first = b;
    out->n_batches = 0;
    out->bytes = 0;
    while (b != NULL && b->state == PBATCH_READY && b->retry_at_ms <= now &&
           (out->n_batches == 0 || out->bytes + b->b.buf.len <= room)) {
        out->n_batches++;
        out->bytes += b->b.buf.len;
        b = b->next;
    }
    return 1;
}

static int part_has_ready(const struct kpart *p)
{
    for (struct pbatch *b = p->q_head; b != NULL; b = b->next) {
        if (b->state == PBATCH_READY) {
            return 1;
        }
    }
    return 0;
}

/* Collects the parts for one request to conn, at most max_parts. */
static uint32_t collect_parts(struct kappa_client *c, struct kconn *conn,
                              struct preq_part *parts, uint32_t max_parts)
{
    uint64_t now = client_now_ms();
    size_t total = 0;
    uint32_t n = 0;
    for (struct kpart *p = c->ready_parts; p != NULL && n < max_parts;
         p = p->ready_next) {
        if (total >= KCLIENT_PRODUCE_REQUEST_BYTES_MAX ||
            metadata_leader_conn(c, p) != conn) {
            continue;
        }
        if (part_sendable(p, now, KCLIENT_PRODUCE_REQUEST_BYTES_MAX - total,
                          &parts[n])) {
            total += parts[n].bytes;
            n++;
        }
    }
    return n;
}

static void on_produce(struct kreq *req, int rv, struct kresp *resp);

/* Writes the request envelope; the batches follow as their own iovecs. */
static void encode_produce(struct kappa_client *c, struct kreq *req,
                           struct preq *pr)
{
    mp_put_map(&req->w, 3);
    mp_put_str(&req->w, "acks");
    mp_put_int(&req->w, c->conf.acks);
    mp_put_str(&req->w, "timeout_ms");
    mp_put_int(&req->w, c->conf.request_timeout_ms);
    mp_put_str(&req->w, "parts");
    mp_put_array(&req->w, pr->n_parts);
    for (uint32_t i = 0; i < pr->n_parts; i++) {
        struct preq_part *pp = &pr->parts[i];
        mp_put_map(&req->w, 3);
        mp_put_str(&req->w, "topic");
        mp_put_str(&req->w, pp->p->t->name);
        mp_put_str(&req->w, "partition");
        mp_put_int(&req->w, pp->p->id);
        mp_put_str(&req->w, "records");
        mp_put_bin_header(&req->w, pp->bytes);
        pp->head_end = req->head.len;
    }
}

static int build_iov(struct kreq *req, struct preq *pr)
{
    size_t n_iov = 0, start = 0, total = 0;
    for (uint32_t i = 0; i < pr->n_parts; i++) {
        n_iov += 1 + pr->parts[i].n_batches;
    }
    req->iov = kappa_malloc(n_iov * sizeof *req->iov);
    if (req->iov == NULL) {
        return KAPPA_ENOMEM;
    }
    for (uint32_t i = 0; i < pr->n_parts; i++) {
        struct preq_part *pp = &pr->parts[i];
        struct pbatch *b = pp->first;
        req->iov[req->n_iov++] = uv_buf_init((char *)req->head.data + start,
                                             (unsigned)(pp->head_end - start));
        total += pp->head_end - start;
        start = pp->head_end;
        for (uint32_t j = 0; j < pp->n_batches; j++, b = b->next) {
            req->iov[req->n_iov++] =
                uv_buf_init((char *)b->b.buf.data, (unsigned)b->b.buf.len);
            total += b->b.buf.len;
        }
    }
    be32_put(req->head.data, (uint32_t)(total - WIRE_FRAME_HEADER_BYTES));
    return 0;
}

static void mark_in_flight(struct kappa_client *c, struct preq *pr)
{
    for (uint32_t i = 0; i < pr->n_parts; i++) {
        struct pbatch *b = pr->parts[i].first;
        for (uint32_t j = 0; j < pr->parts[i].n_batches; j++, b = b->next) {
            b->state = PBATCH_IN_FLIGHT;
            b->attempts++;
        }
    }
    (void)c;
}

/* Drops partitions without READY batches from the ready list. */
static void ready_list_prune(struct kappa_client *c)
{
    struct kpart **pp = &c->ready_parts;
    while (*pp != NULL) {
        struct kpart *p = *pp;
        if (!part_has_ready(p)) {
            *pp = p->ready_next;
            p->ready_next = NULL;
            p->is_ready_listed = 0;
        } else {
            pp = &p->ready_next;
        }
    }
}

/* Sends one request to conn; returns 1 if one went out. */
static int send_one(struct kappa_client *c, struct kconn *conn,
                    uint32_t max_parts)
{
    struct preq *pr;
    struct kreq *req;
    pr = kappa_malloc(sizeof *pr + max_parts * sizeof pr->parts[0]);
    if (pr == NULL) {
        return 0;
    }
    pr->n_parts = collect_parts(c, conn, pr->parts, max_parts);
    if (pr->n_parts == 0) {
        kappa_free(pr);
        return 0;
    }
    req = kreq_new(c, WIRE_API_PRODUCE, on_produce, pr);
    if (req == NULL) {
        kappa_free(pr);
        return 0;
    }
    if (c->conf.acks == 0) {
        req->expects_response = 0;
    }
    encode_produce(c, req, pr);
    if (req->w.err != 0 || build_iov(req, pr) != 0) {
        kreq_discard(req);
        kappa_free(pr);
        return 0;
    }
    mark_in_flight(c, pr);
    if (conn_send(conn, req) != 0) {
        kappa_free(pr); /* unreachable after the w.err check */
        return 0;
    }
    return 1;
}

void producer_send(struct kappa_client *c)
{
    uint32_t n_ready = 0;
    if (c->is_closing || c->ready_parts == NULL) {
        return;
    }
    c->send_pass++;
    for (struct kpart *p = c->ready_parts; p != NULL; p = p->ready_next) {
        n_ready++;
    }
    for (struct kpart *p = c->ready_parts; p != NULL; p = p->ready_next) {
        struct kconn *conn = metadata_leader_conn(c, p);
        if (conn == NULL) {
            metadata_refresh_soon(c);
            continue;
        }
        if (conn->send_pass == c->send_pass) {
            continue; /* all its partitions were considered already */
        }
        conn->send_pass = c->send_pass;
        while (conn->n_produce_in_flight < (unsigned)c->conf.max_in_flight &&
               send_one(c, conn, n_ready)) {
        }
    }
    ready_list_prune(c);
}

/* ---- Answers ------------------------------------------------------------ */

static int is_routing_error(int err)
{
    return err == KAPPA_ENOT_LEADER || err == KAPPA_ETRANSPORT ||
           err == KAPPA_ETIMEDOUT || err == KAPPA_EUNKNOWN_TOPIC;
}

/* Applies one part's outcome to its batches: done, retry or fail. */
static void apply_part(struct kappa_client *c, struct preq_part *pp, int err,
                       int64_t base)
{
    uint64_t now = client_now_ms();
    struct pbatch *b = pp->first;
    if (err != 0 && is_routing_error(err)) {
        metadata_refresh_soon(c);
    }
    for (uint32_t j = 0; j < pp->n_batches; j++, b = b->next) {
        int shift = b->attempts - 1 < BACKOFF_SHIFT_MAX ? b->attempts - 1
                                                        : BACKOFF_SHIFT_MAX;
        if (err == 0) {
            batch_finish(c, b, 0, base);
            base = base >= 0 ? base + b->n_records : -1;
        } else if (kappa_err_is_retriable(err) && !c->is_closing &&
                   b->attempts <= c->conf.retries &&
                   now < b->created_ms + (uint64_t)c->conf.message_timeout_ms) {
            b->state = PBATCH_READY;
            b->retry_at_ms =
                now + ((uint64_t)c->conf.retry_backoff_ms << shift);
            ready_list_add(c, pp->p);
        } else {
            batch_finish(c, b, err, -1);
        }
    }
}

static int read_part_result(struct mp_reader *r, const struct preq_part *pp,
                            int64_t *err, int64_t *base)
{
    uint32_t n;
    *err = KAPPA_EPROTO;
    *base = -1;
    if (mp_read_map(r, &n) != 0) {
        return KAPPA_EPROTO;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kl;
        int rv;
        int64_t v;
        if (mp_read_str(r, &k, &kl) != 0) {
            return KAPPA_EPROTO;
        }
        if (mp_key_is(k, kl, "partition")) {
            rv = mp_read_int(r, &v);
            if (rv == 0 && v != pp->p->id) {
                return KAPPA_EPROTO;
            }
        } else if (mp_key_is(k, kl, "error")) {
            rv = mp_read_int_range(r, 0, INT32_MAX, err);
        } else if (mp_key_is(k, kl, "base_offset")) {
            rv = mp_read_int_range(r, -1, INT64_MAX, base);
        } else {
            rv = mp_skip(r);
        }
        if (rv != 0) {
            return KAPPA_EPROTO;
        }
    }
    return 0;
}

/* Reads the "parts" of a Produce answer; parts without an answer fail. */
static void read_produce_result(struct kappa_client *c, struct preq *pr,
                                struct mp_reader *r)
{
    uint32_t n = 0, n_map = 0, done = 0;
    if (mp_read_map(r, &n_map) == 0) {
        for (uint32_t i = 0; i < n_map; i++) {
            const char *k;
            uint32_t kl;
            if (mp_read_str(r, &k, &kl) != 0) {
                break;
            }
            if (!mp_key_is(k, kl, "parts")) {
                if (mp_skip(r) != 0) {
                    break;
                }
                continue;
            }
            if (mp_read_array(r, &n) != 0) {
                break;
            }
            for (; done < n && done < pr->n_parts; done++) {
                int64_t err, base;
                if (read_part_result(r, &pr->parts[done], &err, &base) != 0) {
                    break;
                }
                apply_part(c, &pr->parts[done], (int)err, base);
            }
            break;
        }
    }
    for (; done < pr->n_parts; done++) {
        apply_part(c, &pr->parts[done], KAPPA_EPROTO, -1);
    }
}

static void on_produce(struct kreq *req, int rv, struct kresp *resp)
{
    struct kappa_client *c = req->c;
    struct preq *pr = req->arg;
    if (rv == 0 && resp == NULL) {
        for (uint32_t i = 0; i < pr->n_parts; i++) {
            apply_part(c, &pr->parts[i], 0, -1); /* acks=0: no offsets */
        }
    } else if (rv != 0 || resp->h.error_code != 0) {
        int err = rv != 0 ? rv : resp->h.error_code;
        for (uint32_t i = 0; i < pr->n_parts; i++) {
            apply_part(c, &pr->parts[i], err, -1);
        }
    } else {
        read_produce_result(c, pr, &resp->result);
    }
    kappa_free(pr);
    if (!c->is_closing) {
        producer_deliver(c);
        producer_send(c);
    }
}

/* ---- Delivery ----------------------------------------------------------- */

static void deliver_batch(struct kappa_client *c, struct pbatch *b)
{
    struct kpart *p = b->part;
    struct kappa_delivery d;
    d.topic = p->t->name;
    d.partition = p->id;
    d.err = b->err;
    for (uint32_t i = 0; i < b->n_records; i++) {
        d.offset = b->err != 0 || b->base_offset < 0 ? -1 : b->base_offset + i;
        d.opaque = b->opaques[i];
        if ((char *)d.opaque >= c->sync_markers &&
            (char *)d.opaque < c->sync_markers + sizeof c->sync_markers) {
            if (d.opaque == c->sync_opaque) {
                c->sync_err = d.err;
                c->sync_offset = d.offset;
                c->is_sync_done = 1;
            }
        } else if (c->delivery_cb != NULL) {
            c->delivery_cb(&d, c->delivery_arg);
        }
    }
    c->n_delivered += b->n_records;
    c->outq_records -= b->n_records;
    c->outq_bytes -= b->bytes;
}

/* Pops finished batches from the head of one partition's queue. */
static void part_deliver(struct kappa_client *c, struct kpart *p)
{
    while (p->q_head != NULL && p->q_head->state == PBATCH_DONE) {
        struct pbatch *b = p->q_head;
        p->q_head = b->next;
        if (p->q_head == NULL) {
            p->q_tail = NULL;
        }
        b->next = NULL;
        deliver_batch(c, b);
        batch_put(c, b);
    }
}

void producer_deliver(struct kappa_client *c)
{
    /* A delivery callback may call back into the client (kappa_flush,
     * kappa_poll); the outer call finishes the list. */
    if (c->is_delivering) {
        return;
    }
    c->is_delivering = 1;
    while (c->done_parts != NULL) {
        struct kpart *p = c->done_parts;
        c->done_parts = p->done_next;
        p->done_next = NULL;
        p->is_done_listed = 0;
        part_deliver(c, p);
    }
    c->is_delivering = 0;
}

/* ---- Timers ------------------------------------------------------------- */

static void expire_ready(struct kappa_client *c, uint64_t now)
{
    for (struct kpart *p = c->ready_parts; p != NULL; p = p->ready_next) {
        for (struct pbatch *b = p->q_head; b != NULL; b = b->next) {
            if (b->state == PBATCH_READY &&
                now >= b->created_ms + (uint64_t)c->conf.message_timeout_ms) {
                batch_finish(c, b, KAPPA_ETIMEDOUT, -1);
            }
        }
    }
    /* A timed-out batch behind the head is reported once the head is. */
    for (struct kpart *p = c->ready_parts; p != NULL; p = p->ready_next) {
        if (p->q_head != NULL && p->q_head->state == PBATCH_DONE) {
            done_list_add(c, p);
        }
    }
}

void producer_tick(struct kappa_client *c, uint64_t now)
{
    uint64_t linger = (uint64_t)c->conf.linger_ms;
    if (c->is_closing) {
        return;
    }
    while (c->open_head != NULL && now >= c->open_head->created_ms + linger) {
        part_seal(c, c->open_head->part);
    }
    if (c->open_head != NULL) {
        client_linger_arm(c, c->open_head->created_ms + linger - now);
    }
    batch_pool_trim(c, now);
    expire_ready(c, now);
    producer_send(c);
    producer_deliver(c);
}

/* ---- Flush, sync produce, poll ------------------------------------------ */

static void seal_all(struct kappa_client *c)
{
    while (c->open_head != NULL) {
        part_seal(c, c->open_head->part);
    }
}

static int outq_empty(struct kappa_client *c, void *arg)
{
    (void)arg;
    return c->outq_records == 0;
}

int kappa_flush(struct kappa_client *c, int timeout_ms)
{
    client_begin(c);
    seal_all(c);
    producer_send(c);
    if (client_wait(c, outq_empty, NULL, timeout_ms) != 0) {
        return client_error(c, KAPPA_ETIMEDOUT, "flush: %zu records left",
                            c->outq_records);
    }
    return 0;
}

static int sync_done(struct kappa_client *c, void *arg)
{
    (void)arg;
    return c->is_sync_done;
}

int kappa_produce_sync(struct kappa_client *c, const struct kappa_msg *m,
                       int64_t *offset, int timeout_ms)
{
    struct kappa_msg copy;
    struct kpart *p = NULL;
    void *marker;
    int rv;

    if (m == NULL || c->sync_opaque != NULL) {
        return client_error(c, KAPPA_EINVAL, "produce_sync: %s",
                            m == NULL ? "no message" : "nested call");
    }
    marker = &c->sync_markers[c->sync_seq++ % sizeof c->sync_markers];
    copy = *m;
    copy.opaque = marker;
    rv = produce_one(c, &copy, &p);
    if (rv != 0) {
        return rv;
    }
    c->sync_opaque = marker;
    c->is_sync_done = 0;
    part_seal(c, p);
    producer_send(c);
    rv = client_wait(c, sync_done, NULL, timeout_ms);
    c->sync_opaque = NULL;
    if (rv != 0) {
        /* The record stays queued; its late report is recognised by its
         * marker and dropped. */
        return client_error(c, KAPPA_ETIMEDOUT, "produce %s", m->topic);
    }
    if (offset != NULL) {
        *offset = c->sync_offset;
    }
    if (c->sync_err != 0) {
        return client_error(c, c->sync_err, "produce %s/%d", m->topic, p->id);
    }
    return 0;
}

static int delivered_since(struct kappa_client *c, void *arg)
{
    return c->n_delivered != *(uint64_t *)arg;
}

int kappa_poll(struct kappa_client *c, int timeout_ms)
{
    uint64_t before = c->n_delivered;
    uv_run(&c->loop, UV_RUN_NOWAIT);
    client_clock_expire(c);
    producer_deliver(c);
    if (timeout_ms != 0 && c->n_delivered == before) {
        (void)client_wait(c, delivered_since, &before, timeout_ms);
    }
    return (int)(c->n_delivered - before);
}

/* ---- Shutdown ----------------------------------------------------------- */

static void part_cancel(struct kappa_client *c, struct kpart *p)
{
    if (p->open != NULL) {
        struct pbatch *b = p->open;
        p->open = NULL;
        open_list_remove(c, b);
        if (p->q_tail != NULL) {
            p->q_tail->next = b;
        } else {
            p->q_head = b;
        }
        p->q_tail = b;
    }
    for (struct pbatch *b = p->q_head; b != NULL; b = b->next) {
        if (b->state != PBATCH_DONE) {
            b->state = PBATCH_DONE;
            b->err = KAPPA_ECANCELED;
            b->base_offset = -1;
        }
    }
    part_deliver(c, p);
}

void producer_cancel_all(struct kappa_client *c)
{
    c->is_delivering = 0;
    for (struct ktopic *t = c->topics; t != NULL; t = t->next) {
        for (int32_t i = 0; i < t->n_parts; i++) {
            part_cancel(c, t->parts[i]);
        }
    }
    c->ready_parts = NULL;
    c->done_parts = NULL;
}

void producer_free(struct kappa_client *c)
{
    while (c->batch_pool != NULL) {
        struct pbatch *b = c->batch_pool;
        c->batch_pool = b->next;
        batch_destroy(b);
    }
    c->n_batch_pool = 0;
    c->batch_pool_bytes = 0;
    c->batch_pool_low = 0;
    c->produce_topic = NULL;
}
