/* Windows: tumbling, hopping and session boundaries, late detection
 * against the watermark, closing, the pending list and restore. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "streams/window.h"

struct fixture {
    struct wlimit limit;
    struct wstore store;
};

static struct fixture fx;

static void store_init(enum kappa_window_type type, int64_t size, int64_t slide,
                       int64_t lateness, enum kappa_agg_kind kind)
{
    struct kappa_agg_spec spec = {
        .table = "t",
        .kind = kind,
        .window = type,
        .size_ms = size,
        .slide_ms = slide,
        .gap_ms = size,
        .value_field = kind == KAPPA_AGG_COUNT ? NULL : "v",
        .allowed_lateness_ms = lateness,
    };
    const char *why = NULL;
    assert_int_equal(wstore_check_spec(&spec, &why), 0);
    fx.limit.n_open = 0;
    fx.limit.max_open = 1000;
    wstore_init(&fx.store, &spec, &fx.limit);
}

static int teardown(void **state)
{
    (void)state;
    wstore_free(&fx.store);
    assert_int_equal(fx.limit.n_open, 0);
    return 0;
}

static int add(const char *key, int64_t t, int64_t watermark)
{
    int is_late = -1;
    assert_int_equal(
        wstore_add(&fx.store, key, strlen(key), t, NULL, watermark, &is_late),
        0);
    return is_late;
}

/* Finds an open or pending window by key and start; NULL if none. */
static const struct wentry *find(const char *key, int64_t start)
{
    for (const struct wentry *e = fx.store.head; e != NULL; e = e->next) {
        if (e->start == start && e->key_len == strlen(key) &&
            memcmp(e->key, key, e->key_len) == 0) {
            return e;
        }
    }
    for (const struct wentry *e = fx.store.pending; e != NULL;
         e = e->pending_next) {
        if (e->start == start && e->key_len == strlen(key) &&
            memcmp(e->key, key, e->key_len) == 0) {
            return e;
        }
    }
    return NULL;
}

static void test_tumbling_boundaries(void **state)
{
    (void)state;
    store_init(KAPPA_WINDOW_TUMBLING, 60000, 0, 0, KAPPA_AGG_COUNT);
    assert_int_equal(add("a", 0, INT64_MIN), 0);
    assert_int_equal(add("a", 59999, INT64_MIN), 0);
    assert_int_equal(add("a", 60000, INT64_MIN), 0);
    assert_int_equal(add("a", -1, INT64_MIN), 0); /* before the epoch */
    assert_int_equal(find("a", 0)->agg.count, 2);
    assert_int_equal(find("a", 0)->end, 60000);
    assert_int_equal(find("a", 60000)->agg.count, 1);
    assert_int_equal(find("a", -60000)->agg.count, 1);
    assert_int_equal(fx.limit.n_open, 3);
    /* Windows close exactly when the watermark reaches end + lateness. */
    wstore_advance(&fx.store, 59999);
    assert_int_equal(fx.limit.n_open, 2);
    wstore_advance(&fx.store, 60000);
    assert_int_equal(fx.limit.n_open, 1);
    assert_int_equal(find("a", 0)->state, WENTRY_CLOSED);
    assert_int_equal(find("a", 60000)->state, WENTRY_OPEN);
}

static void test_tumbling_late_and_lateness(void **state)
{
    (void)state;
    store_init(KAPPA_WINDOW_TUMBLING, 1000, 0, 500, KAPPA_AGG_COUNT);
    assert_int_equal(add("k", 100, INT64_MIN), 0);
    /* Watermark 1400: window [0,1000) stays open until 1500. */
    wstore_advance(&fx.store, 1400);
    assert_int_equal(add("k", 200, 1400), 0);
    assert_int_equal(find("k", 0)->agg.count, 2);
    wstore_advance(&fx.store, 1500);
    assert_int_equal(find("k", 0)->state, WENTRY_CLOSED);
    assert_int_equal(add("k", 999, 1500), 1);
    assert_int_equal(fx.store.late, 1);
    assert_int_equal(add("k", 1000, 1500), 0); /* next window is fine */
}

static void test_hopping_boundaries(void **state)
{
    (void)state;
    /* size 10 s, slide 5 s: every event is in two windows. */
    store_init(KAPPA_WINDOW_HOPPING, 10000, 5000, 0, KAPPA_AGG_COUNT);
    assert_int_equal(add("h", 7000, INT64_MIN), 0);
    assert_non_null(find("h", 0));
    assert_non_null(find("h", 5000));
    assert_null(find("h", 10000));
    assert_int_equal(add("h", 10000, INT64_MIN), 0);
    assert_int_equal(find("h", 5000)->agg.count, 2);
    assert_int_equal(find("h", 10000)->agg.count, 1);
    assert_int_equal(find("h", 0)->agg.count, 1);
    /* Watermark 12000 closes [0,10000) only: an event at 9000 is late for
     * that window and counted in [5000,15000). */
    wstore_advance(&fx.store, 12000);
    assert_int_equal(add("h", 9000, 12000), 1);
    assert_int_equal(find("h", 5000)->agg.count, 3);
    assert_int_equal(fx.store.late, 1);
}

static void test_session_merge(void **state)
{
    (void)state;
    store_init(KAPPA_WINDOW_SESSION, 1000, 0, 0, KAPPA_AGG_COUNT);
    assert_int_equal(add("s", 0, INT64_MIN), 0);
    assert_int_equal(add("s", 500, INT64_MIN), 0); /* extends in place */
    assert_int_equal(find("s", 0)->end, 1500);
    assert_int_equal(add("s", 2300, INT64_MIN), 0); /* a second session */
    assert_int_equal(fx.limit.n_open, 2);
    assert_int_equal(add("t", 1200, INT64_MIN), 0); /* other key: apart */
    assert_int_equal(fx.limit.n_open, 3);
    /* 1400 bridges [0,1500) and [2300,3300): one session [0,3300). */
    assert_int_equal(add("s", 1400, INT64_MIN), 0);
    assert_int_equal(fx.limit.n_open, 2);
    const struct wentry *e = fx.store.head;
    while (e != NULL && !(e->key[0] == 's')) {
        e = e->next;
    }
    assert_non_null(e);
    assert_int_equal(e->start, 0);
    assert_int_equal(e->end, 3300);
    assert_int_equal(e->agg.count, 4);
    /* An event before the start moves it: [-700,3300). */
    assert_int_equal(add("s", -700, INT64_MIN), 0);
    assert_int_equal(
        fx.store.head->start == -700 || fx.store.head->next->start == -700, 1);
    /* Late: its own session [t, t+gap) would already be closed. */
    wstore_advance(&fx.store, 3300);
    assert_int_equal(fx.limit.n_open, 0);
    assert_int_equal(add("s", 2299, 3300), 1);
    assert_int_equal(add("s", 2301, 3300), 0);
}

static void test_pending_and_commit(void **state)
{
    (void)state;
    store_init(KAPPA_WINDOW_SESSION, 1000, 0, 0, KAPPA_AGG_COUNT);
    add("s", 0, INT64_MIN);
    add("s", 1800, INT64_MIN);
    assert_int_equal(fx.store.n_pending, 2);
    wstore_commit_done(&fx.store);
    assert_int_equal(fx.store.n_pending, 0);
    assert_true(find("s", 0)->is_persisted);
    /* A merge kills both persisted sessions and makes a new one. */
    add("s", 900, INT64_MIN);
    assert_int_equal(fx.store.n_pending, 3);
    int dead = 0, open = 0;
    for (const struct wentry *e = fx.store.pending; e; e = e->pending_next) {
        dead += e->state == WENTRY_DEAD && e->is_persisted;
        open += e->state == WENTRY_OPEN && !e->is_persisted;
    }
    assert_int_equal(dead, 2);
    assert_int_equal(open, 1);
    wstore_commit_done(&fx.store);
    assert_int_equal(fx.limit.n_open, 1);
}

static void test_open_window_limit(void **state)
{
    (void)state;
    int is_late;
    store_init(KAPPA_WINDOW_TUMBLING, 10, 0, 0, KAPPA_AGG_COUNT);
    fx.limit.max_open = 3;
    for (int k = 0; k < 3; k++) {
        add("x", k * 10, INT64_MIN);
    }
    assert_int_equal(
        wstore_add(&fx.store, "x", 1, 30, NULL, INT64_MIN, &is_late),
        KAPPA_ETOOBIG);
    add("x", 25, INT64_MIN); /* an existing window still takes events */
}

static void test_restore(void **state)
{
    (void)state;
    struct agg_state a;
    store_init(KAPPA_WINDOW_TUMBLING, 1000, 0, 0, KAPPA_AGG_COUNT);
    memset(&a, 0, sizeof a);
    a.count = 5;
    assert_int_equal(wstore_restore(&fx.store, "r", 1, 2000, 3000, &a), 0);
    assert_int_equal(find("r", 2000)->agg.count, 5);
    assert_true(find("r", 2000)->is_persisted);
    memset(&a, 0, sizeof a);
    a.count = 1;
    /* Duplicate, misaligned and wrong-size windows are corrupt. */
    assert_int_equal(wstore_restore(&fx.store, "r", 1, 2000, 3000, &a),
                     KAPPA_ECORRUPT);
    assert_int_equal(wstore_restore(&fx.store, "r", 1, 2500, 3500, &a),
                     KAPPA_ECORRUPT);
    assert_int_equal(wstore_restore(&fx.store, "r", 1, 3000, 3500, &a),
                     KAPPA_ECORRUPT);
    add("r", 2500, INT64_MIN);
    assert_int_equal(find("r", 2000)->agg.count, 6);
}

static void test_bad_specs(void **state)
{
    (void)state;
    const char *why;
    struct kappa_agg_spec s = {.table = "t",
                               .kind = KAPPA_AGG_COUNT,
                               .window = KAPPA_WINDOW_HOPPING,
                               .size_ms = 1000,
                               .slide_ms = 300};
    assert_int_equal(wstore_check_spec(&s, &why), KAPPA_EINVAL);
    s.slide_ms = 0;
    assert_int_equal(wstore_check_spec(&s, &why), KAPPA_EINVAL);
    s.window = KAPPA_WINDOW_TUMBLING;
    s.size_ms = 0;
    assert_int_equal(wstore_check_spec(&s, &why), KAPPA_EINVAL);
    s.size_ms = 10;
    s.kind = KAPPA_AGG_SUM; /* needs a value field */
    assert_int_equal(wstore_check_spec(&s, &why), KAPPA_EINVAL);
    s.window = 99;
    s.kind = KAPPA_AGG_COUNT;
    assert_int_equal(wstore_check_spec(&s, &why), KAPPA_EINVAL);
}

/* Out-of-memory at every allocation: errors, no leak, no crash. */
static void test_oom(void **state)
{
    (void)state;
    for (long fail_at = 1; fail_at < 40; fail_at++) {
        int is_late, rv = 0;
        store_init(KAPPA_WINDOW_SESSION, 100, 0, 0, KAPPA_AGG_COUNT);
        kappa_alloc_fail_after(fail_at);
        for (int k = 0; k < 50 && rv == 0; k++) {
            char key[8];
            snprintf(key, sizeof key, "k%d", k % 7);
            rv = wstore_add(&fx.store, key, strlen(key), k * 37, NULL,
                            INT64_MIN, &is_late);
        }
        kappa_alloc_fail_after(0);
        assert_true(rv == 0 || rv == KAPPA_ENOMEM);
        wstore_free(&fx.store);
    }
    store_init(KAPPA_WINDOW_TUMBLING, 10, 0, 0, KAPPA_AGG_COUNT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_tumbling_boundaries, teardown),
        cmocka_unit_test_teardown(test_tumbling_late_and_lateness, teardown),
        cmocka_unit_test_teardown(test_hopping_boundaries, teardown),
        cmocka_unit_test_teardown(test_session_merge, teardown),
        cmocka_unit_test_teardown(test_pending_and_commit, teardown),
        cmocka_unit_test_teardown(test_open_window_limit, teardown),
        cmocka_unit_test_teardown(test_restore, teardown),
        cmocka_unit_test_teardown(test_bad_specs, teardown),
        cmocka_unit_test_teardown(test_oom, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
