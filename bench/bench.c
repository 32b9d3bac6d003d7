/* kappa-bench: produce, consume and end-to-end benchmarks against kappad.
 *
 * Usage: see usage() below. Every mode prints a human table (stdout, or
 * stderr with --json) and, with --json, exactly one JSON line on stdout:
 *
 *   {"mode":"produce","records":N,"record_size":B,"partitions":P,
 *    "acks":"all","in_flight":5,"rate_target":0,"seconds":S,
 *    "records_per_s":R,"mb_per_s":M,
 *    "lat_ms":{"p50":..,"p99":..,"p999":..,"max":..},"errors":E, ...}
 *
 * MB are 10^6 bytes of record values (no protocol overhead). lat_ms is null
 * for consume runs, which measure no latency.
 *
 * Exit status: 0, 1 after a setup or fatal error, 2 when the run finished
 * but some records failed (errors > 0). */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define DEFAULT_TOPIC       "kappa-bench"
#define DEFAULT_RECORDS     1000000
#define DEFAULT_IN_FLIGHT   5
#define DEFAULT_BATCH_BYTES (1024 * 1024)
#define DEFAULT_LINGER_MS   5

volatile sig_atomic_t bench_stop;

void bench_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kappa-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

const char *bench_fmt_count(char *buf, size_t size, int64_t v)
{
    char digits[24];
    snprintf(digits, sizeof(digits), "%" PRIu64,
             v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v);
    size_t n_digits = strlen(digits);
    size_t out = 0;
    if (v < 0 && out + 1 < size) {
        buf[out++] = '-';
    }
    for (size_t i = 0; i < n_digits && out + 1 < size; i++) {
        if (i > 0 && (n_digits - i) % 3 == 0 && out + 2 < size) {
            buf[out++] = ',';
        }
        buf[out++] = digits[i];
    }
    buf[out] = '\0';
    return buf;
}

void bench_progress_init(struct bench_progress *p, const char *label,
                         int64_t start_ns)
{
    p->label = label;
    p->start_ns = start_ns;
    p->last_ns = start_ns;
    p->next_ns = start_ns + BENCH_NS_PER_S;
    p->last_count = 0;
}

int bench_progress_is_due(const struct bench_progress *p, int64_t now_ns)
{
    return p->label != NULL && now_ns >= p->next_ns;
}

void bench_progress_tick(struct bench_progress *p, int64_t now_ns,
                         int64_t count, size_t record_bytes, const char *extra)
{
    if (!bench_progress_is_due(p, now_ns)) {
        return;
    }
    double dt = (double)(now_ns - p->last_ns) / 1e9;
    double rate = (double)(count - p->last_count) / dt;
    char a[32];
    char b[32];
    fprintf(stderr, "%s %6.1fs  done %s  %s rec/s  %.1f MB/s  %s\n", p->label,
            (double)(now_ns - p->start_ns) / 1e9,
            bench_fmt_count(a, sizeof(a), count),
            bench_fmt_count(b, sizeof(b), (int64_t)rate),
            rate * (double)record_bytes / 1e6, extra != NULL ? extra : "");
    p->last_ns = now_ns;
    p->last_count = count;
    p->next_ns = now_ns + BENCH_NS_PER_S;
}

/* ---- Clients and topics ------------------------------------------------- */

static int conf_set(struct kappa_conf *conf, const char *key, const char *value)
{
    char errstr[256];
    int rv = kappa_conf_set(conf, key, value, errstr, sizeof(errstr));
    if (rv != 0) {
        bench_err("config %s=%s: %s", key, value, errstr);
    }
    return rv;
}

int bench_client_new(const struct bench_opts *o, const char *role,
                     struct kappa_client **out)
{
    char errstr[256];
    char id[64];
    char in_flight[24];
    char batch[24];
    char linger[24];
    struct kappa_conf *conf = kappa_conf_new();
    if (conf == NULL) {
        bench_err("kappa_conf_new: out of memory");
        return 1;
    }
    snprintf(id, sizeof(id), "kappa-bench-%s", role);
    snprintf(in_flight, sizeof(in_flight), "%d", o->in_flight);
    snprintf(batch, sizeof(batch), "%lld", (long long)o->batch_bytes);
    snprintf(linger, sizeof(linger), "%d", o->linger_ms);
    if (conf_set(conf, "bootstrap.servers", o->brokers) ||
        conf_set(conf, "client.id", id) || conf_set(conf, "acks", o->acks) ||
        conf_set(conf, "max.in.flight", in_flight) ||
        conf_set(conf, "batch.size", batch) ||
        conf_set(conf, "linger.ms", linger) ||
        conf_set(conf, "compression", o->compression)) {
        kappa_conf_free(conf);
        return 1;
    }
    int rv = kappa_client_new(conf, out, errstr, sizeof(errstr));
    if (rv != 0) {
        bench_err("client: %s", errstr);
        return 1;
    }
    return 0;
}

int bench_topic_prepare(const struct bench_opts *o, struct kappa_client *c,
                        int32_t *partitions)
{
    if (o->is_create) {
        int32_t n = o->partitions > 0 ? o->partitions : 1;
        int rv = kappa_create_topic(c, o->topic, n, 1, NULL, BENCH_TIMEOUT_MS);
        if (rv == KAPPA_ETOPIC_EXISTS) {
            bench_err("topic %s exists, reusing it", o->topic);
        } else if (rv != 0) {
            bench_err("create topic %s: %s: %s", o->topic, kappa_err_name(rv),
                      kappa_last_error(c));
            return rv;
        }
    }
    struct kappa_topic_info *ti = NULL;
    size_t n_topics = 0;
    int rv = kappa_list_topics(c, o->topic, &ti, &n_topics, BENCH_TIMEOUT_MS);
    if (rv == 0 && n_topics == 0) {
        rv = KAPPA_EUNKNOWN_TOPIC;
    }
    if (rv != 0) {
        bench_err("topic %s: %s: %s%s", o->topic, kappa_err_name(rv),
                  kappa_last_error(c), o->is_create ? "" : " (use --create)");
        kappa_topic_info_free(ti, n_topics);
        return rv;
    }
    *partitions = ti[0].partitions;
    kappa_topic_info_free(ti, n_topics);
    if (o->partitions > 0 && o->partitions != *partitions) {
        bench_err("topic %s has %d partitions, not %d", o->topic,
                  (int)*partitions, (int)o->partitions);
    }
    return 0;
}

/* ---- Report ------------------------------------------------------------- */

static double ns_to_ms(int64_t ns)
{
    return (double)ns / 1e6;
}

static void print_latency(FILE *f, const char *label,
                          const struct bench_hist *h)
{
    char a[32];
    fprintf(f,
            "  %-12s p50 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f ms"
            "  (%s, n=%s)\n",
            "latency", ns_to_ms(bench_hist_quantile(h, 0.50)),
            ns_to_ms(bench_hist_quantile(h, 0.99)),
            ns_to_ms(bench_hist_quantile(h, 0.999)), ns_to_ms(h->max),
            bench_hist_mean(h) / 1e6, label,
            bench_fmt_count(a, sizeof(a), (int64_t)h->n_samples));
}

static void print_human(FILE *f, const struct bench_opts *o,
                        const struct bench_result *r)
{
    char a[32];
    char b[32];
    double secs = r->seconds > 0 ? r->seconds : 1e-9;
    fprintf(f,
            "kappa-bench %s: topic %s, %d partition(s), %zu B records, "
            "acks=%s, in-flight %d, batch %lld B, linger %d ms, "
            "compression %s, rate %s\n",
            r->mode, o->topic, (int)r->partitions, r->record_bytes, o->acks,
            o->in_flight, (long long)o->batch_bytes, o->linger_ms,
            o->compression, o->rate_per_s > 0 ? "limited" : "max");
    if (o->rate_per_s > 0) {
        fprintf(f, "  %-12s %s rec/s\n", "rate target",
                bench_fmt_count(a, sizeof(a), (int64_t)o->rate_per_s));
    }
    fprintf(f, "  %-12s %s in %.3f s (after %.1f s warmup), errors %s\n",
            "records", bench_fmt_count(a, sizeof(a), r->n_records), r->seconds,
            o->warmup_s, bench_fmt_count(b, sizeof(b), r->n_errors));
    fprintf(
        f, "  %-12s %s rec/s  %.2f MB/s\n", "throughput",
        bench_fmt_count(a, sizeof(a), (int64_t)((double)r->n_records / secs)),
        (double)r->n_bytes / secs / 1e6);
    if (r->latency != NULL) {
        print_latency(f, r->latency_label, r->latency);
    }
    if (r->ack_latency != NULL) {
        print_latency(f, "intended send -> ack", r->ack_latency);
    }
}

static void print_json(const struct bench_opts *o, const struct bench_result *r)
{
    double secs = r->seconds > 0 ? r->seconds : 1e-9;
    printf("{\"mode\":\"%s\",\"records\":%lld,\"record_size\":%zu,"
           "\"partitions\":%d,\"acks\":\"%s\",\"in_flight\":%d,"
           "\"rate_target\":%.15g,\"seconds\":%.6f,\"records_per_s\":%.1f,"
           "\"mb_per_s\":%.3f,",
           r->mode, (long long)r->n_records, r->record_bytes,
           (int)r->partitions, o->acks, o->in_flight, o->rate_per_s, r->seconds,
           r->n_records > 0 ? (double)r->n_records / secs : 0.0,
           r->n_records > 0 ? (double)r->n_bytes / secs / 1e6 : 0.0);
    const struct bench_hist *h = r->latency;
    if (h != NULL) {
        printf("\"lat_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"p999\":%.3f,"
               "\"max\":%.3f},",
               ns_to_ms(bench_hist_quantile(h, 0.50)),
               ns_to_ms(bench_hist_quantile(h, 0.99)),
               ns_to_ms(bench_hist_quantile(h, 0.999)), ns_to_ms(h->max));
    } else {
        printf("\"lat_ms\":{\"p50\":null,\"p99\":null,\"p999\":null,"
               "\"max\":null},");
    }
    printf("\"errors\":%lld,\"topic\":\"%s\",\"batch_size\":%lld,"
           "\"linger_ms\":%d,\"compression\":\"%s\",\"warmup_s\":%.15g}\n",
           (long long)r->n_errors, o->topic, (long long)o->batch_bytes,
           o->linger_ms, o->compression, o->warmup_s);
    fflush(stdout);
}

static void report(const struct bench_opts *o, const struct bench_result *r)
{
    print_human(o->is_json ? stderr : stdout, o, r);
    if (o->is_json) {
        print_json(o, r);
    }
}

/* ---- Modes -------------------------------------------------------------- */

static int run_produce(const struct bench_opts *o)
{
    struct kappa_client *c = NULL;
    int32_t partitions = 0;
    if (bench_client_new(o, "producer", &c) != 0) {
        return 1;
    }
    int rv = bench_topic_prepare(o, c, &partitions);
    if (rv != 0) {
        goto err_after_client;
    }
    struct bench_producer *p = bench_producer_new(o, c, 0);
    if (p == NULL) {
        bench_err("out of memory");
        rv = 1;
        goto err_after_client;
    }
    rv = bench_producer_run(p, o->n_records, 0);
    struct bench_result r;
    bench_producer_result(p, &r);
    r.partitions = partitions;
    report(o, &r);
    if (rv == 0 && r.n_errors > 0) {
        rv = 2;
    }
    bench_producer_free(p);
err_after_client:
    kappa_client_free(c);
    return rv == 0 || rv == 2 ? rv : 1;
}

/* consume --create --records N: fills the topic first with its own
 * client. */
static int fill_topic(const struct bench_opts *o)
{
    struct kappa_client *c = NULL;
    int32_t partitions = 0;
    if (bench_client_new(o, "filler", &c) != 0) {
        return 1;
    }
    int rv = bench_topic_prepare(o, c, &partitions);
    struct bench_producer *p = rv == 0 ? bench_producer_new(o, c, 0) : NULL;
    if (rv == 0 && p == NULL) {
        bench_err("out of memory");
        rv = 1;
    }
    if (p != NULL) {
        rv = bench_producer_run(p, o->n_records, 1);
        struct bench_result r;
        bench_producer_result(p, &r);
        char a[32];
        bench_err("filled %s with %s records of %zu B in %.2f s", o->topic,
                  bench_fmt_count(a, sizeof(a), r.n_records), r.record_bytes,
                  r.seconds);
        if (rv == 0 && r.n_errors > 0) {
            rv = 1;
        }
    }
    bench_producer_free(p);
    kappa_client_free(c);
    return rv;
}

static int run_consume(const struct bench_opts *o)
{
    struct kappa_client *c = NULL;
    struct bench_opts fill = *o;
    int32_t partitions = 0;
    fill.warmup_s = 0;
    fill.duration_s = 0;
    fill.rate_per_s = 0;
    if (o->is_create && fill_topic(&fill) != 0) {
        return 1;
    }
    if (bench_client_new(o, "consumer", &c) != 0) {
        return 1;
    }
    struct bench_opts no_create = *o;
    no_create.is_create = 0;
    int rv = bench_topic_prepare(&no_create, c, &partitions);
    struct bench_consumer *k = rv == 0 ? bench_consumer_new(o, c, 0) : NULL;
    if (rv == 0 && k == NULL) {
        bench_err("out of memory");
        rv = 1;
    }
    if (k != NULL && (rv = bench_consumer_assign(k, partitions)) == 0) {
        rv = bench_consumer_run(k, NULL);
        struct bench_result r;
        bench_consumer_result(k, &r);
        report(o, &r);
        if (rv == 0 && r.n_errors > 0) {
            rv = 2;
        }
    }
    bench_consumer_free(k);
    kappa_client_free(c);
    return rv == 0 || rv == 2 ? rv : 1;
}

struct e2e {
    struct bench_consumer *k;
    const struct bench_producer *p;
    int rv;
};

static void *e2e_consumer_main(void *arg)
{
    struct e2e *e = arg;
    e->rv = bench_consumer_run(e->k, e->p);
    return NULL;
}

/* Producer on this thread, consumer on a second thread, one client each. */
static int e2e_run_threads(const struct bench_opts *o, struct bench_producer *p,
                           struct bench_consumer *k, int32_t partitions)
{
    struct e2e e = {.k = k, .p = p, .rv = 0};
    pthread_t thread;
    int64_t start_ns = bench_now_ns();
    bench_producer_set_start(p, start_ns);
    bench_consumer_set_start(k, start_ns);
    int rv = pthread_create(&thread, NULL, e2e_consumer_main, &e);
    if (rv != 0) {
        bench_err("pthread_create: %s", strerror(rv));
        return 1;
    }
    bench_producer_watch(p, k);
    rv = bench_producer_run(p, o->n_records, 0);
    bench_consumer_producer_done(k);
    pthread_join(thread, NULL);
    struct bench_result r;
    struct bench_result pr;
    bench_consumer_result(k, &r);
    bench_producer_result(p, &pr);
    r.partitions = partitions;
    r.n_errors += pr.n_errors;
    r.ack_latency = pr.latency;
    report(o, &r);
    if (rv == 0) {
        rv = e.rv;
    }
    if (rv == 0 && r.n_errors > 0) {
        rv = 2;
    }
    return rv;
}

static int run_e2e(const struct bench_opts *o)
{
    struct kappa_client *pc = NULL;
    struct kappa_client *cc = NULL;
    struct bench_producer *p = NULL;
    struct bench_consumer *k = NULL;
    int32_t partitions = 0;
    int rv = 1;
    if (bench_client_new(o, "producer", &pc) != 0) {
        return 1;
    }
    if (bench_client_new(o, "consumer", &cc) != 0) {
        goto out;
    }
    if (bench_topic_prepare(o, pc, &partitions) != 0) {
        goto out;
    }
    p = bench_producer_new(o, pc, 1);
    k = bench_consumer_new(o, cc, 1);
    if (p == NULL || k == NULL) {
        bench_err("out of memory");
        goto out;
    }
    if (bench_consumer_assign(k, partitions) != 0) {
        goto out;
    }
    rv = e2e_run_threads(o, p, k, partitions);
out:
    bench_consumer_free(k);
    bench_producer_free(p);
    kappa_client_free(cc);
    kappa_client_free(pc);
    return rv == 0 || rv == 2 ? rv : 1;
}

/* ---- Options ------------------------------------------------------------ */

static void usage(FILE *f)
{
    fputs("usage: kappa-bench produce|consume|e2e -b HOST:PORT [options]\n"
          "  -b, --brokers HOST:PORT  bootstrap broker(s)\n"
          "  --topic T                topic (default " DEFAULT_TOPIC ")\n"
          "  --create                 create the topic first (kept if it "
          "exists)\n"
          "  --partitions N           partitions for --create (default 1)\n"
          "  --record-size B          value bytes per record (default 100)\n"
          "  --records N              records to produce/consume (default "
          "1M;\n"
          "                           consume: up to the end of the topic)\n"
          "  --duration S             run for S seconds after the warmup "
          "instead\n"
          "  --acks 0|1|all           (default all)\n"
          "  --in-flight N            produce requests in flight (default 5)\n"
          "  --batch-size B           bytes per batch (default 1 MiB)\n"
          "  --linger-ms N            (default 5)\n"
          "  --compression none|lz4|zstd\n"
          "  --rate R                 records/s target, 0 = max (default 0)\n"
          "  --warmup S               leave the first S seconds out of the "
          "figures\n"
          "  --json                   one JSON line on stdout (table on "
          "stderr)\n"
          "Numbers take k/m/g (x1000) or ki/mi/gi (x1024) suffixes.\n"
          "consume --create --records N produces N records first.\n",
          f);
}

/* Parses a count with an optional k/m/g (1000) or ki/mi/gi (1024)
 * suffix. */
static int parse_count(const char *name, const char *s, int64_t min,
                       int64_t max, int64_t *out)
{
    char *end = NULL;
    double v = strtod(s, &end);
    double mult = 1;
    if (end == s) {
        goto bad;
    }
    if (*end != '\0') {
        const char *units = "kmg";
        const char *u = strchr(units, end[0] | 0x20);
        if (u == NULL) {
            goto bad;
        }
        int is_binary = (end[1] | 0x20) == 'i';
        for (const char *x = units; x <= u; x++) {
            mult *= is_binary ? 1024 : 1000;
        }
        if (end[1 + is_binary] != '\0') {
            goto bad;
        }
    }
    v *= mult;
    if (!(v >= (double)min && v <= (double)max) || v != (double)(int64_t)v) {
        goto bad;
    }
    *out = (int64_t)v;
    return 0;
bad:
    bench_err("--%s: expected an integer in [%lld, %lld], got '%s'", name,
              (long long)min, (long long)max, s);
    return 1;
}

static int parse_seconds(const char *name, const char *s, double max,
                         double *out)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v >= 0 && v <= max)) {
        bench_err("--%s: expected a number in [0, %g], got '%s'", name, max, s);
        return 1;
    }
    *out = v;
    return 0;
}

enum {
    OPT_TOPIC = 256,
    OPT_CREATE,
    OPT_PARTITIONS,
    OPT_RECORD_SIZE,
    OPT_RECORDS,
    OPT_DURATION,
    OPT_ACKS,
    OPT_IN_FLIGHT,
    OPT_BATCH_SIZE,
    OPT_LINGER_MS,
    OPT_COMPRESSION,
    OPT_RATE,
    OPT_WARMUP,
    OPT_JSON,
};

static const struct option long_options[] = {
    {"brokers", required_argument, NULL, 'b'},
    {"help", no_argument, NULL, 'h'},
    {"topic", required_argument, NULL, OPT_TOPIC},
    {"create", no_argument, NULL, OPT_CREATE},
    {"partitions", required_argument, NULL, OPT_PARTITIONS},
    {"record-size", required_argument, NULL, OPT_RECORD_SIZE},
    {"records", required_argument, NULL, OPT_RECORDS},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"acks", required_argument, NULL, OPT_ACKS},
    {"in-flight", required_argument, NULL, OPT_IN_FLIGHT},
    {"batch-size", required_argument, NULL, OPT_BATCH_SIZE},
    {"linger-ms", required_argument, NULL, OPT_LINGER_MS},
    {"compression", required_argument, NULL, OPT_COMPRESSION},
    {"rate", required_argument, NULL, OPT_RATE},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"json", no_argument, NULL, OPT_JSON},
    {NULL, 0, NULL, 0},
};

static int parse_choice(const char *name, const char *s,
                        const char *const *choices, const char **out)
{
    for (size_t i = 0; choices[i] != NULL; i++) {
        if (strcmp(s, choices[i]) == 0) {
            *out = choices[i];
            return 0;
        }
    }
    bench_err("--%s: unexpected value '%s'", name, s);
    return 1;
}

/* Handles one option other than -b and -h. */
static int parse_option(struct bench_opts *o, int opt, const char *arg)
{
    static const char *const acks[] = {"0", "1", "all", NULL};
    static const char *const codecs[] = {"none", "lz4", "zstd", NULL};
    int64_t v = 0;
    int rv = 0;
    switch (opt) {
    case OPT_TOPIC:
        o->topic = arg;
        return 0;
    case OPT_CREATE:
        o->is_create = 1;
        return 0;
    case OPT_PARTITIONS:
        rv = parse_count("partitions", arg, 1, BENCH_PARTITIONS_MAX, &v);
        o->partitions = (int32_t)v;
        return rv;
    case OPT_RECORD_SIZE:
        rv = parse_count("record-size", arg, 0, BENCH_RECORD_BYTES_MAX, &v);
        o->record_bytes = (size_t)v;
        return rv;
    case OPT_RECORDS:
        return parse_count("records", arg, 1, INT64_MAX / 2, &o->n_records);
    case OPT_DURATION:
        return parse_seconds("duration", arg, 86400, &o->duration_s);
    case OPT_ACKS:
        return parse_choice("acks", strcmp(arg, "-1") == 0 ? "all" : arg, acks,
                            &o->acks);
    case OPT_IN_FLIGHT:
        rv = parse_count("in-flight", arg, 1, BENCH_IN_FLIGHT_MAX, &v);
        o->in_flight = (int)v;
        return rv;
    case OPT_BATCH_SIZE:
        return parse_count("batch-size", arg, 1, BENCH_BATCH_BYTES_MAX,
                           &o->batch_bytes);
    case OPT_LINGER_MS:
        rv = parse_count("linger-ms", arg, 0, 60000, &v);
        o->linger_ms = (int)v;
        return rv;
    case OPT_COMPRESSION:
        return parse_choice("compression", arg, codecs, &o->compression);
    case OPT_RATE:
        return parse_seconds("rate", arg, 1e9, &o->rate_per_s);
    case OPT_WARMUP:
        return parse_seconds("warmup", arg, 3600, &o->warmup_s);
    case OPT_JSON:
        o->is_json = 1;
        return 0;
    default:
        usage(stderr);
        return 1;
    }
}

static int parse_mode(struct bench_opts *o, const char *s)
{
    if (s != NULL && strcmp(s, "produce") == 0) {
        o->mode = BENCH_PRODUCE;
    } else if (s != NULL && strcmp(s, "consume") == 0) {
        o->mode = BENCH_CONSUME;
    } else if (s != NULL && strcmp(s, "e2e") == 0) {
        o->mode = BENCH_E2E;
    } else {
        usage(stderr);
        return 1;
    }
    return 0;
}

/* Cross-option checks and defaults. */
static int check_options(struct bench_opts *o)
{
    if (o->brokers == NULL) {
        bench_err("-b HOST:PORT is required");
        return 1;
    }
    if (o->mode == BENCH_E2E && o->record_bytes < sizeof(int64_t)) {
        bench_err("e2e needs --record-size >= 8 for the timestamp");
        return 1;
    }
    if (o->mode == BENCH_CONSUME && o->is_create && o->n_records == 0) {
        bench_err("consume --create needs --records N to fill the topic");
        return 1;
    }
    if (o->mode != BENCH_CONSUME && o->n_records == 0 && o->duration_s == 0) {
        o->n_records = DEFAULT_RECORDS;
    }
    if (o->n_records > 0 && o->duration_s > 0 && o->mode != BENCH_CONSUME) {
        bench_err("--records and --duration both given: stopping at the "
                  "first");
    }
    return 0;
}

static int parse_args(struct bench_opts *o, int argc, char **argv)
{
    *o = (struct bench_opts){
        .topic = DEFAULT_TOPIC,
        .record_bytes = 100,
        .acks = "all",
        .in_flight = DEFAULT_IN_FLIGHT,
        .batch_bytes = DEFAULT_BATCH_BYTES,
        .linger_ms = DEFAULT_LINGER_MS,
        .compression = "none",
    };
    if (argc >= 2 &&
        (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        exit(0);
    }
    if (parse_mode(o, argc >= 2 ? argv[1] : NULL) != 0) {
        return 1;
    }
    int opt;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "b:h", long_options, NULL)) != -1) {
        if (opt == 'b') {
            o->brokers = optarg;
        } else if (opt == 'h') {
            usage(stdout);
            exit(0);
        } else if (parse_option(o, opt, optarg) != 0) {
            return 1;
        }
    }
    if (optind < argc) {
        bench_err("unexpected argument '%s'", argv[optind]);
        return 1;
    }
    return check_options(o);
}

static void on_signal(int sig)
{
    (void)sig;
    bench_stop = 1;
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    if (parse_args(&o, argc, argv) != 0) {
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    switch (o.mode) {
    case BENCH_PRODUCE:
        return run_produce(&o);
    case BENCH_CONSUME:
        return run_consume(&o);
    case BENCH_E2E:
        return run_e2e(&o);
    }
    return 1;
}
