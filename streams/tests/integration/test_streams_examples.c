/* The monitoring and fraud example jobs end to end on a real kappad: the
 * generators' events replayed from offset 0 give exactly the output the
 * test computes on its own from the same events (no window or processor
 * code of the library involved in the reference). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include <kappa/streams.h>

#include "streams/fraud.h"
#include "streams/monitoring.h"
#include "tests/support/support.h"

#define N_PARTITIONS 4
#define MON_EVENTS   30000 /* 1,500 reports per host: 250 minutes */
#define MON_SEED     7
#define MON_ROUNDS   (MON_EVENTS / MON_HOSTS)
#define MON_WINDOWS  (MON_ROUNDS * MON_STEP_MS / MON_SLIDE_MS + 8)
#define FRAUD_EVENTS 30000
#define FRAUD_SEED   11

static struct test_node node;
static char dir[TEST_PATH_SIZE];

static int setup(void **state)
{
    (void)state;
    char errmsg[256];
    test_tmpdir(dir, "streams-examples");
    if (test_node_start(&node, NULL) != 0) {
        return -1;
    }
    if (monitoring_generate(node.addr, "metrics", MON_EVENTS, MON_SEED,
                            N_PARTITIONS, errmsg) != 0 ||
        fraud_generate(node.addr, "txns", FRAUD_EVENTS, FRAUD_SEED,
                       N_PARTITIONS, errmsg) != 0) {
        fprintf(stderr, "generate: %s\n", errmsg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int status = test_node_stop(&node);
    test_node_destroy(&node);
    test_rmtree(dir);
    return status;
}

static void run(struct kappa_job *job)
{
    struct kappa_job_run_opts ro;
    assert_int_equal(kappa_job_set_start(job, KAPPA_START_EARLIEST, 0), 0);
    memset(&ro, 0, sizeof ro);
    ro.bootstrap = node.addr;
    ro.exit_at_end = 1;
    int rv = kappa_job_run(job, &ro);
    if (rv != 0) {
        fprintf(stderr, "run: %s\n", kappa_job_errmsg(job));
    }
    assert_int_equal(rv, 0);
}

/* ---- Monitoring -------------------------------------------------------- */

struct mon_ref {
    int64_t first_window; /* index of the first window start */
    int64_t sum[MON_HOSTS][MON_WINDOWS];
    int64_t count[MON_HOSTS][MON_WINDOWS];
};

static struct mon_ref mref;

/* Window k is [k * slide, k * slide + size): an event at t is in the
 * windows k with k * slide <= t < k * slide + size. */
static void monitoring_reference(void)
{
    memset(&mref, 0, sizeof mref);
    mref.first_window =
        (MON_BASE_MS - MON_JITTER_MS - MON_WINDOW_MS) / MON_SLIDE_MS;
    for (int64_t i = 0; i < MON_EVENTS; i++) {
        struct mon_event ev;
        monitoring_event(MON_SEED, i, &ev);
        int h = atoi(ev.host + 1);
        for (int64_t k = ev.ts_ms / MON_SLIDE_MS;
             k * MON_SLIDE_MS + MON_WINDOW_MS > ev.ts_ms; k--) {
            int64_t w = k - mref.first_window;
            assert_true(w >= 0 && w < MON_WINDOWS);
            mref.sum[h][w] += ev.cpu;
            mref.count[h][w]++;
        }
    }
}

static void test_monitoring_exact(void **state)
{
    (void)state;
    char db_path[TEST_PATH_SIZE + 32];
    struct kappa_job *job;
    struct kappa_job_stats st;
    sqlite3 *db;
    sqlite3_stmt *q;
    int64_t rows = 0, want_rows = 0, watermark, n_alerts = 0, n_clear = 0;

    snprintf(db_path, sizeof db_path, "%s/monitoring.sqlite", dir);
    monitoring_reference();
    assert_int_equal(monitoring_job_new("monitoring", "metrics", db_path,
                                        MON_THRESHOLD, &job),
                     0);
    run(job);
    kappa_job_stats(job, &st);
    watermark = st.watermark_ms;
    assert_int_equal(st.late, 0);
    assert_int_equal(st.malformed, 0);
    kappa_job_free(job);
    /* The watermark trails the largest event time by the bound (plus the
     * jitter of the slowest partition's last event). */
    assert_true(watermark <=
                MON_BASE_MS + MON_ROUNDS * MON_STEP_MS - MON_OOO_MS);
    assert_true(watermark >= MON_BASE_MS + (MON_ROUNDS - 2) * MON_STEP_MS -
                                 MON_OOO_MS - MON_JITTER_MS);

    assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    /* Every window: the exact average, its count, final iff closed. */
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT key, window_start, window_end,"
                                        " value, events, final FROM"
                                        " monitoring_cpu",
                                        -1, &q, NULL),
                     SQLITE_OK);
    while (sqlite3_step(q) == SQLITE_ROW) {
        int h = atoi((const char *)sqlite3_column_text(q, 0) + 1);
        int64_t start = sqlite3_column_int64(q, 1);
        int64_t w = start / MON_SLIDE_MS - mref.first_window;
        assert_int_equal(start % MON_SLIDE_MS, 0);
        assert_true(h >= 0 && h < MON_HOSTS && w >= 0 && w < MON_WINDOWS);
        assert_int_equal(sqlite3_column_int64(q, 2), start + MON_WINDOW_MS);
        assert_int_equal(sqlite3_column_int64(q, 4), mref.count[h][w]);
        assert_true(fabs(sqlite3_column_double(q, 3) -
                         (double)mref.sum[h][w] / (double)mref.count[h][w]) <
                    1e-9);
        assert_int_equal(sqlite3_column_int(q, 5),
                         start + MON_WINDOW_MS <= watermark);
        rows++;
    }
    sqlite3_finalize(q);
    for (int h = 0; h < MON_HOSTS; h++) {
        for (int64_t w = 0; w < MON_WINDOWS; w++) {
            want_rows += mref.count[h][w] > 0;
        }
    }
    assert_int_equal(rows, want_rows);

    /* Alerts, in (host, window) order: every threshold crossing among the
     * final windows, computed here from the reference sums. */
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT host, window_start, alert"
                                        " FROM monitoring_alerts ORDER BY"
                                        " host, window_start",
                                        -1, &q, NULL),
                     SQLITE_OK);
    for (int h = 0; h < MON_HOSTS; h++) {
        int prev_above = 0;
        for (int64_t w = 0; w < MON_WINDOWS; w++) {
            int64_t start = (w + mref.first_window) * MON_SLIDE_MS;
            if (mref.count[h][w] == 0 || start + MON_WINDOW_MS > watermark) {
                continue;
            }
            int above = (double)mref.sum[h][w] / (double)mref.count[h][w] >
                        MON_THRESHOLD;
            if (above == prev_above) {
                continue;
            }
            prev_above = above;
            assert_int_equal(sqlite3_step(q), SQLITE_ROW);
            assert_int_equal(atoi((const char *)sqlite3_column_text(q, 0) + 1),
                             h);
            assert_int_equal(sqlite3_column_int64(q, 1), start);
            assert_string_equal((const char *)sqlite3_column_text(q, 2),
                                above ? "start" : "clear");
            n_alerts++;
            n_clear += !above;
        }
    }
    assert_int_equal(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);
    sqlite3_close(db);
    fprintf(stderr, "monitoring: %lld windows, %lld alerts (%lld clears)\n",
            (long long)rows, (long long)n_alerts, (long long)n_clear);
    assert_true(n_alerts > 10 && n_clear > 5);
}

/* ---- Fraud --------------------------------------------------------------- */

/* The test's own rules: N = 5 transactions or 2,000.00 within 10 minutes
 * (inclusive), or another country within the hour. prev[i] links the
 * card's earlier transaction. */
static void fraud_expected(const struct fraud_event *evs, const int64_t *prev,
                           int64_t i, char *out)
{
    const struct fraud_event *e = &evs[i];
    int64_t count = 1, amount = e->amount_cents;
    int other = 0;
    for (int64_t j = prev[i]; j >= 0 && evs[j].ts_ms >= e->ts_ms - 3600000;
         j = prev[j]) {
        if (evs[j].ts_ms >= e->ts_ms - 600000) {
            count++;
            amount += evs[j].amount_cents;
        }
        other |= strcmp(evs[j].country, e->country) != 0;
    }
    out[0] = '\0';
    if (count > 5) {
        strcat(out, "count");
    }
    if (amount > 200000) {
        strcat(out, out[0] ? ",amount" : "amount");
    }
    if (other) {
        strcat(out, out[0] ? ",country" : "country");
    }
}

static void test_fraud_exact(void **state)
{
    (void)state;
    char db_path[TEST_PATH_SIZE + 32], want[32];
    static struct fraud_event evs[FRAUD_EVENTS];
    static int64_t prev[FRAUD_EVENTS], last[FRAUD_CARDS];
    struct fraud_rules rules;
    struct kappa_job *job;
    struct kappa_job_stats st;
    sqlite3 *db;
    sqlite3_stmt *q;
    int64_t flagged = 0, by_reason[3] = {0, 0, 0};

    for (int c = 0; c < FRAUD_CARDS; c++) {
        last[c] = -1;
    }
    for (int64_t i = 0; i < FRAUD_EVENTS; i++) {
        fraud_event(FRAUD_SEED, i, &evs[i]);
        int c = atoi(evs[i].card + 1);
        prev[i] = last[c];
        last[c] = i;
    }
    snprintf(db_path, sizeof db_path, "%s/fraud.sqlite", dir);
    fraud_rules_default(&rules);
    assert_int_equal(rules.max_txns, 5);
    assert_int_equal(rules.max_amount_cents, 200000);
    assert_int_equal(rules.window_ms, 600000);
    assert_int_equal(fraud_job_new("fraud", "txns", db_path, &rules, &job), 0);
    run(job);
    kappa_job_stats(job, &st);
    assert_int_equal(st.records, FRAUD_EVENTS);
    assert_int_equal(st.malformed, 0);
    kappa_job_free(job);

    assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT id, card, ts, amount, country,"
                                        " reasons FROM fraud_flagged_txns"
                                        " ORDER BY id",
                                        -1, &q, NULL),
                     SQLITE_OK);
    for (int64_t i = 0; i < FRAUD_EVENTS; i++) {
        fraud_expected(evs, prev, i, want);
        if (want[0] == '\0') {
            continue;
        }
        assert_int_equal(sqlite3_step(q), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int64(q, 0), i);
        assert_string_equal((const char *)sqlite3_column_text(q, 1),
                            evs[i].card);
        assert_int_equal(sqlite3_column_int64(q, 2), evs[i].ts_ms);
        assert_int_equal(sqlite3_column_int64(q, 3), evs[i].amount_cents);
        assert_string_equal((const char *)sqlite3_column_text(q, 4),
                            evs[i].country);
        assert_string_equal((const char *)sqlite3_column_text(q, 5), want);
        flagged++;
        by_reason[0] += strstr(want, "count") != NULL;
        by_reason[1] += strstr(want, "amount") != NULL;
        by_reason[2] += strstr(want, "country") != NULL;
    }
    assert_int_equal(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);
    sqlite3_close(db);
    fprintf(stderr,
            "fraud: %lld flagged (count %lld, amount %lld, country"
            " %lld)\n",
            (long long)flagged, (long long)by_reason[0],
            (long long)by_reason[1], (long long)by_reason[2]);
    assert_true(by_reason[0] > 0 && by_reason[1] > 0 && by_reason[2] > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_monitoring_exact),
        cmocka_unit_test(test_fraud_exact),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
