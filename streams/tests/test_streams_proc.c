/* Keyed processors (the fraud job) in push mode: a job dropped without a
 * checkpoint at pseudo-random points and reopened from its checkpoint ends
 * with the same rows and states as an uninterrupted run (exactly-once);
 * an instance refuses records of another instance's partitions; the
 * checkpoint key carries version and instance. */
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

#include "streams/fraud.h"

#define N_EVENTS   6000
#define SEED       99
#define PARTITIONS 4

static char dir[] = "/tmp/kappa-proc-XXXXXX";

struct input {
    struct fraud_event ev;
    char value[256];
    size_t value_len;
    int32_t partition;
    int64_t offset;
};

static struct input inputs[N_EVENTS];

static int setup(void **state)
{
    (void)state;
    int64_t next[PARTITIONS] = {0};
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    for (int64_t i = 0; i < N_EVENTS; i++) {
        struct input *in = &inputs[i];
        fraud_event(SEED, i, &in->ev);
        in->value_len = fraud_encode(&in->ev, in->value);
        in->partition = atoi(in->ev.card + 1) % PARTITIONS;
        in->offset = next[in->partition]++;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static struct fraud_rules rules;

static struct kappa_job *open_job(const char *db, enum kappa_job_start start)
{
    struct kappa_job *job;
    fraud_rules_default(&rules);
    assert_int_equal(fraud_job_new("fraud", "txns", db, &rules, &job), 0);
    assert_int_equal(kappa_job_set_start(job, start, 0), 0);
    assert_int_equal(kappa_job_open(job), 0);
    return job;
}

static void feed(struct kappa_job *job, int64_t i)
{
    struct kappa_record r;
    memset(&r, 0, sizeof r);
    r.topic = "txns";
    r.partition = inputs[i].partition;
    r.offset = inputs[i].offset;
    r.timestamp_ms = inputs[i].ev.ts_ms;
    r.key = inputs[i].ev.card;
    r.key_len = strlen(inputs[i].ev.card);
    r.value = inputs[i].value;
    r.value_len = inputs[i].value_len;
    assert_int_equal(kappa_job_feed(job, &r), 0);
}

static char *dump(const char *path)
{
    static const char *const sql =
        "SELECT topic, partition, offset, seq, key, event_ms || value FROM"
        " fraud_flagged UNION ALL SELECT job, proc, hex(key), hex(state), 0, 0"
        " FROM kappa_keyed_state UNION ALL SELECT job, topic, partition,"
        " next_offset, 0, 0 FROM kappa_checkpoints ORDER BY 1, 2, 3, 4";
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

static void test_proc_crash_restart_exactly_once(void **state)
{
    (void)state;
    char ref[256], crash[256];
    const char *env = getenv("KAPPA_TEST_SEED");
    unsigned seed = env != NULL ? (unsigned)strtoul(env, NULL, 10) : 12345u;
    struct kappa_job *job;
    int64_t i = 0, done = 0;
    int crashes = 0;
    char *want, *got;

    fprintf(stderr, "proc: KAPPA_TEST_SEED=%u\n", seed);
    srand(seed);
    snprintf(ref, sizeof ref, "%s/ref.sqlite", dir);
    snprintf(crash, sizeof crash, "%s/crash.sqlite", dir);

    job = open_job(ref, KAPPA_START_EARLIEST);
    for (int64_t k = 0; k < N_EVENTS; k++) {
        feed(job, k);
        if (k % 1000 == 999) {
            assert_int_equal(kappa_job_checkpoint(job), 0);
        }
    }
    assert_int_equal(kappa_job_checkpoint(job), 0);
    kappa_job_free(job);

    job = open_job(crash, KAPPA_START_EARLIEST);
    while (done < N_EVENTS) {
        int64_t until = done + 1 + rand() % 900;
        int64_t ckpt = 1 + rand() % 300;
        /* From the start: the job skips what its checkpoint covers. */
        for (i = 0; i < N_EVENTS && i < until; i++) {
            feed(job, i);
            if (i >= done && i % ckpt == 0) {
                assert_int_equal(kappa_job_checkpoint(job), 0);
            }
        }
        done = i;
        if (done < N_EVENTS) {
            /* Crash: everything since the last checkpoint is lost. */
            kappa_job_free(job);
            crashes++;
            job = open_job(crash, KAPPA_START_COMMITTED);
        }
    }
    assert_int_equal(kappa_job_checkpoint(job), 0);
    kappa_job_free(job);
    assert_true(crashes > 3);

    want = dump(ref);
    got = dump(crash);
    assert_true(strlen(want) > 1000);
    assert_string_equal(got, want);
    free(want);
    free(got);
}

static void test_instance_owns_partitions(void **state)
{
    (void)state;
    char db[256];
    struct kappa_job *job;
    struct kappa_record r;
    sqlite3 *sq;
    sqlite3_stmt *st;

    snprintf(db, sizeof db, "%s/inst.sqlite", dir);
    fraud_rules_default(&rules);
    assert_int_equal(fraud_job_new("fraud", "txns", db, &rules, &job), 0);
    assert_int_equal(kappa_job_set_instance(job, 1, 1), KAPPA_EINVAL);
    assert_int_equal(kappa_job_set_instance(job, 1, 2), 0);
    assert_int_equal(kappa_job_set_version(job, "bad-version"), KAPPA_EINVAL);
    assert_int_equal(kappa_job_set_version(job, "v7"), 0);
    assert_int_equal(kappa_job_open(job), 0);
    memset(&r, 0, sizeof r);
    r.topic = "txns";
    r.key = "c0001";
    r.key_len = 5;
    r.value = inputs[0].value;
    r.value_len = inputs[0].value_len;
    r.partition = 2;
    assert_int_equal(kappa_job_feed(job, &r), KAPPA_EINVAL);
    r.partition = 3;
    assert_int_equal(kappa_job_feed(job, &r), 0);
    assert_int_equal(kappa_job_checkpoint(job), 0);
    kappa_job_free(job);

    assert_int_equal(sqlite3_open_v2(db, &sq, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(sq,
                                        "SELECT job, partition FROM"
                                        " kappa_checkpoints",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "fraud@v7#1");
    assert_int_equal(sqlite3_column_int(st, 1), 3);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    /* The versioned table exists and the first version serves. */
    assert_int_equal(sqlite3_prepare_v2(sq,
                                        "SELECT count(*) FROM fraud_flagged_v7"
                                        " UNION ALL SELECT count(*) FROM"
                                        " fraud_flagged_txns",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_finalize(st);
    sqlite3_close(sq);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proc_crash_restart_exactly_once),
        cmocka_unit_test(test_instance_owns_partitions),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
