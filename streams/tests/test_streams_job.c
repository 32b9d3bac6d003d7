/* Jobs driven in push mode (kappa_job_feed) into SQLite in a temporary
 * directory: watermarks over partitions, idle partitions, late events and
 * their side outputs, the pipeline stages, every aggregation end to end,
 * restart from a checkpoint (exactly-once), reset, malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include <kappa/streams.h>

static char dir[256];
static char db_path[300];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/kappa-streams-job-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    snprintf(db_path, sizeof db_path, "%s/out.sqlite", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void remove_db(const char *path)
{
    char p[320];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

static int fresh_db(void **state)
{
    (void)state;
    remove_db(db_path);
    return 0;
}

/* ---- Records ----------------------------------------------------------- */

struct rec {
    char value[160];
    char key[16];
    struct kappa_record r;
};

static void make(struct rec *x, const char *topic, int32_t partition,
                 int64_t offset, int64_t ts, const char *key, double v)
{
    memset(x, 0, sizeof *x);
    snprintf(x->value, sizeof x->value, "{\"ts\":%lld,\"k\":\"%s\",\"v\":%g}",
             (long long)ts, key, v);
    snprintf(x->key, sizeof x->key, "%s", key);
    x->r.topic = topic;
    x->r.partition = partition;
    x->r.offset = offset;
    x->r.timestamp_ms = ts;
    x->r.key = x->key;
    x->r.key_len = strlen(x->key);
    x->r.value = x->value;
    x->r.value_len = strlen(x->value);
}

static void feed(struct kappa_job *job, int32_t partition, int64_t offset,
                 int64_t ts, const char *key, double v)
{
    struct rec x;
    make(&x, "in", partition, offset, ts, key, v);
    int rv = kappa_job_feed(job, &x.r);
    if (rv != 0) {
        fprintf(stderr, "feed: %s\n", kappa_job_errmsg(job));
    }
    assert_int_equal(rv, 0);
}

/* Appends every row of a query to out, one line each. */
static void dump(const char *path, const char *sql, char *out, size_t cap)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    size_t len = 0;
    out[0] = '\0';
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int c = 0; c < sqlite3_column_count(st); c++) {
            const char *t = (const char *)sqlite3_column_text(st, c);
            len += (size_t)snprintf(out + len, cap - len, "%s%s", c ? "|" : "",
                                    t ? t : "NULL");
            assert_true(len < cap);
        }
        len += (size_t)snprintf(out + len, cap - len, "\n");
        assert_true(len < cap);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static struct kappa_job *job_new(const struct kappa_agg_spec *specs, size_t n,
                                 enum kappa_job_start start, int64_t ooo)
{
    struct kappa_job *job;
    assert_int_equal(kappa_job_new("t", KAPPA_FORMAT_JSON, &job), 0);
    assert_int_equal(kappa_job_set_time_field(job, "ts"), 0);
    assert_int_equal(kappa_job_set_out_of_orderness(job, ooo), 0);
    for (size_t k = 0; k < n; k++) {
        assert_int_equal(kappa_job_add_aggregate(job, &specs[k]), 0);
    }
    assert_int_equal(kappa_job_set_sqlite(job, db_path, 1), 0);
    assert_int_equal(kappa_job_set_start(job, start, 0), 0);
    return job;
}

static const struct kappa_agg_spec COUNT_10S = {
    .table = "counts",
    .kind = KAPPA_AGG_COUNT,
    .window = KAPPA_WINDOW_TUMBLING,
    .size_ms = 10000,
    .key_field = "k",
    .allowed_lateness_ms = 0,
};

/* ---- Watermarks -------------------------------------------------------- */

static void test_watermark_min_over_partitions(void **state)
{
    (void)state;
    struct kappa_job_stats st;
    struct kappa_job *job = job_new(&COUNT_10S, 1, KAPPA_START_EARLIEST, 1000);
    char out[4096];

    assert_int_equal(kappa_job_open(job), 0);
    feed(job, 0, 0, 5000, "a", 1);
    kappa_job_stats(job, &st);
    assert_int_equal(st.watermark_ms, 5000 - 1000);
    /* Partition 1 appears: its events hold the watermark back. */
    assert_int_equal(kappa_job_set_idle(job, "in", 1, 0), 0);
    feed(job, 0, 1, 30000, "a", 1);
    kappa_job_stats(job, &st);
    assert_int_equal(st.watermark_ms, 4000); /* p1 has seen nothing */
    feed(job, 1, 0, 12000, "b", 1);
    kappa_job_stats(job, &st);
    assert_int_equal(st.watermark_ms, 11000); /* min(30000, 12000) - 1000 */
    assert_int_equal(st.open_windows, 2);     /* [0,10s) closed */
    /* p1 idle: the watermark follows p0 alone. */
    assert_int_equal(kappa_job_set_idle(job, "in", 1, 1), 0);
    kappa_job_stats(job, &st);
    assert_int_equal(st.watermark_ms, 29000);
    /* It never goes back when p1 wakes up behind; the event is late
     * now ([10s,20s) closed at 29000). */
    feed(job, 1, 1, 13000, "b", 1);
    kappa_job_stats(job, &st);
    assert_int_equal(st.watermark_ms, 29000);
    assert_int_equal(st.late, 1);
    assert_int_equal(kappa_job_checkpoint(job), 0);
    dump(db_path,
         "SELECT key, window_start, window_end, value, events, final FROM"
         " counts ORDER BY key, window_start",
         out, sizeof out);
    assert_string_equal(out, "a|0|10000|1|1|1\n"
                             "a|30000|40000|1|1|0\n"
                             "b|10000|20000|1|1|1\n");
    dump(db_path,
         "SELECT topic, partition, next_offset, max_event_ms FROM"
         " kappa_checkpoints ORDER BY partition",
         out, sizeof out);
    assert_string_equal(out, "in|0|2|30000\nin|1|2|13000\n");
    kappa_job_free(job);
}

/* ---- Late events -------------------------------------------------------- */

struct late_seen {
    int n;
    int64_t last_ms;
    char table[64];
};

static void on_late(const struct kappa_event *ev, const char *table,
                    int64_t event_ms, void *arg)
{
    struct late_seen *ls = arg;
    (void)ev;
    ls->n++;
    ls->last_ms = event_ms;
    snprintf(ls->table, sizeof ls->table, "%s", table);
}

static void test_late_side_outputs(void **state)
{
    (void)state;
    struct kappa_agg_spec spec = COUNT_10S;
    struct late_seen ls = {0};
    struct kappa_job_stats st;
    char out[4096];
    spec.allowed_lateness_ms = 2000;
    struct kappa_job *job = job_new(&spec, 1, KAPPA_START_EARLIEST, 0);
    kappa_job_set_late_cb(job, on_late, &ls);
    assert_int_equal(kappa_job_open(job), 0);
    feed(job, 0, 0, 1000, "a", 1);
    feed(job, 0, 1, 11000, "a", 1);
    feed(job, 0, 2, 9000, "a", 1);  /* within lateness: counted */
    feed(job, 0, 3, 12000, "a", 1); /* closes [0,10s) at 12000 */
    feed(job, 0, 4, 9500, "a", 1);  /* late */
    kappa_job_stats(job, &st);
    assert_int_equal(st.late, 1);
    assert_int_equal(ls.n, 1);
    assert_int_equal(ls.last_ms, 9500);
    assert_string_equal(ls.table, "counts");
    assert_int_equal(kappa_job_checkpoint(job), 0);
    dump(db_path, "SELECT * FROM counts_late", out, sizeof out);
    assert_string_equal(out, "in|0|4|0|a|9500\n");
    dump(db_path, "SELECT key, window_start, value, final FROM counts", out,
         sizeof out);
    assert_string_equal(out, "a|0|2|1\na|10000|2|0\n");
    dump(db_path, "SELECT late FROM kappa_job_aggs", out, sizeof out);
    assert_string_equal(out, "1\n");
    kappa_job_free(job);
}

/* ---- Pipeline ----------------------------------------------------------- */

static int keep_not_x(const struct kappa_event *ev, void *arg)
{
    (void)arg;
    return !(ev->key_len == 1 && ((const char *)ev->key)[0] == 'x');
}

/* Doubles v by rewriting the value. */
static int double_v(const struct kappa_event *in, struct kappa_event *out,
                    void *arg)
{
    static char buf[160];
    struct kappa_field ts, k, v;
    (void)arg;
    if (kappa_stream_field(KAPPA_FORMAT_JSON, in->value, in->value_len, "ts",
                           &ts) != 0 ||
        kappa_stream_field(KAPPA_FORMAT_JSON, in->value, in->value_len, "v",
                           &v) != 0) {
        return KAPPA_EINVAL;
    }
    double dv = v.d;
    if (kappa_stream_field(KAPPA_FORMAT_JSON, in->value, in->value_len, "k",
                           &k) != 0) {
        return KAPPA_EINVAL;
    }
    int n = snprintf(buf, sizeof buf, "{\"ts\":%lld,\"k\":\"%.*s\",\"v\":%g}",
                     (long long)ts.i, (int)k.str_len, k.str, dv * 2);
    out->value = buf;
    out->value_len = (size_t)n;
    return 0;
}

/* Emits the event twice, once with group "g1" and once with "g2". */
static int split(const struct kappa_event *in, struct kappa_emitter *em,
                 void *arg)
{
    char buf[200];
    struct kappa_field ts;
    (void)arg;
    if (kappa_stream_field(KAPPA_FORMAT_JSON, in->value, in->value_len, "ts",
                           &ts) != 0) {
        return KAPPA_EINVAL;
    }
    for (int g = 1; g <= 2; g++) {
        struct kappa_event ev = *in;
        int n =
            snprintf(buf, sizeof buf, "{\"ts\":%lld,\"grp\":\"g%d\",\"v\":%d}",
                     (long long)ts.i, g, g);
        ev.value = buf;
        ev.value_len = (size_t)n;
        int rv = kappa_emit(em, &ev);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static void test_pipeline(void **state)
{
    (void)state;
    struct kappa_agg_spec sum = {
        .table = "sums",
        .kind = KAPPA_AGG_SUM,
        .window = KAPPA_WINDOW_TUMBLING,
        .size_ms = 1000,
        .value_field = "v",
    };
    char out[4096];
    struct kappa_job_stats st;
    struct kappa_job *job;

    assert_int_equal(kappa_job_new("p", KAPPA_FORMAT_JSON, &job), 0);
    assert_int_equal(kappa_job_set_time_field(job, "ts"), 0);
    assert_int_equal(kappa_job_filter(job, keep_not_x, NULL), 0);
    assert_int_equal(kappa_job_map(job, double_v, NULL), 0);
    assert_int_equal(kappa_job_rekey(job, "k"), 0);
    assert_int_equal(kappa_job_flat_map(job, split, NULL), 0);
    assert_int_equal(kappa_job_rekey(job, "grp"), 0);
    assert_int_equal(kappa_job_add_aggregate(job, &sum), 0);
    assert_int_equal(kappa_job_set_sqlite(job, db_path, 0), 0);
    assert_int_equal(kappa_job_set_start(job, KAPPA_START_EARLIEST, 0), 0);
    assert_int_equal(kappa_job_open(job), 0);
    assert_int_equal(kappa_job_filter(job, keep_not_x, NULL), KAPPA_EINVAL);
    feed(job, 0, 0, 100, "a", 5);
    feed(job, 0, 1, 200, "x", 100); /* filtered out */
    feed(job, 0, 2, 300, "b", 1);
    assert_int_equal(kappa_job_checkpoint(job), 0);
    kappa_job_stats(job, &st);
    assert_int_equal(st.records, 3);
    assert_int_equal(st.events, 4);
    dump(db_path, "SELECT key, value, events FROM sums ORDER BY key", out,
         sizeof out);
    assert_string_equal(out, "g1|2.0|2\ng2|4.0|2\n");
    kappa_job_free(job);
}

/* ---- Every aggregation and window type --------------------------------- */

static void test_all_aggregations(void **state)
{
    (void)state;
    static const char *const names[] = {"c", "s", "mi", "ma", "av", "di"};
    struct kappa_agg_spec specs[8];
    char out[8192];
    for (int k = 0; k < 6; k++) {
        specs[k] = (struct kappa_agg_spec){
            .table = names[k],
            .kind = (enum kappa_agg_kind)(KAPPA_AGG_COUNT + k),
            .window = KAPPA_WINDOW_TUMBLING,
            .size_ms = 1000,
            .key_constant = "all",
            .value_field = k == 0 ? NULL : "v",
        };
    }
    specs[6] = (struct kappa_agg_spec){.table = "hop",
                                       .kind = KAPPA_AGG_COUNT,
                                       .window = KAPPA_WINDOW_HOPPING,
                                       .size_ms = 1000,
                                       .slide_ms = 500};
    specs[7] = (struct kappa_agg_spec){.table = "sess",
                                       .kind = KAPPA_AGG_SUM,
                                       .window = KAPPA_WINDOW_SESSION,
                                       .gap_ms = 300,
                                       .value_field = "v"};
    struct kappa_job *job = job_new(specs, 8, KAPPA_START_EARLIEST, 0);
    assert_int_equal(kappa_job_open(job), 0);
    feed(job, 0, 0, 100, "a", 4);
    feed(job, 0, 1, 200, "a", -1);
    feed(job, 0, 2, 700, "b", 4);
    feed(job, 0, 3, 1100, "a", 2.5);
    assert_int_equal(kappa_job_checkpoint(job), 0);
    dump(db_path,
         "SELECT 'c', * FROM c UNION ALL SELECT 's', * FROM s UNION ALL"
         " SELECT 'mi', * FROM mi UNION ALL SELECT 'ma', * FROM ma UNION ALL"
         " SELECT 'av', * FROM av UNION ALL SELECT 'di', * FROM di",
         out, sizeof out);
    assert_string_equal(out, "c|all|0|1000|3|3|1\n"
                             "c|all|1000|2000|1|1|0\n"
                             "s|all|0|1000|7.0|3|1\n"
                             "s|all|1000|2000|2.5|1|0\n"
                             "mi|all|0|1000|-1.0|3|1\n"
                             "mi|all|1000|2000|2.5|1|0\n"
                             "ma|all|0|1000|4.0|3|1\n"
                             "ma|all|1000|2000|2.5|1|0\n"
                             "av|all|0|1000|2.33333333333333|3|1\n"
                             "av|all|1000|2000|2.5|1|0\n"
                             "di|all|0|1000|2|3|1\n"
                             "di|all|1000|2000|1|1|0\n");
    dump(db_path, "SELECT * FROM hop ORDER BY key, window_start", out,
         sizeof out);
    assert_string_equal(out, "a|-500|500|2|2|1\n"
                             "a|0|1000|2|2|1\n"
                             "a|500|1500|1|1|0\n"
                             "a|1000|2000|1|1|0\n"
                             "b|0|1000|1|1|1\n"
                             "b|500|1500|1|1|0\n");
    dump(db_path, "SELECT * FROM sess ORDER BY key, window_start", out,
         sizeof out);
    assert_string_equal(out, "a|100|500|3.0|2|1\n"
                             "a|1100|1400|2.5|1|0\n"
                             "b|700|1000|4.0|1|1\n");
    kappa_job_free(job);
}

/* ---- Exactly-once: restart from any checkpoint -------------------------- */

#define EO_RECORDS 6000

/* A deterministic stream over 3 partitions with out-of-order and late
 * events; record (p, o) is a function of (p, o). */
static void eo_record(int32_t p, int64_t o, struct rec *x)
{
    uint64_t h = (uint64_t)(p * 1000003 + o) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    int64_t ts = o * 30 + p * 7 - (int64_t)(h % 500);
    if (h % 97 == 0) {
        ts -= 20000; /* late */
    }
    char key[8];
    snprintf(key, sizeof key, "k%d", (int)(h >> 40) % 13);
    make(x, "in", p, o, ts, key, (double)(h % 1000));
}

static struct kappa_job *eo_job(enum kappa_job_start start)
{
    static const struct kappa_agg_spec specs[] = {
        {.table = "tum",
         .kind = KAPPA_AGG_AVG,
         .window = KAPPA_WINDOW_TUMBLING,
         .size_ms = 2000,
         .key_field = "k",
         .value_field = "v",
         .allowed_lateness_ms = 500},
        {.table = "hop",
         .kind = KAPPA_AGG_DISTINCT,
         .window = KAPPA_WINDOW_HOPPING,
         .size_ms = 6000,
         .slide_ms = 2000,
         .key_constant = "all",
         .value_field = "k"},
        {.table = "ses",
         .kind = KAPPA_AGG_MAX,
         .window = KAPPA_WINDOW_SESSION,
         .gap_ms = 400,
         .key_field = "k",
         .value_field = "v",
         .allowed_lateness_ms = 100},
    };
    struct kappa_job *job = job_new(specs, 3, start, 300);
    assert_int_equal(kappa_job_open(job), 0);
    for (int32_t p = 0; p < 3; p++) {
        assert_int_equal(kappa_job_set_idle(job, "in", p, 0), 0);
    }
    return job;
}

/* Feeds from the job's positions in a fixed round-robin order until
 * `budget` records were fed (or all). Returns the records fed. */
static int eo_feed(struct kappa_job *job, int budget, int ckpt_every)
{
    int fed = 0;
    for (int64_t o = 0; o < EO_RECORDS / 3 && fed < budget; o++) {
        for (int32_t p = 0; p < 3 && fed < budget; p++) {
            struct rec x;
            if (o < kappa_job_position(job, "in", p)) {
                continue;
            }
            eo_record(p, o, &x);
            int rv = kappa_job_feed(job, &x.r);
            if (rv != 0) {
                fprintf(stderr, "feed: %s\n", kappa_job_errmsg(job));
            }
            assert_int_equal(rv, 0);
            fed++;
            if (ckpt_every > 0 && fed % ckpt_every == 0) {
                assert_int_equal(kappa_job_checkpoint(job), 0);
            }
        }
    }
    return fed;
}

static const char *const EO_QUERY =
    "SELECT 'tum', * FROM tum UNION ALL SELECT 'hop', * FROM hop UNION ALL"
    " SELECT 'ses', * FROM ses UNION ALL SELECT 'ck', topic, partition,"
    " next_offset, max_event_ms, 0, 0 FROM kappa_checkpoints UNION ALL"
    " SELECT 'st', agg, hex(key), window_start, window_end, hex(state), 0"
    " FROM kappa_window_state UNION ALL SELECT 'late', topic, partition,"
    " offset, seq, key, event_ms FROM tum_late UNION ALL"
    " SELECT 'job', watermark_ms, records, events, malformed, late, 0"
    " FROM kappa_jobs ORDER BY 1, 2, 3, 4, 5";

static void test_restart_exactly_once(void **state)
{
    (void)state;
    static char expect[1 << 20], got[1 << 20];
    struct kappa_job *job;

    /* The uninterrupted run. */
    job = eo_job(KAPPA_START_EARLIEST);
    assert_int_equal(eo_feed(job, EO_RECORDS, 0), EO_RECORDS);
    assert_int_equal(kappa_job_checkpoint(job), 0);
    kappa_job_free(job);
    dump(db_path, EO_QUERY, expect, sizeof expect);
    assert_non_null(strstr(expect, "late|in|"));
    remove_db(db_path);

    /* Crashes: after each run of `fed` records only what the last
     * checkpoint committed survives (the job is dropped without one). */
    uint64_t seed = 12345;
    job = eo_job(KAPPA_START_EARLIEST);
    for (int round = 0;; round++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int every = 50 + (int)(seed >> 33) % 700;
        int budget = 100 + (int)(seed >> 40) % 1500;
        int fed = eo_feed(job, budget, every);
        if (fed < budget) {
            assert_int_equal(kappa_job_checkpoint(job), 0);
            kappa_job_free(job);
            break;
        }
        kappa_job_free(job); /* crash */
        job = eo_job(KAPPA_START_COMMITTED);
        assert_true(round < 1000);
    }
    dump(db_path, EO_QUERY, got, sizeof got);
    assert_string_equal(got, expect);
}

static void test_reset_and_malformed(void **state)
{
    (void)state;
    struct kappa_job_stats st;
    char out[1024];
    struct rec x;
    struct kappa_job *job = job_new(&COUNT_10S, 1, KAPPA_START_EARLIEST, 0);
    assert_int_equal(kappa_job_open(job), 0);
    feed(job, 0, 0, 100, "a", 1);
    make(&x, "in", 0, 1, 200, "a", 1);
    x.r.value = "{\"ts\":"; /* truncated */
    x.r.value_len = 6;
    assert_int_equal(kappa_job_feed(job, &x.r), 0);
    x.r.offset = 2;
    x.r.value = "{\"k\":\"a\"}"; /* no event time */
    x.r.value_len = strlen(x.r.value);
    assert_int_equal(kappa_job_feed(job, &x.r), 0);
    x.r.offset = 3;
    x.r.value = "{\"ts\":300,\"k\":[1]}"; /* key not a scalar */
    x.r.value_len = strlen(x.r.value);
    assert_int_equal(kappa_job_feed(job, &x.r), 0);
    x.r.offset = 4;
    x.r.value = NULL; /* a tombstone */
    x.r.value_len = 0;
    assert_int_equal(kappa_job_feed(job, &x.r), 0);
    kappa_job_stats(job, &st);
    assert_int_equal(st.records, 5);
    assert_int_equal(st.malformed, 3);
    assert_int_equal(kappa_job_checkpoint(job), 0);
    dump(db_path, "SELECT malformed FROM kappa_job_aggs", out, sizeof out);
    assert_string_equal(out, "1\n");
    kappa_job_free(job);

    /* Starting again from the beginning clears output and checkpoint. */
    job = job_new(&COUNT_10S, 1, KAPPA_START_EARLIEST, 0);
    assert_int_equal(kappa_job_open(job), 0);
    assert_int_equal(kappa_job_position(job, "in", 0), -1);
    kappa_job_free(job);
    dump(db_path, "SELECT count(*) FROM counts", out, sizeof out);
    assert_string_equal(out, "0\n");
    dump(db_path, "SELECT count(*) FROM kappa_checkpoints", out, sizeof out);
    assert_string_equal(out, "0\n");
}

static void test_bad_config(void **state)
{
    (void)state;
    struct kappa_job *job;
    struct kappa_agg_spec spec = COUNT_10S;
    assert_int_equal(kappa_job_new("bad name", KAPPA_FORMAT_JSON, &job),
                     KAPPA_EINVAL);
    assert_int_equal(kappa_job_new("ok", 7, &job), KAPPA_EINVAL);
    assert_int_equal(kappa_job_new("ok", KAPPA_FORMAT_MSGPACK, &job), 0);
    spec.table = "x; DROP TABLE y";
    assert_int_equal(kappa_job_add_aggregate(job, &spec), KAPPA_EINVAL);
    spec.table = "counts";
    assert_int_equal(kappa_job_add_aggregate(job, &spec), 0);
    assert_int_equal(kappa_job_add_aggregate(job, &spec), KAPPA_EINVAL);
    assert_int_equal(kappa_job_open(job), KAPPA_EINVAL); /* no sink */
    kappa_job_free(job);
    kappa_job_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_watermark_min_over_partitions, fresh_db),
        cmocka_unit_test_setup(test_late_side_outputs, fresh_db),
        cmocka_unit_test_setup(test_pipeline, fresh_db),
        cmocka_unit_test_setup(test_all_aggregations, fresh_db),
        cmocka_unit_test_setup(test_restart_exactly_once, fresh_db),
        cmocka_unit_test_setup(test_reset_and_malformed, fresh_db),
        cmocka_unit_test_setup(test_bad_config, fresh_db),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
