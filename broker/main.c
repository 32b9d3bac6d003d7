/* kappad: parse the configuration, prepare the data directory, run the
 * server on one libuv loop until SIGTERM/SIGINT, and exit 0 after a clean
 * shutdown (uv_loop_close must succeed). Exit status 2 is a configuration
 * error, 1 a startup failure. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "broker/config.h"
#include "broker/dump.h"
#include "broker/server.h"
#include "broker/version.h"
#include "common/assert.h"
#include "common/err.h"
#include "common/log.h"

#define COMPONENT "main"
#define ADDR_FILE "kappad.addr"
#define LOCK_FILE "kappad.lock"

/* fsyncs the directory that holds path, so a new entry in it is durable. */
static void fsync_parent(const char *path)
{
    char parent[CONFIG_PATH_BYTES_MAX];
    char *slash;
    int fd;
    snprintf(parent, sizeof parent, "%s", path);
    slash = strrchr(parent, '/');
    if (slash == NULL) {
        snprintf(parent, sizeof parent, ".");
    } else if (slash == parent) {
        parent[1] = '\0';
    } else {
        *slash = '\0';
    }
    fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* mkdir -p; every directory it creates is made durable in its parent. */
static int make_dirs(const char *path, char *errmsg)
{
    char tmp[CONFIG_PATH_BYTES_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) == 0) {
                fsync_parent(tmp);
            } else if (errno != EEXIST) {
                break;
            }
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) == 0) {
        fsync_parent(tmp);
    } else if (errno != EEXIST) {
        kappa_errmsg_printf(errmsg, "mkdir %s: %s", path, strerror(errno));
        return KAPPA_EIO;
    }
    return 0;
}

/* One process per data directory; the lock dies with the process. */
static int lock_data_dir(const char *dir, int *fd_out, char *errmsg)
{
    char path[CONFIG_PATH_BYTES_MAX + 32];
    int fd;
    snprintf(path, sizeof path, "%s/%s", dir, LOCK_FILE);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) {
        kappa_errmsg_printf(errmsg, "lock %s: %s", path,
                            errno == EWOULDBLOCK
                                ? "data directory in use by another kappad"
                                : strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return KAPPA_EIO;
    }
    *fd_out = fd;
    return 0;
}

/* Writes "HOST:PORT\n" to DATA/kappad.addr via a temporary file and a
 * rename, so a reader never sees a partial address. */
static int write_addr_file(const char *dir, const char *host, int port,
                           char *errmsg)
{
    char tmp[CONFIG_PATH_BYTES_MAX + 32];
    char path[CONFIG_PATH_BYTES_MAX + 32];
    char line[128];
    int n, fd, rv = 0;

    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, ADDR_FILE);
    snprintf(path, sizeof path, "%s/%s", dir, ADDR_FILE);
    n = snprintf(line, sizeof line,
                 strchr(host, ':') != NULL ? "[%s]:%d\n" : "%s:%d\n", host,
                 port);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        kappa_errmsg_printf(errmsg, "open %s: %s", tmp, strerror(errno));
        return KAPPA_EIO;
    }
    if (write(fd, line, (size_t)n) != n || fsync(fd) != 0) {
        kappa_errmsg_printf(errmsg, "write %s: %s", tmp, strerror(errno));
        rv = KAPPA_EIO;
    }
    close(fd);
    if (rv == 0 && rename(tmp, path) != 0) {
        kappa_errmsg_printf(errmsg, "rename %s: %s", path, strerror(errno));
        rv = KAPPA_EIO;
    }
    return rv;
}

/* Runs the node until shutdown; returns the process exit status. */
static int run(const struct broker_config *cfg)
{
    static struct server server;
    char errmsg[KAPPA_ERRMSG_SIZE] = "";
    uv_loop_t loop;
    int rv;

    KAPPA_ASSERT(uv_loop_init(&loop) == 0);
    rv = server_start(&server, &loop, cfg, errmsg);
    if (rv == 0) {
        rv = write_addr_file(cfg->data_dir, server.bound_host,
                             server.bound_port, errmsg);
        if (rv != 0) {
            server_shutdown(&server);
        }
    }
    if (rv != 0) {
        kappa_log(KAPPA_LOG_ERROR, COMPONENT, "startup failed: %s", errmsg);
    } else {
        kappa_log(KAPPA_LOG_INFO, COMPONENT,
                  "kappad %s started node=%lld listen=%s:%d data=%s "
                  "topics=%u",
                  KAPPA_BROKER_VERSION, (long long)cfg->node_id,
                  server.bound_host, server.bound_port, cfg->data_dir,
                  server.topics.n_topics);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    KAPPA_ASSERT(uv_loop_close(&loop) == 0);
    if (rv == 0) {
        kappa_log(KAPPA_LOG_INFO, COMPONENT, "stopped");
    }
    return rv == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    static struct broker_config cfg;
    char errmsg[KAPPA_ERRMSG_SIZE] = "";
    enum config_action action;
    int lock_fd = -1;
    int status;

    /* "kappad dump DATA_DIR ...": offline, before any node setup. */
    if (argc >= 2 && strcmp(argv[1], "dump") == 0) {
        return dump_main(argc - 1, argv + 1);
    }
    if (config_parse_args(&cfg, argc, argv, &action, errmsg) != 0) {
        fprintf(stderr, "kappad: %s\n", errmsg);
        return 2;
    }
    if (action == CONFIG_HELP) {
        config_print_help(stdout);
        return 0;
    }
    if (action == CONFIG_VERSION) {
        printf("kappad %s\n", KAPPA_BROKER_VERSION);
        return 0;
    }
    kappa_log_set_level(cfg.log_level);
    kappa_log_set_node(cfg.node_id);
    /* Writes to a vanished peer must fail with EPIPE, not kill the node. */
    signal(SIGPIPE, SIG_IGN);
    if (make_dirs(cfg.data_dir, errmsg) != 0 ||
        lock_data_dir(cfg.data_dir, &lock_fd, errmsg) != 0) {
        kappa_log(KAPPA_LOG_ERROR, COMPONENT, "%s", errmsg);
        return 1;
    }
    status = run(&cfg);
    close(lock_fd);
    return status;
}
