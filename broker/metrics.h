/* Prometheus metrics and readiness over a minimal HTTP/1.1 server on the
 * broker's loop (docs/operations.md), plus the plain counters the hot path
 * bumps: increments only, no allocation; the text is built on scrape.
 * Loop thread only. */
#ifndef KAPPA_BROKER_METRICS_H
#define KAPPA_BROKER_METRICS_H

#include <stdint.h>
#include <uv.h>

#include "common/wire.h"

/* Upper bounds (seconds) of the produce latency buckets, besides +Inf. */
#define METRICS_LATENCY_BUCKETS 12
/* Requests counted per API key; the last slot is "unknown" (malformed
 * envelope or an api key this broker does not know). */
#define METRICS_API_SLOTS (WIRE_API_COUNT + 1)
/* HTTP connections open at once; more are accepted and closed. */
#define METRICS_CONNS_MAX 16
/* Largest request head accepted (400 and close beyond it). */
#define METRICS_REQUEST_BYTES_MAX 8192

/* Node-wide counters (owned by struct server). */
struct metrics_node {
    uint64_t bytes_in;  /* client frames read */
    uint64_t bytes_out; /* client replies written */
    uint64_t requests[METRICS_API_SLOTS];
};

/* Per-partition counters (owned by struct partition). */
struct metrics_partition {
    uint64_t produce_records; /* appended (single) or committed (cluster) */
    uint64_t produce_bytes;
    uint64_t fetch_records; /* sent in fetch replies */
    uint64_t fetch_bytes;
    /* Produce latency, request arrival to durable/committed part. */
    uint64_t latency_buckets[METRICS_LATENCY_BUCKETS]; /* not cumulative */
    uint64_t latency_count;
    uint64_t latency_sum_ns;
};

/* Counts one frame by its api key (any value; out of range = unknown). */
static inline void metrics_count_request(struct metrics_node *m, int api_key)
{
    unsigned i = api_key >= 0 && api_key < WIRE_API_COUNT ? (unsigned)api_key
                                                          : WIRE_API_COUNT;
    m->requests[i]++;
}

/* Records one produce latency (nanoseconds). */
void metrics_observe_latency(struct metrics_partition *m, uint64_t ns);

struct server;
struct metrics;

/* Starts the HTTP listener on cfg->metrics_listen (when set) and writes
 * DATA/metrics.addr. Returns 0 or a KAPPA_E* code with errmsg; on error
 * nothing is left open except handles closing in the next uv_run. */
int metrics_start(struct metrics **out, struct server *s, char *errmsg);

/* Closes the listener and every HTTP connection; memory is freed in the
 * last close callback. metrics_close(NULL) is a no-op. */
void metrics_close(struct metrics *m);

#endif /* KAPPA_BROKER_METRICS_H */
