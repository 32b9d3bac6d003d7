/* kappa: the command-line tool for Kappa. Global options come before or
 * after the command; each command parses its own arguments. New commands
 * (dev up, cluster status, job ...) are one row in `commands`. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

struct cli_command {
    const char *name;
    const char *usage;
    int (*run)(struct cli *cli, int argc, char **argv);
};

static int cmd_version(struct cli *cli, int argc, char **argv);
static int cmd_help(struct cli *cli, int argc, char **argv);

static const struct cli_command commands[] = {
    {"topic",
     "topic create NAME --partitions N [--replication-factor R] "
     "[--config k=v ...]\n"
     "  topic list | topic describe NAME | topic delete NAME",
     cmd_topic},
    {"produce",
     "produce TOPIC [--partition P] [--key-separator C] [--acks 0|1|all]\n"
     "          [--compression none|lz4|zstd] [--linger-ms N] "
     "[--batch-size N]\n"
     "      one record per stdin line; summary on stderr",
     cmd_produce},
    {"consume",
     "consume TOPIC [--partition P] [--from-beginning | --offset N | "
     "--timestamp MS]\n"
     "          [--count N] [--follow] [--format FMT]\n"
     "      FMT: %t topic %p partition %o offset %k key %v value "
     "%T timestamp\n"
     "           %h headers, %% and \\n \\t escapes (default \"%v\"); a "
     "newline\n"
     "           ends each record unless FMT ends with one",
     cmd_consume},
    {"cluster",
     "cluster status [--json]\n"
     "      nodes, metadata leader, per partition leader, replicas,\n"
     "      high watermark, commit index and follower lag",
     cmd_cluster},
    {"dev",
     "dev up --nodes 1|3|5 --dir DIR [--base-port P] [--kappad PATH] "
     "[--timeout-ms N]\n"
     "      local cluster on 127.0.0.1; prints the bootstrap list last\n"
     "  dev down --dir DIR [--timeout-ms N]",
     cmd_dev},
    {"version", "version", cmd_version},
    {"help", "help", cmd_help},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
    fprintf(out, "usage: kappa [-b HOST:PORT[,...]] [-X key=value ...] "
                 "COMMAND ...\n\n");
    fprintf(out, "  -b, --brokers   bootstrap servers (default $KAPPA_BROKERS, "
                 "then 127.0.0.1:9092)\n");
    fprintf(out, "  -X key=value    client property (librdkafka style, e.g. "
                 "-X request.timeout.ms=5000)\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) {
        fprintf(out, "  %s\n", commands[i].usage);
    }
}

static int cmd_version(struct cli *cli, int argc, char **argv)
{
    (void)cli;
    (void)argc;
    (void)argv;
    printf("kappa %s\n", CLI_VERSION);
    return 0;
}

static int cmd_help(struct cli *cli, int argc, char **argv)
{
    (void)cli;
    (void)argc;
    (void)argv;
    usage(stdout);
    return 0;
}

int cli_fail(const char *what, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "kappa: %s: ", what);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

int cli_fail_client(struct kappa_client *c)
{
    fprintf(stderr, "kappa: %s\n", kappa_last_error(c));
    return 1;
}

int cli_parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        return -1;
    }
    *out = v;
    return 0;
}

const char *cli_opt_value(const char *what, int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        cli_fail(what, "option %s needs a value", argv[*i]);
        return NULL;
    }
    (*i)++;
    return argv[*i];
}

int cli_global_opt(struct cli *cli, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    const char *v;
    if (strcmp(a, "-b") == 0 || strcmp(a, "--brokers") == 0) {
        if ((v = cli_opt_value("usage", argc, argv, i)) == NULL) {
            return -1;
        }
        cli->brokers = v;
        return 1;
    }
    if (strcmp(a, "-X") == 0) {
        if ((v = cli_opt_value("usage", argc, argv, i)) == NULL) {
            return -1;
        }
        if (strchr(v, '=') == NULL || cli->n_props == CLI_PROPS_MAX) {
            cli_fail("usage", "-X expects key=value");
            return -1;
        }
        cli->props[cli->n_props++] = v;
        return 1;
    }
    return 0;
}

static int conf_set_kv(struct kappa_conf *conf, const char *kv, char *err,
                       size_t err_size)
{
    char key[128];
    const char *eq = strchr(kv, '=');
    size_t n = (size_t)(eq - kv);
    if (eq == NULL || n >= sizeof key) {
        snprintf(err, err_size, "%s: expected key=value", kv);
        return -1;
    }
    memcpy(key, kv, n);
    key[n] = '\0';
    return kappa_conf_set(conf, key, eq + 1, err, err_size) == 0 ? 0 : -1;
}

struct kappa_client *cli_client_new(struct cli *cli, const char *what,
                                    const char *const *extra)
{
    struct kappa_conf *conf = kappa_conf_new();
    struct kappa_client *c;
    char err[256];
    if (conf == NULL) {
        cli_fail(what, "out of memory");
        return NULL;
    }
    if (kappa_conf_set(conf, "bootstrap.servers", cli->brokers, err,
                       sizeof err) != 0 ||
        kappa_conf_set(conf, "client.id", "kappa-cli", err, sizeof err) != 0 ||
        kappa_conf_set(conf, "request.timeout.ms", CLI_TIMEOUT_MS_DEFAULT, err,
                       sizeof err) != 0) {
        goto fail;
    }
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        if (conf_set_kv(conf, extra[i], err, sizeof err) != 0) {
            goto fail;
        }
    }
    for (size_t i = 0; i < cli->n_props; i++) {
        if (conf_set_kv(conf, cli->props[i], err, sizeof err) != 0) {
            goto fail;
        }
    }
    if (kappa_client_new(conf, &c, err, sizeof err) != 0) {
        cli_fail(what, "%s", err);
        return NULL;
    }
    return c;

fail:
    kappa_conf_free(conf);
    cli_fail(what, "%s", err);
    return NULL;
}

int main(int argc, char **argv)
{
    struct cli cli;
    int i;
    memset(&cli, 0, sizeof cli);
    cli.brokers = getenv("KAPPA_BROKERS");
    if (cli.brokers == NULL || cli.brokers[0] == '\0') {
        cli.brokers = "127.0.0.1:9092";
    }
    for (i = 1; i < argc; i++) {
        int rv;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
            return cmd_version(&cli, 0, NULL);
        }
        rv = cli_global_opt(&cli, argc, argv, &i);
        if (rv < 0) {
            return 2;
        }
        if (rv == 0) {
            break;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    for (size_t k = 0; k < N_COMMANDS; k++) {
        if (strcmp(argv[i], commands[k].name) == 0) {
            return commands[k].run(&cli, argc - i - 1, argv + i + 1);
        }
    }
    cli_fail("usage", "unknown command \"%s\" (try kappa --help)", argv[i]);
    return 2;
}
