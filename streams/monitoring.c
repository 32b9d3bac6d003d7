/* Monitoring example job and its generator (see monitoring.h).
 *
 * Why alerts are a view: an alert is a function of the sequence of a host's
 * final window averages, and that sequence only grows at its end (a window
 * is final once the watermark passed its end; an event for a final window
 * is late and goes to the side table instead). So the view over the final
 * rows, with LAG() over the host's windows, is exactly-once because the
 * windows are, needs no state of its own, and is versioned and promoted
 * with them. */
#include "monitoring.h"

#include <stdio.h>
#include <string.h>

#include "gen.h"

void monitoring_event(uint64_t seed, int64_t i, struct mon_event *ev)
{
    int64_t round = i / MON_HOSTS;
    int host = (int)(i % MON_HOSTS);
    int64_t block = round / MON_BLOCK_STEPS;
    int64_t in_block = round % MON_BLOCK_STEPS;
    uint64_t hs = gen_mix(seed ^ (0xC0FFEEull + (uint64_t)host));
    uint64_t bs = gen_mix(hs ^ (uint64_t)block);
    uint64_t r = gen_mix(bs ^ ((uint64_t)i << 8));
    int baseline = 20 + (int)(hs % 40);
    int64_t inc_start = (int64_t)((bs >> 8) % 40);
    int64_t inc_len = 20 + (int64_t)((bs >> 16) % 31);
    int incident =
        bs % 4 == 0 && in_block >= inc_start && in_block < inc_start + inc_len;

    memset(ev, 0, sizeof *ev);
    ev->arrival_ms =
        MON_BASE_MS + round * MON_STEP_MS + host * (MON_STEP_MS / MON_HOSTS);
    ev->ts_ms = ev->arrival_ms - (int64_t)(r % MON_JITTER_MS);
    snprintf(ev->host, sizeof ev->host, "h%02d", host);
    if (incident) {
        ev->cpu = 85 + (int)((r >> 20) % 15);
    } else {
        int cpu = baseline + (int)((r >> 20) % 21) - 10;
        ev->cpu = cpu < 0 ? 0 : cpu;
    }
}

size_t monitoring_encode(const struct mon_event *ev, char *out)
{
    int n = snprintf(out, 256, "{\"ts\":%lld,\"host\":\"%s\",\"cpu\":%d}",
                     (long long)ev->ts_ms, ev->host, ev->cpu);
    return n > 0 && n < 256 ? (size_t)n : 0;
}

int monitoring_job_new(const char *name, const char *topic, const char *db_path,
                       double threshold, struct kappa_job **out)
{
    char table[KAPPA_JOB_NAME_MAX + 1], view[KAPPA_JOB_NAME_MAX + 1];
    char sql[1024];
    struct kappa_job *job;
    int rv;

    snprintf(table, sizeof table, "%s_cpu", name);
    snprintf(view, sizeof view, "%s_alerts", name);
    struct kappa_agg_spec a = {
        .table = table,
        .kind = KAPPA_AGG_AVG,
        .window = KAPPA_WINDOW_HOPPING,
        .size_ms = MON_WINDOW_MS,
        .slide_ms = MON_SLIDE_MS,
        .key_field = "host",
        .value_field = "cpu",
    };
    snprintf(sql, sizeof sql,
             "SELECT key AS host, window_start, window_end, value AS avg,"
             " CASE WHEN above THEN 'start' ELSE 'clear' END AS alert"
             " FROM (SELECT key, window_start, window_end, value,"
             " value > %.17g AS above, lag(value > %.17g, 1, 0) OVER"
             " (PARTITION BY key ORDER BY window_start) AS prev"
             " FROM {%s} WHERE final = 1) WHERE above <> prev",
             threshold, threshold, table);

    *out = NULL;
    rv = kappa_job_new(name, KAPPA_FORMAT_JSON, &job);
    if (rv != 0) {
        return rv;
    }
    rv = kappa_job_add_source(job, topic, NULL, 0);
    if (rv == 0) {
        rv = kappa_job_set_time_field(job, "ts");
    }
    if (rv == 0) {
        rv = kappa_job_set_out_of_orderness(job, MON_OOO_MS);
    }
    if (rv == 0) {
        rv = kappa_job_add_aggregate(job, &a);
    }
    if (rv == 0) {
        rv = kappa_job_add_view(job, view, sql);
    }
    if (rv == 0) {
        rv = kappa_job_set_sqlite(job, db_path, 1);
    }
    if (rv != 0) {
        kappa_job_free(job);
        return rv;
    }
    *out = job;
    return 0;
}

static void gen_one(int64_t i, struct gen_event *ev, void *arg)
{
    struct mon_event m;
    monitoring_event(*(const uint64_t *)arg, i, &m);
    snprintf(ev->key, sizeof ev->key, "%s", m.host);
    ev->value_len = monitoring_encode(&m, (char *)ev->value);
    ev->timestamp_ms = m.arrival_ms;
}

int monitoring_generate(const char *bootstrap, const char *topic, int64_t n,
                        uint64_t seed, int32_t n_partitions, char *errmsg)
{
    return gen_produce(bootstrap, topic, n_partitions, n, gen_one, &seed,
                       errmsg);
}
