/* The clickstream job into PostgreSQL, end to end: a real PostgreSQL server
 * started from the postgresql package's binaries (initdb + postgres on a
 * unix socket in a private directory, as the postgres user when the test
 * runs as root) and a real kappad. The PostgreSQL output must equal, row for
 * row, the SQLite sink's output for the same events (outputs, late tables,
 * checkpoints, open-window state, counters); a run restarted at the end
 * changes nothing; and a kappa-job process SIGKILLed at random points and
 * restarted ends with exactly the same database. Exits 77 (skipped) when
 * the PostgreSQL binaries are missing. Everything started is stopped and
 * every directory removed, also when a check fails (cmocka's group
 * teardown, atexit, and PR_SET_PDEATHSIG on the server). */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include <kappa/streams.h>

#include "streams/clickstream.h"
#include "tests/support/support.h"

#define N_EVENTS     100000
#define N_PARTITIONS 4
#define SEED         20261125
#define N_KILLS      3
#define PG_PORT      "5432" /* names the socket file in our own directory */

static struct test_node node;
static int node_started;
static char dir[TEST_PATH_SIZE];   /* kappad data, SQLite files */
static char pgdir[TEST_PATH_SIZE]; /* PostgreSQL data, socket, log */
static char bindir[TEST_PATH_SIZE];
static pid_t pg_pid;
static int drop_privileges; /* running as root: run PostgreSQL as postgres */
static uid_t pg_uid;
static gid_t pg_gid;
static char *want; /* the SQLite run's dump */

/* ---- PostgreSQL server ----------------------------------------------- */

/* Finds initdb and postgres: $KAPPA_PG_BINDIR, else the newest
 * /usr/lib/postgresql/N/bin. */
static int find_bindir(void)
{
    const char *env = getenv("KAPPA_PG_BINDIR");
    char path[TEST_PATH_SIZE + 16];
    glob_t g;

    if (env != NULL) {
        snprintf(bindir, sizeof bindir, "%s", env);
    } else {
        if (glob("/usr/lib/postgresql/*/bin/postgres", 0, NULL, &g) != 0) {
            return -1;
        }
        snprintf(bindir, sizeof bindir, "%s", g.gl_pathv[g.gl_pathc - 1]);
        globfree(&g);
        *strrchr(bindir, '/') = '\0';
    }
    snprintf(path, sizeof path, "%s/initdb", bindir);
    if (access(path, X_OK) != 0) {
        return -1;
    }
    snprintf(path, sizeof path, "%s/postgres", bindir);
    return access(path, X_OK) == 0 ? 0 : -1;
}

static void conninfo(char *out, size_t size, const char *db)
{
    snprintf(out, size, "host=%s port=" PG_PORT " user=kappa dbname=%s", pgdir,
             db);
}

/* Forks and runs bindir/prog with args (NULL-terminated) as the postgres
 * user when root, output appended to pgdir/pg.log. */
static pid_t spawn_pg(const char *prog, const char *const *args)
{
    char path[TEST_PATH_SIZE + 16], log[TEST_PATH_SIZE + 16];
    const char *argv[16];
    size_t n = 0;
    pid_t pid;

    snprintf(path, sizeof path, "%s/%s", bindir, prog);
    snprintf(log, sizeof log, "%s/pg.log", pgdir);
    argv[n++] = path;
    for (; args[n - 1] != NULL && n < 15; n++) {
        argv[n] = args[n - 1];
    }
    argv[n] = NULL;
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -1;
    }
    pid = fork();
    if (pid == 0) {
        if (drop_privileges && (setgroups(0, NULL) != 0 ||
                                setgid(pg_gid) != 0 || setuid(pg_uid) != 0)) {
            _exit(126);
        }
        /* After the credential change, which clears it: the server dies
         * with the test even when the test is killed. */
        prctl(PR_SET_PDEATHSIG, SIGQUIT);
        if (getppid() == 1) {
            _exit(125);
        }
        dup2(fd, 1);
        dup2(fd, 2);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(fd);
    return pid;
}

static int pg_exited(void *arg)
{
    int status;
    (void)arg;
    return waitpid(pg_pid, &status, WNOHANG) == pg_pid;
}

static int pg_ready(void *arg)
{
    char ci[TEST_PATH_SIZE + 64];
    int status;
    (void)arg;
    if (waitpid(pg_pid, &status, WNOHANG) == pg_pid) {
        pg_pid = 0;
        return 1; /* exited: stop waiting, the caller sees pg_pid == 0 */
    }
    conninfo(ci, sizeof ci, "postgres");
    return PQping(ci) == PQPING_OK;
}

static void show_pg_log(void)
{
    char cmd[TEST_PATH_SIZE + 32];
    snprintf(cmd, sizeof cmd, "tail -n 20 %s/pg.log >&2", pgdir);
    if (system(cmd) != 0) {
        fprintf(stderr, "(no PostgreSQL log)\n");
    }
}

static void pg_stop(void)
{
    if (pg_pid > 0) {
        kill(pg_pid, SIGINT); /* fast shutdown */
        if (!test_wait_until(pg_exited, NULL, test_timeout_ms(300), 50)) {
            kill(pg_pid, SIGKILL);
            waitpid(pg_pid, NULL, 0);
        }
        pg_pid = 0;
    }
    if (pgdir[0] != '\0') {
        test_rmtree(pgdir);
        pgdir[0] = '\0';
    }
}

static int exec_sql(const char *db, const char *sql)
{
    char ci[TEST_PATH_SIZE + 64];
    PGconn *c;
    PGresult *r;
    int ok;

    conninfo(ci, sizeof ci, db);
    c = PQconnectdb(ci);
    r = PQexec(c, sql);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
        fprintf(stderr, "%s: %s", sql, PQerrorMessage(c));
    }
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -1;
}

/* initdb, start, wait until it answers, create the databases. */
static int pg_start(void)
{
    char data[TEST_PATH_SIZE + 16];
    pid_t pid;
    int status;

    snprintf(pgdir, sizeof pgdir, "/tmp/kappa-pg-XXXXXX");
    if (mkdtemp(pgdir) == NULL) {
        pgdir[0] = '\0';
        return -1;
    }
    if (drop_privileges && chown(pgdir, pg_uid, pg_gid) != 0) {
        return -1;
    }
    snprintf(data, sizeof data, "%s/data", pgdir);
    const char *initdb[] = {"-D",         data,        "-U", "kappa",
                            "-A",         "trust",     "-E", "UTF8",
                            "--locale=C", "--no-sync", NULL};
    pid = spawn_pg("initdb", initdb);
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        fprintf(stderr, "initdb failed\n");
        show_pg_log();
        return -1;
    }
    const char *postgres[] = {"-D", data,        "-k", pgdir,
                              "-p", PG_PORT,     "-c", "listen_addresses=",
                              "-c", "fsync=off", NULL};
    pg_pid = spawn_pg("postgres", postgres);
    if (pg_pid < 0 ||
        !test_wait_until(pg_ready, NULL, test_timeout_ms(600), 50) ||
        pg_pid == 0) {
        fprintf(stderr, "postgres did not start\n");
        show_pg_log();
        return -1;
    }
    if (exec_sql("postgres", "CREATE DATABASE run") != 0 ||
        exec_sql("postgres", "CREATE DATABASE kill") != 0) {
        return -1;
    }
    return 0;
}

/* ---- Dumps: every row the job wrote, as sorted text lines ---------------
 *
 * Everything except the number of checkpoints, which legitimately differs
 * between runs. Both databases render the same values the same way. */

static const char *const SQLITE_DUMP =
    "SELECT 'v', key, window_start, window_end, value, events, final"
    " FROM clickstream_page_views UNION ALL"
    " SELECT 'u', key, window_start, window_end, value, events, final"
    " FROM clickstream_unique_visitors UNION ALL"
    " SELECT 'vl', topic, partition, offset, seq, key, event_ms"
    " FROM clickstream_page_views_late UNION ALL"
    " SELECT 'ul', topic, partition, offset, seq, key, event_ms"
    " FROM clickstream_unique_visitors_late UNION ALL"
    " SELECT 'ck', job, topic, partition, next_offset, max_event_ms, 0"
    " FROM kappa_checkpoints UNION ALL"
    " SELECT 'st', agg, hex(key), window_start, window_end, hex(state), 0"
    " FROM kappa_window_state UNION ALL"
    " SELECT 'j', job, watermark_ms, records, events, malformed, late"
    " FROM kappa_jobs UNION ALL"
    " SELECT 'a', job, agg, late, malformed, 0, 0 FROM kappa_job_aggs";

static const char *const PG_DUMP =
    "SELECT 'v', key, window_start::text, window_end::text, value::text,"
    " events::text, final::text FROM clickstream_page_views UNION ALL"
    " SELECT 'u', key, window_start::text, window_end::text, value::text,"
    " events::text, final::text FROM clickstream_unique_visitors UNION ALL"
    " SELECT 'vl', topic, partition::text, \"offset\"::text, seq::text, key,"
    " event_ms::text FROM clickstream_page_views_late UNION ALL"
    " SELECT 'ul', topic, partition::text, \"offset\"::text, seq::text, key,"
    " event_ms::text FROM clickstream_unique_visitors_late UNION ALL"
    " SELECT 'ck', job, topic, partition::text, next_offset::text,"
    " max_event_ms::text, '0' FROM kappa_checkpoints UNION ALL"
    " SELECT 'st', agg, upper(encode(key, 'hex')), window_start::text,"
    " window_end::text, upper(encode(state, 'hex')), '0'"
    " FROM kappa_window_state UNION ALL"
    " SELECT 'j', job, watermark_ms::text, records::text, events::text,"
    " malformed::text, late::text FROM kappa_jobs UNION ALL"
    " SELECT 'a', job, agg, late::text, malformed::text, '0', '0'"
    " FROM kappa_job_aggs";

struct lines {
    char **v;
    size_t n, cap;
};

static void lines_add(struct lines *l, const char *const *cols, int n_cols)
{
    size_t len = 0;
    char *s;
    for (int c = 0; c < n_cols; c++) {
        len += (cols[c] != NULL ? strlen(cols[c]) : 4) + 1;
    }
    s = malloc(len + 1);
    assert_non_null(s);
    len = 0;
    for (int c = 0; c < n_cols; c++) {
        len +=
            (size_t)sprintf(s + len, "%s%c", cols[c] != NULL ? cols[c] : "NULL",
                            c == n_cols - 1 ? '\n' : '|');
    }
    if (l->n == l->cap) {
        l->cap = l->cap * 2 + 1024;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        assert_non_null(l->v);
    }
    l->v[l->n++] = s;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts, joins and frees the lines. */
static char *lines_join(struct lines *l)
{
    size_t len = 0;
    char *s;
    qsort(l->v, l->n, sizeof *l->v, cmp_str);
    for (size_t k = 0; k < l->n; k++) {
        len += strlen(l->v[k]);
    }
    s = malloc(len + 1);
    assert_non_null(s);
    len = 0;
    for (size_t k = 0; k < l->n; k++) {
        size_t n = strlen(l->v[k]);
        memcpy(s + len, l->v[k], n);
        len += n;
        free(l->v[k]);
    }
    s[len] = '\0';
    free(l->v);
    return s;
}

static char *dump_sqlite(const char *path)
{
    struct lines l = {0};
    sqlite3 *db;
    sqlite3_stmt *st;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, SQLITE_DUMP, -1, &st, NULL),
                     SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *cols[7];
        for (int c = 0; c < 7; c++) {
            cols[c] = (const char *)sqlite3_column_text(st, c);
        }
        lines_add(&l, cols, 7);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return lines_join(&l);
}

static char *dump_pg(const char *db)
{
    char ci[TEST_PATH_SIZE + 64];
    struct lines l = {0};
    PGconn *c;
    PGresult *r;

    conninfo(ci, sizeof ci, db);
    c = PQconnectdb(ci);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    r = PQexec(c, PG_DUMP);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "dump: %s", PQerrorMessage(c));
    }
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQnfields(r), 7);
    for (int row = 0; row < PQntuples(r); row++) {
        const char *cols[7];
        for (int col = 0; col < 7; col++) {
            cols[col] =
                PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
        }
        lines_add(&l, cols, 7);
    }
    PQclear(r);
    PQfinish(c);
    return lines_join(&l);
}

/* The first differing line, for a readable failure. */
static void assert_same(const char *what, const char *got, const char *expected)
{
    size_t k = 0, line = 0;
    if (strcmp(got, expected) == 0) {
        return;
    }
    while (got[k] != '\0' && got[k] == expected[k]) {
        if (got[k++] == '\n') {
            line = k;
        }
    }
    fprintf(stderr,
            "%s: first difference after %zu bytes:\n got: %.120s\nwant: "
            "%.120s\n",
            what, line, got + line, expected + line);
    fail();
}

/* ---- Setup ------------------------------------------------------------- */

static void cleanup(void)
{
    pg_stop();
    if (node_started) {
        test_node_stop(&node);
        test_node_destroy(&node);
        node_started = 0;
    }
    if (dir[0] != '\0') {
        test_rmtree(dir);
        dir[0] = '\0';
    }
    free(want);
    want = NULL;
}

static int setup(void **state)
{
    char errmsg[256];
    (void)state;
    test_tmpdir(dir, "pgsink");
    if (pg_start() != 0) {
        cleanup();
        return -1;
    }
    if (test_node_start(&node, NULL) != 0) {
        cleanup();
        return -1;
    }
    node_started = 1;
    if (clickstream_generate(node.addr, "clicks", N_EVENTS, SEED,
                             KAPPA_FORMAT_JSON, N_PARTITIONS, errmsg) != 0) {
        fprintf(stderr, "generate: %s\n", errmsg);
        cleanup();
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cleanup();
    return 0;
}

/* ---- Tests ------------------------------------------------------------- */

static void run_in_process(const char *sqlite_path, const char *pg_db,
                           enum kappa_job_start start)
{
    char ci[TEST_PATH_SIZE + 64];
    struct kappa_job *job;
    struct kappa_job_run_opts ro;
    int rv;

    assert_int_equal(
        clickstream_job_new("clickstream", KAPPA_FORMAT_JSON, "clicks",
                            sqlite_path != NULL ? sqlite_path : "", &job),
        0);
    if (pg_db != NULL) {
        conninfo(ci, sizeof ci, pg_db);
        assert_int_equal(kappa_job_set_postgres(job, ci, 1), 0);
    }
    assert_int_equal(kappa_job_set_start(job, start, 0), 0);
    memset(&ro, 0, sizeof ro);
    ro.bootstrap = node.addr;
    ro.exit_at_end = 1;
    rv = kappa_job_run(job, &ro);
    if (rv != 0) {
        fprintf(stderr, "run: %s\n", kappa_job_errmsg(job));
    }
    assert_int_equal(rv, 0);
    kappa_job_free(job);
}

static void test_pg_equals_sqlite(void **state)
{
    char db[TEST_PATH_SIZE + 32];
    char *got, *expected;
    (void)state;

    snprintf(db, sizeof db, "%s/ref.sqlite", dir);
    run_in_process(db, NULL, KAPPA_START_EARLIEST);
    want = dump_sqlite(db);
    assert_true(strstr(want, "\nv|/p/") != NULL);
    assert_true(strstr(want, "\nul|clicks|") != NULL);

    run_in_process(NULL, "run", KAPPA_START_EARLIEST);
    got = dump_pg("run");
    assert_same("replay", got, want);
    free(got);

    /* Restarting at the end from the checkpoint: both sinks load the same
     * state and end the same way. (Not necessarily as before the restart:
     * the job core may move the watermark when it marks the partitions
     * idle again, whatever the sink.) */
    run_in_process(db, NULL, KAPPA_START_COMMITTED);
    expected = dump_sqlite(db);
    run_in_process(NULL, "run", KAPPA_START_COMMITTED);
    got = dump_pg("run");
    assert_same("restart at the end", got, expected);
    free(got);
    free(expected);
}

static pid_t spawn_job(const char *ci, int from_beginning)
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
                              "--pg",
                              ci,
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
    PGconn *conn;
    pid_t pid;
    int64_t target;
    int exited;
    int status;
};

/* Committed progress (sum of checkpointed offsets), -1 before the tables
 * exist. */
static int64_t committed(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT coalesce(sum(next_offset), 0) FROM"
                            " kappa_checkpoints");
    int64_t v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    }
    PQclear(r);
    return v;
}

static int reached(void *arg)
{
    struct progress_wait *w = arg;
    if (waitpid(w->pid, &w->status, WNOHANG) == w->pid) {
        w->exited = 1;
        return 1;
    }
    return committed(w->conn) >= w->target;
}

static void test_pg_kill9_exactly_once(void **state)
{
    char ci[TEST_PATH_SIZE + 64];
    const char *env = getenv("KAPPA_TEST_SEED");
    unsigned seed = env != NULL ? (unsigned)strtoul(env, NULL, 10)
                                : (unsigned)test_now_ms();
    int kills = 0, status = 0;
    PGconn *poll;
    char *got;
    pid_t pid;
    (void)state;

    assert_non_null(want);
    fprintf(stderr, "pg kill9: KAPPA_TEST_SEED=%u\n", seed);
    srand(seed);
    conninfo(ci, sizeof ci, "kill");
    poll = PQconnectdb(ci);
    assert_int_equal(PQstatus(poll), CONNECTION_OK);

    pid = spawn_job(ci, 1);
    for (int k = 0; k < N_KILLS; k++) {
        struct progress_wait w = {poll, pid, 0, 0, 0};
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
        fprintf(stderr, "pg kill9: killed at committed progress %lld\n",
                (long long)committed(poll));
        pid = spawn_job(ci, 0);
    }
    if (pid > 0) {
        struct progress_wait w = {poll, pid, INT64_MAX, 0, 0};
        assert_true(test_wait_until(reached, &w, test_timeout_ms(12000), 10));
        assert_true(w.exited);
        assert_true(WIFEXITED(w.status) && WEXITSTATUS(w.status) == 0);
    }
    PQfinish(poll);
    assert_true(kills >= 1);
    got = dump_pg("kill");
    assert_same("kill -9 and restarts", got, want);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pg_equals_sqlite),
        cmocka_unit_test(test_pg_kill9_exactly_once),
    };
    if (find_bindir() != 0) {
        printf("SKIP: no PostgreSQL server binaries (initdb, postgres) under"
               " /usr/lib/postgresql/*/bin or $KAPPA_PG_BINDIR; install the"
               " postgresql package\n");
        return 77;
    }
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");
        if (pw == NULL) {
            printf("SKIP: running as root and there is no postgres user to"
                   " run PostgreSQL as (initdb refuses root)\n");
            return 77;
        }
        drop_privileges = 1;
        pg_uid = pw->pw_uid;
        pg_gid = pw->pw_gid;
    }
    atexit(cleanup);
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, setup, teardown);
}
