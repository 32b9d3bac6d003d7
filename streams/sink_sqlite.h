/* The SQLite sink: output tables of upserts keyed by (key, window_start),
 * and the job's checkpoint (offsets, watermark, open windows, counters),
 * all written in one transaction per checkpoint with prepared statements. */
#ifndef KAPPA_STREAMS_SINK_SQLITE_H
#define KAPPA_STREAMS_SINK_SQLITE_H

#include <stddef.h>
#include <stdint.h>

#include <kappa/streams.h>

/* Checkpoint key of a run: NAME[@VERSION][#INSTANCE] (the instance only
 * when there are several). */
#define SINK_KEY_MAX 96
/* Physical table and view names: an output name, "_" VERSION, and a
 * suffix such as "_parts" or "_late". */
#define SINK_TABLE_MAX 96

struct sqlite_sink;

/* One output row. */
struct sink_row {
    const void *key;
    size_t key_len;
    int64_t start;
    int64_t end;
    int is_int;
    int64_t i;
    double d;
    int64_t events;
    int is_final;
};

/* Opens (creating) the database and the job's system tables. Returns 0,
 * KAPPA_EIO (with a message in errmsg) or KAPPA_ENOMEM. */
int sink_open(const char *path, const char *job, struct sqlite_sink **out,
              char *errmsg);
/* NULL is a no-op; a transaction still open is rolled back. */
void sink_close(struct sqlite_sink *s);
const char *sink_errmsg(const struct sqlite_sink *s);

/* The run's place among versions and instances (defaults: no version, one
 * instance). Call before adding tables. */
void sink_set_layout(struct sqlite_sink *s, const char *name,
                     const char *version, int instance, int instances);

/* Creates the output table (and TABLE_late) if missing, with an INTEGER
 * (count, distinct) or a REAL value column; the aggregation is then
 * addressed by its index agg (< KAPPA_JOB_AGGS_MAX, in order). With a
 * version the table is TABLE_VERSION; with several instances rows go to
 * TABLE[_VERSION]_parts (one row per instance) and TABLE[_VERSION] is a
 * view merging them. */
int sink_add_table(struct sqlite_sink *s, const char *table,
                   enum kappa_agg_kind kind, int late_table);
/* Creates a processor's row table; addressed by its index proc. */
int sink_add_proc(struct sqlite_sink *s, const char *table);
/* Creates the view name[_VERSION] from select_sql, {T} replaced by the
 * physical name of output T. KAPPA_EINVAL for an unknown output. */
int sink_add_view(struct sqlite_sink *s, const char *name,
                  const char *select_sql);
/* Records the version (instances, topics as a JSON array) and its outputs;
 * KAPPA_EINVAL if the version exists with another instance count. The
 * first version of a job is promoted at once when none of its output
 * names is taken. One transaction. */
int sink_register(struct sqlite_sink *s, const char *topics_json);

/* Deletes the job's rows: checkpoints, window state, counters and its
 * output tables' contents, in one transaction. */
int sink_reset(struct sqlite_sink *s);

int sink_begin(struct sqlite_sink *s);
int sink_commit(struct sqlite_sink *s);
void sink_rollback(struct sqlite_sink *s);

/* Inside a transaction. */
int sink_put_row(struct sqlite_sink *s, int agg, const struct sink_row *r);
int sink_del_row(struct sqlite_sink *s, int agg, const void *key,
                 size_t key_len, int64_t start);
int sink_put_state(struct sqlite_sink *s, int agg, const void *key,
                   size_t key_len, int64_t start, int64_t end, const void *blob,
                   size_t blob_len);
int sink_del_state(struct sqlite_sink *s, int agg, const void *key,
                   size_t key_len, int64_t start);
int sink_put_late(struct sqlite_sink *s, int agg, const char *topic,
                  int32_t partition, int64_t offset, int64_t seq,
                  const void *key, size_t key_len, int64_t event_ms);
/* max_event_ms INT64_MIN is stored as NULL. */
int sink_put_offset(struct sqlite_sink *s, const char *topic, int32_t partition,
                    int64_t next_offset, int64_t max_event_ms);
int sink_put_job(struct sqlite_sink *s, const struct kappa_job_stats *st);
int sink_put_agg(struct sqlite_sink *s, int agg, int64_t late,
                 int64_t malformed);
int sink_put_proc_row(struct sqlite_sink *s, int proc, const char *topic,
                      int32_t partition, int64_t offset, int64_t seq,
                      const void *key, size_t key_len, int64_t event_ms,
                      const void *value, size_t value_len);
/* An empty state deletes the key's row. */
int sink_put_kstate(struct sqlite_sink *s, int proc, const void *key,
                    size_t key_len, const void *state, size_t state_len);

/* Loading the committed checkpoint. *found is 0 when the job has none. */
int sink_load_job(struct sqlite_sink *s, struct kappa_job_stats *st,
                  int *found);
typedef int (*sink_offset_cb)(const char *topic, int32_t partition,
                              int64_t next_offset, int64_t max_event_ms,
                              void *arg);
int sink_load_offsets(struct sqlite_sink *s, sink_offset_cb cb, void *arg);
typedef int (*sink_state_cb)(const void *key, size_t key_len, int64_t start,
                             int64_t end, const void *blob, size_t blob_len,
                             void *arg);
int sink_load_states(struct sqlite_sink *s, int agg, sink_state_cb cb,
                     void *arg);
int sink_load_agg(struct sqlite_sink *s, int agg, int64_t *late,
                  int64_t *malformed);
typedef int (*sink_kstate_cb)(const void *key, size_t key_len,
                              const void *state, size_t state_len, void *arg);
int sink_load_kstates(struct sqlite_sink *s, int proc, sink_kstate_cb cb,
                      void *arg);

/* Whether name is a valid job or table name. */
int sink_name_ok(const char *name);
/* Whether version is a valid version name ([A-Za-z0-9_]{1,15}). */
int sink_version_ok(const char *version);

#endif /* KAPPA_STREAMS_SINK_SQLITE_H */
