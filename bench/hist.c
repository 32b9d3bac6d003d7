/* Log-linear latency histogram (see hist.h).
 *
 * Bucket layout, for SUB = 2^HIST_SUB_BITS:
 *
 *   index  0 .. SUB-1         value == index (exact)
 *   group g >= 1, sub s       values [(SUB + s) << (g-1), (SUB + s + 1) <<
 * (g-1)) index = g * SUB + s
 *
 * so a value v >= SUB with highest set bit m lands in group
 * g = m - HIST_SUB_BITS + 1 at sub-bucket (v >> (m - HIST_SUB_BITS)) - SUB.
 * Group 1 has width 1 and continues the exact range without a gap. */
#include "hist.h"

#include <math.h>
#include <string.h>

_Static_assert(HIST_MSB_MAX < 62, "bucket bounds must fit in int64_t");

void bench_hist_init(struct bench_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = INT64_MAX;
}

static int bucket_index(int64_t value)
{
    if (value < HIST_SUB) {
        return (int)value;
    }
    int msb = 63 - __builtin_clzll((unsigned long long)value);
    if (msb > HIST_MSB_MAX) {
        return HIST_BUCKETS - 1;
    }
    int shift = msb - HIST_SUB_BITS;
    return (shift + 1) * HIST_SUB + (int)(value >> shift) - HIST_SUB;
}

/* Highest value that maps to bucket index. */
static int64_t bucket_high(int index)
{
    int group = index >> HIST_SUB_BITS;
    int64_t sub = index & (HIST_SUB - 1);
    if (group == 0) {
        return sub;
    }
    int64_t low = (HIST_SUB + sub) << (group - 1);
    return low + ((int64_t)1 << (group - 1)) - 1;
}

void bench_hist_record(struct bench_hist *h, int64_t value)
{
    if (value < 0) {
        value = 0;
    }
    h->counts[bucket_index(value)]++;
    h->n_samples++;
    h->sum += (double)value;
    if (value < h->min) {
        h->min = value;
    }
    if (value > h->max) {
        h->max = value;
    }
}

void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
    for (int i = 0; i < HIST_BUCKETS; i++) {
        dst->counts[i] += src->counts[i];
    }
    dst->n_samples += src->n_samples;
    dst->sum += src->sum;
    if (src->min < dst->min) {
        dst->min = src->min;
    }
    if (src->max > dst->max) {
        dst->max = src->max;
    }
}

int64_t bench_hist_quantile(const struct bench_hist *h, double q)
{
    if (h->n_samples == 0) {
        return 0;
    }
    if (q < 0) {
        q = 0;
    }
    if (q > 1) {
        q = 1;
    }
    uint64_t rank = (uint64_t)ceil(q * (double)h->n_samples);
    if (rank == 0) {
        rank = 1;
    }
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            if (i == HIST_BUCKETS - 1) {
                return h->max; /* the overflow bucket */
            }
            int64_t high = bucket_high(i);
            return high < h->max ? high : h->max;
        }
    }
    return h->max;
}

double bench_hist_mean(const struct bench_hist *h)
{
    return h->n_samples == 0 ? 0.0 : h->sum / (double)h->n_samples;
}
