/* Consumer side of kappa-bench: read throughput, and end-to-end latency
 * from the send time stamped into each value by the e2e producer.
 *
 * Happy path: bench_consumer_assign reads every partition's watermarks and
 * assigns it from the beginning (consume: the target is the sum of the high
 * watermarks at start, or --records if smaller) or from its high watermark
 * (e2e: only records produced by this run are read). bench_consumer_run calls
 * kappa_consume in a loop and counts records and value bytes; in e2e mode
 * it records consume time - stamped intended send time per record.
 *
 * Failure modes: an error event for a partition is counted and that
 * partition stops (the client's rule); kappa_consume errors are counted and
 * the loop goes on; BENCH_IDLE_TIMEOUT_MS without a record ends the run with
 * an error. In e2e mode a value shorter than 8 bytes, or with a stamp that
 * is not from this run (another producer on the topic), is counted in
 * n_foreign and left out of the latency. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* Stamps older than this before the run started are not from this run. */
#define STAMP_AGE_MAX_NS (60 * BENCH_NS_PER_S)
/* kappa_consume waits this long for records. */
#define CONSUME_WAIT_MS 100

struct bench_consumer {
    const struct bench_opts *o;
    struct kappa_client *client;
    int is_e2e;
    int32_t partitions;
    int64_t target; /* consume: records to read */
    int64_t start_ns;
    int64_t measure_ns; /* start + warmup */
    int64_t last_ns;    /* last measured record */
    int64_t n_measured;
    int64_t n_bytes;
    int64_t n_errors;
    int64_t n_foreign;
    _Atomic int64_t n_consumed; /* every record, warmup included */
    atomic_int is_producer_done;
    struct kappa_record recs[BENCH_CONSUME_BATCH_MAX];
    struct bench_hist hist;
};

struct bench_consumer *bench_consumer_new(const struct bench_opts *o,
                                          struct kappa_client *c, int is_e2e)
{
    struct bench_consumer *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        return NULL;
    }
    k->o = o;
    k->client = c;
    k->is_e2e = is_e2e;
    bench_hist_init(&k->hist);
    return k;
}

void bench_consumer_free(struct bench_consumer *k)
{
    free(k);
}

void bench_consumer_set_start(struct bench_consumer *k, int64_t start_ns)
{
    k->start_ns = start_ns;
}

int64_t bench_consumer_count(const struct bench_consumer *k)
{
    return atomic_load(&k->n_consumed);
}

void bench_consumer_producer_done(struct bench_consumer *k)
{
    atomic_store(&k->is_producer_done, 1);
}

/* Sets the consume target from the records available and --records. */
static int set_target(struct bench_consumer *k, int64_t available)
{
    char a[32];
    char b[32];
    if (available <= 0) {
        bench_err("topic %s is empty (produce first, e.g. with --create "
                  "--records N)",
                  k->o->topic);
        return 1;
    }
    k->target = available;
    if (k->o->n_records > 0 && k->o->n_records < available) {
        k->target = k->o->n_records;
    } else if (k->o->n_records > available) {
        bench_err("only %s records in %s, reading those instead of %s",
                  bench_fmt_count(a, sizeof(a), available), k->o->topic,
                  bench_fmt_count(b, sizeof(b), k->o->n_records));
    }
    return 0;
}

int bench_consumer_assign(struct bench_consumer *k, int32_t partitions)
{
    int64_t available = 0;
    k->partitions = partitions;
    for (int32_t i = 0; i < partitions; i++) {
        int64_t low = 0;
        int64_t high = 0;
        int rv = kappa_watermarks(k->client, k->o->topic, i, &low, &high,
                                  BENCH_TIMEOUT_MS);
        if (rv != 0) {
            bench_err("watermarks of %s/%d: %s: %s", k->o->topic, (int)i,
                      kappa_err_name(rv), kappa_last_error(k->client));
            return rv;
        }
        available += high - low;
        int64_t offset = k->is_e2e ? high : KAPPA_OFFSET_BEGINNING;
        rv = kappa_assign(k->client, k->o->topic, i, offset);
        if (rv != 0) {
            bench_err("assign %s/%d: %s: %s", k->o->topic, (int)i,
                      kappa_err_name(rv), kappa_last_error(k->client));
            return rv;
        }
    }
    return k->is_e2e ? 0 : set_target(k, available);
}

static void on_record(struct bench_consumer *k, const struct kappa_record *r,
                      int64_t now_ns)
{
    if (!k->is_e2e) {
        if (now_ns >= k->measure_ns) {
            k->n_measured++;
            k->n_bytes += (int64_t)r->value_len;
            k->last_ns = now_ns;
        }
        return;
    }
    int64_t stamp_ns;
    if (r->value == NULL || r->value_len < sizeof(stamp_ns)) {
        k->n_foreign++;
        return;
    }
    memcpy(&stamp_ns, r->value, sizeof(stamp_ns));
    if (stamp_ns > now_ns || stamp_ns < k->start_ns - STAMP_AGE_MAX_NS) {
        k->n_foreign++;
        return;
    }
    /* As in produce.c: throughput by receive time, latency by send time. */
    if (now_ns >= k->measure_ns) {
        k->n_measured++;
        k->n_bytes += (int64_t)r->value_len;
        k->last_ns = now_ns;
    }
    if (stamp_ns >= k->measure_ns) {
        bench_hist_record(&k->hist, now_ns - stamp_ns);
    }
}

static void on_batch(struct bench_consumer *k, size_t n, int64_t now_ns)
{
    int64_t n_ok = 0;
    for (size_t i = 0; i < n; i++) {
        const struct kappa_record *r = &k->recs[i];
        if (r->err != 0) {
            k->n_errors++;
            bench_err("consume %s/%d: %s (partition stops)",
                      r->topic != NULL ? r->topic : "?", (int)r->partition,
                      kappa_err_name(r->err));
            continue;
        }
        on_record(k, r, now_ns);
        n_ok++;
    }
    atomic_fetch_add(&k->n_consumed, n_ok);
}

static int is_finished(const struct bench_consumer *k,
                       const struct bench_producer *p)
{
    int64_t consumed = bench_consumer_count(k);
    if (!k->is_e2e) {
        return consumed >= k->target;
    }
    return atomic_load(&k->is_producer_done) &&
           consumed + k->n_foreign >= bench_producer_acked(p);
}

static void progress(struct bench_consumer *k, struct bench_progress *prog,
                     int64_t now_ns)
{
    if (!bench_progress_is_due(prog, now_ns)) {
        return;
    }
    char extra[96];
    char a[32];
    snprintf(extra, sizeof(extra), "target %s  errors %lld",
             bench_fmt_count(a, sizeof(a), k->target), (long long)k->n_errors);
    size_t record_bytes = k->o->record_bytes;
    if (!k->is_e2e && k->n_measured > 0) {
        record_bytes = (size_t)(k->n_bytes / k->n_measured);
    }
    bench_progress_tick(prog, now_ns, bench_consumer_count(k), record_bytes,
                        extra);
}

int bench_consumer_run(struct bench_consumer *k, const struct bench_producer *p)
{
    const struct bench_opts *o = k->o;
    struct bench_progress prog;
    if (k->start_ns == 0) {
        k->start_ns = bench_now_ns();
    }
    k->measure_ns = k->start_ns + (int64_t)(o->warmup_s * 1e9);
    int64_t stop_ns = INT64_MAX;
    if (!k->is_e2e && o->duration_s > 0) {
        stop_ns = k->measure_ns + (int64_t)(o->duration_s * 1e9);
    }
    /* In e2e mode the producer thread prints the progress line. */
    bench_progress_init(&prog, k->is_e2e ? NULL : "consume", k->start_ns);
    int64_t active_ns = k->start_ns;
    while (!bench_stop && !is_finished(k, p)) {
        size_t n = 0;
        int rv = kappa_consume(k->client, CONSUME_WAIT_MS, k->recs,
                               BENCH_CONSUME_BATCH_MAX, &n);
        int64_t now = bench_now_ns();
        if (rv != 0) {
            if (k->n_errors++ == 0) {
                bench_err("consume: %s: %s", kappa_err_name(rv),
                          kappa_last_error(k->client));
            }
            n = 0;
        }
        if (n > 0) {
            on_batch(k, n, now);
            active_ns = now;
        } else if (now - active_ns > BENCH_IDLE_TIMEOUT_MS * BENCH_NS_PER_MS) {
            bench_err("consume: no record for %d s, stopping",
                      BENCH_IDLE_TIMEOUT_MS / 1000);
            k->n_errors++;
            return KAPPA_ETIMEDOUT;
        }
        progress(k, &prog, now);
        if (now >= stop_ns) {
            break;
        }
    }
    return 0;
}

void bench_consumer_result(const struct bench_consumer *k,
                           struct bench_result *r)
{
    r->mode = k->is_e2e ? "e2e" : "consume";
    r->partitions = k->partitions;
    r->record_bytes = k->o->record_bytes;
    if (!k->is_e2e && k->n_measured > 0) {
        r->record_bytes = (size_t)(k->n_bytes / k->n_measured);
    }
    r->n_records = k->n_measured;
    r->n_bytes = k->n_bytes;
    r->seconds = 0;
    if (k->n_measured > 0) {
        r->seconds = (double)(k->last_ns - k->measure_ns) / 1e9;
    }
    r->n_errors = k->n_errors;
    r->latency = k->is_e2e ? &k->hist : NULL;
    r->latency_label = k->is_e2e ? "intended send -> consumed" : NULL;
    r->ack_latency = NULL;
    if (k->n_foreign > 0) {
        char a[32];
        bench_err("%s records were not stamped by this run (ignored)",
                  bench_fmt_count(a, sizeof(a), k->n_foreign));
    }
}
