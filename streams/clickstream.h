/* Example job 1, clickstream analytics: page views per page per minute and
 * unique visitors per hour, with the deterministic event generator that
 * feeds it and that tests use as the reference. */
#ifndef KAPPA_STREAMS_CLICKSTREAM_H
#define KAPPA_STREAMS_CLICKSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include <kappa/streams.h>

/* Generator shape: one event every CLICK_STEP_MS of arrival time from
 * CLICK_BASE_MS; 1% of the events (never among the first
 * CLICK_WARMUP_EVENTS) arrive 2-3 hours late, 9% up to 20 s out of order,
 * the rest within 2 s. With the job's bounds (out-of-orderness 10 s,
 * lateness 30 s and 60 s) the first kind is always late, the others never. */
#define CLICK_BASE_MS           1700000000000LL
#define CLICK_STEP_MS           50
#define CLICK_USERS             50000
#define CLICK_WARMUP_EVENTS     1000
#define CLICK_OOO_MS            10000
#define CLICK_VIEWS_WINDOW_MS   60000
#define CLICK_VIEWS_LATENESS_MS 30000
#define CLICK_UV_WINDOW_MS      3600000
#define CLICK_UV_LATENESS_MS    60000
#define CLICK_VALUE_MAX         256

struct click_event {
    int64_t arrival_ms; /* the record's log timestamp */
    int64_t ts_ms;      /* event time, the "ts" field */
    char user[16];      /* also the record key */
    char page[24];
    const char *referrer;
    int32_t duration_ms;
    int is_late;
};

/* Event i of the stream with this seed: a pure function. */
void clickstream_event(uint64_t seed, int64_t i, struct click_event *ev);
/* Encodes the value ({"ts", "user", "page", "ref", "dur"}) into out
 * (CLICK_VALUE_MAX bytes). Returns its length. */
size_t clickstream_encode(const struct click_event *ev,
                          enum kappa_stream_format format, uint8_t *out);

/* Builds the job: aggregations NAME_page_views (COUNT per page, tumbling
 * 1 min) and NAME_unique_visitors (DISTINCT user, key "all", tumbling 1 h),
 * late tables on, event time "ts". */
int clickstream_job_new(const char *name, enum kappa_stream_format format,
                        const char *topic, const char *db_path,
                        struct kappa_job **out);

/* Produces events [0, n) into topic (created with n_partitions if
 * missing), keyed by user, timestamped with the arrival time. Returns 0 or
 * an error with a message in errmsg (KAPPA_ERRMSG_SIZE). */
int clickstream_generate(const char *bootstrap, const char *topic, int64_t n,
                         uint64_t seed, enum kappa_stream_format format,
                         int32_t n_partitions, char *errmsg);

#endif /* KAPPA_STREAMS_CLICKSTREAM_H */
