/* kappa topic create | list | describe | delete. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define TOPIC_CONFIGS_MAX 64

static int topic_create(struct cli *cli, int argc, char **argv)
{
    const char *configs[TOPIC_CONFIGS_MAX + 1];
    size_t n_configs = 0;
    const char *name = NULL, *v;
    long long partitions = -1, rf = 1;
    struct kappa_client *c;
    int rv;

    for (int i = 0; i < argc; i++) {
        int g = cli_global_opt(cli, argc, argv, &i);
        if (g != 0) {
            if (g < 0) {
                return 2;
            }
        } else if (strcmp(argv[i], "--partitions") == 0) {
            if ((v = cli_opt_value("topic create", argc, argv, &i)) == NULL ||
                cli_parse_int(v, 1, 10000, &partitions) != 0) {
                return cli_fail("topic create",
                                "--partitions: expected 1..10000") +
                       1;
            }
        } else if (strcmp(argv[i], "--replication-factor") == 0) {
            if ((v = cli_opt_value("topic create", argc, argv, &i)) == NULL ||
                cli_parse_int(v, 1, 100, &rf) != 0) {
                return cli_fail("topic create",
                                "--replication-factor: expected 1..100") +
                       1;
            }
        } else if (strcmp(argv[i], "--config") == 0) {
            if ((v = cli_opt_value("topic create", argc, argv, &i)) == NULL) {
                return 2;
            }
            if (strchr(v, '=') == NULL || n_configs == TOPIC_CONFIGS_MAX) {
                return cli_fail("topic create", "--config expects key=value") +
                       1;
            }
            configs[n_configs++] = v;
        } else if (argv[i][0] == '-' || name != NULL) {
            return cli_fail("topic create", "unexpected argument \"%s\"",
                            argv[i]) +
                   1;
        } else {
            name = argv[i];
        }
    }
    configs[n_configs] = NULL;
    if (name == NULL || partitions < 0) {
        return cli_fail("topic create",
                        "usage: topic create NAME --partitions N "
                        "[--replication-factor R] [--config k=v]") +
               1;
    }
    if ((c = cli_client_new(cli, "topic create", NULL)) == NULL) {
        return 1;
    }
    rv = kappa_create_topic(c, name, (int32_t)partitions, (int32_t)rf, configs,
                            0);
    if (rv != 0) {
        rv = cli_fail_client(c);
    } else {
        printf("created topic %s with %lld partition%s\n", name, partitions,
               partitions == 1 ? "" : "s");
    }
    kappa_client_free(c);
    return rv;
}

/* Parses "[global options] NAME" for list/describe/delete. */
static int name_arg(struct cli *cli, const char *what, int argc, char **argv,
                    int need_name, const char **name)
{
    *name = NULL;
    for (int i = 0; i < argc; i++) {
        int g = cli_global_opt(cli, argc, argv, &i);
        if (g < 0) {
            return 2;
        }
        if (g > 0) {
            continue;
        }
        if (argv[i][0] == '-' || *name != NULL || !need_name) {
            return cli_fail(what, "unexpected argument \"%s\"", argv[i]) + 1;
        }
        *name = argv[i];
    }
    if (need_name && *name == NULL) {
        return cli_fail(what, "missing topic name") + 1;
    }
    return 0;
}

static int topic_list(struct cli *cli, int argc, char **argv)
{
    struct kappa_topic_info *topics;
    struct kappa_client *c;
    const char *name;
    size_t n;
    int rv = name_arg(cli, "topic list", argc, argv, 0, &name);
    if (rv != 0) {
        return rv;
    }
    if ((c = cli_client_new(cli, "topic list", NULL)) == NULL) {
        return 1;
    }
    rv = kappa_list_topics(c, NULL, &topics, &n, 0);
    if (rv != 0) {
        rv = cli_fail_client(c);
        kappa_client_free(c);
        return rv;
    }
    printf("%-40s %10s %8s\n", "NAME", "PARTITIONS", "REPLICAS");
    for (size_t i = 0; i < n; i++) {
        printf("%-40s %10d %8d\n", topics[i].name, (int)topics[i].partitions,
               (int)topics[i].replication_factor);
    }
    kappa_topic_info_free(topics, n);
    kappa_client_free(c);
    return 0;
}

/* ListTopics reports what the answering broker holds; in a cluster that
 * may be a follower or no replica at all, so the offsets come from each
 * partition's leader (ListOffsets is routed there). */
static void refresh_offsets(struct kappa_client *c, struct kappa_topic_info *t)
{
    for (int32_t i = 0; i < t->partitions; i++) {
        struct kappa_partition_info *p = &t->partition_info[i];
        int64_t low, high;
        if (kappa_watermarks(c, t->name, p->partition, &low, &high, 5000) ==
            0) {
            p->log_start = low;
            p->high_watermark = high;
        }
    }
}

static void print_describe(const struct kappa_topic_info *t)
{
    printf("topic:              %s\n", t->name);
    printf("partitions:         %d\n", (int)t->partitions);
    printf("replication factor: %d\n", (int)t->replication_factor);
    printf("configs:           ");
    if (t->n_configs == 0) {
        printf(" (broker defaults)");
    }
    for (size_t i = 0; i < t->n_configs; i++) {
        printf(" %s=%s", t->config_keys[i], t->config_values[i]);
    }
    printf("\n\n%9s %6s %12s %14s %14s %8s\n", "PARTITION", "LEADER",
           "LOG_START", "HIGH_WATERMARK", "SIZE_BYTES", "SEGMENTS");
    for (int32_t i = 0; i < t->partitions; i++) {
        const struct kappa_partition_info *p = &t->partition_info[i];
        printf("%9d %6d %12" PRId64 " %14" PRId64 " %14" PRIu64 " %8u\n",
               (int)p->partition, (int)p->leader, p->log_start,
               p->high_watermark, p->size_bytes, (unsigned)p->segments);
    }
}

static int topic_describe(struct cli *cli, int argc, char **argv)
{
    struct kappa_topic_info *topics;
    struct kappa_client *c;
    const char *name;
    size_t n;
    int rv = name_arg(cli, "topic describe", argc, argv, 1, &name);
    if (rv != 0) {
        return rv;
    }
    if ((c = cli_client_new(cli, "topic describe", NULL)) == NULL) {
        return 1;
    }
    rv = kappa_list_topics(c, name, &topics, &n, 0);
    if (rv != 0) {
        rv = cli_fail_client(c);
        kappa_client_free(c);
        return rv;
    }
    for (size_t i = 0; i < n; i++) {
        refresh_offsets(c, &topics[i]);
        print_describe(&topics[i]);
    }
    kappa_topic_info_free(topics, n);
    kappa_client_free(c);
    return 0;
}

static int topic_delete(struct cli *cli, int argc, char **argv)
{
    struct kappa_client *c;
    const char *name;
    int rv = name_arg(cli, "topic delete", argc, argv, 1, &name);
    if (rv != 0) {
        return rv;
    }
    if ((c = cli_client_new(cli, "topic delete", NULL)) == NULL) {
        return 1;
    }
    rv = kappa_delete_topic(c, name, 0);
    if (rv != 0) {
        rv = cli_fail_client(c);
    } else {
        printf("deleted topic %s\n", name);
    }
    kappa_client_free(c);
    return rv;
}

int cmd_topic(struct cli *cli, int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(struct cli *, int, char **);
    } subs[] = {
        {"create", topic_create},
        {"list", topic_list},
        {"describe", topic_describe},
        {"delete", topic_delete},
    };
    if (argc < 1) {
        return cli_fail("topic", "expected create, list, describe or delete") +
               1;
    }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        if (strcmp(argv[0], subs[i].name) == 0) {
            return subs[i].run(cli, argc - 1, argv + 1);
        }
    }
    return cli_fail("topic", "unknown subcommand \"%s\"", argv[0]) + 1;
}
