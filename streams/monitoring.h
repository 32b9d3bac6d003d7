/* Example job 2, monitoring and alerting: the average of a per-host metric
 * over a sliding (hopping) 5-minute window, and alerts when it crosses a
 * threshold and when it clears; with the deterministic generator of the
 * metrics that tests use as the reference. */
#ifndef KAPPA_STREAMS_MONITORING_H
#define KAPPA_STREAMS_MONITORING_H

#include <stddef.h>
#include <stdint.h>

#include <kappa/streams.h>

/* Generator shape: MON_HOSTS hosts report in turn, each every MON_STEP_MS
 * of arrival time from MON_BASE_MS; the event time "ts" is up to
 * MON_JITTER_MS earlier than the arrival. cpu is an integer percentage:
 * around a per-host baseline, or 85-99 during incidents (a quarter of the
 * 15-minute blocks of a host has one, 20-50 reports long). With the job's
 * out-of-orderness MON_OOO_MS > MON_JITTER_MS no event is late. */
#define MON_BASE_MS     1700000000000LL
#define MON_HOSTS       20
#define MON_STEP_MS     10000
#define MON_JITTER_MS   3000
#define MON_OOO_MS      5000
#define MON_WINDOW_MS   300000 /* 5 minutes */
#define MON_SLIDE_MS    60000  /* a window starts every minute */
#define MON_BLOCK_STEPS 90     /* 15 minutes of reports */
#define MON_THRESHOLD   80.0

struct mon_event {
    int64_t arrival_ms;
    int64_t ts_ms;
    char host[8];
    int cpu;
};

/* Event i of the stream with this seed: a pure function. */
void monitoring_event(uint64_t seed, int64_t i, struct mon_event *ev);
/* {"ts":..,"host":"h07","cpu":93} into out (256 bytes); returns the
 * length. */
size_t monitoring_encode(const struct mon_event *ev, char *out);

/* Builds the job: NAME_cpu = AVG(cpu) per host over hopping windows (5 min,
 * sliding by 1 min), event time "ts", no lateness; the view NAME_alerts
 * (host, window_start, window_end, avg, alert 'start'|'clear') over the
 * final windows: 'start' at a host's first window above threshold (or the
 * first after a window at or below it), 'clear' at the first window at or
 * below it after one above. */
int monitoring_job_new(const char *name, const char *topic, const char *db_path,
                       double threshold, struct kappa_job **out);

/* Produces events [0, n) into topic (keyed by host). */
int monitoring_generate(const char *bootstrap, const char *topic, int64_t n,
                        uint64_t seed, int32_t n_partitions, char *errmsg);

#endif /* KAPPA_STREAMS_MONITORING_H */
