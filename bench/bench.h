/* kappa-bench: options, results and helpers shared by the benchmark modes. */
#ifndef KAPPA_BENCH_BENCH_H
#define KAPPA_BENCH_BENCH_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <kappa/client.h>

#include "hist.h"

#define BENCH_NS_PER_S  1000000000LL
#define BENCH_NS_PER_MS 1000000LL
/* Blocking admin calls and the final flush give up after this long. */
#define BENCH_TIMEOUT_MS 30000
/* A consumer that sees no record for this long stops with an error. */
#define BENCH_IDLE_TIMEOUT_MS 10000
/* Limits on options, checked when parsing. */
#define BENCH_RECORD_BYTES_MAX  (16 * 1024 * 1024)
#define BENCH_PARTITIONS_MAX    10000
#define BENCH_IN_FLIGHT_MAX     1024
#define BENCH_BATCH_BYTES_MAX   (256 * 1024 * 1024)
#define BENCH_CONSUME_BATCH_MAX 4096

enum bench_mode { BENCH_PRODUCE, BENCH_CONSUME, BENCH_E2E };

struct bench_opts {
    enum bench_mode mode;
    const char *brokers;
    const char *topic;
    int is_create;
    int32_t partitions;  /* for --create; 0: not given */
    size_t record_bytes; /* value size of every produced record */
    int64_t n_records;   /* 0: not given */
    double duration_s;   /* 0: not given */
    const char *acks;    /* "0", "1" or "all" */
    int in_flight;       /* 0: client default */
    int64_t batch_bytes; /* 0: client default */
    int linger_ms;       /* -1: client default */
    const char *compression;
    double rate_per_s; /* records/s target; 0: as fast as possible */
    double warmup_s;
    int is_json;
};

/* What a run measured, for the report. */
struct bench_result {
    const char *mode;
    int32_t partitions;
    size_t record_bytes;
    int64_t n_records; /* measured: after the warmup, without errors */
    int64_t n_bytes;   /* value bytes of those records */
    double seconds;    /* measurement window */
    int64_t n_errors;
    const struct bench_hist *latency; /* JSON lat_ms; NULL: not measured */
    const char *latency_label;        /* what latency measures */
    const struct bench_hist
        *ack_latency; /* e2e: producer acks, human table only */
};

/* Set by SIGINT/SIGTERM: loops stop early and report what they measured. */
extern volatile sig_atomic_t bench_stop;

static inline int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * BENCH_NS_PER_S + ts.tv_nsec;
}

/* Prints "kappa-bench: " and the message to stderr. */
void bench_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Formats v with thousands separators into buf (at least 32 bytes). */
const char *bench_fmt_count(char *buf, size_t size, int64_t v);

/* Creates a client configured from the options; role goes into client.id.
 * Returns 0 or non-zero after printing the reason. */
int bench_client_new(const struct bench_opts *o, const char *role,
                     struct kappa_client **out);

/* Partition count of the topic (after creating it with --create). */
int bench_topic_prepare(const struct bench_opts *o, struct kappa_client *c,
                        int32_t *partitions);

/* Once-per-second progress line on stderr. */
struct bench_progress {
    const char *label;
    int64_t start_ns;
    int64_t next_ns;
    int64_t last_ns;
    int64_t last_count;
};

void bench_progress_init(struct bench_progress *p, const char *label,
                         int64_t start_ns);
/* Whether bench_progress_tick would print now (to skip formatting). */
int bench_progress_is_due(const struct bench_progress *p, int64_t now_ns);
/* Prints a line when a second has passed since the last one. count is the
 * running total of records done; extra is appended as is (may be NULL). */
void bench_progress_tick(struct bench_progress *p, int64_t now_ns,
                         int64_t count, size_t record_bytes, const char *extra);

/* ---- produce.c ---------------------------------------------------------- */
struct bench_producer;

/* Prepares a producer on client c (borrowed until bench_producer_free). With
 * is_stamped, the first 8 bytes of every value carry the record's intended
 * send time (CLOCK_MONOTONIC ns, host byte order). Returns NULL on ENOMEM. */
struct bench_producer *bench_producer_new(const struct bench_opts *o,
                                          struct kappa_client *c,
                                          int is_stamped);
void bench_producer_free(struct bench_producer *p);
/* Makes bench_producer_run start its clock at start_ns instead of when called
 * (e2e: producer and consumer share one measurement window). */
void bench_producer_set_start(struct bench_producer *p, int64_t start_ns);
/* Produces n_records (or for warmup + duration seconds) at the target rate,
 * then flushes. Returns 0, or non-zero after a fatal error (printed). */
int bench_producer_run(struct bench_producer *p, int64_t n_records,
                       int is_quiet);
/* Fills r with what the producer measured (latency: intended send time to
 * delivery report). r borrows p's histogram. */
void bench_producer_result(const struct bench_producer *p,
                           struct bench_result *r);
/* Records acknowledged without error so far (any thread). */
int64_t bench_producer_acked(const struct bench_producer *p);
/* Shows the e2e consumer's count in the progress line (k borrowed until
 * bench_producer_free). */
struct bench_consumer;
void bench_producer_watch(struct bench_producer *p,
                          const struct bench_consumer *k);

/* ---- consume.c ---------------------------------------------------------- */
struct bench_consumer;

struct bench_consumer *bench_consumer_new(const struct bench_opts *o,
                                          struct kappa_client *c, int is_e2e);
void bench_consumer_free(struct bench_consumer *k);
/* Assigns every partition of the topic: from the beginning (consume) or from
 * the current high watermark (e2e). Sets the record target of a consume
 * run. Returns 0 or non-zero after printing the reason. */
int bench_consumer_assign(struct bench_consumer *k, int32_t partitions);
/* As bench_producer_set_start. */
void bench_consumer_set_start(struct bench_consumer *k, int64_t start_ns);
/* Consumes until the target (consume) or until the producer p is done and
 * every record it got acknowledged was read (e2e). */
int bench_consumer_run(struct bench_consumer *k,
                       const struct bench_producer *p);
void bench_consumer_result(const struct bench_consumer *k,
                           struct bench_result *r);
/* Records consumed so far (any thread). */
int64_t bench_consumer_count(const struct bench_consumer *k);
/* Tells an e2e consumer that the producer finished (any thread). */
void bench_consumer_producer_done(struct bench_consumer *k);

#endif /* KAPPA_BENCH_BENCH_H */
