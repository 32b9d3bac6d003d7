/* Test support: real kappad processes on 127.0.0.1 with ephemeral ports and
 * temporary directories, bounded waits, and cleanup even when a test fails. */
#ifndef KAPPA_TEST_SUPPORT_H
#define KAPPA_TEST_SUPPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <kappa/client.h>

#define TEST_ADDR_SIZE 64
#define TEST_PATH_SIZE 512

struct test_node {
    pid_t pid;
    char dir[TEST_PATH_SIZE];  /* data directory */
    char log[TEST_PATH_SIZE];  /* stderr of the node */
    char addr[TEST_ADDR_SIZE]; /* "127.0.0.1:PORT" once started */
    int port;                  /* kept across restarts */
};

/* Creates a fresh temporary directory under $TMPDIR or /tmp; the path is
 * written to dir (TEST_PATH_SIZE). Aborts the test on failure. */
void test_tmpdir(char *dir, const char *tag);
/* Removes a directory tree (rm -rf). */
void test_rmtree(const char *dir);

/* Starts kappad on a new temporary data directory with port 0, plus extra
 * "--key value" arguments (NULL-terminated list, may be NULL), and waits until
 * it has written DATA/kappad.addr. Returns 0 or -1. */
int test_node_start(struct test_node *n, const char *const *extra_args);
/* Starts it again on the same directory and the same port. */
int test_node_restart(struct test_node *n, const char *const *extra_args);
/* SIGTERM and wait; returns the exit status (0 is a clean shutdown), or -1
 * if it did not exit within the timeout (then it is killed). */
int test_node_stop(struct test_node *n);
/* SIGKILL and reap. */
void test_node_kill(struct test_node *n);
/* Stops the node if running and removes its directory. */
void test_node_destroy(struct test_node *n);

/* Polls cond(arg) up to tries times, delay_ms apart. Returns 1 when it held,
 * 0 otherwise. Never a bare sleep: every wait in a test goes through here. */
int test_wait_until(int (*cond)(void *arg), void *arg, int tries, int delay_ms);

/* A client for addr with optional extra "key", "value" property pairs
 * (NULL-terminated). Aborts the test on failure. */
struct kappa_client *test_client_new(const char *addr,
                                     const char *const *props);

/* Connects a plain TCP socket to addr (for raw protocol tests); -1 on
 * failure. */
int test_connect_raw(const char *addr);

/* ---- Clusters ----------------------------------------------------------- */

#define TEST_CLUSTER_MAX 5

/* n kappad nodes in cluster mode on 127.0.0.1: node i+1 has its own client
 * port (ephemeral, kept across restarts) and cluster port (picked free at
 * start), every node is an initial metadata voter. */
struct test_cluster {
    int n;
    struct test_node nodes[TEST_CLUSTER_MAX];
    int cluster_port[TEST_CLUSTER_MAX];
    char voters[256];
    char ids[TEST_CLUSTER_MAX][16];
    char cluster_listen[TEST_CLUSTER_MAX][32];
    char bootstrap[TEST_CLUSTER_MAX * TEST_ADDR_SIZE]; /* client addrs */
};

/* A free TCP port on 127.0.0.1 (bind port 0, read it back, close), or -1. */
int test_free_port(void);

/* Starts n nodes (election timeout 1000 ms, heartbeat 100 ms) and waits
 * until every node answers Metadata with a controller and all n brokers.
 * Returns 0 or -1 (nodes started so far keep running; destroy them). */
int test_cluster_start(struct test_cluster *c, int n);
/* Starts node i (0-based) again on its directory and ports. */
int test_cluster_restart_node(struct test_cluster *c, int i);
/* Waits until node i answers Metadata with a controller and n_brokers. */
int test_cluster_wait_ready(struct test_cluster *c, int i, int n_brokers);
/* Kills every node and removes their directories. */
void test_cluster_destroy(struct test_cluster *c);

/* Raw Metadata request to addr: the number of brokers, the controller id and,
 * when topic is not NULL, the leader of each of its first n_leaders
 * partitions (-1 unknown). Returns 0 or -1 (no answer). */
int test_metadata(const char *addr, int *n_brokers, int *controller,
                  const char *topic, int *leaders, int n_leaders);

/* Monotonic clock in ms. */
int64_t test_now_ms(void);

/* Timeouts scale with KAPPA_TEST_TIMEOUT_MULTIPLIER (default 1). */
int test_timeout_ms(int base_ms);

#endif /* KAPPA_TEST_SUPPORT_H */
