/* Latency histogram with HDR-style log-linear buckets: fixed memory, O(1)
 * recording, about 0.8% relative error, no allocation per sample. */
#ifndef KAPPA_BENCH_HIST_H
#define KAPPA_BENCH_HIST_H

#include <stdint.h>

/* Values below 2^HIST_SUB_BITS are kept exactly; above, every power of two
 * is split into 2^HIST_SUB_BITS linear buckets (HdrHistogram's layout with
 * two significant binary digits of 7 bits). Values whose highest set bit is
 * above HIST_MSB_MAX (2^43 ns, about 2.4 hours) land in the last bucket; the
 * exact maximum is tracked separately. */
#define HIST_SUB_BITS 7
#define HIST_SUB      (1 << HIST_SUB_BITS)
#define HIST_MSB_MAX  43
#define HIST_BUCKETS  ((HIST_MSB_MAX - HIST_SUB_BITS + 2) * HIST_SUB)

struct bench_hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t n_samples;
    int64_t min;
    int64_t max;
    double sum;
};

void bench_hist_init(struct bench_hist *h);
/* Records one value (nanoseconds in kappa-bench); negative values count as
 * 0. */
void bench_hist_record(struct bench_hist *h, int64_t value);
/* Adds every sample of src to dst. */
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src);
/* Value at quantile q in [0, 1]: the highest value equivalent to the bucket
 * that holds the sample of rank ceil(q * n), capped by the maximum. 0 for
 * an empty histogram. */
int64_t bench_hist_quantile(const struct bench_hist *h, double q);
double bench_hist_mean(const struct bench_hist *h);

#endif /* KAPPA_BENCH_HIST_H */
