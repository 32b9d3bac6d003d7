/* kappa dev up / dev down and kappa cluster status: a 3-node and a 1-node
 * local cluster started by the CLI, used through the bootstrap list it
 * prints last (topic create, produce, consume), inspected with
 * `cluster status --json`, and stopped with no kappad process left. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "tests/support/support.h"

static char workdir[TEST_PATH_SIZE];
static char clusterdir[TEST_PATH_SIZE + 32];

static int setup(void **state)
{
    (void)state;
    test_tmpdir(workdir, "dev");
    return 0;
}

static int run(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Runs `kappa ARGS` through the shell in workdir; stdout goes to out
 * (NUL-terminated), stderr is appended to workdir/stderr.log and echoed on
 * failure. Returns the exit status. */
static int run(char *out, size_t cap, const char *fmt, ...)
{
    char args[2048], cmd[4096];
    va_list ap;
    FILE *f;
    size_t n;
    int status;

    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "cd '%s' && %s %s 2>>stderr.log", workdir,
             KAPPA_CLI_PATH, args);
    f = popen(cmd, "r");
    assert_non_null(f);
    n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    status = pclose(f);
    status = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    if (status != 0) {
        snprintf(cmd, sizeof cmd, "tail -n 30 '%s/stderr.log' >&2", workdir);
        fprintf(stderr, "kappa %s: exit %d; stderr:\n", args, status);
        (void)system(cmd);
    }
    return status;
}

/* The process exists and is not a zombie. */
static int proc_alive(pid_t pid)
{
    char path[64], buf[512];
    FILE *f;
    size_t n;
    char *paren;
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    if ((f = fopen(path, "r")) == NULL) {
        return 0;
    }
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    paren = strrchr(buf, ')');
    return paren != NULL && paren[1] == ' ' && paren[2] != 'Z' &&
           paren[2] != 'X';
}

/* Live processes whose command line mentions dir. */
static int procs_using(const char *dir)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int count = 0;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        char path[300], buf[8192];
        long pid = strtol(e->d_name, NULL, 10);
        FILE *f;
        size_t n;
        if (pid <= 0) {
            continue;
        }
        snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
        if ((f = fopen(path, "r")) == NULL) {
            continue;
        }
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i < n; i++) {
            buf[i] = buf[i] == '\0' ? ' ' : buf[i];
        }
        buf[n] = '\0';
        if (strstr(buf, dir) != NULL && proc_alive((pid_t)pid)) {
            count++;
        }
    }
    closedir(d);
    return count;
}

static pid_t read_pid(int node)
{
    char path[TEST_PATH_SIZE + 64];
    long pid = 0;
    FILE *f;
    snprintf(path, sizeof path, "%s/node%d.pid", clusterdir, node);
    f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    if (fscanf(f, "%ld", &pid) != 1) {
        pid = 0;
    }
    fclose(f);
    return (pid_t)pid;
}

/* The last non-empty line of out. */
static const char *last_line(char *out)
{
    size_t n = strlen(out);
    while (n > 0 && out[n - 1] == '\n') {
        out[--n] = '\0';
    }
    char *nl = strrchr(out, '\n');
    return nl != NULL ? nl + 1 : out;
}

static int count_of(const char *s, const char *needle)
{
    int k = 0;
    for (const char *p = strstr(s, needle); p != NULL;
         p = strstr(p + 1, needle)) {
        k++;
    }
    return k;
}

static long json_int(const char *s, const char *key)
{
    char k[64];
    const char *p;
    snprintf(k, sizeof k, "\"%s\": ", key);
    p = strstr(s, k);
    return p != NULL ? strtol(p + strlen(k), NULL, 10) : -1;
}

/* Checks a `cluster status --json` answer: n alive nodes, a metadata
 * leader, and every partition of topic with a leader and rf replicas.
 * Returns 1 when it all holds. */
static int status_ok(const char *json, int n, const char *topic,
                     int n_partitions, int rf)
{
    char needle[300];
    int seen = 0;
    long leader = json_int(json, "metadata_leader");
    if (count_of(json, "\"alive\": true") < n ||
        json_int(json, "alive_nodes") != n || leader < 1 || leader > n) {
        return 0;
    }
    snprintf(needle, sizeof needle, "{\"topic\": \"%s\"", topic);
    for (const char *p = strstr(json, needle); p != NULL;
         p = strstr(p + 1, needle)) {
        const char *end = strchr(p, '\n');
        const char *reps = strstr(p, "\"replicas\": [");
        long pl = json_int(p, "leader");
        int commas = 0;
        if (pl < 1 || pl > n || reps == NULL || (end != NULL && reps > end)) {
            return 0;
        }
        for (reps += 13; *reps != ']' && *reps != '\0'; reps++) {
            commas += *reps == ',';
        }
        if (commas + 1 != rf || json_int(p, "high_watermark") < 0) {
            return 0;
        }
        seen++;
    }
    return seen == n_partitions;
}

struct status_wait {
    int n, partitions, rf;
    const char *boot;
    char *out;
    size_t cap;
};

static int status_cond(void *arg)
{
    struct status_wait *w = arg;
    return run(w->out, w->cap, "-b %s cluster status --json", w->boot) == 0 &&
           status_ok(w->out, w->n, "demo", w->partitions, w->rf);
}

static void write_input(const char *text)
{
    char path[TEST_PATH_SIZE + 16];
    FILE *f;
    snprintf(path, sizeof path, "%s/in.txt", workdir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

struct topic_wait {
    const char *boot;
    char *out;
    size_t cap;
};

/* Every node of the bootstrap list describes topic demo. */
static int topic_everywhere(void *arg)
{
    struct topic_wait *w = arg;
    char list[512];
    char *save = NULL;
    snprintf(list, sizeof list, "%s", w->boot);
    for (char *a = strtok_r(list, ",", &save); a != NULL;
         a = strtok_r(NULL, ",", &save)) {
        if (run(w->out, w->cap, "-b %s topic describe demo", a) != 0) {
            return 0;
        }
    }
    return 1;
}

/* The libkappa calls behind dev up and cluster status, on the bootstrap
 * list: n brokers and a metadata leader, topic demo with 3 partitions of rf
 * replicas, and in the merged status every broker alive with a metadata
 * role. */
static void check_cluster_api(const char *boot, int n, int rf)
{
    struct kappa_conf *conf = kappa_conf_new();
    struct kappa_client *c;
    struct kappa_cluster_info *info;
    const struct kappa_topic_state *demo = NULL;
    char err[256];

    assert_non_null(conf);
    assert_int_equal(
        kappa_conf_set(conf, "bootstrap.servers", boot, err, sizeof err), 0);
    assert_int_equal(kappa_client_new(conf, &c, err, sizeof err), 0);
    assert_int_equal(kappa_describe_cluster(c, &info, test_timeout_ms(10000)),
                     0);
    assert_int_equal(info->n_brokers, n);
    assert_true(info->controller >= 1 && info->controller <= n);
    assert_int_equal(info->controller_term, -1); /* status only */
    for (size_t i = 0; i < info->n_topics; i++) {
        if (strcmp(info->topics[i].name, "demo") == 0) {
            demo = &info->topics[i];
        }
    }
    assert_non_null(demo);
    assert_int_equal(demo->n_partitions, 3);
    for (size_t p = 0; p < demo->n_partitions; p++) {
        assert_int_equal(demo->partitions[p].n_replicas, rf);
    }
    kappa_cluster_info_free(info);

    assert_int_equal(kappa_cluster_status(c, &info, test_timeout_ms(10000)), 0);
    assert_int_equal(info->n_brokers, n);
    for (size_t i = 0; i < info->n_brokers; i++) {
        assert_true(info->brokers[i].is_alive);
        assert_string_equal(info->brokers[i].error, "");
        assert_true(info->brokers[i].metadata_role[0] != '\0');
    }
    if (n > 1) {
        assert_true(info->controller_term >= 1);
    }
    kappa_cluster_info_free(info);
    kappa_client_free(c);
}

static void dev_cycle(int n, int rf)
{
    struct topic_wait tw;
    static char out[1 << 16];
    char boot[512];
    pid_t pids[5];
    int n_addrs = 1;
    struct status_wait w;

    snprintf(clusterdir, sizeof clusterdir, "%s/c%d", workdir, n);
    assert_int_equal(run(out, sizeof out,
                         "dev up --nodes %d --dir '%s' --timeout-ms %d", n,
                         clusterdir, test_timeout_ms(60000)),
                     0);
    snprintf(boot, sizeof boot, "%s", last_line(out));
    for (const char *p = boot; *p != '\0'; p++) {
        n_addrs += *p == ',';
    }
    assert_int_equal(n_addrs, n);
    assert_non_null(strstr(boot, "127.0.0.1:"));
    for (int i = 0; i < n; i++) {
        pids[i] = read_pid(i + 1);
        assert_true(pids[i] > 1);
        assert_true(proc_alive(pids[i]));
    }
    /* A second up on a running directory is refused. */
    assert_int_not_equal(
        run(out, sizeof out, "dev up --nodes %d --dir '%s'", n, clusterdir), 0);

    assert_int_equal(run(out, sizeof out,
                         "-b %s topic create demo --partitions 3 "
                         "--replication-factor %d",
                         boot, rf),
                     0);
    /* The create is acknowledged once committed on the metadata leader;
     * the other nodes apply it a moment later. */
    tw = (struct topic_wait){boot, out, sizeof out};
    assert_true(
        test_wait_until(topic_everywhere, &tw, test_timeout_ms(100), 100));
    write_input("k1:alpha\nk2:beta\nk3:gamma\nk4:delta\nk5:epsilon\n");
    assert_int_equal(run(out, sizeof out,
                         "-b %s produce demo --key-separator : < in.txt", boot),
                     0);
    assert_int_equal(run(out, sizeof out,
                         "-b %s consume demo --from-beginning --count 5 "
                         "--format '%%k=%%v' | sort",
                         boot),
                     0);
    assert_string_equal(out, "k1=alpha\nk2=beta\nk3=gamma\nk4=delta\n"
                             "k5=epsilon\n");

    w = (struct status_wait){n, 3, rf, boot, out, sizeof out};
    if (!test_wait_until(status_cond, &w, test_timeout_ms(100), 100)) {
        fprintf(stderr, "cluster status --json:\n%s\n", out);
        fail_msg("cluster status never showed the expected cluster");
    }
    /* The text form names the leader and every node. */
    assert_int_equal(run(out, sizeof out, "-b %s cluster status", boot), 0);
    assert_non_null(strstr(out, "metadata leader: node "));
    assert_non_null(strstr(out, "demo"));
    check_cluster_api(boot, n, rf);

    assert_int_equal(run(out, sizeof out, "dev down --dir '%s'", clusterdir),
                     0);
    for (int i = 0; i < n; i++) {
        assert_false(proc_alive(pids[i]));
        assert_int_equal(read_pid(i + 1), 0);
    }
    assert_int_equal(procs_using(clusterdir), 0);
    /* Idempotent. */
    assert_int_equal(run(out, sizeof out, "dev down --dir '%s'", clusterdir),
                     0);
}

static void test_dev_three_nodes(void **state)
{
    (void)state;
    dev_cycle(3, 3);
}

static void test_dev_one_node(void **state)
{
    (void)state;
    dev_cycle(1, 1);
}

static int teardown(void **state)
{
    char cmd[TEST_PATH_SIZE * 2 + 64];
    (void)state;
    /* Whatever a failed test left running. */
    for (int n = 1; n <= 5; n++) {
        snprintf(cmd, sizeof cmd, "%s dev down --dir '%s/c%d' 2>/dev/null",
                 KAPPA_CLI_PATH, workdir, n);
        (void)system(cmd);
    }
    test_rmtree(workdir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dev_three_nodes),
        cmocka_unit_test(test_dev_one_node),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
