/* kappa-job, second part: the monitoring and fraud example jobs, versions
 * and instances on the command line, and the commands that work on a
 * database (status, promote, retire, query). */
#ifndef KAPPA_STREAMS_KAPPA_JOB_EXT_H
#define KAPPA_STREAMS_KAPPA_JOB_EXT_H

#include <getopt.h>
#include <stdint.h>

#include <kappa/streams.h>

#include "fraud.h"

/* Options of run/gen/bench handled here (getopt codes from 256). */
struct opts_ext {
    const char *version;
    int instance;
    int instances;
    const char *where; /* FIELD=VALUE or FIELD!=VALUE */
    double threshold;  /* monitoring */
    struct fraud_rules rules;
};

enum {
    OPT_VERSION = 256,
    OPT_INSTANCE,
    OPT_INSTANCES,
    OPT_WHERE,
    OPT_THRESHOLD,
    OPT_MAX_TXNS,
    OPT_MAX_AMOUNT,
    OPT_WINDOW_MIN,
};

#define EXT_LONGOPTS                                                           \
    {"version", required_argument, NULL, OPT_VERSION},                         \
        {"instance", required_argument, NULL, OPT_INSTANCE},                   \
        {"instances", required_argument, NULL, OPT_INSTANCES},                 \
        {"where", required_argument, NULL, OPT_WHERE},                         \
        {"threshold", required_argument, NULL, OPT_THRESHOLD},                 \
        {"max-txns", required_argument, NULL, OPT_MAX_TXNS},                   \
        {"max-amount", required_argument, NULL, OPT_MAX_AMOUNT},               \
    {                                                                          \
        "window-min", required_argument, NULL, OPT_WINDOW_MIN                  \
    }

void ext_opts_init(struct opts_ext *x);
/* Handles option c; returns 0, or -1 when c is not one of ours or its
 * argument is bad. */
int ext_parse_opt(int c, const char *arg, struct opts_ext *x);
/* clickstream, monitoring or fraud. */
int ext_is_job(const char *kind);
/* Builds job `kind` named name, with x's version, instance and filter.
 * x is borrowed until kappa_job_free. */
int ext_job_new(const char *kind, const char *name,
                enum kappa_stream_format format, const char *topic,
                const char *db, const struct opts_ext *x,
                struct kappa_job **out);
/* Generates job kind's input. */
int ext_generate(const char *kind, const char *bootstrap, const char *topic,
                 int64_t n, uint64_t seed, enum kappa_stream_format format,
                 int32_t n_partitions, char *errmsg);
/* Whether cmd is one of status, promote, retire, query. */
int ext_is_command(const char *cmd);
/* Runs one of those; returns the exit status. */
int ext_main(int argc, char **argv);
void ext_usage(void);

#endif /* KAPPA_STREAMS_KAPPA_JOB_EXT_H */
