/* Fraud detection example job and its generator (see fraud.h).
 *
 * The job is one keyed processor: the state of a card is its transactions
 * of the last hour, at most FRAUD_HISTORY_MAX (the oldest go first), each
 * 18 bytes, little-endian:
 *
 *   0  i64 ts_ms    8  i64 amount_cents    16  2 bytes country
 *
 * A state whose length is not a multiple of 18 is corrupt: the event then
 * counts as malformed and the state starts over. */
#include "fraud.h"

#include <stdio.h>
#include <string.h>

#include "gen.h"

#define ENTRY_BYTES 18

static const char *const COUNTRIES[] = {"DE", "FR", "US", "GB",
                                        "ES", "IT", "NL", "SE"};

void fraud_rules_default(struct fraud_rules *r)
{
    r->max_txns = 5;
    r->max_amount_cents = 200000;
    r->window_ms = 600000;
}

void fraud_event(uint64_t seed, int64_t i, struct fraud_event *ev)
{
    uint64_t block = gen_mix(seed ^ (0xF4A0Dull + (uint64_t)(i / FRAUD_BLOCK)));
    uint64_t r = gen_mix(seed ^ ((uint64_t)i * 0x9E37ull + 1));
    int is_burst = block % 50 == 0;
    unsigned card = is_burst ? (unsigned)((block >> 8) % FRAUD_CARDS)
                             : (unsigned)(r % FRAUD_CARDS);
    uint64_t home = gen_mix(seed ^ (0xCA4Dull + card)) % 8;

    memset(ev, 0, sizeof *ev);
    ev->id = i;
    ev->ts_ms = FRAUD_BASE_MS + i * FRAUD_STEP_MS;
    snprintf(ev->card, sizeof ev->card, "c%04u", card);
    ev->amount_cents = (r >> 16) % 100 == 0
                           ? 150000 + (int64_t)((r >> 24) % 150001)
                           : 100 + (int64_t)((r >> 24) % 19901);
    if ((r >> 40) % 200 == 0) {
        home = (home + 1 + (r >> 48) % 7) % 8;
    }
    snprintf(ev->country, sizeof ev->country, "%s", COUNTRIES[home]);
}

size_t fraud_encode(const struct fraud_event *ev, char *out)
{
    int n = snprintf(out, 256,
                     "{\"id\":%lld,\"ts\":%lld,\"card\":\"%s\",\"amount\":%lld,"
                     "\"country\":\"%s\"}",
                     (long long)ev->id, (long long)ev->ts_ms, ev->card,
                     (long long)ev->amount_cents, ev->country);
    return n > 0 && n < 256 ? (size_t)n : 0;
}

void fraud_reasons(const struct fraud_rules *rules,
                   const struct fraud_event *ev, const struct fraud_event *hist,
                   size_t n, char *out)
{
    int64_t count = 1, amount = ev->amount_cents;
    int other_country = 0;

    for (size_t k = 0; k < n; k++) {
        const struct fraud_event *h = &hist[k];
        if (h->ts_ms >= ev->ts_ms - rules->window_ms && h->ts_ms <= ev->ts_ms) {
            count++;
            amount += h->amount_cents;
        }
        if (h->ts_ms >= ev->ts_ms - FRAUD_HOUR_MS && h->ts_ms <= ev->ts_ms &&
            strcmp(h->country, ev->country) != 0) {
            other_country = 1;
        }
    }
    snprintf(out, 32, "%s%s%s%s%s", count > rules->max_txns ? "count" : "",
             count > rules->max_txns &&
                     (amount > rules->max_amount_cents || other_country)
                 ? ","
                 : "",
             amount > rules->max_amount_cents ? "amount" : "",
             amount > rules->max_amount_cents && other_country ? "," : "",
             other_country ? "country" : "");
}

static void put_le64(uint8_t *p, int64_t v)
{
    for (int k = 0; k < 8; k++) {
        p[k] = (uint8_t)((uint64_t)v >> (8 * k));
    }
}

static int64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int k = 0; k < 8; k++) {
        v |= (uint64_t)p[k] << (8 * k);
    }
    return (int64_t)v;
}

/* The event's fields; 0 or KAPPA_EINVAL. */
static int read_event(const struct kappa_event *ev, int64_t t,
                      struct fraud_event *fe)
{
    struct kappa_field f;
    memset(fe, 0, sizeof *fe);
    fe->ts_ms = t;
    if (kappa_stream_field(KAPPA_FORMAT_JSON, ev->value, ev->value_len, "id",
                           &f) != 0 ||
        f.type != KAPPA_FIELD_INT) {
        return KAPPA_EINVAL;
    }
    fe->id = f.i;
    if (kappa_stream_field(KAPPA_FORMAT_JSON, ev->value, ev->value_len,
                           "amount", &f) != 0 ||
        f.type != KAPPA_FIELD_INT) {
        return KAPPA_EINVAL;
    }
    fe->amount_cents = f.i;
    if (kappa_stream_field(KAPPA_FORMAT_JSON, ev->value, ev->value_len,
                           "country", &f) != 0 ||
        f.type != KAPPA_FIELD_STRING || f.str_len != 2) {
        return KAPPA_EINVAL;
    }
    memcpy(fe->country, f.str, 2);
    if (ev->key == NULL || ev->key_len == 0 || ev->key_len >= sizeof fe->card) {
        return KAPPA_EINVAL;
    }
    memcpy(fe->card, ev->key, ev->key_len);
    return 0;
}

static int process(const struct kappa_event *ev, int64_t t,
                   struct kappa_proc *p, void *arg)
{
    const struct fraud_rules *rules = arg;
    struct fraud_event fe, hist[FRAUD_HISTORY_MAX] = {0};
    uint8_t state[FRAUD_HISTORY_MAX * ENTRY_BYTES];
    const uint8_t *old;
    size_t old_len, n = 0, len = 0;
    char reasons[32], row[512];
    int rv = read_event(ev, t, &fe);

    if (rv != 0) {
        return rv;
    }
    kappa_proc_state(p, (const void **)&old, &old_len);
    if (old_len % ENTRY_BYTES != 0 ||
        old_len > FRAUD_HISTORY_MAX * ENTRY_BYTES) {
        old_len = 0; /* corrupt: start over */
        rv = KAPPA_ECORRUPT;
    }
    for (size_t k = 0; k < old_len / ENTRY_BYTES; k++) {
        const uint8_t *e = old + k * ENTRY_BYTES;
        struct fraud_event *h = &hist[n];
        memset(h, 0, sizeof *h);
        h->ts_ms = get_le64(e);
        h->amount_cents = get_le64(e + 8);
        memcpy(h->country, e + 16, 2);
        n += h->ts_ms >= t - FRAUD_HOUR_MS; /* older ones are dropped */
    }
    fraud_reasons(rules, &fe, hist, n, reasons);
    if (reasons[0] != '\0') {
        int m = snprintf(row, sizeof row,
                         "{\"id\":%lld,\"card\":\"%s\",\"ts\":%lld,"
                         "\"amount\":%lld,\"country\":\"%s\","
                         "\"reasons\":\"%s\"}",
                         (long long)fe.id, fe.card, (long long)fe.ts_ms,
                         (long long)fe.amount_cents, fe.country, reasons);
        int erv = m < 0 || (size_t)m >= sizeof row
                      ? KAPPA_ETOOBIG /* card ids are bounded; never here */
                      : kappa_proc_emit(p, row, (size_t)m);
        if (erv != 0) {
            return erv;
        }
    }
    /* The new history: the kept ones (oldest dropped past the limit), then
     * this transaction. */
    for (size_t k = n == FRAUD_HISTORY_MAX ? 1 : 0; k < n; k++) {
        put_le64(state + len, hist[k].ts_ms);
        put_le64(state + len + 8, hist[k].amount_cents);
        memcpy(state + len + 16, hist[k].country, 2);
        len += ENTRY_BYTES;
    }
    put_le64(state + len, fe.ts_ms);
    put_le64(state + len + 8, fe.amount_cents);
    memcpy(state + len + 16, fe.country, 2);
    len += ENTRY_BYTES;
    int srv = kappa_proc_set_state(p, state, len);
    return srv != 0 ? srv : rv;
}

int fraud_job_new(const char *name, const char *topic, const char *db_path,
                  const struct fraud_rules *rules, struct kappa_job **out)
{
    char table[KAPPA_JOB_NAME_MAX + 1], view[KAPPA_JOB_NAME_MAX + 1];
    char sql[512];
    struct kappa_job *job;
    int rv;

    snprintf(table, sizeof table, "%s_flagged", name);
    snprintf(view, sizeof view, "%s_flagged_txns", name);
    snprintf(sql, sizeof sql,
             "SELECT json_extract(value, '$.id') AS id, key AS card,"
             " event_ms AS ts, json_extract(value, '$.amount') AS amount,"
             " json_extract(value, '$.country') AS country,"
             " json_extract(value, '$.reasons') AS reasons FROM {%s}",
             table);
    *out = NULL;
    if (rules->window_ms <= 0 || rules->window_ms > FRAUD_HOUR_MS ||
        rules->max_txns < 1 || rules->max_txns >= FRAUD_HISTORY_MAX) {
        return KAPPA_EINVAL;
    }
    rv = kappa_job_new(name, KAPPA_FORMAT_JSON, &job);
    if (rv != 0) {
        return rv;
    }
    rv = kappa_job_add_source(job, topic, NULL, 0);
    if (rv == 0) {
        rv = kappa_job_set_time_field(job, "ts");
    }
    if (rv == 0) {
        rv = kappa_job_add_processor(job, table, NULL, process, (void *)rules);
    }
    if (rv == 0) {
        rv = kappa_job_add_view(job, view, sql);
    }
    if (rv == 0) {
        rv = kappa_job_set_sqlite(job, db_path, 0);
    }
    if (rv != 0) {
        kappa_job_free(job);
        return rv;
    }
    *out = job;
    return 0;
}

static void gen_one(int64_t i, struct gen_event *ev, void *arg)
{
    struct fraud_event f;
    fraud_event(*(const uint64_t *)arg, i, &f);
    snprintf(ev->key, sizeof ev->key, "%s", f.card);
    ev->value_len = fraud_encode(&f, (char *)ev->value);
    ev->timestamp_ms = f.ts_ms;
}

int fraud_generate(const char *bootstrap, const char *topic, int64_t n,
                   uint64_t seed, int32_t n_partitions, char *errmsg)
{
    return gen_produce(bootstrap, topic, n_partitions, n, gen_one, &seed,
                       errmsg);
}
