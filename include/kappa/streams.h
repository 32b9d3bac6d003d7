/* libkappa_streams: stream jobs that compute results by replaying the log.
 *
 * A job reads one or more topics from a start position, passes every record
 * through a pipeline of stages (filter, map, flat-map, re-key) and feeds the
 * resulting events into keyed, event-time windowed aggregations. Results go
 * to a SQLite database as upserts keyed by (key, window_start); the input
 * offsets, the watermark and the open windows' partial aggregates are
 * written in the same transaction, so a job killed at any moment and
 * restarted from its committed checkpoint produces exactly the output of a
 * run that never crashed (docs/streams.md explains why).
 *
 * Lifetimes: a job is built with kappa_job_new and the kappa_job_add_* /
 * kappa_job_set_* calls (all copy their string arguments; callback args are
 * borrowed until kappa_job_free), then driven either by kappa_job_run (reads
 * the topics through libkappa) or by kappa_job_open + kappa_job_feed +
 * kappa_job_checkpoint (the caller supplies records, used by tests and
 * benchmarks). A job is not thread-safe.
 *
 * Every call returns 0 or a positive code from <kappa/errors.h>;
 * kappa_job_errmsg() gives a message with context for the last failure. */
#ifndef KAPPA_STREAMS_H
#define KAPPA_STREAMS_H

#include <stddef.h>
#include <stdint.h>

#include <kappa/client.h>
#include <kappa/errors.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Limits. */
#define KAPPA_JOB_NAME_MAX                                                     \
    63 /* job and table names: [A-Za-z_][A-Za-z0-9_]*                          \
        */
#define KAPPA_JOB_SOURCES_MAX    256     /* topic partitions read by one job */
#define KAPPA_JOB_STAGES_MAX     16      /* pipeline stages */
#define KAPPA_JOB_AGGS_MAX       16      /* aggregations per job */
#define KAPPA_JOB_FLAT_MAP_MAX   1024    /* events one flat-map call may emit */
#define KAPPA_STREAM_KEY_MAX     1024    /* bytes of an aggregation key */
#define KAPPA_STREAM_FIELD_DEPTH 8       /* components of a dotted field path */
#define KAPPA_JOB_VERSION_MAX    15      /* version names: [A-Za-z0-9_]{1,15} */
#define KAPPA_JOB_INSTANCES_MAX  256     /* instances of one job version */
#define KAPPA_JOB_VIEWS_MAX      8       /* derived views per job */
#define KAPPA_JOB_VIEW_SQL_MAX   4096    /* bytes of a view's SELECT */
#define KAPPA_JOB_PROCS_MAX      4       /* keyed processors per job */
#define KAPPA_PROC_STATE_MAX     4096    /* bytes of one key's state */
#define KAPPA_PROC_ROW_MAX       4096    /* bytes of one emitted row value */
#define KAPPA_PROC_EMIT_MAX      16      /* rows one processor call may emit */
#define KAPPA_PROC_KEYS_MAX      1000000 /* keys with state, per processor */

/* ---- Values and fields ---------------------------------------------------
 *
 * Record values are JSON objects (parsed with jansson) or msgpack maps (read
 * in place, without copying). A field is named by a key or a dotted path
 * ("geo.country"). */
enum kappa_stream_format {
    KAPPA_FORMAT_JSON = 1,
    KAPPA_FORMAT_MSGPACK = 2,
};

enum kappa_field_type {
    KAPPA_FIELD_NULL = 1,
    KAPPA_FIELD_BOOL,
    KAPPA_FIELD_INT,
    KAPPA_FIELD_DOUBLE,
    KAPPA_FIELD_STRING,
    KAPPA_FIELD_OTHER, /* array, map, binary, extension */
};

struct kappa_field {
    enum kappa_field_type type;
    int64_t i;       /* INT and BOOL */
    double d;        /* DOUBLE, and INT converted */
    const char *str; /* STRING: not NUL-terminated, borrowed from the value
                        (msgpack) or from the parse (JSON) */
    size_t str_len;
};

/* Looks up a field of one value. For JSON the string a STRING field points to
 * lives in scratch storage of the calling thread, valid until the next call
 * of this function on the same thread; for msgpack it points into value.
 * Returns 0, KAPPA_ENOENT (no such field) or KAPPA_EPROTO (the value is not
 * a well-formed JSON object / msgpack map, or the path crosses a non-map). */
int kappa_stream_field(enum kappa_stream_format format, const void *value,
                       size_t value_len, const char *name,
                       struct kappa_field *out);

/* Parses "json" or "msgpack"; returns 0 if unknown. */
enum kappa_stream_format kappa_stream_format_parse(const char *name);

/* ---- Events and pipeline callbacks -------------------------------------- */

/* An event flowing through the pipeline: the input record's coordinates and
 * a key and value. All pointers are borrowed for the duration of the
 * callback that receives the event. */
struct kappa_event {
    const void *key; /* NULL for a null key */
    size_t key_len;
    const void *value;
    size_t value_len;
    int64_t timestamp_ms; /* the record's log timestamp */
    const char *topic;
    int32_t partition;
    int64_t offset;
};

/* Returns non-zero to keep the event. */
typedef int (*kappa_job_filter_cb)(const struct kappa_event *ev, void *arg);
/* Fills *out (initialised as a copy of *in); out->key/value may point to
 * memory owned by the callback, valid until its next call. Returns 0, or a
 * code: the event is then dropped and counted as rejected. */
typedef int (*kappa_job_map_cb)(const struct kappa_event *in,
                                struct kappa_event *out, void *arg);

struct kappa_emitter;
/* Inside a flat-map callback: passes one event on (its buffers need to live
 * only during this call). Returns 0, KAPPA_ETOOBIG past
 * KAPPA_JOB_FLAT_MAP_MAX events, or an error of a later stage. */
int kappa_emit(struct kappa_emitter *em, const struct kappa_event *ev);
typedef int (*kappa_job_flat_map_cb)(const struct kappa_event *in,
                                     struct kappa_emitter *em, void *arg);

/* Side output for late events: called once per aggregation that rejected
 * the event as late (at-least-once across crashes; the SQLite late table,
 * when enabled, is exactly-once). */
typedef void (*kappa_job_late_cb)(const struct kappa_event *ev,
                                  const char *agg_table, int64_t event_ms,
                                  void *arg);

/* ---- Aggregations ------------------------------------------------------- */
enum kappa_window_type {
    KAPPA_WINDOW_TUMBLING = 1, /* [k*size, (k+1)*size) */
    KAPPA_WINDOW_HOPPING,      /* [k*slide, k*slide+size), size % slide == 0 */
    KAPPA_WINDOW_SESSION,      /* events closer than gap apart share one */
};

enum kappa_agg_kind {
    KAPPA_AGG_COUNT = 1,
    KAPPA_AGG_SUM,
    KAPPA_AGG_MIN,
    KAPPA_AGG_MAX,
    KAPPA_AGG_AVG,
    KAPPA_AGG_DISTINCT, /* exact count of distinct values of value_field */
};

struct kappa_agg_spec {
    const char *table; /* output table name, required */
    enum kappa_agg_kind kind;
    enum kappa_window_type window;
    int64_t size_ms;  /* TUMBLING and HOPPING */
    int64_t slide_ms; /* HOPPING */
    int64_t gap_ms;   /* SESSION */
    /* The key: key_constant if set, else the field key_field of the value if
     * set, else the event key (after re-key stages). */
    const char *key_constant;
    const char *key_field;
    const char *value_field; /* SUM, MIN, MAX, AVG (numeric), DISTINCT */
    int64_t allowed_lateness_ms;
    /* Distinct values kept per window; past it the job stops with
     * KAPPA_ETOOBIG (0: 1,000,000). */
    uint32_t distinct_max;
};

/* ---- Job ---------------------------------------------------------------- */
struct kappa_job;

enum kappa_job_start {
    KAPPA_START_COMMITTED = 1, /* checkpoint; offset 0 where there is none */
    KAPPA_START_EARLIEST,      /* offset 0; clears the job's state and output */
    KAPPA_START_LATEST,        /* the end; clears the job's state and output */
    KAPPA_START_TIMESTAMP,     /* first record >= ts; clears as EARLIEST */
};

/* name: [A-Za-z_][A-Za-z0-9_]{0,62}. Returns 0, KAPPA_EINVAL or
 * KAPPA_ENOMEM (then *out is NULL). */
int kappa_job_new(const char *name, enum kappa_stream_format format,
                  struct kappa_job **out);
/* Closes the sink and frees the job. NULL is a no-op. */
void kappa_job_free(struct kappa_job *job);
const char *kappa_job_errmsg(const struct kappa_job *job);

/* Reads topic: all its partitions (n_partitions 0) or the listed ones. */
int kappa_job_add_source(struct kappa_job *job, const char *topic,
                         const int32_t *partitions, size_t n_partitions);
int kappa_job_set_start(struct kappa_job *job, enum kappa_job_start start,
                        int64_t timestamp_ms);
/* Event time: an integer field in milliseconds (NULL: the record's log
 * timestamp). Events without it are counted as malformed. */
int kappa_job_set_time_field(struct kappa_job *job, const char *field);
/* Watermark = min over partitions of (max event time seen) - bound. */
int kappa_job_set_out_of_orderness(struct kappa_job *job, int64_t bound_ms);
/* Upper bound on open windows over all aggregations (default 1,000,000);
 * past it the job stops with KAPPA_ETOOBIG. */
int kappa_job_set_max_open_windows(struct kappa_job *job, uint32_t max);

/* Pipeline stages, applied in the order added. */
int kappa_job_filter(struct kappa_job *job, kappa_job_filter_cb cb, void *arg);
int kappa_job_map(struct kappa_job *job, kappa_job_map_cb cb, void *arg);
int kappa_job_flat_map(struct kappa_job *job, kappa_job_flat_map_cb cb,
                       void *arg);
/* Re-key: the event key becomes the string or number in field (events
 * without it are counted as malformed). Within one job instance this only
 * changes the grouping; no data moves between instances. */
int kappa_job_rekey(struct kappa_job *job, const char *field);

int kappa_job_add_aggregate(struct kappa_job *job,
                            const struct kappa_agg_spec *spec);
void kappa_job_set_late_cb(struct kappa_job *job, kappa_job_late_cb cb,
                           void *arg);

/* The SQLite sink: path of the database (created if missing). late_tables:
 * also write every late event into TABLE_late. */
int kappa_job_set_sqlite(struct kappa_job *job, const char *path,
                         int late_tables);
/* The PostgreSQL sink (libpq): conninfo is a libpq connection string or URI
 * ("host=/run/pg port=5432 dbname=kappa"). Same tables, upserts and
 * exactly-once checkpoints as SQLite, each checkpoint one PostgreSQL
 * transaction; takes precedence over kappa_job_set_sqlite. */
int kappa_job_set_postgres(struct kappa_job *job, const char *conninfo,
                           int late_tables);

/* ---- Versions, instances, derived views -------------------------------
 *
 * Reprocessing the Kappa way (docs/streams.md, "Versions"): a job run with a
 * version writes every output T into its own table T_VERSION, with its own
 * checkpoints, while readers keep reading the view T of the promoted
 * version. Instances split the input partitions statically (partition p of
 * every topic goes to instance p % instances) and checkpoint their own
 * share; with more than one instance every output T is a view summing the
 * instances' partial rows (table T_parts). */

/* version: [A-Za-z0-9_]{1,15}; NULL or "" for an unversioned job (tables
 * named as the aggregations, slice-1 layout). */
int kappa_job_set_version(struct kappa_job *job, const char *version);
/* This process is instance `instance` (0-based) of `instances` (1 to
 * KAPPA_JOB_INSTANCES_MAX). A version keeps the instance count it was
 * created with: opening it with another count fails with KAPPA_EINVAL. */
int kappa_job_set_instance(struct kappa_job *job, int instance, int instances);
/* A derived output: a SQLite view `name` defined by select_sql, in which
 * {T} stands for the job's output T (an aggregation table, T_late, or a
 * processor table) and is replaced by its versioned table. The view is
 * versioned and promoted with the tables. */
int kappa_job_add_view(struct kappa_job *job, const char *name,
                       const char *select_sql);

/* ---- Keyed processors ---------------------------------------------------
 *
 * A processor sees every event that reaches the end of the pipeline (in
 * partition order) together with the state of its key: bytes it owns and
 * may replace (at most KAPPA_PROC_STATE_MAX; empty means none). It may emit
 * rows (a value of at most KAPPA_PROC_ROW_MAX bytes, e.g. JSON) into its
 * table TABLE(topic, partition, offset, seq, key, event_ms, value), keyed
 * by the input record and the row's index. States and rows are committed
 * with the checkpoint, so they are exactly-once like the aggregations.
 * State is bounded by the number of keys (KAPPA_PROC_KEYS_MAX). */
struct kappa_proc;
/* Returns 0, or a code: the event then counts as malformed (what the call
 * did to the state and the rows stays). */
typedef int (*kappa_job_process_cb)(const struct kappa_event *ev,
                                    int64_t event_ms, struct kappa_proc *p,
                                    void *arg);
/* Inside the callback: the key's current state (borrowed until the next
 * kappa_proc_set_state or the end of the callback). */
void kappa_proc_state(const struct kappa_proc *p, const void **state,
                      size_t *len);
/* Replaces the key's state (copied). Returns 0, KAPPA_ETOOBIG or
 * KAPPA_ENOMEM. */
int kappa_proc_set_state(struct kappa_proc *p, const void *state, size_t len);
/* Emits one row (copied). Returns 0, KAPPA_ETOOBIG (value too long, or more
 * than KAPPA_PROC_EMIT_MAX rows for this event) or KAPPA_ENOMEM. */
int kappa_proc_emit(struct kappa_proc *p, const void *value, size_t len);
/* key_field: the key is this field of the value (string or integer); NULL:
 * the event key. */
int kappa_job_add_processor(struct kappa_job *job, const char *table,
                            const char *key_field, kappa_job_process_cb cb,
                            void *arg);

/* ---- Driving the job ---------------------------------------------------- */

struct kappa_job_progress {
    int64_t records;      /* input records processed by this run */
    double records_per_s; /* over the last interval */
    int64_t lag;          /* records between positions and high watermarks */
    double eta_s;         /* lag / rate, -1 when unknown */
    size_t n_sources;
    const char *const *topics;      /* [n_sources] */
    const int32_t *partitions;      /* [n_sources] */
    const int64_t *positions;       /* [n_sources] next offsets */
    const int64_t *high_watermarks; /* [n_sources] */
};
typedef void (*kappa_job_progress_cb)(const struct kappa_job_progress *p,
                                      void *arg);

struct kappa_job_run_opts {
    const char *bootstrap;      /* host:port */
    int exit_at_end;            /* stop once every partition reached the high
                                   watermark it had when the run started */
    int64_t checkpoint_records; /* 0: 500,000 */
    int64_t checkpoint_ms;      /* 0: 1000 */
    int64_t progress_ms;        /* 0: 1000 */
    const volatile int *stop;   /* set non-zero (e.g. from a signal handler)
                                   to stop after a final checkpoint */
    kappa_job_progress_cb progress_cb;
    void *progress_arg;
};

/* Opens the sink, resolves the start positions, reads the topics and runs
 * until an error, *opts->stop, or (exit_at_end) the end. The records of all
 * partitions are merged by (log timestamp, source order), so a replay of the
 * same log is deterministic. Returns 0 or an error (see kappa_job_errmsg). */
int kappa_job_run(struct kappa_job *job, const struct kappa_job_run_opts *opts);

/* Push mode. kappa_job_open opens the sink and loads the committed state
 * (for KAPPA_START_COMMITTED), or clears it. kappa_job_position returns the
 * next offset to feed for a partition (-1: no checkpoint). */
int kappa_job_open(struct kappa_job *job);
int64_t kappa_job_position(const struct kappa_job *job, const char *topic,
                           int32_t partition);
/* Processes one record (r->err must be 0). The record is borrowed for the
 * call. A partition must be fed in offset order. Returns 0 or an error
 * that stops the job (state limits, sink failure). */
int kappa_job_feed(struct kappa_job *job, const struct kappa_record *r);
/* Declares partition idle (1) or active (0): idle partitions do not hold
 * the watermark back. */
int kappa_job_set_idle(struct kappa_job *job, const char *topic,
                       int32_t partition, int is_idle);
/* Commits outputs, open windows and offsets in one transaction. */
int kappa_job_checkpoint(struct kappa_job *job);

struct kappa_job_stats {
    int64_t records;   /* input records since the start of the job */
    int64_t events;    /* events that reached the aggregations */
    int64_t malformed; /* undecodable values, missing fields, rejected */
    int64_t late;      /* (event, aggregation) pairs rejected as late */
    int64_t watermark_ms;
    uint32_t open_windows;
    int64_t checkpoints; /* committed by this process */
};
void kappa_job_stats(const struct kappa_job *job, struct kappa_job_stats *st);

/* Prints the checkpoint of every job in the database as one JSON document
 * to out (a FILE *): "jobs" (per checkpoint: counters, watermark, offsets)
 * and "versions" (per job version: instances, whether promoted, and per
 * partition the committed offset); with bootstrap non-NULL also the high
 * watermarks and the lag per partition and in total. */
int kappa_job_status(const char *db_path, const char *bootstrap, void *out,
                     char *errmsg, size_t errmsg_size);
/* The same as a table for people: one line per version, then its
 * partitions. */
int kappa_job_status_table(const char *db_path, const char *bootstrap,
                           void *out, char *errmsg, size_t errmsg_size);

struct kappa_promote_opts {
    const char *bootstrap; /* host:port: lag check against the brokers */
    int64_t max_lag;       /* refuse above this total lag (default 0) */
    int force;             /* skip the lag check (no broker needed) */
};

/* Points every output view NAME of the job at the tables of `version`, in
 * one transaction (readers see the old or the new version, never a mix).
 * Refused with KAPPA_EBUSY when the version's total lag (all partitions of
 * its topics, against the brokers' high watermarks now) is above max_lag,
 * unless force; KAPPA_ENOENT for an unknown version; KAPPA_EINVAL when an
 * output name is taken by a table. */
int kappa_job_promote(const char *db_path, const char *name,
                      const char *version, const struct kappa_promote_opts *o,
                      char *errmsg, size_t errmsg_size);
/* Drops the tables, views, checkpoints and state of a version that is not
 * promoted (KAPPA_EINVAL for the promoted one, KAPPA_ENOENT if unknown).
 * Stop its instances first. */
int kappa_job_retire(const char *db_path, const char *name, const char *version,
                     char *errmsg, size_t errmsg_size);

#ifdef __cplusplus
}
#endif

#endif /* KAPPA_STREAMS_H */
