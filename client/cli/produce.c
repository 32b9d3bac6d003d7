/* kappa produce TOPIC: one record per stdin line.
 *
 * Lines are read in large blocks and split with memchr, so the tool adds
 * no per-line system call; kappa_produce copies each line into its batch,
 * and kappa_poll serves delivery reports every few thousand records. When
 * the client's queue is full (KAPPA_EBUSY) the tool polls until there is
 * room again. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define READ_BLOCK (4u * 1024 * 1024)
#define POLL_EVERY 4096

struct produce_opts {
    const char *topic;
    int32_t partition;
    int key_sep; /* -1: no key */
    const char *props[8];
    size_t n_props;
    char batch_prop[64];
    char linger_prop[64];
};

struct produce_stats {
    uint64_t produced;
    uint64_t delivered;
    uint64_t failed;
    int first_err;
};

static void on_delivery(const struct kappa_delivery *d, void *arg)
{
    struct produce_stats *st = arg;
    if (d->err != 0) {
        if (st->failed++ == 0) {
            st->first_err = d->err;
        }
    } else {
        st->delivered++;
    }
}

static int parse_opts(struct cli *cli, int argc, char **argv,
                      struct produce_opts *o)
{
    static const char *const what = "produce";
    long long n;
    const char *v;
    memset(o, 0, sizeof *o);
    o->partition = KAPPA_PARTITION_ANY;
    o->key_sep = -1;
    for (int i = 0; i < argc; i++) {
        int g = cli_global_opt(cli, argc, argv, &i);
        if (g < 0) {
            return -1;
        }
        if (g > 0) {
            continue;
        }
        const char *a = argv[i];
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
        } else if (strcmp(a, "--key-separator") == 0 && strlen(v) == 1) {
            o->key_sep = (unsigned char)v[0];
        } else if (strcmp(a, "--acks") == 0 &&
                   (strcmp(v, "0") == 0 || strcmp(v, "1") == 0 ||
                    strcmp(v, "all") == 0 || strcmp(v, "-1") == 0)) {
            o->props[o->n_props++] = strcmp(v, "0") == 0   ? "acks=0"
                                     : strcmp(v, "1") == 0 ? "acks=1"
                                                           : "acks=all";
        } else if (strcmp(a, "--compression") == 0 &&
                   (strcmp(v, "none") == 0 || strcmp(v, "lz4") == 0 ||
                    strcmp(v, "zstd") == 0)) {
            o->props[o->n_props++] = strcmp(v, "none") == 0 ? "compression=none"
                                     : strcmp(v, "lz4") == 0
                                         ? "compression=lz4"
                                         : "compression=zstd";
        } else if (strcmp(a, "--linger-ms") == 0 &&
                   cli_parse_int(v, 0, 900000, &n) == 0) {
            snprintf(o->linger_prop, sizeof o->linger_prop, "linger.ms=%lld",
                     n);
            o->props[o->n_props++] = o->linger_prop;
        } else if (strcmp(a, "--batch-size") == 0 &&
                   cli_parse_int(v, 1024, 64ll << 20, &n) == 0) {
            snprintf(o->batch_prop, sizeof o->batch_prop, "batch.size=%lld", n);
            o->props[o->n_props++] = o->batch_prop;
        } else {
            cli_fail(what, "bad option %s %s", a, v);
            return -1;
        }
    }
    o->props[o->n_props] = NULL;
    if (o->topic == NULL) {
        cli_fail(what, "missing topic");
        return -1;
    }
    return 0;
}

/* Produces one line; waits for room while the queue is full. Returns 0,
 * 1 for a record refused on its own (too big) or an error code. */
static int produce_line(struct kappa_client *c, const struct produce_opts *o,
                        const char *line, size_t len, struct produce_stats *st)
{
    struct kappa_msg m;
    const char *sep;
    int rv;
    memset(&m, 0, sizeof m);
    m.topic = o->topic;
    m.partition = o->partition;
    m.value = line;
    m.value_len = len;
    if (o->key_sep >= 0 && (sep = memchr(line, o->key_sep, len)) != NULL) {
        m.key = line;
        m.key_len = (size_t)(sep - line);
        m.value = sep + 1;
        m.value_len = len - m.key_len - 1;
    }
    while ((rv = kappa_produce(c, &m)) == KAPPA_EBUSY) {
        kappa_poll(c, 10);
    }
    if (rv == KAPPA_ETOOBIG) {
        if (st->failed++ == 0) {
            st->first_err = rv;
            fprintf(stderr, "kappa: %s\n", kappa_last_error(c));
        }
        return 1;
    }
    if (rv != 0) {
        return rv;
    }
    if (++st->produced % POLL_EVERY == 0) {
        kappa_poll(c, 0);
    }
    return 0;
}

/* Reads stdin block by block and produces each line; a last line without a
 * newline counts too. Lines may be as long as the buffer may grow. */
static int produce_stdin(struct kappa_client *c, const struct produce_opts *o,
                         struct produce_stats *st)
{
    size_t cap = READ_BLOCK, len = 0, max_cap = (size_t)80 << 20;
    char *buf = malloc(cap);
    int rv = 0, eof = 0;
    if (buf == NULL) {
        return cli_fail("produce", "out of memory");
    }
    while (!eof && rv == 0) {
        ssize_t n;
        size_t start = 0;
        if (len == cap) {
            char *bigger = cap < max_cap ? realloc(buf, cap * 2) : NULL;
            if (bigger == NULL) {
                rv = cli_fail("produce", "line longer than %zu bytes", cap);
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        n = read(0, buf + len, cap - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            rv = cli_fail("produce", "read stdin: %s", strerror(errno));
            break;
        }
        eof = n == 0;
        len += (size_t)n;
        for (;;) {
            char *nl = memchr(buf + start, '\n', len - start);
            size_t line_len;
            if (nl == NULL) {
                if (!eof || start == len) {
                    break;
                }
                line_len = len - start; /* last line without a newline */
            } else {
                line_len = (size_t)(nl - (buf + start));
            }
            rv = produce_line(c, o, buf + start, line_len, st);
            if (rv > 1) {
                break;
            }
            rv = 0;
            start += line_len + (nl != NULL);
        }
        memmove(buf, buf + start, len - start);
        len -= start;
    }
    free(buf);
    if (rv > 1) {
        return cli_fail_client(c);
    }
    return rv;
}

static int check_target(struct kappa_client *c, const struct produce_opts *o)
{
    struct kappa_topic_info *ti;
    size_t n;
    int32_t parts;
    if (kappa_list_topics(c, o->topic, &ti, &n, 0) != 0) {
        return cli_fail_client(c);
    }
    parts = ti[0].partitions;
    kappa_topic_info_free(ti, n);
    if (o->partition >= parts) {
        return cli_fail("produce", "%s/%d: unknown partition (topic has %d)",
                        o->topic, (int)o->partition, (int)parts);
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int cmd_produce(struct cli *cli, int argc, char **argv)
{
    struct produce_opts o;
    struct produce_stats st;
    struct kappa_client *c;
    double t0, dt;
    int rv;

    if (parse_opts(cli, argc, argv, &o) != 0) {
        return 2;
    }
    if ((c = cli_client_new(cli, "produce", o.props)) == NULL) {
        return 1;
    }
    /* Fail early on a missing topic or partition, even with empty input. */
    if (check_target(c, &o) != 0) {
        kappa_client_free(c);
        return 1;
    }
    memset(&st, 0, sizeof st);
    kappa_set_delivery_cb(c, on_delivery, &st);
    t0 = now_s();
    rv = produce_stdin(c, &o, &st);
    if (kappa_flush(c, 120000) != 0) {
        fprintf(stderr, "kappa: %s\n", kappa_last_error(c));
        rv = 1;
    }
    dt = now_s() - t0;
    kappa_client_free(c); /* undelivered records count as failed */
    fprintf(stderr,
            "produced %llu records to %s in %.2f s (%.0f rec/s), %llu failed\n",
            (unsigned long long)st.delivered, o.topic, dt,
            dt > 0 ? (double)st.delivered / dt : 0.0,
            (unsigned long long)st.failed);
    if (st.failed > 0) {
        fprintf(stderr, "kappa: produce %s: %s\n", o.topic,
                kappa_err_str(st.first_err));
    }
    return rv != 0 || st.failed > 0 ? 1 : 0;
}
