/* Reprocessing the Kappa way and instances, on a real kappad:
 *
 * - versions: v1 and v2 (different logic: a filter) of the clickstream job
 *   write their own tables; v1 serves first; promote refuses v2 while it
 *   lags (API and CLI exit status) and accepts it once caught up; a reader
 *   thread querying both views in a loop while the views are switched back
 *   and forth sees only complete v1 or complete v2 results, never an error
 *   or a mix; status shows both versions' lag; retire refuses the promoted
 *   version and drops the other completely.
 * - instances: two kappa-job processes splitting a 4-partition topic (one
 *   of them SIGKILLed and restarted) produce the same output as one
 *   instance. */
#include <pthread.h>
#include <sched.h>
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
#include <jansson.h>
#include <sqlite3.h>

#include <kappa/streams.h>

#include "streams/clickstream.h"
#include "tests/support/support.h"

#define N_EVENTS     20000
#define N_PARTITIONS 4
#define SEED         424242
#define N_SWITCHES   40

static struct test_node node;
static char dir[TEST_PATH_SIZE];

static int setup(void **state)
{
    (void)state;
    char errmsg[256];
    test_tmpdir(dir, "streams-versions");
    if (test_node_start(&node, NULL) != 0) {
        return -1;
    }
    if (clickstream_generate(node.addr, "clicks", N_EVENTS, SEED,
                             KAPPA_FORMAT_JSON, N_PARTITIONS, errmsg) != 0 ||
        clickstream_generate(node.addr, "c4", N_EVENTS, SEED + 1,
                             KAPPA_FORMAT_JSON, N_PARTITIONS, errmsg) != 0) {
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

static int64_t query_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t v = -1;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(db));
        fail();
    }
    if (sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static int no_mail(const struct kappa_event *ev, void *arg)
{
    struct kappa_field f;
    (void)arg;
    return kappa_stream_field(KAPPA_FORMAT_JSON, ev->value, ev->value_len,
                              "ref", &f) != 0 ||
           f.type != KAPPA_FIELD_STRING || f.str_len != 4 ||
           memcmp(f.str, "mail", 4) != 0;
}

/* Runs a version in this process; with a filter for v2. */
static void run_version(const char *db, const char *version, int filter,
                        enum kappa_job_start start)
{
    struct kappa_job *job;
    struct kappa_job_run_opts ro;
    assert_int_equal(clickstream_job_new("clickstream", KAPPA_FORMAT_JSON,
                                         "clicks", db, &job),
                     0);
    assert_int_equal(kappa_job_set_version(job, version), 0);
    if (filter) {
        assert_int_equal(kappa_job_filter(job, no_mail, NULL), 0);
    }
    assert_int_equal(kappa_job_set_start(job, start, 0), 0);
    memset(&ro, 0, sizeof ro);
    ro.bootstrap = node.addr;
    ro.exit_at_end = 1;
    int rv = kappa_job_run(job, &ro);
    if (rv != 0) {
        fprintf(stderr, "run %s: %s\n", version, kappa_job_errmsg(job));
    }
    assert_int_equal(rv, 0);
    kappa_job_free(job);
}

/* Runs kappa-job with argv (NULL-terminated, without the program), returns
 * its exit status. */
static int run_cli(const char *const *args)
{
    const char *argv[32];
    int n = 0, status;
    argv[n++] = KAPPA_JOB_PATH;
    while (*args != NULL && n < 31) {
        argv[n++] = *args++;
    }
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execv(KAPPA_JOB_PATH, (char *const *)argv);
        _exit(127);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* ---- The reader --------------------------------------------------------- */

struct reader {
    const char *db;
    volatile int stop;
    int64_t want[2][2]; /* per version: (page views sum, visitors sum) */
    volatile int64_t seen[2];
    volatile int64_t bad;
    volatile int64_t errors;
    char first_error[256];
};

static void *reader_main(void *arg)
{
    static const char *const sql =
        "SELECT (SELECT sum(value) FROM clickstream_page_views),"
        " (SELECT sum(value) FROM clickstream_unique_visitors)";
    struct reader *r = arg;
    sqlite3 *db;
    if (sqlite3_open_v2(r->db, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        r->errors++;
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    while (!r->stop) {
        sqlite3_stmt *st;
        int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(st);
        }
        if (rc == SQLITE_ROW) {
            int64_t a = sqlite3_column_int64(st, 0);
            int64_t b = sqlite3_column_int64(st, 1);
            int v = a == r->want[0][0] && b == r->want[0][1]   ? 0
                    : a == r->want[1][0] && b == r->want[1][1] ? 1
                                                               : -1;
            if (v < 0) {
                r->bad++;
            } else {
                r->seen[v]++;
            }
        } else if (r->errors++ == 0) {
            snprintf(r->first_error, sizeof r->first_error, "%s",
                     sqlite3_errmsg(db));
        }
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return NULL;
}

/* The expected totals straight from the generator: page views count the
 * events that are not late (and, for v2, not from "mail"). */
static void expected_views(int64_t *v1, int64_t *v2)
{
    *v1 = *v2 = 0;
    for (int64_t i = 0; i < N_EVENTS; i++) {
        struct click_event ev;
        clickstream_event(SEED, i, &ev);
        if (!ev.is_late) {
            (*v1)++;
            *v2 += strcmp(ev.referrer, "mail") != 0;
        }
    }
}

static void check_status(const char *db)
{
    char *text = NULL;
    size_t len = 0;
    char errmsg[256];
    FILE *f = open_memstream(&text, &len);
    json_t *root, *versions, *v;
    size_t i;
    int n_promoted = 0;

    assert_non_null(f);
    assert_int_equal(kappa_job_status(db, node.addr, f, errmsg, sizeof errmsg),
                     0);
    fclose(f);
    root = json_loads(text, 0, NULL);
    assert_non_null(root);
    versions = json_object_get(root, "versions");
    assert_int_equal(json_array_size(versions), 2);
    json_array_foreach(versions, i, v)
    {
        json_t *parts = json_object_get(v, "partitions");
        assert_int_equal(json_integer_value(json_object_get(v, "lag")), 0);
        assert_int_equal(json_array_size(parts), N_PARTITIONS);
        n_promoted += json_is_true(json_object_get(v, "promoted"));
        if (json_is_true(json_object_get(v, "promoted"))) {
            assert_string_equal(
                json_string_value(json_object_get(v, "version")), "v2");
        }
    }
    assert_int_equal(n_promoted, 1);
    json_decref(root);
    free(text);
}

static void test_versions_promote_retire(void **state)
{
    (void)state;
    char db[TEST_PATH_SIZE + 32], errmsg[512];
    struct kappa_promote_opts po = {node.addr, 0, 0};
    struct kappa_promote_opts force = {NULL, 0, 1};
    struct reader r;
    pthread_t th;
    int64_t v1, v2;

    snprintf(db, sizeof db, "%s/versions.sqlite", dir);
    expected_views(&v1, &v2);

    /* v1 serves as soon as it exists. */
    run_version(db, "v1", 0, KAPPA_START_EARLIEST);
    assert_int_equal(
        query_int(db, "SELECT sum(value) FROM clickstream_page_views"), v1);
    /* v2 replays with other logic into its own tables; v1 keeps serving. */
    run_version(db, "v2", 1, KAPPA_START_EARLIEST);
    assert_int_equal(
        query_int(db, "SELECT sum(value) FROM clickstream_page_views_v2"), v2);
    assert_int_equal(
        query_int(db, "SELECT sum(value) FROM clickstream_page_views"), v1);

    /* New input: v2 lags, promote refuses (API and CLI). */
    assert_int_equal(clickstream_generate(node.addr, "clicks", 100, SEED + 7,
                                          KAPPA_FORMAT_JSON, N_PARTITIONS,
                                          errmsg),
                     0);
    assert_int_equal(
        kappa_job_promote(db, "clickstream", "v2", &po, errmsg, sizeof errmsg),
        KAPPA_EBUSY);
    assert_non_null(strstr(errmsg, "not caught up"));
    {
        const char *args[] = {"promote", "clickstream", "v2",      "--db",
                              db,        "-b",          node.addr, NULL};
        assert_int_equal(run_cli(args), 1);
    }
    assert_int_equal(kappa_job_promote(db, "clickstream", "v3", &force, errmsg,
                                       sizeof errmsg),
                     KAPPA_ENOENT);

    /* Both catch up from their checkpoints. */
    run_version(db, "v1", 0, KAPPA_START_COMMITTED);
    run_version(db, "v2", 1, KAPPA_START_COMMITTED);

    /* Readers during promotes: complete v1 or complete v2, nothing else. */
    memset(&r, 0, sizeof r);
    r.db = db;
    r.want[0][0] =
        query_int(db, "SELECT sum(value) FROM clickstream_page_views_v1");
    r.want[0][1] =
        query_int(db, "SELECT sum(value) FROM clickstream_unique_visitors_v1");
    r.want[1][0] =
        query_int(db, "SELECT sum(value) FROM clickstream_page_views_v2");
    r.want[1][1] =
        query_int(db, "SELECT sum(value) FROM clickstream_unique_visitors_v2");
    assert_true(r.want[0][0] != r.want[1][0]);
    assert_int_equal(pthread_create(&th, NULL, reader_main, &r), 0);
    for (int k = 0; k < N_SWITCHES; k++) {
        assert_int_equal(kappa_job_promote(db, "clickstream",
                                           k % 2 == 0 ? "v2" : "v1", &force,
                                           errmsg, sizeof errmsg),
                         0);
        /* Give the reader a few queries per state. */
        int64_t seen = r.seen[0] + r.seen[1];
        int64_t deadline = test_now_ms() + test_timeout_ms(5000);
        while (r.seen[0] + r.seen[1] < seen + 3 && r.errors == 0 &&
               test_now_ms() < deadline) {
            sched_yield();
        }
    }
    assert_int_equal(
        kappa_job_promote(db, "clickstream", "v2", &po, errmsg, sizeof errmsg),
        0);
    r.stop = 1;
    pthread_join(th, NULL);
    fprintf(stderr, "reader: %lld v1, %lld v2, %lld bad, %lld errors %s\n",
            (long long)r.seen[0], (long long)r.seen[1], (long long)r.bad,
            (long long)r.errors, r.first_error);
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.bad, 0);
    assert_true(r.seen[0] > 0 && r.seen[1] > 0);

    check_status(db);

    /* Retire: never the promoted version; the other one completely. */
    assert_int_equal(
        kappa_job_retire(db, "clickstream", "v2", errmsg, sizeof errmsg),
        KAPPA_EINVAL);
    {
        const char *args[] = {"retire", "clickstream", "v2", "--db", db, NULL};
        assert_int_equal(run_cli(args), 1);
    }
    {
        const char *args[] = {"retire", "clickstream", "v1", "--db", db, NULL};
        assert_int_equal(run_cli(args), 0);
    }
    assert_int_equal(query_int(db, "SELECT count(*) FROM sqlite_master WHERE"
                                   " name LIKE '%_v1%'"),
                     0);
    assert_int_equal(query_int(db, "SELECT count(*) FROM kappa_checkpoints"
                                   " WHERE job = 'clickstream@v1'"),
                     0);
    assert_int_equal(query_int(db, "SELECT count(*) FROM kappa_window_state"
                                   " WHERE job = 'clickstream@v1'"),
                     0);
    assert_int_equal(
        query_int(db, "SELECT sum(value) FROM clickstream_page_views"),
        r.want[1][0]);
}

/* ---- Instances ------------------------------------------------------------
 */

static pid_t spawn_instance(const char *db, int instance, int from_beginning)
{
    char inst[8];
    snprintf(inst, sizeof inst, "%d", instance);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const char *argv[] = {KAPPA_JOB_PATH,
                              "run",
                              "clickstream",
                              "-b",
                              node.addr,
                              "--topic",
                              "c4",
                              "--db",
                              db,
                              "--version",
                              "v1",
                              "--instances",
                              "2",
                              "--instance",
                              inst,
                              "--exit-at-end",
                              "--quiet",
                              "--checkpoint-records",
                              "1500",
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
    int exited;
    int status;
};

static int committed_some(void *arg)
{
    struct progress_wait *w = arg;
    struct stat sb;
    sqlite3 *db;
    sqlite3_stmt *st;
    int64_t v = 0;
    if (waitpid(w->pid, &w->status, WNOHANG) == w->pid) {
        w->exited = 1;
        return 1;
    }
    if (stat(w->db, &sb) != 0 ||
        sqlite3_open_v2(w->db, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        return 0;
    }
    sqlite3_busy_timeout(db, 2000);
    if (sqlite3_prepare_v2(db,
                           "SELECT coalesce(sum(next_offset), 0) FROM"
                           " kappa_checkpoints WHERE job = 'clickstream@v1#1'",
                           -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            v = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v > 0;
}

static int wait_exit(pid_t pid)
{
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* The merged output, the same query on either layout. */
static char *dump(const char *path)
{
    static const char *const sql =
        "SELECT 'v', key, window_start, window_end, value, events FROM"
        " clickstream_page_views UNION ALL SELECT 'u', key, window_start,"
        " window_end, value, events FROM clickstream_unique_visitors"
        " UNION ALL SELECT 'l', topic, partition, offset, seq, event_ms FROM"
        " clickstream_page_views_late ORDER BY 1, 2, 3, 4";
    sqlite3 *db;
    sqlite3_stmt *st;
    size_t len = 0, cap = 1 << 20;
    char *s = malloc(cap);
    assert_non_null(s);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int c = 0; c < 6; c++) {
            const char *t = (const char *)sqlite3_column_text(st, c);
            size_t need = (t ? strlen(t) : 4) + 2;
            if (len + need + 1 > cap) {
                cap = 2 * cap + need;
                s = realloc(s, cap);
                assert_non_null(s);
            }
            len += (size_t)sprintf(s + len, "%s%c", t ? t : "NULL",
                                   c == 5 ? '\n' : '|');
        }
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return s;
}

static void test_two_instances_equal_one(void **state)
{
    (void)state;
    char single[TEST_PATH_SIZE + 32], multi[TEST_PATH_SIZE + 32];
    struct kappa_job *job;
    struct kappa_job_run_opts ro;
    char *want, *got;

    snprintf(single, sizeof single, "%s/single.sqlite", dir);
    snprintf(multi, sizeof multi, "%s/multi.sqlite", dir);
    assert_int_equal(clickstream_job_new("clickstream", KAPPA_FORMAT_JSON, "c4",
                                         single, &job),
                     0);
    assert_int_equal(kappa_job_set_start(job, KAPPA_START_EARLIEST, 0), 0);
    memset(&ro, 0, sizeof ro);
    ro.bootstrap = node.addr;
    ro.exit_at_end = 1;
    assert_int_equal(kappa_job_run(job, &ro), 0);
    kappa_job_free(job);

    /* Two processes on one database; instance 1 is killed once. */
    pid_t p0 = spawn_instance(multi, 0, 1);
    pid_t p1 = spawn_instance(multi, 1, 1);
    struct progress_wait w = {multi, p1, 0, 0};
    assert_true(test_wait_until(committed_some, &w, test_timeout_ms(6000), 5));
    fprintf(stderr, "instance 1 %s\n",
            w.exited ? "ended before the kill" : "killed after a checkpoint");
    if (!w.exited) {
        kill(p1, SIGKILL);
        assert_int_equal(wait_exit(p1), 128);
        p1 = spawn_instance(multi, 1, 0);
    } else {
        assert_true(WIFEXITED(w.status) && WEXITSTATUS(w.status) == 0);
        p1 = 0;
    }
    assert_int_equal(wait_exit(p0), 0);
    if (p1 > 0) {
        assert_int_equal(wait_exit(p1), 0);
    }

    /* Each instance checkpointed its own partitions. */
    assert_int_equal(query_int(multi, "SELECT count(*) FROM kappa_checkpoints"
                                      " WHERE job = 'clickstream@v1#0' AND"
                                      " partition % 2 = 0"),
                     N_PARTITIONS / 2);
    assert_int_equal(query_int(multi, "SELECT count(*) FROM kappa_checkpoints"
                                      " WHERE job = 'clickstream@v1#1' AND"
                                      " partition % 2 = 1"),
                     N_PARTITIONS / 2);
    assert_int_equal(query_int(multi, "SELECT count(*) FROM kappa_checkpoints"),
                     N_PARTITIONS);
    want = dump(single);
    got = dump(multi);
    assert_true(strlen(want) > 1000);
    assert_string_equal(got, want);
    free(want);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_versions_promote_retire),
        cmocka_unit_test(test_two_instances_equal_one),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
