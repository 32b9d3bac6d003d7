/* The client object: configuration, its private libuv loop and timers, and
 * the blocking helpers every public call builds on.
 *
 * Happy path: kappa_client_new parses the configuration and starts the
 * loop's timers without connecting. Public calls run the loop only inside
 * kappa_poll, kappa_flush, kappa_consume and blocking calls (client_wait);
 * the tick timer (KCLIENT_TICK_MS) drives request and message timeouts,
 * retry backoff, reconnects and metadata refreshes.
 *
 * Failure modes: kappa_client_free cancels every request (callbacks see
 * KAPPA_ECANCELED), hands undelivered records to the delivery callback
 * with KAPPA_ECANCELED, closes every handle and runs the loop until the
 * close callbacks have run, so uv_loop_close succeeds. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client_int.h"
#include "common/alloc.h"
#include "common/assert.h"

uint64_t client_now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

static int64_t timespec_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* Records one precise reading may serve next: as many as arrived per
 * KCLIENT_CLOCK_REUSE_NS during the previous reading's life (n_served
 * records over span_ns), within [1, KCLIENT_CLOCK_REUSE_MAX]. */
static uint32_t clock_budget(uint32_t n_served, int64_t span_ns)
{
    uint64_t n;
    if (span_ns <= 0) {
        return 1; /* the clock stepped back: no estimate */
    }
    n = (uint64_t)n_served * KCLIENT_CLOCK_REUSE_NS / (uint64_t)span_ns;
    if (n < 1) {
        return 1;
    }
    return n > KCLIENT_CLOCK_REUSE_MAX ? KCLIENT_CLOCK_REUSE_MAX : (uint32_t)n;
}

/* A reading is reused while three things hold:
 * 1. CLOCK_REALTIME_COARSE (a vDSO memory read, about 10 ns) still shows the
 *    kernel tick of the reading, so a pause between two kappa_produce calls
 *    is never hidden: a reused time is less than one tick (1-4 ms) old;
 * 2. fewer records than its budget used it: at a steady record rate the
 *    budget covers about KCLIENT_CLOCK_REUSE_NS (1 ms), and at most
 *    KCLIENT_CLOCK_REUSE_MAX records;
 * 3. the loop has not run since (client_clock_expire).
 * So at high rates one precise reading serves up to 64 records and a slow
 * producer reads the clock for every record. A timestamp is at most about
 * 1 ms older than the kappa_produce call at a steady rate, and less than one
 * tick older when the rate changes abruptly (docs/performance.md). */
int64_t client_record_ms(struct kappa_client *c)
{
    struct kclock *k = &c->clock;
    struct timespec tick = {0, 0}, now;
    int64_t now_ns;
#ifdef CLOCK_REALTIME_COARSE
    (void)clock_gettime(CLOCK_REALTIME_COARSE, &tick);
#endif
    if (k->n_served < k->n_budget && timespec_ns(&tick) == k->tick_ns) {
        k->n_served++;
        return k->wall_ms;
    }
    (void)clock_gettime(CLOCK_REALTIME, &now);
    now_ns = timespec_ns(&now);
    k->n_budget = clock_budget(k->n_served, now_ns - k->wall_ns);
#ifndef CLOCK_REALTIME_COARSE
    k->n_budget = 0; /* no cheap way to see a pause: read every time */
#endif
    k->wall_ns = now_ns;
    k->wall_ms = now_ns / 1000000;
    k->tick_ns = timespec_ns(&tick);
    k->n_served = 1;
    return k->wall_ms;
}

int client_error(struct kappa_client *c, int rv, const char *fmt, ...)
{
    char context[KAPPA_ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(context, sizeof context, fmt, ap);
    va_end(ap);
    /* Keep the more specific cause gathered by the failing layer (a
     * broker's message, a connection error) and wrap it. */
    if (c->detail[0] == '\0') {
        kappa_errmsg_printf(c->errmsg, "%s: %s", context, kappa_err_str(rv));
    } else {
        memcpy(c->errmsg, c->detail, sizeof c->errmsg);
        kappa_errmsg_wrap(c->errmsg, "%s", context);
    }
    return rv;
}

int client_resp_error(struct kappa_client *c, const struct kresp *resp)
{
    int rv = resp->h.error_code;
    if (resp->h.message != NULL && resp->h.message_len > 0) {
        kappa_errmsg_printf(c->detail, "%.*s", (int)resp->h.message_len,
                            resp->h.message);
    } else {
        kappa_errmsg_printf(c->detail, "%s", kappa_err_str(rv));
    }
    return rv;
}

/* ---- Configuration ------------------------------------------------------ */

struct kappa_conf *kappa_conf_new(void)
{
    struct kappa_conf *conf = kappa_calloc(1, sizeof *conf);
    if (conf == NULL) {
        return NULL;
    }
    snprintf(conf->client_id, sizeof conf->client_id, "libkappa");
    conf->acks = -1;
    conf->linger_ms = 5;
    conf->batch_bytes = 1024 * 1024;
    conf->compression = KAPPA_COMPRESSION_NONE;
    conf->max_in_flight = 5;
    conf->queue_max_bytes = 256u * 1024 * 1024;
    conf->request_timeout_ms = 30000;
    conf->message_timeout_ms = 30000;
    conf->retries = 5;
    conf->retry_backoff_ms = 100;
    conf->topic_propagation_ms = 1000;
    conf->fetch_max_wait_ms = 500;
    conf->fetch_min_bytes = 1;
    conf->fetch_max_bytes = 50 * 1024 * 1024;
    conf->fetch_partition_max_bytes = 1024 * 1024;
    conf->check_crcs = 1;
    return conf;
}

void kappa_conf_free(struct kappa_conf *conf)
{
    if (conf == NULL) {
        return;
    }
    kappa_free(conf->bootstrap_servers);
    kappa_free(conf);
}

static int parse_int(const char *v, long long lo, long long hi, long long *out)
{
    char *end;
    long long x;
    errno = 0;
    x = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || x < lo || x > hi) {
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_bool(const char *v, int *out)
{
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0) {
        *out = 1;
    } else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0) {
        *out = 0;
    } else {
        return -1;
    }
    return 0;
}

static int conf_set_enum(struct kappa_conf *conf, const char *key,
                         const char *value)
{
    if (strcmp(key, "acks") == 0) {
        if (strcmp(value, "all") == 0 || strcmp(value, "-1") == 0) {
            conf->acks = -1;
        } else if (strcmp(value, "0") == 0 || strcmp(value, "1") == 0) {
            conf->acks = value[0] - '0';
        } else {
            return -1;
        }
        return 0;
    }
    if (strcmp(value, "none") == 0) {
        conf->compression = KAPPA_COMPRESSION_NONE;
    } else if (strcmp(value, "lz4") == 0) {
        conf->compression = KAPPA_COMPRESSION_LZ4;
    } else if (strcmp(value, "zstd") == 0) {
        conf->compression = KAPPA_COMPRESSION_ZSTD;
    } else {
        return -1;
    }
    return 0;
}

/* Integer properties: name, bounds and where they go. */
struct conf_int {
    const char *key;
    long long lo, hi;
    size_t offset;
    int is_size;
};

#define CONF_INT(k, lo, hi, field)                                             \
    {                                                                          \
        k, lo, hi, offsetof(struct kappa_conf, field), 0                       \
    }
#define CONF_SIZE(k, lo, hi, field)                                            \
    {                                                                          \
        k, lo, hi, offsetof(struct kappa_conf, field), 1                       \
    }

static const struct conf_int conf_ints[] = {
    CONF_INT("linger.ms", 0, 900000, linger_ms),
    CONF_SIZE("batch.size", 1024, KAPPA_BATCH_BYTES_MAX, batch_bytes),
    CONF_INT("max.in.flight", 1, 1000, max_in_flight),
    CONF_SIZE("queue.buffering.max.bytes", 1024, 1ll << 40, queue_max_bytes),
    CONF_INT("request.timeout.ms", 1, 3600000, request_timeout_ms),
    CONF_INT("message.timeout.ms", 1, 3600000, message_timeout_ms),
    CONF_INT("retries", 0, 1000000, retries),
    CONF_INT("retry.backoff.ms", 1, 300000, retry_backoff_ms),
    CONF_INT("topic.metadata.propagation.max.ms", 0, 3600000,
             topic_propagation_ms),
    CONF_INT("fetch.max.wait.ms", 0, 300000, fetch_max_wait_ms),
    CONF_INT("fetch.min.bytes", 1, 1 << 30, fetch_min_bytes),
    CONF_INT("fetch.max.bytes", 1024, 1 << 30, fetch_max_bytes),
    CONF_INT("fetch.partition.max.bytes", 1024, 1 << 30,
             fetch_partition_max_bytes),
};

static int conf_set_int(struct kappa_conf *conf, const struct conf_int *ci,
                        const char *value)
{
    long long v;
    if (parse_int(value, ci->lo, ci->hi, &v) != 0) {
        return -1;
    }
    if (ci->is_size) {
        *(size_t *)((char *)conf + ci->offset) = (size_t)v;
    } else {
        *(int *)((char *)conf + ci->offset) = (int)v;
    }
    return 0;
}

int kappa_conf_set(struct kappa_conf *conf, const char *key, const char *value,
                   char *errstr, size_t errstr_size)
{
    int rv = -1;
    if (strcmp(key, "bootstrap.servers") == 0) {
        char *copy = kappa_strdup(value);
        if (copy == NULL) {
            snprintf(errstr, errstr_size, "out of memory");
            return KAPPA_ENOMEM;
        }
        kappa_free(conf->bootstrap_servers);
        conf->bootstrap_servers = copy;
        return 0;
    }
    if (strcmp(key, "client.id") == 0) {
        if (strlen(value) >= sizeof conf->client_id) {
            snprintf(errstr, errstr_size, "client.id: longer than %zu bytes",
                     sizeof conf->client_id - 1);
            return KAPPA_ECONFIG;
        }
        snprintf(conf->client_id, sizeof conf->client_id, "%s", value);
        return 0;
    }
    if (strcmp(key, "acks") == 0 || strcmp(key, "compression") == 0) {
        rv = conf_set_enum(conf, key, value);
    } else if (strcmp(key, "check.crcs") == 0) {
        rv = parse_bool(value, &conf->check_crcs);
    } else {
        size_t i;
        for (i = 0; i < sizeof conf_ints / sizeof conf_ints[0]; i++) {
            if (strcmp(key, conf_ints[i].key) == 0) {
                rv = conf_set_int(conf, &conf_ints[i], value);
                break;
            }
        }
        if (i == sizeof conf_ints / sizeof conf_ints[0]) {
            snprintf(errstr, errstr_size, "%s: unknown property", key);
            return KAPPA_ECONFIG;
        }
    }
    if (rv != 0) {
        snprintf(errstr, errstr_size, "%s: invalid value \"%.64s\"", key,
                 value);
        return KAPPA_ECONFIG;
    }
    return 0;
}

/* Parses "host:port[,host:port...]" into c->bootstrap. */
static int parse_bootstrap(struct kappa_client *c, const char *s, char *errstr,
                           size_t errstr_size)
{
    while (*s != '\0') {
        const char *end = strchr(s, ',');
        size_t len = end != NULL ? (size_t)(end - s) : strlen(s);
        char item[KCLIENT_HOST_MAX + 8];
        char *colon;
        long long port;
        if (len == 0 || len >= sizeof item ||
            c->n_bootstrap == KCLIENT_BOOTSTRAP_MAX) {
            goto bad;
        }
        memcpy(item, s, len);
        item[len] = '\0';
        colon = strrchr(item, ':');
        if (colon == NULL || colon == item ||
            parse_int(colon + 1, 1, 65535, &port) != 0) {
            goto bad;
        }
        if ((size_t)(colon - item) >= KCLIENT_HOST_MAX) {
            goto bad;
        }
        memcpy(c->bootstrap[c->n_bootstrap].host, item, (size_t)(colon - item));
        c->bootstrap[c->n_bootstrap].host[colon - item] = '\0';
        c->bootstrap[c->n_bootstrap].port = (int)port;
        c->bootstrap[c->n_bootstrap].id = -1;
        c->n_bootstrap++;
        s += len;
        if (*s == ',') {
            s++;
        }
    }
    if (c->n_bootstrap > 0) {
        return 0;
    }
bad:
    snprintf(errstr, errstr_size,
             "bootstrap.servers: expected host:port[,host:port...]");
    return KAPPA_ECONFIG;
}

/* ---- Loop and timers ---------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    struct kappa_client *c = t->data;
    uint64_t now = client_now_ms();
    for (unsigned i = 0; i < c->n_conns; i++) {
        conn_tick(c->conns[i], now);
    }
    metadata_tick(c, now);
    producer_tick(c, now);
    consumer_kick(c);
}

static void on_wake(uv_timer_t *t)
{
    (void)t;
}

static void on_linger(uv_timer_t *t)
{
    struct kappa_client *c = t->data;
    producer_tick(c, client_now_ms());
}

void client_linger_arm(struct kappa_client *c, uint64_t delay_ms)
{
    if (uv_is_active((uv_handle_t *)&c->linger_timer) &&
        uv_timer_get_due_in(&c->linger_timer) <= delay_ms) {
        return;
    }
    (void)uv_timer_start(&c->linger_timer, on_linger, delay_ms, 0);
}

int client_wait(struct kappa_client *c, client_done_fn done, void *arg,
                int timeout_ms)
{
    uint64_t deadline =
        timeout_ms < 0 ? UINT64_MAX : client_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now;
        if (done != NULL && done(c, arg)) {
            break;
        }
        now = client_now_ms();
        if (now >= deadline) {
            return done != NULL ? KAPPA_ETIMEDOUT : 0;
        }
        if (deadline != UINT64_MAX) {
            (void)uv_timer_start(&c->wake_timer, on_wake, deadline - now, 0);
        }
        uv_run(&c->loop, UV_RUN_ONCE);
        client_clock_expire(c);
    }
    (void)uv_timer_stop(&c->wake_timer);
    return 0;
}

static void timer_init(struct kappa_client *c, uv_timer_t *t)
{
    KAPPA_ASSERT(uv_timer_init(&c->loop, t) == 0);
    t->data = c;
    c->n_handles_open++;
}

int kappa_client_new(struct kappa_conf *conf, struct kappa_client **out,
                     char *errstr, size_t errstr_size)
{
    struct kappa_client *c;
    int rv;

    *out = NULL;
    if (conf == NULL) {
        snprintf(errstr, errstr_size, "no configuration");
        return KAPPA_ECONFIG;
    }
    c = kappa_calloc(1, sizeof *c);
    if (c == NULL) {
        kappa_conf_free(conf);
        snprintf(errstr, errstr_size, "out of memory");
        return KAPPA_ENOMEM;
    }
    c->conf = *conf;
    kappa_free(conf); /* the bootstrap string now belongs to c->conf */
    if (c->conf.bootstrap_servers == NULL) {
        snprintf(errstr, errstr_size, "bootstrap.servers: not set");
        rv = KAPPA_ECONFIG;
        goto err_after_alloc;
    }
    rv = parse_bootstrap(c, c->conf.bootstrap_servers, errstr, errstr_size);
    if (rv != 0) {
        goto err_after_alloc;
    }
    if (uv_loop_init(&c->loop) != 0) {
        snprintf(errstr, errstr_size, "uv_loop_init failed");
        rv = KAPPA_ENOMEM;
        goto err_after_alloc;
    }
    c->controller = -1;
    c->rng = (uint32_t)uv_hrtime() | 1u;
    c->next_correlation_id = 1;
    c->frame_max_bytes =
        (uint32_t)c->conf.fetch_max_bytes + KAPPA_BATCH_BYTES_MAX + 1024 * 1024;
    timer_init(c, &c->tick_timer);
    timer_init(c, &c->wake_timer);
    timer_init(c, &c->linger_timer);
    (void)uv_timer_start(&c->tick_timer, on_tick, KCLIENT_TICK_MS,
                         KCLIENT_TICK_MS);
    *out = c;
    return 0;

err_after_alloc:
    kappa_free(c->conf.bootstrap_servers);
    kappa_free(c);
    return rv;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct kappa_client *c = h->data;
    c->n_handles_open--;
}

void kappa_client_free(struct kappa_client *c)
{
    if (c == NULL) {
        return;
    }
    c->is_closing = 1;
    for (unsigned i = 0; i < c->n_conns; i++) {
        conn_fail(c->conns[i], KAPPA_ECANCELED, "client closing");
    }
    producer_cancel_all(c);
    for (unsigned i = 0; i < c->n_conns; i++) {
        conn_close(c->conns[i]);
    }
    c->n_conns = 0;
    uv_close((uv_handle_t *)&c->tick_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->wake_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->linger_timer, on_handle_closed);
    while (c->n_handles_open > 0) {
        uv_run(&c->loop, UV_RUN_ONCE);
    }
    KAPPA_ASSERT(uv_loop_close(&c->loop) == 0);
    consumer_free(c);
    producer_free(c);
    metadata_free(c);
    kappa_free(c->conf.bootstrap_servers);
    kappa_free(c);
}

const char *kappa_last_error(const struct kappa_client *c)
{
    return c == NULL ? "no client" : c->errmsg;
}
