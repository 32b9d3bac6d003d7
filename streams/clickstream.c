/* Clickstream example job and its deterministic generator. */
#include "clickstream.h"

#include <stdio.h>
#include <string.h>

#include <msgpack.h>

#include "common/err.h"
#include "gen.h"

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static const char *const REFERRERS[] = {"search", "direct", "social", "mail"};

void clickstream_event(uint64_t seed, int64_t i, struct click_event *ev)
{
    uint64_t r1 = splitmix64(seed * 0x100000001B3ull ^ (uint64_t)i);
    uint64_t r2 = splitmix64(r1);
    uint64_t r3 = splitmix64(r2);
    uint64_t cls = r3 % 1000;
    int64_t delay;

    memset(ev, 0, sizeof *ev);
    ev->arrival_ms = CLICK_BASE_MS + i * CLICK_STEP_MS;
    snprintf(ev->user, sizeof ev->user, "u%u", (unsigned)(r1 % CLICK_USERS));
    /* A few popular pages and a long tail. */
    snprintf(ev->page, sizeof ev->page, "/p/%u",
             (unsigned)((r2 & 7) != 0 ? (r2 >> 8) % 20 : (r2 >> 8) % 200));
    ev->referrer = REFERRERS[(r1 >> 40) & 3];
    ev->duration_ms = (int32_t)((r2 >> 32) % 60000);
    if (i >= CLICK_WARMUP_EVENTS && cls < 10) {
        delay = 7200000 + (int64_t)((r3 >> 16) % 3600000);
        ev->is_late = 1;
    } else if (cls < 100) {
        delay = 2000 + (int64_t)((r3 >> 16) % 18000);
    } else {
        delay = (int64_t)((r3 >> 16) % 2000);
    }
    ev->ts_ms = ev->arrival_ms - delay;
}

/* msgpack-c writes into a fixed buffer of CLICK_VALUE_MAX bytes. */
struct fixed_out {
    uint8_t *p;
    size_t len;
    int overflow;
};

static int fixed_write(void *data, const char *p, size_t n)
{
    struct fixed_out *fo = data;
    if (fo->overflow || n > CLICK_VALUE_MAX - fo->len) {
        fo->overflow = 1;
        return -1;
    }
    memcpy(fo->p + fo->len, p, n);
    fo->len += n;
    return 0;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

size_t clickstream_encode(const struct click_event *ev,
                          enum kappa_stream_format format, uint8_t *out)
{
    if (format == KAPPA_FORMAT_JSON) {
        int n = snprintf((char *)out, CLICK_VALUE_MAX,
                         "{\"ts\":%lld,\"user\":\"%s\",\"page\":\"%s\","
                         "\"ref\":\"%s\",\"dur\":%d}",
                         (long long)ev->ts_ms, ev->user, ev->page, ev->referrer,
                         (int)ev->duration_ms);
        return n > 0 && n < CLICK_VALUE_MAX ? (size_t)n : 0;
    }
    struct fixed_out fo = {out, 0, 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &fo, fixed_write);
    msgpack_pack_map(&pk, 5);
    pack_str(&pk, "ts");
    msgpack_pack_int64(&pk, ev->ts_ms);
    pack_str(&pk, "user");
    pack_str(&pk, ev->user);
    pack_str(&pk, "page");
    pack_str(&pk, ev->page);
    pack_str(&pk, "ref");
    pack_str(&pk, ev->referrer);
    pack_str(&pk, "dur");
    msgpack_pack_int32(&pk, ev->duration_ms);
    return fo.overflow ? 0 : fo.len;
}

int clickstream_job_new(const char *name, enum kappa_stream_format format,
                        const char *topic, const char *db_path,
                        struct kappa_job **out)
{
    char views[KAPPA_JOB_NAME_MAX + 1], uv[KAPPA_JOB_NAME_MAX + 1];
    struct kappa_job *job;
    int rv;

    snprintf(views, sizeof views, "%s_page_views", name);
    snprintf(uv, sizeof uv, "%s_unique_visitors", name);
    struct kappa_agg_spec a1 = {
        .table = views,
        .kind = KAPPA_AGG_COUNT,
        .window = KAPPA_WINDOW_TUMBLING,
        .size_ms = CLICK_VIEWS_WINDOW_MS,
        .key_field = "page",
        .allowed_lateness_ms = CLICK_VIEWS_LATENESS_MS,
    };
    struct kappa_agg_spec a2 = {
        .table = uv,
        .kind = KAPPA_AGG_DISTINCT,
        .window = KAPPA_WINDOW_TUMBLING,
        .size_ms = CLICK_UV_WINDOW_MS,
        .key_constant = "all",
        .value_field = "user",
        .allowed_lateness_ms = CLICK_UV_LATENESS_MS,
    };

    *out = NULL;
    rv = kappa_job_new(name, format, &job);
    if (rv != 0) {
        return rv;
    }
    rv = kappa_job_add_source(job, topic, NULL, 0);
    if (rv == 0) {
        rv = kappa_job_set_time_field(job, "ts");
    }
    if (rv == 0) {
        rv = kappa_job_set_out_of_orderness(job, CLICK_OOO_MS);
    }
    if (rv == 0) {
        rv = kappa_job_add_aggregate(job, &a1);
    }
    if (rv == 0) {
        rv = kappa_job_add_aggregate(job, &a2);
    }
    if (rv == 0) {
        rv = kappa_job_set_sqlite(job, db_path, 1);
    }
    if (rv != 0) {
        kappa_job_free(job);
        return rv;
    }
    *out = job;
    return 0;
}

struct click_gen {
    uint64_t seed;
    enum kappa_stream_format format;
};

_Static_assert(CLICK_VALUE_MAX <= GEN_VALUE_MAX, "a click fits a gen event");
_Static_assert(sizeof(((struct click_event *)0)->user) <= GEN_KEY_MAX,
               "a user id fits a gen key");

static void click_gen_event(int64_t i, struct gen_event *ev, void *arg)
{
    const struct click_gen *cg = arg;
    struct click_event click;
    clickstream_event(cg->seed, i, &click);
    memcpy(ev->key, click.user, sizeof click.user);
    ev->value_len = clickstream_encode(&click, cg->format, ev->value);
    ev->timestamp_ms = click.arrival_ms;
}

int clickstream_generate(const char *bootstrap, const char *topic, int64_t n,
                         uint64_t seed, enum kappa_stream_format format,
                         int32_t n_partitions, char *errmsg)
{
    struct click_gen cg = {seed, format};
    return gen_produce(bootstrap, topic, n_partitions, n, click_gen_event, &cg,
                       errmsg);
}
