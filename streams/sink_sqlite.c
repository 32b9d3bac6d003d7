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
 *   kappa_keyed_state(job, proc, key BLOB, state BLOB) PK (job, proc, key)
 *       the state of every key of a keyed processor
 *   PROC(topic, partition, offset, seq, key, event_ms, value)
 *       PK (topic, partition, offset, seq): rows a processor emitted
 *   kappa_versions(job, version, instances, topics) PK (job, version)
 *       every version ("" without one) and its fixed instance count
 *   kappa_version_outputs(job, version, output, physical)
 *       the output names of a version and the table or view behind each
 *   kappa_promoted(job PK, version): the version the views NAME point at
 *
 * Versions and instances: the `job` column of the system tables is the
 * checkpoint key NAME[@VERSION][#INSTANCE]; output T of version V is the
 * table T_V (T without a version). With several instances, T_V_parts
 * holds one row per (key, window_start, instance) and T_V is a view that
 * merges them (sum for count, sum and distinct; min; max; the
 * events-weighted mean for avg). Late and processor tables are keyed by
 * the input partition, which belongs to one instance, so they are shared.
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
#include "versions.h"

struct sink_agg {
    char table[KAPPA_JOB_NAME_MAX + 1]; /* the output name */
    char phys[SINK_TABLE_MAX];          /* table or merging view */
    enum kappa_agg_kind kind;
    int has_late;
    sqlite3_stmt *put_row;
    sqlite3_stmt *del_row;
    sqlite3_stmt *put_late; /* NULL without a late table */
};

struct sink_proc {
    char table[KAPPA_JOB_NAME_MAX + 1];
    char phys[SINK_TABLE_MAX];
    sqlite3_stmt *put_row;
};

struct sink_view {
    char name[KAPPA_JOB_NAME_MAX + 1];
    char phys[SINK_TABLE_MAX];
};

struct sqlite_sink {
    sqlite3 *db;
    char job[SINK_KEY_MAX]; /* the checkpoint key */
    char name[KAPPA_JOB_NAME_MAX + 1];
    char version[KAPPA_JOB_VERSION_MAX + 1];
    int instance;
    int instances;
    char errmsg[KAPPA_ERRMSG_SIZE];
    int in_tx;
    sqlite3_stmt *put_state;
    sqlite3_stmt *del_state;
    sqlite3_stmt *put_offset;
    sqlite3_stmt *put_job;
    sqlite3_stmt *put_agg;
    sqlite3_stmt *put_kstate;
    sqlite3_stmt *del_kstate;
    struct sink_agg aggs[KAPPA_JOB_AGGS_MAX];
    int n_aggs;
    struct sink_proc procs[KAPPA_JOB_PROCS_MAX];
    int n_procs;
    struct sink_view views[KAPPA_JOB_VIEWS_MAX];
    int n_views;
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
    " PRIMARY KEY(job, agg)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS kappa_keyed_state(job TEXT NOT NULL,"
    " proc TEXT NOT NULL, key BLOB NOT NULL, state BLOB NOT NULL,"
    " PRIMARY KEY(job, proc, key)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS kappa_versions(job TEXT NOT NULL,"
    " version TEXT NOT NULL, instances INTEGER NOT NULL,"
    " topics TEXT NOT NULL, PRIMARY KEY(job, version)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS kappa_version_outputs(job TEXT NOT NULL,"
    " version TEXT NOT NULL, output TEXT NOT NULL, physical TEXT NOT NULL,"
    " PRIMARY KEY(job, version, output)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS kappa_promoted(job TEXT PRIMARY KEY,"
    " version TEXT NOT NULL);";

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

int sink_version_ok(const char *version)
{
    size_t n = version != NULL ? strlen(version) : 0;
    if (n == 0 || n > KAPPA_JOB_VERSION_MAX) {
        return 0;
    }
    for (size_t k = 0; k < n; k++) {
        char c = version[k];
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
    if (rv == 0) {
        rv = prepare(s,
                     "INSERT OR REPLACE INTO kappa_keyed_state(job, proc, key,"
                     " state) VALUES(?1,?2,?3,?4)",
                     &s->put_kstate);
    }
    if (rv == 0) {
        rv = prepare(s,
                     "DELETE FROM kappa_keyed_state WHERE job=?1 AND proc=?2"
                     " AND key=?3",
                     &s->del_kstate);
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
    snprintf(s->name, sizeof s->name, "%s", job);
    s->instances = 1;
    if (sqlite3_open_v2(path, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                            SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        rv = fail(s, "open");
        goto err;
    }
    sqlite3_busy_timeout(s->db, 10000);
    /* Instances opening a new file together: switching it to WAL takes an
     * exclusive lock that may report busy without waiting. */
    for (int tries = 0; tries < 200; tries++) {
        rv = exec(s, SCHEMA);
        if (rv == 0 || sqlite3_errcode(s->db) != SQLITE_BUSY) {
            break;
        }
        sqlite3_sleep(50);
    }
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
    sqlite3_finalize(s->put_kstate);
    sqlite3_finalize(s->del_kstate);
    for (int k = 0; k < s->n_procs; k++) {
        sqlite3_finalize(s->procs[k].put_row);
    }
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

void sink_set_layout(struct sqlite_sink *s, const char *name,
                     const char *version, int instance, int instances)
{
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->version, sizeof s->version, "%s",
             version != NULL ? version : "");
    s->instance = instance;
    s->instances = instances > 1 ? instances : 1;
}

/* name[_VERSION] into out (SINK_TABLE_MAX); KAPPA_EINVAL if too long for
 * the longest suffix ("_parts"). */
static int phys_name(struct sqlite_sink *s, const char *name, char *out)
{
    int n = snprintf(out, SINK_TABLE_MAX, "%s%s%s", name,
                     s->version[0] != '\0' ? "_" : "", s->version);
    if (n < 0 || n + 7 > SINK_TABLE_MAX) {
        kappa_errmsg_printf(s->errmsg, "output name %s too long", name);
        return KAPPA_EINVAL;
    }
    return 0;
}

/* Runs sql (several statements) in one BEGIN IMMEDIATE transaction, so
 * instances creating the same objects at once do not interleave. */
static int exec_tx(struct sqlite_sink *s, const char *sql)
{
    int rv = sink_begin(s);
    if (rv == 0) {
        rv = exec(s, sql);
    }
    return rv == 0 ? sink_commit(s) : (sink_rollback(s), rv);
}

static const char *merge_expr(enum kappa_agg_kind kind)
{
    switch (kind) {
    case KAPPA_AGG_MIN:
        return "min(value)";
    case KAPPA_AGG_MAX:
        return "max(value)";
    case KAPPA_AGG_AVG:
        return "sum(value * events) / sum(events)";
    default:
        return "sum(value)";
    }
}

/* The DDL of an aggregation's output: one table, or with several instances
 * a table of partial rows and the view merging them. */
static void table_ddl(const struct sqlite_sink *s, const struct sink_agg *a,
                      char *sql, size_t size)
{
    int is_int = a->kind == KAPPA_AGG_COUNT || a->kind == KAPPA_AGG_DISTINCT;
    size_t n;
    if (s->instances == 1) {
        n = (size_t)snprintf(
            sql, size,
            "CREATE TABLE IF NOT EXISTS \"%s\"(key TEXT NOT NULL,"
            " window_start INTEGER NOT NULL, window_end INTEGER NOT NULL,"
            " value %s NOT NULL, events INTEGER NOT NULL,"
            " final INTEGER NOT NULL, PRIMARY KEY(key, window_start))"
            " WITHOUT ROWID;",
            a->phys, is_int ? "INTEGER" : "REAL");
    } else {
        n = (size_t)snprintf(
            sql, size,
            "CREATE TABLE IF NOT EXISTS \"%s_parts\"(key TEXT NOT NULL,"
            " window_start INTEGER NOT NULL, instance INTEGER NOT NULL,"
            " window_end INTEGER NOT NULL, value %s NOT NULL,"
            " events INTEGER NOT NULL, final INTEGER NOT NULL,"
            " PRIMARY KEY(key, window_start, instance)) WITHOUT ROWID;"
            "CREATE VIEW IF NOT EXISTS \"%s\" AS SELECT key, window_start,"
            " max(window_end) AS window_end, %s AS value,"
            " sum(events) AS events, min(final) AS final FROM \"%s_parts\""
            " GROUP BY key, window_start;",
            a->phys, is_int ? "INTEGER" : "REAL", a->phys, merge_expr(a->kind),
            a->phys);
    }
    if (a->has_late && n < size) {
        snprintf(sql + n, size - n,
                 "CREATE TABLE IF NOT EXISTS \"%s_late\"(topic TEXT NOT NULL,"
                 " partition INTEGER NOT NULL, offset INTEGER NOT NULL,"
                 " seq INTEGER NOT NULL, key TEXT, event_ms INTEGER NOT NULL,"
                 " PRIMARY KEY(topic, partition, offset, seq)) WITHOUT ROWID;",
                 a->phys);
    }
}

static int prepare_table(struct sqlite_sink *s, struct sink_agg *a)
{
    const char *parts = s->instances > 1 ? "_parts" : "";
    char sql[1024];
    int rv;

    snprintf(sql, sizeof sql,
             "INSERT INTO \"%s%s\"(key, window_start, window_end, value,"
             " events, final%s) VALUES(?1,?2,?3,?4,?5,?6%s) ON CONFLICT DO"
             " UPDATE SET window_end=excluded.window_end,"
             " value=excluded.value, events=excluded.events,"
             " final=excluded.final",
             a->phys, parts, s->instances > 1 ? ", instance" : "",
             s->instances > 1 ? ",?7" : "");
    rv = prepare(s, sql, &a->put_row);
    if (rv == 0) {
        snprintf(sql, sizeof sql,
                 "DELETE FROM \"%s%s\" WHERE key=?1 AND window_start=?2%s",
                 a->phys, parts, s->instances > 1 ? " AND instance=?3" : "");
        rv = prepare(s, sql, &a->del_row);
    }
    if (rv == 0 && a->has_late) {
        snprintf(sql, sizeof sql,
                 "INSERT OR REPLACE INTO \"%s_late\"(topic, partition, offset,"
                 " seq, key, event_ms) VALUES(?1,?2,?3,?4,?5,?6)",
                 a->phys);
        rv = prepare(s, sql, &a->put_late);
    }
    return rv;
}

int sink_add_table(struct sqlite_sink *s, const char *table,
                   enum kappa_agg_kind kind, int late_table)
{
    struct sink_agg *a;
    char sql[2048];
    int rv;

    if (s->n_aggs >= KAPPA_JOB_AGGS_MAX || !sink_name_ok(table) ||
        strlen(table) + 5 > KAPPA_JOB_NAME_MAX) {
        kappa_errmsg_printf(s->errmsg, "bad output table name");
        return KAPPA_EINVAL;
    }
    a = &s->aggs[s->n_aggs];
    snprintf(a->table, sizeof a->table, "%s", table);
    a->kind = kind;
    a->has_late = late_table != 0;
    rv = phys_name(s, table, a->phys);
    if (rv != 0) {
        return rv;
    }
    table_ddl(s, a, sql, sizeof sql);
    rv = exec_tx(s, sql);
    if (rv != 0) {
        return rv;
    }
    rv = prepare_table(s, a);
    s->n_aggs++; /* even on failure, so sink_close finalizes */
    return rv;
}

int sink_add_proc(struct sqlite_sink *s, const char *table)
{
    struct sink_proc *p;
    char sql[1024];
    int rv;

    if (s->n_procs >= KAPPA_JOB_PROCS_MAX || !sink_name_ok(table)) {
        kappa_errmsg_printf(s->errmsg, "bad processor table name");
        return KAPPA_EINVAL;
    }
    p = &s->procs[s->n_procs];
    snprintf(p->table, sizeof p->table, "%s", table);
    rv = phys_name(s, table, p->phys);
    if (rv != 0) {
        return rv;
    }
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS \"%s\"(topic TEXT NOT NULL,"
             " partition INTEGER NOT NULL, offset INTEGER NOT NULL,"
             " seq INTEGER NOT NULL, key TEXT NOT NULL,"
             " event_ms INTEGER NOT NULL, value TEXT NOT NULL,"
             " PRIMARY KEY(topic, partition, offset, seq)) WITHOUT ROWID;",
             p->phys);
    rv = exec_tx(s, sql);
    if (rv != 0) {
        return rv;
    }
    snprintf(sql, sizeof sql,
             "INSERT OR REPLACE INTO \"%s\"(topic, partition, offset, seq,"
             " key, event_ms, value) VALUES(?1,?2,?3,?4,?5,?6,?7)",
             p->phys);
    rv = prepare(s, sql, &p->put_row);
    s->n_procs++;
    return rv;
}

/* The physical name of output `name` (an aggregation table, its _late
 * table, a processor table or an earlier view), or NULL. */
static const char *output_phys(struct sqlite_sink *s, const char *name,
                               char *buf)
{
    for (int k = 0; k < s->n_aggs; k++) {
        const struct sink_agg *a = &s->aggs[k];
        size_t n = strlen(a->table);
        if (strcmp(a->table, name) == 0) {
            return a->phys;
        }
        if (a->has_late && strncmp(a->table, name, n) == 0 &&
            strcmp(name + n, "_late") == 0) {
            snprintf(buf, SINK_TABLE_MAX, "%.*s_late", SINK_TABLE_MAX - 8,
                     a->phys);
            return buf;
        }
    }
    for (int k = 0; k < s->n_procs; k++) {
        if (strcmp(s->procs[k].table, name) == 0) {
            return s->procs[k].phys;
        }
    }
    for (int k = 0; k < s->n_views; k++) {
        if (strcmp(s->views[k].name, name) == 0) {
            return s->views[k].phys;
        }
    }
    return NULL;
}

/* Copies select_sql into out replacing every {T} by "physical(T)". */
static int expand_view(struct sqlite_sink *s, const char *select_sql, char *out,
                       size_t size)
{
    size_t n = 0;
    for (const char *p = select_sql; *p != '\0';) {
        char name[KAPPA_JOB_NAME_MAX + 1], buf[SINK_TABLE_MAX];
        const char *close, *phys;
        size_t len;
        if (*p != '{') {
            if (n + 1 >= size) {
                goto too_long;
            }
            out[n++] = *p++;
            continue;
        }
        close = strchr(p, '}');
        len = close != NULL ? (size_t)(close - p - 1) : 0;
        if (len == 0 || len > KAPPA_JOB_NAME_MAX) {
            kappa_errmsg_printf(s->errmsg, "view: bad {name}");
            return KAPPA_EINVAL;
        }
        memcpy(name, p + 1, len);
        name[len] = '\0';
        phys = output_phys(s, name, buf);
        if (phys == NULL) {
            kappa_errmsg_printf(s->errmsg, "view: unknown output %s", name);
            return KAPPA_EINVAL;
        }
        if (n + strlen(phys) + 3 >= size) {
            goto too_long;
        }
        n += (size_t)snprintf(out + n, size - n, "\"%s\"", phys);
        p = close + 1;
    }
    out[n] = '\0';
    return 0;
too_long:
    kappa_errmsg_printf(s->errmsg, "view: SQL too long");
    return KAPPA_EINVAL;
}

int sink_add_view(struct sqlite_sink *s, const char *name,
                  const char *select_sql)
{
    struct sink_view *v;
    char body[KAPPA_JOB_VIEW_SQL_MAX + 1024];
    char sql[KAPPA_JOB_VIEW_SQL_MAX + 1200];
    int rv;

    if (s->n_views >= KAPPA_JOB_VIEWS_MAX || !sink_name_ok(name)) {
        kappa_errmsg_printf(s->errmsg, "bad view name");
        return KAPPA_EINVAL;
    }
    v = &s->views[s->n_views];
    snprintf(v->name, sizeof v->name, "%s", name);
    rv = phys_name(s, name, v->phys);
    if (rv == 0) {
        rv = expand_view(s, select_sql, body, sizeof body);
    }
    if (rv != 0) {
        return rv;
    }
    snprintf(sql, sizeof sql, "CREATE VIEW IF NOT EXISTS \"%s\" AS %s", v->phys,
             body);
    rv = exec_tx(s, sql);
    if (rv == 0) {
        s->n_views++;
    }
    return rv;
}

static int register_output(struct sqlite_sink *s, sqlite3_stmt *st,
                           const char *output, const char *phys)
{
    sqlite3_bind_text(st, 1, s->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->version, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, output, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, phys, -1, SQLITE_TRANSIENT);
    return step(s, st, "register output");
}

static int register_outputs(struct sqlite_sink *s)
{
    sqlite3_stmt *st;
    char name[SINK_TABLE_MAX], phys[SINK_TABLE_MAX];
    int rv = prepare(s,
                     "INSERT OR REPLACE INTO kappa_version_outputs(job,"
                     " version, output, physical) VALUES(?1,?2,?3,?4)",
                     &st);
    for (int k = 0; rv == 0 && k < s->n_aggs; k++) {
        const struct sink_agg *a = &s->aggs[k];
        rv = register_output(s, st, a->table, a->phys);
        if (rv == 0 && a->has_late) {
            snprintf(name, sizeof name, "%.*s_late", SINK_TABLE_MAX - 8,
                     a->table);
            snprintf(phys, sizeof phys, "%.*s_late", SINK_TABLE_MAX - 8,
                     a->phys);
            rv = register_output(s, st, name, phys);
        }
    }
    for (int k = 0; rv == 0 && k < s->n_procs; k++) {
        rv = register_output(s, st, s->procs[k].table, s->procs[k].phys);
    }
    for (int k = 0; rv == 0 && k < s->n_views; k++) {
        rv = register_output(s, st, s->views[k].name, s->views[k].phys);
    }
    sqlite3_finalize(st);
    return rv;
}

/* Inserts the version, or checks its instance count. */
static int register_version(struct sqlite_sink *s, const char *topics_json,
                            int *is_new)
{
    sqlite3_stmt *st;
    int rc, rv;

    *is_new = 0;
    if (prepare(s,
                "SELECT instances FROM kappa_versions WHERE job=?1 AND"
                " version=?2",
                &st) != 0) {
        return KAPPA_EIO;
    }
    sqlite3_bind_text(st, 1, s->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->version, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_int(st, 0) != s->instances) {
        kappa_errmsg_printf(s->errmsg,
                            "version '%s' of %s runs with %d instances, not"
                            " %d (use a new version)",
                            s->version, s->name, sqlite3_column_int(st, 0),
                            s->instances);
        sqlite3_finalize(st);
        return KAPPA_EINVAL;
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) {
        return 0;
    }
    if (rc != SQLITE_DONE ||
        prepare(s,
                "INSERT INTO kappa_versions(job, version, instances, topics)"
                " VALUES(?1,?2,?3,?4)",
                &st) != 0) {
        return fail(s, "register version");
    }
    sqlite3_bind_text(st, 1, s->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->version, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, s->instances);
    sqlite3_bind_text(st, 4, topics_json, -1, SQLITE_STATIC);
    rv = step(s, st, "register version");
    sqlite3_finalize(st);
    *is_new = rv == 0;
    return rv;
}

int sink_register(struct sqlite_sink *s, const char *topics_json)
{
    int is_new = 0;
    int rv = sink_begin(s);
    if (rv == 0) {
        rv = register_version(s, topics_json, &is_new);
    }
    if (rv == 0) {
        rv = register_outputs(s);
    }
    if (rv == 0 && is_new && s->version[0] != '\0') {
        rv = versions_promote_first(s->db, s->name, s->version, s->errmsg);
    }
    return rv == 0 ? sink_commit(s) : (sink_rollback(s), rv);
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

/* Deletes this run's share of output table t: everything for a single
 * instance; rows of this instance, or rows of its partitions (column
 * partition), for one of several. */
static int reset_table(struct sqlite_sink *s, const char *t, int by_partition)
{
    char sql[512];
    if (s->instances == 1) {
        snprintf(sql, sizeof sql, "DELETE FROM \"%s\"", t);
    } else if (by_partition) {
        snprintf(sql, sizeof sql,
                 "DELETE FROM \"%s\" WHERE partition %% %d = %d", t,
                 s->instances, s->instance);
    } else {
        snprintf(sql, sizeof sql,
                 "DELETE FROM \"%s_parts\" WHERE instance = %d", t,
                 s->instance);
    }
    return exec(s, sql);
}

int sink_reset(struct sqlite_sink *s)
{
    static const char *const sys[] = {"kappa_jobs", "kappa_checkpoints",
                                      "kappa_window_state", "kappa_job_aggs",
                                      "kappa_keyed_state"};
    int rv = sink_begin(s);
    for (size_t k = 0; rv == 0 && k < sizeof sys / sizeof sys[0]; k++) {
        rv = delete_where_job(s, sys[k]);
    }
    for (int k = 0; rv == 0 && k < s->n_aggs; k++) {
        char late[SINK_TABLE_MAX];
        rv = reset_table(s, s->aggs[k].phys, 0);
        if (rv == 0 && s->aggs[k].put_late != NULL) {
            snprintf(late, sizeof late, "%.*s_late", SINK_TABLE_MAX - 8,
                     s->aggs[k].phys);
            rv = reset_table(s, late, 1);
        }
    }
    for (int k = 0; rv == 0 && k < s->n_procs; k++) {
        rv = reset_table(s, s->procs[k].phys, 1);
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
    if (s->instances > 1) {
        sqlite3_bind_int(st, 7, s->instance);
    }
    return step(s, st, "upsert output");
}

int sink_del_row(struct sqlite_sink *s, int agg, const void *key,
                 size_t key_len, int64_t start)
{
    sqlite3_stmt *st = s->aggs[agg].del_row;
    sqlite3_bind_text(st, 1, key_len > 0 ? key : "", (int)key_len,
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, start);
    if (s->instances > 1) {
        sqlite3_bind_int(st, 3, s->instance);
    }
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

int sink_put_proc_row(struct sqlite_sink *s, int proc, const char *topic,
                      int32_t partition, int64_t offset, int64_t seq,
                      const void *key, size_t key_len, int64_t event_ms,
                      const void *value, size_t value_len)
{
    sqlite3_stmt *st = s->procs[proc].put_row;
    sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, partition);
    sqlite3_bind_int64(st, 3, offset);
    sqlite3_bind_int64(st, 4, seq);
    sqlite3_bind_text(st, 5, key_len > 0 ? key : "", (int)key_len,
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, event_ms);
    sqlite3_bind_text(st, 7, value_len > 0 ? value : "", (int)value_len,
                      SQLITE_STATIC);
    return step(s, st, "insert processor row");
}

int sink_put_kstate(struct sqlite_sink *s, int proc, const void *key,
                    size_t key_len, const void *state, size_t state_len)
{
    sqlite3_stmt *st = state_len > 0 ? s->put_kstate : s->del_kstate;
    sqlite3_bind_text(st, 1, s->job, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->procs[proc].table, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, key_len > 0 ? key : "", (int)key_len,
                      SQLITE_STATIC);
    if (state_len > 0) {
        sqlite3_bind_blob(st, 4, state, (int)state_len, SQLITE_STATIC);
    }
    return step(s, st, "write keyed state");
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

int sink_load_kstates(struct sqlite_sink *s, int proc, sink_kstate_cb cb,
                      void *arg)
{
    sqlite3_stmt *st;
    int rc, rv = 0;

    if (prepare(s,
                "SELECT key, state FROM kappa_keyed_state WHERE job=?1 AND"
                " proc=?2",
                &st) != 0) {
        return KAPPA_EIO;
    }
    sqlite3_bind_text(st, 1, s->job, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->procs[proc].table, -1, SQLITE_STATIC);
    while (rv == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        rv = cb(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0),
                sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1),
                arg);
    }
    if (rv == 0 && rc != SQLITE_DONE) {
        rv = fail(s, "load keyed state");
    }
    sqlite3_finalize(st);
    return rv;
}
