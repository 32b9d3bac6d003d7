/* Versions, instances, derived views and keyed processors of a job.
 *
 * Versions and instances only change names: the checkpoint key
 * NAME[@VERSION][#INSTANCE] under which the sink stores offsets, window
 * state and counters, and the tables the outputs go to (sink_sqlite.c).
 * An instance reads the partitions p with p % instances == instance.
 *
 * Keyed processors: per processor a map from key to state bytes
 * (keyed.c). A processor call may replace its key's state and emit rows;
 * the rows wait in job->proc_buf and the changed states on the map's dirty
 * list until the next checkpoint writes both in its transaction, so states
 * and rows are exactly-once like windows. A row is keyed by its input
 * record (topic, partition, offset) and its index among that record's
 * rows, so a replay after a crash rewrites the same rows.
 *
 * proc_buf entry (host order, never leaves the process):
 *   u8 proc, u32 source index, i64 offset, i64 seq, i64 event_ms,
 *   u16 key_len, u32 value_len, key bytes, value bytes */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "job_int.h"
#include "value.h"

#define PROC_ENTRY_HEADER 35

struct kappa_proc {
    struct kappa_job *job;
    size_t index;
    struct kentry *e;
    int n_emitted;
    int64_t event_ms;
    const void *key;
    size_t key_len;
};

int kappa_job_set_version(struct kappa_job *job, const char *version)
{
    if (job->is_open) {
        return KAPPA_EINVAL;
    }
    if (version == NULL || version[0] == '\0') {
        job->version[0] = '\0';
        return 0;
    }
    if (!sink_version_ok(version)) {
        return job_error(job, KAPPA_EINVAL,
                         "bad version %s: [A-Za-z0-9_]{1,15}", version);
    }
    snprintf(job->version, sizeof job->version, "%s", version);
    return 0;
}

int kappa_job_set_instance(struct kappa_job *job, int instance, int instances)
{
    if (job->is_open || instances < 1 || instances > KAPPA_JOB_INSTANCES_MAX ||
        instance < 0 || instance >= instances) {
        return KAPPA_EINVAL;
    }
    job->instance = instance;
    job->instances = instances;
    return 0;
}

int kappa_job_add_view(struct kappa_job *job, const char *name,
                       const char *select_sql)
{
    struct job_view *v;
    if (job->is_open || !sink_name_ok(name) || select_sql == NULL ||
        strlen(select_sql) > KAPPA_JOB_VIEW_SQL_MAX) {
        return KAPPA_EINVAL;
    }
    if (job->n_views >= KAPPA_JOB_VIEWS_MAX) {
        return job_error(job, KAPPA_ETOOBIG, "too many views");
    }
    v = &job->views[job->n_views];
    v->name = kappa_strdup(name);
    v->sql = kappa_strdup(select_sql);
    if (v->name == NULL || v->sql == NULL) {
        kappa_free(v->name);
        kappa_free(v->sql);
        return KAPPA_ENOMEM;
    }
    job->n_views++;
    return 0;
}

int kappa_job_add_processor(struct kappa_job *job, const char *table,
                            const char *key_field, kappa_job_process_cb cb,
                            void *arg)
{
    struct job_proc *p;
    if (job->is_open || cb == NULL || !sink_name_ok(table)) {
        return KAPPA_EINVAL;
    }
    if (job->n_procs >= KAPPA_JOB_PROCS_MAX) {
        return job_error(job, KAPPA_ETOOBIG, "too many processors");
    }
    p = &job->procs[job->n_procs];
    memset(p, 0, sizeof *p);
    p->table = kappa_strdup(table);
    p->key_field = key_field != NULL ? kappa_strdup(key_field) : NULL;
    if (p->table == NULL || (key_field != NULL && p->key_field == NULL)) {
        kappa_free(p->table);
        kappa_free(p->key_field);
        return KAPPA_ENOMEM;
    }
    p->cb = cb;
    p->arg = arg;
    p->map.max_keys = KAPPA_PROC_KEYS_MAX;
    job->n_procs++;
    return 0;
}

void job_ext_free(struct kappa_job *job)
{
    for (size_t k = 0; k < job->n_procs; k++) {
        kappa_free(job->procs[k].table);
        kappa_free(job->procs[k].key_field);
        kmap_free(&job->procs[k].map);
    }
    for (size_t k = 0; k < job->n_views; k++) {
        kappa_free(job->views[k].name);
        kappa_free(job->views[k].sql);
    }
    buf_free(&job->proc_buf);
}

void job_ext_key(struct kappa_job *job)
{
    char inst[16] = "";
    if (job->instances > 1) {
        snprintf(inst, sizeof inst, "#%d", job->instance);
    }
    snprintf(job->ckey, sizeof job->ckey, "%s%s%s%s", job->name,
             job->version[0] ? "@" : "", job->version, inst);
}

int job_ext_owns(const struct kappa_job *job, int32_t partition)
{
    return job->instances <= 1 || partition % job->instances == job->instance;
}

/* The version's topics as a JSON array (names are topic names: no quotes
 * or backslashes, see common/topic_name.h). */
static void topics_json(const struct kappa_job *job, char *out, size_t size)
{
    size_t n = (size_t)snprintf(out, size, "[");
    for (size_t k = 0; k < job->n_specs && n < size; k++) {
        n += (size_t)snprintf(out + n, size - n, "%s\"%s\"", k ? "," : "",
                              job->specs[k].topic);
    }
    if (n + 2 <= size) {
        snprintf(out + n, size - n, "]");
    } else {
        snprintf(out, size, "[]");
    }
}

void job_ext_layout(struct kappa_job *job)
{
    struct sqlite_sink *sq = sink_sqlite_of(job->sink_ops, job->sink);
    if (sq != NULL) {
        sink_set_layout(sq, job->name, job->version, job->instance,
                        job->instances);
    }
}

int job_ext_open(struct kappa_job *job)
{
    struct sqlite_sink *sq = sink_sqlite_of(job->sink_ops, job->sink);
    char topics[4096];
    int rv = 0;

    if (sq == NULL) {
        if (job->version[0] != '\0' || job->instances > 1 || job->n_procs > 0 ||
            job->n_views > 0) {
            kappa_errmsg_printf(job->errmsg, "versions, instances, views and"
                                             " processors need the SQLite"
                                             " sink");
            return KAPPA_EINVAL;
        }
        return 0;
    }
    for (size_t k = 0; k < job->n_procs && rv == 0; k++) {
        rv = sink_add_proc(sq, job->procs[k].table);
    }
    for (size_t k = 0; k < job->n_views && rv == 0; k++) {
        rv = sink_add_view(sq, job->views[k].name, job->views[k].sql);
    }
    if (rv == 0) {
        topics_json(job, topics, sizeof topics);
        rv = sink_register(sq, topics);
    }
    return rv;
}

/* ---- Processors ------------------------------------------------------------
 */

void kappa_proc_state(const struct kappa_proc *p, const void **state,
                      size_t *len)
{
    *state = p->e->state;
    *len = p->e->state_len;
}

int kappa_proc_set_state(struct kappa_proc *p, const void *state, size_t len)
{
    return kmap_set(&p->job->procs[p->index].map, p->e, state, len);
}

int kappa_proc_emit(struct kappa_proc *p, const void *value, size_t len)
{
    struct kappa_job *job = p->job;
    uint8_t h[PROC_ENTRY_HEADER];
    uint32_t src_index = (uint32_t)(job->cur - job->sources);
    uint16_t key_len = (uint16_t)p->key_len;
    uint32_t value_len = (uint32_t)len;
    int64_t seq = job->cur_emit;

    if (len > KAPPA_PROC_ROW_MAX || p->n_emitted >= KAPPA_PROC_EMIT_MAX) {
        return KAPPA_ETOOBIG;
    }
    h[0] = (uint8_t)p->index;
    memcpy(h + 1, &src_index, 4);
    memcpy(h + 5, &job->cur_offset, 8);
    memcpy(h + 13, &seq, 8);
    memcpy(h + 21, &p->event_ms, 8);
    memcpy(h + 29, &key_len, 2);
    memcpy(h + 31, &value_len, 4);
    if (buf_reserve(&job->proc_buf, sizeof h + p->key_len + len) != 0) {
        return KAPPA_ENOMEM;
    }
    buf_append(&job->proc_buf, h, sizeof h);
    buf_append(&job->proc_buf, p->key, p->key_len);
    buf_append(&job->proc_buf, value, len);
    p->n_emitted++;
    job->cur_emit++;
    return 0;
}

/* The processor's key for the event: a string or integer field, or the
 * event key. */
static int proc_key(const struct job_proc *jp, const struct kappa_event *ev,
                    struct value_doc *doc, char *buf, const void **key,
                    size_t *key_len)
{
    struct kappa_field f;
    if (jp->key_field == NULL) {
        *key = ev->key != NULL ? ev->key : "";
        *key_len = ev->key != NULL ? ev->key_len : 0;
        return 0;
    }
    if (value_doc_get(doc, jp->key_field, &f) != 0) {
        return KAPPA_EINVAL;
    }
    if (f.type == KAPPA_FIELD_STRING) {
        *key = f.str;
        *key_len = f.str_len;
        return 0;
    }
    if (f.type == KAPPA_FIELD_INT) {
        *key_len = (size_t)snprintf(buf, 24, "%lld", (long long)f.i);
        *key = buf;
        return 0;
    }
    return KAPPA_EINVAL;
}

int job_ext_process(struct kappa_job *job, const struct kappa_event *ev,
                    void *doc, int64_t t)
{
    for (size_t k = 0; k < job->n_procs; k++) {
        struct job_proc *jp = &job->procs[k];
        struct kappa_proc p = {job, k, NULL, 0, t, NULL, 0};
        char buf[24];
        int rv = proc_key(jp, ev, doc, buf, &p.key, &p.key_len);
        if (rv != 0) {
            job->stats.malformed++;
            continue;
        }
        rv = kmap_get(&jp->map, p.key, p.key_len, &p.e);
        if (rv != 0) {
            return job_error(job, rv, "%s: %s", jp->table,
                             rv == KAPPA_ETOOBIG ? "too many keys"
                                                 : kappa_err_str(rv));
        }
        if (jp->cb(ev, t, &p, jp->arg) != 0) {
            job->stats.malformed++;
        }
    }
    return 0;
}

static int write_rows(struct kappa_job *job, struct sqlite_sink *sq)
{
    const uint8_t *p = job->proc_buf.data;
    const uint8_t *end = p + job->proc_buf.len;
    while (p < end) {
        uint32_t src_index, value_len;
        int64_t offset, seq, event_ms;
        uint16_t key_len;
        int rv;
        memcpy(&src_index, p + 1, 4);
        memcpy(&offset, p + 5, 8);
        memcpy(&seq, p + 13, 8);
        memcpy(&event_ms, p + 21, 8);
        memcpy(&key_len, p + 29, 2);
        memcpy(&value_len, p + 31, 4);
        KAPPA_ASSERT(src_index < job->n_sources);
        rv = sink_put_proc_row(sq, p[0], job->sources[src_index].topic,
                               job->sources[src_index].partition, offset, seq,
                               p + PROC_ENTRY_HEADER, key_len, event_ms,
                               p + PROC_ENTRY_HEADER + key_len, value_len);
        if (rv != 0) {
            return rv;
        }
        p += PROC_ENTRY_HEADER + key_len + value_len;
    }
    return 0;
}

int job_ext_write(struct kappa_job *job)
{
    struct sqlite_sink *sq = sink_sqlite_of(job->sink_ops, job->sink);
    int rv = 0;
    if (sq == NULL || job->n_procs == 0) {
        return 0;
    }
    for (size_t k = 0; k < job->n_procs && rv == 0; k++) {
        for (const struct kentry *e = job->procs[k].map.dirty;
             e != NULL && rv == 0; e = e->dirty_next) {
            rv = sink_put_kstate(sq, (int)k, e->key, e->key_len, e->state,
                                 e->state_len);
        }
    }
    return rv == 0 ? write_rows(job, sq) : rv;
}

void job_ext_commit_done(struct kappa_job *job)
{
    for (size_t k = 0; k < job->n_procs; k++) {
        kmap_commit_done(&job->procs[k].map);
    }
    job->proc_buf.len = 0;
}

int job_ext_due(const struct kappa_job *job)
{
    size_t dirty = 0;
    for (size_t k = 0; k < job->n_procs; k++) {
        dirty += job->procs[k].map.n_dirty;
    }
    return dirty >= JOB_PENDING_MAX || job->proc_buf.len >= JOB_LATE_BUF_MAX;
}

static int load_kstate(const void *key, size_t key_len, const void *state,
                       size_t state_len, void *arg)
{
    struct kmap *m = arg;
    struct kentry *e;
    int rv;
    if (key_len > KAPPA_STREAM_KEY_MAX || state_len > KAPPA_PROC_STATE_MAX) {
        return KAPPA_CORRUPT();
    }
    rv = kmap_get(m, key != NULL ? key : "", key_len, &e);
    if (rv == 0) {
        rv = kmap_set(m, e, state, state_len);
    }
    return rv;
}

int job_ext_load(struct kappa_job *job)
{
    struct sqlite_sink *sq = sink_sqlite_of(job->sink_ops, job->sink);
    int rv = 0;
    for (size_t k = 0; sq != NULL && k < job->n_procs && rv == 0; k++) {
        rv = sink_load_kstates(sq, (int)k, load_kstate, &job->procs[k].map);
        kmap_commit_done(&job->procs[k].map); /* loaded, not changed */
    }
    return rv;
}
