/* The sink interface: where a job writes its results and its checkpoint
 * (SQLite: sink_sqlite.c, PostgreSQL: sink_pg.c), as a vtable so job.c does
 * not depend on one database. */
#ifndef KAPPA_STREAMS_SINK_H
#define KAPPA_STREAMS_SINK_H

#include <stddef.h>
#include <stdint.h>

#include "sink_sqlite.h" /* struct sink_row, sink_offset_cb, sink_state_cb */

/* An open sink, seen only through sink_ops (an opaque handle: the SQLite
 * sink's functions cannot be called on it by mistake; see
 * sink_sqlite_of). */
struct sink;

/* Every operation has the meaning of the sink_sqlite.h function of the same
 * name; s is the object the open call returned. Writes happen between begin
 * and commit. Within one transaction a sink may apply all deletions before
 * all upserts, so a caller deletes a window before it upserts one with the
 * same (agg, key, start), upserts each window at most once, and never
 * upserts then deletes the same window (job.c's write_checkpoint holds to
 * this). */
struct sink_ops {
    const char *kind; /* "sqlite", "postgresql" */
    void (*close)(struct sink *s);
    const char *(*errmsg)(const struct sink *s);
    int (*add_table)(struct sink *s, const char *table,
                     enum kappa_agg_kind kind, int late_table);
    int (*reset)(struct sink *s);
    int (*begin)(struct sink *s);
    int (*commit)(struct sink *s);
    void (*rollback)(struct sink *s);
    int (*put_row)(struct sink *s, int agg, const struct sink_row *r);
    int (*del_row)(struct sink *s, int agg, const void *key, size_t key_len,
                   int64_t start);
    int (*put_state)(struct sink *s, int agg, const void *key, size_t key_len,
                     int64_t start, int64_t end, const void *blob,
                     size_t blob_len);
    int (*del_state)(struct sink *s, int agg, const void *key, size_t key_len,
                     int64_t start);
    int (*put_late)(struct sink *s, int agg, const char *topic,
                    int32_t partition, int64_t offset, int64_t seq,
                    const void *key, size_t key_len, int64_t event_ms);
    int (*put_offset)(struct sink *s, const char *topic, int32_t partition,
                      int64_t next_offset, int64_t max_event_ms);
    int (*put_job)(struct sink *s, const struct kappa_job_stats *st);
    int (*put_agg)(struct sink *s, int agg, int64_t late, int64_t malformed);
    int (*load_job)(struct sink *s, struct kappa_job_stats *st, int *found);
    int (*load_offsets)(struct sink *s, sink_offset_cb cb, void *arg);
    int (*load_states)(struct sink *s, int agg, sink_state_cb cb, void *arg);
    int (*load_agg)(struct sink *s, int agg, int64_t *late, int64_t *malformed);
};

extern const struct sink_ops sink_sqlite_ops;
extern const struct sink_ops sink_pg_ops;

/* Opens the PostgreSQL sink when pg_conninfo is not NULL, else the SQLite
 * database at sqlite_path. On success *ops and *out are set (close with
 * (*ops)->close(*out)); on failure returns KAPPA_EIO or KAPPA_ENOMEM with a
 * message in errmsg (KAPPA_ERRMSG_SIZE) that never contains the conninfo
 * (it may hold a password). */
int sink_open_any(const char *sqlite_path, const char *pg_conninfo,
                  const char *job, const struct sink_ops **ops,
                  struct sink **out, char *errmsg);
/* The SQLite sink behind s, or NULL when s is another kind (for features
 * only the SQLite sink has). */
struct sqlite_sink *sink_sqlite_of(const struct sink_ops *ops, struct sink *s);

#endif /* KAPPA_STREAMS_SINK_H */
