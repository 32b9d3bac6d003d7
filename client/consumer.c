/* The consumer: assigned partitions are fetched with one long-polling Fetch
 * in flight per broker (plus at most one more for partitions that become
 * fetchable meanwhile), and kappa_consume hands out records that point
 * straight into the fetch response buffers.
 *
 * Happy path: kappa_assign resolves the start offset (ListOffsets for
 * BEGINNING/END); kappa_consume then sends a Fetch to each leader for all
 * its assigned partitions. The answer's frame is kept without a copy when it
 * filled the connection's receive buffer alone (large answers always do);
 * each part with records becomes a chunk that references the frame. The
 * next fetch (from the offset after the last whole batch received) goes out
 * at once while the application works through the chunks, as long as the
 * partition has less than fetch.partition.max.bytes buffered. kappa_consume
 * verifies each batch's CRC (check.crcs; compressed batches always, as
 * decompression needs it), skips records below the position (a fetch starts
 * with the batch that contains the offset), and retires exhausted chunks
 * at the start of the next call, which is when records it returned expire.
 *
 * Failure modes: transport errors and NOT_LEADER refresh metadata and the
 * partition is fetched again; other per-partition errors (offset out of
 * range, unknown topic, corrupt data, CRC mismatch) become one error record
 * and the partition stops until kappa_seek. A seek bumps the partition's
 * epoch so an answer to a fetch sent before it is ignored. */
#include <string.h>

#include "client_int.h"
#include "common/alloc.h"
#include "common/assert.h"

/* A fetch answer kept alive while chunks point into it. */
struct fframe {
    size_t refs;
    uint8_t *data;
};

struct fchunk {
    struct fchunk *next;
    struct fframe *frame;
    const uint8_t *pos; /* next batch */
    const uint8_t *end;
    size_t bytes;
};

struct freq_part {
    struct kpart *p;
    uint32_t epoch;
};

struct freq {
    uint32_t n_parts;
    struct freq_part parts[];
};

static void frame_unref(struct fframe *f)
{
    if (f != NULL && --f->refs == 0) {
        kappa_free(f->data);
        kappa_free(f);
    }
}

static void retire_chunks(struct kappa_client *c, struct kpart *p)
{
    while (p->chunk_head != NULL) {
        struct fchunk *ch = p->chunk_head;
        p->chunk_head = ch->next;
        p->buffered_bytes -= ch->bytes;
        ch->next = c->retired;
        c->retired = ch;
    }
    p->chunk_tail = NULL;
    p->is_reader_open = 0;
}

static void free_retired(struct kappa_client *c)
{
    while (c->retired != NULL) {
        struct fchunk *ch = c->retired;
        c->retired = ch->next;
        frame_unref(ch->frame);
        kappa_free(ch);
    }
}

/* ---- Fetch -------------------------------------------------------------- */

static int part_wants_fetch(struct kappa_client *c, const struct kpart *p)
{
    return p->is_assigned && !p->is_stopped && !p->fetch_in_flight &&
           p->err_pending == 0 &&
           p->buffered_bytes < (size_t)c->conf.fetch_partition_max_bytes;
}

static void on_fetch(struct kreq *req, int rv, struct kresp *resp);

static void encode_fetch(struct kappa_client *c, struct kreq *req,
                         const struct freq *fr)
{
    mp_put_map(&req->w, 4);
    mp_put_str(&req->w, "max_wait_ms");
    mp_put_int(&req->w, c->conf.fetch_max_wait_ms);
    mp_put_str(&req->w, "min_bytes");
    mp_put_int(&req->w, c->conf.fetch_min_bytes);
    mp_put_str(&req->w, "max_bytes");
    mp_put_int(&req->w, c->conf.fetch_max_bytes);
    mp_put_str(&req->w, "parts");
    mp_put_array(&req->w, fr->n_parts);
    for (uint32_t i = 0; i < fr->n_parts; i++) {
        const struct kpart *p = fr->parts[i].p;
        mp_put_map(&req->w, 4);
        mp_put_str(&req->w, "topic");
        mp_put_str(&req->w, p->t->name);
        mp_put_str(&req->w, "partition");
        mp_put_int(&req->w, p->id);
        mp_put_str(&req->w, "offset");
        mp_put_int(&req->w, p->fetch_pos);
        mp_put_str(&req->w, "max_bytes");
        mp_put_int(&req->w, c->conf.fetch_partition_max_bytes);
    }
    wire_frame_end(&req->head, 0);
}

static void fetch_send(struct kappa_client *c, struct kconn *conn,
                       uint32_t n_assigned)
{
    struct freq *fr;
    struct kreq *req;
    fr = kappa_malloc(sizeof *fr + n_assigned * sizeof fr->parts[0]);
    if (fr == NULL) {
        return;
    }
    fr->n_parts = 0;
    for (struct kpart *p = c->assigned; p != NULL; p = p->assigned_next) {
        if (part_wants_fetch(c, p) && metadata_leader_conn(c, p) == conn) {
            fr->parts[fr->n_parts].p = p;
            fr->parts[fr->n_parts].epoch = p->epoch;
            fr->n_parts++;
        }
    }
    req = kreq_new(c, WIRE_API_FETCH, on_fetch, fr);
    if (req == NULL) {
        kappa_free(fr);
        return;
    }
    /* The broker may hold the request for max_wait_ms before answering. */
    req->deadline_ms += (uint64_t)c->conf.fetch_max_wait_ms;
    encode_fetch(c, req, fr);
    if (conn_send(conn, req) != 0) {
        kappa_free(fr);
        return;
    }
    for (uint32_t i = 0; i < fr->n_parts; i++) {
        fr->parts[i].p->fetch_in_flight = 1;
    }
}

void consumer_kick(struct kappa_client *c)
{
    uint32_t n = 0;
    if (c->is_closing) {
        return;
    }
    for (struct kpart *p = c->assigned; p != NULL; p = p->assigned_next) {
        n++;
    }
    for (struct kpart *p = c->assigned; p != NULL; p = p->assigned_next) {
        struct kconn *conn;
        if (!part_wants_fetch(c, p)) {
            continue;
        }
        conn = metadata_leader_conn(c, p);
        if (conn == NULL) {
            metadata_refresh_soon(c);
            continue;
        }
        if (conn->n_fetch_in_flight < KCLIENT_FETCHES_PER_BROKER_MAX) {
            fetch_send(c, conn, n);
        }
    }
}

/* Walks whole batches; returns the bytes they cover and the offset after
 * the last one. A truncated tail is left out. */
static size_t whole_batches(const uint8_t *p, size_t n, int64_t *next)
{
    size_t pos = 0;
    while (n - pos >= KAPPA_BATCH_HEADER_BYTES) {
        struct batch_header h;
        if (batch_header_decode(p + pos, n - pos, &h) != 0 ||
            h.batch_bytes > n - pos) {
            break;
        }
        *next = h.base_offset + (int64_t)h.record_count;
        pos += h.batch_bytes;
    }
    return pos;
}

static void part_error(struct kappa_client *c, struct kpart *p, int err)
{
    p->err_pending = err;
    p->is_stopped = 1;
    c->has_consumer_news = 1;
}

static int add_chunk(struct kappa_client *c, struct kpart *p, struct fframe *f,
                     const uint8_t *records, uint32_t len)
{
    int64_t next = p->fetch_pos;
    size_t whole = whole_batches(records, len, &next);
    struct fchunk *ch;
    if (whole == 0) {
        return len == 0 ? 0 : KAPPA_ECORRUPT;
    }
    ch = kappa_malloc(sizeof *ch);
    if (ch == NULL) {
        return KAPPA_ENOMEM;
    }
    ch->next = NULL;
    ch->frame = f;
    f->refs++;
    ch->pos = records;
    ch->end = records + whole;
    ch->bytes = whole;
    if (p->chunk_tail != NULL) {
        p->chunk_tail->next = ch;
    } else {
        p->chunk_head = ch;
    }
    p->chunk_tail = ch;
    p->buffered_bytes += whole;
    if (next > p->fetch_pos) {
        p->fetch_pos = next;
    }
    c->has_consumer_news = 1;
    return 0;
}

struct fetch_part_result {
    int64_t partition, err, high_watermark;
    const uint8_t *records;
    uint32_t records_len;
};

static int read_fetch_part(struct mp_reader *r, struct fetch_part_result *o)
{
    uint32_t n;
    memset(o, 0, sizeof *o);
    o->partition = -1;
    o->high_watermark = -1;
    if (mp_read_map(r, &n) != 0) {
        return KAPPA_EPROTO;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kl;
        int rv;
        if (mp_read_str(r, &k, &kl) != 0) {
            return KAPPA_EPROTO;
        }
        if (mp_key_is(k, kl, "partition")) {
            rv = mp_read_int(r, &o->partition);
        } else if (mp_key_is(k, kl, "error")) {
            rv = mp_read_int_range(r, 0, INT32_MAX, &o->err);
        } else if (mp_key_is(k, kl, "high_watermark")) {
            rv = mp_read_int(r, &o->high_watermark);
        } else if (mp_key_is(k, kl, "records") && mp_peek(r) == MP_BIN) {
            rv = mp_read_bin(r, &o->records, &o->records_len);
        } else {
            rv = mp_skip(r);
        }
        if (rv != 0) {
            return KAPPA_EPROTO;
        }
    }
    return 0;
}

/* Applies one part's answer to its partition (unless a seek intervened). */
static void apply_fetch_part(struct kappa_client *c, struct freq_part *fp,
                             struct fframe *f,
                             const struct fetch_part_result *o)
{
    struct kpart *p = fp->p;
    int rv;
    if (p->epoch != fp->epoch || !p->is_assigned) {
        return;
    }
    if (o->high_watermark >= 0) {
        p->high_watermark = o->high_watermark;
    }
    if (o->err != 0) {
        if (o->err == KAPPA_ENOT_LEADER || o->err == KAPPA_ETRANSPORT) {
            metadata_refresh_soon(c);
        } else if (!kappa_err_is_retriable((int)o->err)) {
            part_error(c, p, (int)o->err);
        }
        return;
    }
    rv = add_chunk(c, p, f, o->records, o->records_len);
    if (rv != 0) {
        part_error(c, p, rv);
    }
}

static void fetch_failed(struct kappa_client *c, struct freq *fr, int err)
{
    if (err == KAPPA_ETRANSPORT || err == KAPPA_ENOT_LEADER) {
        metadata_refresh_soon(c);
    }
    if (err == KAPPA_ETRANSPORT || kappa_err_is_retriable(err)) {
        return; /* fetched again at the next kick */
    }
    for (uint32_t i = 0; i < fr->n_parts; i++) {
        if (fr->parts[i].p->epoch == fr->parts[i].epoch) {
            part_error(c, fr->parts[i].p, err);
        }
    }
}

/* Takes the answer's bytes: the whole receive buffer when possible, else a
 * copy of the result. */
static struct fframe *keep_frame(struct kresp *resp)
{
    struct fframe *f = kappa_malloc(sizeof *f);
    if (f == NULL) {
        return NULL;
    }
    f->refs = 1;
    if (resp->frame_is_whole) {
        f->data = buf_steal(resp->frame);
        return f;
    }
    size_t n = (size_t)(resp->result.end - resp->result.p);
    f->data = kappa_malloc(n == 0 ? 1 : n);
    if (f->data == NULL) {
        kappa_free(f);
        return NULL;
    }
    memcpy(f->data, resp->result.p, n);
    mp_reader_init(&resp->result, f->data, n);
    return f;
}

static int read_fetch_result(struct kappa_client *c, struct freq *fr,
                             struct fframe *f, struct mp_reader *r)
{
    uint32_t n_map, n;
    if (mp_read_map(r, &n_map) != 0) {
        return KAPPA_EPROTO;
    }
    for (uint32_t i = 0; i < n_map; i++) {
        const char *k;
        uint32_t kl;
        if (mp_read_str(r, &k, &kl) != 0) {
            return KAPPA_EPROTO;
        }
        if (!mp_key_is(k, kl, "parts")) {
            if (mp_skip(r) != 0) {
                return KAPPA_EPROTO;
            }
            continue;
        }
        if (mp_read_array(r, &n) != 0) {
            return KAPPA_EPROTO;
        }
        for (uint32_t j = 0; j < n; j++) {
            struct fetch_part_result o;
            if (read_fetch_part(r, &o) != 0) {
                return KAPPA_EPROTO;
            }
            if (j < fr->n_parts && o.partition == fr->parts[j].p->id) {
                apply_fetch_part(c, &fr->parts[j], f, &o);
            }
        }
    }
    return 0;
}

static void on_fetch(struct kreq *req, int rv, struct kresp *resp)
{
    struct kappa_client *c = req->c;
    struct freq *fr = req->arg;
    struct fframe *f = NULL;

    for (uint32_t i = 0; i < fr->n_parts; i++) {
        fr->parts[i].p->fetch_in_flight = 0;
    }
    if (rv == 0 && resp->h.error_code != 0) {
        rv = resp->h.error_code;
    }
    if (rv == 0 && (f = keep_frame(resp)) == NULL) {
        rv = KAPPA_ENOMEM;
    }
    if (rv == 0 && read_fetch_result(c, fr, f, &resp->result) != 0) {
        rv = KAPPA_EPROTO;
    }
    if (rv != 0) {
        fetch_failed(c, fr, rv);
    }
    frame_unref(f);
    kappa_free(fr);
    consumer_kick(c);
}

/* ---- kappa_consume ------------------------------------------------------ */

static void fill_record(struct kpart *p, const struct record_view *v,
                        struct kappa_record *r)
{
    r->topic = p->t->name;
    r->partition = p->id;
    r->err = 0;
    r->offset = v->offset;
    r->timestamp_ms = v->timestamp_ms;
    r->key = v->key;
    r->key_len = v->key_len;
    r->value = v->value;
    r->value_len = v->value_len;
    r->n_headers = v->n_headers;
    r->high_watermark = p->high_watermark;
    r->priv_headers = v->headers;
    r->priv_headers_len = v->headers_bytes;
}

static void fill_error(struct kpart *p, int err, struct kappa_record *r)
{
    memset(r, 0, sizeof *r);
    r->topic = p->t->name;
    r->partition = p->id;
    r->err = err;
    r->offset = p->pos;
    r->high_watermark = p->high_watermark;
}

/* Opens the next batch of p at or past its position; returns 1 when the
 * reader is open, 0 when nothing more can be read in this call, or an
 * error. */
static int open_next_batch(struct kappa_client *c, struct kpart *p)
{
    while (p->chunk_head != NULL) {
        struct fchunk *ch = p->chunk_head;
        struct batch_header h;
        size_t left = (size_t)(ch->end - ch->pos);
        int compressed, rv;
        if (left == 0) {
            p->chunk_head = ch->next;
            if (p->chunk_head == NULL) {
                p->chunk_tail = NULL;
            }
            p->buffered_bytes -= ch->bytes;
            ch->next = c->retired;
            c->retired = ch;
            continue;
        }
        if (batch_header_decode(ch->pos, left, &h) != 0 ||
            h.batch_bytes > left) {
            return KAPPA_ECORRUPT;
        }
        if (h.base_offset + (int64_t)h.record_count <= p->pos) {
            ch->pos += h.batch_bytes; /* wholly below the position */
            continue;
        }
        if ((h.attributes & KAPPA_BATCH_ATTR_CONTROL) != 0) {
            /* Raft bookkeeping: it takes its offset but yields no record. */
            p->pos = h.base_offset + (int64_t)h.record_count;
            ch->pos += h.batch_bytes;
            continue;
        }
        compressed = (h.attributes & KAPPA_BATCH_ATTR_COMPRESSION_MASK) != 0;
        if (compressed && p->is_scratch_lent) {
            return 0; /* the scratch holds records handed out this call */
        }
        if (c->conf.check_crcs || compressed) {
            rv = batch_reader_open(&p->reader, ch->pos, left);
            if (rv != 0) {
                return rv;
            }
        } else {
            p->reader.header = h;
            p->reader.pos = ch->pos + KAPPA_BATCH_HEADER_BYTES;
            p->reader.end = ch->pos + h.batch_bytes;
            p->reader.records_left = h.record_count;
        }
        p->is_reader_open = 1;
        ch->pos += h.batch_bytes;
        return 1;
    }
    return 0;
}

static size_t part_fill(struct kappa_client *c, struct kpart *p,
                        struct kappa_record *out, size_t max)
{
    size_t k = 0;
    if (p->err_pending != 0) {
        fill_error(p, p->err_pending, &out[0]);
        p->err_pending = 0;
        return 1;
    }
    while (k < max && !p->is_stopped) {
        struct record_view v;
        int rv;
        if (!p->is_reader_open) {
            rv = open_next_batch(c, p);
            if (rv == 0) {
                break;
            }
            if (rv != 1) {
                retire_chunks(c, p);
                part_error(c, p, rv);
                break;
            }
        }
        rv = batch_reader_next(&p->reader, &v);
        if (rv == 1) {
            if (v.offset < p->pos) {
                continue;
            }
            p->pos = v.offset + 1;
            if (p->seek_ts_ms >= 0 && v.timestamp_ms < p->seek_ts_ms) {
                continue;
            }
            p->seek_ts_ms = -1;
            fill_record(p, &v, &out[k++]);
            /* The reader stays open across calls: what marks the scratch as
             * lent is handing out one of its records in this call. */
            if (p->reader.header.attributes &
                KAPPA_BATCH_ATTR_COMPRESSION_MASK) {
                p->is_scratch_lent = 1;
            }
            continue;
        }
        p->is_reader_open = 0;
        if (rv != 0) {
            retire_chunks(c, p);
            part_error(c, p, rv);
            break;
        }
    }
    return k;
}

static size_t consume_fill(struct kappa_client *c, struct kappa_record *out,
                           size_t max)
{
    size_t k = 0;
    struct kpart *first = c->assigned;
    if (first == NULL) {
        return 0;
    }
    for (struct kpart *p = first; p != NULL && k < max; p = p->assigned_next) {
        k += part_fill(c, p, out + k, max - k);
    }
    /* Rotate so the next call starts with another partition. */
    if (first->assigned_next != NULL) {
        struct kpart *last = first;
        while (last->assigned_next != NULL) {
            last = last->assigned_next;
        }
        c->assigned = first->assigned_next;
        first->assigned_next = NULL;
        last->assigned_next = first;
    }
    return k;
}

static int has_news(struct kappa_client *c, void *arg)
{
    (void)arg;
    return c->has_consumer_news;
}

int kappa_consume(struct kappa_client *c, int timeout_ms,
                  struct kappa_record *out, size_t max, size_t *n)
{
    /* A negative timeout waits without limit, as in librdkafka. */
    uint64_t deadline =
        timeout_ms < 0 ? UINT64_MAX : client_now_ms() + (uint64_t)timeout_ms;
    client_begin(c);
    *n = 0;
    if (out == NULL || max == 0) {
        return client_error(c, KAPPA_EINVAL, "consume: no room for records");
    }
    free_retired(c);
    for (struct kpart *p = c->assigned; p != NULL; p = p->assigned_next) {
        p->is_scratch_lent = 0;
    }
    /* Read answers that are already here, so the prefetch keeps going. */
    uv_run(&c->loop, UV_RUN_NOWAIT);
    for (;;) {
        uint64_t now;
        c->has_consumer_news = 0;
        *n = consume_fill(c, out, max);
        consumer_kick(c);
        now = client_now_ms();
        if (*n > 0 || now >= deadline) {
            return 0;
        }
        (void)client_wait(c, has_news, NULL,
                          deadline == UINT64_MAX ? -1 : (int)(deadline - now));
    }
}

int kappa_record_header(const struct kappa_record *r, size_t i,
                        const char **key, size_t *key_len, const void **value,
                        size_t *value_len)
{
    const uint8_t *p = r->priv_headers;
    const uint8_t *end = p + r->priv_headers_len;
    struct record_header h;
    if (i >= r->n_headers || p == NULL) {
        return KAPPA_EINVAL;
    }
    for (size_t j = 0; j <= i; j++) {
        if (record_header_next(&p, end, &h) != 0) {
            return KAPPA_EINVAL;
        }
    }
    *key = (const char *)h.key;
    *key_len = h.key_len;
    *value = h.value;
    *value_len = h.value_len;
    return 0;
}

/* ---- ListOffsets -------------------------------------------------------- */

struct lo_wait {
    int is_done;
    int err;
    uint32_t n;
    int64_t offsets[2];
    int64_t errs[2];
};

static int read_lo_part(struct mp_reader *r, int64_t *err, int64_t *offset)
{
    uint32_t n;
    *err = KAPPA_EPROTO;
    *offset = -1;
    if (mp_read_map(r, &n) != 0) {
        return KAPPA_EPROTO;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kl;
        int rv;
        if (mp_read_str(r, &k, &kl) != 0) {
            return KAPPA_EPROTO;
        }
        if (mp_key_is(k, kl, "error")) {
            rv = mp_read_int_range(r, 0, INT32_MAX, err);
        } else if (mp_key_is(k, kl, "offset")) {
            rv = mp_read_int(r, offset);
        } else {
            rv = mp_skip(r);
        }
        if (rv != 0) {
            return KAPPA_EPROTO;
        }
    }
    return 0;
}

static int read_lo_result(struct mp_reader *r, struct lo_wait *w)
{
    uint32_t n_map, n;
    if (mp_read_map(r, &n_map) != 0) {
        return KAPPA_EPROTO;
    }
    for (uint32_t i = 0; i < n_map; i++) {
        const char *k;
        uint32_t kl;
        if (mp_read_str(r, &k, &kl) != 0) {
            return KAPPA_EPROTO;
        }
        if (!mp_key_is(k, kl, "parts")) {
            if (mp_skip(r) != 0) {
                return KAPPA_EPROTO;
            }
            continue;
        }
        if (mp_read_array(r, &n) != 0 || n != w->n) {
            return KAPPA_EPROTO;
        }
        for (uint32_t j = 0; j < n; j++) {
            if (read_lo_part(r, &w->errs[j], &w->offsets[j]) != 0) {
                return KAPPA_EPROTO;
            }
        }
        return 0;
    }
    return KAPPA_EPROTO;
}

static void on_list_offsets(struct kreq *req, int rv, struct kresp *resp)
{
    struct lo_wait *w = req->arg;
    w->is_done = 1;
    if (rv != 0) {
        kappa_errmsg_printf(req->c->detail, "%s", req->conn->errmsg);
        w->err = rv;
    } else if (resp->h.error_code != 0) {
        w->err = client_resp_error(req->c, resp);
    } else {
        w->err = read_lo_result(&resp->result, w);
    }
}

static int lo_done(struct kappa_client *c, void *arg)
{
    (void)c;
    return ((struct lo_wait *)arg)->is_done;
}

/* Sends one ListOffsets with n (1 or 2) timestamps for p and waits. */
static int list_offsets_once(struct kappa_client *c, struct kpart *p,
                             const int64_t *ts, uint32_t n, struct lo_wait *w,
                             int timeout_ms)
{
    struct kconn *conn = metadata_leader_conn(c, p);
    struct kreq *req;
    memset(w, 0, sizeof *w);
    w->n = n;
    if (conn == NULL) {
        metadata_refresh_soon(c);
        return KAPPA_ENOT_LEADER;
    }
    req = kreq_new(c, WIRE_API_LIST_OFFSETS, on_list_offsets, w);
    if (req == NULL) {
        return KAPPA_ENOMEM;
    }
    if (timeout_ms >= 0) {
        req->deadline_ms = client_now_ms() + (uint64_t)timeout_ms;
    }
    mp_put_map(&req->w, 1);
    mp_put_str(&req->w, "parts");
    mp_put_array(&req->w, n);
    for (uint32_t i = 0; i < n; i++) {
        mp_put_map(&req->w, 3);
        mp_put_str(&req->w, "topic");
        mp_put_str(&req->w, p->t->name);
        mp_put_str(&req->w, "partition");
        mp_put_int(&req->w, p->id);
        mp_put_str(&req->w, "timestamp");
        mp_put_int(&req->w, ts[i]);
    }
    wire_frame_end(&req->head, 0);
    if (conn_send(conn, req) != 0) {
        return KAPPA_ENOMEM;
    }
    (void)client_wait(c, lo_done, w, -1); /* the request has a deadline */
    if (w->err != 0) {
        return w->err;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (w->errs[i] != 0) {
            return (int)w->errs[i];
        }
    }
    return 0;
}

/* Retries while the leader is unknown, moved or unreachable (cluster
 * failover), refreshing metadata with retry.backoff.ms between tries,
 * until timeout_ms. */
static int list_offsets(struct kappa_client *c, struct kpart *p,
                        const int64_t *ts, uint32_t n, struct lo_wait *w,
                        int timeout_ms)
{
    uint64_t deadline =
        client_now_ms() +
        (uint64_t)(timeout_ms >= 0 ? timeout_ms : c->conf.request_timeout_ms);
    for (;;) {
        uint64_t now = client_now_ms();
        int rv = list_offsets_once(c, p, ts, n, w, (int)(deadline - now));
        if ((rv != KAPPA_ENOT_LEADER && rv != KAPPA_ETRANSPORT) ||
            now + (uint64_t)c->conf.retry_backoff_ms >= deadline) {
            return rv;
        }
        metadata_refresh_soon(c);
        (void)client_wait(c, NULL, NULL, c->conf.retry_backoff_ms);
    }
}

int consumer_list_offset(struct kappa_client *c, struct kpart *p,
                         int64_t timestamp, int64_t *offset, int timeout_ms)
{
    struct lo_wait w;
    int rv = list_offsets(c, p, &timestamp, 1, &w, timeout_ms);
    if (rv == 0) {
        *offset = w.offsets[0];
    }
    return rv;
}

static int find_part(struct kappa_client *c, const char *what,
                     const char *topic, int32_t partition, struct kpart **out)
{
    struct ktopic *t = NULL;
    int rv = metadata_topic_get(c, topic, &t);
    if (rv != 0) {
        return client_error(c, rv, "%s %.64s", what, topic);
    }
    if (partition < 0 || partition >= t->n_parts) {
        return client_error(c, KAPPA_EBAD_PARTITION, "%s %s/%d", what, topic,
                            partition);
    }
    *out = t->parts[partition];
    return 0;
}

int kappa_watermarks(struct kappa_client *c, const char *topic,
                     int32_t partition, int64_t *low, int64_t *high,
                     int timeout_ms)
{
    static const int64_t ts[2] = {WIRE_OFFSET_EARLIEST, WIRE_OFFSET_LATEST};
    struct lo_wait w;
    struct kpart *p = NULL;
    int rv;
    client_begin(c);
    if ((rv = find_part(c, "watermarks", topic, partition, &p)) != 0) {
        return rv;
    }
    rv = list_offsets(c, p, ts, 2, &w, timeout_ms);
    if (rv != 0) {
        return client_error(c, rv, "watermarks %s/%d", topic, partition);
    }
    *low = w.offsets[0];
    *high = w.offsets[1];
    return 0;
}

int kappa_offset_for_time(struct kappa_client *c, const char *topic,
                          int32_t partition, int64_t timestamp_ms,
                          int64_t *offset, int timeout_ms)
{
    struct kpart *p = NULL;
    int rv;
    client_begin(c);
    if (timestamp_ms < 0) {
        return client_error(c, KAPPA_EINVAL, "offset_for_time %s/%d", topic,
                            partition);
    }
    if ((rv = find_part(c, "offset_for_time", topic, partition, &p)) != 0) {
        return rv;
    }
    rv = consumer_list_offset(c, p, timestamp_ms, offset, timeout_ms);
    if (rv != 0) {
        return client_error(c, rv, "offset_for_time %s/%d", topic, partition);
    }
    return 0;
}

/* ---- Assignment --------------------------------------------------------- */

/* Drops what was fetched for p and restarts it at offset. */
static void part_reset(struct kappa_client *c, struct kpart *p, int64_t offset)
{
    retire_chunks(c, p);
    p->epoch++;
    p->err_pending = 0;
    p->is_stopped = 0;
    p->pos = offset;
    p->fetch_pos = offset;
    p->seek_ts_ms = -1;
}

static int resolve_offset(struct kappa_client *c, struct kpart *p,
                          int64_t offset, int64_t *out)
{
    if (offset >= 0) {
        *out = offset;
        return 0;
    }
    if (offset != KAPPA_OFFSET_END && offset != KAPPA_OFFSET_BEGINNING) {
        return KAPPA_EINVAL;
    }
    return consumer_list_offset(
        c, p,
        offset == KAPPA_OFFSET_END ? WIRE_OFFSET_LATEST : WIRE_OFFSET_EARLIEST,
        out, c->conf.request_timeout_ms);
}

static void assigned_remove(struct kappa_client *c, struct kpart *p)
{
    struct kpart **pp = &c->assigned;
    while (*pp != NULL && *pp != p) {
        pp = &(*pp)->assigned_next;
    }
    if (*pp == p) {
        *pp = p->assigned_next;
    }
    p->assigned_next = NULL;
    p->is_assigned = 0;
}

int kappa_assign(struct kappa_client *c, const char *topic, int32_t partition,
                 int64_t offset)
{
    struct kpart *p = NULL;
    int64_t start;
    int rv;
    client_begin(c);
    if (topic == NULL) {
        return client_error(c, KAPPA_EINVAL, "assign: no topic");
    }
    if ((rv = find_part(c, "assign", topic, partition, &p)) != 0) {
        return rv;
    }
    rv = resolve_offset(c, p, offset, &start);
    if (rv != 0) {
        return client_error(c, rv, "assign %s/%d", topic, partition);
    }
    if (!p->is_assigned) {
        p->is_assigned = 1;
        p->assigned_next = c->assigned;
        c->assigned = p;
    }
    part_reset(c, p, start);
    return 0; /* fetching starts in kappa_consume, for all partitions at once */
}

static int find_assigned(struct kappa_client *c, const char *what,
                         const char *topic, int32_t partition,
                         struct kpart **out)
{
    struct ktopic *t = topic != NULL ? metadata_topic_find(c, topic) : NULL;
    if (t == NULL || partition < 0 || partition >= t->n_parts ||
        !t->parts[partition]->is_assigned) {
        return client_error(c, KAPPA_EINVAL, "%s %.64s/%d: not assigned", what,
                            topic != NULL ? topic : "(null)", partition);
    }
    *out = t->parts[partition];
    return 0;
}

int kappa_unassign(struct kappa_client *c, const char *topic, int32_t partition)
{
    struct kpart *p = NULL;
    int rv;
    client_begin(c);
    if ((rv = find_assigned(c, "unassign", topic, partition, &p)) != 0) {
        return rv;
    }
    retire_chunks(c, p);
    p->epoch++;
    assigned_remove(c, p);
    return 0;
}

int kappa_seek(struct kappa_client *c, const char *topic, int32_t partition,
               int64_t offset)
{
    struct kpart *p = NULL;
    int64_t start;
    int rv;
    client_begin(c);
    if ((rv = find_assigned(c, "seek", topic, partition, &p)) != 0) {
        return rv;
    }
    rv = resolve_offset(c, p, offset, &start);
    if (rv != 0) {
        return client_error(c, rv, "seek %s/%d", topic, partition);
    }
    part_reset(c, p, start);
    return 0; /* fetching starts in kappa_consume, for all partitions at once */
}

int kappa_seek_timestamp(struct kappa_client *c, const char *topic,
                         int32_t partition, int64_t timestamp_ms)
{
    struct kpart *p = NULL;
    int64_t start;
    int rv;
    client_begin(c);
    if ((rv = find_assigned(c, "seek", topic, partition, &p)) != 0) {
        return rv;
    }
    if (timestamp_ms < 0) {
        return client_error(c, KAPPA_EINVAL, "seek %s/%d: negative time", topic,
                            partition);
    }
    rv = consumer_list_offset(c, p, timestamp_ms, &start,
                              c->conf.request_timeout_ms);
    if (rv != 0) {
        return client_error(c, rv, "seek %s/%d to time %lld", topic, partition,
                            (long long)timestamp_ms);
    }
    part_reset(c, p, start);
    p->seek_ts_ms = timestamp_ms;
    return 0;
}

int kappa_position(struct kappa_client *c, const char *topic, int32_t partition,
                   int64_t *offset)
{
    struct kpart *p = NULL;
    int rv;
    client_begin(c);
    if ((rv = find_assigned(c, "position", topic, partition, &p)) != 0) {
        return rv;
    }
    *offset = p->pos;
    return 0;
}

void consumer_free(struct kappa_client *c)
{
    while (c->assigned != NULL) {
        struct kpart *p = c->assigned;
        retire_chunks(c, p);
        assigned_remove(c, p);
    }
    free_retired(c);
}
