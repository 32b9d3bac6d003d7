/* kappa consume TOPIC: records to stdout, one per line (or per --format).
 *
 * Without --follow the tool reads up to the high watermark each partition
 * had when it started and then exits; with --follow it keeps waiting.
 * Output goes through one large stdio buffer. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define FMT_ITEMS_MAX  64
#define CONSUME_BATCH  4096
#define PARTITIONS_MAX 10000

enum fmt_kind {
    FMT_LITERAL,
    FMT_TOPIC,
    FMT_PARTITION,
    FMT_OFFSET,
    FMT_KEY,
    FMT_VALUE,
    FMT_TIMESTAMP,
    FMT_HEADERS,
};

struct fmt_item {
    enum fmt_kind kind;
    const char *lit;
    size_t lit_len;
};

struct fmt {
    struct fmt_item items[FMT_ITEMS_MAX];
    size_t n;
    char text[1024]; /* literals after escape processing */
};

struct consume_opts {
    const char *topic;
    int32_t partition; /* -1: all */
    int64_t start;     /* offset or KAPPA_OFFSET_* */
    int64_t timestamp; /* >= 0: start there */
    long long count;   /* 0: no limit */
    int follow;
    const char *format;
};

static int fmt_add(struct fmt *f, enum fmt_kind kind, const char *lit,
                   size_t len)
{
    if (f->n == FMT_ITEMS_MAX) {
        return -1;
    }
    if (kind == FMT_LITERAL && f->n > 0 &&
        f->items[f->n - 1].kind == FMT_LITERAL &&
        f->items[f->n - 1].lit + f->items[f->n - 1].lit_len == lit) {
        f->items[f->n - 1].lit_len += len;
        return 0;
    }
    f->items[f->n].kind = kind;
    f->items[f->n].lit = lit;
    f->items[f->n].lit_len = len;
    f->n++;
    return 0;
}

static int fmt_kind_of(char c, enum fmt_kind *kind)
{
    static const char codes[] = "tpokvTh";
    static const enum fmt_kind kinds[] = {
        FMT_TOPIC, FMT_PARTITION, FMT_OFFSET, FMT_KEY,
        FMT_VALUE, FMT_TIMESTAMP, FMT_HEADERS};
    const char *at = c != '\0' ? strchr(codes, c) : NULL;
    if (at == NULL) {
        return -1;
    }
    *kind = kinds[at - codes];
    return 0;
}

/* Compiles a kcat-like template: %t %p %o %k %v %T %h %%, \n \t \\.
 * Output is one record per line, so a newline is added unless the template
 * already ends with one. */
static int fmt_compile(struct fmt *f, const char *s)
{
    size_t used = 0;
    f->n = 0;
    for (; *s != '\0'; s++) {
        enum fmt_kind kind;
        char ch = *s;
        if (*s == '%' && s[1] != '%') {
            if (fmt_kind_of(s[1], &kind) != 0 || fmt_add(f, kind, NULL, 0)) {
                return -1;
            }
            s++;
            continue;
        }
        if (*s == '%') {
            s++;
        } else if (*s == '\\' && s[1] != '\0') {
            s++;
            ch = *s == 'n' ? '\n' : *s == 't' ? '\t' : *s == 'r' ? '\r' : *s;
        }
        if (used == sizeof f->text ||
            fmt_add(f, FMT_LITERAL, f->text + used, 1) != 0) {
            return -1;
        }
        f->text[used++] = ch;
    }
    if (used > 0 && f->items[f->n - 1].kind == FMT_LITERAL &&
        f->text[used - 1] == '\n') {
        return 0;
    }
    if (used == sizeof f->text ||
        fmt_add(f, FMT_LITERAL, f->text + used, 1) != 0) {
        return -1;
    }
    f->text[used] = '\n';
    return 0;
}

static void put_headers(const struct kappa_record *r, FILE *out)
{
    for (size_t i = 0; i < r->n_headers; i++) {
        const char *k;
        const void *v;
        size_t kl, vl;
        if (kappa_record_header(r, i, &k, &kl, &v, &vl) != 0) {
            return;
        }
        if (i > 0) {
            fputc_unlocked(',', out);
        }
        fwrite_unlocked(k, 1, kl, out);
        fputc_unlocked('=', out);
        if (v != NULL) {
            fwrite_unlocked(v, 1, vl, out);
        }
    }
}

static void fmt_print(const struct fmt *f, const struct kappa_record *r,
                      FILE *out)
{
    for (size_t i = 0; i < f->n; i++) {
        const struct fmt_item *it = &f->items[i];
        switch (it->kind) {
        case FMT_LITERAL:
            fwrite_unlocked(it->lit, 1, it->lit_len, out);
            break;
        case FMT_TOPIC:
            fputs_unlocked(r->topic, out);
            break;
        case FMT_PARTITION:
            fprintf(out, "%d", (int)r->partition);
            break;
        case FMT_OFFSET:
            fprintf(out, "%" PRId64, r->offset);
            break;
        case FMT_KEY:
            if (r->key != NULL) {
                fwrite_unlocked(r->key, 1, r->key_len, out);
            }
            break;
        case FMT_VALUE:
            if (r->value != NULL) {
                fwrite_unlocked(r->value, 1, r->value_len, out);
            }
            break;
        case FMT_TIMESTAMP:
            fprintf(out, "%" PRId64, r->timestamp_ms);
            break;
        case FMT_HEADERS:
            put_headers(r, out);
            break;
        }
    }
}

static int parse_opts(struct cli *cli, int argc, char **argv,
                      struct consume_opts *o)
{
    static const char *const what = "consume";
    long long n;
    const char *v;
    memset(o, 0, sizeof *o);
    o->partition = -1;
    o->start = KAPPA_OFFSET_END;
    o->timestamp = -1;
    o->format = "%v";
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int g = cli_global_opt(cli, argc, argv, &i);
        if (g != 0) {
            if (g < 0) {
                return -1;
            }
            continue;
        }
        if (strcmp(a, "--from-beginning") == 0) {
            o->start = KAPPA_OFFSET_BEGINNING;
            continue;
        }
        if (strcmp(a, "--follow") == 0 || strcmp(a, "-f") == 0) {
            o->follow = 1;
            continue;
        }
        if (a[0] != '-') {
            if (o->topic != NULL) {
                cli_fail(what, "unexpected argument \"%s\"", a);
                return -1;
            }
            o->topic = a;
            continue;
        }
        if ((v = cli_opt_value(what, argc, argv, &i)) == NULL) {
            return -1;
        }
        if (strcmp(a, "--partition") == 0 &&
            cli_parse_int(v, 0, INT32_MAX, &n) == 0) {
            o->partition = (int32_t)n;
        } else if (strcmp(a, "--offset") == 0 &&
                   cli_parse_int(v, 0, INT64_MAX, &n) == 0) {
            o->start = n;
        } else if (strcmp(a, "--timestamp") == 0 &&
                   cli_parse_int(v, 0, INT64_MAX, &n) == 0) {
            o->timestamp = n;
        } else if (strcmp(a, "--count") == 0 &&
                   cli_parse_int(v, 1, INT64_MAX, &n) == 0) {
            o->count = n;
        } else if (strcmp(a, "--format") == 0) {
            o->format = v;
        } else {
            cli_fail(what, "bad option %s %s", a, v);
            return -1;
        }
    }
    if (o->topic == NULL) {
        cli_fail(what, "missing topic");
        return -1;
    }
    return 0;
}

struct consume_state {
    int32_t n_parts;
    int32_t first; /* partition id of ends[0] */
    int64_t *ends; /* high watermark at start, per partition */
    unsigned char *is_done;
    int32_t n_left;
    long long printed;
};

/* Assigns the partitions and records where each one ends. Returns 0, -1
 * for a client error or 1 for an error already printed. */
static int consume_setup(struct kappa_client *c, const struct consume_opts *o,
                         struct consume_state *st)
{
    struct kappa_topic_info *ti;
    size_t n;
    if (kappa_list_topics(c, o->topic, &ti, &n, 0) != 0) {
        return -1;
    }
    st->n_parts = o->partition >= 0 ? 1 : ti[0].partitions;
    st->first = o->partition >= 0 ? o->partition : 0;
    kappa_topic_info_free(ti, n);
    st->ends = calloc((size_t)st->n_parts + 1, sizeof *st->ends);
    st->is_done = calloc((size_t)st->n_parts + 1, 1);
    if (st->ends == NULL || st->is_done == NULL) {
        return -1;
    }
    st->n_left = st->n_parts;
    for (int32_t i = 0; i < st->n_parts; i++) {
        int32_t p = st->first + i;
        int64_t low, pos;
        if (kappa_assign(c, o->topic, p, o->start) != 0 ||
            (o->timestamp >= 0 &&
             kappa_seek_timestamp(c, o->topic, p, o->timestamp) != 0) ||
            kappa_watermarks(c, o->topic, p, &low, &st->ends[i], 0) != 0 ||
            kappa_position(c, o->topic, p, &pos) != 0) {
            return -1;
        }
        if (pos < low || pos > st->ends[i]) {
            cli_fail("consume",
                     "%s/%d: offset %" PRId64 " out of range [%" PRId64
                     ", %" PRId64 "]",
                     o->topic, (int)p, pos, low, st->ends[i]);
            return 1;
        }
        if (!o->follow && pos >= st->ends[i]) {
            st->is_done[i] = 1;
            st->n_left--;
            (void)kappa_unassign(c, o->topic, p);
        }
    }
    return 0;
}

/* Handles one record; returns 1 when the tool should stop, -1 on error. */
static int consume_one(struct kappa_client *c, const struct consume_opts *o,
                       struct consume_state *st, const struct fmt *f,
                       const struct kappa_record *r)
{
    int32_t i = r->partition - st->first;
    if (r->err != 0) {
        cli_fail("consume", "%s/%d at offset %" PRId64 ": %s", r->topic,
                 (int)r->partition, r->offset, kappa_err_str(r->err));
        return -1;
    }
    if (i < 0 || i >= st->n_parts || st->is_done[i]) {
        return 0;
    }
    if (!o->follow && r->offset >= st->ends[i]) {
        return 0;
    }
    fmt_print(f, r, stdout);
    st->printed++;
    if (o->count > 0 && st->printed >= o->count) {
        return 1;
    }
    if (!o->follow && r->offset + 1 >= st->ends[i]) {
        st->is_done[i] = 1;
        st->n_left--;
        (void)kappa_unassign(c, o->topic, r->partition);
    }
    return 0;
}

static int consume_loop(struct kappa_client *c, const struct consume_opts *o,
                        struct consume_state *st, const struct fmt *f)
{
    static struct kappa_record recs[CONSUME_BATCH];
    while (o->follow || st->n_left > 0) {
        size_t n;
        if (kappa_consume(c, 1000, recs, CONSUME_BATCH, &n) != 0) {
            return cli_fail_client(c);
        }
        for (size_t i = 0; i < n; i++) {
            int rv = consume_one(c, o, st, f, &recs[i]);
            if (rv < 0) {
                return 1;
            }
            if (rv > 0) {
                return 0;
            }
        }
        if (o->follow) {
            fflush(stdout); /* a follower is read as it goes */
        }
    }
    return 0;
}

int cmd_consume(struct cli *cli, int argc, char **argv)
{
    static const char *const props[] = {"fetch.partition.max.bytes=4194304",
                                        NULL};
    static char outbuf[1 << 20];
    struct consume_opts o;
    struct consume_state st;
    struct kappa_client *c;
    struct fmt *f;
    int rv;

    if (parse_opts(cli, argc, argv, &o) != 0) {
        return 2;
    }
    f = calloc(1, sizeof *f);
    if (f == NULL || fmt_compile(f, o.format) != 0) {
        free(f);
        return cli_fail("consume", "bad --format \"%s\"", o.format) + 1;
    }
    if ((c = cli_client_new(cli, "consume", props)) == NULL) {
        free(f);
        return 1;
    }
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    memset(&st, 0, sizeof st);
    rv = consume_setup(c, &o, &st);
    if (rv < 0) {
        rv = cli_fail_client(c);
    } else if (rv == 0) {
        rv = consume_loop(c, &o, &st, f);
    }
    if (fflush(stdout) != 0) {
        rv = cli_fail("consume", "write stdout failed");
    }
    kappa_client_free(c);
    free(st.ends);
    free(st.is_done);
    free(f);
    return rv;
}
