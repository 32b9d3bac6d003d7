/* The job object shared by job.c (building, pipeline, feeding,
 * checkpoints) and job_run.c (reading topics through libkappa). */
#ifndef KAPPA_STREAMS_JOB_INT_H
#define KAPPA_STREAMS_JOB_INT_H

#include <kappa/client.h>
#include <kappa/streams.h>

#include "common/buf.h"
#include "common/err.h"
#include "keyed.h"
#include "sink.h"
#include "window.h"

/* Late events buffered for the next checkpoint's late tables (bytes). */
#define JOB_LATE_BUF_MAX (4u << 20)
/* Pending windows (changed, closed or merged) that force a checkpoint. */
#define JOB_PENDING_MAX      200000u
#define JOB_MAX_OPEN_DEFAULT 1000000u

enum stage_type {
    STAGE_FILTER = 1,
    STAGE_MAP,
    STAGE_FLAT_MAP,
    STAGE_REKEY,
};

struct stage {
    enum stage_type type;
    kappa_job_filter_cb filter;
    kappa_job_map_cb map;
    kappa_job_flat_map_cb flat_map;
    char *field; /* REKEY */
    void *arg;
};

struct source_spec {
    char *topic;
    int32_t *partitions; /* NULL: all */
    size_t n_partitions;
};

/* One topic partition the job reads. */
struct source {
    char *topic;
    int32_t partition;
    int64_t next_offset;  /* next offset to process; -1 before any */
    int64_t max_event_ms; /* INT64_MIN before the first event */
    int is_idle;
    /* kappa_job_run only. */
    struct kappa_client *client;
    struct kappa_record *recs;
    size_t n_recs;
    size_t i_rec;
    int64_t high_watermark;
    int64_t end_offset; /* exit_at_end target */
};

struct job_agg {
    struct kappa_agg_spec spec; /* strings below */
    char *table;
    char *key_constant;
    char *key_field;
    char *value_field;
    struct wstore store;
};

struct job_proc {
    char *table;
    char *key_field; /* NULL: the event key */
    kappa_job_process_cb cb;
    void *arg;
    struct kmap map;
};

struct job_view {
    char *name;
    char *sql;
};

struct kappa_job {
    char name[KAPPA_JOB_NAME_MAX + 1];
    char version[KAPPA_JOB_VERSION_MAX + 1]; /* "" for none */
    int instance;
    int instances;           /* 1 for a single instance */
    char ckey[SINK_KEY_MAX]; /* checkpoint key, set by kappa_job_open */
    enum kappa_stream_format format;
    char errmsg[KAPPA_ERRMSG_SIZE];
    int failed; /* sticky: state no longer matches the offsets */
    int is_open;

    struct source_spec specs[KAPPA_JOB_SOURCES_MAX];
    size_t n_specs;
    enum kappa_job_start start;
    int64_t start_timestamp_ms;
    char *time_field;
    int64_t out_of_orderness_ms;

    struct stage stages[KAPPA_JOB_STAGES_MAX];
    size_t n_stages;
    struct job_agg aggs[KAPPA_JOB_AGGS_MAX];
    size_t n_aggs;
    struct wlimit limit;
    kappa_job_late_cb late_cb;
    void *late_arg;
    struct job_proc procs[KAPPA_JOB_PROCS_MAX]; /* job_ext.c */
    size_t n_procs;
    struct job_view views[KAPPA_JOB_VIEWS_MAX];
    size_t n_views;

    char *db_path;
    char *pg_conninfo; /* set: the PostgreSQL sink, whatever db_path says */
    int late_tables;
    const struct sink_ops *sink_ops; /* with sink, while open */
    struct sink *sink;

    struct source *sources; /* [n_sources], KAPPA_JOB_SOURCES_MAX at most */
    size_t n_sources;
    size_t last_source; /* lookup cache for kappa_job_feed */

    int64_t watermark_ms;     /* never decreases */
    int64_t min_max_event_ms; /* min over active sources, cached */
    struct kappa_job_stats stats;
    int64_t records_since_checkpoint;

    /* Per input record. */
    struct source *cur;
    int64_t cur_offset;
    int64_t cur_seq;  /* events of the record so far (flat-map) */
    int64_t cur_emit; /* processor rows of the record so far */

    struct buf late_buf;
    struct buf proc_buf; /* processor rows for the next checkpoint */
    struct buf scratch;  /* state encoding */
};

/* Sets errmsg and returns rv. */
int job_error(struct kappa_job *job, int rv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Finds or adds a source; NULL with errmsg set when full or out of
 * memory. */
struct source *job_source(struct kappa_job *job, const char *topic,
                          int32_t partition);
/* kappa_job_feed for a known source. */
int job_feed_source(struct kappa_job *job, struct source *src,
                    const struct kappa_record *r);
/* Marks a source idle or active and recomputes the watermark. */
void job_set_source_idle(struct kappa_job *job, struct source *src,
                         int is_idle);
/* Whether a checkpoint is due for size reasons (pending windows, late
 * buffer). */
int job_checkpoint_due(const struct kappa_job *job);

/* job_ext.c: versions, instances, views and keyed processors. */

/* Sets job->ckey (NAME[@VERSION][#INSTANCE]). */
void job_ext_key(struct kappa_job *job);
/* Right after the sink opened: names tables by version and instance. */
void job_ext_layout(struct kappa_job *job);
/* After the aggregation tables: the layout, processor tables, views and
 * the version's registration (SQLite sink only; errors for another sink
 * when the job uses them). */
int job_ext_open(struct kappa_job *job);
/* Whether this instance reads partition p. */
int job_ext_owns(const struct kappa_job *job, int32_t partition);
/* Runs the processors on an event that reached the end of the pipeline. */
int job_ext_process(struct kappa_job *job, const struct kappa_event *ev,
                    void *doc, int64_t t);
/* Inside a checkpoint transaction: changed states and buffered rows. */
int job_ext_write(struct kappa_job *job);
/* After a committed checkpoint. */
void job_ext_commit_done(struct kappa_job *job);
/* Loading the processors' committed state. */
int job_ext_load(struct kappa_job *job);
/* Whether the processors' buffers force a checkpoint. */
int job_ext_due(const struct kappa_job *job);
void job_ext_free(struct kappa_job *job);

#endif /* KAPPA_STREAMS_JOB_INT_H */
