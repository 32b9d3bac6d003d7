/* The clickstream job end to end on a real kappad: 200,000 generated events
 * (JSON and msgpack) replayed from offset 0 into SQLite give exactly the
 * output of an independent reference computation over the same events; and
 * a kappa-job process SIGKILLed at random points and restarted from its
 * checkpoint ends with output identical to the uninterrupted run. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include <kappa/streams.h>

#include "streams/clickstream.h"
#include "tests/support/support.h"

#define N_EVENTS     200000
#define N_PARTITIONS 4
#define SEED         20261124
#define N_KILLS      4
#define N_PAGES      200
#define N_MINUTES    (N_EVENTS * CLICK_STEP_MS / 60000 + 4)
#define N_HOURS      (N_EVENTS * CLICK_STEP_MS / 3600000 + 3)

static struct test_node node;
static char dir[TEST_PATH_SIZE];
static char db_ref[TEST_PATH_SIZE + 32];

/* The reference: computed straight from the generator, no windows code. */
struct reference {
    int64_t first_minute;
    int64_t first_hour;
    int64_t views[N_PAGES][N_MINUTES];
    int64_t hour_events[N_HOURS];
    int64_t hour_distinct[N_HOURS];
    int64_t n_view_windows;
    int64_t n_hour_windows;
    int64_t n_late;
};

static struct reference ref;

static void reference_compute(void)
{
    static uint8_t seen[N_HOURS][CLICK_USERS];
    memset(&ref, 0, sizeof ref);
    memset(seen, 0, sizeof seen);
    /* Out-of-order events reach back at most 20 s before the base. */
    ref.first_minute = (CLICK_BASE_MS - 60000) / 60000;
    ref.first_hour = (CLICK_BASE_MS - 60000) / 3600000;
    for (int64_t i = 0; i < N_EVENTS; i++) {
        struct click_event ev;
        clickstream_event(SEED, i, &ev);
        if (ev.is_late) {
            ref.n_late++;
            continue;
        }
        int page = atoi(ev.page + 3);
        int user = atoi(ev.user + 1);
        int64_t m = ev.ts_ms / 60000 - ref.first_minute;
        int64_t h = ev.ts_ms / 3600000 - ref.first_hour;
        assert_true(page >= 0 && page < N_PAGES);
        assert_true(m >= 0 && m < N_MINUTES);
        assert_true(h >= 0 && h < N_HOURS);
        ref.n_view_windows += ref.views[page][m]++ == 0;
        ref.n_hour_windows += ref.hour_events[h]++ == 0;
        ref.hour_distinct[h] += seen[h][user] == 0;
        seen[h][user] = 1;
    }
}

static int setup(void **state)
{
    (void)state;
    char errmsg[256];
    test_tmpdir(dir, "streams");
    if (test_node_start(&node, NULL) != 0) {
        return -1;
    }
    if (clickstream_generate(node.addr, "clicks", N_EVENTS, SEED,
                             KAPPA_FORMAT_JSON, N_PARTITIONS, errmsg) != 0 ||
        clickstream_generate(node.addr, "clicks_mp", N_EVENTS, SEED,
                             KAPPA_FORMAT_MSGPACK, N_PARTITIONS, errmsg) != 0) {
        fprintf(stderr, "generate: %s\n", errmsg);
        return -1;
    }
    reference_compute();
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

static int64_t query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = -1;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return v;
}

/* Every row of both tables against the reference, and the row counts. */
static void check_against_reference(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t rows = 0;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db,
                           "SELECT key, window_start, window_end, value,"
                           " events FROM clickstream_page_views",
                           -1, &st, NULL),
        SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(st, 0);
        int64_t start = sqlite3_column_int64(st, 1);
        int64_t m = start / 60000 - ref.first_minute;
        int page = atoi(key + 3);
        assert_int_equal(strncmp(key, "/p/", 3), 0);
        assert_int_equal(start % 60000, 0);
        assert_int_equal(sqlite3_column_int64(st, 2), start + 60000);
        assert_true(m >= 0 && m < N_MINUTES && page >= 0 && page < N_PAGES);
        assert_int_equal(sqlite3_column_int64(st, 3), ref.views[page][m]);
        assert_int_equal(sqlite3_column_int64(st, 4), ref.views[page][m]);
        rows++;
    }
    sqlite3_finalize(st);
    assert_int_equal(rows, ref.n_view_windows);

    rows = 0;
    assert_int_equal(
        sqlite3_prepare_v2(db,
                           "SELECT key, window_start, value, events FROM"
                           " clickstream_unique_visitors",
                           -1, &st, NULL),
        SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t h = sqlite3_column_int64(st, 1) / 3600000 - ref.first_hour;
        assert_string_equal((const char *)sqlite3_column_text(st, 0), "all");
        assert_true(h >= 0 && h < N_HOURS);
        assert_int_equal(sqlite3_column_int64(st, 2), ref.hour_distinct[h]);
        assert_int_equal(sqlite3_column_int64(st, 3), ref.hour_events[h]);
        rows++;
    }
    sqlite3_finalize(st);
    assert_int_equal(rows, ref.n_hour_windows);

    /* Late events: counted and in the side tables, once per aggregation. */
    assert_int_equal(
        query_int(db, "SELECT count(*) FROM clickstream_page_views_late"),
        ref.n_late);
    assert_int_equal(
        query_int(db, "SELECT count(*) FROM clickstream_unique_visitors_late"),
        ref.n_late);
    assert_int_equal(query_int(db, "SELECT late FROM kappa_jobs"),
                     2 * ref.n_late);
    assert_int_equal(query_int(db, "SELECT records FROM kappa_jobs"), N_EVENTS);
    assert_int_equal(query_int(db, "SELECT malformed FROM kappa_jobs"), 0);
    sqlite3_close(db);
}

static void run_in_process(const char *topic, enum kappa_stream_format fmt,
                           const char *db)
{
    struct kappa_job *job;
    struct kappa_job_run_opts ro;
    assert_int_equal(clickstream_job_new("clickstream", fmt, topic, db, &job),
                     0);
    assert_int_equal(kappa_job_set_start(job, KAPPA_START_EARLIEST, 0), 0);
    memset(&ro, 0, sizeof ro);
    ro.bootstrap = node.addr;
    ro.exit_at_end = 1;
    int rv = kappa_job_run(job, &ro);
    if (rv != 0) {
        fprintf(stderr, "run: %s\n", kappa_job_errmsg(job));
    }
    assert_int_equal(rv, 0);
    kappa_job_free(job);
}

static void test_replay_json_exact(void **state)
{
    (void)state;
    snprintf(db_ref, sizeof db_ref, "%s/ref.sqlite", dir);
    run_in_process("clicks", KAPPA_FORMAT_JSON, db_ref);
    check_against_reference(db_ref);
}

static void test_replay_msgpack_exact(void **state)
{
    (void)state;
    char db[TEST_PATH_SIZE + 32];
    snprintf(db, sizeof db, "%s/mp.sqlite", dir);
    run_in_process("clicks_mp", KAPPA_FORMAT_MSGPACK, db);
    check_against_reference(db);
}

/* ---- kill -9 ---------------------------------------------------------------
 */

static pid_t spawn_job(const char *db, int from_beginning)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const char *argv[] = {KAPPA_JOB_PATH,
                              "run",
                              "clickstream",
                              "-b",
                              node.addr,
                              "--topic",
                              "clicks",
                              "--db",
                              db,
                              "--exit-at-end",
                              "--checkpoint-records",
                              "3001",
                              "--quiet",
                              from_beginning ? "--from-beginning" : NULL,
                              NULL};
        execv(KAPPA_JOB_PATH, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

struct progress_wait {
    const char *db;
    pid_t pid;
    int64_t target;
    int exited;
    int status;
};

/* Committed progress (sum of checkpointed offsets), -1 before any. */
static int64_t committed(const char *path)
{
    sqlite3 *db;
    int64_t v = -1;
    struct stat sb;
    if (stat(path, &sb) != 0 ||
        sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        return -1;
    }
    sqlite3_busy_timeout(db, 2000);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db,
                           "SELECT coalesce(sum(next_offset), 0) FROM"
                           " kappa_checkpoints",
                           -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            v = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v;
}

static int reached(void *arg)
{
    struct progress_wait *w = arg;
    if (waitpid(w->pid, &w->status, WNOHANG) == w->pid) {
        w->exited = 1;
        return 1;
    }
    return committed(w->db) >= w->target;
}

/* Everything the job wrote, except bookkeeping that legitimately differs
 * between runs (the number of checkpoints). */
static void dump_all(const char *path, char **out)
{
    static const char *const sql =
        "SELECT 'v', * FROM clickstream_page_views UNION ALL"
        " SELECT 'u', * FROM clickstream_unique_visitors UNION ALL"
        " SELECT 'vl', topic, partition, offset, seq, key, event_ms"
        " FROM clickstream_page_views_late UNION ALL"
        " SELECT 'ul', topic, partition, offset, seq, key, event_ms"
        " FROM clickstream_unique_visitors_late UNION ALL"
        " SELECT 'ck', job, topic, partition, next_offset, max_event_ms, 0"
        " FROM kappa_checkpoints UNION ALL"
        " SELECT 'st', agg, hex(key), window_start, window_end, hex(state), 0"
        " FROM kappa_window_state UNION ALL"
        " SELECT 'j', watermark_ms, records, events, malformed, late, 0"
        " FROM kappa_jobs ORDER BY 1, 2, 3, 4, 5, 6";
    sqlite3 *db;
    sqlite3_stmt *st;
    size_t len = 0, cap = 1 << 20;
    char *s = malloc(cap);

    assert_non_null(s);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int c = 0; c < 7; c++) {
            const char *t = (const char *)sqlite3_column_text(st, c);
            size_t need = (t ? strlen(t) : 4) + 2;
            if (len + need + 1 > cap) {
                cap = 2 * cap + need;
                s = realloc(s, cap);
                assert_non_null(s);
            }
            len += (size_t)sprintf(s + len, "%s%c", t ? t : "NULL",
                                   c == 6 ? '\n' : '|');
        }
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    *out = s;
}

static void test_kill9_restart_exactly_once(void **state)
{
    (void)state;
    char db[TEST_PATH_SIZE + 32];
    const char *env = getenv("KAPPA_TEST_SEED");
    unsigned seed = env != NULL ? (unsigned)strtoul(env, NULL, 10)
                                : (unsigned)test_now_ms();
    int kills = 0, status = 0;
    char *want, *got;

    fprintf(stderr, "kill9: KAPPA_TEST_SEED=%u\n", seed);
    srand(seed);
    snprintf(db, sizeof db, "%s/kill.sqlite", dir);
    assert_true(db_ref[0] != '\0');

    pid_t pid = spawn_job(db, 1);
    for (int k = 0; k < N_KILLS; k++) {
        struct progress_wait w = {db, pid, 0, 0, 0};
        /* The first kill lands before or at the first checkpoint; later
         * ones at random amounts of committed progress. */
        w.target = k == 0 ? 0
                          : (int64_t)(rand() % (N_EVENTS / N_KILLS)) +
                                (int64_t)k * N_EVENTS / (N_KILLS + 1);
        assert_true(test_wait_until(reached, &w, test_timeout_ms(6000), 5));
        if (w.exited) {
            assert_true(WIFEXITED(w.status) && WEXITSTATUS(w.status) == 0);
            pid = 0;
            break;
        }
        /* A random extra moment past the observed checkpoint. */
        for (int spin = rand() % 2000000; spin > 0; spin--) {
            __asm__ volatile("" ::: "memory");
        }
        kill(pid, SIGKILL);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        kills++;
        fprintf(stderr, "kill9: killed at committed progress %lld\n",
                (long long)committed(db));
        pid = spawn_job(db, 0);
    }
    if (pid > 0) {
        struct progress_wait w = {db, pid, INT64_MAX, 0, 0};
        assert_true(test_wait_until(reached, &w, test_timeout_ms(12000), 10));
        assert_true(w.exited);
        assert_true(WIFEXITED(w.status) && WEXITSTATUS(w.status) == 0);
    }
    assert_true(kills >= 1);
    check_against_reference(db);
    dump_all(db_ref, &want);
    dump_all(db, &got);
    assert_string_equal(got, want);
    free(want);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_json_exact),
        cmocka_unit_test(test_replay_msgpack_exact),
        cmocka_unit_test(test_kill9_restart_exactly_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
