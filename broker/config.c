/* Configuration keys are one table: name, kind, where the value lives, its
 * range and its default as shown by --help. config_set is the only writer,
 * so the file and the command line accept exactly the same values. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/batch.h"
#include "common/err.h"
#include "common/log.h"

enum key_kind {
    KIND_I64,
    KIND_U32,
    KIND_U64,
    KIND_DATA,
    KIND_LISTEN,
    KIND_LOG_LEVEL,
    KIND_CLUSTER_LISTEN,
    KIND_VOTERS,
    KIND_METRICS_LISTEN,
};

struct key_def {
    const char *name;
    enum key_kind kind;
    size_t offset;
    int64_t min;
    int64_t max;
    const char *default_text;
    const char *help;
};

#define CFG_OFF(field) offsetof(struct broker_config, field)
#define DAY_MS         (24LL * 3600 * 1000)

static const struct key_def key_defs[] = {
    {"node.id", KIND_I64, CFG_OFF(node_id), 0, INT32_MAX, "0",
     "id of this node"},
    {"data", KIND_DATA, CFG_OFF(data_dir), 0, 0, "(required)",
     "data directory"},
    {"listen", KIND_LISTEN, 0, 0, 0, "127.0.0.1:9092",
     "HOST:PORT to accept clients on (port 0: ephemeral)"},
    {"log.level", KIND_LOG_LEVEL, 0, 0, 0, "info",
     "debug, info, warn, error or off"},
    {"segment.bytes", KIND_U64, CFG_OFF(log.segment_bytes), 4096, 1LL << 31,
     "1073741824", "roll a segment past this size"},
    {"segment.ms", KIND_I64, CFG_OFF(log.segment_ms), 1, INT64_MAX, "604800000",
     "roll a segment older than this"},
    {"retention.bytes", KIND_I64, CFG_OFF(log.retention_bytes), -1, INT64_MAX,
     "-1", "delete old segments past this size (-1: none)"},
    {"retention.ms", KIND_I64, CFG_OFF(log.retention_ms), -1, INT64_MAX,
     "604800000", "delete segments older than this (-1: never)"},
    {"index.interval.bytes", KIND_U32, CFG_OFF(log.index_interval_bytes), 1,
     1LL << 30, "4096", "bytes between sparse offset index entries"},
    {"message.max.bytes", KIND_U32, CFG_OFF(message_max_bytes),
     KAPPA_BATCH_HEADER_BYTES, KAPPA_BATCH_BYTES_MAX, "16777216",
     "largest record batch accepted"},
    {"frame.max.bytes", KIND_U32, CFG_OFF(frame_max_bytes), 1024, 1LL << 30,
     "67108864", "largest request frame accepted"},
    {"fetch.max.wait.ms", KIND_I64, CFG_OFF(fetch_max_wait_ms), 0, 3600 * 1000,
     "30000", "cap on a fetch's max_wait_ms"},
    {"connections.max", KIND_U32, CFG_OFF(connections_max), 1, 1000000, "10000",
     "client connections accepted at once"},
    {"num.partitions", KIND_U32, CFG_OFF(num_partitions), 1, 10000, "1",
     "partitions of a topic created without a count"},
    {"housekeeping.interval.ms", KIND_I64, CFG_OFF(housekeeping_interval_ms),
     100, DAY_MS, "10000", "period of retention and segment age checks"},
    {"cluster.listen", KIND_CLUSTER_LISTEN, 0, 0, 0, "(empty: single node)",
     "IPV4:PORT for node-to-node traffic; enables cluster mode"},
    {"cluster.id", KIND_I64, CFG_OFF(cluster_id), 1, INT32_MAX, "1",
     "cluster id, checked in every node-to-node handshake"},
    {"cluster.voters", KIND_VOTERS, 0, 0, 0, "(empty)",
     "initial metadata voters, ID@IPV4:PORT,..."},
    {"raft.election.timeout.ms", KIND_I64, CFG_OFF(raft_election_timeout_ms),
     10, 600000, "3000", "Raft election timeout (randomised 1-2x)"},
    {"raft.heartbeat.timeout.ms", KIND_I64, CFG_OFF(raft_heartbeat_timeout_ms),
     1, 60000, "300", "Raft heartbeat period of leaders"},
    {"metrics.listen", KIND_METRICS_LISTEN, 0, 0, 0, "(empty: off)",
     "HOST:PORT of the HTTP /metrics and /ready endpoint (port 0: ephemeral)"},
};

#define N_KEYS (sizeof key_defs / sizeof key_defs[0])

void config_default(struct broker_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->node_id = 0;
    strcpy(cfg->listen_host, "127.0.0.1");
    cfg->listen_port = 9092;
    cfg->log_level = KAPPA_LOG_INFO;
    cfg->log.segment_bytes = 1ull << 30;
    cfg->log.segment_ms = 7 * DAY_MS;
    cfg->log.retention_bytes = -1;
    cfg->log.retention_ms = 7 * DAY_MS;
    cfg->log.index_interval_bytes = 4096;
    cfg->message_max_bytes = 16u * 1024 * 1024;
    cfg->frame_max_bytes = 64u * 1024 * 1024;
    cfg->fetch_max_wait_ms = 30000;
    cfg->connections_max = 10000;
    cfg->num_partitions = 1;
    cfg->housekeeping_interval_ms = 10000;
    cfg->cluster_id = 1;
    cfg->raft_election_timeout_ms = 3000;
    cfg->raft_heartbeat_timeout_ms = 300;
}

static const struct key_def *find_key(const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        if (strcmp(key_defs[i].name, name) == 0) {
            return &key_defs[i];
        }
    }
    return NULL;
}

/* Strict decimal: optional sign, digits, nothing else, no overflow. */
static int parse_i64(const char *s, int64_t *v)
{
    char *end;
    long long x;
    if (*s == '\0') {
        return -1;
    }
    errno = 0;
    x = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s) {
        return -1;
    }
    *v = x;
    return 0;
}

/* Splits "HOST:PORT" or "[V6]:PORT"; the host must be a numeric address.
 * key names the option in errors; out_host has CONFIG_HOST_BYTES_MAX
 * bytes. */
static int parse_hostport(const char *key, const char *s, char *out_host,
                          int *out_port, char *errmsg)
{
    const char *colon = strrchr(s, ':');
    const char *host = s;
    size_t host_len;
    int64_t port;
    unsigned char addr[16];
    char tmp[CONFIG_HOST_BYTES_MAX];

    if (colon == NULL || parse_i64(colon + 1, &port) != 0 || port < 0 ||
        port > 65535) {
        kappa_errmsg_printf(errmsg, "%s: expected HOST:PORT, got '%s'", key, s);
        return KAPPA_ECONFIG;
    }
    host_len = (size_t)(colon - s);
    if (host_len >= 2 && s[0] == '[' && colon[-1] == ']') {
        host++;
        host_len -= 2;
    }
    if (host_len == 0 || host_len >= sizeof tmp) {
        kappa_errmsg_printf(errmsg, "%s: bad host in '%s'", key, s);
        return KAPPA_ECONFIG;
    }
    memcpy(tmp, host, host_len);
    tmp[host_len] = '\0';
    if (strcmp(tmp, "localhost") == 0) {
        strcpy(tmp, "127.0.0.1");
    }
    if (inet_pton(AF_INET, tmp, addr) != 1 &&
        inet_pton(AF_INET6, tmp, addr) != 1) {
        kappa_errmsg_printf(errmsg, "%s: host '%s' is not a numeric address",
                            key, tmp);
        return KAPPA_ECONFIG;
    }
    strcpy(out_host, tmp);
    *out_port = (int)port;
    return 0;
}

static int parse_listen(struct broker_config *cfg, const char *s, char *errmsg)
{
    return parse_hostport("listen", s, cfg->listen_host, &cfg->listen_port,
                          errmsg);
}

/* metrics.listen: empty turns the endpoint off. */
static int parse_metrics_listen(struct broker_config *cfg, const char *s,
                                char *errmsg)
{
    int rv;
    if (s[0] == '\0') {
        cfg->is_metrics_on = 0;
        return 0;
    }
    rv = parse_hostport("metrics.listen", s, cfg->metrics_host,
                        &cfg->metrics_port, errmsg);
    cfg->is_metrics_on = rv == 0;
    return rv;
}

/* "a.b.c.d:port" with a concrete IPv4 host (peers dial it) and a port. */
static int parse_cluster_addr(const char *s, char *out, int allow_port0)
{
    const char *colon = strrchr(s, ':');
    char host[INET_ADDRSTRLEN];
    unsigned char addr[4];
    int64_t port;
    size_t n;

    if (colon == NULL || parse_i64(colon + 1, &port) != 0 || port < 0 ||
        port > 65535 || (port == 0 && !allow_port0)) {
        return -1;
    }
    n = (size_t)(colon - s);
    if (n == 0 || n >= sizeof host) {
        return -1;
    }
    memcpy(host, s, n);
    host[n] = '\0';
    if (inet_pton(AF_INET, host, addr) != 1 ||
        (addr[0] | addr[1] | addr[2] | addr[3]) == 0) {
        return -1;
    }
    snprintf(out, CONFIG_ADDR_BYTES_MAX, "%s:%u", host,
             (unsigned)(uint16_t)port);
    return 0;
}

/* "ID@IPV4:PORT,ID@IPV4:PORT,..." with distinct ids. */
static int parse_voters(struct broker_config *cfg, const char *s, char *errmsg)
{
    char item[64];
    uint32_t n = 0;
    while (*s != '\0') {
        const char *comma = strchr(s, ',');
        size_t len = comma != NULL ? (size_t)(comma - s) : strlen(s);
        char *at;
        int64_t id;
        if (len == 0 || len >= sizeof item || n == CONFIG_VOTERS_MAX) {
            goto bad;
        }
        memcpy(item, s, len);
        item[len] = '\0';
        at = strchr(item, '@');
        if (at == NULL) {
            goto bad;
        }
        *at = '\0';
        if (parse_i64(item, &id) != 0 || id < 1 || id > INT32_MAX ||
            parse_cluster_addr(at + 1, cfg->voters[n].addr, 0) != 0) {
            goto bad;
        }
        for (uint32_t i = 0; i < n; i++) {
            if (cfg->voters[i].id == (uint32_t)id) {
                goto bad;
            }
        }
        cfg->voters[n++].id = (uint32_t)id;
        s += len + (comma != NULL ? 1 : 0);
    }
    cfg->n_voters = n;
    return 0;
bad:
    kappa_errmsg_printf(errmsg,
                        "cluster.voters: expected up to %d distinct "
                        "ID@IPV4:PORT items, got '%.64s'",
                        CONFIG_VOTERS_MAX, s);
    return KAPPA_ECONFIG;
}

static int set_number(struct broker_config *cfg, const struct key_def *k,
                      const char *value, char *errmsg)
{
    int64_t v;
    char *field = (char *)cfg + k->offset;
    if (parse_i64(value, &v) != 0 || v < k->min || v > k->max) {
        kappa_errmsg_printf(errmsg,
                            "%s: expected an integer in [%lld, %lld], got "
                            "'%s'",
                            k->name, (long long)k->min, (long long)k->max,
                            value);
        return KAPPA_ECONFIG;
    }
    switch (k->kind) {
    case KIND_I64:
        memcpy(field, &v, sizeof v);
        break;
    case KIND_U32: {
        uint32_t u = (uint32_t)v;
        memcpy(field, &u, sizeof u);
        break;
    }
    default: {
        uint64_t u = (uint64_t)v;
        memcpy(field, &u, sizeof u);
        break;
    }
    }
    return 0;
}

int config_set(struct broker_config *cfg, const char *key, const char *value,
               char *errmsg)
{
    const struct key_def *k = find_key(key);
    int level;

    if (k == NULL) {
        kappa_errmsg_printf(errmsg, "unknown configuration key '%s'", key);
        return KAPPA_ECONFIG;
    }
    switch (k->kind) {
    case KIND_DATA:
        if (value[0] == '\0' || strlen(value) >= sizeof cfg->data_dir) {
            kappa_errmsg_printf(errmsg, "data: empty or too long path");
            return KAPPA_ECONFIG;
        }
        strcpy(cfg->data_dir, value);
        return 0;
    case KIND_LISTEN:
        return parse_listen(cfg, value, errmsg);
    case KIND_CLUSTER_LISTEN:
        if (value[0] == '\0') {
            cfg->cluster_listen[0] = '\0';
            return 0;
        }
        if (parse_cluster_addr(value, cfg->cluster_listen, 1) != 0) {
            kappa_errmsg_printf(errmsg,
                                "cluster.listen: expected IPV4:PORT with a "
                                "concrete address, got '%.64s'",
                                value);
            return KAPPA_ECONFIG;
        }
        return 0;
    case KIND_VOTERS:
        return parse_voters(cfg, value, errmsg);
    case KIND_METRICS_LISTEN:
        return parse_metrics_listen(cfg, value, errmsg);
    case KIND_LOG_LEVEL:
        level = kappa_log_level_parse(value);
        if (level < 0) {
            kappa_errmsg_printf(errmsg,
                                "log.level: expected debug, info, warn, "
                                "error or off, got '%s'",
                                value);
            return KAPPA_ECONFIG;
        }
        cfg->log_level = level;
        return 0;
    default:
        return set_number(cfg, k, value, errmsg);
    }
}

static char *trim(char *s)
{
    char *end;
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' ||
                       end[-1] == '\r')) {
        *--end = '\0';
    }
    return s;
}

/* One line: blank, "# comment" or "key = value". */
static int apply_line(struct broker_config *cfg, char *line, char *errmsg)
{
    char *s = trim(line);
    char *eq;
    if (*s == '\0' || *s == '#') {
        return 0;
    }
    eq = strchr(s, '=');
    if (eq == NULL) {
        kappa_errmsg_printf(errmsg, "expected 'key = value'");
        return KAPPA_ECONFIG;
    }
    *eq = '\0';
    return config_set(cfg, trim(s), trim(eq + 1), errmsg);
}

int config_load_file(struct broker_config *cfg, const char *path, char *errmsg)
{
    char line[CONFIG_LINE_BYTES_MAX];
    unsigned line_no = 0;
    int rv = 0;
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        kappa_errmsg_printf(errmsg, "%s: %s", path, strerror(errno));
        return KAPPA_ECONFIG;
    }
    while (rv == 0 && fgets(line, sizeof line, f) != NULL) {
        line_no++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            kappa_errmsg_printf(errmsg, "line longer than %d bytes",
                                CONFIG_LINE_BYTES_MAX - 1);
            rv = KAPPA_ECONFIG;
        } else {
            rv = apply_line(cfg, line, errmsg);
        }
    }
    if (rv == 0 && ferror(f)) {
        kappa_errmsg_printf(errmsg, "read error");
        rv = KAPPA_ECONFIG;
    }
    fclose(f);
    if (rv != 0) {
        kappa_errmsg_wrap(errmsg, "%s:%u", path, line_no);
    }
    return rv;
}

/* Splits "--key value" or "--key=value" at argv[*i]; advances *i. */
static int next_option(int argc, char **argv, int *i, const char **key,
                       const char **value, char *keybuf, char *errmsg)
{
    const char *arg = argv[*i];
    const char *eq;
    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
        kappa_errmsg_printf(errmsg, "unexpected argument '%s'", arg);
        return KAPPA_ECONFIG;
    }
    arg += 2;
    eq = strchr(arg, '=');
    if (eq != NULL) {
        size_t n = (size_t)(eq - arg);
        if (n >= CONFIG_LINE_BYTES_MAX) {
            n = CONFIG_LINE_BYTES_MAX - 1;
        }
        memcpy(keybuf, arg, n);
        keybuf[n] = '\0';
        *key = keybuf;
        *value = eq + 1;
        (*i)++;
        return 0;
    }
    if (*i + 1 >= argc) {
        kappa_errmsg_printf(errmsg, "--%s needs a value", arg);
        return KAPPA_ECONFIG;
    }
    *key = arg;
    *value = argv[*i + 1];
    *i += 2;
    return 0;
}

static int is_flag(const char *arg, const char *long_name,
                   const char *short_name)
{
    return strcmp(arg, long_name) == 0 || strcmp(arg, short_name) == 0;
}

/* Pass 1 finds --help, --version and --config; pass 2 applies the rest. */
static int scan_flags(int argc, char **argv, enum config_action *action,
                      const char **config_path, char *errmsg)
{
    char keybuf[CONFIG_LINE_BYTES_MAX];
    const char *key;
    const char *value;
    int i = 1;
    while (i < argc) {
        if (is_flag(argv[i], "--help", "-h")) {
            *action = CONFIG_HELP;
            return 0;
        }
        if (is_flag(argv[i], "--version", "-V")) {
            *action = CONFIG_VERSION;
            return 0;
        }
        if (next_option(argc, argv, &i, &key, &value, keybuf, errmsg) != 0) {
            return KAPPA_ECONFIG;
        }
        if (strcmp(key, "config") == 0) {
            *config_path = value;
        }
    }
    return 0;
}

int config_parse_args(struct broker_config *cfg, int argc, char **argv,
                      enum config_action *action, char *errmsg)
{
    char keybuf[CONFIG_LINE_BYTES_MAX];
    const char *config_path = NULL;
    const char *key;
    const char *value;
    int i = 1;
    int rv;

    config_default(cfg);
    *action = CONFIG_RUN;
    rv = scan_flags(argc, argv, action, &config_path, errmsg);
    if (rv != 0 || *action != CONFIG_RUN) {
        return rv;
    }
    if (config_path != NULL) {
        rv = config_load_file(cfg, config_path, errmsg);
        if (rv != 0) {
            return rv;
        }
    }
    while (i < argc) {
        rv = next_option(argc, argv, &i, &key, &value, keybuf, errmsg);
        if (rv == 0 && strcmp(key, "config") != 0) {
            rv = config_set(cfg, key, value, errmsg);
        }
        if (rv != 0) {
            return rv;
        }
    }
    return config_validate(cfg, errmsg);
}

static int validate_cluster(const struct broker_config *cfg, char *errmsg)
{
    if (cfg->cluster_listen[0] == '\0') {
        return 0;
    }
    if (cfg->node_id < 1) {
        kappa_errmsg_printf(errmsg, "node.id: cluster mode needs an id >= 1");
        return KAPPA_ECONFIG;
    }
    if (cfg->n_voters == 0) {
        kappa_errmsg_printf(errmsg, "cluster.voters: required in cluster "
                                    "mode");
        return KAPPA_ECONFIG;
    }
    if (cfg->raft_heartbeat_timeout_ms >= cfg->raft_election_timeout_ms) {
        kappa_errmsg_printf(errmsg, "raft.heartbeat.timeout.ms must be below "
                                    "raft.election.timeout.ms");
        return KAPPA_ECONFIG;
    }
    return 0;
}

int config_validate(const struct broker_config *cfg, char *errmsg)
{
    if (cfg->data_dir[0] == '\0') {
        kappa_errmsg_printf(errmsg, "data: a data directory is required "
                                    "(--data DIR)");
        return KAPPA_ECONFIG;
    }
    if ((uint64_t)cfg->frame_max_bytes <
        (uint64_t)cfg->message_max_bytes + CONFIG_FRAME_OVERHEAD_BYTES) {
        kappa_errmsg_printf(errmsg,
                            "frame.max.bytes (%u) must be at least "
                            "message.max.bytes (%u) + %u",
                            cfg->frame_max_bytes, cfg->message_max_bytes,
                            CONFIG_FRAME_OVERHEAD_BYTES);
        return KAPPA_ECONFIG;
    }
    return validate_cluster(cfg, errmsg);
}

void config_print_help(FILE *f)
{
    fprintf(f, "usage: kappad [--config FILE] [--KEY VALUE]...\n"
               "       kappad --help | --version\n\n"
               "Every key may be set in the config file as 'key = value' or "
               "on the\ncommand line as '--key value' (which wins).\n\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        fprintf(f, "  --%-26s %s (default %s)\n", key_defs[i].name,
                key_defs[i].help, key_defs[i].default_text);
    }
}
