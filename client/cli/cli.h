/* The kappa command-line tool: shared options, the command table and
 * helpers used by every subcommand. */
#ifndef KAPPA_CLI_H
#define KAPPA_CLI_H

#include <kappa/client.h>
#include <stddef.h>
#include <stdint.h>

#define CLI_VERSION   "0.1.0"
#define CLI_PROPS_MAX 64
/* Default request timeout of the tool: long enough for a busy broker, short
 * enough that a broker that is down is reported quickly. */
#define CLI_TIMEOUT_MS_DEFAULT "5000"

struct cli {
    const char *brokers;
    const char *props[CLI_PROPS_MAX]; /* "key=value" from -X */
    size_t n_props;
};

/* Consumes a global option (-b, --brokers, -X) at argv[*i]; returns 1 if it
 * was one, 0 if not, -1 on a usage error (message printed). */
int cli_global_opt(struct cli *cli, int argc, char **argv, int *i);

/* Creates a client for cli->brokers with the -X properties and then the
 * extra "key=value" pairs (NULL-terminated, may be NULL). Prints the error
 * and returns NULL on failure. */
struct kappa_client *cli_client_new(struct cli *cli, const char *what,
                                    const char *const *extra);

/* Prints "kappa: <what>: <message>" to stderr; returns 1 (exit status). */
int cli_fail(const char *what, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prints the client's last error as "kappa: <context>: <message>". */
int cli_fail_client(struct kappa_client *c);

/* Parses a decimal integer in [lo, hi]; returns 0 or -1. */
int cli_parse_int(const char *s, long long lo, long long hi, long long *out);

/* Fetches argv[*i + 1] as the value of option argv[*i]; NULL (message
 * printed) if it is missing. */
const char *cli_opt_value(const char *what, int argc, char **argv, int *i);

int cmd_topic(struct cli *cli, int argc, char **argv);
int cmd_produce(struct cli *cli, int argc, char **argv);
int cmd_consume(struct cli *cli, int argc, char **argv);
int cmd_dev(struct cli *cli, int argc, char **argv);
int cmd_cluster(struct cli *cli, int argc, char **argv);

#endif /* KAPPA_CLI_H */
