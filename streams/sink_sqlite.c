/* The SQLite sink.
 *
 * Schema (names of output tables come from the job and are checked by
 * sink_name_ok, so they can be pasted into SQL):
 *
 *   kappa_jobs(job PK, watermark_ms, records, events, malformed, late,
 *              checkpoints)
 *   kappa_checkpoints(job, topic, partition, next_offset, max_event_ms)
 *       PK (job, topic, partition): the next offset to read, and the
 *       partition's largest event time so far (the watermark's input)
 *   kappa_window_state(job, agg, key BLOB, window_start, window_end, state)
 *       PK (job, agg, key, window_start): every open window's partial
 *       aggregate (state.c gives the blob format)
 *   kappa_job_aggs(job, agg, late, malformed) PK (job, agg)
 *   TABLE(key, window_start, window_end, value INTEGER (count, distinct)
 *         or REAL, events, final)
 *       PK (key, window_start): one row per window, upserted; final is 1
 *       once the watermark closed the window
 *   TABLE_late(topic, partition, offset, seq, key, event_ms)
 *       PK (topic, partition, offset, seq): events rejected as late
 *
 * Every write happens between sink_begin and sink_commit, so offsets and
 * outputs are committed together or not at all. WAL with synchronous=NORMAL:
 * a killed process loses nothing committed; a power failure may lose the
 * last commits but never splits one, which only means more replay. */
#include "sink_sqlite.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"

struct sink_agg {
    char table[KAPPA_JOB_NAME_MAX + 1];
    sqlite3_stmt *put_row;
    sqlite3_stmt *del_row;
    sqlite3_stmt *put_late; /* NULL without a late table */
};

struct sqlite_sink {
    sqlite3 *db;
    char job[KAPPA_JOB_NAME_MAX + 1];
    char errmsg[KAPPA_ERRMSG_SIZE];
    int in_tx;
    sqlite3_stmt *put_state;
    sqlite3_stmt *del_state;
    sqlite3_stmt *put_offset;
    sqlite3_stmt *put_job;
    sqlite3_stmt *put_agg;
    struct sink_agg aggs[KAPPA_JOB_AGGS_MAX];
    int n_aggs;
};

static const char *const SCHEMA =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS kappa_jobs(job TEXT PRIMARY KEY,"
    " watermark_ms INTEGER, records INTEGER NOT NULL, events INTEGER NOT NULL,"
    " malformed INTEGER NOT NULL, late INTEGER NOT NULL,"
    " checkpoints INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS kappa_checkpoints(job TEXT NOT NULL,"
    " topic TEXT NOT NULL, partition INTEGER NOT NULL,"
    " next_offset INTEGER NOT NULL, max_event_ms INTEGER,"
    " PRIMARY KEY(job, topic, partition)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS kappa_window_state(job TEXT NOT NULL,"
    " agg TEXT NOT NULL, key BLOB NOT NULL, window_start INTEGER NOT NULL,"
    " window_end INTEGER NOT NULL, state BLOB NOT NULL,"
    " PRIMARY KEY(job, agg, key, window_start)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS kappa_job_aggs(job TEXT NOT NULL,"
    " agg TEXT NOT NULL, late INTEGER NOT NULL, malformed INTEGER NOT NULL,"
    " PRIMARY KEY(job, agg)) WITHOUT ROWID;";

int sink_name_ok(const char *name)
{
    size_t n = name != NULL ? strlen(name) : 0;
    if (n == 0 || n > KAPPA_JOB_NAME_MAX ||
        !((name[0] >= 'a' && name[0] <= 'z') ||
          (name[0] >= 'A' && name[0] <= 'Z') || name[0] == '_')) {
        return 0;
    }
    for (size_t k = 1; k < n; k++) {
        char c = name[k];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_')) {
            return 0;
        }
    }
    return 1;
}

static int fail(struct sqlite_sink *s, const char *what)
{
    kappa_errmsg_printf(s->errmsg, "sqlite %s: %s", what,
                        sqlite3_errmsg(s->db));
    return KAPPA_EIO;
}

static int prepare(struct sqlite_sink *s, const char *sql, sqlite3_stmt **stmt)
{
    if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt,
                           NULL) != SQLITE_OK) {
        return fail(s, "prepare");
    }
    return 0;
}

/* Runs a bound statement to completion and resets it. */
static int step(struct sqlite_sink *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : fail(s, what);
}

static int exec(struct sqlite_sink *s, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &err) != SQLITE_OK) {
        kappa_errmsg_printf(s->errmsg, "sqlite: %s", err ? err : "error");
        sqlite3_free(err);
        return KAPPA_EIO;
    }
    return 0;
}

static int prepare_system(struct sqlite_sink *s)
{
    int rv = prepare(s,
                     "INSERT INTO kappa_window_state(job, agg, key,"
                     " window_start, window_end, state) VALUES(?1,?2,?3,?4,?5,"
                     "?6) ON CONFLICT DO UPDATE SET window_end=excluded."
                     "window_end, state=excluded.state",
                     &s->put_state);
    if (rv == 0) {
        rv = prepare(s,
                     "DELETE FROM kappa_window_state WHERE job=?1 AND agg=?2"
                     " AND key=?3 AND window_start=?4",
                     &s->del_state);
    }
    if (rv == 0) {
        rv = prepare(s,
                     "INSERT OR REPLACE INTO kappa_checkpoints(job, topic,"
                     " partition, next_offset, max_event_ms)"
                     " VALUES(?1,?2,?3,?4,?5)",
                     &s->put_offset);
    }
    if (rv == 0) {
        rv = prepare(s,
                     "INSERT INTO kappa_jobs(job, watermark_ms, records,"
                     " events, malformed, late, checkpoints)"
                     " VALUES(?1,?2,?3,?4,?5,?6,1) ON CONFLICT DO UPDATE SET"
                     " watermark_ms=excluded.watermark_ms,"
                     " records=excluded.records, events=excluded.events,"
                     " malformed=excluded.malformed, late=excluded.late,"
                     " checkpoints=checkpoints+1",
                     &s->put_job);
    }
    if (rv == 0) {
        rv = prepare(s,
                     "INSERT OR REPLACE INTO kappa_job_aggs(job, agg, late,"
                     " malformed) VALUES(?1,?2,?3,?4)",
                     &s->put_agg);
    }
    return rv;
}

int sink_open(const char *path, const char *job, struct sqlite_sink **out,
              char *errmsg)
{
    struct sqlite_sink *s = kappa_calloc(1, sizeof *s);
    int rv;

    *out = NULL;
    if (s == NULL) {
        kappa_errmsg_printf(errmsg, "sqlite sink: out of memory");
        return KAPPA_ENOMEM;
    }
    snprintf(s->job, sizeof s->job, "%s", job);
    if (sqlite3_open_v2(path, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                            SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        rv = fail(s, "open");
        goto err;
    }
    sqlite3_busy_timeout(s->db, 10000);
    rv = exec(s, SCHEMA);
    if (rv == 0) {
        rv = prepare_system(s);
    }
    if (rv != 0) {
        goto err;
    }
    *out = s;
    return 0;
err:
    kappa_errmsg_printf(errmsg, "%s: %s", path, s->errmsg);
    sink_close(s);
    return rv;
}

void sink_close(struct sqlite_sink *s)
{
    if (s == NULL) {
        return;
    }
    if (s->in_tx) {
        sink_rollback(s);
    }
    sqlite3_finalize(s->put_state);
    sqlite3_finalize(s->del_state);
    sqlite3_finalize(s->put_offset);
    sqlite3_finalize(s->put_job);
    sqlite3_finalize(s->put_agg);
    for (int k = 0; k < s->n_aggs; k++) {
        sqlite3_finalize(s->aggs[k].put_row);
        sqlite3_finalize(s->aggs[k].del_row);
        sqlite3_finalize(s->aggs[k].put_late);
    }
    sqlite3_close(s->db);
    kappa_free(s);
}

const char *sink_errmsg(const struct sqlite_sink *s)
{
    return s->errmsg;
}

int sink_add_table(struct sqlite_sink *s, const char *table, int is_int,
                   int late_table)
{
    struct sink_agg *a;
    char sql[1024];
    int rv;

    if (s->n_aggs >= KAPPA_JOB_AGGS_MAX || !sink_name_ok(table) ||
        strlen(table) + 5 > KAPPA_JOB_NAME_MAX) {
        kappa_errmsg_printf(s->errmsg, "bad output table name");
        return KAPPA_EINVAL;
    }
    a = &s->aggs[s->n_aggs];
    snprintf(a->table, sizeof a->table, "%s", table);
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS \"%s\"(key TEXT NOT NULL,"
             " window_start INTEGER NOT NULL, window_end INTEGER NOT NULL,"
             " value %s NOT NULL, events INTEGER NOT NULL,"
             " final INTEGER NOT NULL, PRIMARY KEY(key, window_start))"
             " WITHOUT ROWID;"
             "CREATE TABLE IF NOT EXISTS \"%s_late\"(topic TEXT NOT NULL,"
             " partition INTEGER NOT NULL, offset INTEGER NOT NULL,"
             " seq INTEGER NOT NULL, key TEXT, event_ms INTEGER NOT NULL,"
             " PRIMARY KEY(topic, partition, offset, seq)) WITHOUT ROWID;",
             table, is_int ? "INTEGER" : "REAL", table);
    if (!late_table) {
        *strstr(sql, ";CREATE") = '\0';
    }
    rv = exec(s, sql);
    if (rv != 0) {
        return rv;
    }
    snprintf(sql, sizeof sql,
             "INSERT INTO \"%s\"(key, window_start, window_end, value, events,"
             " final) VALUES(?1,?2,?3,?4,?5,?6) ON CONFLICT DO UPDATE SET"
             " window_end=excluded.window_end, value=excluded.value,"
             " events=excluded.events, final=excluded.final",
             table);
    rv = prepare(s, sql, &a->put_row);
    if (rv == 0) {
        snprintf(sql, sizeof sql,
                 "DELETE FROM \"%s\" WHERE key=?1 AND window_start=?2", table);
        rv = prepare(s, sql, &a->del_row);
    }
    if (rv == 0 && late_table) {
        snprintf(sql, sizeof sql,
                 "INSERT OR REPLACE INTO \"%s_late\"(topic, partition, offset,"
                 " seq, key, event_ms) VALUES(?1,?2,?3,?4,?5,?6)",
                 table);
        rv = prepare(s, sql, &a->put_late);
    }
    s->n_aggs++; /* even on failure, so sink_close finalizes */
    return rv;
}

int sink_begin(struct sqlite_sink *s)
{
    int rv = exec(s, "BEGIN IMMEDIATE");
    s->in_tx = rv == 0;
    return rv;
}

int sink_commit(struct sqlite_sink *s)
{
    int rv = exec(s, "COMMIT");
    if (rv != 0) {
        sink_rollback(s);
        return rv;
    }
    s->in_tx = 0;
    return 0;
}

void sink_rollback(struct sqlite_sink *s)
{
    if (sqlite3_get_autocommit(s->db) == 0) {
        (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    }
    s->in_tx = 0;
}

static int delete_where_job(struct sqlite_sink *s, const char *table)
{
    char sql[256];
    sqlite3_stmt *st;
    snprintf(sql, sizeof sql, "DELETE FROM %s WHERE job=?1", table);
    if (prepare(s, sql, &st) != 0) {
        return KAPPA_EIO;
    }
    sqlite3_bind_text(st, 1, s->job, -1, SQLITE_STATIC);
    int rv = step(s, st, "reset");
    sqlite3_finalize(st);
    return rv;
}

int sink_reset(struct sqlite_sink *s)
{
    static const char *const sys[] = {"kappa_jobs", "kappa_checkpoints",
                                      "kappa_window_state", "kappa_job_aggs"};
    int rv = sink_begin(s);
    for (size_t k = 0; rv == 0 && k < sizeof sys / sizeof sys[0]; k++) {
        rv = delete_where_job(s, sys[k]);
    }
    for (int k = 0; rv == 0 && k < s->n_aggs; k++) {
        char sql[256];
        snprintf(sql, sizeof sql, "DELETE FROM \"%s\"", s->aggs[k].table);
        rv = exec(s, sql);
        if (rv == 0 && s->aggs[k].put_late != NULL) {
            snprintf(sql, sizeof sql, "DELETE FROM \"%s_late\"",
                     s->aggs[k].table);
            rv = exec(s, sql);
        }
    }
    return rv == 0 ? sink_commit(s) : (sink_rollback(s), rv);
}

int sink_put_row(struct sqlite_sink *s, int agg, const struct sink_row *r)
{
    sqlite3_stmt *st = s->aggs[agg].put_row;
    sqlite3_bind_text(st, 1, r->key_len > 0 ? r->key : "", (int)r->key_len,
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, r->start);
    sqlite3_bind_int64(st, 3, r->end);
    if (r->is_int) {
        sqlite3_bind_int64(st, 4, r->i);
    } else {
        sqlite3_bind_double(st, 4, r->d);
    }
    sqlite3_bind_int64(st, 5, r->events);
    sqlite3_bind_int(st, 6, r->is_final);
    return step(s, st, "upsert output");
}

int sink_del_row(struct sqlite_sink *s, int agg, const void *key,
                 size_t key_len, int64_t start)
{
    sqlite3_stmt *st = s->aggs[agg].del_row;
    sqlite3_bind_text(st, 1, key_len > 0 ? key : "", (int)key_len,
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, start);
    return step(s, st, "delete output");
}

int sink_put_state(struct sqlite_sink *s, int agg, const void *key,
                   size_t key_len, int64_t start, int64_t end, const void *blob,
                   size_t blob_len)
{
    sqlite3_stmt *st = s->put_state;
    sqlite3_bind_text(st, 1, s->job, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->aggs[agg].table, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, key_len > 0 ? key : "", (int)key_len,
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, start);
    sqlite3_bind_int64(st, 5, end);
    sqlite3_bind_blob(st, 6, blob, (int)blob_len, SQLITE_STATIC);
    return step(s, st, "write window state");
}

int sink_del_state(struct sqlite_sink *s, int agg, const void *key,
                   size_t key_len, int64_t start)
{
    sqlite3_stmt *st = s->del_state;
    sqlite3_bind_text(st, 1, s->job, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->aggs[agg].table, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, key_len > 0 ? key : "", (int)key_len,
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, start);
    return step(s, st, "delete window state");
}

int sink_put_late(struct sqlite_sink *s, int agg, const char *topic,
                  int32_t partition, int64_t offset, int64_t seq,
                  const void *key, size_t key_len, int64_t event_ms)
{
    sqlite3_stmt *st = s->aggs[agg].put_late;
    if (st == NULL) {
        return 0;
    }
    sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, partition);
    sqlite3_bind_int64(st, 3, offset);
    sqlite3_bind_int64(st, 4, seq);
    sqlite3_bind_text(st, 5, key_len > 0 ? key : "", (int)key_len,
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, event_ms);
    return step(s, st, "insert late event");
}

int sink_put_offset(struct sqlite_sink *s, const char *topic, int32_t partition,
                    int64_t next_offset, int64_t max_event_ms)
{
    sqlite3_stmt *st = s->put_offset;
    sqlite3_bind_text(st, 1, s->job, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, topic, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, partition);
    sqlite3_bind_int64(st, 4, next_offset);
    if (max_event_ms != INT64_MIN) {
        sqlite3_bind_int64(st, 5, max_event_ms);
    }
    return step(s, st, "write checkpoint");
}

int sink_put_job(struct sqlite_sink *s, const struct kappa_job_stats *st)
{
    sqlite3_stmt *q = s->put_job;
    sqlite3_bind_text(q, 1, s->job, -1, SQLITE_STATIC);
    if (st->watermark_ms != INT64_MIN) {
        sqlite3_bind_int64(q, 2, st->watermark_ms);
    }
    sqlite3_bind_int64(q, 3, st->records);
    sqlite3_bind_int64(q, 4, st->events);
    sqlite3_bind_int64(q, 5, st->malformed);
    sqlite3_bind_int64(q, 6, st->late);
    return step(s, q, "write job");
}

int sink_put_agg(struct sqlite_sink *s, int agg, int64_t late,
                 int64_t malformed)
{
    sqlite3_stmt *q = s->put_agg;
    sqlite3_bind_text(q, 1, s->job, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, s->aggs[agg].table, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, late);
    sqlite3_bind_int64(q, 4, malformed);
    return step(s, q, "write aggregation counters");
}

/* ---- Loading
 * ----------------------------------------------------------------- */

static int64_t col_int_or(sqlite3_stmt *st, int col, int64_t dflt)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL
               ? dflt
               : sqlite3_column_int64(st, col);
}

int sink_load_job(struct sqlite_sink *s, struct kappa_job_stats *stats,
                  int *found)
{
    sqlite3_stmt *st;
    int rc;

    *found = 0;
    if (prepare(s,
                "SELECT watermark_ms, records, events, malformed, late FROM"
                " kappa_jobs WHERE job=?1",
                &st) != 0) {
        return KAPPA_EIO;
    }
    sqlite3_bind_text(st, 1, s->job, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *found = 1;
        stats->watermark_ms = col_int_or(st, 0, INT64_MIN);
        stats->records = sqlite3_column_int64(st, 1);
        stats->events = sqlite3_column_int64(st, 2);
        stats->malformed = sqlite3_column_int64(st, 3);
        stats->late = sqlite3_column_int64(st, 4);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : fail(s, "load job");
}

int sink_load_offsets(struct sqlite_sink *s, sink_offset_cb cb, void *arg)
{
    sqlite3_stmt *st;
    int rc, rv = 0;

    if (prepare(s,
                "SELECT topic, partition, next_offset, max_event_ms FROM"
                " kappa_checkpoints WHERE job=?1",
                &st) != 0) {
        return KAPPA_EIO;
    }
    sqlite3_bind_text(st, 1, s->job, -1, SQLITE_STATIC);
    while (rv == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *topic = (const char *)sqlite3_column_text(st, 0);
        int64_t p = sqlite3_column_int64(st, 1);
        int64_t next = sqlite3_column_int64(st, 2);
        if (topic == NULL || p < 0 || p > INT32_MAX || next < 0) {
            rv = KAPPA_CORRUPT();
            break;
        }
        rv = cb(topic, (int32_t)p, next, col_int_or(st, 3, INT64_MIN), arg);
    }
    if (rv == 0 && rc != SQLITE_DONE) {
        rv = fail(s, "load checkpoints");
    }
    sqlite3_finalize(st);
    return rv;
}

int sink_load_states(struct sqlite_sink *s, int agg, sink_state_cb cb,
                     void *arg)
{
    sqlite3_stmt *st;
    int rc, rv = 0;

    if (prepare(s,
                "SELECT key, window_start, window_end, state FROM"
                " kappa_window_state WHERE job=?1 AND agg=?2",
                &st) != 0) {
        return KAPPA_EIO;
    }
    sqlite3_bind_text(st, 1, s->job, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->aggs[agg].table, -1, SQLITE_STATIC);
    while (rv == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const void *key = sqlite3_column_blob(st, 0);
        size_t key_len = (size_t)sqlite3_column_bytes(st, 0);
        const void *blob = sqlite3_column_blob(st, 3);
        size_t blob_len = (size_t)sqlite3_column_bytes(st, 3);
        rv = cb(key, key_len, sqlite3_column_int64(st, 1),
                sqlite3_column_int64(st, 2), blob, blob_len, arg);
    }
    if (rv == 0 && rc != SQLITE_DONE) {
        rv = fail(s, "load window state");
    }
    sqlite3_finalize(st);
    return rv;
}

int sink_load_agg(struct sqlite_sink *s, int agg, int64_t *late,
                  int64_t *malformed)
{
    sqlite3_stmt *st;
    int rc;

    *late = *malformed = 0;
    if (prepare(s,
                "SELECT late, malformed FROM kappa_job_aggs WHERE job=?1 AND"
                " agg=?2",
                &st) != 0) {
        return KAPPA_EIO;
    }
    sqlite3_bind_text(st, 1, s->job, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->aggs[agg].table, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *late = sqlite3_column_int64(st, 0);
        *malformed = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : fail(s, "load agg");
}
