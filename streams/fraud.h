/* Example job 3, fraud detection: per card, a transaction is flagged when
 * the card made more than N transactions, or spent more than X, within T
 * minutes up to and including it, or used another country within the hour
 * before it; with the deterministic generator that tests use as the
 * reference. */
#ifndef KAPPA_STREAMS_FRAUD_H
#define KAPPA_STREAMS_FRAUD_H

#include <stddef.h>
#include <stdint.h>

#include <kappa/streams.h>

/* Generator shape: one transaction every FRAUD_STEP_MS from FRAUD_BASE_MS
 * (event time = arrival: a card's transactions are in time order).
 * Transactions come in blocks of FRAUD_BLOCK: 2% of the blocks are a burst
 * of one card, the others go to random cards among FRAUD_CARDS. Amounts
 * (integer cents) are 1-200 units, 1% are 1,500-3,000 units; a card has a
 * home country, 0.5% of its transactions happen in another. */
#define FRAUD_BASE_MS     1700000000000LL
#define FRAUD_STEP_MS     200
#define FRAUD_BLOCK       8
#define FRAUD_CARDS       2000
#define FRAUD_HOUR_MS     3600000LL
#define FRAUD_HISTORY_MAX 64 /* transactions of a card kept (last hour) */

struct fraud_event {
    int64_t id;
    int64_t ts_ms;
    char card[8];
    int64_t amount_cents;
    char country[3];
};

struct fraud_rules {
    int max_txns;             /* N: flagged above it (default 5) */
    int64_t max_amount_cents; /* X: flagged above it (default 200000) */
    int64_t window_ms;        /* T (default 10 min, at most an hour) */
};

void fraud_rules_default(struct fraud_rules *r);
/* Event i of the stream with this seed: a pure function. */
void fraud_event(uint64_t seed, int64_t i, struct fraud_event *ev);
/* {"id":..,"ts":..,"card":"c0042","amount":1234,"country":"DE"} into out
 * (256 bytes); returns the length. */
size_t fraud_encode(const struct fraud_event *ev, char *out);

/* Builds the job: a keyed processor (key: card) writing the flagged
 * transactions into NAME_flagged (value: JSON with id, card, ts, amount,
 * country and "reasons": "count", "amount", "country", comma-separated),
 * plus the view NAME_flagged_txns with those fields as columns. rules is
 * borrowed until kappa_job_free. */
int fraud_job_new(const char *name, const char *topic, const char *db_path,
                  const struct fraud_rules *rules, struct kappa_job **out);
/* The reasons for flagging transaction ev given the card's earlier
 * transactions hist[0..n) (any order, only those of the last hour count):
 * "count,amount,country" or a subset, "" when not flagged. Used by the job
 * and, with the full history, by tests. out has 32 bytes. */
void fraud_reasons(const struct fraud_rules *rules,
                   const struct fraud_event *ev, const struct fraud_event *hist,
                   size_t n, char *out);

/* Produces events [0, n) into topic (keyed by card). */
int fraud_generate(const char *bootstrap, const char *topic, int64_t n,
                   uint64_t seed, int32_t n_partitions, char *errmsg);

#endif /* KAPPA_STREAMS_FRAUD_H */
