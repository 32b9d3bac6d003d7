/* Producer side of kappa-bench: open-loop or rate-limited produce with a
 * latency per record measured from its intended send time.
 *
 * Happy path: bench_producer_run gives record i the intended send time
 * start + i / rate (or the time of the kappa_produce call at maximum rate),
 * passes that time as the delivery opaque, and hands kappa_produce the next
 * slice of a pre-generated random buffer. Between bursts it calls
 * kappa_poll; when ahead of schedule it waits in kappa_poll (or sleeps at
 * most WAIT_SLEEP_NS_MAX when the gap is under a millisecond). The delivery
 * callback records now - intended. At the end kappa_flush waits for the
 * last reports.
 *
 * Because latency starts at the intended time, a stall (broker, fsync, a
 * full client queue) is charged to every record that should have been sent
 * during it: no coordinated omission.
 *
 * Failure modes: KAPPA_EBUSY (client queue full) polls and retries the same
 * record; any other produce error stops the run; delivery errors are counted
 * and left out of the latency; a flush without any delivery for
 * BENCH_TIMEOUT_MS stops the run. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* The delivery opaque carries a 64-bit timestamp. */
_Static_assert(sizeof(uintptr_t) >= sizeof(int64_t),
               "kappa-bench needs 64-bit pointers");

/* Random payload: slices rotate through this many bytes at least, so a
 * batch never holds the same bytes twice and compression gains nothing. */
#define PAYLOAD_BUF_BYTES_MIN (16 * 1024 * 1024)
/* Records produced between two kappa_poll calls at most. */
#define BURST_MAX 1024
/* Longest sleep outside kappa_poll when ahead of schedule. */
#define WAIT_SLEEP_NS_MAX 100000
/* Poll timeout while the client queue is full. */
#define BUSY_POLL_MS 1
/* Reading the clock costs 30-100 ns in this VM, as much as producing a
 * record: at 1.7 M records/s, one reading per send and one per delivery
 * report took 22% of the benchmark's core (perf). So a reading serves up to
 * CLOCK_REUSE_MAX sends of one burst, or up to CLOCK_REUSE_MAX reports with
 * consecutive offsets (the reports of one response run in one tight loop
 * of the client). The error is a few microseconds. */
#define CLOCK_REUSE_MAX 32

struct clock_cache {
    int64_t now_ns;
    int n_uses; /* CLOCK_REUSE_MAX: read the clock next time */
};

struct bench_producer {
    const struct bench_opts *o;
    struct kappa_client *client;
    const struct bench_consumer
        *watch;         /* e2e consumer, for progress; or NULL */
    unsigned char *buf; /* random bytes, buf_bytes long */
    size_t buf_bytes;
    size_t buf_offset;      /* start of the next slice */
    unsigned char *scratch; /* stamped value, record_bytes long; or NULL */
    int64_t start_ns;
    int64_t measure_ns; /* start + warmup */
    int64_t n_sent;
    int64_t n_delivered; /* reports, with errors */
    int64_t n_errors;
    int64_t n_measured;            /* acks received after the warmup */
    int64_t last_ns;               /* last of those */
    struct clock_cache send_clock; /* max rate: intended send times */
    struct clock_cache ack_clock;  /* delivery reports */
    int32_t last_partition;        /* of the previous report */
    int64_t last_offset;
    _Atomic int64_t n_acked;
    int first_err;
    struct bench_hist hist;
};

/* xorshift64*: fast, and random enough that lz4 and zstd cannot shrink the
 * data. Fixed seed so runs see the same bytes. */
static void fill_random(unsigned char *buf, size_t n)
{
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < n; i += sizeof(x)) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        uint64_t v = x * 0x2545f4914f6cdd1dULL;
        size_t len = n - i < sizeof(v) ? n - i : sizeof(v);
        memcpy(buf + i, &v, len);
    }
}

static int64_t clock_read(struct clock_cache *c)
{
    if (c->n_uses >= CLOCK_REUSE_MAX) {
        c->now_ns = bench_now_ns();
        c->n_uses = 0;
    }
    c->n_uses++;
    return c->now_ns;
}

static void clock_invalidate(struct clock_cache *c)
{
    c->n_uses = CLOCK_REUSE_MAX;
}

struct bench_producer *bench_producer_new(const struct bench_opts *o,
                                          struct kappa_client *c,
                                          int is_stamped)
{
    struct bench_producer *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return NULL;
    }
    p->o = o;
    p->client = c;
    bench_hist_init(&p->hist);
    clock_invalidate(&p->send_clock);
    clock_invalidate(&p->ack_clock);
    size_t batch = o->batch_bytes > 0 ? (size_t)o->batch_bytes : 1 << 20;
    p->buf_bytes = PAYLOAD_BUF_BYTES_MIN;
    if (p->buf_bytes < 2 * batch + o->record_bytes) {
        p->buf_bytes = 2 * batch + o->record_bytes;
    }
    if (p->buf_bytes < 4 * o->record_bytes) {
        p->buf_bytes = 4 * o->record_bytes;
    }
    p->buf = malloc(p->buf_bytes);
    if (p->buf == NULL) {
        goto err_after_alloc;
    }
    fill_random(p->buf, p->buf_bytes);
    if (is_stamped) {
        p->scratch = malloc(o->record_bytes);
        if (p->scratch == NULL) {
            goto err_after_buf;
        }
    }
    return p;

err_after_buf:
    free(p->buf);
err_after_alloc:
    free(p);
    return NULL;
}

void bench_producer_free(struct bench_producer *p)
{
    if (p == NULL) {
        return;
    }
    free(p->scratch);
    free(p->buf);
    free(p);
}

void bench_producer_set_start(struct bench_producer *p, int64_t start_ns)
{
    p->start_ns = start_ns;
}

void bench_producer_watch(struct bench_producer *p,
                          const struct bench_consumer *k)
{
    p->watch = k;
}

int64_t bench_producer_acked(const struct bench_producer *p)
{
    return atomic_load(&p->n_acked);
}

/* kappa_poll, after which delivery reports need a fresh clock reading. */
static void poll_client(struct bench_producer *p, int timeout_ms)
{
    clock_invalidate(&p->ack_clock);
    kappa_poll(p->client, timeout_ms);
}

static void on_delivery(const struct kappa_delivery *d, void *arg)
{
    struct bench_producer *p = arg;
    if (d->offset < 0 || d->partition != p->last_partition ||
        d->offset != p->last_offset + 1) {
        clock_invalidate(&p->ack_clock);
    }
    p->last_partition = d->partition;
    p->last_offset = d->offset;
    int64_t now = clock_read(&p->ack_clock);
    int64_t intended = (int64_t)(uintptr_t)d->opaque;
    p->n_delivered++;
    if (d->err != 0) {
        if (p->n_errors++ == 0) {
            p->first_err = d->err;
            bench_err("delivery to %s/%d failed: %s (further errors counted)",
                      d->topic != NULL ? d->topic : "?", (int)d->partition,
                      kappa_err_name(d->err));
        }
        return;
    }
    atomic_fetch_add(&p->n_acked, 1);
    /* Throughput counts acks received in the window; latency counts records
     * meant to be sent in it (so the warmup backlog does not count). */
    if (now >= p->measure_ns) {
        p->n_measured++;
        p->last_ns = now;
    }
    if (intended >= p->measure_ns) {
        bench_hist_record(&p->hist, now - intended);
    }
}

/* The next value: a slice of the random buffer, stamped in e2e mode. */
static const void *next_value(struct bench_producer *p, int64_t intended_ns)
{
    size_t size = p->o->record_bytes;
    if (p->buf_offset + size > p->buf_bytes) {
        p->buf_offset = 0;
    }
    const unsigned char *slice = p->buf + p->buf_offset;
    p->buf_offset += size;
    if (p->scratch == NULL) {
        return slice;
    }
    memcpy(p->scratch, slice, size);
    memcpy(p->scratch, &intended_ns, sizeof(intended_ns));
    return p->scratch;
}

static int64_t intended_ns(struct bench_producer *p, int64_t i)
{
    if (p->o->rate_per_s <= 0) {
        return clock_read(&p->send_clock);
    }
    return p->start_ns + (int64_t)((double)i * 1e9 / p->o->rate_per_s);
}

/* Produces record n_sent. Returns 0, KAPPA_EBUSY (client queue full: poll
 * and call again; the intended time stays the same at a target rate) or
 * another error (printed). */
static int produce_one(struct bench_producer *p)
{
    int64_t intended = intended_ns(p, p->n_sent);
    struct kappa_msg m = {
        .topic = p->o->topic,
        .partition = KAPPA_PARTITION_ANY,
        .value = next_value(p, intended),
        .value_len = p->o->record_bytes,
        .opaque = (void *)(uintptr_t)intended,
    };
    clock_invalidate(&p->ack_clock); /* in case kappa_produce reports */
    int rv = kappa_produce(p->client, &m);
    if (rv == 0) {
        p->n_sent++;
    } else if (rv != KAPPA_EBUSY) {
        bench_err("produce record %lld: %s: %s", (long long)p->n_sent,
                  kappa_err_name(rv), kappa_last_error(p->client));
    }
    return rv;
}

/* Number of records that should have been sent by now (bounded by the
 * burst size and n_records). */
static int64_t due_count(const struct bench_producer *p, int64_t now_ns,
                         int64_t n_records)
{
    int64_t due = p->n_sent + BURST_MAX;
    if (p->o->rate_per_s > 0) {
        double elapsed_s = (double)(now_ns - p->start_ns) / 1e9;
        int64_t on_time = (int64_t)(elapsed_s * p->o->rate_per_s) + 1;
        if (on_time < due) {
            due = on_time;
        }
    }
    if (n_records > 0 && due > n_records) {
        due = n_records;
    }
    return due;
}

/* Waits for the intended time of the next record, serving I/O meanwhile. */
static void wait_next(struct bench_producer *p, int64_t stop_ns)
{
    int64_t target = intended_ns(p, p->n_sent);
    for (;;) {
        int64_t now = bench_now_ns();
        int64_t gap = target - now;
        if (gap <= 0 || now >= stop_ns || bench_stop) {
            return;
        }
        if (gap >= 2 * BENCH_NS_PER_MS) {
            poll_client(p, (int)(gap / BENCH_NS_PER_MS) - 1);
            continue;
        }
        poll_client(p, 0);
        struct timespec ts = {
            .tv_sec = 0,
            .tv_nsec = gap < WAIT_SLEEP_NS_MAX ? gap : WAIT_SLEEP_NS_MAX,
        };
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !bench_stop) {
        }
    }
}

static void progress(struct bench_producer *p, struct bench_progress *prog)
{
    int64_t now = bench_now_ns();
    if (!bench_progress_is_due(prog, now)) {
        return;
    }
    char extra[160];
    char a[32];
    char b[32];
    char d[32];
    int len = snprintf(
        extra, sizeof(extra), "sent %s  outq %s  errors %s",
        bench_fmt_count(a, sizeof(a), p->n_sent),
        bench_fmt_count(b, sizeof(b), (int64_t)kappa_outq_len(p->client)),
        bench_fmt_count(d, sizeof(d), p->n_errors));
    if (p->watch != NULL && len > 0 && (size_t)len < sizeof(extra)) {
        snprintf(extra + len, sizeof(extra) - (size_t)len, "  consumed %s",
                 bench_fmt_count(a, sizeof(a), bench_consumer_count(p->watch)));
    }
    bench_progress_tick(prog, now, bench_producer_acked(p), p->o->record_bytes,
                        extra);
}

/* Flushes until every record has its report, giving up after
 * BENCH_TIMEOUT_MS without a new one. */
static int flush_all(struct bench_producer *p, struct bench_progress *prog)
{
    int64_t last_change_ns = bench_now_ns();
    int64_t last_delivered = p->n_delivered;
    while (kappa_outq_len(p->client) > 0) {
        clock_invalidate(&p->ack_clock);
        int rv = kappa_flush(p->client, 200);
        if (rv != 0 && rv != KAPPA_ETIMEDOUT) {
            bench_err("flush: %s: %s", kappa_err_name(rv),
                      kappa_last_error(p->client));
            return rv;
        }
        progress(p, prog);
        int64_t now = bench_now_ns();
        if (p->n_delivered != last_delivered) {
            last_delivered = p->n_delivered;
            last_change_ns = now;
        } else if (now - last_change_ns > BENCH_TIMEOUT_MS * BENCH_NS_PER_MS) {
            bench_err("flush: no delivery report for %d s, %zu outstanding",
                      BENCH_TIMEOUT_MS / 1000, kappa_outq_len(p->client));
            return KAPPA_ETIMEDOUT;
        }
    }
    return 0;
}

int bench_producer_run(struct bench_producer *p, int64_t n_records,
                       int is_quiet)
{
    const struct bench_opts *o = p->o;
    struct bench_progress prog;
    kappa_set_delivery_cb(p->client, on_delivery, p);
    if (p->start_ns == 0) {
        p->start_ns = bench_now_ns();
    }
    p->measure_ns = p->start_ns + (int64_t)(o->warmup_s * 1e9);
    int64_t stop_ns = INT64_MAX;
    if (o->duration_s > 0) {
        stop_ns = p->measure_ns + (int64_t)(o->duration_s * 1e9);
    }
    bench_progress_init(&prog, is_quiet ? NULL : "produce", p->start_ns);
    while (!bench_stop && (n_records == 0 || p->n_sent < n_records)) {
        int64_t now = bench_now_ns();
        if (now >= stop_ns) {
            break;
        }
        int64_t due = due_count(p, now, n_records);
        int rv = 0;
        clock_invalidate(&p->send_clock);
        while (p->n_sent < due && (rv = produce_one(p)) == 0) {
        }
        if (rv != 0 && rv != KAPPA_EBUSY) {
            return rv;
        }
        poll_client(p, rv == KAPPA_EBUSY ? BUSY_POLL_MS : 0);
        progress(p, &prog);
        if (o->rate_per_s > 0 && rv == 0) {
            wait_next(p, stop_ns);
        }
    }
    return flush_all(p, &prog);
}

void bench_producer_result(const struct bench_producer *p,
                           struct bench_result *r)
{
    r->mode = "produce";
    r->record_bytes = p->o->record_bytes;
    r->n_records = p->n_measured;
    r->n_bytes = p->n_measured * (int64_t)p->o->record_bytes;
    r->seconds = 0;
    if (p->n_measured > 0) {
        r->seconds = (double)(p->last_ns - p->measure_ns) / 1e9;
    }
    r->n_errors = p->n_errors;
    r->latency = &p->hist;
    r->latency_label = "intended send -> ack";
    r->ack_latency = NULL;
}
