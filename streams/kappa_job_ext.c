/* kappa-job, second part (see kappa_job_ext.h):
 *
 *   kappa-job status --db FILE [-b HOST:PORT] [--table]
 *   kappa-job promote NAME VERSION --db FILE (-b HOST:PORT [--max-lag N]
 *             | --force)
 *   kappa-job retire NAME VERSION --db FILE
 *   kappa-job query --db FILE [--header] SQL
 *
 * and for run/gen: the monitoring and fraud jobs, --version, --instance,
 * --instances and --where. */
#include "kappa_job_ext.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clickstream.h"
#include "monitoring.h"

void ext_opts_init(struct opts_ext *x)
{
    memset(x, 0, sizeof *x);
    x->instances = 1;
    x->threshold = MON_THRESHOLD;
    fraud_rules_default(&x->rules);
}

static int parse_int64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || v < min || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

int ext_parse_opt(int c, const char *arg, struct opts_ext *x)
{
    int64_t v;
    char *end;
    switch (c) {
    case OPT_VERSION:
        x->version = arg;
        return 0;
    case OPT_INSTANCE:
        if (parse_int64(arg, 0, KAPPA_JOB_INSTANCES_MAX - 1, &v) != 0) {
            return -1;
        }
        x->instance = (int)v;
        return 0;
    case OPT_INSTANCES:
        if (parse_int64(arg, 1, KAPPA_JOB_INSTANCES_MAX, &v) != 0) {
            return -1;
        }
        x->instances = (int)v;
        return 0;
    case OPT_WHERE:
        x->where = arg;
        return strchr(arg, '=') != NULL ? 0 : -1;
    case OPT_THRESHOLD:
        x->threshold = strtod(arg, &end);
        return end != arg && *end == '\0' ? 0 : -1;
    case OPT_MAX_TXNS:
        if (parse_int64(arg, 1, FRAUD_HISTORY_MAX - 1, &v) != 0) {
            return -1;
        }
        x->rules.max_txns = (int)v;
        return 0;
    case OPT_MAX_AMOUNT: {
        double d = strtod(arg, &end);
        if (end == arg || *end != '\0' || d < 0 || d > 1e15) {
            return -1;
        }
        x->rules.max_amount_cents = (int64_t)(d * 100 + 0.5);
        return 0;
    }
    case OPT_WINDOW_MIN:
        if (parse_int64(arg, 1, 60, &v) != 0) {
            return -1;
        }
        x->rules.window_ms = v * 60000;
        return 0;
    default:
        return -1;
    }
}

int ext_is_job(const char *kind)
{
    return kind != NULL &&
           (strcmp(kind, "clickstream") == 0 ||
            strcmp(kind, "monitoring") == 0 || strcmp(kind, "fraud") == 0);
}

/* --where FIELD=VALUE / FIELD!=VALUE: keeps events whose string (or
 * integer) field equals / differs from VALUE; events without the field are
 * kept by != and dropped by =. */
struct where {
    char field[64];
    char value[128];
    int negate;
    enum kappa_stream_format format;
};

static struct where where_filter;

static int where_keep(const struct kappa_event *ev, void *arg)
{
    const struct where *w = arg;
    struct kappa_field f;
    char num[24];
    const char *s = NULL;
    size_t n = 0;

    if (kappa_stream_field(w->format, ev->value, ev->value_len, w->field, &f) ==
        0) {
        if (f.type == KAPPA_FIELD_STRING) {
            s = f.str;
            n = f.str_len;
        } else if (f.type == KAPPA_FIELD_INT) {
            n = (size_t)snprintf(num, sizeof num, "%lld", (long long)f.i);
            s = num;
        }
    }
    int equal =
        s != NULL && n == strlen(w->value) && memcmp(s, w->value, n) == 0;
    return w->negate ? !equal : equal;
}

static int where_parse(const char *spec, enum kappa_stream_format format,
                       struct where *w)
{
    const char *eq = strchr(spec, '=');
    size_t n;
    memset(w, 0, sizeof *w);
    w->format = format;
    w->negate = eq > spec && eq[-1] == '!';
    n = (size_t)(eq - spec) - (size_t)w->negate;
    if (n == 0 || n >= sizeof w->field || strlen(eq + 1) >= sizeof w->value) {
        return -1;
    }
    memcpy(w->field, spec, n);
    snprintf(w->value, sizeof w->value, "%s", eq + 1);
    return 0;
}

int ext_job_new(const char *kind, const char *name,
                enum kappa_stream_format format, const char *topic,
                const char *db, const struct opts_ext *x,
                struct kappa_job **out)
{
    struct kappa_job *job = NULL;
    int rv;

    if (strcmp(kind, "monitoring") == 0) {
        rv = format == KAPPA_FORMAT_JSON
                 ? monitoring_job_new(name, topic, db, x->threshold, &job)
                 : KAPPA_EINVAL;
    } else if (strcmp(kind, "fraud") == 0) {
        rv = format == KAPPA_FORMAT_JSON
                 ? fraud_job_new(name, topic, db, &x->rules, &job)
                 : KAPPA_EINVAL;
    } else {
        rv = clickstream_job_new(name, format, topic, db, &job);
    }
    if (rv == 0) {
        rv = kappa_job_set_version(job, x->version);
    }
    if (rv == 0) {
        rv = kappa_job_set_instance(job, x->instance, x->instances);
    }
    if (rv == 0 && x->where != NULL) {
        rv = where_parse(x->where, format, &where_filter) == 0
                 ? kappa_job_filter(job, where_keep, &where_filter)
                 : KAPPA_EINVAL;
    }
    if (rv != 0) {
        fprintf(stderr, "kappa-job: %s: %s\n", kind,
                job != NULL && kappa_job_errmsg(job)[0] != '\0'
                    ? kappa_job_errmsg(job)
                    : kappa_err_str(rv));
        kappa_job_free(job);
        return rv;
    }
    *out = job;
    return 0;
}

int ext_generate(const char *kind, const char *bootstrap, const char *topic,
                 int64_t n, uint64_t seed, enum kappa_stream_format format,
                 int32_t n_partitions, char *errmsg)
{
    if (strcmp(kind, "monitoring") == 0) {
        return monitoring_generate(bootstrap, topic, n, seed, n_partitions,
                                   errmsg);
    }
    if (strcmp(kind, "fraud") == 0) {
        return fraud_generate(bootstrap, topic, n, seed, n_partitions, errmsg);
    }
    return clickstream_generate(bootstrap, topic, n, seed, format, n_partitions,
                                errmsg);
}

/* ---- Database commands ------------------------------------------------ */

int ext_is_command(const char *cmd)
{
    return strcmp(cmd, "status") == 0 || strcmp(cmd, "promote") == 0 ||
           strcmp(cmd, "retire") == 0 || strcmp(cmd, "query") == 0;
}

void ext_usage(void)
{
    fprintf(stderr,
            "  kappa-job status --db FILE [-b HOST:PORT] [--table]\n"
            "  kappa-job promote NAME VERSION --db FILE"
            " (-b HOST:PORT [--max-lag N] | --force)\n"
            "  kappa-job retire NAME VERSION --db FILE\n"
            "  kappa-job query --db FILE [--header] SQL\n"
            "  run/gen: JOB is clickstream, monitoring or fraud; run also"
            " takes\n"
            "      [--version V] [--instance I --instances N]"
            " [--where FIELD=VALUE | FIELD!=VALUE]\n"
            "      monitoring: [--threshold PCT]; fraud: [--max-txns N]"
            " [--max-amount X] [--window-min T]\n");
}

struct db_opts {
    const char *db;
    const char *bootstrap;
    struct kappa_promote_opts promote;
    int table;
    int header;
};

static int parse_db_opts(int argc, char **argv, struct db_opts *o)
{
    static const struct option longopts[] = {
        {"db", required_argument, NULL, 'd'},
        {"bootstrap", required_argument, NULL, 'b'},
        {"max-lag", required_argument, NULL, 'l'},
        {"force", no_argument, NULL, 'F'},
        {"table", no_argument, NULL, 'T'},
        {"header", no_argument, NULL, 'H'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "b:", longopts, NULL)) != -1) {
        switch (c) {
        case 'd':
            o->db = optarg;
            break;
        case 'b':
            o->bootstrap = o->promote.bootstrap = optarg;
            break;
        case 'l':
            if (parse_int64(optarg, 0, INT64_MAX, &o->promote.max_lag) != 0) {
                return -1;
            }
            break;
        case 'F':
            o->promote.force = 1;
            break;
        case 'T':
            o->table = 1;
            break;
        case 'H':
            o->header = 1;
            break;
        default:
            return -1;
        }
    }
    return o->db != NULL ? 0 : -1;
}

/* Prints the rows of one statement, columns separated by '|' (as the
 * sqlite3 shell does). */
static int query(const char *path, const char *sql, int header)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc;

    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_busy_timeout(db, 10000) != SQLITE_OK ||
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "kappa-job: %s: %s\n", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return 1;
    }
    for (int k = 0; header && k < sqlite3_column_count(st); k++) {
        printf("%s%s", k ? "|" : "", sqlite3_column_name(st, k));
    }
    if (header) {
        putchar('\n');
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int k = 0; k < sqlite3_column_count(st); k++) {
            const unsigned char *t = sqlite3_column_text(st, k);
            printf("%s%s", k ? "|" : "", t != NULL ? (const char *)t : "");
        }
        putchar('\n');
    }
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "kappa-job: %s\n", sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc == SQLITE_DONE ? 0 : 1;
}

int ext_main(int argc, char **argv)
{
    const char *cmd = argv[1];
    int with_version =
        strcmp(cmd, "promote") == 0 || strcmp(cmd, "retire") == 0;
    struct db_opts o;
    char errmsg[512] = "";
    int rv;

    memset(&o, 0, sizeof o);
    if (with_version && argc < 4) {
        ext_usage();
        return 2;
    }
    optind = with_version ? 4 : 2;
    if (parse_db_opts(argc, argv, &o) != 0) {
        ext_usage();
        return 2;
    }
    if (strcmp(cmd, "query") == 0) {
        if (optind != argc - 1) {
            ext_usage();
            return 2;
        }
        return query(o.db, argv[optind], o.header);
    }
    if (strcmp(cmd, "status") == 0) {
        rv = o.table ? kappa_job_status_table(o.db, o.bootstrap, stdout, errmsg,
                                              sizeof errmsg)
                     : kappa_job_status(o.db, o.bootstrap, stdout, errmsg,
                                        sizeof errmsg);
    } else if (strcmp(cmd, "promote") == 0) {
        rv = kappa_job_promote(o.db, argv[2], argv[3], &o.promote, errmsg,
                               sizeof errmsg);
        if (rv == 0) {
            printf("promoted %s version %s\n", argv[2], argv[3]);
        }
    } else {
        rv = kappa_job_retire(o.db, argv[2], argv[3], errmsg, sizeof errmsg);
        if (rv == 0) {
            printf("retired %s version %s\n", argv[2], argv[3]);
        }
    }
    if (rv != 0) {
        fprintf(stderr, "kappa-job %s: %s\n", cmd, errmsg);
        return 1;
    }
    return 0;
}
