#include "support.h"

#include "common/buf.h"
#include "common/mp.h"
#include "common/wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Every node started by this process, so an exit path (a failed assertion
 * included) can kill what the test started. */
#define TEST_NODES_MAX 16
static struct test_node *live_nodes[TEST_NODES_MAX];
static int cleanup_registered;

static void kill_live_nodes(void)
{
    for (int i = 0; i < TEST_NODES_MAX; i++) {
        if (live_nodes[i] != NULL && live_nodes[i]->pid > 0) {
            kill(live_nodes[i]->pid, SIGKILL);
            waitpid(live_nodes[i]->pid, NULL, 0);
            live_nodes[i]->pid = 0;
        }
    }
}

static void on_fatal_signal(int sig)
{
    kill_live_nodes();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void track(struct test_node *n)
{
    if (!cleanup_registered) {
        atexit(kill_live_nodes);
        signal(SIGTERM, on_fatal_signal);
        signal(SIGINT, on_fatal_signal);
        signal(SIGABRT, on_fatal_signal);
        signal(SIGSEGV, on_fatal_signal);
        signal(SIGPIPE, SIG_IGN);
        cleanup_registered = 1;
    }
    for (int i = 0; i < TEST_NODES_MAX; i++) {
        if (live_nodes[i] == n) {
            return;
        }
    }
    for (int i = 0; i < TEST_NODES_MAX; i++) {
        if (live_nodes[i] == NULL) {
            live_nodes[i] = n;
            return;
        }
    }
}

static void untrack(struct test_node *n)
{
    for (int i = 0; i < TEST_NODES_MAX; i++) {
        if (live_nodes[i] == n) {
            live_nodes[i] = NULL;
        }
    }
}

int64_t test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int test_timeout_ms(int base_ms)
{
    const char *m = getenv("KAPPA_TEST_TIMEOUT_MULTIPLIER");
    int k = m != NULL ? atoi(m) : 1;
    return base_ms * (k > 0 ? k : 1);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int test_wait_until(int (*cond)(void *arg), void *arg, int tries, int delay_ms)
{
    for (int i = 0; i < tries; i++) {
        if (cond(arg)) {
            return 1;
        }
        sleep_ms(delay_ms);
    }
    return cond(arg);
}

void test_tmpdir(char *dir, const char *tag)
{
    const char *base = getenv("TMPDIR");
    snprintf(dir, TEST_PATH_SIZE, "%s/kappa-%s-XXXXXX",
             base != NULL ? base : "/tmp", tag);
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "mkdtemp %s: %s\n", dir, strerror(errno));
        abort();
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void test_rmtree(const char *dir)
{
    if (dir[0] != '\0') {
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
}

static int read_addr_file(struct test_node *n)
{
    char path[TEST_PATH_SIZE + 32];
    FILE *f;
    char line[TEST_ADDR_SIZE];
    const char *colon;

    snprintf(path, sizeof path, "%s/kappad.addr", n->dir);
    f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    if (fgets(line, sizeof line, f) == NULL) {
        fclose(f);
        return 0;
    }
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    colon = strrchr(line, ':');
    if (colon == NULL) {
        return 0;
    }
    snprintf(n->addr, sizeof n->addr, "%s", line);
    n->port = atoi(colon + 1);
    return n->port > 0;
}

struct start_wait {
    struct test_node *node;
    int exited;
};

static int node_ready(void *arg)
{
    struct start_wait *w = arg;
    int status;
    if (waitpid(w->node->pid, &status, WNOHANG) == w->node->pid) {
        w->node->pid = 0;
        w->exited = 1;
        return 1;
    }
    return read_addr_file(w->node);
}

static void dump_log(const struct test_node *n)
{
    char cmd[TEST_PATH_SIZE + 32];
    snprintf(cmd, sizeof cmd, "tail -n 30 '%s' >&2", n->log);
    if (system(cmd) != 0) {
        fprintf(stderr, "(no log)\n");
    }
}

static int spawn(struct test_node *n, const char *const *extra_args)
{
    const char *argv[64];
    char listen[TEST_ADDR_SIZE];
    char addr_path[TEST_PATH_SIZE + 32];
    int argc = 0;
    struct start_wait w = {n, 0};

    snprintf(listen, sizeof listen, "127.0.0.1:%d", n->port);
    snprintf(addr_path, sizeof addr_path, "%s/kappad.addr", n->dir);
    unlink(addr_path);
    argv[argc++] = KAPPAD_PATH;
    argv[argc++] = "--data";
    argv[argc++] = n->dir;
    argv[argc++] = "--listen";
    argv[argc++] = listen;
    for (int i = 0; extra_args != NULL && extra_args[i] != NULL && argc < 62;
         i++) {
        argv[argc++] = extra_args[i];
    }
    argv[argc] = NULL;

    track(n);
    n->pid = fork();
    if (n->pid < 0) {
        return -1;
    }
    if (n->pid == 0) {
        int fd = open(n->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDERR_FILENO);
            dup2(fd, STDOUT_FILENO);
        }
        execv(KAPPAD_PATH, (char *const *)argv);
        _exit(127);
    }
    if (!test_wait_until(node_ready, &w, test_timeout_ms(1000), 10) ||
        w.exited) {
        fprintf(stderr, "kappad did not start (dir %s)\n", n->dir);
        dump_log(n);
        return -1;
    }
    return 0;
}

int test_node_start(struct test_node *n, const char *const *extra_args)
{
    char logdir[TEST_PATH_SIZE];
    memset(n, 0, sizeof *n);
    test_tmpdir(n->dir, "node");
    test_tmpdir(logdir, "log");
    snprintf(n->log, sizeof n->log, "%.400s/kappad.log", logdir);
    return spawn(n, extra_args);
}

int test_node_restart(struct test_node *n, const char *const *extra_args)
{
    if (n->pid > 0) {
        test_node_stop(n);
    }
    return spawn(n, extra_args);
}

struct exit_wait {
    pid_t pid;
    int status;
};

static int exited(void *arg)
{
    struct exit_wait *w = arg;
    return waitpid(w->pid, &w->status, WNOHANG) == w->pid;
}

int test_node_stop(struct test_node *n)
{
    struct exit_wait w = {n->pid, 0};
    if (n->pid <= 0) {
        return 0;
    }
    kill(n->pid, SIGTERM);
    if (!test_wait_until(exited, &w, test_timeout_ms(3000), 10)) {
        fprintf(stderr, "kappad %d ignored SIGTERM; killing it\n", n->pid);
        test_node_kill(n);
        return -1;
    }
    n->pid = 0;
    untrack(n);
    if (!WIFEXITED(w.status) || WEXITSTATUS(w.status) != 0) {
        dump_log(n);
        return WIFEXITED(w.status) ? WEXITSTATUS(w.status) : 128;
    }
    return 0;
}

void test_node_kill(struct test_node *n)
{
    if (n->pid > 0) {
        kill(n->pid, SIGKILL);
        waitpid(n->pid, NULL, 0);
        n->pid = 0;
    }
    untrack(n);
}

void test_node_destroy(struct test_node *n)
{
    char logdir[TEST_PATH_SIZE];
    char *slash;
    test_node_kill(n);
    if (getenv("KAPPA_TEST_KEEP") != NULL) {
        fprintf(stderr, "kept %s and %s\n", n->dir, n->log);
        return;
    }
    test_rmtree(n->dir);
    snprintf(logdir, sizeof logdir, "%s", n->log);
    slash = strrchr(logdir, '/');
    if (slash != NULL) {
        *slash = '\0';
        test_rmtree(logdir);
    }
}

struct kappa_client *test_client_new(const char *addr, const char *const *props)
{
    char errstr[256];
    struct kappa_conf *conf = kappa_conf_new();
    struct kappa_client *c = NULL;

    if (conf == NULL || kappa_conf_set(conf, "bootstrap.servers", addr, errstr,
                                       sizeof errstr) != 0) {
        fprintf(stderr, "conf: %s\n", errstr);
        abort();
    }
    for (int i = 0; props != NULL && props[i] != NULL; i += 2) {
        if (kappa_conf_set(conf, props[i], props[i + 1], errstr,
                           sizeof errstr) != 0) {
            fprintf(stderr, "conf %s: %s\n", props[i], errstr);
            abort();
        }
    }
    if (kappa_client_new(conf, &c, errstr, sizeof errstr) != 0) {
        fprintf(stderr, "client: %s\n", errstr);
        abort();
    }
    return c;
}

int test_connect_raw(const char *addr)
{
    char host[TEST_ADDR_SIZE];
    const char *colon = strrchr(addr, ':');
    struct sockaddr_in sa;
    int fd, one = 1;

    if (colon == NULL || (size_t)(colon - addr) >= sizeof host) {
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        return -1;
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* ---- Clusters ------------------------------------------------------------ */

int test_free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port = -1;
    if (fd < 0) {
        return -1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0) {
        port = ntohs(sa.sin_port);
    }
    close(fd);
    return port;
}

static int read_full(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = read(fd, p, n);
        if (k <= 0) {
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Reads the partitions array of one topic into leaders. */
static int read_leaders(struct mp_reader *r, int *leaders, int n_leaders)
{
    uint32_t n, m;
    if (mp_read_array(r, &n) != 0) {
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        int64_t id = -1, leader = -1;
        if (mp_read_map(r, &m) != 0) {
            return -1;
        }
        for (uint32_t j = 0; j < m; j++) {
            const char *k;
            uint32_t kl;
            if (mp_read_str(r, &k, &kl) != 0) {
                return -1;
            }
            if (mp_key_is(k, kl, "partition")) {
                (void)mp_read_int(r, &id);
            } else if (mp_key_is(k, kl, "leader")) {
                (void)mp_read_int(r, &leader);
            } else if (mp_skip(r) != 0) {
                return -1;
            }
        }
        if (id >= 0 && id < n_leaders) {
            leaders[id] = (int)leader;
        }
    }
    return 0;
}

static int read_topics(struct mp_reader *r, int *leaders, int n_leaders)
{
    uint32_t n, m;
    if (mp_read_array(r, &n) != 0) {
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (mp_read_map(r, &m) != 0) {
            return -1;
        }
        for (uint32_t j = 0; j < m; j++) {
            const char *k;
            uint32_t kl;
            if (mp_read_str(r, &k, &kl) != 0) {
                return -1;
            }
            if (mp_key_is(k, kl, "partitions")) {
                if (read_leaders(r, leaders, n_leaders) != 0) {
                    return -1;
                }
            } else if (mp_skip(r) != 0) {
                return -1;
            }
        }
    }
    return 0;
}

static int parse_metadata(struct mp_reader *r, int *n_brokers, int *controller,
                          int *leaders, int n_leaders)
{
    uint32_t n, nb;
    if (mp_read_map(r, &n) != 0) {
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kl;
        int64_t v;
        if (mp_read_str(r, &k, &kl) != 0) {
            return -1;
        }
        if (mp_key_is(k, kl, "brokers")) {
            if (mp_read_array(r, &nb) != 0) {
                return -1;
            }
            *n_brokers = (int)nb;
            for (uint32_t j = 0; j < nb; j++) {
                if (mp_skip(r) != 0) {
                    return -1;
                }
            }
        } else if (mp_key_is(k, kl, "controller")) {
            if (mp_read_int(r, &v) != 0) {
                return -1;
            }
            *controller = (int)v;
        } else if (mp_key_is(k, kl, "topics")) {
            if (read_topics(r, leaders, n_leaders) != 0) {
                return -1;
            }
        } else if (mp_skip(r) != 0) {
            return -1;
        }
    }
    return 0;
}

int test_metadata(const char *addr, int *n_brokers, int *controller,
                  const char *topic, int *leaders, int n_leaders)
{
    struct buf b = {0};
    struct mp_writer w;
    struct wire_response_header h;
    struct mp_reader r;
    uint8_t hdr[4];
    uint8_t *body = NULL;
    uint32_t len;
    size_t start;
    int fd = test_connect_raw(addr);
    int rv = -1;

    for (int i = 0; i < n_leaders; i++) {
        leaders[i] = -1;
    }
    *n_brokers = 0;
    *controller = -1;
    if (fd < 0) {
        return -1;
    }
    mp_writer_init(&w, &b);
    start = wire_frame_begin(&b);
    wire_request_begin(&w, WIRE_API_METADATA, 0, 7);
    mp_put_map(&w, topic != NULL ? 1 : 0);
    if (topic != NULL) {
        mp_put_str(&w, "topics");
        mp_put_array(&w, 1);
        mp_put_str(&w, topic);
    }
    wire_frame_end(&b, start);
    if (w.err == 0 && write(fd, b.data, b.len) == (ssize_t)b.len &&
        read_full(fd, hdr, 4) == 0) {
        len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
              (uint32_t)hdr[2] << 8 | hdr[3];
        body = len < (1u << 24) ? malloc(len) : NULL;
        if (body != NULL && read_full(fd, body, len) == 0 &&
            wire_response_decode(body, len, &h, &r) == 0 && h.error_code == 0) {
            rv = parse_metadata(&r, n_brokers, controller, leaders, n_leaders);
        }
    }
    free(body);
    buf_free(&b);
    close(fd);
    return rv;
}

static void cluster_args(struct test_cluster *c, int i, const char **argv)
{
    int k = 0;
    argv[k++] = "--node.id";
    argv[k++] = c->ids[i];
    argv[k++] = "--cluster.listen";
    argv[k++] = c->cluster_listen[i];
    argv[k++] = "--cluster.voters";
    argv[k++] = c->voters;
    argv[k++] = "--raft.election.timeout.ms";
    argv[k++] = "1000";
    argv[k++] = "--raft.heartbeat.timeout.ms";
    argv[k++] = "100";
    argv[k] = NULL;
}

struct ready_wait {
    const char *addr;
    int n_brokers;
};

static int node_cluster_ready(void *arg)
{
    struct ready_wait *w = arg;
    int n, controller, leader;
    return test_metadata(w->addr, &n, &controller, NULL, &leader, 0) == 0 &&
           controller > 0 && n >= w->n_brokers;
}

int test_cluster_wait_ready(struct test_cluster *c, int i, int n_brokers)
{
    struct ready_wait w = {c->nodes[i].addr, n_brokers};
    return test_wait_until(node_cluster_ready, &w, test_timeout_ms(300), 50)
               ? 0
               : -1;
}

int test_cluster_start(struct test_cluster *c, int n)
{
    const char *argv[16];
    size_t used = 0;
    memset(c, 0, sizeof *c);
    if (n < 1 || n > TEST_CLUSTER_MAX) {
        return -1;
    }
    c->n = n;
    for (int i = 0; i < n; i++) {
        c->cluster_port[i] = test_free_port();
        if (c->cluster_port[i] <= 0) {
            return -1;
        }
        snprintf(c->ids[i], sizeof c->ids[i], "%d", i + 1);
        snprintf(c->cluster_listen[i], sizeof c->cluster_listen[i],
                 "127.0.0.1:%d", c->cluster_port[i]);
        used += (size_t)snprintf(c->voters + used, sizeof c->voters - used,
                                 "%s%d@127.0.0.1:%d", i > 0 ? "," : "", i + 1,
                                 c->cluster_port[i]);
    }
    for (int i = 0; i < n; i++) {
        cluster_args(c, i, argv);
        if (test_node_start(&c->nodes[i], argv) != 0) {
            return -1;
        }
    }
    used = 0;
    for (int i = 0; i < n; i++) {
        used +=
            (size_t)snprintf(c->bootstrap + used, sizeof c->bootstrap - used,
                             "%s%s", i > 0 ? "," : "", c->nodes[i].addr);
        if (test_cluster_wait_ready(c, i, n) != 0) {
            fprintf(stderr, "cluster node %d not ready\n", i + 1);
            dump_log(&c->nodes[i]);
            return -1;
        }
    }
    return 0;
}

int test_cluster_restart_node(struct test_cluster *c, int i)
{
    const char *argv[16];
    cluster_args(c, i, argv);
    return test_node_restart(&c->nodes[i], argv);
}

void test_cluster_destroy(struct test_cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        test_node_destroy(&c->nodes[i]);
    }
}
