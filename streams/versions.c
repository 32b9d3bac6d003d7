/* Versions of a job in its SQLite database: promote, retire, status.
 *
 * A version's outputs are listed in kappa_version_outputs (output name ->
 * its table or view, e.g. clickstream_page_views -> clickstream_page_views_v2).
 * Promoting a version replaces, in one BEGIN IMMEDIATE transaction, every
 * view `output` by "SELECT * FROM physical" and drops the views of outputs
 * that only the previous version had. SQLite's DDL is transactional and a
 * reader works on one snapshot per statement (WAL), so a reader sees all
 * views of the old version or all of the new one, never a missing view or
 * a mix. The lag check happens before the transaction against the brokers'
 * high watermarks; the version only advances after it, so a passed check
 * stays true.
 *
 * Failure modes: a version that is unknown (KAPPA_ENOENT), behind
 * (KAPPA_EBUSY), an output name taken by a table of an unversioned run
 * (KAPPA_EINVAL), a broker that cannot be asked for its high watermarks
 * (its error; use force), a database error (KAPPA_EIO). Nothing changes
 * unless the whole transaction commits. Names read from the database are
 * checked before they are pasted into SQL. */
#include "versions.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kappa/streams.h>

#include "common/err.h"
#include "sink_sqlite.h"

#define VERSIONS_TIMEOUT_MS 10000
#define OUTPUTS_MAX                                                            \
    (2 * KAPPA_JOB_AGGS_MAX + KAPPA_JOB_PROCS_MAX + KAPPA_JOB_VIEWS_MAX)

struct output {
    char name[SINK_TABLE_MAX];
    char phys[SINK_TABLE_MAX];
};

/* [A-Za-z_][A-Za-z0-9_]* of at most max bytes: safe inside quotes. */
static int ident_ok(const char *s, size_t max)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n == 0 || n > max || (s[0] >= '0' && s[0] <= '9')) {
        return 0;
    }
    for (size_t k = 0; k < n; k++) {
        char c = s[k];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_')) {
            return 0;
        }
    }
    return 1;
}

static int db_fail(sqlite3 *db, char *errmsg, const char *what)
{
    kappa_errmsg_printf(errmsg, "sqlite %s: %s", what, sqlite3_errmsg(db));
    return KAPPA_EIO;
}

/* A statement that did not fit its buffer must not run truncated. */
static int sql_fits(int len, size_t cap, char *errmsg)
{
    if (len < 0 || (size_t)len >= cap) {
        kappa_errmsg_printf(errmsg, "statement too long (%d bytes)", len);
        return KAPPA_ETOOBIG;
    }
    return 0;
}

static int db_exec(sqlite3 *db, const char *sql, char *errmsg)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        kappa_errmsg_printf(errmsg, "sqlite: %s", err ? err : "error");
        sqlite3_free(err);
        return KAPPA_EIO;
    }
    return 0;
}

/* "table", "view" or "" for name. */
static void object_type(sqlite3 *db, const char *name, char *type)
{
    sqlite3_stmt *st;
    type[0] = '\0';
    if (sqlite3_prepare_v2(db, "SELECT type FROM sqlite_master WHERE name=?1",
                           -1, &st, NULL) != SQLITE_OK) {
        return;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(type, 8, "%s", (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
}

/* The outputs of a version, checked. */
static int load_outputs(sqlite3 *db, const char *name, const char *version,
                        struct output *out, int *n, char *errmsg)
{
    sqlite3_stmt *st;
    int rc, rv = 0;

    *n = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT output, physical FROM kappa_version_outputs"
                           " WHERE job=?1 AND version=?2 ORDER BY output",
                           -1, &st, NULL) != SQLITE_OK) {
        return db_fail(db, errmsg, "outputs");
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, version, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *o = (const char *)sqlite3_column_text(st, 0);
        const char *p = (const char *)sqlite3_column_text(st, 1);
        if (*n >= OUTPUTS_MAX || !ident_ok(o, SINK_TABLE_MAX - 1) ||
            !ident_ok(p, SINK_TABLE_MAX - 8)) {
            kappa_errmsg_printf(errmsg, "kappa_version_outputs: bad row");
            rv = KAPPA_CORRUPT();
            break;
        }
        snprintf(out[*n].name, SINK_TABLE_MAX, "%s", o);
        snprintf(out[*n].phys, SINK_TABLE_MAX, "%s", p);
        (*n)++;
    }
    if (rv == 0 && rc != SQLITE_DONE) {
        rv = db_fail(db, errmsg, "outputs");
    }
    sqlite3_finalize(st);
    return rv;
}

/* The promoted version of a job into version (KAPPA_JOB_VERSION_MAX + 1),
 * "" when none. */
static int promoted_version(sqlite3 *db, const char *name, char *version)
{
    sqlite3_stmt *st;
    int rc;
    version[0] = '\0';
    if (sqlite3_prepare_v2(db,
                           "SELECT version FROM kappa_promoted WHERE job=?1",
                           -1, &st, NULL) != SQLITE_OK) {
        return KAPPA_EIO;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        snprintf(version, KAPPA_JOB_VERSION_MAX + 1, "%s",
                 (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : KAPPA_EIO;
}

/* Whether the version exists; its instance count and topics (JSON). */
static int find_version(sqlite3 *db, const char *name, const char *version,
                        int *instances, char *topics, size_t topics_size)
{
    sqlite3_stmt *st;
    int rc;
    if (sqlite3_prepare_v2(db,
                           "SELECT instances, topics FROM kappa_versions"
                           " WHERE job=?1 AND version=?2",
                           -1, &st, NULL) != SQLITE_OK) {
        return 0;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, version, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *instances = sqlite3_column_int(st, 0);
        snprintf(topics, topics_size, "%s",
                 (const char *)sqlite3_column_text(st, 1));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW;
}

static int is_output_of(const struct output *outs, int n, const char *name)
{
    for (int k = 0; k < n; k++) {
        if (strcmp(outs[k].name, name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Inside a write transaction: points every output view of the job at
 * `version`. */
static int switch_views(sqlite3 *db, const char *name, const char *version,
                        char *errmsg)
{
    struct output outs[OUTPUTS_MAX], old[OUTPUTS_MAX];
    char cur[KAPPA_JOB_VERSION_MAX + 1], type[8], sql[512];
    int n = 0, n_old = 0;
    int rv = load_outputs(db, name, version, outs, &n, errmsg);

    if (rv == 0 && promoted_version(db, name, cur) != 0) {
        rv = db_fail(db, errmsg, "promoted version");
    }
    if (rv == 0 && cur[0] != '\0' && strcmp(cur, version) != 0) {
        rv = load_outputs(db, name, cur, old, &n_old, errmsg);
    }
    for (int k = 0; rv == 0 && k < n; k++) {
        object_type(db, outs[k].name, type);
        if (strcmp(type, "table") == 0) {
            kappa_errmsg_printf(errmsg,
                                "%s is a table (an unversioned run?): drop or"
                                " rename it before promoting",
                                outs[k].name);
            return KAPPA_EINVAL;
        }
        int len = snprintf(sql, sizeof sql,
                           "DROP VIEW IF EXISTS \"%s\";"
                           "CREATE VIEW \"%s\" AS SELECT * FROM \"%s\"",
                           outs[k].name, outs[k].name, outs[k].phys);
        rv = sql_fits(len, sizeof sql, errmsg);
        if (rv == 0) {
            rv = db_exec(db, sql, errmsg);
        }
    }
    for (int k = 0; rv == 0 && k < n_old; k++) {
        if (!is_output_of(outs, n, old[k].name)) {
            int len = snprintf(sql, sizeof sql, "DROP VIEW IF EXISTS \"%s\"",
                               old[k].name);
            rv = sql_fits(len, sizeof sql, errmsg);
            if (rv == 0) {
                rv = db_exec(db, sql, errmsg);
            }
        }
    }
    if (rv == 0) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db,
                               "INSERT OR REPLACE INTO kappa_promoted(job,"
                               " version) VALUES(?1,?2)",
                               -1, &st, NULL) != SQLITE_OK) {
            return db_fail(db, errmsg, "promote");
        }
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, version, -1, SQLITE_STATIC);
        rv = sqlite3_step(st) == SQLITE_DONE ? 0
                                             : db_fail(db, errmsg, "promote");
        sqlite3_finalize(st);
    }
    return rv;
}

int versions_promote_first(sqlite3 *db, const char *name, const char *version,
                           char *errmsg)
{
    struct output outs[OUTPUTS_MAX];
    char cur[KAPPA_JOB_VERSION_MAX + 1], type[8];
    int n = 0;
    int rv = promoted_version(db, name, cur);

    if (rv != 0) {
        return db_fail(db, errmsg, "promoted version");
    }
    if (cur[0] != '\0') {
        return 0;
    }
    rv = load_outputs(db, name, version, outs, &n, errmsg);
    for (int k = 0; rv == 0 && k < n; k++) {
        object_type(db, outs[k].name, type);
        if (type[0] != '\0') {
            return 0; /* taken: promote explicitly */
        }
    }
    return rv == 0 ? switch_views(db, name, version, errmsg) : rv;
}

/* ---- Opening ----------------------------------------------------------- */

static int open_db(const char *path, int flags, sqlite3 **db, char *errmsg)
{
    if (sqlite3_open_v2(path, db, flags, NULL) != SQLITE_OK) {
        kappa_errmsg_printf(errmsg, "%s: %s", path, sqlite3_errmsg(*db));
        sqlite3_close(*db);
        *db = NULL;
        return KAPPA_EIO;
    }
    sqlite3_busy_timeout(*db, 10000);
    return 0;
}

static int new_client(const char *bootstrap, struct kappa_client **out,
                      char *errmsg)
{
    struct kappa_conf *conf = kappa_conf_new();
    char errstr[256];
    int rv;

    *out = NULL;
    if (conf == NULL) {
        return KAPPA_ENOMEM;
    }
    if (kappa_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                       sizeof errstr) != 0 ||
        kappa_conf_set(conf, "client.id", "kappa-job/versions", errstr,
                       sizeof errstr) != 0) {
        kappa_conf_free(conf);
        kappa_errmsg_printf(errmsg, "%s", errstr);
        return KAPPA_ECONFIG;
    }
    rv = kappa_client_new(conf, out, errstr, sizeof errstr);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "client: %s", errstr);
    }
    return rv;
}

/* ---- Lag ----------------------------------------------------------------- */

/* Matches the checkpoint keys of one version: NAME@V and NAME@V#I (or NAME
 * and NAME#I without a version). */
#define KEY_MATCH "(job = ?1 OR substr(job, 1, length(?1) + 1) = ?1 || '#')"

static void version_key(const char *name, const char *version, char *key)
{
    snprintf(key, SINK_KEY_MAX, "%s%s%s", name, version[0] ? "@" : "", version);
}

/* Committed next offsets of a version: object "topic/partition" -> int. */
static json_t *load_positions(sqlite3 *db, const char *key)
{
    json_t *pos = json_object();
    sqlite3_stmt *st;
    if (pos == NULL ||
        sqlite3_prepare_v2(db,
                           "SELECT topic, partition, next_offset FROM"
                           " kappa_checkpoints WHERE " KEY_MATCH,
                           -1, &st, NULL) != SQLITE_OK) {
        return pos;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        char k[300];
        snprintf(k, sizeof k, "%s/%lld",
                 (const char *)sqlite3_column_text(st, 0),
                 (long long)sqlite3_column_int64(st, 1));
        json_object_set_new(pos, k, json_integer(sqlite3_column_int64(st, 2)));
    }
    sqlite3_finalize(st);
    return pos;
}

/* Per partition of the version's topics: committed offset, and with a
 * client the high watermark and lag (a partition without a checkpoint lags
 * by everything it holds). Adds to *total. Returns 0 or the broker's
 * error. */
static int topic_parts(struct kappa_client *c, const char *topic, int instances,
                       json_t *pos, json_t *parts, int64_t *total, char *errmsg)
{
    struct kappa_topic_info *ti = NULL;
    size_t n = 0;
    int rv = kappa_list_topics(c, topic, &ti, &n, VERSIONS_TIMEOUT_MS);
    int32_t n_parts = rv == 0 && n == 1 ? ti->partitions : 0;

    kappa_topic_info_free(ti, n);
    if (rv != 0 || n_parts <= 0) {
        kappa_errmsg_printf(errmsg, "topic %s: %s", topic,
                            rv != 0 ? kappa_last_error(c) : "unknown topic");
        return rv != 0 ? rv : KAPPA_EUNKNOWN_TOPIC;
    }
    for (int32_t p = 0; p < n_parts; p++) {
        char k[300];
        int64_t low, high, next;
        json_t *committed, *o;
        rv = kappa_watermarks(c, topic, p, &low, &high, VERSIONS_TIMEOUT_MS);
        if (rv != 0) {
            kappa_errmsg_printf(errmsg, "%s/%d: %s", topic, (int)p,
                                kappa_last_error(c));
            return rv;
        }
        snprintf(k, sizeof k, "%s/%d", topic, (int)p);
        committed = json_object_get(pos, k);
        next = committed != NULL ? json_integer_value(committed) : low;
        next = next < low ? low : next;
        o = json_pack("{s:s, s:i, s:i, s:O, s:I, s:I}", "topic", topic,
                      "partition", (int)p, "instance", (int)(p % instances),
                      "next_offset", committed ? committed : json_null(),
                      "high_watermark", (json_int_t)high, "lag",
                      (json_int_t)(high - next));
        json_array_append_new(parts, o);
        *total += high - next;
    }
    return 0;
}

/* The version's partitions as JSON; *total is the lag, -1 when unknown (no
 * client, or the broker failed: then errmsg says why). */
static json_t *version_parts(sqlite3 *db, struct kappa_client *c,
                             const char *key, int instances,
                             const char *topics_json, int64_t *total,
                             char *errmsg)
{
    json_t *pos = load_positions(db, key), *parts = json_array();
    json_t *topics = json_loads(topics_json, 0, NULL);
    const char *k;
    json_t *v;
    int rv = 0;

    *total = c != NULL ? 0 : -1;
    if (c != NULL && json_is_array(topics)) {
        size_t i;
        json_array_foreach(topics, i, v)
        {
            if (rv == 0 && json_is_string(v)) {
                rv = topic_parts(c, json_string_value(v),
                                 instances > 0 ? instances : 1, pos, parts,
                                 total, errmsg);
            }
        }
    }
    if (c == NULL || rv != 0) {
        json_array_clear(parts);
        json_object_foreach(pos, k, v)
        {
            json_array_append_new(parts, json_pack("{s:s, s:O}", "partition", k,
                                                   "next_offset", v));
        }
        *total = -1;
    }
    json_decref(topics);
    json_decref(pos);
    return parts;
}

/* ---- Promote and retire ---------------------------------------------------
 */

static int check_lag(sqlite3 *db, const char *name, const char *version,
                     const struct kappa_promote_opts *o, char *errmsg)
{
    char key[SINK_KEY_MAX], topics[4096];
    struct kappa_client *c = NULL;
    int instances = 1, rv;
    int64_t lag = -1;
    json_t *parts;

    if (o->bootstrap == NULL) {
        kappa_errmsg_printf(errmsg, "promote needs a broker (-b) to check the"
                                    " lag, or --force");
        return KAPPA_EINVAL;
    }
    find_version(db, name, version, &instances, topics, sizeof topics);
    rv = new_client(o->bootstrap, &c, errmsg);
    if (rv != 0) {
        return rv;
    }
    version_key(name, version, key);
    parts = version_parts(db, c, key, instances, topics, &lag, errmsg);
    json_decref(parts);
    kappa_client_free(c);
    if (lag < 0) {
        return KAPPA_EIO; /* errmsg says why */
    }
    if (lag > o->max_lag) {
        kappa_errmsg_printf(errmsg,
                            "%s version %s has not caught up: lag %lld > %lld"
                            " (wait, raise --max-lag, or --force)",
                            name, version, (long long)lag,
                            (long long)o->max_lag);
        return KAPPA_EBUSY;
    }
    return 0;
}

int kappa_job_promote(const char *db_path, const char *name,
                      const char *version, const struct kappa_promote_opts *o,
                      char *errmsg, size_t errmsg_size)
{
    static const struct kappa_promote_opts dflt = {NULL, 0, 0};
    char msg[KAPPA_ERRMSG_SIZE] = "", topics[4096];
    sqlite3 *db = NULL;
    int instances, rv;

    o = o != NULL ? o : &dflt;
    if (!sink_name_ok(name) || !sink_version_ok(version)) {
        snprintf(errmsg, errmsg_size, "bad job name or version");
        return KAPPA_EINVAL;
    }
    rv = open_db(db_path, SQLITE_OPEN_READWRITE, &db, msg);
    if (rv == 0 &&
        !find_version(db, name, version, &instances, topics, sizeof topics)) {
        kappa_errmsg_printf(msg, "%s has no version %s in %s", name, version,
                            db_path);
        rv = KAPPA_ENOENT;
    }
    if (rv == 0 && !o->force) {
        rv = check_lag(db, name, version, o, msg);
    }
    if (rv == 0) {
        rv = db_exec(db, "BEGIN IMMEDIATE", msg);
        if (rv == 0) {
            rv = switch_views(db, name, version, msg);
            rv = rv == 0 ? db_exec(db, "COMMIT", msg) : rv;
            if (rv != 0) {
                (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            }
        }
    }
    snprintf(errmsg, errmsg_size, "%s", msg);
    sqlite3_close(db);
    return rv;
}

/* Drops the version's views, tables, and partial tables. */
static int drop_outputs(sqlite3 *db, const struct output *outs, int n,
                        char *errmsg)
{
    char type[8], sql[512];
    int rv = 0;
    /* Views first: derived views may read the tables. */
    for (int pass = 0; pass < 2 && rv == 0; pass++) {
        for (int k = 0; k < n && rv == 0; k++) {
            object_type(db, outs[k].phys, type);
            if (strcmp(type, pass == 0 ? "view" : "table") == 0) {
                snprintf(sql, sizeof sql, "DROP %s \"%s\"", type, outs[k].phys);
                rv = db_exec(db, sql, errmsg);
            }
            if (rv == 0 && pass == 1) {
                snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS \"%s_parts\"",
                         outs[k].phys);
                rv = db_exec(db, sql, errmsg);
            }
        }
    }
    return rv;
}

static int delete_version_rows(sqlite3 *db, const char *name,
                               const char *version, char *errmsg)
{
    static const char *const sql[] = {
        "DELETE FROM kappa_checkpoints WHERE " KEY_MATCH,
        "DELETE FROM kappa_window_state WHERE " KEY_MATCH,
        "DELETE FROM kappa_jobs WHERE " KEY_MATCH,
        "DELETE FROM kappa_job_aggs WHERE " KEY_MATCH,
        "DELETE FROM kappa_keyed_state WHERE " KEY_MATCH,
        "DELETE FROM kappa_version_outputs WHERE job=?2 AND version=?3",
        "DELETE FROM kappa_versions WHERE job=?2 AND version=?3",
    };
    char key[SINK_KEY_MAX];
    version_key(name, version, key);
    for (size_t k = 0; k < sizeof sql / sizeof sql[0]; k++) {
        sqlite3_stmt *st;
        int rc;
        if (sqlite3_prepare_v2(db, sql[k], -1, &st, NULL) != SQLITE_OK) {
            return db_fail(db, errmsg, "retire");
        }
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, version, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
            return db_fail(db, errmsg, "retire");
        }
    }
    return 0;
}

int kappa_job_retire(const char *db_path, const char *name, const char *version,
                     char *errmsg, size_t errmsg_size)
{
    char msg[KAPPA_ERRMSG_SIZE] = "", topics[4096];
    char cur[KAPPA_JOB_VERSION_MAX + 1];
    struct output outs[OUTPUTS_MAX];
    sqlite3 *db = NULL;
    int instances, n = 0, rv;

    if (!sink_name_ok(name) || !sink_version_ok(version)) {
        snprintf(errmsg, errmsg_size, "bad job name or version");
        return KAPPA_EINVAL;
    }
    rv = open_db(db_path, SQLITE_OPEN_READWRITE, &db, msg);
    if (rv == 0) {
        rv = db_exec(db, "BEGIN IMMEDIATE", msg);
    }
    if (rv == 0 &&
        !find_version(db, name, version, &instances, topics, sizeof topics)) {
        kappa_errmsg_printf(msg, "%s has no version %s in %s", name, version,
                            db_path);
        rv = KAPPA_ENOENT;
    }
    if (rv == 0 && promoted_version(db, name, cur) == 0 &&
        strcmp(cur, version) == 0) {
        kappa_errmsg_printf(msg,
                            "%s version %s is promoted (readers use it):"
                            " promote another version first",
                            name, version);
        rv = KAPPA_EINVAL;
    }
    if (rv == 0) {
        rv = load_outputs(db, name, version, outs, &n, msg);
    }
    if (rv == 0) {
        rv = drop_outputs(db, outs, n, msg);
    }
    if (rv == 0) {
        rv = delete_version_rows(db, name, version, msg);
    }
    if (rv == 0) {
        rv = db_exec(db, "COMMIT", msg);
    }
    if (rv != 0 && db != NULL) {
        (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    snprintf(errmsg, errmsg_size, "%s", msg);
    sqlite3_close(db);
    return rv;
}

/* ---- Status ----------------------------------------------------------------
 */

static json_t *status_partitions(sqlite3 *db, const char *key,
                                 struct kappa_client *c, int64_t *total_lag)
{
    json_t *parts = json_array();
    sqlite3_stmt *st = NULL;

    if (parts == NULL ||
        sqlite3_prepare_v2(db,
                           "SELECT topic, partition, next_offset, max_event_ms"
                           " FROM kappa_checkpoints WHERE job=?1 ORDER BY"
                           " topic, partition",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        json_decref(parts);
        return NULL;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *topic = (const char *)sqlite3_column_text(st, 0);
        int32_t p = (int32_t)sqlite3_column_int64(st, 1);
        int64_t next = sqlite3_column_int64(st, 2), low, high;
        json_t *o =
            json_pack("{s:s, s:i, s:I}", "topic", topic ? topic : "",
                      "partition", (int)p, "next_offset", (json_int_t)next);
        if (o == NULL) {
            continue;
        }
        if (sqlite3_column_type(st, 3) != SQLITE_NULL) {
            json_object_set_new(o, "max_event_ms",
                                json_integer(sqlite3_column_int64(st, 3)));
        }
        if (c != NULL && topic != NULL &&
            kappa_watermarks(c, topic, p, &low, &high, VERSIONS_TIMEOUT_MS) ==
                0) {
            json_object_set_new(o, "high_watermark", json_integer(high));
            json_object_set_new(o, "lag", json_integer(high - next));
            *total_lag += high - next;
        }
        json_array_append_new(parts, o);
    }
    sqlite3_finalize(st);
    return parts;
}

/* Splits a checkpoint key NAME[@VERSION][#INSTANCE] into o's fields. */
static void key_fields(json_t *o, const char *key)
{
    char name[SINK_KEY_MAX];
    const char *at = strchr(key, '@'), *hash = strchr(key, '#');
    size_t n = at != NULL ? (size_t)(at - key)
                          : (hash != NULL ? (size_t)(hash - key) : strlen(key));
    snprintf(name, sizeof name, "%.*s", (int)n, key);
    json_object_set_new(o, "name", json_string(name));
    if (at != NULL) {
        size_t vn = hash != NULL ? (size_t)(hash - at - 1) : strlen(at + 1);
        json_object_set_new(o, "version", json_stringn(at + 1, vn));
    } else {
        json_object_set_new(o, "version", json_string(""));
    }
    json_object_set_new(o, "instance",
                        json_integer(hash != NULL ? atoi(hash + 1) : 0));
}

static json_t *status_jobs(sqlite3 *db, struct kappa_client *c)
{
    json_t *jobs = json_array();
    sqlite3_stmt *st = NULL;

    if (jobs == NULL ||
        sqlite3_prepare_v2(db,
                           "SELECT job, watermark_ms, records, events,"
                           " malformed, late, checkpoints FROM kappa_jobs"
                           " ORDER BY job",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        json_decref(jobs);
        return NULL;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(st, 0);
        int64_t lag = 0;
        json_t *o, *parts;
        if (key == NULL) {
            continue;
        }
        parts = status_partitions(db, key, c, &lag);
        o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:o*}", "job", key,
                      "records", (json_int_t)sqlite3_column_int64(st, 2),
                      "events", (json_int_t)sqlite3_column_int64(st, 3),
                      "malformed", (json_int_t)sqlite3_column_int64(st, 4),
                      "late", (json_int_t)sqlite3_column_int64(st, 5),
                      "checkpoints", (json_int_t)sqlite3_column_int64(st, 6),
                      "partitions", parts);
        if (o == NULL) {
            continue;
        }
        key_fields(o, key);
        if (sqlite3_column_type(st, 1) != SQLITE_NULL) {
            json_object_set_new(o, "watermark_ms",
                                json_integer(sqlite3_column_int64(st, 1)));
        }
        if (c != NULL) {
            json_object_set_new(o, "lag", json_integer(lag));
        }
        json_array_append_new(jobs, o);
    }
    sqlite3_finalize(st);
    return jobs;
}

/* Every version (version "" is an unversioned job) with its lag. A
 * database of an older layout has none. */
static json_t *status_versions(sqlite3 *db, struct kappa_client *c)
{
    json_t *out = json_array();
    sqlite3_stmt *st = NULL;

    if (sqlite3_prepare_v2(db,
                           "SELECT v.job, v.version, v.instances, v.topics,"
                           " p.version IS v.version FROM kappa_versions v"
                           " LEFT JOIN kappa_promoted p ON p.job = v.job"
                           " ORDER BY v.job, v.version",
                           -1, &st, NULL) != SQLITE_OK) {
        return out;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        const char *version = (const char *)sqlite3_column_text(st, 1);
        const char *topics = (const char *)sqlite3_column_text(st, 3);
        char key[SINK_KEY_MAX], msg[KAPPA_ERRMSG_SIZE] = "";
        int instances = sqlite3_column_int(st, 2);
        int64_t lag;
        json_t *parts, *o;
        if (name == NULL || version == NULL) {
            continue;
        }
        version_key(name, version, key);
        parts = version_parts(db, c, key, instances, topics ? topics : "[]",
                              &lag, msg);
        o = json_pack("{s:s, s:s, s:i, s:b, s:o, s:o}", "name", name, "version",
                      version, "instances", instances, "promoted",
                      sqlite3_column_int(st, 4), "lag",
                      lag >= 0 ? json_integer(lag) : json_null(), "partitions",
                      parts);
        if (o != NULL && msg[0] != '\0') {
            json_object_set_new(o, "lag_error", json_string(msg));
        }
        json_array_append_new(out, o);
    }
    sqlite3_finalize(st);
    return out;
}

static int status_build(const char *db_path, const char *bootstrap,
                        json_t **root, char *errmsg, size_t errmsg_size)
{
    char cerr[KAPPA_ERRMSG_SIZE];
    struct kappa_client *c = NULL;
    sqlite3 *db = NULL;
    json_t *jobs;
    int rv;

    *root = NULL;
    rv = open_db(db_path, SQLITE_OPEN_READONLY, &db, cerr);
    if (rv == 0 && bootstrap != NULL) {
        rv = new_client(bootstrap, &c, cerr);
    }
    if (rv != 0) {
        snprintf(errmsg, errmsg_size, "%s", cerr);
        sqlite3_close(db);
        return rv;
    }
    jobs = status_jobs(db, c);
    if (jobs == NULL) {
        snprintf(errmsg, errmsg_size, "%s: %s", db_path, sqlite3_errmsg(db));
        rv = KAPPA_EIO;
    } else {
        *root = json_pack("{s:s, s:o, s:o}", "db", db_path, "jobs", jobs,
                          "versions", status_versions(db, c));
        rv = *root != NULL ? 0 : KAPPA_ENOMEM;
    }
    kappa_client_free(c);
    sqlite3_close(db);
    return rv;
}

int kappa_job_status(const char *db_path, const char *bootstrap, void *out,
                     char *errmsg, size_t errmsg_size)
{
    json_t *root;
    int rv = status_build(db_path, bootstrap, &root, errmsg, errmsg_size);
    if (rv == 0) {
        if (json_dumpf(root, out, JSON_INDENT(2) | JSON_SORT_KEYS) != 0) {
            rv = KAPPA_EIO;
        }
        fputc('\n', out);
    }
    json_decref(root);
    return rv;
}

static void print_version_row(FILE *f, json_t *v)
{
    json_t *lag = json_object_get(v, "lag");
    const char *version = json_string_value(json_object_get(v, "version"));
    char lagbuf[24] = "?";
    size_t i;
    json_t *p;

    if (json_is_integer(lag)) {
        snprintf(lagbuf, sizeof lagbuf, "%lld",
                 (long long)json_integer_value(lag));
    }
    fprintf(f, "%-24s %-10s %9d  %-8s %12s\n",
            json_string_value(json_object_get(v, "name")),
            version[0] ? version : "-",
            (int)json_integer_value(json_object_get(v, "instances")),
            json_is_true(json_object_get(v, "promoted")) ? "yes" : "", lagbuf);
    json_array_foreach(json_object_get(v, "partitions"), i, p)
    {
        json_t *t = json_object_get(p, "topic");
        json_t *next = json_object_get(p, "next_offset");
        if (!json_is_string(t)) { /* no broker: committed offsets only */
            fprintf(f, "    %-20s committed %lld\n",
                    json_string_value(json_object_get(p, "partition")),
                    (long long)json_integer_value(next));
            continue;
        }
        char committed[24] = "none";
        if (json_is_integer(next)) {
            snprintf(committed, sizeof committed, "%lld",
                     (long long)json_integer_value(next));
        }
        fprintf(
            f,
            "    %s/%-4lld instance %-3lld committed %-10s high %-10lld"
            " lag %lld\n",
            json_string_value(t),
            (long long)json_integer_value(json_object_get(p, "partition")),
            (long long)json_integer_value(json_object_get(p, "instance")),
            committed,
            (long long)json_integer_value(json_object_get(p, "high_watermark")),
            (long long)json_integer_value(json_object_get(p, "lag")));
    }
}

int kappa_job_status_table(const char *db_path, const char *bootstrap,
                           void *out, char *errmsg, size_t errmsg_size)
{
    FILE *f = out;
    json_t *root, *v;
    size_t i;
    int rv = status_build(db_path, bootstrap, &root, errmsg, errmsg_size);

    if (rv != 0) {
        return rv;
    }
    fprintf(f, "%-24s %-10s %9s  %-8s %12s\n", "JOB", "VERSION", "INSTANCES",
            "PROMOTED", "LAG");
    json_array_foreach(json_object_get(root, "versions"), i, v)
    {
        print_version_row(f, v);
    }
    json_decref(root);
    return 0;
}
