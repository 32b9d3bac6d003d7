/* kappa dev up | down: a local cluster on 127.0.0.1 for development, demos
 * and tests.
 *
 * Layout under DIR (made absolute):
 *   nodeI.conf  kappad config file of node I (1-based): node.id, data,
 *               listen, and in cluster mode cluster.listen, cluster.voters
 *               and short Raft timeouts. Kept, so `dev up` on the same DIR
 *               restarts the same cluster with its data and ports.
 *   nodeI/      its data directory
 *   nodeI.log   its stdout and stderr
 *   nodeI.pid   its pid while running (removed by dev down)
 *
 * up: writes the configs (free ports, or --base-port P: client ports
 * P..P+N-1, cluster ports P+N..P+2N-1), starts each kappad detached (own
 * session, stdin /dev/null, output to the log), and waits, bounded, until
 * every node answers Metadata with a metadata leader and all N brokers
 * registered (kappa_describe_cluster with that node as the only bootstrap
 * server). Progress goes to stderr; the last line on stdout is the
 * bootstrap list. On failure (a node exits, the timeout passes, SIGINT) it
 * stops every node it started and says why, with the tail of the log.
 *
 * down: SIGTERM to every node with a pid file whose process is still that
 * node (its command line names DIR/nodeI.conf: a reused pid is never
 * signalled), a bounded wait, SIGKILL for stragglers, pid files removed.
 * Nothing running is not an error. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define DEV_NODES_MAX       5
#define DEV_UP_TIMEOUT_MS   60000
#define DEV_DOWN_TIMEOUT_MS 15000
#define DEV_KILL_WAIT_MS    5000
#define DEV_POLL_MS         100
#define DEV_ASK_TIMEOUT_MS  1000
#define DEV_ELECTION_MS     "1000"
#define DEV_HEARTBEAT_MS    "100"
#define DEV_PATH_BYTES      (PATH_MAX + 64)
#define DEV_LOG_TAIL_LINES  15

struct dev_node {
    int id;
    char conf[DEV_PATH_BYTES];
    char data[DEV_PATH_BYTES];
    char log[DEV_PATH_BYTES];
    char pidfile[DEV_PATH_BYTES];
    char client_addr[64];
    char cluster_addr[64];
    pid_t pid;                   /* started by this run (0: not) */
    struct kappa_client *client; /* asks this node alone (wait_ready) */
    int is_ready;
    int is_exited; /* reaped by this run */
    int wait_status;
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !interrupted) {
    }
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    va_list ap;
    fputs("kappa dev: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int mkdir_p(const char *path)
{
    char tmp[DEV_PATH_BYTES];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
                return -1;
            }
            *p = '/';
        }
    }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static void node_paths(struct dev_node *n, const char *dir, int id)
{
    n->id = id;
    snprintf(n->conf, sizeof n->conf, "%s/node%d.conf", dir, id);
    snprintf(n->data, sizeof n->data, "%s/node%d", dir, id);
    snprintf(n->log, sizeof n->log, "%s/node%d.log", dir, id);
    snprintf(n->pidfile, sizeof n->pidfile, "%s/node%d.pid", dir, id);
}

/* ---- Processes ---------------------------------------------------------- */

/* Reads the pid in path; 0 when absent or unreadable. */
static pid_t read_pidfile(const char *path)
{
    FILE *f = fopen(path, "r");
    long v = 0;
    if (f == NULL) {
        return 0;
    }
    if (fscanf(f, "%ld", &v) != 1 || v <= 1 || v > INT_MAX) {
        v = 0;
    }
    fclose(f);
    return (pid_t)v;
}

static int write_pidfile(const char *path, pid_t pid)
{
    char tmp[DEV_PATH_BYTES + 8];
    FILE *f;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if ((f = fopen(tmp, "w")) == NULL) {
        return -1;
    }
    fprintf(f, "%ld\n", (long)pid);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* 1 when pid is a live (not zombie) process whose command line has conf
 * as an argument: the node of that config file, not a reused pid. */
static int is_our_node(pid_t pid, const char *conf)
{
    char path[64], buf[8192], stat[512];
    size_t n;
    FILE *f;
    char *paren;

    if (pid <= 1) {
        return 0;
    }
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    if ((f = fopen(path, "r")) == NULL) {
        return 0;
    }
    n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = '\0';
    paren = strrchr(stat, ')');
    if (paren == NULL || paren[1] != ' ' || paren[2] == 'Z' ||
        paren[2] == 'X') {
        return 0; /* exited; a zombie waiting for its parent to reap */
    }
    snprintf(path, sizeof path, "/proc/%ld/cmdline", (long)pid);
    if ((f = fopen(path, "r")) == NULL) {
        return 0;
    }
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    for (size_t i = 0; i < n; i += strlen(buf + i) + 1) {
        if (strcmp(buf + i, conf) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Reaps n->pid if it is our child and has exited. */
static void reap(struct dev_node *n)
{
    if (n->pid > 0 && !n->is_exited &&
        waitpid(n->pid, &n->wait_status, WNOHANG) == n->pid) {
        n->is_exited = 1;
    }
}

static int is_running(struct dev_node *n, pid_t pid)
{
    reap(n);
    if (n->pid == pid) {
        /* Our child (maybe not yet exec'd): alive until reaped. */
        return !n->is_exited;
    }
    return is_our_node(pid, n->conf);
}

/* SIGTERM, wait up to timeout_ms, SIGKILL, wait. pids[i] == 0 is skipped.
 * Returns the number still running at the end. */
static int stop_pids(struct dev_node *nodes, pid_t *pids, int n, int timeout_ms,
                     int verbose)
{
    int64_t deadline = mono_ms() + timeout_ms;
    int left = 0;
    for (int i = 0; i < n; i++) {
        if (pids[i] > 0 && is_running(&nodes[i], pids[i])) {
            (void)kill(pids[i], SIGTERM);
        }
    }
    for (int phase = 0; phase < 2; phase++) {
        for (;;) {
            left = 0;
            for (int i = 0; i < n; i++) {
                left += pids[i] > 0 && is_running(&nodes[i], pids[i]);
            }
            if (left == 0 || mono_ms() >= deadline) {
                break;
            }
            sleep_ms(50);
        }
        if (left == 0 || phase == 1) {
            break;
        }
        for (int i = 0; i < n; i++) {
            if (pids[i] > 0 && is_running(&nodes[i], pids[i])) {
                if (verbose) {
                    note("node %d (pid %ld) ignored SIGTERM: SIGKILL",
                         nodes[i].id, (long)pids[i]);
                }
                (void)kill(pids[i], SIGKILL);
            }
        }
        deadline = mono_ms() + DEV_KILL_WAIT_MS;
    }
    return left;
}

/* ---- dev up -------------------------------------------------------------- */

static int resolve_kappad(const char *flag, char *out, size_t cap)
{
    char self[PATH_MAX];
    const char *path;
    ssize_t k;

    if (flag != NULL) {
        if (access(flag, X_OK) != 0) {
            return cli_fail("dev up", "--kappad %s: not executable", flag);
        }
        if (realpath(flag, out) == NULL) {
            snprintf(out, cap, "%s", flag);
        }
        return 0;
    }
    k = readlink("/proc/self/exe", self, sizeof self - 1);
    if (k > 0) {
        char *slash;
        self[k] = '\0';
        slash = strrchr(self, '/');
        if (slash != NULL) {
            snprintf(out, cap, "%.*s/kappad", (int)(slash - self), self);
            if (access(out, X_OK) == 0) {
                return 0;
            }
        }
    }
    path = getenv("PATH");
    while (path != NULL && *path != '\0') {
        const char *colon = strchr(path, ':');
        size_t len = colon != NULL ? (size_t)(colon - path) : strlen(path);
        if (len > 0 && len < PATH_MAX) {
            snprintf(out, cap, "%.*s/kappad", (int)len, path);
            if (access(out, X_OK) == 0) {
                return 0;
            }
        }
        path = colon != NULL ? colon + 1 : NULL;
    }
    return cli_fail("dev up", "kappad not found next to kappa or on PATH "
                              "(use --kappad PATH)");
}

/* Reserves n distinct free ports on 127.0.0.1: all sockets stay bound
 * until every port is read, so no two are equal. */
static int free_ports(int *ports, int n)
{
    int fds[2 * DEV_NODES_MAX];
    int rv = 0;
    for (int i = 0; i < n; i++) {
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fds[i] < 0 ||
            bind(fds[i], (struct sockaddr *)&sa, sizeof sa) != 0 ||
            getsockname(fds[i], (struct sockaddr *)&sa, &len) != 0) {
            rv = -1;
            ports[i] = 0;
        } else {
            ports[i] = ntohs(sa.sin_port);
        }
    }
    for (int i = 0; i < n; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    return rv;
}

static int port_is_free(int port)
{
    struct sockaddr_in sa;
    int one = 1, ok;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return 0;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static int write_conf(const struct dev_node *n, int n_nodes, const char *voters)
{
    char tmp[DEV_PATH_BYTES + 8];
    FILE *f;
    snprintf(tmp, sizeof tmp, "%s.tmp", n->conf);
    if ((f = fopen(tmp, "w")) == NULL) {
        return -1;
    }
    fprintf(f,
            "# written by kappa dev up: node %d of a %d-node local cluster\n"
            "node.id = %d\ndata = %s\nlisten = %s\n",
            n->id, n_nodes, n->id, n->data, n->client_addr);
    if (n_nodes > 1) {
        fprintf(f,
                "cluster.listen = %s\ncluster.voters = %s\n"
                "raft.election.timeout.ms = " DEV_ELECTION_MS "\n"
                "raft.heartbeat.timeout.ms = " DEV_HEARTBEAT_MS "\n",
                n->cluster_addr, voters);
    }
    if (fclose(f) != 0 || rename(tmp, n->conf) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Reads "key = value" from an existing config into out ("" if absent). */
static void conf_value(const char *conf, const char *key, char *out, size_t cap)
{
    char line[4096];
    size_t kl = strlen(key);
    FILE *f = fopen(conf, "r");
    out[0] = '\0';
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        char *p = line, *end;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (strncmp(p, key, kl) != 0) {
            continue;
        }
        p += kl;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (*p++ != '=') {
            continue;
        }
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        end = p + strlen(p);
        while (end > p && (end[-1] == '\n' || end[-1] == '\r' ||
                           end[-1] == ' ' || end[-1] == '\t')) {
            *--end = '\0';
        }
        snprintf(out, cap, "%s", p);
    }
    if (f != NULL) {
        fclose(f);
    }
}

static int count_existing(const char *dir)
{
    char path[DEV_PATH_BYTES];
    int k = 0;
    for (int i = 1; i <= 64; i++) {
        snprintf(path, sizeof path, "%s/node%d.conf", dir, i);
        if (access(path, F_OK) != 0) {
            break;
        }
        k = i;
    }
    return k;
}

/* Fills the addresses: from existing configs, or new ports. */
static int plan_nodes(struct dev_node *nodes, int n, const char *dir,
                      long long base_port)
{
    int existing = count_existing(dir);
    int ports[2 * DEV_NODES_MAX];
    char voters[512];
    size_t used = 0;

    if (existing > 0) {
        if (existing != n) {
            return cli_fail("dev up",
                            "%s already holds a %d-node cluster (use --nodes "
                            "%d, or remove the directory)",
                            dir, existing, existing);
        }
        for (int i = 0; i < n; i++) {
            conf_value(nodes[i].conf, "listen", nodes[i].client_addr,
                       sizeof nodes[i].client_addr);
            conf_value(nodes[i].conf, "cluster.listen", nodes[i].cluster_addr,
                       sizeof nodes[i].cluster_addr);
            if (nodes[i].client_addr[0] == '\0') {
                return cli_fail("dev up", "%s: no listen address",
                                nodes[i].conf);
            }
        }
        note("reusing the %d-node cluster in %s (its ports and data)", n, dir);
        return 0;
    }
    if (base_port > 0) {
        for (int i = 0; i < 2 * n; i++) {
            ports[i] = (int)base_port + i;
            if (!port_is_free(ports[i])) {
                return cli_fail("dev up", "port %d on 127.0.0.1 is in use",
                                ports[i]);
            }
        }
    } else if (free_ports(ports, 2 * n) != 0) {
        return cli_fail("dev up", "cannot find free ports on 127.0.0.1: %s",
                        strerror(errno));
    }
    for (int i = 0; i < n; i++) {
        snprintf(nodes[i].client_addr, sizeof nodes[i].client_addr,
                 "127.0.0.1:%d", ports[i]);
        snprintf(nodes[i].cluster_addr, sizeof nodes[i].cluster_addr,
                 n > 1 ? "127.0.0.1:%d" : "", ports[n + i]);
        used +=
            (size_t)snprintf(voters + used, sizeof voters - used, "%s%d@%s",
                             i > 0 ? "," : "", i + 1, nodes[i].cluster_addr);
    }
    for (int i = 0; i < n; i++) {
        if (write_conf(&nodes[i], n, voters) != 0) {
            return cli_fail("dev up", "%s: %s", nodes[i].conf, strerror(errno));
        }
    }
    return 0;
}

static pid_t spawn(const char *kappad, const struct dev_node *n)
{
    pid_t pid = fork();
    if (pid != 0) {
        return pid; /* parent, or -1 */
    }
    /* Child: its own session (no terminal signals), detached output. */
    {
        int in = open("/dev/null", O_RDONLY);
        int out = open(n->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        sigset_t none;
        sigemptyset(&none);
        (void)sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        (void)setsid();
        if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 ||
            dup2(out, 2) < 0) {
            _exit(126);
        }
        closefrom(3);
        execl(kappad, "kappad", "--config", n->conf, (char *)NULL);
        dprintf(2, "kappa dev: exec %s: %s\n", kappad, strerror(errno));
        _exit(127);
    }
}

static void print_log_tail(const char *path)
{
    char *lines[DEV_LOG_TAIL_LINES] = {0};
    char line[1024];
    int k = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        free(lines[k % DEV_LOG_TAIL_LINES]);
        lines[k % DEV_LOG_TAIL_LINES] = strdup(line);
        k++;
    }
    fclose(f);
    fprintf(stderr, "--- last lines of %s ---\n", path);
    for (int i = k > DEV_LOG_TAIL_LINES ? k - DEV_LOG_TAIL_LINES : 0; i < k;
         i++) {
        char *l = lines[i % DEV_LOG_TAIL_LINES];
        fputs(l != NULL ? l : "", stderr);
        free(l);
        lines[i % DEV_LOG_TAIL_LINES] = NULL;
    }
    fprintf(stderr, "---\n");
}

/* Metadata on one node: 1 when it sees a controller and >= n brokers. */
static int node_ready(struct cli *cli, struct dev_node *n, int n_nodes,
                      int *controller)
{
    struct kappa_cluster_info *info;
    int ok;
    if (n->client == NULL) {
        struct cli one = *cli;
        one.brokers = n->client_addr;
        if ((n->client = cli_client_new(&one, "dev up", NULL)) == NULL) {
            return 0;
        }
    }
    if (kappa_describe_cluster(n->client, &info, DEV_ASK_TIMEOUT_MS) != 0) {
        return 0;
    }
    *controller = info->controller;
    ok = info->controller > 0 && info->n_brokers >= (size_t)n_nodes;
    kappa_cluster_info_free(info);
    return ok;
}

static void free_clients(struct dev_node *nodes, int n)
{
    for (int i = 0; i < n; i++) {
        kappa_client_free(nodes[i].client);
        nodes[i].client = NULL;
    }
}

static void stop_started(struct dev_node *nodes, int n)
{
    pid_t pids[DEV_NODES_MAX];
    int any = 0;
    for (int i = 0; i < n; i++) {
        pids[i] = nodes[i].pid;
        any |= pids[i] > 0;
    }
    if (!any) {
        return;
    }
    note("stopping the nodes started");
    (void)stop_pids(nodes, pids, n, DEV_DOWN_TIMEOUT_MS, 1);
    for (int i = 0; i < n; i++) {
        if (nodes[i].pid > 0) {
            unlink(nodes[i].pidfile);
        }
    }
}

static int wait_ready(struct cli *cli, struct dev_node *nodes, int n,
                      int timeout_ms)
{
    int64_t start = mono_ms();
    int64_t next_note = start + 5000;
    int controller = -1;

    note("waiting for %s (up to %d s)",
         n > 1 ? "a metadata leader and every broker" : "the node",
         timeout_ms / 1000);
    for (;;) {
        int n_ready = 0;
        for (int i = 0; i < n; i++) {
            struct dev_node *d = &nodes[i];
            reap(d);
            if (d->is_exited) {
                int st = d->wait_status;
                cli_fail(
                    "dev up", "node %d %s %d during start-up (log: %s)", d->id,
                    WIFSIGNALED(st) ? "was killed by signal"
                                    : "exited with status",
                    WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), d->log);
                print_log_tail(d->log);
                return -1;
            }
            if (!d->is_ready && node_ready(cli, d, n, &controller)) {
                d->is_ready = 1;
                note("node %d ready at %s (metadata leader: node %d)", d->id,
                     d->client_addr, controller);
            }
            n_ready += d->is_ready;
        }
        if (n_ready == n) {
            note("cluster ready in %.1f s",
                 (double)(mono_ms() - start) / 1000.0);
            return 0;
        }
        if (interrupted) {
            cli_fail("dev up", "interrupted");
            return -1;
        }
        if (mono_ms() - start >= timeout_ms) {
            cli_fail("dev up",
                     "not ready after %d ms (%d of %d nodes see a metadata "
                     "leader and all brokers)",
                     timeout_ms, n_ready, n);
            for (int i = 0; i < n; i++) {
                if (!nodes[i].is_ready) {
                    print_log_tail(nodes[i].log);
                }
            }
            return -1;
        }
        if (mono_ms() >= next_note) {
            note("still waiting: %d of %d nodes ready", n_ready, n);
            next_note += 5000;
        }
        sleep_ms(DEV_POLL_MS);
    }
}

static int parse_dir(const char *what, const char *arg, char *dir, size_t cap,
                     int create)
{
    if (arg == NULL) {
        return cli_fail(what, "--dir DIR is required") + 1;
    }
    if (create && mkdir_p(arg) != 0) {
        return cli_fail(what, "%s: %s", arg, strerror(errno));
    }
    if (realpath(arg, dir) == NULL) {
        if (!create && errno == ENOENT) {
            snprintf(dir, cap, "%s", arg);
            return 0;
        }
        return cli_fail(what, "%s: %s", arg, strerror(errno));
    }
    if (strlen(dir) > cap - 64) {
        return cli_fail(what, "%s: path too long", arg);
    }
    return 0;
}

static int dev_up(struct cli *cli, int argc, char **argv)
{
    struct dev_node nodes[DEV_NODES_MAX];
    char dir[PATH_MAX], kappad[PATH_MAX + 16];
    const char *dir_arg = NULL, *kappad_arg = NULL, *v = NULL;
    long long n = 0, base_port = 0, timeout_ms = DEV_UP_TIMEOUT_MS;
    struct sigaction sa;
    int rv;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if ((strcmp(a, "--nodes") == 0 || strcmp(a, "--base-port") == 0 ||
             strcmp(a, "--dir") == 0 || strcmp(a, "--kappad") == 0 ||
             strcmp(a, "--timeout-ms") == 0) &&
            (v = cli_opt_value("dev up", argc, argv, &i)) == NULL) {
            return 2;
        }
        if (strcmp(a, "--nodes") == 0) {
            if (cli_parse_int(v, 1, DEV_NODES_MAX, &n) != 0 ||
                (n != 1 && n != 3 && n != 5)) {
                return cli_fail("dev up", "--nodes: expected 1, 3 or 5") + 1;
            }
        } else if (strcmp(a, "--base-port") == 0) {
            if (cli_parse_int(v, 1024, 65535 - 2 * DEV_NODES_MAX, &base_port) !=
                0) {
                return cli_fail("dev up", "--base-port: expected 1024..%d",
                                65535 - 2 * DEV_NODES_MAX) +
                       1;
            }
        } else if (strcmp(a, "--timeout-ms") == 0) {
            if (cli_parse_int(v, 1000, 3600000, &timeout_ms) != 0) {
                return cli_fail("dev up",
                                "--timeout-ms: expected 1000..3600000") +
                       1;
            }
        } else if (strcmp(a, "--dir") == 0) {
            dir_arg = v;
        } else if (strcmp(a, "--kappad") == 0) {
            kappad_arg = v;
        } else {
            return cli_fail("dev up", "unexpected argument \"%s\"", a) + 1;
        }
    }
    if (n == 0) {
        return cli_fail("dev up", "--nodes N is required (1, 3 or 5)") + 1;
    }
    if ((rv = parse_dir("dev up", dir_arg, dir, sizeof dir, 1)) != 0) {
        return rv;
    }
    if (resolve_kappad(kappad_arg, kappad, sizeof kappad) != 0) {
        return 1;
    }
    memset(nodes, 0, sizeof nodes);
    for (int i = 0; i < (int)n; i++) {
        node_paths(&nodes[i], dir, i + 1);
    }
    for (int i = 0; i < (int)n; i++) {
        pid_t old = read_pidfile(nodes[i].pidfile);
        if (old > 0 && is_our_node(old, nodes[i].conf)) {
            return cli_fail("dev up",
                            "node %d is already running (pid %ld); run "
                            "kappa dev down --dir %s first",
                            i + 1, (long)old, dir);
        }
        (void)unlink(nodes[i].pidfile); /* stale */
    }
    if (plan_nodes(nodes, (int)n, dir, base_port) != 0) {
        return 1;
    }

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGINT, &sa, NULL);
    (void)sigaction(SIGTERM, &sa, NULL);
    (void)sigaction(SIGHUP, &sa, NULL);
    fflush(NULL);

    note("starting %lld node%s with %s in %s", n, n == 1 ? "" : "s", kappad,
         dir);
    for (int i = 0; i < (int)n; i++) {
        struct dev_node *d = &nodes[i];
        if (mkdir_p(d->data) != 0) {
            cli_fail("dev up", "%s: %s", d->data, strerror(errno));
            stop_started(nodes, (int)n);
            return 1;
        }
        d->pid = spawn(kappad, d);
        if (d->pid < 0) {
            d->pid = 0;
            cli_fail("dev up", "fork: %s", strerror(errno));
            stop_started(nodes, (int)n);
            return 1;
        }
        if (write_pidfile(d->pidfile, d->pid) != 0) {
            cli_fail("dev up", "%s: %s", d->pidfile, strerror(errno));
            stop_started(nodes, (int)n);
            return 1;
        }
        note("node %d: pid %ld, client %s%s%s, log %s", d->id, (long)d->pid,
             d->client_addr, n > 1 ? ", cluster " : "",
             n > 1 ? d->cluster_addr : "", d->log);
    }
    rv = wait_ready(cli, nodes, (int)n, (int)timeout_ms);
    free_clients(nodes, (int)n);
    if (rv != 0) {
        stop_started(nodes, (int)n);
        return 1;
    }
    note("stop it with: kappa dev down --dir %s", dir);
    for (int i = 0; i < (int)n; i++) {
        printf("%s%s", i > 0 ? "," : "", nodes[i].client_addr);
    }
    printf("\n");
    return fflush(stdout) == 0 ? 0 : 1;
}

/* ---- dev down ------------------------------------------------------------ */

static int dev_down(int argc, char **argv)
{
    struct dev_node nodes[64];
    pid_t pids[64];
    char dir[PATH_MAX];
    const char *dir_arg = NULL, *v;
    long long timeout_ms = DEV_DOWN_TIMEOUT_MS;
    int n = 0, n_running = 0, left, rv;
    DIR *d;
    struct dirent *e;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0) {
            if ((dir_arg = cli_opt_value("dev down", argc, argv, &i)) == NULL) {
                return 2;
            }
        } else if (strcmp(argv[i], "--timeout-ms") == 0) {
            if ((v = cli_opt_value("dev down", argc, argv, &i)) == NULL ||
                cli_parse_int(v, 100, 3600000, &timeout_ms) != 0) {
                return cli_fail("dev down",
                                "--timeout-ms: expected 100..3600000") +
                       1;
            }
        } else {
            return cli_fail("dev down", "unexpected argument \"%s\"", argv[i]) +
                   1;
        }
    }
    if ((rv = parse_dir("dev down", dir_arg, dir, sizeof dir, 0)) != 0) {
        return rv;
    }
    if ((d = opendir(dir)) == NULL) {
        note("%s: nothing to stop", dir);
        return 0;
    }
    memset(nodes, 0, sizeof nodes);
    while ((e = readdir(d)) != NULL && n < 64) {
        int id, len = 0;
        if (sscanf(e->d_name, "node%d.pid%n", &id, &len) == 1 &&
            e->d_name[len] == '\0' && id >= 1) {
            node_paths(&nodes[n], dir, id);
            pids[n] = read_pidfile(nodes[n].pidfile);
            if (pids[n] > 0 && is_our_node(pids[n], nodes[n].conf)) {
                note("stopping node %d (pid %ld)", id, (long)pids[n]);
                n_running++;
            } else {
                pids[n] = 0; /* stale: that process is gone */
            }
            n++;
        }
    }
    closedir(d);
    left = stop_pids(nodes, pids, n, (int)timeout_ms, 1);
    for (int i = 0; i < n; i++) {
        if (pids[i] == 0 || !is_our_node(pids[i], nodes[i].conf)) {
            unlink(nodes[i].pidfile);
        }
    }
    if (left > 0) {
        return cli_fail("dev down", "%d node%s still running after SIGKILL",
                        left, left == 1 ? "" : "s");
    }
    note("%s: %d node%s stopped", dir, n_running, n_running == 1 ? "" : "s");
    return 0;
}

int cmd_dev(struct cli *cli, int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "up") == 0) {
        return dev_up(cli, argc - 1, argv + 1);
    }
    if (argc >= 1 && strcmp(argv[0], "down") == 0) {
        return dev_down(argc - 1, argv + 1);
    }
    return cli_fail("dev", "expected up or down") + 1;
}
