/* kappa cluster status [--json]: kappa_cluster_status (Metadata from a
 * bootstrap broker: brokers, metadata leader, per partition the leader and
 * replicas; then every broker's ClusterStatus, its local Raft view: metadata
 * role, hosted replicas with commit index, high watermark and, on leaders,
 * each follower's match index), printed as a table or JSON. A broker that
 * does not answer is shown as not alive; its columns stay empty. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define STATUS_TIMEOUT_MS 3000

static const struct kappa_broker_info *
broker_by_id(const struct kappa_cluster_info *s, int64_t id)
{
    for (size_t i = 0; i < s->n_brokers; i++) {
        if (s->brokers[i].id == id) {
            return &s->brokers[i];
        }
    }
    return NULL;
}

static int is_alive(const struct kappa_cluster_info *s, int64_t id)
{
    const struct kappa_broker_info *b = broker_by_id(s, id);
    return b != NULL && b->is_alive;
}

static const char *or_dash(const char *s)
{
    return s[0] != '\0' ? s : "-";
}

static void client_addr(const struct kappa_broker_info *b, char *out,
                        size_t cap)
{
    snprintf(out, cap, strchr(b->host, ':') != NULL ? "[%s]:%d" : "%s:%d",
             b->host, b->port);
}

/* ---- Output -------------------------------------------------------------- */

static void json_str(const char *s)
{
    putchar('"');
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c < 0x20) {
            printf("\\u%04x", c);
        } else {
            putchar(c);
        }
    }
    putchar('"');
}

static void json_int_or_null(int64_t v)
{
    if (v < 0) {
        printf("null");
    } else {
        printf("%" PRId64, v);
    }
}

/* Calls fn for every partition of the answer. */
static void foreach_partition(const struct kappa_cluster_info *s,
                              void (*fn)(const struct kappa_cluster_info *,
                                         const char *topic,
                                         const struct kappa_partition_state *,
                                         int first))
{
    int first = 1;
    for (size_t t = 0; t < s->n_topics; t++) {
        const struct kappa_topic_state *ts = &s->topics[t];
        for (size_t p = 0; p < ts->n_partitions; p++) {
            fn(s, ts->name, &ts->partitions[p], first);
            first = 0;
        }
    }
}

static void json_partition(const struct kappa_cluster_info *s,
                           const char *topic,
                           const struct kappa_partition_state *ps, int first)
{
    int first_f = 1;
    printf("%s\n    {\"topic\": ", first ? "" : ",");
    json_str(topic);
    printf(", \"partition\": %" PRId32 ", \"leader\": ", ps->partition);
    json_int_or_null(ps->leader);
    printf(", \"replicas\": [");
    for (size_t i = 0; i < ps->n_replicas; i++) {
        printf("%s%" PRId32, i > 0 ? ", " : "", ps->replicas[i].id);
    }
    printf("], \"high_watermark\": ");
    json_int_or_null(ps->high_watermark);
    printf(", \"commit_index\": ");
    json_int_or_null(ps->commit_index);
    printf(", \"last_index\": ");
    json_int_or_null(ps->last_index);
    printf(", \"followers\": [");
    for (size_t i = 0; i < ps->n_replicas; i++) {
        const struct kappa_replica_info *r = &ps->replicas[i];
        if (r->id == ps->leader) {
            continue;
        }
        printf("%s{\"id\": %" PRId32 ", \"alive\": %s, \"match_index\": ",
               first_f ? "" : ", ", r->id,
               is_alive(s, r->id) ? "true" : "false");
        json_int_or_null(r->match_index);
        printf(", \"lag\": ");
        json_int_or_null(r->lag);
        printf(", \"high_watermark\": ");
        json_int_or_null(r->high_watermark);
        printf("}");
        first_f = 0;
    }
    printf("]}");
}

static void print_json(const struct kappa_cluster_info *s)
{
    int n_alive = 0;
    char client[300];
    printf("{\n  \"nodes\": [");
    for (size_t i = 0; i < s->n_brokers; i++) {
        const struct kappa_broker_info *b = &s->brokers[i];
        n_alive += b->is_alive;
        printf("%s\n    {\"id\": %" PRId32 ", \"client_addr\": ",
               i > 0 ? "," : "", b->id);
        client_addr(b, client, sizeof client);
        json_str(client);
        printf(", \"cluster_addr\": ");
        json_str(b->cluster_addr);
        printf(", \"alive\": %s, \"state\": ", b->is_alive ? "true" : "false");
        json_str(or_dash(b->state));
        printf(", \"metadata_role\": ");
        json_str(or_dash(b->metadata_role));
        if (!b->is_alive || b->error[0] != '\0') {
            printf(", \"error\": ");
            json_str(b->error);
        }
        printf("}");
    }
    printf("\n  ],\n  \"alive_nodes\": %d,\n  \"metadata_leader\": ", n_alive);
    json_int_or_null(s->controller);
    printf(",\n  \"metadata_term\": ");
    json_int_or_null(s->controller_term);
    printf(",\n  \"partitions\": [");
    foreach_partition(s, json_partition);
    printf("\n  ]\n}\n");
}

static void text_partition(const struct kappa_cluster_info *s,
                           const char *topic,
                           const struct kappa_partition_state *ps, int first)
{
    char reps[128] = "", lags[256] = "", num[32];
    size_t ur = 0, ul = 0;
    if (first) {
        printf("\n%-24s %5s %6s %-12s %14s %12s  %s\n", "TOPIC", "PART",
               "LEADER", "REPLICAS", "HIGH_WATERMARK", "COMMIT_INDEX",
               "FOLLOWER_LAG (node:entries)");
    }
    for (size_t i = 0; i < ps->n_replicas && ur < sizeof reps; i++) {
        const struct kappa_replica_info *r = &ps->replicas[i];
        ur += (size_t)snprintf(reps + ur, sizeof reps - ur, "%s%" PRId32,
                               i > 0 ? "," : "", r->id);
        if (r->id == ps->leader || ul >= sizeof lags) {
            continue;
        }
        if (!is_alive(s, r->id)) {
            snprintf(num, sizeof num, "down");
        } else if (r->lag < 0) {
            snprintf(num, sizeof num, "?");
        } else {
            snprintf(num, sizeof num, "%" PRId64, r->lag);
        }
        ul += (size_t)snprintf(lags + ul, sizeof lags - ul, "%s%" PRId32 ":%s",
                               ul > 0 ? " " : "", r->id, num);
    }
    printf("%-24s %5" PRId32 " ", topic, ps->partition);
    if (ps->leader > 0) {
        printf("%6" PRId32 " ", ps->leader);
    } else {
        printf("%6s ", "none");
    }
    printf("%-12s ", reps);
    if (ps->high_watermark >= 0) {
        printf("%14" PRId64 " ", ps->high_watermark);
    } else {
        printf("%14s ", "-");
    }
    if (ps->commit_index >= 0) {
        printf("%12" PRId64 "  ", ps->commit_index);
    } else {
        printf("%12s  ", "-");
    }
    printf("%s\n", lags[0] != '\0' ? lags : "-");
}

static void print_text(const struct kappa_cluster_info *s)
{
    int n_alive = 0;
    char client[300];
    for (size_t i = 0; i < s->n_brokers; i++) {
        n_alive += s->brokers[i].is_alive;
    }
    printf("nodes: %d (%d alive)   metadata leader: ", (int)s->n_brokers,
           n_alive);
    if (s->controller > 0) {
        printf("node %" PRId32, s->controller);
        if (s->controller_term >= 0) {
            printf(" (term %" PRId64 ")", s->controller_term);
        }
    } else {
        printf("none");
    }
    printf("\n\n%4s  %-22s %-22s %-5s %-16s %s\n", "NODE", "CLIENT", "CLUSTER",
           "ALIVE", "STATE", "METADATA");
    for (size_t i = 0; i < s->n_brokers; i++) {
        const struct kappa_broker_info *b = &s->brokers[i];
        client_addr(b, client, sizeof client);
        printf("%4" PRId32 "  %-22s %-22s %-5s %-16s %s\n", b->id, client,
               or_dash(b->cluster_addr), b->is_alive ? "yes" : "no",
               or_dash(b->state), or_dash(b->metadata_role));
    }
    if (s->n_topics == 0) {
        printf("\nno topics\n");
        return;
    }
    foreach_partition(s, text_partition);
}

static int cluster_status(struct cli *cli, int argc, char **argv)
{
    struct kappa_cluster_info *s;
    struct kappa_client *c;
    int is_json = 0;
    for (int i = 0; i < argc; i++) {
        int g = cli_global_opt(cli, argc, argv, &i);
        if (g < 0) {
            return 2;
        }
        if (g > 0) {
            continue;
        }
        if (strcmp(argv[i], "--json") == 0) {
            is_json = 1;
        } else {
            return cli_fail("cluster status", "unexpected argument \"%s\"",
                            argv[i]) +
                   1;
        }
    }
    if ((c = cli_client_new(cli, "cluster status", NULL)) == NULL) {
        return 1;
    }
    if (kappa_cluster_status(c, &s, STATUS_TIMEOUT_MS) != 0) {
        cli_fail("cluster status", "no broker answered Metadata (%s)",
                 kappa_last_error(c));
        kappa_client_free(c);
        return 1;
    }
    if (is_json) {
        print_json(s);
    } else {
        print_text(s);
    }
    kappa_cluster_info_free(s);
    kappa_client_free(c);
    return fflush(stdout) == 0 ? 0 : 1;
}

int cmd_cluster(struct cli *cli, int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "status") == 0) {
        return cluster_status(cli, argc - 1, argv + 1);
    }
    return cli_fail("cluster", "expected status") + 1;
}
