/* The PostgreSQL sink.
 *
 * Schema: the SQLite sink's (sink_sqlite.c), in PostgreSQL types:
 *
 *   kappa_jobs(job text PK, watermark_ms, records, events, malformed, late,
 *              checkpoints: bigint)
 *   kappa_checkpoints(job, topic, partition int, next_offset, max_event_ms)
 *       PK (job, topic, partition)
 *   kappa_window_state(job, agg, key bytea, window_start, window_end,
 *       state bytea) PK (job, agg, key, window_start)
 *   kappa_job_aggs(job, agg, late, malformed) PK (job, agg)
 *   TABLE(key text COLLATE "C", window_start, window_end, value bigint
 *         (count, distinct) or double precision, events, final int)
 *       PK (key, window_start)
 *   TABLE_late(topic, partition, "offset", seq, key, event_ms)
 *       PK (topic, partition, "offset", seq)
 *
 * Happy path of a checkpoint: begin sends BEGIN; every put/del appends one
 * line of COPY text to the buffer of its temporary table (ON COMMIT DELETE
 * ROWS, created per connection); a buffer past PG_COPY_CHUNK bytes is sent
 * with COPY right away, so memory stays bounded. commit sends the rest,
 * then applies the temporary tables in a fixed order with prepared
 * statements (deletions of rows and states, upserts of rows and states,
 * late events, offsets, aggregation counters: INSERT ... SELECT ... ON
 * CONFLICT DO UPDATE), then the job row, then COMMIT. So a checkpoint costs
 * a few round trips per table, never one per window.
 *
 * Failure modes: any error aborts the PostgreSQL transaction and the sink
 * returns KAPPA_EIO; the job then rolls back and stops, and what was
 * committed before stays consistent (offsets and outputs in one
 * transaction). A COMMIT that PostgreSQL answers with ROLLBACK (the
 * transaction was aborted) is an error, not a success. A lost connection
 * during COMMIT is an error too; the restarted job finds either the old or
 * the new checkpoint, both consistent. Output keys are text: a key that is
 * not valid UTF-8 or contains NUL fails the checkpoint with KAPPA_EINVAL
 * (sanitise keys with a map stage). Two instances of one job are kept
 * apart by a session advisory lock on the job name. */
#include "sink_pg.h"

#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/err.h"
#include "sink.h"

/* The handle is the PostgreSQL sink itself. */
#define PG(s) ((struct pg_sink *)(void *)(s))

/* COPY text sent once a temporary table's buffer grows past this. */
#define PG_COPY_CHUNK (1u << 20)
/* How long opening waits for the job's lock (a killed instance's backend
 * may take a moment to notice). */
#define PG_LOCK_TIMEOUT "30s"

/* Temporary tables, in the order commit applies them. */
enum pg_tmp {
    TMP_RDEL,  /* output rows to delete, per agg */
    TMP_SDEL,  /* window states to delete */
    TMP_ROWS,  /* output rows to upsert, per agg */
    TMP_STATE, /* window states to upsert */
    TMP_LATE,  /* late events, per agg */
    TMP_OFFSETS,
    TMP_AGGS,
    TMP_N,
};

static const char *const TMP_NAME[TMP_N] = {
    "kappa_tmp_rdel", "kappa_tmp_sdel",    "kappa_tmp_rows", "kappa_tmp_state",
    "kappa_tmp_late", "kappa_tmp_offsets", "kappa_tmp_aggs",
};

static const char *const TMP_COLUMNS[TMP_N] = {
    "agg int, key text COLLATE \"C\", ws bigint",
    "agg text, key bytea, ws bigint",
    "agg int, key text COLLATE \"C\", ws bigint, we bigint, iv bigint,"
    " dv double precision, ev bigint, fin int",
    "agg text, key bytea, ws bigint, we bigint, st bytea",
    "agg int, topic text, part int, off bigint, seq bigint,"
    " key text COLLATE \"C\", event_ms bigint",
    "topic text, part int, next_offset bigint, max_event_ms bigint",
    "agg text, late bigint, malformed bigint",
};

static const char *const SCHEMA =
    "CREATE TABLE IF NOT EXISTS kappa_jobs(job text PRIMARY KEY,"
    " watermark_ms bigint, records bigint NOT NULL, events bigint NOT NULL,"
    " malformed bigint NOT NULL, late bigint NOT NULL,"
    " checkpoints bigint NOT NULL);"
    "CREATE TABLE IF NOT EXISTS kappa_checkpoints(job text NOT NULL,"
    " topic text NOT NULL, partition int NOT NULL, next_offset bigint NOT"
    " NULL, max_event_ms bigint, PRIMARY KEY(job, topic, partition));"
    "CREATE TABLE IF NOT EXISTS kappa_window_state(job text NOT NULL,"
    " agg text NOT NULL, key bytea NOT NULL, window_start bigint NOT NULL,"
    " window_end bigint NOT NULL, state bytea NOT NULL,"
    " PRIMARY KEY(job, agg, key, window_start));"
    "CREATE TABLE IF NOT EXISTS kappa_job_aggs(job text NOT NULL,"
    " agg text NOT NULL, late bigint NOT NULL, malformed bigint NOT NULL,"
    " PRIMARY KEY(job, agg));";

/* System statements: name, SQL (parameter $1 is the job name). */
static const char *const SYS_STMTS[][2] = {
    {"kappa_sdel", "DELETE FROM kappa_window_state w USING kappa_tmp_sdel d"
                   " WHERE w.job=$1 AND w.agg=d.agg AND w.key=d.key AND"
                   " w.window_start=d.ws"},
    {"kappa_sput",
     "INSERT INTO kappa_window_state(job, agg, key, window_start,"
     " window_end, state) SELECT $1, agg, key, ws, we, st FROM"
     " kappa_tmp_state ON CONFLICT (job, agg, key, window_start) DO UPDATE"
     " SET window_end=EXCLUDED.window_end, state=EXCLUDED.state"},
    {"kappa_offsets",
     "INSERT INTO kappa_checkpoints(job, topic, partition, next_offset,"
     " max_event_ms) SELECT $1, topic, part, next_offset, max_event_ms FROM"
     " kappa_tmp_offsets ON CONFLICT (job, topic, partition) DO UPDATE SET"
     " next_offset=EXCLUDED.next_offset, max_event_ms=EXCLUDED.max_event_ms"},
    {"kappa_aggs", "INSERT INTO kappa_job_aggs(job, agg, late, malformed)"
                   " SELECT $1, agg, late, malformed FROM kappa_tmp_aggs"
                   " ON CONFLICT (job, agg) DO UPDATE SET late=EXCLUDED.late,"
                   " malformed=EXCLUDED.malformed"},
    {"kappa_job",
     "INSERT INTO kappa_jobs(job, watermark_ms, records, events, malformed,"
     " late, checkpoints) VALUES($1, $2, $3, $4, $5, $6, 1)"
     " ON CONFLICT (job) DO UPDATE SET watermark_ms=EXCLUDED.watermark_ms,"
     " records=EXCLUDED.records, events=EXCLUDED.events,"
     " malformed=EXCLUDED.malformed, late=EXCLUDED.late,"
     " checkpoints=kappa_jobs.checkpoints+1"},
};

struct pg_agg {
    char table[KAPPA_JOB_NAME_MAX + 1];
    int is_int;
    int has_late;
};

struct pg_sink {
    PGconn *conn;
    char job[KAPPA_JOB_NAME_MAX + 1];
    char errmsg[KAPPA_ERRMSG_SIZE];
    int in_tx;
    struct pg_agg aggs[KAPPA_JOB_AGGS_MAX];
    int n_aggs;
    struct buf copy[TMP_N]; /* COPY text not sent yet */
    /* Rows sent or buffered in this transaction, per temporary table and
     * aggregation (index 0 for tables without one). */
    int64_t n_rows[TMP_N][KAPPA_JOB_AGGS_MAX];
};

/* ---- Errors and round trips ------------------------------------------ */

static int fail_msg(struct pg_sink *s, const char *what, const char *msg)
{
    char clean[KAPPA_ERRMSG_SIZE];
    size_t n;
    snprintf(clean, sizeof clean, "%s", msg != NULL ? msg : "error");
    n = strlen(clean);
    while (n > 0 && (clean[n - 1] == '\n' || clean[n - 1] == ' ')) {
        clean[--n] = '\0';
    }
    kappa_errmsg_printf(s->errmsg, "postgresql %s: %s", what, clean);
    return KAPPA_EIO;
}

/* Checks a result (NULL: out of memory or a lost connection), clears it,
 * and returns 0 or KAPPA_EIO. */
static int check(struct pg_sink *s, PGresult *res, ExecStatusType want,
                 const char *what)
{
    int rv = 0;
    if (res == NULL || PQresultStatus(res) != want) {
        rv = fail_msg(s, what,
                      res != NULL ? PQresultErrorMessage(res)
                                  : PQerrorMessage(s->conn));
    }
    PQclear(res);
    return rv;
}

static int exec(struct pg_sink *s, const char *sql, const char *what)
{
    return check(s, PQexec(s->conn, sql), PGRES_COMMAND_OK, what);
}

/* Runs a prepared statement that returns no rows; params are text. */
static int exec_prepared(struct pg_sink *s, const char *name, int n_params,
                         const char *const *params)
{
    return check(s,
                 PQexecPrepared(s->conn, name, n_params, params, NULL, NULL, 0),
                 PGRES_COMMAND_OK, name);
}

static int prepare(struct pg_sink *s, const char *name, const char *sql)
{
    return check(s, PQprepare(s->conn, name, sql, 0, NULL), PGRES_COMMAND_OK,
                 "prepare");
}

/* ---- COPY text ---------------------------------------------------------
 *
 * One line per row, columns separated by a tab, \N for NULL; in text a
 * backslash, tab, newline and carriage return are escaped with a
 * backslash (so no line can be the end marker "\."); bytea is written as
 * \\x followed by hex digits (the COPY escape of the bytea hex format). */

/* Whether p[0..n) is UTF-8 without NUL, overlong forms or surrogates. */
static int utf8_ok(const uint8_t *p, size_t n)
{
    size_t k = 0;
    while (k < n) {
        uint8_t c = p[k];
        size_t len;
        uint32_t cp;
        if (c == 0) {
            return 0;
        }
        if (c < 0x80) {
            k++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4, cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - k < len) {
            return 0;
        }
        for (size_t j = 1; j < len; j++) {
            if ((p[k + j] & 0xC0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (p[k + j] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return 0;
        }
        k += len;
    }
    return 1;
}

/* Room for n more bytes; the caller then writes at b->data + b->len. */
static char *reserve(struct buf *b, size_t n)
{
    return buf_reserve(b, n) == 0 ? (char *)b->data + b->len : NULL;
}

static int put_text(struct buf *b, const void *data, size_t n)
{
    const uint8_t *p = data;
    char *o = reserve(b, 2 * n + 1);
    char *start = o;
    if (o == NULL) {
        return KAPPA_ENOMEM;
    }
    for (size_t k = 0; k < n; k++) {
        switch (p[k]) {
        case '\\':
            *o++ = '\\', *o++ = '\\';
            break;
        case '\t':
            *o++ = '\\', *o++ = 't';
            break;
        case '\n':
            *o++ = '\\', *o++ = 'n';
            break;
        case '\r':
            *o++ = '\\', *o++ = 'r';
            break;
        default:
            *o++ = (char)p[k];
        }
    }
    *o++ = '\t';
    b->len += (size_t)(o - start);
    return 0;
}

static int put_bytea(struct buf *b, const void *data, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *p = data;
    char *o = reserve(b, 2 * n + 4);
    if (o == NULL) {
        return KAPPA_ENOMEM;
    }
    o[0] = '\\', o[1] = '\\', o[2] = 'x';
    o += 3;
    for (size_t k = 0; k < n; k++) {
        *o++ = hex[p[k] >> 4];
        *o++ = hex[p[k] & 15];
    }
    *o = '\t';
    b->len += 2 * n + 4;
    return 0;
}

static int put_i64(struct buf *b, int64_t v)
{
    char *o = reserve(b, 24);
    if (o == NULL) {
        return KAPPA_ENOMEM;
    }
    b->len += (size_t)snprintf(o, 24, "%lld\t", (long long)v);
    return 0;
}

/* INT64_MIN is NULL (as in the SQLite sink). */
static int put_i64_or_null(struct buf *b, int64_t v)
{
    return v == INT64_MIN ? buf_append(b, "\\N\t", 3) : put_i64(b, v);
}

static int put_f64(struct buf *b, double v)
{
    char *o = reserve(b, 32);
    if (o == NULL) {
        return KAPPA_ENOMEM;
    }
    if (isnan(v)) {
        b->len += (size_t)snprintf(o, 32, "NaN\t");
    } else if (isinf(v)) {
        b->len += (size_t)snprintf(o, 32, "%sInfinity\t", v < 0 ? "-" : "");
    } else {
        b->len += (size_t)snprintf(o, 32, "%.17g\t", v);
    }
    return 0;
}

/* Replaces the tab after the last column with the line end. */
static void end_line(struct buf *b)
{
    b->data[b->len - 1] = '\n';
}

/* Sends one temporary table's buffered COPY text. */
static int copy_send(struct pg_sink *s, int tmp)
{
    struct buf *b = &s->copy[tmp];
    char sql[64];
    int ok = 1, rv;
    PGresult *res;

    if (b->len == 0) {
        return 0;
    }
    snprintf(sql, sizeof sql, "COPY %s FROM STDIN", TMP_NAME[tmp]);
    rv = check(s, PQexec(s->conn, sql), PGRES_COPY_IN, "copy");
    if (rv != 0) {
        return rv;
    }
    for (size_t off = 0; ok && off < b->len; off += PG_COPY_CHUNK) {
        size_t n = b->len - off < PG_COPY_CHUNK ? b->len - off : PG_COPY_CHUNK;
        ok = PQputCopyData(s->conn, (const char *)b->data + off, (int)n) == 1;
    }
    ok = PQputCopyEnd(s->conn, ok ? NULL : "send failed") == 1 && ok;
    rv = check(s, PQgetResult(s->conn), PGRES_COMMAND_OK, "copy");
    while ((res = PQgetResult(s->conn)) != NULL) {
        PQclear(res);
    }
    b->len = 0;
    if (rv == 0 && !ok) {
        rv = fail_msg(s, "copy", PQerrorMessage(s->conn));
    }
    return rv;
}

/* Counts a finished line and sends the buffer when it is large. */
static int line_done(struct pg_sink *s, int tmp, int agg)
{
    end_line(&s->copy[tmp]);
    s->n_rows[tmp][agg]++;
    return s->copy[tmp].len >= PG_COPY_CHUNK ? copy_send(s, tmp) : 0;
}

static int check_text(struct pg_sink *s, int agg, const void *key,
                      size_t key_len)
{
    if (!utf8_ok(key, key_len)) {
        kappa_errmsg_printf(s->errmsg,
                            "postgresql: %s: a key is not valid UTF-8 or"
                            " contains NUL (output keys are text)",
                            s->aggs[agg].table);
        return KAPPA_EINVAL;
    }
    return 0;
}

/* ---- Opening and closing ----------------------------------------------- */

static void quiet_notices(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* "relation already exists, skipping" and the like */
}

/* Waits for the job's session advisory lock (bounded by lock_timeout). */
static int lock_job(struct pg_sink *s)
{
    const char *params[1] = {s->job};
    int rv = exec(s, "SET lock_timeout = '" PG_LOCK_TIMEOUT "'", "set");
    if (rv == 0) {
        rv = check(s,
                   PQexecParams(s->conn,
                                "SELECT pg_advisory_lock(hashtextextended("
                                "'kappa_job:' || $1, 0))",
                                1, NULL, params, NULL, NULL, 0),
                   PGRES_TUPLES_OK, "lock job (another instance running?)");
    }
    if (rv == 0) {
        rv = exec(s, "RESET lock_timeout", "reset");
    }
    return rv;
}

/* System tables, under a transaction-scoped lock so that two jobs starting
 * at once do not race on CREATE TABLE IF NOT EXISTS. */
static int create_schema(struct pg_sink *s)
{
    int rv = exec(s, "BEGIN", "begin");
    if (rv == 0) {
        rv = check(s,
                   PQexec(s->conn, "SELECT pg_advisory_xact_lock("
                                   "hashtextextended('kappa_schema', 0))"),
                   PGRES_TUPLES_OK, "lock schema");
    }
    if (rv == 0) {
        rv = exec(s, SCHEMA, "create tables");
    }
    if (rv == 0) {
        return exec(s, "COMMIT", "commit");
    }
    PQclear(PQexec(s->conn, "ROLLBACK"));
    return rv;
}

static int create_temp_tables(struct pg_sink *s)
{
    char sql[512];
    int rv = 0;
    for (int t = 0; t < TMP_N && rv == 0; t++) {
        snprintf(sql, sizeof sql,
                 "CREATE TEMP TABLE %s(%s) ON COMMIT DELETE ROWS", TMP_NAME[t],
                 TMP_COLUMNS[t]);
        rv = exec(s, sql, "create temporary table");
    }
    /* A state passes through the temporary table once: compressing it
     * there (pglz) would cost as much as storing it for good. */
    if (rv == 0) {
        rv =
            exec(s, "ALTER TABLE kappa_tmp_state ALTER st SET STORAGE EXTERNAL",
                 "alter temporary table");
    }
    for (size_t k = 0; rv == 0 && k < sizeof SYS_STMTS / sizeof SYS_STMTS[0];
         k++) {
        rv = prepare(s, SYS_STMTS[k][0], SYS_STMTS[k][1]);
    }
    return rv;
}

int sink_pg_open(const char *conninfo, const char *job, struct pg_sink **out,
                 char *errmsg)
{
    struct pg_sink *s = kappa_calloc(1, sizeof *s);
    int rv;

    *out = NULL;
    if (s == NULL) {
        kappa_errmsg_printf(errmsg, "postgresql sink: out of memory");
        return KAPPA_ENOMEM;
    }
    snprintf(s->job, sizeof s->job, "%s", job);
    s->conn = PQconnectdb(conninfo);
    if (s->conn == NULL) {
        kappa_errmsg_printf(errmsg, "postgresql sink: out of memory");
        sink_pg_close(s);
        return KAPPA_ENOMEM;
    }
    if (PQstatus(s->conn) != CONNECTION_OK) {
        rv = fail_msg(s, "connect", PQerrorMessage(s->conn));
        goto err;
    }
    PQsetNoticeProcessor(s->conn, quiet_notices, NULL);
    if (PQsetClientEncoding(s->conn, "UTF8") != 0) {
        rv = fail_msg(s, "client encoding", PQerrorMessage(s->conn));
        goto err;
    }
    rv = lock_job(s);
    if (rv == 0) {
        rv = create_schema(s);
    }
    if (rv == 0) {
        rv = create_temp_tables(s);
    }
    if (rv != 0) {
        goto err;
    }
    *out = s;
    return 0;
err:
    kappa_errmsg_printf(errmsg, "%s", s->errmsg);
    sink_pg_close(s);
    return rv;
}

static void pg_rollback(struct sink *arg);

void sink_pg_close(struct pg_sink *s)
{
    if (s == NULL) {
        return;
    }
    if (s->in_tx) {
        pg_rollback((struct sink *)(void *)s);
    }
    PQfinish(s->conn);
    for (int t = 0; t < TMP_N; t++) {
        buf_free(&s->copy[t]);
    }
    kappa_free(s);
}

static void pg_close(struct sink *arg)
{
    sink_pg_close(PG(arg));
}

static const char *pg_errmsg(const struct sink *arg)
{
    const struct pg_sink *s = (const void *)arg;
    return s->errmsg;
}

/* ---- Output tables ----------------------------------------------------- */

static int prepare_agg(struct pg_sink *s, int k)
{
    const struct pg_agg *a = &s->aggs[k];
    char name[32], sql[768];
    int rv;

    snprintf(name, sizeof name, "kappa_rdel_%d", k);
    snprintf(sql, sizeof sql,
             "DELETE FROM \"%s\" t USING kappa_tmp_rdel d WHERE d.agg=%d AND"
             " t.key=d.key AND t.window_start=d.ws",
             a->table, k);
    rv = prepare(s, name, sql);
    if (rv == 0) {
        snprintf(name, sizeof name, "kappa_rput_%d", k);
        snprintf(sql, sizeof sql,
                 "INSERT INTO \"%s\"(key, window_start, window_end, value,"
                 " events, final) SELECT key, ws, we, %s, ev, fin FROM"
                 " kappa_tmp_rows WHERE agg=%d ON CONFLICT (key, window_start)"
                 " DO UPDATE SET window_end=EXCLUDED.window_end,"
                 " value=EXCLUDED.value, events=EXCLUDED.events,"
                 " final=EXCLUDED.final",
                 a->table, a->is_int ? "iv" : "dv", k);
        rv = prepare(s, name, sql);
    }
    if (rv == 0 && a->has_late) {
        snprintf(name, sizeof name, "kappa_late_%d", k);
        snprintf(sql, sizeof sql,
                 "INSERT INTO \"%s_late\"(topic, partition, \"offset\", seq,"
                 " key, event_ms) SELECT topic, part, off, seq, key, event_ms"
                 " FROM kappa_tmp_late WHERE agg=%d ON CONFLICT (topic,"
                 " partition, \"offset\", seq) DO UPDATE SET key=EXCLUDED.key,"
                 " event_ms=EXCLUDED.event_ms",
                 a->table, k);
        rv = prepare(s, name, sql);
    }
    return rv;
}

static int pg_add_table(struct sink *arg, const char *table,
                        enum kappa_agg_kind kind, int late_table)
{
    struct pg_sink *s = PG(arg);
    int is_int = kind == KAPPA_AGG_COUNT || kind == KAPPA_AGG_DISTINCT;
    struct pg_agg *a;
    char sql[1024];
    int rv;

    if (s->n_aggs >= KAPPA_JOB_AGGS_MAX || !sink_name_ok(table) ||
        strlen(table) + 5 > KAPPA_JOB_NAME_MAX) {
        kappa_errmsg_printf(s->errmsg, "bad output table name");
        return KAPPA_EINVAL;
    }
    a = &s->aggs[s->n_aggs];
    snprintf(a->table, sizeof a->table, "%s", table);
    a->is_int = is_int;
    a->has_late = late_table != 0;
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS \"%s\"(key text COLLATE \"C\" NOT"
             " NULL, window_start bigint NOT NULL, window_end bigint NOT NULL,"
             " value %s NOT NULL, events bigint NOT NULL, final int NOT NULL,"
             " PRIMARY KEY(key, window_start));"
             "CREATE TABLE IF NOT EXISTS \"%s_late\"(topic text NOT NULL,"
             " partition int NOT NULL, \"offset\" bigint NOT NULL,"
             " seq bigint NOT NULL, key text COLLATE \"C\","
             " event_ms bigint NOT NULL,"
             " PRIMARY KEY(topic, partition, \"offset\", seq));",
             table, is_int ? "bigint" : "double precision", table);
    if (!late_table) {
        *strstr(sql, ";CREATE") = '\0';
    }
    rv = exec(s, "BEGIN", "begin");
    if (rv == 0) {
        rv = check(s,
                   PQexec(s->conn, "SELECT pg_advisory_xact_lock("
                                   "hashtextextended('kappa_schema', 0))"),
                   PGRES_TUPLES_OK, "lock schema");
    }
    if (rv == 0) {
        rv = exec(s, sql, "create output table");
    }
    if (rv == 0) {
        rv = exec(s, "COMMIT", "commit");
    } else {
        PQclear(PQexec(s->conn, "ROLLBACK"));
        return rv;
    }
    if (rv == 0) {
        rv = prepare_agg(s, s->n_aggs);
    }
    s->n_aggs++;
    return rv;
}

static int pg_reset(struct sink *arg)
{
    static const char *const sys[] = {"kappa_jobs", "kappa_checkpoints",
                                      "kappa_window_state", "kappa_job_aggs"};
    struct pg_sink *s = PG(arg);
    const char *params[1] = {s->job};
    char sql[256];
    int rv = exec(s, "BEGIN", "begin");

    for (size_t k = 0; rv == 0 && k < sizeof sys / sizeof sys[0]; k++) {
        snprintf(sql, sizeof sql, "DELETE FROM %s WHERE job=$1", sys[k]);
        rv =
            check(s, PQexecParams(s->conn, sql, 1, NULL, params, NULL, NULL, 0),
                  PGRES_COMMAND_OK, "reset");
    }
    for (int k = 0; rv == 0 && k < s->n_aggs; k++) {
        snprintf(sql, sizeof sql, "DELETE FROM \"%s\"", s->aggs[k].table);
        rv = exec(s, sql, "reset");
        if (rv == 0 && s->aggs[k].has_late) {
            snprintf(sql, sizeof sql, "DELETE FROM \"%s_late\"",
                     s->aggs[k].table);
            rv = exec(s, sql, "reset");
        }
    }
    if (rv == 0) {
        return check(s, PQexec(s->conn, "COMMIT"), PGRES_COMMAND_OK, "commit");
    }
    PQclear(PQexec(s->conn, "ROLLBACK"));
    return rv;
}

/* ---- Transactions ------------------------------------------------------ */

static void clear_tx(struct pg_sink *s)
{
    for (int t = 0; t < TMP_N; t++) {
        s->copy[t].len = 0;
    }
    memset(s->n_rows, 0, sizeof s->n_rows);
    s->in_tx = 0;
}

static int pg_begin(struct sink *arg)
{
    struct pg_sink *s = PG(arg);
    int rv = exec(s, "BEGIN", "begin");
    clear_tx(s);
    s->in_tx = rv == 0;
    return rv;
}

/* Applies one per-aggregation temporary table. */
static int apply_per_agg(struct pg_sink *s, int tmp, const char *prefix)
{
    char name[32];
    int rv = 0;
    for (int k = 0; k < s->n_aggs && rv == 0; k++) {
        if (s->n_rows[tmp][k] > 0) {
            snprintf(name, sizeof name, "%s%d", prefix, k);
            rv = exec_prepared(s, name, 0, NULL);
        }
    }
    return rv;
}

static int apply_sys(struct pg_sink *s, int tmp, const char *stmt)
{
    const char *params[1] = {s->job};
    return s->n_rows[tmp][0] > 0 ? exec_prepared(s, stmt, 1, params) : 0;
}

/* Sends what is buffered and applies the temporary tables, deletions
 * first. */
static int apply_all(struct pg_sink *s)
{
    int rv = 0;
    for (int t = 0; t < TMP_N && rv == 0; t++) {
        rv = copy_send(s, t);
    }
    if (rv == 0) {
        rv = apply_per_agg(s, TMP_RDEL, "kappa_rdel_");
    }
    if (rv == 0) {
        rv = apply_sys(s, TMP_SDEL, "kappa_sdel");
    }
    if (rv == 0) {
        rv = apply_per_agg(s, TMP_ROWS, "kappa_rput_");
    }
    if (rv == 0) {
        rv = apply_sys(s, TMP_STATE, "kappa_sput");
    }
    if (rv == 0) {
        rv = apply_per_agg(s, TMP_LATE, "kappa_late_");
    }
    if (rv == 0) {
        rv = apply_sys(s, TMP_OFFSETS, "kappa_offsets");
    }
    if (rv == 0) {
        rv = apply_sys(s, TMP_AGGS, "kappa_aggs");
    }
    return rv;
}

static int pg_commit(struct sink *arg)
{
    struct pg_sink *s = PG(arg);
    PGresult *res;
    int rv = apply_all(s);

    if (rv == 0) {
        res = PQexec(s->conn, "COMMIT");
        /* An aborted transaction answers COMMIT with "ROLLBACK". */
        if (res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK &&
            strcmp(PQcmdStatus(res), "COMMIT") != 0) {
            PQclear(res);
            rv = fail_msg(s, "commit", "transaction was rolled back");
        } else {
            rv = check(s, res, PGRES_COMMAND_OK, "commit");
        }
        if (rv == 0) {
            clear_tx(s);
            return 0;
        }
    }
    pg_rollback(arg);
    return rv;
}

static void pg_rollback(struct sink *arg)
{
    struct pg_sink *s = PG(arg);
    if (PQstatus(s->conn) == CONNECTION_OK &&
        PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
        PQclear(PQexec(s->conn, "ROLLBACK"));
    }
    clear_tx(s);
}

/* ---- Writes (inside a transaction) ------------------------------------- */

static int pg_put_row(struct sink *arg, int agg, const struct sink_row *r)
{
    struct pg_sink *s = PG(arg);
    struct buf *b = &s->copy[TMP_ROWS];
    int rv = check_text(s, agg, r->key, r->key_len);

    if (rv == 0) {
        rv = put_i64(b, agg);
    }
    if (rv == 0) {
        rv = put_text(b, r->key, r->key_len);
    }
    if (rv == 0) {
        rv = put_i64(b, r->start);
    }
    if (rv == 0) {
        rv = put_i64(b, r->end);
    }
    if (rv == 0) {
        rv = r->is_int ? put_i64(b, r->i) : buf_append(b, "\\N\t", 3);
    }
    if (rv == 0) {
        rv = r->is_int ? buf_append(b, "\\N\t", 3) : put_f64(b, r->d);
    }
    if (rv == 0) {
        rv = put_i64(b, r->events);
    }
    if (rv == 0) {
        rv = put_i64(b, r->is_final != 0);
    }
    return rv == 0 ? line_done(s, TMP_ROWS, agg) : rv;
}

static int pg_del_row(struct sink *arg, int agg, const void *key,
                      size_t key_len, int64_t start)
{
    struct pg_sink *s = PG(arg);
    struct buf *b = &s->copy[TMP_RDEL];
    int rv = check_text(s, agg, key, key_len);

    if (rv == 0) {
        rv = put_i64(b, agg);
    }
    if (rv == 0) {
        rv = put_text(b, key, key_len);
    }
    if (rv == 0) {
        rv = put_i64(b, start);
    }
    return rv == 0 ? line_done(s, TMP_RDEL, agg) : rv;
}

static int pg_put_state(struct sink *arg, int agg, const void *key,
                        size_t key_len, int64_t start, int64_t end,
                        const void *blob, size_t blob_len)
{
    struct pg_sink *s = PG(arg);
    struct buf *b = &s->copy[TMP_STATE];
    int rv = put_text(b, s->aggs[agg].table, strlen(s->aggs[agg].table));

    if (rv == 0) {
        rv = put_bytea(b, key, key_len);
    }
    if (rv == 0) {
        rv = put_i64(b, start);
    }
    if (rv == 0) {
        rv = put_i64(b, end);
    }
    if (rv == 0) {
        rv = put_bytea(b, blob, blob_len);
    }
    return rv == 0 ? line_done(s, TMP_STATE, 0) : rv;
}

static int pg_del_state(struct sink *arg, int agg, const void *key,
                        size_t key_len, int64_t start)
{
    struct pg_sink *s = PG(arg);
    struct buf *b = &s->copy[TMP_SDEL];
    int rv = put_text(b, s->aggs[agg].table, strlen(s->aggs[agg].table));

    if (rv == 0) {
        rv = put_bytea(b, key, key_len);
    }
    if (rv == 0) {
        rv = put_i64(b, start);
    }
    return rv == 0 ? line_done(s, TMP_SDEL, 0) : rv;
}

static int pg_put_late(struct sink *arg, int agg, const char *topic,
                       int32_t partition, int64_t offset, int64_t seq,
                       const void *key, size_t key_len, int64_t event_ms)
{
    struct pg_sink *s = PG(arg);
    struct buf *b = &s->copy[TMP_LATE];
    int rv;

    if (!s->aggs[agg].has_late) {
        return 0;
    }
    rv = check_text(s, agg, key, key_len);
    if (rv == 0) {
        rv = check_text(s, agg, topic, strlen(topic));
    }
    if (rv == 0) {
        rv = put_i64(b, agg);
    }
    if (rv == 0) {
        rv = put_text(b, topic, strlen(topic));
    }
    if (rv == 0) {
        rv = put_i64(b, partition);
    }
    if (rv == 0) {
        rv = put_i64(b, offset);
    }
    if (rv == 0) {
        rv = put_i64(b, seq);
    }
    if (rv == 0) {
        rv = put_text(b, key, key_len);
    }
    if (rv == 0) {
        rv = put_i64(b, event_ms);
    }
    return rv == 0 ? line_done(s, TMP_LATE, agg) : rv;
}

static int pg_put_offset(struct sink *arg, const char *topic, int32_t partition,
                         int64_t next_offset, int64_t max_event_ms)
{
    struct pg_sink *s = PG(arg);
    struct buf *b = &s->copy[TMP_OFFSETS];
    int rv = put_text(b, topic, strlen(topic));

    if (rv == 0) {
        rv = put_i64(b, partition);
    }
    if (rv == 0) {
        rv = put_i64(b, next_offset);
    }
    if (rv == 0) {
        rv = put_i64_or_null(b, max_event_ms);
    }
    return rv == 0 ? line_done(s, TMP_OFFSETS, 0) : rv;
}

static int pg_put_agg(struct sink *arg, int agg, int64_t late,
                      int64_t malformed)
{
    struct pg_sink *s = PG(arg);
    struct buf *b = &s->copy[TMP_AGGS];
    int rv = put_text(b, s->aggs[agg].table, strlen(s->aggs[agg].table));

    if (rv == 0) {
        rv = put_i64(b, late);
    }
    if (rv == 0) {
        rv = put_i64(b, malformed);
    }
    return rv == 0 ? line_done(s, TMP_AGGS, 0) : rv;
}

static int pg_put_job(struct sink *arg, const struct kappa_job_stats *st)
{
    struct pg_sink *s = PG(arg);
    char v[5][24];
    const char *params[6] = {s->job, NULL, v[1], v[2], v[3], v[4]};

    if (st->watermark_ms != INT64_MIN) {
        snprintf(v[0], sizeof v[0], "%lld", (long long)st->watermark_ms);
        params[1] = v[0];
    }
    snprintf(v[1], sizeof v[1], "%lld", (long long)st->records);
    snprintf(v[2], sizeof v[2], "%lld", (long long)st->events);
    snprintf(v[3], sizeof v[3], "%lld", (long long)st->malformed);
    snprintf(v[4], sizeof v[4], "%lld", (long long)st->late);
    return exec_prepared(s, "kappa_job", 6, params);
}

/* ---- Loading ------------------------------------------------------------
 *
 * Values read back are checked, never trusted: a malformed number is
 * KAPPA_ECORRUPT. */

static int text_i64(const PGresult *res, int row, int col, int64_t dflt,
                    int64_t *out)
{
    const char *t;
    char *end;
    long long v;

    if (PQgetisnull(res, row, col)) {
        *out = dflt;
        return 0;
    }
    t = PQgetvalue(res, row, col);
    v = strtoll(t, &end, 10);
    if (end == t || *end != '\0') {
        return KAPPA_CORRUPT();
    }
    *out = v;
    return 0;
}

/* A text-format query with the job name as $1 (and $2 when not NULL). */
static int query(struct pg_sink *s, const char *sql, const char *p2,
                 PGresult **out)
{
    const char *params[2] = {s->job, p2};
    *out = PQexecParams(s->conn, sql, p2 != NULL ? 2 : 1, NULL, params, NULL,
                        NULL, 0);
    if (*out == NULL || PQresultStatus(*out) != PGRES_TUPLES_OK) {
        int rv = check(s, *out, PGRES_TUPLES_OK, "load");
        *out = NULL;
        return rv;
    }
    return 0;
}

static int pg_load_job(struct sink *arg, struct kappa_job_stats *st, int *found)
{
    struct pg_sink *s = PG(arg);
    PGresult *res;
    int rv = query(s,
                   "SELECT watermark_ms, records, events, malformed, late FROM"
                   " kappa_jobs WHERE job=$1",
                   NULL, &res);

    *found = 0;
    if (rv != 0) {
        return rv;
    }
    if (PQntuples(res) == 1 && PQnfields(res) == 5) {
        *found = 1;
        rv = text_i64(res, 0, 0, INT64_MIN, &st->watermark_ms);
        if (rv == 0) {
            rv = text_i64(res, 0, 1, 0, &st->records);
        }
        if (rv == 0) {
            rv = text_i64(res, 0, 2, 0, &st->events);
        }
        if (rv == 0) {
            rv = text_i64(res, 0, 3, 0, &st->malformed);
        }
        if (rv == 0) {
            rv = text_i64(res, 0, 4, 0, &st->late);
        }
    }
    PQclear(res);
    return rv;
}

static int pg_load_offsets(struct sink *arg, sink_offset_cb cb, void *cb_arg)
{
    struct pg_sink *s = PG(arg);
    PGresult *res;
    int rv = query(s,
                   "SELECT topic, partition, next_offset, max_event_ms FROM"
                   " kappa_checkpoints WHERE job=$1",
                   NULL, &res);

    for (int r = 0; rv == 0 && r < PQntuples(res); r++) {
        int64_t p, next, max_event_ms;
        rv = text_i64(res, r, 1, -1, &p);
        if (rv == 0) {
            rv = text_i64(res, r, 2, -1, &next);
        }
        if (rv == 0) {
            rv = text_i64(res, r, 3, INT64_MIN, &max_event_ms);
        }
        if (rv == 0 && (p < 0 || p > INT32_MAX || next < 0)) {
            rv = KAPPA_CORRUPT();
        }
        if (rv == 0) {
            rv = cb(PQgetvalue(res, r, 0), (int32_t)p, next, max_event_ms,
                    cb_arg);
        }
    }
    PQclear(res);
    return rv;
}

static int64_t be64(const char *p)
{
    uint64_t v = 0;
    for (int k = 0; k < 8; k++) {
        v = (v << 8) | (uint8_t)p[k];
    }
    return (int64_t)v;
}

/* One row of kappa_window_state in binary format. */
static int state_row(const PGresult *res, sink_state_cb cb, void *cb_arg)
{
    if (PQnfields(res) != 4 || PQntuples(res) != 1 || PQgetisnull(res, 0, 0) ||
        PQgetisnull(res, 0, 3) || PQgetlength(res, 0, 1) != 8 ||
        PQgetlength(res, 0, 2) != 8) {
        return KAPPA_CORRUPT();
    }
    return cb(PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0),
              be64(PQgetvalue(res, 0, 1)), be64(PQgetvalue(res, 0, 2)),
              PQgetvalue(res, 0, 3), (size_t)PQgetlength(res, 0, 3), cb_arg);
}

/* Streams the open windows row by row (single-row mode), so loading does
 * not hold the whole result twice. */
static int pg_load_states(struct sink *arg, int agg, sink_state_cb cb,
                          void *cb_arg)
{
    struct pg_sink *s = PG(arg);
    const char *params[2] = {s->job, s->aggs[agg].table};
    PGresult *res;
    int rv = 0;

    if (!PQsendQueryParams(s->conn,
                           "SELECT key, window_start, window_end, state FROM"
                           " kappa_window_state WHERE job=$1 AND agg=$2",
                           2, NULL, params, NULL, NULL, 1) ||
        !PQsetSingleRowMode(s->conn)) {
        rv = fail_msg(s, "load window state", PQerrorMessage(s->conn));
    }
    while ((res = PQgetResult(s->conn)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (rv == 0 && st == PGRES_SINGLE_TUPLE) {
            rv = state_row(res, cb, cb_arg);
        } else if (rv == 0 && st != PGRES_TUPLES_OK) {
            rv = fail_msg(s, "load window state", PQresultErrorMessage(res));
        }
        PQclear(res);
    }
    return rv;
}

static int pg_load_agg(struct sink *arg, int agg, int64_t *late,
                       int64_t *malformed)
{
    struct pg_sink *s = PG(arg);
    PGresult *res;
    int rv = query(s,
                   "SELECT late, malformed FROM kappa_job_aggs WHERE job=$1 AND"
                   " agg=$2",
                   s->aggs[agg].table, &res);

    *late = *malformed = 0;
    if (rv == 0 && PQntuples(res) == 1 && PQnfields(res) == 2) {
        rv = text_i64(res, 0, 0, 0, late);
        if (rv == 0) {
            rv = text_i64(res, 0, 1, 0, malformed);
        }
    }
    PQclear(res);
    return rv;
}

const struct sink_ops sink_pg_ops = {
    .kind = "postgresql",
    .close = pg_close,
    .errmsg = pg_errmsg,
    .add_table = pg_add_table,
    .reset = pg_reset,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .put_row = pg_put_row,
    .del_row = pg_del_row,
    .put_state = pg_put_state,
    .del_state = pg_del_state,
    .put_late = pg_put_late,
    .put_offset = pg_put_offset,
    .put_job = pg_put_job,
    .put_agg = pg_put_agg,
    .load_job = pg_load_job,
    .load_offsets = pg_load_offsets,
    .load_states = pg_load_states,
    .load_agg = pg_load_agg,
};
