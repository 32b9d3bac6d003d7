/* Stream jobs: building, the pipeline, feeding records, checkpoints.
 *
 * One input record goes through the stages in order; a flat-map stage
 * recurses into the stages after it once per emitted event. Every event
 * that reaches the end gets its event time and, per aggregation, its key
 * and value, and is folded into the aggregation's windows (window.c). Then
 * the record's partition's largest event time may move the watermark,
 * which closes windows. A record is processed completely or, on a fatal
 * error (state limits, out of memory), the job is marked failed and never
 * checkpoints again: what was committed stays consistent and a restart
 * resumes from it.
 *
 * A checkpoint writes in one SQLite transaction: every window changed since
 * the last one (open: upsert its row with final=0 and its partial state;
 * closed: upsert final=1 and delete the state; merged away: delete both),
 * the late events, the counters, and per partition the next offset and the
 * largest event time. Restarting loads exactly that, so the job continues
 * as if it had never stopped (docs/streams.md). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "job_int.h"
#include "state.h"
#include "value.h"

int job_error(struct kappa_job *job, int rv, const char *fmt, ...)
{
    va_list ap;
    char context[KAPPA_ERRMSG_SIZE];
    va_start(ap, fmt);
    vsnprintf(context, sizeof context, fmt, ap);
    va_end(ap);
    kappa_errmsg_printf(job->errmsg, "job %s: %s", job->name, context);
    return rv;
}

/* ---- Building ---------------------------------------------------------- */

int kappa_job_new(const char *name, enum kappa_stream_format format,
                  struct kappa_job **out)
{
    struct kappa_job *job;

    *out = NULL;
    if (!sink_name_ok(name) ||
        (format != KAPPA_FORMAT_JSON && format != KAPPA_FORMAT_MSGPACK)) {
        return KAPPA_EINVAL;
    }
    job = kappa_calloc(1, sizeof *job);
    if (job == NULL) {
        return KAPPA_ENOMEM;
    }
    snprintf(job->name, sizeof job->name, "%s", name);
    job->format = format;
    job->instances = 1;
    job->start = KAPPA_START_COMMITTED;
    job->limit.max_open = JOB_MAX_OPEN_DEFAULT;
    job->watermark_ms = INT64_MIN;
    job->min_max_event_ms = INT64_MIN;
    job->stats.watermark_ms = INT64_MIN;
    *out = job;
    return 0;
}

void kappa_job_free(struct kappa_job *job)
{
    if (job == NULL) {
        return;
    }
    if (job->sink_ops != NULL) {
        job->sink_ops->close(job->sink);
    }
    for (size_t k = 0; k < job->n_aggs; k++) {
        struct job_agg *a = &job->aggs[k];
        wstore_free(&a->store);
        kappa_free(a->table);
        kappa_free(a->key_constant);
        kappa_free(a->key_field);
        kappa_free(a->value_field);
    }
    for (size_t k = 0; k < job->n_stages; k++) {
        kappa_free(job->stages[k].field);
    }
    for (size_t k = 0; k < job->n_specs; k++) {
        kappa_free(job->specs[k].topic);
        kappa_free(job->specs[k].partitions);
    }
    for (size_t k = 0; k < job->n_sources; k++) {
        KAPPA_ASSERT(job->sources[k].client == NULL);
        kappa_free(job->sources[k].topic);
    }
    kappa_free(job->sources);
    kappa_free(job->time_field);
    kappa_free(job->db_path);
    kappa_free(job->pg_conninfo);
    job_ext_free(job);
    buf_free(&job->late_buf);
    buf_free(&job->scratch);
    kappa_free(job);
}

const char *kappa_job_errmsg(const struct kappa_job *job)
{
    return job->errmsg;
}

/* Duplicates an optional string; 0 or KAPPA_ENOMEM. */
static int dup_opt(const char *s, char **out)
{
    *out = NULL;
    if (s == NULL) {
        return 0;
    }
    *out = kappa_strdup(s);
    return *out == NULL ? KAPPA_ENOMEM : 0;
}

static int check_building(struct kappa_job *job)
{
    if (job->is_open) {
        return job_error(job, KAPPA_EINVAL, "already started");
    }
    return 0;
}

int kappa_job_add_source(struct kappa_job *job, const char *topic,
                         const int32_t *partitions, size_t n_partitions)
{
    struct source_spec *sp;

    if (check_building(job) != 0 || topic == NULL || topic[0] == '\0' ||
        n_partitions > KAPPA_JOB_SOURCES_MAX) {
        return KAPPA_EINVAL;
    }
    if (job->n_specs >= KAPPA_JOB_SOURCES_MAX) {
        return job_error(job, KAPPA_ETOOBIG, "too many sources");
    }
    sp = &job->specs[job->n_specs];
    memset(sp, 0, sizeof *sp);
    if (dup_opt(topic, &sp->topic) != 0) {
        return KAPPA_ENOMEM;
    }
    if (n_partitions > 0) {
        sp->partitions = kappa_calloc(n_partitions, sizeof *partitions);
        if (sp->partitions == NULL) {
            kappa_free(sp->topic);
            return KAPPA_ENOMEM;
        }
        memcpy(sp->partitions, partitions, n_partitions * sizeof *partitions);
        sp->n_partitions = n_partitions;
    }
    job->n_specs++;
    return 0;
}

int kappa_job_set_start(struct kappa_job *job, enum kappa_job_start start,
                        int64_t timestamp_ms)
{
    if (check_building(job) != 0 || start < KAPPA_START_COMMITTED ||
        start > KAPPA_START_TIMESTAMP) {
        return KAPPA_EINVAL;
    }
    job->start = start;
    job->start_timestamp_ms = timestamp_ms;
    return 0;
}

int kappa_job_set_time_field(struct kappa_job *job, const char *field)
{
    char *copy;
    if (check_building(job) != 0 || dup_opt(field, &copy) != 0) {
        return KAPPA_EINVAL;
    }
    kappa_free(job->time_field);
    job->time_field = copy;
    return 0;
}

int kappa_job_set_out_of_orderness(struct kappa_job *job, int64_t bound_ms)
{
    if (check_building(job) != 0 || bound_ms < 0 ||
        bound_ms > ((int64_t)1 << 61)) {
        return KAPPA_EINVAL;
    }
    job->out_of_orderness_ms = bound_ms;
    return 0;
}

int kappa_job_set_max_open_windows(struct kappa_job *job, uint32_t max)
{
    if (check_building(job) != 0 || max == 0) {
        return KAPPA_EINVAL;
    }
    job->limit.max_open = max;
    return 0;
}

static struct stage *stage_add(struct kappa_job *job, enum stage_type type,
                               void *arg)
{
    struct stage *st;
    if (check_building(job) != 0 || job->n_stages >= KAPPA_JOB_STAGES_MAX) {
        return NULL;
    }
    st = &job->stages[job->n_stages++];
    memset(st, 0, sizeof *st);
    st->type = type;
    st->arg = arg;
    return st;
}

int kappa_job_filter(struct kappa_job *job, kappa_job_filter_cb cb, void *arg)
{
    struct stage *st = cb != NULL ? stage_add(job, STAGE_FILTER, arg) : NULL;
    if (st == NULL) {
        return KAPPA_EINVAL;
    }
    st->filter = cb;
    return 0;
}

int kappa_job_map(struct kappa_job *job, kappa_job_map_cb cb, void *arg)
{
    struct stage *st = cb != NULL ? stage_add(job, STAGE_MAP, arg) : NULL;
    if (st == NULL) {
        return KAPPA_EINVAL;
    }
    st->map = cb;
    return 0;
}

int kappa_job_flat_map(struct kappa_job *job, kappa_job_flat_map_cb cb,
                       void *arg)
{
    struct stage *st = cb != NULL ? stage_add(job, STAGE_FLAT_MAP, arg) : NULL;
    if (st == NULL) {
        return KAPPA_EINVAL;
    }
    st->flat_map = cb;
    return 0;
}

int kappa_job_rekey(struct kappa_job *job, const char *field)
{
    struct stage *st;
    if (field == NULL || field[0] == '\0') {
        return KAPPA_EINVAL;
    }
    st = stage_add(job, STAGE_REKEY, NULL);
    if (st == NULL) {
        return KAPPA_EINVAL;
    }
    if (dup_opt(field, &st->field) != 0) {
        job->n_stages--;
        return KAPPA_ENOMEM;
    }
    return 0;
}

int kappa_job_add_aggregate(struct kappa_job *job,
                            const struct kappa_agg_spec *spec)
{
    struct job_agg *a;
    const char *why = NULL;
    int rv;

    if (check_building(job) != 0 || spec == NULL) {
        return KAPPA_EINVAL;
    }
    if (job->n_aggs >= KAPPA_JOB_AGGS_MAX) {
        return job_error(job, KAPPA_ETOOBIG, "too many aggregations");
    }
    if (!sink_name_ok(spec->table) ||
        strlen(spec->table) + 5 > KAPPA_JOB_NAME_MAX) {
        return job_error(job, KAPPA_EINVAL, "bad table name");
    }
    for (size_t k = 0; k < job->n_aggs; k++) {
        if (strcmp(job->aggs[k].table, spec->table) == 0) {
            return job_error(job, KAPPA_EINVAL, "table %s used twice",
                             spec->table);
        }
    }
    rv = wstore_check_spec(spec, &why);
    if (rv != 0) {
        return job_error(job, rv, "%s: %s", spec->table, why);
    }
    a = &job->aggs[job->n_aggs];
    memset(a, 0, sizeof *a);
    if (dup_opt(spec->table, &a->table) != 0 ||
        dup_opt(spec->key_constant, &a->key_constant) != 0 ||
        dup_opt(spec->key_field, &a->key_field) != 0 ||
        dup_opt(spec->value_field, &a->value_field) != 0) {
        kappa_free(a->table);
        kappa_free(a->key_constant);
        kappa_free(a->key_field);
        kappa_free(a->value_field);
        return KAPPA_ENOMEM;
    }
    a->spec = *spec;
    a->spec.table = a->table;
    a->spec.key_constant = a->key_constant;
    a->spec.key_field = a->key_field;
    a->spec.value_field = a->value_field;
    wstore_init(&a->store, &a->spec, &job->limit);
    job->n_aggs++;
    return 0;
}

void kappa_job_set_late_cb(struct kappa_job *job, kappa_job_late_cb cb,
                           void *arg)
{
    job->late_cb = cb;
    job->late_arg = arg;
}

int kappa_job_set_sqlite(struct kappa_job *job, const char *path,
                         int late_tables)
{
    char *copy;
    if (check_building(job) != 0 || path == NULL || dup_opt(path, &copy) != 0) {
        return KAPPA_EINVAL;
    }
    kappa_free(job->db_path);
    job->db_path = copy;
    job->late_tables = late_tables != 0;
    return 0;
}

void kappa_job_stats(const struct kappa_job *job, struct kappa_job_stats *st)
{
    *st = job->stats;
    st->watermark_ms = job->watermark_ms;
    st->open_windows = job->limit.n_open;
}

/* ---- Sources and the watermark ----------------------------------------- */

struct source *job_source(struct kappa_job *job, const char *topic,
                          int32_t partition)
{
    struct source *src;

    if (job->last_source < job->n_sources) {
        src = &job->sources[job->last_source];
        if (src->partition == partition && strcmp(src->topic, topic) == 0) {
            return src;
        }
    }
    for (size_t k = 0; k < job->n_sources; k++) {
        src = &job->sources[k];
        if (src->partition == partition && strcmp(src->topic, topic) == 0) {
            job->last_source = k;
            return src;
        }
    }
    if (job->n_sources >= KAPPA_JOB_SOURCES_MAX) {
        job_error(job, KAPPA_ETOOBIG, "more than %d partitions",
                  KAPPA_JOB_SOURCES_MAX);
        return NULL;
    }
    if (job->sources == NULL) {
        job->sources = kappa_calloc(KAPPA_JOB_SOURCES_MAX, sizeof *src);
        if (job->sources == NULL) {
            job_error(job, KAPPA_ENOMEM, "out of memory");
            return NULL;
        }
    }
    src = &job->sources[job->n_sources];
    memset(src, 0, sizeof *src);
    src->topic = kappa_strdup(topic);
    if (src->topic == NULL) {
        job_error(job, KAPPA_ENOMEM, "out of memory");
        return NULL;
    }
    src->partition = partition;
    src->next_offset = -1;
    src->max_event_ms = INT64_MIN;
    job->last_source = job->n_sources++;
    /* A new source has seen nothing yet: it holds the watermark back. */
    job->min_max_event_ms = INT64_MIN;
    return src;
}

static void close_windows(struct kappa_job *job)
{
    for (size_t k = 0; k < job->n_aggs; k++) {
        wstore_advance(&job->aggs[k].store, job->watermark_ms);
    }
}

/* Recomputes min over active sources of their largest event time, and the
 * watermark from it. Idle sources do not count; with none active the
 * watermark stays. */
static void watermark_update(struct kappa_job *job)
{
    int64_t min = INT64_MAX;
    int64_t w;

    for (size_t k = 0; k < job->n_sources; k++) {
        const struct source *src = &job->sources[k];
        if (!src->is_idle && src->max_event_ms < min) {
            min = src->max_event_ms;
        }
    }
    job->min_max_event_ms = min;
    if (min == INT64_MAX || min == INT64_MIN) {
        return;
    }
    w = min - job->out_of_orderness_ms;
    if (w > job->watermark_ms) {
        job->watermark_ms = w;
        close_windows(job);
    }
}

void job_set_source_idle(struct kappa_job *job, struct source *src, int is_idle)
{
    if (src->is_idle != is_idle) {
        src->is_idle = is_idle;
        watermark_update(job);
    }
}

int kappa_job_set_idle(struct kappa_job *job, const char *topic,
                       int32_t partition, int is_idle)
{
    struct source *src = job_source(job, topic, partition);
    if (src == NULL) {
        return KAPPA_ENOMEM;
    }
    job_set_source_idle(job, src, is_idle != 0);
    return 0;
}

int64_t kappa_job_position(const struct kappa_job *job, const char *topic,
                           int32_t partition)
{
    for (size_t k = 0; k < job->n_sources; k++) {
        const struct source *src = &job->sources[k];
        if (src->partition == partition && strcmp(src->topic, topic) == 0) {
            return src->next_offset;
        }
    }
    return -1;
}

/* ---- Pipeline -------------------------------------------------------- */

struct kappa_emitter {
    struct kappa_job *job;
    size_t next_stage;
    int n_emitted;
    int fatal; /* first fatal error of a later stage */
};

static int run_stages(struct kappa_job *job, const struct kappa_event *ev,
                      struct value_doc *doc, size_t stage);

/* Formats an aggregation key or re-key from a field: strings as they are,
 * integers in decimal. buf needs 24 bytes. */
static int field_key(const struct kappa_field *f, char *buf, const void **key,
                     size_t *key_len)
{
    if (f->type == KAPPA_FIELD_STRING) {
        *key = f->str;
        *key_len = f->str_len;
        return 0;
    }
    if (f->type == KAPPA_FIELD_INT || f->type == KAPPA_FIELD_BOOL) {
        *key_len = (size_t)snprintf(buf, 24, "%lld", (long long)f->i);
        *key = buf;
        return 0;
    }
    return KAPPA_EINVAL;
}

static int late_buffer(struct kappa_job *job, size_t agg, const void *key,
                       size_t key_len, int64_t event_ms)
{
    /* Entry: u8 agg, u32 source index, i64 offset, i64 seq, i64 event_ms,
     * u16 key_len, key bytes (host order, never leaves the process). */
    uint8_t h[31];
    uint32_t src_index = (uint32_t)(job->cur - job->sources);
    uint16_t len = (uint16_t)key_len;

    h[0] = (uint8_t)agg;
    memcpy(h + 1, &src_index, 4);
    memcpy(h + 5, &job->cur_offset, 8);
    memcpy(h + 13, &job->cur_seq, 8);
    memcpy(h + 21, &event_ms, 8);
    memcpy(h + 29, &len, 2);
    if (buf_append(&job->late_buf, h, sizeof h) != 0 ||
        buf_append(&job->late_buf, key, key_len) != 0) {
        return KAPPA_ENOMEM;
    }
    return 0;
}

/* The key of event ev for aggregation a. */
static int agg_key(const struct job_agg *a, const struct kappa_event *ev,
                   struct value_doc *doc, char *buf, const void **key,
                   size_t *key_len)
{
    struct kappa_field f;
    if (a->key_constant != NULL) {
        *key = a->key_constant;
        *key_len = strlen(a->key_constant);
        return 0;
    }
    if (a->key_field == NULL) {
        *key = ev->key != NULL ? ev->key : "";
        *key_len = ev->key != NULL ? ev->key_len : 0;
        return 0;
    }
    if (value_doc_get(doc, a->key_field, &f) != 0) {
        return KAPPA_EINVAL;
    }
    return field_key(&f, buf, key, key_len);
}

/* Folds one event into aggregation k. Returns 0 or a fatal error. */
static int aggregate_one(struct kappa_job *job, size_t k,
                         const struct kappa_event *ev, struct value_doc *doc,
                         int64_t t)
{
    struct job_agg *a = &job->aggs[k];
    struct kappa_field f, *val = NULL;
    char buf[24];
    const void *key;
    size_t key_len;
    int is_late = 0, rv;

    if (agg_key(a, ev, doc, buf, &key, &key_len) != 0) {
        a->store.malformed++;
        return 0;
    }
    if (a->value_field != NULL) {
        if (value_doc_get(doc, a->value_field, &f) != 0) {
            a->store.malformed++;
            return 0;
        }
        val = &f;
    }
    rv = wstore_add(&a->store, key, key_len, t, val, job->watermark_ms,
                    &is_late);
    if (rv == KAPPA_EINVAL) {
        return 0; /* counted by the store */
    }
    if (rv != 0) {
        return job_error(job, rv, "%s: %s", a->table,
                         rv == KAPPA_ETOOBIG ? "state limit reached "
                                               "(open windows or distinct "
                                               "values)"
                                             : kappa_err_str(rv));
    }
    if (is_late) {
        job->stats.late++;
        if (job->late_cb != NULL) {
            job->late_cb(ev, a->table, t, job->late_arg);
        }
        if (job->late_tables) {
            rv = late_buffer(job, k, key, key_len, t);
        }
    }
    return rv;
}

/* The end of the pipeline: event time, aggregations, watermark. */
static int process_event(struct kappa_job *job, const struct kappa_event *ev,
                         struct value_doc *doc)
{
    struct source *src = job->cur;
    int64_t t = ev->timestamp_ms;
    int rv = 0;

    if (job->time_field != NULL) {
        struct kappa_field f;
        if (value_doc_get(doc, job->time_field, &f) != 0 ||
            value_field_int(&f, &t) != 0) {
            job->stats.malformed++;
            return 0;
        }
    }
    for (size_t k = 0; k < job->n_aggs && rv == 0; k++) {
        rv = aggregate_one(job, k, ev, doc, t);
    }
    if (rv == 0 && job->n_procs > 0) {
        rv = job_ext_process(job, ev, doc, t);
    }
    job->cur_seq++;
    job->stats.events++;
    if (rv == 0 && t > src->max_event_ms) {
        int64_t old = src->max_event_ms;
        src->max_event_ms = t;
        if (old <= job->min_max_event_ms) {
            watermark_update(job);
        }
    }
    return rv;
}

int kappa_emit(struct kappa_emitter *em, const struct kappa_event *ev)
{
    struct value_doc doc;
    int rv;

    if (em->fatal != 0) {
        return em->fatal;
    }
    if (++em->n_emitted > KAPPA_JOB_FLAT_MAP_MAX) {
        return KAPPA_ETOOBIG;
    }
    value_doc_init(&doc, em->job->format, ev->value, ev->value_len);
    value_doc_use_arena(&doc);
    rv = run_stages(em->job, ev, &doc, em->next_stage);
    value_doc_release(&doc);
    if (rv != 0) {
        em->fatal = rv;
    }
    return rv;
}

static int stage_map(struct kappa_job *job, const struct stage *st,
                     const struct kappa_event *ev, struct value_doc *doc,
                     size_t next)
{
    struct kappa_event out = *ev;
    struct value_doc nd;
    int rv;

    if (st->map(ev, &out, st->arg) != 0) {
        job->stats.malformed++;
        return 0;
    }
    if (out.value == ev->value && out.value_len == ev->value_len) {
        return run_stages(job, &out, doc, next);
    }
    value_doc_init(&nd, job->format, out.value, out.value_len);
    value_doc_use_arena(&nd);
    rv = run_stages(job, &out, &nd, next);
    value_doc_release(&nd);
    return rv;
}

static int stage_flat_map(struct kappa_job *job, const struct stage *st,
                          const struct kappa_event *ev, size_t next)
{
    struct kappa_emitter em = {job, next, 0, 0};
    int rv = st->flat_map(ev, &em, st->arg);
    if (em.fatal != 0) {
        return em.fatal;
    }
    if (rv != 0) {
        job->stats.malformed++;
    }
    return 0;
}

static int run_stages(struct kappa_job *job, const struct kappa_event *ev,
                      struct value_doc *doc, size_t stage)
{
    for (size_t k = stage; k < job->n_stages; k++) {
        const struct stage *st = &job->stages[k];
        struct kappa_field f;
        struct kappa_event rekeyed;
        char buf[24];

        switch (st->type) {
        case STAGE_FILTER:
            if (!st->filter(ev, st->arg)) {
                return 0;
            }
            break;
        case STAGE_MAP:
            return stage_map(job, st, ev, doc, k + 1);
        case STAGE_FLAT_MAP:
            return stage_flat_map(job, st, ev, k + 1);
        case STAGE_REKEY:
            rekeyed = *ev;
            if (value_doc_get(doc, st->field, &f) != 0 ||
                field_key(&f, buf, &rekeyed.key, &rekeyed.key_len) != 0) {
                job->stats.malformed++;
                return 0;
            }
            return run_stages(job, &rekeyed, doc, k + 1);
        }
    }
    return process_event(job, ev, doc);
}

int job_feed_source(struct kappa_job *job, struct source *src,
                    const struct kappa_record *r)
{
    struct kappa_event ev;
    struct value_doc doc;
    int rv;

    if (job->failed != 0) {
        return job->failed;
    }
    if (r->offset < src->next_offset) {
        return 0; /* processed before the checkpoint this run resumed */
    }
    if (src->is_idle) {
        job_set_source_idle(job, src, 0);
    }
    ev.key = r->key;
    ev.key_len = r->key_len;
    ev.value = r->value;
    ev.value_len = r->value_len;
    ev.timestamp_ms = r->timestamp_ms;
    ev.topic = src->topic;
    ev.partition = src->partition;
    ev.offset = r->offset;
    job->cur = src;
    job->cur_offset = r->offset;
    job->cur_seq = 0;
    job->cur_emit = 0;
    job->stats.records++;
    job->records_since_checkpoint++;
    value_doc_init(&doc, job->format, r->value, r->value_len);
    value_doc_use_arena(&doc);
    rv = run_stages(job, &ev, &doc, 0);
    value_doc_release(&doc);
    src->next_offset = r->offset + 1;
    if (rv != 0) {
        job->failed = rv;
        return rv;
    }
    return job_checkpoint_due(job) ? kappa_job_checkpoint(job) : 0;
}

int kappa_job_feed(struct kappa_job *job, const struct kappa_record *r)
{
    struct source *src;
    if (!job->is_open || r == NULL || r->err != 0 || r->topic == NULL ||
        r->offset < 0) {
        return KAPPA_EINVAL;
    }
    if (!job_ext_owns(job, r->partition)) {
        return job_error(job, KAPPA_EINVAL, "%s/%d belongs to another instance",
                         r->topic, (int)r->partition);
    }
    src = job_source(job, r->topic, r->partition);
    if (src == NULL) {
        return KAPPA_ETOOBIG;
    }
    return job_feed_source(job, src, r);
}

int job_checkpoint_due(const struct kappa_job *job)
{
    size_t pending = 0;
    for (size_t k = 0; k < job->n_aggs; k++) {
        pending += job->aggs[k].store.n_pending;
    }
    return pending >= JOB_PENDING_MAX ||
           job->late_buf.len >= JOB_LATE_BUF_MAX || job_ext_due(job);
}

/* ---- Checkpoints ----------------------------------------------------- */

static int write_entry(struct kappa_job *job, int agg, const struct wentry *e)
{
    const struct job_agg *a = &job->aggs[agg];
    const struct sink_ops *ops = job->sink_ops;
    struct sink *s = job->sink;
    struct sink_row row;
    int rv;

    if (e->state == WENTRY_DEAD) {
        if (!e->is_persisted) {
            return 0;
        }
        rv = ops->del_row(s, agg, e->key, e->key_len, e->start);
        return rv != 0 ? rv
                       : ops->del_state(s, agg, e->key, e->key_len, e->start);
    }
    row.key = e->key;
    row.key_len = e->key_len;
    row.start = e->start;
    row.end = e->end;
    row.events = (int64_t)e->agg.count;
    row.is_final = e->state == WENTRY_CLOSED;
    agg_result(&e->agg, a->spec.kind, &row.is_int, &row.i, &row.d);
    rv = ops->put_row(s, agg, &row);
    if (rv != 0) {
        return rv;
    }
    if (e->state == WENTRY_CLOSED) {
        return e->is_persisted
                   ? ops->del_state(s, agg, e->key, e->key_len, e->start)
                   : 0;
    }
    job->scratch.len = 0;
    if (state_encode(&e->agg, a->spec.kind, &job->scratch) != 0) {
        return KAPPA_ENOMEM;
    }
    return ops->put_state(s, agg, e->key, e->key_len, e->start, e->end,
                          job->scratch.data, job->scratch.len);
}

static int write_late(struct kappa_job *job)
{
    const uint8_t *p = job->late_buf.data;
    const uint8_t *end = p + job->late_buf.len;
    while (p < end) {
        uint32_t src_index;
        int64_t offset, seq, event_ms;
        uint16_t key_len;
        int rv;
        memcpy(&src_index, p + 1, 4);
        memcpy(&offset, p + 5, 8);
        memcpy(&seq, p + 13, 8);
        memcpy(&event_ms, p + 21, 8);
        memcpy(&key_len, p + 29, 2);
        KAPPA_ASSERT(src_index < job->n_sources);
        rv = job->sink_ops->put_late(job->sink, p[0],
                                     job->sources[src_index].topic,
                                     job->sources[src_index].partition, offset,
                                     seq, p + 31, key_len, event_ms);
        if (rv != 0) {
            return rv;
        }
        p += 31 + key_len;
    }
    return 0;
}

static int write_checkpoint(struct kappa_job *job)
{
    struct kappa_job_stats st;
    int rv = 0;

    for (size_t k = 0; k < job->n_aggs && rv == 0; k++) {
        struct wstore *store = &job->aggs[k].store;
        /* Deletes first: a session merged away may have had the start (and
         * so the row key) of the session that replaced it. */
        for (int pass = 0; pass < 2; pass++) {
            for (const struct wentry *e = store->pending; e != NULL && rv == 0;
                 e = e->pending_next) {
                if ((e->state == WENTRY_DEAD) == (pass == 0)) {
                    rv = write_entry(job, (int)k, e);
                }
            }
        }
        if (rv == 0) {
            rv = job->sink_ops->put_agg(job->sink, (int)k, store->late,
                                        store->malformed);
        }
    }
    if (rv == 0) {
        rv = write_late(job);
    }
    for (size_t k = 0; k < job->n_sources && rv == 0; k++) {
        const struct source *src = &job->sources[k];
        if (src->next_offset >= 0) {
            rv =
                job->sink_ops->put_offset(job->sink, src->topic, src->partition,
                                          src->next_offset, src->max_event_ms);
        }
    }
    if (rv == 0) {
        rv = job_ext_write(job);
    }
    if (rv == 0) {
        kappa_job_stats(job, &st);
        rv = job->sink_ops->put_job(job->sink, &st);
    }
    return rv;
}

int kappa_job_checkpoint(struct kappa_job *job)
{
    int rv;

    if (!job->is_open) {
        return KAPPA_EINVAL;
    }
    if (job->failed != 0) {
        return job->failed;
    }
    rv = job->sink_ops->begin(job->sink);
    if (rv == 0) {
        rv = write_checkpoint(job);
    }
    if (rv == 0) {
        rv = job->sink_ops->commit(job->sink);
    } else {
        job->sink_ops->rollback(job->sink);
    }
    if (rv != 0) {
        job->failed = rv;
        return job_error(job, rv, "checkpoint: %s",
                         job->sink_ops->errmsg(job->sink));
    }
    for (size_t k = 0; k < job->n_aggs; k++) {
        wstore_commit_done(&job->aggs[k].store);
    }
    job_ext_commit_done(job);
    job->late_buf.len = 0;
    job->records_since_checkpoint = 0;
    job->stats.checkpoints++;
    return 0;
}

/* ---- Opening: loading or clearing the committed state ------------------ */

static int load_offset(const char *topic, int32_t partition,
                       int64_t next_offset, int64_t max_event_ms, void *arg)
{
    struct kappa_job *job = arg;
    struct source *src = job_source(job, topic, partition);
    if (src == NULL) {
        return KAPPA_ETOOBIG;
    }
    src->next_offset = next_offset;
    src->max_event_ms = max_event_ms;
    return 0;
}

struct load_state_ctx {
    struct kappa_job *job;
    struct job_agg *agg;
};

static int load_state(const void *key, size_t key_len, int64_t start,
                      int64_t end, const void *blob, size_t blob_len, void *arg)
{
    struct load_state_ctx *ctx = arg;
    struct agg_state a;
    int rv = state_decode(blob, blob_len, ctx->agg->spec.kind,
                          ctx->agg->store.spec.distinct_max, &a);
    if (rv != 0) {
        return rv;
    }
    return wstore_restore(&ctx->agg->store, key, key_len, start, end, &a);
}

static int load_committed(struct kappa_job *job)
{
    int found = 0;
    int rv = job->sink_ops->load_job(job->sink, &job->stats, &found);

    if (rv != 0 || !found) {
        job->stats.watermark_ms = INT64_MIN;
        return rv;
    }
    job->stats.checkpoints = 0;
    job->watermark_ms = job->stats.watermark_ms;
    rv = job->sink_ops->load_offsets(job->sink, load_offset, job);
    for (size_t k = 0; k < job->n_aggs && rv == 0; k++) {
        struct load_state_ctx ctx = {job, &job->aggs[k]};
        rv = job->sink_ops->load_states(job->sink, (int)k, load_state, &ctx);
        if (rv == 0) {
            rv = job->sink_ops->load_agg(job->sink, (int)k,
                                         &job->aggs[k].store.late,
                                         &job->aggs[k].store.malformed);
        }
    }
    if (rv == 0) {
        rv = job_ext_load(job);
    }
    if (rv == 0) {
        watermark_update(job);
    }
    return rv;
}

int kappa_job_open(struct kappa_job *job)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    int rv;

    if (job->is_open) {
        return 0;
    }
    if ((job->db_path == NULL && job->pg_conninfo == NULL) ||
        (job->n_aggs == 0 && job->n_procs == 0)) {
        return job_error(job, KAPPA_EINVAL, "needs a sink and an aggregation");
    }
    job_ext_key(job);
    rv = sink_open_any(job->db_path, job->pg_conninfo, job->ckey,
                       &job->sink_ops, &job->sink, errmsg);
    if (rv != 0) {
        return job_error(job, rv, "%s", errmsg);
    }
    job_ext_layout(job);
    for (size_t k = 0; k < job->n_aggs && rv == 0; k++) {
        enum kappa_agg_kind kind = job->aggs[k].spec.kind;
        rv = job->sink_ops->add_table(job->sink, job->aggs[k].table, kind,
                                      job->late_tables);
    }
    if (rv == 0) {
        rv = job_ext_open(job);
    }
    if (rv == 0) {
        rv = job->start == KAPPA_START_COMMITTED
                 ? load_committed(job)
                 : job->sink_ops->reset(job->sink);
    }
    if (rv != 0) {
        job_error(job, rv, "open %s: %s",
                  job->pg_conninfo != NULL ? "postgresql" : job->db_path,
                  rv == KAPPA_EIO || rv == KAPPA_EINVAL
                      ? job->sink_ops->errmsg(job->sink)
                      : kappa_err_str(rv));
        job->sink_ops->close(job->sink);
        job->sink_ops = NULL;
        job->sink = NULL;
        return rv;
    }
    job->is_open = 1;
    return 0;
}
