/* The sink vtable: the SQLite sink's entry points adapted to it, choosing a
 * sink when a job opens, and kappa_job_set_postgres. */
#include "sink.h"

#include <string.h>

#include "common/alloc.h"
#include "job_int.h"
#include "sink_pg.h"

/* The handle is the SQLite sink itself. */
#define SQ(s) ((struct sqlite_sink *)(void *)(s))

static void sq_close(struct sink *s)
{
    sink_close(SQ(s));
}

static const char *sq_errmsg(const struct sink *s)
{
    return sink_errmsg((const struct sqlite_sink *)s);
}

static int sq_add_table(struct sink *s, const char *table,
                        enum kappa_agg_kind kind, int late_table)
{
    return sink_add_table(SQ(s), table, kind, late_table);
}

static int sq_reset(struct sink *s)
{
    return sink_reset(SQ(s));
}

static int sq_begin(struct sink *s)
{
    return sink_begin(SQ(s));
}

static int sq_commit(struct sink *s)
{
    return sink_commit(SQ(s));
}

static void sq_rollback(struct sink *s)
{
    sink_rollback(SQ(s));
}

static int sq_put_row(struct sink *s, int agg, const struct sink_row *r)
{
    return sink_put_row(SQ(s), agg, r);
}

static int sq_del_row(struct sink *s, int agg, const void *key, size_t key_len,
                      int64_t start)
{
    return sink_del_row(SQ(s), agg, key, key_len, start);
}

static int sq_put_state(struct sink *s, int agg, const void *key,
                        size_t key_len, int64_t start, int64_t end,
                        const void *blob, size_t blob_len)
{
    return sink_put_state(SQ(s), agg, key, key_len, start, end, blob, blob_len);
}

static int sq_del_state(struct sink *s, int agg, const void *key,
                        size_t key_len, int64_t start)
{
    return sink_del_state(SQ(s), agg, key, key_len, start);
}

static int sq_put_late(struct sink *s, int agg, const char *topic,
                       int32_t partition, int64_t offset, int64_t seq,
                       const void *key, size_t key_len, int64_t event_ms)
{
    return sink_put_late(SQ(s), agg, topic, partition, offset, seq, key,
                         key_len, event_ms);
}

static int sq_put_offset(struct sink *s, const char *topic, int32_t partition,
                         int64_t next_offset, int64_t max_event_ms)
{
    return sink_put_offset(SQ(s), topic, partition, next_offset, max_event_ms);
}

static int sq_put_job(struct sink *s, const struct kappa_job_stats *st)
{
    return sink_put_job(SQ(s), st);
}

static int sq_put_agg(struct sink *s, int agg, int64_t late, int64_t malformed)
{
    return sink_put_agg(SQ(s), agg, late, malformed);
}

static int sq_load_job(struct sink *s, struct kappa_job_stats *st, int *found)
{
    return sink_load_job(SQ(s), st, found);
}

static int sq_load_offsets(struct sink *s, sink_offset_cb cb, void *arg)
{
    return sink_load_offsets(SQ(s), cb, arg);
}

static int sq_load_states(struct sink *s, int agg, sink_state_cb cb, void *arg)
{
    return sink_load_states(SQ(s), agg, cb, arg);
}

static int sq_load_agg(struct sink *s, int agg, int64_t *late,
                       int64_t *malformed)
{
    return sink_load_agg(SQ(s), agg, late, malformed);
}

const struct sink_ops sink_sqlite_ops = {
    .kind = "sqlite",
    .close = sq_close,
    .errmsg = sq_errmsg,
    .add_table = sq_add_table,
    .reset = sq_reset,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .put_row = sq_put_row,
    .del_row = sq_del_row,
    .put_state = sq_put_state,
    .del_state = sq_del_state,
    .put_late = sq_put_late,
    .put_offset = sq_put_offset,
    .put_job = sq_put_job,
    .put_agg = sq_put_agg,
    .load_job = sq_load_job,
    .load_offsets = sq_load_offsets,
    .load_states = sq_load_states,
    .load_agg = sq_load_agg,
};

int sink_open_any(const char *sqlite_path, const char *pg_conninfo,
                  const char *job, const struct sink_ops **ops,
                  struct sink **out, char *errmsg)
{
    int rv;
    *out = NULL;
    if (pg_conninfo != NULL) {
        struct pg_sink *pg;
        *ops = &sink_pg_ops;
        rv = sink_pg_open(pg_conninfo, job, &pg, errmsg);
        *out = (struct sink *)(void *)pg;
    } else {
        struct sqlite_sink *sq;
        *ops = &sink_sqlite_ops;
        rv = sink_open(sqlite_path, job, &sq, errmsg);
        *out = (struct sink *)(void *)sq;
    }
    if (rv != 0) {
        *ops = NULL;
    }
    return rv;
}

struct sqlite_sink *sink_sqlite_of(const struct sink_ops *ops, struct sink *s)
{
    return ops == &sink_sqlite_ops ? SQ(s) : NULL;
}

int kappa_job_set_postgres(struct kappa_job *job, const char *conninfo,
                           int late_tables)
{
    char *copy;
    if (job->is_open || conninfo == NULL) {
        return KAPPA_EINVAL;
    }
    copy = kappa_strdup(conninfo);
    if (copy == NULL) {
        return KAPPA_ENOMEM;
    }
    kappa_free(job->pg_conninfo);
    job->pg_conninfo = copy;
    job->late_tables = late_tables != 0;
    return 0;
}
