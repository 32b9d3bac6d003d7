/* kappad configuration: defaults, a `key = value` file and `--key value`
 * command-line overrides, validated into one plain struct. docs/config.md
 * lists every key. No I/O besides reading the file; no allocation. */
#ifndef KAPPA_BROKER_CONFIG_H
#define KAPPA_BROKER_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "broker/store/log.h"

#define CONFIG_PATH_BYTES_MAX 4096
#define CONFIG_HOST_BYTES_MAX 256
/* Longest line accepted in a config file. */
#define CONFIG_LINE_BYTES_MAX 4096
/* Room a produce frame needs beyond its batches (envelope, topic names, part
 * maps): frame.max.bytes must be at least message.max.bytes plus this. */
#define CONFIG_FRAME_OVERHEAD_BYTES (64u * 1024)

/* Initial metadata voters (cluster.voters). */
#define CONFIG_VOTERS_MAX     9
#define CONFIG_ADDR_BYTES_MAX 32

struct config_voter {
    uint32_t id;
    char addr[CONFIG_ADDR_BYTES_MAX]; /* cluster address "a.b.c.d:port" */
};

struct broker_config {
    int64_t node_id;
    char data_dir[CONFIG_PATH_BYTES_MAX];
    char listen_host[CONFIG_HOST_BYTES_MAX]; /* numeric IPv4 or IPv6 */
    int listen_port;                         /* 0: ephemeral */
    int log_level;                           /* enum kappa_log_level */
    struct log_config log; /* topic defaults: segment.*, retention.* */
    uint32_t message_max_bytes;
    uint32_t frame_max_bytes;
    int64_t fetch_max_wait_ms;
    uint32_t connections_max;
    uint32_t num_partitions;
    int64_t housekeeping_interval_ms;
    /* Cluster mode: on when cluster_listen is set. */
    char cluster_listen[CONFIG_ADDR_BYTES_MAX]; /* "" = single node */
    int64_t cluster_id;
    uint32_t n_voters;
    struct config_voter voters[CONFIG_VOTERS_MAX];
    int64_t raft_election_timeout_ms;
    int64_t raft_heartbeat_timeout_ms;
    /* HTTP metrics endpoint (broker/metrics.h): on when metrics.listen is
     * set. */
    int is_metrics_on;
    char metrics_host[CONFIG_HOST_BYTES_MAX]; /* numeric IPv4 or IPv6 */
    int metrics_port;                         /* 0: ephemeral */
};

/* What main should do after config_parse_args. */
enum config_action {
    CONFIG_RUN = 0,
    CONFIG_HELP,
    CONFIG_VERSION,
};

void config_default(struct broker_config *cfg);

/* Sets one key from its string form. Returns 0 or KAPPA_ECONFIG with a
 * one-line reason in errmsg (KAPPA_ERRMSG_SIZE). */
int config_set(struct broker_config *cfg, const char *key, const char *value,
               char *errmsg);

/* Applies every `key = value` line of a file (blank lines and lines starting
 * with # are ignored). Returns 0 or KAPPA_ECONFIG ("FILE:LINE: reason"). */
int config_load_file(struct broker_config *cfg, const char *path, char *errmsg);

/* Parses argv: defaults, then the --config file if any, then every other
 * `--key value` (so the command line overrides the file), then
 * config_validate. Sets *action for --help / --version (no validation then).
 * Returns 0 or KAPPA_ECONFIG with errmsg. */
int config_parse_args(struct broker_config *cfg, int argc, char **argv,
                      enum config_action *action, char *errmsg);

/* Checks cross-key rules: data is set, frame.max.bytes leaves room for
 * message.max.bytes, listen is a numeric address. */
int config_validate(const struct broker_config *cfg, char *errmsg);

/* Prints the usage text with every key and its default. */
void config_print_help(FILE *f);

#endif /* KAPPA_BROKER_CONFIG_H */
