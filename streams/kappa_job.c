/* kappa-job: runs the built-in example jobs, generates their input, shows
 * checkpoint status, and measures replay speed.
 *
 *   kappa-job run clickstream -b HOST:PORT --topic T
 *             (--db FILE | --pg 'host=/run/pg port=5432 dbname=kappa')
 *             [--from-beginning | --from-latest | --from-timestamp MS]
 *             [--format json|msgpack] [--name NAME] [--exit-at-end]
 *             [--checkpoint-records N] [--checkpoint-ms MS] [--quiet]
 *   kappa-job status|promote|retire|query ...  (kappa_job_ext.c)
 *   kappa-job gen clickstream -b HOST:PORT --topic T --events N --seed S
 *             [--format json|msgpack] [--partitions P]
 *   kappa-job bench clickstream (-b HOST:PORT --topic T | --no-broker)
 *             --events N [--seed S] [--format F] [--partitions P] [--db F]
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <kappa/streams.h>

#include "clickstream.h"
#include "kappa_job_ext.h"

struct opts {
    const char *cmd;
    const char *job;
    const char *bootstrap;
    const char *topic;
    const char *db;
    const char *pg; /* libpq conninfo: the PostgreSQL sink */
    const char *name;
    enum kappa_stream_format format;
    enum kappa_job_start start;
    int64_t start_ts;
    int exit_at_end;
    int quiet;
    int no_broker;
    int64_t checkpoint_records;
    int64_t checkpoint_ms;
    int64_t events;
    uint64_t seed;
    int32_t partitions;
    struct opts_ext x; /* kappa_job_ext.c */
};

static volatile int stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage:\n"
            "  kappa-job run clickstream -b HOST:PORT --topic T"
            " (--db FILE | --pg CONNINFO)\n"
            "      [--from-beginning | --from-latest | --from-timestamp MS]\n"
            "      [--format json|msgpack] [--name NAME] [--exit-at-end]\n"
            "      [--checkpoint-records N] [--checkpoint-ms MS] [--quiet]\n"
            "  kappa-job status --db FILE [-b HOST:PORT]\n"
            "  kappa-job gen clickstream -b HOST:PORT --topic T --events N\n"
            "      --seed S [--format json|msgpack] [--partitions P]\n"
            "  kappa-job bench clickstream (-b HOST:PORT --topic T |"
            " --no-broker)\n"
            "      --events N [--seed S] [--format F] [--partitions P]"
            " [--db F]\n");
    ext_usage();
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {
        {"bootstrap", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"db", required_argument, NULL, 'd'},
        {"pg", required_argument, NULL, 'P'},
        {"name", required_argument, NULL, 'n'},
        {"format", required_argument, NULL, 'f'},
        {"from-beginning", no_argument, NULL, 'B'},
        {"from-latest", no_argument, NULL, 'L'},
        {"from-timestamp", required_argument, NULL, 'T'},
        {"exit-at-end", no_argument, NULL, 'E'},
        {"quiet", no_argument, NULL, 'q'},
        {"no-broker", no_argument, NULL, 'N'},
        {"checkpoint-records", required_argument, NULL, 'r'},
        {"checkpoint-ms", required_argument, NULL, 'm'},
        {"events", required_argument, NULL, 'e'},
        {"seed", required_argument, NULL, 's'},
        {"partitions", required_argument, NULL, 'p'},
        EXT_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    int c;

    o->format = KAPPA_FORMAT_JSON;
    o->start = KAPPA_START_COMMITTED;
    o->seed = 1;
    o->partitions = 4;
    ext_opts_init(&o->x);
    while ((c = getopt_long(argc, argv, "b:", longopts, NULL)) != -1) {
        switch (c) {
        case 'b':
            o->bootstrap = optarg;
            break;
        case 't':
            o->topic = optarg;
            break;
        case 'd':
            o->db = optarg;
            break;
        case 'P':
            o->pg = optarg;
            break;
        case 'n':
            o->name = optarg;
            break;
        case 'f':
            o->format = kappa_stream_format_parse(optarg);
            if (o->format == 0) {
                fprintf(stderr, "kappa-job: unknown format %s\n", optarg);
                return -1;
            }
            break;
        case 'B':
            o->start = KAPPA_START_EARLIEST;
            break;
        case 'L':
            o->start = KAPPA_START_LATEST;
            break;
        case 'T':
            o->start = KAPPA_START_TIMESTAMP;
            o->start_ts = strtoll(optarg, NULL, 10);
            break;
        case 'E':
            o->exit_at_end = 1;
            break;
        case 'q':
            o->quiet = 1;
            break;
        case 'N':
            o->no_broker = 1;
            break;
        case 'r':
            o->checkpoint_records = strtoll(optarg, NULL, 10);
            break;
        case 'm':
            o->checkpoint_ms = strtoll(optarg, NULL, 10);
            break;
        case 'e':
            o->events = strtoll(optarg, NULL, 10);
            break;
        case 's':
            o->seed = strtoull(optarg, NULL, 10);
            break;
        case 'p':
            o->partitions = (int32_t)strtol(optarg, NULL, 10);
            break;
        default:
            if (ext_parse_opt(c, optarg, &o->x) != 0) {
                return -1;
            }
            break;
        }
    }
    return 0;
}

static void print_progress(const struct kappa_job_progress *p, void *arg)
{
    (void)arg;
    fprintf(stderr, "kappa-job: %lld records, %.0f rec/s, lag %lld",
            (long long)p->records, p->records_per_s, (long long)p->lag);
    for (size_t k = 0; k < p->n_sources && k < 16; k++) {
        fprintf(stderr, "%s%s/%d:%lld", k == 0 ? " [" : " ", p->topics[k],
                (int)p->partitions[k],
                (long long)(p->high_watermarks[k] - p->positions[k]));
    }
    fprintf(stderr, "%s", p->n_sources > 16 ? " ...]" : "]");
    if (p->eta_s >= 0) {
        fprintf(stderr, ", ETA %.0fs", p->eta_s);
    }
    fputc('\n', stderr);
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int run_job(const struct opts *o, const char *db, double *seconds,
                   struct kappa_job_stats *st)
{
    struct kappa_job *job;
    struct kappa_job_run_opts ro;
    int64_t t0;
    int rv = ext_job_new(o->job, o->name, o->format, o->topic,
                         db != NULL ? db : "", &o->x, &job);

    if (rv == 0 && o->pg != NULL) {
        rv = kappa_job_set_postgres(job, o->pg, 1);
        if (rv != 0) {
            kappa_job_free(job);
        }
    }
    if (rv != 0) {
        fprintf(stderr, "kappa-job: %s\n", kappa_err_str(rv));
        return rv;
    }
    kappa_job_set_start(job, o->start, o->start_ts);
    memset(&ro, 0, sizeof ro);
    ro.bootstrap = o->bootstrap;
    ro.exit_at_end = o->exit_at_end;
    ro.checkpoint_records = o->checkpoint_records;
    ro.checkpoint_ms = o->checkpoint_ms;
    ro.stop = &stop_flag;
    ro.progress_cb = o->quiet ? NULL : print_progress;
    t0 = mono_us();
    rv = kappa_job_run(job, &ro);
    *seconds = (double)(mono_us() - t0) / 1e6;
    kappa_job_stats(job, st);
    if (rv != 0) {
        fprintf(stderr, "kappa-job: %s\n", kappa_job_errmsg(job));
    }
    kappa_job_free(job);
    return rv;
}

static int cmd_run(const struct opts *o)
{
    struct kappa_job_stats st;
    double seconds;
    if (o->bootstrap == NULL || o->topic == NULL ||
        (o->db == NULL) == (o->pg == NULL)) {
        usage();
        return 2;
    }
    return run_job(o, o->db, &seconds, &st) == 0 ? 0 : 1;
}

static int cmd_gen(const struct opts *o)
{
    char errmsg[256];
    if (o->bootstrap == NULL || o->topic == NULL || o->events <= 0) {
        usage();
        return 2;
    }
    if (ext_generate(o->job, o->bootstrap, o->topic, o->events, o->seed,
                     o->format, o->partitions, errmsg) != 0) {
        fprintf(stderr, "kappa-job: %s\n", errmsg);
        return 1;
    }
    return 0;
}

/* Replays events fed from memory (no broker, no log read): the cost of
 * decoding, windowing and the SQLite checkpoints alone. */
static int bench_no_broker(const struct opts *o, const char *db,
                           double *seconds, struct kappa_job_stats *st)
{
    enum { CHUNK = 65536 };
    struct kappa_job *job;
    struct kappa_record *recs = calloc(CHUNK, sizeof *recs);
    uint8_t *values = malloc((size_t)CHUNK * CLICK_VALUE_MAX);
    struct click_event *evs = calloc(CHUNK, sizeof *evs);
    double busy = 0;
    int rv = clickstream_job_new(o->name, o->format, "mem", db, &job);

    if (rv != 0 || recs == NULL || values == NULL || evs == NULL) {
        rv = rv != 0 ? rv : KAPPA_ENOMEM;
        goto out;
    }
    kappa_job_set_start(job, KAPPA_START_EARLIEST, 0);
    rv = kappa_job_open(job);
    for (int64_t base = 0; rv == 0 && base < o->events; base += CHUNK) {
        int64_t n = o->events - base < CHUNK ? o->events - base : CHUNK;
        for (int64_t k = 0; k < n; k++) {
            struct kappa_record *r = &recs[k];
            clickstream_event(o->seed, base + k, &evs[k]);
            memset(r, 0, sizeof *r);
            r->topic = "mem";
            r->offset = base + k;
            r->timestamp_ms = evs[k].arrival_ms;
            r->key = evs[k].user;
            r->key_len = strlen(evs[k].user);
            r->value = values + k * CLICK_VALUE_MAX;
            r->value_len = clickstream_encode(&evs[k], o->format,
                                              values + k * CLICK_VALUE_MAX);
        }
        int64_t t0 = mono_us();
        for (int64_t k = 0; rv == 0 && k < n; k++) {
            rv = kappa_job_feed(job, &recs[k]);
        }
        if (rv == 0 && (base + n) % 500000 < CHUNK) {
            rv = kappa_job_checkpoint(job);
        }
        busy += (double)(mono_us() - t0) / 1e6;
    }
    if (rv == 0) {
        int64_t t0 = mono_us();
        rv = kappa_job_checkpoint(job);
        busy += (double)(mono_us() - t0) / 1e6;
    }
    *seconds = busy;
    kappa_job_stats(job, st);
    if (rv != 0) {
        fprintf(stderr, "kappa-job: %s\n", kappa_job_errmsg(job));
    }
out:
    kappa_job_free(job);
    free(recs);
    free(values);
    free(evs);
    return rv;
}

static int cmd_bench(const struct opts *o)
{
    char db[256];
    struct kappa_job_stats st;
    struct opts ro = *o;
    double seconds = 0;
    int rv;

    if (o->events <= 0 || strcmp(o->job, "clickstream") != 0 ||
        (!o->no_broker && (o->bootstrap == NULL || o->topic == NULL))) {
        usage();
        return 2;
    }
    snprintf(db, sizeof db, "%s", o->db != NULL ? o->db : "");
    if (o->db == NULL) {
        snprintf(db, sizeof db, "/tmp/kappa-job-bench-%d.sqlite",
                 (int)getpid());
    }
    ro.start = KAPPA_START_EARLIEST;
    ro.exit_at_end = 1;
    ro.quiet = 1;
    if (o->no_broker) {
        rv = bench_no_broker(&ro, db, &seconds, &st);
    } else {
        rv = cmd_gen(o);
        if (rv == 0) {
            rv = run_job(&ro, db, &seconds, &st);
        }
    }
    if (rv == 0) {
        printf("{\"job\":\"clickstream\",\"format\":\"%s\",\"mode\":\"%s\","
               "\"records\":%lld,\"seconds\":%.3f,\"records_per_s\":%.0f,"
               "\"late\":%lld,\"malformed\":%lld,\"checkpoints\":%lld}\n",
               o->format == KAPPA_FORMAT_JSON ? "json" : "msgpack",
               o->no_broker ? "memory" : "broker", (long long)st.records,
               seconds, seconds > 0 ? (double)st.records / seconds : 0,
               (long long)st.late, (long long)st.malformed,
               (long long)st.checkpoints);
    }
    if (o->db == NULL) {
        char side[300];
        unlink(db);
        snprintf(side, sizeof side, "%s-wal", db);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", db);
        unlink(side);
    }
    return rv == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    struct opts o;

    memset(&o, 0, sizeof o);
    if (argc < 2) {
        usage();
        return 2;
    }
    o.cmd = argv[1];
    if (ext_is_command(o.cmd)) {
        return ext_main(argc, argv);
    }
    if (argc < 3 || !ext_is_job(argv[2])) {
        fprintf(stderr,
                "kappa-job: known jobs: clickstream, monitoring, fraud\n");
        return 2;
    }
    o.job = argv[2];
    optind = 3;
    if (parse_opts(argc, argv, &o) != 0) {
        usage();
        return 2;
    }
    if (o.name == NULL) {
        o.name = o.job;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    if (strcmp(o.cmd, "run") == 0) {
        return cmd_run(&o);
    }
    if (strcmp(o.cmd, "gen") == 0) {
        return cmd_gen(&o);
    }
    if (strcmp(o.cmd, "bench") == 0) {
        return cmd_bench(&o);
    }
    usage();
    return 2;
}
