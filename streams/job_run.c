/* kappa_job_run: reading the job's topics through libkappa (the status
 * of checkpoints and versions is in versions.c).
 *
 * Happy path: one client per partition (so each partition's records stay
 * valid, borrowed from its own fetch buffers, until that partition is
 * consumed again: nothing is copied); the start offsets come from the
 * checkpoint or the start position. The loop keeps one batch of records per
 * partition and always processes the record with the smallest (log
 * timestamp, source index) among the partitions' heads. It only does so
 * when every partition that is not at its end has a head, so the order, and
 * with it the watermark and every late/on-time decision, is a function of
 * the log alone: a replay, or a restart from any checkpoint, sees the same
 * sequence. A partition at its high watermark with nothing buffered is
 * idle: it does not hold the merge or the watermark back.
 *
 * Failure modes: an error record from the consumer (offset out of range,
 * corrupt data) or a fatal job error ends the run with that error and no
 * further checkpoint; the committed state stays consistent. Transport
 * errors are retried inside libkappa; meanwhile the merge waits. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "job_int.h"

#define RUN_BATCH_MAX     1024
#define RUN_FETCH_WAIT_MS "100"
#define RUN_TIMEOUT_MS    10000
#define RUN_CLOCK_EVERY   4096 /* records between clock readings */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A client named after the job; errors come back with a message in
 * errmsg (KAPPA_ERRMSG_SIZE). */
static int new_client(const char *name, const char *bootstrap,
                      const char *fetch_wait, struct kappa_client **out,
                      char *errmsg)
{
    struct kappa_conf *conf = kappa_conf_new();
    char errstr[256], id[KAPPA_JOB_NAME_MAX + 16];
    int rv;

    if (conf == NULL) {
        kappa_errmsg_printf(errmsg, "out of memory");
        return KAPPA_ENOMEM;
    }
    snprintf(id, sizeof id, "kappa-job/%s", name);
    if (kappa_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                       sizeof errstr) != 0 ||
        kappa_conf_set(conf, "client.id", id, errstr, sizeof errstr) != 0 ||
        kappa_conf_set(conf, "fetch.max.wait.ms", fetch_wait, errstr,
                       sizeof errstr) != 0 ||
        kappa_conf_set(conf, "fetch.partition.max.bytes", "4194304", errstr,
                       sizeof errstr) != 0) {
        kappa_conf_free(conf);
        kappa_errmsg_printf(errmsg, "%s", errstr);
        return KAPPA_ECONFIG;
    }
    rv = kappa_client_new(conf, out, errstr, sizeof errstr);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "client: %s", errstr);
    }
    return rv;
}

static int client_for(struct kappa_job *job, const char *bootstrap,
                      const char *fetch_wait, struct kappa_client **out)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    int rv = new_client(job->name, bootstrap, fetch_wait, out, errmsg);
    return rv != 0 ? job_error(job, rv, "%s", errmsg) : 0;
}

/* Adds the sources of every spec (all partitions of a topic, or the listed
 * ones). */
static int resolve_sources(struct kappa_job *job, struct kappa_client *admin)
{
    for (size_t k = 0; k < job->n_specs; k++) {
        const struct source_spec *sp = &job->specs[k];
        struct kappa_topic_info *ti = NULL;
        size_t n = 0;
        int rv = kappa_list_topics(admin, sp->topic, &ti, &n, RUN_TIMEOUT_MS);
        int32_t n_parts = (rv == 0 && n == 1) ? ti->partitions : 0;

        kappa_topic_info_free(ti, n);
        if (rv != 0 || n_parts <= 0) {
            return job_error(
                job, rv != 0 ? rv : KAPPA_EUNKNOWN_TOPIC, "topic %s: %s",
                sp->topic, rv != 0 ? kappa_last_error(admin) : "unknown topic");
        }
        for (int32_t p = 0; p < n_parts; p++) {
            int wanted = sp->n_partitions == 0;
            for (size_t i = 0; i < sp->n_partitions; i++) {
                wanted |= sp->partitions[i] == p;
            }
            /* Static split between instances: p goes to p % instances. */
            wanted &= p % job->instances == job->instance;
            if (wanted && job_source(job, sp->topic, p) == NULL) {
                return job->failed = KAPPA_ETOOBIG;
            }
        }
        for (size_t i = 0; i < sp->n_partitions; i++) {
            if (sp->partitions[i] < 0 || sp->partitions[i] >= n_parts) {
                return job_error(job, KAPPA_EBAD_PARTITION, "%s/%d: %s",
                                 sp->topic, sp->partitions[i],
                                 "no such partition");
            }
        }
    }
    return 0;
}

/* The offset a source starts from when it has no checkpoint. */
static int start_offset(struct kappa_job *job, struct kappa_client *admin,
                        const struct source *src, int64_t *offset)
{
    switch (job->start) {
    case KAPPA_START_LATEST:
        *offset = KAPPA_OFFSET_END;
        return 0;
    case KAPPA_START_TIMESTAMP:
        return kappa_offset_for_time(admin, src->topic, src->partition,
                                     job->start_timestamp_ms, offset,
                                     RUN_TIMEOUT_MS);
    default:
        *offset = KAPPA_OFFSET_BEGINNING;
        return 0;
    }
}

static int open_source(struct kappa_job *job, struct kappa_client *admin,
                       const char *bootstrap, struct source *src)
{
    int64_t low, offset = src->next_offset;
    int rv = 0;

    src->recs = kappa_calloc(RUN_BATCH_MAX, sizeof *src->recs);
    if (src->recs == NULL) {
        return job_error(job, KAPPA_ENOMEM, "out of memory");
    }
    rv = client_for(job, bootstrap, RUN_FETCH_WAIT_MS, &src->client);
    if (rv == 0 && offset < 0) {
        rv = start_offset(job, admin, src, &offset);
    }
    if (rv == 0) {
        rv = kappa_assign(src->client, src->topic, src->partition, offset);
    }
    if (rv == 0 && src->next_offset < 0) {
        rv = kappa_position(src->client, src->topic, src->partition,
                            &src->next_offset);
    }
    if (rv == 0) {
        rv = kappa_watermarks(admin, src->topic, src->partition, &low,
                              &src->high_watermark, RUN_TIMEOUT_MS);
    }
    if (rv != 0) {
        return job_error(job, rv, "%s/%d: %s", src->topic, src->partition,
                         src->client != NULL ? kappa_last_error(src->client)
                                             : kappa_err_str(rv));
    }
    src->end_offset = src->high_watermark;
    return 0;
}

static void close_sources(struct kappa_job *job)
{
    for (size_t k = 0; k < job->n_sources; k++) {
        struct source *src = &job->sources[k];
        kappa_client_free(src->client);
        src->client = NULL;
        kappa_free(src->recs);
        src->recs = NULL;
        src->n_recs = src->i_rec = 0;
    }
}

/* Fetches the next batch of a source whose batch is used up. */
static int refill(struct kappa_job *job, struct source *src, int timeout_ms)
{
    size_t n = 0;
    int rv =
        kappa_consume(src->client, timeout_ms, src->recs, RUN_BATCH_MAX, &n);
    if (rv != 0) {
        return job_error(job, rv, "%s/%d: %s", src->topic, src->partition,
                         kappa_last_error(src->client));
    }
    src->n_recs = n;
    src->i_rec = 0;
    for (size_t k = 0; k < n; k++) {
        if (src->recs[k].err != 0) {
            return job_error(job, src->recs[k].err, "%s/%d at %lld: %s",
                             src->topic, src->partition,
                             (long long)src->next_offset,
                             kappa_err_str(src->recs[k].err));
        }
    }
    if (n > 0 && src->recs[n - 1].high_watermark > src->high_watermark) {
        src->high_watermark = src->recs[n - 1].high_watermark;
    }
    return 0;
}

static int has_head(const struct source *src)
{
    return src->i_rec < src->n_recs;
}

static int at_end(const struct source *src)
{
    return !has_head(src) && src->next_offset >= src->high_watermark;
}

/* Makes sure every source that is not at its end has a head. Returns 0 with
 * *ready set when the merge may proceed. */
static int fill_heads(struct kappa_job *job, int *ready)
{
    *ready = 1;
    for (size_t k = 0; k < job->n_sources; k++) {
        struct source *src = &job->sources[k];
        int rv;
        if (has_head(src) || at_end(src)) {
            continue;
        }
        rv = refill(job, src, 100);
        if (rv != 0) {
            return rv;
        }
        if (!has_head(src) && !at_end(src)) {
            *ready = 0;
        }
    }
    for (size_t k = 0; k < job->n_sources; k++) {
        job_set_source_idle(job, &job->sources[k], at_end(&job->sources[k]));
    }
    return 0;
}

/* Nothing to merge: every source is at its end. Waits a little for new
 * records (live tail). */
static int poll_idle(struct kappa_job *job)
{
    int timeout = (int)(100 / (job->n_sources > 0 ? job->n_sources : 1));
    for (size_t k = 0; k < job->n_sources; k++) {
        struct source *src = &job->sources[k];
        int rv = refill(job, src, timeout > 0 ? timeout : 1);
        if (rv != 0 || has_head(src)) {
            return rv;
        }
    }
    return 0;
}

static struct source *pick(struct kappa_job *job)
{
    struct source *best = NULL;
    for (size_t k = 0; k < job->n_sources; k++) {
        struct source *src = &job->sources[k];
        if (has_head(src) &&
            (best == NULL || src->recs[src->i_rec].timestamp_ms <
                                 best->recs[best->i_rec].timestamp_ms)) {
            best = src;
        }
    }
    return best;
}

static int all_done(const struct kappa_job *job)
{
    for (size_t k = 0; k < job->n_sources; k++) {
        const struct source *src = &job->sources[k];
        if (has_head(src) || src->next_offset < src->end_offset) {
            return 0;
        }
    }
    return 1;
}

struct progress {
    int64_t last_ms;
    int64_t last_records;
    const char *topics[KAPPA_JOB_SOURCES_MAX];
    int32_t partitions[KAPPA_JOB_SOURCES_MAX];
    int64_t positions[KAPPA_JOB_SOURCES_MAX];
    int64_t hwms[KAPPA_JOB_SOURCES_MAX];
};

static void report_progress(struct kappa_job *job,
                            const struct kappa_job_run_opts *opts,
                            struct progress *pr, int64_t now)
{
    struct kappa_job_progress p;
    double dt = (double)(now - pr->last_ms) / 1000.0;

    memset(&p, 0, sizeof p);
    p.records = job->stats.records;
    p.records_per_s =
        dt > 0 ? (double)(job->stats.records - pr->last_records) / dt : 0;
    for (size_t k = 0; k < job->n_sources; k++) {
        const struct source *src = &job->sources[k];
        int64_t lag = src->high_watermark - src->next_offset;
        pr->topics[k] = src->topic;
        pr->partitions[k] = src->partition;
        pr->positions[k] = src->next_offset;
        pr->hwms[k] = src->high_watermark;
        p.lag += lag > 0 ? lag : 0;
    }
    p.eta_s = p.records_per_s > 0 ? (double)p.lag / p.records_per_s : -1;
    p.n_sources = job->n_sources;
    p.topics = pr->topics;
    p.partitions = pr->partitions;
    p.positions = pr->positions;
    p.high_watermarks = pr->hwms;
    opts->progress_cb(&p, opts->progress_arg);
    pr->last_ms = now;
    pr->last_records = job->stats.records;
}

/* The merge loop. Returns 0 at the end (exit_at_end) or on stop. */
static int run_loop(struct kappa_job *job,
                    const struct kappa_job_run_opts *opts)
{
    int64_t ckpt_records =
        opts->checkpoint_records > 0 ? opts->checkpoint_records : 500000;
    int64_t ckpt_ms = opts->checkpoint_ms > 0 ? opts->checkpoint_ms : 1000;
    int64_t progress_ms = opts->progress_ms > 0 ? opts->progress_ms : 1000;
    int64_t last_ckpt = now_ms(), now = last_ckpt;
    struct progress pr = {.last_ms = now, .last_records = job->stats.records};
    unsigned ticks = 0;
    int rv = 0, ready;

    while (rv == 0 && (opts->stop == NULL || !*opts->stop)) {
        struct source *src;
        rv = fill_heads(job, &ready);
        if (rv != 0 || !ready) {
            now = now_ms();
            goto periodic;
        }
        src = pick(job);
        if (src == NULL) {
            if (opts->exit_at_end && all_done(job)) {
                break;
            }
            rv = poll_idle(job);
            now = now_ms();
            goto periodic;
        }
        rv = job_feed_source(job, src, &src->recs[src->i_rec]);
        src->i_rec++;
        if (++ticks % RUN_CLOCK_EVERY != 0 &&
            job->records_since_checkpoint < ckpt_records) {
            continue;
        }
        now = now_ms();
    periodic:
        if (rv == 0 && job->records_since_checkpoint > 0 &&
            (job->records_since_checkpoint >= ckpt_records ||
             now - last_ckpt >= ckpt_ms)) {
            rv = kappa_job_checkpoint(job);
            last_ckpt = now;
        }
        if (opts->progress_cb != NULL && now - pr.last_ms >= progress_ms) {
            report_progress(job, opts, &pr, now);
        }
    }
    if (rv == 0) {
        rv = kappa_job_checkpoint(job);
    }
    if (opts->progress_cb != NULL) {
        report_progress(job, opts, &pr, now_ms());
    }
    return rv;
}

int kappa_job_run(struct kappa_job *job, const struct kappa_job_run_opts *opts)
{
    struct kappa_client *admin = NULL;
    int rv;

    if (opts == NULL || opts->bootstrap == NULL || job->n_specs == 0) {
        return job_error(job, KAPPA_EINVAL, "needs a bootstrap and a topic");
    }
    rv = kappa_job_open(job);
    if (rv == 0) {
        rv = client_for(job, opts->bootstrap, "0", &admin);
    }
    if (rv == 0) {
        rv = resolve_sources(job, admin);
    }
    for (size_t k = 0; k < job->n_sources && rv == 0; k++) {
        rv = open_source(job, admin, opts->bootstrap, &job->sources[k]);
    }
    kappa_client_free(admin);
    if (rv == 0) {
        rv = run_loop(job, opts);
    }
    close_sources(job);
    return rv;
}
